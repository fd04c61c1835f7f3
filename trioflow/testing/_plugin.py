"""What trioflow's pytest plugin does to a trio test that opted in.

The plugin pytest loads is ``_trioflow_pytest`` (a top-level module, so that
merely having trioflow installed imports nothing); it calls :func:`wrap_item`
for a trio test that opted into the checks or has a timeout. The wrapper is
applied *before* pytest-trio turns the test into a ``trio.run`` call, so
everything here runs inside the test's own run, in the test's task.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from ..debug._deadlock import all_tasks_asleep, find_deadlocks, loop_may_sleep
from ..debug._dump import dump_tasks, record_spawn
from ..debug._reach import find_stuck_except
from ._leaks import leftover_tasks, live_tasks

__all__ = ["wrap_item"]

_GRACE = 2.0  # seconds to wait for the dump before printing the main thread's stack


def wrap_item(
    item: pytest.Function, *, leak_check: bool, deadlock_check: bool, timeout: float, grace: float
) -> None:
    """Wrap ``item``'s test function (or hypothesis' inner test) with the checks."""
    obj: Any = item.obj
    hyp = getattr(obj, "hypothesis", None)
    if hyp is not None:
        hyp.inner_test = _wrap(hyp.inner_test, leak_check, timeout, deadlock_check, grace)
    elif not getattr(obj, "_trioflow_wrapped", False):
        item.obj = _wrap(obj, leak_check, timeout, deadlock_check, grace)


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


def _wrap(
    fn: Callable[..., Awaitable[object]],
    leak_check: bool,
    timeout: float,
    deadlock_check: bool,
    grace: float,
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
            watcher: _Watcher | None = None
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
            if not report and watcher is not None and watcher.exceeded():
                # The test finished, but only after its timeout, because
                # synchronous code held the loop: the dump never got its turn.
                report.append(watcher.late_report())
            if report:
                pytest.fail(report[0], pytrace=False)
            if leak_check:
                left = await leftover_tasks(baseline, grace=grace)
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
        self._stack_at_timeout = ""
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="trioflow test timeout", daemon=True)
        self._thread._trioflow_watchdog = True  # type: ignore[attr-defined]
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def exceeded(self) -> bool:
        """Did the test run past its timeout (whether or not the dump ran)?"""
        return time.monotonic() - self._start >= self._timeout

    def late_report(self) -> str:
        took = time.monotonic() - self._start
        text = (
            f"trioflow: test exceeded trioflow_timeout={self._timeout}s (it took {took:.2f}s): "
            "synchronous code held the trio loop past the timeout, so the test could not be "
            "cancelled in time."
        )
        if self._stack_at_timeout:
            text += (
                "\nMain thread stack when the timeout expired (most recent call last):\n"
                + self._stack_at_timeout
            )
        return text + f"\nEvery task when the test returned:\n\n{dump_tasks().format()}"

    def _main_stack(self) -> str:
        frame = sys._current_frames().get(self._main)  # pyright: ignore[reportPrivateUsage]
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def _run(self) -> None:
        if self._done.wait(self._timeout):
            return
        self._stack_at_timeout = self._main_stack()
        try:
            self._token.run_sync_soon(self._on_timeout)
        except trio.RunFinishedError:
            return
        if self._fired.wait(_GRACE) or self._done.is_set():
            return
        stack = self._main_stack()
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
        stuck = find_stuck_except([self._scope])
        if stuck:
            text += "\n" + "\n".join(st.format() for st in stuck)
        if self._blocked:
            text = f"{self._blocked}\nWhen the loop ran again:\n{text}"
        self._report.append(text)
        sys.stderr.write(text)
        self._scope.cancel()
