"""A small downstream for limiter-level tests under MockClock (trio's real scheduler).

Open-loop Poisson clients against an M/G/c FIFO server (c servers, lognormal
service with sigma 0.5) or a contention server; a client that finds the
limiter full is rejected at once; the 1 s deadline is inside the block, so a
timeout is a drop. The full benchmark is ``bench/adaptive``.
"""

from __future__ import annotations

import heapq
import math
import random

import trio

import trioflow as tf


async def downstream(
    limiter: tf.CapacityLimiter,
    *,
    seconds: float,
    rate: float,
    servers: int,
    mean: float,
    seed: int,
    shed: tuple[float, float] | None = None,
    usl: tuple[float, float] | None = None,
) -> dict[str, list[float]]:
    """Poisson clients at ``rate`` against an M/G/c FIFO (or contention) downstream.

    ``shed=(from, to)``: in that span the downstream answers every request
    with a 503 after 15 ms (the block calls ``permit.drop()``). ``usl=(sigma, kappa)``:
    every admitted request runs at once with service ``S * (1 + sigma*(n-1) +
    kappa*n*(n-1))``. Returns completion times of successes and the limit
    every 100 ms.
    """
    rng = random.Random(seed)
    mu = math.log(mean) - 0.5**2 / 2
    free = [0.0] * servers
    running: list[float] = []
    t0 = trio.current_time()
    ok: list[float] = []
    limit_t: list[float] = []
    limit_v: list[float] = []

    async def request(arrived: float) -> None:
        try:
            async with limiter.hold() as permit:  # the deadline inside: a timeout is a drop
                now = trio.current_time()
                service = rng.lognormvariate(mu, 0.5)
                if shed is not None and shed[0] <= now - t0 < shed[1]:
                    await trio.sleep(0.015)
                    permit.drop()  # overload, said explicitly
                    return
                if usl is not None:
                    while running and running[0] <= now:
                        heapq.heappop(running)
                    n = len(running) + 1
                    finish = now + service * (1 + usl[0] * (n - 1) + usl[1] * n * (n - 1))
                    heapq.heappush(running, finish)
                else:
                    finish = max(now, free[0]) + service
                    heapq.heapreplace(free, finish)
                with trio.fail_at(arrived + 1.0):
                    await trio.sleep_until(finish)
            ok.append(trio.current_time() - t0)
        except trio.TooSlowError:
            pass

    async def sample_limit() -> None:
        while True:
            limit_t.append(trio.current_time() - t0)
            limit_v.append(float(limiter.total_tokens))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_limit)
        while True:
            await trio.sleep(rng.expovariate(rate))
            arrived = trio.current_time()
            if arrived - t0 >= seconds:
                break
            if limiter.available_tokens >= 1:
                nursery.start_soon(request, arrived)
        nursery.cancel_scope.cancel()
    return {"ok": ok, "limit_t": limit_t, "limit_v": limit_v}


def goodput(run: dict[str, list[float]], lo: float, hi: float) -> float:
    return sum(1 for t in run["ok"] if lo <= t < hi) / (hi - lo)


def limits(run: dict[str, list[float]], lo: float, hi: float) -> list[float]:
    return [v for t, v in zip(run["limit_t"], run["limit_v"], strict=True) if lo <= t < hi]
