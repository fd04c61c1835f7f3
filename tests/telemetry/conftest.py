from __future__ import annotations

import gc
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2
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
    # Primitives an earlier test left in reference cycles are still in the
    # weak registry until a collection, and the gauges would add their
    # readings to a same-named one of this test's (CI once read a lane
    # limit of 5 where the test had set 4): collect them first.
    gc.collect()
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


# -- a real OTLP/HTTP receiver on 127.0.0.1 ----------------------------------------


@attrs.define
class Receiver:
    """A minimal OTLP/HTTP receiver: stores every decoded request."""

    port: int
    traces: list[ExportTraceServiceRequest] = attrs.field(factory=list)
    metrics: list[ExportMetricsServiceRequest] = attrs.field(factory=list)
    content_types: set[str] = attrs.field(factory=set)
    status: int = 200
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric_points(self, service: str) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """trioflow's metric points as received, by instrument: (attributes, point).

        Checks that each came from ``service``.
        """
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        with self.lock:
            requests = list(self.metrics)
        for req in requests:
            for rm in req.resource_metrics:
                assert attributes(rm.resource.attributes)["service.name"] == service
                for sm in rm.scope_metrics:
                    if sm.scope.name != "trioflow":
                        continue
                    for m in sm.metrics:
                        for p in getattr(m, m.WhichOneof("data")).data_points:
                            out.setdefault(m.name, []).append((attributes(p.attributes), p))
        return out

    def spans(self) -> list[tuple[trace_pb2.ResourceSpans, str, trace_pb2.Span]]:
        out: list[tuple[trace_pb2.ResourceSpans, str, trace_pb2.Span]] = []
        with self.lock:
            for req in self.traces:
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        out.extend((rs, ss.scope.name, span) for span in ss.spans)
        return out


def value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value") or "string_value")


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state: list[Receiver] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = state[0]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with rec.lock:
                rec.content_types.add(self.headers["Content-Type"])
                if self.path == "/v1/traces":
                    rec.traces.append(ExportTraceServiceRequest.FromString(body))
                elif self.path == "/v1/metrics":
                    rec.metrics.append(ExportMetricsServiceRequest.FromString(body))
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
