"""Send every event to every subscriber's webhook: bounded, paced, retried, drained on SIGTERM.

The webhook script everybody writes first::

    async with trio.open_nursery() as nursery:
        for event in events:
            for url in subscribers:
                nursery.start_soon(client.post, url, event)

starts ``events x subscribers`` requests at once, buries a slow subscriber
under all of them, waits forever on one that hangs, loses a delivery on the
first 500, crashes on the first connection error, and on SIGTERM drops
everything in flight. Here is the same job done right, with trioflow:

* **bounded concurrency, overall and per subscriber**: one
  ``tf.PriorityLimiter`` of ``--concurrency`` HTTP calls with a lane per
  subscriber; each lane is guaranteed its share (``reserve``) and may borrow
  idle capacity up to ``--per-subscriber`` calls (``limit``), so a slow
  subscriber cannot take every connection and a fast one is not held back;
* **a rate limit**: a ``tf.RateLimiter`` (``--rate`` calls per second, all
  subscribers together), taken before a connection slot, so a call waiting
  for the quota holds no slot;
* **a timeout on every attempt** (``--timeout``) and **retries with
  exponential backoff and jitter** for 5xx, timeouts and connection errors;
  a 4xx is the subscriber refusing the event and is not retried. The backoff
  sleep holds no slot and no quota;
* **a dead-letter record**: a delivery that fails its last attempt is written
  as a JSON line to ``--dead-letters`` as it happens (subscriber, event,
  attempts, error), for a later replay;
* **back-pressure, not unbounded memory**: each subscriber has its own
  pipeline (``--workers`` deliveries in progress, backoff sleeps included,
  and a backlog of ``--backlog``); a subscriber that falls that far behind
  slows the reading of events, it does not fill the memory;
* **graceful shutdown**: on SIGTERM or Ctrl-C no new event is taken (the
  event being fanned out still goes to every subscriber), and every delivery
  already taken — in flight, queued or waiting to retry — is finished within
  ``--grace`` seconds; a second signal, or the end of the grace, cancels
  what is left, which is reported as unfinished, never silently dropped;
* **a summary** per subscriber (sent, delivered, retries, dead-lettered,
  unfinished, latency, the most calls it saw at once) with two checks: every
  delivery handed to a subscriber's pipeline is delivered, dead-lettered or
  unfinished (conservation), and every delivery counted as delivered was
  received by that subscriber (the servers count each call's
  ``Idempotency-Key``; a key received twice is a retry of a call that timed
  out on our side but went through on theirs — why webhooks carry one).

The subscribers are four real HTTP servers on 127.0.0.1 (``local_api.py``),
started in this program's own nursery: ``billing`` is healthy but refuses
(422) the one event in 40 that comes without an amount, ``crm`` fails 30% of
calls with a 500, ``analytics`` is slow (some calls exceed the timeout), and
``audit`` is down for a while mid-run.

    python examples/webhook_dispatcher.py               # 200 events, done in a few seconds
    python examples/webhook_dispatcher.py --events 100000 --rate 800   # then Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from local_api import LocalAPI  # examples/local_api.py, beside this file

import trioflow as tf


class ServerError(Exception):
    """The subscriber answered 5xx (503 included): worth another attempt."""


class Rejected(Exception):
    """The subscriber answered 4xx: it refuses this event, retrying will not help."""


RETRY_ON = (ServerError, trio.TooSlowError, httpx.TransportError)


@attrs.frozen
class Delivery:
    """One event for one subscriber: the item each subscriber's pipeline carries."""

    subscriber: str
    event: dict[str, Any]

    @property
    def key(self) -> str:
        # The same for every attempt, so the subscriber can drop repeats.
        return f"{self.event['id']}"


@attrs.define(eq=False)
class Subscriber:
    """A webhook endpoint: its server (started by us), and what we saw of it."""

    name: str
    behaviour: str
    api: LocalAPI
    url: str = ""
    in_flight: int = 0
    peak: int = 0
    acked: set[str] = attrs.field(factory=set[str])
    """Keys of the deliveries this subscriber answered 200 to."""


def needs_amount(event: Any) -> str | None:
    if isinstance(event, dict) and "amount_cents" not in event:
        return "amount_cents is required"
    return None


def make_subscribers(seed: int, outage: tuple[float, float]) -> list[Subscriber]:
    audit = LocalAPI(capacity=20, latency=0.015, seed=seed + 4)
    audit.degrade(at=outage[0], fail_rate=1.0)
    audit.degrade(at=outage[1], fail_rate=0.0)
    return [
        Subscriber(
            "billing",
            "healthy; 422 if no amount",
            LocalAPI(capacity=20, latency=0.01, seed=seed + 1, reject=needs_amount),
        ),
        Subscriber(
            "crm",
            "30% of calls fail (500)",
            LocalAPI(capacity=20, latency=0.02, fail_rate=0.3, seed=seed + 2),
        ),
        Subscriber(
            "analytics",
            "slow, some calls time out",
            LocalAPI(capacity=20, latency=0.06, sigma=0.9, seed=seed + 3),
        ),
        Subscriber("audit", f"down {outage[0]:g}-{outage[1]:g} s", audit),
    ]


@attrs.define(eq=False)
class Deliverer:
    """The stage function: one attempt to POST one delivery (the stage adds timeout and retries)."""

    client: httpx.AsyncClient
    subscriber: Subscriber
    calls: list[int]  # [in flight now, peak], across all subscribers

    async def __call__(self, delivery: Delivery) -> str:
        sub = self.subscriber
        sub.in_flight += 1
        sub.peak = max(sub.peak, sub.in_flight)
        self.calls[0] += 1
        self.calls[1] = max(self.calls[1], self.calls[0])
        try:
            response = await self.client.post(
                sub.url, json=delivery.event, headers={"Idempotency-Key": delivery.key}
            )
        finally:
            sub.in_flight -= 1
            self.calls[0] -= 1
        if response.status_code >= 500:
            raise ServerError(f"{response.status_code} from {sub.name}")
        if response.status_code >= 400:
            raise Rejected(f"{response.status_code} from {sub.name}: {response.text[:200]}")
        sub.acked.add(delivery.key)
        return delivery.key


async def generate_events(n: int, per_second: float) -> AsyncIterator[dict[str, Any]]:
    """The event feed (a queue consumer in real life); ``per_second`` 0 means a backlog."""
    kinds = ["order.created", "order.paid", "order.shipped", "refund.issued"]
    for i in range(n):
        if per_second:
            await trio.sleep(1 / per_second)
        event: dict[str, Any] = {"id": i, "type": kinds[i % len(kinds)]}
        if i % 40 != 39:  # a producer bug: one event in 40 has no amount
            event["amount_cents"] = (i * 7919) % 100_000
        yield event


def error_text(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


@attrs.define(eq=False)
class Dispatcher:
    args: argparse.Namespace
    subscribers: list[Subscriber]
    stopping: trio.Event = attrs.field(factory=trio.Event)
    events_read: int = 0
    handed: dict[str, int] = attrs.field(factory=dict[str, int])
    runs: dict[str, tf.PipelineRun] = attrs.field(factory=dict[str, tf.PipelineRun])
    fan_out_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    dead_letters_written: int = 0
    start: float = 0.0

    async def fan_out(self, senders: dict[str, trio.MemorySendChannel[Delivery]]) -> None:
        """Read events and hand each one to every subscriber's pipeline.

        Each hand-off waits while that subscriber's backlog is full
        (back-pressure). Once stopping, no new event is read, but the event
        in hand still goes to every subscriber.
        """
        with self.fan_out_scope:
            try:
                async for event in generate_events(self.args.events, self.args.event_rate):
                    if self.stopping.is_set():
                        break  # not taken: a real queue would deliver it again later
                    self.events_read += 1
                    for name, send in senders.items():
                        await send.send(Delivery(name, event))
                        self.handed[name] += 1
            finally:
                for send in senders.values():
                    send.close()  # the pipelines drain what they took, then end

    def cancel_now(self) -> None:
        self.fan_out_scope.cancel()
        for run in self.runs.values():
            run.cancel()  # what is still in flight is reported unfinished

    async def on_signals(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async with trio.open_nursery() as nursery:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not self.stopping.is_set():
                        print(
                            f"\n{name}: taking no new events; finishing the deliveries already "
                            f"taken (up to {self.args.grace:g} s; signal again to stop now)",
                            flush=True,
                        )
                        self.stopping.set()
                        nursery.start_soon(self.grace_timer)
                    else:
                        print(f"\n{name} again: cancelling what is left", flush=True)
                        self.cancel_now()

    async def grace_timer(self) -> None:
        await trio.sleep(self.args.grace)
        print(f"grace of {self.args.grace:g} s over: cancelling what is left", flush=True)
        self.cancel_now()

    async def write_dead_letters(self, letters: trio.MemoryReceiveChannel[tf.DeadLetter]) -> None:
        """Append each dead letter to the JSON-lines file as it comes (flushed: a crash keeps it)."""
        async with await trio.open_file(self.args.dead_letters, "w") as f:
            async for letter in letters:
                delivery = letter.item
                assert isinstance(delivery, Delivery)
                record = {
                    "subscriber": delivery.subscriber,
                    "event": delivery.event,
                    "idempotency_key": delivery.key,
                    # A retryable failure is dead-lettered only after the last attempt.
                    "attempts": self.args.attempts if isinstance(letter.exception, RETRY_ON) else 1,
                    "error": error_text(letter.exception, self.args.timeout),
                    "at": round(trio.current_time() - self.start, 3),
                }
                await f.write(json.dumps(record) + "\n")
                await f.flush()
                self.dead_letters_written += 1

    async def progress(self, limiter: tf.PriorityLimiter, calls: list[int]) -> None:
        while True:
            await trio.sleep(self.args.progress)
            reports = [run.report for run in self.runs.values()]
            delivered = sum(r.delivered for r in reports)
            retries = sum(s.retried for r in reports for s in r.stages.values())
            dead = sum(r.dead_lettered for r in reports)
            print(
                f"[{trio.current_time() - self.start:5.1f}s] events {self.events_read:6d}  "
                f"delivered {delivered:6d}  retries {retries:4d}  dead-lettered {dead:3d}  "
                f"calls {calls[0]:2d}/{limiter.total_tokens:g}",
                flush=True,
            )


def build_pipeline(
    sub: Subscriber,
    deliverer: Deliverer,
    lane: tf.LaneLimiter,
    quota: tf.RateLimiter,
    dead_letters: trio.MemorySendChannel[tf.DeadLetter],
    args: argparse.Namespace,
) -> tf.Pipeline:
    return tf.Pipeline(f"webhooks {sub.name}", dead_letters=dead_letters).map(
        deliverer,
        workers=args.workers,  # deliveries in progress, backoff sleeps included
        buffer=args.backlog,  # how far this subscriber may fall behind
        rate=quota,  # first the quota ...
        limiter=lane,  # ... then a connection slot, held for one attempt
        timeout=args.timeout,  # per attempt
        retry=tf.Retry(
            attempts=args.attempts,
            backoff=tf.Backoff.exponential(0.1, maximum=2.0),
            retry_on=RETRY_ON,
        ),
        on_error="dead_letter",
        name="deliver",
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    subscribers = make_subscribers(args.seed, (args.outage_at, args.outage_at + args.outage_for))
    n = len(subscribers)
    # One pool of HTTP calls; a lane per subscriber: each is guaranteed 1/n of
    # the pool while it has work, and may borrow idle slots up to its cap.
    limiter = tf.PriorityLimiter(
        args.concurrency,
        [
            tf.Lane(s.name, reserve=1 / n, limit=min(1.0, args.per_subscriber / args.concurrency))
            for s in subscribers
        ],
        name="webhook-calls",
    )
    quota = tf.RateLimiter(args.rate, burst=max(1, int(args.rate / 20)), name="webhook-quota")
    d = Dispatcher(args, subscribers)
    calls = [0, 0]
    reports: dict[str, tf.PipelineReport] = {}

    async def deliver_all(
        pipe: tf.Pipeline,
        source: trio.MemoryReceiveChannel[Delivery],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with pipe.open(source) as run:
            d.runs[pipe.name] = run
            task_status.started()
            reports[pipe.name] = await run.wait()

    async with trio.open_nursery() as nursery:
        for sub in subscribers:
            port = await nursery.start(sub.api.serve)
            sub.url = f"http://127.0.0.1:{port}/webhook"
        await nursery.start(d.on_signals)
        limits = httpx.Limits(
            max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
        )
        print(
            f"dispatching {args.events} events to {n} subscribers: at most "
            f"{args.concurrency} calls at once ({args.per_subscriber} per subscriber), "
            f"{args.rate:g} calls/s, {args.timeout:g} s per attempt, {args.attempts} attempts",
            flush=True,
        )
        d.start = trio.current_time()
        if not args.quiet:
            nursery.start_soon(d.progress, limiter, calls)
        dead_send, dead_receive = trio.open_memory_channel[tf.DeadLetter](64)
        async with (
            httpx.AsyncClient(limits=limits, timeout=5.0) as client,
            trio.open_nursery() as writer,  # outlives the pipelines: writes their last letters
        ):
            writer.start_soon(d.write_dead_letters, dead_receive)
            async with dead_send, trio.open_nursery() as work:
                senders: dict[str, trio.MemorySendChannel[Delivery]] = {}
                for sub in subscribers:
                    # A hand-off: a delivery is either still with the
                    # fan-out or already counted by the pipeline.
                    send, receive = trio.open_memory_channel[Delivery](0)
                    senders[sub.name] = send
                    d.handed[sub.name] = 0
                    pipe = build_pipeline(
                        sub,
                        Deliverer(client, sub, calls),
                        limiter[sub.name],
                        quota,
                        dead_send,
                        args,
                    )
                    await work.start(deliver_all, pipe, receive)
                work.start_soon(d.fan_out, senders)
        elapsed = trio.current_time() - d.start
        nursery.cancel_scope.cancel()  # the servers, the signal handler, the progress line

    return summarize(d, reports, limiter, calls, elapsed)


def summarize(
    d: Dispatcher,
    reports: dict[str, tf.PipelineReport],
    limiter: tf.PriorityLimiter,
    calls: list[int],
    elapsed: float,
) -> dict[str, Any]:
    args = d.args
    rows: dict[str, dict[str, Any]] = {}
    conserved = True
    all_received = True
    for sub in d.subscribers:
        report = reports[f"webhooks {sub.name}"]
        stage = report.stages["deliver"]
        server = sub.api.stats.webhooks
        received = all(server[key] > 0 for key in sub.acked)
        all_received &= received
        ok = (
            d.handed[sub.name]
            == report.source_items
            == report.delivered + report.dead_lettered + report.skipped + report.unfinished
        )
        conserved &= ok
        rows[sub.name] = {
            "sent": d.handed[sub.name],
            "delivered": report.delivered,
            "retries": stage.retried,
            "dead_lettered": report.dead_lettered,
            "unfinished": report.unfinished,
            "p50_ms": (stage.latency.p50 or math.nan) * 1000,
            "p99_ms": (stage.latency.p99 or math.nan) * 1000,
            "peak_calls": sub.peak,
            "server_received": len(server),
            "server_repeats": sum(server.values()) - len(server),
            "conserved": ok,
            "acked_all_received": received,
        }
    sent = sum(r["sent"] for r in rows.values())
    delivered = sum(r["delivered"] for r in rows.values())
    dead = sum(r["dead_lettered"] for r in rows.values())
    unfinished = sum(r["unfinished"] for r in rows.values())
    dead_letters_match = d.dead_letters_written == dead
    stats = limiter.statistics()
    released = stats.borrowed_tokens == 0 and stats.tasks_waiting == 0
    within_caps = calls[1] <= args.concurrency and all(
        s.peak <= args.per_subscriber for s in d.subscribers
    )
    summary: dict[str, Any] = {
        "events": d.events_read,
        "elapsed": elapsed,
        "sent": sent,
        "delivered": delivered,
        "dead_lettered": dead,
        "unfinished": unfinished,
        "dead_letter_lines": d.dead_letters_written,
        "peak_calls": calls[1],
        "subscribers": rows,
        # Per subscriber: a fan-out cancelled mid-event (a second signal, or
        # the grace over) hands that event to only some subscribers.
        "conserved": conserved,
        "acked_all_received": all_received,
        "ok": conserved and all_received and dead_letters_match and released and within_caps,
    }
    print()
    print(f"== {d.events_read} events to {len(rows)} subscribers in {elapsed:.1f} s ==")
    print(
        f"{'subscriber':10s} {'behaves':27s} {'sent':>5s} {'delivered':>9s} {'retries':>7s} "
        f"{'dead':>5s} {'unfinished':>10s} {'p50':>7s} {'p99':>7s} {'at once':>7s} "
        f"{'they got':>8s} {'repeats':>7s}"
    )
    for sub in d.subscribers:
        r = rows[sub.name]
        print(
            f"{sub.name:10s} {sub.behaviour:27s} {r['sent']:5d} {r['delivered']:9d} "
            f"{r['retries']:7d} {r['dead_lettered']:5d} {r['unfinished']:10d} "
            f"{r['p50_ms']:5.0f}ms {r['p99_ms']:5.0f}ms {r['peak_calls']:7d} "
            f"{r['server_received']:8d} {r['server_repeats']:7d}"
        )
    verdict = "OK" if conserved else "MISMATCH"
    print(
        f"conservation: {sent} deliveries = {delivered} delivered + {dead} dead-lettered "
        f"+ {unfinished} unfinished   {verdict}"
    )
    print(
        f"every delivery counted as delivered reached its subscriber: "
        f"{'OK' if all_received else 'NO'}"
    )
    print(
        f"at most {calls[1]} calls at once (limit {args.concurrency}, "
        f"{args.per_subscriber} per subscriber): {'OK' if within_caps else 'EXCEEDED'}"
    )
    print(
        f"dead letters: {d.dead_letters_written} written to {args.dead_letters}"
        + ("" if dead_letters_match else f"   MISMATCH (report says {dead})")
    )
    shown = 0
    for report in reports.values():
        for letter in report.dead_letters:
            if shown == 5:
                break
            delivery = letter.item
            assert isinstance(delivery, Delivery)
            print(
                f"  {delivery.subscriber:10s} event {delivery.key:>6s}: "
                f"{error_text(letter.exception, args.timeout)}"
            )
            shown += 1
    if dead > shown:
        print(f"  ... and {dead - shown} more")
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2))
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200, help="events to dispatch (default 200)")
    p.add_argument(
        "--event-rate", type=float, default=0.0, help="events per second (default 0: a backlog)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="HTTP calls at once, in all")
    p.add_argument("--per-subscriber", type=int, default=6, help="HTTP calls at once, each")
    p.add_argument("--rate", type=float, default=500.0, help="calls per second, in all")
    p.add_argument("--timeout", type=float, default=0.25, help="seconds per attempt")
    p.add_argument("--attempts", type=int, default=4, help="attempts per delivery, in all")
    p.add_argument("--workers", type=int, default=16, help="deliveries in progress per subscriber")
    p.add_argument("--backlog", type=int, default=64, help="queued deliveries per subscriber")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to drain on shutdown")
    p.add_argument("--outage-at", type=float, default=0.6, help="audit goes down at (s)")
    p.add_argument("--outage-for", type=float, default=0.8, help="... for this long (s)")
    p.add_argument("--dead-letters", type=Path, default=Path("webhook_dead_letters.jsonl"))
    p.add_argument("--progress", type=float, default=0.5, help="seconds between progress lines")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--summary-json", type=Path, help="also write the summary here (for tests)")
    return p.parse_args(argv)


if __name__ == "__main__":
    result = trio.run(main, parse_args())
    sys.exit(0 if result["ok"] else 1)
