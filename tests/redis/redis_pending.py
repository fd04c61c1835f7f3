"""Read a stream's pending entries (a small synchronous helper for the example tests)."""

from __future__ import annotations

import json

import coredis
import trio


def pending_event_ids(port: int, stream: str, group: str) -> set[int]:
    async def read() -> set[int]:
        async with coredis.Redis(host="127.0.0.1", port=port) as client:
            pending = await client.xpending(stream, group, start="-", end="+", count=100_000)
            ids: set[int] = set()
            for p in pending:
                (entry,) = await client.xrange(stream, p.identifier, p.identifier)
                ids.add(int(json.loads(entry.field_values[b"event"])["id"]))
            return ids

    return trio.run(read)
