"""What every adaptive algorithm takes and gives. Pure: no trio, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Algorithm", "Sample"]


@attrs.frozen
class Sample:
    """One finished ``hold()`` (or ``async with``) of an adaptive limiter."""

    start: float
    """When the tokens were granted, in seconds on the limiter's clock (``trio.current_time()``)."""

    rtt: float
    """How long the block held them, in seconds."""

    inflight: int
    """Tokens in use just after this grant (this one included)."""

    dropped: bool
    """The block signalled overload: it called ``permit.drop()`` or raised an overload exception."""

    @property
    def end(self) -> float:
        """When the block finished: ``start + rtt``."""
        return self.start + self.rtt


@runtime_checkable
class Algorithm(Protocol):
    """An adaptive limit: numbers in, a limit out.

    A limiter given ``algorithm=`` feeds it one :class:`Sample` per finished
    hold and sets its ``total_tokens`` to what :meth:`update` returns. The
    limiter writes :attr:`limit` itself in two cases: when it is made with an
    explicit ``total_tokens`` (the starting limit; otherwise the algorithm's
    ``initial_limit`` is) and when a user sets ``total_tokens`` later. An
    algorithm must therefore treat :attr:`limit` as the truth at the start
    of each :meth:`update`. One algorithm instance drives one limiter.
    """

    limit: int
    min_limit: int
    max_limit: int

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (within ``[min_limit, max_limit]``)."""
        ...

    def state(self) -> Mapping[str, float]:
        """The algorithm's internal state for ``statistics()`` and metrics (plain numbers)."""
        ...
