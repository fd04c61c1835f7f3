"""Spans of a pipeline run: the run, its stages, and one trace per item.

What a run looks like in Jaeger (``docs/jaeger.md`` shows it drawn out):

* ``tracing="stage"`` and up: one ``pipeline {name}`` span per run (child of
  the span current where the run started) and, under it, one
  ``stage {name}`` span per stage for the stage's whole life. At
  ``"stage"`` each worker runs with its stage's span current, so limiter
  waits and the spans your stage functions start land there.
* ``tracing="item"``: also one trace per source item. The reader starts it
  with a ``source {pipeline}`` span (PRODUCER: the item enters the flow;
  it lasts until the first stage took the item), linked to the run's span.
  Each stage the item passes through adds a ``stage {name}`` span (CONSUMER)
  that is a child of the item's previous span: the item carries it across
  channels in its envelope's ``ctx`` slot, never through the worker's
  ambient context (a trio task copies its *spawner's* context, so a worker
  would otherwise put every item under one span). The span runs from the
  moment the stage took the item until it left (emitted, including the wait
  to hand it downstream; filtered; skipped; dead-lettered; unfinished),
  which ``trioflow.outcome`` names. It is current while the stage function
  runs. A failed attempt that is retried is a ``trioflow.retry`` event on
  it; the error of the last attempt sets its status and ``error.type``.
* A batch stage gives each item a ``stage {name}`` span that ends when its
  batch is sent, and, as it sends the batch, starts the batch's own *new
  trace* (a batch has many parents, so, as OpenTelemetry's messaging
  conventions say, it links instead): ``batch {name}`` with one link per
  sampled item span, up to the link limit (``trioflow.batch.links_dropped``
  counts the rest). The trace ids are copyable both ways:
  ``trioflow.item.trace_ids`` on the batch span,
  ``trioflow.batch.trace_id`` on each item span. Stages after it continue
  the batch's trace.

Sampling: ``item_sampling`` (of ``use``/``configure``) draws, per source
item and before any span exists, whether the item gets a trace; an item
left out costs what an untraced one does. An item drawn in has its root
span sampled by the configured sampler; an item whose root is not sampled
gets no further spans at all (so 1 % sampling by the SDK's sampler costs
one unsampled root span per item, not one per stage). Its stage
function runs with no current span, so spans it starts are roots of their
own, subject to the sampler, rather than pieces of a trace as long as the
run. A batch trace is sampled on its own (links carry no sampling decision).

Costs (``bench/telemetry.py --only pipeline`` and ``bench/pipeline.py``,
figures in ``docs/benchmarks/``): with tracing off the run decides once
that no span is made, and no per-item code of this module runs;
``"stage"`` adds spans per run and stage only; ``"item"`` costs tens of
microseconds per sampled span, one random draw per item left out by
``item_sampling`` (tens of nanoseconds), and one unsampled root span per
item the SDK's sampler drops (microseconds).

These functions take plain values (names, attributes, spans, envelopes)
and never import the runtime: the run and its stages call them.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Generator, Mapping, Sequence
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from ..telemetry import _names as names
from ..telemetry import _spans
from ._envelope import Envelope
from ._fate import Fate

__all__ = [
    "end_item",
    "end_run",
    "end_stage",
    "links_to",
    "retry_event",
    "start_item",
    "start_run",
    "start_source_span",
    "start_stage",
    "worker_context",
]

Attributes = Mapping[str, AttributeValue]

_OUTCOME: Final = names.OUTCOME


# -- the run and its stages ------------------------------------------------------


def start_run(name: str, stages: Sequence[str]) -> Span:
    """The ``pipeline {name}`` span, child of the span current in the task that runs it.

    ``trioflow.pipeline.stages`` lists the stage names in pipeline order.
    """
    return _spans.start_span(
        _spans.span_name("pipeline", name),
        attributes={names.PIPELINE_NAME: name, "trioflow.pipeline.stages": tuple(stages)},
    )


def end_run(
    span: Span, counts: Mapping[str, int], exc: BaseException | None, cancelled: bool
) -> None:
    """End the run's span with what became of the source items, and why it failed if it did."""
    attributes: dict[str, AttributeValue] = {
        f"trioflow.pipeline.{key}": value for key, value in counts.items()
    }
    if exc is None and cancelled:
        attributes[names.CANCELLED] = True
    _spans.end_span(span, exc, attributes=attributes)


def start_stage(name: str, kind: str, attributes: Attributes, parent: Span) -> Span:
    """The stage's ``stage {name}`` span for its whole life in this run, child of the run's."""
    return _spans.start_span(
        _spans.span_name("stage", name),
        parent=parent,
        attributes={**attributes, "trioflow.stage.kind": kind},
    )


def end_stage(span: Span, counts: Mapping[str, int], exc: BaseException | None) -> None:
    """End a stage's span with its counts (``trioflow.stage.received``, ``...emitted``...)."""
    _spans.end_span(
        span,
        exc,
        attributes={f"trioflow.stage.{key}": value for key, value in counts.items()},
    )


@contextlib.contextmanager
def worker_context(stage_span: Span, trace_items: bool) -> Generator[None]:
    """What is current in a worker task for its whole life (entered and left in that task).

    At ``"stage"`` level: the stage's span. At ``"item"`` level: nothing
    (an empty context), so an item that is not traced does not hang its
    function's spans under the run; traced items make their own span
    current around the call.
    """
    if trace_items:
        token = otel_context.attach(otel_context.Context())
        try:
            yield
        finally:
            otel_context.detach(token)
    else:
        with _spans.activate(stage_span):
            yield


# -- one trace per item ------------------------------------------------------------


def start_source_span(
    span_name: str, pipeline: str, env: Envelope, links: Sequence[Link]
) -> Span | None:
    """Start the item's trace as it enters the first stage: ``source {pipeline}`` (PRODUCER).

    Puts the span in ``env.ctx`` if it is sampled and returns it (the reader
    ends it once the first stage took the item); ``None`` if not sampled.
    An item left out by ``item_sampling`` (drawn here, before the tracer is
    asked) gets no span object at all, sampled or not.
    """
    rate = _spans.item_sampling
    if rate < 1.0 and _draw() >= rate:
        return None
    # The tracer directly (what _spans.start_span(parent=None) does, less two
    # calls): this runs for every source item, sampled or not.
    span = _spans.tracer.start_span(
        span_name,
        context=_spans.EMPTY_CONTEXT,
        kind=SpanKind.PRODUCER,
        attributes={names.PIPELINE_NAME: pipeline, "trioflow.item.id": env.id},
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    )
    if not span.is_recording():  # not sampled
        return None
    env.ctx = span
    return span


#: trioflow's own generator: an application that seeds ``random`` does not
#: make trioflow's sampling follow its sequence (nor the other way round).
_draw: Final = random.Random().random


def _sampled(ctx: object) -> bool:
    return isinstance(ctx, Span) and ctx.get_span_context().trace_flags.sampled


def start_item(span_name: str, attributes: Attributes, env: Envelope) -> Span | None:
    """The item's ``stage {name}`` span (CONSUMER) as a stage takes it, or ``None``.

    A child of the item's previous span (``env.ctx``: the stage before, the
    source, or the batch's own span), if that one was sampled. The span
    replaces ``env.ctx``, so the next stage continues from it.
    """
    ctx = env.ctx
    if not _sampled(ctx):
        return None
    assert isinstance(ctx, Span)
    span = _spans.start_span(
        span_name,
        kind=SpanKind.CONSUMER,
        parent=ctx,
        attributes={**attributes, "trioflow.item.id": env.id},
    )
    env.ctx = span
    return span


def _trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def start_batch(
    span_name: str, attributes: Attributes, batch: Envelope, item_spans: Sequence[Span | None]
) -> Span:
    """A batch's own trace, started as the batch stage sends it: ``batch {stage}`` (CONSUMER).

    A batch has many parents, so (as OpenTelemetry's messaging conventions
    say for batch receives) it starts a new trace, linked to each sampled
    item span up to the link limit (``trioflow.batch.links_dropped`` counts
    the rest). Trace ids are copyable both ways: the batch span lists its
    items' in ``trioflow.item.trace_ids`` (within the link limit), and
    each item span gets the batch's in ``trioflow.batch.trace_id``. The span
    goes into ``batch.ctx``, so the stages after it continue the batch's
    trace (or, if it is not sampled, trace nothing). End it with
    :func:`end_item` when the batch has left the stage.
    """
    sampled = [s for s in item_spans if s is not None and s.is_recording()]
    contexts = [s.get_span_context() for s in sampled]
    limit = _spans.link_limit()
    span = _spans.start_batch_span(
        span_name,
        contexts,
        size=len(item_spans),
        attributes={
            **attributes,
            "trioflow.item.id": batch.id,
            names.ITEM_TRACE_IDS: tuple(
                dict.fromkeys(format(sc.trace_id, "032x") for sc in contexts[:limit])
            ),
        },
        limit=limit,
    )
    if span.is_recording():
        batch.ctx = span
        trace_id = _trace_id(span)
        for s in sampled:
            s.set_attribute(names.BATCH_TRACE_ID, trace_id)
    return span


def end_item(span: Span, fate: Fate, exc: BaseException | None = None) -> None:
    """The item left the stage with ``fate``: end its span (``trioflow.outcome``)."""
    _spans.end_span(span, exc, attributes={_OUTCOME: fate.stage_outcome})


def retry_event(attempt: int, exc: BaseException, delay: float) -> None:
    """A failed attempt will be retried: an event on the item's span (current around the call)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            "trioflow.retry",
            {
                "trioflow.attempt": attempt,
                "error.type": _spans.error_type(exc),
                "trioflow.retry.delay": delay,
            },
        )


def links_to(span: Span) -> list[Link]:
    """A one-link list to ``span`` if it is sampled, else none."""
    sc = span.get_span_context()
    return [Link(sc)] if sc.is_valid and sc.trace_flags.sampled else []


def activate(span: Span | None) -> contextlib.AbstractContextManager[object]:
    """Make an item's span current around its call (``None``: nothing to do)."""
    return _spans.activate(INVALID_SPAN if span is None else span)
