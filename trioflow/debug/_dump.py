"""``dump_tasks()``: walk trio's task tree and say what every task waits on.

How it stays fast (10,000 tasks in well under 100 ms, see ``bench/dump.py``):

* it walks trio's own introspection API (``Task.child_nurseries``,
  ``child_tasks``, each task's coroutine chain) and runs no task code;
* everything derived from a code object (file name, qualified name, whether
  the frame is trio plumbing to hide, whether it identifies a wait) is
  computed once per code object and cached; a :class:`FrameInfo` is cached
  per (code, line), so ten thousand tasks parked on the same line share one;
* what a task waits on is found in O(1) for trioflow primitives (the
  :class:`~trioflow._registry.Waiting` record the kernel leaves in
  ``task.custom_sleep_data``) and from the innermost known frame for trio's
  own (``_LockImpl.acquire``'s ``self`` is the lock), resolved once per
  primitive per dump.

Nothing here is on any hot path: primitives pay nothing for being dumpable
beyond the stamps they already keep.
"""

from __future__ import annotations

import contextvars
import gc
import itertools
import math
import os
import sys
import time
import types
import weakref
from collections.abc import Iterator
from typing import Any

import trio
from trio.lowlevel import Task
from trio.lowlevel import current_task as _current_task

from .. import _registry
from ._model import BlockedOn, CreatedBy, FrameInfo, ResourceInfo, TaskDump, TaskInfo

__all__ = ["describe_tasks", "dump_tasks", "task_id", "task_info"]

_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep
_HERE_DIR = os.path.dirname(__file__) + os.sep
_TRIOFLOW_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep

# -- stable task ids ---------------------------------------------------------


class _Record:
    """What trioflow remembers about one task while it lives."""

    __slots__ = ("id", "ref")

    def __init__(self, task: Task, tid: int) -> None:
        self.id = tid
        # No callback: a callback weakref costs ~4 µs per spawn (made and
        # fired); dead entries are swept in bulk instead, and a lookup checks
        # that the entry is really this task (ids are reused after death).
        self.ref = weakref.ref(task)


# id(task) -> record. A plain dict keyed by id() rather than a
# WeakKeyDictionary: lookups are ~20x cheaper, which matters at 100k tasks.
_records: dict[int, _Record] = {}
_next_id = itertools.count(1)
_sweep_at = 4096


def record(task: Task) -> _Record:
    """The task's record, made on first use (which fixes its id)."""
    global _sweep_at
    rec = _records.get(id(task))
    if rec is not None and rec.ref() is task:
        return rec
    if len(_records) >= _sweep_at:
        for key, old in list(_records.items()):
            if old.ref() is None:
                del _records[key]
        _sweep_at = max(4096, 2 * len(_records))
    rec = _records[id(task)] = _Record(task, next(_next_id))
    return rec


def task_id(task: Task) -> int:
    """The small integer a dump shows for ``task`` (assigned on first use)."""
    return record(task).id


def live_records() -> dict[int, Task]:
    """task id -> task, for every task that has a record and is still alive."""
    out: dict[int, Task] = {}
    for rec in list(_records.values()):
        t = rec.ref()
        if t is not None:
            out[rec.id] = t
    return out


# -- per-code-object cache ---------------------------------------------------

# What a known trio frame tells about the wait. "self" kinds take the
# primitive from the frame's ``self``.
_TRIO_WAITS: dict[str, tuple[str, bool]] = {
    "_LockImpl.acquire": ("lock", True),
    "CapacityLimiter.acquire_on_behalf_of": ("capacity limiter", True),
    "Semaphore.acquire": ("semaphore", True),
    "Event.wait": ("event", True),
    "Condition.wait": ("condition", True),
    "MemoryReceiveChannel.receive": ("channel receive", True),
    "MemorySendChannel.send": ("channel send", True),
    "sleep_forever": ("sleep", False),
    "sleep_until": ("sleep", False),
    "to_thread_run_sync": ("thread", False),
    "Runner.wait_all_tasks_blocked": ("wait_all_tasks_blocked", False),
    "Nursery._nested_child_finished": ("nursery", False),
    "SignalReceiver.__anext__": ("signal", False),
    "Process.wait": ("process", False),
    "ParkingLot.park": ("parking lot", False),
}


class _Code:
    """What one code object contributes to every frame that runs it."""

    __slots__ = (
        "code",
        "filename",
        "frames",
        "hide",
        "library",
        "name",
        "self_kind",
        "user",
        "wait_kind",
    )

    def __init__(self, code: types.CodeType) -> None:
        #: held so that ``id(code)``, the cache key, cannot be reused
        self.code = code
        self.filename = code.co_filename
        self.name: str = code.co_qualname
        in_trio = self.filename.startswith(_TRIO_DIR)
        #: neither trio's nor trioflow's: where a spawn is credited
        self.user = not (in_trio or self.filename.startswith(_TRIOFLOW_DIR))
        #: trio's or trioflow's own code (not trioflow.debug's)
        self.library = in_trio or (
            self.filename.startswith(_TRIOFLOW_DIR) and not self.filename.startswith(_HERE_DIR)
        )
        #: trio's trap plumbing, below every wait: not worth a line per task
        self.hide = in_trio and self.filename.endswith(os.sep + "_traps.py")
        wait: tuple[str, bool] | None = None
        if in_trio:
            wait = _TRIO_WAITS.get(self.name)
            if wait is None and self.name.endswith((".wait_readable", ".wait_writable")):
                wait = ("I/O", False)
        self.wait_kind = None if wait is None else wait[0]
        self.self_kind = wait is not None and wait[1]
        #: f_lasti -> FrameInfo, shared by every frame suspended at that instruction
        self.frames: dict[int, FrameInfo] = {}

    def frame(self, f: types.FrameType) -> FrameInfo:
        # ``f_lineno`` decodes the line table on every read (~1 µs);
        # ``f_lasti`` is a plain field, so the line is decoded once per spot.
        lasti = f.f_lasti
        fi = self.frames.get(lasti)
        if fi is None:
            fi = self.frames[lasti] = FrameInfo(self.filename, f.f_lineno, self.name)
        return fi


# id(code) -> _Code. Keyed by id: hashing a code object hashes its bytecode
# and constants on every lookup (~1 µs), an id is free.
_codes: dict[int, _Code] = {}
_CODE_CACHE_MAX = 50_000


def _code(code: types.CodeType) -> _Code:
    c = _codes.get(id(code))
    if c is None:
        if len(_codes) >= _CODE_CACHE_MAX:  # code made on the fly (exec, lambdas in loops)
            _codes.clear()
        c = _codes[id(code)] = _Code(code)
    return c


# -- walking one task's coroutine chain -----------------------------------------

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


def iter_frames(task: Task) -> Iterator[tuple[types.FrameType, object]]:
    """(frame, the coroutine/generator that owns it), outermost first.

    Follows ``cr_await``/``gi_yieldfrom``, and through an async generator's
    ``asend``/``athrow`` wrapper (which hides its generator) via the gc, as
    :meth:`trio.lowlevel.Task.iter_await_frames` does.
    """
    return _iter_from(task.coro)


def running_frames(task: Task) -> list[types.FrameType] | None:
    """The running task's frames from the thread stack, innermost first
    (so that ``pop()`` gives the outermost), without this package's own."""
    coro: Any = task.coro
    target = getattr(coro, "cr_frame", None)
    if target is None:
        return None
    out: list[types.FrameType] = []
    f: types.FrameType | None = sys._getframe(1)  # pyright: ignore[reportPrivateUsage]
    while f is not None:
        if not f.f_code.co_filename.startswith(_HERE_DIR):
            out.append(f)
        if f is target:
            return out
        f = f.f_back
    return None


def _iter_from(coro: Any) -> Iterator[tuple[types.FrameType, object]]:
    while coro is not None:
        t: type[Any] = type(coro)  # pyright: ignore[reportUnknownVariableType]
        if t is _CoroutineType:
            f = coro.cr_frame
            if f is not None:
                yield f, coro
            coro = coro.cr_await
        elif t is _GeneratorType:
            f = coro.gi_frame
            if f is not None:
                yield f, coro
            coro = coro.gi_yieldfrom
        elif t.__name__ in ("async_generator_asend", "async_generator_athrow"):
            for ref in gc.get_referents(coro):
                agen: Any = ref
                if type(agen) is types.AsyncGeneratorType:
                    if agen.ag_frame is not None:
                        yield agen.ag_frame, agen
                    coro = agen.ag_await
                    break
            else:
                return
        else:
            return


# -- names for trio's primitives ----------------------------------------------


def _name_in(frame: types.FrameType, obj: object) -> str:
    """The local, ``self.`` attribute or global that holds ``obj`` in ``frame``."""
    f_locals = frame.f_locals
    for k, v in f_locals.items():
        if v is obj:
            return k
    for k, v in f_locals.items():
        d = getattr(v, "__dict__", None)
        if isinstance(d, dict):
            for ak, av in d.items():  # pyright: ignore[reportUnknownVariableType]
                if av is obj:
                    return f"{k}.{ak}"
    for k, v in frame.f_globals.items():
        if v is obj:
            return k
    return ""


# -- the dump --------------------------------------------------------------------

_ENTRY_TASK_NAME = "<TrioToken.run_sync_soon task>"


def _is_waiting(csd: object, cache: dict[type, bool] = {}) -> bool:  # noqa: B006
    """Does ``custom_sleep_data`` look like a :class:`~trioflow._registry.Waiting`?"""
    t = type(csd)
    ok = cache.get(t)
    if ok is None:
        ok = cache[t] = all(
            hasattr(csd, a) for a in ("task", "primitive", "since", "weight")
        ) and hasattr(getattr(csd, "primitive", None), "_trioflow_holders")
    return ok


def dump_tasks(*, include_system: bool = False, full_stacks: bool = False) -> TaskDump:
    """Every live task of the current ``trio.run``: stacks, waits, holdings.

    A picture of the program at one instant, like Go's goroutine dump. Call
    it from inside ``trio.run`` (a task, a signal handler that interrupted
    the run, an instrument or a ``run_sync_soon`` callback): it reads trio's
    task tree and the trioflow registry, runs no task code, and is not a
    checkpoint. Cost: microseconds of CPU per task, so tens of milliseconds
    for 10,000 tasks and about a second for 100,000 (figures in
    ``docs/benchmarks/debug.md``).

    Args:
      include_system: also show trio's own ``<init>`` task and its
        ``run_sync_soon`` task (hidden by default; tasks you spawned with
        ``spawn_system_task`` are always shown).
      full_stacks: keep every frame. By default a stack ends at the first
        trio or trioflow call the task's own code made (``sleep``,
        ``LimiterFace.__aenter__``), without the library plumbing under it.

    Raises:
      RuntimeError: if called outside ``trio.run``'s thread.
    """
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        root = None
    if root is None:
        raise RuntimeError("dump_tasks() must be called from inside trio.run, in its thread")
    try:
        current: Task | None = trio.lowlevel.current_task()
    except RuntimeError:
        current = None
    now = trio.current_time()
    wall = time.time()
    # A dump allocates a few objects per task (and materializes the frame
    # objects of suspended coroutines): with the collector on, a 100k-task
    # dump spends most of its time in gen-2 collections of the very heap it
    # is reading. Nothing it allocates forms a cycle, so pause it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _dump(root, current, now, wall, include_system, full_stacks)
    finally:
        if was_enabled:
            gc.enable()


def _dump(
    root: Task,
    current: Task | None,
    now: float,
    wall: float,
    include_system: bool,
    full_stacks: bool,
) -> TaskDump:
    infos: list[TaskInfo] = []
    by_task: dict[Task, TaskInfo] = {}
    # id(custom_sleep_data or primitive) -> what waiting on it means
    trio_objs: dict[int, tuple[BlockedOn, object]] = {}
    records = _records

    # (task, parent id, depth); depth-first, parents before children
    stack: list[tuple[Task, int | None, int]] = []
    if include_system:
        stack.append((root, None, 0))
    else:
        for nursery in reversed(root.child_nurseries):
            for child in _ordered(nursery.child_tasks):
                if child.name != _ENTRY_TASK_NAME:
                    stack.append((child, None, 0))
    while stack:
        task, parent_id, depth = stack.pop()
        rec = records.get(id(task))
        if rec is None or rec.ref() is not task:
            rec = record(task)
        info = task_info(task, rec, parent_id, depth, current, now, full_stacks, trio_objs)
        infos.append(info)
        by_task[task] = info
        nurseries = task.child_nurseries
        if nurseries:
            tid = rec.id
            for nursery in reversed(nurseries):
                for child in _ordered(nursery.child_tasks):
                    stack.append((child, tid, depth + 1))

    resources = _resources(by_task, trio_objs)
    return TaskDump(infos, resources, now, wall)


def task_info(
    task: Task,
    rec: _Record,
    parent_id: int | None,
    depth: int,
    current: Task | None,
    now: float,
    full_stacks: bool,
    trio_objs: dict[int, tuple[BlockedOn, object]],
) -> TaskInfo:
    """One task's entry: its stack, what it waits on and for how long (not its holdings)."""
    codes = _codes
    make_code = _code
    coroutine_type = _CoroutineType
    generator_type = _GeneratorType
    tid = rec.id
    frames: list[FrameInfo] = []
    lib_from = -1  # start of the innermost run of library frames
    # the innermost known wait frame, and the nearest frame of user code outside it
    wait: tuple[types.FrameType, _Code, types.FrameType | None] | None = None
    lot: tuple[types.FrameType, _Code, types.FrameType | None] | None = None
    user: types.FrameType | None = None
    # The coroutine chain, outermost first (what iter_frames() yields),
    # inlined: this loop is the dump's whole cost.
    coro: Any = task.coro
    extra: list[types.FrameType] | None = None
    if task is current:
        # A running coroutine chain has no cr_await links: read the
        # thread's own stack instead (which also shows the exact line a
        # signal interrupted).
        extra = running_frames(task)
    while True:
        if extra is not None:
            if not extra:
                break
            f = extra.pop()
        elif coro is None:
            break
        elif type(coro) is coroutine_type:
            f = coro.cr_frame
            coro = coro.cr_await
        elif type(coro) is generator_type:
            f = coro.gi_frame
            coro = coro.gi_yieldfrom  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        else:  # an async generator's asend/athrow, or something unknown
            extra = [fr for fr, _ in _iter_from(coro)]
            extra.reverse()
            continue
        if f is None:
            continue
        code = f.f_code
        c = codes.get(id(code))
        if c is None:
            c = make_code(code)
        if c.hide:
            continue
        if c.library:
            if lib_from < 0:
                lib_from = len(frames)
            kind = c.wait_kind
            if kind is not None:
                if kind == "parking lot":
                    lot = (f, c, user)
                else:
                    wait = (f, c, user)
        else:
            lib_from = -1
            user = f
        fi = c.frames.get(f.f_lasti)
        if fi is None:
            fi = c.frame(f)
        frames.append(fi)
    if not full_stacks and 0 <= lib_from < len(frames) - 1:
        # Keep the library call the task's own code made (``trio.sleep``,
        # ``LimiterFace.__aenter__``), not the plumbing under it.
        del frames[lib_from + 1 :]
    blocked_on: BlockedOn | None = None
    blocked_for: float | None = None
    deadline: float | None = None
    shielded = False
    detail = ""
    if task is current:
        state = "running"
    elif getattr(task, "_next_send_fn", None) is not None:
        state = "runnable"
    else:
        state = "blocked"
        csd = task.custom_sleep_data
        if csd is not None and _is_waiting(csd):
            prim: Any = csd.primitive
            blocked_on = BlockedOn(prim.kind, prim.name, prim)
            blocked_for = max(0.0, now - csd.since)
            detail = _weight_detail(prim, csd.weight)
        else:
            blocked_on = _classify(wait, lot, csd, trio_objs)
        deadline, shielded = _scopes(task, now)
    return TaskInfo(
        tid,
        task.name,
        state,
        frames,
        blocked_on,
        blocked_for,
        [],
        parent_id,
        _created_by(task),
        depth,
        deadline,
        shielded,
        detail,
    )


def _scopes(task: Task, now: float) -> tuple[float | None, bool]:
    """Seconds to the nearest deadline that can cancel ``task``, and whether a shield is in the way."""
    deadline = math.inf
    status: Any = getattr(task, "_cancel_status", None)
    while status is not None:
        scope: Any = status._scope
        d = scope.deadline
        if d < deadline:
            deadline = d
        if scope.shield:
            return (None if deadline == math.inf else deadline - now), True
        status = status._parent
    return (None if deadline == math.inf else deadline - now), False


def _weight_detail(prim: Any, weight: int) -> str:
    """``weight 5 of 3 tokens: can never fit`` for a limiter's waiter; ``""`` otherwise."""
    stats_fn = getattr(prim, "statistics", None)
    if stats_fn is None:
        return ""
    try:
        stats = stats_fn()
    except Exception:
        return ""
    total = getattr(stats, "total_tokens", None)
    if not isinstance(total, int | float) or isinstance(total, bool):
        return ""
    borrowed = getattr(stats, "borrowed_tokens", None)
    text = f"weight {weight} of {total} tokens"
    if isinstance(borrowed, int):
        text += f", {borrowed} borrowed"
    if weight > total:
        text += ": can never fit"
    return text


def _created_by(task: Task) -> CreatedBy | None:
    spawned = spawn_record(task)
    if spawned is None:
        return None
    _, parent, where, _seq = spawned
    exited = getattr(parent.coro, "cr_frame", True) is None
    return CreatedBy(record(parent).id, parent.name, where, exited)


def describe_tasks(
    tasks: list[Task], trio_objs: dict[int, tuple[BlockedOn, object]]
) -> list[TaskInfo]:
    """Entries for a few chosen tasks, with their holdings, without walking the whole tree.

    ``trio_objs`` is the classification cache of the caller's walk (trio
    primitives already seen), so holders of trio locks found then count.
    """
    try:
        current: Task | None = trio.lowlevel.current_task()
    except RuntimeError:
        current = None
    now = trio.current_time()
    by_task: dict[Task, TaskInfo] = {}
    for t in tasks:
        parent = t.parent_nursery
        parent_task = None if parent is None else parent.parent_task
        pid = None if parent_task is None else record(parent_task).id
        by_task[t] = task_info(t, record(t), pid, 0, current, now, False, trio_objs)
    _resources(by_task, trio_objs)
    return [by_task[t] for t in tasks]


def _ordered(tasks: frozenset[Task]) -> list[Task]:
    """Siblings newest first (popped from the walk's stack, oldest comes out first).

    By spawn order where it was recorded, else by id (tasks spawned before
    recording began are older than any recorded one).
    """
    if len(tasks) < 2:
        return list(tasks)
    return sorted(tasks, key=_age, reverse=True)


def _age(task: Task) -> tuple[int, int]:
    spawned = spawn_record(task)
    if spawned is None:
        return (0, task_id(task))
    return (1, spawned[3])


_Spot = tuple[types.FrameType, _Code, "types.FrameType | None"]


def _classify(
    wait: _Spot | None,
    lot: _Spot | None,
    csd: object,
    trio_objs: dict[int, tuple[BlockedOn, object]],
) -> BlockedOn:
    """What a task parked outside trioflow waits on, from its innermost known frame.

    ``ParkingLot.park`` has no back-pointer to its primitive, so the lot is
    only the fallback when no frame further out names the primitive.
    """
    if wait is None:
        if lot is not None and csd is not None:
            return _trio_obj("parking lot", csd, lot[2], trio_objs)
        return BlockedOn("unknown", "", csd)
    f, c, user = wait
    kind = c.wait_kind
    assert kind is not None
    if not c.self_kind:
        return BlockedOn(kind, "", None)
    # Most of trio's primitives park with their lot or themselves as
    # custom_sleep_data: one f_locals per primitive per dump, not per waiter.
    if csd is not None:
        seen = trio_objs.get(id(csd))
        if seen is not None and seen[0].kind == kind:
            return seen[0]
    obj = f.f_locals.get("self")
    if obj is None:
        return BlockedOn(kind, "", None)
    b = _trio_obj(kind, obj, user, trio_objs)
    if csd is not None and csd is not obj:
        trio_objs.setdefault(id(csd), (b, obj))
    return b


def _trio_obj(
    kind: str,
    obj: object,
    user: types.FrameType | None,
    trio_objs: dict[int, tuple[BlockedOn, object]],
) -> BlockedOn:
    seen = trio_objs.get(id(obj))
    if seen is not None:
        return seen[0]
    # A primitive's own label (a pipeline's channel: ``events: parse → store``),
    # else the nearest frame of user code names it (``async with self.lock:``).
    name = _registry.label_of(obj)
    if name is None:
        name = "" if user is None else _name_in(user, obj)
    b = BlockedOn(kind, name, obj)
    trio_objs[id(obj)] = (b, obj)
    return b


def _holder_text(desc: str, weight: int) -> str:
    return desc if weight == 1 else f"{desc} ({weight} tokens)"


def _resources(
    by_task: dict[Task, TaskInfo], trio_objs: dict[int, tuple[BlockedOn, object]]
) -> list[ResourceInfo]:
    """Who holds and who waits on each known primitive; fills ``TaskInfo.holding``."""
    waiters: dict[int, list[int]] = {}
    for info in by_task.values():
        b = info.blocked_on
        if b is not None and b.obj is not None:
            waiters.setdefault(id(b.obj), []).append(info.id)
    out: list[ResourceInfo] = []

    def add(kind: str, name: str, obj: object, holders: list[tuple[object, int]]) -> None:
        r = ResourceInfo(kind, name, obj, [], 0, waiters.get(id(obj), []))
        desc = r.describe()
        for borrower, weight in holders:
            info = by_task.get(borrower) if isinstance(borrower, Task) else None
            if info is None:
                r.other_holders += 1
            else:
                r.holders.append(info.id)
                info.holding.append(_holder_text(desc, weight))
        out.append(r)

    for prim in _registry.live():
        try:
            held = [(h.borrower, h.weight) for h in prim._trioflow_holders()]  # pyright: ignore[reportPrivateUsage]
        except Exception:  # a primitive mid-construction or broken: skip it
            continue
        add(prim.kind, prim.name, prim, held)
    unique = {id(obj): (b, obj) for b, obj in trio_objs.values()}
    for b, obj in unique.values():
        add(b.kind, b.name, obj, [(h, 1) for h in trio_holders(obj)])
    return out


def trio_holders(obj: object) -> list[object]:
    """Holders of a trio ``Lock``/``StrictFIFOLock``/``CapacityLimiter``; [] for the rest."""
    owner = getattr(obj, "_owner", None)
    if owner is not None:
        return [owner]
    borrowers: Any = getattr(obj, "_borrowers", None)
    if isinstance(borrowers, set):
        return list(borrowers)  # pyright: ignore[reportUnknownArgumentType]
    return []


#: (id of the task, its spawner, the spawning line, spawn order), set in the
#: task's own context when it is spawned: it lives exactly as long as the task,
#: costs no weak reference and no registry entry, and a child spawned after
#: uninstall() (which inherits the context) is told apart by the id.
_SPAWN: contextvars.ContextVar[tuple[int, Task, FrameInfo | None, int] | None] = (
    contextvars.ContextVar("trioflow.debug.spawn", default=None)
)
_spawn_seq = itertools.count(1)
#: record_spawn <- the instrument's task_spawned <- Instruments.call <-
#: spawn_impl <- start_soon / spawn_system_task <- the spawning line
_SPAWN_DEPTH = 5


def record_spawn(task: Task) -> None:
    """For a ``task_spawned`` instrument: note who spawned ``task`` and from which line.

    The line is the innermost frame of the spawner's own code outside trio
    and trioflow: ``await tg.spawn(...)`` rather than trioflow's
    ``_group.py``, ``nursery.start_soon(...)`` rather than trio's
    ``_run.py``. The walk goes up the spawner task's frames only, never
    into the run loop (whose caller is the ``trio.run(...)`` line); when
    every frame of the spawner is library code (a handler task started by
    ``trio.serve_tcp``), the line that spawned the spawner is used.

    Costs a fraction of the spawn itself for a plain ``start_soon`` (one
    frame read at a known depth, one context variable set: about a fifth of
    a spawn's instructions, trio's instrument dispatch included); a spawn
    through library code walks a few frames more
    (``docs/benchmarks/debug.md``). Nothing per task step.
    """
    try:
        parent = _current_task()
    except RuntimeError:  # spawned by the run itself (<init>)
        return
    where: FrameInfo | None = None
    try:
        f: types.FrameType | None = sys._getframe(_SPAWN_DEPTH)  # pyright: ignore[reportPrivateUsage]
    except ValueError:
        f = None
    if f is not None:
        c = _codes.get(id(f.f_code)) or _code(f.f_code)
        if c.user:
            where = c.frames.get(f.f_lasti) or c.frame(f)
    if where is None:
        where = _spawn_line(parent)
    task.context.run(_SPAWN.set, (id(task), parent, where, next(_spawn_seq)))


def _spawn_line(parent: Task) -> FrameInfo | None:
    """The slow path of :func:`record_spawn`: walk the spawner's frames."""
    f: types.FrameType | None = sys._getframe(3)  # pyright: ignore[reportPrivateUsage]
    coro: Any = parent.coro
    outermost = getattr(coro, "cr_frame", None)
    while f is not None:
        c = _codes.get(id(f.f_code)) or _code(f.f_code)
        if c.user:
            return c.frame(f)
        if f is outermost:
            break
        f = f.f_back
    spawned = spawn_record(parent)
    return None if spawned is None else spawned[2]


def spawn_record(task: Task) -> tuple[int, Task, FrameInfo | None, int] | None:
    """What :func:`record_spawn` noted for ``task``, or ``None``."""
    try:
        value = task.context.get(_SPAWN)
    except AttributeError:  # pragma: no cover - a task without a context
        return None
    if value is None or value[0] != id(task):
        return None  # inherited from its spawner (spawned while nothing recorded)
    return value
