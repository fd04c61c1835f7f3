"""trioflow as an OpenTelemetry instrumentation, for ``opentelemetry-instrument``.

A team that runs its service under OpenTelemetry's zero-code agent::

    pip install opentelemetry-distro opentelemetry-exporter-otlp
    opentelemetry-instrument --service_name shop python app.py

gets trioflow's spans and metrics with no code change: trioflow's package
registers :class:`TrioflowInstrumentor` under the ``opentelemetry_instrumentor``
entry point, which the agent loads after it has set up the SDK from the
``OTEL_*`` variables, and the instrumentor points trioflow at the global
providers the agent made (as :func:`trioflow.telemetry.use` does).
``OTEL_PYTHON_TRIOFLOW_TRACING`` sets the tracing level (``off``, ``stage``
or ``item``; default ``item``); ``OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS=false``
stops the one hot-path metric, ``trioflow.stage.duration`` (see
:func:`~trioflow.telemetry.use`); ``OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING``
(a number in [0, 1], default 1) is the share of pipeline items traced,
drawn before any span exists (``item_sampling=`` of
:func:`~trioflow.telemetry.use`); ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=trioflow``
turns it off like any other instrumentation.

The instrumentor is :func:`~trioflow.telemetry.use` under OpenTelemetry's
name, so code that is not run by the agent calls :func:`~trioflow.telemetry.use`
(providers of its own) or :func:`~trioflow.telemetry.configure` (a script)
instead. The module is private because its base class comes from
``opentelemetry-instrumentation`` (the agent's own package, not a trioflow
dependency); only the entry point and the agent import it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any, Final, cast

from opentelemetry.instrumentation.instrumentor import (
    BaseInstrumentor,
)

from ._setup import Telemetry, Tracing, use

__all__ = ["ITEM_SAMPLING_ENV", "STAGE_DURATIONS_ENV", "TRACING_ENV", "TrioflowInstrumentor"]

#: The environment variable that sets the tracing level under the agent.
TRACING_ENV: Final = "OTEL_PYTHON_TRIOFLOW_TRACING"
#: The environment variable that turns ``trioflow.stage.duration`` off under the agent.
STAGE_DURATIONS_ENV: Final = "OTEL_PYTHON_TRIOFLOW_STAGE_DURATIONS"
#: The environment variable that sets the share of pipeline items traced under the agent.
ITEM_SAMPLING_ENV: Final = "OTEL_PYTHON_TRIOFLOW_ITEM_SAMPLING"


class TrioflowInstrumentor(BaseInstrumentor):
    """Report trioflow's spans and metrics to OpenTelemetry's providers.

    ``instrument()`` takes the instrumentation convention's keyword
    arguments ``tracer_provider`` and ``meter_provider`` (default: the
    global ones, as they are when it is called) and trioflow's ``tracing``
    (default: ``OTEL_PYTHON_TRIOFLOW_TRACING``, else ``"item"``),
    ``stage_durations`` and ``item_sampling`` (defaults from the variables
    above). It is a
    singleton, as every OpenTelemetry instrumentor is: a second
    ``instrument()`` logs a warning and does nothing. Never blocks.

    Raises:
      ValueError: from ``instrument()``, for a bad ``tracing`` or
        ``item_sampling``, or a bad value of one of the variables above.
      TypeError: from ``instrument()``, for providers of the wrong type.
    """

    _handle: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """Nothing to check: the library instrumented is the one this ships in."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracing: object = kwargs.get("tracing")
        if tracing is None:
            raw = os.environ.get(TRACING_ENV, "").strip().lower()
            if raw and raw not in ("off", "stage", "item"):
                raise ValueError(
                    f"{TRACING_ENV} must be 'off', 'stage' or 'item', got {os.environ[TRACING_ENV]!r}"
                )
            tracing = raw or "item"
        durations: object = kwargs.get("stage_durations")
        if durations is None:
            raw = os.environ.get(STAGE_DURATIONS_ENV, "").strip().lower()
            if raw and raw not in ("true", "false"):
                raise ValueError(
                    f"{STAGE_DURATIONS_ENV} must be 'true' or 'false', "
                    f"got {os.environ[STAGE_DURATIONS_ENV]!r}"
                )
            durations = raw != "false"
        sampling: object = kwargs.get("item_sampling")
        if sampling is None:
            raw = os.environ.get(ITEM_SAMPLING_ENV, "").strip()
            try:
                sampling = float(raw) if raw else 1.0
            except ValueError:
                raise ValueError(
                    f"{ITEM_SAMPLING_ENV} must be a number in [0, 1], got {os.environ[ITEM_SAMPLING_ENV]!r}"
                ) from None
            if not 0.0 <= sampling <= 1.0:
                raise ValueError(
                    f"{ITEM_SAMPLING_ENV} must be a number in [0, 1], got {os.environ[ITEM_SAMPLING_ENV]!r}"
                )
        self._handle = use(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            tracing=cast(Tracing, tracing),  # use() checks it
            stage_durations=cast(bool, durations),  # use() checks it
            item_sampling=cast(float, sampling),  # use() checks it
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.shutdown()
