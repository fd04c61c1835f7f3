"""Which tasks outlived the code that should have waited for them."""

from __future__ import annotations

import time
from collections.abc import Collection

import trio
from trio.lowlevel import Task

from .._util import check_positive_number
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


async def leftover_tasks(
    baseline: Collection[Task], *, settle: int = 50, grace: float = 1.0
) -> list[TaskInfo]:
    """Tasks alive now that were not in ``baseline``, other than the caller and its children.

    Tasks that are finishing up get time to exit first: ``settle``
    checkpoints (for tasks one step from the end), then up to ``grace``
    seconds of wall-clock time (for a server-fixture handler finishing a
    30 ms response, a thread coming back) — goleak retries the same way.
    The grace is real time, not trio's clock, so it works under a
    ``MockClock``; it returns as soon as nothing is left.
    The caller's own subtree is left out: a task that can still wait for
    its children is not leaking them.

    This is a checkpoint (many times, while it waits). Cancelling it
    cancels the wait; nothing is left behind.

    Raises:
      ValueError / TypeError: for a bad ``settle`` or ``grace``.
    """
    if isinstance(settle, bool) or not isinstance(settle, int):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"settle must be an int, got {settle!r}")
    if settle < 0:
        raise ValueError(f"settle must be >= 0, got {settle!r}")
    grace = check_positive_number(grace, "grace", allow_zero=True)
    me = trio.lowlevel.current_task()
    deadline = time.monotonic() + grace
    left: set[Task] = set()
    rounds = 0
    while True:
        left = live_tasks() - set(baseline) - _subtree(me) - {me}
        if not left:
            return []
        rounds += 1
        if rounds <= settle:
            await trio.lowlevel.checkpoint()
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Real time passes in a worker thread, so the loop keeps running
        # (and polling I/O) meanwhile, whatever clock the run uses.
        await trio.to_thread.run_sync(time.sleep, min(0.005, remaining))
    ids = {task_id(t) for t in left}
    return [t for t in dump_tasks().tasks if t.id in ids]
