"""A short simulation under MockClock: Cruise settles near the best limit.

Downstream: 20 FIFO servers with lognormal service times (mean 20 ms), so
capacity is about 1000 requests/s and the best static limit (found by the
benchmark's sweep, ``bench/adaptive``) is about 22. Open-loop Poisson clients
at 2000 requests/s, rejected when the limiter is full. The full benchmark
lives in ``bench/adaptive/run.py``; this only guards against regressions,
with ranges wide enough to hold for any seed and scheduling order.
"""

from __future__ import annotations

import statistics

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.adaptive import Cruise

from .downstream import downstream, goodput, limits


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
async def test_cruise_converges_under_2x_overload(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    algo = Cruise()
    limiter = tf.CapacityLimiter(algorithm=algo)
    run = await downstream(limiter, seconds=4.0, rate=2000, servers=20, mean=0.02, seed=seed)
    late = limits(run, 2.0, 4.0)
    assert 18 <= statistics.median(late) <= 34, late
    assert max(late) <= 50, late  # no runaway
    assert goodput(run, 2.0, 4.0) >= 900  # capacity is ~1000/s
    assert algo.state()["slow_start"] == 0
    # the no-queue median (~17.6 ms), not a queued one
    assert algo.state()["baseline_rtt"] < 0.021
    assert limiter.borrowed_tokens == 0
