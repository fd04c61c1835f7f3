"""How much does trioflow's CapacityLimiter cost next to trio's own?

Prints, in one process and one run, the ratio trioflow / trio.CapacityLimiter for

* uncontended ``async with limiter:`` (20,000 acquisitions per repeat), and
* 1000 tasks contending for 10 tokens (each task enters the limiter 10 times),

as the median of N repeats (default 7) run in rotating order, so drift on a
shared machine hits both sides alike. Also prints one bare
``trio.lowlevel.checkpoint()`` for scale: one checkpoint is the floor for a
call that must be a checkpoint.

    python bench/limiter.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

import trioflow as tf

N_UNCONTENDED = 20_000
N_TASKS = 1000
N_TOKENS = 10
ROUNDS = 10

Factory = Callable[[int], object]


async def uncontended(make: Factory) -> float:
    limiter = make(1)
    t0 = time.perf_counter()
    for _ in range(N_UNCONTENDED):
        async with limiter:  # type: ignore[attr-defined]
            pass
    return (time.perf_counter() - t0) / N_UNCONTENDED


async def checkpoint_only(_: Factory) -> float:
    t0 = time.perf_counter()
    for _ in range(N_UNCONTENDED):
        await trio.lowlevel.checkpoint()
    return (time.perf_counter() - t0) / N_UNCONTENDED


async def contended(make: Factory) -> float:
    limiter = make(N_TOKENS)

    async def worker() -> None:
        for _ in range(ROUNDS):
            async with limiter:  # type: ignore[attr-defined]
                await trio.lowlevel.checkpoint()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(N_TASKS):
            nursery.start_soon(worker)
    return (time.perf_counter() - t0) / (N_TASKS * ROUNDS)


def measure(case: Callable[[Factory], Awaitable[float]], make: Factory) -> float:
    return trio.run(case, make)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sides: dict[str, Factory] = {
        "trio": trio.CapacityLimiter,
        "trioflow": tf.CapacityLimiter,
    }
    for title, case in (
        ("uncontended async with", uncontended),
        ("1000 tasks / 10 tokens", contended),
    ):
        times: dict[str, list[float]] = {k: [] for k in sides}
        names = list(sides)
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(measure(case, sides[name]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{title:26s} trio {med['trio'] * 1e6:7.2f} µs   trioflow {med['trioflow'] * 1e6:7.2f} µs"
            f"   ratio trioflow/trio {med['trioflow'] / med['trio']:.2f}x"
        )
    cp = statistics.median(
        measure(checkpoint_only, trio.CapacityLimiter) for _ in range(args.repeats)
    )
    print(f"{'one checkpoint (floor)':26s} {cp * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
