"""``install()``: dumps on a signal, spawn records, stuck tasks, a blocked loop, global deadlock.

What it adds to a running program, and what each costs:

* a ``task_spawned`` instrument recording who spawned each task and from
  where (a few µs per spawn, nothing per step);
* a ``before_io_wait`` instrument that checks for "all tasks are asleep"
  (one call per loop iteration that is about to sleep; the full check runs
  only when no deadline, runnable task or I/O waiter is left);
* a signal handler (``SIGUSR1`` by default) that takes a dump and hands it
  to a writer thread (``_output.py``): the handler never writes, never
  blocks and never re-enters, so a full stderr pipe or a burst of signals
  cannot hang the program;
* with ``stuck_after`` or ``slow_step``, one daemon *thread* (not a task):
  it pings the loop with ``run_sync_soon`` and reports when a ping waits
  longer than ``slow_step`` (synchronous code is blocking the loop: it
  prints the main thread's stack), and starts a stuck-task pass every so
  often (``_stuck.py``: in slices of at most 20 ms of loop time, grouped,
  likely root first).

Every failure of these aids (a report that cannot be written, a bug in a
check) is reported once and swallowed: the program never pays for them.

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

from .. import _registry
from .._util import check_positive_number, check_signal, raise_type
from ._deadlock import all_tasks_asleep, find_deadlocks, loop_may_sleep, own_handlers
from ._dump import dump_tasks, record_spawn
from ._output import Output
from ._stuck import StuckScan
from ._timeline import Timeline, from_install_option

__all__ = ["Installed", "install"]

_DEFAULT_SIGNAL = getattr(_signal, "SIGUSR1", None)
_ON_DEADLOCK = ("warn", "exit", "ignore")
_DEFAULT_FOLD = 100

# -- one signal handler per signal, shared by every install() -----------------
#
# Handles may be uninstalled in any order: each signal keeps the stack of
# live handles (the newest one answers) and the handler that was there before
# trioflow's first, restored when the last handle goes (unless someone else
# replaced ours meanwhile: theirs is left alone).
_active: dict[int, list[Installed]] = {}
_previous: dict[int, Any] = {}
_dispatching = False


def _dispatch(signum: int, frame: FrameType | None) -> None:
    # Runs between two bytecodes of whatever the main thread was doing. It
    # must never block and never re-enter: a second signal arriving while the
    # first is being handled is counted, not handled; the report is handed
    # to a writer thread, never written here.
    global _dispatching
    stack = _active.get(signum)
    if not stack:
        return
    inst = stack[-1]
    if _dispatching:
        inst.coalesced_signals += 1
        return
    _dispatching = True
    try:
        inst._on_signal(frame)  # pyright: ignore[reportPrivateUsage]
    finally:
        _dispatching = False


own_handlers.add(id(_dispatch))

_HERE = os.path.dirname(os.path.abspath(__file__))
#: code a dump would re-enter: the registry (its lock) and the dump's own modules
_REENTRY_FILES = frozenset(
    [os.path.abspath(_registry.__file__)]
    + [os.path.join(_HERE, m) for m in ("_dump.py", "_model.py", "_deadlock.py", "_stuck.py")]
)


def _inside_our_locks(frame: FrameType | None) -> bool:
    """Was the interrupted code inside the registry or a dump (which a dump would re-enter)?"""
    f = frame
    while f is not None:
        if f.f_code.co_filename in _REENTRY_FILES:
            return True
        f = f.f_back
    return False


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
        try:
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
        except Exception as exc:
            owner.report_error("the deadlock check", exc)
            return
        owner.write(text)
        if owner.on_deadlock == "exit":
            owner.flush(timeout=5)
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
        fold_above: int | None = _DEFAULT_FOLD,
    ) -> None:
        self.signum = signum
        self.stuck_after = stuck_after
        self.slow_step = slow_step
        self.on_deadlock = on_deadlock
        self.fold_above = fold_above
        self._file = file
        self._instrument = _Instrument(self)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._run_ident = threading.get_ident()
        self._out: Output | None = None
        self._installed = False
        self._errors_reported: set[str] = set()
        self._scan: StuckScan | None = None
        #: counts, for tests and the curious
        self.slow_reports: int = 0
        #: signals that arrived while one was being handled (answered by that one)
        self.coalesced_signals: int = 0
        #: the timeline ``install(timeline=...)`` records, if any
        self.timeline: Timeline | None = None

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    @property
    def stuck_reports(self) -> int:
        """How many stuck-task reports were written."""
        return 0 if self._scan is None else self._scan.reports

    @property
    def write_failures(self) -> int:
        """Reports that could not be written (the first one is reported on ``sys.__stderr__``)."""
        return 0 if self._out is None else self._out.failures

    def write(self, text: str) -> None:
        """Queue ``text`` for the report file. Never blocks; safe from a signal handler."""
        if self._out is not None:
            self._out.post(text)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every report queued so far is written; ``False`` on timeout."""
        return True if self._out is None else self._out.flush(timeout)

    def report_error(self, where: str, exc: BaseException) -> None:
        """An internal failure of a debugging aid: reported once per place, then swallowed."""
        if where in self._errors_reported:
            return
        self._errors_reported.add(where)
        self.write(
            f"trioflow: {where} failed and was skipped ({exc!r}); the program is unaffected. "
            "Later failures there are not reported.\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )

    # -- set-up / tear-down ----------------------------------------------

    def _start(self) -> None:
        # The only step that can fail goes first, so a failure leaves nothing behind.
        if self.signum is not None:
            stack = _active.setdefault(self.signum, [])
            if _signal.getsignal(self.signum) is not _dispatch:
                try:
                    old = _signal.signal(self.signum, _dispatch)
                except (OSError, ValueError, RuntimeError) as exc:
                    if not stack:
                        del _active[self.signum]
                    raise ValueError(
                        f"signal {self.signum!r} cannot carry dumps here: {exc}"
                    ) from None
                if not stack:
                    _previous[self.signum] = old
            stack.append(self)
        self._installed = True
        self._out = Output(self._file)
        trio.lowlevel.add_instrument(self._instrument)
        if self.stuck_after is not None:
            self._scan = StuckScan(
                self.stuck_after,
                self._token,
                self.write,
                lambda exc: self.report_error("the stuck-task check", exc),
            )
        if self.stuck_after is not None or self.slow_step is not None:
            t = threading.Thread(target=self._watch, name="trioflow watchdog", daemon=True)
            t._trioflow_watchdog = True  # type: ignore[attr-defined]
            self._thread = t
            t.start()

    def uninstall(self) -> None:
        """Remove the instrument and signal handler and stop the watchdog. Idempotent.

        Handles may be uninstalled in any order; the signal's previous
        handler comes back when the last trioflow handle for it is gone.
        Reports still queued are written first (for at most a second).
        """
        if not self._installed:
            return
        self._installed = False
        self._stop.set()
        with contextlib.suppress(KeyError, RuntimeError):  # already gone with the run
            trio.lowlevel.remove_instrument(self._instrument)
        if self.signum is not None:
            stack = _active.get(self.signum, [])
            if self in stack:
                stack.remove(self)
            if not stack:
                _active.pop(self.signum, None)
                old = _previous.pop(self.signum, _signal.SIG_DFL)
                if threading.get_ident() == threading.main_thread().ident:
                    with contextlib.suppress(OSError, ValueError, TypeError):
                        if _signal.getsignal(self.signum) is _dispatch:
                            _signal.signal(self.signum, old)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._out is not None:
            self._out.close(timeout=1.0)
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

    def _on_signal(self, frame: FrameType | None) -> None:
        # Possibly a task blocking the loop was interrupted: it shows as "running".
        try:
            if _inside_our_locks(frame):
                # A dump now would re-enter the registry (whose lock the
                # interrupted code may hold) or the dump being taken: say
                # where the program is, and dump from the loop as soon as it runs.
                self.write(
                    "trioflow: the signal arrived inside trioflow's own bookkeeping; "
                    "the dump follows when the loop next runs. Main thread stack "
                    "(most recent call last):\n" + "".join(traceback.format_stack(frame))
                )
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self._deferred_dump)
                return
            text = self.render()
        except RuntimeError:
            text = "trioflow: signal outside trio.run; main thread stack:\n" + "".join(
                traceback.format_stack(frame)
            )
        except Exception as exc:
            self.report_error("the signal's dump", exc)
            return
        self.write(text)

    def _deferred_dump(self) -> None:
        try:
            self.write(self.render())
        except Exception as exc:
            self.report_error("the signal's dump", exc)

    def render(self) -> str:
        """The dump a signal writes: folded when there are more than ``fold_above`` tasks."""
        dump = dump_tasks()
        if self.fold_above is not None and len(dump) > self.fold_above:
            return (
                f"(folded: {len(dump)} tasks > fold_above={self.fold_above}; "
                "install(fold_above=None) writes every task)\n" + dump.format(group=True)
            )
        return dump.format()

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
                scan = self._scan
                # A pass runs in slices of a few ms each; passes come at most
                # every stuck_after/4 (1 s at most), and never take more than
                # 5% of the loop's time.
                if scan is not None and now - last_stuck_check >= max(
                    min(scan.stuck_after / 4, 1.0), 20 * scan.last_pass_cost
                ):
                    last_stuck_check = now
                    scan.kick()
            except trio.RunFinishedError:
                return

    def _blocked_report(self, waited: float) -> str:
        frame = sys._current_frames().get(self._run_ident)  # pyright: ignore[reportPrivateUsage]
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        return (
            f"trioflow: the trio loop has been blocked for {waited:.2f}s "
            f"(slow_step={self.slow_step}s): synchronous code is running "
            "without a checkpoint. Main thread stack (most recent call last):\n" + stack
        )


def _check_fold(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise_type("fold_above", "an int or None", value)
    if value < 0:
        raise ValueError(f"fold_above must be >= 0 or None, got {value!r}")
    return value


def install(
    *,
    signal: int | None = _DEFAULT_SIGNAL,
    stuck_after: float | None = None,
    slow_step: float | None = None,
    on_deadlock: str = "warn",
    file: TextIO | None = None,
    fold_above: int | None = _DEFAULT_FOLD,
    timeline: str | os.PathLike[str] | Timeline | None = None,
) -> Installed:
    """Make a running Trio program explain itself when it hangs.

    Call it once near the top of your main task (it must run inside
    ``trio.run``, in the main thread if ``signal`` is set). Not a checkpoint.
    Everything it sets up ends with the run; ``with tf.debug.install():``
    also works.

    * ``kill -USR1 <pid>`` writes a task dump to stderr, even while
      synchronous code blocks the loop (the interrupted task shows as
      ``running`` at the line it was on). Above ``fold_above`` tasks the
      dump is folded into groups of tasks doing the same thing. The handler
      never blocks: the text goes to a writer thread, so a full stderr pipe
      stalls nobody but that thread (reports beyond a small backlog are
      dropped and counted); a signal that arrives while one is handled is
      coalesced into it. Without ``install()`` (or ``python -m trioflow
      run``), ``SIGUSR1`` keeps its default action: it ends the process.
    * Each task records who spawned it and from where (``created by`` in
      dumps).
    * When every task is asleep with nothing that could wake any of them
      (no deadline, no I/O, no thread), it writes "all tasks are asleep -
      deadlock!" with the dump, once.
    * ``stuck_after``: reports tasks parked longer than this many seconds,
      folded into groups, with the *likely root* first (the stuck task the
      others wait behind, typically an I/O wait holding a limiter). Sleeps
      and nurseries are never stuck; an I/O, thread or subprocess wait counts
      only when the task holds a primitive. One report per new stuck set;
      each check pauses the loop for at most ~20 ms at a time
      (``docs/benchmarks/debug.md``).
    * ``slow_step``: warns, with the main thread's stack, when synchronous
      code keeps the loop from running for longer than this many seconds.

    Args:
      signal: the signal that triggers a dump, or ``None`` for none.
      stuck_after: seconds; ``None`` turns the stuck-task check off.
      slow_step: seconds; ``None`` turns the blocked-loop watchdog off.
      on_deadlock: ``"warn"`` (write the report), ``"exit"`` (write it, then
        exit with status 2, as Go does) or ``"ignore"``.
      file: where reports go (default: ``sys.stderr`` at the time of
        writing). A write that fails is reported once on ``sys.__stderr__``
        and swallowed.
      fold_above: signal dumps of more tasks than this are folded
        (``dump.format(group=True)``); ``None`` never folds.
      timeline: record an execution timeline until the run ends: a path, or
        a :func:`~trioflow.debug.record_timeline` (a flight recorder, say).
        ``None`` records to ``$TRIOFLOW_TIMELINE`` if set (the last
        ``$TRIOFLOW_TIMELINE_WINDOW`` seconds, if that is set too).

    Returns:
      An :class:`Installed` handle; ``uninstall()`` undoes everything.

    Raises:
      RuntimeError: outside ``trio.run``.
      ValueError / TypeError: for a bad parameter, naming it. Everything is
        checked before anything is changed: a failed call leaves no state.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        _validate(signal, stuck_after, slow_step, on_deadlock, file, fold_above)
        raise RuntimeError("install() must be called from inside trio.run") from None
    return install_for_run(
        signal=signal,
        stuck_after=stuck_after,
        slow_step=slow_step,
        on_deadlock=on_deadlock,
        file=file,
        fold_above=fold_above,
        timeline=timeline,
    )


def install_for_run(
    *,
    signal: int | None = _DEFAULT_SIGNAL,
    stuck_after: float | None = None,
    slow_step: float | None = None,
    on_deadlock: str = "warn",
    file: TextIO | None = None,
    fold_above: int | None = _DEFAULT_FOLD,
    timeline: str | os.PathLike[str] | Timeline | None = None,
) -> Installed:
    """:func:`install` for code that runs inside a run but outside any task
    (an instrument's ``before_run``, as ``python -m trioflow run`` does)."""
    args = _validate(signal, stuck_after, slow_step, on_deadlock, file, fold_above)
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        raise RuntimeError("install() must be called from inside trio.run") from None
    if args[0] is not None and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install(signal=...) must be called from the main thread")
    inst = Installed(*args)
    inst.timeline = from_install_option(timeline, args[4])
    inst._start()  # pyright: ignore[reportPrivateUsage]
    return inst


def _validate(
    signal: object,
    stuck_after: object,
    slow_step: object,
    on_deadlock: object,
    file: object,
    fold_above: object,
) -> tuple[int | None, float | None, float | None, str, TextIO | None, int | None]:
    sig = check_signal(signal)
    fold = _check_fold(fold_above)
    stuck = None if stuck_after is None else check_positive_number(stuck_after, "stuck_after")
    slow = None if slow_step is None else check_positive_number(slow_step, "slow_step")
    if not isinstance(on_deadlock, str) or on_deadlock not in _ON_DEADLOCK:
        raise ValueError(
            f"on_deadlock must be one of 'warn', 'exit', 'ignore', got {on_deadlock!r}"
        )
    if file is not None and not callable(getattr(file, "write", None)):
        raise_type("file", "a text file or None", file)
    out: Any = file
    return sig, stuck, slow, on_deadlock, out, fold
