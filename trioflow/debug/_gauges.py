"""What a registered primitive's gauges read now: limit, in use, waiting.

One reading for every kind in the registry, shared by the timeline's counter
tracks and ``top``'s resource table, so both say the same thing. Each reading
is a handful of plain attribute reads through the primitive's own
``statistics()`` (the one source of truth about its state), safe from any
thread.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._registry import Inspectable
from ._model import describe

__all__ = ["Gauge", "read_gauge"]


class Gauge(NamedTuple):
    """One primitive's state at one instant."""

    kind: str
    name: str
    limit: float | None
    """Tokens it hands out in all (a rate limiter's burst, a stage's worker
    count); ``None`` for no limit."""
    in_use: float
    """Tokens held now (a rate limiter's spent burst, a stage's busy workers)."""
    waiting: int
    """Tasks parked on it now (a stage: items queued in its input buffer)."""

    @property
    def label(self) -> str:
        """``limiter 'api'``, ``rate limiter 'quota'``: the name a track or a row goes by.

        The words a dump uses for the same primitive, so a row and the
        waits parked on it carry one name.
        """
        return describe(self.kind, self.name, None)


def read_gauge(prim: Inspectable) -> Gauge | None:
    """The primitive's gauge, or ``None`` for a kind with nothing to gauge.

    Never raises: a primitive half-built or broken reads as ``None``.
    """
    try:
        return _read(prim)
    except Exception:
        return None


def _finite(x: float) -> float | None:
    return None if x == math.inf else x


def _read(prim: Inspectable) -> Gauge | None:
    kind = prim.kind
    k = kind.replace(" ", "_")  # registry kinds are snake_case identifiers
    p: Any = prim
    if kind == "pipeline":
        return None
    stats: Any = p.statistics()
    if kind == "stage":
        return Gauge(kind, prim.name, stats.workers, stats.busy, int(stats.queued))
    if k in ("rate_limiter", "redis_rate_limiter"):
        burst = float(stats.burst)
        in_use = round(burst - float(stats.tokens), 3)
        return Gauge(kind, prim.name, burst, in_use, int(stats.tasks_waiting))
    if k == "task_group":
        limit = stats.limit
        return Gauge(
            kind,
            prim.name,
            None if limit is None else _finite(limit),
            stats.running,
            int(stats.waiting),
        )
    # limiter, lane, priority limiter: LimiterStatistics and its subclasses
    return Gauge(
        kind,
        prim.name,
        _finite(stats.total_tokens),
        stats.borrowed_tokens,
        int(stats.tasks_waiting),
    )
