"""Regression tests for issue 15, "never hurt the service": the debugging aids
themselves must never block, crash or disarm the program they watch."""

from __future__ import annotations

import io
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import trio
import trio.testing

import trioflow as tf

needs_sigusr1 = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1")
ROOT = str(pathlib.Path(__file__).resolve().parents[2])

FULL_PIPE_PROGRAM = textwrap.dedent(
    """
    import fcntl, os, signal, sys, time
    import trio
    import trioflow as tf

    # Fill stderr (a pipe nobody reads) until a write would block.
    fd = sys.stderr.fileno()
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    async def main():
        inst = tf.debug.install()
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGUSR1)
            await trio.sleep(0.05)
        # the loop still runs: tasks spawn and finish, the run ends
        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(trio.sleep, 0.01)
        print("alive", inst.coalesced_signals, flush=True)

    trio.run(main)
    print("done", flush=True)
    os._exit(0)  # the writer thread is still blocked on the full pipe
    """
)


@needs_sigusr1
def test_two_signals_while_stderr_is_a_full_pipe_never_block_the_program(
    tmp_path: pathlib.Path,
) -> None:
    script = tmp_path / "full_pipe.py"
    script.write_text(FULL_PIPE_PROGRAM)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # never read until the end: it stays full
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith(b"alive"), lines
        assert lines[1] == b"done\n", lines
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.communicate()


@needs_sigusr1
async def test_a_signal_during_a_signal_is_coalesced_not_reentered() -> None:
    out = io.StringIO()
    with tf.debug.install(file=out) as inst:
        handler = signal.getsignal(signal.SIGUSR1)
        assert callable(handler)
        calls: list[int] = []
        real = inst.render

        def render() -> str:
            calls.append(1)
            if len(calls) == 1:
                handler(signal.SIGUSR1, None)  # a second signal lands mid-dump
            return real()

        inst.render = render  # type: ignore[method-assign]
        handler(signal.SIGUSR1, None)
        assert calls == [1]
        assert inst.coalesced_signals == 1
        assert inst.flush(10)
    assert out.getvalue().count("trioflow task dump") == 1


class BrokenFile(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_failing_report_write_is_reported_once_and_swallowed(
    autojump_clock: trio.testing.MockClock, capfd: pytest.CaptureFixture[str]
) -> None:
    api = tf.CapacityLimiter(1, name="api")
    inst = tf.debug.install(signal=None, stuck_after=0.2, file=BrokenFile())
    try:
        async with trio.open_nursery() as nursery:
            await api.acquire()
            nursery.start_soon(api.acquire, name="starved")
            wall = time.monotonic()
            while inst.write_failures < 1 and time.monotonic() - wall < 20:
                await trio.sleep(1)  # virtual time
            inst.write("another report")  # fails too, silently
            assert inst.flush(10)
            api.release()
            nursery.cancel_scope.cancel()
    finally:
        inst.uninstall()
    assert inst.write_failures >= 2
    err = capfd.readouterr().err
    assert err.count("trioflow: writing a debugging report failed") == 1
    assert "BrokenPipeError" in err


async def test_a_failing_check_is_reported_once_and_the_run_goes_on(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioflow.debug import _stuck

    def broken(*_: object) -> object:
        raise ZeroDivisionError("a bug in the check")

    monkeypatch.setattr(_stuck, "task_info", broken)
    out = io.StringIO()
    api = tf.CapacityLimiter(1, name="api")
    inst = tf.debug.install(signal=None, stuck_after=0.2, file=out)
    try:
        async with trio.open_nursery() as nursery:
            await api.acquire()
            nursery.start_soon(api.acquire, name="starved")
            wall = time.monotonic()
            while "a bug in the check" not in out.getvalue() and time.monotonic() - wall < 20:
                await trio.sleep(1)
                inst.flush(1)
            await trio.sleep(5)  # more passes, more failures: not reported again
            api.release()
            nursery.cancel_scope.cancel()
    finally:
        inst.uninstall()
    text = out.getvalue()
    assert text.count("trioflow: the stuck-task check failed and was skipped") == 1
    assert "ZeroDivisionError" in text


@needs_sigusr1
async def test_a_bad_signal_is_rejected_before_anything_changes() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    for bad in (999, -1, signal.SIGKILL):
        with pytest.raises(ValueError, match=rf"signal must be a signal number .*, got {bad}"):
            tf.debug.install(signal=bad)
    with pytest.raises(TypeError, match=r"fold_above must be an int or None, got 'many'"):
        tf.debug.install(fold_above="many")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"file must be a text file or None"):
        tf.debug.install(file=42)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGUSR1) == before


def test_later_runs_work_after_a_rejected_install() -> None:
    async def bad() -> None:
        with pytest.raises(ValueError, match="signal must be"):
            tf.debug.install(signal=999)

    trio.run(bad)

    async def good() -> int:
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep, 0)
        return 7

    assert trio.run(good) == 7


@needs_sigusr1
async def test_handles_uninstalled_out_of_order_keep_the_signal_armed() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    out_a, out_b = io.StringIO(), io.StringIO()
    a = tf.debug.install(file=out_a)
    b = tf.debug.install(file=out_b)
    a.uninstall()  # the older one first
    # still ours: `kill -USR1` must dump, not kill the process
    os.kill(os.getpid(), signal.SIGUSR1)
    await trio.sleep(0)
    assert b.flush(10)
    assert "trioflow task dump" in out_b.getvalue()
    assert out_a.getvalue() == ""
    b.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before


@needs_sigusr1
async def test_uninstall_leaves_a_handler_someone_else_set_afterwards() -> None:
    before = signal.getsignal(signal.SIGUSR1)

    def theirs(signum: int, frame: object) -> None:
        pass

    a = tf.debug.install(file=io.StringIO())
    signal.signal(signal.SIGUSR1, theirs)
    try:
        a.uninstall()
        assert signal.getsignal(signal.SIGUSR1) is theirs
    finally:
        signal.signal(signal.SIGUSR1, before)


async def test_stuck_check_groups_and_names_the_root(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1000 requests wait on a limiter whose holder hangs in an upstream call."""
    out = io.StringIO()
    api = tf.CapacityLimiter(1, name="api")
    a, b = socket.socketpair()
    upstream = trio.socket.from_stdlib_socket(a)
    c, d = socket.socketpair()
    incoming = trio.socket.from_stdlib_socket(c)
    started = trio.Event()

    async def call_upstream() -> None:
        async with api:
            started.set()
            await upstream.recv(1)  # the peer never answers

    async def request() -> None:
        async with api:
            pass

    async def listener() -> None:  # idle I/O that holds nothing: not stuck
        await incoming.recv(1)

    inst = tf.debug.install(signal=None, stuck_after=5, file=out)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener, name="listener")
            nursery.start_soon(call_upstream, name="call-upstream")
            await started.wait()
            for i in range(1000):
                nursery.start_soon(request, name=f"request-{i}")
            wall = time.monotonic()
            while inst.stuck_reports == 0 and time.monotonic() - wall < 30:
                await trio.sleep(1)
            await trio.sleep(20)  # more passes: the same stuck set is not reported again
            nursery.cancel_scope.cancel()
    finally:
        inst.uninstall()
        upstream.close()
        b.close()
        incoming.close()
        d.close()
    text = out.getvalue()
    assert inst.stuck_reports == 1, text
    assert "listener" not in text  # an idle listener holds nothing: never reported
    assert "trioflow: 1000 tasks parked longer than stuck_after=5.0s, in 1 group" in text
    root = text.split("likely root: ", 1)[1]
    assert root.startswith("task ")
    assert "'call-upstream', waiting on I/O" in root.splitlines()[0]
    assert "holding limiter 'api': 1000 stuck tasks wait behind it." in root.splitlines()[0]
    assert "1000 tasks [waiting on limiter 'api' (weight 1 of 1 tokens, 1 borrowed), " in text
    assert '"request-0", "request-1", "request-10" and 997 more names' in text
    assert text.count("\n") < 200  # bounded: no line per task
