"""Span helpers the building blocks use (pipelines, stages, task groups).

Rules these helpers encode, each learned the hard way (``docs/jaeger.md``
shows what they give in Jaeger):

* **Never attach in one task and detach in another, nor across a yield.**
  A span that crosses tasks (a pipeline run, a task group, an item that
  travels through channels) is started with :func:`start_span` and ended
  with :func:`end_span`; it is never "current" outside :func:`activate`,
  and :func:`activate` is only for a block that runs start to end in one
  task with no ``yield`` inside (``await`` is fine).
* **Items carry their own context.** A trio child task copies its
  *spawner's* context, so a long-lived worker would parent every item under
  one span. An item travels with :func:`context_of` its span (a
  :class:`~opentelemetry.trace.SpanContext`: immutable, tiny, safe to
  hand between tasks and threads), and the next stage passes it back as
  ``parent=``.
* **Batches link, they do not parent.** A batch span gets one link per item
  it holds (OpenTelemetry's messaging conventions), capped at the SDK's
  link limit (128 by default) with the overflow counted in an attribute.
* **Off is a flag check.** With tracing off every helper returns or accepts
  :data:`~opentelemetry.trace.INVALID_SPAN` at the cost of one comparison;
  hot paths should check ``_hooks.tracing`` themselves before building
  names and attributes.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Final, final

import trio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from . import _hooks, _names

__all__ = [
    "CURRENT",
    "EMPTY_CONTEXT",
    "activate",
    "batch_links",
    "context_of",
    "end_span",
    "error_type",
    "link_limit",
    "span_name",
    "start_batch_span",
    "start_span",
]

#: The tracer every helper uses; :func:`trioflow.telemetry.use` sets it.
tracer: Tracer = trace.NoOpTracer()

#: The share of pipeline source items that get a trace at ``tracing="item"``,
#: decided before any span exists (``item_sampling=`` of ``use``/``configure``).
item_sampling: float = 1.0

Attributes = Mapping[str, AttributeValue]


@final
class _Current:
    """Type of :data:`CURRENT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CURRENT"


#: ``parent=CURRENT``: the span current in the calling task's context (the
#: default). ``parent=None`` starts a new trace.
CURRENT: Final = _Current()

Parent = Span | SpanContext | _Current | None

#: An empty context (a Context is an immutable mapping, so one can be shared):
#: ``context=EMPTY_CONTEXT`` starts a new trace.
EMPTY_CONTEXT: Final = Context()


def span_name(kind: str, name: str) -> str:
    """The span name for a trioflow object: ``"{kind} {name}"`` (``"stage enrich"``)."""
    return f"{kind} {name}"


def _parent_context(parent: Parent) -> Context | None:
    if isinstance(parent, _Current):
        return None  # the SDK reads the current context
    if parent is None:
        # An empty context, so the span is a root even if one is current.
        return EMPTY_CONTEXT
    if isinstance(parent, SpanContext):
        if not parent.is_valid:
            return Context()
        parent = NonRecordingSpan(parent)
    return trace.set_span_in_context(parent, Context())


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Parent = CURRENT,
    links: Sequence[Link] = (),
    attributes: Attributes | None = None,
    start_time: int | None = None,
) -> Span:
    """Start a span without making it current; end it with :func:`end_span`.

    Safe to start in one task and end in another (nothing is attached to any
    context). Not a checkpoint; never blocks.

    Args:
      name: the span name (see :func:`span_name`).
      kind: ``PRODUCER`` where an item enters the flow, ``CONSUMER`` where a
        stage processes it, ``INTERNAL`` otherwise.
      parent: :data:`CURRENT` (default) for the calling task's current span,
        a :class:`~opentelemetry.trace.Span` or
        :class:`~opentelemetry.trace.SpanContext` (what an item carries), or
        ``None`` to start a new trace. An invalid context starts a new trace.
      links: links to other spans (a batch's items: see :func:`batch_links`).
      attributes: ``trioflow.*`` attributes.
      start_time: nanoseconds since the epoch (``time.time_ns()``); default now.

    Returns:
      The span, or :data:`~opentelemetry.trace.INVALID_SPAN` when tracing is off.
    """
    if not _hooks.tracing:
        return INVALID_SPAN
    return tracer.start_span(
        name,
        context=_parent_context(parent),
        kind=kind,
        attributes=attributes,
        links=links,
        start_time=start_time,
        record_exception=False,
        set_status_on_exception=False,
    )


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        rest: object = exc.split(trio.Cancelled)[1]  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return rest is None
    return False


def end_span(
    span: Span,
    exc: BaseException | None = None,
    *,
    attributes: Attributes | None = None,
    end_time: int | None = None,
) -> None:
    """End ``span``, recording how the work it timed finished.

    ``exc`` is the exception the work raised (``None`` = success). A
    cancellation (a :class:`trio.Cancelled`, alone or a group of them) is not
    an error: the span gets ``trioflow.cancelled = true`` and an unset
    status. Any other exception sets the status to ``ERROR``, the
    ``error.type`` attribute to the exception's qualified class name, and
    records the exception as an event with its traceback.

    Ending an ended span or a non-recording one does nothing harmful. Never
    blocks; may be called from any task or thread.
    """
    if span.is_recording():
        if attributes:
            span.set_attributes(attributes)
        if exc is not None:
            if _only_cancelled(exc):
                span.set_attribute(_names.CANCELLED, True)
            else:
                span.set_attribute(_names.ERROR_TYPE, error_type(exc))
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.record_exception(exc)
    span.end(end_time)


@contextmanager
def activate(span: Span) -> Generator[Span]:
    """Make ``span`` current for a block that starts and ends in one task.

    Spans the block's code starts (the user's own, an HTTP client's) become
    children of ``span``. ``await`` inside the block is fine; a ``yield``
    (in an async generator) or handing the block's exit to another task is
    not, because OpenTelemetry would detach the context in the wrong place
    ("Failed to detach context"). Does not end the span and records nothing.
    """
    if span is INVALID_SPAN:
        yield span
        return
    with trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        yield span


def context_of(span: Span) -> SpanContext | None:
    """What an item carries across channels: its span's context, or ``None`` when not traced."""
    sc = span.get_span_context()
    return sc if sc.is_valid else None


def link_limit() -> int:
    """How many links a span keeps: ``OTEL_SPAN_LINK_COUNT_LIMIT``, else the SDK default 128."""
    raw = os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT", "")
    try:
        value = int(raw)
    except ValueError:
        return 128
    return value if value >= 0 else 128


def batch_links(
    contexts: Iterable[SpanContext | None], *, limit: int | None = None
) -> tuple[list[Link], int]:
    """Links from a batch span to the items it holds, and how many did not fit.

    Skips ``None`` and invalid contexts (items that were not traced) and
    duplicates, keeps the first ``limit`` (default :func:`link_limit`) in
    arrival order, and counts the rest, so the SDK never drops links silently.
    """
    cap = link_limit() if limit is None else limit
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    over = 0
    for sc in contexts:
        if sc is None or not sc.is_valid:
            continue
        key = (sc.trace_id, sc.span_id)
        if key in seen:
            continue
        seen.add(key)
        if len(links) < cap:
            links.append(Link(sc))
        else:
            over += 1
    return links, over


def start_batch_span(
    name: str,
    contexts: Iterable[SpanContext | None],
    *,
    size: int | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    parent: Parent = None,
    attributes: Attributes | None = None,
    limit: int | None = None,
) -> Span:
    """Start a span for work on a batch, linked to the spans of the items in it.

    A batch has many producers and so no single parent: by default it starts
    a new trace (``parent=None``) and reaches each item's trace through a
    link, as OpenTelemetry's messaging conventions do for batch receives.
    Sets ``trioflow.batch.size`` (``size``, default the number of contexts)
    and, when there are more items than the link limit,
    ``trioflow.batch.links_dropped``. End it with :func:`end_span`.
    """
    if not _hooks.tracing:
        return INVALID_SPAN
    contexts = list(contexts)
    links, over = batch_links(contexts, limit=limit)
    attrs: dict[str, AttributeValue] = dict(attributes) if attributes else {}
    attrs[_names.BATCH_SIZE] = len(contexts) if size is None else size
    if over:
        attrs[_names.BATCH_LINKS_DROPPED] = over
    return start_span(name, kind=kind, parent=parent, links=links, attributes=attrs)
