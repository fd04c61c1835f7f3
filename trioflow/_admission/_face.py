"""The acquire/release/``hold()`` machinery every limiter face shares.

A *face* is one public object that hands out one lane's tokens of a
:class:`~trioflow._admission._kernel.Kernel`: a :class:`~trioflow.CapacityLimiter`
is the only face of its kernel; each lane handle of a
:class:`~trioflow.PriorityLimiter` is one face of a shared kernel. The
argument checks, the error messages, ``hold()``/:class:`Permit` and the
adaptive feedback live here once; the blocking shape and its rollback live
in the kernel (:meth:`~trioflow._admission._kernel.Kernel.acquire`), which
faces use only through its API.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

import trio

from .._registry import Holding, Waiting
from .._util import check_weight
from ..adaptive._base import Algorithm, Sample
from ._kernel import Kernel, Loan, fits_total

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
        self.samples: int = 0
        #: total_tokens was set to 0 by hand: learn, but do not apply, until resumed
        self.paused: bool = False

    def is_overload(self, exc: BaseException | None) -> bool:
        if exc is None:
            return False
        if isinstance(exc, self.overload):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return exc.subgroup(self.overload) is not None  # pyright: ignore[reportUnknownMemberType]
        return False

    def finish(self, loan: Loan, exc: BaseException | None, permit: Permit | None) -> None:
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
            start=loan.start, rtt=now - loan.start, inflight=loan.inflight, dropped=dropped
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


class _PermitContext:
    """``async with limiter.hold(weight) as permit:``."""

    __slots__ = ("_acquire", "_finish", "_limiter", "_permit", "_task")

    def __init__(
        self,
        limiter: LimiterFace,
        acquire: Callable[[object, int], Awaitable[None]],
        finish: Callable[[object, BaseException | None, Permit | None], None],
        weight: int,
    ) -> None:
        #: the limiter this block holds (leak detection finds it among the fields)
        self._limiter = limiter
        self._acquire = acquire
        self._finish = finish
        self._permit = Permit(weight)
        self._task: trio.lowlevel.Task | None = None

    async def __aenter__(self) -> Permit:
        if self._task is not None:
            raise RuntimeError("a hold() context can be entered only once")
        task = trio.lowlevel.current_task()
        await self._acquire(task, self._permit.weight)
        self._task = task
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._finish(self._task, exc, self._permit)


class LimiterFace:
    """Base of every public limiter: trio's limiter methods, weights, ``hold()``.

    Subclasses set ``_kernel``, ``_lane`` and ``_feedback`` and provide
    ``kind``, ``name``, ``statistics()``, ``total_tokens`` and
    ``_trioflow_pool`` (the primitive whose tokens they share).
    """

    __slots__ = ()

    _kernel: Kernel
    _lane: int
    _feedback: Feedback | None
    if TYPE_CHECKING:
        kind: str

        @property
        def name(self) -> str: ...

    # -- checks and messages -------------------------------------------------

    @property
    def _what(self) -> str:
        """How error messages name this face: ``limiter 'api'``, ``lane 'api/batch'``."""
        return f"{self.kind} {self.name!r}"

    def _check_weight(self, weight: int) -> None:
        """A weight this face can ever grant: within its total, or its algorithm's max_limit."""
        check_weight(weight)
        feedback = self._feedback
        if feedback is not None:
            most = feedback.algorithm.max_limit
            if weight > most:
                raise ValueError(
                    f"weight={weight!r} is more than the max_limit={most!r} of "
                    f"{self._what}'s algorithm; it could never be granted"
                )
            return
        total = self._kernel.total
        if not fits_total(total, weight):
            raise ValueError(
                f"weight={weight!r} is more than {self._what}'s total_tokens={total!r}"
            )

    def _holds_elsewhere(self, loan: Loan) -> str:
        """How messages name what a borrower holds instead (lanes name their sibling)."""
        return self._what

    def _loan_of(self, borrower: object) -> Loan:
        loan = self._kernel.loans.get(borrower)
        if loan is None or loan.lane != self._lane:
            other = "" if loan is None else f" (it holds tokens of {self._holds_elsewhere(loan)})"
            raise RuntimeError(f"this borrower isn't holding any of {self._what}'s tokens{other}")
        return loan

    def _check_new_borrower(self, borrower: object) -> None:
        loan = self._kernel.loans.get(borrower)
        if loan is not None:
            held = self._holds_elsewhere(loan)
            shared = "" if held == self._what else f", which shares its tokens with {self._what}"
            raise RuntimeError(
                f"this borrower is already holding tokens of {held}{shared}; "
                "release them before acquiring again"
            )

    # -- trio's CapacityLimiter interface ----------------------------------

    def acquire_on_behalf_of_nowait(self, borrower: object, weight: int = 1) -> None:
        """Take ``weight`` tokens for ``borrower`` without blocking.

        Raises:
          trio.WouldBlock: if the tokens are not free now, or another waiter
            comes first (a nowait call never overtakes a queued waiter).
          RuntimeError: if ``borrower`` already holds tokens of this limiter.
          ValueError: if ``weight`` is below 1 or could never be granted.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        kernel = self._kernel
        if borrower in kernel.loans:
            self._check_new_borrower(borrower)
        loan = kernel.try_acquire(borrower, weight, self._lane, self)
        if loan is None:
            raise trio.WouldBlock
        if self._feedback is not None:
            loan.start = trio.current_time()
            loan.inflight = kernel.borrowed

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
          ValueError: if ``weight`` is below 1 or could never be granted
            (above a fixed ``total_tokens``, or an adaptive limiter's
            ``max_limit``); also raised out of the wait if ``total_tokens``
            is set so low that this waiter can never fit: the waiters behind
            it then go on.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        kernel = self._kernel
        if borrower in kernel.loans:
            self._check_new_borrower(borrower)
        loan = await kernel.acquire(borrower, weight, self._lane, self)
        if self._feedback is not None:
            loan.start = trio.current_time()
            loan.inflight = kernel.borrowed

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
        loan = self._loan_of(borrower)
        if weight is not None and weight > loan.weight:
            raise ValueError(
                f"weight={weight!r} is more than the {loan.weight} tokens "
                f"this borrower holds of {self._what}"
            )
        self._kernel.release(borrower, weight)

    def release(self, weight: int | None = None) -> None:
        """Give back tokens the current task holds (see :meth:`release_on_behalf_of`).

        ``release()`` gives back everything the task holds, so it pairs with
        any ``acquire(weight=n)``; ``release(weight=k)`` gives back ``k`` of them.
        """
        self.release_on_behalf_of(trio.lowlevel.current_task(), weight)

    async def __aenter__(self) -> None:
        await self.acquire_on_behalf_of(trio.lowlevel.current_task())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(trio.lowlevel.current_task(), exc, None)

    def _finish(self, borrower: object, exc: BaseException | None, permit: Permit | None) -> None:
        """The end of an ``async with`` / ``hold()`` block: feed the sample, give the tokens back."""
        loan = self._loan_of(borrower)
        feedback = self._feedback
        if feedback is None:
            self._kernel.release(borrower, None)
            return
        try:
            feedback.finish(loan, exc, permit)
        finally:
            # An algorithm that raises (a LoadFeedback whose read_load
            # failed) must not cost the tokens: they go back first.
            self._kernel.release(borrower, None)

    def hold(self, weight: int = 1) -> _PermitContext:
        """``async with limiter.hold(weight) as permit:`` — hold ``weight`` tokens for the block.

        Entering blocks like :meth:`acquire` (a checkpoint, atomic with
        respect to cancellation); leaving gives the tokens back and is not a
        checkpoint. On an adaptive limiter the block is one sample: its
        duration, ``dropped`` if it called :meth:`Permit.drop` or raised an
        overload exception; :meth:`Permit.ignore`, cancellations and other
        exceptions feed nothing.

        Raises:
          ValueError: at this call, if ``weight`` could never be granted.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        return _PermitContext(self, self.acquire_on_behalf_of, self._finish, weight)

    # -- state ---------------------------------------------------------------

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held through this face."""
        return self._kernel.in_use[self._lane]

    def _trioflow_holders(self) -> list[Holding]:
        lane = self._lane
        return [Holding(b, h.weight, None) for b, h in self._kernel.loans.items() if h.lane == lane]

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._kernel.iter_waiters(self._lane))


def fmt_tokens(value: float) -> str:
    return "inf" if value == math.inf else str(value)
