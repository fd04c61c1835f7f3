"""The stuck-task check behind ``install(stuck_after=...)``: incremental, grouped, root first.

A check is a *pass* over every task, done in slices that each run inside
the loop for at most :data:`SLICE_BUDGET` seconds (a ``run_sync_soon``
callback each; tasks run between slices), so a program of 100,000 tasks
pauses for tens of milliseconds at a time, never for the whole pass.

* **Phase 1** reads two plain fields per task: whether it is parked, and
  trio's count of its scheduling points. A task seen parked with the same
  count on two passes has not run in between: it has been parked since the
  first sighting (a trioflow primitive also stamps the exact time it
  parked, in its ``Waiting`` record).
* **Phase 2** describes only the tasks parked longer than ``stuck_after``
  (their stack and what they wait on) and folds them into groups by what
  they do, as ``TaskDump.format(group=True)`` does.
* **The report** (one per pass, only when some task became stuck since the
  last one) lists the groups, largest first, and before them the *likely
  root*: following "waits on a primitive held by" from each group leads to
  a task that is stuck on something else — typically an external call
  (I/O, a thread, a subprocess) made while holding a limiter or a lock.

Waits that are not "stuck" however long they last: ``sleep``, a nursery
waiting for its children, a signal receiver, ``wait_all_tasks_blocked``.
An I/O, thread or subprocess wait is reported only when the task holds a
primitive (an idle listener or keep-alive connection is not stuck; an
upstream call that hangs while holding the API limiter is the root).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import Task

from .. import _registry
from ._dump import _is_waiting, describe_tasks, record, task_info, trio_holders  # pyright: ignore[reportPrivateUsage]
from ._model import BlockedOn, TaskInfo, format_group, format_seconds

__all__ = ["SLICE_BUDGET", "StuckScan"]

#: seconds of loop time one slice may take (the pause a check imposes)
SLICE_BUDGET = 0.02
#: groups printed in full in one report (the rest are counted)
MAX_GROUPS = 10

_ENTRY_TASK_NAME = "<TrioToken.run_sync_soon task>"
_NOT_STUCK = frozenset({"sleep", "nursery", "signal", "wait_all_tasks_blocked"})
_EXTERNAL = frozenset({"I/O", "thread", "process"})

_Key = tuple[int, int]


class StuckScan:
    """Runs passes on request (:meth:`kick`, from any thread) and posts reports."""

    def __init__(
        self,
        stuck_after: float,
        token: trio.lowlevel.TrioToken,
        post: Callable[[str], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.stuck_after = stuck_after
        self._token = token
        self._post = post
        self._on_error = on_error
        self._busy = False
        #: (id(task), id(task.coro)) -> (schedule points, parked since), from the last pass
        self._seen: dict[_Key, tuple[int, float]] = {}
        self._reported: set[tuple[int, int, int]] = set()
        #: for tests and the benchmark
        self.passes = 0
        self.reports = 0
        self.longest_slice = 0.0
        self.longest_slice_cpu = 0.0
        self.last_pass_slices = 0
        #: loop time the last complete pass took, all slices together
        self.last_pass_cost = 0.0

    def kick(self) -> None:
        """Start a pass unless one is running. Thread-safe; raises ``RunFinishedError``."""
        if not self._busy:
            self._busy = True
            try:
                self._token.run_sync_soon(self._slice, None)
            except BaseException:
                self._busy = False
                raise

    def _slice(self, p: _Pass | None) -> None:
        t0 = time.perf_counter()
        c0 = time.thread_time()
        # As in dump_tasks(): a slice allocates a record per task it describes
        # and none of it forms a cycle; a gen-2 collection of a 100k-task heap
        # inside a slice would be the whole pause.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if p is None:
                p = _Pass(self)
            done = p.step(t0 + SLICE_BUDGET)
        except BaseException as exc:  # never into trio's run_sync_soon: that is TrioInternalError
            self._busy = False
            self._on_error(exc)
            return
        finally:
            if was_enabled:
                gc.enable()
        took = time.perf_counter() - t0
        self.longest_slice = max(self.longest_slice, took)
        # CPU time of the loop's thread: what the slice cost, without the
        # time a loaded machine kept the process off the CPU
        self.longest_slice_cpu = max(self.longest_slice_cpu, time.thread_time() - c0)
        p.slices += 1
        p.cost += took
        if not done:
            try:
                self._token.run_sync_soon(self._slice, p)
            except trio.RunFinishedError:
                self._busy = False
            return
        self._busy = False
        self.passes += 1
        self.last_pass_slices = p.slices
        self.last_pass_cost = p.cost


class _Group:
    __slots__ = ("count", "example", "infos", "oldest")

    def __init__(self, task: Task) -> None:
        self.count = 0
        self.example = task
        #: a bounded sample of members, for the folded text
        self.infos: list[TaskInfo] = []
        self.oldest = 0.0


class _Pass:
    """One pass over every task, resumable between slices."""

    def __init__(self, scan: StuckScan) -> None:
        self.scan = scan
        self.slices = 0
        self.cost = 0.0
        self.now = trio.current_time()
        root = trio.lowlevel.current_root_task()
        self.stack: list[Task] = []
        if root is not None:
            for n in root.child_nurseries:
                self.stack.extend(t for t in n.child_tasks if t.name != _ENTRY_TASK_NAME)
        self.seen: dict[_Key, tuple[int, float]] = {}
        self.candidates: list[tuple[Task, float, bool]] = []
        self.phase = 1
        self.index = 0
        self.trio_objs: dict[int, tuple[BlockedOn, object]] = {}
        self.groups: dict[tuple[object, ...], _Group] = {}
        self.group_of: dict[int, _Group] = {}
        self.holding: dict[int, list[Any]] = {}
        self.external: dict[int, tuple[Task, TaskInfo, float]] = {}
        self.keys: set[tuple[int, int, int]] = set()

    def step(self, deadline: float) -> bool:
        clock = time.perf_counter
        if self.phase == 1:
            stack = self.stack
            old = self.scan._seen  # pyright: ignore[reportPrivateUsage]
            seen = self.seen
            now = self.now
            limit = self.scan.stuck_after
            n = 0
            while stack:
                task = stack.pop()
                for nursery in task.child_nurseries:
                    stack.extend(nursery.child_tasks)
                if task._next_send_fn is not None:  # pyright: ignore[reportPrivateUsage]
                    continue  # runnable
                key = (id(task), id(task.coro))
                points = task._schedule_points  # pyright: ignore[reportPrivateUsage]
                csd = task.custom_sleep_data
                exact = False
                if csd is not None and _is_waiting(csd):
                    exact = True
                    since: float = csd.since
                else:
                    prev = old.get(key)
                    since = prev[1] if prev is not None and prev[0] == points else now
                seen[key] = (points, since)
                if now - since >= limit:
                    self.candidates.append((task, now - since, exact))
                n += 1
                if n & 63 == 0 and clock() > deadline:
                    return False
            self.scan._seen = seen  # pyright: ignore[reportPrivateUsage]
            self.phase = 2
            # Who holds what, for every registered primitive: one pass over the registry.
            for prim in _registry.live():
                try:
                    for h in prim._trioflow_holders():  # pyright: ignore[reportPrivateUsage]
                        self.holding.setdefault(id(h.borrower), []).append(prim)
                except Exception:
                    continue
        if self.phase == 2:
            cands = self.candidates
            i = self.index
            now = self.now
            objs = self.trio_objs
            while i < len(cands):
                task, waited, exact = cands[i]
                i += 1
                if task._next_send_fn is not None:  # pyright: ignore[reportPrivateUsage]
                    continue  # woke since phase 1
                info = task_info(task, record(task), None, 0, None, now, False, objs)
                b = info.blocked_on
                kind = "unknown" if b is None else b.kind
                if kind in _NOT_STUCK:
                    continue
                if not exact:
                    info.blocked_for = None
                if kind in _EXTERNAL and id(task) not in self.holding:
                    # Kept aside: it counts only if it turns out to hold a trio lock.
                    self.external[id(task)] = (task, info, waited)
                    continue
                self._add(task, info, waited)
                if i & 15 == 0 and clock() > deadline:
                    self.index = i
                    return False
            self.index = i
            self.phase = 3
        # Holders of trio locks some stuck task waits on: an external waiter among them counts.
        for _b, obj in list(self.trio_objs.values()):
            for owner in trio_holders(obj):
                ext = self.external.pop(id(owner), None)
                if ext is not None:
                    self._add(*ext)
        self._report()
        return True

    def _add(self, task: Task, info: TaskInfo, waited: float) -> None:
        key = info.group_key()
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _Group(task)
        g.count += 1
        if len(g.infos) < 1000:
            g.infos.append(info)
        g.oldest = max(g.oldest, waited)
        self.group_of[id(task)] = g
        # built here, a slice at a time, rather than over every stuck task at report time
        self.keys.add((id(task), id(task.coro), task._schedule_points))  # pyright: ignore[reportPrivateUsage]

    def _report(self) -> None:
        scan = self.scan
        # "new" is judged on every stuck task, not only the examples
        keys = self.keys
        new = keys - scan._reported  # pyright: ignore[reportPrivateUsage]
        scan._reported = keys  # pyright: ignore[reportPrivateUsage]
        if not new:
            return
        scan.reports += 1
        groups = sorted(self.groups.values(), key=lambda g: (-g.count, -g.oldest))
        examples = describe_tasks([g.example for g in groups], self.trio_objs)
        example_of = {id(g): e for g, e in zip(groups, examples, strict=True)}
        total = sum(g.count for g in groups)
        n = len(groups)
        lines = [
            f"trioflow: {total} task{'s' if total != 1 else ''} parked longer than "
            f"stuck_after={scan.stuck_after}s, in {n} group{'s' if n != 1 else ''} "
            f"(checked in {self.slices + 1} slice(s), longest {scan.longest_slice * 1e3:.1f} ms)."
        ]
        roots = self._roots(groups, example_of)
        for root_task, _info, _n in roots:
            # named as a root: not reported again when it turns stuck itself
            scan._reported.add(  # pyright: ignore[reportPrivateUsage]
                (id(root_task), id(root_task.coro), root_task._schedule_points)  # pyright: ignore[reportPrivateUsage]
            )
        for _task, root, behind in roots:
            b = root.blocked_on
            what = "?" if b is None else b.describe()
            held = ", ".join(root.holding) or "nothing trioflow knows of"
            lines.append(
                f"likely root: task {root.id} {root.name!r}, waiting on {what}, "
                f"holding {held}: {behind} stuck task{'s' if behind != 1 else ''} "
                "wait behind it."
            )
            lines.append(root.format())
        lines.append("")
        for g in groups[:MAX_GROUPS]:
            ex = example_of[id(g)]
            infos = [ex, *(i for i in g.infos if i.id != ex.id)]
            text = format_group(infos)
            if g.count > len(infos):
                text = text.replace(f"{len(infos)} task", f"{g.count} task", 1)
            head, _, rest = text.partition("\n")
            if not any(i.blocked_for is not None for i in infos):
                head = head.replace("]:", f", at least {format_seconds(g.oldest)}]:", 1)
            lines.append(head + "\n" + rest + "\n")
        if n > MAX_GROUPS:
            rest_count = sum(g.count for g in groups[MAX_GROUPS:])
            lines.append(f"... and {n - MAX_GROUPS} more groups ({rest_count} tasks)\n")
        scan._post("\n".join(lines))  # pyright: ignore[reportPrivateUsage]

    def _roots(
        self, groups: list[_Group], example_of: dict[int, TaskInfo]
    ) -> list[tuple[Task, TaskInfo, int]]:
        """Follow waits-on -> held-by from each group to a stuck task waiting on something else."""
        behind: dict[int, tuple[Task, int]] = {}
        for g in groups:
            seen: set[int] = set()
            cur, cur_task = g, g.example
            root: Task | None = None
            while id(cur) not in seen:
                seen.add(id(cur))
                b = example_of[id(cur)].blocked_on if cur_task is cur.example else None
                if b is None and cur_task is not cur.example:
                    b = describe_tasks([cur_task], self.trio_objs)[0].blocked_on
                nxt = None if b is None or b.obj is None else self._holder(b.obj)
                if nxt is None:
                    root = cur_task if cur is not g else None
                    break
                if nxt[1] is None:  # parked, not yet seen long enough to be stuck itself
                    root = nxt[0]
                    break
                cur_task, cur = nxt[0], nxt[1]
            if root is None:
                continue
            prev = behind.get(id(root))
            behind[id(root)] = (root, (0 if prev is None else prev[1]) + g.count)
        ranked = sorted(behind.values(), key=lambda x: -x[1])[:3]
        infos = describe_tasks([t for t, _ in ranked], self.trio_objs)
        return [(t, info, n) for info, (t, n) in zip(infos, ranked, strict=True)]

    def _holder(self, obj: object) -> tuple[Task, _Group | None] | None:
        """A parked task holding ``obj``, and its group if it is stuck itself."""
        holders: list[object]
        fn = getattr(obj, "_trioflow_holders", None)
        holders = [h.borrower for h in fn()] if fn is not None else trio_holders(obj)
        for h in holders:
            if not isinstance(h, Task):
                continue
            g = self.group_of.get(id(h))
            if g is not None:
                return h, g
            if h._next_send_fn is None and h.coro.cr_frame is not None:  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue, reportUnknownMemberType]
                return h, None
        return None
