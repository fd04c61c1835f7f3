from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import trioflow as tf
from trioflow.telemetry import _hooks, _setup


@attrs.define
class Otel:
    """A private tracer and meter provider that trioflow reports to during one test."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    handle: tf.telemetry.Telemetry

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                if sm.scope.name == "trioflow":
                    for m in sm.metrics:
                        out[m.name] = m
        return out


def make_otel(tracing: _setup.Tracing = "item") -> Otel:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    handle = tf.telemetry.use(tracer_provider=tp, meter_provider=mp, tracing=tracing)
    return Otel(tp, mp, exporter, reader, handle)


def close_otel(o: Otel) -> None:
    o.handle.shutdown()
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """trioflow reporting to in-memory span and metric exporters, tracing="item"."""
    o = make_otel()
    yield o
    close_otel(o)


@pytest.fixture(autouse=True)
def _telemetry_left_off() -> Iterator[None]:
    """Each test starts and ends with trioflow's telemetry off (no leaked set-up)."""
    assert _setup._active is None
    yield
    leaked = _setup._active
    if leaked is not None:
        while _setup._active is not None:
            _setup._active.shutdown()
        pytest.fail(f"test left telemetry active: {leaked!r}")
    assert _hooks.wait_hook is None
    assert _hooks.stage_hook is None
    assert _hooks.tracing == _hooks.OFF
    assert _hooks.metrics is False
