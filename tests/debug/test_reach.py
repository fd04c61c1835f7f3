"""find_stuck(): one test program per hang of issue 15, and the false-positive cases.

Each scenario runs as a *system* task, outside any nursery the test task holds:
the test task can run, so a nursery it refers to could be cancelled by it,
and whatever it refers to counts as reachable (as a goroutine's references do
in Go). trio cancels system tasks when the test's main task returns.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import trioflow as tf

pytestmark = pytest.mark.trioflow_allow_leaks  # the system tasks end with the run


async def stuck_after(scenario: Callable[[], Awaitable[None]]) -> list[tf.debug.Stuck]:
    trio.lowlevel.spawn_system_task(scenario, name="scenario")
    await trio.testing.wait_all_tasks_blocked()
    return tf.debug.find_stuck()


def shape(found: list[tf.debug.Stuck]) -> list[tuple[str, list[str]]]:
    """Kinds and task names (a cycle's names sorted: where a ring starts is arbitrary)."""
    return sorted((s.kind, sorted(t.name for t in s.tasks)) for s in found)


# -- the hangs ---------------------------------------------------------------------


async def test_two_tasks_each_sending_into_the_others_full_channel() -> None:
    async def scenario() -> None:
        s1, r1 = trio.open_memory_channel[int](0)
        s2, r2 = trio.open_memory_channel[int](0)

        async def a() -> None:
            await s1.send(1)
            await r2.receive()

        async def b() -> None:
            await s2.send(1)
            await r1.receive()

        async with trio.open_nursery() as n:
            n.start_soon(a, name="a")
            n.start_soon(b, name="b")

    found = await stuck_after(scenario)
    assert shape(found) == [("cycle", ["a", "b"]), ("task", ["scenario"])]
    text = found[0].format()
    assert text.startswith("Found 2 tasks that only each other could wake (a cycle):")
    assert "waiting on channel send 's1'" in text
    assert "only task " in text
    assert "could wake it, and it is waiting too" in text


async def test_parent_waits_on_its_nursery_child_waits_on_an_event_set_after() -> None:
    async def scenario() -> None:
        done = trio.Event()

        async def child() -> None:
            await done.wait()

        async with trio.open_nursery() as n:
            n.start_soon(child, name="child")
        done.set()  # never reached

    found = await stuck_after(scenario)
    assert shape(found) == [("cycle", ["child", "scenario"])]
    text = found[0].format()
    assert "waiting on event 'done'" in text
    assert "no task that can still run refers to it, so none can ever set() it" in text
    assert "its nursery can only close when its children exit" in text


async def test_a_receiver_whose_forgotten_clone_is_never_closed() -> None:
    async def scenario() -> None:
        send, receive = trio.open_memory_channel[int](0)
        forgotten = send.clone()  # never closed: the consumer waits forever

        async def producer() -> None:
            async with send:
                for i in range(3):
                    await send.send(i)

        async def consumer() -> None:
            async for _ in receive:
                pass

        async with trio.open_nursery() as n:
            n.start_soon(producer, name="producer")
            n.start_soon(consumer, name="consumer")
        await forgotten.aclose()

    found = await stuck_after(scenario)
    assert shape(found) == [("cycle", ["consumer", "scenario"])]
    text = found[0].format()
    assert "waiting on channel receive 'receive'" in text
    assert "open send end(s) are referred to only by tasks that are stuck themselves" in text


async def test_a_pipeline_whose_outputs_nobody_reads() -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def scenario() -> None:
        pipe = tf.Pipeline("events").map(double, workers=2, name="double")
        async with pipe.open(range(10)) as run:
            assert run is not None
            await trio.Event().wait()  # reads nothing from run.outputs

    found = await stuck_after(scenario)
    names = {t.name for s in found for t in s.tasks}
    assert "stage double, worker 1 of 2" in names
    assert "pipeline events, source" in names
    assert "scenario" in names
    assert all(s.tasks for s in found)
    # The report names the pipeline's channels after the stages they join.
    reports = "\n".join(s.format() for s in found)
    assert "channel send 'events: double → outputs'" in reports
    assert "channel send 'events: source → double'" in reports


async def test_a_task_that_outlives_the_request_that_started_it() -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as server:

            async def wait_for_reply(reply: trio.Event) -> None:
                await reply.wait()

            async def request() -> None:
                reply = trio.Event()
                server.start_soon(wait_for_reply, reply, name="orphan")
                # returns without ever setting reply: nothing else refers to it

            server.start_soon(request, name="request")

    found = await stuck_after(scenario)
    # Not a cycle: nobody at all refers to the reply any more.
    assert shape(found) == [("task", ["orphan"]), ("task", ["scenario"])]
    (orphan,) = [s for s in found if s.tasks[0].name == "orphan"]
    assert "none can ever set() it" in orphan.format()
    created = orphan.tasks[0].created_by
    assert created is not None
    assert created.name.endswith("request")
    assert created.exited  # the request that started it is gone
    assert "(exited)" in orphan.format()


async def test_the_task_group_spawn_deadlock() -> None:
    async def scenario() -> None:
        go = trio.Event()
        async with tf.open_task_group(limit=1, name="jobs") as tg:

            async def first() -> None:
                await go.wait()

            await tg.spawn(first)
            await tg.spawn(trio.lowlevel.checkpoint)  # waits for first's slot forever
            go.set()

    found = await stuck_after(scenario)
    assert len(found) == 1
    assert found[0].kind == "cycle"
    text = found[0].format()
    assert "limiter" in text or "task group" in text or "task_group" in text
    assert "none can ever set() it" in text


async def test_hangs_in_a_live_service_are_found() -> None:
    """The hangs above, in a service: a TCP listener, the debug endpoint and a timer run beside them.

    A nursery that a live task refers to (a listener holds its handlers'
    nursery; a task started with ``nursery.start()`` holds its own) is not a
    way to wake a task: cancelling a nursery ends its tasks, it does not give
    them what they wait for. Only an explicit cancel scope counts (below).
    """
    ready = trio.Event()

    async def scenario() -> None:
        async def handle_request(stream: trio.abc.Stream) -> None:
            reply = trio.Event()  # nothing will ever set it
            await reply.wait()

        async def ticker() -> None:
            while True:
                await trio.sleep(1)

        def start_pair(n: trio.Nursery) -> None:
            s1, r1 = trio.open_memory_channel[int](0)
            s2, r2 = trio.open_memory_channel[int](0)

            async def a() -> None:
                await s1.send(1)
                await r2.receive()

            async def b() -> None:
                await s2.send(1)
                await r1.receive()

            n.start_soon(a, name="a")
            n.start_soon(b, name="b")

        async def wait_for_reply(reply: trio.Event) -> None:
            await reply.wait()

        async def request(server: trio.Nursery) -> None:
            server.start_soon(wait_for_reply, trio.Event(), name="orphan")

        async with trio.open_nursery() as n:
            await n.start(tf.debug.serve, 0)
            listeners = await n.start(trio.serve_tcp, handle_request, 0)
            n.start_soon(ticker, name="ticker")
            start_pair(n)
            n.start_soon(request, n, name="request")
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            ready.set()
            async with client:
                await trio.sleep_forever()

    trio.lowlevel.spawn_system_task(scenario, name="scenario")
    await ready.wait()
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    found = tf.debug.find_stuck()
    text = "\n".join(s.format() for s in found)
    # the listener, the endpoint, the timer and the service's own task are not
    # reported; the one hung connection's handler is (trio names its task)
    handlers = [
        s for s in found if any(f.function.endswith("handle_request") for f in s.tasks[0].stack)
    ]
    assert len(handlers) == 1, text
    assert shape(found) == sorted(
        [("cycle", ["a", "b"]), ("task", ["orphan"]), ("task", [handlers[0].tasks[0].name])]
    ), text
    assert "waiting on event 'reply'" in handlers[0].format()
    assert "none can ever set() it" in handlers[0].format()


async def test_a_cancel_scope_a_live_task_holds_could_wake_what_it_encloses() -> None:
    """An explicit scope (a stop() handle) a running task refers to counts as a way to wake."""
    holder: list[trio.CancelScope] = []

    async def scenario() -> None:
        with trio.CancelScope() as scope:
            holder.append(scope)  # this test task could cancel it
            await trio.Event().wait()

    found = await stuck_after(scenario)
    assert found == []
    holder[0].cancel()


# -- not stuck -------------------------------------------------------------------------


async def test_io_timers_sleeps_threads_signals_are_not_stuck() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()

    async def scenario() -> None:
        upstream = trio.socket.from_stdlib_socket(a)
        other = trio.socket.from_stdlib_socket(c)

        async def waits_for_io() -> None:
            await upstream.recv(1)

        async def has_a_deadline() -> None:
            with trio.move_on_after(3600):
                await trio.Event().wait()

        async def in_a_thread() -> None:
            await trio.to_thread.run_sync(time.sleep, 0.5)

        async def on_a_signal() -> None:
            with trio.open_signal_receiver(signal.SIGUSR2) as sigs:
                async for _ in sigs:
                    return

        async def waits_behind_an_io_holder(lock: trio.Lock) -> None:
            async with lock:
                pass

        async def holds_across_io(lock: trio.Lock) -> None:
            async with lock:
                await other.recv(1)

        lock = trio.Lock()
        async with trio.open_nursery() as n:
            n.start_soon(waits_for_io)
            n.start_soon(has_a_deadline)
            n.start_soon(trio.sleep_forever)
            n.start_soon(trio.sleep, 3600)
            n.start_soon(in_a_thread)
            n.start_soon(on_a_signal)
            n.start_soon(holds_across_io, lock)
            await trio.sleep(0)
            n.start_soon(waits_behind_an_io_holder, lock)

    trio.lowlevel.spawn_system_task(scenario, name="scenario")
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    found = tf.debug.find_stuck()
    assert found == [], "\n".join(s.format() for s in found)
    b.send(b"xx")  # let the I/O waiters finish before the sockets go
    d.send(b"xx")
    await trio.sleep(0.6)
    for sock in (a, b, c, d):
        sock.close()


async def test_starvation_is_not_stuck(autojump_clock: trio.testing.MockClock) -> None:
    async def scenario() -> None:
        pool = tf.PriorityLimiter(1, [tf.Lane("fast", priority=0), tf.Lane("slow", priority=1)])

        async def busy(lane: str) -> None:
            while True:
                async with pool.lane(lane):
                    await trio.sleep(1)

        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(busy, "fast")
            n.start_soon(busy, "slow", name="starved")

    trio.lowlevel.spawn_system_task(scenario, name="scenario")
    await trio.sleep(0.5)
    assert tf.debug.find_stuck() == []


async def test_an_event_a_running_task_refers_to_is_not_stuck() -> None:
    event = trio.Event()

    async def scenario() -> None:
        await event.wait()

    found = await stuck_after(scenario)
    assert found == []  # this test task can still set it
    event.set()


def test_find_stuck_needs_a_run() -> None:
    with pytest.raises(RuntimeError, match=r"find_stuck\(\) must be called from inside trio.run"):
        tf.debug.find_stuck()
