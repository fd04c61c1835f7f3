"""What does recording a timeline cost, and what does a big file take?

1. A workload of many small task steps (tasks ping-ponging through a
   ``tf.CapacityLimiter``, a ``trio.Lock``, a ``trio.Event`` and plain
   checkpoints: every kind of park the recorder classifies) run unrecorded,
   under ``record_timeline(path)`` (full, streamed to a file) and under
   ``record_timeline(path, window=5)`` (flight recorder), in rotating
   order in one process; CPU time (``time.process_time``) per run, median
   of ``--repeats``. Prints the steps per second unrecorded and each
   recorded run's ratio to it (the goal: <= 2x at 100k steps/s).
2. ``top``'s per-task accounting instrument (installed by the first
   ``/debug/top`` request) on the same workload.
3. Writing 1M events: the encoder's time and the file's size.
4. Serving ``/debug/top`` at 10k tasks: the CPU each request costs the
   service, as a fraction of one second (top asks once a second).

    python bench/timeline.py [--repeats N] [--steps N] [--events N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import trioflow as tf
from trioflow.debug import _timeline, _topdata

STEPS = 200_000


async def workload(total_steps: int) -> int:
    """About ``total_steps`` task steps; returns the steps counted by trio."""
    limiter = tf.CapacityLimiter(4, name="bench")
    lock = trio.Lock()
    n_tasks = 40
    rounds = max(1, total_steps // (n_tasks * 8))
    ping = [trio.Event() for _ in range(n_tasks)]

    async def worker(i: int) -> None:
        for r in range(rounds):
            async with limiter:
                await trio.lowlevel.checkpoint()
            async with lock:
                await trio.lowlevel.checkpoint()
            if r % 4 == 0:
                # wake the neighbour, wait to be woken (an Event park)
                ping[(i + 1) % n_tasks].set()
                with trio.move_on_after(0.01):
                    await ping[i].wait()
                ping[i] = trio.Event()
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        for i in range(n_tasks):
            n.start_soon(worker, i)
    return rounds * n_tasks


def run_once(total_steps: int, mode: str, path: Path) -> tuple[float, int]:
    """(CPU seconds, steps) of one run of the workload in ``mode``."""
    steps = 0

    class Count(trio.abc.Instrument):
        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            steps += 1

    async def main() -> None:
        if mode == "off":
            await workload(total_steps)
        elif mode == "full":
            with tf.debug.record_timeline(path):
                await workload(total_steps)
        elif mode == "flight":
            with tf.debug.record_timeline(path, window=5.0, signal=None):
                await workload(total_steps)
        elif mode == "top":
            acct = _topdata.start_accounting()
            try:
                await workload(total_steps)
            finally:
                _topdata.stop_accounting(acct)
        else:  # pragma: no cover
            raise ValueError(mode)

    counter = Count()
    t0 = time.process_time()
    trio.run(main, instruments=[counter])
    cpu = time.process_time() - t0
    return cpu, steps


def bench_recording(repeats: int, total_steps: int) -> None:
    modes = ["off", "full", "flight", "top"]
    results: dict[str, list[float]] = {m: [] for m in modes}
    steps_seen: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.json"
        for r in range(repeats):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                cpu, steps = run_once(total_steps, m, path)
                results[m].append(cpu)
                steps_seen[m] = steps
        size = path.stat().st_size if path.exists() else 0
    base = statistics.median(results["off"])
    rate = steps_seen["off"] / base
    print(f"workload: {steps_seen['off']} task steps, {rate:,.0f} steps/s unrecorded (CPU)")
    for m in modes:
        med = statistics.median(results[m])
        print(
            f"  {m:7s} median CPU {med * 1e3:8.1f} ms   ratio {med / base:5.2f}x"
            f"   ({(med - base) / steps_seen['off'] * 1e6:+.2f} µs/step)"
        )
    print(f"  last full/flight file: {size / 1e6:.1f} MB")


def bench_write(n_events: int) -> None:
    """Encode ``n_events`` recorded events of a realistic mix and write them."""
    # Record a real run until it has enough events, then time the write.
    holder: dict[str, Any] = {}

    async def main() -> None:
        tl = tf.debug.record_timeline(
            Path(tempfile.gettempdir()) / "unused.json",
            window=3600.0,
            signal=None,
            max_events=n_events + 10,
        )
        with tl:
            while tl.events < n_events:
                await workload(50_000)
            rec = tl._recorder  # pyright: ignore[reportPrivateUsage]
            assert rec is not None
            holder["events"] = rec.snapshot()[:n_events]
            holder["base"] = tl._base  # pyright: ignore[reportPrivateUsage]

    trio.run(main)
    events = holder["events"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.json"
        t0 = time.perf_counter()
        c0 = time.process_time()
        n = _timeline.write_trace(path, events, holder["base"], 0.01, time.perf_counter())
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        size = path.stat().st_size
    print(
        f"write {len(events):,} recorded events -> {n:,} trace events: {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU, {size / 1e6:.1f} MB ({size / n:.0f} B/trace event)"
    )


def bench_top(n_tasks: int, repeats: int) -> None:
    """CPU per /debug/top request at ``n_tasks`` tasks (accounting on)."""

    async def main() -> None:
        lim = tf.CapacityLimiter(10, name="api")
        rate = tf.RateLimiter(100, name="rate")
        stop = trio.Event()

        async def task(i: int) -> None:
            while not stop.is_set():
                async with lim:
                    await trio.sleep(0.05)
                if i % 7 == 0:
                    await rate.acquire()

        acct = _topdata.start_accounting()
        try:
            async with trio.open_nursery() as n:
                for i in range(n_tasks):
                    n.start_soon(task, i, name=f"worker-{i % 20}")
                await trio.sleep(1.0)
                costs: list[float] = []
                sizes: list[int] = []
                since = 0
                for _ in range(repeats):
                    t0 = time.process_time()
                    body, since = _topdata.respond({"since": [str(since)]})
                    costs.append(time.process_time() - t0)
                    sizes.append(len(body))
                    await trio.sleep(1.0)
                stop.set()
                n.cancel_scope.cancel()
        finally:
            _topdata.stop_accounting(acct)
        med = statistics.median(costs)
        print(
            f"/debug/top at {n_tasks:,} tasks: {med * 1e3:.2f} ms CPU per request "
            f"(= {med * 100:.2f}% of a 1 s refresh), {statistics.median(sizes):,.0f} bytes"
        )

    trio.run(main)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--top-tasks", type=int, default=10_000)
    ap.add_argument("--only", choices=["record", "write", "top"], default=None)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    parts: dict[str, Callable[[], None]] = {
        "record": lambda: bench_recording(args.repeats, args.steps),
        "write": lambda: bench_write(args.events),
        "top": lambda: bench_top(args.top_tasks, args.repeats),
    }
    for name, fn in parts.items():
        if args.only in (None, name):
            fn()


if __name__ == "__main__":
    main()
