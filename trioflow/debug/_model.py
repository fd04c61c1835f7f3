"""What a task dump is made of, and how it prints (text and JSON).

The records are plain snapshots: building them runs no task code, and
reading them later never touches the live program again (except ``obj``,
which is the live primitive itself, kept so that deadlock and leak checks
can ask it who holds it).
"""

from __future__ import annotations

import json
import re
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
    """The line that spawned the task: the innermost frame of the spawner's
    own code (outside trio and trioflow) that led to the spawn, so a task
    started by ``tg.spawn`` or by ``trio.serve_tcp`` points at the line
    that called them; ``None`` if no such frame was found."""
    exited: bool = False
    """The spawner had exited when the dump was taken."""


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
    deadline: float | None = None
    """For a parked task: seconds until the nearest deadline of the cancel
    scopes that can cancel it (up to and including the first shielded
    one; negative if already past), ``None`` if none has a deadline."""
    shielded: bool = False
    """For a parked task: a shielded cancel scope encloses it (cancelling
    the scopes outside the shield does not reach it)."""
    wait_detail: str = ""
    """For a waiter on a limiter: ``"weight 5 of 3 tokens, 3 borrowed: can
    never fit"`` (the waiter's weight, the capacity, what is held; a weight
    above the capacity is flagged)."""

    def header(self) -> str:
        """``task 12 "enrich-3" [waiting on limiter 'api', 2.4s]:``"""
        spent = None if self.blocked_for is None else format_seconds(self.blocked_for)
        return f"task {self.id} {json.dumps(self.name)} [{self.what(spent)}]:"

    def what(self, spent: str | None) -> str:
        """What the header's brackets say, with ``spent`` as the time blocked."""
        if self.state != "blocked":
            return self.state
        b = self.blocked_on
        if b is None:
            what = "blocked"
        elif b.kind in _VERBLESS:
            what = b.describe()
        else:
            what = f"waiting on {b.describe()}"
        if self.wait_detail:
            what += f" ({self.wait_detail})"
        if spent is not None:
            what += f", {spent}"
        if self.deadline is not None:
            what += f", deadline in {format_seconds(max(0.0, self.deadline))}"
        if self.shielded:
            what += ", shielded"
        return what

    def group_key(self) -> tuple[object, ...]:
        """What the task is doing, without object identity (see ``TaskDump.format(group=True)``)."""
        b = self.blocked_on
        wait = None if b is None else (b.kind, name_shape(b.name))
        return (self.state, wait, tuple(self.stack))

    def format(self) -> str:
        """Go-style: header, frames innermost first, holdings, ``created by``."""
        lines = [self.header()]
        lines += [_frame_text(f) for f in reversed(self.stack)]
        if self.holding:
            lines.append("holding " + ", ".join(self.holding))
        if self.created_by is not None:
            c = self.created_by
            gone = " (exited)" if c.exited else ""
            lines.append(f"created by {json.dumps(c.name)} in task {c.task_id}{gone}")
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
                "exited": c.exited,
                "frame": None
                if c.frame is None
                else {
                    "filename": c.frame.filename,
                    "lineno": c.frame.lineno,
                    "function": c.frame.function,
                },
            },
            "depth": self.depth,
            "deadline_in": self.deadline,
            "shielded": self.shielded,
            "wait_detail": self.wait_detail,
        }


_DIGITS = re.compile(r"\d+")
_ADDRESS = re.compile(r" <0x[0-9a-f]+>")


def name_shape(name: str) -> str:
    """``"request-17"`` and ``"request-4"`` are the same shape: ``"request-#"``."""
    return _DIGITS.sub("#", name) if name else name


def _counted(texts: list[str], total: int) -> list[str]:
    """Distinct texts, most common first, each with its count unless all share it."""
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return [t if n == total == 1 else f"{t} ({n} of {total})" for t, n in ordered[:5]] + (
        [f"... and {len(ordered) - 5} more"] if len(ordered) > 5 else []
    )


def format_group(members: Sequence[TaskInfo]) -> str:
    """One folded entry: count, what they do, names, ids, one stack, holdings, creators."""
    first = members[0]
    spent = None
    spans = [m.blocked_for for m in members if m.blocked_for is not None]
    if spans:
        lo, hi = format_seconds(min(spans)), format_seconds(max(spans))
        spent = lo if lo == hi else f"{lo}..{hi}"
    what = first.what(spent)
    if len(members) > 1 and first.blocked_on is not None and first.blocked_on.obj is not None:
        distinct = len({id(m.blocked_on.obj) for m in members if m.blocked_on is not None})
        if distinct > 1:
            what = _ADDRESS.sub("", what) + f", {distinct} distinct objects"
    names = sorted({m.name for m in members})
    shown = ", ".join(json.dumps(n) for n in names[:3])
    if len(names) > 3:
        shown += f" and {len(names) - 3} more names"
    ids = [m.id for m in members]
    id_text = ", ".join(str(i) for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
    n = len(members)
    lines = [f"{n} task{'s' if n != 1 else ''} [{what}]: {shown}", f"ids {id_text}"]
    lines += [_frame_text(f) for f in reversed(first.stack)]
    held = [_ADDRESS.sub("", h) for m in members for h in m.holding]
    if held:
        lines.append("holding " + ", ".join(_counted(held, n)))
    creators: list[str] = []
    for m in members:
        c = m.created_by
        if c is not None:
            where = "" if c.frame is None else f" at {c.frame.filename}:{c.frame.lineno}"
            gone = " (exited)" if c.exited else ""
            creators.append(f"{json.dumps(c.name)}{gone}{where}")
    if creators:
        lines.append("created by " + ", ".join(_counted(creators, n)))
    return "\n".join(lines)


def ring_report(title: str, tasks: Sequence[TaskInfo], why: Sequence[str]) -> str:
    """The jstack-style report: per task, what it waits on and ``why[i]``; then the stacks."""
    lines = [title, "=" * len(title)]
    for t, reason in zip(tasks, why, strict=True):
        b = t.blocked_on
        what = "?" if b is None else b.describe()
        wait = "" if t.blocked_for is None else f" for {t.blocked_for:.1f}s"
        lines.append(f'task {t.id} "{t.name}":')
        lines.append(f"  waiting on {what}{wait},")
        lines.append(f"  {reason}")
    lines.append("")
    sub = "Stacks of the tasks listed above:"
    lines += [sub, "=" * len(sub)]
    lines += [t.format() + "\n" for t in tasks]
    return "\n".join(lines)


def describe(kind: str, name: str, obj: object) -> str:
    """trioflow primitives by name; trio's by name (if found) and address, like jstack.

    Registry kinds are identifiers (``rate_limiter``); they print with a
    space (``rate limiter 'api'``). Both spellings are accepted.
    """
    if kind != "wait_all_tasks_blocked":
        kind = kind.replace("_", " ")
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
          group: fold tasks that do the same thing into one entry with a
            count (like Go's ``debug=1``), largest group first. "The same
            thing" is the same state, the same kind of wait on a primitive
            whose name has the same shape (digits aside), and the same stack:
            990 request tasks each waiting on their own ``Event`` are one
            group of 990. A group keeps what its tasks hold and who created
            them, with counts.
        """
        head = f"trioflow task dump: {len(self.tasks)} tasks\n"
        if not group:
            return head + "\n\n".join(t.format() for t in self.tasks) + "\n"
        groups: dict[tuple[object, ...], list[TaskInfo]] = {}
        for t in self.tasks:
            groups.setdefault(t.group_key(), []).append(t)
        out = [format_group(members) for members in sorted(groups.values(), key=len, reverse=True)]
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
