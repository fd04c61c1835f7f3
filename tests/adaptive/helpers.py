"""Sample streams for the pure algorithm tests (no trio)."""

from __future__ import annotations

from collections.abc import Iterator

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
