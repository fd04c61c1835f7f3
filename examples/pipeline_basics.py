"""A service's event pipeline, with a graceful shutdown on SIGTERM.

The shape every consumer service writes by hand — read events, enrich them
through a rate-limited API with a bounded pool, drop the invalid ones, write
them in batches, stop cleanly on SIGTERM without losing what is in flight —
as one trioflow Pipeline.

The "API" is simulated (a sleep, and one call in ten fails once); after two
seconds the program sends itself SIGTERM, as a deployment would, and the
pipeline stops reading, drains what it admitted, and prints its report.

    python examples/pipeline_basics.py            # SIGTERM after 2 s
    python examples/pipeline_basics.py --no-term  # run all 1000 events to the end (about 6 s)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import trio

import trioflow as tf

rng = random.Random(7)
failed_once: set[int] = set()
written: list[int] = []


async def consume(n: int) -> AsyncIterator[dict[str, Any]]:
    """The message consumer: yields events as they arrive."""
    for i in range(n):
        await trio.sleep(0.005)
        yield {"id": i, "user": f"u{i % 17}"}


async def enrich(event: dict[str, Any]) -> dict[str, Any]:
    """Call the (simulated) profile API; some calls fail the first time."""
    await trio.sleep(rng.uniform(0.02, 0.1))
    if event["id"] % 10 == 3 and event["id"] not in failed_once:
        failed_once.add(event["id"])
        raise ConnectionError(f"profile API reset the connection for event {event['id']}")
    return {**event, "country": ["fr", "de", "us", "??"][event["id"] % 4]}


def is_valid(event: dict[str, Any]) -> bool:
    return event["country"] != "??"


async def write_batch(batch: list[dict[str, Any]]) -> None:
    """One round trip to the (simulated) database per batch.

    A sink's fate is its batch's: the commit is the last step, so a batch
    cancelled before it wrote nothing (unfinished), and one that committed
    returns at once (delivered). A commit that must not be cut short would
    go inside ``with trio.CancelScope(shield=True):``.
    """
    await trio.sleep(0.05)
    written.extend(e["id"] for e in batch)  # the commit: the last step


async def main(send_sigterm: bool) -> None:
    api_rate = tf.RateLimiter(200, burst=20, name="profile-api")
    api_pool = tf.CapacityLimiter(10, name="profile-api-connections")
    pipe = (
        tf.Pipeline("events")
        .map(
            enrich,
            workers=20,
            limiter=api_pool,
            rate=api_rate,
            timeout=1.0,
            retry=tf.Retry(3, backoff=tf.Backoff.exponential(0.05, maximum=1.0)),
            on_error="dead_letter",
            name="enrich",
        )
        .filter(is_valid, name="valid")
        .batch(size=25, max_wait=0.5)
        .each(write_batch, name="write")
    )
    print(f"{pipe}; at most {pipe.max_in_flight} events in flight")

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with pipe.open(consume(1000)) as run, trio.open_nursery() as nursery:

            async def on_sigterm() -> None:
                async for _ in signals:
                    print("SIGTERM: stop reading, drain for up to 10 s")
                    await run.stop(grace=10)
                    return

            nursery.start_soon(on_sigterm)
            if send_sigterm:

                async def deploy() -> None:
                    await trio.sleep(2)
                    os.kill(os.getpid(), signal.SIGTERM)

                nursery.start_soon(deploy)
            report = await run.wait()  # the last stage is a sink: nobody reads outputs
            nursery.cancel_scope.cancel()

    print(f"read {report.source_items} events in {report.elapsed:.2f} s:")
    print(
        f"  delivered {report.delivered}, filtered {report.filtered}, "
        f"dead-lettered {report.dead_lettered}, unfinished {report.unfinished}"
    )
    for name, stage in report.stages.items():
        p50 = f"{stage.latency.p50 * 1000:.0f} ms" if stage.latency.p50 is not None else "-"
        print(
            f"  stage {name:6}: received {stage.received:3}, emitted {stage.emitted:3}, "
            f"filtered {stage.filtered:3}, retried {stage.retried:2}, p50 {p50}"
        )
    assert report.unfinished == 0
    assert len(written) == report.delivered
    assert report.source_items == report.delivered + report.filtered + report.dead_lettered


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-term", action="store_true", help="do not send SIGTERM")
    trio.run(main, not parser.parse_args().no_term)
