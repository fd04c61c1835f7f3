"""What does recording a timeline cost, and what does a big file take?

1. A workload of many small task steps (tasks ping-ponging through a
   ``tf.CapacityLimiter``, a ``trio.Lock``, a ``trio.Event`` and plain
   checkpoints: every kind of park the recorder classifies) run unrecorded,
   under ``record_timeline(path)`` (full, streamed to a file) and under
   ``record_timeline(path, window=5)`` (flight recorder), in rotating
   order in one process; per run, median of ``--repeats``: the program's
   CPU time (``time.process_time``, every thread of this process), the CPU
   of the full recording's writer process (a child, on another core), and
   the wall time (which waits for the writer to finish the file). Prints
   the steps per second unrecorded and each recorded run's ratio to it
   (the goal: <= 2x at 100k steps/s).
2. ``top``'s per-task accounting instrument (installed by the first
   ``/debug/top`` request) on the same workload.
3. Writing 1M events: the encoder's time and the file's size.
4. Watching a 10k-task service with top at 1 Hz: its CPU per second
   unwatched and watched (accounting on, one frame a second), alternating.
5. A pipeline of three trivial ``map`` stages (one worker each) over
   ``--items`` items, unrecorded, and recorded (full and flight) with and
   without its item slices (the same recording with the timeline's item
   hook taken away): what the per-item events add on top of the task steps.
   ``--work`` puts the same synchronous work in each stage's function.

    python bench/timeline.py [--repeats N] [--steps N] [--events N] [--work N] [--only PART]

``--work N`` adds N iterations of an empty loop to every step: ``--work 0``
is the harshest case (steps of a few µs, ~200k steps/s); ``--work 900`` or
so brings the unrecorded run near the issue's 100k steps/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import trioflow as tf
from trioflow.debug import _serve, _timeline, _topdata
from trioflow.debug._fork import in_child
from trioflow.debug._reach import find_stuck
from trioflow.telemetry import _hooks

STEPS = 200_000


WORK = 0


def burn(n: int) -> None:
    """Synchronous work inside a step (``--work`` sets how much)."""
    for _ in range(n):
        pass


async def workload(total_steps: int) -> int:
    """About ``total_steps`` task steps; returns the steps counted by trio."""
    work = WORK
    limiter = tf.CapacityLimiter(4, name="bench")
    lock = trio.Lock()
    n_tasks = 40
    rounds = max(1, total_steps // (n_tasks * 8))
    ping = [trio.Event() for _ in range(n_tasks)]

    async def worker(i: int) -> None:
        for r in range(rounds):
            async with limiter:
                burn(work)
                await trio.lowlevel.checkpoint()
            async with lock:
                burn(work)
                await trio.lowlevel.checkpoint()
            if r % 4 == 0:
                # wake the neighbour, wait to be woken (an Event park)
                ping[(i + 1) % n_tasks].set()
                with trio.move_on_after(0.01):
                    await ping[i].wait()
                ping[i] = trio.Event()
            burn(work)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        for i in range(n_tasks):
            n.start_soon(worker, i)
    return rounds * n_tasks


class Cost(tuple[float, float, float]):
    """(this process's CPU, its finished children's CPU, wall) seconds of one run."""

    __slots__ = ()

    @property
    def cpu(self) -> float:
        return self[0]

    @property
    def writer(self) -> float:
        return self[1]

    @property
    def wall(self) -> float:
        return self[2]


def measure(fn: Callable[[], object]) -> Cost:
    """Run ``fn`` and say what it cost: a writer process is a child, waited
    for when the recording stops, so its CPU is in RUSAGE_CHILDREN."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    t0 = time.process_time()
    fn()
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return Cost((cpu, child, wall))


def report(label: str, runs: list[Cost], base: list[Cost], per: float, unit: str) -> None:
    """One line: medians of CPU (ratio), the writer's CPU, wall (ratio)."""
    cpu = statistics.median(c.cpu for c in runs)
    wall = statistics.median(c.wall for c in runs)
    writer = statistics.median(c.writer for c in runs)
    b_cpu = statistics.median(c.cpu for c in base)
    b_wall = statistics.median(c.wall for c in base)
    print(
        f"  {label:16s} CPU {cpu * 1e3:8.1f} ms  {cpu / b_cpu:5.2f}x ({(cpu - b_cpu) / per * 1e6:+6.2f} µs/{unit})"
        f"   writer process {writer * 1e3:7.1f} ms   wall {wall * 1e3:8.1f} ms  {wall / b_wall:5.2f}x"
    )


def run_once(total_steps: int, mode: str, path: Path) -> tuple[Cost, int]:
    """(cost, steps) of one run of the workload in ``mode``."""
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
    cost = measure(lambda: trio.run(main, instruments=[counter]))
    return cost, steps


def bench_recording(repeats: int, total_steps: int) -> None:
    modes = ["off", "full", "flight", "top"]
    results: dict[str, list[Cost]] = {m: [] for m in modes}
    steps_seen: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.json"
        for r in range(repeats):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                cost, steps = run_once(total_steps, m, path)
                results[m].append(cost)
                steps_seen[m] = steps
        size = path.stat().st_size if path.exists() else 0
    base = statistics.median(c.cpu for c in results["off"])
    rate = steps_seen["off"] / base
    print(f"workload: {steps_seen['off']} task steps, {rate:,.0f} steps/s unrecorded (CPU)")
    for m in modes:
        report(m, results[m], results["off"], steps_seen["off"], "step")
    print(f"  last full/flight file: {size / 1e6:.1f} MB")


async def _step(x: int) -> int:
    burn(WORK)
    return x + 1


PIPE = tf.Pipeline("bench").map(_step, name="a").map(_step, name="b").map(_step, name="c")


def run_pipeline(n_items: int, mode: str, path: Path) -> Cost:
    """What one pipeline run of ``n_items`` in ``mode`` cost."""

    async def main() -> None:
        if mode == "off":
            await PIPE.run(range(n_items))
            return
        window = 5.0 if mode.startswith("flight") else None
        with tf.debug.record_timeline(path, window=window, signal=None):
            if mode.endswith("no-items"):
                # The same recording with the item hook taken away: the
                # difference is what the item slices cost.
                _hooks.timeline_hook = None
            await PIPE.run(range(n_items))

    return measure(lambda: trio.run(main))


def count_pipeline_steps(n_items: int) -> int:
    """The task steps of one unrecorded run (counted in a run of its own)."""
    steps = 0

    class Count(trio.abc.Instrument):
        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            steps += 1

    trio.run(PIPE.run, range(n_items), instruments=[Count()])
    return steps


def bench_pipeline(repeats: int, n_items: int) -> None:
    modes = ["off", "full", "full no-items", "flight", "flight no-items"]
    results: dict[str, list[Cost]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.json"
        for r in range(repeats):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                results[m].append(run_pipeline(n_items, m, path))
    steps = count_pipeline_steps(n_items)
    base = statistics.median(c.cpu for c in results["off"])
    print(
        f"pipeline: 3 map stages x 1 worker, {n_items} items, --work {WORK}: {steps} task"
        f" steps, {steps / base:,.0f} steps/s unrecorded (CPU), median of {repeats}"
    )
    for m in modes:
        report(m, results[m], results["off"], n_items, "item")


def bench_write(n_events: int, check: bool = False) -> None:
    """Encode ``n_events`` recorded events of a realistic mix and write them.

    With ``check``, the file is then read back and run through the test
    suite's trace-event checker (``tests/debug/trace_events.py``: the format's
    rules as the viewers' importers apply them).
    """
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
        if check:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.debug.trace_events import load, validate

            t0 = time.perf_counter()
            counts = validate(load(path.read_text(encoding="utf-8")))
            by_ph = ", ".join(f"{ph} {k:,}" for ph, k in sorted(counts.items()))
            print(
                f"checker: the {n:,}-event file passes ({by_ph}) in "
                f"{time.perf_counter() - t0:.1f} s"
            )


def bench_top(n_tasks: int, repeats: int, phase: float = 3.0) -> None:
    """What watching with top at 1 Hz costs a service of ``n_tasks`` tasks.

    The service: ``n_tasks`` tasks, each waking about once a second (a
    sleep of 0.5-1.5 s) to take a limiter token; so ~``n_tasks`` steps/s.
    Phases of ``phase`` seconds (``--phase``) alternate: unwatched (no accounting, no
    requests) and watched (the accounting instrument on, one
    ``/debug/top`` frame a second, answered in the loop as serve() does;
    the first frame of each watched phase, which seeds the accounting, is
    timed apart). Prints the service's CPU per second in each, the
    difference, the CPU of one request, and what the stuck lints'
    background analysis costs.
    """
    import random

    async def main() -> None:
        lim = tf.CapacityLimiter(50, name="api")
        rnd = random.Random(1)

        async def task() -> None:
            while True:
                await trio.sleep(0.5 + rnd.random())
                async with lim:
                    await trio.lowlevel.checkpoint()

        costs: list[float] = []
        firsts: list[float] = []
        sizes: list[int] = []
        coverage: list[float] = []
        pauses: list[float] = []
        cpu: dict[str, list[float]] = {"unwatched": [], "watched": []}
        gc_cpu: dict[str, list[float]] = {"unwatched": [], "watched": []}
        in_gc = [0.0, 0.0]  # CPU in the collector so far, and when the current pass began

        def gc_clock(event: str, info: dict[str, int]) -> None:
            if event == "start":
                in_gc[1] = time.process_time()
            else:
                in_gc[0] += time.process_time() - in_gc[1]

        gc.callbacks.append(gc_clock)
        async with trio.open_nursery() as n:
            for i in range(n_tasks):
                n.start_soon(task, name=f"worker-{i % 20}")
            await trio.sleep(2.0)  # every task has started
            since = 0
            for _ in range(repeats):
                c0, g0 = time.process_time(), in_gc[0]
                await trio.sleep(phase)
                cpu["unwatched"].append((time.process_time() - c0) / phase)
                gc_cpu["unwatched"].append((in_gc[0] - g0) / phase)
                # The first request seeds the accounting from the task tree (once
                # per watching session), in chunks as serve() does: timed apart,
                # as "first", not in the phase; its longest chunk is the pause.
                r0 = time.process_time()
                seeded = await _topdata.start_accounting_async()
                body = _topdata.respond({"since": ["0"]})
                firsts.append(time.process_time() - r0)
                pauses.append(seeded.seed_longest)
                since = json.loads(body)["v"]
                await trio.sleep(1.0)
                c0, g0 = time.process_time(), in_gc[0]
                t_end = trio.current_time() + phase
                while trio.current_time() < t_end:
                    r0 = time.process_time()
                    body = _topdata.respond({"since": [str(since)]})
                    costs.append(time.process_time() - r0)
                    sizes.append(len(body))
                    parsed = json.loads(body)
                    since = parsed["v"]
                    coverage.append(parsed["coverage"])
                    await trio.sleep(1.0)
                cpu["watched"].append((time.process_time() - c0) / phase)
                gc_cpu["watched"].append((in_gc[0] - g0) / phase)
                acct = _topdata._active  # pyright: ignore[reportPrivateUsage]
                assert acct is not None
                _topdata.stop_accounting(acct)
                since = 0
            # The stuck lints' reachability analysis, as serve() runs it every
            # STUCK_EVERY s while watched: in a forked child (the service pays
            # the fork and reading the answer); in-process for comparison.
            # The service keeps running while the child works; what it pays is
            # the fork itself (the loop is blocked for it) and reading the answer.
            forked: list[float] = []
            answer: list[float] = []
            real_fork = os.fork

            def timed_fork() -> int:
                t0 = time.perf_counter()
                pid = real_fork()
                if pid:
                    forked.append(time.perf_counter() - t0)
                return pid

            os.fork = timed_fork
            try:
                for _ in range(repeats):
                    w0 = time.perf_counter()
                    await in_child(lambda: json.dumps(_topdata.stuck_lints(find_stuck())).encode())
                    answer.append(time.perf_counter() - w0)
            finally:
                os.fork = real_fork
            c0 = time.process_time()
            find_stuck()
            inproc = time.process_time() - c0
            n.cancel_scope.cancel()
        off = statistics.median(cpu["unwatched"])
        on = statistics.median(cpu["watched"])

        # Each watched phase against the unwatched phase just before it: the
        # pairs share the machine's state, so their spread is the noise a
        # claim about a point of a core must clear. Split into the
        # collector's time and the rest, as this service switches between
        # collector regimes by itself.
        def paired(what: str, a: list[float], b: list[float]) -> str:
            d = sorted(y - x for x, y in zip(a, b, strict=True))
            half = 2 * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
            return (
                f"  {what}: mean {statistics.fmean(d) * 100:+.2f} points, +-{half * 100:.2f}"
                f" (2 standard errors), median {statistics.median(d) * 100:+.2f},"
                f" range {d[0] * 100:+.2f} to {d[-1] * 100:+.2f}"
            )

        rest = {k: [c - g for c, g in zip(cpu[k], gc_cpu[k], strict=True)] for k in cpu}
        pairs = [
            paired("paired, all of it", cpu["unwatched"], cpu["watched"]),
            paired("paired, outside the collector", rest["unwatched"], rest["watched"]),
            paired("paired, the collector", gc_cpu["unwatched"], gc_cpu["watched"]),
        ]
        print(
            f"top at 1 Hz, {n_tasks:,} tasks (each waking about once a second): service CPU "
            f"{off * 100:.1f}% unwatched, {on * 100:.1f}% watched "
            f"(+{(on - off) * 100:.2f} points of one core, {on / off:.3f}x); the step hooks "
            f"saw {statistics.median(coverage) * 100:.1f}% of the time; one request "
            f"{statistics.median(costs) * 1e3:.2f} ms CPU (the first, which seeds the "
            f"accounting: {statistics.median(firsts) * 1e3:.1f} ms in chunks, the longest "
            f"{statistics.median(pauses) * 1e3:.1f} ms), "
            f"{statistics.median(sizes):,.0f} bytes"
        )
        print(f"  watched - the unwatched phase before it, {len(cpu['watched'])} pairs:")
        print("\n".join(pairs))
        gc.callbacks.remove(gc_clock)
        print(
            "  of which the garbage collector: "
            f"{statistics.median(gc_cpu['unwatched']) * 100:.1f}% unwatched, "
            f"{statistics.median(gc_cpu['watched']) * 100:.1f}% watched"
            + ("" if gc.isenabled() else " (collector off: --no-gc)")
        )
        every = _serve.STUCK_EVERY
        fork_cpu = statistics.median(forked)
        print(
            f"stuck lints (find_stuck every {every:g} s while watched): forked, "
            f"answered in {statistics.median(answer):.2f} s, the loop paused "
            f"{fork_cpu * 1e3:.1f} ms for the fork "
            f"({fork_cpu / every * 100:.2f}% of the time); in-process the pause "
            f"would be {inproc * 1e3:.0f} ms ({inproc / every * 100:.2f}%)"
        )

    trio.run(main)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--top-tasks", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--only", choices=["record", "write", "top", "pipeline"], default=None)
    ap.add_argument("--work", type=int, default=0, help="loop iterations of work per step")
    ap.add_argument(
        "--phase",
        type=float,
        default=3.0,
        help="top: seconds per phase (longer phases average over the collector's regimes)",
    )
    ap.add_argument(
        "--no-gc",
        action="store_true",
        help="top: the garbage collector off, so a collection that one burst of allocations "
        "sets going (in this service's steady churn it then keeps going) does not land in "
        "one phase and not the other",
    )
    ap.add_argument(
        "--check", action="store_true", help="write: run the written file through the checker"
    )
    args = ap.parse_args()
    global WORK
    WORK = args.work
    if args.no_gc:
        gc.disable()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    parts: dict[str, Callable[[], None]] = {
        "record": lambda: bench_recording(args.repeats, args.steps),
        "write": lambda: bench_write(args.events, args.check),
        "top": lambda: bench_top(args.top_tasks, args.repeats, args.phase),
        "pipeline": lambda: bench_pipeline(args.repeats, args.items),
    }
    for name, fn in parts.items():
        if args.only in (None, name):
            fn()


if __name__ == "__main__":
    main()
