"""PriorityLimiter and Lane: one pool of tokens, served by lane.

A :class:`PriorityLimiter` is one :class:`~trioflow._admission._kernel.Kernel`
with one queue per :class:`Lane` and a policy (:class:`_LanePolicy`) that
picks which lane's head goes next. Each lane handle (:class:`LaneLimiter`) is
a face of that one kernel, so every lane is a full :class:`~trioflow.Limiter`
and there is no second queue anywhere.

Who goes next (the policy, run whenever tokens may have freed up: a release,
a resize, an arrival, a cancelled waiter):

1. Only lane *heads* are candidates: within a lane, strict FIFO, and a heavy
   head is not overtaken by lighter waiters behind it (no barging).
2. A head whose lane would go over its ``limit`` is not a candidate: the
   tokens it would need are not the lane's to take, so others may use them.
3. Heads of lanes holding less than their reserve come first (by priority,
   then arrival).
4. Then by priority, then arrival. A head that has waited ``max_wait`` counts
   as if its lane had the best priority: it is served with the most urgent
   lane's waiters, in arrival order. So a flood in a high lane cannot starve
   a low one, and a flood of promoted low waiters cannot starve the high lane
   either: at worst they share in arrival order.
5. The winner is granted if its whole weight fits in the free tokens;
   otherwise *nobody* goes and the free tokens wait for it. A lane below its
   reserve is therefore served by the very next release, and priority order
   means something even with weights.

Promotion is evaluated whenever the policy runs; there is no timer task, so a
head that crosses ``max_wait`` while nothing happens on the limiter is
promoted at the next release or arrival (when it could first matter anyway,
unless free tokens were being saved for a heavier head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, cast, final

import attrs
import trio

from .. import _registry
from .._registry import Holding, Waiting
from .._util import (
    check_optional_name,
    check_positive_number,
    check_total_tokens,
    raise_type,
)
from ..adaptive._base import Algorithm
from ._capacity import LimiterStatistics, PoolState, adapt_total, resolve_algorithm
from ._face import Feedback, LimiterFace, fmt_tokens
from ._kernel import Kernel, Waiter, fits_total

__all__ = [
    "Lane",
    "LaneLimiter",
    "LaneStatistics",
    "PriorityLimiter",
    "PriorityLimiterStatistics",
]

# Floating-point slack when turning fractions of the total into whole tokens
# (0.29 * 100 is 28.999999999999996, and it means 29).
_EPS = 1e-9


# -- configuration -------------------------------------------------------------


def _lane_name(value: str) -> str:
    if not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise_type("name", "a str", value)
    if not value:
        raise ValueError("name must be a non-empty str, got ''")
    return value


def _priority(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise_type("priority", "an int", value)
    return value


def _fraction(value: object, param: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise_type(param, "a number between 0 and 1", value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if math.isnan(value) or not (low_ok and value <= 1.0):
        bound = "between 0 and 1" if allow_zero else "> 0 and <= 1"
        raise ValueError(f"{param} must be {bound}, got {value!r}")
    return float(value)


def _reserve(value: float) -> float:
    return _fraction(value, "reserve", allow_zero=True)


def _limit(value: float) -> float:
    return _fraction(value, "limit", allow_zero=False)


def _max_wait(value: float | None) -> float | None:
    if value is None:
        return None
    return check_positive_number(value, "max_wait")


@final
@attrs.frozen
class Lane:
    """How one class of work shares a :class:`PriorityLimiter`.

    A lane is a description, not a limiter: pass lanes to
    :class:`PriorityLimiter` and take tokens through
    ``limiter.lane(name)``.

    Example::

        tf.Lane("interactive", priority=0, reserve=0.6)
        tf.Lane("batch", priority=1, reserve=0.2, limit=0.5, max_wait=2.0)

    Raises:
      TypeError: for a parameter of the wrong type.
      ValueError: for a fraction out of range, ``reserve`` above ``limit``,
        an empty name or a ``max_wait`` that is not a positive finite number.
    """

    name: str = attrs.field(converter=_lane_name)
    """The lane's name, unique within its limiter."""

    priority: int = attrs.field(default=0, kw_only=True, converter=_priority)
    """Lower values are served first (after reserves). Lanes may share a value:
    they are then served in arrival order."""

    reserve: float = attrs.field(default=0.0, kw_only=True, converter=_reserve)
    """Fraction of the limiter's total this lane is guaranteed while it has
    demand: while it holds less, its waiters go before everyone else's."""

    limit: float = attrs.field(default=1.0, kw_only=True, converter=_limit)
    """Fraction of the total this lane may hold at most, borrowing included
    (``> 0``, at least ``reserve``)."""

    max_wait: float | None = attrs.field(default=None, kw_only=True, converter=_max_wait)
    """Seconds after which a waiter of this lane is served as if its lane had
    the best priority (``None``: never promoted)."""

    def __attrs_post_init__(self) -> None:
        if self.reserve > self.limit:
            raise ValueError(
                f"reserve={self.reserve!r} is more than limit={self.limit!r} for lane {self.name!r}"
            )


# -- how fractions become tokens -----------------------------------------------


def reserved_tokens(lanes: Sequence[Lane], total: int | float) -> list[int | float]:
    """Each lane's reserve in whole tokens under ``total``.

    Largest remainder: every lane gets ``floor(reserve * total)``; the tokens
    the fractions add up to beyond that go one each to the lanes with the
    largest fractional parts (ties: better priority, then earlier lane).
    Then a lane that asked for a reserve but got 0 tokens gets one while
    tokens are left, in priority order, because a guarantee of "no tokens"
    is no guarantee. The sum never exceeds ``total``, so every reserve can be
    honoured at once.
    """
    if total == math.inf:
        return [math.inf if lane.reserve > 0 else 0 for lane in lanes]
    exact = [lane.reserve * total for lane in lanes]
    out: list[int | float] = [math.floor(x + _EPS) for x in exact]
    spare = math.floor(math.fsum(exact) + _EPS) - int(sum(out))
    by_remainder = sorted(
        range(len(lanes)),
        key=lambda i: (-(exact[i] - out[i]), lanes[i].priority, i),
    )
    for i in by_remainder[: max(spare, 0)]:
        if exact[i] - out[i] > _EPS:
            out[i] += 1
    used = sum(out)
    for i in sorted(range(len(lanes)), key=lambda i: (lanes[i].priority, i)):
        if lanes[i].reserve > 0 and out[i] == 0 and used < total:
            out[i] = 1
            used += 1
    return out


def cap_tokens(lane: Lane, reserved: int | float, total: int | float) -> int | float:
    """The most ``lane`` may hold under ``total``: ``floor(limit * total)``,
    but never below its reserve, and at least one token while ``total >= 1``
    (a lane that can never run is a hang, not a limit)."""
    if total == math.inf:
        return math.inf
    floor_cap = math.floor(lane.limit * total + _EPS)
    return max(floor_cap, reserved, 1 if total >= 1 else 0)


# -- the policy ----------------------------------------------------------------


#: (lane index, its queue, cap, reserved tokens, priority, max_wait)
_Row = tuple[int, "dict[Waiter, None]", "int | float", "int | float", int, "float | None"]


class _LanePolicy:
    """The kernel's policy and fast-path hooks for a set of lanes.

    Holds only numbers (no reference back to the limiter), so the kernel and
    its policy form no reference cycle with the public objects.
    """

    __slots__ = (
        "caps",
        "heads",
        "lanes",
        "max_waits",
        "priorities",
        "promoted",
        "queues",
        "reserved",
        "rows",
        "top",
    )

    def __init__(self, lanes: Sequence[Lane], total: int | float) -> None:
        self.lanes: Final = tuple(lanes)
        self.priorities: Final = [lane.priority for lane in lanes]
        self.max_waits: Final = [lane.max_wait for lane in lanes]
        #: the best priority of all lanes: where a promoted waiter competes
        self.top: Final = min(self.priorities)
        #: grants that ``max_wait`` promotion decided, per lane
        self.promoted = [0] * len(lanes)
        #: Each lane's head as last seen. Reading a dict's first key costs
        #: time in proportion to the entries deleted before it (a FIFO of
        #: 300 waiters: about 1 µs), so the head is looked up again only
        #: when it has left its queue. That check is exact: waiters join
        #: at the end and never come back, so a head still queued is still
        #: the head. (A stale entry keeps one finished waiter alive until
        #: its lane is next looked at.)
        self.heads: list[Waiter | None] = [None] * len(lanes)
        self.reserved: list[int | float] = []
        self.caps: list[int | float] = []
        #: the kernel's queues, once :meth:`attach` has run
        self.queues: list[dict[Waiter, None]] = []
        #: per lane, what :meth:`choose` reads, in one tuple (one unpack per lane)
        self.rows: list[_Row] = []
        self.resize(total)

    def attach(self, kernel: Kernel) -> None:
        """Bind to the kernel whose queues :meth:`choose` reads."""
        self.queues = kernel.queues
        self._build_rows()

    def resize(self, total: int | float) -> None:
        self.reserved = reserved_tokens(self.lanes, total)
        self.caps = [
            cap_tokens(lane, r, total) for lane, r in zip(self.lanes, self.reserved, strict=True)
        ]
        self._build_rows()

    def _build_rows(self) -> None:
        if self.queues:
            self.rows = [
                (i, self.queues[i], self.caps[i], self.reserved[i], p, self.max_waits[i])
                for i, p in enumerate(self.priorities)
            ]

    def admits(self, kernel: Kernel, lane: int, weight: int) -> bool:
        """Fast path, nobody waiting: the tokens are free and within the lane's cap.

        Reserves do not hold tokens back here: with nobody waiting no lane
        has unmet demand, and idle capacity is anyone's (work-conserving).
        """
        return (
            weight <= kernel.total - kernel.borrowed
            and kernel.lane_in_use[lane] + weight <= self.caps[lane]
        )

    def choose(self, kernel: Kernel) -> Waiter | None:
        """Pick the next waiter to grant (see the module docstring for the order).

        Runs on every release (and arrival, when a token is free) while
        anyone waits, so it is written for speed: no tuples built, one unpack
        per lane, and two passes so that the common case under saturation —
        the lane that just released is below its reserve again — never reads
        the clock; the second pass reads it only when a ``max_wait`` could
        change the answer.
        """
        free = kernel.total - kernel.borrowed
        if free <= 0:
            # Every weight is >= 1: nobody fits, whoever would be chosen.
            return None
        in_use = kernel.lane_in_use
        rows = self.rows
        heads = self.heads
        best: Waiter | None = None
        best_priority = 0
        best_seq = 0
        # Pass 1: lanes below their reserve, by (priority, arrival).
        for i, queue, cap, reserve, priority, _ in rows:
            used = in_use[i]
            if used >= reserve:
                continue
            head = heads[i]
            if head is None or head not in queue:
                # The lane's head; an empty lane is skipped. (A for/break
                # reads the first key faster than next(iter(queue)).)
                for head in queue:  # noqa: B007
                    break
                else:
                    heads[i] = None
                    continue
                heads[i] = head
            if used + head.weight > cap:
                continue
            if (
                best is None
                or priority < best_priority
                or (priority == best_priority and head.seq < best_seq)
            ):
                best = head
                best_priority = priority
                best_seq = head.seq
        if best is not None:
            return best if best.weight <= free else None
        # Pass 2: everyone else, by (priority, arrival), a head that has
        # waited max_wait counting as the top priority.
        top = self.top
        now: float | None = None
        best_promoted = False
        for i, queue, cap, _, priority, max_wait in rows:
            head = heads[i]
            if head is None or head not in queue:
                for head in queue:  # noqa: B007
                    break
                else:
                    heads[i] = None
                    continue
                heads[i] = head
            if in_use[i] + head.weight > cap:
                continue
            promoted = False
            if (
                max_wait is not None
                and priority != top
                # even promoted it would lose to the best so far: skip the clock
                and not (best is not None and best_priority == top and best_seq < head.seq)
            ):
                if now is None:
                    now = trio.current_time()
                if now - head.since >= max_wait:
                    priority = top
                    promoted = True
            if (
                best is None
                or priority < best_priority
                or (priority == best_priority and head.seq < best_seq)
            ):
                best = head
                best_priority = priority
                best_seq = head.seq
                best_promoted = promoted
        if best is None or best.weight > free:
            return None
        if best_promoted:
            self.promoted[best.lane] += 1
        return best


# -- statistics ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LaneStatistics(LimiterStatistics):
    """A snapshot of one lane, from :meth:`LaneLimiter.statistics`.

    The :class:`LimiterStatistics` fields describe the lane as a limiter of
    its own: ``total_tokens`` is the most it may hold now (its ``limit`` of
    the total), ``borrowed_tokens``, ``tasks_waiting`` and ``borrowers`` are
    its own; ``algorithm`` is the shared limiter's.
    """

    lane: str
    """The lane's name (``name`` is ``"<limiter>/<lane>"``)."""

    priority: int
    """The lane's priority (lower is served first)."""

    reserve: float
    """The fraction of the total asked for."""

    reserved_tokens: int | float
    """That fraction in whole tokens under the current total (see the rounding
    rules in :class:`PriorityLimiter`)."""

    limit: float
    """The most this lane may hold, as a fraction of the total."""

    granted: int
    """Grants made to this lane so far (every successful acquire)."""

    promoted: int
    """Of those, grants that ``max_wait`` promotion decided."""


@attrs.frozen(kw_only=True)
class PriorityLimiterStatistics(LimiterStatistics):
    """A snapshot of a :class:`PriorityLimiter`: the whole pool, and each lane."""

    lanes: Mapping[str, LaneStatistics]
    """Per lane, by lane name, in the order the lanes were given."""


# -- the public objects --------------------------------------------------------


@final
class LaneLimiter(LimiterFace):
    """One lane of a :class:`PriorityLimiter`: a full :class:`~trioflow.Limiter`.

    Get it with ``limiter.lane(name)`` or ``limiter[name]`` (the same
    object each time). It has everything :class:`~trioflow.CapacityLimiter`
    has — ``async with``, ``acquire(weight=)``, ``acquire_nowait``,
    ``release``, ``hold()`` with :class:`~trioflow.Permit`, the
    ``*_on_behalf_of`` methods for ``trio.to_thread.run_sync(limiter=...)``
    and ``statistics()`` — taking tokens from the shared pool by its lane's
    rules.

    Blocking calls are checkpoints and atomic with respect to cancellation:
    a cancelled waiter holds nothing and leaves every lane's queue as if it
    never asked (if it was a head the policy was saving tokens for, the next
    waiter is served at once). Releasing is never a checkpoint.

    ``total_tokens`` is the most this lane may hold now (its ``limit`` of the
    limiter's total, rounded as :class:`PriorityLimiter` describes); it is
    read-only here: set the limiter's ``total_tokens`` and every lane follows.
    ``available_tokens`` is what it could take at once if nobody else
    waited. A borrower holds tokens of at most one lane of a limiter at a
    time.

    Cost: an uncontended ``async with`` measured at 0.96–1.04× the CPU time
    of :class:`trio.CapacityLimiter`'s; 1000 tasks over 3 lanes contending
    for 10 tokens at 1.03–1.15× (``bench/lanes.py``, ``docs/benchmarks/``).
    """

    __slots__ = (
        "__weakref__",
        "_config",
        "_feedback",
        "_kernel",
        "_lane",
        "_limiter",
        "_name",
        "_policy",
        "_what",
    )

    kind = "lane"

    def __init__(self, limiter: PriorityLimiter, index: int, config: Lane) -> None:
        self._limiter: Final = limiter
        self._kernel = limiter._kernel  # pyright: ignore[reportPrivateUsage]
        self._policy: Final = limiter._policy  # pyright: ignore[reportPrivateUsage]
        self._feedback = limiter._feedback  # pyright: ignore[reportPrivateUsage]
        self._lane = index
        self._config: Final = config
        self._name: Final = f"{limiter.name}/{config.name}"
        self._what = f"lane {self._name!r}"
        _registry.register(self)

    # -- identity ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """``"<limiter name>/<lane name>"``: what dumps, metrics and ``repr`` call it."""
        return self._name

    @property
    def lane(self) -> Lane:
        """The lane's configuration."""
        return self._config

    @property
    def limiter(self) -> PriorityLimiter:
        """The limiter whose tokens this lane shares."""
        return self._limiter

    @property
    def algorithm(self) -> Algorithm | None:
        """The shared limiter's adaptive algorithm, if any."""
        return None if self._feedback is None else self._feedback.algorithm

    # -- tokens ------------------------------------------------------------------

    @property
    def total_tokens(self) -> int | float:
        """The most this lane may hold now: its ``limit`` of the limiter's total. Read-only."""
        return self._policy.caps[self._lane]

    @property
    def reserved_tokens(self) -> int | float:
        """Tokens guaranteed to this lane while it has demand, under the current total."""
        return self._policy.reserved[self._lane]

    @property
    def available_tokens(self) -> int | float:
        """Tokens this lane could take at once if nobody waited (never negative)."""
        kernel = self._kernel
        lane = self._lane
        return max(
            0,
            min(
                self._policy.caps[lane] - kernel.lane_in_use[lane],
                kernel.total - kernel.borrowed,
            ),
        )

    def _check_weight(self, weight: int) -> None:
        super()._check_weight(weight)
        cap = self._policy.caps[self._lane]
        if not fits_total(cap, weight):
            raise ValueError(
                f"weight={weight!r} is more than {self._what}'s total_tokens={cap!r} "
                f"(its limit={self._config.limit!r} of {fmt_tokens(self._kernel.total)})"
            )

    def release_on_behalf_of(self, borrower: object, weight: int | None = None) -> None:
        """Give back tokens ``borrower`` holds in this lane (see
        :meth:`trioflow.CapacityLimiter.release_on_behalf_of`).

        Raises:
          RuntimeError: if ``borrower`` holds no tokens of this lane (also
            when it holds tokens of another lane of the same limiter).
          ValueError: if ``weight`` is more than it holds.
        """
        hold = self._kernel.holders.get(borrower)
        if hold is not None and hold.lane != self._lane:
            other = self._policy.lanes[hold.lane].name
            raise RuntimeError(
                f"this borrower isn't holding any of {self._what}'s tokens "
                f"(it holds tokens of lane {other!r} of the same limiter)"
            )
        super().release_on_behalf_of(borrower, weight)

    # -- state -------------------------------------------------------------------

    def statistics(self) -> LaneStatistics:
        """A snapshot of this lane (plain reads; safe from any thread)."""
        kernel = self._kernel
        lane = self._lane
        policy = self._policy
        config = self._config
        return LaneStatistics(
            name=self._name,
            total_tokens=policy.caps[lane],
            borrowed_tokens=kernel.lane_in_use[lane],
            tasks_waiting=len(kernel.queues[lane]),
            borrowers=[b for b, h in list(kernel.holders.items()) if h.lane == lane],
            algorithm=None if self._feedback is None else self._feedback.algorithm.state(),
            lane=config.name,
            priority=config.priority,
            reserve=config.reserve,
            reserved_tokens=policy.reserved[lane],
            limit=config.limit,
            granted=kernel.lane_granted[lane],
            promoted=policy.promoted[lane],
        )

    def _trioflow_holders(self) -> list[Holding]:
        lane = self._lane
        name = self._config.name
        return [
            Holding(b, h.weight, name) for b, h in self._kernel.holders.items() if h.lane == lane
        ]

    def __repr__(self) -> str:
        kernel = self._kernel
        lane = self._lane
        return (
            f"<trioflow.LaneLimiter {self._name!r} at {id(self):#x}, "
            f"{kernel.lane_in_use[lane]}/{fmt_tokens(self._policy.caps[lane])} "
            f"(reserved {fmt_tokens(self._policy.reserved[lane])}) "
            f"with {len(kernel.queues[lane])} waiting>"
        )


@final
class PriorityLimiter(PoolState):
    """One sack of tokens shared by lanes of work with priorities and reserved shares.

    Picture one downstream quota shared by interactive requests and batch
    jobs. Separate limiters per class waste the quota whenever one class is
    idle; one plain limiter lets a batch flood starve interactive users. A
    priority limiter is one pool whose waiters are served by lane:

    * a lane holding less than its ``reserve`` (a fraction of the total) is
      served first when tokens free up, so its share is guaranteed while it
      has demand;
    * beyond reserves, lower ``priority`` goes first, and arrival order
      within a priority;
    * a lane may borrow idle capacity beyond its reserve (work-conserving),
      up to its ``limit`` fraction;
    * a waiter that has waited ``max_wait`` seconds is served as if its lane
      had the best priority, so no lane starves.

    Within a lane, waiters are strictly first come, first served, and a heavy
    head is not overtaken by lighter waiters behind it. Tokens already held
    are never taken back: a lane below its reserve waits for the next
    release, which goes to it.

    Take tokens through a lane handle: ``limiter.lane("batch")`` or
    ``limiter["batch"]`` is a :class:`LaneLimiter`, a full
    :class:`~trioflow.Limiter` (``async with``, weights, ``hold()``,
    ``trio.to_thread.run_sync(limiter=...)``, statistics).

    How fractions become tokens (they must be whole): each lane's reserve is
    ``floor(reserve * total)``, and the tokens the reserves add up to beyond
    those floors go, one each, to the lanes with the largest fractional parts
    (so three lanes of ``1/3`` under 10 tokens reserve 4, 3 and 3). A lane
    that asked for a reserve but would get no token gets one while the total
    allows, in priority order. Reserves never add up to more than the total.
    A lane's cap is ``floor(limit * total)``, but at least its reserve and at
    least one token: a lane that could never run would be a hang. Shares are
    recomputed whenever the total changes.

    Args:
      total_tokens: tokens in the pool: a non-negative int or ``math.inf``; 0
        pauses admission. Settable at any time (growing wakes waiters,
        shrinking never revokes held tokens); lane shares follow. With
        ``algorithm=``, the starting limit.
      lanes: the :class:`Lane` s, at least one, with unique names and
        reserves adding up to at most 1.
      name: what task dumps, metrics and ``repr`` call it; lane handles are
        named ``"<name>/<lane>"``.
      algorithm: an adaptive algorithm from :mod:`trioflow.adaptive`: every
        finished block in any lane is a sample and the algorithm sets the
        shared ``total_tokens``.
      overload: with ``algorithm=``, the exception type(s) that mark a sample
        as a drop (default :exc:`trio.TooSlowError`).

    Raises:
      TypeError: if ``lanes`` is not a sequence of :class:`Lane`.
      ValueError: if ``lanes`` is empty, names repeat, or reserves add up to
        more than 1.

    .. note::

       Reserves and priorities decide who goes *next*; they never preempt a
       holder. Shares of grants over time match the reserves when holds take
       similar time; a lane whose blocks run longer holds its tokens longer.
    """

    __slots__ = ("__weakref__", "_by_name", "_feedback", "_handles", "_kernel", "_name", "_policy")

    kind = "priority limiter"

    def __init__(
        self,
        total_tokens: int | float,
        lanes: Sequence[Lane],
        *,
        name: str | None = None,
        algorithm: Algorithm | None = None,
        overload: type[BaseException] | tuple[type[BaseException], ...] = trio.TooSlowError,
    ) -> None:
        total = check_total_tokens(total_tokens)
        configs = _check_lanes(lanes)
        self._name = check_optional_name(name) or _registry.default_name(self.kind)
        self._feedback: Feedback | None = resolve_algorithm(
            algorithm, total, overload, self._apply_limit
        )
        if self._feedback is not None:
            total = self._feedback.algorithm.limit
        self._policy = _LanePolicy(configs, total)
        self._kernel = Kernel(
            total, lanes=len(configs), policy=self._policy.choose, admits=self._policy.admits
        )
        self._policy.attach(self._kernel)
        self._handles: tuple[LaneLimiter, ...] = tuple(
            LaneLimiter(self, i, config) for i, config in enumerate(configs)
        )
        self._by_name: dict[str, LaneLimiter] = {h.lane.name: h for h in self._handles}
        self._kernel.lane_what = [h._what for h in self._handles]  # pyright: ignore[reportPrivateUsage]
        _registry.register(self)

    def _set_total(self, total: int | float) -> None:
        # Shares first, so the grant loop that set_total runs sees them.
        self._policy.resize(total)
        self._kernel.set_total(total)

    def _apply_limit(self, limit: int) -> None:
        self._set_total(limit)

    # -- lanes -------------------------------------------------------------------

    def lane(self, name: str) -> LaneLimiter:
        """The handle of the lane called ``name`` (the same object every time).

        Raises:
          KeyError: if there is no such lane (the message lists the lanes).
          TypeError: if ``name`` is not a str.
        """
        if not isinstance(name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("name", "a str", name)
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._by_name)
            raise KeyError(
                f"no lane {name!r} in priority limiter {self._name!r}; its lanes are {known}"
            ) from None

    def __getitem__(self, name: str) -> LaneLimiter:
        """``limiter[name]`` is ``limiter.lane(name)``."""
        return self.lane(name)

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """The lanes' configurations, in the order given."""
        return self._policy.lanes

    # -- tokens ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The limiter's name (given, or ``priority-limiter-N``)."""
        return self._name

    @property
    def total_tokens(self) -> int | float:
        """Tokens in the pool. Settable; lane reserves and caps follow."""
        return self._kernel.total

    @total_tokens.setter
    def total_tokens(self, value: int | float) -> None:
        self._set_total(adapt_total(self._feedback, check_total_tokens(value)))

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held now, all lanes."""
        return self._kernel.borrowed

    def statistics(self) -> PriorityLimiterStatistics:
        """A snapshot of the pool and of every lane (plain reads; safe from any thread)."""
        return self._snapshot(
            PriorityLimiterStatistics, lanes={h.lane.name: h.statistics() for h in self._handles}
        )

    def _trioflow_holders(self) -> list[Holding]:
        return self._kernel.holdings([lane.name for lane in self._policy.lanes])

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._kernel.iter_waiters())

    def __repr__(self) -> str:
        kernel = self._kernel
        lanes = ", ".join(
            f"{lane.name} {kernel.lane_in_use[i]}/{fmt_tokens(self._policy.caps[i])}"
            f"+{len(kernel.queues[i])}"
            for i, lane in enumerate(self._policy.lanes)
        )
        return (
            f"<trioflow.PriorityLimiter {self._name!r} at {id(self):#x}, "
            f"{kernel.borrowed}/{fmt_tokens(kernel.total)} with {kernel.waiting} waiting; "
            f"{lanes}>"
        )

    # A PriorityLimiter is not itself a limiter: which lane would
    # ``async with limiter:`` take from? Say so instead of an AttributeError.
    async def __aenter__(self) -> None:
        raise TypeError(
            f"take tokens through a lane: async with limiter.lane(name), lanes are "
            f"{', '.join(repr(n) for n in self._by_name)}"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # pragma: no cover - __aenter__ always raises
        return None


def _check_lanes(lanes: object) -> list[Lane]:
    if isinstance(lanes, str | bytes) or not isinstance(lanes, Sequence):
        raise_type("lanes", "a sequence of trioflow.Lane", lanes)
    configs: list[Lane] = []
    seen: set[str] = set()
    for item in lanes:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(item, Lane):
            raise_type("lanes", "a sequence of trioflow.Lane", cast(object, item))
        if item.name in seen:
            raise ValueError(f"lanes has two lanes named {item.name!r}; lane names must be unique")
        seen.add(item.name)
        configs.append(item)
    if not configs:
        raise ValueError("lanes must name at least one lane, got an empty sequence")
    reserves = math.fsum(lane.reserve for lane in configs)
    if reserves > 1.0 + _EPS:
        parts = " + ".join(f"{lane.name} {lane.reserve!r}" for lane in configs if lane.reserve)
        raise ValueError(f"lanes' reserves add up to {reserves:g} ({parts}); they must be <= 1")
    return configs
