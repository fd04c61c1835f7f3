from __future__ import annotations

import trio


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task in the run now (walks the nursery tree from the root)."""
    out: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        out.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out


class Gauge:
    """Counts how many are inside at once, and the most ever."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def exit(self) -> None:
        self.now -= 1
