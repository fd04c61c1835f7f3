"""Twenty jobs, at most four at once, some heavier than others.

Shows a weighted CapacityLimiter, its statistics while it is busy, and that
everything is given back at the end.

    python examples/limited_tasks.py
"""

from __future__ import annotations

import random

import trio

import trioflow as tf


async def job(limiter: tf.CapacityLimiter, i: int, weight: int, done: list[int]) -> None:
    async with limiter.hold(weight):
        await trio.sleep(random.uniform(0.01, 0.05))
        done.append(i)


async def report(limiter: tf.CapacityLimiter) -> None:
    while True:
        print("  ", limiter)
        await trio.sleep(0.04)


async def main() -> None:
    limiter = tf.CapacityLimiter(4, name="workers")
    done: list[int] = []
    async with trio.open_nursery() as outer:
        outer.start_soon(report, limiter)
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(job, limiter, i, 2 if i % 5 == 0 else 1, done)
        outer.cancel_scope.cancel()
    stats = limiter.statistics()
    print(f"finished {len(done)} jobs; at the end: {stats}")
    assert stats.borrowed_tokens == 0
    assert stats.tasks_waiting == 0


if __name__ == "__main__":
    trio.run(main)
