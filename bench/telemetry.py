"""What does trioflow's telemetry cost a limiter?

Prints, in one process and one run, the ratio "telemetry on / telemetry off"
for trioflow's CapacityLimiter:

* uncontended ``async with limiter:`` (50,000 acquisitions per repeat): the
  hot path. Metrics are pull-based (observable instruments read
  ``statistics()`` on the SDK's collection thread), so the only cost is the
  collection thread taking the GIL now and then;
* 1000 tasks contending for 10 tokens (10 rounds each): almost every
  acquisition parks, so the wait hook runs each time — one histogram record
  — and, since a task queues behind ~100 others, most waits last a
  millisecond or more, so with tracing on most also add a ``trioflow.wait``
  event to the worker's span (``_metrics.WAIT_EVENT_MIN``). This case is the
  slow path by construction: read its ratios as "added µs per parked wait".

Sides, each measured in its own ``trio.run``, in rotating order, median of N
repeats (default 7):

* ``off``     — no telemetry configured (``wait_hook`` is ``None``);
* ``off-again`` — the same as ``off``, measured as a side of its own: its
  ratio to ``off`` is the noise floor of this run (an A/A comparison), so a
  ratio within it means "no difference this machine can see";
* ``metrics`` — ``tf.telemetry.use(meter_provider=..., tracing="off")``: an SDK
  MeterProvider whose PeriodicExportingMetricReader collects every second
  (60x the SDK default rate) into a discarding exporter, with 100 other live
  limiters for the callbacks to read;
* ``traced``  — metrics as above plus an SDK TracerProvider (BatchSpanProcessor,
  discarding exporter), tracing="item", and every worker inside a recording
  span, so each wait of 1 ms or more adds a ``trioflow.wait`` event to it.

Times are the process's CPU time (``time.process_time()``: every thread of
this process, so the SDK's collection and export threads are charged to the
side that runs them), not wall time: on a shared machine other processes'
load would otherwise swamp a difference of a few percent.

Second half, a pipeline's throughput (``--only pipeline`` runs just this
half): ``tf.Pipeline`` of three trivial ``map`` stages, one worker each,
over ``N_ITEMS`` source items, CPU time per source item. Sides:

* ``none`` — no trioflow telemetry at all (``use()`` never called);
* ``none-again`` — the same again: this run's A/A noise floor;
* ``off`` — an SDK TracerProvider handed to trioflow with ``tracing="off"``;
* ``stage`` — ``tracing="stage"``: a span per run and per stage;
* ``item`` — ``tracing="item"``, every item sampled: a trace per item (one
  ``source`` span plus one span per stage);
* ``item-1%`` — ``tracing="item"`` under ``ParentBased(TraceIdRatioBased(0.01))``;
* ``item_sampling=1%`` — ``tracing="item"`` with ``use(item_sampling=0.01)``
  and the SDK's default sampler: trioflow draws the 1% before any span exists;
* ``metrics`` — no tracer, an SDK MeterProvider: the cost of the
  ``trioflow.stage.duration`` histogram (one SDK record per item and stage);
* ``metrics-aggregated`` — the same exporter read by
  ``tf.telemetry.metric_reader()`` (as ``configure()`` does): trioflow
  aggregates the histogram in process, and the reader adds it to each export;
* ``metrics-no-durations`` — the same with ``use(stage_durations=False)``:
  every other metric, none recorded per item.

Span sides use a BatchSpanProcessor (queue 65,536, as ``configure()`` sizes
it) with a discarding exporter; its export thread is charged to the side.

Third half, ``use()`` with nothing to report to (``--only use-off``; issue
21's "costs nothing when it is off"): the same three-stage pipeline, and the
contended limiter (every acquisition parks, so the wait hook would run),
with ``use()`` never called (``never``, and ``never-again`` for the A/A
floor), ``use()`` with no providers and no global SDK (``use()``), and
``use(meter_provider=MeterProvider())``, an SDK provider with no reader
(what ``opentelemetry-instrument`` makes with ``OTEL_METRICS_EXPORTER=none``).
For instruction counts, which a shared machine does not blur, run one side
under callgrind at two sizes and subtract (start-up cancels out)::

    PYTHONPATH=. valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/telemetry.py --count 'use()' --items 2000   # and --items 0

Fourth half (``--only jaeger-file``): the Jaeger file's shutdown write for a
flagship-sized run (6,000 item traces of 4 spans), every trace vs the
default :class:`~trioflow.telemetry.KeepTraces` policy: time and size.

    PYTHONPATH=. python bench/telemetry.py [--repeats N] [--only limiter|pipeline|use-off|jaeger-file]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer

import trioflow as tf

N_UNCONTENDED = 50_000
N_TASKS = 1000
N_TOKENS = 10
ROUNDS = 10
OTHER_LIMITERS = 100


class DiscardMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.exports = 0
        #: items counted by trioflow.stage.duration in the latest export (cumulative)
        self.durations = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        counted = [
            sum(p.count for p in m.data.data_points)  # type: ignore[union-attr]
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "trioflow.stage.duration"
        ]
        if counted:
            self.durations = sum(counted)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class DiscardSpans(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def setup(side: str) -> tuple[AbstractContextManager[Any], Callable[[], None]]:
    """The telemetry for one side, and how to tear down its providers."""
    if side.startswith("off"):
        return nullcontext(), lambda: None
    mp = MeterProvider(
        metric_readers=[
            PeriodicExportingMetricReader(DiscardMetrics(), export_interval_millis=1000)
        ]
    )
    tp: TracerProvider | None = None
    if side == "traced":
        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(DiscardSpans()))
    handle = tf.telemetry.use(
        tracer_provider=tp, meter_provider=mp, tracing="item" if tp else "off"
    )

    def close() -> None:
        mp.shutdown()
        if tp is not None:
            tp.shutdown()

    return handle, close


#: The workers' own tracer on the "traced" side (the provider trioflow reports to).
_tracer: Tracer | None = None


def worker_span() -> AbstractContextManager[Any]:
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span("worker")


async def uncontended(side: str) -> float:
    limiter = tf.CapacityLimiter(1)
    t0 = time.process_time()
    for _ in range(N_UNCONTENDED):
        async with limiter:
            pass
    return (time.process_time() - t0) / N_UNCONTENDED


async def contended(side: str) -> float:
    limiter = tf.CapacityLimiter(N_TOKENS)

    async def worker() -> None:
        with worker_span():
            for _ in range(ROUNDS):
                async with limiter:
                    await trio.lowlevel.checkpoint()

    t0 = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(N_TASKS):
            nursery.start_soon(worker)
    return (time.process_time() - t0) / (N_TASKS * ROUNDS)


def measure(case: Callable[[str], Awaitable[float]], side: str) -> float:
    global _tracer
    others = [tf.CapacityLimiter(5, name=f"other-{i}") for i in range(OTHER_LIMITERS)]
    handle, close = setup(side)
    try:
        with handle:
            if isinstance(handle, tf.telemetry.Telemetry) and handle.tracing != "off":
                assert handle.tracer_provider is not None
                _tracer = handle.tracer_provider.get_tracer("bench")
            return trio.run(case, side)
    finally:
        _tracer = None
        close()
        del others


N_ITEMS = 5000
PIPELINE_SIDES = [
    "none",
    "none-again",
    "off",
    "stage",
    "item",
    "item-1%",
    "item_sampling=1%",
    "metrics",
    "metrics-aggregated",
    "metrics-no-durations",
]


async def step(x: int) -> int:
    return x + 1


PIPE = tf.Pipeline("bench").map(step, name="a").map(step, name="b").map(step, name="c")


async def pipeline_run() -> float:
    t0 = time.process_time()
    report = await PIPE.run(range(N_ITEMS))
    elapsed = time.process_time() - t0
    assert report.delivered == N_ITEMS, report
    return elapsed / N_ITEMS


def measure_pipeline(side: str) -> float:
    if side.startswith("none"):
        return trio.run(pipeline_run)
    tp: TracerProvider | None = None
    mp: MeterProvider | None = None
    exporter = DiscardSpans()
    discard = DiscardMetrics()
    if side.startswith("metrics"):
        reader = (
            tf.telemetry.metric_reader(discard, export_interval_millis=1000)
            if side == "metrics-aggregated"
            else PeriodicExportingMetricReader(discard, export_interval_millis=1000)
        )
        mp = MeterProvider(metric_readers=[reader])
    else:
        sampler = ParentBased(TraceIdRatioBased(0.01)) if side == "item-1%" else None
        tp = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        tp.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=65_536, max_export_batch_size=2048)
        )
    level = (
        "off" if side.startswith("metrics") else {"stage": "stage", "off": "off"}.get(side, "item")
    )
    durations = side != "metrics-no-durations"
    share = 0.01 if side == "item_sampling=1%" else 1.0
    try:
        with tf.telemetry.use(
            tracer_provider=tp,
            meter_provider=mp,
            tracing=level,  # type: ignore[arg-type]
            stage_durations=durations,
            item_sampling=share,
        ) as handle:
            assert handle.stage_durations == (mp is not None and durations), side
            assert handle.stage_durations_aggregated == (side == "metrics-aggregated"), side
            return trio.run(pipeline_run)
    finally:
        if tp is not None:
            tp.shutdown()
        if mp is not None:
            mp.shutdown()
        # Check that the side measured what it claims (and that this is the
        # trioflow of this checkout: run with PYTHONPATH=.).
        if side in ("metrics", "metrics-aggregated"):
            want_items = 3 * N_ITEMS
            assert discard.durations == want_items, f"{side}: {discard.durations} durations"
        n = exporter.spans
        want = {"off": (0, 0), "stage": (4, 4), "item": (4 * N_ITEMS + 4, 4 * N_ITEMS + 4)}
        if side in want:
            lo, hi = want[side]
            assert lo <= n <= hi, f"{side}: {n} spans exported"
        elif side in ("item-1%", "item_sampling=1%"):
            assert 4 < n < N_ITEMS, f"{side}: {n} spans exported"


def pipeline_half(repeats: int) -> None:
    sides = PIPELINE_SIDES
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(2):  # warm-up: imports, first trio.run
        measure_pipeline("none")
    for r in range(repeats):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for side in order:
            times[side].append(measure_pipeline(side))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    base, base_best = med["none"], best["none"]
    print(
        f"pipeline, 3 map stages x 1 worker, {N_ITEMS} items, CPU per item, "
        f"median and minimum of {repeats}"
    )
    for side in sides:
        print(
            f"  {side:20s} median {med[side] * 1e6:7.2f} µs/item {med[side] / base:6.3f}x"
            f"   min {best[side] * 1e6:7.2f} µs/item {best[side] / base_best:6.3f}x"
            f"   (max {max(times[side]) * 1e6:.2f})"
        )


# -- use() with nothing to report to (issue 21) ------------------------------------

OFF_SIDES = ["never", "never-again", "use()", "use(no-reader mp)"]
OFF_PIPE = tf.Pipeline("off").map(step, name="a").map(step, name="b").map(step, name="c")


def off_handle(side: str) -> tuple[AbstractContextManager[Any], Callable[[], None]]:
    """The set-up of one side of the use-off half; checks it left no hook behind."""
    from trioflow.telemetry import _hooks

    if side.startswith("never"):
        return nullcontext(), lambda: None
    mp = MeterProvider() if side == "use(no-reader mp)" else None
    handle = tf.telemetry.use(meter_provider=mp)
    # The claim measured here: a side that reports nowhere installs nothing.
    assert handle.tracing == "off", handle
    assert handle.meter_provider is None, handle
    assert _hooks.wait_hook is None
    assert _hooks.stage_hook is None
    return handle, (mp.shutdown if mp is not None else lambda: None)


async def off_pipeline(n: int) -> float:
    t0 = time.process_time()
    report = await OFF_PIPE.run(range(n))
    assert report.delivered == n, report
    return (time.process_time() - t0) / max(1, n)


def measure_off(side: str, case: str, n: int = N_ITEMS) -> float:
    handle, close = off_handle(side)
    try:
        with handle:
            if case == "pipeline":
                return trio.run(off_pipeline, n)
            return trio.run(contended, side)
    finally:
        close()


def use_off_half(repeats: int) -> None:
    import logging

    # use() with nothing to report to warns once per call; not news here.
    logging.getLogger("trioflow.telemetry").setLevel(logging.ERROR)
    for case, title in (
        ("pipeline", f"pipeline, 3 map stages, {N_ITEMS} items, CPU per item"),
        ("contended", "1000 tasks / 10 tokens, CPU per acquisition"),
    ):
        times: dict[str, list[float]] = {k: [] for k in OFF_SIDES}
        measure_off("never", case)  # warm-up
        for r in range(repeats):
            order = OFF_SIDES[r % len(OFF_SIDES) :] + OFF_SIDES[: r % len(OFF_SIDES)]
            for side in order:
                times[side].append(measure_off(side, case))
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["never"]
        print(f"use() with nothing to report to: {title}, median of {repeats}")
        for side in OFF_SIDES:
            print(f"  {side:18s} {med[side] * 1e6:7.2f} µs {med[side] / base:6.3f}x")


# -- the Jaeger file at shutdown: keeping every trace vs the kept-trace policy ------


def jaeger_file_half(repeats: int, traces: int = 6000) -> None:
    """Shutdown time and file size for a flagship-sized file (6,000 item traces, 4 spans each).

    The policy costs one pass over the spans to summarize each trace; it
    saves serializing and writing the traces it drops.
    """
    import tempfile

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    from trioflow.telemetry._jaeger import JaegerFileExporter

    memory = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tp.get_tracer("bench")
    for i in range(traces):
        root = tracer.start_span("source events", attributes={"trioflow.item.id": i})
        parent = root
        for stage in ("enrich", "validate", "batch"):
            span = tracer.start_span(
                f"stage {stage}",
                context=set_span_in_context(parent),
                attributes={"trioflow.item.id": i, "trioflow.outcome": "emitted"},
            )
            if stage == "enrich" and i % 300 == 0:
                span.set_status(Status(StatusCode.ERROR, "boom"))
            if stage == "enrich" and i % 90 == 0:
                span.add_event("trioflow.retry", {"trioflow.attempt": 1})
            span.end()
            parent = span
        root.end()
    spans = list(memory.get_finished_spans())
    tp.shutdown()
    print(f"Jaeger file at shutdown: {traces} item traces, {len(spans)} spans, best of {repeats}")
    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, keep in (("every trace", None), ("KeepTraces()", tf.telemetry.KeepTraces())):
            best = float("inf")
            size = 0
            for _ in range(repeats):
                path = os.path.join(tmp, "t.json")
                exporter = JaegerFileExporter(path, keep)
                exporter.export(spans)
                t0 = time.process_time()
                exporter.shutdown()
                best = min(best, time.process_time() - t0)
                size = os.path.getsize(path)
            results[label] = (best, size)
            print(f"  {label:14s} {best * 1e3:8.1f} ms  {size / 1e6:6.2f} MB")
    (t_all, _), (t_keep, _) = results["every trace"], results["KeepTraces()"]
    print(f"  policy / every trace: {t_keep / t_all:.3f}x the shutdown time")


def count_one(side: str, items: int) -> None:
    """One pipeline run of ``items`` on ``side``, nothing printed: for callgrind."""
    import logging

    logging.getLogger("trioflow.telemetry").setLevel(logging.ERROR)
    measure_off(side, "pipeline", items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--only", choices=("limiter", "pipeline", "use-off", "jaeger-file"), default=None
    )
    parser.add_argument("--count", choices=OFF_SIDES, help="one pipeline run, for callgrind")
    parser.add_argument("--items", type=int, default=2000, help="items of the --count run")
    args = parser.parse_args()
    if args.count is not None:
        count_one(args.count, args.items)
        return
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    if args.only in (None, "limiter"):
        limiter_half(args.repeats)
    if args.only in (None, "pipeline"):
        pipeline_half(args.repeats)
    if args.only in (None, "use-off"):
        use_off_half(args.repeats)
    if args.only in (None, "jaeger-file"):
        jaeger_file_half(args.repeats)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def limiter_half(repeats: int) -> None:
    sides = ["off", "off-again", "metrics", "traced"]
    for title, case in (
        ("uncontended async with", uncontended),
        ("1000 tasks / 10 tokens", contended),
    ):
        times: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(repeats):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for side in order:
                times[side].append(measure(case, side))
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["off"]
        print(
            f"{title:24s} off {base * 1e6:6.2f} µs"
            + "".join(
                f"  {side} {med[side] * 1e6:6.2f} µs ({med[side] / base:.3f}x)"
                for side in sides[1:]
            )
        )


if __name__ == "__main__":
    main()
