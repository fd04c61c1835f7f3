"""What a task dump is made of, and how it prints (text and JSON).

The records are plain snapshots: building them runs no task code, and
reading them later never touches the live program again (except ``obj``,
which is the live primitive itself, kept so that deadlock and leak checks
can ask it who holds it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import attrs

__all__ = [
    "SCHEMA_VERSION",
    "BlockedOn",
    "CreatedBy",
    "FrameInfo",
    "ResourceInfo",
    "TaskDump",
    "TaskInfo",
]

#: The ``schema`` field of :meth:`TaskDump.to_json` output. The number goes
#: up whenever a field is removed or changes meaning; new fields may be
#: added within one version (readers must ignore fields they do not know).
SCHEMA_VERSION = "trioflow.taskdump/1"


class FrameInfo(NamedTuple):
    """One frame of a task's async stack: where it is suspended now."""

    filename: str
    lineno: int
    function: str
    """The code's qualified name (``Worker.run``, ``main.<locals>.fetch``)."""


class BlockedOn(NamedTuple):
    """What a parked task waits on.

    ``kind`` is one word or two: ``"limiter"``, ``"lane"``, ``"rate limiter"``,
    ``"task group"``, ``"stage"`` (trioflow primitives, from the registry);
    ``"lock"``, ``"semaphore"``, ``"capacity limiter"``, ``"condition"``,
    ``"event"``, ``"channel receive"``, ``"channel send"``, ``"parking lot"``
    (trio's); ``"sleep"``, ``"I/O"``, ``"thread"``, ``"nursery"`` (waiting for
    its children), ``"wait_all_tasks_blocked"``, ``"signal"``, ``"process"``;
    ``"unknown"`` when the task parked somewhere this module does not know.
    """

    kind: str
    name: str
    """The primitive's name: a trioflow primitive's ``name``; for trio's own
    primitives the variable or attribute that holds it in the waiting frame
    (``"self.lock"``), else ``""``."""
    obj: object
    """The primitive itself (``None`` for sleep, I/O...). Not in the JSON."""

    def describe(self) -> str:
        """``limiter 'api'``, ``lock 'a' <0x7f…>``, ``sleep``."""
        return describe(self.kind, self.name, self.obj)


class CreatedBy(NamedTuple):
    """The task that spawned a task, and where it was when it did."""

    task_id: int
    name: str
    frame: FrameInfo | None
    """The spawner's frame that called ``start_soon``/``start``, if found."""


@attrs.define(slots=True, eq=False)
class TaskInfo:
    """One live task, as seen when the dump was taken."""

    id: int
    """Small integer, stable for the task's life (in spawn order when
    :func:`trioflow.debug.install` ran before it was spawned, else in the
    order dumps first saw it)."""
    name: str
    state: str
    """``"running"`` (the task that took the dump, or the one a signal
    interrupted), ``"runnable"`` (scheduled, waiting for its turn) or
    ``"blocked"`` (parked: see ``blocked_on``)."""
    stack: Sequence[FrameInfo]
    """Outermost first, like a Python traceback (the text format prints it
    innermost first, like Go)."""
    blocked_on: BlockedOn | None
    blocked_for: float | None
    """Seconds since it parked, on trio's clock, where the primitive stamped
    the time it parked (every trioflow primitive does); ``None`` otherwise."""
    holding: list[str]
    """What it holds: ``["limiter 'db'", "lock 'self.lock'"]``. trio's own
    locks and limiters appear only when some task waits on them."""
    parent_id: int | None
    """The task whose nursery runs this one (``None`` for the main task)."""
    created_by: CreatedBy | None
    """Who spawned it. Recorded only while :func:`trioflow.debug.install`
    (or the pytest plugin) is active; ``None`` for tasks spawned before."""
    depth: int = 0
    """How many nurseries deep it sits under the main task."""

    def header(self) -> str:
        """``task 12 "enrich-3" [waiting on limiter 'api', 2.4s]:``"""
        if self.state == "blocked":
            b = self.blocked_on
            if b is None:
                what = "blocked"
            elif b.kind in _VERBLESS:
                what = b.describe()
            else:
                what = f"waiting on {b.describe()}"
            if self.blocked_for is not None:
                what += f", {format_seconds(self.blocked_for)}"
        else:
            what = self.state
        return f"task {self.id} {json.dumps(self.name)} [{what}]:"

    def format(self) -> str:
        """Go-style: header, frames innermost first, holdings, ``created by``."""
        lines = [self.header()]
        lines += [_frame_text(f) for f in reversed(self.stack)]
        if self.holding:
            lines.append("holding " + ", ".join(self.holding))
        if self.created_by is not None:
            c = self.created_by
            lines.append(f"created by {json.dumps(c.name)} in task {c.task_id}")
            if c.frame is not None:
                lines.append(f"\t{c.frame.filename}:{c.frame.lineno}")
        elif self.parent_id is not None:
            lines.append(f"in a nursery of task {self.parent_id}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        b = self.blocked_on
        c = self.created_by
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "stack": [
                {"filename": f.filename, "lineno": f.lineno, "function": f.function}
                for f in self.stack
            ],
            "blocked_on": None
            if b is None
            else {
                "kind": b.kind,
                "name": b.name,
                "obj_id": None if b.obj is None else f"{id(b.obj):#x}",
            },
            "blocked_for": self.blocked_for,
            "holding": list(self.holding),
            "parent_id": self.parent_id,
            "created_by": None
            if c is None
            else {
                "task_id": c.task_id,
                "name": c.name,
                "frame": None
                if c.frame is None
                else {
                    "filename": c.frame.filename,
                    "lineno": c.frame.lineno,
                    "function": c.frame.function,
                },
            },
            "depth": self.depth,
        }


def describe(kind: str, name: str, obj: object) -> str:
    """trioflow primitives by name; trio's by name (if found) and address, like jstack."""
    kind = kind.replace("_", " ")  # registry kinds are snake_case; dumps read as words
    text = f"{kind} {name!r}" if name else kind
    if obj is not None and not hasattr(obj, "_trioflow_holders"):
        text += f" <{id(obj):#x}>"
    return text


_frame_texts: dict[FrameInfo, str] = {}


def _frame_text(f: FrameInfo) -> str:
    """Two lines per frame, Go-style; cached (dumps repeat the same frames a lot)."""
    text = _frame_texts.get(f)
    if text is None:
        if len(_frame_texts) > 100_000:
            _frame_texts.clear()
        text = _frame_texts[f] = f"{f.function}(...)\n\t{f.filename}:{f.lineno}"
    return text


# Wait kinds printed bare (``[sleep]``) rather than ``[waiting on sleep]``.
_VERBLESS = frozenset(
    {"sleep", "I/O", "thread", "nursery", "wait_all_tasks_blocked", "signal", "process", "unknown"}
)


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


@attrs.define(slots=True, eq=False)
class ResourceInfo:
    """A primitive that someone holds or waits on: who holds it, who waits."""

    kind: str
    name: str
    obj: object
    holders: list[int]
    """Ids of live tasks holding it."""
    other_holders: int
    """Holders that are not live tasks: ``to_thread`` placeholders, tasks
    that exited while holding, other borrower objects."""
    waiters: list[int]

    def describe(self) -> str:
        return describe(self.kind, self.name, self.obj)


@attrs.define(slots=True, eq=False)
class TaskDump:
    """Every live task of one ``trio.run``, as a tree of nurseries and tasks.

    ``tasks`` is in tree order (a parent before its children, depth-first),
    so printing it in order shows the nursery tree.
    """

    tasks: list[TaskInfo]
    resources: list[ResourceInfo]
    """Every live trioflow primitive, and every trio primitive some task waits on."""
    time: float
    """``trio.current_time()`` when taken."""
    wall_time: float
    """``time.time()`` when taken."""

    def by_id(self) -> dict[int, TaskInfo]:
        return {t.id: t for t in self.tasks}

    def __iter__(self) -> Iterator[TaskInfo]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def format(self, *, group: bool = False) -> str:
        """Goroutine-style text.

        Args:
          group: fold tasks with the same state, wait and stack into one
            entry with a count (like Go's ``debug=1``), largest group first.
        """
        head = f"trioflow task dump: {len(self.tasks)} tasks\n"
        if not group:
            return head + "\n\n".join(t.format() for t in self.tasks) + "\n"
        groups: dict[tuple[object, ...], list[TaskInfo]] = {}
        for t in self.tasks:
            b = t.blocked_on
            key = (t.state, None if b is None else (b.kind, b.name, id(b.obj)), tuple(t.stack))
            groups.setdefault(key, []).append(t)
        out: list[str] = []
        for members in sorted(groups.values(), key=len, reverse=True):
            first = members[0]
            what = first.header().split(" [", 1)[1].rsplit("]", 1)[0]
            if first.blocked_for is not None:
                what = what.rsplit(", ", 1)[0]
                spans = [m.blocked_for for m in members if m.blocked_for is not None]
                lo, hi = format_seconds(min(spans)), format_seconds(max(spans))
                what += f", {lo}" if lo == hi else f", {lo}..{hi}"
            names = sorted({m.name for m in members})
            shown = ", ".join(json.dumps(n) for n in names[:3])
            if len(names) > 3:
                shown += f" and {len(names) - 3} more names"
            ids = [m.id for m in members]
            id_text = ", ".join(str(i) for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
            count = f"{len(members)} task{'s' if len(members) != 1 else ''}"
            lines = [f"{count} [{what}]: {shown}", f"ids {id_text}"]
            lines += [_frame_text(f) for f in reversed(first.stack)]
            out.append("\n".join(lines))
        return head + "\n\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: see ``docs/debugging.md`` ("JSON schema")."""
        return {
            "schema": SCHEMA_VERSION,
            "time": self.time,
            "wall_time": self.wall_time,
            "tasks": [t.to_dict() for t in self.tasks],
            "resources": [
                {
                    "kind": r.kind,
                    "name": r.name,
                    "obj_id": f"{id(r.obj):#x}",
                    "holders": r.holders,
                    "other_holders": r.other_holders,
                    "waiters": r.waiters,
                }
                for r in self.resources
            ],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text following the schema named by ``SCHEMA_VERSION``
        (``trioflow/debug/taskdump.schema.json``)."""
        return json.dumps(self.to_dict(), indent=indent)
