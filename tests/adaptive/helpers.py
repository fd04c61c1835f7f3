"""Sample streams for the pure algorithm tests (no trio)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import cast

from trioflow import adaptive
from trioflow.adaptive import Algorithm, Sample


def stream(
    *,
    rtt: float,
    inflight: int,
    n: int,
    start: float = 0.0,
    gap: float = 0.001,
    dropped: bool = False,
) -> Iterator[Sample]:
    """``n`` samples, one every ``gap`` seconds, each lasting ``rtt``."""
    for i in range(n):
        yield Sample(start=start + i * gap, rtt=rtt, inflight=inflight, dropped=dropped)


def feed(algorithm: Algorithm, samples: Iterator[Sample]) -> list[int]:
    """Feed every sample; return the limit after each."""
    out: list[int] = []
    for s in samples:
        limit = algorithm.update(s)
        assert algorithm.min_limit <= limit <= algorithm.max_limit
        assert limit == algorithm.limit
        out.append(limit)
    return out


def busy(algorithm: Algorithm, *, rtt: float, n: int, start: float = 0.0) -> list[int]:
    """Samples that each see the limiter full (inflight == limit at the time)."""
    out: list[int] = []
    for i in range(n):
        s = Sample(start=start + i * 0.001, rtt=rtt, inflight=algorithm.limit, dropped=False)
        out.append(algorithm.update(s))
    return out


# -- every algorithm, from trioflow.adaptive.__all__ ---------------------------

#: Names in ``trioflow.adaptive.__all__`` that are not algorithms.
NOT_ALGORITHMS = frozenset({"Algorithm", "Sample"})


def _constructor(name: str) -> Callable[..., Algorithm]:
    cls = getattr(adaptive, name)
    if cls is adaptive.LoadFeedback:
        # Its one required argument: a load between its thresholds (no change by itself).
        return functools.partial(adaptive.LoadFeedback, lambda: 0.6)
    return cast("Callable[..., Algorithm]", cls)


#: Every algorithm that ``trioflow.adaptive`` exports, by name, as a constructor
#: taking only keyword options: a new algorithm joins every test that uses this.
ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    name: _constructor(name) for name in adaptive.__all__ if name not in NOT_ALGORITHMS
}

#: Options that keep each algorithm from ever deciding within a test.
NEVER_DECIDES: dict[str, dict[str, float]] = {
    name: {"interval": 1e9} if name == "LoadFeedback" else {"window": 1e9} for name in ALGORITHMS
}
