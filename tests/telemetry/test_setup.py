from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import INVALID_SPAN

import trioflow as tf
from trioflow.telemetry import _hooks, _setup, _spans
from trioflow.telemetry._export import CountingProcessor

from .conftest import close_otel, make_otel


def test_nothing_recorded_until_asked() -> None:
    assert _hooks.tracing == _hooks.OFF
    assert _hooks.wait_hook is None
    assert isinstance(_spans.tracer, trace.NoOpTracer)


def test_use_levels_and_restore() -> None:
    outer = make_otel("stage")
    try:
        assert _hooks.tracing == _hooks.STAGE
        assert outer.handle.tracing == "stage"
        assert outer.handle.active
        inner = tf.telemetry.use(
            tracer_provider=outer.tracer_provider
        )  # tracing=None keeps "stage"
        assert inner.tracing == "stage"
        assert inner.active
        assert not outer.handle.active
        with tf.telemetry.use(tracer_provider=outer.tracer_provider, tracing="item") as third:
            assert _hooks.tracing == _hooks.ITEM
            assert "active" in repr(third)
        assert inner.active
        assert _hooks.tracing == _hooks.STAGE
        assert inner.shutdown() is None  # the application's providers: not ours to report on
        assert inner.shutdown() is None  # twice is harmless
        assert "shut down" in repr(inner)
        assert outer.handle.active
    finally:
        close_otel(outer)
    assert _hooks.tracing == _hooks.OFF
    assert _hooks.wait_hook is None


def test_use_first_time_defaults_to_item() -> None:
    tp = TracerProvider()
    with tf.telemetry.use(tracer_provider=tp) as t:
        assert t.tracing == "item"
        assert t.tracer_provider is tp
        assert _hooks.tracing == _hooks.ITEM
        assert _hooks.wait_hook is not None  # wait events on spans
    tp.shutdown()


def test_use_with_nothing_to_report_to_leaves_no_hook(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 21: no backend, no hook: the cost of never calling use() (bench/telemetry.py)."""
    # No SDK is set globally in the test process: the global providers are proxies.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with tf.telemetry.use() as t:
        assert t.tracing == "off"
        assert t.tracer_provider is None
        assert t.meter_provider is None
        assert (_hooks.tracing, _hooks.metrics) == (_hooks.OFF, False)
        assert _hooks.wait_hook is None
        assert _hooks.stage_hook is None
        assert _spans.start_span("stage x") is INVALID_SPAN
    assert any("telemetry stays off" in r.getMessage() for r in caplog.records)


def test_providers_that_report_nowhere_are_off() -> None:
    no_readers = MeterProvider()  # the SDK takes readers at construction only
    with tf.telemetry.use(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=no_readers
    ) as t:
        assert (t.tracing, t.tracer_provider, t.meter_provider) == ("off", None, None)
        assert _hooks.wait_hook is None
        assert _hooks.stage_hook is None
    with tf.telemetry.use(meter_provider=metrics.NoOpMeterProvider()) as t:
        assert t.meter_provider is None
        assert _hooks.stage_hook is None
    no_readers.shutdown()
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    with tf.telemetry.use(meter_provider=mp) as t:
        assert t.meter_provider is mp
        assert t.tracing == "off"  # no tracer provider reports anywhere
        assert _hooks.metrics is True
        assert _hooks.stage_hook is not None
        assert _hooks.wait_hook is not None  # the wait histogram
    mp.shutdown()


def test_shutting_down_out_of_order() -> None:
    a = make_otel("stage")
    b = make_otel("item")
    close_otel(a)  # not the active one: b stays active
    assert b.handle.active
    assert _hooks.tracing == _hooks.ITEM
    close_otel(b)  # a is closed, so nothing comes back
    assert _setup._active is None
    assert _hooks.tracing == _hooks.OFF


def test_use_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="tracer_provider must be an opentelemetry TracerProvider"):
        tf.telemetry.use(tracer_provider="jaeger")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="meter_provider must be an opentelemetry MeterProvider"):
        tf.telemetry.use(meter_provider=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tracing must be 'off', 'stage' or 'item', got 'all'"):
        tf.telemetry.use(tracing="all")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tracing must be 'off', 'stage' or 'item', got 2"):
        tf.telemetry.use(tracing=2)  # type: ignore[arg-type]
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"item_sampling must be in \[0, 1\], got "):
            tf.telemetry.use(item_sampling=bad)
    for wrong in ("0.5", True, None):
        with pytest.raises(TypeError, match=r"item_sampling must be a number in \[0, 1\], got "):
            tf.telemetry.use(item_sampling=wrong)  # type: ignore[arg-type]
    assert _setup._active is None


def test_configure_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="service_name must be a str, got None"):
        tf.telemetry.configure(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service_name must not be empty"):
        tf.telemetry.configure("")
    with pytest.raises(ValueError, match="otlp_endpoint must be an http:// or https:// URL"):
        tf.telemetry.configure("svc", otlp_endpoint="localhost:4318")
    with pytest.raises(TypeError, match="otlp_endpoint must be a str URL or None, got 4318"):
        tf.telemetry.configure("svc", otlp_endpoint=4318)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"jaeger_file must be a str or os\.PathLike, got 1"):
        tf.telemetry.configure("svc", jaeger_file=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="console must be a bool, got 'yes'"):
        tf.telemetry.configure("svc", console="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tracing must be 'off', 'stage' or 'item'"):
        tf.telemetry.configure("svc", tracing="spans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"item_sampling must be in \[0, 1\], got 2"):
        tf.telemetry.configure("svc", item_sampling=2)
    with pytest.raises(TypeError, match=r"item_sampling must be a number in \[0, 1\], got '1%'"):
        tf.telemetry.configure("svc", item_sampling="1%")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No such file or directory"):
        tf.telemetry.configure("svc", jaeger_file=tmp_path / "missing" / "t.json")
    assert _setup._active is None


def test_configure_rejects_unknown_exporter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    with pytest.raises(
        ValueError, match=r"OTEL_TRACES_EXPORTER=.otlp,zipkin.: .* supports otlp, console and none"
    ):
        tf.telemetry.configure("svc", set_global=False)


def test_signal_url() -> None:
    assert _setup._signal_url("http://h:4318", "traces") == "http://h:4318/v1/traces"
    assert _setup._signal_url("http://h:4318/", "metrics") == "http://h:4318/v1/metrics"
    assert _setup._signal_url("http://h:4318/v1/traces", "traces") == "http://h:4318/v1/traces"
    assert _setup._signal_url("http://h:4318/v1/traces", "metrics") == "http://h:4318/v1/metrics"


def test_configure_jaeger_file_and_report(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    t = tf.telemetry.configure("shop", jaeger_file=path, tracing="stage", set_global=False)
    try:
        assert t.tracing == "stage"
        assert json.loads(path.read_text()) == {"data": []}  # written at once: fails early
        for i in range(10):
            _spans.end_span(_spans.start_span(f"stage s{i}"))
    finally:
        report = t.shutdown()
    assert report is not None
    (counts,) = report.destinations
    assert counts.destination == f"jaeger_file {path}"
    assert (counts.spans, counts.exported, counts.failed, counts.dropped) == (10, 10, 0, 0)
    assert report.dropped == report.failed == 0
    assert str(report) == (
        f"jaeger_file {path}: 10/10 spans exported, 0 dropped, 0 failed; all 10 traces kept"
    )
    assert counts.traces is not None
    assert (counts.traces.traces, counts.traces.kept, counts.traces.dropped) == (10, 10, 0)
    assert len(json.loads(path.read_text())["data"]) == 10
    assert t.shutdown() is None
    assert _spans.start_span("after") is INVALID_SPAN


def test_env_service_name_and_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    with tf.telemetry.configure(
        "from-code", jaeger_file=tmp_path / "t.json", set_global=False
    ) as t:
        provider = t.tracer_provider
        assert isinstance(provider, TracerProvider)
        attrs = provider.resource.attributes
        assert attrs["service.name"] == "from-env"
        assert attrs["deployment.environment"] == "staging"


def test_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with tf.telemetry.configure("svc", set_global=False) as t:
        assert t.tracing == "off"
        assert t.tracer_provider is None
        assert _hooks.wait_hook is None
        assert _spans.start_span("x") is INVALID_SPAN
    report = t.shutdown()
    assert report is None  # already shut down by the with block


def test_console_and_env_exporters(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    with tf.telemetry.configure("svc", set_global=False) as t:
        assert t.meter_provider is None
    assert t._processors == ()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    t = tf.telemetry.configure("svc", set_global=False)
    try:
        assert t.meter_provider is not None
        limiter = tf.CapacityLimiter(7, name="printed")
        _spans.end_span(_spans.start_span("stage printed"))
    finally:
        report = t.shutdown()
    assert report is not None
    assert [d.destination for d in report.destinations] == ["console"]
    out = capfd.readouterr().out
    assert '"name": "stage printed"' in out
    assert '"name": "trioflow.limiter.limit"' in out  # metrics flushed at shutdown
    del limiter


class BlockedExporter(SpanExporter):
    """An exporter stuck on a slow endpoint until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def test_dropped_and_failed_spans_are_counted_and_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    blocked = BlockedExporter()
    processors = [
        CountingProcessor("slow", blocked),
        CountingProcessor("broken", FailingExporter()),
    ]
    provider = TracerProvider()
    for p in processors:
        provider.add_span_processor(p)
    t = _setup.Telemetry(
        tracer_provider=provider,
        meter_provider=None,
        level=_hooks.ITEM,
        owned=True,
        processors=processors,
    )
    t._activate()
    for i in range(500):
        _spans.end_span(_spans.start_span(f"item {i}"))
    blocked.release.set()
    with caplog.at_level(logging.WARNING, logger="trioflow.telemetry"):
        report = t.shutdown()
    assert report is not None
    slow, broken = report.destinations
    assert slow.spans == broken.spans == 500
    # At most the queue plus the batch in flight got through the stuck exporter.
    assert slow.exported == blocked.received <= 16 + 8
    assert slow.dropped == 500 - slow.exported
    assert slow.failed == 0
    assert broken.exported == 0
    assert broken.failed + broken.dropped == 500
    assert broken.failed > 0
    assert report.dropped == slow.dropped + broken.dropped
    assert any("lost spans at shutdown" in r.getMessage() for r in caplog.records)


def test_import_without_the_sdk(tmp_path: Path) -> None:
    """trioflow.telemetry imports with only the API; configure() says what to install."""
    script = """
import sys
class NoSdk:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
            raise ImportError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NoSdk())
import trioflow as tf
assert "opentelemetry.sdk" not in sys.modules
try:
    tf.telemetry.configure("svc")
except ImportError as exc:
    print("ImportError:", exc)
try:
    tf.telemetry.jaeger_file_exporter("x.json")
except ImportError as exc:
    print("ImportError:", exc)
with tf.telemetry.use(tracing="stage") as t:
    print("use ok", t.tracing)
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(tf.__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "ImportError: trioflow.telemetry.configure() needs the OpenTelemetry SDK"
    )
    assert "the otel extra, pip install '.[otel]' in a clone of trioflow" in lines[0]
    assert lines[1].startswith("ImportError: trioflow.telemetry.configure() needs")
    # No SDK, so no provider reports anywhere: tracing stays off.
    assert lines[2] == "use ok off"


def test_configure_installs_global_providers_for_the_apps_own_spans(tmp_path: Path) -> None:
    """In a fresh process (the global provider is set-once): the app's spans and trioflow's nest."""
    script = """
import json, sys, trio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
import trioflow as tf
from trioflow.telemetry import _spans

app = trace.get_tracer("app")  # before configure(): a proxy that follows the global provider

async def main():
    with app.start_as_current_span("request"):
        stage = _spans.start_span("stage inner")
        with _spans.activate(stage):
            with app.start_as_current_span("app call"):
                pass
        _spans.end_span(stage)

with tf.telemetry.configure("global-test", jaeger_file="t.json") as t:
    assert trace.get_tracer_provider() is t.tracer_provider
    trio.run(main)
(doc,) = json.load(open("t.json"))["data"]
spans = {s["operationName"]: s for s in doc["spans"]}
parent = {n: (s["references"][0]["spanID"] if s["references"] else None) for n, s in spans.items()}
assert parent["request"] is None
assert parent["stage inner"] == spans["request"]["spanID"]
assert parent["app call"] == spans["stage inner"]["spanID"]
print("ok")
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(tf.__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
