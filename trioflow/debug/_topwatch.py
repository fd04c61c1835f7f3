"""The thread behind ``/debug/top``'s sampling: it opens the windows, and
catches the steps that block the loop while the step hooks are off.

When ``/debug/top`` samples a busy loop (see :mod:`._topdata`), trio's step
hooks are on only for short windows, and nothing in the loop may pay per
step or per iteration. This thread wakes every ``beat`` seconds:

* once a period it asks the loop, through the trio token, to open the next
  window (``acct.open_window``);
* it looks at the loop thread's stack (``sys._current_frames()``: no hook,
  nothing paid in the loop) for the task whose step is running, and reads
  that task's count of steps taken (trio's ``Task._schedule_points``, which
  trio adds one to after each step). The same task with the same count at
  two looks is one step, still running: a step at least that long. The
  finding goes to ``acct.blocked``, which the next frame lists as *never
  yields*.

Every step of about ``2 * beat`` or more is caught, provided the blocking
code lets the thread take the GIL (pure Python does, every few ms; so does
a blocking call such as ``time.sleep``). C code that holds the GIL for the
whole step is not seen, as by every sampling profiler.

This reads trio internals: the run loop's generator ``unrolled_run``, its
local ``task``, and ``Task._schedule_points``. Should trio rename them, the
thread finds no running task and reports nothing (a test catches it).
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

import trio
from trio.lowlevel import Task

__all__ = ["Watchdog", "running_task"]

#: The function in trio's run loop that steps tasks.
_RUNNER = "unrolled_run"


def running_task(frame: FrameType | None) -> Task | None:
    """The task whose step is running at ``frame`` (innermost first), or ``None``
    if none is (the loop is in its own code, or waits for I/O)."""
    inner: FrameType | None = None
    while frame is not None:
        if frame.f_code.co_name == _RUNNER:
            task = frame.f_locals.get("task")
            if type(task) is not Task or inner is None:
                return None
            coro: Any = task.coro
            root = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            # between steps the runner's local still names the last task:
            # only a frame of that task's own coroutine says it runs now
            return task if inner is root else None
        inner = frame
        frame = frame.f_back
    return None


class Watchdog:
    """A daemon thread, one per accounting, started when it first samples;
    made in the trio thread."""

    def __init__(self, acct: Any, beat: float) -> None:
        self.acct = acct
        self.beat = beat
        self.looks = 0
        self._loop = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trioflow top watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within one beat); not blocking."""
        self._stop.set()

    def _run(self) -> None:
        from . import _topdata as td

        acct = self.acct
        seen: Task | None = None
        seen_steps = -1
        first = last = 0.0
        while not self._stop.wait(self.beat):
            self.looks += 1
            now = td._now()  # pyright: ignore[reportPrivateUsage]
            stepping = acct.stepping
            if (
                not stepping
                and not acct.window_pending
                and now - acct.off_since >= td.PERIOD - td.WINDOW
            ):
                acct.window_pending = True
                try:
                    self._token.run_sync_soon(acct.open_window)
                except trio.RunFinishedError:
                    return
            task = None
            if not stepping:  # (in a window the hooks time the steps themselves)
                frames = sys._current_frames()  # pyright: ignore[reportPrivateUsage]
                task = running_task(frames.get(self._loop))
                del frames
            steps = getattr(task, "_schedule_points", -1)
            if task is not None and task is seen and steps == seen_steps:
                last = now  # the same step, still running
                continue
            if seen is not None and last > first:
                acct.blocked.append((last, seen, last - first))
            seen, seen_steps, first, last = task, steps, now, now
