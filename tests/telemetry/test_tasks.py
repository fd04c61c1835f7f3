"""Spans and metrics of task groups, and metrics of the real limiters they and users hold."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

import trioflow as tf
from trioflow.telemetry import _hooks

from .conftest import Otel, close_otel, make_otel
from .test_metrics import api, histogram, points


def by_name(otel: Otel, prefix: str) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.name.startswith(prefix)]


async def work(value: int) -> int:
    await trio.sleep(0.1)
    return value


# -- spans ----------------------------------------------------------------------------


async def test_group_span_at_stage_level(autojump_clock: trio.testing.MockClock) -> None:
    o = make_otel("stage")
    try:
        tracer = o.tracer_provider.get_tracer("user")
        with tracer.start_as_current_span("request") as request:
            async with tf.open_task_group(limit=2, name="fetch") as tg:
                for i in range(3):
                    await tg.spawn(work, i)
        group = o.span("task_group fetch")
        assert group.parent == request.get_span_context()
        assert group.kind is SpanKind.INTERNAL
        assert group.status.status_code is StatusCode.UNSET
        assert dict(group.attributes or {}) == {
            "trioflow.task_group.name": "fetch",
            "trioflow.task_group.on_error": "cancel",
            "trioflow.task_group.limit": 2,
            "trioflow.task_group.tasks": 3,
            "trioflow.task_group.failed": 0,
            "trioflow.task_group.cancelled": 0,
        }
        assert by_name(o, "task ") == []  # no task spans at "stage" level by default
        assert {s.name for s in o.spans()} == {"request", "task_group fetch"}
    finally:
        close_otel(o)


async def test_task_spans_at_item_level_are_parented_explicitly(otel: Otel) -> None:
    """A task spawned from another task (with its own current span) is still the group's child."""
    tracer = otel.tracer_provider.get_tracer("user")
    inner_names: list[str] = []

    async def job(label: str) -> str:
        with tracer.start_as_current_span(f"user {label}"):
            inner_names.append(label)
        await trio.lowlevel.checkpoint()
        return label

    async def spawner(tg: tf.TaskGroup) -> None:
        # This task's current span is "elsewhere": trio copies it into the
        # child, but the task span must still hang under the group.
        with tracer.start_as_current_span("elsewhere"):
            await tg.spawn(job, "from-elsewhere", name="job-b")

    with tracer.start_as_current_span("request") as request:
        async with tf.open_task_group(name="jobs") as tg:
            await tg.spawn(job, "direct", name="job-a")
            await tg.spawn(spawner, tg, name="spawner")
        assert trace.get_current_span() is request  # the group made nothing current here
    group = otel.span("task_group jobs")
    assert group.parent == request.get_span_context()
    for task_name, label in (("job-a", "direct"), ("job-b", "from-elsewhere")):
        task = otel.span(f"task {task_name}")
        assert task.parent == group.context
        assert task.context.trace_id == group.context.trace_id
        assert dict(task.attributes or {}) == {"trioflow.task_group.name": "jobs"}
        # the task's span is current while its function runs
        assert otel.span(f"user {label}").parent == task.context
    assert otel.span("task spawner").parent == group.context
    assert otel.span("elsewhere").parent == otel.span("task spawner").context
    assert sorted(inner_names) == ["direct", "from-elsewhere"]


async def test_task_span_name_defaults_to_trios_task_name(otel: Otel) -> None:
    async with tf.open_task_group(name="g") as tg:
        h = tg.start_soon(work, 1)
    task = otel.span(f"task {h.name}")
    assert h.name.endswith("work")
    assert task.parent == otel.span("task_group g").context


async def test_trace_tasks_overrides_the_level(autojump_clock: trio.testing.MockClock) -> None:
    o = make_otel("stage")
    try:
        async with tf.open_task_group(name="on", trace_tasks=True) as tg:
            await tg.spawn(work, 1, name="w")
        assert o.span("task w").parent == o.span("task_group on").context
    finally:
        close_otel(o)
    o = make_otel("item")
    try:
        async with tf.open_task_group(name="off", trace_tasks=False) as tg:
            await tg.spawn(work, 1, name="w")
        assert [s.name for s in o.spans()] == ["task_group off"]
    finally:
        close_otel(o)


async def test_tracing_off_records_nothing(autojump_clock: trio.testing.MockClock) -> None:
    o = make_otel("off")
    try:
        async with tf.open_task_group(name="quiet", trace_tasks=True) as tg:
            await tg.spawn(work, 1)
            assert tg._span is INVALID_SPAN
            assert tg._books.task_parent is None  # no task would get a span
        assert o.spans() == []
    finally:
        close_otel(o)


async def test_no_telemetry_configured() -> None:
    assert _hooks.tracing == _hooks.OFF
    async with tf.open_task_group(trace_tasks=True) as tg:
        h = await tg.spawn(work, 7)
    assert h.result() == 7
    assert tg._span is INVALID_SPAN


async def test_failures_mark_task_and_group_spans(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    async def boom() -> None:
        await trio.sleep(0.05)
        raise KeyError("sku")

    async def run() -> None:
        async with tf.open_task_group(name="bad") as tg:
            await tg.spawn(boom, name="boom")
            await tg.spawn(trio.sleep_forever, name="victim")

    with pytest.raises(ExceptionGroup):
        await run()
    group = otel.span("task_group bad")
    assert group.status.status_code is StatusCode.ERROR
    assert (group.attributes or {})["error.type"] == "ExceptionGroup"
    assert (group.attributes or {})["trioflow.task_group.failed"] == 1
    assert (group.attributes or {})["trioflow.task_group.cancelled"] == 1
    assert [e.name for e in group.events] == ["exception"]
    failed = otel.span("task boom")
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "KeyError"
    assert [e.name for e in failed.events] == ["exception"]
    victim = otel.span("task victim")
    assert victim.status.status_code is StatusCode.UNSET
    assert (victim.attributes or {})["trioflow.cancelled"] is True
    assert "error.type" not in (victim.attributes or {})


async def test_collect_policy_records_every_failure(otel: Otel) -> None:
    async def fail(i: int) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError(i)

    async def run() -> None:
        async with tf.open_task_group(name="all", on_error="collect") as tg:
            for i in range(3):
                await tg.spawn(fail, i, name=f"f{i}")

    with pytest.raises(ExceptionGroup) as info:
        await run()
    assert len(info.value.exceptions) == 3
    for i in range(3):
        assert (otel.span(f"task f{i}").attributes or {})["error.type"] == "ValueError"
    group = otel.span("task_group all")
    assert (group.attributes or {})["trioflow.task_group.on_error"] == "collect"
    assert (group.attributes or {})["trioflow.task_group.failed"] == 3


async def test_cancelled_task_and_group(otel: Otel) -> None:
    async with tf.open_task_group(name="c") as tg:
        h = await tg.spawn(trio.sleep_forever, name="one")
        await trio.testing.wait_all_tasks_blocked()
        h.cancel()  # only this task
    one = otel.span("task one")
    assert (one.attributes or {})["trioflow.cancelled"] is True
    assert "trioflow.cancelled" not in (otel.span("task_group c").attributes or {})

    async with tf.open_task_group(name="whole") as tg:
        await tg.spawn(trio.sleep_forever, name="two")
        tg.cancel_scope.cancel()
        await trio.sleep_forever()  # the group's scope absorbs this
    whole = otel.span("task_group whole")
    assert (whole.attributes or {})["trioflow.cancelled"] is True
    assert whole.status.status_code is StatusCode.UNSET
    assert (otel.span("task two").attributes or {})["trioflow.cancelled"] is True


async def test_task_cancelled_before_it_ran_has_no_span(otel: Otel) -> None:
    async with tf.open_task_group(name="early") as tg:
        h = tg.start_soon(work, 1, name="never")
        h.cancel()
    assert h.cancelled
    assert by_name(otel, "task ") == []


async def test_start_gets_a_task_span(otel: Otel) -> None:
    async def server(task_status: trio.TaskStatus[int]) -> None:
        task_status.started(8080)
        await trio.sleep_forever()

    async with tf.open_task_group(name="servers") as tg:
        port = await tg.start(server, name="http")
        assert port == 8080
        tg.cancel_scope.cancel()
    http = otel.span("task http")
    assert http.parent == otel.span("task_group servers").context
    assert (http.attributes or {})["trioflow.cancelled"] is True


async def test_thread_inside_a_task_nests_under_the_task(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("user")

    def blocking() -> None:
        with tracer.start_as_current_span("in thread"):
            pass

    async def job() -> None:
        await trio.to_thread.run_sync(blocking)

    async with tf.open_task_group(name="t") as tg:
        await tg.spawn(job, name="j")
    assert otel.span("in thread").parent == otel.span("task j").context


def test_trace_tasks_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="trace_tasks must be True, False or None, got 'yes'"):
        tf.open_task_group(trace_tasks="yes")  # type: ignore[arg-type]


# -- metrics ----------------------------------------------------------------------------


def group_key(name: str, outcome: str | None = None) -> tuple[tuple[str, Any], ...]:
    if outcome is None:
        return (("trioflow.task_group.name", name),)
    return (("trioflow.outcome", outcome), ("trioflow.task_group.name", name))


async def test_task_group_metrics(otel: Otel) -> None:
    gate = trio.Event()

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("x")

    tg = tf.open_task_group(limit=2, name="pool", on_error="collect")

    async def run() -> None:
        async with tg:
            async with trio.open_nursery() as nursery:
                await tg.spawn(gate.wait)
                await tg.spawn(gate.wait)
                nursery.start_soon(tg.spawn, gate.wait)  # parks: the group is full
                await trio.testing.wait_all_tasks_blocked()
                assert points(otel, "trioflow.task_group.running")[group_key("pool")] == 2
                assert points(otel, "trioflow.task_group.queue.size")[group_key("pool")] == 1
                # the group's own limiter reports as a limiter named after the group
                assert points(otel, "trioflow.limiter.limit")[api("pool")] == 2
                assert points(otel, "trioflow.limiter.usage")[api("pool")] == 2
                assert points(otel, "trioflow.limiter.queue.size")[api("pool")] == 1
                gate.set()
            await trio.testing.wait_all_tasks_blocked()
            h = await tg.spawn(trio.sleep_forever)
            await tg.spawn(fail)
            await trio.testing.wait_all_tasks_blocked()
            h.cancel()

    with pytest.raises(ExceptionGroup):
        await run()
    assert points(otel, "trioflow.task_group.running")[group_key("pool")] == 0
    assert points(otel, "trioflow.task_group.queue.size")[group_key("pool")] == 0
    tasks = points(otel, "trioflow.task_group.tasks")
    assert tasks[group_key("pool", "returned")] == 3
    assert tasks[group_key("pool", "failed")] == 1
    assert tasks[group_key("pool", "cancelled")] == 1
    metrics = otel.metrics()
    assert metrics["trioflow.task_group.tasks"].data.is_monotonic  # type: ignore[union-attr]
    assert metrics["trioflow.task_group.running"].unit == "{task}"


async def test_shared_limiter_across_groups(otel: Otel) -> None:
    """A limiter passed to two groups is one limiter in the metrics, each group its own."""
    shared = tf.CapacityLimiter(3, name="shared")
    gate = trio.Event()
    async with (
        tf.open_task_group(limit=shared, name="a") as a,
        tf.open_task_group(limit=shared, name="b") as b,
    ):
        await a.spawn(gate.wait)
        await b.spawn(gate.wait)
        await b.spawn(gate.wait)
        await trio.testing.wait_all_tasks_blocked()
        assert points(otel, "trioflow.limiter.usage")[api("shared")] == 3
        running = points(otel, "trioflow.task_group.running")
        assert (running[group_key("a")], running[group_key("b")]) == (1, 2)
        gate.set()
    assert api("a") not in points(otel, "trioflow.limiter.limit")  # no limiter of its own


async def test_spawn_wait_is_an_event_on_the_spawners_span(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    tracer = otel.tracer_provider.get_tracer("user")
    with tracer.start_as_current_span("loop"):
        async with tf.open_task_group(limit=1, name="paced") as tg:
            await tg.spawn(work, 1)
            await tg.spawn(work, 2)  # waits 0.1 s for the first to finish
    (event,) = otel.span("loop").events
    assert event.name == "trioflow.wait"
    assert dict(event.attributes or {}) == {
        "trioflow.limiter.name": "paced",
        "trioflow.kind": "limiter",
        "trioflow.wait.duration": pytest.approx(0.1),
    }


# -- the real rate limiter ----------------------------------------------------------------


def rate_key(name: str) -> tuple[tuple[str, Any], ...]:
    return (("trioflow.rate_limiter.name", name),)


async def test_rate_tokens_from_a_real_rate_limiter(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    rate = tf.RateLimiter(10, burst=5, name="api-tokens")  # a name no other test leaves alive
    assert (
        points(otel, "trioflow.rate_limiter.tokens")[rate_key("api-tokens")] == 5
    )  # full before any use
    for _ in range(3):
        await rate.acquire()
    assert points(otel, "trioflow.rate_limiter.tokens")[rate_key("api-tokens")] == 2
    await trio.sleep(0.2)  # 2 tokens accrue; a reading inside trio brings the bucket up to date
    assert points(otel, "trioflow.rate_limiter.tokens")[rate_key("api-tokens")] == pytest.approx(4)
    await trio.sleep(10)
    assert (
        points(otel, "trioflow.rate_limiter.tokens")[rate_key("api-tokens")] == 5
    )  # capped at burst
    assert otel.metrics()["trioflow.rate_limiter.tokens"].unit == "{token}"


async def test_rate_tokens_read_from_the_exporter_thread(otel: Otel) -> None:
    """Off trio's thread the reader only reads: tokens as of the last call that touched the bucket."""
    rate = tf.RateLimiter(0.001, burst=4, name="slow")
    await rate.acquire(3)
    seen: list[float] = []

    def collect() -> None:
        assert threading.current_thread() is not threading.main_thread()
        seen.append(points(otel, "trioflow.rate_limiter.tokens")[rate_key("slow")])

    await trio.to_thread.run_sync(collect)
    assert seen == [pytest.approx(1, abs=0.01)]


async def test_rate_wait_is_recorded_and_is_an_event(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    rate = tf.RateLimiter(2, burst=1, name="outbound")
    tracer = otel.tracer_provider.get_tracer("user")
    await rate.acquire()  # empties the bucket: no wait, nothing recorded
    assert histogram(otel) == []
    with tracer.start_as_current_span("call"):
        await rate.acquire()  # waits 0.5 s for the next token
    (point,) = histogram(otel)
    assert isinstance(point, HistogramDataPoint)
    assert dict(point.attributes or {}) == {
        "trioflow.rate_limiter.name": "outbound",
        "trioflow.kind": "rate_limiter",
    }
    assert point.count == 1
    assert point.sum == pytest.approx(0.5)
    (event,) = otel.span("call").events
    assert event.name == "trioflow.wait"
    assert dict(event.attributes or {}) == {
        "trioflow.rate_limiter.name": "outbound",
        "trioflow.kind": "rate_limiter",
        "trioflow.wait.duration": pytest.approx(0.5),
    }


async def test_rate_reservation_wait_is_recorded(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    rate = tf.RateLimiter(4, burst=1, name="reserved")
    await rate.acquire()
    reservation = rate.reserve()
    await reservation.wait()
    (point,) = histogram(otel)
    assert point.count == 1
    assert point.sum == pytest.approx(0.25)


async def test_rate_limiter_as_a_task_group_limit_is_not_accepted() -> None:
    """A rate limiter spends tokens instead of lending them, so it cannot bound a group."""
    with pytest.raises(TypeError, match="limit must be an int, a limiter or None"):
        tf.open_task_group(limit=tf.RateLimiter(1))
