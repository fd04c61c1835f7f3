"""The global primitives in metrics and spans, as their local peers (real SDK, in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

from tests.telemetry.conftest import Otel, close_otel, make_otel
from trioflow.redis import RedisRateLimiter, open_capacity_limiter, open_stream_source


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    close_otel(o)


def points(otel: Otel, name: str) -> dict[str, Any]:
    """A metric's points keyed by the name of the limiter they describe."""
    metric = otel.metrics().get(name)
    if metric is None:
        return {}
    out: dict[str, Any] = {}
    for p in metric.data.data_points:
        attributes = dict(p.attributes or {})
        if isinstance(p, NumberDataPoint):
            named = attributes.get(
                "trioflow.limiter.name", attributes.get("trioflow.rate_limiter.name")
            )
            out[str(named)] = p.value
        else:
            assert isinstance(p, HistogramDataPoint)
            named = attributes.get("trioflow.limiter.name")
            out[f"{attributes.get('trioflow.kind')}:{named}"] = p.count
    return out


async def test_global_limiters_report_like_local_ones(otel: Otel, client: Any, name: str) -> None:
    rate = RedisRateLimiter(client, 1000, name=f"{name}-api", burst=5)
    await rate.acquire()
    async with open_capacity_limiter(client, 3, name=f"{name}-db") as db:
        await db.acquire(weight=2)
        assert points(otel, "trioflow.limiter.limit")[f"{name}-db"] == 3
        assert points(otel, "trioflow.limiter.usage")[f"{name}-db"] == 2
        assert points(otel, "trioflow.limiter.queue.size")[f"{name}-db"] == 0
        assert points(otel, "trioflow.rate_limiter.tokens")[f"{name}-api"] == pytest.approx(
            4, abs=1
        )

        got = trio.Event()

        async def waiter() -> None:
            with otel.tracer_provider.get_tracer("test").start_as_current_span("request"):
                async with db.hold(2):
                    got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            with trio.fail_after(10):
                while not any(r.parked for r in db._waiters.values()):
                    await trio.sleep(0.001)
            assert points(otel, "trioflow.limiter.queue.size")[f"{name}-db"] == 1
            await trio.sleep(0.01)
            db.release()
            with trio.fail_after(10):
                await got.wait()
        # A wait that parked: in the wait histogram, and as an event on the caller's span.
        waits = points(otel, "trioflow.limiter.wait.duration")
        assert waits[f"redis_limiter:{name}-db"] == 1
        request = otel.span("request")
        (event,) = [e for e in request.events if e.name == "trioflow.wait"]
        assert event.attributes is not None
        assert event.attributes["trioflow.kind"] == "redis_limiter"
        assert event.attributes["trioflow.wait.duration"] >= 0.01


def stream_points(otel: Otel, metric_name: str, source_name: str) -> dict[str, float]:
    """A stream-source metric's points for one source, keyed by outcome or origin."""
    metric = otel.metrics().get(metric_name)
    assert metric is not None, metric_name
    out: dict[str, float] = {}
    for p in metric.data.data_points:
        attributes = dict(p.attributes or {})
        if attributes.get("trioflow.stream_source.name") != source_name:
            continue
        assert isinstance(p, NumberDataPoint)
        key = attributes.get("trioflow.outcome", attributes.get("trioflow.origin", ""))
        out[str(key)] = p.value
    return out


async def test_stream_source_reports_what_it_read_and_settled(
    otel: Otel, client: Any, name: str
) -> None:
    for i in range(4):
        await client.xadd(name, {"n": str(i)})
    async with open_stream_source(client, name, "g", consumer="a", count=4) as source:
        it = aiter(source)
        e = [await anext(it) for _ in range(4)]
        source.settle(e[0], "delivered", None)
        source.settle(e[1], "dead_lettered", ValueError("bad"))
        source.settle(e[2], "unfinished", None)
        with trio.fail_after(10):
            while source.statistics().settling:
                await trio.sleep(0.002)
        key = source.name
        assert stream_points(otel, "trioflow.stream_source.read", key) == {"new": 4, "claimed": 0}
        assert stream_points(otel, "trioflow.stream_source.settled", key) == {
            "acked": 1,
            "dead_lettered": 1,
            "exhausted": 0,
            "left_pending": 1,
        }
        assert stream_points(otel, "trioflow.stream_source.in_flight", key) == {"": 1}
        assert stream_points(otel, "trioflow.stream_source.unavailable", key) == {"": 0}


async def test_a_global_rate_limiters_wait_is_in_the_histogram_and_on_the_span(
    otel: Otel, client: Any, name: str
) -> None:
    rate = RedisRateLimiter(client, 20, name=f"{name}-quota", burst=1)
    await rate.acquire()  # the bucket is empty: the next call waits about 50 ms
    with otel.tracer_provider.get_tracer("test").start_as_current_span("call"):
        with trio.fail_after(10):
            await rate.acquire()
    metric = otel.metrics().get("trioflow.limiter.wait.duration")
    assert metric is not None
    mine = [
        p
        for p in metric.data.data_points
        if dict(p.attributes or {}).get("trioflow.rate_limiter.name") == f"{name}-quota"
    ]
    assert len(mine) == 1, [dict(p.attributes or {}) for p in metric.data.data_points]
    assert isinstance(mine[0], HistogramDataPoint)
    assert mine[0].count == 1
    assert dict(mine[0].attributes or {})["trioflow.kind"] == "redis_rate_limiter"
    (event,) = [e for e in otel.span("call").events if e.name == "trioflow.wait"]
    assert event.attributes is not None
    assert event.attributes["trioflow.kind"] == "redis_rate_limiter"
    assert event.attributes["trioflow.wait.duration"] >= 0.01


async def test_the_stream_source_is_in_the_registry(client: Any, name: str) -> None:
    from trioflow import _registry

    async with open_stream_source(client, name, "g", consumer="a") as source:
        assert source in _registry.live()
        assert source.kind == "redis_stream_source"
    del source
