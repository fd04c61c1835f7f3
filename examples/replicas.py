"""Several replicas of one service sharing one rate limit, one concurrency limit and one stream.

This starts a throwaway ``redis-server`` (or uses ``--redis URL``), starts
``--replicas`` copies of a small service as separate processes, and once
all of them are reading puts ``--events`` events in a Redis stream. Each replica runs a pipeline that
reads the stream through one consumer group (``trioflow.redis.open_stream_source``),
calls an "API" under a **global** rate limit (``RedisRateLimiter``: all
replicas together stay at ``--rate`` calls/s), and writes batches to one
SQLite database under a **global** concurrency limit
(``open_capacity_limiter``: at most ``--limit`` writers at once, across
every replica), acknowledging each entry once its batch is written.

A few seconds in, it SIGKILLs replica 0 in the middle of its work, and
shows what that replica left behind — leases on the global limit and
pending stream entries — coming back: the leases expire within their TTL,
and the other replicas claim the pending entries once they have been idle
for ``--claim-idle`` seconds. At the end it prints each replica's share,
the global rate achieved, and a conservation check against the database:
every event written exactly once, whichever replica took it.

    python examples/replicas.py
    python examples/replicas.py --replicas 4 --events 3000 --rate 400 --limit 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import trioflow as tf

STREAM = "replicas:events"
GROUP = "replicas"
RATE_NAME = "replicas-api"
LIMIT_NAME = "replicas-db"


# -- one replica ---------------------------------------------------------------


async def replica(args: argparse.Namespace) -> None:
    import coredis

    from trioflow.redis import RedisRateLimiter, open_capacity_limiter, open_stream_source

    index: int = args.index
    conn = sqlite3.connect(args.db, timeout=60, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    written = 0
    duplicates = 0

    def write(rows: list[tuple[int, int]]) -> int:
        nonlocal written, duplicates
        with conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO events (id, replica) VALUES (?, ?)", rows)
            new = conn.total_changes - before
        time.sleep(args.write_time)  # the database takes its time: the slot is held meanwhile
        written += new
        duplicates += len(rows) - new
        return new

    async with (
        coredis.Redis.from_url(args.redis) as client,
        open_capacity_limiter(client, args.limit, name=LIMIT_NAME, ttl=args.ttl) as db_limit,
        open_stream_source(
            client,
            STREAM,
            GROUP,
            consumer=f"replica-{index}",
            count=8,
            block=0.2,
            claim_idle=args.claim_idle,
        ) as source,
    ):
        api = RedisRateLimiter(client, args.rate, name=RATE_NAME, burst=max(1, int(args.rate / 50)))
        print(json.dumps({"replica": index, "lease_prefix": db_limit.replica_id}), flush=True)

        async def call_api(entry: Any) -> Any:
            await trio.sleep(0.002)  # the call itself
            return entry

        async def store(batch: list[Any]) -> int:
            rows = [(int(e.fields[b"id"]), index) for e in batch]
            return await trio.to_thread.run_sync(write, rows)

        pipe = (
            tf.Pipeline(f"replica-{index}")
            .map(call_api, workers=16, rate=api, name="api")  # the global rate: all replicas
            .batch(size=10, max_wait=0.1, name="batch")
            .map(store, workers=4, limiter=db_limit, name="write")  # a global tf.Limiter
        )

        async def report() -> None:
            while True:
                await trio.sleep(0.25)
                st = db_limit.statistics()
                print(
                    json.dumps(
                        {"replica": index, "written": written, "holding": st.borrowed_tokens}
                    ),
                    flush=True,
                )

        async with pipe.open(source) as run, trio.open_nursery() as nursery:
            nursery.start_soon(report)

            async def stop_on_sigterm() -> None:
                with trio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        await run.stop(grace=5)
                        return

            nursery.start_soon(stop_on_sigterm)
            async for _ in run.outputs:
                pass
            nursery.cancel_scope.cancel()
    print(
        json.dumps(
            {
                "replica": index,
                "final": True,
                "written": written,
                "duplicates": duplicates,
                "read": source.statistics().read,
                "claimed": source.statistics().claimed,
                "rate_granted": api.statistics().granted,
            }
        ),
        flush=True,
    )


# -- the coordinator -----------------------------------------------------------


class Replica:
    def __init__(self, index: int, command: list[str]) -> None:
        self.index = index
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.lease_prefix: str | None = None
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("{"):
                continue
            data = json.loads(line)
            self.lines.append(data)
            if "lease_prefix" in data:
                self.lease_prefix = data["lease_prefix"]
                self.ready.set()

    @property
    def final(self) -> dict[str, Any] | None:
        return next((d for d in self.lines if d.get("final")), None)

    @property
    def holding(self) -> int:
        last = [d for d in self.lines if "holding" in d]
        return last[-1]["holding"] if last else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit(
            "redis-server is not installed (apt-get install redis-server), or pass --redis URL"
        )
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.02)


async def coordinate(args: argparse.Namespace) -> dict[str, Any]:
    import coredis

    from trioflow.redis import open_capacity_limiter

    workdir = tempfile.mkdtemp(prefix="trioflow-replicas-")
    server = None
    url = args.redis
    if url is None:
        server, url = start_redis(workdir)
    db = args.database or str(Path(workdir) / "replicas.sqlite3")
    conn = sqlite3.connect(db, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("DROP TABLE IF EXISTS events")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, replica INTEGER)")
    conn.commit()
    replicas: list[Replica] = []
    try:
        async with coredis.Redis.from_url(url) as client:
            await client.delete([STREAM, f"trioflow:rate:{RATE_NAME}"])
            base = [sys.executable, __file__, "--redis", url, "--db", db]
            base += ["--rate", str(args.rate), "--limit", str(args.limit), "--ttl", str(args.ttl)]
            base += ["--claim-idle", str(args.claim_idle), "--write-time", str(args.write_time)]
            for i in range(args.replicas):
                replicas.append(Replica(i, [*base, "--index", str(i)]))
            for r in replicas:
                await trio.to_thread.run_sync(r.ready.wait, 60)
            # The events go in only once every replica is reading, so no grant of
            # the global rate comes before ``start`` and the rate achieved is
            # measured over the whole run, not the part after the slowest start.
            start = trio.current_time()
            async with client.pipeline(transaction=False) as pipe:
                for i in range(args.events):
                    pipe.xadd(STREAM, {"id": str(i)})
            print(f"{args.events} events in stream {STREAM!r} at {url}")
            print(
                f"{args.replicas} replicas started; global rate {args.rate:g}/s, global limit {args.limit}"
            )

            async with open_capacity_limiter(client, args.limit, name=LIMIT_NAME) as view:
                # Kill replica 0 while it holds a slot of the global limit.
                victim = replicas[0]
                with trio.move_on_after(args.kill_after + 10):
                    await trio.sleep(args.kill_after)
                    # Another process's state, seen through its output: polled.
                    while victim.holding == 0:  # noqa: ASYNC110
                        await trio.sleep(0.005)
                victim.proc.send_signal(signal.SIGKILL)
                killed_at = trio.current_time()
                prefix = f"{victim.lease_prefix}:"

                async def left_behind() -> tuple[int, int]:
                    members = await client.zrange(view.leases_key, 0, -1)
                    leases = sum(1 for m in members if m.decode().startswith(prefix))
                    pending = await client.xpending(STREAM, GROUP, start="-", end="+", count=10_000)
                    entries = sum(1 for p in pending if p.consumer.decode() == "replica-0")
                    return leases, entries

                leases, entries = await left_behind()
                print(
                    f"SIGKILLed replica 0 at {killed_at - start:.1f}s: it left {leases} lease(s) "
                    f"on the global limit and {entries} pending stream entries"
                )
                leases_back = entries_back = None
                with trio.move_on_after(10 * max(args.ttl, args.claim_idle)):
                    while leases_back is None or entries_back is None:
                        now_leases, now_entries = await left_behind()
                        t = trio.current_time() - killed_at
                        if leases_back is None and now_leases == 0:
                            leases_back = t
                        if entries_back is None and now_entries == 0:
                            entries_back = t
                        await trio.sleep(0.01)
                print(
                    f"recovered: leases back after {_s(leases_back)} (ttl {args.ttl:g}s), "
                    f"pending entries claimed by the others after {_s(entries_back)} "
                    f"(claim_idle {args.claim_idle:g}s)"
                )

            # Wait until every event is in the database, then stop the survivors.
            with trio.move_on_after(args.timeout):
                # Rows other processes write: polled.
                while conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] < args.events:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            done_at = trio.current_time()
            for r in replicas[1:]:
                r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                await trio.to_thread.run_sync(r.proc.wait, 60)
                await trio.to_thread.run_sync(r.reader.join, 60)
            pending_left = int((await client.xpending(STREAM, GROUP)).pending)
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        if server is not None:
            server.terminate()
            server.wait()

    rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events").fetchone()
    shares = dict(conn.execute("SELECT replica, COUNT(*) FROM events GROUP BY replica").fetchall())
    conn.close()
    elapsed = done_at - start
    finals = {r.index: r.final for r in replicas}
    granted = sum(f["rate_granted"] for f in finals.values() if f)
    summary = {
        "events": args.events,
        "rows": rows[0],
        "distinct": rows[1],
        "shares": {str(i): shares.get(i, 0) for i in range(args.replicas)},
        "elapsed": elapsed,
        "rate_limit": args.rate,
        "rate_achieved": args.events / elapsed if elapsed > 0 else 0.0,
        "leases_back_after": leases_back,
        "entries_back_after": entries_back,
        "pending_left": pending_left,
        "survivor_duplicates": sum(f["duplicates"] for f in finals.values() if f),
        "rate_tokens_granted_survivors": granted,
        "conserved": rows[0] == rows[1] == args.events and pending_left == 0,
    }
    print()
    print(f"== {args.replicas} replicas, {args.events} events, {elapsed:.1f} s ==")
    for i in range(args.replicas):
        n = shares.get(i, 0)
        note = "  (SIGKILLed)" if i == 0 else ""
        print(f"replica {i}   wrote {n:6d}  ({100 * n / max(1, rows[0]):5.1f}%){note}")
    print(
        f"global rate  {summary['rate_achieved']:.1f} events/s achieved "
        f"with a global limit of {args.rate:g}/s"
    )
    print(f"redelivered  {summary['survivor_duplicates']} (already written: not written twice)")
    verdict = "OK: every event written exactly once" if summary["conserved"] else "MISMATCH"
    print(
        f"conservation {rows[1]} distinct rows = {args.events} events, "
        f"{rows[0]} rows in all, {pending_left} pending   {verdict}"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return summary


def _s(value: float | None) -> str:
    return "NOT within the wait" if value is None else f"{value:.2f}s"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--events", type=int, default=1500)
    p.add_argument("--rate", type=float, default=300.0, help="global API rate, calls/s")
    p.add_argument("--limit", type=int, default=3, help="global concurrent database writers")
    p.add_argument("--ttl", type=float, default=2.0, help="lease TTL of the global limit, s")
    p.add_argument("--claim-idle", type=float, default=2.0, help="claim entries idle this long, s")
    p.add_argument("--write-time", type=float, default=0.02, help="seconds a batch write takes")
    p.add_argument("--kill-after", type=float, default=2.0, help="SIGKILL replica 0 after this, s")
    p.add_argument("--timeout", type=float, default=120.0, help="give up waiting after this, s")
    p.add_argument("--redis", help="use this Redis (default: start a throwaway redis-server)")
    p.add_argument("--database", help="SQLite file (default: in a temporary directory)")
    p.add_argument("--summary-json", help="also write the summary here (for tests)")
    # what the coordinator passes to each replica process
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse_args()
    if ns.index is not None:
        trio.run(replica, ns)
    else:
        result = trio.run(coordinate, ns)
        if ns.summary_json:
            Path(ns.summary_json).write_text(json.dumps(result, indent=2))
        sys.exit(0 if result["conserved"] else 1)
