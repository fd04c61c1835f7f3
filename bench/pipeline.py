"""What does a trioflow Pipeline cost per item, next to the same topology by hand?

Prints, in one process and one run:

* a 3-stage pipeline of trivial async work (``x + 1`` three times) run with
  ``Pipeline.run`` vs. the same topology hand-written with trio memory
  channels (a reader task, one channel before each stage, a counting sink),
  with 1 and with 4 workers per stage, same buffer sizes (0): the ratio
  trioflow / hand-written per item (goals: <= 1.10 with 1 worker, <= 1.05
  with 4);
* the same pipeline after ``tf.telemetry.use()`` with no OpenTelemetry SDK
  configured vs. never calling it (goal: within noise, ~1.00: the run
  decides once that nothing would be recorded);
* ``executor="process"`` with one worker per CPU on a CPU-bound function vs.
  the same calls made one after another in this process (the speed-up), and
  vs. the same calls made straight through ``trio_parallel`` (the pipeline's
  overhead on top of it).

The per-item figures are CPU time of this process (``time.process_time``):
the whole run is one thread, and on a shared machine wall-clock time mostly
measures the other jobs. The process-executor figures are wall-clock.
Each figure is the median of N repeats (default 5) run in rotating order, so
drift on a shared machine hits both sides alike.

    PYTHONPATH=. python bench/pipeline.py [--repeats N] [--items N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

import trioflow as tf


async def inc(x: int) -> int:
    return x + 1


async def hand_written(items: int, workers: int) -> float:
    """reader -> [ch] -> inc xW -> [ch] -> inc xW -> [ch] -> inc xW -> count."""
    delivered = 0
    t0 = time.process_time()
    async with trio.open_nursery() as nursery:
        chans = [trio.open_memory_channel[int](0) for _ in range(3)]

        async def reader() -> None:
            async with chans[0][0]:
                for i in range(items):
                    await chans[0][0].send(i)

        async def stage(k: int) -> None:
            nonlocal delivered
            receive = chans[k][1]
            if k < 2:
                send = chans[k + 1][0]
                async with send, trio.open_nursery() as inner:

                    async def worker() -> None:
                        async for x in receive:
                            await send.send(await inc(x))

                    for _ in range(workers):
                        inner.start_soon(worker)
            else:
                async with trio.open_nursery() as inner:

                    async def sink() -> None:
                        nonlocal delivered
                        async for x in receive:
                            await inc(x)
                            delivered += 1

                    for _ in range(workers):
                        inner.start_soon(sink)

        nursery.start_soon(reader)
        for k in range(3):
            nursery.start_soon(stage, k)
    assert delivered == items
    return (time.process_time() - t0) / items


async def with_trioflow_after_use(items: int, workers: int) -> float:
    """The pipeline with ``tf.telemetry.use()`` active and no SDK behind it."""
    with tf.telemetry.use(tracing="item"):
        return await with_trioflow(items, workers)


async def with_trioflow(items: int, workers: int) -> float:
    pipe = (
        tf.Pipeline("bench")
        .map(inc, workers=workers, name="a")
        .map(inc, workers=workers, name="b")
        .map(inc, workers=workers, name="c")
    )
    t0 = time.process_time()
    report = await pipe.run(range(items))
    dt = time.process_time() - t0
    assert report.delivered == items
    return dt / items


def cpu(n: int) -> int:
    return sum(i * i for i in range(n))


CPU_N = 2_000_000
CPU_ITEMS = 12


async def cpu_serial() -> float:
    t0 = time.perf_counter()
    for _ in range(CPU_ITEMS):
        cpu(CPU_N)
    return time.perf_counter() - t0


async def cpu_process() -> float:
    pipe = tf.Pipeline("cpu").map(cpu, executor="process", workers=os.cpu_count() or 2)
    t0 = time.perf_counter()
    report = await pipe.run([CPU_N] * CPU_ITEMS)
    assert report.delivered == CPU_ITEMS
    return time.perf_counter() - t0


async def cpu_raw_trio_parallel() -> float:
    """The same jobs straight through trio-parallel, as many at once as there are CPUs."""
    import trio_parallel

    t0 = time.perf_counter()
    limiter = trio.CapacityLimiter(os.cpu_count() or 2)
    async with trio_parallel.open_worker_context() as ctx, trio.open_nursery() as nursery:

        async def one() -> None:
            async with limiter:
                await ctx.run_sync(cpu, CPU_N)

        for _ in range(CPU_ITEMS):
            nursery.start_soon(one)
    return time.perf_counter() - t0


def median_ratio(
    repeats: int, a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]]
) -> tuple[float, float, float]:
    ta: list[float] = []
    tb: list[float] = []
    for r in range(repeats):
        order = [(a, ta), (b, tb)] if r % 2 == 0 else [(b, tb), (a, ta)]
        for fn, out in order:
            out.append(trio.run(fn))
    ma, mb = statistics.median(ta), statistics.median(tb)
    return ma, mb, ma / mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--no-process", action="store_true", help="skip the process figures")
    args = parser.parse_args()
    n = args.items
    print(f"trio {trio.__version__}, {os.cpu_count()} CPUs, {n} items, {args.repeats} repeats")
    for workers, goal in ((1, 1.10), (4, 1.05)):
        ours, base, ratio = median_ratio(
            args.repeats,
            lambda w=workers: with_trioflow(n, w),
            lambda w=workers: hand_written(n, w),
        )
        print(
            f"3 stages x {workers} worker(s): trioflow {ours * 1e6:.2f} us/item, "
            f"hand-written {base * 1e6:.2f} us/item, ratio {ratio:.2f} (goal <= {goal:.2f})"
        )
    used, plain, ratio = median_ratio(
        args.repeats, lambda: with_trioflow_after_use(n, 4), lambda: with_trioflow(n, 4)
    )
    print(
        f"telemetry.use() without an SDK vs never called (3 x 4): {used * 1e6:.2f} vs "
        f"{plain * 1e6:.2f} us/item, ratio {ratio:.2f} (goal: within noise)"
    )
    if args.no_process:
        print(f"load average during the run: {os.getloadavg()}")
        return
    reps = max(1, args.repeats // 2)
    serial, proc, _ = median_ratio(reps, cpu_serial, cpu_process)
    raw, proc2, _ = median_ratio(reps, cpu_raw_trio_parallel, cpu_process)
    print(
        f"CPU-bound x{CPU_ITEMS}: serial in-process {serial:.2f} s, executor='process' "
        f"{proc:.2f} s (incl. worker start-up): speed-up {serial / proc:.2f}x; "
        f"raw trio-parallel {raw:.2f} s vs pipeline {proc2:.2f} s: ratio {proc2 / raw:.2f}"
    )
    print(f"load average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
