"""Test helpers for Trio programs, and trioflow's pytest plugin.

The plugin is registered through the ``pytest11`` entry point as the
top-level module ``_trioflow_pytest``, which imports nothing but pytest:
merely installing trioflow costs a project nothing, and does nothing to a
test that is not a trio test or did not opt in. ``-p no:trioflow`` removes
it. For a trio test that opted in — ``@pytest.mark.trioflow_check``, or
every trio test with the ini option ``trioflow_check = true`` — it:

* **fails a test that leaves tasks behind** — tasks spawned during the test
  that are still alive, running or parked, once the test function has
  returned and a grace of ``trioflow_leak_grace`` seconds (wall clock, 1.0
  by default) has passed (in the system nursery, or in a nursery of a
  fixture), with their dump. Tasks in pytest-trio's own ``nursery`` fixture
  are not counted: that fixture cancels them by design. Switch it off with
  ``trioflow_leak_check = false``, or per test with
  ``@pytest.mark.trioflow_allow_leaks``;
* **fails a deadlocked test at once** — when every task is asleep for good
  (see :func:`trioflow.debug.install`'s "all tasks are asleep"), with the
  dump and any cycle, without waiting for a timeout. Switch it off with
  ``trioflow_deadlock_check = false``;
* records who spawned each task, so dumps show ``created by``.

For any trio test, a **timeout** — ``trioflow_timeout`` seconds (ini
option, wall clock; ``0``, the default, is off) or
``@pytest.mark.trioflow_timeout(seconds)`` — prints the task dump and fails
the test by cancelling it. If synchronous code blocks the loop past the
timeout the test fails as well, also if it then returns, with the main
thread's stack at the moment the timeout expired.

:func:`leftover_tasks` is the check itself, for use outside pytest.
"""

from ._leaks import leftover_tasks as leftover_tasks
from ._leaks import live_tasks as live_tasks
