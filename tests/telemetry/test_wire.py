"""On the wire: the real OTLP/HTTP exporter posting to a real HTTP receiver on 127.0.0.1.

The receiver decodes what Jaeger (or any OTLP collector) would receive on
port 4318 — ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``
protobufs — with ``opentelemetry-proto``, and the tests check names, kinds,
parents, links, events and resource attributes as they arrive.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind

import trioflow as tf
from trioflow.telemetry import _spans

from .conftest import Receiver, attributes

KIND = trace_pb2.Span.SpanKind


async def test_spans_on_the_wire(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=wire-test")
    t = tf.telemetry.configure("wire", otlp_endpoint=receiver.endpoint, set_global=False)
    try:
        limiter = tf.CapacityLimiter(1, name="api")
        pipeline = _spans.start_span("pipeline orders")
        items = [
            _spans.start_span(f"item {i}", kind=SpanKind.PRODUCER, parent=None) for i in range(3)
        ]

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with limiter:
                task_status.started()
                await trio.sleep(0.2)

        for i, item in enumerate(items):
            stage = _spans.start_span(
                "stage enrich", kind=SpanKind.CONSUMER, parent=_spans.context_of(item)
            )
            with _spans.activate(stage):
                if i == 0:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(holder)
                        async with limiter:
                            pass
            _spans.end_span(stage, KeyError("sku") if i == 2 else None)
        batch = _spans.start_batch_span("stage write", [_spans.context_of(s) for s in items])
        _spans.end_span(batch)
        for item in items:
            _spans.end_span(item)
        _spans.end_span(pipeline)
    finally:
        report = t.shutdown()
    assert report is not None
    (counts,) = report.destinations
    assert counts.destination == f"otlp {receiver.endpoint}/v1/traces"
    assert (counts.spans, counts.exported, counts.dropped, counts.failed) == (8, 8, 0, 0)
    assert receiver.content_types == {"application/x-protobuf"}

    got = receiver.spans()
    assert len(got) == 8
    resource = attributes(got[0][0].resource.attributes)
    assert resource["service.name"] == "wire"
    assert resource["deployment.environment"] == "wire-test"
    assert resource["telemetry.sdk.language"] == "python"
    assert {scope for _, scope, _ in got} == {"trioflow"}
    spans = [s for _, _, s in got]
    by_id = {s.span_id: s for s in spans}
    names = sorted(s.name for s in spans)
    assert names == [
        "item 0",
        "item 1",
        "item 2",
        "pipeline orders",
        *["stage enrich"] * 3,
        "stage write",
    ]

    pipe = next(s for s in spans if s.name == "pipeline orders")
    assert pipe.kind == KIND.SPAN_KIND_INTERNAL
    assert pipe.parent_span_id == b""
    item_spans = {s.name: s for s in spans if s.name.startswith("item")}
    assert all(s.kind == KIND.SPAN_KIND_PRODUCER for s in item_spans.values())
    assert all(s.parent_span_id == b"" for s in item_spans.values())
    assert len({s.trace_id for s in item_spans.values()} | {pipe.trace_id}) == 4

    stages = [s for s in spans if s.name == "stage enrich"]
    for stage in stages:
        assert stage.kind == KIND.SPAN_KIND_CONSUMER
        parent = by_id[stage.parent_span_id]
        assert parent.name.startswith("item")
        assert parent.trace_id == stage.trace_id
    waited = [s for s in stages if any(e.name == "trioflow.wait" for e in s.events)]
    (stage0,) = waited
    assert by_id[stage0.parent_span_id].name == "item 0"
    (event,) = stage0.events
    assert event.name == "trioflow.wait"
    ev = attributes(event.attributes)
    assert ev["trioflow.limiter.name"] == "api"
    assert ev["trioflow.kind"] == "limiter"
    assert ev["trioflow.wait.duration"] == pytest.approx(0.2)
    failed = next(s for s in stages if by_id[s.parent_span_id].name == "item 2")
    assert failed.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert attributes(failed.attributes)["error.type"] == "KeyError"
    assert [e.name for e in failed.events] == ["exception"]

    write = next(s for s in spans if s.name == "stage write")
    assert write.kind == KIND.SPAN_KIND_CONSUMER
    assert write.parent_span_id == b""
    assert [(link.trace_id, link.span_id) for link in write.links] == [
        (item_spans[f"item {i}"].trace_id, item_spans[f"item {i}"].span_id) for i in range(3)
    ]
    assert attributes(write.attributes)["trioflow.batch.size"] == 3


async def test_metrics_on_the_wire(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    t = tf.telemetry.configure("wire-metrics", otlp_endpoint=receiver.endpoint, set_global=False)
    try:
        limiter = tf.CapacityLimiter(4, name="pool")

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with limiter.hold(weight=4):
                task_status.started()
                await trio.sleep(3)

        async with trio.open_nursery() as nursery:
            await nursery.start(holder)
            async with limiter:
                await limiter.acquire_on_behalf_of("borrower")
    finally:
        t.shutdown()
    assert receiver.traces == []
    values = receiver.metric_points("wire-metrics")
    assert set(values) >= {
        "trioflow.limiter.limit",
        "trioflow.limiter.usage",
        "trioflow.limiter.queue.size",
        "trioflow.limiter.wait.duration",
    }
    limit_attrs, limit = values["trioflow.limiter.limit"][-1]
    assert limit_attrs == {"trioflow.limiter.name": "pool"}
    assert limit.as_int == 4
    hist_attrs, hist = values["trioflow.limiter.wait.duration"][-1]
    assert hist_attrs == {"trioflow.limiter.name": "pool", "trioflow.kind": "limiter"}
    assert hist.count == 1
    assert hist.sum == pytest.approx(3.0)
    assert list(hist.explicit_bounds)[:3] == [0.0001, 0.00025, 0.0005]


def test_failed_exports_are_counted(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 400  # a receiver that rejects everything
    t = tf.telemetry.configure("rejected", otlp_endpoint=receiver.endpoint, set_global=False)
    for i in range(5):
        _spans.end_span(_spans.start_span(f"stage s{i}"))
    report = t.shutdown()
    assert report is not None
    (counts,) = report.destinations
    assert (counts.spans, counts.exported, counts.failed, counts.dropped) == (5, 0, 5, 0)
    assert any("lost spans at shutdown" in r.getMessage() for r in caplog.records)


def test_a_burst_is_not_dropped(receiver: Receiver) -> None:
    """20,000 spans as fast as they can end: the default SDK queue (2048) lost 26% of such bursts."""
    t = tf.telemetry.configure("burst", otlp_endpoint=receiver.endpoint, set_global=False)
    for _ in range(20_000):
        _spans.end_span(_spans.start_span("stage burst"))
    report = t.shutdown()
    assert report is not None
    (counts,) = report.destinations
    assert (counts.spans, counts.dropped, counts.failed) == (20_000, 0, 0)
    assert len(receiver.spans()) == 20_000


async def test_a_pipeline_on_the_wire(
    receiver: Receiver, autojump_clock: trio.testing.MockClock
) -> None:
    """A pipeline run as Jaeger receives it: run, stages, item traces, a batch linked to its items."""
    t = tf.telemetry.configure("wire-pipeline", otlp_endpoint=receiver.endpoint, set_global=False)
    try:

        async def enrich(x: int) -> int:
            await trio.sleep(0.1)
            if x == 2:
                raise KeyError("sku")
            return x

        async def write(batch: list[int]) -> int:
            await trio.sleep(0.1)
            return len(batch)

        pipe = (
            tf.Pipeline("orders")
            .map(enrich, workers=2, on_error="skip", name="enrich")
            .batch(2, name="group")
            .map(write, name="write")
        )
        report = await pipe.run(range(4))
        assert (report.delivered, report.skipped) == (3, 1)
    finally:
        shutdown = t.shutdown()
    assert shutdown is not None
    (counts,) = shutdown.destinations
    assert (counts.dropped, counts.failed) == (0, 0)
    got = receiver.spans()
    assert {attributes(rs.resource.attributes)["service.name"] for rs, _, _ in got} == {
        "wire-pipeline"
    }
    assert {scope for _, scope, _ in got} == {"trioflow"}
    spans = [s for _, _, s in got]
    assert counts.exported == len(spans)
    by_id = {s.span_id: s for s in spans}

    def items(name: str) -> dict[int, trace_pb2.Span]:
        return {
            attributes(s.attributes)["trioflow.item.id"]: s
            for s in spans
            if s.name == name and s.kind == KIND.SPAN_KIND_CONSUMER
        }

    (run,) = [s for s in spans if s.name == "pipeline orders"]
    assert run.kind == KIND.SPAN_KIND_INTERNAL
    assert run.parent_span_id == b""
    run_stages = sorted(s.name for s in spans if s.parent_span_id == run.span_id)
    assert run_stages == ["stage enrich", "stage group", "stage write"]
    assert attributes(run.attributes)["trioflow.pipeline.delivered"] == 3

    sources = {
        attributes(s.attributes)["trioflow.item.id"]: s for s in spans if s.name == "source orders"
    }
    assert sorted(sources) == [0, 1, 2, 3]
    for source in sources.values():
        assert source.kind == KIND.SPAN_KIND_PRODUCER
        assert source.parent_span_id == b""
        assert [(link.trace_id, link.span_id) for link in source.links] == [
            (run.trace_id, run.span_id)
        ]
    enrich_spans = items("stage enrich")
    for i, span in enrich_spans.items():
        assert span.parent_span_id == sources[i].span_id
        assert span.trace_id == sources[i].trace_id
    skipped = enrich_spans[2]
    assert attributes(skipped.attributes)["error.type"] == "KeyError"
    assert attributes(skipped.attributes)["trioflow.outcome"] == "skipped"
    assert skipped.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    group = items("stage group")
    assert sorted(group) == [0, 1, 3]  # item 2 never reached the batch
    for i, span in group.items():
        assert by_id[span.parent_span_id].name == "stage enrich"
        assert span.parent_span_id == enrich_spans[i].span_id
    writes = sorted(items("stage write").values(), key=lambda s: s.start_time_unix_nano)
    assert [attributes(w.attributes)["trioflow.batch.size"] for w in writes] == [2, 1]
    linked: list[int] = []
    for w in writes:
        assert w.parent_span_id == b""  # a batch starts its own trace...
        assert w.trace_id not in {s.trace_id for s in sources.values()}
        for link in w.links:  # ... linked to each item's span in the batch
            target = by_id[link.span_id]
            assert target.name == "stage group"
            assert link.trace_id == target.trace_id
            linked.append(attributes(target.attributes)["trioflow.item.id"])
    assert sorted(linked) == [0, 1, 3]
