from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import trio
import trio.testing

import trioflow as tf
from trioflow.debug import find_leaks


async def test_receiver_whose_senders_were_all_dropped_unclosed() -> None:
    async def consumer(receive: trio.MemoryReceiveChannel[int]) -> None:
        async for _ in receive:
            pass

    send, receive = trio.open_memory_channel[int](0)
    clone = send.clone()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer, receive, name="consumer")
        await trio.testing.wait_all_tasks_blocked()
        assert find_leaks() == []  # two live send ends: not a leak
        del send
        assert find_leaks() == []  # one live send end
        del clone
        gc.collect()
        leaks = find_leaks()
        assert len(leaks) == 1
        leak = leaks[0]
        assert leak.kind == "channel"
        assert leak.task is not None
        assert leak.task.name == "consumer"
        assert leak.resource.startswith("channel receive 'receive'")
        assert "every send end was garbage-collected without being closed" in leak.detail
        assert str(leak).startswith(f'leak: task {leak.task.id} "consumer": channel receive')
        nursery.cancel_scope.cancel()


async def test_a_closed_channel_is_no_leak_and_a_dropped_receiver_is() -> None:
    send, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 1, name="sender")
        await trio.testing.wait_all_tasks_blocked()
        assert find_leaks() == []
        del receive
        leaks = find_leaks()
        assert [(lk.kind, lk.task.name if lk.task else None) for lk in leaks] == [
            ("channel", "sender")
        ]
        assert "every receive end" in leaks[0].detail
        nursery.cancel_scope.cancel()


async def test_token_held_by_a_suspended_async_generator() -> None:
    api = tf.CapacityLimiter(1, name="api")

    async def rows() -> AsyncIterator[int]:
        async with api:
            yield 1
            yield 2

    gen = rows()
    assert await gen.__anext__() == 1
    # This task holds api's token, but its own frames left the async with:
    leaks = find_leaks()
    assert len(leaks) == 1
    assert leaks[0].kind == "held"
    assert leaks[0].resource == "limiter 'api'"
    assert "held by a suspended async generator" in leaks[0].detail
    assert "rows" in leaks[0].detail
    assert __file__ in leaks[0].detail
    await gen.aclose()
    assert find_leaks() == []


async def test_holders_inside_their_blocks_are_not_leaks() -> None:
    api = tf.CapacityLimiter(2, name="api")

    class Client:
        def __init__(self) -> None:
            self.limiter = api

        async def call(self) -> None:
            await self.limiter.acquire()  # held through self.limiter
            try:
                await trio.sleep_forever()
            finally:
                self.limiter.release()

    async def plain() -> None:
        async with api.hold():
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(Client().call)
        nursery.start_soon(plain)
        await trio.testing.wait_all_tasks_blocked()
        assert find_leaks() == []
        nursery.cancel_scope.cancel()


async def test_trio_lock_held_by_a_suspended_async_generator() -> None:
    lock = trio.Lock()

    async def locked() -> AsyncIterator[None]:
        async with lock:
            yield

    gen = locked()
    await gen.__anext__()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lock.acquire, name="blocked")
        await trio.testing.wait_all_tasks_blocked()
        leaks = find_leaks()
        assert [lk.kind for lk in leaks] == ["held"]
        assert leaks[0].resource.startswith("lock ")
        assert "locked" in leaks[0].detail
        nursery.cancel_scope.cancel()
    await gen.aclose()


async def test_the_running_task_inside_its_block_is_no_leak() -> None:
    api = tf.CapacityLimiter(1, name="api")
    async with api:
        assert find_leaks() == []
    async with api.hold():
        assert find_leaks() == []


async def test_token_kept_by_a_task_that_exited() -> None:
    api = tf.CapacityLimiter(1, name="api")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.acquire, name="forgetful")  # never releases
    leaks = find_leaks()
    assert [(lk.kind, lk.resource, lk.detail) for lk in leaks] == [
        ("held", "limiter 'api'", "held by a task that has exited")
    ]
    (gone,) = api.statistics().borrowers
    api.release_on_behalf_of(gone)
    assert find_leaks() == []


API = tf.CapacityLimiter(1, name="module-api")


async def _reserve_forever() -> None:
    await API.acquire()  # held on purpose for the task's life, through a module global
    await _park()


async def _park() -> None:
    await trio.sleep_forever()


async def test_a_limiter_held_on_purpose_through_a_module_global_is_no_leak() -> None:
    """Issue 15: the holder reaches the limiter through its module's globals."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_reserve_forever, name="reserver")
        await trio.testing.wait_all_tasks_blocked()
        assert find_leaks() == []
        nursery.cancel_scope.cancel()
    (gone,) = API.statistics().borrowers
    API.release_on_behalf_of(gone)
