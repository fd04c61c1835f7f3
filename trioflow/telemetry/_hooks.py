"""Hooks the hot paths call into telemetry. Plain module attributes, ``None`` when off.

Primitives import only this module, never the SDK: with telemetry off a hook
costs one attribute read and a ``None`` check, and only on slow paths (a
wait that actually parked).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["WaitHook", "wait_hook"]

#: ``hook(primitive, since, now)``: a task waited on ``primitive`` from
#: ``since`` to ``now`` (both ``trio.current_time()``) and got what it asked
#: for. Called in the waiting task, right after it wakes. ``None`` = off.
WaitHook = Callable[[object, float, float], None]

wait_hook: WaitHook | None = None
