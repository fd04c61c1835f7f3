"""What ``/debug/top`` serves: per-task accounting, folded into a compact delta.

``python -m trioflow top URL`` asks once a second. Answering must stay cheap
at 10,000 tasks (the goal: under 1% of the service's time at 1 Hz), so:

* an instrument keeps the accounting as it happens — per task: busy time,
  polls (steps), longest step, what it is parked on and since when; per
  *group* of tasks that do the same thing (the task name with its numbers
  folded: ``worker-17`` and ``worker-3`` are ``worker-*``): the same sums,
  kept incrementally, so a request reads O(groups), never O(tasks);
* the instrument is installed by the first request and removes itself
  after :data:`IDLE_AFTER` seconds without one: a service nobody watches
  pays nothing;
* a busy loop is *sampled*: trio calls an instrument's step hooks twice per
  task step, and that dispatch alone, with hooks that do nothing, costs a
  10,000-task service about a tenth of its time. Above :data:`FULL_BELOW`
  steps a second the step hooks are on for :data:`WINDOW` seconds of every
  :data:`PERIOD`; each step seen counts for the steps of its cycle, so busy
  time and polls are estimates (the frame's ``coverage`` says what share of
  the last cycle was seen, 1.0 when nothing was sampled). A light
  instrument with no per-step or per-iteration hook sees every spawn and
  exit. Parked labels are refreshed by each frame, a bounded round-robin
  share of the tasks at a time. A thread (:mod:`._topwatch`) opens the
  windows and, looking at the loop thread's stack every :data:`BEAT`
  seconds, catches a step that blocks the loop outside them. A loop that
  stays quiet is fully accounted (once sampled, the accounting stays
  sampled until it stops);
* each answer carries a version; a client that sends ``since=V`` gets only
  the rows that changed after its answer ``V`` and the names of rows gone
  since (the *delta*); ``since=0`` gets everything.

The schema (``"schema": "trioflow.top/1"``) is documented in
``docs/debugging.md``. Per-task detail is served on demand: ``?group=NAME``
lists that group's tasks, ``?task=ID`` gives one task's stack (a full task
dump underneath: about 5 µs a task, paid only when asked).

Lints, computed per request from the registry and the accounting: a step
that ran longer than ``slow_ms`` without a checkpoint; a limiter with a
waiter whose weight exceeds its whole limit (it can never be admitted, and
FIFO-fair admission blocks everyone behind it); a stage whose workers are
all parked sending (nobody reads its outputs); a task parked on a trioflow
primitive longer than ``wait_s`` (a *long wait*). The *stuck* lints, tasks
nothing can wake, come from :func:`~trioflow.debug.find_stuck`, which is
too costly for every frame: ``serve()`` runs it in the background at most
every ``STUCK_EVERY`` seconds while someone watches and passes its findings
in (:func:`stuck_lints`). More checks plug in through :data:`lint_checks`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import trio
from trio.lowlevel import Task

from .. import _registry
from ._dump import record as _task_record
from ._gauges import read_gauge
from ._parked import WaitCache, parked_on
from ._reach import Stuck

__all__ = [
    "SCHEMA",
    "Lint",
    "lint_checks",
    "respond",
    "start_accounting",
    "stop_accounting",
    "stuck_lints",
]

SCHEMA = "trioflow.top/1"
#: Seconds without a ``/debug/top`` request after which the accounting stops.
IDLE_AFTER = 30.0
#: Steps a second under which every step is accounted; above it, sampled.
FULL_BELOW = 2_000.0
#: Seconds of each :data:`PERIOD` with the step hooks on, when sampled.
WINDOW = 0.02
PERIOD = 1.0
#: How often the watchdog thread looks at the loop thread's stack, when sampled.
BEAT = 0.025
#: Parked tasks whose labels a frame refreshes, when sampled.
RELABEL_PER_FRAME = 64
#: The accounting's clock (a test may replace it).
_now = time.perf_counter
#: Steps at least this long are kept for the "never yields" lint (the
#: request's ``slow_ms`` filters further).
_SLOW_FLOOR = 0.005
_WAIT_RING = 512

Lint = dict[str, Any]
"""One finding: ``{"kind", "subject", "text", "task"}`` (``task`` may be ``None``)."""

#: Extra lint checks: each is called per request (in the trio thread) and
#: returns findings; it must be cheap (it runs on every frame).
lint_checks: list[Callable[[], list[Lint]]] = []

#: The order lints are listed in: what needs a person first.
_LINT_ORDER = {"stuck": 0, "never fits": 1, "unread outputs": 2, "long wait": 3, "never yields": 4}

_DIGITS = re.compile(r"\d+")


def group_of(name: str) -> str:
    """Tasks that do the same thing: the name with its numbers folded."""
    return _DIGITS.sub("*", name)


class _Group:
    __slots__ = (
        "busy",
        "labels",
        "max_step",
        "max_task",
        "n",
        "name",
        "parked",
        "parked_sum",
        "parked_total",
        "polls",
        "tasks",
        "wbusy",
        "wpolls",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.polls = 0.0  # steps (an estimate when sampled)
        self.busy = 0.0
        self.max_step = 0.0
        self.max_task = 0
        self.parked = 0  # tasks parked now
        self.parked_sum = 0.0  # sum of their park start times
        self.parked_total = 0.0  # time parked by parks already ended
        #: what its parked tasks wait on now: label -> count
        self.labels: dict[str, int] = {}
        self.tasks: dict[int, _TaskRec] = {}
        self.wbusy = 0.0  # this window's, when sampled: folded in at its end
        self.wpolls = 0


class _TaskRec:
    __slots__ = (
        "busy",
        "group",
        "id",
        "label",
        "max_step",
        "name",
        "park_t",
        "polls",
        "prim",
        "since",
        "task",
        "wbusy",
        "wpolls",
    )

    def __init__(self, task: Task, tid: int, group: _Group) -> None:
        self.task = weakref.ref(task)
        self.id = tid
        self.name = task.name
        self.group = group
        self.busy = 0.0
        self.polls = 0.0  # steps (an estimate when sampled)
        self.max_step = 0.0
        self.label: str | None = None  # parked on, or None
        self.park_t = 0.0
        self.prim: Any = None
        self.since = 0.0
        self.wbusy = 0.0
        self.wpolls = 0


class _Accounting(trio.abc.Instrument):
    """Per-task and per-group sums, kept as the loop runs."""

    def __init__(self) -> None:
        self.tasks: dict[Task, _TaskRec] = {}
        self.groups: dict[str, _Group] = {}
        self.current: Task | None = None
        self.rec: _TaskRec | None = None
        self.exited: Task | None = None
        self.t0 = 0.0
        self.cache = WaitCache()
        self.started = _now()
        self.last_request = self.started
        #: (perf time, task id, task name, seconds) of steps over _SLOW_FLOOR
        self.slow: deque[tuple[float, int, str, float]] = deque(maxlen=64)
        #: id(primitive) -> (weak ref, ring of parked waits in seconds)
        self.waits: dict[int, tuple[Any, deque[float]]] = {}
        # delta state: row key -> (row, version it last changed)
        self.version = 0
        self.rows: dict[str, tuple[Any, int]] = {}
        self.gone: dict[str, int] = {}
        #: clients older than this version get a full frame
        self.gone_floor = 0
        self.installed = False
        #: id(primitive) -> (weak ref, when scanned, heaviest weight, oldest Waiting)
        self.waiter_scans: dict[int, tuple[Any, float, int, Any]] = {}
        #: id(a stage's input channel state) -> (weak ref to the state, weak ref
        #: to the stage): a send parked there is a wait credited to the stage.
        #: Refreshed by every frame from the registry.
        self.inboxes: dict[int, tuple[Any, Any]] = {}
        # -- sampling (see the module's docstring) --
        #: the step hooks are installed (a window, or the whole time when quiet)
        self.stepping = False
        #: the step hooks have been off at least once: the sums are estimates
        self.sampled = False
        #: the records and groups with steps in this window (when sampled)
        self.touched: list[_TaskRec] = []
        self.gtouched: list[_Group] = []
        self.steps = 0  # steps seen
        self.window_start = 0.0
        self.window_steps = 0
        self.off_since = 0.0
        self.off_gap = 0.0  # the hooks were off this long before the window
        #: the watchdog asked the loop to open a window, not yet opened
        self.window_pending = False
        self.windows = 0  # windows opened after the first
        #: the longest chunk of start_accounting_async's seeding, in seconds
        self.seed_longest = 0.0
        #: steps the watchdog saw block the loop: (end, the task, seconds at least)
        self.blocked: deque[tuple[float, Task, float]] = deque(maxlen=64)
        #: the records in the order frames refresh them (round-robin; those
        #: of exited tasks drop out as they come round)
        self.relabel_queue: deque[_TaskRec] = deque()
        #: the share of the last cycle the step hooks saw
        self.seen_share = 1.0
        self.duty = _Duty(self)
        self.watchdog: Any = None

    # -- hooks ---------------------------------------------------------------

    def before_task_step(self, task: Task) -> None:
        t0 = _now()
        rec = self.tasks.get(task)
        if rec is None:
            rec = self._meet(task)
        elif rec.label is not None:
            # Parked until now: the time parked ends at the step, not at the
            # wake-up (one hook fewer per step; it includes the wait for the
            # loop to get round to the task).
            self._unpark(rec, t0)
        self.current = task
        self.rec = rec
        self.t0 = t0

    def after_task_step(self, task: Task) -> None:
        t1 = _now()
        if task is not self.current:
            return
        self.current = None
        rec = self.rec
        assert rec is not None
        dt = t1 - self.t0
        g = rec.group
        if self.sampled:  # this window's sums, scaled to its cycle at its end
            if not rec.wpolls:
                self.touched.append(rec)
            rec.wbusy += dt
            rec.wpolls += 1
            if not g.wpolls:
                self.gtouched.append(g)
            g.wbusy += dt
            g.wpolls += 1
        else:
            rec.busy += dt
            rec.polls += 1
            g.busy += dt
            g.polls += 1
        self.steps += 1
        if dt > rec.max_step:
            rec.max_step = dt
            if dt > g.max_step:
                g.max_step = dt
                g.max_task = rec.id
        if dt >= _SLOW_FLOOR:
            self.slow.append((t1, rec.id, rec.name, dt))
        if task is self.exited:
            self.exited = None
            self._forget(task, rec)
        elif task._next_send_fn is None:  # pyright: ignore[reportPrivateUsage]
            self._park(task, rec, t1)
        if t1 - self.window_start >= WINDOW:
            self._window_end(t1)

    def task_exited(self, task: Task) -> None:
        self.exited = task

    # -- the duty cycle ----------------------------------------------------------

    def _window_end(self, t: float) -> None:
        span = t - self.window_start
        rate = (self.steps - self.window_steps) / span
        self.seen_share = span / (span + self.off_gap)
        self.window_start = t
        self.window_steps = self.steps
        if self.sampled:
            # Each step seen stands for the steps of its whole cycle: the
            # window and the time the hooks were off before it.
            factor = (span + self.off_gap) / span
            for x in self.touched:
                x.busy += x.wbusy * factor
                x.polls += x.wpolls * factor
                x.wbusy, x.wpolls = 0.0, 0
            for x in self.gtouched:
                x.busy += x.wbusy * factor
                x.polls += x.wpolls * factor
                x.wbusy, x.wpolls = 0.0, 0
            self.touched.clear()
            self.gtouched.clear()
        if rate < FULL_BELOW and not self.sampled:
            # a quiet loop: keep seeing every step (once sampled, it stays so)
            if t - self.last_request > IDLE_AFTER:
                stop_accounting(self)
            return
        self.stepping = False
        self.sampled = True
        self.off_since = t
        with contextlib.suppress(KeyError, RuntimeError):
            trio.lowlevel.remove_instrument(self)
        if self.watchdog is None:
            from ._topwatch import Watchdog

            self.watchdog = Watchdog(self, BEAT)

    def open_window(self) -> None:
        """Put the step hooks back for a window (the watchdog asks, through the
        trio token, once a :data:`PERIOD`); or stop, if nobody asked for a frame
        for :data:`IDLE_AFTER` seconds."""
        self.window_pending = False
        if not self.installed or self.stepping:
            return
        self.windows += 1
        t = _now()
        if t - self.last_request > IDLE_AFTER:
            stop_accounting(self)
            return
        self.off_gap = t - self.off_since
        self.window_start = t
        self.window_steps = self.steps
        self.stepping = True
        # Parks that ended while nobody looked end now, at the task's next
        # step (so time parked includes the steps not seen: a few percent).
        trio.lowlevel.add_instrument(self)

    def coverage(self, now: float) -> float:
        """The share of the last cycle with every step seen (1.0 when never sampled)."""
        return self.seen_share if self.sampled else 1.0

    # -- bookkeeping ------------------------------------------------------------

    def _meet(self, task: Task) -> _TaskRec:
        name = group_of(task.name)
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = _Group(name)
        rec = self.tasks[task] = _TaskRec(task, _task_record(task).id, g)
        self.relabel_queue.append(rec)
        g.n += 1
        g.tasks[rec.id] = rec
        return rec

    def _forget(self, task: Task, rec: _TaskRec) -> None:
        if rec.label is not None:
            self._unpark(rec, _now())
        del self.tasks[task]
        g = rec.group
        g.n -= 1
        del g.tasks[rec.id]
        if g.n == 0:
            del self.groups[g.name]

    def _park(self, task: Task, rec: _TaskRec, t: float, p: Any = None) -> None:
        if p is None:
            p = parked_on(task, self.cache)
        rec.label = p.label
        rec.park_t = t
        prim = p.primitive
        since = p.since
        if prim is None and self.inboxes:
            # Handing an item to a stage (its input channel is full, or has no
            # buffer and no worker is free): the stage's wait.
            csd: Any = task.custom_sleep_data
            if type(csd) is trio.MemorySendChannel:
                state: object = cast(Any, csd)._state
                hit = self.inboxes.get(id(state))
                if hit is not None and hit[0]() is state:
                    prim = hit[1]()
                    since = trio.current_time()
        rec.prim = prim
        rec.since = 0.0 if since is None else since
        g = rec.group
        g.parked += 1
        g.parked_sum += t
        g.labels[p.label] = g.labels.get(p.label, 0) + 1

    def _unpark(self, rec: _TaskRec, t: float) -> None:
        label = rec.label
        assert label is not None
        g = rec.group
        g.parked -= 1
        g.parked_sum -= rec.park_t
        g.parked_total += t - rec.park_t
        left = g.labels[label] - 1
        if left:
            g.labels[label] = left
        else:
            del g.labels[label]
        prim = rec.prim
        if prim is not None:
            self._wait_done(prim, trio.current_time() - rec.since)
            rec.prim = None
        rec.label = None

    def _wait_done(self, prim: object, seconds: float) -> None:
        hit = self.waits.get(id(prim))
        if hit is None or hit[0]() is not prim:
            try:
                ref: Any = weakref.ref(prim)
            except TypeError:
                return
            hit = self.waits[id(prim)] = (ref, deque(maxlen=_WAIT_RING))
        hit[1].append(seconds)

    def relabel(self, task: Task, rec: _TaskRec, t: float) -> None:
        """Bring a task's parked label up to date (it may have moved while the hooks were off)."""
        if task is trio.lowlevel.current_task():
            return
        parked = task._next_send_fn is None  # pyright: ignore[reportPrivateUsage]
        p = parked_on(task, self.cache) if parked else None
        if rec.label is not None:
            if p is not None and p.label == rec.label:
                return
            rec.prim = None  # its wait's length is unknown: no sample
            self._unpark(rec, t)
        if p is not None:
            self._park(task, rec, t, p)

    def refresh(self, t: float) -> None:
        """When sampled: the next :data:`RELABEL_PER_FRAME` tasks, round-robin, get
        their labels refreshed (O(that), not O(tasks))."""
        if not self.sampled:
            return
        queue = self.relabel_queue
        if len(queue) > 2 * len(self.tasks) + 1_000:  # many exits since: start afresh
            queue.clear()
            queue.extend(self.tasks.values())
        for _ in range(min(RELABEL_PER_FRAME, len(queue))):
            rec = queue.popleft()
            task = rec.task()
            if task is None or self.tasks.get(task) is not rec:
                continue  # exited: drops out
            queue.append(rec)
            self.relabel(task, rec, t)

    def resolve_blocked(self) -> None:
        """The watchdog's findings join the steps the hooks saw."""
        while self.blocked:
            end, task, seconds = self.blocked.popleft()
            self.slow.append((end, _task_record(task).id, task.name, seconds))

    @staticmethod
    def tree() -> list[Task]:
        """Every task but the root (a walk of the nurseries: about a µs a task)."""
        root = trio.lowlevel.current_root_task()
        assert root is not None  # we run inside trio.run
        out: list[Task] = []
        stack = [root]
        while stack:
            task = stack.pop()
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
            if task is not root:
                out.append(task)
        return out

    def seed_some(self, tasks: list[Task], current: Task, now: float) -> None:
        """Account for these tasks, which existed already (parked ones are parked now)."""
        for task in tasks:
            if task in self.tasks:
                continue  # met since, by a hook
            coro: Any = task.coro
            if getattr(coro, "cr_frame", None) is None and getattr(coro, "gi_frame", None) is None:
                continue  # finished since the walk
            rec = self._meet(task)
            if task is not current and task._next_send_fn is None:  # pyright: ignore[reportPrivateUsage]
                self._park(task, rec, now)

    def seed(self) -> None:
        """Account for every task that exists already, at once (see :func:`start_accounting_async`)."""
        now = _now()
        current = trio.lowlevel.current_task()
        self.seed_some(self.tree(), current, now)
        self.current = current
        self.rec = self.tasks[current]
        self.t0 = now
        self.window_start = now
        self.window_steps = 0


class _Duty(trio.abc.Instrument):
    """Always on while the accounting is, with no per-step or per-iteration
    hook: sees spawns and exits while the step hooks are off, and the end of
    the run."""

    def __init__(self, acct: _Accounting) -> None:
        self.acct = acct

    def task_spawned(self, task: Task) -> None:
        acct = self.acct
        if task not in acct.tasks:  # (a task spawned in a window may first step out of it)
            acct._meet(task)  # pyright: ignore[reportPrivateUsage]

    def task_exited(self, task: Task) -> None:
        acct = self.acct
        if not acct.stepping:
            rec = acct.tasks.get(task)
            if rec is not None:
                acct._forget(task, rec)  # pyright: ignore[reportPrivateUsage]

    def after_run(self) -> None:
        stop_accounting(self.acct)


_active: _Accounting | None = None


def start_accounting() -> _Accounting:
    """Install the accounting instrument (once per run); call inside ``trio.run``."""
    global _active
    acct = _active
    if acct is not None and acct.installed:
        return acct
    acct = _Accounting()
    acct.seed()
    trio.lowlevel.add_instrument(acct.duty)
    trio.lowlevel.add_instrument(acct)
    acct.stepping = True
    acct.installed = True
    _active = acct
    return acct


#: Tasks seeded between two checkpoints by :func:`start_accounting_async`.
SEED_CHUNK = 500


async def start_accounting_async() -> _Accounting:
    """Install the accounting (once per run), seeding it from the task tree
    :data:`SEED_CHUNK` tasks at a time with a checkpoint between, so the loop
    never pauses for the whole tree (a few ms per chunk; a 10,000-task tree in
    one go is a pause of 0.1–0.5 s). ``serve()`` calls it before each
    ``/debug/top`` answer.

    A checkpoint. If it is cancelled while seeding, the accounting is removed
    again. A frame asked for meanwhile (by another request) counts the tasks
    seeded so far.
    """
    global _active
    acct = _active
    if acct is not None and acct.installed:
        await trio.lowlevel.checkpoint()
        return acct
    acct = _Accounting()
    tasks = acct.tree()
    current = trio.lowlevel.current_task()
    acct.window_start = _now()
    trio.lowlevel.add_instrument(acct.duty)
    trio.lowlevel.add_instrument(acct)  # (this task's step ends unaccounted: it began before)
    acct.stepping = True
    acct.installed = True
    _active = acct
    try:
        for i in range(0, len(tasks), SEED_CHUNK):
            t0 = _now()
            acct.seed_some(tasks[i : i + SEED_CHUNK], current, t0)
            acct.seed_longest = max(acct.seed_longest, _now() - t0)
            await trio.lowlevel.checkpoint()
    except BaseException:
        stop_accounting(acct)
        raise
    return acct


def stop_accounting(acct: _Accounting) -> None:
    """Remove it (idempotent)."""
    global _active
    if acct.installed:
        acct.installed = False
        for instrument in (acct, acct.duty):
            with contextlib.suppress(KeyError, RuntimeError):  # the run is gone, or not stepping
                trio.lowlevel.remove_instrument(instrument)
        acct.stepping = False
        if acct.watchdog is not None:
            acct.watchdog.stop()
    if _active is acct:
        _active = None


# -- answering a request -----------------------------------------------------------


def _p99(samples: deque[float]) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def _qfloat(query: dict[str, list[str]], key: str, default: float) -> float:
    raw = query.get(key, [""])[0]
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None
    if not value >= 0:
        raise ValueError(f"{key} must be >= 0, got {raw!r}")
    return value


def respond(
    query: dict[str, list[str]],
    stuck: list[Lint] | None = None,
    stuck_age: float | None = None,
) -> bytes:
    """The JSON body for ``/debug/top`` (in the trio thread; not a checkpoint).

    ``stuck`` are the findings of the last reachability analysis (see
    :func:`stuck_lints`) and ``stuck_age`` how many seconds ago it ended
    (``None``: none has yet).

    Raises:
      ValueError: for a bad query parameter, naming it.
    """
    since = int(_qfloat(query, "since", 0))
    slow_ms = _qfloat(query, "slow_ms", 50.0)
    wait_s = _qfloat(query, "wait_s", 10.0)
    acct = start_accounting()
    acct.last_request = _now()
    if "task" in query:
        return json.dumps(_task_detail(query["task"][0])).encode()
    if "group" in query:
        return json.dumps(_group_detail(acct, query["group"][0])).encode()
    frame = _frame(acct, since, slow_ms / 1e3, wait_s, stuck or [])
    frame["stuck_age"] = None if stuck_age is None else round(stuck_age, 3)
    return json.dumps(frame).encode()


def stuck_lints(found: list[Stuck]) -> list[Lint]:
    """:func:`~trioflow.debug.find_stuck`'s findings as *stuck* lints (plain data: JSON-safe)."""
    out: list[Lint] = []
    for st in found:
        first = st.tasks[0]
        if st.kind == "cycle":
            names = ", ".join(f"{t.id} {t.name!r}" for t in st.tasks)
            subject = f"cycle of tasks {', '.join(str(t.id) for t in st.tasks)}"
            text = f"tasks {names} only each other could wake: " + "; ".join(
                f"task {t.id} {r}" for t, r in zip(st.tasks, st.reasons, strict=True)
            )
        else:
            subject = f"task {first.id}"
            text = f"task {first.id} {first.name!r} can never be woken: {st.reasons[0]}"
        out.append({"kind": "stuck", "subject": subject, "text": text, "task": first.id})
    return out


def _frame(
    acct: _Accounting, since: int, slow: float, wait: float, stuck: list[Lint]
) -> dict[str, Any]:
    acct.version += 1
    v = acct.version
    now = _now()
    rows = acct.rows
    acct.refresh(now)
    acct.resolve_blocked()
    current: dict[str, Any] = {}
    for g in acct.groups.values():
        label, count = max(g.labels.items(), key=lambda kv: kv[1]) if g.labels else ("", 0)
        # Parked time so far is parked_total + parked * time - parked_sum: the
        # client works it out, so a group whose tasks sit parked sends nothing.
        current["g:" + g.name] = [
            g.name,
            g.n,
            g.parked,
            round(g.polls),
            round(g.busy, 6),
            round(g.parked_total, 6),
            g.parked_sum,
            round(g.max_step, 6),
            g.max_task,
            label,
            count,
        ]
    gauges, lints = _resources(acct, wait)
    lints = stuck + lints
    for row in gauges:
        current["r:" + row[0]] = row
    # a client new, ahead of us (we restarted), or older than the removals we remember
    full = since <= 0 or since >= v or since < acct.gone_floor
    for key, row in current.items():
        old = rows.get(key)
        if old is None or old[0] != row:
            rows[key] = (row, v)
    for key in [k for k in rows if k not in current]:
        del rows[key]
        acct.gone[key] = v
    if len(acct.gone) > 10_000:  # forget old removals; older clients get a full frame
        for key in sorted(acct.gone, key=acct.gone.__getitem__)[:5_000]:
            acct.gone_floor = max(acct.gone_floor, acct.gone.pop(key))
    changed = [(k, row) for k, (row, rv) in rows.items() if full or rv > since]
    lints += _slow_lints(acct, now, slow)
    for check in lint_checks:
        try:
            lints += check()
        except Exception as exc:  # a broken plug-in must not break top
            lints.append(
                {
                    "kind": "error",
                    "subject": repr(check),
                    "text": f"lint check failed: {exc!r}",
                    "task": None,
                }
            )
    lints.sort(key=lambda lint: _LINT_ORDER.get(lint["kind"], len(_LINT_ORDER)))
    return {
        "schema": SCHEMA,
        "v": v,
        "full": bool(full),
        "time": now,
        "accounting_for": round(now - acct.started, 3),
        "coverage": round(acct.coverage(now), 4),
        "tasks": len(acct.tasks),
        "groups": [row for k, row in changed if k[0] == "g"],
        "resources": [row for k, row in changed if k[0] == "r"],
        "gone": []
        if full
        else [k[2:] for k, gv in acct.gone.items() if gv > since and k[0] == "g"],
        "gone_resources": []
        if full
        else [k[2:] for k, gv in acct.gone.items() if gv > since and k[0] == "r"],
        "lints": lints,
    }


def _resources(acct: _Accounting, wait: float) -> tuple[list[list[Any]], list[Lint]]:
    """Every primitive's row ``[label, kind, limit, in use, waiting, wait p99, waits]`` and its lints."""
    rows: list[list[Any]] = []
    lints: list[Lint] = []
    seen: set[str] = set()
    inboxes: dict[int, tuple[Any, Any]] = {}
    acct.inboxes = inboxes  # the stages of this frame (a run that ended is dropped)
    for prim in _registry.live():
        g = read_gauge(prim)
        if g is None:
            continue
        label = g.label
        if label in seen:  # two primitives of one name: tell them apart
            label = f"{label} <{id(prim):#x}>"
        seen.add(label)
        hit = acct.waits.get(id(prim))
        ring = hit[1] if hit is not None and hit[0]() is prim else deque[float]()
        p99 = _p99(ring)
        rows.append(
            [
                label,
                g.kind,
                g.limit,
                g.in_use,
                g.waiting,
                None if p99 is None else round(p99, 6),
                len(ring),
            ]
        )
        if g.kind == "stage":
            inbox = getattr(getattr(getattr(prim, "ports", None), "inbox", None), "_state", None)
            if inbox is not None:
                with contextlib.suppress(TypeError):
                    inboxes[id(inbox)] = (weakref.ref(inbox), weakref.ref(prim))
            lints += _stage_lint(acct, prim, label)
            continue
        if not g.waiting:
            continue
        lints += _waiter_lints(acct, prim, g.limit, label, wait)
    return rows, lints


#: Seconds between two scans of a primitive's waiters (a scan is O(waiters):
#: ~1 ms per 1,000 waiters, too much for every frame of a 10k-task service).
_WAITER_SCAN_EVERY = 5.0


def _waiter_lints(
    acct: _Accounting, prim: Any, limit: float | None, label: str, wait: float
) -> list[Lint]:
    """Never-fits and long-wait findings from one primitive's waiters (rescanned every 5 s)."""
    now = _now()
    cached = acct.waiter_scans.get(id(prim))
    if cached is not None and cached[0]() is prim and now - cached[1] < _WAITER_SCAN_EVERY:
        _, _, heaviest, oldest = cached
    else:
        try:
            waiters = prim._trioflow_waiters()
        except Exception:
            return []
        heaviest = 0
        oldest = None
        for w in waiters:
            if w.weight > heaviest:
                heaviest = w.weight
            if oldest is None or w.since < oldest.since:
                oldest = w
        with contextlib.suppress(TypeError):
            acct.waiter_scans[id(prim)] = (weakref.ref(prim), now, heaviest, oldest)
    out: list[Lint] = []
    if limit is not None and heaviest > limit:
        out.append(
            {
                "kind": "never fits",
                "subject": label,
                "text": f"{label}: a waiter asks for {heaviest} tokens of {limit:g}; it can never be admitted, and every waiter behind it waits too",
                "task": None,
            }
        )
    if oldest is not None and oldest.task.custom_sleep_data is oldest:  # still parked there
        waited = trio.current_time() - oldest.since
        if waited >= wait:
            tid = _task_record(oldest.task).id
            out.append(
                {
                    "kind": "long wait",
                    "subject": label,
                    "text": f"task {tid} {oldest.task.name!r} has waited on {label} for {waited:.1f}s",
                    "task": tid,
                }
            )
    return out


def _stage_lint(acct: _Accounting, prim: object, label: str) -> list[Lint]:
    roles = getattr(prim, "task_roles", None)
    if roles is None:
        return []
    try:
        tasks = list(roles())
    except Exception:
        return []
    if not tasks:
        return []
    now = _now()
    longest = None
    for task in tasks:
        rec = acct.tasks.get(task)
        if rec is not None and acct.sampled:
            acct.relabel(task, rec, now)  # the hooks may not have seen it park
        if rec is None or rec.label is None or not rec.label.startswith("channel send"):
            return []
        waited = now - rec.park_t
        longest = waited if longest is None else min(longest, waited)
    if longest is None or longest < 1.0:
        return []
    return [
        {
            "kind": "unread outputs",
            "subject": label,
            "text": f"{label}: all {len(tasks)} workers have been parked sending for {longest:.1f}s: nobody reads its outputs",
            "task": None,
        }
    ]


def _slow_lints(acct: _Accounting, now: float, slow: float) -> list[Lint]:
    out: list[Lint] = []
    worst: dict[int, tuple[float, int, str, float]] = {}
    for e in acct.slow:
        if e[3] >= slow and (e[1] not in worst or e[3] > worst[e[1]][3]):
            worst[e[1]] = e
    for t, tid, name, dt in sorted(worst.values(), key=lambda e: -e[3])[:10]:
        out.append(
            {
                "kind": "never yields",
                "subject": f"task {tid}",
                "text": f"task {tid} {name!r} ran {dt * 1e3:.0f} ms without a checkpoint ({now - t:.0f}s ago)",
                "task": tid,
            }
        )
    return out


def _group_detail(acct: _Accounting, name: str) -> dict[str, Any]:
    g = acct.groups.get(name)
    now = _now()
    rows: list[list[Any]] = []
    if g is not None:
        recs = sorted(g.tasks.values(), key=lambda r: -r.busy)[:200]
        for r in recs:
            rows.append(
                [
                    r.id,
                    r.name,
                    round(r.polls),
                    round(r.busy, 6),
                    round(r.max_step, 6),
                    r.label or "",
                    round(now - r.park_t, 3) if r.label is not None else None,
                ]
            )
    return {"schema": SCHEMA, "group": name, "tasks": rows, "count": 0 if g is None else g.n}


def _task_detail(raw: str) -> dict[str, Any]:
    try:
        tid = int(raw)
    except ValueError:
        raise ValueError(f"task must be a task id (an int), got {raw!r}") from None
    from ._dump import dump_tasks

    for info in dump_tasks(include_system=True).tasks:
        if info.id == tid:
            return {"schema": SCHEMA, "task": tid, "name": info.name, "text": info.format()}
    return {"schema": SCHEMA, "task": tid, "name": None, "text": f"task {tid} is gone\n"}
