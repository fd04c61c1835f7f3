"""Interactive requests and batch jobs sharing one API quota, under overload.

A real HTTP API runs on 127.0.0.1 (``local_api.py``) and can work on 10
requests at once. One ``tf.PriorityLimiter`` of 10 tokens guards it, with two
lanes:

* ``interactive``: priority 0, reserve 60% of the quota;
* ``batch``: priority 1, reserve 30%, may hold at most 80%;
* ``reports``: priority 2, no reserve, at most 20%, and a call that has
  waited 0.25 s is served as if it were interactive (``max_wait``).

Three phases, two seconds each (``--phase``), with far more callers than tokens:

1. batch alone (30 workers): it borrows the idle interactive share, up to its
   80% cap — the quota is not wasted, and interactive still finds room;
2. everyone flooding (20 + 20 + 4 workers): interactive and batch each get
   at least their reserve, the rest goes by priority, and reports — no
   reserve, lowest priority — still get through, each after about
   ``max_wait``;
3. an interactive flood (40 workers) and a trickle of batch calls: the
   trickle is served at the next free token, because batch is below its
   reserve.

"peak held" counts from the first moment of a phase, when whichever callers
start first take the idle tokens (nothing is ever taken back); the shares
settle within one call's latency.

    python examples/priority_lanes.py
    python examples/priority_lanes.py --phase 0.5   # quicker, noisier shares
"""

from __future__ import annotations

import argparse
import statistics

import httpx
import trio
from local_api import LocalAPI

import trioflow as tf

PHASE = 2.0  # seconds per phase (--phase)


class Phase:
    """Grants and waits per lane during one phase."""

    def __init__(self, title: str, limiter: tf.PriorityLimiter) -> None:
        self.title = title
        self.limiter = limiter
        self.grants = {lane.name: 0 for lane in limiter.lanes}
        self.waits: dict[str, list[float]] = {lane.name: [] for lane in limiter.lanes}
        self.peak = {lane.name: 0 for lane in limiter.lanes}

    def report(self) -> None:
        total = sum(self.grants.values())
        print(f"\n{self.title}")
        print(
            f"  {'lane':12s} {'reserve':>7s} {'calls':>6s} {'share':>6s} {'peak held':>9s} {'p50 wait':>9s} {'max wait':>9s}"
        )
        for lane in self.limiter.lanes:
            name = lane.name
            waits = self.waits[name] or [0.0]
            share = self.grants[name] / total if total else 0.0
            print(
                f"  {name:12s} {lane.reserve:7.0%} {self.grants[name]:6d} {share:6.0%} "
                f"{self.peak[name]:9d} {statistics.median(waits) * 1e3:7.0f}ms "
                f"{max(waits) * 1e3:7.0f}ms"
            )


async def caller(
    lane: tf.LaneLimiter, client: httpx.AsyncClient, url: str, phase: Phase, pause: float
) -> None:
    name = lane.lane.name
    i = 0
    while True:
        asked = trio.current_time()
        async with lane:
            phase.waits[name].append(trio.current_time() - asked)
            phase.grants[name] += 1
            phase.peak[name] = max(phase.peak[name], lane.borrowed_tokens)
            response = await client.get(url, params={"id": i})
            response.raise_for_status()
        i += 1
        if pause:
            await trio.sleep(pause)


async def run_phase(
    title: str,
    limiter: tf.PriorityLimiter,
    client: httpx.AsyncClient,
    url: str,
    callers: dict[str, tuple[int, float]],
) -> None:
    """Run ``callers[lane] = (workers, pause between calls)`` for PHASE seconds."""
    phase = Phase(title, limiter)
    async with trio.open_nursery() as nursery:
        for name, (workers, pause) in callers.items():
            for _ in range(workers):
                nursery.start_soon(caller, limiter[name], client, url, phase, pause)
        await trio.sleep(PHASE)
        nursery.cancel_scope.cancel()
    phase.report()


async def main() -> None:
    limiter = tf.PriorityLimiter(
        10,
        [
            tf.Lane("interactive", priority=0, reserve=0.6),
            tf.Lane("batch", priority=1, reserve=0.3, limit=0.8),
            tf.Lane("reports", priority=2, limit=0.2, max_wait=0.25),
        ],
        name="api-quota",
    )
    api = LocalAPI(capacity=10, latency=0.02, sigma=0.3, seed=1)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(api.serve)
        url = f"http://127.0.0.1:{port}/enrich"
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            await run_phase("1. batch alone (30 workers)", limiter, client, url, {"batch": (30, 0)})
            await run_phase(
                "2. everyone flooding (20 + 20 + 4 workers for 10 tokens)",
                limiter,
                client,
                url,
                {"interactive": (20, 0), "batch": (20, 0), "reports": (4, 0)},
            )
            await run_phase(
                "3. interactive flood (40 workers) + a trickle of batch (2 workers)",
                limiter,
                client,
                url,
                {"interactive": (40, 0), "batch": (2, 0.05)},
            )
        nursery.cancel_scope.cancel()
    stats = limiter.statistics()
    print(f"\nat the end: {limiter}")
    print(
        f"the API saw {api.stats.served} calls, at most {api.stats.peak_in_progress} at once, "
        f"{api.stats.overloaded} refused"
    )
    for name, lane in stats.lanes.items():
        print(f"  {name}: {lane.granted} grants, {lane.promoted} of them promoted by max_wait")
    assert stats.borrowed_tokens == 0
    assert stats.tasks_waiting == 0
    assert api.stats.peak_in_progress <= 10


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", type=float, default=PHASE, help="seconds per phase (default 2)")
    PHASE = parser.parse_args().phase
    trio.run(main)
