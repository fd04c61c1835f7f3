"""The Jaeger file's kept-trace policy: what a person looks for survives, the file stays small."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode, Tracer, set_span_in_context

import trioflow as tf
from trioflow.telemetry import KeepTraces, _keep, _names

SECOND = 1_000_000_000


@pytest.fixture
def tracer() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp.get_tracer("test"), exporter
    tp.shutdown()


def item_trace(
    tracer: Tracer,
    i: int,
    *,
    seconds: float = 0.01,
    error: str | None = None,
    retry: bool = False,
    outcome: str = "emitted",
    root: str = "source orders",
    links: list[Link] | None = None,
    attributes: dict[str, Any] | None = None,
) -> int:
    """One item's trace (a root and a stage span); returns its trace id."""
    start = 1_000 * SECOND + i * SECOND
    end = start + int(seconds * SECOND)
    source = tracer.start_span(root, start_time=start, links=links or [], attributes=attributes)
    stage = tracer.start_span(
        "stage enrich",
        context=set_span_in_context(source),
        start_time=start,
        attributes={_names.OUTCOME: outcome},
    )
    if retry:
        stage.add_event(_names.RETRY_EVENT, {"trioflow.attempt": 1})
    if error is not None:
        stage.set_attribute(_names.ERROR_TYPE, error)
        stage.set_status(Status(StatusCode.ERROR, error))
    stage.end(end_time=end)
    source.end(end_time=end)
    return source.get_span_context().trace_id


def kept_ids(spans: list[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


def test_a_run_within_the_budget_is_kept_whole(tracer: tuple[Tracer, InMemorySpanExporter]) -> None:
    t, exporter = tracer
    for i in range(10):
        item_trace(t, i)
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=10))
    assert kept == spans
    assert (report.traces, report.kept, report.dropped, report.by_reason) == (
        10,
        10,
        0,
        {"all": 10},
    )
    assert str(report) == "all 10 traces kept"
    kept, report = _keep.select(spans, None)
    assert kept == spans


def test_errors_then_retries_then_slow_then_a_sample(
    tracer: tuple[Tracer, InMemorySpanExporter],
) -> None:
    t, exporter = tracer
    errors = {item_trace(t, i, error="KeyError", outcome="dead_lettered") for i in range(3)}
    errors |= {item_trace(t, i, error="TimeoutError") for i in range(3, 5)}
    retries = {item_trace(t, i, retry=True) for i in range(5, 9)}
    slow = {item_trace(t, 9, seconds=30.0)}
    unfinished = {item_trace(t, 10, outcome="unfinished")}
    # Each a little slower than the last: the two slowest are plain[-2:].
    plain = [item_trace(t, i, seconds=0.01 + i * 1e-5) for i in range(11, 211)]
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=20))
    ids = kept_ids(kept)
    assert errors | retries | slow | unfinished <= ids
    assert len(ids) == 20
    assert report.traces == 211
    assert report.kept == 20
    assert report.dropped == 191
    assert report.errors_dropped == 0
    # 1% of 211 same-named traces is 3 slowest: the 30 s one and the two slowest plain ones.
    slow |= set(plain[-2:])
    assert report.by_reason == {
        "error": 5,
        "retry": 4,
        "slow": 3,
        "unfinished": 1,
        "linked": 0,
        "sample": 7,
    }
    # Whole traces: both spans of each kept trace, nothing of the others.
    assert len(kept) == 40
    # The sample is the same every time (chosen by trace id, as the ratio sampler does).
    sampled = ids - errors - retries - slow - unfinished
    rest = sorted(set(plain) - slow, key=lambda tid: tid & 0xFFFF_FFFF_FFFF_FFFF)
    assert sampled == set(rest[:7])
    assert _keep.select(spans, KeepTraces(max_traces=20))[1] == report
    assert str(report) == (
        "20 of 211 traces kept (5 error, 4 retry, 3 slow, 1 unfinished, 7 sample), 191 dropped"
    )


def test_when_errors_alone_exceed_the_budget_every_error_type_is_kept(
    tracer: tuple[Tracer, InMemorySpanExporter],
) -> None:
    t, exporter = tracer
    for i in range(50):
        item_trace(t, i, error="KeyError")
    rare = item_trace(t, 50, error="ZeroDivisionError")
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=10))
    assert rare in kept_ids(kept)
    assert report.kept == 10
    assert report.errors_dropped == 41
    assert report.by_reason["error"] == 10
    assert "41 with errors: max_traces reached" in str(report)


def test_slow_in_seconds_keeps_every_trace_past_it(
    tracer: tuple[Tracer, InMemorySpanExporter],
) -> None:
    t, exporter = tracer
    slow = {item_trace(t, i, seconds=2.0 + i) for i in range(6)}
    for i in range(6, 100):
        item_trace(t, i, seconds=0.5)
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=8, slowest=0.0, slow=2.0))
    assert slow <= kept_ids(kept)
    assert report.by_reason["slow"] == 6
    assert report.by_reason["sample"] == 2


def test_slowness_is_judged_among_traces_of_the_same_kind(
    tracer: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """A pipeline run lasts longer than any item; it must not crowd out the slowest item."""
    t, exporter = tracer
    items = [item_trace(t, i, seconds=0.01 * (i % 7)) for i in range(100)]
    run = item_trace(t, 200, seconds=3600.0, root="pipeline orders")
    slowest_item = item_trace(t, 300, seconds=5.0)
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=3, slowest=0.01))
    assert {run, slowest_item} <= kept_ids(kept)
    assert report.by_reason["slow"] == 3  # ceil(1% of 101 items) = 2, and the run
    del items


def test_a_kept_trace_keeps_the_traces_it_points_to(
    tracer: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """The run its source links to and the batch it went into, but not a batch's other items."""
    t, exporter = tracer
    run = t.start_span("pipeline orders", start_time=0)
    run.end(end_time=1)
    run_link = [Link(run.get_span_context())]
    batch = t.start_span("stage write", start_time=0)
    batch_id = batch.get_span_context().trace_id
    failing = item_trace(
        t,
        0,
        error="KeyError",
        links=run_link,
        attributes={_names.BATCH_TRACE_ID: format(batch_id, "032x")},
    )
    others = [item_trace(t, i, links=run_link) for i in range(1, 60)]
    batch.end(end_time=2)
    # A batch span's links go to its items: they do not pull those items in.
    batch2 = t.start_span(
        "stage write",
        start_time=0,
        links=[Link(s.context) for s in exporter.get_finished_spans() if s.context is not None],
        attributes={_names.BATCH_SIZE: 60},
    )
    batch2.end(end_time=3)
    spans = list(exporter.get_finished_spans())
    kept, report = _keep.select(spans, KeepTraces(max_traces=4, slowest=0.0))
    ids = kept_ids(kept)
    assert {failing, run.get_span_context().trace_id, batch_id} <= ids
    assert report.by_reason["linked"] == 2
    assert report.by_reason["error"] == 1
    assert len(ids & set(others)) <= 1


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match=r"max_traces must be >= 1, got 0"):
        KeepTraces(max_traces=0)
    with pytest.raises(TypeError, match=r"max_traces must be an int, got 1.5"):
        KeepTraces(max_traces=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"slowest must be between 0 and 1, got 2"):
        KeepTraces(slowest=2)
    with pytest.raises(ValueError, match=r"slow must be > 0, got -1"):
        KeepTraces(slow=-1)
    with pytest.raises(TypeError, match=r"keep_traces must be a trioflow.telemetry.KeepTraces"):
        tf.telemetry.jaeger_file_exporter("x.json", keep_traces=300)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"keep_traces must be"):
        tf.telemetry.configure("x", jaeger_file="x.json", keep_traces={})  # type: ignore[arg-type]
    assert KeepTraces(max_traces=None).max_traces is None


# -- a flagship-like run, replayed into the file exporter ------------------------------


class Flaky(Exception):
    """A call that is worth a retry."""


async def test_a_flagship_like_run_keeps_every_error_and_stays_small(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Thousands of item traces through a real pipeline, as the README's first command makes.

    Like ``examples/event_service.py``: an enrichment stage with retries and
    dead letters, a filter, batches of 200 and a writer. The file must hold
    every dead-lettered item's trace and every retried one, stay within the
    policy's budget, and the shutdown report must say what was dropped.
    """
    rng = random.Random(16)
    n = 4000
    dead = set(rng.sample(range(n), 13))
    flaky = set(rng.sample(sorted(set(range(n)) - dead), 70))
    failed_once: set[int] = set()

    async def enrich(i: int) -> int:
        await trio.sleep(0.02)
        if i in dead:
            raise ValueError(f"event {i} has no user")
        if i in flaky and i not in failed_once:
            failed_once.add(i)
            raise Flaky(f"503 for {i}")
        return i

    async def write(batch: list[int]) -> int:
        await trio.sleep(0.01)
        return len(batch)

    path = tmp_path / "flagship.jaeger.json"
    t = tf.telemetry.configure("flagship-like", jaeger_file=path, set_global=False)
    try:
        pipe = (
            tf.Pipeline("events")
            .map(
                enrich,
                workers=50,
                retry=tf.Retry(attempts=3, backoff=tf.Backoff.exponential(0.05), retry_on=Flaky),
                on_error="dead_letter",
                name="enrich",
            )
            .filter(lambda i: i % 20 != 0, name="validate")
            .batch(size=200, max_wait=0.5, name="batch")
            .map(write, name="write")
        )
        report = await pipe.run(range(n))
    finally:
        shutdown = t.shutdown()
    assert {d.item for d in report.dead_letters} == dead
    assert failed_once == flaky

    assert shutdown is not None
    (counts,) = shutdown.destinations
    assert counts.traces is not None
    batches = report.stages["write"].received
    assert counts.traces.traces == n + batches + 1  # items, batches, the run
    assert counts.traces.kept == 300
    assert counts.traces.dropped == n + batches + 1 - 300
    assert counts.traces.errors_dropped == 0
    assert (counts.dropped, counts.failed) == (0, 0)
    assert counts.exported + counts.filtered == counts.spans
    assert f"300 of {n + batches + 1} traces kept" in str(shutdown)

    doc = json.loads(path.read_text())
    assert len(doc["data"]) == 300
    assert path.stat().st_size < 2_000_000  # the unfiltered file is ~15 MB

    def tags(span: dict[str, Any]) -> dict[str, Any]:
        return {tag["key"]: tag["value"] for tag in span["tags"]}

    dead_in_file: set[int] = set()
    retried_in_file: set[int] = set()
    for trace in doc["data"]:
        for span in trace["spans"]:
            tg = tags(span)
            if tg.get("trioflow.outcome") == "dead_lettered":
                assert tg.get("error") is True
                dead_in_file.add(tg["trioflow.item.id"])
            if any(f["value"] == "trioflow.retry" for log in span["logs"] for f in log["fields"]):
                retried_in_file.add(tg["trioflow.item.id"])
    assert dead_in_file == dead
    assert retried_in_file == flaky
    names = {trace["spans"][0]["operationName"] for trace in doc["data"]}
    assert {"pipeline events", "source events", "stage write"} <= names


# -- a file that cannot be written -------------------------------------------------------


def test_a_failed_write_is_a_loss_in_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    path = folder / "trace.json"
    t = tf.telemetry.configure("lost", jaeger_file=path, set_global=False)
    from trioflow.telemetry import _spans

    for i in range(7):
        _spans.end_span(_spans.start_span(f"stage s{i}"))
    shutil.rmtree(folder)  # the disk went away before the program ended
    report = t.shutdown()  # never raises
    assert report is not None
    (counts,) = report.destinations
    assert (counts.spans, counts.exported, counts.failed, counts.dropped) == (7, 0, 7, 0)
    assert counts.error is not None
    assert "No such file or directory" in counts.error
    assert report.failed == 7
    assert "write failed" in str(report)
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not write the Jaeger file" in m for m in messages)
    assert any("lost spans at shutdown" in m for m in messages)
    assert not folder.exists()


def test_a_flush_that_fails_then_a_write_that_works(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    exporter = tf.telemetry.jaeger_file_exporter(folder / "t.json", keep_traces=None)
    from trioflow.telemetry._jaeger import JaegerFileExporter

    assert isinstance(exporter, JaegerFileExporter)
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("test")
    for i in range(3):
        tracer.start_span(f"s{i}").end()
    shutil.rmtree(folder)
    assert exporter.force_flush() is False
    assert (exporter.written, exporter.failed) == (0, 3)
    folder.mkdir()
    tp.shutdown()  # the shutdown write works again
    assert (exporter.written, exporter.failed, exporter.error) == (3, 0, None)
    assert len(json.loads((folder / "t.json").read_text())["data"]) == 3
    late = tracer.start_span("late")
    late.end()
    assert isinstance(late, ReadableSpan)
    # After shutdown the exporter refuses spans, and counts them as failed.
    # (Older SDKs still hand it spans that end after shutdown: count from here.)
    before = exporter.failed
    assert exporter.export([late]) is SpanExportResult.FAILURE
    assert exporter.failed == before + 1


# -- properties over many runs ------------------------------------------------------------


trace_specs = st.lists(
    st.tuples(
        st.sampled_from(["plain", "error", "dead", "retry", "unfinished"]),
        st.floats(min_value=0.0, max_value=10.0),
        st.sampled_from(["source orders", "stage write", "pipeline orders"]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(specs=trace_specs, budget=st.integers(min_value=1, max_value=40))
def test_policy_invariants(specs: list[tuple[str, float, str]], budget: int) -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    t = tp.get_tracer("test")
    kinds: dict[int, str] = {}
    for i, (kind, seconds, root) in enumerate(specs):
        tid = item_trace(
            t,
            i,
            seconds=seconds,
            root=root,
            error={"error": "KeyError", "dead": "ValueError"}.get(kind),
            outcome={"dead": "dead_lettered", "unfinished": "unfinished"}.get(kind, "emitted"),
            retry=kind == "retry",
        )
        kinds[tid] = kind
    tp.shutdown()
    spans = list(exporter.get_finished_spans())
    policy = KeepTraces(max_traces=budget)
    kept, report = _keep.select(spans, policy)
    ids = kept_ids(kept)
    assert report.traces == len(kinds)
    assert report.kept == len(ids) == min(budget, len(kinds))
    assert sum(report.by_reason.values()) == report.kept
    # Whole traces: every span of a kept trace, none of the others.
    assert kept == [s for s in spans if s.context is not None and s.context.trace_id in ids]
    errors = {tid for tid, kind in kinds.items() if kind in ("error", "dead")}
    if len(errors) <= budget:
        assert errors <= ids
        assert report.errors_dropped == 0
    else:
        assert ids <= errors
        assert report.errors_dropped == len(errors) - budget
        # Spread across error types: each is represented while the budget allows.
        types = {kinds[tid] for tid in errors}
        if budget >= len(types):
            assert {kinds[tid] for tid in ids} == types
    retries = {tid for tid, kind in kinds.items() if kind == "retry"}
    if len(errors) + len(retries) <= budget:
        assert retries <= ids
    # The same spans in another order give the same file.
    assert kept_ids(_keep.select(list(reversed(spans)), policy)[0]) == ids
