"""The Jaeger JSON file: the format Jaeger's query API returns and its UI uploads offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.trace import SpanKind

import trioflow as tf
from trioflow.telemetry import _spans

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TAG_TYPES = {"string": str, "bool": bool, "int64": int, "float64": float}


def check_tag(tag: dict[str, Any]) -> None:
    assert set(tag) == {"key", "type", "value"}
    assert isinstance(tag["key"], str)
    expected = TAG_TYPES[tag["type"]]
    assert isinstance(tag["value"], expected)
    if expected is int:
        assert not isinstance(tag["value"], bool)


def check_jaeger_document(doc: dict[str, Any]) -> None:
    """Every key the Jaeger UI's trace loader (transformTraceData) reads, with its type."""
    assert isinstance(doc["data"], list)
    for trace in doc["data"]:
        assert {"traceID", "spans", "processes"} <= set(trace)
        assert HEX32.match(trace["traceID"])
        processes = trace["processes"]
        assert isinstance(processes, dict)
        for process in processes.values():
            assert isinstance(process["serviceName"], str)
            for tag in process["tags"]:
                check_tag(tag)
        span_ids: set[str] = set()
        for span in trace["spans"]:
            required = {
                "traceID",
                "spanID",
                "operationName",
                "references",
                "startTime",
                "duration",
                "tags",
                "logs",
                "processID",
            }
            assert required <= set(span)
            assert span["traceID"] == trace["traceID"]
            assert HEX16.match(span["spanID"])
            assert span["spanID"] not in span_ids
            span_ids.add(span["spanID"])
            assert isinstance(span["operationName"], str)
            assert isinstance(span["startTime"], int)
            assert span["startTime"] > 1_600_000_000_000_000  # microseconds since the epoch
            assert isinstance(span["duration"], int)
            assert span["duration"] >= 0
            assert span["processID"] in processes
            for ref in span["references"]:
                assert ref["refType"] in ("CHILD_OF", "FOLLOWS_FROM")
                assert HEX32.match(ref["traceID"])
                assert HEX16.match(ref["spanID"])
            for tag in span["tags"]:
                check_tag(tag)
            for log in span["logs"]:
                assert isinstance(log["timestamp"], int)
                for field in log["fields"]:
                    check_tag(field)
            assert span["warnings"] is None or all(isinstance(w, str) for w in span["warnings"])


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def by_name(doc: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {s["operationName"]: (s, trace) for trace in doc["data"] for s in trace["spans"]}


async def test_jaeger_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,host.cores=2")
    path = tmp_path / "trace.json"
    with tf.telemetry.configure("shop", jaeger_file=path, set_global=False):
        limiter = tf.CapacityLimiter(1, name="db")
        pipeline = _spans.start_span(
            "pipeline orders", attributes={"trioflow.pipeline.name": "orders"}
        )
        item = _spans.start_span("item", kind=SpanKind.PRODUCER, parent=None)
        stage = _spans.start_span(
            "stage enrich", kind=SpanKind.CONSUMER, parent=_spans.context_of(item)
        )

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with limiter:
                task_status.started()
                await trio.sleep(0.01)

        with _spans.activate(stage):
            async with trio.open_nursery() as nursery:
                await nursery.start(holder)
                async with limiter:  # waits: an event on the stage span
                    pass
        _spans.end_span(stage, ValueError("no such sku"))
        batch = _spans.start_batch_span("stage write", [_spans.context_of(item)])
        _spans.end_span(batch)
        _spans.end_span(item)
        _spans.end_span(pipeline)
    doc = json.loads(path.read_text())
    check_jaeger_document(doc)
    spans = by_name(doc)
    assert set(spans) == {"pipeline orders", "item", "stage enrich", "stage write"}
    assert len(doc["data"]) == 3  # pipeline, the item's trace, the batch's trace

    item_span, item_trace = spans["item"]
    stage_span, stage_trace = spans["stage enrich"]
    assert stage_trace is item_trace
    assert stage_span["references"] == [
        {"refType": "CHILD_OF", "traceID": item_span["traceID"], "spanID": item_span["spanID"]}
    ]
    assert tags(item_span)["span.kind"] == "producer"
    stage_tags = tags(stage_span)
    assert stage_tags["span.kind"] == "consumer"
    assert stage_tags["error"] is True
    assert stage_tags["otel.status_code"] == "ERROR"
    assert stage_tags["otel.status_description"] == "ValueError: no such sku"
    assert stage_tags["error.type"] == "ValueError"
    assert stage_tags["otel.scope.name"] == "trioflow"
    events = {
        f["value"]: {g["key"]: g["value"] for g in log["fields"]}
        for log in stage_span["logs"]
        for f in log["fields"]
        if f["key"] == "event"
    }
    assert set(events) == {"trioflow.wait", "exception"}
    assert events["trioflow.wait"]["trioflow.limiter.name"] == "db"
    assert events["trioflow.wait"]["trioflow.wait.duration"] > 0

    batch_span, _ = spans["stage write"]
    assert batch_span["references"] == [
        {"refType": "FOLLOWS_FROM", "traceID": item_span["traceID"], "spanID": item_span["spanID"]}
    ]
    assert tags(batch_span)["trioflow.batch.size"] == 1

    pipe_span, pipe_trace = spans["pipeline orders"]
    assert pipe_span["references"] == []
    process = pipe_trace["processes"][pipe_span["processID"]]
    assert process["serviceName"] == "shop"
    process_tags = {t["key"]: t for t in process["tags"]}
    assert process_tags["deployment.environment"]["value"] == "test"
    assert process_tags["host.cores"] == {"key": "host.cores", "type": "string", "value": "2"}
    assert "service.name" not in process_tags


def test_tag_types_and_dropped_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    path = tmp_path / "t.json"
    exporter = tf.telemetry.jaeger_file_exporter(str(path))
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span(
        "typed",
        attributes={"b": True, "i": 3, "f": 0.5, "s": "x", "l": [1, 2]},
    )
    span.add_event("one")
    span.add_event("two")
    span.end()
    exporter.force_flush()
    doc = json.loads(path.read_text())
    check_jaeger_document(doc)
    (span_doc,) = doc["data"][0]["spans"]
    typed = {t["key"]: (t["type"], t["value"]) for t in span_doc["tags"]}
    assert typed["b"] == ("bool", True)
    assert typed["i"] == ("int64", 3)
    assert typed["f"] == ("float64", 0.5)
    assert typed["s"] == ("string", "x")
    assert typed["l"] == ("string", "[1, 2]")
    assert span_doc["warnings"] == ["1 events dropped by the span limits"]
    provider.shutdown()
    # After shutdown the exporter refuses more and the file stays whole.
    assert json.loads(path.read_text()) == doc


def test_jaeger_file_exporter_rejects_bad_path() -> None:
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got 3"):
        tf.telemetry.jaeger_file_exporter(3)  # type: ignore[arg-type]
