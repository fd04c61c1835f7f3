"""CapacityLimiter: the kernel's plainest face."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, final

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


#: Algorithms driving a limiter now, by id (an algorithm need not be hashable):
#: one algorithm instance holds one limit, so sharing it between two limiters
#: would make each undo the other.
_attached: dict[int, weakref.ref[Algorithm]] = {}


S = TypeVar("S", bound=LimiterStatistics)


def _attach(algorithm: Algorithm) -> None:
    key = id(algorithm)
    ref = _attached.get(key)
    if ref is not None and ref() is algorithm:
        raise ValueError(
            f"algorithm {algorithm!r} already drives another limiter; give each limiter its own"
        )

    def forget(dead: weakref.ref[Algorithm]) -> None:
        if _attached.get(key) is dead:
            del _attached[key]

    with contextlib.suppress(TypeError):  # cannot be weakly referenced: not tracked
        _attached[key] = weakref.ref(algorithm, forget)


def check_adaptive_total(algorithm: Algorithm, total_tokens: int | float, param: str) -> int:
    """A total for an adaptive limiter is an int within the algorithm's bounds."""
    lo, hi = algorithm.min_limit, algorithm.max_limit
    if not (isinstance(total_tokens, int) and lo <= total_tokens <= hi):
        raise ValueError(
            f"{param} must be between the algorithm's min_limit={lo} and "
            f"max_limit={hi}, got {total_tokens!r}"
        )
    return total_tokens


def resolve_algorithm(
    algorithm: object,
    total_tokens: int | float | None,
    overload: object,
    apply: Callable[[int], None],
) -> Feedback | None:
    """Check ``algorithm=``/``overload=`` and decide the starting limit.

    The starting limit is ``total_tokens`` when given (it must lie within the
    algorithm's bounds: a silent clamp would hide a typo), else the
    algorithm's own ``limit`` (its ``initial_limit``).
    """
    if algorithm is None:
        if total_tokens is None:
            raise TypeError(
                "total_tokens must be an int or math.inf, got None (NoneType); "
                "it may be omitted only with algorithm="
            )
        return None
    if not isinstance(algorithm, Algorithm):
        raise_type("algorithm", "an algorithm from trioflow.adaptive (or None)", algorithm)
    exc_types = check_overload(overload)
    if total_tokens is not None:
        algorithm.limit = check_adaptive_total(algorithm, total_tokens, "total_tokens")
    _attach(algorithm)
    return Feedback(algorithm, exc_types, apply)


def adapt_total(feedback: Feedback | None, total: int | float) -> int | float:
    """A total set by hand; on an adaptive limiter it becomes the algorithm's limit.

    It is clamped to the algorithm's bounds (``math.inf`` means
    ``max_limit``): at run time the setter is an operator's override, and
    the algorithm's bounds are the envelope it was given. (At construction
    a total outside the bounds is an error instead: two numbers written
    together that contradict each other.) 0 pauses an adaptive limiter as it
    pauses a fixed one: the algorithm keeps learning from blocks still
    running, but its limit is not applied until a non-zero total resumes.
    """
    if feedback is None:
        return total
    if total == 0:
        feedback.paused = True
        return 0
    algorithm = feedback.algorithm
    algorithm.limit = int(min(max(total, algorithm.min_limit), algorithm.max_limit))
    feedback.paused = False
    return algorithm.limit


class PoolState:
    """What every limiter that owns a kernel reports about the whole pool.

    Shared by :class:`CapacityLimiter` and :class:`~trioflow.PriorityLimiter`
    (whose lanes report their own share).
    """

    __slots__ = ()

    _kernel: Kernel
    _feedback: Feedback | None
    _name: str

    @property
    def available_tokens(self) -> int | float:
        """Tokens free now (never negative)."""
        return max(0, self._kernel.total - self._kernel.borrowed)

    @property
    def algorithm(self) -> Algorithm | None:
        """The adaptive algorithm driving ``total_tokens``, if any."""
        return None if self._feedback is None else self._feedback.algorithm

    def _snapshot(self, cls: type[S], **extra: Any) -> S:
        """A statistics record of the pool (plain reads; safe from any thread)."""
        kernel = self._kernel
        feedback = self._feedback
        return cls(
            name=self._name,
            total_tokens=kernel.total,
            borrowed_tokens=kernel.borrowed,
            tasks_waiting=kernel.waiting,
            borrowers=list(kernel.loans),
            algorithm=None if feedback is None else feedback.algorithm.state(),
            **extra,
        )


@final
class CapacityLimiter(PoolState, LimiterFace):
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
    the same order as :class:`trio.CapacityLimiter`'s (which takes a
    cancellation check *and* a shielded checkpoint); a grant from a queue
    of any depth is O(1). Figures: ``bench/limiter.py``,
    ``docs/benchmarks/limiter.md``.

    Args:
      total_tokens: tokens in the sack: a non-negative int, or ``math.inf``.
        0 pauses admission until it is raised. Settable at any time: growing
        wakes waiters at once; shrinking never takes back tokens already held.
        Required without ``algorithm=``. With ``algorithm=``, the starting
        limit (an int within the algorithm's ``min_limit``/``max_limit``, else
        :exc:`ValueError`); omit it to start at the algorithm's
        ``initial_limit``. Setting it later on an adaptive limiter moves the
        algorithm's limit too, clamped to its bounds (``math.inf`` means
        ``max_limit``), except 0, which pauses admission (the algorithm keeps
        learning; its limit applies again on resume).
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

    __slots__ = ("__weakref__", "_feedback", "_kernel", "_lane", "_name")

    kind = "limiter"

    def __init__(
        self,
        total_tokens: int | float | None = None,
        *,
        name: str | None = None,
        algorithm: Algorithm | None = None,
        overload: type[BaseException] | tuple[type[BaseException], ...] = trio.TooSlowError,
    ) -> None:
        total = None if total_tokens is None else check_total_tokens(total_tokens)
        self._name = check_optional_name(name) or _registry.default_name(self.kind)
        self._feedback = resolve_algorithm(algorithm, total, overload, self._apply_limit)
        if self._feedback is not None:
            total = self._feedback.algorithm.limit
        assert total is not None
        self._kernel = Kernel(total, alone_ok=self._feedback is not None)
        self._lane = 0
        _registry.register(self)

    def _apply_limit(self, limit: int) -> None:
        self._kernel.set_total(limit)

    @property
    def name(self) -> str:
        """The limiter's name (given, or ``limiter-N``)."""
        return self._name

    @property
    def _trioflow_pool(self) -> object:
        # The registry's readers fold primitives that share one pool of tokens.
        return self

    @property
    def total_tokens(self) -> int | float:
        """Tokens in the sack. Settable (see the class docstring)."""
        return self._kernel.total

    @total_tokens.setter
    def total_tokens(self, value: int | float) -> None:
        self._kernel.set_total(adapt_total(self._feedback, check_total_tokens(value)))

    def statistics(self) -> LimiterStatistics:
        """A snapshot of the limiter's state (plain reads; safe from any thread)."""
        return self._snapshot(LimiterStatistics)

    def __repr__(self) -> str:
        kernel = self._kernel
        adaptive = "" if self._feedback is None else f", {type(self._feedback.algorithm).__name__}"
        return (
            f"<trioflow.CapacityLimiter {self._name!r} at {id(self):#x}, "
            f"{kernel.borrowed}/{fmt_tokens(kernel.total)} with {kernel.waiting} waiting{adaptive}>"
        )
