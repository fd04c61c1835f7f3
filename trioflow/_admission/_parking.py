"""How every trioflow primitive puts a task to sleep and wakes it: one mechanism.

The kernel's waiter queue and the rate limiter's FIFO both park tasks here,
so every reader sees one thing: a parked task's ``custom_sleep_data`` is its
:class:`Waiter` (what it waits on, for how much, since when: the registry's
``Waiting`` record), set for exactly as long as the task sleeps, and the wait
hook telemetry installs is called the same way for both (:func:`waited`).

:func:`park` is trio's ``wait_task_rescheduled`` with that bookkeeping
around it; :func:`unpark` is ``reschedule`` with the same bookkeeping undone.
The caller owns the queue: ``on_abort`` is how it withdraws the waiter when
the sleep is cancelled (trio calls it only while the task still sleeps, so
it never races a wake-up).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import outcome
import trio
from trio.lowlevel import Task

from .._registry import Inspectable
from ..telemetry import _hooks

__all__ = ["Waiter", "park", "unpark", "waited"]


class Waiter:
    """One task (or one nowait attempt) asking a primitive for ``weight`` tokens.

    This is the registry's ``Waiting`` record: task dumps read ``task``,
    ``primitive``, ``weight`` and ``since``; ``parked`` is true exactly while
    the task sleeps in :func:`park`.
    """

    __slots__ = ("borrower", "lane", "parked", "primitive", "seq", "since", "task", "weight")

    def __init__(
        self,
        task: Task,
        borrower: object,
        weight: int,
        lane: int,
        primitive: Inspectable,
        seq: int,
        since: float,
    ) -> None:
        self.task: Final = task
        self.borrower: Final = borrower
        self.weight: Final = weight
        self.lane: Final = lane
        #: The public object the task waits on (limiter, lane handle, rate limiter).
        self.primitive: Final = primitive
        #: Arrival order among the waiters of one queue.
        self.seq: Final = seq
        #: ``trio.current_time()`` when the waiter queued.
        self.since: Final = since
        #: True while the task sleeps in :func:`park`.
        self.parked: bool = False

    def __repr__(self) -> str:
        return f"<Waiter {self.task.name!r} weight={self.weight} lane={self.lane}>"


async def park(
    waiter: Waiter,
    on_abort: Callable[[], object],
    on_parked: Callable[[], object] | None = None,
) -> None:
    """Sleep until :func:`unpark` wakes ``waiter``'s task (which must be the current one).

    A checkpoint. ``on_parked()``, if given, runs once the waiter is marked
    parked and just before the task sleeps (the rate limiter sets its alarm
    there). If the sleep is cancelled, ``on_abort()`` runs first (withdraw
    the waiter there), then :class:`trio.Cancelled` is raised here.
    Whatever :func:`unpark` passes in (a value, or an error such as the
    :exc:`ValueError` of a waiter that can never be served) comes out here.
    """
    task = waiter.task
    waiter.parked = True
    task.custom_sleep_data = waiter

    def abort(_: Any) -> trio.lowlevel.Abort:
        waiter.parked = False
        task.custom_sleep_data = None
        on_abort()
        return trio.lowlevel.Abort.SUCCEEDED

    if on_parked is not None:
        on_parked()
    await trio.lowlevel.wait_task_rescheduled(abort)


def unpark(waiter: Waiter, result: outcome.Outcome[None] | None = None) -> None:
    """Wake a task sleeping in :func:`park` with ``result`` (by default, nothing)."""
    waiter.parked = False
    task = waiter.task
    task.custom_sleep_data = None
    if result is None:
        trio.lowlevel.reschedule(task)
    else:
        trio.lowlevel.reschedule(task, result)


def waited(waiter: Waiter) -> None:
    """Tell telemetry's wait hook (if any) that ``waiter`` was served after waiting."""
    hook = _hooks.wait_hook
    if hook is not None:
        hook(waiter.primitive, waiter.since, trio.current_time())
