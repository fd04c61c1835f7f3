"""The pytest plugin, run the way a user runs it: pytest on a test file, in a subprocess."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRATCH = """
import pytest
import trio
import trio.testing


@pytest.fixture
async def background():
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_clean():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0.001)


async def test_leaks_into_a_fixture_nursery(background):
    event = trio.Event()
    background.start_soon(event.wait, name="forgotten-waiter")


async def test_leaks_a_system_task():
    async def pump():
        while True:
            # long enough to be parked in its sleep whenever the check looks,
            # however loaded the machine (a 1 s sleep was seen runnable in CI)
            await trio.sleep(3600)

    trio.lowlevel.spawn_system_task(pump, name="forgotten-pump")


@pytest.mark.trioflow_allow_leaks
async def test_allowed_to_leak(background):
    background.start_soon(trio.sleep_forever, name="tolerated")


async def test_nursery_fixture_tasks_are_cancelled_by_design(nursery):
    nursery.start_soon(trio.sleep_forever, name="nursery-fixture-task")


async def test_finishing_tasks_get_a_moment(background):
    background.start_soon(trio.lowlevel.checkpoint, name="almost-done")


@pytest.mark.trioflow_timeout(0.5)
async def test_hangs():
    lock = trio.Lock()

    async def holder():
        async with lock:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder, name="lock-holder")
        await trio.testing.wait_all_tasks_blocked()
        async with lock:
            pass


def test_sync_tests_are_untouched():
    assert True


@pytest.mark.trioflow_timeout(30)  # a safety net: the deadlock is caught at once
async def test_deadlocks():
    a, b = trio.Lock(), trio.Lock()
    both = trio.Event()

    async def take(x, y, name):
        async with x:
            if name == "second":
                both.set()
            await both.wait()
            async with y:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, a, b, "first", name="first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, b, a, "second", name="second")


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_deadlocks_under_an_autojump_clock(autojump_clock):
    await trio.sleep(5)  # virtual time: fine
    await trio.Event().wait()  # nobody will ever set it


@pytest.mark.trioflow_timeout(0.2)
async def test_blocks_the_loop():
    import time

    time.sleep(2.8)  # synchronous code: not even the dump can run meanwhile
    await trio.sleep_forever()
"""


def run_pytest(
    tmp_path: pathlib.Path, body: str, ini: str = "", *extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_scratch.py").write_text(body)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\ntrio_mode = true\n{ini}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            # The plugin comes in through its pytest11 entry point, as it
            # does for a user who installed trioflow.
            "-v",
            "-p",
            "no:cacheprovider",
            *extra,
            "test_scratch.py",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def outcomes(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"test_scratch\.py::(\w+) (PASSED|FAILED|ERROR)", stdout))


@pytest.mark.slow
def test_plugin_on_a_scratch_file(tmp_path: pathlib.Path) -> None:
    proc = run_pytest(tmp_path, SCRATCH, "trioflow_check = true\n")
    got = outcomes(proc.stdout)
    assert got == {
        "test_clean": "PASSED",
        "test_leaks_into_a_fixture_nursery": "FAILED",
        "test_leaks_a_system_task": "FAILED",
        "test_allowed_to_leak": "PASSED",
        "test_nursery_fixture_tasks_are_cancelled_by_design": "PASSED",
        "test_finishing_tasks_get_a_moment": "PASSED",
        "test_hangs": "FAILED",
        "test_sync_tests_are_untouched": "PASSED",
        "test_blocks_the_loop": "FAILED",
        "test_deadlocks": "FAILED",
        "test_deadlocks_under_an_autojump_clock": "FAILED",
    }, proc.stdout + proc.stderr
    out = proc.stdout
    fixture_leak = out.split("_ test_leaks_into_a_fixture_nursery _", 1)[1].split("\n_", 1)[0]
    assert "the test left 1 task running or parked after it returned" in fixture_leak
    assert '"forgotten-waiter" [waiting on event' in fixture_leak
    assert "created by" in fixture_leak  # the plugin records spawners
    system_leak = out.split("_ test_leaks_a_system_task _", 1)[1].split("\n_", 1)[0]
    assert '"forgotten-pump" [sleep' in system_leak
    hang = out.split("_ test_hangs _", 1)[1].split("\n_", 1)[0]
    assert "test exceeded trioflow_timeout=0.5s; every task at that moment:" in hang
    assert '"lock-holder" [sleep]' in hang
    # the reachability analysis runs too: nothing is stuck for good here (a sleep holds the lock)
    assert "Found one task that nothing can wake" not in hang
    assert "[waiting on lock 'lock'" in hang
    # the loop was blocked: the main thread's stack went straight to stderr,
    # and once the loop ran again the test was dumped and failed as usual
    dl = out.split("_ test_deadlocks _", 1)[1].split("\n_", 1)[0]
    assert "trioflow: the test deadlocked." in dl
    assert "exceeded" not in dl
    assert "Found one deadlock (2 tasks):" in dl
    assert '"first"' in dl
    assert '"second"' in dl
    jump = out.split("_ test_deadlocks_under_an_autojump_clock _", 1)[1].split("\n_", 1)[0]
    assert "trioflow: all tasks are asleep - deadlock!" in jump
    assert "[waiting on event" in jump
    blocked = out.split("_ test_blocks_the_loop _", 1)[1].split("\n_", 1)[0]
    assert "test exceeded trioflow_timeout=0.2s and the trio loop is blocked" in blocked
    assert "time.sleep(2.8)" in blocked
    assert "When the loop ran again:" in blocked
    assert "test exceeded trioflow_timeout=0.2s; every task at that moment:" in blocked


@pytest.mark.slow
def test_ini_options(tmp_path: pathlib.Path) -> None:
    body = textwrap.dedent(
        """
        import trio

        async def test_leaks():
            trio.lowlevel.spawn_system_task(trio.sleep_forever, name="left-behind")

        async def test_hangs():
            await trio.Event().wait()
        """
    )
    # with the deadlock check off, the Event().wait() hang is caught by the timeout
    proc = run_pytest(
        tmp_path,
        body,
        "trioflow_check = true\ntrioflow_leak_check = false\ntrioflow_timeout = 0.3\n"
        "trioflow_deadlock_check = false\n",
    )
    assert outcomes(proc.stdout) == {"test_leaks": "PASSED", "test_hangs": "FAILED"}, proc.stdout
    assert "exceeded trioflow_timeout=0.3s" in proc.stdout

    proc = run_pytest(tmp_path, body, "trioflow_timeout = soon\n")
    assert "trioflow_timeout ini option must be a number of seconds, got 'soon'" in (
        proc.stdout + proc.stderr
    )


OPT_IN = """
import time

import pytest
import trio


async def test_leaks_unchecked():
    trio.lowlevel.spawn_system_task(trio.sleep_forever, name="left-behind")


@pytest.mark.trioflow_check
async def test_leaks_checked():
    trio.lowlevel.spawn_system_task(trio.sleep_forever, name="left-behind")


@pytest.mark.trioflow_check
async def test_a_slow_finisher_gets_its_grace():
    async def handler():  # a server fixture's handler finishing a 30 ms response
        await trio.to_thread.run_sync(time.sleep, 0.03)

    trio.lowlevel.spawn_system_task(handler, name="finishing")


@pytest.mark.trioflow_timeout(0.2)
async def test_blocks_the_loop_past_the_timeout_then_returns():
    time.sleep(1.0)  # synchronous code: the test cannot be cancelled in time


@pytest.mark.trioflow_timeout(0.5)
async def test_hangs_for_good():
    done = trio.Event()

    async def child():
        await done.wait()

    async with trio.open_nursery() as n:
        n.start_soon(child, name="forever-child")
    done.set()
"""


def test_checks_are_opt_in_with_a_grace_in_time(tmp_path: pathlib.Path) -> None:
    proc = run_pytest(tmp_path, OPT_IN)
    assert outcomes(proc.stdout) == {
        "test_leaks_unchecked": "PASSED",
        "test_leaks_checked": "FAILED",
        "test_a_slow_finisher_gets_its_grace": "PASSED",
        "test_blocks_the_loop_past_the_timeout_then_returns": "FAILED",
        "test_hangs_for_good": "FAILED",
    }, proc.stdout + proc.stderr
    forever = proc.stdout.split("_ test_hangs_for_good _", 1)[1]
    assert "Found 2 tasks that only each other could wake (a cycle):" in forever
    assert '"forever-child":' in forever
    late = proc.stdout.split("_ test_blocks_the_loop_past_the_timeout_then_returns _", 1)[1]
    assert "test exceeded trioflow_timeout=0.2s (it took " in late
    assert "time.sleep(1.0)" in late
    assert "Every task when the test returned:" in late


def test_a_grace_of_zero_fails_the_slow_finisher(tmp_path: pathlib.Path) -> None:
    proc = run_pytest(tmp_path, OPT_IN, "trioflow_leak_grace = 0\n", "-k", "slow_finisher")
    # settle checkpoints are not enough for a 30 ms thread: with no grace it counts as leaked
    assert outcomes(proc.stdout) == {"test_a_slow_finisher_gets_its_grace": "FAILED"}, proc.stdout


SYNC_PROJECT = """
def test_plain():
    assert True
"""

PROBE_CONFTEST = """
import sys


def pytest_sessionfinish(session):
    heavy = sorted(
        m for m in ("trio", "trioflow", "opentelemetry")
        if m in sys.modules
    )
    print("IMPORTED:", heavy, "PLUGIN:", "_trioflow_pytest" in sys.modules)
"""


def test_nothing_is_imported_for_a_project_without_trio(tmp_path: pathlib.Path) -> None:
    (tmp_path / "conftest.py").write_text(PROBE_CONFTEST)
    # A project without pytest-trio, anyio's or hypothesis' plugins (each imports trio).
    others = ("-s", "-p", "no:trio", "-p", "no:anyio", "-p", "no:hypothesispytest")
    proc = run_pytest(tmp_path, SYNC_PROJECT, "", *others)
    assert outcomes(proc.stdout) == {"test_plain": "PASSED"}, proc.stdout + proc.stderr
    assert "IMPORTED: [] PLUGIN: True" in proc.stdout
    # and `-p no:trioflow` removes the plugin itself
    proc = run_pytest(tmp_path, SYNC_PROJECT, "", *others, "-p", "no:trioflow")
    assert "IMPORTED: [] PLUGIN: False" in proc.stdout, proc.stdout + proc.stderr
