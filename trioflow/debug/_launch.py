"""Dumps without changing code: ``python -m trioflow run app.py`` and ``TRIOFLOW_DEBUG``.

Both make every ``trio.run`` of the process start with :func:`install`
already done (and, on request, :func:`serve` running in a system task), by
wrapping ``trio.run`` to pass one more instrument. Nothing else changes: the
program is the same program.

``TRIOFLOW_DEBUG`` holds comma-separated settings (``1`` alone means the
defaults): ``signal=USR1`` (or ``none``), ``stuck_after=30``,
``slow_step=0.5``, ``on_deadlock=warn``, ``fold_above=100`` (or ``none``),
``serve=6060``. It takes effect when ``trioflow`` is imported, for the runs
that start afterwards; a malformed value is reported on stderr and ignored
(a debugging aid must not stop a service from starting).
"""

from __future__ import annotations

import functools
import signal as _signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .._util import check_positive_number

__all__ = ["Settings", "enable", "from_environment", "parse"]

ENV = "TRIOFLOW_DEBUG"


@attrs.frozen
class Settings:
    """What every run gets: :func:`install`'s arguments, and a port for :func:`serve`."""

    signal: int | None = getattr(_signal, "SIGUSR1", None)
    stuck_after: float | None = None
    slow_step: float | None = None
    on_deadlock: str = "warn"
    fold_above: int | None = 100
    serve: int | None = None


def _signal_number(raw: str) -> int | None:
    if raw.lower() in ("none", "off", ""):
        return None
    if raw.isdigit():
        return int(raw)
    name = raw.upper() if raw.upper().startswith("SIG") else "SIG" + raw.upper()
    value = getattr(_signal, name, None)
    if not isinstance(value, int):
        raise ValueError(f"signal must be a signal name or number, got {raw!r}")
    return int(value)


def _opt_int(raw: str, name: str) -> int | None:
    if raw.lower() in ("none", "off"):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer or none, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {raw!r}")
    return value


def _seconds(raw: str, name: str) -> float | None:
    if raw.lower() in ("none", "off"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    return check_positive_number(value, name)


_PARSERS: Mapping[str, Callable[[str], object]] = {
    "signal": _signal_number,
    "stuck_after": lambda r: _seconds(r, "stuck_after"),
    "slow_step": lambda r: _seconds(r, "slow_step"),
    "on_deadlock": lambda r: r,
    "fold_above": lambda r: _opt_int(r, "fold_above"),
    "serve": lambda r: _opt_int(r, "serve"),
}


def parse(text: str) -> Settings:
    """``"stuck_after=30,serve=6060"`` -> :class:`Settings`. Raises ``ValueError`` naming the key."""
    values: dict[str, Any] = {}
    text = text.strip()
    if text in ("", "1", "on", "true", "yes"):
        return Settings()
    for part in text.split(","):
        key, sep, raw = part.strip().partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _PARSERS:
            raise ValueError(
                f"{ENV}: expected key=value with a key among {', '.join(_PARSERS)}, got {part!r}"
            )
        values[key] = _PARSERS[key](raw.strip())
    if values.get("on_deadlock", "warn") not in ("warn", "exit", "ignore"):
        raise ValueError(
            f"on_deadlock must be one of 'warn', 'exit', 'ignore', got {values['on_deadlock']!r}"
        )
    return Settings(**values)


class _AutoInstall(trio.abc.Instrument):
    """Does ``install()`` as the run starts, and starts ``serve()`` beside the main task."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._served = False

    def before_run(self) -> None:
        from ._install import install_for_run

        s = self._settings
        try:
            install_for_run(
                signal=s.signal,
                stuck_after=s.stuck_after,
                slow_step=s.slow_step,
                on_deadlock=s.on_deadlock,
                fold_above=s.fold_above,
            )
        except (ValueError, TypeError, RuntimeError) as exc:
            sys.stderr.write(f"trioflow: {ENV} / trioflow run: not installed: {exc}\n")

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        # The main task is the first one <init> spawns: the system nursery exists now.
        if self._settings.serve is None or self._served:
            return
        self._served = True
        trio.lowlevel.spawn_system_task(_serve_quietly, self._settings.serve, name="trioflow serve")


async def _serve_quietly(port: int) -> None:
    from ._serve import serve

    try:
        await serve(port)
    except OSError as exc:  # the port is taken: say so, never take the program down
        sys.stderr.write(f"trioflow: cannot serve dumps on port {port}: {exc}\n")


def enable(settings: Settings) -> None:
    """Make every later ``trio.run`` of this process run with ``settings``. Idempotent."""
    current: Any = trio.run
    original = getattr(current, "_trioflow_original", current)

    @functools.wraps(original)
    def run(*args: Any, **kwargs: Any) -> Any:
        instruments = [*kwargs.pop("instruments", ()), _AutoInstall(settings)]
        return original(*args, instruments=instruments, **kwargs)

    run._trioflow_original = original  # type: ignore[attr-defined]
    trio.run = run


def from_environment(environ: Mapping[str, str]) -> None:
    """Apply ``TRIOFLOW_DEBUG`` if it is set; report a malformed value and carry on."""
    raw = environ.get(ENV)
    if raw is None or raw.strip().lower() in ("0", "off", "false", "no"):
        return
    try:
        settings = parse(raw)
    except ValueError as exc:
        sys.stderr.write(f"trioflow: ignoring {ENV}={raw!r}: {exc}\n")
        return
    enable(settings)
