"""Spans and metrics of pipeline runs: the run, its stages, one trace per item, batches."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import INVALID_SPAN, Link, SpanKind, StatusCode, TraceState
from opentelemetry.util.types import Attributes

import trioflow as tf
from trioflow._pipeline._runtime import engine_of
from trioflow.telemetry import _hooks

from .conftest import Otel, close_otel, make_otel
from .test_metrics import histogram as wait_histogram
from .test_metrics import points


def named(otel: Otel, name: str) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.name == name]


def item_spans(otel: Otel, name: str) -> list[ReadableSpan]:
    """The per-item spans named ``name`` (CONSUMER), not the run-level stage span."""
    return [s for s in named(otel, name) if s.kind is SpanKind.CONSUMER]


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def item_of(span: ReadableSpan) -> int:
    return attrs_of(span)["trioflow.item.id"]


async def double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x * 2


async def inc(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x + 1


# -- "stage" level ----------------------------------------------------------------------


async def test_stage_level_run_and_stage_spans(autojump_clock: trio.testing.MockClock) -> None:
    o = make_otel("stage")
    try:
        tracer = o.tracer_provider.get_tracer("user")
        api = tf.CapacityLimiter(1, name="api")

        async def enrich(x: int) -> int:
            with tracer.start_as_current_span("user call"):
                await trio.sleep(0.01)
            return x

        async def slow(x: int) -> int:
            async with api:  # two workers, one token: waits
                await trio.sleep(0.5)
            return x

        pipe = (
            tf.Pipeline("events")
            .map(enrich, name="enrich")
            .map(slow, workers=2, name="slow")
            .filter(lambda x: x % 2 == 0, name="even")
        )
        with tracer.start_as_current_span("job") as job:
            report = await pipe.run(range(4))
        assert report.delivered == 2
        run = o.span("pipeline events")
        assert run.parent == job.get_span_context()
        assert run.kind is SpanKind.INTERNAL
        a = attrs_of(run)
        assert a["trioflow.pipeline.name"] == "events"
        # The stages, in pipeline order (issue 16).
        assert a["trioflow.pipeline.stages"] == ("enrich", "slow", "even")
        assert (a["trioflow.pipeline.source_items"], a["trioflow.pipeline.delivered"]) == (4, 2)
        assert (a["trioflow.pipeline.filtered"], a["trioflow.pipeline.unfinished"]) == (2, 0)
        assert run.status.status_code is StatusCode.UNSET
        stages = {s.name: s for s in o.spans() if s.name.startswith("stage ")}
        assert set(stages) == {"stage enrich", "stage slow", "stage even"}
        for s in stages.values():
            assert s.parent == run.context
            assert s.kind is SpanKind.INTERNAL
            assert attrs_of(s)["trioflow.pipeline.name"] == "events"
        even = attrs_of(stages["stage even"])
        assert (even["trioflow.stage.received"], even["trioflow.stage.emitted"]) == (4, 2)
        assert even["trioflow.stage.filtered"] == 2
        assert even["trioflow.stage.kind"] == "filter"
        # At "stage" level a worker runs with its stage's span current:
        for user in named(o, "user call"):
            assert user.parent == stages["stage enrich"].context
        assert len(named(o, "user call")) == 4
        waits = [e for e in stages["stage slow"].events if e.name == "trioflow.wait"]
        assert waits
        assert all(attrs_of_event(e)["trioflow.limiter.name"] == "api" for e in waits)
        assert [s for s in o.spans() if s.name.startswith("source ")] == []  # no item traces
    finally:
        close_otel(o)


def attrs_of_event(event: Any) -> dict[str, Any]:
    return dict(event.attributes or {})


# -- "item" level: one trace per item ---------------------------------------------------------


async def test_one_trace_per_item_across_channels(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("user")

    async def enrich(x: int) -> int:
        with tracer.start_as_current_span("user call"):
            await trio.lowlevel.checkpoint()
        return x

    pipe = (
        tf.Pipeline("orders")
        .map(enrich, workers=3, buffer=2, name="enrich")
        .map(double, workers=2, name="double")
        .each(inc, name="audit")
    )
    with tracer.start_as_current_span("job"):
        await pipe.run(range(6))
    run = otel.span("pipeline orders")
    sources = {item_of(s): s for s in named(otel, "source orders")}
    assert sorted(sources) == list(range(6))
    traces = set()
    for i, source in sources.items():
        assert source.kind is SpanKind.PRODUCER
        assert source.parent is None  # a trace of its own, not a piece of the run's
        assert [link.context for link in source.links] == [run.context]
        trace_id = source.context.trace_id
        traces.add(trace_id)
        assert trace_id != run.context.trace_id
        spans = [s for s in otel.spans() if s.context.trace_id == trace_id]
        by_name = {s.name: s for s in spans}
        assert sorted(by_name) == [
            "source orders",
            "stage audit",
            "stage double",
            "stage enrich",
            "user call",
        ]
        assert len(spans) == 5
        enrich_span = by_name["stage enrich"]
        # The chain: each stage is a child of the item's previous span.
        assert enrich_span.parent == source.context
        assert by_name["stage double"].parent == enrich_span.context
        assert by_name["stage audit"].parent == by_name["stage double"].context
        assert by_name["user call"].parent == enrich_span.context
        for name in ("stage enrich", "stage double", "stage audit"):
            s = by_name[name]
            assert s.kind is SpanKind.CONSUMER
            assert attrs_of(s) == {
                "trioflow.stage.name": name.removeprefix("stage "),
                "trioflow.pipeline.name": "orders",
                "trioflow.item.id": i,
                "trioflow.outcome": "emitted",
            }
    assert len(traces) == 6
    # Stage spans of the run still exist, in the run's own trace.
    run_stages = [s for s in otel.spans() if s.parent == run.context]
    assert sorted(s.name for s in run_stages) == ["stage audit", "stage double", "stage enrich"]


async def test_filter_and_flat_map_outcomes(otel: Otel) -> None:
    async def split(x: int) -> list[int]:
        await trio.lowlevel.checkpoint()
        return [x] * x  # 0 -> nothing, 1 -> one, 2 -> two

    pipe = (
        tf.Pipeline("p")
        .filter(lambda x: x != 3, name="not3")
        .flat_map(split, name="split")
        .map(inc, name="after")
    )
    report = await pipe.run(range(4))
    assert report.delivered == 2  # item 1 (one child) and item 2 (two children)
    not3 = {item_of(s): attrs_of(s)["trioflow.outcome"] for s in item_spans(otel, "stage not3")}
    # the run-level stage span has no item id; item spans do
    assert not3 == {0: "emitted", 1: "emitted", 2: "emitted", 3: "filtered"}
    split_spans = {item_of(s): s for s in named(otel, "stage split") if s.kind is SpanKind.CONSUMER}
    assert attrs_of(split_spans[0])["trioflow.outcome"] == "filtered"  # split into nothing
    assert attrs_of(split_spans[2])["trioflow.outcome"] == "emitted"
    after = [s for s in named(otel, "stage after") if s.kind is SpanKind.CONSUMER]
    children_of_2 = [s for s in after if s.parent == split_spans[2].context]
    assert len(children_of_2) == 2  # each child of the flat_map continues the item's trace
    assert len(after) == 3


async def test_retries_are_events_and_errors_mark_the_span(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    calls: dict[int, int] = {}

    async def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        await trio.sleep(0.01)
        if x == 1 and calls[x] < 3:
            raise ConnectionError("reset")
        if x == 2:
            raise KeyError("sku")
        return x

    letters: list[tf.DeadLetter] = []
    pipe = tf.Pipeline("p").map(
        flaky,
        retry=tf.Retry(attempts=3, backoff=tf.Backoff.constant(0.5)),
        on_error="dead_letter",
        name="call",
    )
    report = await pipe.run(range(3))
    letters = list(report.dead_letters)
    assert [d.item for d in letters] == [2]
    spans = {item_of(s): s for s in named(otel, "stage call") if s.kind is SpanKind.CONSUMER}
    ok = spans[1]
    assert attrs_of(ok)["trioflow.outcome"] == "emitted"
    assert ok.status.status_code is StatusCode.UNSET
    retries = [e for e in ok.events if e.name == "trioflow.retry"]
    assert [attrs_of_event(e) for e in retries] == [
        {"trioflow.attempt": 1, "error.type": "ConnectionError", "trioflow.retry.delay": 0.5},
        {"trioflow.attempt": 2, "error.type": "ConnectionError", "trioflow.retry.delay": 0.5},
    ]
    dead = spans[2]
    assert attrs_of(dead)["trioflow.outcome"] == "dead_lettered"
    assert attrs_of(dead)["error.type"] == "KeyError"
    assert dead.status.status_code is StatusCode.ERROR
    assert [e.name for e in dead.events] == [
        "trioflow.retry",
        "trioflow.retry",
        "exception",
    ]
    assert spans[0].events == ()


async def test_skip_and_fail(otel: Otel) -> None:
    async def bad(x: int) -> int:
        await trio.lowlevel.checkpoint()
        if x == 1:
            raise ValueError("bad item")
        return x

    await tf.Pipeline("skipping").map(bad, on_error="skip", name="m").run(range(3))
    skipped = [s for s in named(otel, "stage m") if s.kind is SpanKind.CONSUMER and item_of(s) == 1]
    assert attrs_of(skipped[0])["trioflow.outcome"] == "skipped"
    assert attrs_of(skipped[0])["error.type"] == "ValueError"

    with pytest.raises(ValueError, match="bad item"):
        await tf.Pipeline("failing").map(bad, name="f").run(range(3))
    run = otel.span("pipeline failing")
    assert run.status.status_code is StatusCode.ERROR
    assert attrs_of(run)["error.type"] == "ValueError"
    assert [e.name for e in run.events] == ["exception"]
    failed = [s for s in named(otel, "stage f") if s.kind is SpanKind.CONSUMER and item_of(s) == 1]
    assert attrs_of(failed[0])["trioflow.outcome"] == "unfinished"
    assert attrs_of(failed[0])["error.type"] == "ValueError"
    # Every item span ended, whatever the run's end did to it.
    for s in otel.spans():
        assert s.end_time is not None


async def test_cancelled_run(otel: Otel) -> None:
    gate = trio.Event()

    async def stuck(x: int) -> int:
        await gate.wait()
        return x

    async with tf.Pipeline("c").map(stuck, name="s").open(range(3)) as run:
        await trio.testing.wait_all_tasks_blocked()
        run.cancel()
    # item 0 in the worker, item 1 in the reader's hand (waiting to be taken)
    assert run.report.unfinished == 2
    span = otel.span("pipeline c")
    assert attrs_of(span)["trioflow.cancelled"] is True
    assert attrs_of(span)["trioflow.pipeline.unfinished"] == 2
    s = [x for x in named(otel, "stage s") if x.kind is SpanKind.CONSUMER]
    assert [attrs_of(x)["trioflow.outcome"] for x in s] == ["unfinished"]
    assert attrs_of(s[0])["trioflow.cancelled"] is True
    # the item the reader was still handing in ends its source span cancelled
    sources = {item_of(x): x for x in named(otel, "source c")}
    assert "trioflow.cancelled" not in attrs_of(sources[0])
    assert attrs_of(sources[1])["trioflow.cancelled"] is True


# -- batches --------------------------------------------------------------------------------


async def test_batch_span_links_to_its_items(otel: Otel) -> None:
    written: list[list[int]] = []

    async def write(batch: list[int]) -> int:
        await trio.lowlevel.checkpoint()
        written.append(batch)
        return len(batch)

    pipe = (
        tf.Pipeline("b").map(double, name="double").batch(3, name="group").map(write, name="write")
    )
    await pipe.run(range(7))
    assert [len(b) for b in written] == [3, 3, 1]
    group_items = {item_of(s): s for s in named(otel, "stage group") if s.kind is SpanKind.CONSUMER}
    assert sorted(group_items) == list(range(7))
    for i, s in group_items.items():
        assert attrs_of(s)["trioflow.outcome"] == "emitted"
        assert s.parent == next(
            d.context
            for d in named(otel, "stage double")
            if d.kind is SpanKind.CONSUMER and item_of(d) == i
        )
    batches = sorted(named(otel, "batch group"), key=item_of)
    assert [attrs_of(b)["trioflow.batch.size"] for b in batches] == [3, 3, 1]
    writes = {s.parent.span_id: s for s in named(otel, "stage write") if s.parent}
    for b, first in zip(batches, (0, 3, 6), strict=True):
        assert b.parent is None  # a batch starts a trace of its own...
        assert b.kind is SpanKind.CONSUMER
        assert item_of(b) == first
        size = attrs_of(b)["trioflow.batch.size"]
        members = [group_items[i] for i in range(first, first + size)]
        # ... linked to the span of each item it holds, in order
        assert [link.context for link in b.links] == [m.context for m in members]
        assert b.context.trace_id not in {s.context.trace_id for s in group_items.values()}
        assert attrs_of(b)["trioflow.outcome"] == "emitted"
        # Trace ids to copy, both ways (issue 16):
        assert attrs_of(b)["trioflow.item.trace_ids"] == tuple(
            format(m.context.trace_id, "032x") for m in members
        )
        for m in members:
            assert attrs_of(m)["trioflow.batch.trace_id"] == format(b.context.trace_id, "032x")
        # The stage after the batch continues its trace.
        w = writes[b.context.span_id]
        assert w.kind is SpanKind.CONSUMER
        assert w.context.trace_id == b.context.trace_id
        assert attrs_of(w)["trioflow.outcome"] == "emitted"


async def test_batch_links_are_capped(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "4")
    pipe = tf.Pipeline("cap").batch(10, name="group").each(trio.sleep, name="after")

    async def nap(batch: list[int]) -> None:
        await trio.lowlevel.checkpoint()

    pipe = tf.Pipeline("cap").batch(10, name="group").each(nap, name="after")
    await pipe.run(range(10))
    (batch,) = named(otel, "batch group")
    assert len(batch.links) == 4
    assert attrs_of(batch)["trioflow.batch.size"] == 10
    assert attrs_of(batch)["trioflow.batch.links_dropped"] == 6
    assert len(attrs_of(batch)["trioflow.item.trace_ids"]) == 4  # within the link limit


async def test_stages_after_a_batch_continue_its_trace(otel: Otel) -> None:
    async def total(batch: list[int]) -> int:
        await trio.lowlevel.checkpoint()
        return sum(batch)

    pipe = tf.Pipeline("p").batch(2, name="pair").map(total, name="sum").map(inc, name="inc")
    await pipe.run(range(4))
    sums = [s for s in named(otel, "stage sum") if s.kind is SpanKind.CONSUMER]
    incs = [s for s in named(otel, "stage inc") if s.kind is SpanKind.CONSUMER]
    assert len(sums) == 2
    assert len(incs) == 2
    assert sorted(i.parent.span_id for i in incs if i.parent) == sorted(
        s.context.span_id for s in sums
    )
    pairs = named(otel, "batch pair")
    assert sorted(s.parent.span_id for s in sums if s.parent) == sorted(
        p.context.span_id for p in pairs
    )
    assert all(not i.links for i in [*sums, *incs])  # only the batch's own span links


# -- other paths: ordered stages, threads, sampling -------------------------------------------


async def test_ordered_stage_and_threads(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("user")

    def blocking(x: int) -> int:
        with tracer.start_as_current_span("in thread"):
            return x

    pipe = (
        tf.Pipeline("o")
        .map(double, workers=3, ordered=True, name="ordered")
        .map(blocking, executor="thread", name="thread")
    )
    async with pipe.open(range(5)) as run:
        got = [x async for x in run.outputs]
    assert got == [0, 2, 4, 6, 8]
    ordered = {item_of(s): s for s in named(otel, "stage ordered") if s.kind is SpanKind.CONSUMER}
    threads = {item_of(s): s for s in named(otel, "stage thread") if s.kind is SpanKind.CONSUMER}
    assert sorted(ordered) == sorted(threads) == list(range(5))
    for i in range(5):
        assert threads[i].parent == ordered[i].context
        assert attrs_of(ordered[i])["trioflow.outcome"] == "emitted"
    in_thread = named(otel, "in thread")
    assert sorted(s.parent.span_id for s in in_thread if s.parent) == sorted(
        t.context.span_id for t in threads.values()
    )


class OddItemsOff(Sampler):
    """Samples everything but the ``source`` spans of odd items (as a 50% ratio might)."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if name.startswith("source ") and int((attributes or {})["trioflow.item.id"]) % 2:  # type: ignore[arg-type]
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "OddItemsOff"


@pytest.fixture
def sampled_otel() -> Iterator[Otel]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    o = make_otel()
    o.handle.shutdown()
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=OddItemsOff())
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    o.tracer_provider = tp
    o.spans_exporter = exporter
    o.handle = tf.telemetry.use(tracer_provider=tp, meter_provider=o.meter_provider)
    yield o
    close_otel(o)


async def test_an_unsampled_item_gets_no_stage_spans(sampled_otel: Otel) -> None:
    o = sampled_otel
    tracer = o.tracer_provider.get_tracer("user")

    async def enrich(x: int) -> int:
        with tracer.start_as_current_span("user call"):
            await trio.lowlevel.checkpoint()
        return x

    with tracer.start_as_current_span("job") as job:
        await tf.Pipeline("s").map(enrich, name="enrich").map(double, name="d").run(range(4))
    assert sorted(item_of(s) for s in named(o, "source s")) == [0, 2]
    items = [s for s in o.spans() if s.kind is SpanKind.CONSUMER]
    assert sorted(item_of(s) for s in items) == [0, 0, 2, 2]
    users = named(o, "user call")
    enrich_ids = {s.context.span_id for s in items if s.name == "stage enrich"}
    in_items = [u for u in users if u.parent is not None and u.parent.span_id in enrich_ids]
    on_their_own = [u for u in users if u.parent is None]
    # The unsampled items' user spans are roots of their own, not pieces of the job's trace.
    assert (len(in_items), len(on_their_own)) == (2, 2)
    assert all(u.context.trace_id != job.get_span_context().trace_id for u in users)


class CountingSampler(Sampler):
    """Samples everything, and counts the root spans it was asked about by name prefix."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        prefix = name.split(" ")[0]
        self.asked[prefix] = self.asked.get(prefix, 0) + 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "CountingSampler"


@pytest.mark.parametrize("rate", [0.0, 0.1, 1.0])
async def test_item_sampling_is_drawn_before_any_span(rate: float) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    sampler = CountingSampler()
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=sampler)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    n = 2000
    with tf.telemetry.use(tracer_provider=tp, item_sampling=rate) as handle:
        assert handle.item_sampling == rate
        report = await tf.Pipeline("s").map(inc, name="a").map(double, name="b").run(range(n))
    tp.shutdown()
    assert report.delivered == n
    spans = list(exporter.get_finished_spans())
    sources = [s for s in spans if s.name == "source s"]
    # The tracer was asked about a source span only for the items drawn in:
    # an item left out never reached it.
    assert sampler.asked.get("source", 0) == len(sources)
    if rate == 0.0:
        assert sources == []
    elif rate == 1.0:
        assert len(sources) == n
    else:  # binomial(2000, 0.1): mean 200, sd 13.4; these bounds are 6 sd out
        assert 120 <= len(sources) <= 280, len(sources)
    # Every item drawn in has its whole trace, and no other item has any span.
    traced = {item_of(s) for s in sources}
    items = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert sorted(item_of(s) for s in items) == sorted([*traced, *traced])
    by_trace = {s.context.trace_id for s in sources}
    assert {s.context.trace_id for s in items} == by_trace
    # The run and its stages are traced whatever the share.
    assert [s.name for s in spans if s.name.startswith("pipeline ")] == ["pipeline s"]
    assert sum(s.kind is SpanKind.INTERNAL and s.name.startswith("stage ") for s in spans) == 2


# -- tracing off, and the fast path -------------------------------------------------------------


async def test_tracing_off_keeps_the_fast_path() -> None:
    o = make_otel("off")
    try:
        pipe = tf.Pipeline("quiet").map(double, name="m")
        async with pipe.open(range(3)) as run:
            got = [x async for x in run.outputs]
            stage = engine_of(run).stages[0]
            assert stage.trace_items is False
            assert stage.stage_hook is not None  # metrics are on
        assert got == [0, 2, 4]
        assert o.spans() == []
    finally:
        close_otel(o)


async def test_no_telemetry_at_all() -> None:
    assert _hooks.tracing == _hooks.OFF
    assert _hooks.stage_hook is None
    async with tf.Pipeline("bare").map(double).open(range(2)) as run:
        assert [x async for x in run.outputs] == [0, 2]
        assert engine_of(run).stages[0].stage_hook is None
        assert engine_of(run).span is INVALID_SPAN


_NO_SDK_CHECK = """
import trio
import trioflow as tf
from opentelemetry.trace import INVALID_SPAN
from trioflow._pipeline._runtime import engine_of
from trioflow.telemetry import _hooks

async def double(x):
    return 2 * x

async def main():
    with tf.telemetry.use(tracing="item"):
        async with tf.Pipeline("bare").map(double).open(range(2)) as run:
            assert [x async for x in run.outputs] == [0, 2]
            stage = engine_of(run).stages[0]
            assert stage.stage_hook is None
            assert stage.trace_items is False
            assert engine_of(run).span is INVALID_SPAN
    print("ok")

trio.run(main)
"""


def test_use_without_an_sdk_costs_no_per_item_hook() -> None:
    """``tf.telemetry.use()`` on OpenTelemetry's own no-op providers (a fresh process, where
    no SDK was ever set): the run decides once, when it starts, that nothing would be
    recorded, and runs no per-item telemetry code (issue 21)."""
    out = subprocess.run(
        [sys.executable, "-c", _NO_SDK_CHECK], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "ok", out.stderr


# -- metrics ---------------------------------------------------------------------------------


def stage_key(stage: str, pipeline: str, outcome: str | None = None) -> tuple[tuple[str, Any], ...]:
    items = [("trioflow.stage.name", stage), ("trioflow.pipeline.name", pipeline)]
    if outcome is not None:
        items.append(("trioflow.outcome", outcome))
    return tuple(sorted(items))


def stage_histogram(otel: Otel) -> dict[tuple[tuple[str, Any], ...], Any]:
    metric = otel.metrics().get("trioflow.stage.duration")
    if metric is None:
        return {}
    return {tuple(sorted((p.attributes or {}).items())): p for p in metric.data.data_points}


async def test_stage_and_pipeline_metrics(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    gate = trio.Event()

    async def slow(x: int) -> int:
        await trio.sleep(0.25)
        if x == 3:
            raise ValueError("three")
        return x

    async def wait_gate(x: int) -> int:
        await gate.wait()
        return x

    pipe = (
        tf.Pipeline("m")
        .map(slow, on_error="skip", name="slow")
        .filter(lambda x: x != 0, name="nonzero")
        .map(wait_gate, buffer=4, name="gated")
    )
    async with pipe.open(range(6)) as run:
        with trio.fail_after(60):
            while engine_of(run).stages[2].queued < 3:
                await trio.sleep(0.1)
        # 1 item held by the gated worker, 3 in its buffer
        assert points(otel, "trioflow.stage.queue")[stage_key("gated", "m")] == 3
        in_flight = points(otel, "trioflow.pipeline.in_flight")[(("trioflow.pipeline.name", "m"),)]
        assert in_flight == 4  # read 6: item 0 filtered, item 3 skipped
        gate.set()
        got = [x async for x in run.outputs]
    assert sorted(got) == [1, 2, 4, 5]
    items = points(otel, "trioflow.stage.items")
    assert items[stage_key("slow", "m", "emitted")] == 5
    assert items[stage_key("slow", "m", "skipped")] == 1
    assert items[stage_key("nonzero", "m", "filtered")] == 1
    assert items[stage_key("nonzero", "m", "emitted")] == 4
    assert items[stage_key("gated", "m", "unfinished")] == 0
    assert points(otel, "trioflow.stage.queue")[stage_key("gated", "m")] == 0
    pipeline_items = points(otel, "trioflow.pipeline.items")
    assert pipeline_items[(("trioflow.outcome", "delivered"), ("trioflow.pipeline.name", "m"))] == 4
    assert pipeline_items[(("trioflow.outcome", "skipped"), ("trioflow.pipeline.name", "m"))] == 1
    assert pipeline_items[(("trioflow.outcome", "filtered"), ("trioflow.pipeline.name", "m"))] == 1
    assert points(otel, "trioflow.pipeline.in_flight")[(("trioflow.pipeline.name", "m"),)] == 0
    metrics = otel.metrics()
    assert metrics["trioflow.stage.items"].data.is_monotonic  # type: ignore[union-attr]
    assert metrics["trioflow.stage.items"].unit == "{item}"

    hist = stage_histogram(otel)
    ok = hist[stage_key("slow", "m")]
    assert ok.count == 5
    assert ok.sum == pytest.approx(1.25)
    failed = hist[tuple(sorted((*stage_key("slow", "m"), ("error.type", "ValueError"))))]
    assert failed.count == 1
    assert hist[stage_key("nonzero", "m")].count == 5  # item 3 was skipped before it
    assert metrics["trioflow.stage.duration"].unit == "s"
    assert tuple(ok.explicit_bounds)[:2] == (0.0001, 0.00025)
    assert wait_histogram(otel) == []


async def test_two_runs_of_one_pipeline_add_up(otel: Otel) -> None:
    gate = trio.Event()

    async def wait_gate(x: int) -> int:
        await gate.wait()
        return x

    pipe = tf.Pipeline("twice").map(wait_gate, name="g")
    async with pipe.open(range(2)) as one, pipe.open(range(3)) as two:
        await trio.testing.wait_all_tasks_blocked()
        # each run: one item in its worker, one in its reader's hand; one point for both
        assert (
            points(otel, "trioflow.pipeline.in_flight")[(("trioflow.pipeline.name", "twice"),)] == 4
        )
        gate.set()
        await one.wait()
        await two.wait()
    delivered = points(otel, "trioflow.pipeline.items")
    assert delivered[(("trioflow.outcome", "delivered"), ("trioflow.pipeline.name", "twice"))] == 5


async def test_a_wait_inside_a_stage_is_a_log_on_the_items_span(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    api = tf.CapacityLimiter(1, name="api")

    async def call(x: int) -> int:
        await trio.sleep(0.5)
        return x

    pipe = tf.Pipeline("w").map(call, workers=2, limiter=api, name="call")
    await pipe.run(range(2))
    spans = {item_of(s): s for s in item_spans(otel, "stage call")}
    waited = [s for s in spans.values() if any(e.name == "trioflow.wait" for e in s.events)]
    (span,) = waited  # one of the two items waited 0.5 s for the other's token
    (event,) = span.events
    assert attrs_of_event(event) == {
        "trioflow.limiter.name": "api",
        "trioflow.kind": "limiter",
        "trioflow.wait.duration": pytest.approx(0.5),
    }


async def test_stop_past_its_grace_marks_the_run_cancelled(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(10)
        return x

    async with tf.Pipeline("g").map(slow, name="slow").open(range(3)) as run:
        await trio.sleep(1)
        await run.stop(grace=1)
    assert run.report.unfinished >= 1
    span = otel.span("pipeline g")
    assert attrs_of(span)["trioflow.cancelled"] is True
    (item,) = item_spans(otel, "stage slow")
    assert attrs_of(item)["trioflow.outcome"] == "unfinished"
    assert attrs_of(item)["trioflow.cancelled"] is True


async def test_stage_durations_switch_stops_only_the_histogram(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``use(stage_durations=False)``: no stage hook on the hot path, no histogram points,
    and the other pipeline metrics still report (issue 16)."""
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    with tf.telemetry.use(meter_provider=mp, stage_durations=False) as handle:
        assert handle.stage_durations is False
        assert _hooks.stage_hook is None
        assert _hooks.metrics is True
        pipe = tf.Pipeline("quiet").map(_double, name="double")
        async with pipe.open(range(5)) as run:
            assert [x async for x in run.outputs] == [0, 2, 4, 6, 8]
            data = reader.get_metrics_data()
        names = {
            m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        assert "trioflow.stage.duration" not in names
        assert "trioflow.stage.items" in names
        assert "trioflow.pipeline.items" in names
    with tf.telemetry.use(meter_provider=mp) as handle:
        assert handle.stage_durations is True
        assert _hooks.stage_hook is not None
    mp.shutdown()
    with pytest.raises(TypeError, match=r"^stage_durations must be a bool, got 'no' \(str\)$"):
        tf.telemetry.use(meter_provider=mp, stage_durations="no")  # type: ignore[arg-type]
    # configure() checks it before it builds anything (no provider, nothing active)
    with pytest.raises(TypeError, match=r"^stage_durations must be a bool, got 1 \(int\)$"):
        tf.telemetry.configure("svc", console=True, stage_durations=1)  # type: ignore[arg-type]
    assert _hooks.stage_hook is None
    assert not _hooks.metrics


async def _double(x: int) -> int:
    return 2 * x
