"""The admission kernel: one weighted, lane-aware, cancellation-safe waiter queue.

Every trioflow limiter is a configuration of this one class. A
:class:`~trioflow.CapacityLimiter` is a kernel with one lane and the FIFO
policy; a :class:`~trioflow.PriorityLimiter` is a kernel with one lane per
:class:`~trioflow.Lane` and a policy that picks which lane's head goes next.
An adaptive limit is any of these whose ``total`` an algorithm sets.

Words
-----

A *borrower* (a task, or trio's placeholder for a ``to_thread`` call) holds
a :class:`Loan`: its weight and lane. A queued request is a
:class:`~trioflow._admission._parking.Waiter`. (The public words are the
faces': ``hold()`` opens a block that holds a ``Permit``; the registry's
readers see ``Holding`` records.)

The API the faces use
---------------------

* :meth:`Kernel.try_fast` — the fast grant: nobody waits and the policy
  admits the weight, so the loan is recorded at once; :meth:`Kernel.undo` is
  its undo (a cancellation delivered at the checkpoint that follows).
* :meth:`Kernel.acquire` — the one blocking shape: fast grant + checkpoint,
  else queue, park, and withdraw on cancellation.
* :meth:`Kernel.try_acquire` — the nowait shape: never overtakes a waiter
  the policy would serve first.
* :meth:`Kernel.release` and :meth:`Kernel.set_total`.

Faces read the plain attributes (``total``, ``borrowed``, ``loans``,
``in_use``, ``granted``, ``waiting``) and never write them.

How it works
------------

Each lane is a :class:`collections.OrderedDict` of waiters: FIFO with O(1)
append, O(1) head and O(1) removal of a cancelled waiter, at any depth. (A
plain ``dict`` used as a FIFO keeps the slots of deleted keys until it is
rebuilt, so finding its head walks over them: a grant got slower the
deeper the queue; an ``OrderedDict`` is a linked list plus a hash, the
same structure trio's ``ParkingLot`` uses. Depth sweep:
``docs/benchmarks/limiter.md``.)

When tokens free up — a release, a resize, a cancelled head — the kernel
asks its policy for the next waiter to grant and grants it, until the
policy says "nobody fits". The FIFO policy serves the head only if its
whole weight fits: a heavy waiter at the head is never overtaken by lighter
ones behind it. That is what keeps a weighted semaphore from starving large
requests (the same choice Go's ``x/sync/semaphore.Weighted`` makes in
``notifyWaiters``), at the price of leaving a few tokens idle while the head
waits for enough of them.

Never wedged
------------

FIFO without barging has one trap: a head that can *never* fit blocks
everyone behind it for good, with tokens free. Two rules close it:

* A fixed total that shrinks (set lower, or a pause at 0 resumed lower)
  wakes every queued waiter that can no longer ever fit with a
  :exc:`ValueError` naming the primitive, the weight and the new total, and
  those behind it go on (Go's semaphore: "don't make other Acquire calls
  block on one that's doomed to fail").
* An adaptive total moves on its own, and it moves only on samples: a
  shrink below a queued weight would leave nothing held, so no sample and no
  growth, ever. There the faces check weights against the algorithm's
  ``max_limit``, and a head heavier than the current total is granted when
  nothing else is borrowed (``alone_ok``), so its block is the sample the
  algorithm needs.

So whenever nothing is borrowed and the total is above 0, nobody waits.

Grants hand the tokens to the waiter *before* it runs again, so a waiter
that was woken already holds its tokens; a cancellation that arrives after
the grant is delivered at the task's next checkpoint, by which time the
limiter's ``__aexit__``/``release`` is responsible for them. A waiter
cancelled while parked is withdrawn by its abort function, which also
re-runs the grant loop: if it was the head that blocked lighter waiters,
they go now. Nothing is ever held, leaked or skipped by a cancelled waiter.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import ClassVar, Protocol

import outcome
import trio

from .._registry import Inspectable
from ._parking import Waiter, park, unpark, waited

__all__ = ["FifoPolicy", "Kernel", "Loan", "Policy", "fits_total"]


class Loan:
    """What one borrower holds: its weight and its lane.

    ``start`` and ``inflight`` are written (and read) only by faces that
    feed an adaptive algorithm: when the tokens were granted and how many
    were in use just after. Left unset otherwise, because this record is
    made on every acquisition and each attribute costs on the hot path.
    """

    __slots__ = ("inflight", "lane", "start", "weight")

    start: float
    inflight: int

    def __init__(self, weight: int, lane: int) -> None:
        self.weight: int = weight
        self.lane: int = lane


class Policy(Protocol):
    """Who goes next. The kernel asks; the policy only reads."""

    def choose(self, pool: Kernel, /) -> Waiter | None:
        """The next waiter to grant, or ``None`` when nobody may go now.

        Must only return a waiter that :meth:`Kernel.fits` and whatever
        caps the policy enforces allow; the kernel grants it and asks again.
        """
        ...

    def admits(self, pool: Kernel, lane: int, weight: int, /) -> bool:
        """Fast path, nobody waiting: may ``weight`` tokens go to ``lane`` now?"""
        ...

    def ceiling(self, pool: Kernel, lane: int, /) -> int | float:
        """The most one waiter of ``lane`` can ever be granted under a fixed ``kernel.total``."""
        ...

    #: True if a newcomer that missed the fast path may still be chosen at once.
    ranks_newcomers: ClassVar[bool]


class FifoPolicy:
    """One lane, strict FIFO: the head goes when its whole weight fits."""

    __slots__ = ()

    ranks_newcomers: ClassVar[bool] = False

    def choose(self, kernel: Kernel) -> Waiter | None:
        # A for/break reads the first key without building an iterator object.
        for head in kernel.queues[0]:
            return head if kernel.fits(head.weight) else None
        return None

    def admits(self, kernel: Kernel, lane: int, weight: int) -> bool:
        return kernel.fits(weight)

    def ceiling(self, kernel: Kernel, lane: int) -> int | float:
        return kernel.total


class Kernel:
    """The shared waiter queue. Not public: limiters wrap it."""

    __slots__ = (
        "_heavy",
        "_seq",
        "alone_ok",
        "borrowed",
        "granted",
        "in_use",
        "loans",
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
        policy: Policy | None = None,
        alone_ok: bool = False,
    ) -> None:
        self.total: int | float = total
        self.borrowed: int = 0
        #: borrower -> what it holds
        self.loans: dict[object, Loan] = {}
        #: one FIFO per lane
        self.queues: list[OrderedDict[Waiter, None]] = [OrderedDict() for _ in range(lanes)]
        #: tokens held, per lane
        self.in_use: list[int] = [0] * lanes
        #: grants made so far, per lane (a fast grant undone is not one)
        self.granted: list[int] = [0] * lanes
        #: waiters queued, all lanes
        self.waiting: int = 0
        self.policy: Policy = FifoPolicy() if policy is None else policy
        #: Adaptive totals: a waiter heavier than the total may go when
        #: nothing else is borrowed (see "Never wedged" above).
        self.alone_ok: bool = alone_ok
        #: queued waiters with weight > 1 (only they can ever stop fitting)
        self._heavy: int = 0
        self._seq: int = 0

    # -- queries -----------------------------------------------------------

    def fits(self, weight: int) -> bool:
        """May ``weight`` more tokens be granted now, as far as the total goes?"""
        if weight <= self.total - self.borrowed:
            return True
        return self.alone_ok and not self.borrowed and self.total > 0

    def queued(self, lane: int) -> int:
        """Waiters queued in ``lane``."""
        return len(self.queues[lane])

    def iter_waiters(self, lane: int | None = None) -> Iterator[Waiter]:
        """Queued waiters, lane by lane, FIFO within each."""
        queues = self.queues if lane is None else [self.queues[lane]]
        for q in queues:
            yield from q

    # -- granting ----------------------------------------------------------

    def _lend(self, borrower: object, weight: int, lane: int) -> Loan:
        loan = Loan(weight, lane)
        self.loans[borrower] = loan
        self.borrowed += weight
        self.in_use[lane] += weight
        self.granted[lane] += 1
        return loan

    def _unqueue(self, waiter: Waiter) -> None:
        del self.queues[waiter.lane][waiter]
        self.waiting -= 1
        if waiter.weight > 1:
            self._heavy -= 1

    def pump(self) -> None:
        """Grant to waiters until the policy says nobody fits. Runs after any change."""
        choose = self.policy.choose
        # Every weight is >= 1, so with no token free nobody can go, whatever
        # the policy: under contention this skips a policy call per release.
        while self.waiting and self.total - self.borrowed > 0:
            waiter = choose(self)
            if waiter is None:
                return
            self._unqueue(waiter)
            self._lend(waiter.borrower, waiter.weight, waiter.lane)
            if waiter.parked:
                unpark(waiter)

    def try_fast(self, borrower: object, weight: int, lane: int) -> Loan | None:
        """The fast grant: lend ``weight`` tokens now if nobody waits and the policy admits them.

        Never blocks, never queues. The caller must then take its checkpoint
        and call :meth:`undo` if that raises.
        """
        if self.waiting or not self.policy.admits(self, lane, weight):
            return None
        return self._lend(borrower, weight, lane)

    def undo(self, borrower: object) -> None:
        """Take back a grant that the borrower never got to use, as if it never happened."""
        loan = self.loans[borrower]
        self.granted[loan.lane] -= 1
        self.release(borrower, None)

    async def acquire(
        self, borrower: object, weight: int, lane: int, primitive: Inspectable
    ) -> Loan:
        """Lend ``weight`` tokens to ``borrower``, waiting until the policy grants them.

        A checkpoint, atomic with respect to cancellation: on
        :class:`trio.Cancelled` the borrower holds nothing and the queue is
        as if it had never asked. The caller has checked the weight and
        that ``borrower`` holds nothing yet. Raises :exc:`ValueError` if the
        total shrank so that the waiter can never fit.
        """
        loan = self.try_fast(borrower, weight, lane)
        if loan is None:
            waiter = self._enqueue(borrower, weight, lane, primitive)
            # With the FIFO policy a newcomer that missed the fast path cannot
            # be granted now (the queue was settled by the last change); a lane
            # policy may rank it ahead of others, so ask it (only if a token is
            # free: under contention none is).
            if self.policy.ranks_newcomers and self.total - self.borrowed > 0:
                self.pump()
            if waiter in self.queues[lane]:
                # Parking is the checkpoint; a cancellation while parked
                # withdraws the waiter.
                await park(waiter, lambda: self.remove(waiter))
                waited(waiter)
                return self.loans[borrower]
            loan = self.loans[borrower]
        # Granted at once: still a checkpoint, and a cancellation delivered
        # here gives the tokens straight back.
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            self.undo(borrower)
            raise
        return loan

    def try_acquire(
        self, borrower: object, weight: int, lane: int, primitive: Inspectable
    ) -> Loan | None:
        """Lend ``weight`` tokens now if the policy would, else ``None``. Never blocks.

        With nobody waiting this is the fast grant. With waiters queued the
        attempt joins its lane's queue, the policy runs, and the attempt is
        withdrawn unless it was granted: a nowait call never overtakes a
        waiter the policy would serve first.
        """
        if not self.waiting:
            return self.try_fast(borrower, weight, lane)
        waiter = self._enqueue(borrower, weight, lane, primitive)
        self.pump()
        if waiter in self.queues[lane]:
            self.remove(waiter)
            return None
        return self.loans[borrower]

    def _enqueue(self, borrower: object, weight: int, lane: int, primitive: Inspectable) -> Waiter:
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
        if weight > 1:
            self._heavy += 1
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Withdraw a queued waiter (cancelled, or a failed nowait attempt)."""
        self._unqueue(waiter)
        # The withdrawn waiter may have been a heavy head blocking lighter
        # ones, or a lane the policy was saving capacity for.
        self.pump()

    # -- releasing and resizing ---------------------------------------------

    def release(self, borrower: object, weight: int | None) -> None:
        """Give back ``weight`` tokens (all when ``None``) and grant who fits.

        The caller has checked that ``borrower`` holds at least ``weight``.
        """
        loan = self.loans[borrower]
        if weight is None or weight == loan.weight:
            del self.loans[borrower]
            weight = loan.weight
        else:
            loan.weight -= weight
        self.borrowed -= weight
        self.in_use[loan.lane] -= weight
        if self.waiting:
            self.pump()

    def set_total(self, total: int | float) -> None:
        """Resize. Growing wakes who now fits; shrinking never revokes held tokens.

        On a fixed total, a shrink wakes every waiter that can no longer
        ever fit with :exc:`ValueError` (0 is a pause: everyone may fit later).
        A lane policy must have been resized for ``total`` already.
        """
        old = self.total
        self.total = total
        if not self.waiting:
            return
        if self._heavy and total != 0 and (total < old or old == 0) and not self.alone_ok:
            self._fail_doomed()
        self.pump()

    def _fail_doomed(self) -> None:
        for lane, queue in enumerate(self.queues):
            ceiling = self.policy.ceiling(self, lane)
            if ceiling == math.inf:
                continue
            doomed = [w for w in queue if w.weight > ceiling]
            for waiter in doomed:
                self._unqueue(waiter)
                primitive = waiter.primitive
                error = never_granted(waiter.weight, primitive.kind, primitive.name, ceiling)
                if waiter.parked:
                    unpark(waiter, outcome.Error(error))


def fits_total(total: int | float, weight: int) -> bool:
    """Can ``weight`` ever be granted under a fixed ``total``? (0 pauses, so it can, later.)"""
    return total == 0 or total == math.inf or weight <= total


def never_granted(weight: int, kind: str, name: str, total: int | float) -> ValueError:
    """The error a waiter gets when its limiter's total dropped below its weight."""
    return ValueError(
        f"weight={weight} can never be granted by {kind} {name!r}: its total_tokens={total!r} now"
    )
