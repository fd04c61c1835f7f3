"""CapacityLimiter: the kernel's plainest face."""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

import attrs
import trio

from .. import _registry
from .._util import check_optional_name, check_total_tokens, raise_type
from ..adaptive._base import Algorithm
from ._face import Feedback, LimiterFace, check_overload, fmt_tokens
from ._kernel import Kernel

__all__ = ["CapacityLimiter", "LimiterStatistics", "adapt_total", "resolve_algorithm"]


@attrs.frozen
class LimiterStatistics:
    """A snapshot of a limiter's state, from :meth:`CapacityLimiter.statistics`."""

    name: str
    """The limiter's name."""

    total_tokens: int | float
    """Tokens it hands out in all (``math.inf`` for no limit, 0 while paused)."""

    borrowed_tokens: int
    """Tokens held now (may exceed ``total_tokens`` just after a shrink)."""

    tasks_waiting: int
    """Tasks parked in :meth:`~CapacityLimiter.acquire` now."""

    borrowers: list[object]
    """Who holds tokens now: tasks, or trio's placeholders for ``to_thread`` calls."""

    algorithm: Mapping[str, float] | None = None
    """For an adaptive limiter, the algorithm's state (its ``state()``); else ``None``."""


def resolve_algorithm(
    algorithm: object, total_tokens: int | float, overload: object, apply: object
) -> Feedback | None:
    """Check ``algorithm=``/``overload=`` and seed the algorithm with the starting limit."""
    if algorithm is None:
        return None
    if not isinstance(algorithm, Algorithm):
        raise_type("algorithm", "an algorithm from trioflow.adaptive (or None)", algorithm)
    exc_types = check_overload(overload)
    start = total_tokens if total_tokens != float("inf") else algorithm.max_limit
    algorithm.limit = int(min(max(start, algorithm.min_limit), algorithm.max_limit))
    assert callable(apply)
    return Feedback(algorithm, exc_types, apply)  # pyright: ignore[reportArgumentType]


def adapt_total(feedback: Feedback | None, total: int | float) -> int | float:
    """A total set by hand on an adaptive limiter: clamp it to the algorithm's
    bounds and make it the algorithm's current limit (``math.inf`` passes)."""
    if feedback is not None and total != float("inf"):
        algorithm = feedback.algorithm
        algorithm.limit = int(min(max(total, algorithm.min_limit), algorithm.max_limit))
        return algorithm.limit
    return total


@final
class CapacityLimiter(LimiterFace):
    """A sack of ``total_tokens`` tokens; a task must hold some to run a block.

    Like :class:`trio.CapacityLimiter`, and a drop-in replacement for it
    (including ``trio.to_thread.run_sync(fn, limiter=limiter)``), plus:

    * **weights** — ``await limiter.acquire(weight=3)`` takes three tokens at
      once; waiters are served strictly first come, first served, so a heavy
      waiter at the head is never overtaken by light ones behind it;
    * **hold()** — ``async with limiter.hold() as permit:`` gives the block a
      :class:`Permit` to report overload (``permit.drop()``) or to keep a
      call out of the latency samples (``permit.ignore()``);
    * **adaptive limits** — with ``algorithm=`` (see :mod:`trioflow.adaptive`)
      every finished block is a sample and the algorithm sets ``total_tokens``;
    * **visibility** — a name, ``statistics()``, and a record of who holds and
      who waits (since when) that :mod:`trioflow.debug` task dumps and
      deadlock reports read.

    Blocking calls (:meth:`acquire`, ``async with``, ``hold()``) are
    checkpoints and atomic with respect to cancellation: a cancelled waiter
    holds nothing and leaves the queue as if it never asked. Releasing is
    never a checkpoint.

    Cost: an uncontended ``async with`` is one checkpoint plus bookkeeping,
    measured at 0.7× the time of :class:`trio.CapacityLimiter`'s (which takes
    a cancellation check *and* a shielded checkpoint): see ``bench/limiter.py``
    and ``docs/benchmarks.md``.

    Args:
      total_tokens: tokens in the sack: a non-negative int, or ``math.inf``.
        0 pauses admission until it is raised. Settable at any time: growing
        wakes waiters at once; shrinking never takes back tokens already held.
        With ``algorithm=``, the starting limit (clamped to the algorithm's
        ``min_limit``/``max_limit``).
      name: what task dumps, metrics and ``repr`` call it.
      algorithm: an adaptive algorithm from :mod:`trioflow.adaptive`, or ``None``
        for a fixed limit.
      overload: with ``algorithm=``, the exception type(s) that, raised out of
        a block, mark the sample as a drop (default :exc:`trio.TooSlowError`).

    .. note::

       A capacity limiter bounds how many run *at once*; a
       :class:`~trioflow.RateLimiter` bounds how many *start per second*. A
       :class:`~trioflow.PriorityLimiter` is a capacity limiter whose waiters
       are served by lane.
    """

    __slots__ = ("__weakref__", "_feedback", "_kernel", "_lane", "_name", "_what")

    kind = "limiter"

    def __init__(
        self,
        total_tokens: int | float,
        *,
        name: str | None = None,
        algorithm: Algorithm | None = None,
        overload: type[BaseException] | tuple[type[BaseException], ...] = trio.TooSlowError,
    ) -> None:
        total = check_total_tokens(total_tokens)
        self._name = check_optional_name(name) or _registry.default_name(self.kind)
        self._what = f"limiter {self._name!r}"
        self._feedback = resolve_algorithm(algorithm, total, overload, self._apply_limit)
        if self._feedback is not None:
            total = self._feedback.algorithm.limit
        self._kernel = Kernel(total)
        self._lane = 0
        _registry.register(self)

    def _apply_limit(self, limit: int) -> None:
        self._kernel.set_total(limit)

    @property
    def name(self) -> str:
        """The limiter's name (given, or ``limiter-N``)."""
        return self._name

    @property
    def total_tokens(self) -> int | float:
        """Tokens in the sack. Settable (see the class docstring)."""
        return self._kernel.total

    @total_tokens.setter
    def total_tokens(self, value: int | float) -> None:
        self._kernel.set_total(adapt_total(self._feedback, check_total_tokens(value)))

    @property
    def available_tokens(self) -> int | float:
        """Tokens free now (never negative)."""
        return max(0, self._kernel.total - self._kernel.borrowed)

    @property
    def algorithm(self) -> Algorithm | None:
        """The adaptive algorithm driving ``total_tokens``, if any."""
        return None if self._feedback is None else self._feedback.algorithm

    def statistics(self) -> LimiterStatistics:
        """A snapshot of the limiter's state (plain reads; safe from any thread)."""
        kernel = self._kernel
        return LimiterStatistics(
            name=self._name,
            total_tokens=kernel.total,
            borrowed_tokens=kernel.borrowed,
            tasks_waiting=kernel.waiting,
            borrowers=list(kernel.holders),
            algorithm=None if self._feedback is None else self._feedback.algorithm.state(),
        )

    def __repr__(self) -> str:
        kernel = self._kernel
        adaptive = "" if self._feedback is None else f", {type(self._feedback.algorithm).__name__}"
        return (
            f"<trioflow.CapacityLimiter {self._name!r} at {id(self):#x}, "
            f"{kernel.borrowed}/{fmt_tokens(kernel.total)} with {kernel.waiting} waiting{adaptive}>"
        )
