from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

import pytest
import trio
import trio.testing

import trioflow as tf

needs_sigusr1 = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1")


def busy_until(cond: object, limit: float = 20.0) -> None:
    """Synchronous code that keeps the loop from running (the bug being caught)."""
    deadline = time.monotonic() + limit
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        sum(range(1000))


@needs_sigusr1
async def test_signal_dumps_while_the_loop_is_blocked() -> None:
    out = io.StringIO()
    api = tf.CapacityLimiter(1, name="api")

    spinning: list[bool] = []

    def killer() -> None:  # `kill -USR1 <pid>` from a shell, once the hog spins
        deadline = time.monotonic() + 20
        while not spinning and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGUSR1)

    def hog() -> None:
        # Blocks the loop: no checkpoint.
        spinning.append(True)
        busy_until(lambda: "trioflow task dump" in out.getvalue())

    threading.Thread(target=killer, daemon=True).start()

    async def hog_task() -> None:
        hog()

    with tf.debug.install(file=out):
        async with trio.open_nursery() as nursery:
            await api.acquire()
            nursery.start_soon(api.acquire, name="parked")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(hog_task, name="hog")
            while "trioflow task dump" not in out.getvalue():
                await trio.sleep(0)  # the hog holds the loop until the dump is written
            nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert "trioflow task dump" in text
    hog_entry = text.split('"hog" [running]:\n', 1)[1].split("\n\n", 1)[0]
    # innermost first: the line the signal interrupted, then its callers
    assert "busy_until(...)" in hog_entry.splitlines()[:3]
    assert "hog(...)" in hog_entry
    assert "hog_task(...)" in hog_entry
    assert "[waiting on limiter 'api'" in text


@needs_sigusr1
async def test_uninstall_restores_the_signal_handler() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    inst = tf.debug.install(file=io.StringIO())
    assert signal.getsignal(signal.SIGUSR1) != before
    inst.uninstall()
    inst.uninstall()  # idempotent
    assert signal.getsignal(signal.SIGUSR1) == before


def test_everything_ends_with_the_run() -> None:
    before = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    box: list[tf.debug.Installed] = []

    async def main() -> None:
        box.append(tf.debug.install(slow_step=0.5, file=io.StringIO()))

    trio.run(main)
    inst = box[0]
    assert inst._thread is not None
    assert not inst._thread.is_alive()
    if before is not None:
        assert signal.getsignal(signal.SIGUSR1) == before


async def test_watchdog_reports_a_loop_blocked_by_sync_code() -> None:
    out = io.StringIO()

    def crunch() -> None:
        busy_until(lambda: inst.slow_reports > 0)

    inst = tf.debug.install(signal=None, slow_step=0.05, file=out)
    try:
        await trio.sleep(0.01)  # the watchdog sees a healthy loop first
        crunch()
        await trio.lowlevel.checkpoint()
    finally:
        inst.uninstall()
    text = out.getvalue()
    assert inst.slow_reports == 1  # once per blocked episode
    assert "the trio loop has been blocked for" in text
    assert "slow_step=0.05s" in text
    assert "in crunch\n" in text
    assert "in busy_until\n" in text


async def test_stuck_task_warning(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()
    api = tf.CapacityLimiter(1, name="api")
    inst = tf.debug.install(signal=None, stuck_after=0.2, file=out)
    try:
        async with trio.open_nursery() as nursery:
            await api.acquire()
            nursery.start_soon(api.acquire, name="starved")
            nursery.start_soon(trio.sleep, 10_000, name="napper")  # sleeping is not stuck
            await trio.sleep(1)
            wall = time.monotonic()
            while inst.stuck_reports == 0 and time.monotonic() - wall < 20:
                await trio.sleep(1)  # virtual time: instant
            api.release()
            nursery.cancel_scope.cancel()
    finally:
        inst.uninstall()
    inst.flush()
    text = out.getvalue()
    assert inst.stuck_reports == 1
    assert "trioflow: 1 task parked longer than stuck_after=0.2s, in 1 group" in text
    assert "1 task [waiting on limiter 'api' (weight 1 of 1 tokens, 1 borrowed), " in text
    assert '"starved"' in text
    assert "napper" not in text


async def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"stuck_after must be > 0, got -1"):
        tf.debug.install(stuck_after=-1)
    with pytest.raises(ValueError, match=r"slow_step must be > 0, got 0"):
        tf.debug.install(slow_step=0)
    with pytest.raises(TypeError, match=r"signal must be a signal number or None, got 'USR1'"):
        tf.debug.install(signal="USR1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"on_deadlock must be one of .* got 'panic'"):
        tf.debug.install(on_deadlock="panic")


def test_install_outside_trio_run() -> None:
    with pytest.raises(RuntimeError, match=r"install\(\) must be called from inside trio.run"):
        tf.debug.install()


def test_stderr_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        with tf.debug.install(signal=None) as inst:
            inst.write("hello")

    trio.run(main)
    assert capsys.readouterr().err == "hello\n"
    assert sys.stderr is not None


@needs_sigusr1
async def test_a_signal_dump_folds_990_request_waiters_into_one_group() -> None:
    """Above fold_above, a signal's dump groups tasks by what they do, not by object (issue 15).

    990 request tasks, each waiting on its own Event, are one entry with a
    count, which keeps the creator (exited) and the count of distinct objects.
    """
    out = io.StringIO()

    async def handle(reply: trio.Event) -> None:
        await reply.wait()

    with tf.debug.install(file=out):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                for i in range(990):
                    nursery.start_soon(handle, trio.Event(), name=f"request-{i}")

            nursery.start_soon(serve, name="serve")
            await trio.testing.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGUSR1)
            with trio.fail_after(30):
                while "trioflow task dump" not in out.getvalue():
                    await trio.sleep(0)  # the writer thread puts the dump out
            nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert "(folded: " in text
    assert "tasks > fold_above=100; install(fold_above=None) writes every task)" in text
    groups = [line for line in text.splitlines() if line[:1].isdigit() and " tasks [" in line]
    (group,) = [g for g in groups if "request-" in g]
    assert group.startswith("990 tasks [waiting on event 'reply', 990 distinct objects]: "), group
    assert 'created by "serve" (exited)' in text
    assert "(990 of 990)" in text
    assert group.endswith(" and 987 more names"), group
