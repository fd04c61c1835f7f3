"""A short closed-form simulation under MockClock: Cruise settles near the best limit.

Downstream: 20 FIFO servers with lognormal service times (mean 20 ms), so
capacity is about 1000 requests/s and the best static limit (found by the
benchmark's sweep, ``bench/adaptive``) is 22-25. Open-loop Poisson clients at
2000 requests/s, rejected when the limiter is full. The full benchmark lives
in ``bench/adaptive/run.py``; this only guards against regressions, with
ranges wide enough to hold for any seed and scheduling order.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.adaptive import Cruise


async def run_overload(limiter: tf.CapacityLimiter, seconds: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    free = [0.0] * 20  # next-free time of each server
    mu = math.log(0.020) - 0.5**2 / 2
    ok_done: list[float] = []
    limits: list[tuple[float, int]] = []
    t0 = trio.current_time()
    end = t0 + seconds

    async def request() -> None:
        async with limiter.hold():
            now = trio.current_time()
            start = max(now, free[0])
            finish = start + rng.lognormvariate(mu, 0.5)
            heapq.heapreplace(free, finish)
            await trio.sleep(finish - now)
        ok_done.append(trio.current_time() - t0)
        limits.append((trio.current_time() - t0, int(limiter.total_tokens)))

    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(rng.expovariate(2000))
            if trio.current_time() >= end:
                break
            if limiter.available_tokens >= 1:
                nursery.start_soon(request)
    late = [lim for t, lim in limits if t >= seconds / 2]
    return {
        "goodput": sum(1 for t in ok_done if seconds / 2 <= t < seconds) / (seconds / 2),
        "limit": statistics.median(late),
        "max_limit": max(late),
    }


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
async def test_cruise_converges_under_2x_overload(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    algo = Cruise()
    limiter = tf.CapacityLimiter(algorithm=algo)
    out = await run_overload(limiter, 4.0, seed=seed)
    assert 18 <= out["limit"] <= 40, out
    assert out["max_limit"] <= 60, out  # no runaway
    assert out["goodput"] >= 900, out  # capacity is ~1000/s
    assert algo.state()["slow_start"] == 0
    assert algo.state()["baseline_rtt"] < 0.025  # the no-queue median (~17.6 ms), not a queued one
    assert limiter.borrowed_tokens == 0
