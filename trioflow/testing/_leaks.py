"""Which tasks outlived the code that should have waited for them."""

from __future__ import annotations

from collections.abc import Collection

import trio
from trio.lowlevel import Task

from ..debug._dump import dump_tasks, task_id
from ..debug._model import TaskInfo

__all__ = ["leftover_tasks", "live_tasks"]

_ENTRY_TASK_NAME = "<TrioToken.run_sync_soon task>"


def live_tasks() -> set[Task]:
    """Every live task of this run, except trio's own ``<init>`` and ``run_sync_soon`` tasks."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        raise RuntimeError("live_tasks() must be called from inside trio.run")
    out: set[Task] = set()
    stack = [c for n in root.child_nurseries for c in n.child_tasks]
    while stack:
        task = stack.pop()
        if task.name == _ENTRY_TASK_NAME:
            continue
        out.add(task)
        for n in task.child_nurseries:
            stack.extend(n.child_tasks)
    return out


def _subtree(task: Task) -> set[Task]:
    out: set[Task] = set()
    stack = [c for n in task.child_nurseries for c in n.child_tasks]
    while stack:
        t = stack.pop()
        out.add(t)
        for n in t.child_nurseries:
            stack.extend(n.child_tasks)
    return out


async def leftover_tasks(baseline: Collection[Task], *, settle: int = 50) -> list[TaskInfo]:
    """Tasks alive now that were not in ``baseline``, other than the caller and its children.

    Gives tasks that are finishing up to ``settle`` checkpoints to exit
    first (goleak retries the same way), then returns their dump entries.
    The caller's own subtree is left out: a task that can still wait for
    its children is not leaking them.

    This is a checkpoint (``settle`` times, at most).
    """
    me = trio.lowlevel.current_task()
    left: set[Task] = set()
    for _ in range(max(1, settle)):
        left = live_tasks() - set(baseline) - _subtree(me) - {me}
        if not left:
            return []
        await trio.lowlevel.checkpoint()
    ids = {task_id(t) for t in left}
    return [t for t in dump_tasks().tasks if t.id in ids]
