"""``opentelemetry-instrument python app.py`` gives trioflow's spans and metrics.

The real agent (``opentelemetry-instrument`` from opentelemetry-instrumentation,
with opentelemetry-distro's SDK configurator) runs a small script in a child
process; its OTLP/HTTP exporters post to a receiver on 127.0.0.1, which
decodes what arrives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from trioflow.telemetry import _hooks
from trioflow.telemetry._instrumentor import TrioflowInstrumentor

from .conftest import Receiver, attributes

APP = textwrap.dedent(
    """
    import trio
    import trioflow as tf


    async def main():
        api = tf.CapacityLimiter(1, name="api")

        async def call(i):
            async with api:
                await trio.sleep(0.01)

        async with tf.open_task_group(name="jobs") as tg:
            for i in range(3):
                await tg.spawn(call, i)

        async def double(x):
            return 2 * x

        report = await tf.Pipeline("orders").map(double, name="double").run(range(3))
        print("delivered", report.delivered)
        # Observable metrics read live primitives: keep these alive past a collection.
        await trio.sleep(0.5)
        assert api.borrowed_tokens == 0 and tg is not None


    trio.run(main)
    """
)

AGENT = Path(sys.executable).parent / "opentelemetry-instrument"


def run_agent(tmp_path: Path, receiver: Receiver, **env: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRIOFLOW_"))}
    child_env.update(
        NO_PROXY="127.0.0.1,localhost",
        OTEL_SERVICE_NAME="instrumented",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="100",
    )
    child_env.update(env)
    result = subprocess.run(
        [str(AGENT), sys.executable, str(app)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered 3" in result.stdout
    return result


def metric_points(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    points = receiver.metric_points("instrumented")
    return {name: [a for a, _ in got] for name, got in points.items()}


@pytest.mark.skipif(not AGENT.exists(), reason="opentelemetry-instrument is not installed")
def test_opentelemetry_instrument_reports_trioflow(tmp_path: Path, receiver: Receiver) -> None:
    run_agent(tmp_path, receiver, OTEL_PYTHON_TRIOFLOW_TRACING="stage")
    got = receiver.spans()
    assert {attributes(rs.resource.attributes)["service.name"] for rs, _, _ in got} == {
        "instrumented"
    }
    spans = {s.name: s for _, scope, s in got if scope == "trioflow"}
    assert {"task_group jobs", "pipeline orders", "stage double"} <= set(spans)
    assert not [n for n in spans if n.startswith("source ")]  # "stage": no item traces
    group = spans["task_group jobs"]
    assert attributes(group.attributes)["trioflow.task_group.name"] == "jobs"
    assert attributes(group.attributes)["trioflow.task_group.tasks"] == 3
    run, stage = spans["pipeline orders"], spans["stage double"]
    assert stage.parent_span_id == run.span_id
    assert run.kind == trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL

    points = metric_points(receiver)
    waits = points["trioflow.limiter.wait.duration"]
    assert {"trioflow.limiter.name": "api", "trioflow.kind": "limiter"} in waits
    assert {"trioflow.limiter.name": "api"} in points["trioflow.limiter.limit"]
    assert {"trioflow.outcome": "returned", "trioflow.task_group.name": "jobs"} in points[
        "trioflow.task_group.tasks"
    ]


@pytest.mark.skipif(not AGENT.exists(), reason="opentelemetry-instrument is not installed")
def test_the_agent_default_is_item_tracing(tmp_path: Path, receiver: Receiver) -> None:
    run_agent(tmp_path, receiver)
    names = [s.name for _, scope, s in receiver.spans() if scope == "trioflow"]
    assert names.count("source orders") == 3  # one trace per item
    assert len([n for n in names if n.startswith("task ")]) == 3  # and a span per task


@pytest.mark.skipif(not AGENT.exists(), reason="opentelemetry-instrument is not installed")
def test_disabled_like_any_instrumentation(tmp_path: Path, receiver: Receiver) -> None:
    run_agent(tmp_path, receiver, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="trioflow")
    assert [s.name for _, scope, s in receiver.spans() if scope == "trioflow"] == []
    assert metric_points(receiver) == {}


def test_instrument_in_code_is_use_and_uninstrument_restores() -> None:
    tp = TracerProvider()
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = TrioflowInstrumentor()
    assert TrioflowInstrumentor() is instrumentor  # a singleton, as every instrumentor
    instrumentor.instrument(tracer_provider=tp, meter_provider=mp, tracing="stage")
    try:
        assert instrumentor.is_instrumented_by_opentelemetry
        assert (_hooks.tracing, _hooks.metrics) == (_hooks.STAGE, True)
    finally:
        instrumentor.uninstrument()
    assert (_hooks.tracing, _hooks.metrics) == (_hooks.OFF, False)
    assert _hooks.wait_hook is None
    tp.shutdown()
    mp.shutdown()


def test_tracing_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tp = TracerProvider()
    instrumentor = TrioflowInstrumentor()
    monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_TRACING", " Stage ")
    instrumentor.instrument(tracer_provider=tp)
    try:
        assert _hooks.tracing == _hooks.STAGE
    finally:
        instrumentor.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_TRACING", "everything")
    with pytest.raises(
        ValueError,
        match=r"OTEL_PYTHON_TRIOFLOW_TRACING must be 'off', 'stage' or 'item', got 'everything'",
    ):
        instrumentor.instrument(tracer_provider=tp)
    assert not instrumentor.is_instrumented_by_opentelemetry
    with pytest.raises(ValueError, match=r"tracing must be 'off', 'stage' or 'item', got 'all'"):
        instrumentor.instrument(tracer_provider=tp, tracing="all")
    tp.shutdown()


def test_stage_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = TrioflowInstrumentor()
    monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS", " False ")
    instrumentor.instrument(meter_provider=mp)
    try:
        assert _hooks.metrics is True
        assert _hooks.stage_hook is None
    finally:
        instrumentor.uninstrument()
    monkeypatch.delenv("OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS")
    instrumentor.instrument(meter_provider=mp)
    try:
        assert _hooks.stage_hook is not None  # on by default
    finally:
        instrumentor.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS", "sometimes")
    with pytest.raises(
        ValueError,
        match=r"OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS must be 'true' or 'false', got 'sometimes'",
    ):
        instrumentor.instrument(meter_provider=mp)
    assert not instrumentor.is_instrumented_by_opentelemetry
    mp.shutdown()


def test_item_sampling_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from trioflow.telemetry import _spans

    tp = TracerProvider()
    instrumentor = TrioflowInstrumentor()
    monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING", " 0.01 ")
    instrumentor.instrument(tracer_provider=tp)
    try:
        assert _spans.item_sampling == 0.01
    finally:
        instrumentor.uninstrument()
    assert _spans.item_sampling == 1.0  # restored with telemetry off
    monkeypatch.delenv("OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING")
    instrumentor.instrument(tracer_provider=tp, item_sampling=0.5)
    try:
        assert _spans.item_sampling == 0.5
    finally:
        instrumentor.uninstrument()
    for bad in ("1%", "2", "nan"):
        monkeypatch.setenv("OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING", bad)
        with pytest.raises(
            ValueError,
            match=rf"OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING must be a number in \[0, 1\], got '{bad}'",
        ):
            instrumentor.instrument(tracer_provider=tp)
        assert not instrumentor.is_instrumented_by_opentelemetry
    tp.shutdown()
