"""RateLimiter: an exact token bucket on trio's clock, with no ticker task.

How it works
------------

The bucket is two numbers: ``level`` tokens at time ``stamp``. Tokens are
never "added" by anybody: whoever looks at the bucket at time ``now``
computes ``level + (now - stamp) * rate`` (capped at ``burst``). That is
what makes the long-run rate exact on any clock and any scheduler: a wake-up
that comes late does not lose the tokens that accrued meanwhile.

Callers that cannot be served at once queue up as *demands* in one FIFO
(tasks in :meth:`RateLimiter.acquire`, and :class:`Reservation` objects that
nobody waits on yet). A demand is granted at its *due time*: the moment the
bucket, draining into the queue strictly in order, has accrued its ``n``
tokens. :meth:`RateLimiter._settle` grants every demand whose due time has
passed *as of that due time* — so a settle that runs 1 ms late grants the
ten demands that became due during that millisecond, each charged to its
own instant, and the next due time is computed from the last grant, not
from the late wake-up. This is the batch wake that keeps 10,000/s exact on
a machine whose shortest sleep is about 1.1 ms, where one sleep per token
would lose most of the rate.

Who wakes up at a due time? Not a background task (there is none): a parked
waiter's own cancel scope serves as the alarm clock (:meth:`RateLimiter._arm`
sets its deadline to the first parked waiter's due time). When it fires, the
waiter's abort function keeps its place in line; the waiter settles the
bucket (granting the head and every follower that the elapsed time pays
for) and re-arms. Entering a cancel scope costs about as much as a
checkpoint, so only one waiter per millisecond's worth of tokens parks in
one (``_ALARM_SPACING``); the others park bare. If no parked waiter has a
scope, the first in line is woken to park again with one ("promotion").
Anything that moves due times — a rate or burst change, a cancelled waiter,
a cancelled reservation giving tokens back — settles and re-arms at once, so
changes take effect for waiters that are already parked.

Why demands wait in a queue rather than borrowing against the future (as
Go's ``x/time/rate`` does by letting ``tokens`` go negative): the queue lets
a rate change re-time every waiter, and lets a cancelled waiter's followers
move up, without re-computing promises already handed out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Final, final

import attrs
import outcome
import trio

from .. import _registry
from .._registry import Holding, Waiting
from .._util import check_optional_name, check_positive_number, check_weight
from ._bucket import drain, refill
from ._parking import Waiter, park, unpark, waited

__all__ = ["RateLimiter", "RateLimiterStatistics", "Reservation"]

# Demand states.
_PENDING: Final = 0  # queued, tokens not yet granted
_GRANTED: Final = 1  # tokens taken from the bucket, not yet used
_USED: Final = 2  # a task got the tokens (acquire or Reservation.wait returned)
_CANCELLED: Final = 3  # withdrawn, or its tokens given back

#: Parked waiters sit in a cancel scope (whose deadline can wake them: an
#: "alarm") only every this many seconds' worth of tokens along the line.
#: Entering a scope costs about as much as a checkpoint, so at 10,000/s giving
#: one to every waiter would double the cost of each grant; one alarm per
#: millisecond of tokens matches how often a wake-up can happen anyway (the
#: shortest sleep here takes ~1.1 ms), so the alarm that fires is usually the
#: head of a batch, which it grants together with the followers that are due.
_ALARM_SPACING: Final = 0.001


class _Demand:
    """One request for ``n`` tokens: queued, granted, used or cancelled."""

    __slots__ = ("alarm", "n", "pos", "scope", "state", "waiter")

    def __init__(self, n: int, state: int, pos: int = 0) -> None:
        self.n: Final = n
        self.state: int = state
        #: Tokens enqueued on the limiter up to and including this demand.
        self.pos: Final = pos
        #: True once its task parks inside a cancel scope that can serve as the alarm.
        self.alarm: bool = False
        #: The parked task's record (what ``task.custom_sleep_data`` holds), once a task waits.
        self.waiter: Waiter | None = None
        #: The waiting task's current cancel scope; its deadline is the wake-up timer.
        self.scope: trio.CancelScope | None = None


def _now_or_none() -> float | None:
    """``trio.current_time()``, or ``None`` outside ``trio.run`` (or in another thread)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


def _check_rate(value: object, param: str = "rate") -> float:
    return check_positive_number(value, param)


def _check_burst(value: object) -> int:
    return check_weight(value, "burst")


@attrs.frozen
class RateLimiterStatistics:
    """A snapshot of a rate limiter's state, from :meth:`RateLimiter.statistics`."""

    name: str
    """The rate limiter's name."""

    rate: float
    """Tokens added per second."""

    burst: int
    """The bucket's size: the most tokens that can be taken at once after a quiet spell."""

    tokens: float
    """Tokens in the bucket now. While demands are queued these are already
    promised to the first in line (a newcomer cannot take them)."""

    tasks_waiting: int
    """Tasks parked in :meth:`RateLimiter.acquire` or :meth:`Reservation.wait`."""

    tokens_queued: int
    """Tokens asked for by every queued demand: waiting tasks and pending reservations."""

    granted: int
    """Tokens handed out so far, net of those given back by cancellations."""


@final
class Reservation:
    """A place in a rate limiter's line for ``n`` tokens, made without waiting.

    Made by :meth:`RateLimiter.reserve`, as Go's ``rate.Reservation``: it
    tells how long until its tokens are granted (:attr:`delay`), and the
    holder either waits for them (:meth:`wait`) and acts, or changes its mind
    (:meth:`cancel`) and the tokens go to whoever is next.

    A reservation is in one of four states: *pending* (in line), *ready*
    (its tokens are taken from the bucket, and it is yours), *used*
    (:meth:`wait` returned) or *cancelled*. Tokens of a pending or ready
    reservation are never lost: cancelling it gives them back.
    """

    __slots__ = ("_demand", "_limiter")

    def __init__(self, limiter: RateLimiter, demand: _Demand) -> None:
        self._limiter: Final = limiter
        self._demand: Final = demand

    @property
    def n(self) -> int:
        """Tokens reserved."""
        return self._demand.n

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter this reservation is for."""
        return self._limiter

    @property
    def delay(self) -> float:
        """Seconds from now until the tokens are granted (0 once ready, used or cancelled).

        Computed afresh on each read, so it reflects rate changes and
        cancellations ahead in line since the reservation was made.
        """
        if self._demand.state != _PENDING:
            return 0.0
        return self._limiter._due(self._demand) - trio.current_time()  # pyright: ignore[reportPrivateUsage]

    @property
    def ready(self) -> bool:
        """True once the tokens are granted (and not yet used or cancelled)."""
        if self._demand.state == _PENDING:
            self._limiter._update(trio.current_time())  # pyright: ignore[reportPrivateUsage]
        return self._demand.state == _GRANTED

    @property
    def cancelled(self) -> bool:
        """True after :meth:`cancel` took effect (or a :meth:`wait` was cancelled)."""
        return self._demand.state == _CANCELLED

    def cancel(self) -> None:
        """Give the reservation up: its place in line, or its tokens if already granted.

        A pending reservation leaves the line, and everyone behind it moves
        up at once. A ready one puts its tokens back in the bucket, which
        never holds more than ``burst``: cancelled at once, it is as if they
        had never been taken; held ready while others waited, the time it
        sat idle is not given back (that would break the promise that no
        window of ``w`` seconds grants more than ``rate * w + burst``).
        Not a checkpoint; never blocks.

        Does nothing once the tokens are used (:meth:`wait` returned, or
        another task is returning from it) or the reservation is already
        cancelled. If a task is parked in :meth:`wait`, it wakes with
        :exc:`RuntimeError`.
        """
        self._limiter._cancel_reservation(self._demand)  # pyright: ignore[reportPrivateUsage]

    async def wait(self) -> None:
        """Wait until the tokens are granted, and take them: the reservation is then used.

        A checkpoint even when already ready. If it is cancelled, the
        reservation is cancelled with it (its place in line or its tokens go
        back), as when an :meth:`RateLimiter.acquire` is cancelled.

        Raises:
          RuntimeError: if the reservation was cancelled (before or during
            the wait), or :meth:`wait` was called on it before.
        """
        await self._limiter._wait_reservation(self._demand)  # pyright: ignore[reportPrivateUsage]

    def __repr__(self) -> str:
        state = ("pending", "ready", "used", "cancelled")[self._demand.state]
        return f"<trioflow.Reservation n={self._demand.n} {state} of {self._limiter.name!r}>"


@final
class RateLimiter:
    """A bucket that fills with ``rate`` tokens per second, up to ``burst``; each call takes some.

    After a quiet spell the bucket is full and up to ``burst`` calls go at
    once; under steady demand calls go at exactly ``rate`` per second, in
    arrival order. It starts full.

    * ``await limiter.acquire(n)`` waits for ``n`` tokens (``async with
      limiter:`` takes one); :meth:`try_acquire` takes them only if it can now;
      :meth:`reserve` takes a place in line without waiting and returns a
      :class:`Reservation` that says how long the wait will be.
    * Waiters are served first come, first served, whatever their ``n``: a
      large request at the head is not overtaken by small ones behind it.
    * ``rate`` and ``burst`` are settable at any time, and take effect at once
      for tasks already waiting.
    * There is no background task: the state is computed from
      :func:`trio.current_time`, so :class:`trio.testing.MockClock` drives it,
      and the long-run rate is exact even when the scheduler wakes tasks late
      (each late wake-up grants every waiter the elapsed time has paid for).

    :meth:`acquire`, ``async with`` and :meth:`Reservation.wait` are
    checkpoints and atomic with respect to cancellation: a cancelled waiter
    takes nothing, and those behind it move up. :meth:`try_acquire` and
    :meth:`reserve` never block and are not checkpoints. Tokens are spent,
    never returned: there is no ``release``.

    Cost: an ``acquire()`` that does not have to wait is one checkpoint plus
    one clock read and a few float operations: the same order as a bare
    :func:`trio.lowlevel.checkpoint`, and close to the floor of an
    ``async def`` that reads the clock and checkpoints (``bench/rate.py``,
    ``docs/benchmarks/rate.md``). A grant to a task that had to wait costs
    one wake-up of that task.

    Args:
      rate: tokens added per second: a finite number > 0 (e.g. ``0.5`` for one
        call every two seconds).
      burst: the bucket's size: an int >= 1, the most tokens one call may ask
        for and the most that go at once after a quiet spell.
      name: what task dumps, metrics and ``repr`` call it.

    .. note::

       A rate limiter bounds how many calls *start per second*; a
       :class:`~trioflow.CapacityLimiter` bounds how many run *at once*, and
       its tokens come back when a call finishes. A
       :class:`~trioflow.PriorityLimiter` is a capacity limiter whose waiters
       are served by lane. To bound both, use one of each.
    """

    __slots__ = (
        "__weakref__",
        "_alarms",
        "_armed",
        "_burst",
        "_enqueued",
        "_granted",
        "_last_alarm_pos",
        "_level",
        "_name",
        "_pending",
        "_promoted",
        "_queue",
        "_rate",
        "_seq",
        "_sleepers",
        "_stamp",
    )

    kind = "rate_limiter"

    def __init__(self, rate: float, *, burst: int = 1, name: str | None = None) -> None:
        self._rate = _check_rate(rate)
        self._burst = _check_burst(burst)
        self._name = check_optional_name(name) or _registry.default_name(self.kind)
        #: tokens in the bucket at time ``_stamp`` (-inf: never looked at, so full)
        self._level: float = float(self._burst)
        self._stamp = -math.inf
        #: FIFO of demands; withdrawn ones stay until they reach the head (lazy removal)
        self._queue: deque[_Demand] = deque()
        #: demands in ``_queue`` still pending
        self._pending = 0
        #: pending demands whose task is parked now
        self._sleepers = 0
        #: the parked demand whose scope deadline is the next wake-up
        self._armed: _Demand | None = None
        #: demands whose tasks park inside a cancel scope (alarm candidates), in line order
        self._alarms: deque[_Demand] = deque()
        #: ``pos`` of the last demand that became an alarm candidate
        self._last_alarm_pos = 0
        #: tokens enqueued so far (gives each demand its ``pos``)
        self._enqueued = 0
        #: a scope-less waiter woken to become the alarm, not yet re-parked
        self._promoted: _Demand | None = None
        self._granted = 0
        self._seq = 0
        _registry.register(self)

    # -- configuration -------------------------------------------------------

    @property
    def name(self) -> str:
        """The rate limiter's name (given, or ``rate-limiter-N``)."""
        return self._name

    @property
    def rate(self) -> float:
        """Tokens per second. Settable; waiting tasks are re-timed at once.

        Tokens that accrued before the change count at the old rate.
        """
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        rate = _check_rate(value)
        now = _now_or_none()
        if now is not None:
            self._settle(now)
        self._rate = rate
        if now is not None:
            self._arm()

    @property
    def burst(self) -> int:
        """The bucket's size. Settable; takes effect at once.

        Shrinking it drops tokens above the new size; growing it adds none
        (they accrue at ``rate``).

        Raises:
          ValueError: if set below the ``n`` of a demand already queued,
            which could then never be granted.
        """
        return self._burst

    @burst.setter
    def burst(self, value: int) -> None:
        burst = _check_burst(value)
        now = _now_or_none()
        if now is not None:
            self._settle(now)
        if self._pending:
            largest = max(d.n for d in self._queue if d.state == _PENDING)
            if largest > burst:
                raise ValueError(
                    f"burst={burst!r} is less than n={largest} that a queued demand on "
                    f"rate limiter {self._name!r} asked for; it could never be granted"
                )
        self._burst = burst
        if self._level > burst:
            self._level = float(burst)
        if now is not None:
            self._arm()

    def _check_n(self, n: int) -> None:
        check_weight(n, "n")
        if n > self._burst:
            raise ValueError(
                f"n={n!r} is more than burst={self._burst} of rate limiter {self._name!r}; "
                "it could never be granted"
            )

    # -- the bucket ------------------------------------------------------------

    def _settle(self, now: float) -> None:
        """Bring the bucket to ``now``: grant every demand due by then, each at its due time."""
        if not self._pending:
            self._level = refill(self._level, self._stamp, now, self._rate, self._burst)
            self._stamp = now
            return
        due, self._level, _ = drain(
            self._level, self._stamp, now, self._rate, self._burst, self._pending_sizes()
        )
        self._stamp = now
        queue = self._queue
        while due:
            demand = queue.popleft()
            if demand.state == _PENDING:
                self._grant(demand)
                due -= 1
        while queue and queue[0].state != _PENDING:
            queue.popleft()

    def _pending_sizes(self) -> Iterator[int]:
        """Sizes of the pending demands, in line order (lazily: drain stops early)."""
        for d in self._queue:
            if d.state == _PENDING:
                yield d.n

    def _grant(self, demand: _Demand) -> None:
        demand.state = _GRANTED
        self._pending -= 1
        self._granted += demand.n
        if demand is self._armed:
            self._armed = None
        if demand is self._promoted:
            self._promoted = None
        waiter = demand.waiter
        if waiter is not None and waiter.parked:
            self._sleepers -= 1
            # Its scope's deadline (if armed) is left alone: the task leaves
            # the scope before its next checkpoint, which unregisters it.
            unpark(waiter)

    def _due(self, demand: _Demand) -> float:
        """When a pending ``demand`` will be granted, at the current rate."""
        self._update(trio.current_time())
        if demand.state != _PENDING:
            return self._stamp
        return self._due_after_settle(demand)

    def _due_after_settle(self, demand: _Demand) -> float:
        cumulative = 0
        for d in self._queue:
            if d.state == _PENDING:
                cumulative += d.n
                if d is demand:
                    break
        need = cumulative - self._level
        return self._stamp + need / self._rate if need > 0 else self._stamp

    def _arm(self) -> None:
        """Set the alarm to the due time of the first parked waiter (call right after a settle).

        The alarm is the first parked waiter that sits in a cancel scope;
        usually the head itself, at worst a few places behind it, in which
        case it wakes at the head's due time, settles (granting the head and
        whoever else is due) and parks again. If no parked waiter has a
        scope, the first one is woken to park again with one ("promoted").
        """
        first: _Demand | None = None
        due = math.inf
        if self._sleepers:
            cumulative = 0
            for d in self._queue:
                if d.state != _PENDING:
                    continue
                cumulative += d.n
                waiter = d.waiter
                if waiter is not None and waiter.parked:
                    first = d
                    need = cumulative - self._level
                    due = self._stamp + need / self._rate if need > 0 else self._stamp
                    break
        target: _Demand | None = None
        if first is not None:
            alarms = self._alarms
            while alarms and alarms[0].state != _PENDING:
                alarms.popleft()
            for d in alarms:
                waiter = d.waiter
                assert waiter is not None
                if waiter.parked:
                    target = d
                    break
                # A candidate that is awake (its alarm just fired, or it was
                # cancelled) will settle and re-arm itself when it runs.
                first = None
                break
        old = self._armed
        if old is not None and old is not target and old.scope is not None:
            old.scope.deadline = math.inf
        self._armed = target
        if target is not None:
            scope = target.scope
            assert scope is not None
            if scope.deadline != due:
                scope.deadline = due
        elif first is not None and self._promoted is None:
            # Nobody parked can wake up by itself: wake the first in line so
            # it parks again inside a scope.
            waiter = first.waiter
            assert waiter is not None
            self._sleepers -= 1
            self._promoted = first
            unpark(waiter)

    def _update(self, now: float) -> None:
        """Settle, and re-arm if anything is parked."""
        self._settle(now)
        if self._sleepers or self._armed is not None:
            self._arm()

    def _give_back(self, n: int) -> None:
        """Put ``n`` granted-but-unused tokens back, as if they had never been taken."""
        now = trio.current_time()
        self._settle(now)
        level = self._level + n
        self._level = level if level < self._burst else float(self._burst)
        self._granted -= n
        self._update(now)

    def _withdraw(self, demand: _Demand) -> None:
        """Take a pending demand out of line; those behind it move up."""
        demand.state = _CANCELLED
        self._pending -= 1
        if demand is self._armed:
            self._armed = None
        if demand is self._promoted:
            self._promoted = None
        self._update(trio.current_time())

    def _enqueue(self, n: int) -> _Demand:
        self._enqueued += n
        demand = _Demand(n, _PENDING, self._enqueued)
        self._queue.append(demand)
        self._pending += 1
        return demand

    def _take_now(self, n: int, now: float) -> bool:
        """Take ``n`` tokens at ``now`` if nobody is in line and the bucket has them."""
        if self._pending:
            self._settle(now)
            if self._pending:
                return False
        else:
            self._level = refill(self._level, self._stamp, now, self._rate, self._burst)
            self._stamp = now
        if self._level >= n:
            self._level -= n
            self._granted += n
            return True
        return False

    # -- waiting ---------------------------------------------------------------

    async def _park(self, demand: _Demand) -> None:
        """Wait until a pending ``demand`` is granted; mark it used.

        On cancellation (or any exception delivered while parked) the demand
        is withdrawn, or its tokens given back if it was granted meanwhile.
        """
        task = trio.lowlevel.current_task()
        self._seq += 1
        waiter = Waiter(task, task, demand.n, 0, self, self._seq, trio.current_time())
        demand.waiter = waiter

        def woke_early() -> None:
            # Our own deadline (time to settle) or an outer cancellation: either
            # way keep the place in line; the task sorts it out when it runs.
            self._sleepers -= 1

        def sleeping() -> None:
            self._sleepers += 1
            self._arm()

        try:
            while demand.state == _PENDING:
                if self._promoted is demand:
                    self._promoted = None
                elif not demand.alarm and self._armed is not None:
                    # Wanted as an alarm candidate only if it is far enough
                    # behind the last one (see _ALARM_SPACING).
                    spacing = self._rate * _ALARM_SPACING
                    if demand.pos - self._last_alarm_pos < spacing:
                        await park(waiter, woke_early, sleeping)
                        if demand.state == _PENDING:
                            # Promoted, or cancelled: settle, then park again
                            # (or leave, from the except clause below).
                            self._settle(trio.current_time())
                        continue
                if not demand.alarm:
                    demand.alarm = True
                    self._alarms.append(demand)
                    if demand.pos > self._last_alarm_pos:
                        self._last_alarm_pos = demand.pos
                scope = demand.scope = trio.CancelScope()
                with scope:
                    await park(waiter, woke_early, sleeping)
                if demand.state == _PENDING:
                    # Our deadline fired: pay out everything that is due by now
                    # (the head first, maybe us), and arm whoever is next.
                    self._update(trio.current_time())
        except BaseException:
            if demand.state == _PENDING:
                self._withdraw(demand)
            elif demand.state == _GRANTED:
                demand.state = _CANCELLED
                self._give_back(demand.n)
            raise
        if demand.state == _CANCELLED:
            raise RuntimeError("the reservation was cancelled while a task waited on it")
        demand.state = _USED
        waited(waiter)

    async def acquire(self, n: int = 1) -> None:
        """Take ``n`` tokens, waiting until the bucket has them and everyone ahead is served.

        This is a checkpoint, and it is atomic with respect to cancellation:
        if it raises :class:`trio.Cancelled`, no tokens were taken and those
        behind move up as if this call had never been made.

        Raises:
          ValueError: if ``n`` is below 1 or above ``burst``.
          TypeError: if ``n`` is not an int.
        """
        if n != 1 or type(n) is not int:
            self._check_n(n)
        now = trio.current_time()
        if self._pending:
            taken = self._take_now(n, now)
        else:
            # The hot path, _take_now inlined: nobody in line, so refill and take.
            level = self._level
            stamp = self._stamp
            if now > stamp:
                level += (now - stamp) * self._rate
                if level > self._burst:
                    level = self._burst
            self._stamp = now
            if level >= n:
                self._level = level - n
                self._granted += n
                taken = True
            else:
                self._level = level
                taken = False
        if taken:
            # Granted at once: still a checkpoint, and a cancellation
            # delivered here gives the tokens straight back.
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self._give_back(n)
                raise
            return
        await self._park(self._enqueue(n))

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` tokens if the bucket has them now and nobody is waiting; never blocks.

        Not a checkpoint. Returns ``False`` (taking nothing) rather than
        overtake a task or reservation already in line.

        Raises:
          ValueError: if ``n`` is below 1 or above ``burst``.
        """
        if n != 1 or type(n) is not int:
            self._check_n(n)
        return self._take_now(n, trio.current_time())

    def reserve(self, n: int = 1) -> Reservation:
        """Take a place in line for ``n`` tokens without waiting, and say how long it will be.

        Returns a :class:`Reservation`: ``reservation.delay`` is the wait in
        seconds (0 if the tokens were free now, in which case they are
        already taken); ``await reservation.wait()`` waits for them;
        ``reservation.cancel()`` gives them up. A pending reservation holds
        its place: tasks that call :meth:`acquire` later queue behind it.
        Not a checkpoint.

        Raises:
          ValueError: if ``n`` is below 1 or above ``burst``.
        """
        if n != 1 or type(n) is not int:
            self._check_n(n)
        if self._take_now(n, trio.current_time()):
            return Reservation(self, _Demand(n, _GRANTED))
        return Reservation(self, self._enqueue(n))

    def _cancel_reservation(self, demand: _Demand) -> None:
        state = demand.state
        if state == _PENDING:
            waiter = demand.waiter
            if waiter is not None and waiter.parked:
                self._sleepers -= 1
                unpark(
                    waiter,
                    outcome.Error(
                        RuntimeError("the reservation was cancelled while a task waited on it")
                    ),
                )
            self._withdraw(demand)
        elif state == _GRANTED and demand.waiter is None:
            demand.state = _CANCELLED
            self._give_back(demand.n)

    async def _wait_reservation(self, demand: _Demand) -> None:
        if demand.state == _CANCELLED:
            raise RuntimeError("this reservation was cancelled")
        if demand.state == _USED or demand.waiter is not None:
            raise RuntimeError("wait() was already called on this reservation")
        if demand.state == _GRANTED:
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self._cancel_reservation(demand)
                raise
            demand.state = _USED
            return
        await self._park(demand)

    # ``async with limiter:`` takes one token. An alias rather than a method
    # that awaits acquire(): one coroutine layer less on the hot path.
    __aenter__ = acquire

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    # -- state -----------------------------------------------------------------

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot of the bucket's state. A pure read: it changes nothing and wakes nobody.

        Inside ``trio.run`` the figures are those of this instant: demands
        whose due time has passed but whose tasks have not run yet count as
        granted, and ``tokens`` includes what accrued since the bucket was
        last touched. From another thread (a metrics exporter) or outside
        ``trio.run``, they are as of the last call that touched the bucket.
        """
        queued = [d for d in list(self._queue) if d.state == _PENDING]
        level = self._level
        granted = self._granted
        now = _now_or_none()
        if now is not None:
            due, level, _ = drain(
                level, self._stamp, now, self._rate, self._burst, (d.n for d in queued)
            )
            granted += sum(d.n for d in queued[:due])
            queued = queued[due:]
        return RateLimiterStatistics(
            name=self._name,
            rate=self._rate,
            burst=self._burst,
            tokens=level,
            tasks_waiting=sum(1 for d in queued if d.waiter is not None),
            tokens_queued=sum(d.n for d in queued),
            granted=granted,
        )

    def _trioflow_holders(self) -> list[Holding]:
        # A bucket's tokens are spent, not held: nobody can be waited *for*.
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return [d.waiter for d in self._queue if d.state == _PENDING and d.waiter is not None]

    def __repr__(self) -> str:
        return (
            f"<trioflow.RateLimiter {self._name!r} at {id(self):#x}, {self._rate:g}/s "
            f"burst {self._burst} with {self._pending} waiting>"
        )
