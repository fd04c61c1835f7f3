"""``install()``: dumps on a signal, spawn records, stuck tasks, a blocked loop, global deadlock.

What it adds to a running program, and what each costs:

* a ``task_spawned`` instrument recording who spawned each task and from
  where (a few µs per spawn, nothing per step);
* a ``before_io_wait`` instrument that checks for "all tasks are asleep"
  (one call per loop iteration that is about to sleep; the full check runs
  only when no deadline, runnable task or I/O waiter is left);
* a signal handler (``SIGUSR1`` by default) that writes a dump to stderr;
* with ``stuck_after`` or ``slow_step``, one daemon *thread* (not a task):
  it pings the loop with ``run_sync_soon`` and reports when a ping waits
  longer than ``slow_step`` (synchronous code is blocking the loop: it
  prints the main thread's stack), and asks the loop every so often for
  tasks parked longer than ``stuck_after``.

Everything stops when the ``trio.run`` ends (``after_run``) or on
:meth:`Installed.uninstall`.
"""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import sys
import threading
import time
import traceback
from types import FrameType, TracebackType
from typing import Any, TextIO

import trio
from trio.lowlevel import Task

from .._util import check_positive_number, check_signal
from ._deadlock import all_tasks_asleep, find_deadlocks, loop_may_sleep, own_handlers
from ._dump import dump_tasks, record_spawn
from ._model import TaskInfo
from ._timeline import Timeline, from_install_option

__all__ = ["Installed", "install"]

_DEFAULT_SIGNAL = getattr(_signal, "SIGUSR1", None)
_ON_DEADLOCK = ("warn", "exit", "ignore")


class _Instrument(trio.abc.Instrument):
    """Spawn records and the global deadlock check; no per-step hooks."""

    def __init__(self, owner: Installed) -> None:
        # Strong: the run's instrument list keeps what install() set up alive
        # even when the caller drops the handle.
        self._owner = owner
        self._reported = False

    def task_spawned(self, task: Task) -> None:
        record_spawn(task)

    def before_io_wait(self, timeout: float) -> None:
        owner = self._owner
        if owner.on_deadlock == "ignore" or not loop_may_sleep(timeout):
            return
        found = all_tasks_asleep()
        if found is None:
            self._reported = False
            return
        if self._reported:
            return
        self._reported = True
        text = found.format()
        cycles = find_deadlocks(found.dump)
        if cycles:
            text += "\n" + "\n".join(c.format() for c in cycles)
        owner.write(text)
        if owner.on_deadlock == "exit":
            owner.file.flush()
            os._exit(2)  # as Go does on "all goroutines are asleep"

    def after_run(self) -> None:
        self._owner.uninstall()


class Installed:
    """What :func:`install` set up; :meth:`uninstall` (or leaving ``with``) removes it."""

    def __init__(
        self,
        signum: int | None,
        stuck_after: float | None,
        slow_step: float | None,
        on_deadlock: str,
        file: TextIO | None,
    ) -> None:
        self.signum = signum
        self.stuck_after = stuck_after
        self.slow_step = slow_step
        self.on_deadlock = on_deadlock
        self._file = file
        self._instrument = _Instrument(self)
        self._old_handler: Any = None
        self._handler: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._main_ident = threading.get_ident()
        self._lock = threading.Lock()
        self._installed = True
        #: (task id, id(obj)) -> first time a stuck check saw it parked there
        self._first_seen: dict[tuple[int, int], float] = {}
        self._warned: set[tuple[int, int]] = set()
        #: seconds the last stuck check took (it throttles the next one)
        self._check_cost = 0.0
        #: counts, for tests and the curious
        self.stuck_reports: int = 0
        self.slow_reports: int = 0
        #: the timeline ``install(timeline=...)`` records, if any
        self.timeline: Timeline | None = None

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    def write(self, text: str) -> None:
        with self._lock:
            f = self.file
            f.write(text if text.endswith("\n") else text + "\n")
            f.flush()

    # -- set-up / tear-down ----------------------------------------------

    def _start(self) -> None:
        trio.lowlevel.add_instrument(self._instrument)
        if self.signum is not None:
            self._handler = self._on_signal
            own_handlers.add(id(self._handler))
            self._old_handler = _signal.signal(self.signum, self._handler)
        if self.stuck_after is not None or self.slow_step is not None:
            t = threading.Thread(target=self._watch, name="trioflow watchdog", daemon=True)
            t._trioflow_watchdog = True  # type: ignore[attr-defined]
            self._thread = t
            t.start()

    def uninstall(self) -> None:
        """Remove the instrument and signal handler and stop the watchdog. Idempotent."""
        if not self._installed:
            return
        self._installed = False
        self._stop.set()
        with contextlib.suppress(KeyError, RuntimeError):  # already gone with the run
            trio.lowlevel.remove_instrument(self._instrument)
        if self.signum is not None and threading.get_ident() == self._main_ident:
            _signal.signal(self.signum, self._old_handler)
            own_handlers.discard(id(self._handler))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.timeline is not None:
            self.timeline.stop()

    def __enter__(self) -> Installed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    # -- the signal ----------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the main thread was doing,
        # possibly a task blocking the loop: that task shows as "running".
        try:
            text = dump_tasks().format()
        except RuntimeError:
            text = "trioflow: signal outside trio.run; main thread stack:\n" + "".join(
                traceback.format_stack(frame)
            )
        self.write(text)

    # -- the watchdog thread ----------------------------------------------------

    def _watch(self) -> None:
        periods = [p for p in (self.slow_step, self.stuck_after) if p is not None]
        interval = min(max(min(periods) / 4, 0.005), 1.0)
        pending: list[float] = []  # wall time of the ping not yet answered
        last_stuck_check = time.monotonic()
        blocked_reported = False

        def pong() -> None:
            pending.clear()

        while not self._stop.wait(interval):
            now = time.monotonic()
            if pending:
                waited = now - pending[0]
                if self.slow_step is not None and waited >= self.slow_step and not blocked_reported:
                    blocked_reported = True
                    self.slow_reports += 1
                    self.write(self._blocked_report(waited))
                continue
            blocked_reported = False
            pending.append(now)
            try:
                self._token.run_sync_soon(pong)
                # A check is a full dump: at most every stuck_after/4 (1 s at
                # most), and never more than 5% of the loop's time (a 100k-task
                # program, ~1 s a dump, is checked every ~20 s).
                if self.stuck_after is not None and now - last_stuck_check >= max(
                    min(self.stuck_after / 4, 1.0), 20 * self._check_cost
                ):
                    last_stuck_check = now
                    self._token.run_sync_soon(self._check_stuck)
            except trio.RunFinishedError:
                return

    def _blocked_report(self, waited: float) -> str:
        frame = sys._current_frames().get(self._main_ident)  # pyright: ignore[reportPrivateUsage]
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        return (
            f"trioflow: the trio loop has been blocked for {waited:.2f}s "
            f"(slow_step={self.slow_step}s): synchronous code is running "
            "without a checkpoint. Main thread stack (most recent call last):\n" + stack
        )

    def _check_stuck(self) -> None:
        """In the loop: report tasks parked longer than ``stuck_after`` (once per wait)."""
        assert self.stuck_after is not None
        t0 = time.perf_counter()
        dump = dump_tasks()
        self._check_cost = time.perf_counter() - t0
        now = dump.time
        seen: dict[tuple[int, int], float] = {}
        stuck: list[tuple[TaskInfo, float]] = []
        for t in dump.tasks:
            b = t.blocked_on
            if t.state != "blocked" or b is None or b.kind in _NOT_STUCK:
                continue
            key = (t.id, id(b.obj))
            since = now - t.blocked_for if t.blocked_for is not None else None
            if since is None:
                since = self._first_seen.get(key, now)
            seen[key] = since
            if now - since >= self.stuck_after and key not in self._warned:
                self._warned.add(key)
                stuck.append((t, now - since))
        self._first_seen = seen
        self._warned &= set(seen)
        for t, waited in stuck:
            self.stuck_reports += 1
            note = "" if t.blocked_for is not None else "at least "
            self.write(
                f"trioflow: task {t.id} {t.name!r} has been waiting on "
                f"{t.blocked_on.describe() if t.blocked_on else '?'} for {note}{waited:.1f}s "
                f"(stuck_after={self.stuck_after}s):\n{t.format()}\n"
            )


#: Waits that are not "stuck" however long they last.
_NOT_STUCK = frozenset({"sleep", "I/O", "nursery", "signal", "wait_all_tasks_blocked", "process"})


def install(
    *,
    signal: int | None = _DEFAULT_SIGNAL,
    stuck_after: float | None = None,
    slow_step: float | None = None,
    on_deadlock: str = "warn",
    file: TextIO | None = None,
    timeline: str | os.PathLike[str] | Timeline | None = None,
) -> Installed:
    """Make a running Trio program explain itself when it hangs.

    Call it once near the top of your main task (it must run inside
    ``trio.run``, in the main thread if ``signal`` is set). Not a checkpoint.
    Everything it sets up ends with the run; ``with tf.debug.install():``
    also works.

    * ``kill -USR1 <pid>`` writes a task dump to stderr, even while
      synchronous code blocks the loop (the interrupted task shows as
      ``running`` at the line it was on).
    * Each task records who spawned it and from where (``created by`` in
      dumps).
    * When every task is asleep with nothing that could wake any of them
      (no deadline, no I/O, no thread), it writes "all tasks are asleep -
      deadlock!" with the dump, once.
    * ``stuck_after``: warns (with the task's stack) about each task parked
      on a primitive longer than this many seconds.
    * ``slow_step``: warns, with the main thread's stack, when synchronous
      code keeps the loop from running for longer than this many seconds.

    Args:
      signal: the signal that triggers a dump, or ``None`` for none.
      stuck_after: seconds; ``None`` turns the stuck-task check off.
      slow_step: seconds; ``None`` turns the blocked-loop watchdog off.
      on_deadlock: ``"warn"`` (write the report), ``"exit"`` (write it, then
        exit with status 2, as Go does) or ``"ignore"``.
      file: where reports go (default: ``sys.stderr`` at the time of writing).
      timeline: record an execution timeline until the run ends: a path, or
        a :func:`~trioflow.debug.record_timeline` (a flight recorder, say).
        ``None`` records to ``$TRIOFLOW_TIMELINE`` if set (the last
        ``$TRIOFLOW_TIMELINE_WINDOW`` seconds, if that is set too).

    Returns:
      An :class:`Installed` handle; ``uninstall()`` undoes everything.

    Raises:
      RuntimeError: outside ``trio.run``.
      ValueError / TypeError: for a bad parameter, naming it.
    """
    check_signal(signal)
    if stuck_after is not None:
        stuck_after = check_positive_number(stuck_after, "stuck_after")
    if slow_step is not None:
        slow_step = check_positive_number(slow_step, "slow_step")
    if on_deadlock not in _ON_DEADLOCK:
        raise ValueError(
            f"on_deadlock must be one of 'warn', 'exit', 'ignore', got {on_deadlock!r}"
        )
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError("install() must be called from inside trio.run") from None
    if signal is not None and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install(signal=...) must be called from the main thread")
    inst = Installed(signal, stuck_after, slow_step, on_deadlock, file)
    inst.timeline = from_install_option(timeline, file)
    inst._start()  # pyright: ignore[reportPrivateUsage]
    return inst
