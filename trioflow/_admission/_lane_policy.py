"""The lane policy: who goes next among the lanes of a PriorityLimiter. Pure arithmetic.

This module knows nothing of trio or of the public faces: it reads a pool's
numbers (total, borrowed, tokens in use per lane, each lane's FIFO of
requests) and a clock it is handed, and names the request to grant next.
That is what lets its rules be property-tested without an event loop
(``tests/_admission/test_lane_policy.py``); the kernel runs it.

Who goes next (asked whenever tokens may have freed up: a release, a resize,
an arrival, a cancelled waiter):

1. Only lane *heads* are candidates: within a lane, strict FIFO, and a heavy
   head is not overtaken by lighter requests behind it (no barging).
2. A head whose lane would go over its cap (its ``limit`` of the total) is
   not a candidate: the tokens it would need are not the lane's to take, so
   others may use them.
3. Heads of lanes holding less than their reserve come first (by priority,
   then arrival).
4. Then by priority, then arrival. A head that has waited ``max_wait`` counts
   as if its lane had the best priority: it is served with the most urgent
   lane's requests, in arrival order. So a flood in a high lane cannot starve
   a low one, and a flood of promoted low requests cannot starve the high
   lane either: at worst they share in arrival order.
5. The winner is granted if its whole weight fits in the free tokens;
   otherwise *nobody* goes and the free tokens wait for it. A lane below its
   reserve is therefore served by the very next release, and priority order
   means something even with weights.

On an adaptive pool (``alone_ok``) a head heavier than its lane's current cap
or the current total is still a candidate when nothing at all is borrowed,
so it runs alone and its block is the sample the algorithm needs (see the
kernel's "Never wedged").

Promotion is evaluated whenever the policy runs; there is no timer task, so a
head that crosses ``max_wait`` while nothing happens on the limiter is
promoted at the next release or arrival (when it could first matter anyway,
unless free tokens were being saved for a heavier head).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Final, Generic, Protocol, TypeVar, final

import attrs

from .._util import check_positive_number, raise_type

__all__ = ["EPS", "Lane", "LanePolicy", "Pool", "Request", "cap_tokens", "reserved_tokens"]

# Floating-point slack when turning fractions of the total into whole tokens
# (0.29 * 100 is 28.999999999999996, and it means 29).
EPS = 1e-9


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
    out: list[int | float] = [math.floor(x + EPS) for x in exact]
    spare = math.floor(math.fsum(exact) + EPS) - int(sum(out))
    by_remainder = sorted(
        range(len(lanes)),
        key=lambda i: (-(exact[i] - out[i]), lanes[i].priority, i),
    )
    for i in by_remainder[: max(spare, 0)]:
        if exact[i] - out[i] > EPS:
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
    floor_cap = math.floor(lane.limit * total + EPS)
    return max(floor_cap, reserved, 1 if total >= 1 else 0)


# -- the policy ----------------------------------------------------------------


class Request(Protocol):
    """What the policy reads of a queued request (the kernel's ``Waiter``)."""

    @property
    def weight(self) -> int: ...

    @property
    def lane(self) -> int: ...

    @property
    def seq(self) -> int:
        """Arrival order across all lanes."""
        ...

    @property
    def since(self) -> float:
        """When it queued, on the clock the policy was given."""
        ...


R = TypeVar("R", bound=Request)


class Pool(Protocol[R]):
    """What the policy reads of a pool of tokens (the kernel)."""

    @property
    def total(self) -> int | float: ...

    @property
    def borrowed(self) -> int: ...

    @property
    def in_use(self) -> Sequence[int]:
        """Tokens held per lane."""
        ...

    @property
    def queues(self) -> Sequence[Mapping[R, None]]:
        """Per lane, the FIFO of requests (insertion-ordered)."""
        ...

    @property
    def alone_ok(self) -> bool:
        """An adaptive pool: a too-heavy head may go when nothing is borrowed."""
        ...

    def fits(self, weight: int) -> bool:
        """May ``weight`` more tokens be granted now, as far as the total goes?"""
        ...


#: (lane index, cap, reserved tokens, priority, max_wait)
_Row = tuple[int, "int | float", "int | float", int, "float | None"]


@final
class LanePolicy(Generic[R]):
    """The kernel's policy for a set of lanes (see the module docstring for the order).

    Holds only numbers (no reference back to a limiter), so the kernel and
    its policy form no reference cycle with the public objects.
    """

    __slots__ = (
        "caps",
        "clock",
        "lanes",
        "max_waits",
        "priorities",
        "promoted",
        "reserved",
        "rows",
        "top",
    )

    #: a newcomer may outrank the waiters already queued (a lane below its reserve)
    ranks_newcomers: ClassVar[bool] = True

    def __init__(
        self, lanes: Sequence[Lane], total: int | float, clock: Callable[[], float]
    ) -> None:
        self.lanes: Final = tuple(lanes)
        self.priorities: Final = [lane.priority for lane in lanes]
        self.max_waits: Final = [lane.max_wait for lane in lanes]
        #: what ``since`` is measured on; read only when a ``max_wait`` could matter
        self.clock: Final = clock
        #: the best priority of all lanes: where a promoted request competes
        self.top: Final = min(self.priorities)
        #: grants that ``max_wait`` promotion decided, per lane
        self.promoted: list[int] = [0] * len(lanes)
        self.reserved: list[int | float] = []
        self.caps: list[int | float] = []
        #: per lane, what :meth:`choose` reads, in one tuple (one unpack per lane)
        self.rows: list[_Row] = []
        self.resize(total)

    def resize(self, total: int | float) -> None:
        """Recompute every lane's reserve and cap for a new total."""
        self.reserved = reserved_tokens(self.lanes, total)
        self.caps = [
            cap_tokens(lane, r, total) for lane, r in zip(self.lanes, self.reserved, strict=True)
        ]
        self.rows = [
            (i, self.caps[i], self.reserved[i], p, self.max_waits[i])
            for i, p in enumerate(self.priorities)
        ]

    def ceiling(self, pool: Pool[R], lane: int) -> int | float:
        """The most one request of ``lane`` can be granted under the current (fixed) total."""
        return self.caps[lane]

    def admits(self, pool: Pool[R], lane: int, weight: int) -> bool:
        """Fast path, nobody waiting: the tokens are free and within the lane's cap.

        Reserves do not hold tokens back here: with nobody waiting no lane
        has unmet demand, and idle capacity is anyone's (work-conserving).
        """
        if pool.in_use[lane] + weight <= self.caps[lane]:
            return pool.fits(weight)
        return pool.alone_ok and not pool.borrowed and pool.total > 0

    def choose(self, pool: Pool[R]) -> R | None:
        """The next request to grant, or ``None`` when nobody may go now.

        Runs on every release (and arrival, when a token is free) while
        anyone waits, so it is written for speed: one unpack per lane, and
        two passes so that the common case under saturation — the lane that
        just released is below its reserve again — never reads the clock;
        the second pass reads it only when a ``max_wait`` could change the
        answer.
        """
        free = pool.total - pool.borrowed
        if free <= 0:
            # Every weight is >= 1: nobody fits, whoever would be chosen.
            return None
        in_use = pool.in_use
        queues = pool.queues
        # Nothing borrowed on an adaptive pool: caps do not bind (see module docstring).
        alone = pool.alone_ok and not pool.borrowed
        best: R | None = None
        best_priority = 0
        best_seq = 0
        # Pass 1: lanes below their reserve, by (priority, arrival).
        for i, cap, reserve, priority, _ in self.rows:
            used = in_use[i]
            if used >= reserve:
                continue
            # The lane's head (an empty lane is skipped): a for/break reads
            # the first key without building an iterator object.
            for head in queues[i]:  # noqa: B007
                break
            else:
                continue
            if used + head.weight > cap and not alone:
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
            return best if pool.fits(best.weight) else None
        # Pass 2: everyone else, by (priority, arrival), a head that has
        # waited max_wait counting as the top priority.
        top = self.top
        now: float | None = None
        best_promoted = False
        for i, cap, _, priority, max_wait in self.rows:
            for head in queues[i]:  # noqa: B007
                break
            else:
                continue
            if in_use[i] + head.weight > cap and not alone:
                continue
            promoted = False
            if (
                max_wait is not None
                and priority != top
                # even promoted it would lose to the best so far: skip the clock
                and not (best is not None and best_priority == top and best_seq < head.seq)
            ):
                if now is None:
                    now = self.clock()
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
        if best is None or not pool.fits(best.weight):
            return None
        if best_promoted:
            self.promoted[best.lane] += 1
        return best
