"""What a limiter is: one protocol, one check.

:class:`Limiter` is :class:`trio.CapacityLimiter`'s own interface, so trio's
limiter is one, and so is every trioflow limiter and lane handle.
:class:`PermitLimiter` adds what only trioflow's limiters have — weights and
``hold()``, whose :class:`~trioflow.Permit` lets a block report overload to an
adaptive algorithm. :func:`check_limiter` is the one check every
``limiter=`` parameter runs.

:class:`Pacer` is the same for rates: what :class:`~trioflow.RateLimiter`
and :class:`~trioflow.redis.RedisRateLimiter` both are, and what every
``rate=`` parameter accepts; :func:`check_pacer` is its one check.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._util import raise_type

if TYPE_CHECKING:
    from ._face import Permit

__all__ = ["Limiter", "Pacer", "PermitLimiter", "check_limiter", "check_pacer"]


@runtime_checkable
class Limiter(Protocol):
    """Anything that hands out tokens the way :class:`trio.CapacityLimiter` does.

    What every ``limiter=`` parameter accepts: :class:`trio.CapacityLimiter`
    itself, every trioflow limiter — :class:`~trioflow.CapacityLimiter` (fixed
    or adaptive), each lane handle of a :class:`~trioflow.PriorityLimiter` —
    and anything else with these methods. Task groups, ``amap``, ``run_all``
    and pipeline stages take any of them, and so does
    ``trio.to_thread.run_sync(fn, limiter=...)``.

    ``isinstance(obj, tf.Limiter)`` checks the methods are present, not their
    behaviour; trioflow's conformance suite checks behaviour. A
    :class:`~trioflow.PriorityLimiter` is not one (take tokens through a
    lane: ``limiter.lane(name)``).

    .. seealso:: :class:`PermitLimiter`, a limiter with weights and ``hold()``.
    """

    @property
    def total_tokens(self) -> int | float: ...

    @property
    def borrowed_tokens(self) -> int: ...

    @property
    def available_tokens(self) -> int | float: ...

    async def acquire(self) -> None: ...

    def acquire_nowait(self) -> None: ...

    def release(self) -> None: ...

    async def acquire_on_behalf_of(self, borrower: Any) -> None: ...

    def acquire_on_behalf_of_nowait(self, borrower: Any) -> None: ...

    def release_on_behalf_of(self, borrower: Any) -> None: ...

    def statistics(self) -> Any: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class PermitLimiter(Limiter, Protocol):
    """A :class:`Limiter` with weights and ``hold()``: what trioflow's own limiters add.

    ``async with limiter.hold(weight) as permit:`` holds ``weight`` tokens for
    the block and yields a :class:`~trioflow.Permit`, through which the block
    reports overload (``permit.drop()``) or asks not to be a latency sample
    (``permit.ignore()``): what an adaptive limit learns from. Code that
    takes any :class:`Limiter` uses ``hold()`` when the limiter has it and
    plain ``async with`` otherwise.
    """

    async def acquire(self, weight: int = 1) -> None: ...

    def acquire_nowait(self, weight: int = 1) -> None: ...

    def release(self, weight: int | None = None) -> None: ...

    async def acquire_on_behalf_of(self, borrower: Any, weight: int = 1) -> None: ...

    def acquire_on_behalf_of_nowait(self, borrower: Any, weight: int = 1) -> None: ...

    def release_on_behalf_of(self, borrower: Any, weight: int | None = None) -> None: ...

    def hold(self, weight: int = 1) -> AbstractAsyncContextManager[Permit]:
        """``async with limiter.hold(weight) as permit:`` (see :meth:`trioflow.CapacityLimiter.hold`)."""
        ...


def check_limiter(value: object, param: str, *, expected: str | None = None) -> Limiter:
    """``value`` as a :class:`Limiter`, or :exc:`TypeError` naming ``param`` and the value.

    The one rule for what a ``limiter=`` parameter accepts. ``expected``
    rewords the error's "must be ..." for a parameter that also takes other
    things (``limit=`` takes an int too). Not a checkpoint; never blocks.
    """
    if isinstance(value, Limiter):
        return value
    lane = getattr(value, "lane", None)
    if callable(lane) and getattr(value, "kind", None) == "priority_limiter":
        raise TypeError(
            f"{param} must be a limiter, got {value!r}, which shares its tokens by lane: "
            f"pass one of its lanes, {param}=limiter.lane(name)"
        )
    raise_type(
        param,
        expected
        or "a limiter (a tf.CapacityLimiter, a lane handle, a trio.CapacityLimiter or any tf.Limiter)",
        value,
    )


@runtime_checkable
class Pacer(Protocol):
    """Anything that paces calls the way :class:`~trioflow.RateLimiter` does.

    What every ``rate=`` parameter accepts (task groups, ``amap``,
    ``run_all``, pipeline stages): :class:`~trioflow.RateLimiter`, whose
    bucket is in this process, :class:`~trioflow.redis.RedisRateLimiter`,
    whose bucket is shared by every replica, and anything else with these
    members. trioflow calls two of them on the hot path: ``try_acquire()``
    first (never blocks; ``False`` when it cannot grant now, or cannot know
    without blocking, as the Redis limiter), then ``await acquire()``, which
    blocks until the tokens are granted, is a checkpoint, and on
    cancellation takes no tokens.

    ``isinstance(obj, tf.Pacer)`` checks the members are present, not their
    behaviour. A capacity limiter is not one (it bounds how many run at
    once, not how many start per second: pass it as ``limiter=``).
    """

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> int: ...

    async def acquire(self, n: int = 1) -> None: ...

    def try_acquire(self, n: int = 1) -> bool: ...

    def statistics(self) -> Any: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def check_pacer(value: object, param: str = "rate") -> Pacer | None:
    """``value`` as a :class:`Pacer` (or ``None``), or :exc:`TypeError` naming ``param``.

    The one rule for what a ``rate=`` parameter accepts. Not a checkpoint;
    never blocks.
    """
    if value is None or isinstance(value, Pacer):
        return value
    if isinstance(value, Limiter):
        raise TypeError(
            f"{param} must be a rate limiter, got {value!r}, a capacity limiter: "
            f"pass it as limiter= (it bounds how many run at once, not how many start per second)"
        )
    raise_type(
        param,
        "a rate limiter (a tf.RateLimiter, a trioflow.redis.RedisRateLimiter or any tf.Pacer) or None",
        value,
    )
