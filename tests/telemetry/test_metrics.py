from __future__ import annotations

import gc
import math
import threading
from typing import Any

import attrs
import trio
import trio.testing
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

import trioflow as tf
from trioflow import _registry
from trioflow.telemetry import _hooks, _metrics

from .conftest import Otel, close_otel, make_otel


def points(otel: Otel, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    """A metric's points keyed by their sorted attributes."""
    metric = otel.metrics().get(name)
    if metric is None:
        return {}
    out: dict[tuple[tuple[str, Any], ...], float] = {}
    for p in metric.data.data_points:
        assert isinstance(p, NumberDataPoint)
        out[tuple(sorted((p.attributes or {}).items()))] = p.value
    return out


def api(name: str) -> tuple[tuple[str, Any], ...]:
    return (("trioflow.limiter.name", name),)


async def test_limiter_gauges_read_statistics(otel: Otel) -> None:
    a = tf.CapacityLimiter(3, name="api")
    unlimited = tf.CapacityLimiter(math.inf, name="free")
    async with trio.open_nursery() as nursery:
        await a.acquire(weight=2)

        async def heavy() -> None:
            async with a.hold(weight=2):
                pass

        nursery.start_soon(heavy)
        await trio.testing.wait_all_tasks_blocked()
        await unlimited.acquire()
        assert points(otel, "trioflow.limiter.limit")[api("api")] == 3
        assert api("free") not in points(otel, "trioflow.limiter.limit")  # math.inf: no value
        assert points(otel, "trioflow.limiter.usage")[api("api")] == 2
        assert points(otel, "trioflow.limiter.usage")[api("free")] == 1
        assert points(otel, "trioflow.limiter.queue.size")[api("api")] == 1
        a.total_tokens = 5  # the waiter goes; the next collection sees it
        await trio.testing.wait_all_tasks_blocked()
        assert points(otel, "trioflow.limiter.limit")[api("api")] == 5
        assert points(otel, "trioflow.limiter.queue.size")[api("api")] == 0
        a.release()
        unlimited.release()
    m = otel.metrics()["trioflow.limiter.usage"]
    assert m.unit == "{token}"
    assert otel.metrics()["trioflow.limiter.queue.size"].unit == "{task}"


async def test_collection_from_another_thread(otel: Otel) -> None:
    """The SDK collects on its own thread, outside Trio: the callbacks must not need Trio."""
    limiter = tf.CapacityLimiter(2, name="threaded")
    await limiter.acquire()
    seen: list[float] = []

    def collect() -> None:
        assert threading.current_thread() is not threading.main_thread()
        seen.append(points(otel, "trioflow.limiter.usage")[api("threaded")])

    await trio.to_thread.run_sync(collect)
    assert seen == [1]
    limiter.release()


def test_dead_limiters_stop_reporting(otel: Otel) -> None:
    limiter = tf.CapacityLimiter(1, name="short-lived")
    assert api("short-lived") in points(otel, "trioflow.limiter.limit")
    del limiter
    gc.collect()
    assert api("short-lived") not in points(otel, "trioflow.limiter.limit")


@attrs.frozen
class LaneStats:
    name: str
    total_tokens: int
    borrowed_tokens: int
    tasks_waiting: int


class FakeParent:
    name = "pool"


class StandInLane:
    """What a lane handle offers the readers: kind "lane", a name, a limiter, statistics()."""

    kind = "lane"

    def __init__(self, name: str) -> None:
        self.name = name
        self.limiter = FakeParent()
        _registry.register(self)  # type: ignore[arg-type]

    def statistics(self) -> LaneStats:
        return LaneStats("pool", 10, 4, 2)


@attrs.frozen
class RateStats:
    tokens: float


class StandInRate:
    kind = "rate limiter"

    def __init__(self, name: str, tokens: float | None) -> None:
        self.name = name
        self._tokens = tokens
        _registry.register(self)  # type: ignore[arg-type]

    def statistics(self) -> Any:
        if self._tokens is None:
            raise RuntimeError("dictionary changed size during iteration")
        return RateStats(self._tokens)


def test_readers_plug_in_by_kind(otel: Otel) -> None:
    """Lanes and rate limiters (other branches) report through the same tables."""
    lane = StandInLane("pool/interactive")  # lane handles are named "<limiter>/<lane>"
    bare = StandInLane("batch")
    rate = StandInRate("api-rate", 2.5)
    broken = StandInRate("broken", None)  # skipped this round, not fatal
    key = (("trioflow.lane.name", "interactive"), ("trioflow.limiter.name", "pool"))
    assert points(otel, "trioflow.limiter.usage")[key] == 4
    assert points(otel, "trioflow.limiter.queue.size")[key] == 2
    assert points(otel, "trioflow.limiter.limit")[key] == 10
    assert (("trioflow.lane.name", "batch"), ("trioflow.limiter.name", "pool")) in points(
        otel, "trioflow.limiter.usage"
    )
    tokens = points(otel, "trioflow.rate_limiter.tokens")
    assert tokens == {(("trioflow.rate_limiter.name", "api-rate"),): 2.5}
    assert otel.metrics()["trioflow.rate_limiter.tokens"].unit == "{token}"
    del lane, bare, rate, broken


def histogram(otel: Otel) -> list[HistogramDataPoint]:
    metric = otel.metrics().get("trioflow.limiter.wait.duration")
    if metric is None:
        return []
    pts = list(metric.data.data_points)
    assert all(isinstance(p, HistogramDataPoint) for p in pts)
    return pts  # type: ignore[return-value]


async def test_wait_histogram_only_for_waits_that_parked(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    limiter = tf.CapacityLimiter(1, name="db")
    for _ in range(3):  # fast path: nothing recorded
        async with limiter:
            pass
    assert histogram(otel) == []

    async def holder(task_status: trio.TaskStatus[None]) -> None:
        async with limiter:
            task_status.started()
            await trio.sleep(2.5)

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        async with limiter:  # parks for 2.5 s of virtual time
            pass
    (point,) = histogram(otel)
    assert point.count == 1
    assert point.sum == 2.5
    assert dict(point.attributes or {}) == {
        "trioflow.limiter.name": "db",
        "trioflow.kind": "limiter",
    }
    assert tuple(point.explicit_bounds) == _metrics.WAIT_BUCKETS
    # 2.5 s falls in the (1.0, 2.5] bucket, not in the first one.
    assert point.bucket_counts[_metrics.WAIT_BUCKETS.index(2.5)] == 1
    assert otel.metrics()["trioflow.limiter.wait.duration"].unit == "s"


async def test_wait_is_an_event_on_the_current_span(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    limiter = tf.CapacityLimiter(1, name="db")
    tracer = otel.tracer_provider.get_tracer("user")

    async def holder(task_status: trio.TaskStatus[None]) -> None:
        async with limiter:
            task_status.started()
            await trio.sleep(0.75)

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        with tracer.start_as_current_span("handle request"):
            await limiter.acquire()
            limiter.release()
            async with limiter:  # fast path: no second event
                pass
    (event,) = otel.span("handle request").events
    assert event.name == "trioflow.wait"
    assert dict(event.attributes or {}) == {
        "trioflow.limiter.name": "db",
        "trioflow.kind": "limiter",
        "trioflow.wait.duration": 0.75,
    }


async def test_no_event_with_tracing_off_but_histogram_still_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    o = make_otel("off")
    try:
        limiter = tf.CapacityLimiter(1, name="db")
        tracer = o.tracer_provider.get_tracer("user")

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with limiter:
                task_status.started()
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            await nursery.start(holder)
            with tracer.start_as_current_span("req"):
                async with limiter:
                    pass
        assert o.span("req").events == ()
        (point,) = histogram(o)
        assert point.count == 1
    finally:
        close_otel(o)


async def test_hook_is_none_when_off(autojump_clock: trio.testing.MockClock) -> None:
    assert _hooks.wait_hook is None
    limiter = tf.CapacityLimiter(1)

    async def holder(task_status: trio.TaskStatus[None]) -> None:
        async with limiter:
            task_status.started()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        async with limiter:  # the slow path with telemetry off: nothing to call
            pass


def test_wait_attributes_of_an_unknown_object() -> None:
    assert _metrics.wait_attributes(object()) == {"trioflow.kind": "object"}


def test_instruments_made_once_per_provider_and_inactive_after_switch() -> None:
    first = make_otel()
    limiter = tf.CapacityLimiter(1, name="switch")
    try:
        assert api("switch") in points(first, "trioflow.limiter.limit")
        second = make_otel()
        try:
            # The older provider stops reporting while another set-up is active...
            assert points(first, "trioflow.limiter.limit") == {}
            assert api("switch") in points(second, "trioflow.limiter.limit")
        finally:
            close_otel(second)
        # ... and reports again when it is the active one once more.
        assert api("switch") in points(first, "trioflow.limiter.limit")
        # Re-activating the same provider reuses its instruments.
        again = tf.telemetry.use(meter_provider=first.meter_provider, tracing="off")
        again.shutdown()
        assert points(first, "trioflow.limiter.limit")[api("switch")] == 1
    finally:
        close_otel(first)
    del limiter


async def test_short_waits_are_counted_but_add_no_event(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    limiter = tf.CapacityLimiter(1, name="db")
    tracer = otel.tracer_provider.get_tracer("user")

    async def holder(hold_for: float, task_status: trio.TaskStatus[None]) -> None:
        async with limiter:
            task_status.started()
            await trio.sleep(hold_for)

    with tracer.start_as_current_span("req"):
        for hold_for in (_metrics.WAIT_EVENT_MIN / 2, _metrics.WAIT_EVENT_MIN):
            async with trio.open_nursery() as nursery:
                await nursery.start(holder, hold_for)
                async with limiter:
                    pass
    (point,) = histogram(otel)
    assert point.count == 2
    (event,) = otel.span("req").events  # only the wait of WAIT_EVENT_MIN itself
    assert (event.attributes or {})["trioflow.wait.duration"] == _metrics.WAIT_EVENT_MIN


class StandInStage:
    """A kind with a multi-point reading, as pipeline stages will report items by outcome."""

    kind = "test stage"

    def __init__(self) -> None:
        self.name = "enrich"
        _registry.register(self)  # type: ignore[arg-type]


def test_a_reading_may_have_several_points(otel: Otel) -> None:
    assert "trioflow.limiter.queue.size" in {spec.name for spec in _metrics.OBSERVED}
    stage = StandInStage()
    _metrics.READERS["test_stage"] = lambda obj: {
        "trioflow.limiter.queue.size": [
            ({"trioflow.outcome": "a"}, 1),
            ({"trioflow.outcome": "b"}, 2),
        ]
    }
    try:
        got = points(otel, "trioflow.limiter.queue.size")
    finally:
        del _metrics.READERS["test_stage"]
    assert got[(("trioflow.outcome", "a"), ("trioflow.test_stage.name", "enrich"))] == 1
    assert got[(("trioflow.outcome", "b"), ("trioflow.test_stage.name", "enrich"))] == 2
    del stage


async def test_collecting_from_a_thread_while_trio_churns(otel: Otel) -> None:
    """The exporter thread reads while Trio acquires and releases: no errors, sane values."""
    limiter = tf.CapacityLimiter(5, name="churn")
    seen: list[tuple[float, float]] = []
    done = False

    def collect() -> None:
        while not done or not seen:
            in_use = points(otel, "trioflow.limiter.usage").get(api("churn"))
            waiting = points(otel, "trioflow.limiter.queue.size").get(api("churn"))
            if in_use is not None and waiting is not None:
                seen.append((in_use, waiting))

    async def worker(i: int) -> None:
        for _ in range(20):
            async with limiter.hold(weight=1 + i % 3):
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, collect)
        async with trio.open_nursery() as workers:
            for i in range(100):
                workers.start_soon(worker, i)
        done = True
    assert seen
    assert all(0 <= in_use <= 5 and 0 <= waiting <= 100 for in_use, waiting in seen)


def test_shutting_down_an_older_handle_on_the_same_provider_keeps_metrics() -> None:
    o = make_otel()
    limiter = tf.CapacityLimiter(1, name="shared")
    try:
        newer = tf.telemetry.use(meter_provider=o.meter_provider)
        o.handle.shutdown()  # the older handle, not the active one
        assert newer.active
        assert api("shared") in points(o, "trioflow.limiter.limit")
        newer.shutdown()
        assert points(o, "trioflow.limiter.limit") == {}
    finally:
        close_otel(o)
    del limiter
