"""Which traces a Jaeger file keeps: every one a person looks for, and a sample of the rest.

The Jaeger UI renders every trace of an uploaded file at once: a run with
6,000 item traces (a 22 MB file) froze it for a minute or more, while 300
traces (1 MB) open in a few seconds. The file exporter sees whole traces,
so it can choose after the fact, as a collector's tail sampler does:

1. traces with an **error** (a span with status ``ERROR``, or an item that
   was dead-lettered), spread over their ``error.type``\\s;
2. traces with a **retry** (a ``trioflow.retry`` event);
3. **slow** traces: the slowest :attr:`KeepTraces.slowest` fraction of the
   traces that start with the same span name (item traces are compared
   with item traces, not with the run), and any trace that lasted at least
   :attr:`KeepTraces.slow` seconds;
4. traces with **unfinished** items (cancelled, or not done at shutdown);
5. a **sample** of the rest: one trace of each kind (root span name),
   then a uniform sample, until :attr:`KeepTraces.max_traces` is reached.

A kept trace also keeps the traces it points to: the run its source span
links to, and the batch its item went into (``trioflow.batch.trace_id``),
so "Lookup by Trace ID" finds them in the same file. A batch trace does not
keep every item it links to, only those kept on their own. Within a class,
which traces win when the budget runs out is decided by trace id (the same
rule as OpenTelemetry's ratio sampler), so a run is reproducible.

This module imports only the OpenTelemetry API; it is pure bookkeeping over
finished spans.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import attrs
from opentelemetry.trace import StatusCode

from .._util import check_count, check_fraction, check_positive_number
from . import _names

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["REASONS", "KeepTraces", "KeptTraces", "select"]

#: Why a trace was kept, in the order the budget is spent on them.
REASONS: Final[tuple[str, ...]] = ("error", "retry", "slow", "unfinished", "linked", "sample")

_UNFINISHED: Final = "unfinished"
_DEAD_LETTERED: Final = "dead_lettered"


def _check_max_traces(_: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is not None:
        check_count(value, attribute.name)


def _check_slowest(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    check_fraction(value, attribute.name)


def _check_slow(_: object, attribute: attrs.Attribute[float | None], value: object) -> None:
    if value is not None:
        check_positive_number(value, attribute.name)


@attrs.frozen
class KeepTraces:
    """Which traces a Jaeger file keeps, so it opens in the Jaeger UI in seconds.

    A run with at most :attr:`max_traces` traces is written whole. Past
    that, the file keeps every trace with an error or a dead letter, then
    those with a retry, the slow ones, those with unfinished items, and
    fills what is left of the budget with a sample of the rest (see
    ``docs/jaeger.md``). :meth:`Telemetry.shutdown
    <trioflow.telemetry.Telemetry.shutdown>` reports how many traces were
    kept, why, and how many were dropped.

    Choosing it: the Jaeger UI lays out every trace of an uploaded file at
    once, at roughly 2-7 s per MB: about 300 item traces of a few spans each
    (~1 MB) open in a few seconds, 6,000 (22 MB) freeze it for a minute.
    Raise :attr:`max_traces` if your traces are small (a few spans) or you
    will wait; lower it if they are large. Set :attr:`slow` to
    your latency objective to keep every item that missed it. For a
    complete file pass ``keep_traces=None`` to
    :func:`~trioflow.telemetry.configure` (or
    :func:`~trioflow.telemetry.jaeger_file_exporter`); to keep everything in
    a backend, send OTLP to Jaeger instead, which this policy never touches.

    .. note:: This is tail selection in one process, at the file: it sees
       every sampled span, so it never splits a trace. It is not a
       sampler: spans are still made (and cost) for every sampled item;
       ``OTEL_TRACES_SAMPLER`` decides that.

    Error traces are kept first, spread across their ``error.type``\\s,
    and only a run whose error traces alone exceed :attr:`max_traces`
    loses some (the report counts them in
    :attr:`KeptTraces.errors_dropped`).
    """

    max_traces: int | None = attrs.field(default=300, validator=_check_max_traces)
    """Most traces the file holds (``None``: no limit, keep every trace)."""

    slowest: float = attrs.field(default=0.01, validator=_check_slowest)
    """Fraction of each kind of trace (same root span name) kept for being the slowest."""

    slow: float | None = attrs.field(default=None, validator=_check_slow)
    """Seconds: a trace at least this long is slow whatever the others did (``None``: off)."""


@attrs.frozen
class KeptTraces:
    """What a :class:`KeepTraces` policy did to one file."""

    traces: int
    """Traces that reached the file exporter."""

    kept: int
    """Traces written to the file."""

    by_reason: dict[str, int]
    """Kept traces by the first reason that kept them (``error``, ``retry``,
    ``slow``, ``unfinished``, ``linked``: pointed to by a kept trace,
    ``sample``, or ``all`` when the run fitted in the budget)."""

    errors_dropped: int = 0
    """Traces with an error left out because :attr:`KeepTraces.max_traces`
    was reached by error traces alone."""

    @property
    def dropped(self) -> int:
        """Traces left out of the file."""
        return self.traces - self.kept

    def __str__(self) -> str:
        if self.kept == self.traces:
            return f"all {self.traces} traces kept"
        reasons = ", ".join(f"{n} {r}" for r, n in self.by_reason.items() if n)
        text = f"{self.kept} of {self.traces} traces kept"
        if reasons:
            text += f" ({reasons})"
        text += f", {self.dropped} dropped"
        if self.errors_dropped:
            text += f" ({self.errors_dropped} with errors: max_traces reached)"
        return text


def _no_spans() -> list[ReadableSpan]:
    return []


def _no_ids() -> set[int]:
    return set()


@attrs.define
class _Trace:
    trace_id: int
    spans: list[ReadableSpan] = attrs.field(factory=_no_spans)
    start: int = 0
    end: int = 0
    root: str = ""
    error: str | None = None  # the first error.type seen, or "" for an error with no type
    retry: bool = False
    unfinished: bool = False
    refs: set[int] = attrs.field(factory=_no_ids)

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def order(self) -> int:
        # The low 64 bits, as OpenTelemetry's TraceIdRatioBased sampler reads them.
        return self.trace_id & 0xFFFF_FFFF_FFFF_FFFF


def _summarize(spans: Iterable[ReadableSpan]) -> dict[int, _Trace]:
    traces: dict[int, _Trace] = {}
    for span in spans:
        ctx = span.context
        if ctx is None:
            continue
        t = traces.get(ctx.trace_id)
        if t is None:
            t = traces[ctx.trace_id] = _Trace(ctx.trace_id)
        t.spans.append(span)
    for t in traces.values():
        ids = {s.context.span_id for s in t.spans if s.context is not None}
        roots: list[ReadableSpan] = []
        starts: list[int] = []
        ends: list[int] = []
        for s in t.spans:
            start = s.start_time or 0
            starts.append(start)
            ends.append(s.end_time or start)
            parent = s.parent
            if parent is None or parent.trace_id != t.trace_id or parent.span_id not in ids:
                roots.append(s)
            attributes = s.attributes or {}
            outcome = attributes.get(_names.OUTCOME)
            failed = s.status.status_code is StatusCode.ERROR or outcome == _DEAD_LETTERED
            if failed and not t.error:  # keep the first error.type seen
                kind = attributes.get(_names.ERROR_TYPE)
                t.error = kind if isinstance(kind, str) else ""
            if outcome == _UNFINISHED or attributes.get(_names.CANCELLED) is True:
                t.unfinished = True
            if not t.retry and any(e.name == _names.RETRY_EVENT for e in s.events):
                t.retry = True
            batch = attributes.get(_names.BATCH_TRACE_ID)
            if isinstance(batch, str):
                with contextlib.suppress(ValueError):
                    t.refs.add(int(batch, 16))
            if _names.BATCH_SIZE not in attributes:
                # A batch span links to its items: those are not its context.
                for link in s.links:
                    if link.context.trace_id != t.trace_id:
                        t.refs.add(link.context.trace_id)
        t.start = min(starts)
        t.end = max(ends)
        roots.sort(key=lambda s: s.start_time or 0)
        t.root = roots[0].name if roots else t.spans[0].name
    return traces


def _spread(traces: Sequence[_Trace], key: str) -> list[_Trace]:
    """Round-robin over groups (``key``: "error" or "root"), each group in trace-id order."""
    groups: dict[str, list[_Trace]] = {}
    for t in traces:
        k = (t.error or "") if key == "error" else t.root
        groups.setdefault(k, []).append(t)
    ordered = [sorted(g, key=lambda t: t.order) for _, g in sorted(groups.items())]
    out: list[_Trace] = []
    for i in range(max((len(g) for g in ordered), default=0)):
        out.extend(g[i] for g in ordered if i < len(g))
    return out


def _sample(traces: Sequence[_Trace]) -> list[_Trace]:
    """One trace of each kind first (so every kind is seen), then the rest in trace-id order.

    Trace-id order is a uniform sample, so kinds share the rest of the budget
    by how many traces they have: 80 batch traces among 6,000 item traces
    get about one slot in 75, not half of them.
    """
    first = _spread(traces, "root")
    kinds = len({t.root for t in traces})
    head = first[:kinds]
    taken = {t.trace_id for t in head}
    return head + sorted((t for t in traces if t.trace_id not in taken), key=lambda t: t.order)


def _slow(traces: Iterable[_Trace], policy: KeepTraces) -> set[int]:
    by_root: dict[str, list[_Trace]] = {}
    for t in traces:
        by_root.setdefault(t.root, []).append(t)
    slow: set[int] = set()
    threshold = None if policy.slow is None else policy.slow * 1e9
    for group in by_root.values():
        if policy.slowest > 0:
            n = math.ceil(len(group) * policy.slowest)
            group.sort(key=lambda t: (-t.duration, t.order))
            slow.update(t.trace_id for t in group[:n])
        if threshold is not None:
            slow.update(t.trace_id for t in group if t.duration >= threshold)
    return slow


def select(
    spans: Sequence[ReadableSpan], policy: KeepTraces | None
) -> tuple[list[ReadableSpan], KeptTraces]:
    """The spans of the traces ``policy`` keeps, and what it did."""
    traces = _summarize(spans)
    if policy is None or policy.max_traces is None or len(traces) <= policy.max_traces:
        kept_all = [s for s in spans if s.context is not None]
        return kept_all, KeptTraces(
            len(traces), len(traces), {"all": len(traces)} if traces else {}
        )
    budget = policy.max_traces
    slow = _slow(traces.values(), policy)
    classes: list[tuple[str, list[_Trace]]] = [
        ("error", _spread([t for t in traces.values() if t.error is not None], "error")),
        ("retry", _spread([t for t in traces.values() if t.retry], "root")),
        ("slow", _spread([t for t in traces.values() if t.trace_id in slow], "root")),
        ("unfinished", _spread([t for t in traces.values() if t.unfinished], "root")),
        ("sample", _sample(list(traces.values()))),
    ]
    reason: dict[int, str] = {}
    for name, candidates in classes:
        for t in candidates:
            if len(reason) >= budget:
                break
            if t.trace_id in reason:
                continue
            reason[t.trace_id] = name
            for ref in sorted(t.refs):
                if len(reason) >= budget:
                    break
                if ref in traces and ref not in reason:
                    reason[ref] = "linked"
    by_reason: dict[str, int] = dict.fromkeys(REASONS, 0)
    for r in reason.values():
        by_reason[r] += 1
    errors_dropped = sum(
        1 for t in traces.values() if t.error is not None and t.trace_id not in reason
    )
    kept = [s for s in spans if s.context is not None and s.context.trace_id in reason]
    return kept, KeptTraces(len(traces), len(reason), by_reason, errors_dropped)
