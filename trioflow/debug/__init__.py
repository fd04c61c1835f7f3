"""Goroutine-style task dumps, deadlock and leak detection for Trio programs.

* :func:`dump_tasks` — every live task: stack, what it waits on and for how
  long, what it holds, who spawned it. ``format()`` / ``format(group=True)``
  / ``to_json()``.
* :func:`find_deadlocks` — rings in the wait-for graph, jstack-style.
* :func:`find_leaks` — receivers whose senders were all dropped unclosed,
  tokens held after the block that took them was left.
* :func:`install` — dump on ``SIGUSR1``, spawn records, "all tasks are
  asleep", stuck tasks, a loop blocked by synchronous code.
* :func:`serve` — ``/debug/tasks`` and ``/debug/deadlocks`` over HTTP on
  localhost; ``python -m trioflow dump URL`` prints them, and
  ``python -m trioflow top URL`` is a live console over ``/debug/top``.
* :func:`record_timeline` — an execution timeline for Perfetto's UI (each
  task's steps, waits, wake-ups, limiter counters), or with ``window=`` a
  flight recorder dumped on ``SIGUSR2``.

See ``docs/debugging.md``.
"""

from ._deadlock import Deadlock as Deadlock
from ._deadlock import Leak as Leak
from ._deadlock import find_deadlocks as find_deadlocks
from ._deadlock import find_leaks as find_leaks
from ._dump import dump_tasks as dump_tasks
from ._install import Installed as Installed
from ._install import install as install
from ._model import SCHEMA_VERSION as SCHEMA_VERSION
from ._model import BlockedOn as BlockedOn
from ._model import CreatedBy as CreatedBy
from ._model import FrameInfo as FrameInfo
from ._model import ResourceInfo as ResourceInfo
from ._model import TaskDump as TaskDump
from ._model import TaskInfo as TaskInfo
from ._serve import serve as serve
from ._timeline import Timeline as Timeline
from ._timeline import record_timeline as record_timeline
