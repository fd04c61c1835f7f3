"""The Limiter protocol: what every ``limiter=`` parameter accepts."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, runtime_checkable

__all__ = ["Limiter"]


@runtime_checkable
class Limiter(Protocol):
    """Anything that hands out tokens the way :class:`trio.CapacityLimiter` does.

    Every trioflow limiter satisfies it — :class:`~trioflow.CapacityLimiter`
    (fixed or adaptive) and each lane handle of a
    :class:`~trioflow.PriorityLimiter` — and so does :class:`trio.CapacityLimiter`
    itself except for ``weight=`` and ``hold()``. Task groups, ``amap`` and
    pipeline stages take any of them, and so does
    ``trio.to_thread.run_sync(fn, limiter=...)``.

    ``isinstance(obj, tf.Limiter)`` checks the methods are present, not their
    behaviour; the conformance suite in trioflow's tests checks behaviour.
    """

    @property
    def total_tokens(self) -> int | float: ...

    @property
    def borrowed_tokens(self) -> int: ...

    @property
    def available_tokens(self) -> int | float: ...

    async def acquire(self, weight: int = 1) -> None: ...

    def acquire_nowait(self, weight: int = 1) -> None: ...

    def release(self, weight: int | None = None) -> None: ...

    async def acquire_on_behalf_of(self, borrower: object, weight: int = 1) -> None: ...

    def acquire_on_behalf_of_nowait(self, borrower: object, weight: int = 1) -> None: ...

    def release_on_behalf_of(self, borrower: object, weight: int | None = None) -> None: ...

    def hold(self, weight: int = 1) -> Any:
        """``async with limiter.hold(weight) as permit:`` (an async context manager yielding a Permit)."""
        ...

    def statistics(self) -> Any: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
