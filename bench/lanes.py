"""How much does a PriorityLimiter lane cost next to trio.CapacityLimiter, and does it share fairly?

Prints, in one process and one run:

* the time per ``async with`` of a lane handle vs. ``trio.CapacityLimiter``
  (and ``tf.CapacityLimiter`` for reference), uncontended (20,000
  acquisitions) and contended (1000 tasks spread over 3 lanes, 10 tokens,
  each task entering 10 times; also with one lane capped, see ``CAPPED``),
  as the median of N repeats run in rotating
  order, with the ratios. Times are process CPU time (``time.process_time``):
  other work on a shared machine steals wall time, much less CPU time;
* the share of grants each lane got under a 3x overload (10 looping workers
  per lane, 3 lanes, 10 tokens, every hold 10 ms, 60 s on a virtual clock),
  next to the reserve it asked for, and what the same workers get from one
  FIFO limiter.

    python bench/lanes.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import trio
import trio.testing

import trioflow as tf

N_UNCONTENDED = 20_000
N_TASKS = 1000
N_TOKENS = 10
ROUNDS = 10

# Reserves, priorities and a max_wait: every rule of the policy is in play.
LANES = [
    tf.Lane("interactive", priority=0, reserve=0.5),
    tf.Lane("batch", priority=1, reserve=0.3, max_wait=1.0),
    tf.Lane("bulk", priority=2, reserve=0.1),
]
# The same with bulk capped at half the tokens. Timed separately: bulk, last
# in priority, finishes its tasks last and then runs only 5 at a time, so
# trio's scheduler does more rounds per acquisition — a different workload,
# not a costlier acquisition.
CAPPED = [*LANES[:2], tf.Lane("bulk", priority=2, reserve=0.1, limit=0.5)]

# make(total) -> one limiter per task index (lanes spread tasks over 3 handles)
Factory = Callable[[int], Callable[[int], object]]


def trio_limiter(total: int) -> Callable[[int], object]:
    limiter = trio.CapacityLimiter(total)
    return lambda _: limiter


def tf_limiter(total: int) -> Callable[[int], object]:
    limiter = tf.CapacityLimiter(total)
    return lambda _: limiter


def tf_lanes(total: int, lanes: list[tf.Lane] = LANES) -> Callable[[int], object]:
    limiter = tf.PriorityLimiter(total, lanes)
    handles = [limiter[lane.name] for lane in lanes]
    return lambda i: handles[i % len(handles)]


def tf_lanes_capped(total: int) -> Callable[[int], object]:
    return tf_lanes(total, CAPPED)


async def uncontended(make: Factory) -> float:
    limiter = make(1)(0)
    t0 = time.process_time()
    for _ in range(N_UNCONTENDED):
        async with limiter:  # type: ignore[attr-defined]
            pass
    return (time.process_time() - t0) / N_UNCONTENDED


async def contended(make: Factory) -> float:
    pick = make(N_TOKENS)

    async def worker(limiter: object) -> None:
        for _ in range(ROUNDS):
            async with limiter:  # type: ignore[attr-defined]
                await trio.lowlevel.checkpoint()

    t0 = time.process_time()
    async with trio.open_nursery() as nursery:
        for i in range(N_TASKS):
            nursery.start_soon(worker, pick(i))
    return (time.process_time() - t0) / (N_TASKS * ROUNDS)


def measure(case: Callable[[Factory], Awaitable[float]], make: Factory) -> float:
    return trio.run(case, make)


async def overload_shares(make: Factory, seconds: float = 60.0) -> list[float]:
    """Shares of grants per lane, 10 workers per lane for 10 tokens (3x overload)."""
    pick = make(N_TOKENS)
    granted = [0] * len(LANES)

    async def worker(i: int) -> None:
        limiter = pick(i)
        while True:
            async with limiter:  # type: ignore[attr-defined]
                granted[i % len(LANES)] += 1
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for i in range(N_TOKENS * len(LANES)):
            nursery.start_soon(worker, i)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    total = sum(granted)
    return [g / total for g in granted]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sides: dict[str, Factory] = {
        "trio": trio_limiter,
        "tf.CapacityLimiter": tf_limiter,
        "lane": tf_lanes,
        "lane, bulk capped": tf_lanes_capped,
    }
    print("CPU time per acquisition, median of", args.repeats, "repeats; ratio to trio")
    for title, case, names in (
        ("uncontended async with", uncontended, ["trio", "tf.CapacityLimiter", "lane"]),
        ("1000 tasks / 3 lanes / 10 tokens", contended, list(sides)),
    ):
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(measure(case, sides[name]))
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = "   ".join(
            f"{k} {med[k] * 1e6:6.2f} µs ({med[k] / med['trio']:.2f}x)" for k in names
        )
        print(f"{title:34s} {cells}")
    print()
    print("share of grants under 3x overload (10 workers per lane, 10 tokens, 60 s virtual):")
    clock = trio.testing.MockClock(autojump_threshold=0)
    lanes = trio.run(overload_shares, tf_lanes_capped, clock=clock)
    fifo = trio.run(
        overload_shares, trio_limiter, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    print(
        f"  {'lane':12s} {'priority':>8s} {'reserve':>8s} {'limit':>6s} {'share':>7s} "
        f"{'one FIFO limiter':>17s}"
    )
    for lane, share, fifo_share in zip(CAPPED, lanes, fifo, strict=True):
        print(
            f"  {lane.name:12s} {lane.priority:8d} {lane.reserve:8.2f} {lane.limit:6.2f} "
            f"{share:7.3f} {fifo_share:17.3f}"
        )


if __name__ == "__main__":
    main()
