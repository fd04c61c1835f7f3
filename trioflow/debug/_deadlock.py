"""Deadlocks (cycles in the wait-for graph, and "all tasks are asleep") and leaks.

The wait-for graph has an edge from each parked task to every task holding
the primitive it waits on. Only primitives with known holders contribute
edges: every trioflow primitive (through the registry), and trio's ``Lock``,
``StrictFIFOLock`` and ``CapacityLimiter``. Semaphores, events, conditions and
channels have no owner, so, as in jstack, they never appear in a cycle.

A task is reported only if it can provably never run again *by the
ownership rules*: it is parked, every holder of what it waits on is a live
task that is itself deadlocked, and nothing else holds it (a ``to_thread``
placeholder or an unknown borrower could release at any time). That is the
largest "closed" set of the graph; cycles in it are reported, in cycle
order. (Anyone may call ``release_on_behalf_of`` or resize a limiter; the
report assumes the holders release their own tokens, as ``async with`` does.)
"""

from __future__ import annotations

import gc
import signal
import threading
import types
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from trio.lowlevel import Task

from ._dump import dump_tasks
from ._model import BlockedOn, ResourceInfo, TaskDump, TaskInfo, ring_report

__all__ = ["Deadlock", "Leak", "all_tasks_asleep", "find_deadlocks", "find_leaks"]


@attrs.frozen
class Deadlock:
    """Tasks that wait on each other in a ring: none can ever go on.

    ``tasks[i]`` waits on ``resources[i]``, which ``tasks[i + 1]`` holds (the
    last task waits on what the first holds). For the global case
    (``kind == "all asleep"``) ``tasks`` is every task and ``resources`` what
    each one waits on.
    """

    kind: str
    """``"cycle"`` or ``"all asleep"``."""
    tasks: list[TaskInfo]
    resources: list[BlockedOn | None]
    dump: TaskDump = attrs.field(repr=False)

    def format(self) -> str:
        """A report in the style of jstack's "Found one Java-level deadlock"."""
        if self.kind == "all asleep":
            return (
                "trioflow: all tasks are asleep - deadlock!\n"
                "(no task is runnable, no deadline is pending, no I/O, thread or "
                "signal is awaited: nothing can ever wake any task)\n\n" + self.dump.format()
            )
        n = len(self.tasks)
        title = f"Found one deadlock ({n} task{'s' if n != 1 else ''}):"
        held = [
            f'which is held by task {nxt.id} "{nxt.name}"'
            for nxt in (self.tasks[(i + 1) % n] for i in range(n))
        ]
        return ring_report(title, self.tasks, held)

    def __str__(self) -> str:
        return self.format()


def _groups(resources: Iterable[ResourceInfo]) -> dict[int, list[ResourceInfo]]:
    """Faces of one kernel (the lanes of a PriorityLimiter) share their holders."""
    out: dict[int, list[ResourceInfo]] = {}
    for r in resources:
        key = id(getattr(r.obj, "_trioflow_pool", r.obj))
        out.setdefault(key, []).append(r)
    return out


def find_deadlocks(dump: TaskDump | None = None) -> list[Deadlock]:
    """Cycles of tasks that wait on each other through primitives with holders.

    Reads ``dump`` (or takes one with :func:`dump_tasks`); not a checkpoint.
    Each :class:`Deadlock` lists its tasks and resources in cycle order and
    ``str()`` gives a jstack-style report with the stacks.

    Tasks waiting *behind* a deadlock (on a primitive held by a deadlocked
    task, without being in a ring themselves) are not reported as deadlocks;
    they show in the dump as waiting on it.

    The global "all tasks are asleep" case cannot be seen by a running task
    (the caller is awake); :func:`trioflow.debug.install` detects it from
    the run loop and reports it.
    """
    if dump is None:
        dump = dump_tasks()
    by_id = dump.by_id()
    obj_group: dict[int, int] = {}
    group_holders: dict[int, list[int]] = {}
    group_other: dict[int, int] = {}
    for key, members in _groups(dump.resources).items():
        holders: list[int] = []
        other = 0
        for r in members:
            obj_group[id(r.obj)] = key
            holders.extend(r.holders)
            other += r.other_holders
        group_holders[key] = holders
        group_other[key] = other

    edges: dict[int, list[int]] = {}
    for t in dump.tasks:
        b = t.blocked_on
        if t.state != "blocked" or b is None or b.obj is None:
            continue
        key = obj_group.get(id(b.obj))
        if key is None or group_other[key] or not group_holders[key]:
            continue
        edges[t.id] = group_holders[key]

    # Largest closed set: drop any task with an edge leaving the set.
    alive = set(edges)
    changed = True
    while changed:
        changed = False
        for tid in list(alive):
            if any(h not in alive for h in edges[tid]):
                alive.discard(tid)
                changed = True

    out: list[Deadlock] = []
    for comp in _sccs(alive, edges):
        start = min(comp)
        if len(comp) == 1 and start not in edges[start]:
            continue
        ring = _cycle(start, comp, edges)
        tasks = [by_id[i] for i in ring]
        out.append(Deadlock("cycle", tasks, [t.blocked_on for t in tasks], dump))
    return out


def _sccs(nodes: set[int], edges: dict[int, list[int]]) -> list[set[int]]:
    """Strongly connected components (iterative Tarjan), in a stable order."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on: set[int] = set()
    st: list[int] = []
    out: list[set[int]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                st.append(v)
                on.add(v)
            succ = [w for w in edges[v] if w in nodes]
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp: set[int] = set()
                while True:
                    w = st.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _cycle(start: int, comp: set[int], edges: dict[int, list[int]]) -> list[int]:
    """A shortest ring through ``start`` inside one component (BFS)."""
    prev: dict[int, int] = {}
    frontier = [start]
    while frontier:
        nxt: list[int] = []
        for v in frontier:
            for w in edges[v]:
                if w not in comp:
                    continue
                if w == start:
                    ring = [v]
                    while ring[-1] != start:
                        ring.append(prev[ring[-1]])
                    ring.reverse()
                    return ring
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]  # unreachable for a real component


# -- the global case ------------------------------------------------------------

#: Waits that something outside the task tree can end.
_WAKEABLE = frozenset({"sleep", "I/O", "thread", "wait_all_tasks_blocked", "signal", "process"})


def loop_may_sleep(timeout: float) -> bool:
    """For ``before_io_wait``: could this iteration be one where every task sleeps?

    A zero timeout usually means tasks are runnable (the cheap way out on the
    hot path), except under a clock that autojumps, which asks for a zero
    timeout whenever it is idle.
    """
    if timeout != 0:
        return True
    clock = trio.lowlevel.current_clock()
    return getattr(clock, "autojump_threshold", float("inf")) != float("inf")


def all_tasks_asleep() -> Deadlock | None:
    """From the run loop, just before it would sleep: is every task stuck for good?

    Zero false positives is the rule, so every doubt says "no": a runnable
    task, a pending deadline, a queued ``run_sync_soon`` callback, any I/O
    waiter besides trio's own wake-up socket, any task in ``to_thread``,
    ``sleep``, a signal receiver or a subprocess wait, any other live
    Python thread (it might call in with ``trio.from_thread``), an I/O
    backend other than epoll, or guest mode. Meant to be called from an
    instrument's ``before_io_wait``.
    """
    stats = trio.lowlevel.current_statistics()
    if stats.tasks_runnable or stats.run_sync_soon_queue_size:
        return None
    if stats.seconds_to_next_deadline != float("inf"):
        return None
    io: Any = stats.io_statistics
    if getattr(io, "backend", None) != "epoll":
        return None
    # trio's run_sync_soon task waits to read its wake-up socket: that one only.
    if io.tasks_waiting_read != 1 or io.tasks_waiting_write != 0:
        return None
    if _other_threads() or _signal_handlers():
        return None
    dump = dump_tasks(include_system=True)
    tasks: list[TaskInfo] = []
    for t in dump.tasks:
        if t.state != "blocked":
            return None
        b = t.blocked_on
        if b is None or b.kind in _WAKEABLE:
            if t.name == "<TrioToken.run_sync_soon task>" and b is not None and b.kind == "I/O":
                continue
            return None
        if b.kind == "unknown":
            return None
        if t.name == "<init>":
            continue
        tasks.append(t)
    if not tasks:
        return None
    visible = dump_tasks()
    return Deadlock(
        "all asleep",
        [t for t in visible.tasks],
        [t.blocked_on for t in visible.tasks],
        visible,
    )


#: ids of signal handlers installed by trioflow.debug.install() (dumps only: they wake nobody)
own_handlers: set[int] = set()


def _signal_handlers() -> bool:
    """Is a Python signal handler installed that might wake a task (other than SIGINT's)?"""
    for sig in signal.valid_signals():
        if sig == signal.SIGINT:
            continue  # Ctrl-C can end any program; Go ignores it too
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):  # pragma: no cover - platform quirks
            continue
        if callable(handler) and id(handler) not in own_handlers:
            return True
    return False


def _other_threads() -> bool:
    """Is any thread alive that might wake the loop (not ours, not an idle trio worker)?"""
    me = threading.current_thread()
    for th in threading.enumerate():
        if th is me or getattr(th, "_trioflow_watchdog", False):
            continue
        if th.name.startswith("Trio thread"):
            continue  # trio's thread cache; a busy one has a task waiting in to_thread
        return True
    return False


# -- leaks --------------------------------------------------------------------


@attrs.frozen
class Leak:
    """A task that waits for something that can never come, or a token no code will give back."""

    kind: str
    """``"channel"`` (every other end was garbage-collected without being
    closed) or ``"held"`` (a holding survives outside any frame of its task)."""
    task: TaskInfo | None
    """The stuck waiter (``"channel"``), or the task credited with the holding."""
    resource: str
    detail: str

    def format(self) -> str:
        who = "" if self.task is None else f'task {self.task.id} "{self.task.name}": '
        return f"leak: {who}{self.resource}: {self.detail}"

    def __str__(self) -> str:
        return self.format()


def find_leaks(dump: TaskDump | None = None, *, collect: bool = True) -> list[Leak]:
    """Waits that can never end and holdings that nothing will release, proved from the heap.

    * A task receiving on a memory channel whose every send end was
      garbage-collected without ``close()`` (so trio still counts it open):
      no object can ever send, the receiver waits forever. Likewise a sender
      whose every receive end was dropped.
    * A primitive held by a task none of whose frames refers to it (the
      ``async with`` that took it was left, e.g. by a suspended async
      generator), or held by a task that has exited. When a suspended async
      generator holds it, the generator's location is named.

    Not a checkpoint. Scans the heap (``gc``), so it costs milliseconds:
    fine for a debugging endpoint or a test, not for a hot loop.

    Args:
      dump: a dump to examine (taken now if ``None``).
      collect: run ``gc.collect()`` first so unreachable channel ends in
        reference cycles are really gone.
    """
    if collect:
        gc.collect()
    if dump is None:
        dump = dump_tasks()
    out: list[Leak] = []
    by_id = dump.by_id()

    # Channels.
    for t in dump.tasks:
        b = t.blocked_on
        if b is None or b.kind not in ("channel receive", "channel send"):
            continue
        state: Any = getattr(b.obj, "_state", None)
        if state is None:
            continue
        if b.kind == "channel receive":
            other, counter, word = "MemorySendChannel", "open_send_channels", "send"
        else:
            other, counter, word = "MemoryReceiveChannel", "open_receive_channels", "receive"
        if not getattr(state, counter, 0):
            continue  # closed properly: the waiter gets EndOfChannel/BrokenResourceError
        live_ends = [
            r
            for r in gc.get_referrers(state)
            if type(r).__name__ == other and not getattr(r, "_closed", True)
        ]
        if not live_ends:
            n = getattr(state, counter)
            out.append(
                Leak(
                    "channel",
                    t,
                    b.describe(),
                    f"every {word} end was garbage-collected without being closed "
                    f"(trio still counts {n} open, no {other} refers to the channel)",
                )
            )

    # Holdings that outlived their block.
    suspects: list[tuple[ResourceInfo, TaskInfo | None]] = []
    live_tasks = _live_tasks_by_id(dump)
    for r in dump.resources:
        if r.other_holders and _exited_task_holders(r.obj, live_tasks):
            suspects.append((r, None))
        for hid in r.holders:
            suspects.append((r, by_id[hid]))
    if suspects:
        gens = _suspended_async_gens()
        for r, holder in suspects:
            task = None if holder is None else live_tasks.get(holder.id)
            if (
                task is not None
                and not _is_running(task)
                and any(_in_block(o, r.obj) for o in _owners(task))
            ):
                continue  # inside its async with: the normal case
            where = _held_in_generator(r.obj, gens)
            if where:
                detail = (
                    "held by a suspended async generator, outside any frame of the "
                    f"holding task: {where}"
                )
            elif holder is None:
                detail = "held by a task that has exited"
            elif task is not None and _task_holds_in_block(task, r.obj):
                continue  # acquired by hand, still referenced: assume it will release
            else:
                detail = "held, but no frame of the holding task is inside a block that took it"
            out.append(Leak("held", holder, r.describe(), detail))
    return out


def _live_tasks_by_id(dump: TaskDump) -> dict[int, Task]:
    from ._dump import live_records

    wanted = {t.id for t in dump.tasks}
    return {i: t for i, t in live_records().items() if i in wanted}


def _exited_task_holders(obj: object, live: dict[int, Task]) -> bool:
    from ._dump import trio_holders

    borrowers: list[object] = trio_holders(obj)
    holders_fn = getattr(obj, "_trioflow_holders", None)
    if holders_fn is not None:
        borrowers = [h.borrower for h in holders_fn()]
    alive = set(map(id, live.values()))
    return any(isinstance(b, Task) and id(b) not in alive for b in borrowers)


def _in_block(container: object, obj: object) -> bool:
    """Is ``container`` (a coroutine or generator) inside an ``async with`` on ``obj``?

    An active ``async with`` keeps the bound ``__aexit__`` on the frame's
    value stack, which the gc shows among the container's referents:
    ``obj.__aexit__`` itself, or that of a context object (``obj.hold()``)
    one of whose fields is ``obj``.
    """
    for r in gc.get_referents(container):
        if type(r) is not types.MethodType or r.__func__.__name__ != "__aexit__":
            continue
        cm: Any = r.__self__
        if cm is obj or _field_is(cm, obj):
            return True
    return False


def _field_is(inner: object, obj: object) -> bool:
    d = getattr(inner, "__dict__", None)
    if isinstance(d, dict) and any(v is obj for v in d.values()):  # pyright: ignore[reportUnknownVariableType]
        return True
    for klass in type(inner).__mro__:
        for slot in klass.__dict__.get("__slots__", ()):
            if isinstance(slot, str) and getattr(inner, slot, None) is obj:
                return True
    return False


def _refers(container: object, obj: object) -> bool:
    """Does ``container`` refer to ``obj`` directly or through one object (``self.limiter``)?"""
    for r in gc.get_referents(container):
        if r is obj or getattr(r, "__self__", None) is obj or _field_is(r, obj):
            return True
    return False


def _is_running(task: Task) -> bool:
    try:
        return trio.lowlevel.current_task() is task
    except RuntimeError:
        return False


def _owners(task: Task) -> list[object]:
    """The coroutines/generators of a suspended ``task``'s stack, outermost first."""
    from ._dump import iter_frames

    return [owner for _f, owner in iter_frames(task)]


def _task_holds_in_block(task: Task, obj: object) -> bool:
    """Does some frame of ``task`` still have ``obj`` in hand?"""
    if _is_running(task):
        # An executing frame's value stack (where ``async with`` keeps
        # ``__aexit__``) is invisible to the gc: look at its locals instead.
        from ._dump import running_frames

        frames = running_frames(task) or []
        return any(v is obj or _field_is(v, obj) for f in frames for v in f.f_locals.values())
    owners = _owners(task)
    if any(_in_block(o, obj) for o in owners) or any(_refers(o, obj) for o in owners):
        return True
    return _in_globals(task, obj)


def _in_globals(task: Task, obj: object) -> bool:
    """Does a module global of some frame of ``task`` hold ``obj`` (``API = Limiter()``)?

    Such a holding is deliberate and reachable: the task's code can release it.
    """
    from ._dump import iter_frames

    seen: set[int] = set()
    for f, _owner in iter_frames(task):
        g = f.f_globals
        if id(g) in seen:
            continue
        seen.add(id(g))
        if any(v is obj for v in g.values()):
            return True
    return False


def _suspended_async_gens() -> list[types.AsyncGeneratorType[Any, Any]]:
    return [
        o
        for o in gc.get_objects()
        if type(o) is types.AsyncGeneratorType and o.ag_frame is not None and not o.ag_running
    ]


def _held_in_generator(obj: object, gens: list[types.AsyncGeneratorType[Any, Any]]) -> str:
    for g in gens:
        if _in_block(g, obj):
            f = g.ag_frame
            where = "" if f is None else f" at {f.f_code.co_filename}:{f.f_lineno}"
            return f"{g.__qualname__}{where}"
    return ""
