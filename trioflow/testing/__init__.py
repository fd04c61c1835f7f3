"""Test helpers for Trio programs, and trioflow's pytest plugin.

The plugin (``trioflow.testing._plugin``) is registered through the
``pytest11`` entry point, so installing trioflow enables it. For every test
that pytest-trio runs it:

* **fails a test that leaves tasks behind** — tasks spawned during the test
  that are still alive, running or parked, once the test function has
  returned (in the system nursery, or in a nursery of a fixture), with
  their dump. Tasks in pytest-trio's own ``nursery`` fixture are not
  counted: that fixture cancels them by design. Turn it off with the
  ``trioflow_leak_check = false`` ini option, or per test with
  ``@pytest.mark.trioflow_allow_leaks``;
* **dumps every task when a test hangs** — past ``trioflow_timeout``
  seconds (ini option, wall clock; ``0``, the default, is off) or
  ``@pytest.mark.trioflow_timeout(seconds)``, it prints the task dump and
  fails the test by cancelling it. If synchronous code blocks the loop so
  that even the dump cannot run, the main thread's stack is printed instead.
* **fails a deadlocked test at once** — when every task is asleep for good
  (see :func:`trioflow.debug.install`'s "all tasks are asleep"), with the
  dump and any cycle, without waiting for a timeout. Turn it off with
  ``trioflow_deadlock_check = false``;
* records who spawned each task, so dumps show ``created by``.

:func:`leftover_tasks` is the check itself, for use outside pytest.
"""

from ._leaks import leftover_tasks as leftover_tasks
from ._leaks import live_tasks as live_tasks
