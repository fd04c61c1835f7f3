"""What does an adaptive limit cost per block, next to trio.CapacityLimiter?

Prints, in one process and one run, the median over N repeats (rotating
order) of the time per ``async with limiter:`` block for

* ``trio``: ``trio.CapacityLimiter`` (the baseline),
* ``fixed``: ``tf.CapacityLimiter(n)``,
* one ``tf.CapacityLimiter(algorithm=...)`` per algorithm, whose blocks are
  samples (timestamps at grant and exit, an ``update()`` call, a resize),

uncontended (20,000 blocks) and contended (1000 tasks, 10 tokens, 10 blocks
each), as ratios to ``trio``. Algorithms get bounds that keep the limit
where the case needs it (1 uncontended, 10 contended) so the cases compare
like with like. Also the pure ``update()`` cost per sample.

    python bench/adaptive/overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio

import trioflow as tf
from trioflow import adaptive

N_UNCONTENDED = 20_000
N_TASKS = 1000
N_TOKENS = 10
ROUNDS = 10


def algorithms(n: int) -> dict[str, Callable[[], Any]]:
    return {
        "AIMD": lambda: adaptive.AIMD(initial_limit=n, min_limit=n, max_limit=n),
        "Vegas": lambda: adaptive.Vegas(initial_limit=n, min_limit=n, max_limit=n),
        "Gradient2": lambda: adaptive.Gradient2(initial_limit=n, min_limit=n, max_limit=n),
        "Cruise": lambda: adaptive.Cruise(initial_limit=n, min_limit=n, max_limit=n),
        "LoadFeedback": lambda: adaptive.LoadFeedback(
            lambda: 0.6, initial_limit=n, min_limit=n, max_limit=n, interval=0.001
        ),
    }


def sides(n: int) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {
        "trio": lambda: trio.CapacityLimiter(n),
        "fixed": lambda: tf.CapacityLimiter(n),
    }
    for name, make in algorithms(n).items():
        out[name] = lambda make=make: tf.CapacityLimiter(algorithm=make())
    return out


async def uncontended(make: Callable[[], Any]) -> float:
    limiter = make()
    t0 = time.perf_counter()
    for _ in range(N_UNCONTENDED):
        async with limiter:
            pass
    return (time.perf_counter() - t0) / N_UNCONTENDED


async def contended(make: Callable[[], Any]) -> float:
    limiter = make()

    async def worker() -> None:
        for _ in range(ROUNDS):
            async with limiter:
                await trio.lowlevel.checkpoint()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(N_TASKS):
            nursery.start_soon(worker)
    return (time.perf_counter() - t0) / (N_TASKS * ROUNDS)


def update_cost(make: Callable[[], Any]) -> float:
    algo = make()
    samples = [adaptive.Sample(i * 0.001, 0.02, 10, False) for i in range(20_000)]
    t0 = time.perf_counter()
    for s in samples:
        algo.update(s)
    return (time.perf_counter() - t0) / len(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    for title, case, n in (
        ("uncontended async with", uncontended, 1),
        ("1000 tasks / 10 tokens", contended, N_TOKENS),
    ):
        ss = sides(n)
        names = list(ss)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(trio.run(case, ss[name]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{title}: trio {med['trio'] * 1e6:.2f} µs per block")
        for k in names[1:]:
            print(f"  {k:13s} {med[k] * 1e6:7.2f} µs   {med[k] / med['trio']:.2f}x trio")
    print("update() alone, per sample:")
    for name, make in algorithms(10).items():
        cost = statistics.median(update_cost(make) for _ in range(args.repeats))
        print(f"  {name:13s} {cost * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
