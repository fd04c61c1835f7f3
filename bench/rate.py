"""Does a rate limiter actually deliver its rate? And what does a non-limiting acquire cost?

Part 1, accuracy, on the real clock. For each rate (1000/s and 10,000/s),
N_WORKERS tasks loop "acquire, count" for WINDOW seconds; the count of calls
let through in [t0, t0 + WINDOW) is compared with the ideal rate * WINDOW +
burst, for

* trioflow ``tf.RateLimiter(rate, burst=1)`` (trio),
* aiolimiter ``AsyncLimiter(rate, 1)``, its documented default shape
  ("rate per second"), whose bucket holds a whole second of tokens (asyncio),
* aiolimiter ``AsyncLimiter(1, 1 / rate)``, the same library at burst 1,
* aiometer ``run_on_each(..., max_per_second=rate)`` (trio, through anyio),
  which paces task starts one sleep at a time,
* and, as a diagnostic, trioflow again with 200 tasks (see SIDES).

Each prints its ratio to its *own* ideal (rate * WINDOW + its own burst) and to
the burst-1 ideal, plus the most calls let through in any 10 ms (a burst
check: the ideal is rate * 0.01 + burst). Sides run in rotating order, median
of REPEATS.

Part 2, overhead: ``await limiter.acquire()`` on a limiter whose rate never
limits, as a ratio to one bare ``trio.lowlevel.checkpoint()`` (the floor for
any call that must be a checkpoint), median of repeats in rotating order.
Also shown: an empty ``async def`` that only awaits a checkpoint — the floor
for any *method* that is a checkpoint, since the coroutine layer alone costs
something.

    python bench/rate.py [--repeats N] [--window S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import aiolimiter
import aiometer
import trio

import trioflow as tf

N_WORKERS = 50
N_OVERHEAD = 20_000


# -- part 1: accuracy ----------------------------------------------------------


def summarize(stamps: list[float], t0: float, window: float) -> tuple[int, int]:
    """(calls in [t0, t0 + window), most calls in any 10 ms)."""
    inside = sorted(s for s in stamps if t0 <= s < t0 + window)
    peak = 0
    j = 0
    for i, s in enumerate(inside):
        while inside[j] < s - 0.010:
            j += 1
        peak = max(peak, i - j + 1)
    return len(inside), peak


def run_trioflow(rate: float, window: float, workers: int = N_WORKERS) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        limiter = tf.RateLimiter(rate, burst=1)
        stamps: list[float] = []

        async def worker() -> None:
            while True:
                await limiter.acquire()
                stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        with trio.move_on_after(window + 0.05):
            async with trio.open_nursery() as nursery:
                for _ in range(workers):
                    nursery.start_soon(worker)
        return summarize(stamps, t0, window)

    return trio.run(main)


def run_trioflow_200(rate: float, window: float) -> tuple[int, int]:
    return run_trioflow(rate, window, 200)


def run_aiometer(rate: float, window: float) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        stamps: list[float] = []

        async def call(_: int) -> None:
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        with trio.move_on_after(window + 0.05):
            await aiometer.run_on_each(call, range(10**9), max_per_second=rate)
        return summarize(stamps, t0, window)

    return trio.run(main)


def make_run_aiolimiter(burst_one: bool) -> Callable[[float, float], tuple[int, int]]:
    def run(rate: float, window: float) -> tuple[int, int]:
        async def main() -> tuple[int, int]:
            limiter = (
                aiolimiter.AsyncLimiter(1, 1 / rate)
                if burst_one
                else aiolimiter.AsyncLimiter(rate, 1)
            )
            stamps: list[float] = []

            async def worker() -> None:
                while True:
                    async with limiter:
                        stamps.append(time.perf_counter())

            t0 = time.perf_counter()
            tasks = [asyncio.create_task(worker()) for _ in range(N_WORKERS)]
            await asyncio.sleep(window + 0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return summarize(stamps, t0, window)

        return asyncio.run(main())

    return run


SIDES: dict[str, tuple[Callable[[float, float], tuple[int, int]], Callable[[float], float]]] = {
    # name: (runner, burst of that configuration as a function of the rate)
    "trioflow RateLimiter (burst 1)": (run_trioflow, lambda r: 1),
    "aiolimiter AsyncLimiter(r, 1)": (make_run_aiolimiter(False), lambda r: r),
    "aiolimiter AsyncLimiter(1, 1/r)": (make_run_aiolimiter(True), lambda r: 1),
    "aiometer max_per_second=r": (run_aiometer, lambda r: 1),
    # Diagnostic, not a competitor: the same limiter with 200 tasks in line.
    # When the OS deschedules the process for s seconds, rate * s grants fall
    # due; only waiters already in line can take them (an idle bucket holds
    # at most `burst`), so more queued tasks repay longer stalls in full.
    "(trioflow, 200 tasks instead of 50)": (run_trioflow_200, lambda r: 1),
}


def accuracy(rates: list[float], window: float, repeats: int) -> None:
    names = list(SIDES)
    for rate in rates:
        counts: dict[str, list[int]] = {k: [] for k in names}
        peaks: dict[str, list[int]] = {k: [] for k in names}
        for rep in range(repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                count, peak = SIDES[name][0](rate, window)
                counts[name].append(count)
                peaks[name].append(peak)
        ideal1 = rate * window + 1
        print(f"\n{rate:,.0f}/s for {window:g} s (ideal at burst 1: {ideal1:,.0f} calls)")
        print(
            f"  {'':34s} {'calls':>8s} {'(min-max)':>15s} {'vs own ideal':>13s}"
            f" {'vs burst-1':>11s} {'max in 10 ms':>13s}"
        )
        for name in names:
            own = rate * window + SIDES[name][1](rate)
            med = statistics.median(counts[name])
            peak = statistics.median(peaks[name])
            spread = f"({min(counts[name]):,}-{max(counts[name]):,})"
            print(
                f"  {name:34s} {med:8,.0f} {spread:>15s} {med / own:12.4f}x {med / ideal1:10.4f}x"
                f" {peak:8,.0f} (ideal {rate * 0.01 + SIDES[name][1](rate):,.0f})"
            )


# -- part 2: overhead ---------------------------------------------------------------


async def loop_checkpoint() -> float:
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await trio.lowlevel.checkpoint()
    return (time.perf_counter() - t0) / N_OVERHEAD


async def _wrapper() -> None:
    await trio.lowlevel.checkpoint()


async def loop_wrapper() -> float:
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await _wrapper()
    return (time.perf_counter() - t0) / N_OVERHEAD


async def _wrapper_clock() -> None:
    trio.current_time()
    await trio.lowlevel.checkpoint()


async def loop_wrapper_clock() -> float:
    """The floor for a rate acquire: an ``async def`` plus one clock read (issue 21)."""
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await _wrapper_clock()
    return (time.perf_counter() - t0) / N_OVERHEAD


async def loop_acquire() -> float:
    limiter = tf.RateLimiter(1e15, burst=1)
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await limiter.acquire()
    return (time.perf_counter() - t0) / N_OVERHEAD


async def loop_async_with() -> float:
    limiter = tf.RateLimiter(1e15, burst=1)
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        async with limiter:
            pass
    return (time.perf_counter() - t0) / N_OVERHEAD


async def loop_try_acquire() -> float:
    limiter = tf.RateLimiter(1e15, burst=1)
    t0 = time.perf_counter()
    for _ in range(N_OVERHEAD):
        limiter.try_acquire()
        await trio.lowlevel.checkpoint()
    return (time.perf_counter() - t0) / N_OVERHEAD


def overhead(repeats: int) -> None:
    cases = {
        "checkpoint()": loop_checkpoint,
        "async def f(): await checkpoint()": loop_wrapper,
        "async def + one clock read (floor)": loop_wrapper_clock,
        "await acquire()": loop_acquire,
        "async with limiter": loop_async_with,
        "try_acquire() + checkpoint()": loop_try_acquire,
    }
    names = list(cases)
    times: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            times[name].append(trio.run(cases[name]))
    base = statistics.median(times["checkpoint()"])
    print(f"\nnon-limiting acquire ({N_OVERHEAD:,} calls, median of {repeats})")
    for name in names:
        med = statistics.median(times[name])
        print(f"  {name:34s} {med * 1e6:7.3f} µs   {med / base:5.2f}x a checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="accuracy repeats (overhead: 3x)")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 0.5 s window")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.window = 1, 0.5
    accuracy([1000.0, 10_000.0], args.window, args.repeats)
    overhead(max(7, 3 * args.repeats))


if __name__ == "__main__":
    main()
