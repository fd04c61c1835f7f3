"""Metrics: observable instruments over the registry, and the wait histogram.

Nothing here runs on a hot path. Gauges and up-down counters are
*observable*: the SDK calls their callbacks when it collects (on its
``PeriodicExportingMetricReader`` thread, outside Trio), and the callbacks
read ``statistics()`` of every live primitive through
:func:`trioflow._registry.live`. A primitive pays nothing for being
measured. The one synchronous instrument, the wait histogram, is recorded
from :data:`trioflow.telemetry._hooks.wait_hook`, which primitives call only
after a wait that actually parked.

Adding a building block is two table entries: a reader in :data:`READERS`
for its registry ``kind`` (what it reports, read from ``statistics()``), and
its instruments in :data:`OBSERVED`. Readers run on the exporter thread:
they may read plain attributes only (no ``trio.current_time()``, no
``trio.lowlevel.current_task()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from .. import _registry
from .._pipeline._fate import Fate
from . import _durations, _hooks
from . import _names as n
from ._spans import error_type

__all__ = [
    "OBSERVED",
    "READERS",
    "WAIT_BUCKETS",
    "WAIT_EVENT_MIN",
    "Instruments",
    "identity",
    "install",
    "make_stage_hook",
    "make_wait_hook",
    "observe",
]

#: Bucket bounds of ``trioflow.limiter.wait.duration``, in seconds: from a
#: tenth of a millisecond (a wait that barely parked) to five minutes. The
#: SDK's default bounds (0, 5, 10, 25, ... 10000) are meant for
#: milliseconds and would put every wait in the first bucket.
WAIT_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


#: Waits shorter than this (seconds) are counted in the histogram but add no
#: span event: a trace is read by a person, and a request span holding
#: dozens of 20 µs waits hides the one 300 ms wait that matters (and fills
#: the span's 128-event limit, which would then drop the exception event).
WAIT_EVENT_MIN: Final = 0.001


@attrs.frozen
class InstrumentSpec:
    """One observable instrument: its name, shape and unit."""

    name: str
    shape: Literal["updown", "gauge", "counter"]
    unit: str
    description: str


#: Every observable instrument trioflow registers. Readers return values
#: keyed by these names.
OBSERVED: Final = (
    InstrumentSpec(
        n.LIMITER_LIMIT,
        "updown",
        "{token}",
        "Tokens a limiter hands out in all (not reported while unlimited).",
    ),
    InstrumentSpec(
        n.LIMITER_USAGE,
        "updown",
        "{token}",
        "Tokens held now, out of trioflow.limiter.limit.",
    ),
    InstrumentSpec(
        n.LIMITER_QUEUE_SIZE,
        "updown",
        "{task}",
        "Tasks waiting for tokens now.",
    ),
    InstrumentSpec(
        n.RATE_LIMITER_TOKENS,
        "gauge",
        "{token}",
        "Tokens a rate limiter's bucket holds now.",
    ),
    InstrumentSpec(
        "trioflow.stage.items",
        "counter",
        "{item}",
        "Items that left a pipeline stage, by trioflow.outcome "
        "(emitted, filtered, skipped, dead_lettered, unfinished).",
    ),
    InstrumentSpec(
        "trioflow.stage.queue",
        "updown",
        "{item}",
        "Items waiting in a pipeline stage's input buffer now.",
    ),
    InstrumentSpec(
        "trioflow.pipeline.items",
        "counter",
        "{item}",
        "Source items of a pipeline run that reached their end, by trioflow.outcome "
        "(delivered, filtered, skipped, dead_lettered, unfinished).",
    ),
    InstrumentSpec(
        "trioflow.pipeline.in_flight",
        "updown",
        "{item}",
        "Source items a pipeline run has read and not yet finished.",
    ),
    InstrumentSpec(
        n.TASK_GROUP_RUNNING,
        "updown",
        "{task}",
        "Tasks of a task group spawned and not finished.",
    ),
    InstrumentSpec(
        n.TASK_GROUP_QUEUE_SIZE,
        "updown",
        "{task}",
        "Calls parked in a task group's spawn() or start() waiting for a slot.",
    ),
    InstrumentSpec(
        n.TASK_GROUP_TASKS,
        "counter",
        "{task}",
        "Tasks of a task group that finished, by trioflow.outcome (returned, failed, cancelled).",
    ),
    InstrumentSpec(
        n.STREAM_SOURCE_READ,
        "counter",
        "{entry}",
        "Stream entries a stream source handed to its pipeline, by trioflow.origin "
        "(new: first read; claimed: taken over from another consumer or re-read).",
    ),
    InstrumentSpec(
        n.STREAM_SOURCE_SETTLED,
        "counter",
        "{entry}",
        "Stream entries whose fate reached Redis, by trioflow.outcome (acked; "
        "dead_lettered by the pipeline; exhausted: dead-lettered by the source after "
        "max_deliveries) or left pending (left_pending).",
    ),
    InstrumentSpec(
        n.STREAM_SOURCE_IN_FLIGHT,
        "updown",
        "{entry}",
        "Stream entries read and not yet acknowledged or left pending.",
    ),
    InstrumentSpec(
        n.STREAM_SOURCE_UNAVAILABLE,
        "counter",
        "{call}",
        "Redis calls of a stream source that failed or timed out.",
    ),
)

#: One value for an instrument, or several points that differ by extra
#: attributes (``[({"trioflow.outcome": "emitted"}, 12), ...]``); the
#: primitive's :func:`identity` attributes are added to each.
Value = float | Sequence[tuple[Mapping[str, str], float]]
Reading = Mapping[str, Value]
#: ``reader(primitive)`` -> values keyed by instrument name.
Reader = Callable[[Any], Reading]


def read_limiter(obj: Any) -> Reading:
    """A limiter or a lane: limit, tokens in use, tasks waiting (from ``statistics()``)."""
    stats = obj.statistics()
    out: dict[str, Value] = {
        n.LIMITER_USAGE: stats.borrowed_tokens,
        n.LIMITER_QUEUE_SIZE: stats.tasks_waiting,
    }
    total = stats.total_tokens
    if total != math.inf:
        out[n.LIMITER_LIMIT] = total
    return out


def read_rate(obj: Any) -> Reading:
    """A rate limiter: the tokens its bucket holds (``statistics().tokens``)."""
    stats = obj.statistics()
    tokens = getattr(stats, "tokens", None)
    return {} if tokens is None else {n.RATE_LIMITER_TOKENS: tokens}


def read_task_group(obj: Any) -> Reading:
    """A task group: tasks running, spawners waiting, finished tasks by outcome.

    All from one ``statistics()`` snapshot, whose ``returned`` is the group's
    own counter (not derived), so a reading never runs backwards.
    """
    stats = obj.statistics()
    return {
        n.TASK_GROUP_RUNNING: stats.running,
        n.TASK_GROUP_QUEUE_SIZE: stats.waiting,
        n.TASK_GROUP_TASKS: [
            ({n.OUTCOME: "returned"}, stats.returned),
            ({n.OUTCOME: "failed"}, stats.failed),
            ({n.OUTCOME: "cancelled"}, stats.cancelled),
        ],
    }


def read_stage(obj: Any) -> Reading:
    """A pipeline stage of one run: items out by fate (``Fate.stage_outcome``), items queued."""
    stats = obj.statistics()  # one snapshot: the workers may move on meanwhile
    left = stats.left
    return {
        "trioflow.stage.items": [
            ({"trioflow.outcome": fate.stage_outcome}, left[fate]) for fate in Fate
        ],
        "trioflow.stage.queue": stats.queued,
    }


def read_pipeline(obj: Any) -> Reading:
    """A pipeline run: source items settled by fate (``Fate.outcome``), and those in flight."""
    stats = obj.statistics()
    counts = stats.settled
    return {
        "trioflow.pipeline.items": [
            ({"trioflow.outcome": fate.outcome}, counts[fate]) for fate in Fate
        ],
        "trioflow.pipeline.in_flight": max(0, stats.source_items - sum(counts)),
    }


def read_stream_source(obj: Any) -> Reading:
    """A Redis stream source: entries read (new, claimed), settled, in flight, failed calls."""
    stats = obj.statistics()
    return {
        n.STREAM_SOURCE_READ: [
            ({n.ORIGIN: "new"}, stats.read - stats.claimed),
            ({n.ORIGIN: "claimed"}, stats.claimed),
        ],
        n.STREAM_SOURCE_SETTLED: [
            ({n.OUTCOME: "acked"}, stats.acked),
            ({n.OUTCOME: "dead_lettered"}, stats.dead_lettered),
            ({n.OUTCOME: "exhausted"}, stats.exhausted),
            ({n.OUTCOME: "left_pending"}, stats.left_pending),
        ],
        n.STREAM_SOURCE_IN_FLIGHT: stats.in_flight + stats.settling,
        n.STREAM_SOURCE_UNAVAILABLE: stats.unavailable,
    }


#: Registry ``kind`` (snake_case, see :func:`~._names.kind_id`) -> what to
#: report for a primitive of that kind.
READERS: dict[str, Reader] = {
    n.LIMITER: read_limiter,
    n.LANE: read_limiter,
    n.RATE_LIMITER: read_rate,
    n.TASK_GROUP: read_task_group,
    "stage": read_stage,
    "pipeline": read_pipeline,
    # the replicas' primitives (trioflow.redis), by kind: no import of them here
    n.REDIS_LIMITER: read_limiter,
    n.REDIS_RATE_LIMITER: read_rate,
    n.REDIS_STREAM_SOURCE: read_stream_source,
}


def identity(obj: Any) -> dict[str, str]:
    """The attributes that name a primitive, one per kind (:data:`~._names.NAME_ATTRIBUTE`).

    A lane is named by its limiter (``trioflow.limiter.name``, from its
    ``.limiter``) and its own name (``trioflow.lane.name``: its ``name``
    without the ``"<limiter>/"`` prefix lane handles carry). A kind with no
    entry (a building block added later) gets ``trioflow.<kind>.name``.
    """
    kind = n.kind_id(obj.kind)
    if kind == n.LANE:
        lane: str = obj.name
        parent = getattr(getattr(obj, "limiter", None), "name", None)
        if not isinstance(parent, str):
            return {n.LANE_NAME: lane}
        prefix = f"{parent}/"
        if lane.startswith(prefix):
            lane = lane[len(prefix) :]
        return {n.LIMITER_NAME: parent, n.LANE_NAME: lane}
    if kind == n.STAGE:
        return {n.STAGE_NAME: obj.name, n.PIPELINE_NAME: obj.pipeline}
    return {n.NAME_ATTRIBUTE.get(kind, f"trioflow.{kind}.name"): obj.name}


def observe(name: str) -> list[Observation]:
    """One instrument's observations, one per live primitive that reports it.

    Runs on the SDK's collection thread. A primitive whose reading fails with
    :exc:`RuntimeError` (its state changed size under a concurrent read) is
    skipped this round and read again at the next collection.
    """
    points: dict[frozenset[tuple[str, str]], tuple[dict[str, str], float]] = {}

    def add(attributes: dict[str, str], v: float) -> None:
        key = frozenset(attributes.items())
        seen = points.get(key)
        points[key] = (attributes, v if seen is None else seen[1] + v)

    for obj in _registry.live():
        reader = READERS.get(n.kind_id(obj.kind))
        if reader is None:
            continue
        try:
            value = reader(obj).get(name)
        except RuntimeError:
            continue
        if value is None:
            continue
        if isinstance(value, int | float):
            add(identity(obj), value)
        else:
            base = identity(obj)
            for extra, v in value:
                add({**base, **extra}, v)
    return [Observation(v, attributes) for attributes, v in points.values()]


class Instruments:
    """trioflow's instruments on one meter; callbacks report only while ``active``."""

    def __init__(self, meter: Meter) -> None:
        self.active = True
        for spec in OBSERVED:
            callback = self._callback(spec.name)
            if spec.shape == "updown":
                meter.create_observable_up_down_counter(
                    spec.name, [callback], unit=spec.unit, description=spec.description
                )
            elif spec.shape == "counter":
                meter.create_observable_counter(
                    spec.name, [callback], unit=spec.unit, description=spec.description
                )
            else:
                meter.create_observable_gauge(
                    spec.name, [callback], unit=spec.unit, description=spec.description
                )
        self.stage_duration: Final[Histogram] = meter.create_histogram(
            _durations.NAME,
            unit=_durations.UNIT,
            description=_durations.DESCRIPTION,
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        #: The same histogram aggregated by trioflow, for a provider whose
        #: exporters add it themselves (see :attr:`aggregated`).
        self.durations: Final = _durations.StageDurations(WAIT_BUCKETS)
        #: Does trioflow aggregate ``trioflow.stage.duration`` for this
        #: provider (every reader exports through trioflow's wrapper)?
        self.aggregated = False
        self.wait_duration: Final[Histogram] = meter.create_histogram(
            n.LIMITER_WAIT_DURATION,
            unit="s",
            description="How long a task waited for a limiter, lane or rate limiter (only waits that parked).",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return []
            return observe(name)

        return callback


# One set of instruments per meter provider: registering twice would make
# the SDK warn about duplicate instruments and double-report.
_installed: dict[int, tuple[MeterProvider, Instruments]] = {}


def install(meter_provider: MeterProvider, version: str) -> Instruments:
    """trioflow's instruments on ``meter_provider`` (made once per provider), marked active."""
    entry = _installed.get(id(meter_provider))
    if entry is None or entry[0] is not meter_provider:
        instruments = Instruments(meter_provider.get_meter("trioflow", version))
        instruments.aggregated = _bind_wrappers(meter_provider, instruments.durations, version)
        _installed[id(meter_provider)] = (meter_provider, instruments)
    else:
        instruments = entry[1]
    instruments.active = True
    return instruments


def _bind_wrappers(
    meter_provider: MeterProvider, store: _durations.StageDurations, version: str
) -> bool:
    """Point the provider's trioflow exporter wrappers at ``store``, if every reader has one.

    Decided once per provider, since an SDK provider takes its readers at
    construction only. Not an SDK provider (or no SDK): ``False``.
    """
    if not type(meter_provider).__module__.startswith("opentelemetry.sdk."):
        return False
    from . import _metric_export  # the SDK is there: the provider is one of its

    wrappers = _metric_export.aggregates(meter_provider)
    if wrappers is None:
        return False
    resource = _metric_export.resource_of(meter_provider)
    for wrapper in wrappers:
        wrapper.bind(store, resource, version)
    return True


def wait_attributes(primitive: object) -> dict[str, str]:
    kind = getattr(primitive, "kind", None)
    if not isinstance(kind, str):
        return {n.KIND: type(primitive).__name__}
    attrs_ = identity(primitive)
    attrs_[n.KIND] = n.kind_id(kind)
    return attrs_


def make_stage_hook(instruments: Instruments) -> _hooks.StageHook:
    """The hook a pipeline stage calls once per item, recording ``trioflow.stage.duration``.

    Attributes: ``trioflow.stage.name``, ``trioflow.pipeline.name``, and
    ``error.type`` when the item's last attempt failed. Cost: for a
    provider trioflow aggregates for (:attr:`Instruments.aggregated`), a
    bisect and a few additions, on the order of 0.5 µs; otherwise one SDK
    histogram record per item and stage, on the order of 10 µs (see
    ``docs/benchmarks/telemetry.md``). It is ``None`` while metrics are off
    or report nowhere, and a run reads it once, when it starts.
    """
    if instruments.aggregated:
        return _durations.make_aggregating_hook(instruments.durations)
    histogram = instruments.stage_duration
    record = histogram.record

    def on_item(stage: Any, duration: float, exc: BaseException | None) -> None:
        attributes: dict[str, str] = stage.attributes
        if exc is not None:
            attributes = {**attributes, "error.type": error_type(exc)}
        record(duration, attributes)

    return on_item


def make_wait_hook(histogram: Histogram | None) -> _hooks.WaitHook:
    """The hook primitives call after a wait that parked.

    It records the wait in ``trioflow.limiter.wait.duration`` (when metrics
    are on) and, when tracing is on, the wait lasted at least
    :data:`WAIT_EVENT_MIN` and a recording span is current in the waiting
    task, adds a ``trioflow.wait`` event with the duration to that span.
    Cost when it runs (SDK): one histogram record plus, with a recording
    span, one event, each on the order of 10 µs
    (``docs/benchmarks/telemetry.md``); it never runs on a fast path, and
    it is ``None`` (not called) while neither metrics nor tracing report
    anywhere.
    """

    def on_wait(primitive: object, since: float, now: float) -> None:
        duration = max(0.0, now - since)
        attributes = wait_attributes(primitive)
        if histogram is not None:
            histogram.record(duration, attributes)
        if _hooks.tracing and duration >= WAIT_EVENT_MIN:
            span = trace.get_current_span()
            if span.is_recording():
                event: dict[str, str | float] = dict(attributes)
                event[n.WAIT_DURATION] = duration
                span.add_event(n.WAIT_EVENT, event)

    return on_wait
