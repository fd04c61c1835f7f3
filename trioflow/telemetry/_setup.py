"""``configure()`` and ``use()``: point trioflow at OpenTelemetry providers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, cast, final

import attrs
from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from .._util import raise_type
from . import _hooks, _metrics, _spans
from ._keep import KeepTraces, KeptTraces

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "DEFAULT_KEEP",
    "ExportCounts",
    "ShutdownReport",
    "Telemetry",
    "configure",
    "jaeger_file_exporter",
    "metric_reader",
    "use",
]

logger = logging.getLogger("trioflow.telemetry")

Tracing = Literal["off", "stage", "item"]
_LEVELS: Final = {"off": _hooks.OFF, "stage": _hooks.STAGE, "item": _hooks.ITEM}
_NAMES: Final[dict[int, Tracing]] = {_hooks.OFF: "off", _hooks.STAGE: "stage", _hooks.ITEM: "item"}


def _check_tracing(value: object) -> int:
    if not isinstance(value, str):
        raise_type("tracing", "'off', 'stage' or 'item'", value)
    level = _LEVELS.get(value)
    if level is None:
        raise ValueError(f"tracing must be 'off', 'stage' or 'item', got {value!r}")
    return level


@attrs.frozen
class ExportCounts:
    """What happened to the spans sent to one destination."""

    destination: str
    """``"otlp http://…/v1/traces"``, ``"jaeger_file trace.json"`` or ``"console"``."""

    spans: int
    """Sampled spans that ended while the destination was open."""

    exported: int
    """Spans the exporter delivered."""

    failed: int
    """Spans the exporter tried and failed to deliver (endpoint down, bad
    response, a Jaeger file that could not be written)."""

    filtered: int = 0
    """Spans of traces the Jaeger file's :class:`KeepTraces` policy left out
    on purpose (not a loss)."""

    traces: KeptTraces | None = None
    """For a Jaeger file: how many traces it kept and dropped, and why."""

    error: str | None = None
    """Why the destination's last delivery failed, if it did."""

    @property
    def dropped(self) -> int:
        """Spans that never reached the exporter (the batch queue was full)."""
        return max(0, self.spans - self.exported - self.failed - self.filtered)

    def __str__(self) -> str:
        text = f"{self.destination}: {self.exported}/{self.spans} spans exported"
        if self.filtered:
            text += f" ({self.filtered} in traces left out)"
        text += f", {self.dropped} dropped, {self.failed} failed"
        if self.traces is not None and self.traces.traces:
            text += f"; {self.traces}"
        if self.error is not None:
            text += f" (write failed: {self.error})"
        return text


@attrs.frozen
class ShutdownReport:
    """What :meth:`Telemetry.shutdown` flushed, per destination."""

    destinations: tuple[ExportCounts, ...]

    @property
    def dropped(self) -> int:
        """Spans lost before export, summed over destinations."""
        return sum(d.dropped for d in self.destinations)

    @property
    def failed(self) -> int:
        """Spans whose export failed, summed over destinations."""
        return sum(d.failed for d in self.destinations)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.destinations) or "no span destinations"


_active: Telemetry | None = None

#: The policy a Jaeger file uses unless told otherwise (see :class:`KeepTraces`).
DEFAULT_KEEP: Final = KeepTraces()


@final
class Telemetry:
    """trioflow's telemetry set-up, as returned by :func:`configure` and :func:`use`.

    While it is active, trioflow's spans go to :attr:`tracer_provider` and
    its metrics to :attr:`meter_provider`. :meth:`shutdown` (or leaving a
    ``with`` block) ends that: the set-up that was active before comes back,
    or telemetry goes off. Made by those two functions, not directly.
    """

    __slots__ = (
        "_closed",
        "_instruments",
        "_item_sampling",
        "_level",
        "_owned",
        "_previous",
        "_processors",
        "_stage_durations",
        "meter_provider",
        "tracer_provider",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        level: int,
        owned: bool,
        processors: Sequence[Any] = (),
        stage_durations: bool = True,
        item_sampling: float = 1.0,
    ) -> None:
        #: Where trioflow's spans go (``None``: nowhere).
        self.tracer_provider: Final = tracer_provider
        #: Where trioflow's metrics go (``None``: no metrics).
        self.meter_provider: Final = meter_provider
        self._level = level
        self._owned = owned
        self._processors: tuple[Any, ...] = tuple(processors)
        self._stage_durations = stage_durations
        self._item_sampling = item_sampling
        self._instruments: _metrics.Instruments | None = None
        self._previous: Telemetry | None = None
        self._closed = False

    @property
    def tracing(self) -> Tracing:
        """The tracing level: ``"off"``, ``"stage"`` or ``"item"``."""
        return _NAMES[self._level]

    @property
    def item_sampling(self) -> float:
        """The share of pipeline source items traced at ``tracing="item"``, in [0, 1].

        Drawn per item before any span exists; see :func:`use`.
        """
        return self._item_sampling

    @property
    def stage_durations(self) -> bool:
        """Is ``trioflow.stage.duration`` recorded?

        ``False`` when asked for, or when there is no :attr:`meter_provider`.
        How it is recorded (aggregated by trioflow, or one SDK record per
        item and stage) is :attr:`stage_durations_aggregated`.
        """
        return self._stage_durations and self.meter_provider is not None

    @property
    def stage_durations_aggregated(self) -> bool:
        """Does trioflow aggregate ``trioflow.stage.duration`` itself (see :func:`metric_reader`)?

        ``True`` when the histogram is recorded and every reader of
        :attr:`meter_provider` is a :func:`metric_reader` (always so for
        :func:`configure`'s own); ``False`` when the SDK records
        each duration, or none is recorded.
        """
        instruments = self._instruments
        return self.stage_durations and instruments is not None and instruments.aggregated

    @property
    def active(self) -> bool:
        """Is this the set-up trioflow reports to now?"""
        return _active is self

    def _activate(self) -> None:
        global _active
        import trioflow  # here: the package imports this module while it loads

        previous = _active
        if previous is not None and previous._instruments is not None:
            previous._instruments.active = False
        self._previous = previous
        _active = self
        _apply(self, trioflow.__version__)

    def shutdown(self) -> ShutdownReport | None:
        """Stop reporting here, flush, and say what was lost.

        The set-up active before this one comes back (or telemetry goes off).
        For a :func:`configure` set-up this also flushes every span and
        metric and shuts the providers down — it **blocks** until the
        exporters are done (up to 30 s each), so call it as the program
        ends, or from Trio through ``trio.to_thread.run_sync``. It logs a
        warning on the ``trioflow.telemetry`` logger if spans were dropped or
        failed to export, and returns the counts: for a Jaeger file, a write
        that failed counts its spans as failed (with the reason), and the
        traces its :class:`KeepTraces` policy kept and dropped are in
        :attr:`ExportCounts.traces`. It never raises for a destination that
        failed. Providers given to
        :func:`use` belong to the application and are left running (returns
        ``None``). Calling it twice does nothing the second time.
        """
        global _active
        if self._closed:
            return None
        self._closed = True
        mp: Any = self.meter_provider
        if self._owned and mp is not None:
            # One last collection while the instruments still report.
            mp.force_flush()
        instruments = self._instruments
        if instruments is not None and (
            _active is self or _active is None or _active._instruments is not instruments
        ):
            # (The active set-up may share this provider, hence these instruments.)
            instruments.active = False
        if _active is self:
            previous = self._previous
            while previous is not None and previous._closed:
                previous = previous._previous
            _active = previous
            if previous is None:
                _apply(None, "")
            else:
                import trioflow

                _apply(previous, trioflow.__version__)
        if not self._owned:
            return None
        tp: Any = self.tracer_provider
        if tp is not None:
            tp.shutdown()
        if mp is not None:
            mp.shutdown()
        counts: list[ExportCounts] = []
        for p in self._processors:
            d = p.exporter.delivery()
            counts.append(
                ExportCounts(
                    p.destination, p.ended, d.exported, d.failed, d.filtered, d.traces, d.error
                )
            )
        report = ShutdownReport(tuple(counts))
        if report.dropped or report.failed:
            logger.warning("trioflow telemetry lost spans at shutdown: %s", report)
        return report

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "active" if self.active else ("shut down" if self._closed else "inactive")
        return f"<trioflow.telemetry.Telemetry tracing={self.tracing!r} {state}>"


def _apply(t: Telemetry | None, version: str) -> None:
    """Make ``t`` the set-up every hook and helper reads (``None``: all off)."""
    if t is None:
        _spans.tracer = trace.NoOpTracer()
        _spans.item_sampling = 1.0
        _hooks.tracing = _hooks.OFF
        _hooks.metrics = False
        _hooks.wait_hook = None
        _hooks.stage_hook = None
        return
    level = t._level  # pyright: ignore[reportPrivateUsage]
    _spans.item_sampling = t._item_sampling  # pyright: ignore[reportPrivateUsage]
    if t.tracer_provider is not None and level:
        _spans.tracer = t.tracer_provider.get_tracer("trioflow", version)
    else:
        _spans.tracer = trace.NoOpTracer()
        level = _hooks.OFF
    histogram = None
    _hooks.stage_hook = None
    if t.meter_provider is not None:
        instruments = _metrics.install(t.meter_provider, version)
        t._instruments = instruments  # pyright: ignore[reportPrivateUsage]
        histogram = instruments.wait_duration
        if t._stage_durations:  # pyright: ignore[reportPrivateUsage]
            _hooks.stage_hook = _metrics.make_stage_hook(instruments)
    _hooks.tracing = level
    _hooks.metrics = t.meter_provider is not None
    _hooks.wait_hook = (
        _metrics.make_wait_hook(histogram) if histogram is not None or level else None
    )


def use(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    tracing: Tracing | None = None,
    stage_durations: bool = True,
    item_sampling: float = 1.0,
) -> Telemetry:
    """Report trioflow's spans and metrics to providers the application already has.

    OpenTelemetry's global providers can be set only once per process, so
    an application that set up its own SDK (or a test with an in-memory
    exporter) hands its providers here. Providers left ``None`` mean the
    global ones (``opentelemetry.trace.get_tracer_provider()`` /
    ``metrics.get_meter_provider()``) **as they are now**: set the SDK up
    first (``opentelemetry-instrument`` does, before it loads
    trioflow's instrumentor).

    A provider that can report nothing — none set yet, a no-op provider,
    or an SDK ``MeterProvider`` with no metric reader — switches that side
    off entirely: no instruments, no hook on any hot path, the cost of
    never calling :func:`use` (``docs/benchmarks/telemetry.md``). The
    handle says so (:attr:`Telemetry.tracing` is ``"off"``,
    :attr:`Telemetry.meter_provider` is ``None``), and a call that finds
    neither side on logs a warning on the ``trioflow.telemetry`` logger.

    Until :func:`configure` or :func:`use` is called, trioflow records
    nothing and its telemetry costs one flag check.

    Args:
      tracer_provider: where spans go.
      meter_provider: where metrics go.
      tracing: ``"off"``, ``"stage"`` (spans per pipeline, stage and task
        group) or ``"item"`` (also one trace per pipeline item); ``None``
        keeps the level of the set-up active now, or ``"item"`` if none is.
      stage_durations: record the ``trioflow.stage.duration`` histogram
        (when metrics report anywhere). It is the one metric recorded on
        the hot path: on the order of 0.5 µs per item and stage when
        every reader is a :func:`metric_reader` (trioflow
        aggregates it), otherwise one SDK histogram record, on the order
        of 10 µs (``docs/benchmarks/telemetry.md``); ``False`` leaves
        every other metric on and makes metrics cost nothing per item.
      item_sampling: at ``tracing="item"``, the share of pipeline source
        items that get a trace, in [0, 1]. trioflow draws it per item
        before any span exists, so an item left out costs what an untraced
        one does (a random draw). Sampling with the SDK's sampler instead
        (``TraceIdRatioBased``) also works, but every item it drops still
        costs an unsampled root span, on the order of 10 µs
        (``docs/benchmarks/telemetry.md``). The two multiply: an item drawn
        in is still subject to the tracer provider's sampler. Runs and
        stages are traced whatever this says.

    Returns:
      A :class:`Telemetry` handle; its :meth:`~Telemetry.shutdown` (or a
      ``with`` block around it) restores what was active before and leaves
      the providers running.

    Raises:
      TypeError: for a provider that is not one, a ``stage_durations``
        that is not a bool, or an ``item_sampling`` that is not a number.
      ValueError: for a bad ``tracing``, or an ``item_sampling`` outside [0, 1].
    """
    _check_instance(
        "tracer_provider", tracer_provider, TracerProvider, "an opentelemetry TracerProvider"
    )
    _check_instance(
        "meter_provider", meter_provider, MeterProvider, "an opentelemetry MeterProvider"
    )
    _check_bool("stage_durations", stage_durations)
    _check_share("item_sampling", item_sampling)
    if tracing is None:
        level = _hooks.ITEM if _active is None else _active._level  # pyright: ignore[reportPrivateUsage]
    else:
        level = _check_tracing(tracing)
    tp = _reporting_tracer_provider(tracer_provider)
    mp = _reporting_meter_provider(meter_provider)
    if tp is None:
        level = _hooks.OFF
    if tp is None and mp is None:
        logger.warning(
            "trioflow.telemetry.use(): no tracer or meter provider that reports anywhere "
            "(none passed, and OpenTelemetry's global ones are not set): trioflow's "
            "telemetry stays off; set up the SDK first or pass providers"
        )
    t = Telemetry(
        tracer_provider=tp,
        meter_provider=mp,
        level=level,
        owned=False,
        stage_durations=stage_durations,
        item_sampling=float(item_sampling),
    )
    t._activate()  # pyright: ignore[reportPrivateUsage]
    return t


def _reporting_tracer_provider(tp: TracerProvider | None) -> TracerProvider | None:
    """``tp`` (default: the global one), or ``None`` if spans given to it could go nowhere."""
    if tp is None:
        tp = trace.get_tracer_provider()
    if isinstance(tp, trace.NoOpTracerProvider):
        return None
    if isinstance(tp, trace.ProxyTracerProvider) and trace._TRACER_PROVIDER is None:  # pyright: ignore[reportPrivateUsage]
        return None  # the global proxy, and nothing behind it yet
    return tp


def _reporting_meter_provider(mp: MeterProvider | None) -> MeterProvider | None:
    """``mp`` (default: the global one), or ``None`` if it can report no metric."""
    if mp is None:
        mp = metrics.get_meter_provider()
    if isinstance(mp, metrics.NoOpMeterProvider):
        return None
    if type(mp).__name__ == "_ProxyMeterProvider" and (
        getattr(mp, "_real_meter_provider", None) is None
    ):
        return None  # the global proxy, and nothing behind it yet
    # An SDK MeterProvider takes its readers at construction only: with none
    # (OTEL_METRICS_EXPORTER=none under opentelemetry-instrument), nothing
    # it records is ever read.
    readers: object = getattr(mp, "_metric_readers", None)  # newer SDKs keep them here
    if readers is None:
        readers = getattr(getattr(mp, "_sdk_config", None), "metric_readers", None)
    if isinstance(readers, Sequence) and not readers:
        return None
    return mp


def _check_instance(param: str, value: object, cls: type, what: str) -> None:
    if value is not None and not isinstance(value, cls):
        raise_type(param, f"{what} or None", value)


def _check_bool(param: str, value: object) -> None:
    if not isinstance(value, bool):
        raise_type(param, "a bool", value)


def _check_share(param: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise_type(param, "a number in [0, 1]", value)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ValueError(f"{param} must be in [0, 1], got {value!r}")


def _check_path(param: str, value: object) -> None:
    if not isinstance(value, str | os.PathLike):
        raise_type(param, "a str or os.PathLike", value)


def _check_configure(
    service_name: object, otlp_endpoint: object, jaeger_file: object, console: object
) -> None:
    if not isinstance(service_name, str):
        raise_type("service_name", "a str", service_name)
    if not service_name:
        raise ValueError("service_name must not be empty, got ''")
    if otlp_endpoint is not None:
        if not isinstance(otlp_endpoint, str):
            raise_type("otlp_endpoint", "a str URL or None", otlp_endpoint)
        if not otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"otlp_endpoint must be an http:// or https:// URL, got {otlp_endpoint!r}"
            )
    if jaeger_file is not None:
        _check_path("jaeger_file", jaeger_file)
    if not isinstance(console, bool):
        raise_type("console", "a bool", console)


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    values = [v.strip().lower() for v in raw.split(",") if v.strip()]
    for v in values:
        if v not in ("otlp", "console", "none"):
            raise ValueError(
                f"{name}={raw!r}: trioflow.telemetry.configure() supports otlp, console and none"
            )
    return values


def _signal_url(base: str, signal: str) -> str:
    path = f"/v1/{signal}"
    trimmed = base.rstrip("/")
    for other in ("traces", "metrics", "logs"):
        if trimmed.endswith(f"/v1/{other}"):
            trimmed = trimmed[: -len(f"/v1/{other}")]
    return trimmed + path


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _sdk_missing(exc: ImportError) -> ImportError:
    return ImportError(
        "trioflow.telemetry.configure() needs the OpenTelemetry SDK and OTLP exporter: "
        f"the otel extra, pip install '.[otel]' in a clone of trioflow ({exc})"
    )


def _check_keep(value: object) -> None:
    if value is not None and not isinstance(value, KeepTraces):
        raise_type("keep_traces", "a trioflow.telemetry.KeepTraces or None", value)


def jaeger_file_exporter(
    path: str | os.PathLike[str], *, keep_traces: KeepTraces | None = DEFAULT_KEEP
) -> SpanExporter:
    """A span exporter that writes Jaeger's JSON trace format to ``path``.

    For applications that build their own ``TracerProvider``: add it with a
    ``BatchSpanProcessor``. The file is rewritten at every flush and at
    shutdown; the Jaeger UI's *Upload* tab opens it with no Jaeger backend.
    ``keep_traces`` chooses which traces the file holds when there are more
    than it can open quickly (``None``: every trace). A write that fails
    later (disk full) is logged, never raised. Needs the OpenTelemetry SDK
    (the ``otel`` extra).

    Raises:
      OSError: if ``path`` cannot be written (checked now, not at exit).
      TypeError: for a ``path`` or ``keep_traces`` of the wrong type.
    """
    _check_path("path", path)
    _check_keep(keep_traces)
    try:
        from ._jaeger import JaegerFileExporter
    except ImportError as exc:  # pragma: no cover - the otel extra is installed in tests
        raise _sdk_missing(exc) from None
    return JaegerFileExporter(path, keep_traces)


def metric_reader(
    exporter: MetricExporter,
    *,
    export_interval_millis: float | None = None,
    export_timeout_millis: float | None = None,
) -> MetricReader:
    """A periodic exporting reader with which trioflow aggregates ``trioflow.stage.duration`` itself.

    The SDK's ``PeriodicExportingMetricReader`` (same arguments, same
    ``OTEL_METRIC_EXPORT_INTERVAL`` / ``_TIMEOUT`` defaults), plus one
    thing. The stage-duration histogram is the one metric trioflow records
    per item, and the SDK's ``Histogram.record`` costs on the order of
    10 µs, more than a trivial stage's own work
    (``docs/benchmarks/telemetry.md``). When **every** reader of a meter
    provider is one of these, :func:`use` (and :func:`configure`, which
    makes its own) has trioflow keep that histogram in process — bucket
    counts, sum, minimum and maximum per attribute set, on the order of
    0.5 µs an item — and the reader adds it to each export as the SDK
    would have made it (cumulative, same bounds, scope ``trioflow``)::

        reader = tf.telemetry.metric_reader(OTLPMetricExporter())
        tf.telemetry.use(meter_provider=MeterProvider(metric_readers=[reader]))

    The SDK records each duration itself, as with its own reader, when the
    provider has any other reader (in-memory, pull), any ``View`` (which
    could rename or drop the instrument), or an exporter that asks for
    delta temporality: slower, never wrong.
    :attr:`Telemetry.stage_durations_aggregated` says which. Exemplars are
    not kept on the aggregated path.

    Collection and export run in the reader's own thread, as the SDK's do;
    nothing here blocks the Trio loop.

    Raises:
      TypeError: if ``exporter`` is not an SDK ``MetricExporter``.
      ImportError: if the OpenTelemetry SDK is not installed.
    """
    try:
        from opentelemetry.sdk.metrics.export import MetricExporter as SdkMetricExporter

        from ._metric_export import StageDurationReader
    except ImportError as exc:  # pragma: no cover - the otel extra is installed in tests
        raise _sdk_missing(exc) from None
    given = cast(object, exporter)  # checked at run time whatever the annotation says
    if not isinstance(given, SdkMetricExporter):
        raise_type("exporter", "an opentelemetry.sdk MetricExporter", given)
    return StageDurationReader(
        exporter,
        export_interval_millis=export_interval_millis,
        export_timeout_millis=export_timeout_millis,
    )


def configure(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    jaeger_file: str | os.PathLike[str] | None = None,
    console: bool = False,
    tracing: Tracing = "item",
    set_global: bool = True,
    keep_traces: KeepTraces | None = DEFAULT_KEEP,
    stage_durations: bool = True,
    item_sampling: float = 1.0,
) -> Telemetry:
    """Set up OpenTelemetry for a script in one call, and point trioflow at it.

    Builds an SDK ``TracerProvider`` (and a ``MeterProvider`` when a metrics
    destination is asked for) with resource ``service.name=service_name``,
    one batching span processor per destination, and makes it what
    trioflow reports to. Destinations:

    * ``otlp_endpoint`` — OTLP over HTTP/protobuf, e.g. a Jaeger all-in-one
      at ``"http://localhost:4318"`` (``/v1/traces`` is added unless given).
    * ``jaeger_file`` — Jaeger's JSON trace format, written at shutdown, for
      the Jaeger UI's offline upload (see ``docs/jaeger.md``). Past 500
      traces it keeps those with errors, retries, dead letters, slow or
      unfinished items and a sample of the rest (``keep_traces``), so the
      UI opens it in seconds.
    * ``console`` — spans (and metrics) printed to stdout.

    The standard variables apply: ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` (the former overrides ``service_name``),
    ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``, ``OTEL_SPAN_*_LIMIT``,
    ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT``/``_HEADERS``,
    ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` (``otlp``,
    ``console``, ``none``; metrics are exported only when asked for, since
    Jaeger takes no metrics), ``OTEL_METRIC_EXPORT_INTERVAL``, and
    ``OTEL_SDK_DISABLED=true`` (then nothing is set up and telemetry is
    off). With no destination given and no ``OTEL_TRACES_EXPORTER``, spans
    go to OTLP at ``http://localhost:4318`` (the OpenTelemetry default,
    which is where Jaeger listens).

    Spans are batched with a deeper queue than the SDK's default (65,536
    spans, batches of 2,048, every second) so a burst is not dropped; the
    handle's :meth:`~Telemetry.shutdown` flushes and reports what was lost.

    Args:
      service_name: the ``service.name`` Jaeger lists the traces under.
      otlp_endpoint: base URL of an OTLP/HTTP receiver.
      jaeger_file: path of a Jaeger JSON file to write.
      console: also print spans and metrics to stdout.
      tracing: ``"off"``, ``"stage"`` or ``"item"`` (see :func:`use`).
      set_global: also install the providers as OpenTelemetry's global
        ones (only if none is set yet), so the application's own spans go
        to the same place and nest with trioflow's.
      keep_traces: which traces the Jaeger file keeps (a
        :class:`KeepTraces`; ``None`` keeps every one). OTLP destinations
        get every sampled span whatever this says.
      stage_durations: record the ``trioflow.stage.duration`` histogram
        when metrics are exported (see :func:`use`). The readers made here
        are :func:`metric_reader` ones, so trioflow aggregates it in
        process, on the order of 0.5 µs per item and stage.
      item_sampling: the share of pipeline source items traced, drawn per
        item before any span exists (see :func:`use`). The Jaeger file's
        ``keep_traces`` then chooses among the items drawn in: an item
        left out is never seen, errors included.

    Returns:
      A :class:`Telemetry` handle; call :meth:`~Telemetry.shutdown` when the
      program ends (``with tf.telemetry.configure(...):`` does it).

    Raises:
      ValueError: for a bad ``tracing``, ``otlp_endpoint`` or ``OTEL_*_EXPORTER``
        value, or an ``item_sampling`` outside [0, 1].
      TypeError: for arguments of the wrong type (``keep_traces`` included).
      OSError: if ``jaeger_file`` cannot be written.
      ImportError: if the OpenTelemetry SDK is not installed.
    """
    _check_configure(service_name, otlp_endpoint, jaeger_file, console)
    _check_keep(keep_traces)
    _check_bool("stage_durations", stage_durations)
    _check_share("item_sampling", item_sampling)
    level = _check_tracing(tracing)
    trace_names = _env_list("OTEL_TRACES_EXPORTER")
    metric_names = _env_list("OTEL_METRICS_EXPORTER") or []

    if _env_true("OTEL_SDK_DISABLED"):
        t = Telemetry(tracer_provider=None, meter_provider=None, level=_hooks.OFF, owned=True)
        t._activate()  # pyright: ignore[reportPrivateUsage]
        return t

    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        from ._export import CountingProcessor
    except ImportError as exc:  # pragma: no cover - the otel extra is installed in tests
        raise _sdk_missing(exc) from None

    resource = Resource.create({SERVICE_NAME: service_name})
    env_service = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if env_service:
        resource = resource.merge(Resource({SERVICE_NAME: env_service}))

    explicit = otlp_endpoint is not None or jaeger_file is not None or console
    if trace_names is None:
        trace_names = [] if explicit else ["otlp"]
    destinations: list[tuple[str, SpanExporter]] = []
    if otlp_endpoint is not None:
        url = _signal_url(otlp_endpoint, "traces")
        destinations.append((f"otlp {url}", OTLPSpanExporter(endpoint=url)))
    elif "otlp" in trace_names:
        exporter = OTLPSpanExporter()
        destinations.append((f"otlp {exporter._endpoint}", exporter))  # pyright: ignore[reportPrivateUsage]
    if jaeger_file is not None:
        destinations.append(
            (
                f"jaeger_file {os.fspath(jaeger_file)}",
                jaeger_file_exporter(jaeger_file, keep_traces=keep_traces),
            )
        )
    if console or "console" in trace_names:
        destinations.append(("console", ConsoleSpanExporter(out=sys.stdout)))

    processors = [CountingProcessor(name, exporter) for name, exporter in destinations]
    tracer_provider = SdkTracerProvider(resource=resource)
    for p in processors:
        tracer_provider.add_span_processor(p)

    # trioflow's readers, so it aggregates the stage-duration histogram
    # itself (see metric_reader()).
    readers: list[MetricReader] = []
    if "otlp" in metric_names:
        endpoint = None if otlp_endpoint is None else _signal_url(otlp_endpoint, "metrics")
        readers.append(metric_reader(OTLPMetricExporter(endpoint=endpoint)))
    if console or "console" in metric_names:
        readers.append(metric_reader(ConsoleMetricExporter(out=sys.stdout)))
    meter_provider = (
        SdkMeterProvider(resource=resource, metric_readers=readers) if readers else None
    )

    if set_global:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None and type(metrics.get_meter_provider()).__name__ == (
            "_ProxyMeterProvider"
        ):
            metrics.set_meter_provider(meter_provider)

    t = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        level=level,
        owned=True,
        processors=processors,
        stage_durations=stage_durations,
        item_sampling=float(item_sampling),
    )
    t._activate()  # pyright: ignore[reportPrivateUsage]
    return t
