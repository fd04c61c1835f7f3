"""The event service's second mode: events from a Redis stream, batches into PostgreSQL.

A module that ``event_service.py`` imports (it is not run on its own):

* :func:`open_stream_events` publishes the generated events to a Redis
  stream (when asked to) and reads them back through a consumer group with
  :func:`trioflow.redis.open_stream_source`, as dicts the pipeline's stages
  already know. Each event carries the id of its stream entry, so the entry
  is acknowledged once the event's fate is known.
* :class:`PostgresDatabase` writes each batch in one transaction with
  psycopg, in worker threads, at most ``pool_size`` at once: a
  :class:`trioflow.CapacityLimiter` is the pool's bound
  (``trio.to_thread.run_sync(..., limiter=...)``, trio's own pattern), and
  each thread borrows one of ``pool_size`` connections.

Delivery is at least once (an entry whose acknowledgement was lost comes
back), so writes are idempotent: ``ON CONFLICT (id) DO NOTHING``.

    python examples/event_service.py --broker redis://127.0.0.1:6379 \\
        --database postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

import trioflow as tf
from trioflow.redis import StreamEntry, StreamSource, open_stream_source


class StreamEvents:
    """The pipeline's source in broker mode: stream entries in, event dicts out.

    ``settle(event, fate, exception)`` — what the pipeline calls for each
    item it read from a source that has it — settles the event's stream
    entry, so the entry is acknowledged, dead-lettered or left pending.
    """

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self._entries: dict[str, StreamEntry] = {}

    def __aiter__(self) -> StreamEvents:
        return self

    async def __anext__(self) -> dict[str, Any]:
        entry = await anext(self.source)
        self._entries[entry.id] = entry
        event: dict[str, Any] = json.loads(entry.fields[b"event"])
        event["_entry"] = entry.id
        return event

    def settle(self, item: dict[str, Any], fate: Any, exception: BaseException | None) -> None:
        entry = self._entries.pop(item.get("_entry", ""), None)
        if entry is not None:
            self.source.settle(entry, fate, exception)

    def settle_all(self, events: Iterable[dict[str, Any]], fate: str) -> None:
        for event in events:
            self.settle(event, fate, None)

    def acknowledging(self, db: Any) -> Any:
        """``db`` whose ``write_batch`` settles each written event as delivered.

        Until the pipeline settles its source's items itself, this is what
        acknowledges the written events (a second settle of one entry does
        nothing, so it stays harmless once it does).
        """
        events = self

        class Acknowledging:
            def __getattr__(self, name: str) -> Any:
                return getattr(db, name)

            async def write_batch(self, batch: list[dict[str, Any]]) -> int:
                n = await db.write_batch(batch)
                events.settle_all(batch, "delivered")
                return n

        return Acknowledging()


async def publish(client: Any, stream: str, events: Iterable[dict[str, Any]]) -> int:
    """Append every event to ``stream`` (pipelined, 500 per round trip)."""
    n = 0
    chunk: list[dict[str, Any]] = []

    async def flush() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for event in chunk:
                pipe.xadd(stream, {"event": json.dumps(event)})
        chunk.clear()

    for event in events:
        chunk.append(event)
        n += 1
        if len(chunk) == 500:
            await flush()
    if chunk:
        await flush()
    return n


@asynccontextmanager
async def open_stream_events(
    url: str,
    events: Iterable[dict[str, Any]] | None,
    *,
    stream: str = "events",
    group: str = "event-service",
    consumer: str | None = None,
) -> AsyncGenerator[StreamEvents]:
    """Connect to ``url``, publish ``events`` (if given), and read ``stream`` as ``group``."""
    import coredis

    async with coredis.Redis.from_url(url) as client:
        if events is not None:
            await publish(client, stream, events)
        async with open_stream_source(
            client, stream, group, consumer=consumer, count=64, block=0.2
        ) as source:
            yield StreamEvents(source)


class PostgresDatabase:
    """PostgreSQL through psycopg, one transaction per batch, in worker threads.

    ``pool_size`` connections; a :class:`trioflow.CapacityLimiter` of the
    same size bounds the threads that use them, so a thread always finds a
    free connection.
    """

    def __init__(self, url: str, pool_size: int = 4) -> None:
        self.url = url
        self.limiter = tf.CapacityLimiter(pool_size, name="postgres-pool")
        self._free: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " id BIGINT PRIMARY KEY, usr TEXT, kind TEXT, region TEXT, score DOUBLE PRECISION)"
            )
            conn.execute("TRUNCATE events")

    def _connection(self) -> Any:
        with self._lock:
            if self._free:
                return self._free.pop()
        import psycopg

        conn = psycopg.connect(self.url)
        with self._lock:
            self._all.append(conn)
        return conn

    def _write(self, batch: list[dict[str, Any]]) -> int:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (id, usr, kind, region, score) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO NOTHING",
                    [(e["id"], e["user"], e["kind"], e["region"], e["score"]) for e in batch],
                )
        finally:
            with self._lock:
                self._free.append(conn)
        return len(batch)

    async def write_batch(self, batch: list[dict[str, Any]]) -> int:
        return await trio.to_thread.run_sync(self._write, batch, limiter=self.limiter)

    def count(self) -> int:
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            conns, self._all, self._free = self._all, [], []
        for conn in conns:
            conn.close()
