"""``trioflow.stage.duration`` aggregated by trioflow (``metric_reader``), against the SDK's own.

The SDK's explicit-bucket aggregation is the reference: the same durations
go through both paths and must give the same points (count, buckets, sum,
minimum, maximum, attributes, bounds).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import View

import trioflow as tf
from trioflow.telemetry import _durations, _metrics

from .conftest import Receiver, attributes

NAME = "trioflow.stage.duration"


class Capture(MetricExporter):
    """Keeps every export (cumulative unless told otherwise)."""

    def __init__(self, delta: bool = False) -> None:
        temporality = {SdkHistogram: AggregationTemporality.DELTA} if delta else None
        super().__init__(preferred_temporality=temporality)
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


Key = tuple[tuple[str, str], ...]


def durations_in(data: MetricsData | None) -> dict[Key, HistogramDataPoint]:
    """The stage-duration points of one export, by sorted attributes (and only one metric)."""
    found: list[Any] = []
    if data is not None:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                found += [(sm.scope.name, m) for m in sm.metrics if m.name == NAME]
    if not found:
        return {}
    ((scope, metric),) = found  # one metric of that name, never two
    assert scope == "trioflow"
    assert metric.unit == "s"
    assert metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    out: dict[Key, HistogramDataPoint] = {}
    for p in metric.data.data_points:
        assert isinstance(p, HistogramDataPoint)
        out[tuple(sorted((p.attributes or {}).items()))] = p  # type: ignore[arg-type]
    return out


def same_points(
    ours: dict[Key, HistogramDataPoint], sdk: dict[Key, HistogramDataPoint], exact: bool = True
) -> None:
    """Equal points; ``exact=False`` for durations the mock clock computed at different
    absolute times (the same sleep, rounded differently)."""
    assert set(ours) == set(sdk)
    for key, want in sdk.items():
        got = ours[key]
        assert list(got.bucket_counts) == list(want.bucket_counts), key
        assert got.count == want.count == sum(got.bucket_counts), key
        assert list(got.explicit_bounds) == list(want.explicit_bounds), key
        rel = 1e-12 if exact else 1e-9
        assert got.sum == pytest.approx(want.sum, rel=rel, abs=1e-15), key
        if exact:
            assert (got.min, got.max) == (want.min, want.max), key
        else:
            assert (got.min, got.max) == (pytest.approx(want.min), pytest.approx(want.max)), key


@pytest.fixture
def fresh_instruments() -> Iterator[None]:
    yield
    gc.collect()


class FakeStage:
    """What the hook reads of a stage run: its attributes and its cell cache."""

    def __init__(self, name: str, pipeline: str = "p") -> None:
        self.attributes = {"trioflow.stage.name": name, "trioflow.pipeline.name": pipeline}
        self.metric_cell: object = None


# Durations on the bounds themselves, either side of them, and far out.
_BOUNDS = _metrics.WAIT_BUCKETS
durations = st.one_of(
    st.sampled_from([0.0, *_BOUNDS, 1e-9, 1000.0]),
    st.sampled_from(_BOUNDS).map(lambda b: b * (1 + 1e-12)),
    st.floats(min_value=0.0, max_value=400.0, allow_nan=False),
)
ops = st.lists(
    st.tuples(
        st.sampled_from(["ok", "ok", "ok", "error", "end", "snapshot"]),
        st.integers(0, 3),  # which stage run (0-1: stage "a", 2-3: stage "b")
        durations,
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_the_aggregate_is_the_sdks_histogram(ops: list[tuple[str, int, float]]) -> None:
    """Any sequence of records, failed records, stage runs ending (their cells folded) and
    collections in between: trioflow's points equal the SDK's for the same durations."""
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    try:
        instruments = _metrics.Instruments(mp.get_meter("trioflow"))
        sdk_hook = _metrics.make_stage_hook(instruments)  # not aggregated: SDK records
        store = _durations.StageDurations(_BOUNDS)
        our_hook = _durations.make_aggregating_hook(store)
        # Two stage objects per run slot: one the SDK path sees, one ours caches into.
        runs: list[FakeStage | None] = [FakeStage("ab"[i // 2]) for i in range(4)]
        sdk_stage = FakeStage("x")
        for op, i, d in ops:
            stage = runs[i]
            if op == "end":
                # The run is gone (freed at once: no cycle): its cell must be folded.
                runs[i] = FakeStage("ab"[i // 2])
                continue
            if op == "snapshot":
                store.snapshot()
                continue
            assert stage is not None
            exc = KeyError("k") if op == "error" else None
            sdk_stage.attributes = stage.attributes
            sdk_hook(sdk_stage, d, exc)
            our_hook(stage, d, exc)
        gc.collect()
        ours = store.snapshot()
        got = {
            tuple(sorted(a.items())): HistogramDataPoint(
                a, 0, 0, count, total, counts, list(_BOUNDS), low, high
            )
            for a, counts, count, total, low, high in ours
        }
        same_points(got, durations_in(reader.get_metrics_data()))
    finally:
        mp.shutdown()


def test_a_snapshot_never_tears_a_point() -> None:
    """A collection thread reading while the Trio-side writer counts: every snapshot's sum
    is exactly its count (each duration is 1.0), whatever the interleaving."""
    store = _durations.StageDurations(_BOUNDS)
    hook = _durations.make_aggregating_hook(store)
    stage = FakeStage("a")
    stop = threading.Event()
    seen: list[tuple[int, float, float, float]] = []

    def read() -> None:
        while not stop.is_set():
            for _, _, count, total, low, high in store.snapshot():
                seen.append((count, total, low, high))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(200_000):
            hook(stage, 1.0, None)
    finally:
        stop.set()
        reader.join()
    assert seen, "the reader never saw a point"
    assert all(total == count and low == high == 1.0 for count, total, low, high in seen)
    ((_, _, count, total, _, _),) = store.snapshot()
    assert count == total == 200_000


def test_cells_of_finished_runs_are_folded(fresh_instruments: None) -> None:
    """A service that runs many pipelines keeps one cell per attribute set, not one per run."""
    store = _durations.StageDurations(_BOUNDS)
    hook = _durations.make_aggregating_hook(store)
    for _ in range(50):
        stage = FakeStage("a")
        hook(stage, 0.002, None)
        hook(stage, 0.2, None)
        del stage
    gc.collect()
    ((attrs, counts, count, total, low, high),) = store.snapshot()
    assert attrs == {"trioflow.stage.name": "a", "trioflow.pipeline.name": "p"}
    assert (count, low, high) == (100, 0.002, 0.2)
    assert total == pytest.approx(50 * 0.202)
    assert store._own == []  # pyright: ignore[reportPrivateUsage]
    assert counts[_BOUNDS.index(0.0025)] == 50


# -- which providers trioflow aggregates for ---------------------------------------------


def _aggregated(mp: MeterProvider) -> bool:
    with tf.telemetry.use(meter_provider=mp) as handle:
        return handle.stage_durations_aggregated


def test_aggregated_only_when_every_reader_is_trioflows() -> None:
    cases = {
        "metric_reader": ([tf.telemetry.metric_reader(Capture())], (), True),
        "two of them": (
            [tf.telemetry.metric_reader(Capture()), tf.telemetry.metric_reader(Capture())],
            (),
            True,
        ),
        "in-memory reader": ([InMemoryMetricReader()], (), False),
        "mixed": ([tf.telemetry.metric_reader(Capture()), InMemoryMetricReader()], (), False),
        "delta": ([tf.telemetry.metric_reader(Capture(delta=True))], (), False),
        "a view": (
            [tf.telemetry.metric_reader(Capture())],
            [View(instrument_name="other.*")],
            False,
        ),
    }
    for case, (readers, views, want) in cases.items():
        mp = MeterProvider(metric_readers=readers, views=views)
        try:
            assert _aggregated(mp) is want, case
        finally:
            mp.shutdown()
    mp = MeterProvider(metric_readers=[tf.telemetry.metric_reader(Capture())])
    try:
        with tf.telemetry.use(meter_provider=mp, stage_durations=False) as handle:
            assert handle.stage_durations_aggregated is False
    finally:
        mp.shutdown()


def test_metric_reader_takes_only_an_sdk_exporter() -> None:
    with pytest.raises(TypeError, match=r"^exporter must be an opentelemetry\.sdk MetricExporter"):
        tf.telemetry.metric_reader(object())  # type: ignore[arg-type]


async def test_a_pipeline_through_both_paths_gives_the_same_points(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A real pipeline (retries, failures, two stages, two workers, two runs of the same
    name) on the mock clock: once with the SDK recording, once aggregated by trioflow."""

    async def fetch(x: int) -> int:
        await trio.sleep(0.003 * (x % 7) + 0.0004)
        if x % 5 == 0:
            raise ValueError(x)
        return x

    async def store(x: int) -> int:
        await trio.sleep(0.02 if x % 2 else 0.6)
        return x

    pipe = (
        tf.Pipeline("orders")
        .map(
            fetch,
            workers=2,
            on_error="skip",
            retry=tf.Retry(attempts=2, backoff=tf.Backoff.constant(0.01)),
            name="fetch",
        )
        .map(store, name="store")
    )

    async def twice() -> None:
        for _ in range(2):
            report = await pipe.run(range(40))
            assert report.skipped == 8

    sdk_reader = InMemoryMetricReader()
    sdk_mp = MeterProvider(metric_readers=[sdk_reader])
    capture = Capture()
    our_mp = MeterProvider(metric_readers=[tf.telemetry.metric_reader(capture)])
    try:
        with tf.telemetry.use(meter_provider=sdk_mp) as handle:
            assert not handle.stage_durations_aggregated
            await twice()
        with tf.telemetry.use(meter_provider=our_mp) as handle:
            assert handle.stage_durations_aggregated
            await twice()
        gc.collect()  # the runs are gone: their cells fold, nothing is lost
        our_mp.force_flush()
        sdk = durations_in(sdk_reader.get_metrics_data())
        ours = durations_in(capture.exports[-1])
        assert {dict(k).get("error.type") for k in sdk} == {None, "ValueError"}
        assert sum(p.count for p in sdk.values()) == 2 * (40 + 32)
        same_points(ours, sdk, exact=False)
    finally:
        sdk_mp.shutdown()
        our_mp.shutdown()


async def test_exported_when_nothing_else_is(autojump_clock: trio.testing.MockClock) -> None:
    """After the pipeline is gone the SDK has nothing of its own to export (it then skips
    the exporter); the histogram, a cumulative metric, is still exported each time."""

    async def step(x: int) -> int:
        await trio.sleep(0.01)
        return x

    capture = Capture()
    mp = MeterProvider(metric_readers=[tf.telemetry.metric_reader(capture)])
    try:
        with tf.telemetry.use(meter_provider=mp):
            await tf.Pipeline("solo").map(step, name="only").run(range(5))
        gc.collect()
        for _ in range(2):
            mp.force_flush()
        assert len(capture.exports) >= 2
        for data in capture.exports[-2:]:
            (point,) = durations_in(data).values()
            assert point.count == 5
            assert point.sum == pytest.approx(0.05)
            (rm,) = data.resource_metrics
            assert rm.resource.attributes.get("service.name") is not None
    finally:
        mp.shutdown()


async def test_configure_aggregates_on_the_wire(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``configure()``'s OTLP reader is trioflow's: the histogram arrives over OTLP/HTTP once,
    under the run's service, with trioflow's bounds, beside the SDK's other metrics."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")

    async def step(x: int) -> int:
        await trio.sleep(0.2 if x == 0 else 0.001)
        if x == 3:
            raise KeyError(x)
        return x

    t = tf.telemetry.configure("wire-durations", otlp_endpoint=receiver.endpoint, set_global=False)
    try:
        assert t.stage_durations_aggregated
        report = await tf.Pipeline("w").map(step, on_error="skip", name="s").run(range(4))
        assert report.skipped == 1
    finally:
        t.shutdown()
    points = receiver.metric_points("wire-durations")
    last: dict[tuple[tuple[str, Any], ...], Any] = {}
    for attrs, p in points[NAME]:
        last[tuple(sorted(attrs.items()))] = p
    ok = last[(("trioflow.pipeline.name", "w"), ("trioflow.stage.name", "s"))]
    failed = last[
        (("error.type", "KeyError"), ("trioflow.pipeline.name", "w"), ("trioflow.stage.name", "s"))
    ]
    assert (ok.count, failed.count) == (3, 1)
    assert ok.sum == pytest.approx(0.202)
    assert (ok.min, ok.max) == (pytest.approx(0.001), pytest.approx(0.2))
    assert list(ok.explicit_bounds) == list(_BOUNDS)
    assert sum(ok.bucket_counts) == 3
    # Each request carries the metric once.
    for req in receiver.metrics:
        names = [
            m.name
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == NAME
        ]
        assert len(names) <= 1
        for rm in req.resource_metrics:
            assert attributes(rm.resource.attributes)["service.name"] == "wire-durations"
