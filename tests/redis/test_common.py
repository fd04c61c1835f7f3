"""The shared pieces of trioflow.redis: parking and waking, bounded calls, the serving block."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trioflow._registry import Holding, Waiting
from trioflow.redis import RedisUnavailableError
from trioflow.redis._common import Parked, call, park, serving, wake


class _Prim:
    kind = "thing"
    name = "t"

    def _trioflow_holders(self) -> list[Holding]:
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return []


async def test_wake_before_park_is_not_lost(autojump_clock: trio.testing.MockClock) -> None:
    """A wake-up that comes during the round trip (before the park) makes the park return."""
    record = Parked(_Prim(), 1)
    assert isinstance(record, Waiting)
    wake(record)
    with trio.fail_after(1), trio.testing.assert_checkpoints():
        assert await park(record) is True
    # Used up: the next park sleeps until its deadline.
    start = trio.current_time()
    assert await park(record, trio.current_time() + 5) is False
    assert trio.current_time() - start == pytest.approx(5)


async def test_park_wake_and_cancel(autojump_clock: trio.testing.MockClock) -> None:
    records: list[Parked] = []
    woke: list[bool] = []

    async def sleeper() -> None:
        records.append(Parked(_Prim(), 2))
        woke.append(await park(records[0], math.inf))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        (record,) = records
        assert record.parked
        assert record.task.custom_sleep_data is record
        wake(record)
    assert woke == [True]
    assert record.task.custom_sleep_data is None
    with trio.move_on_after(1) as scope:
        await park(Parked(_Prim(), 1))
    assert scope.cancelled_caught
    assert trio.lowlevel.current_task().custom_sleep_data is None


async def test_call_maps_failures_and_passes_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def refused() -> None:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(RedisUnavailableError, match="op: ConnectionRefusedError: nobody home"):
        await call("op", 1.0, refused)
    with pytest.raises(RedisUnavailableError, match=r"did not answer within timeout=0\.5s"):
        await call("op", 0.5, trio.sleep_forever)
    with trio.move_on_after(0.1) as scope:
        await call("op", 10.0, trio.sleep_forever)
    assert scope.cancelled_caught


async def test_serving_reraises_the_block_exception_as_is() -> None:
    flushed: list[str] = []
    ran: list[str] = []

    async def background() -> None:
        ran.append("up")
        await trio.sleep_forever()

    async def start(nursery: trio.Nursery) -> None:
        nursery.start_soon(background)

    async def flush() -> None:
        await trio.lowlevel.checkpoint()
        flushed.append("done")

    async def block() -> None:
        async with serving(start, flush):
            await trio.sleep(0)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await block()
    assert flushed == ["done"]
    assert ran == ["up"]

    async def bad_start(nursery: trio.Nursery) -> None:
        raise RedisUnavailableError("no")

    with pytest.raises(RedisUnavailableError, match="no"):
        async with serving(bad_start, flush):
            raise AssertionError("the block must not run")
    # Cancelled from outside while the block runs: the flush still happens, shielded.
    with trio.move_on_after(0.01):
        async with serving(start, flush):
            await trio.sleep_forever()
    assert flushed == ["done", "done", "done"]
