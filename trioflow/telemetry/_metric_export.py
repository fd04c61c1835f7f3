"""The metric reader that adds trioflow's in-process stage durations to each export.

Imports the SDK: loaded by :func:`~trioflow.telemetry.configure`,
:func:`~trioflow.telemetry.metric_reader`, and by :func:`aggregates` only
for a provider that is an SDK one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any, Final, cast

from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import _durations

__all__ = ["StageDurationReader", "aggregates", "resource_of"]


class StageDurationReader(PeriodicExportingMetricReader):
    """A periodic exporting reader that adds ``trioflow.stage.duration`` from trioflow's aggregate.

    Made by :func:`trioflow.telemetry.metric_reader`. It collects and
    exports as the SDK's ``PeriodicExportingMetricReader`` does, and, once
    trioflow is pointed at the meter provider it reads for, adds the
    stage-duration histogram trioflow aggregated in process (cumulative,
    with the bucket bounds the SDK would use) to every export — also to a
    collection in which the SDK itself found nothing, so the histogram is
    exported every interval and at shutdown like any cumulative metric.
    Until then, and for a provider trioflow does not use, it is the SDK's
    reader unchanged.
    """

    def __init__(
        self,
        exporter: MetricExporter,
        export_interval_millis: float | None = None,
        export_timeout_millis: float | None = None,
    ) -> None:
        super().__init__(
            exporter,
            export_interval_millis=export_interval_millis,
            export_timeout_millis=export_timeout_millis,
        )
        self.exporter: Final = exporter
        self._store: _durations.StageDurations | None = None
        self._resource: Resource | None = None
        self._scope: InstrumentationScope | None = None
        self._received = threading.local()

    @property
    def cumulative(self) -> bool:
        """Does the exporter take histograms as cumulative points (the default)?"""
        preferred: Any = self.exporter._preferred_temporality or {}  # pyright: ignore[reportPrivateUsage]
        return preferred.get(SdkHistogram, AggregationTemporality.CUMULATIVE) == (
            AggregationTemporality.CUMULATIVE
        )

    def bind(self, store: _durations.StageDurations, resource: Resource, version: str) -> None:
        """Report ``store`` from now on, under ``resource`` when an export has no resource."""
        self._resource = resource
        self._scope = InstrumentationScope("trioflow", version)
        self._store = store

    # The SDK marks collect() final; it is overridden all the same, and only
    # to add a call after it: the SDK skips the exporter when it found
    # nothing, and the histogram kept here must still be exported (a test
    # runs this at the SDK floor and at the newest release).
    def collect(self, timeout_millis: float = 10_000) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Collect and export, as the SDK's reader does, with trioflow's stage durations."""
        self._received.done = False
        super().collect(timeout_millis=timeout_millis)
        store = self._store
        if not self._received.done and store is not None and store:
            # The SDK found nothing to export (it then skips the exporter).
            self._receive_metrics(MetricsData(resource_metrics=[]), timeout_millis=timeout_millis)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._received.done = True
        store = self._store
        if store is not None:
            metrics_data = self._with_durations(metrics_data, store)
        base: Any = super()
        base._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def _with_durations(self, data: MetricsData, store: _durations.StageDurations) -> MetricsData:
        points = store.snapshot()
        if not points:
            return data
        now = time.time_ns()
        bounds = list(store.bounds)
        metric = Metric(
            name=_durations.NAME,
            description=_durations.DESCRIPTION,
            unit=_durations.UNIT,
            data=Histogram(
                data_points=[
                    HistogramDataPoint(
                        attributes=attrs,
                        start_time_unix_nano=store.start_time_unix_nano,
                        time_unix_nano=now,
                        count=count,
                        sum=total,
                        bucket_counts=counts,
                        explicit_bounds=bounds,
                        min=low,
                        max=high,
                    )
                    for attrs, counts, count, total, low, high in points
                ],
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            ),
        )
        assert self._scope is not None
        assert self._resource is not None
        resources = list(data.resource_metrics)
        if not resources:
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=self._resource,
                        scope_metrics=[ScopeMetrics(self._scope, [metric], "")],
                        schema_url="",
                    )
                ]
            )
        # One provider, one resource: trioflow's scope is in the first (and only) one.
        first = resources[0]
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == "trioflow":
                # (The SDK's own instrument of that name records nothing
                # for a provider trioflow aggregates for: no duplicate.)
                scopes[i] = dataclasses.replace(scope, metrics=[*scope.metrics, metric])
                break
        else:
            scopes.append(ScopeMetrics(self._scope, [metric], ""))
        resources[0] = dataclasses.replace(first, scope_metrics=scopes)
        return MetricsData(resource_metrics=resources)


def _readers(provider: object) -> Sequence[object] | None:
    readers: object = getattr(provider, "_metric_readers", None)  # newer SDKs keep them here
    if readers is None:
        readers = getattr(getattr(provider, "_sdk_config", None), "metric_readers", None)
    return cast("Sequence[object]", readers) if isinstance(readers, Sequence) else None


def aggregates(provider: object) -> list[StageDurationReader] | None:
    """The readers of ``provider``, if trioflow may aggregate its stage durations.

    That is: an SDK meter provider with no views, whose every reader is a
    :class:`StageDurationReader` whose exporter takes cumulative
    histograms. Anything else (an in-memory or pull reader, a view that
    might rename or drop the instrument, delta temporality, or SDK
    internals this version does not recognise) gets ``None``: the SDK
    records each duration itself, which is slower but always right.
    """
    readers = _readers(provider)
    if not readers:
        return None
    views: object = getattr(getattr(provider, "_sdk_config", None), "views", None)
    if not isinstance(views, Sequence) or views:
        return None
    ours: list[StageDurationReader] = []
    for reader in readers:
        if not isinstance(reader, StageDurationReader) or not reader.cumulative:
            return None
        ours.append(reader)
    return ours


def resource_of(provider: object) -> Resource:
    """The provider's resource (the SDK keeps it in its config), or the default one."""
    resource = getattr(getattr(provider, "_sdk_config", None), "resource", None)
    return resource if isinstance(resource, Resource) else Resource.create()
