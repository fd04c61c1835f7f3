"""Fetch 200 URLs from a local HTTP server: at most 8 at once, at most 100 starts a second.

Starts a real HTTP server on 127.0.0.1 (``local_api.py``, an ephemeral port)
in this program's own nursery, then fetches from it with httpx two ways:

1. ``tf.amap`` — results as they finish, bounded (``max_at_once``) and paced
   (``max_per_second``); the server fails 2% of calls, and each failure is
   reported, not fatal (``outcomes=True``);
2. ``tf.open_task_group`` — errgroup style, with a limit shared with another
   group through one ``tf.CapacityLimiter``.

The server counts how many requests it works on at once, so the output shows
the concurrency limit held from the other side of the wire; the client
records when each call starts, to show the pacing.

    python examples/fetch_all.py
    python examples/fetch_all.py --pages 50   # quicker
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import trio
from local_api import LocalAPI  # examples/local_api.py, beside this file

import trioflow as tf

N_PAGES = 200  # --pages
AT_ONCE = 8
PER_SECOND = 100.0


async def fetch(client: httpx.AsyncClient, page: int) -> dict[str, Any]:
    response = await client.get("/enrich", params={"id": page})
    response.raise_for_status()
    return response.json()


async def with_amap(client: httpx.AsyncClient, api: LocalAPI) -> None:
    api.stats.peak_in_progress = 0
    score = 0.0
    failed = 0
    start = trio.current_time()

    starts: list[float] = []

    async def get(page: int) -> dict[str, Any]:
        starts.append(trio.current_time())
        return await fetch(client, page)

    async with tf.amap(
        get, range(N_PAGES), max_at_once=AT_ONCE, max_per_second=PER_SECOND, outcomes=True
    ) as results:
        async for page, result in results:
            try:
                score += float(result.unwrap()["score"])
            except httpx.HTTPStatusError as exc:
                failed += 1
                print(f"  page {page} failed: {exc.response.status_code}")
    elapsed = trio.current_time() - start
    pace = (len(starts) - 1) / (starts[-1] - starts[0])
    print(
        f"  {N_PAGES - failed} pages, {failed} failed, total score {score:.2f} in {elapsed:.2f} s"
        f" (at {PER_SECOND:.0f}/s the floor is {(N_PAGES - 1) / PER_SECOND:.2f} s)"
    )
    print(
        f"  server saw at most {api.stats.peak_in_progress} requests at once (limit {AT_ONCE}); "
        f"calls started at {pace:.1f} per second (max_per_second={PER_SECOND:.0f})"
    )


async def with_task_groups(client: httpx.AsyncClient, api: LocalAPI) -> None:
    api.stats.peak_in_progress = 0
    api.fail_rate = 0.0  # on_error="cancel": one failure would cancel the whole crawl
    shared = tf.CapacityLimiter(AT_ONCE, name="origin")

    async def crawl(section: str, pages: range) -> float:
        async with tf.open_task_group(limit=shared, name=section) as tg:
            handles = [await tg.spawn(fetch, client, p) for p in pages]
            print(f"  {section}: last spawn returned; {tg.statistics()}")
        return round(sum(float(h.result()["score"]) for h in handles), 2)

    half = N_PAGES // 2
    totals = await tf.run_all(
        [lambda: crawl("news", range(half)), lambda: crawl("blog", range(half, N_PAGES))]
    )
    print(
        f"  score per section {totals}; server saw at most {api.stats.peak_in_progress} at once "
        f"(both groups share one limit of {AT_ONCE})"
    )


async def main() -> None:
    # 20 ms a call (lognormal), room for 50 at once, 2% of calls fail with a 500.
    api = LocalAPI(capacity=50, latency=0.02, fail_rate=0.02, seed=13)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(api.serve)
        print(f"server on http://127.0.0.1:{port}")
        limits = httpx.Limits(max_connections=AT_ONCE * 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            print(f"amap: {N_PAGES} pages, max_at_once={AT_ONCE}, max_per_second={PER_SECOND:.0f}")
            await with_amap(client, api)
            print("task groups sharing one limiter:")
            await with_task_groups(client, api)
        nursery.cancel_scope.cancel()  # stop the server; nothing outlives this block


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=N_PAGES, help="pages to fetch (default 200)")
    N_PAGES = parser.parse_args().pages
    trio.run(main)
