"""trioflow's pytest plugin: fail tests that leak tasks, dump tasks when a test hangs.

Registered through the ``pytest11`` entry point (see :mod:`trioflow.testing`
for what it does and how to configure it). It wraps the async test function
*before* pytest-trio turns it into a ``trio.run`` call, so everything here
runs inside the test's own run, in the test's task.
"""

from __future__ import annotations

import functools
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from ..debug._deadlock import all_tasks_asleep, find_deadlocks, loop_may_sleep
from ..debug._dump import dump_tasks, record_spawn
from ._leaks import leftover_tasks, live_tasks

_GRACE = 2.0  # seconds to wait for the dump before printing the main thread's stack


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trioflow_leak_check",
        "fail a trio test that leaves tasks running or parked after it returns (trioflow)",
        type="bool",
        default=True,
    )
    parser.addini(
        "trioflow_deadlock_check",
        "fail a trio test at once, with a dump, when all its tasks are asleep for good (trioflow)",
        type="bool",
        default=True,
    )
    parser.addini(
        "trioflow_timeout",
        "seconds (wall clock) after which a trio test is dumped and failed; 0 is off (trioflow)",
        default="0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trioflow_timeout(seconds): dump every task and fail if this trio test runs longer",
    )
    config.addinivalue_line(
        "markers", "trioflow_allow_leaks: do not fail this test for tasks it leaves behind"
    )


class _SpawnRecorder(trio.abc.Instrument):
    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        record_spawn(task)


class _DeadlockWatch(trio.abc.Instrument):
    """Fails the test at once when every task is asleep for good (no timeout needed)."""

    def __init__(self, scope: trio.CancelScope, report: list[str]) -> None:
        self._scope = scope
        self._report = report

    def before_io_wait(self, timeout: float) -> None:
        if self._report or not loop_may_sleep(timeout):
            return
        found = all_tasks_asleep()
        if found is None:
            return
        text = "trioflow: the test deadlocked.\n" + found.format()
        for ring in find_deadlocks(found.dump):
            text += "\n" + ring.format()
        self._report.append(text)
        self._scope.cancel()
        # The loop already chose to sleep "forever" before asking us: poke its
        # wake-up socket so the cancelled tasks run now.
        trio.lowlevel.current_trio_token().run_sync_soon(_nothing)


def _nothing() -> None:
    pass


def _timeout_for(item: pytest.Item) -> float:
    marker = item.get_closest_marker("trioflow_timeout")
    raw: object
    if marker is not None:
        raw = marker.args[0] if marker.args else marker.kwargs.get("seconds")
        where = "trioflow_timeout marker"
    else:
        raw = item.config.getini("trioflow_timeout")
        where = "trioflow_timeout ini option"
    try:
        value = float(raw)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{where} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise pytest.UsageError(f"{where} must be >= 0, got {raw!r}")
    return value


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    if item.get_closest_marker("trio") is not None and isinstance(item, pytest.Function):
        leak_check = bool(item.config.getini("trioflow_leak_check")) and (
            item.get_closest_marker("trioflow_allow_leaks") is None
        )
        timeout = _timeout_for(item)
        deadlock_check = bool(item.config.getini("trioflow_deadlock_check"))
        obj: Any = item.obj
        hyp = getattr(obj, "hypothesis", None)
        if hyp is not None:
            hyp.inner_test = _wrap(hyp.inner_test, leak_check, timeout, deadlock_check)
        elif not getattr(obj, "_trioflow_wrapped", False):
            item.obj = _wrap(obj, leak_check, timeout, deadlock_check)
    yield


def _wrap(
    fn: Callable[..., Awaitable[object]], leak_check: bool, timeout: float, deadlock_check: bool
) -> Callable[..., Awaitable[object]]:
    if getattr(fn, "_trioflow_wrapped", False):
        return fn

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        recorder = _SpawnRecorder()
        trio.lowlevel.add_instrument(recorder)
        try:
            baseline = live_tasks()
            report: list[str] = []
            with trio.CancelScope() as scope:
                watcher = _Watcher(timeout, scope, report) if timeout > 0 else None
                watch = _DeadlockWatch(scope, report) if deadlock_check else None
                if watch is not None:
                    trio.lowlevel.add_instrument(watch)
                try:
                    await fn(*args, **kwargs)
                finally:
                    if watcher is not None:
                        watcher.stop()
                    if watch is not None:
                        trio.lowlevel.remove_instrument(watch)
            if report:
                pytest.fail(report[0], pytrace=False)
            if leak_check:
                left = await leftover_tasks(baseline)
                if left:
                    n = len(left)
                    text = "\n\n".join(t.format() for t in left)
                    pytest.fail(
                        f"trioflow: the test left {n} task{'s' if n != 1 else ''} running or "
                        f"parked after it returned (mark it trioflow_allow_leaks if intended):"
                        f"\n\n{text}\n",
                        pytrace=False,
                    )
        finally:
            trio.lowlevel.remove_instrument(recorder)

    wrapper._trioflow_wrapped = True  # type: ignore[attr-defined]
    return wrapper


class _Watcher:
    """A thread that, past the timeout, asks the loop for a dump and cancels the test."""

    def __init__(self, timeout: float, scope: trio.CancelScope, report: list[str]) -> None:
        self._timeout = timeout
        self._scope = scope
        self._report = report
        self._token = trio.lowlevel.current_trio_token()
        self._main = threading.get_ident()
        self._done = threading.Event()
        self._fired = threading.Event()
        self._blocked = ""
        self._thread = threading.Thread(target=self._run, name="trioflow test timeout", daemon=True)
        self._thread._trioflow_watchdog = True  # type: ignore[attr-defined]
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        if self._done.wait(self._timeout):
            return
        try:
            self._token.run_sync_soon(self._on_timeout)
        except trio.RunFinishedError:
            return
        if self._fired.wait(_GRACE) or self._done.is_set():
            return
        frame = sys._current_frames().get(self._main)  # pyright: ignore[reportPrivateUsage]
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        self._blocked = (
            f"trioflow: test exceeded trioflow_timeout={self._timeout}s and the trio loop is "
            "blocked by synchronous code; main thread stack (most recent call last):\n" + stack
        )
        # Now, in case the loop never comes back (pytest shows it with -s, or
        # in the test's captured stderr); and in the failure report otherwise.
        err = sys.__stderr__
        if err is not None:
            err.write(self._blocked)
            err.flush()

    def _on_timeout(self) -> None:
        self._fired.set()
        if self._done.is_set():
            return
        text = (
            f"trioflow: test exceeded trioflow_timeout={self._timeout}s; "
            f"every task at that moment:\n\n{dump_tasks().format()}"
        )
        if self._blocked:
            text = f"{self._blocked}\nWhen the loop ran again:\n{text}"
        self._report.append(text)
        sys.stderr.write(text)
        self._scope.cancel()
