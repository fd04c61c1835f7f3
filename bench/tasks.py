"""What do trioflow's task group and amap cost next to what a Trio user would otherwise use?

Prints, in one process and one run, process CPU time per task / per item
(median of N repeats, run in rotating order so drift on a shared machine
hits every side alike; each baseline is run twice, so the run shows its own
A/A noise floor):

* **spawn + run** of 10,000 tasks that each take one checkpoint:
  a plain ``trio`` nursery (the baseline), anyio's task group on trio,
  ``tf.open_task_group()`` with ``start_soon``, with ``await spawn`` and with
  ``await spawn`` under ``limit=100``; ratios against the plain nursery
  (goal for the task group: ≤ 1.2×);
* **parallel map** of 10,000 items through an async function that takes one
  checkpoint, 10 at once: ``aiometer.amap`` on trio (the baseline) vs.
  ``tf.amap`` (goal: ≥ 3× faster, ≤ 15 µs/item).

    python bench/tasks.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import aiometer
import anyio
import trio

import trioflow as tf

#: Process CPU time, not wall time: the machine is shared, and CPU time
#: does not count the moments another process holds the core.
clock = time.process_time

N_TASKS = 10_000
N_ITEMS = 10_000
AT_ONCE = 10


async def one_checkpoint() -> None:
    await trio.lowlevel.checkpoint()


async def plain_nursery() -> float:
    t0 = clock()
    async with trio.open_nursery() as nursery:
        for _ in range(N_TASKS):
            nursery.start_soon(one_checkpoint)
    return (clock() - t0) / N_TASKS


async def anyio_group() -> float:
    t0 = clock()
    async with anyio.create_task_group() as tg:
        for _ in range(N_TASKS):
            tg.start_soon(one_checkpoint)
    return (clock() - t0) / N_TASKS


async def tf_start_soon() -> float:
    t0 = clock()
    async with tf.open_task_group() as tg:
        for _ in range(N_TASKS):
            tg.start_soon(one_checkpoint)
    return (clock() - t0) / N_TASKS


async def tf_spawn() -> float:
    t0 = clock()
    async with tf.open_task_group() as tg:
        for _ in range(N_TASKS):
            await tg.spawn(one_checkpoint)
    return (clock() - t0) / N_TASKS


async def tf_spawn_limited() -> float:
    t0 = clock()
    async with tf.open_task_group(limit=100) as tg:
        for _ in range(N_TASKS):
            await tg.spawn(one_checkpoint)
    return (clock() - t0) / N_TASKS


async def work(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x


async def aiometer_amap() -> float:
    items = list(range(N_ITEMS))
    total = 0
    t0 = clock()
    async with aiometer.amap(work, items, max_at_once=AT_ONCE) as results:
        async for r in results:
            total += r
    elapsed = clock() - t0
    assert total == sum(items)
    return elapsed / N_ITEMS


async def tf_amap() -> float:
    items = list(range(N_ITEMS))
    total = 0
    t0 = clock()
    async with tf.amap(work, items, max_at_once=AT_ONCE) as results:
        async for r in results:
            total += r
    elapsed = clock() - t0
    assert total == sum(items)
    return elapsed / N_ITEMS


async def tf_amap_ordered() -> float:
    items = list(range(N_ITEMS))
    out: list[int] = []
    t0 = clock()
    async with tf.amap(work, items, max_at_once=AT_ONCE, ordered=True) as results:
        async for r in results:
            out.append(r)
    elapsed = clock() - t0
    assert out == items
    return elapsed / N_ITEMS


async def tf_amap_async_source() -> float:
    async def source() -> object:
        for i in range(N_ITEMS):
            yield i

    total = 0
    t0 = clock()
    async with tf.amap(work, source(), max_at_once=AT_ONCE) as results:  # type: ignore[arg-type]
        async for r in results:
            total += r
    elapsed = clock() - t0
    assert total == sum(range(N_ITEMS))
    return elapsed / N_ITEMS


Case = Callable[[], Awaitable[float]]


def run_cases(cases: dict[str, Case], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(trio.run(cases[name]))
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, med: dict[str, float], baseline: str, goal: str) -> None:
    print(f"{title}  ({goal})")
    base = med[baseline]
    for name, t in med.items():
        print(f"  {name:34s} {t * 1e6:7.2f} µs   {t / base:5.2f}x {baseline}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    spawn = run_cases(
        {
            "trio nursery start_soon": plain_nursery,
            "trio nursery (again: A/A noise)": plain_nursery,
            "anyio task group start_soon": anyio_group,
            "tf task group start_soon": tf_start_soon,
            "tf task group await spawn": tf_spawn,
            "tf task group spawn, limit=100": tf_spawn_limited,
        },
        args.repeats,
    )
    report(
        f"spawn + run, per task ({N_TASKS} tasks, one checkpoint each)",
        spawn,
        "trio nursery start_soon",
        "goal: task group <= 1.2x",
    )
    amap = run_cases(
        {
            "aiometer.amap": aiometer_amap,
            "aiometer.amap (again: A/A noise)": aiometer_amap,
            "tf.amap": tf_amap,
            "tf.amap ordered=True": tf_amap_ordered,
            "tf.amap, async generator source": tf_amap_async_source,
        },
        args.repeats,
    )
    report(
        f"amap, per item ({N_ITEMS} items, {AT_ONCE} at once, one checkpoint each)",
        amap,
        "aiometer.amap",
        "goal: tf.amap <= 0.33x and <= 15 µs/item",
    )
    speedup = amap["aiometer.amap"] / amap["tf.amap"]
    print(f"  tf.amap is {speedup:.2f}x faster than aiometer.amap")


if __name__ == "__main__":
    main()
