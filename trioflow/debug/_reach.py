"""``find_stuck()``: tasks that nothing can ever wake, proved by reachability (Go 1.26 style).

Go 1.26's goroutine leak profile marks a blocked goroutine as leaked when
the object it waits on is not reachable from any goroutine that can still
run. This is the same analysis for a Trio program, as a least fixed point:

1. **Tasks that can run** start the set: running and runnable tasks, and
   every task parked on something the outside world can end — a sleep or
   any deadline of an enclosing cancel scope (a timer), I/O, a thread, a
   signal, a subprocess, ``wait_all_tasks_blocked``, a rate limiter (time
   refills it), a Redis-backed limit, or a wait this module does not know.
2. **What they can reach** is everything reachable from their coroutine
   frames through the garbage collector's graph (``gc.get_referents``),
   not entering modules, classes, code or other tasks.
3. **A parked task joins the set** when something that could wake it is
   there: its ``Event``, ``Condition`` or ``Semaphore`` is reachable; an
   open end of its channel on the other side is reachable; a holder of its
   lock or limiter can run (the ownership rule of :func:`find_deadlocks`:
   holders release what they took; a holder that is not a task, such as a
   ``to_thread`` placeholder, counts as able to run); one child of the
   nursery it waits for can run (it may finish, or fail and cancel the
   rest); a ``CancelScope`` around it is itself reachable (a stop handle
   someone could cancel) — a shielded scope ends that search. A *nursery*
   is not walked into: in a service every nursery is referred to by a live
   task (a listener holds its handlers' nursery, a task started with
   ``nursery.start()`` its own), and cancelling one ends its tasks without
   giving them what they wait for, so counting it would hide every hang in
   a live service. Its own references then count too. Repeat until nothing
   changes.
4. **Every parked task left out is stuck**: report it with the object it
   waits on and why nothing can wake it; tasks that could only be woken by
   each other are reported as a cycle.

Zero false positives is the rule: every doubt counts as "could wake"
(an unknown wait, an unknown holder, a reachable scope). Starvation is not
stuck: a lane that is merely slow has a holder that runs.

Not a checkpoint; runs no task code. Costs milliseconds for thousands of
tasks (the heap walk dominates); see ``docs/benchmarks/debug.md`` for 1k /
10k / 100k tasks.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import types
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from trio.lowlevel import Task

from .. import _registry
from ._dump import iter_frames, record, running_frames, task_info, trio_holders
from ._model import BlockedOn, TaskInfo, ring_report

__all__ = ["Stuck", "enclosing_scopes", "find_stuck", "find_stuck_except"]

#: waits the world outside the task tree can end
_EXTERNAL = frozenset(
    {
        "sleep",
        "I/O",
        "thread",
        "signal",
        "process",
        "wait_all_tasks_blocked",
        "unknown",
        "parking lot",
        "rate limiter",
        "rate_limiter",
        "redis limiter",
        "redis_limiter",
        "redis rate limiter",
        "redis_rate_limiter",
    }
)
_BY_REFERENCE = frozenset({"event", "condition", "semaphore"})
_TESTING_DIR = (
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testing") + os.sep
)
_SYSTEM_NAMES = frozenset({"<init>", "<TrioToken.run_sync_soon task>"})
_CHANNEL = frozenset({"channel receive", "channel send"})


def _nursery_managers() -> tuple[type, ...]:
    """trio's ``open_nursery()`` object (it holds the nursery's scope), if this trio has it."""
    from trio._core import _run  # pyright: ignore[reportPrivateUsage]

    t = getattr(_run, "NurseryManager", None)
    return (t,) if isinstance(t, type) else ()


_OPAQUE: tuple[type, ...] = (
    Task,
    # A nursery reaches its cancel scope: not a way to wake its tasks (see
    # the module's description). Nothing else in it could wake anything.
    trio.Nursery,
    *_nursery_managers(),
    types.ModuleType,
    type,
    types.CodeType,
    types.BuiltinFunctionType,
    str,
    bytes,
    int,
    float,
    bool,
    type(None),
)


@attrs.frozen
class Stuck:
    """Tasks that nothing can ever wake: one task, or a cycle of tasks that only each other could wake.

    ``tasks[i]`` waits on ``tasks[i].blocked_on``; ``reasons[i]`` says why
    nothing that can still run could wake it. For a cycle, ``tasks[i]``
    could only be woken by ``tasks[i + 1]`` (the last by the first).
    """

    kind: str
    """``"task"`` or ``"cycle"``."""
    tasks: list[TaskInfo]
    reasons: list[str]

    def format(self) -> str:
        """A report in the style of :meth:`Deadlock.format`."""
        n = len(self.tasks)
        if self.kind == "cycle":
            title = f"Found {n} tasks that only each other could wake (a cycle):"
        else:
            title = "Found one task that nothing can wake:"
        return ring_report(title, self.tasks, self.reasons)

    def __str__(self) -> str:
        return self.format()


def enclosing_scopes(task: Task) -> list[trio.CancelScope]:
    """The cancel scopes that can cancel ``task``, innermost first, up to the first shield."""
    out: list[trio.CancelScope] = []
    status: Any = getattr(task, "_cancel_status", None)
    while status is not None:
        scope: Any = getattr(status, "_scope", None)
        if scope is None:
            break
        out.append(scope)
        if scope.shield:
            break
        status = getattr(status, "_parent", None)
    return out


class _Reach:
    """Objects reachable from a set of tasks (ids), grown one task at a time."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        modules: list[Any] = list(sys.modules.values())  # may hold None placeholders
        skip = {id(m.__dict__) for m in modules if m is not None}
        self.skip = skip
        #: keeps every reached object alive while its id is in ``seen``
        self._hold: list[object] = []
        self.opaque: tuple[type, ...] = _OPAQUE

    def opaque_for(self, task: Task) -> None:
        """trio's tree of cancel states links every scope of the run: never walk into it."""
        status = getattr(task, "_cancel_status", None)
        if status is not None and type(status) not in self.opaque:
            self.opaque = (*self.opaque, type(status))

    def add_task(self, task: Task, running: bool = False) -> None:
        start: list[object] = []
        frames = running_frames(task) if running else None
        if frames is not None:  # a running chain has no cr_await links: read the thread's stack
            for f in frames:
                # not trioflow.testing's own frames: the plugin's timeout holds
                # the test's cancel scope, which would make every task cancellable
                if not f.f_code.co_filename.startswith(_TESTING_DIR):
                    start.extend(f.f_locals.values())
        for f, owner in iter_frames(task):
            start.append(owner)
            start.extend(f.f_locals.values())
        self.walk(start)

    def walk(self, start: Iterable[object]) -> None:
        seen, skip, hold = self.seen, self.skip, self._hold
        opaque = frozenset(self.opaque)
        frame_type = types.FrameType
        get = gc.get_referents
        stack = list(start)
        while stack:
            o = stack.pop()
            i = id(o)
            if i in seen or i in skip:
                continue
            seen.add(i)
            hold.append(o)
            t = type(o)
            if t in opaque or isinstance(o, type):
                continue
            if t is frame_type:
                # Its variables only: not f_back (the running task's caller is
                # trio's run loop, which refers to every task) nor its globals.
                stack.extend(o.f_locals.values())  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownArgumentType]
                continue
            stack.extend(get(o))

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self.seen


def _all_tasks() -> list[Task]:
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        root = None
    if root is None:
        raise RuntimeError("find_stuck() must be called from inside trio.run, in its thread")
    out: list[Task] = []
    stack = [root]
    while stack:
        t = stack.pop()
        out.append(t)
        for n in t.child_nurseries:
            stack.extend(n.child_tasks)
    return out


def _channel_ends(obj: object, kind: str) -> tuple[list[object], int]:
    """The open ends on the other side of the channel ``obj`` a task waits on, and trio's count."""
    state: Any = getattr(obj, "_state", None)
    if state is None:
        return [], 0
    if kind == "channel receive":
        other, counter = "MemorySendChannel", "open_send_channels"
    else:
        other, counter = "MemoryReceiveChannel", "open_receive_channels"
    ends = [
        r
        for r in gc.get_referrers(state)
        if type(r).__name__ == other and not getattr(r, "_closed", True)
    ]
    return ends, int(getattr(state, counter, 0))


class _Analysis:
    def __init__(self) -> None:
        self.tasks = _all_tasks()
        try:
            current: Task | None = trio.lowlevel.current_task()
        except RuntimeError:
            current = None
        self.current = current
        now = trio.current_time()
        objs: dict[int, tuple[BlockedOn, object]] = {}
        self.info: dict[Task, TaskInfo] = {}
        for t in self.tasks:
            parent = t.parent_nursery
            pt = None if parent is None else parent.parent_task
            pid = None if pt is None else record(pt).id
            self.info[t] = task_info(t, record(t), pid, 0, current, now, False, objs)
        self.live: set[Task] = set()
        self._ends: dict[tuple[int, str], tuple[list[object], int]] = {}
        self.reach = _Reach()
        self.reach.opaque_for(self.tasks[0])
        # task groups by the limiter that bounds them (their tasks hold its tokens)
        self.groups_of: dict[int, list[Any]] = {}
        for g in _registry.live():
            if g.kind in ("task_group", "task group"):
                lim = getattr(g, "limiter", None)
                if lim is not None:
                    self.groups_of.setdefault(id(lim), []).append(g)

    # -- the fixed point -------------------------------------------------------

    def run(self) -> list[Task]:
        parked: list[Task] = []
        for t in self.tasks:
            if self._starts_live(t):
                self._make_live(t)
            else:
                parked.append(t)
        changed = True
        while changed and parked:
            changed = False
            rest: list[Task] = []
            for t in parked:
                if self._why_not(t) is None:
                    self._make_live(t)
                    changed = True
                else:
                    rest.append(t)
            parked = rest
        return parked

    def channel_ends(self, obj: object, kind: str) -> tuple[list[object], int]:
        """:func:`_channel_ends`, once per channel per analysis (it scans the heap)."""
        key = (id(getattr(obj, "_state", obj)), kind)
        found = self._ends.get(key)
        if found is None:
            found = self._ends[key] = _channel_ends(obj, kind)
        return found

    def _make_live(self, t: Task) -> None:
        self.live.add(t)
        self.reach.add_task(t, running=t is self.current)

    def _starts_live(self, t: Task) -> bool:
        info = self.info[t]
        if info.state != "blocked":
            return True
        b = info.blocked_on
        if b is None or b.kind in _EXTERNAL:
            return True
        # a deadline anywhere that can still cancel it is a timer
        return any(s.deadline != math.inf for s in enclosing_scopes(t))

    def _why_not(self, t: Task) -> str | None:
        """``None`` if something that can run could wake ``t``; else the reason nothing can."""
        for s in enclosing_scopes(t):
            if s in self.reach:
                return None
        b = self.info[t].blocked_on
        assert b is not None
        kind, obj = b.kind, b.obj
        if kind == "nursery":
            kids = [c for n in t.child_nurseries for c in n.child_tasks]
            if not kids or any(c in self.live for c in kids):
                # a child that can run may also fail, and its failure cancels the
                # rest: a service's nursery with one stuck handler is not stuck
                return None
            stuck = kids
            names = ", ".join(f'task {self.info[c].id} "{self.info[c].name}"' for c in stuck[:5])
            return (
                f"its nursery can only close when its children exit, and these never will: {names}"
            )
        if obj is None:
            return None  # nothing known to reason about: assume it can be woken
        if kind in _BY_REFERENCE:
            if obj in self.reach:
                return None
            verb = {"event": "set()", "condition": "notify()", "semaphore": "release()"}[kind]
            return f"no task that can still run refers to it, so none can ever {verb} it"
        if kind in _CHANNEL:
            ends, count = self.channel_ends(obj, kind)
            if any(e in self.reach for e in ends):
                return None
            side = "send" if kind == "channel receive" else "receive"
            if not ends:
                return (
                    f"every {side} end was dropped without being closed (trio still counts "
                    f"{count} open), so nothing can ever {side} on it"
                )
            return (
                f"its {len(ends)} open {side} end(s) are referred to only by tasks that are "
                f"stuck themselves, so nothing can ever {side} on it"
            )
        holders = self._holders(obj)
        if holders is None:
            return None  # no holder records: assume someone may release
        if not holders:
            if obj in self.reach:
                return None  # a live task could resize it or release on someone's behalf
            return "nobody holds it and no task that can still run refers to it, so it can never admit this waiter"
        for h in holders:
            if not isinstance(h, Task) or h in self.live:
                return None
        names = ", ".join(
            f'task {self.info[h].id} "{self.info[h].name}"'
            if h in self.info
            else "a task that has exited"
            for h in holders
            if isinstance(h, Task)
        )
        return f"held by {names}, which can never release it"

    def _holders(self, obj: object) -> list[object] | None:
        fn = getattr(obj, "_trioflow_holders", None)
        if fn is None:
            h = trio_holders(obj)
            if h:
                return h
            if getattr(obj, "_owner", False) is None or hasattr(obj, "_borrowers"):
                return []  # a trio Lock / CapacityLimiter nobody holds
            return None
        out: list[object] = []
        for holding in fn():
            b = holding.borrower
            if isinstance(b, Task):
                out.append(b)
                continue
            groups = self.groups_of.get(id(obj))
            if groups and type(b).__module__ == "trioflow._tasks._group":
                # a task group's slot: held by the group's running tasks
                for g in groups:
                    out.extend(h.borrower for h in g._trioflow_holders())  # pyright: ignore[reportPrivateUsage]
                continue
            return [b]  # an unknown borrower: it may release at any time
        return out

    # -- the report ------------------------------------------------------------

    def wakers(self, t: Task, stuck: set[Task]) -> list[Task]:
        """Stuck tasks that could have woken ``t`` if they could run (the cycle edges)."""
        b = self.info[t].blocked_on
        assert b is not None
        if b.kind == "nursery":
            return [c for n in t.child_nurseries for c in n.child_tasks if c in stuck]
        obj = b.obj
        if obj is None:
            return []
        holders = None if b.kind in _BY_REFERENCE or b.kind in _CHANNEL else self._holders(obj)
        if holders:
            return [h for h in holders if isinstance(h, Task) and h in stuck]
        targets: list[object] = [obj]
        if b.kind in _CHANNEL:
            targets = list(self.channel_ends(obj, b.kind)[0])
        out: list[Task] = []
        for u in stuck:
            if u is t:
                continue
            r = _Reach()
            r.opaque = self.reach.opaque
            r.add_task(u)
            if any(x in r for x in targets):
                out.append(u)
        return out


def find_stuck() -> list[Stuck]:
    """Parked tasks that nothing able to run could ever wake, with the reason for each.

    See the module's description for the rules. A cycle (two tasks each
    sending into the other's full channel; a parent waiting for a child
    that waits on an event only the parent would set) is one
    :class:`Stuck` of kind ``"cycle"``, in ring order; other stuck tasks
    are one :class:`Stuck` each. ``str()`` gives a report in the style of
    :meth:`Deadlock.format`.

    Call it inside ``trio.run`` (a task, or a ``run_sync_soon`` callback);
    not a checkpoint; runs no task code. The calling task counts as able to
    run, so what it refers to counts as reachable.

    Raises:
      RuntimeError: outside ``trio.run``.
    """
    return find_stuck_except(())


def find_stuck_except(ignore: Iterable[object]) -> list[Stuck]:
    """:func:`find_stuck`, not counting references to the ``ignore`` objects
    (the pytest plugin's own cancel scope, which it will use on timeout)."""
    was = gc.isenabled()
    gc.disable()
    try:
        a = _Analysis()
        a.reach.skip.update(id(o) for o in ignore)
        stuck_tasks = a.run()
        return _report(a, stuck_tasks)
    finally:
        if was:
            gc.enable()


def _report(a: _Analysis, stuck_tasks: list[Task]) -> list[Stuck]:
    from ._deadlock import _cycle, _sccs  # pyright: ignore[reportPrivateUsage]

    # trio's own <init> and run_sync_soon tasks are plumbing, never reported
    stuck_tasks = [t for t in stuck_tasks if t.name not in _SYSTEM_NAMES]
    if not stuck_tasks:
        return []
    stuck = set(stuck_tasks)
    reasons = {t: a._why_not(t) or "?" for t in stuck_tasks}  # pyright: ignore[reportPrivateUsage]
    ids = {t: a.info[t].id for t in stuck_tasks}
    by_id = {v: k for k, v in ids.items()}
    edges: dict[int, list[int]] = {}
    if len(stuck_tasks) <= 200:  # per-task heap walks: only for a readable number
        for t in stuck_tasks:
            edges[ids[t]] = sorted(ids[u] for u in a.wakers(t, stuck))
    else:
        edges = {ids[t]: [] for t in stuck_tasks}
    out: list[Stuck] = []
    in_cycle: set[int] = set()
    for comp in _sccs(set(edges), edges):
        # Start the ring at a task that waits on an object rather than on its
        # nursery, so "a sends to b, b sends to a" is the ring, not a parent.
        objects = [i for i in comp if _waits_on_object(a.info[by_id[i]])]
        start = min(objects or comp)
        if len(comp) == 1 and start not in edges[start]:
            continue
        only = set(objects)
        ring = [start]
        if start in only:
            ring = _cycle(start, only, {i: [j for j in edges[i] if j in only] for i in only})
        if len(ring) == 1 and start not in edges[start]:
            ring = _cycle(start, comp, edges)
        in_cycle.update(ring)
        tasks = [by_id[i] for i in ring]
        out.append(
            Stuck(
                "cycle",
                [a.info[t] for t in tasks],
                [
                    _cycle_reason(a, reasons[t], tasks[(k + 1) % len(tasks)])
                    for k, t in enumerate(tasks)
                ],
            )
        )
    for t in sorted(stuck_tasks, key=lambda t: ids[t]):
        if ids[t] not in in_cycle:
            out.append(Stuck("task", [a.info[t]], [reasons[t]]))
    return out


def _waits_on_object(info: TaskInfo) -> bool:
    b = info.blocked_on
    return b is not None and b.kind != "nursery"


def _cycle_reason(a: _Analysis, reason: str, nxt: Task) -> str:
    n = a.info[nxt]
    return f'{reason}; only task {n.id} "{n.name}" could wake it, and it is waiting too'
