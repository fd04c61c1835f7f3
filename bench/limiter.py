"""How much does trioflow's CapacityLimiter cost next to trio's own?

Prints, in one process and one run, the ratio trioflow / trio.CapacityLimiter for

* uncontended ``async with limiter:`` (20,000 acquisitions per repeat),
* 1000 tasks contending for 10 tokens (each task enters the limiter 10 times), and
* a depth sweep: with a queue ``W`` deep (W = 1,000 ... 100,000 parked
  tasks), the CPU time of one release -> grant -> the granted task runs and
  queues again (so the depth stays ``W``), over 2,000 grants,

as the median of N repeats (default 7) run in rotating order, so drift on a
shared machine hits both sides alike. Also prints one bare
``trio.lowlevel.checkpoint()`` for scale: one checkpoint is the floor for a
call that must be a checkpoint.

    python bench/limiter.py [--repeats N] [--depths 1000,10000,100000] [--only depth]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

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


GRANTS_PER_DEPTH = 2_000


async def at_depth(make: Factory, depth: int) -> float:
    """CPU seconds per release -> grant with ``depth`` tasks queued on one token."""
    limiter: Any = make(1)
    grants = 0
    done = trio.Event()
    measuring = False

    async def worker() -> None:
        nonlocal grants
        while True:
            async with limiter:
                if measuring:
                    grants += 1
                    if grants == GRANTS_PER_DEPTH:
                        done.set()
            # leaving the block released the token to the head; queue again

    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        for _ in range(depth):
            nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        measuring = True
        t0 = time.process_time()
        limiter.release()
        await done.wait()
        elapsed = time.process_time() - t0
        nursery.cancel_scope.cancel()
    return elapsed / GRANTS_PER_DEPTH


def measure(case: Callable[[Factory], Awaitable[float]], make: Factory) -> float:
    return trio.run(case, make)


def depth_sweep(sides: dict[str, Factory], depths: list[int], repeats: int) -> None:
    print(f"\nqueue depth sweep (CPU per release -> grant, {GRANTS_PER_DEPTH:,} grants)")
    names = list(sides)
    for depth in depths:
        times: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(trio.run(at_depth, sides[name], depth))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = sorted(times["trioflow"][i] / times["trio"][i] for i in range(repeats))
        print(
            f"  W={depth:>7,}  trio {med['trio'] * 1e6:7.2f} µs   trioflow "
            f"{med['trioflow'] * 1e6:7.2f} µs   ratio {med['trioflow'] / med['trio']:.2f}x "
            f"(per-repeat {ratios[0]:.2f}-{ratios[-1]:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--depths", default="1000,10000,100000")
    parser.add_argument("--only", choices=["depth", "basic"], default=None)
    args = parser.parse_args()
    sides: dict[str, Factory] = {
        "trio": trio.CapacityLimiter,
        "trioflow": tf.CapacityLimiter,
    }
    if args.only != "depth":
        basic(sides, args.repeats)
    if args.only != "basic":
        depth_sweep(sides, [int(d) for d in args.depths.split(",")], args.repeats)


def basic(sides: dict[str, Factory], repeats: int) -> None:
    for title, case in (
        ("uncontended async with", uncontended),
        ("1000 tasks / 10 tokens", contended),
    ):
        times: dict[str, list[float]] = {k: [] for k in sides}
        names = list(sides)
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(measure(case, sides[name]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{title:26s} trio {med['trio'] * 1e6:7.2f} µs   trioflow {med['trioflow'] * 1e6:7.2f} µs"
            f"   ratio trioflow/trio {med['trioflow'] / med['trio']:.2f}x"
        )
    cp = statistics.median(measure(checkpoint_only, trio.CapacityLimiter) for _ in range(repeats))
    print(f"{'one checkpoint (floor)':26s} {cp * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
