"""A span exporter that writes Jaeger's own JSON trace format to a file.

The file is what Jaeger's query API returns for ``GET /api/traces``::

    {"data": [{"traceID": "...", "spans": [...], "processes": {"p1": {...}}, "warnings": null}]}

and what the Jaeger UI's *Search → Upload* tab opens entirely in the
browser, with no Jaeger backend (an OTLP JSON file, by contrast, is sent to a
running Jaeger ≥ 1.55 to convert). The mapping from OpenTelemetry follows
Jaeger's own OTLP translator: parent → ``CHILD_OF`` reference, links →
``FOLLOWS_FROM`` references, events → logs with an ``event`` field, span kind
→ ``span.kind`` tag, status → ``otel.status_code`` / ``error`` tags, resource
→ the process (``service.name`` → ``serviceName``).

This module imports the OpenTelemetry SDK; :mod:`trioflow.telemetry` imports
it only inside :func:`~trioflow.telemetry.configure` or
:func:`~trioflow.telemetry.jaeger_file_exporter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from ._keep import KeepTraces, KeptTraces, select

__all__ = ["JaegerFileExporter", "to_jaeger"]

logger = logging.getLogger("trioflow.telemetry")

_KINDS = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def _hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _tag(key: str, value: object) -> dict[str, Any]:
    """One Jaeger key/value: types ``bool``, ``int64``, ``float64`` or ``string``."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if isinstance(value, Sequence):
        # Jaeger has no array type; its translator writes arrays as JSON text.
        return {"key": key, "type": "string", "value": json.dumps(list(value))}  # pyright: ignore[reportUnknownArgumentType]
    return {"key": key, "type": "string", "value": str(value)}


def _tags(attributes: Mapping[str, object] | None) -> list[dict[str, Any]]:
    return [_tag(k, v) for k, v in (attributes or {}).items()]


def _micros(ns: int | None) -> int:
    return 0 if ns is None else ns // 1000


def _span(span: ReadableSpan, process_id: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    trace_id = _hex_id(ctx.trace_id, 32)
    references: list[dict[str, str]] = []
    if span.parent is not None and span.parent.is_valid:
        references.append(
            {
                "refType": "CHILD_OF",
                "traceID": _hex_id(span.parent.trace_id, 32),
                "spanID": _hex_id(span.parent.span_id, 16),
            }
        )
    for link in span.links:
        references.append(
            {
                "refType": "FOLLOWS_FROM",
                "traceID": _hex_id(link.context.trace_id, 32),
                "spanID": _hex_id(link.context.span_id, 16),
            }
        )
    tags = _tags(span.attributes)
    tags.append(_tag("span.kind", _KINDS.get(span.kind, "internal")))
    scope = span.instrumentation_scope
    if scope is not None:
        tags.append(_tag("otel.scope.name", scope.name))
        if scope.version:
            tags.append(_tag("otel.scope.version", scope.version))
    status = span.status
    if status.status_code is StatusCode.ERROR:
        tags.append(_tag("otel.status_code", "ERROR"))
        tags.append(_tag("error", True))
        if status.description:
            tags.append(_tag("otel.status_description", status.description))
    elif status.status_code is StatusCode.OK:
        tags.append(_tag("otel.status_code", "OK"))
    logs = [
        {
            "timestamp": _micros(event.timestamp),
            "fields": [_tag("event", event.name), *_tags(event.attributes)],
        }
        for event in span.events
    ]
    warnings: list[str] = []
    for what, count in (
        ("attributes", span.dropped_attributes),
        ("events", span.dropped_events),
        ("links", span.dropped_links),
    ):
        if count:
            warnings.append(f"{count} {what} dropped by the span limits")
    start = _micros(span.start_time)
    end = _micros(span.end_time)
    return {
        "traceID": trace_id,
        "spanID": _hex_id(ctx.span_id, 16),
        "flags": int(ctx.trace_flags),
        "operationName": span.name,
        "references": references,
        "startTime": start,
        "duration": max(0, end - start),
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": warnings or None,
    }


def _process(resource_attributes: Mapping[str, object]) -> dict[str, Any]:
    service = resource_attributes.get("service.name")
    return {
        "serviceName": service if isinstance(service, str) else "unknown_service",
        "tags": [_tag(k, v) for k, v in resource_attributes.items() if k != "service.name"],
    }


def to_jaeger(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Jaeger JSON (``{"data": [trace, ...]}``) for ``spans``, one entry per trace.

    Traces come in the order their first span started; spans within a trace
    in start order.
    """
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        ctx = span.get_span_context()
        assert ctx is not None
        by_trace.setdefault(ctx.trace_id, []).append(span)
    traces: list[dict[str, Any]] = []
    for trace_id, members in by_trace.items():
        members.sort(key=lambda s: s.start_time or 0)
        processes: dict[str, dict[str, Any]] = {}
        keys: dict[tuple[tuple[str, str], ...], str] = {}
        out_spans: list[dict[str, Any]] = []
        for span in members:
            attributes = dict(span.resource.attributes)
            key = tuple(sorted((k, repr(v)) for k, v in attributes.items()))
            pid = keys.get(key)
            if pid is None:
                pid = keys[key] = f"p{len(keys) + 1}"
                processes[pid] = _process(attributes)
            out_spans.append(_span(span, pid))
        traces.append(
            {
                "traceID": _hex_id(trace_id, 32),
                "spans": out_spans,
                "processes": processes,
                "warnings": None,
            }
        )
    traces.sort(key=lambda t: min((s["startTime"] for s in t["spans"]), default=0))
    return {"data": traces}


class JaegerFileExporter(SpanExporter):
    """Collects finished spans and writes the traces ``keep`` chooses to ``path`` as Jaeger JSON.

    The file is rewritten whole (to a temporary file, then renamed into
    place) at every :meth:`force_flush` and at :meth:`shutdown`, so a reader
    never sees half a file. Spans are kept in memory until then: this is for
    scripts, test runs and debugging sessions (tens of thousands of spans),
    not for a service that runs for weeks.

    A write that fails (disk full, directory gone) is logged on the
    ``trioflow.telemetry`` logger and counted (:attr:`failed`), never
    raised: the program's own result matters more than its trace file.
    """

    def __init__(self, path: str | os.PathLike[str], keep: KeepTraces | None = None) -> None:
        self.path = os.fspath(path)
        self.keep = keep
        #: Spans in the file now (its last successful write).
        self.written = 0
        #: Spans the policy left out at the last write.
        self.filtered = 0
        #: Spans that should be in the file and are not: the last write
        #: failed, or they ended after :meth:`shutdown`.
        self.failed = 0
        #: What the policy did at the last write (``None`` before one).
        self.traces: KeptTraces | None = None
        #: Why the last write failed (``None``: it did not).
        self.error: OSError | None = None
        self._late = 0
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._closed = False
        # Fail now, at configure(), rather than at exit: the file must be writable.
        self._write([], raise_errors=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._closed:
                self._late += len(spans)
                self.failed += len(spans)
                return SpanExportResult.FAILURE
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Rewrite the file with every span so far; ``False`` if the write failed."""
        with self._lock:
            spans = list(self._spans)
        return self._write(spans)

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spans = list(self._spans)
        self._write(spans)

    def _write(self, spans: Sequence[ReadableSpan], *, raise_errors: bool = False) -> bool:
        kept, report = select(spans, self.keep)
        tmp = f"{self.path}.tmp"
        try:
            doc = to_jaeger(kept)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as exc:
            if raise_errors:
                raise
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with self._lock:
                self.error = exc
                self.filtered = len(spans) - len(kept)
                self.failed = self._late + max(0, len(kept) - self.written)
                self.traces = report
            logger.warning("could not write the Jaeger file %s: %s", self.path, exc)
            return False
        with self._lock:
            self.error = None
            self.written = len(kept)
            self.filtered = len(spans) - len(kept)
            self.failed = self._late
            self.traces = report
        return True
