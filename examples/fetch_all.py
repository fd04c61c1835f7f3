"""Fetch 200 URLs from a local HTTP server: at most 8 at once, at most 100 starts a second.

Starts a real HTTP server on 127.0.0.1 (an ephemeral port) in this program's
own nursery, then fetches from it with httpx two ways:

1. ``tf.amap`` — results as they finish, bounded (``max_at_once``) and paced
   (``max_per_second``); one page fails and is reported, not fatal
   (``outcomes=True``);
2. ``tf.open_task_group`` — errgroup style, with a limit shared with another
   group through one ``tf.CapacityLimiter``.

The server counts how many requests it serves at once, so the output shows
the concurrency limit held from the other side of the wire; the client
records when each call starts, to show the pacing.

    python examples/fetch_all.py
"""

from __future__ import annotations

import json
import random
from functools import partial

import httpx
import trio

import trioflow as tf

N_PAGES = 200
AT_ONCE = 8
PER_SECOND = 100.0


class Server:
    """A tiny HTTP/1.1 server (GET only, keep-alive) that records its load."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                status, body = await self.respond(path)
                payload = json.dumps(body).encode()
                await stream.send_all(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )

    async def respond(self, path: str) -> tuple[str, object]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(random.uniform(0.005, 0.03))  # "work"
            page = int(path.rsplit("/", 1)[1])
            if page == 13:
                return "503 Service Unavailable", {"error": "try later"}
            return "200 OK", {"page": page, "words": page * 7 % 101}
        finally:
            self.in_flight -= 1


async def fetch(client: httpx.AsyncClient, page: int) -> dict[str, int]:
    response = await client.get(f"/pages/{page}")
    response.raise_for_status()
    return response.json()


async def with_amap(client: httpx.AsyncClient, server: Server) -> None:
    server.peak = 0
    words = failed = 0
    start = trio.current_time()

    starts: list[float] = []

    async def get(page: int) -> dict[str, int]:
        starts.append(trio.current_time())
        return await fetch(client, page)

    async with tf.amap(
        get, range(N_PAGES), max_at_once=AT_ONCE, max_per_second=PER_SECOND, outcomes=True
    ) as results:
        async for page, result in results:
            try:
                words += result.unwrap()["words"]
            except httpx.HTTPStatusError as exc:
                failed += 1
                print(f"  page {page} failed: {exc.response.status_code}")
    elapsed = trio.current_time() - start
    pace = (len(starts) - 1) / (starts[-1] - starts[0])
    print(
        f"  {N_PAGES - failed} pages, {failed} failed, {words} words in {elapsed:.2f} s"
        f" (at {PER_SECOND:.0f}/s the floor is {(N_PAGES - 1) / PER_SECOND:.2f} s)"
    )
    print(
        f"  server saw at most {server.peak} requests at once (limit {AT_ONCE}); "
        f"calls started at {pace:.1f} per second (max_per_second={PER_SECOND:.0f})"
    )


async def with_task_groups(client: httpx.AsyncClient, server: Server) -> None:
    server.peak = 0
    shared = tf.CapacityLimiter(AT_ONCE, name="origin")

    async def crawl(section: str, pages: range) -> int:
        async with tf.open_task_group(limit=shared, name=section) as tg:
            handles = [await tg.spawn(fetch, client, p) for p in pages]
            print(f"  {section}: last spawn returned; {tg.statistics()}")
        return sum(h.result()["words"] for h in handles)

    totals = await tf.run_all(
        [lambda: crawl("news", range(14, 80)), lambda: crawl("blog", range(80, 160))]
    )
    print(
        f"  words per section {totals}; server saw at most {server.peak} at once "
        f"(both groups share one limit of {AT_ONCE})"
    )


async def main() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        print(f"server on http://127.0.0.1:{port}")
        limits = httpx.Limits(max_connections=AT_ONCE * 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            print(f"amap: {N_PAGES} pages, max_at_once={AT_ONCE}, max_per_second={PER_SECOND:.0f}")
            await with_amap(client, server)
            print("task groups sharing one limiter:")
            await with_task_groups(client, server)
        nursery.cancel_scope.cancel()  # stop the server; nothing outlives this block


if __name__ == "__main__":
    trio.run(main)
