"""OpenTelemetry for trioflow: spans and metrics from every building block, for Jaeger.

Nothing is recorded until you ask, and then trioflow's telemetry costs one
flag check on the paths that do not wait:

* :func:`configure` sets up the OpenTelemetry SDK for a script in one call
  (OTLP to a Jaeger on 4318, a Jaeger JSON file for the UI's offline
  upload, or the console) and returns a handle whose
  :meth:`~Telemetry.shutdown` flushes and reports lost spans; a Jaeger
  file keeps the traces :class:`KeepTraces` chooses (errors, retries, slow
  items and a sample), so it opens in the UI in seconds;
* :func:`use` points trioflow at providers your application (or a test)
  already has, since OpenTelemetry's global providers can be set only once;
  a provider that reports nowhere leaves that side off, with no hook at all;
* under ``opentelemetry-instrument``, trioflow's instrumentor (the
  ``opentelemetry_instrumentor`` entry point) does what :func:`use` does,
  with the agent's providers.

Spans: ``task_group {name}`` per task group (and ``task {name}`` per task
at ``tracing="item"``); see ``docs/jaeger.md`` for every span.

Metrics (``trioflow.limiter.limit``, ``.usage``, ``.queue.size``,
``trioflow.rate_limiter.tokens``, ``trioflow.task_group.running``,
``.queue.size``, ``.tasks``) are observable instruments that read each live
primitive's ``statistics()`` when the SDK collects, so the hot path pays
nothing; ``trioflow.limiter.wait.duration`` (seconds) is recorded only for
waits that actually parked, and those of 1 ms or more also add a
``trioflow.wait`` event to the current span. Attributes name their object
per kind (``trioflow.limiter.name``, ``trioflow.lane.name``,
``trioflow.rate_limiter.name``, ``trioflow.task_group.name``...). See
``docs/jaeger.md``.

This module imports only the OpenTelemetry API; the SDK (the ``otel``
extra) is imported inside :func:`configure` and :func:`jaeger_file_exporter`.
"""

from ._keep import KeepTraces as KeepTraces
from ._keep import KeptTraces as KeptTraces
from ._setup import ExportCounts as ExportCounts
from ._setup import ShutdownReport as ShutdownReport
from ._setup import Telemetry as Telemetry
from ._setup import configure as configure
from ._setup import jaeger_file_exporter as jaeger_file_exporter
from ._setup import metric_reader as metric_reader
from ._setup import use as use
