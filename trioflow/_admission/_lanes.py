"""PriorityLimiter and its lane handles: the faces of one lane-aware kernel.

A :class:`PriorityLimiter` is one :class:`~trioflow._admission._kernel.Kernel`
with one queue per :class:`~trioflow.Lane` and the lane policy
(:mod:`trioflow._admission._lane_policy`, which decides who goes next). Each
lane handle (:class:`LaneLimiter`) is a face of that one kernel, so every
lane is a full :class:`~trioflow.Limiter` and there is no second queue
anywhere.
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
from .._util import check_optional_name, check_total_tokens, check_weight, raise_type
from ..adaptive._base import Algorithm
from ._capacity import LimiterStatistics, PoolState, adapt_total, resolve_algorithm
from ._face import Feedback, LimiterFace, fmt_tokens
from ._kernel import Kernel, Loan, fits_total
from ._lane_policy import EPS, Lane, LanePolicy, cap_tokens, reserved_tokens
from ._parking import Waiter

__all__ = [
    "LaneLimiter",
    "LaneStatistics",
    "PriorityLimiter",
    "PriorityLimiterStatistics",
]

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

    Cost: the same order as :class:`trio.CapacityLimiter`, uncontended and
    contended (the lane policy looks at each lane's head once per grant):
    ``bench/lanes.py``, ``docs/benchmarks/lanes.md``.
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
    )

    kind = "lane"

    def __init__(
        self,
        limiter: PriorityLimiter,
        index: int,
        kernel: Kernel,
        policy: LanePolicy[Waiter],
        feedback: Feedback | None,
    ) -> None:
        # Made by PriorityLimiter only, which hands over the pool this lane shares.
        self._limiter: Final = limiter
        self._kernel = kernel
        self._policy: Final = policy
        self._feedback = feedback
        self._lane = index
        self._config: Final = policy.lanes[index]
        self._name: Final = f"{limiter.name}/{self._config.name}"
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
    def _trioflow_pool(self) -> object:
        # The registry's readers fold the lanes of one limiter into one resource.
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
                self._policy.caps[lane] - kernel.in_use[lane],
                kernel.total - kernel.borrowed,
            ),
        )

    def _check_weight(self, weight: int) -> None:
        # Not the face's generic check: that one measures against the whole
        # pool's total, and a lane's bound is its own cap.
        check_weight(weight)
        feedback = self._feedback
        if feedback is not None:
            # Adaptive: the lane's cap once the algorithm reaches max_limit.
            most = feedback.algorithm.max_limit
            reserved = reserved_tokens(self._policy.lanes, most)[self._lane]
            cap = cap_tokens(self._config, reserved, most)
            if weight > cap:
                raise ValueError(
                    f"weight={weight!r} is more than {self._what}'s total_tokens={cap!r} "
                    f"at its algorithm's max_limit={most!r} (its limit={self._config.limit!r}); "
                    "it could never be granted"
                )
            return
        cap = self._policy.caps[self._lane]
        if not fits_total(cap, weight):
            raise ValueError(
                f"weight={weight!r} is more than {self._what}'s total_tokens={cap!r} "
                f"(its limit={self._config.limit!r} of {fmt_tokens(self._kernel.total)})"
            )

    def _holds_elsewhere(self, loan: Loan) -> str:
        return f"lane {self._limiter.name + '/' + self._policy.lanes[loan.lane].name!r}"

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
            borrowed_tokens=kernel.in_use[lane],
            tasks_waiting=kernel.queued(lane),
            borrowers=[b for b, h in list(kernel.loans.items()) if h.lane == lane],
            algorithm=None if self._feedback is None else self._feedback.algorithm.state(),
            lane=config.name,
            priority=config.priority,
            reserve=config.reserve,
            reserved_tokens=policy.reserved[lane],
            limit=config.limit,
            granted=kernel.granted[lane],
            promoted=policy.promoted[lane],
        )

    def _trioflow_holders(self) -> list[Holding]:
        lane = self._lane
        name = self._config.name
        return [Holding(b, h.weight, name) for b, h in self._kernel.loans.items() if h.lane == lane]

    def __repr__(self) -> str:
        kernel = self._kernel
        lane = self._lane
        return (
            f"<trioflow.LaneLimiter {self._name!r} at {id(self):#x}, "
            f"{kernel.in_use[lane]}/{fmt_tokens(self._policy.caps[lane])} "
            f"(reserved {fmt_tokens(self._policy.reserved[lane])}) "
            f"with {kernel.queued(lane)} waiting>"
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

    kind = "priority_limiter"

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
        self._policy = LanePolicy[Waiter](configs, total, trio.current_time)
        self._kernel = Kernel(
            total,
            lanes=len(configs),
            policy=self._policy,
            alone_ok=self._feedback is not None,
        )
        self._handles: tuple[LaneLimiter, ...] = tuple(
            LaneLimiter(self, i, self._kernel, self._policy, self._feedback)
            for i in range(len(configs))
        )
        self._by_name: dict[str, LaneLimiter] = {h.lane.name: h for h in self._handles}
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
        names = [lane.name for lane in self._policy.lanes]
        return [Holding(b, h.weight, names[h.lane]) for b, h in self._kernel.loans.items()]

    @property
    def _trioflow_pool(self) -> object:
        # The registry's readers fold this limiter and its lanes into one resource.
        return self

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._kernel.iter_waiters())

    def __repr__(self) -> str:
        kernel = self._kernel
        lanes = ", ".join(
            f"{lane.name} {kernel.in_use[i]}/{fmt_tokens(self._policy.caps[i])}+{kernel.queued(i)}"
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
    if reserves > 1.0 + EPS:
        parts = " + ".join(f"{lane.name} {lane.reserve!r}" for lane in configs if lane.reserve)
        raise ValueError(f"lanes' reserves add up to {reserves:g} ({parts}); they must be <= 1")
    return configs
