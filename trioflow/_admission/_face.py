"""The acquire/release/hold machinery every limiter face shares.

A *face* is one public object that hands out one lane's tokens of a
:class:`~trioflow._admission._kernel.Kernel`: a :class:`~trioflow.CapacityLimiter`
is the only face of its kernel; each lane handle of a
:class:`~trioflow.PriorityLimiter` is one face of a shared kernel. The
blocking shape, the cancellation rules, ``hold()``/:class:`Permit` and the
adaptive feedback live here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

import trio

from .._registry import Holding, Waiting
from .._util import check_weight
from ..adaptive._base import Algorithm, Sample
from ..telemetry import _hooks
from ._kernel import Hold, Kernel, fits_total

__all__ = ["Feedback", "LimiterFace", "Permit", "check_overload"]


def check_overload(value: object) -> tuple[type[BaseException], ...]:
    """``overload=`` is an exception type or a non-empty tuple of them."""
    items: tuple[object, ...] = value if isinstance(value, tuple) else (value,)  # pyright: ignore[reportUnknownVariableType]
    out: list[type[BaseException]] = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"overload must be an exception type or a tuple of them, got {value!r}")
        out.append(item)
    if not out:
        raise ValueError("overload must name at least one exception type, got ()")
    return tuple(out)


class Feedback:
    """Feeds finished holds of an adaptive limiter to its algorithm and applies the new limit."""

    __slots__ = ("algorithm", "apply", "overload", "paused", "samples")

    def __init__(
        self,
        algorithm: Algorithm,
        overload: tuple[type[BaseException], ...],
        apply: Callable[[int], None],
    ) -> None:
        self.algorithm: Final = algorithm
        self.overload: Final = overload
        #: sets the limiter's total from the algorithm's output
        self.apply: Final = apply
        #: samples fed so far
        self.samples = 0
        #: total_tokens was set to 0 by hand: learn, but do not apply, until resumed
        self.paused = False

    def is_overload(self, exc: BaseException | None) -> bool:
        if exc is None:
            return False
        if isinstance(exc, self.overload):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return exc.subgroup(self.overload) is not None  # pyright: ignore[reportUnknownMemberType]
        return False

    def finish(self, hold: Hold, exc: BaseException | None, permit: Permit | None) -> None:
        """Called just before the tokens go back; decides whether this hold is a sample."""
        dropped = permit is not None and permit.dropped
        if permit is not None and permit.ignored and not dropped:
            return
        if not dropped:
            if self.is_overload(exc):
                dropped = True
            elif exc is not None:
                # Cancellations and other failures say nothing about capacity:
                # a client giving up must not shrink the limit, and a fast
                # failure must not pull the latency baseline down.
                return
        now = trio.current_time()
        sample = Sample(
            start=hold.start, rtt=now - hold.start, inflight=hold.inflight, dropped=dropped
        )
        self.samples += 1
        limit = self.algorithm.update(sample)
        if not self.paused:
            self.apply(limit)


@final
class Permit:
    """The tokens one ``hold()`` block holds, and what the block says about the call.

    Only adaptive limiters read :meth:`drop` and :meth:`ignore`; on a fixed
    limiter they are recorded and otherwise harmless.
    """

    __slots__ = ("dropped", "ignored", "weight")

    def __init__(self, weight: int) -> None:
        #: tokens held by this block
        self.weight: Final = weight
        self.dropped: bool = False
        self.ignored: bool = False

    def drop(self) -> None:
        """This call met overload (a 429, a 503, a timeout): an adaptive limit should shrink."""
        self.dropped = True

    def ignore(self) -> None:
        """Do not use this call as a latency sample (it failed fast, or did no real work)."""
        self.ignored = True

    def __repr__(self) -> str:
        flags = "".join((", dropped" if self.dropped else "", ", ignored" if self.ignored else ""))
        return f"<trioflow.Permit weight={self.weight}{flags}>"


class _HoldContext:
    """``async with limiter.hold(weight) as permit:``."""

    __slots__ = ("_face", "_permit", "_task")

    def __init__(self, face: LimiterFace, weight: int) -> None:
        self._face = face
        self._permit = Permit(weight)
        self._task: trio.lowlevel.Task | None = None

    async def __aenter__(self) -> Permit:
        if self._task is not None:
            raise RuntimeError("a hold() context can be entered only once")
        task = trio.lowlevel.current_task()
        await self._face.acquire_on_behalf_of(task, weight=self._permit.weight)
        self._task = task
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._face._finish(self._task, exc, self._permit)  # pyright: ignore[reportPrivateUsage]


class LimiterFace:
    """Base of every public limiter: trio's limiter methods, weights, ``hold()``.

    Subclasses set ``_kernel``, ``_lane``, ``_feedback`` and ``_what`` (how
    error messages name the object) and provide ``kind``, ``name``,
    ``statistics()`` and ``total_tokens``.
    """

    __slots__ = ()

    _kernel: Kernel
    _lane: int
    _feedback: Feedback | None
    _what: str
    if TYPE_CHECKING:
        kind: str

        @property
        def name(self) -> str: ...

    # -- trio's CapacityLimiter interface ----------------------------------

    def _check_weight(self, weight: int) -> None:
        check_weight(weight)
        total = self._kernel.total
        if not fits_total(total, weight):
            raise ValueError(
                f"weight={weight!r} is more than {self._what}'s total_tokens={total!r}"
            )

    def acquire_on_behalf_of_nowait(self, borrower: object, weight: int = 1) -> None:
        """Take ``weight`` tokens for ``borrower`` without blocking.

        Raises:
          trio.WouldBlock: if the tokens are not free now, or another waiter
            comes first (a nowait call never overtakes a queued waiter).
          RuntimeError: if ``borrower`` already holds tokens of this limiter.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        kernel = self._kernel
        if borrower in kernel.holders:
            kernel.check_borrower(borrower, self._what)
        hold = kernel.try_acquire(borrower, weight, self._lane, self)
        if hold is None:
            raise trio.WouldBlock
        if self._feedback is not None:
            hold.start = trio.current_time()
            hold.inflight = kernel.borrowed

    def acquire_nowait(self, weight: int = 1) -> None:
        """Take ``weight`` tokens for the current task without blocking (see
        :meth:`acquire_on_behalf_of_nowait`)."""
        self.acquire_on_behalf_of_nowait(trio.lowlevel.current_task(), weight)

    async def acquire_on_behalf_of(self, borrower: object, weight: int = 1) -> None:
        """Take ``weight`` tokens for ``borrower``, waiting until they are free.

        Waiters are served in arrival order (within a lane, by the lane
        policy across lanes); a heavy waiter at the head is not overtaken by
        lighter ones behind it.

        This is a checkpoint, and it is atomic with respect to cancellation:
        if it raises :class:`trio.Cancelled`, ``borrower`` holds nothing and
        the queue is as if it had never asked.

        Raises:
          RuntimeError: if ``borrower`` already holds tokens of this limiter.
          ValueError: if ``weight`` is below 1 or above ``total_tokens``.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        kernel = self._kernel
        if borrower in kernel.holders:
            kernel.check_borrower(borrower, self._what)
        lane = self._lane
        hold: Hold | None = None
        if not kernel.waiting:
            admits = kernel.admits
            if (
                weight <= kernel.total - kernel.borrowed
                if admits is None
                else admits(kernel, lane, weight)
            ):
                hold = kernel._add_holder(borrower, weight, lane)  # pyright: ignore[reportPrivateUsage]
        if hold is None:
            waiter = kernel.enqueue(borrower, weight, lane, self)
            # With the plain FIFO policy a newcomer that did not fit above
            # cannot be granted now (the queue was settled by the last
            # change); a lane policy may rank it ahead of others, so ask it
            # (only if a token is free: under contention none is).
            if kernel.admits is not None and kernel.total - kernel.borrowed > 0:
                kernel.pump()
            if waiter in kernel.queues[lane]:
                # Parking is the checkpoint; a cancellation while parked
                # withdraws the waiter (see Kernel.wait).
                await kernel.wait(waiter)
                hook = _hooks.wait_hook
                if hook is not None:
                    hook(self, waiter.since, trio.current_time())
                if self._feedback is not None:
                    self._start_sample(borrower)
                return
        # Granted at once: still a checkpoint, and a cancellation delivered
        # here gives the tokens straight back.
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            kernel.release(borrower, None, self._what)
            kernel.lane_granted[lane] -= 1  # never happened, as far as anyone counts
            raise
        if self._feedback is not None:
            self._start_sample(borrower)

    def _start_sample(self, borrower: object) -> None:
        hold = self._kernel.holders[borrower]
        hold.start = trio.current_time()
        hold.inflight = self._kernel.borrowed

    async def acquire(self, weight: int = 1) -> None:
        """Take ``weight`` tokens for the current task, waiting until they are free
        (see :meth:`acquire_on_behalf_of`)."""
        await self.acquire_on_behalf_of(trio.lowlevel.current_task(), weight)

    def release_on_behalf_of(self, borrower: object, weight: int | None = None) -> None:
        """Give back tokens ``borrower`` holds: ``weight`` of them, or all when ``None``.

        Not a checkpoint. Wakes every waiter that now fits.

        Raises:
          RuntimeError: if ``borrower`` holds no tokens of this limiter.
          ValueError: if ``weight`` is more than it holds.
        """
        if weight is not None:
            check_weight(weight)
        self._kernel.release(borrower, weight, self._what)

    def release(self, weight: int | None = None) -> None:
        """Give back tokens the current task holds (see :meth:`release_on_behalf_of`).

        ``release()`` gives back everything the task holds, so it pairs with
        any ``acquire(weight=n)``; ``release(weight=k)`` gives back ``k`` of them.
        """
        self.release_on_behalf_of(trio.lowlevel.current_task(), weight)

    async def __aenter__(self) -> None:
        task = trio.lowlevel.current_task()
        kernel = self._kernel
        # The uncontended path, inlined (this is the hot one): nobody waits,
        # the token fits, the task holds none yet. Anything else goes the
        # general way.
        # A lane policy's fast-path check (``admits``) stands in for "fits".
        admits = kernel.admits
        if (
            kernel.waiting
            or (
                kernel.total - kernel.borrowed < 1
                if admits is None
                else not admits(kernel, self._lane, 1)
            )
            or task in kernel.holders
            or self._feedback is not None
        ):
            await self.acquire_on_behalf_of(task)
            return
        kernel._add_holder(task, 1, self._lane)  # pyright: ignore[reportPrivateUsage]
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            kernel.release(task, None, self._what)
            kernel.lane_granted[self._lane] -= 1  # never happened, as far as anyone counts
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._feedback is not None:
            self._finish(trio.lowlevel.current_task(), exc, None)
        else:
            self._kernel.release(trio.lowlevel.current_task(), None, self._what)

    def _finish(self, borrower: object, exc: BaseException | None, permit: Permit | None) -> None:
        feedback = self._feedback
        if feedback is not None:
            hold = self._kernel.holders.get(borrower)
            if hold is not None:
                try:
                    feedback.finish(hold, exc, permit)
                finally:
                    # An algorithm that raises (a LoadFeedback whose read_load
                    # failed) must not cost the tokens: they go back first.
                    self._kernel.release(borrower, None, self._what)
                return
        self._kernel.release(borrower, None, self._what)

    def hold(self, weight: int = 1) -> _HoldContext:
        """``async with limiter.hold(weight) as permit:`` — hold ``weight`` tokens for the block.

        Entering blocks like :meth:`acquire` (a checkpoint, atomic with
        respect to cancellation); leaving gives the tokens back and is not a
        checkpoint. On an adaptive limiter the block is one sample: its
        duration, ``dropped`` if it called :meth:`Permit.drop` or raised an
        overload exception; :meth:`Permit.ignore`, cancellations and other
        exceptions feed nothing.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        return _HoldContext(self, weight)

    # -- state ---------------------------------------------------------------

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held through this face."""
        return self._kernel.lane_in_use[self._lane]

    def _trioflow_holders(self) -> list[Holding]:
        lane = self._lane
        return [
            Holding(b, h.weight, None) for b, h in self._kernel.holders.items() if h.lane == lane
        ]

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._kernel.iter_waiters(self._lane))


def fmt_tokens(value: float) -> str:
    return "inf" if value == math.inf else str(value)
