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
  batch is sent. The stage that then takes the batch starts a *new trace*
  (a batch has many parents, so, as OpenTelemetry's messaging conventions
  say, it links instead): ``stage {name}`` with one link per sampled item
  span in the batch, up to the link limit (``trioflow.batch.links_dropped``
  counts the rest). Stages after it continue that trace.

Sampling: the item's root span is sampled by the configured sampler; an
item whose root is not sampled gets no further spans at all (so 1 %
sampling costs one unsampled root per item, not one per stage). Its stage
function runs with no current span, so spans it starts are roots of their
own, subject to the sampler, rather than pieces of a trace as long as the
run. A batch trace is sampled on its own (links carry no sampling decision).

Costs (``bench/telemetry.py --only pipeline``, 3 trivial stages, see
``docs/benchmarks/``): tracing off is one flag read per run and per
worker; ``"stage"`` adds spans per run and stage only (1.01x median);
``"item"`` at 1% sampling costs one unsampled root span per item, while
unsampled items keep the fast worker path (1.25-1.35x); every item
sampled is about 45 µs per span. ``trioflow.stage.duration`` is one SDK
histogram record per item and stage (~10 µs) while a meter provider is set;
its hook is ``None`` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind

from ..telemetry import _spans

if TYPE_CHECKING:
    from ._envelope import Envelope
    from ._runtime import PipelineRun
    from ._stage import StageRun

__all__ = [
    "end_item",
    "retry_event",
    "start_item",
    "start_source_span",
]

EMITTED: Final = "emitted"
FILTERED: Final = "filtered"
SKIPPED: Final = "skipped"
DEAD_LETTERED: Final = "dead_lettered"
UNFINISHED: Final = "unfinished"


# -- the run and its stages ------------------------------------------------------


def start_run(run: PipelineRun) -> Span:
    """The ``pipeline {name}`` span, child of the span current in the task that runs it."""
    return _spans.start_span(
        _spans.span_name("pipeline", run.name),
        attributes={"trioflow.name": run.name, "trioflow.pipeline.stages": len(run.stages)},
    )


def end_run(run: PipelineRun, span: Span, exc: BaseException | None) -> None:
    """End the run's span with what became of the source items, and why it failed if it did."""
    if exc is None and run.failures:
        failures = run.failures
        exc = (
            failures[0]
            if len(failures) == 1
            else BaseExceptionGroup(f"pipeline {run.name!r} failed", failures)
        )
    report = run.report
    attributes: dict[str, Any] = {
        "trioflow.pipeline.source_items": report.source_items,
        "trioflow.pipeline.delivered": report.delivered,
        "trioflow.pipeline.filtered": report.filtered,
        "trioflow.pipeline.skipped": report.skipped,
        "trioflow.pipeline.dead_lettered": report.dead_lettered,
        "trioflow.pipeline.unfinished": report.unfinished,
    }
    if exc is None and run.was_cancelled:
        attributes["trioflow.cancelled"] = True
    _spans.end_span(span, exc, attributes=attributes)


def start_stage(stage: StageRun, parent: Span) -> Span:
    """The stage's ``stage {name}`` span for its whole life in this run, child of the run's."""
    return _spans.start_span(
        _spans.span_name("stage", stage.name),
        parent=parent,
        attributes={**stage.telemetry_attributes, "trioflow.stage.kind": stage.spec.kind},
    )


def end_stage(stage: StageRun, span: Span, exc: BaseException | None) -> None:
    r = stage
    _spans.end_span(
        span,
        exc,
        attributes={
            "trioflow.stage.received": r.received,
            "trioflow.stage.emitted": r.emitted,
            "trioflow.stage.filtered": r.filtered,
            "trioflow.stage.skipped": r.skipped,
            "trioflow.stage.failed": r.failed,
            "trioflow.stage.retried": r.retried,
            "trioflow.stage.dead_lettered": r.dead_lettered,
            "trioflow.stage.unfinished": r.unfinished,
        },
    )


@contextlib.contextmanager
def worker_context(stage: StageRun) -> Generator[None]:
    """What is current in a worker task for its whole life (entered and left in that task).

    At ``"stage"`` level: the stage's span. At ``"item"`` level: nothing
    (an empty context), so an item that is not traced does not hang its
    function's spans under the run; traced items make their own span
    current around the call.
    """
    run = stage.run
    if run.trace_items:
        token = otel_context.attach(otel_context.Context())
        try:
            yield
        finally:
            otel_context.detach(token)
    else:
        with _spans.activate(stage.span):
            yield


# -- one trace per item ------------------------------------------------------------


def start_source_span(run: PipelineRun, env: Envelope) -> Span | None:
    """Start the item's trace as it enters the first stage: ``source {pipeline}`` (PRODUCER).

    Puts the span in ``env.ctx`` if it is sampled and returns it (the reader
    ends it once the first stage took the item); ``None`` if not sampled.
    """
    # The tracer directly (what _spans.start_span(parent=None) does, less two
    # calls): this runs for every source item, sampled or not.
    span = _spans.tracer.start_span(
        run.source_span_name,
        context=_spans.EMPTY_CONTEXT,
        kind=SpanKind.PRODUCER,
        attributes={"trioflow.pipeline": run.name, "trioflow.item.id": env.id},
        links=run.source_links,
        record_exception=False,
        set_status_on_exception=False,
    )
    if not span.is_recording():  # not sampled
        return None
    env.ctx = span
    return span


def _sampled(ctx: object) -> bool:
    return isinstance(ctx, Span) and ctx.get_span_context().trace_flags.sampled


def start_item(stage: StageRun, env: Envelope) -> Span:
    """The item's ``stage {name}`` span (CONSUMER) as this stage takes it, or INVALID_SPAN.

    A single item: a child of the item's previous span (``env.ctx``), if
    that one was sampled. A batch that no stage has traced yet: a new trace
    linked to its items' spans. The span replaces ``env.ctx``, so the next
    stage continues from it.
    """
    ctx = env.ctx
    attributes = stage.telemetry_attributes
    if ctx is None:
        parts = env.parts
        if parts is None:
            return INVALID_SPAN  # entered before item tracing was on
        span = _spans.start_batch_span(
            stage.span_name,
            [
                p.ctx.get_span_context()
                for p in parts
                if isinstance(p.ctx, Span) and _sampled(p.ctx)
            ],
            size=len(parts),
            attributes={**attributes, "trioflow.item.id": env.id},
        )
    elif _sampled(ctx):
        assert isinstance(ctx, Span)
        span = _spans.start_span(
            stage.span_name,
            kind=SpanKind.CONSUMER,
            parent=ctx,
            attributes={**attributes, "trioflow.item.id": env.id},
        )
    else:
        return INVALID_SPAN
    env.ctx = span
    return span


def end_item(span: object, outcome: str, exc: BaseException | None = None) -> None:
    """The item left the stage: end its span with ``outcome``.

    ``span`` is the item's ``env.ctx`` as this stage last saw it: read it
    *before* handing the item downstream, where the next stage replaces it.
    Does nothing if this stage started no span (``span`` is then the
    previous stage's, already ended, or ``None``).
    """
    if isinstance(span, Span) and span.is_recording():
        _spans.end_span(span, exc, attributes={"trioflow.outcome": outcome})


def retry_event(attempt: int, exc: BaseException, delay: float) -> None:
    """A failed attempt will be retried: an event on the item's span (current around the call)."""
    from opentelemetry import trace

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
