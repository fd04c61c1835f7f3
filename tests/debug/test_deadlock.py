from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.debug import find_deadlocks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _crosswise(first: object, second: object, names: tuple[str, str]) -> None:
    """Two tasks take two primitives in opposite orders, each after the other took its first."""
    both_in = trio.Event()
    count = [0]

    async def take(x: object, y: object) -> None:
        async with x:  # type: ignore[attr-defined]
            count[0] += 1
            if count[0] == 2:
                both_in.set()
            await both_in.wait()
            async with y:  # type: ignore[attr-defined]
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, first, second, name=names[0])
        nursery.start_soon(take, second, first, name=names[1])
        await trio.testing.wait_all_tasks_blocked()
        found = find_deadlocks()
        nursery.cancel_scope.cancel()
    return found  # type: ignore[return-value]


async def test_two_limiters_taken_crosswise() -> None:
    a = tf.CapacityLimiter(1, name="a")
    b = tf.CapacityLimiter(1, name="b")
    found = await _crosswise(a, b, ("worker-1", "worker-2"))
    assert len(found) == 1
    dl = found[0]
    assert dl.kind == "cycle"
    assert {t.name for t in dl.tasks} == {"worker-1", "worker-2"}
    assert {r.name for r in dl.resources if r is not None} == {"a", "b"}
    # cycle order: each task waits on what the next one holds
    for i in range(len(dl.tasks)):
        nxt = dl.tasks[(i + 1) % len(dl.tasks)]
        res = dl.resources[i]
        assert res is not None
        assert res.describe() in nxt.holding
    report = str(dl)
    assert report.startswith("Found one deadlock (2 tasks):\n")
    for t in dl.tasks:
        assert f'task {t.id} "{t.name}":' in report
        assert t.format() in report  # the stacks follow
    assert "waiting on limiter 'a'" in report
    assert "waiting on limiter 'b'" in report
    assert "which is held by task" in report


async def test_trio_lock_order_inversion() -> None:
    lock_a = trio.Lock()
    lock_b = trio.Lock()
    found = await _crosswise(lock_a, lock_b, ("left", "right"))
    assert len(found) == 1
    assert {t.name for t in found[0].tasks} == {"left", "right"}
    objs = {id(r.obj) for r in found[0].resources if r is not None}
    assert objs == {id(lock_a), id(lock_b)}
    assert f"<{id(lock_a):#x}>" in str(found[0])


async def test_mixed_ring_of_three() -> None:
    a = tf.CapacityLimiter(1, name="a")
    b = trio.Lock()
    c = trio.CapacityLimiter(1)
    gate = trio.Event()

    async def take(x: object, y: object) -> None:
        async with x:  # type: ignore[attr-defined]
            await gate.wait()
            async with y:  # type: ignore[attr-defined]
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, a, b, name="t1")
        nursery.start_soon(take, b, c, name="t2")
        nursery.start_soon(take, c, a, name="t3")
        await trio.testing.wait_all_tasks_blocked()
        # and one that merely waits behind the ring: not part of it
        nursery.start_soon(take, a, b, name="behind")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        found = find_deadlocks()
        nursery.cancel_scope.cancel()
    assert len(found) == 1
    names = [t.name for t in found[0].tasks]
    assert sorted(names) == ["t1", "t2", "t3"]
    # t1 -> (waits on b, held by) t2 -> (c, t3) -> (a, t1)
    start = names.index("t1")
    assert names[start:] + names[:start] == ["t1", "t2", "t3"]


async def test_a_ring_with_a_way_out_is_not_a_deadlock() -> None:
    """t1 waits on t2, t2 waits on a limiter also held by a sleeping task: the
    sleeper will release, so nothing is reported."""
    a = tf.CapacityLimiter(1, name="a")
    b = tf.CapacityLimiter(2, name="b")
    gate = trio.Event()

    async def take(x: tf.CapacityLimiter, y: tf.CapacityLimiter) -> None:
        async with x:
            await gate.wait()
            async with y:
                pass

    async def sleeper() -> None:
        async with b:
            await trio.sleep(1000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        nursery.start_soon(take, a, b, name="t1")
        nursery.start_soon(take, b, a, name="t2")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert find_deadlocks() == []
        nursery.cancel_scope.cancel()


async def test_a_thread_holder_breaks_the_ring() -> None:
    """A to_thread call holding a token releases it when the thread ends."""
    a = tf.CapacityLimiter(1, name="a")
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def in_thread() -> None:
        trio.from_thread.run(release.wait, trio_token=token)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.to_thread.run_sync(in_thread, limiter=a))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(a.acquire)
        await trio.testing.wait_all_tasks_blocked()
        assert find_deadlocks() == []
        release.set()
        nursery.cancel_scope.cancel()


def _run(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_global_deadlock_all_tasks_asleep() -> None:
    """Every task waits on something only another task could provide: Go's
    "all goroutines are asleep", reported once, then exit status 2."""
    proc = _run(
        """
        import trio, trioflow as tf

        async def main():
            tf.debug.install(signal=None, on_deadlock="exit")
            send, receive = trio.open_memory_channel(0)
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive.receive, name="consumer")
                nursery.start_soon(done.wait, name="waiter")
                await trio.Lock().acquire()
                await trio.sleep(0.01)          # a deadline: not yet asleep
                await send.send(1)              # consumer takes it, then waits again...
                nursery.start_soon(receive.receive, name="consumer-2")
                await done.wait()               # ...and now nobody can wake anybody

        trio.run(main)
        """
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert err.count("all tasks are asleep - deadlock!") == 1
    assert '"waiter" [waiting on event' in err
    assert '"consumer-2" [waiting on channel receive' in err
    assert "[waiting on event 'done'" in err


@pytest.mark.slow
def test_no_false_positive_for_timers_sockets_and_threads() -> None:
    """Waiting on a timer, a socket fed by another process, or a thread is
    not a deadlock: the program finishes and nothing is reported."""
    proc = _run(
        """
        import subprocess, sys, time, trio, trioflow as tf

        async def main():
            tf.debug.install(signal=None, on_deadlock="exit")
            event = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(event.wait)
                # 1. only a timer pending
                await trio.sleep(0.2)
                # 2. only a socket pending, fed by another process, no deadline
                listener = trio.socket.socket()
                await listener.bind(("127.0.0.1", 0))
                listener.listen()
                port = listener.getsockname()[1]
                child = subprocess.Popen([sys.executable, "-c",
                    "import socket, time; time.sleep(0.3); "
                    f"socket.create_connection(('127.0.0.1', {port})).sendall(b'x')"])
                conn, _ = await listener.accept()
                assert await conn.recv(1) == b"x"
                conn.close(); listener.close()
                # 3. only a thread pending
                await trio.to_thread.run_sync(time.sleep, 0.2)
                event.set()
            child.wait()
            print("finished")

        trio.run(main)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stdout
    assert "deadlock" not in proc.stderr


def test_a_signal_handler_that_could_wake_a_task_suppresses_the_report() -> None:
    """A SIGTERM handler may set an event via run_sync_soon: not provably asleep."""
    proc = _run(
        """
        import os, signal, threading, trio, trioflow as tf

        async def main():
            tf.debug.install(on_deadlock="exit")  # its own SIGUSR1 handler does not count
            stop = trio.Event()
            token = trio.lowlevel.current_trio_token()
            signal.signal(signal.SIGTERM, lambda *_: token.run_sync_soon(stop.set))
            # The "other process" that will send SIGTERM, without a thread of ours:
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c",
                f"import os, signal, time; time.sleep(0.3); os.kill({os.getpid()}, signal.SIGTERM)"])
            await stop.wait()
            print("stopped cleanly")

        trio.run(main)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "stopped cleanly" in proc.stdout
    assert "deadlock" not in proc.stderr


@pytest.mark.slow
def test_the_example_reports_both_deadlocks() -> None:
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "deadlock.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("2 deadlock(s) found\n")
    assert out.count("Found one deadlock (2 tasks):") == 2
    for name in ("checkout-1", "refund-1", "audit", "ledger"):
        assert f'"{name}"' in out
    assert "waiting on limiter 'payments'" in out
    assert "waiting on lock 'ledger_lock'" in out
