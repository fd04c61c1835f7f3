"""Hooks the hot paths call into telemetry. Plain module attributes, off by default.

Primitives import only this module, never the SDK: with telemetry off a hook
costs one attribute read and a ``None`` check, and only on slow paths (a
wait that actually parked). :func:`trioflow.telemetry.configure` and
:func:`trioflow.telemetry.use` set these; nothing else writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = [
    "ITEM",
    "OFF",
    "STAGE",
    "StageHook",
    "WaitHook",
    "metrics",
    "stage_hook",
    "timeline_hook",
    "tracing",
    "wait_hook",
]

#: ``hook(primitive, since, now)``: a task waited on ``primitive`` from
#: ``since`` to ``now`` (both ``trio.current_time()``) and got what it asked
#: for. Called in the waiting task, right after it wakes. ``None`` = off.
WaitHook = Callable[[object, float, float], None]

wait_hook: WaitHook | None = None

#: ``hook(stage, duration, exc)``: a pipeline stage finished one item's
#: function call(s) (all attempts) in ``duration`` seconds; ``exc`` is the
#: last attempt's exception, or ``None``. Called in the worker, once per item
#: and stage, only while metrics are on. ``None`` = off.
StageHook = Callable[[object, float, BaseException | None], None]

stage_hook: StageHook | None = None

#: The same call for the execution timeline: set by
#: :func:`trioflow.debug.record_timeline` while it records (not by the
#: telemetry set-up), so each item's time in each stage is on the timeline.
#: Read once per pipeline run, when it starts. ``None`` = off.
timeline_hook: StageHook | None = None

#: Tracing levels, ordered: check ``_hooks.tracing >= _hooks.ITEM``.
OFF: Final = 0
STAGE: Final = 1
ITEM: Final = 2

#: The current tracing level: a plain int, so "is tracing on?" is one
#: attribute read and one comparison.
tracing: int = OFF

#: Is a meter provider that reports somewhere set? ``False`` also when
#: :func:`trioflow.telemetry.use` found only no-op providers. A building
#: block that records synchronous metrics reads this (once per run, not per
#: item) and, when it is ``False``, installs no metric hook at all.
metrics: bool = False
