"""The event service: trioflow's building blocks working together in one real program.

An event source feeds a pipeline that

1. enriches each event by calling an HTTP API (a real server on
   127.0.0.1, started in this program's own nursery) under a rate limit (the
   API's quota) and an adaptive concurrency limit (which shrinks when the API
   slows down or answers 503, and grows back when it recovers), with a
   per-attempt timeout, retries with backoff, and a dead-letter list for
   events that still fail;
2. validates them (some are filtered out);
3. batches them (200 at a time, or whatever arrived within 0.5 s);
4. writes each batch to SQLite in one transaction (off the event loop,
   in a thread).

While it runs it shows progress: on a terminal one line redrawn in place
(events done of the total, rows written, events/s, ETA, the adaptive limit,
calls in flight, p99 latency), otherwise one plain line a second. The API
degrades a fifth of the way in and recovers later, so you can watch the
limit move. At the end it prints a summary: counts per outcome, a
conservation check (every event read is written, filtered, dead-lettered or
unfinished — and the database agrees), latency percentiles and how the limit
moved.

Shutdown: SIGTERM or Ctrl-C stops reading events and lets what was admitted
finish (up to --grace seconds) before anything is cancelled; nothing in
flight is lost. kill -USR1 <pid> prints a task dump. Traces go to a
Jaeger JSON file (open it in the Jaeger UI's "Upload" tab) and, with
--otlp, to a running Jaeger.

    python examples/event_service.py                 # defaults: done in well under a minute
    python examples/event_service.py --events 20000 --rate 800 --duration 120
    python examples/event_service.py --otlp http://localhost:4318
    python examples/event_service.py --debug-port 6060   # then: python -m trioflow top :6060
    python examples/event_service.py --timeline trace.json   # open it in ui.perfetto.dev

A second mode (the blueprint of a service that runs as several replicas;
see event_backends.py): --broker redis://... reads the events from a
Redis stream through a consumer group (publishing the generated ones there
first), and --database postgresql://... writes the batches to
PostgreSQL with psycopg in worker threads:

    python examples/event_service.py --broker redis://127.0.0.1:6379 \\
        --database postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import signal
import sqlite3
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from local_api import LocalAPI  # examples/local_api.py, beside this file

import trioflow as tf


class Overloaded(Exception):
    """The API answered 503: it is overloaded (an adaptive limit should shrink)."""


class UpstreamError(Exception):
    """The API failed this call (5xx other than 503): worth a retry."""


# -- the source ---------------------------------------------------------------


def generated_events(n: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    kinds = ["click", "view", "purchase", "signup"]
    for i in range(n):
        event: dict[str, Any] = {"id": i, "kind": rng.choice(kinds)}
        if rng.random() > 0.003:  # a few events arrive broken, with no user
            event["user"] = f"u{rng.randrange(1000)}"
        yield event


async def jsonl_events(path: Path) -> AsyncIterator[dict[str, Any]]:
    async with await trio.open_file(path) as f:
        async for line in f:
            if line.strip():
                yield json.loads(line)


# -- the stages ---------------------------------------------------------------


@attrs.define
class Latencies:
    """Enrichment call latencies, kept for the progress line and the summary."""

    recent: deque[float] = attrs.field(factory=lambda: deque(maxlen=2000))
    all: list[float] = attrs.field(factory=list)

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)
        self.all.append(seconds)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@attrs.define
class Enricher:
    client: httpx.AsyncClient
    latencies: Latencies

    async def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if "user" not in event:
            # Not worth a retry: this one goes to the dead letters at once.
            raise ValueError(f"event {event['id']} has no user")
        start = trio.current_time()
        response = await self.client.get("/enrich", params={"id": str(event["id"])})
        self.latencies.add(trio.current_time() - start)
        if response.status_code == 503:
            raise Overloaded(f"503 for event {event['id']}")
        if response.status_code >= 500:
            raise UpstreamError(f"{response.status_code} for event {event['id']}")
        response.raise_for_status()
        return {**event, **response.json()}


def is_valid(event: dict[str, Any]) -> bool:
    # Bots score very low; the business does not want them.
    return event["score"] >= 0.05


class Database:
    """SQLite, written one transaction per batch from a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        # One writer at a time, off the event loop.
        self._thread_limiter = trio.CapacityLimiter(1)

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, check_same_thread=False)
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " id INTEGER PRIMARY KEY, user TEXT, kind TEXT, region TEXT, score REAL)"
            )
        return self._conn

    def _write(self, batch: list[dict[str, Any]]) -> int:
        conn = self._open()
        with conn:  # one transaction: the whole batch or nothing
            conn.executemany(
                "INSERT INTO events (id, user, kind, region, score) VALUES (?, ?, ?, ?, ?)",
                [(e["id"], e["user"], e["kind"], e["region"], e["score"]) for e in batch],
            )
        return len(batch)

    async def write_batch(self, batch: list[dict[str, Any]]) -> int:
        return await trio.to_thread.run_sync(self._write, batch, limiter=self._thread_limiter)

    def count(self) -> int:
        conn = self._open()
        (n,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(n)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- running it ---------------------------------------------------------------


@attrs.define
class LimitHistory:
    points: list[tuple[float, int]] = attrs.field(factory=list)


def _eta(seconds: float) -> str:
    if seconds < 0.5:
        return "<1 s"
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def progress_line(
    elapsed: float,
    done: int,
    total: int | None,
    written: int,
    per_second: float,
    limit: int,
    in_flight: int,
    p99_ms: float,
) -> str:
    """One progress report: events that reached their end (of the total, when known)."""
    parts = [f"done {done:,}"]
    if total:
        parts[0] += f"/{total:,} ({100 * done // total}%)"
    parts += [f"written {written:,}", f"{per_second:,.0f}/s"]
    if total and per_second > 0 and done < total and elapsed >= 2.0:  # a rate worth projecting
        parts.append(f"ETA {_eta((total - done) / per_second)}")
    parts += [f"limit {limit}", f"in flight {in_flight}", f"p99 {p99_ms:.0f} ms"]
    return f"[{elapsed:5.1f}s] " + " · ".join(parts)


async def progress(
    run: Any,
    total: int | None,
    limiter: tf.CapacityLimiter,
    latencies: Latencies,
    written: list[int],
    history: LimitHistory,
    quiet: bool,
) -> None:
    """Progress until cancelled: on a terminal one line redrawn in place, else a line a second."""
    live = sys.stdout.isatty()
    start = trio.current_time()
    recent: deque[tuple[float, int]] = deque([(0.0, 0)], maxlen=10)  # (time, done): rate over ~5 s
    history.points.append((0.0, int(limiter.total_tokens)))

    def report_line() -> str:
        now = trio.current_time() - start
        report = run.report  # a snapshot while the run goes on
        done = report.source_items - report.unfinished
        recent.append((now, done))
        first_time, first_done = recent[0]
        per_second = (done - first_done) / (now - first_time) if now > first_time else 0.0
        limit = int(limiter.total_tokens)
        history.points.append((now, limit))
        p99_ms = percentile(list(latencies.recent), 0.99) * 1000
        in_flight = limiter.borrowed_tokens
        return progress_line(now, done, total, sum(written), per_second, limit, in_flight, p99_ms)

    def redraw(line: str) -> None:
        # Cut to the terminal's width: a wrapped line cannot be redrawn.
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write("\r" + line[:width] + "\x1b[K")
        sys.stdout.flush()

    drawn = False
    try:
        while True:
            await trio.sleep(0.5 if live else 1.0)
            line = report_line()
            if quiet:
                continue
            if live:
                redraw(line)
                drawn = True
            else:
                print(line, flush=True)
    finally:
        if drawn:
            redraw(report_line())  # the final figures, then what follows goes below
            sys.stdout.write("\n")
            sys.stdout.flush()


async def stop_on_signals(run: Any, grace: float, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            print(
                f"\n{signal.Signals(signum).name}: stopping the source, draining "
                f"(up to {grace:.0f} s)...",
                flush=True,
            )
            await run.stop(grace=grace)
            return


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every option's default after its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, argparse.SUPPRESS) and action.nargs != 0  # not flags
        if shown and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormatter, allow_abbrev=False
    )
    p.add_argument("--events", type=int, metavar="N", default=6000, help="events to generate")
    p.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help="read events from this JSON-lines file instead of generating them (default: generate)",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="PER_SECOND",
        default=400.0,
        help="the API's quota, calls per second",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        default=50.0,
        help="stop gracefully after this many seconds",
    )
    p.add_argument(
        "--grace", type=float, metavar="SECONDS", default=10.0, help="seconds to drain on shutdown"
    )
    p.add_argument(
        "--database",
        metavar="FILE_OR_URL",
        default="events.sqlite3",
        help="the SQLite file to write, or a postgresql:// URL (PostgreSQL through psycopg)",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="read the events from a Redis stream at this redis:// URL, publishing the "
        "generated ones to it first (default: off)",
    )
    p.add_argument(
        "--jaeger-file",
        type=Path,
        metavar="FILE",
        default=Path("event_service.jaeger.json"),
        help="the Jaeger JSON trace file to write",
    )
    p.add_argument(
        "--otlp",
        metavar="URL",
        help="also send traces to this OTLP/HTTP endpoint, e.g. http://localhost:4318 "
        "(default: off)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=7,
        help="seed of the events and of the API's faults",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (default: a live line on a terminal, a line a second otherwise)",
    )
    p.add_argument(
        "--summary-json",
        type=Path,
        metavar="FILE",
        help="also write the summary here, for tests (default: off)",
    )
    p.add_argument(
        "--debug-port",
        type=int,
        metavar="PORT",
        help="serve /debug/... on this port, for python -m trioflow top (default: off)",
    )
    p.add_argument(
        "--timeline",
        type=Path,
        metavar="FILE",
        help="record an execution timeline to this file (default: off)",
    )
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    telemetry = tf.telemetry.configure(
        "event-service",
        jaeger_file=str(args.jaeger_file),
        otlp_endpoint=args.otlp,
        tracing="item",
    )
    tf.debug.install(signal=signal.SIGUSR1, timeline=args.timeline)

    # The downstream: 60 requests at once, ~20 ms each; a third of the way in
    # it loses capacity and slows down, and later it recovers.
    api = LocalAPI(capacity=60, latency=0.02, max_queue=60, fail_rate=0.01, seed=args.seed)
    api.degrade(at=args.duration / 5, capacity=20, latency=0.04)
    api.degrade(at=args.duration / 2.5, capacity=60, latency=0.02)

    if str(args.database).startswith(("postgresql://", "postgres://")):
        from event_backends import PostgresDatabase

        db: Any = PostgresDatabase(args.database)
    else:
        args.database = Path(args.database)
        if args.database.exists():
            args.database.unlink()
        db = Database(args.database)
    latencies = Latencies()
    written: list[int] = []
    history = LimitHistory()

    limiter = tf.CapacityLimiter(
        8,
        name="enrich-api",
        algorithm=tf.adaptive.Cruise(max_limit=200),
        overload=(trio.TooSlowError, Overloaded),
    )
    quota = tf.RateLimiter(args.rate, burst=max(1, int(args.rate / 20)), name="api-quota")

    async def write(batch: list[dict[str, Any]]) -> int:
        # A sink's fate is its batch's: committed -> delivered, rolled back ->
        # unfinished. So the commit is the last step that can be cancelled:
        # cancelled while waiting for the writer thread, nothing is written and
        # the batch is unfinished; once the thread runs, trio waits for it
        # (to_thread.run_sync is not abandoned on cancellation, in effect a
        # shielded commit) and nothing cancellable follows, so the committed
        # batch is delivered. (An executor="thread" stage would be abandoned
        # at shutdown instead: right for a lookup, wrong for a commit.)
        n = await db.write_batch(batch)
        written.append(n)
        return n

    source: Any = (
        jsonl_events(args.input) if args.input else generated_events(args.events, args.seed)
    )
    broker = contextlib.nullcontext(None)
    if args.broker:
        from event_backends import open_stream_events

        broker = open_stream_events(args.broker, None if args.input else source)

    async with broker as stream_events, trio.open_nursery() as nursery:
        if stream_events is not None:
            source = stream_events  # the pipeline settles each entry's fate itself
        port = await nursery.start(api.serve)
        if args.debug_port is not None:
            debug_port = await nursery.start(tf.debug.serve, args.debug_port)
            print(f"debug endpoint on http://127.0.0.1:{debug_port}/debug/", flush=True)
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=5.0
        ) as client:
            pipe = (
                tf.Pipeline("events")
                .map(
                    Enricher(client, latencies),
                    workers=200,
                    limiter=limiter,
                    rate=quota,
                    timeout=1.0,
                    retry=tf.Retry(
                        attempts=3,
                        backoff=tf.Backoff.exponential(0.05, maximum=1.0),
                        retry_on=(
                            Overloaded,
                            UpstreamError,
                            trio.TooSlowError,
                            httpx.TransportError,
                        ),
                    ),
                    on_error="dead_letter",
                    name="enrich",
                )
                .filter(is_valid, name="validate")
                .batch(size=200, max_wait=0.5, name="batch")
                .map(write, workers=1, name="write")
            )
            async with pipe.open(source) as run:
                await nursery.start(stop_on_signals, run, args.grace)
                total = None if args.input or args.broker else args.events
                nursery.start_soon(
                    progress, run, total, limiter, latencies, written, history, args.quiet
                )
                with trio.move_on_after(args.duration) as deadline:
                    async for _ in run.outputs:
                        pass
                if deadline.cancelled_caught:
                    print(f"\n--duration {args.duration:g}s reached: draining...", flush=True)
                    # Keep reading the outputs while it drains: a batch the
                    # writer committed is delivered only when it is taken.
                    nursery.start_soon(run.stop, args.grace)
                    async for _ in run.outputs:
                        pass
            report = run.report
        nursery.cancel_scope.cancel()

    rows = db.count()
    db.close()
    dropped_spans = telemetry.shutdown()
    return summarize(report, rows, latencies, history, api, args, dropped_spans)


def limit_moves(points: Sequence[tuple[float, int]]) -> str:
    """How the adaptive limit moved: where it started, its highest and lowest
    points after that (in the order reached), where it ended."""
    if not points:
        return "no samples"
    later = points[1:] or points
    top = max(later, key=lambda p: p[1])
    low = min(later, key=lambda p: p[1])
    marks = sorted(
        [(top[0], f"max {top[1]} at {top[0]:.0f} s"), (low[0], f"min {low[1]} at {low[0]:.0f} s")]
    )
    return " → ".join([f"from {points[0][1]}", *(m for _, m in marks), f"final {points[-1][1]}"])


def summarize(
    report: Any,
    rows: int,
    latencies: Latencies,
    history: LimitHistory,
    api: LocalAPI,
    args: argparse.Namespace,
    dropped_spans: Any,
) -> dict[str, Any]:
    enrich = report.stages["enrich"]
    validate = report.stages["validate"]
    write = report.stages["write"]
    written_items = rows
    # The database agrees with the report: rows written are the events delivered.
    accounted = (
        written_items
        + validate.filtered
        + enrich.dead_lettered
        + report.skipped
        + report.unfinished
    )
    limits = [limit for _, limit in history.points]
    summary = {
        "source_items": report.source_items,
        "written": written_items,
        "database_rows": rows,
        "filtered": validate.filtered,
        "dead_lettered": report.dead_lettered,
        "skipped": report.skipped,
        "unfinished": report.unfinished,
        "batches": write.emitted,
        "retried": enrich.retried,
        "conserved": accounted == report.source_items
        and report.conserved
        and rows == report.delivered,
        "elapsed": report.elapsed,
        "latency_ms": {
            "p50": percentile(latencies.all, 0.50) * 1000,
            "p99": percentile(latencies.all, 0.99) * 1000,
            "p99.9": percentile(latencies.all, 0.999) * 1000,
        },
        "limit": {
            "min": min(limits, default=0),
            "max": max(limits, default=0),
            "final": limits[-1] if limits else 0,
        },
        "api": attrs.asdict(api.stats),
        "jaeger_file": str(args.jaeger_file),
        "traces": _kept_traces(dropped_spans),
    }
    print()
    print(report.format())
    verdict = "OK: every event accounted for" if summary["conserved"] else "MISMATCH"
    print(f"database rows      {rows:7d} = {report.delivered} delivered   {verdict}")
    lat = summary["latency_ms"]
    print(
        f"API latency        p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  p99.9 {lat['p99.9']:.1f} ms"
    )
    print(f"adaptive limit     {limit_moves(history.points)}")
    print(
        f"API saw            {api.stats.served} served, {api.stats.failed} failed (500), "
        f"{api.stats.overloaded} overloaded (503)"
    )
    print(f"traces             {args.jaeger_file} (open in Jaeger UI → Search → Upload)")
    if dropped_spans:
        print(f"telemetry          {dropped_spans}")
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2))
    return summary


def _kept_traces(shutdown: Any) -> dict[str, Any] | None:
    """What the Jaeger file's keep-traces policy kept and dropped (from the shutdown report)."""
    for d in getattr(shutdown, "destinations", ()):
        kept = d.traces
        if d.destination.startswith("jaeger_file") and kept is not None:
            return {
                "traces": kept.traces,
                "kept": kept.kept,
                "dropped": kept.dropped,
                "errors_dropped": kept.errors_dropped,
                "by_reason": dict(kept.by_reason),
                "spans_failed": d.failed,
                "spans_dropped": d.dropped,
            }
    return None


if __name__ == "__main__":
    ns = parse_args()
    result = trio.run(main, ns)
    sys.exit(0 if result["conserved"] and result["written"] == result["database_rows"] else 1)
