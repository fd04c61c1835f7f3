"""The admission kernel: one weighted, lane-aware, cancellation-safe waiter queue.

Every trioflow limiter is a configuration of this one class. A
:class:`~trioflow.CapacityLimiter` is a kernel with one lane and the default
policy; a :class:`~trioflow.PriorityLimiter` is a kernel with one lane per
:class:`~trioflow.Lane` and a policy that picks which lane's head goes next.
An adaptive limit is any of these whose ``total`` an algorithm sets.

How it works
------------

Each lane is an insertion-ordered ``dict`` of waiters (FIFO, O(1) removal
when a waiter is cancelled). When tokens free up — a release, a resize, a
cancelled head — the kernel asks its policy for the next waiter to grant and
grants it, until the policy says "nobody fits". The default policy serves
the single lane's head only if its whole weight fits: a heavy waiter at the
head is never overtaken by lighter ones behind it. That is what keeps a
weighted semaphore from starving large requests (the same choice Go's
``x/sync/semaphore.Weighted`` makes in ``notifyWaiters``), at the price of
leaving a few tokens idle while the head waits for enough of them.

Grants hand the tokens to the waiter *before* it runs again, so a waiter
that was woken already holds its tokens; a cancellation that arrives after
the grant is delivered at the task's next checkpoint, by which time the
limiter's ``__aexit__``/``release`` is responsible for them. A waiter
cancelled while parked is removed by its abort function, which also re-runs
the grant loop: if it was the head that blocked lighter waiters, they go now.
Nothing is ever held, leaked or skipped by a cancelled waiter.

What readers may rely on (task dumps, deadlock detection, metrics): holders
and waiters are plain attributes, and a parked task's ``custom_sleep_data``
is its :class:`Waiter`, which names the primitive it waits on and when it
parked on trio's clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import trio
from trio.lowlevel import Task

from .._registry import Holding, Inspectable

__all__ = ["Hold", "Kernel", "Policy", "Waiter", "fifo_policy"]


class Waiter:
    """One task (or one nowait attempt) asking a kernel for ``weight`` tokens."""

    __slots__ = ("borrower", "lane", "parked", "primitive", "seq", "since", "task", "weight")

    def __init__(
        self,
        task: Task,
        borrower: object,
        weight: int,
        lane: int,
        primitive: Inspectable,
        seq: int,
        since: float,
    ) -> None:
        self.task: Final = task
        self.borrower: Final = borrower
        self.weight: Final = weight
        self.lane: Final = lane
        #: The public object the task waits on (limiter or lane handle); dumps print it.
        self.primitive: Final = primitive
        #: Arrival order across all lanes of one kernel.
        self.seq: Final = seq
        #: ``trio.current_time()`` when the waiter queued.
        self.since: Final = since
        #: True while the task sleeps in ``wait_task_rescheduled``.
        self.parked: bool = False

    def __repr__(self) -> str:
        return f"<Waiter {self.task.name!r} weight={self.weight} lane={self.lane}>"


class Hold:
    """What one borrower holds: its weight and its lane.

    ``start`` and ``inflight`` are set (and read) only by limiters that feed
    an adaptive algorithm: when the tokens were granted and how many were in
    use just after. Left unset otherwise, because this record is made on
    every acquisition and each attribute costs on the hot path.
    """

    __slots__ = ("inflight", "lane", "start", "weight")

    start: float
    inflight: int

    def __init__(self, weight: int, lane: int) -> None:
        self.weight = weight
        self.lane = lane


#: A policy picks the next waiter to grant, or ``None`` when nobody may go now.
#: It must only return a waiter whose grant keeps ``borrowed <= total`` (and
#: whatever caps it enforces); the kernel grants it and asks again.
Policy = Callable[["Kernel"], "Waiter | None"]


def fifo_policy(kernel: Kernel) -> Waiter | None:
    """One lane, strict FIFO: the head goes when its whole weight fits."""
    queue = kernel.queues[0]
    if not queue:
        return None
    head = next(iter(queue))
    if head.weight <= kernel.total - kernel.borrowed:
        return head
    return None


class Kernel:
    """The shared waiter queue. Not public: limiters wrap it."""

    __slots__ = (
        "_holes",
        "_seq",
        "admits",
        "borrowed",
        "holders",
        "lane_granted",
        "lane_in_use",
        "lane_what",
        "policy",
        "queues",
        "total",
        "waiting",
    )

    def __init__(
        self,
        total: int | float,
        *,
        lanes: int = 1,
        policy: Policy = fifo_policy,
        admits: Callable[[Kernel, int, int], bool] | None = None,
    ) -> None:
        self.total: int | float = total
        self.borrowed = 0
        #: borrower -> what it holds
        self.holders: dict[object, Hold] = {}
        #: one insertion-ordered dict per lane (a FIFO with O(1) removal)
        self.queues: list[dict[Waiter, None]] = [{} for _ in range(lanes)]
        self.lane_in_use = [0] * lanes
        #: grants made so far, per lane
        self.lane_granted = [0] * lanes
        #: waiters queued, all lanes
        self.waiting = 0
        self.policy = policy
        #: Fast-path check when nobody waits: may ``weight`` tokens go to
        #: ``lane`` right now? ``None`` means "if they fit in the total".
        self.admits = admits
        #: How error messages name each lane's face (``"lane 'api/batch'"``);
        #: ``None`` for a one-lane kernel, whose face names itself.
        self.lane_what: list[str] | None = None
        self._seq = 0
        #: removals per lane since that lane's dict was last compacted
        self._holes = [0] * lanes

    # -- queries -----------------------------------------------------------

    @property
    def available(self) -> int | float:
        """Tokens free now (negative after a shrink below what is held)."""
        return self.total - self.borrowed

    def iter_waiters(self, lane: int | None = None) -> Iterator[Waiter]:
        """Queued waiters, lane by lane, FIFO within each."""
        queues = self.queues if lane is None else [self.queues[lane]]
        for q in queues:
            yield from q

    def holdings(self, lane_names: Sequence[str] | None = None) -> list[Holding]:
        return [
            Holding(b, h.weight, None if lane_names is None else lane_names[h.lane])
            for b, h in self.holders.items()
        ]

    # -- the grant loop ----------------------------------------------------

    def _unqueue(self, waiter: Waiter) -> None:
        lane = waiter.lane
        queue = self.queues[lane]
        del queue[waiter]
        self.waiting -= 1
        # A dict keeps the slots of deleted keys until it is rebuilt, and
        # finding its first key walks over them: a long FIFO drained from
        # the front would make every head lookup slower. Compact in place
        # (same object: policies may keep references) once the holes
        # outnumber the waiters, which keeps the cost amortized O(1).
        holes = self._holes[lane] + 1
        if holes > 64 and holes > len(queue):
            keep = list(queue)
            queue.clear()
            queue.update(dict.fromkeys(keep))
            holes = 0
        self._holes[lane] = holes

    def _grant(self, waiter: Waiter) -> None:
        self._unqueue(waiter)
        self._add_holder(waiter.borrower, waiter.weight, waiter.lane)
        if waiter.parked:
            waiter.parked = False
            waiter.task.custom_sleep_data = None
            trio.lowlevel.reschedule(waiter.task)

    def _add_holder(self, borrower: object, weight: int, lane: int) -> Hold:
        hold = Hold(weight, lane)
        self.holders[borrower] = hold
        self.borrowed += weight
        self.lane_in_use[lane] += weight
        self.lane_granted[lane] += 1
        return hold

    def pump(self) -> None:
        """Grant to waiters until the policy says nobody fits. Call after any change."""
        policy = self.policy
        # Every weight is >= 1, so with no token free nobody can go, whatever
        # the policy: under contention this skips a policy call per release.
        while self.waiting and self.total - self.borrowed > 0:
            waiter = policy(self)
            if waiter is None:
                return
            self._grant(waiter)

    # -- acquire / release -------------------------------------------------

    def check_borrower(self, borrower: object, what: str) -> None:
        hold = self.holders.get(borrower)
        if hold is not None:
            # With lanes, what it holds may be another face of this kernel: name it.
            held = what if self.lane_what is None else self.lane_what[hold.lane]
            shared = "" if held == what else f", which shares its tokens with {what}"
            raise RuntimeError(
                f"this borrower is already holding tokens of {held}{shared}; "
                "release them before acquiring again"
            )

    def try_acquire(
        self, borrower: object, weight: int, lane: int, primitive: Inspectable
    ) -> Hold | None:
        """Take ``weight`` tokens now if the policy would, else ``None``. Never blocks.

        With nobody waiting this is one comparison. With waiters queued the
        attempt joins its lane's queue, the policy runs, and the attempt is
        withdrawn unless it was granted: a nowait call never overtakes a
        waiter the policy would serve first.
        """
        if not self.waiting:
            admits = self.admits
            if (
                weight <= self.total - self.borrowed
                if admits is None
                else admits(self, lane, weight)
            ):
                return self._add_holder(borrower, weight, lane)
            return None
        waiter = self.enqueue(borrower, weight, lane, primitive)
        self.pump()
        if waiter in self.queues[lane]:
            self.remove(waiter)
            return None
        return self.holders[borrower]

    def enqueue(self, borrower: object, weight: int, lane: int, primitive: Inspectable) -> Waiter:
        self._seq += 1
        waiter = Waiter(
            trio.lowlevel.current_task(),
            borrower,
            weight,
            lane,
            primitive,
            self._seq,
            trio.current_time(),
        )
        self.queues[lane][waiter] = None
        self.waiting += 1
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Withdraw a queued waiter (cancelled or a failed nowait attempt)."""
        self._unqueue(waiter)
        # The withdrawn waiter may have been a heavy head blocking lighter
        # ones, or a lane the policy was saving capacity for.
        self.pump()

    async def wait(self, waiter: Waiter) -> None:
        """Park until ``waiter`` is granted; if cancelled first, withdraw it.

        The caller has already queued ``waiter`` and run :meth:`pump` without
        it being granted. Returns holding the tokens, or raises
        :class:`trio.Cancelled` holding nothing.
        """
        task = waiter.task
        waiter.parked = True
        task.custom_sleep_data = waiter

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiter.parked = False
            task.custom_sleep_data = None
            self.remove(waiter)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self, borrower: object, weight: int | None, what: str) -> Hold:
        """Give back ``weight`` tokens (all of them when ``None``) and wake who fits."""
        hold = self.holders.get(borrower)
        if hold is None:
            raise RuntimeError(f"this borrower isn't holding any of {what}'s tokens")
        if weight is None or weight == hold.weight:
            del self.holders[borrower]
            weight = hold.weight
        elif weight > hold.weight:
            raise ValueError(
                f"weight={weight!r} is more than the {hold.weight} tokens "
                f"this borrower holds of {what}"
            )
        else:
            hold.weight -= weight
        self.borrowed -= weight
        self.lane_in_use[hold.lane] -= weight
        if self.waiting:
            self.pump()
        return hold

    def set_total(self, total: int | float) -> None:
        """Resize. Growing wakes who now fits; shrinking never revokes held tokens."""
        self.total = total
        if self.waiting:
            self.pump()


def fits_total(total: int | float, weight: int) -> bool:
    """Can ``weight`` ever be granted under ``total``? (0 pauses, so it can, later.)"""
    return total == 0 or total == math.inf or weight <= total
