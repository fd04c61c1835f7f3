"""``record_timeline()``: an execution timeline of a trio run, as a Chrome trace.

What Go's ``runtime/trace`` shows for goroutines, for Trio tasks: which task
ran when and for how long, what each parked task waited on, who woke it, and
how full each limiter was. The file opens in Perfetto's UI
(``ui.perfetto.dev``, "Open trace file") and in ``chrome://tracing``.

How it records (one ``trio.abc.Instrument``):

* ``before_task_step`` / ``after_task_step``: one *run* slice per step, on
  the task's own track; a step longer than ``slow_step`` also gets a
  ``slow step`` marker (synchronous code blocking the loop);
* a step that ends parked: what the task waits on (a trioflow primitive from
  its :class:`~trioflow._registry.Waiting` record; trio's own by the task
  dump's classification), shown as a *wait* slice until it is woken;
* ``task_scheduled``: the task that woke it (the task running at that
  moment) — a flow arrow from the waker's step to the woken task's next
  step; a wake-up from the loop itself (a timer, I/O) has no arrow;
* ``task_spawned``: the task's track (its first scheduling is the arrow
  from the spawner); tracks are grouped by the
  nursery the task runs in (one "process" per nursery);
* every ``sample_interval``: each registered limiter, lane, rate limiter,
  task group and stage as a counter track (in use, waiting), on change;
* ``before_io_wait`` / ``after_io_wait``: the loop's idle time, on its own
  track;
* each pipeline item's time in each stage (its function, retries included,
  and its outcome): one slice per item on a track of the worker that ran
  it, tracks grouped by pipeline ("process" ``pipeline 'name'``). The
  pipeline calls :data:`trioflow.telemetry._hooks.timeline_hook`, which a
  recording sets; a run reads it once, when it starts, so runs started
  before the recording show their tasks but not their items.

Events are small tuples appended to a list: the hot path formats nothing.
A full recording hands its events in chunks to a writer process (see
:mod:`._tracefile`), which streams JSON to the file on another core; the
loop only ``marshal``s each chunk into a pipe. With ``window=`` only the last N seconds are kept
(the *flight recorder*) and written when asked: on a signal, on
:meth:`Timeline.dump`, or when the ``with`` block exits with an exception.

Why the Chrome trace-event JSON format (not Perfetto's protobuf): both UIs
open it, it streams (the array form needs no closing bracket, so both UIs
read a file cut short by a crash at an event boundary), it needs no dependency, and
at about 110 bytes an event a 1M-event file is ~110 MB, which Perfetto's UI
opens (its limit is the browser's memory, well past that).
``docs/benchmarks/timeline.md`` has the measured size and write time.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import signal as _signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TextIO

import trio
from trio.lowlevel import Task

from .. import _registry
from .._util import check_count, check_positive_number, check_signal, raise_type
from ..telemetry import _hooks
from . import _tracefile
from ._dump import record as _task_record
from ._gauges import read_gauge
from ._parked import WaitCache, parked_on
from ._tracefile import TraceStream, write_trace

__all__ = ["ENV_PATH", "ENV_WINDOW", "Timeline", "record_timeline"]

#: The environment variable naming the file :func:`~trioflow.debug.install` records to.
ENV_PATH = "TRIOFLOW_TIMELINE"
#: Seconds kept by the flight recorder that ``TRIOFLOW_TIMELINE`` starts.
ENV_WINDOW = "TRIOFLOW_TIMELINE_WINDOW"

_DEFAULT_FLIGHT_SIGNAL = getattr(_signal, "SIGUSR2", None)

# The event tuples' kinds (their fields: :mod:`._tracefile`), as globals
# for the hot path.
_STEP, _PARK, _WAKE, _MEET, _EXIT = (
    _tracefile.STEP,
    _tracefile.PARK,
    _tracefile.WAKE,
    _tracefile.MEET,
    _tracefile.EXIT,
)
_COUNT, _IDLE, _NOTE, _ITEM = _tracefile.COUNT, _tracefile.IDLE, _tracefile.NOTE, _tracefile.ITEM
_ITEM_TID = _tracefile.ITEM_TID
_LOOP_PID = _tracefile.LOOP_PID

#: The recorder's clock (real time: a timeline shows where CPU time went, so
#: it does not follow a trio MockClock). Tests may replace it.
_now = time.perf_counter

#: Events per chunk a full recording hands its writer.
_CHUNK = 16_384


class _Recorder(trio.abc.Instrument):
    """The instrument: appends event tuples; everything else happens in the writer."""

    def __init__(self, owner: Timeline) -> None:
        self.owner = owner
        self.events: list[tuple[Any, ...]] | collections.deque[tuple[Any, ...]] = (
            collections.deque() if owner.window is not None else []
        )
        self.append = self.events.append
        self.tids: dict[Task, int] = {}
        self.current: Task | None = None
        self.exited: Task | None = None
        self.t0 = 0.0
        self.idle0 = 0.0
        self.cache = WaitCache()
        self.next_tick = 0.0
        self.interval = owner.sample_interval
        #: nursery id -> (weak ref, pid, label)
        self.nurseries: dict[int, tuple[Any, int, str]] = {}
        self.pids = itertools.count(_LOOP_PID + 1)
        self.nursery_sweep = 1024
        #: gauge label -> last (in use, waiting)
        self.gauges: dict[str, tuple[float, int]] = {}
        # flight recorder state: what trimmed events leave behind
        self.meta: dict[int, tuple[Any, ...]] = {}  # tid -> its MEET event
        self.open_parks: dict[int, tuple[Any, ...]] = {}  # tid -> PARK
        self.base_counts: dict[str, tuple[Any, ...]] = {}  # label -> COUNT
        self.trimmed = 0
        #: pipeline name -> (the pid its item tracks are grouped under, its label)
        self.pipelines: dict[str, tuple[int, str]] = {}

    # -- per-step hooks: keep them to a tuple append or two --------------------

    def before_task_step(self, task: Task) -> None:
        self.current = task
        self.t0 = _now()

    def after_task_step(self, task: Task) -> None:
        t1 = _now()
        if task is not self.current:  # a step that began before we did
            return
        tid = self.tids.get(task)
        if tid is None:
            tid = self._meet(task, t1)
        self.append((_STEP, self.t0, t1, tid))
        self.current = None
        if task is self.exited:  # task_exited came first, inside the step
            self.exited = None
            del self.tids[task]
            self.append((_EXIT, t1, tid))
        elif task._next_send_fn is None:  # pyright: ignore[reportPrivateUsage]
            p = parked_on(task, self.cache)
            self.append((_PARK, t1, tid, p.label, p.weight))
        if t1 >= self.next_tick:
            self.tick(t1)

    def task_scheduled(self, task: Task) -> None:
        cur = self.current
        if cur is task:  # a checkpoint rescheduling itself: no wake-up
            return
        t = _now()
        tid = self.tids.get(task)
        if tid is None:
            tid = self._meet(task, t)
        waker = 0 if cur is None else self.tids.get(cur, 0)
        self.append((_WAKE, t, tid, waker))

    def task_spawned(self, task: Task) -> None:
        self._meet(task, _now())

    def task_exited(self, task: Task) -> None:
        self.exited = task  # its last step ends next: after_task_step writes the exit

    def before_io_wait(self, timeout: float) -> None:
        self.idle0 = _now()

    def after_io_wait(self, timeout: float) -> None:
        t = _now()
        if t - self.idle0 > 20e-6:  # a poll that found work at once is not idle time
            self.append((_IDLE, self.idle0, t))
        if t >= self.next_tick:
            self.tick(t)

    def after_run(self) -> None:
        self.owner._stop(from_run=True)  # pyright: ignore[reportPrivateUsage]

    def item(self, stage: Any, duration: float, exc: BaseException | None) -> None:
        """The timeline hook: a pipeline stage finished one item in ``duration`` seconds.

        Called in the worker task, after the item's function (all attempts).
        """
        task = self.current
        if task is None:  # not inside one of this run's steps (another thread's run)
            return
        t = _now()
        tid = self.tids.get(task)
        if tid is None:
            tid = self._meet(task, t)
        pipeline: str = stage.pipeline
        track = self.pipelines.get(pipeline)
        if track is None:
            track = self.pipelines[pipeline] = (next(self.pids), f"pipeline {pipeline!r}")
        error = None if exc is None else type(exc).__qualname__
        self.append((_ITEM, t, tid, *track, stage.name, duration, error))

    # -- the rest ---------------------------------------------------------------

    def _meet(self, task: Task, t: float) -> int:
        """First sight of a task: its id (the task dump's), name and nursery track."""
        nursery = task.parent_nursery
        if nursery is not None:
            _task_record(nursery.parent_task)  # parents get the lower ids, as in dumps
        tid = _task_record(task).id
        self.tids[task] = tid
        if nursery is None:
            pid, label = _LOOP_PID, "trio.run"
        else:
            hit = self.nurseries.get(id(nursery))
            if hit is not None and hit[0]() is nursery:
                _, pid, label = hit
            else:
                pid = next(self.pids)
                owner_task = nursery.parent_task
                if owner_task.parent_nursery is None:
                    label = "trio.run system nursery"
                else:
                    owner_id = _task_record(owner_task).id
                    label = f"nursery of task {owner_id} {_short(owner_task.name)}"
                self.nurseries[id(nursery)] = (_weak(nursery), pid, label)
        ev = (_MEET, t, tid, _short(task.name), pid, label)
        self.append(ev)
        if self.owner.window is not None:
            self.meta[tid] = ev
        return tid

    def tick(self, t: float) -> None:
        """Every ``sample_interval``: gauges; trim (flight) or hand a chunk over (full)."""
        old = self.gauges
        gauges: dict[str, tuple[float, int]] = {}  # rebuilt: gone primitives drop out
        for prim in _registry.live():
            g = read_gauge(prim)
            if g is None:
                continue
            label = g.label
            value = (g.in_use, g.waiting)
            gauges[label] = value
            if old.get(label) != value:
                self.append((_COUNT, t, label, g.in_use, g.waiting))
        self.gauges = gauges
        if len(self.nurseries) > self.nursery_sweep:
            self.nurseries = {k: v for k, v in self.nurseries.items() if v[0]() is not None}
            self.nursery_sweep = max(1024, 2 * len(self.nurseries))
        # Sampling reads every registered primitive: when that takes over a
        # millisecond (thousands of them: a task group per request), space
        # the samples out so that they stay under ~5% of the loop's time.
        cost = _now() - t
        self.next_tick = t + (self.interval if cost < 1e-3 else max(self.interval, 20 * cost))
        owner = self.owner
        if owner.window is not None:
            self.trim(t - owner.window)
            # After the trim, which moves the counters it drops here: a
            # primitive that is gone leaves no last value behind.
            if len(self.base_counts) > 2 * len(gauges) + 64:
                self.base_counts = {k: v for k, v in self.base_counts.items() if k in gauges}
        elif len(self.events) >= _CHUNK:
            chunk = self.events
            assert isinstance(chunk, list)
            self.events = []
            self.append = self.events.append
            owner._hand_over(chunk)  # pyright: ignore[reportPrivateUsage]

    def trim(self, cutoff: float) -> None:
        """Drop what is older than ``cutoff`` (or past ``max_events``), keeping
        what it leaves open: parks still parked, counters' last values."""
        ev = self.events
        assert isinstance(ev, collections.deque)
        cap = self.owner.max_events
        popleft = ev.popleft
        open_parks = self.open_parks
        base_counts = self.base_counts
        while ev and (ev[0][1] < cutoff or len(ev) > cap):
            e = popleft()
            k = e[0]
            if k == _PARK:
                open_parks[e[2]] = e
            elif k == _WAKE:
                open_parks.pop(e[2], None)
            elif k == _EXIT:  # all of that task's events are gone now
                open_parks.pop(e[2], None)
                self.meta.pop(e[2], None)
            elif k == _COUNT:
                base_counts[e[2]] = e
            self.trimmed += 1

    def snapshot(self) -> list[tuple[Any, ...]]:
        """The flight recorder's events, self-contained (names, open parks, counters)."""
        ev = list(self.events)
        start = ev[0][1] if ev else _now()
        head: list[tuple[Any, ...]] = [(_MEET, start, *m[2:]) for m in self.meta.values()]
        live = set(self.tids.values())
        head += [(_PARK, start, *p[2:]) for p in self.open_parks.values() if p[2] in live]
        head += [(_COUNT, start, *c[2:]) for c in self.base_counts.values()]
        if self.trimmed:
            head.append((_NOTE, start, f"flight recorder: the last {len(ev)} events"))
        return head + ev


def _weak(obj: object) -> Any:
    import weakref

    try:
        return weakref.ref(obj)
    except TypeError:  # pragma: no cover - trio's nurseries are weakly referenceable
        return lambda: obj


def _short(name: str, limit: int = 120) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# -- writing --------------------------------------------------------------------


class _ThreadWriter:
    """Encodes a full recording in a thread of this process, under its GIL
    (when no writer process can be started)."""

    def __init__(self, file: TextIO, base: float, slow_step: float) -> None:
        self.stream = TraceStream(file, base, slow_step)
        self.queue: queue.SimpleQueue[list[tuple[Any, ...]] | float | None] = queue.SimpleQueue()
        self.error: str | None = None
        self.thread = threading.Thread(
            target=self._run, name="trioflow timeline writer", daemon=True
        )
        self.thread.start()

    def hand(self, chunk: list[tuple[Any, ...]]) -> None:
        self.queue.put(chunk)

    def _run(self) -> None:
        stream = self.stream
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    break
                if isinstance(item, list):
                    stream.feed(item)
                else:  # the end
                    stream.close(item)
        except BaseException as exc:  # reported by close()
            self.error = repr(exc)
            while self.queue.get() is not None:  # let the recorder go on
                pass
        finally:
            stream.file.close()

    def close(self, events: list[tuple[Any, ...]], end: float) -> str | None:
        self.queue.put(events)
        self.queue.put(end)
        self.queue.put(None)
        self.thread.join()
        return self.error


class _ProcessWriter:
    """Streams a full recording through a writer process (``_tracefile.py``
    run as a script), which encodes on another core.

    The loop ``marshal``s each chunk (a fraction of a microsecond an event)
    and writes it to the process's pipe without blocking; what the pipe
    cannot take yet waits here and goes at the next chunk, so the loop does
    not wait for the writer and no thread of this process shares its GIL.
    Only a writer more than :data:`_MAX_PENDING` bytes behind (a program
    making events faster than it encodes them, some 400k a second) makes
    the loop wait, a chunk at a time, until it is back under: memory stays
    bounded, and the program slows to what the writer can take.
    """

    def __init__(self, proc: subprocess.Popen[bytes], path: Path, base: float, slow_step: float):
        self.proc = proc
        assert proc.stdin is not None
        self.fd = proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.pending: collections.deque[memoryview] = collections.deque()
        self.pending_bytes = 0
        self.error: str | None = None
        self._send(_tracefile.message((str(path), base, slow_step)))

    def _send(self, data: bytes) -> None:
        if self.error is not None:
            return
        pending = self.pending
        pending.append(memoryview(data))
        self.pending_bytes += len(data)
        try:
            while pending:
                head = pending[0]
                n = os.write(self.fd, head)
                self.pending_bytes -= n
                if n == len(head):
                    pending.popleft()
                else:
                    pending[0] = head[n:]
        except BlockingIOError:  # the writer is behind: the rest goes later
            if self.pending_bytes > _MAX_PENDING:
                self._drain(_MAX_PENDING)
        except OSError as exc:  # the writer is gone: record on, report at the end
            self._gone(exc)

    def _drain(self, limit: int) -> None:
        """Write, blocking, until no more than ``limit`` bytes wait."""
        os.set_blocking(self.fd, True)
        pending = self.pending
        try:
            while pending and self.pending_bytes > limit:
                head = pending.popleft()
                while head:
                    n = os.write(self.fd, head)
                    self.pending_bytes -= n
                    head = head[n:]
        except OSError as exc:
            self._gone(exc)
        finally:
            with contextlib.suppress(OSError):
                os.set_blocking(self.fd, False)

    def _gone(self, exc: OSError) -> None:
        self.error = repr(exc)
        self.pending.clear()
        self.pending_bytes = 0

    def hand(self, chunk: list[tuple[Any, ...]]) -> None:
        try:
            data = _tracefile.message(chunk)
        except ValueError as exc:  # an event marshal cannot take (a bug here)
            self.error = self.error or repr(exc)
            return
        self._send(data)

    def close(self, events: list[tuple[Any, ...]], end: float) -> str | None:
        self.hand(events)
        self._send(_tracefile.message(("end", end)))
        self._drain(0)
        proc = self.proc
        assert proc.stdin is not None
        assert proc.stderr is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        err = proc.stderr.read()  # ends when the writer does
        proc.stderr.close()
        proc.wait()
        if proc.returncode != 0:
            why = f"the writer process exited with {proc.returncode}"
            if err:
                why += f": {err.decode(errors='replace').strip()}"
            return why if self.error is None else f"{self.error}; {why}"
        return self.error


#: Bytes a full recording's writer may fall behind before the loop waits for it.
_MAX_PENDING = 64 << 20

#: How full recordings are written: ``"process"`` (a writer process, falling
#: back to a thread when none can be started) or ``"thread"``. Tests set it.
_WRITER = "process"


def _open_writer(path: Path, base: float, slow_step: float) -> _ThreadWriter | _ProcessWriter:
    # Opened here in every case, so that a path that cannot be written
    # fails the start, not the end.
    file: TextIO = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed below or by the writer
    proc = _start_writer_process() if _WRITER == "process" else None
    if proc is not None:
        try:
            writer = _ProcessWriter(proc, path, base, slow_step)
        except OSError:  # a pipe that cannot be made non-blocking (Windows before 3.12)
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        else:
            file.close()
            return writer
    return _ThreadWriter(file, base, slow_step)


def _start_writer_process() -> subprocess.Popen[bytes] | None:
    script = Path(_tracefile.__file__)
    if not sys.executable or not script.is_file():
        return None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Out of the terminal's process group: Ctrl-C is the program's.
            start_new_session=True,
        )
    except OSError:
        return None
    if sys.platform == "linux":  # room for a whole chunk: one write, not a dozen
        with contextlib.suppress(OSError):
            import fcntl

            assert proc.stdin is not None
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    return proc


# -- the public object -------------------------------------------------------------


class Timeline:
    """A timeline recording in progress (what :func:`record_timeline` returns).

    Use it as a context manager inside ``trio.run`` (``with``), or hand it to
    :func:`trioflow.debug.install` (``timeline=``), which starts it and stops
    it when the run ends.
    """

    def __init__(
        self,
        path: Path,
        *,
        window: float | None,
        signal: int | None,
        slow_step: float,
        sample_interval: float,
        max_events: int,
        file: TextIO | None,
    ) -> None:
        self.path = path
        """Where the timeline is written (flight dumps after the first add ``-2``, ``-3``...)."""
        self.window = window
        """Seconds the flight recorder keeps, or ``None`` for a full recording."""
        self.signal = signal
        """The signal that dumps the flight recorder, or ``None``."""
        self.slow_step = slow_step
        self.sample_interval = sample_interval
        self.max_events = max_events
        self._file = file
        self.dumps: list[Path] = []
        """Every file written so far."""
        self._recorder: _Recorder | None = None
        self._writer: _ThreadWriter | _ProcessWriter | None = None
        self._base = 0.0
        self._old_handler: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._dump_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._handed = 0
        self._previous_hook: _hooks.StageHook | None = None

    def __repr__(self) -> str:
        mode = "full" if self.window is None else f"last {self.window:g}s"
        state = (
            "not started" if self._recorder is None else "stopped" if self._stopped else "recording"
        )
        return f"<trioflow.debug.Timeline {str(self.path)!r} ({mode}), {state}>"

    @property
    def events(self) -> int:
        """Events recorded so far (a flight recorder: events held now)."""
        rec = self._recorder
        return self._handed + (0 if rec is None else len(rec.events))

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Timeline:
        """Start recording (what entering ``with`` does). Not a checkpoint.

        Raises:
          RuntimeError: outside ``trio.run``, started twice, or with a
            ``signal`` from a thread other than the main thread.
        """
        if self._recorder is not None:
            raise RuntimeError("this timeline was already started; make a new one")
        try:
            self._token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            raise RuntimeError("record_timeline() must be started inside trio.run") from None
        if self.signal is not None and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("record_timeline(signal=...) must be started in the main thread")
        self._base = _now()
        rec = self._recorder = _Recorder(self)
        if self.window is None:
            self._writer = _open_writer(self.path, self._base, self.slow_step)
        if self.signal is not None:
            self._old_handler = _signal.signal(self.signal, self._on_signal)
        # The step running now began before the recorder: count it from here,
        # so what it does next (spawns, wake-ups) has a step to hang from.
        current = trio.lowlevel.current_task()
        rec.current = current
        rec.t0 = self._base
        rec._meet(current, self._base)  # pyright: ignore[reportPrivateUsage]
        trio.lowlevel.add_instrument(rec)
        # Pipelines started from now on report their items (the last timeline
        # started wins; stopping it gives the hook back).
        self._previous_hook = _hooks.timeline_hook
        _hooks.timeline_hook = rec.item
        return self

    def stop(self) -> None:
        """Stop recording; a full recording finishes writing its file. Idempotent.

        Blocks the calling thread until the file is written (a full
        recording's last chunk; a dump still being written).
        """
        self._stop(from_run=False)

    def _stop(self, *, from_run: bool) -> None:
        with self._lock:
            if self._stopped or self._recorder is None:
                return
            self._stopped = True
        rec = self._recorder
        if _hooks.timeline_hook == rec.item:
            _hooks.timeline_hook = self._previous_hook
        with contextlib.suppress(KeyError, RuntimeError):
            trio.lowlevel.remove_instrument(rec)
        if self.signal is not None and threading.current_thread() is threading.main_thread():
            _signal.signal(self.signal, self._old_handler)
        end = _now()
        if self._writer is not None:
            events = rec.events
            assert isinstance(events, list)
            self._handed += len(events)
            rec.events = []
            error = self._writer.close(events, end)
            self.dumps.append(self.path)
        else:
            error = None
        for t in self._dump_threads:
            t.join()
        if error is not None:
            raise OSError(f"writing the timeline to {self.path} failed: {error}")

    def __enter__(self) -> Timeline:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.window is not None and not self._stopped:
            # A flight recorder leaving with an exception: what led up to it.
            self.dump()
        self.stop()

    # -- flight recorder ------------------------------------------------------------

    def dump(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the flight recorder's last ``window`` seconds now; returns the file.

        Call it from the trio thread (a task, or a ``run_sync_soon``
        callback). Not a checkpoint; blocks the loop while it encodes
        (a couple of seconds of CPU per million events: see
        ``docs/benchmarks/timeline.md``).
        A signal writes from a thread of its own instead.

        Raises:
          RuntimeError: for a full recording (it writes its file on stop).
        """
        rec = self._recorder
        if self.window is None:
            raise RuntimeError("dump() is for a flight recorder (record_timeline(window=...))")
        if rec is None:
            raise RuntimeError("this timeline was never started")
        target = Path(path) if path is not None else self._next_path()
        events = rec.snapshot()
        n = write_trace(target, events, self._base, self.slow_step, _now())
        self._note(target, n)
        return target

    def _next_path(self) -> Path:
        n = len(self.dumps) + 1
        if n == 1:
            return self.path
        p = self.path
        suffixes = "".join(p.suffixes)
        stem = p.name[: len(p.name) - len(suffixes)] if suffixes else p.name
        return p.with_name(f"{stem}-{n}{suffixes}")

    def _note(self, target: Path, n: int) -> None:
        with self._lock:
            if target not in self.dumps:
                self.dumps.append(target)
        f = self._file if self._file is not None else sys.stderr
        with contextlib.suppress(Exception):
            f.write(
                f"trioflow: timeline of the last {self.window:g}s ({n} trace events) "
                f"written to {target}\n"
            )
            f.flush()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Python runs this between two bytecodes of the main thread, maybe in
        # the middle of this very recorder: touch nothing, take no lock. Ask
        # the loop to take the snapshot (run_sync_soon is safe from a signal
        # handler; idempotent folds a burst of signals into one dump).
        token = self._token
        if token is not None and not self._stopped:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._dump_in_background, idempotent=True)

    def _dump_in_background(self) -> None:
        """In the loop: copy the ring (fast), then encode and write from a thread."""
        rec = self._recorder
        if rec is None or self._stopped:
            return
        events = rec.snapshot()
        target = self._next_path()
        with self._lock:
            self.dumps.append(target)  # reserves the name for the next signal
        end = _now()

        def write() -> None:
            try:
                n = write_trace(target, events, self._base, self.slow_step, end)
            except OSError as exc:
                f = self._file if self._file is not None else sys.stderr
                f.write(f"trioflow: writing the timeline to {target} failed: {exc}\n")
                return
            self._note(target, n)

        t = threading.Thread(target=write, name="trioflow timeline dump", daemon=True)
        self._dump_threads = [x for x in self._dump_threads if x.is_alive()] + [t]
        t.start()

    def _hand_over(self, chunk: list[tuple[Any, ...]]) -> None:
        self._handed += len(chunk)
        assert self._writer is not None
        self._writer.hand(chunk)


_UNSET: Any = object()


def record_timeline(
    path: str | os.PathLike[str] | None = None,
    *,
    window: float | None = None,
    signal: int | None = _UNSET,
    slow_step: float = 0.01,
    sample_interval: float = 0.01,
    max_events: int = 2_000_000,
    file: TextIO | None = None,
) -> Timeline:
    """Record an execution timeline of this trio run, for Perfetto's UI.

    ::

        with tf.debug.record_timeline("trace.json"):
            await main()
        # then open trace.json at ui.perfetto.dev (or chrome://tracing)

    One track per task, grouped by the nursery it runs in: a *run* slice
    for every step, a *wait* slice for every park named after what it
    waited on (``wait limiter 'api'``, ``wait lock 'self.lock' <0x…>``,
    ``wait sleep``), a flow arrow from the task that woke it, a ``slow
    step`` marker on steps longer than ``slow_step``, the loop's idle time,
    and a counter track per limiter, lane, rate limiter, task group and
    stage (in use, waiting).

    With ``window=N`` it is a *flight recorder*: only the last N seconds are
    kept (at most ``max_events`` events), so it can stay on in production;
    ``kill -USR2 <pid>`` (``signal=``), :meth:`Timeline.dump`, or leaving the
    ``with`` block with an exception writes them. Each dump after the first
    adds ``-2``, ``-3``... before the suffix, so a second incident does not
    overwrite the first.

    Entering and leaving are not checkpoints; ``with`` blocks the calling
    thread at the end until the file is written. Cost: a few µs of CPU
    per task step, of the order of one trivial step itself, so a program
    doing 100k steps a second stays under twice its unrecorded CPU
    (``docs/benchmarks/timeline.md``). A full recording's JSON is encoded
    by a writer process of its own (``python -I -S``, the standard library
    only), a few µs of its CPU per event on another core; it ignores
    SIGINT/SIGTERM/SIGHUP, so a Ctrl-C or a service manager's stop does not
    cut the file short, and if the program dies it closes the file with
    what it was sent. Where no process can be started, a thread encodes
    (sharing the program's GIL, so a full recording then costs about twice
    as much). In memory: a chunk of 16,384 events, and at most 64 MB the
    writer has not read yet (past that the loop waits for it); a flight
    recorder about 100 bytes per event kept.

    Args:
      path: the file to write (Chrome trace-event JSON, array form). ``None``
        takes the ``TRIOFLOW_TIMELINE`` environment variable.
      window: seconds the flight recorder keeps; ``None`` records all.
      signal: the signal that dumps the flight recorder (default
        ``SIGUSR2`` with a ``window``, none without); ``None`` for none.
      slow_step: seconds; steps at least this long are marked.
      sample_interval: seconds between counter samples (taken on the loop's
        own activity, no extra task).
      max_events: the flight recorder's cap, whatever the window.
      file: where dump notices go (default ``sys.stderr``).

    Returns:
      A :class:`Timeline`, started by ``with`` (or :meth:`Timeline.start`).

    Raises:
      ValueError / TypeError: for a bad parameter, naming it; ``path=None``
        without ``TRIOFLOW_TIMELINE`` set; a ``signal`` without a ``window``.
    """
    if path is None:
        env = os.environ.get(ENV_PATH)
        if not env:
            raise ValueError(f"path is None and the {ENV_PATH} environment variable is not set")
        path = env
    if not isinstance(path, (str, os.PathLike)):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise_type("path", "a str or os.PathLike", path)
    p = Path(path)
    if window is not None:
        window = check_positive_number(window, "window")
    if signal is _UNSET:
        signal = _DEFAULT_FLIGHT_SIGNAL if window is not None else None
    check_signal(signal)
    if signal is not None and window is None:
        raise ValueError(
            f"signal={signal!r} dumps a flight recorder: give window= too "
            "(a full recording writes its file when it stops)"
        )
    slow_step = check_positive_number(slow_step, "slow_step")
    sample_interval = check_positive_number(sample_interval, "sample_interval")
    max_events = check_count(max_events, "max_events")
    if p.is_dir():
        raise ValueError(f"path must be a file, got the directory {str(p)!r}")
    return Timeline(
        p,
        window=window,
        signal=signal,
        slow_step=slow_step,
        sample_interval=sample_interval,
        max_events=max_events,
        file=file,
    )


def from_install_option(value: object, file: TextIO | None) -> Timeline | None:
    """What ``install(timeline=...)`` starts: a path, a :class:`Timeline`, or the
    environment (``TRIOFLOW_TIMELINE``, ``TRIOFLOW_TIMELINE_WINDOW``) when ``None``."""
    if value is None:
        env = os.environ.get(ENV_PATH)
        if not env:
            return None
        raw = os.environ.get(ENV_WINDOW)
        try:
            window = float(raw) if raw else None
        except ValueError:
            raise ValueError(f"{ENV_WINDOW} must be a number of seconds, got {raw!r}") from None
        tl = record_timeline(env, window=window, file=file)
    elif isinstance(value, Timeline):
        tl = value
    elif isinstance(value, (str, os.PathLike)):
        tl = record_timeline(value, file=file)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise_type("timeline", "a path, a Timeline from record_timeline(), or None", value)
    return tl.start()
