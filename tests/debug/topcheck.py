"""Checks shared by the ``top`` accounting tests."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioflow.debug import _topdata


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the run, the root included."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return set(_topdata._Accounting.tree()) | {root}  # pyright: ignore[reportPrivateUsage]


def check_sums(acct: Any) -> None:
    """The accounting's tasks are live ones, and each group's sums match the
    per-task records they summarize (exited tasks' polls stay in the group)."""
    assert set(acct.tasks) <= live_tasks()
    assert sum(g.n for g in acct.groups.values()) == len(acct.tasks)
    for g in acct.groups.values():
        parked = [r for r in g.tasks.values() if r.label is not None]
        assert g.parked == len(parked)
        assert sum(g.labels.values()) == g.parked
        assert g.parked_sum == pytest.approx(sum(r.park_t for r in parked))
        assert g.polls >= sum(r.polls for r in g.tasks.values()) - 1e-6
        assert g.n == len(g.tasks)


def accounting() -> Any:
    """Start the accounting as a first ``/debug/top`` request does, and return it."""
    _topdata.respond({})
    acct = _topdata._active  # pyright: ignore[reportPrivateUsage]
    assert acct is not None
    return acct


async def busy() -> None:
    """Short steps for ever: a busy loop that never blocks it."""
    while True:
        await trio.lowlevel.checkpoint()
