from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import outcome
import pytest
import trio
import trio.testing

import trioflow as tf

from .helpers import Gauge, live_tasks


async def double(x: int) -> int:
    await trio.sleep(0)
    return 2 * x


async def aiter_of(values: list[Any]) -> AsyncIterator[Any]:
    for v in values:
        await trio.sleep(0)
        yield v


# -- results and order --------------------------------------------------------------------


@pytest.mark.parametrize("max_at_once", [None, 1, 3, 16])
@pytest.mark.parametrize("source", ["sync", "async"])
async def test_unordered_results(max_at_once: int | None, source: str) -> None:
    values = list(range(50))
    items: Any = values if source == "sync" else aiter_of(values)
    async with tf.amap(double, items, max_at_once=max_at_once) as results:
        got = [r async for r in results]
    assert sorted(got) == [2 * v for v in values]


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("source", ["sync", "async"])
async def test_ordered_keeps_input_order(
    seed: int, source: str, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    values = list(range(rng.randint(0, 60)))
    delays = {v: rng.choice([0, 0.1, 0.5, 3]) for v in values}
    max_at_once = rng.choice([None, 1, 2, 5])

    async def slow(v: int) -> int:
        await trio.sleep(delays[v])
        return v

    items: Any = values if source == "sync" else aiter_of(values)
    async with tf.amap(slow, items, max_at_once=max_at_once, ordered=True) as results:
        got = [r async for r in results]
    assert got == values


async def test_empty_input() -> None:
    for items in ([], aiter_of([])):
        async with tf.amap(double, items, max_at_once=4) as results:
            assert [r async for r in results] == []


async def test_waiting_for_a_result_is_a_checkpoint() -> None:
    async with tf.amap(double, [1], max_at_once=1) as results:
        with trio.testing.assert_checkpoints():
            assert await results.__anext__() == 2
        with pytest.raises(StopAsyncIteration):
            await results.__anext__()


@pytest.mark.parametrize("ordered", [False, True])
async def test_every_step_is_a_cancellation_point_that_loses_nothing(ordered: bool) -> None:
    async def instant(x: int) -> int:
        return x

    async with tf.amap(instant, range(30), max_at_once=4, ordered=ordered) as results:
        await trio.testing.wait_all_tasks_blocked()  # results are buffered now
        for _ in range(3):
            with trio.CancelScope() as scope:
                scope.cancel()
                await results.__anext__()
                pytest.fail("a cancelled step must raise Cancelled")
        got = [r async for r in results]
    assert sorted(got) == list(range(30))
    if ordered:
        assert got == list(range(30))


@pytest.mark.parametrize("max_at_once", [None, 4, 64])
async def test_a_busy_consumer_still_lets_other_tasks_run(max_at_once: int | None) -> None:
    # Results that are ready are handed over without a trip through the
    # scheduler, but not more than 16 in a row: a sibling task keeps running.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async def instant(x: int) -> int:
        return x  # no checkpoint at all

    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with tf.amap(instant, range(500), max_at_once=max_at_once) as results:
            async for _ in results:
                seen.append(ticks)
        nursery.cancel_scope.cancel()
    # The consumer yields at least once per 17 results (16 without a yield,
    # then one that yields). Trio shuffles each pass's tasks, so the ticker
    # may run before the consumer in one pass and after it in the next: two
    # such bursts can share a tick.
    longest = max(len(list(run)) for _, run in itertools.groupby(seen))
    assert longest <= 2 * 17


# -- limits and laziness ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
async def test_max_at_once_and_read_ahead_randomized(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(1, 6)
    ordered = rng.random() < 0.5
    gauge = Gauge()
    pulled = 0
    consumed = 0
    most_ahead = 0

    def source() -> Iterator[int]:
        nonlocal pulled, most_ahead
        for i in range(rng.randint(0, 80)):
            pulled += 1
            most_ahead = max(most_ahead, pulled - consumed)
            yield i

    async def work(i: int) -> int:
        gauge.enter()
        assert gauge.now <= limit
        for _ in range(rng.randint(0, 4)):
            await trio.lowlevel.checkpoint()
        gauge.exit()
        return i

    got: list[int] = []
    async with tf.amap(work, source(), max_at_once=limit, ordered=ordered) as results:
        async for r in results:
            got.append(r)
            consumed += 1
            for _ in range(rng.randint(0, 3)):  # a consumer of varying speed
                await trio.lowlevel.checkpoint()
    assert sorted(got) == list(range(pulled))
    if ordered:
        assert got == list(range(pulled))
    assert gauge.peak <= limit
    # Read-ahead bound: running + buffered results (+ the one being read),
    # or the reorder window when ordered.
    assert most_ahead <= (2 * limit if ordered else 2 * limit + 1)


async def test_workers_start_lazily() -> None:
    started: list[trio.lowlevel.Task] = []

    async def record(i: int) -> int:
        started.append(trio.lowlevel.current_task())
        await trio.sleep(0)
        return i

    async with tf.amap(record, [1, 2, 3], max_at_once=50) as results:
        assert sorted([r async for r in results]) == [1, 2, 3]
        workers = int(repr(results).split(" workers")[0].rsplit(" ", 1)[1])
        assert workers <= 4  # one per item taken, plus the one that found the end
    assert len(set(started)) <= 3


async def test_endless_async_source_with_consumer_that_stops() -> None:
    closed = trio.Event()
    produced = 0

    async def forever() -> AsyncIterator[int]:
        nonlocal produced
        try:
            for i in itertools.count():
                produced += 1
                yield i
        finally:
            closed.set()

    before = live_tasks()
    got: list[int] = []
    async with tf.amap(double, forever(), max_at_once=4, ordered=True) as results:
        async for r in results:
            got.append(r)
            if len(got) == 10:
                break
    assert got == [2 * i for i in range(10)]
    assert closed.is_set()  # the generator we opened was closed, in this run
    assert produced <= 10 + 2 * 4
    assert live_tasks() == before


async def test_source_cleanup_runs_and_cannot_hold_up_the_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cleanup: list[str] = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                yield i
        finally:
            cleanup.append("started")
            await trio.sleep(100)  # cancelled: the feeder is being cancelled
            cleanup.append("never")

    async with tf.amap(double, source(), max_at_once=2) as results:
        async for _ in results:
            break
    assert cleanup == ["started"]
    assert trio.current_time() == 0


async def test_endless_sync_source_with_consumer_that_stops() -> None:
    async with tf.amap(double, itertools.count(), max_at_once=3) as results:
        async for r in results:
            if r > 40:
                break


# -- max_per_second ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 4, 12.5])
@pytest.mark.parametrize("max_at_once", [None, 2, 50])
@pytest.mark.parametrize("source", ["sync", "async"])
async def test_max_per_second_is_exact(
    rate: float, max_at_once: int | None, source: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Each call takes less than two intervals, so two workers never slow the
    # pace: starts must land exactly on k / rate.
    starts: list[float] = []
    interval = 1 / rate

    async def work(i: int) -> int:
        starts.append(trio.current_time())
        await trio.sleep(interval * 1.5)
        return i

    items: Any = list(range(20)) if source == "sync" else aiter_of(list(range(20)))
    async with tf.amap(work, items, max_at_once=max_at_once, max_per_second=rate) as results:
        assert sorted([r async for r in results]) == list(range(20))
    assert starts == pytest.approx([k * interval for k in range(20)])


@pytest.mark.parametrize("seed", range(10))
async def test_max_per_second_never_exceeded_randomized(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    rate = rng.choice([0.5, 3, 10, 100])
    starts: list[float] = []

    async def work(i: int) -> int:
        starts.append(trio.current_time())
        await trio.sleep(rng.choice([0, 0.01, 1, 5]))
        return i

    async with tf.amap(
        work, range(30), max_at_once=rng.choice([None, 1, 4]), max_per_second=rate
    ) as results:
        async for _ in results:
            await trio.sleep(rng.choice([0, 0, 0.3]))  # a consumer of varying speed
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / rate - 1e-9


async def test_unlimited_crew_does_not_pile_up_behind_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 10 starts a second, each call 1 s long: about 10 run at once. An
    # endless source must not grow the crew past that.
    async def work(i: int) -> int:
        await trio.sleep(1)
        return i

    async with tf.amap(work, itertools.count(), max_per_second=10) as results:
        async for r in results:
            if r >= 100:
                break
        workers = int(repr(results).split(" workers")[0].rsplit(" ", 1)[1])
    assert workers <= 13


async def test_run_all_max_per_second(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def stamp() -> None:
        starts.append(trio.current_time())

    await tf.run_all([stamp] * 5, max_per_second=2)
    assert starts == [0, 0.5, 1.0, 1.5, 2.0]


# -- errors -------------------------------------------------------------------------------------


async def test_first_error_cancels_the_rest_and_names_the_item(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[int] = []

    async def work(i: int) -> int:
        await trio.sleep(1 if i != 3 else 0.5)
        if i == 3:
            raise ValueError(f"bad {i}")
        await trio.sleep(10)
        finished.append(i)
        return i

    async def run() -> None:
        async with tf.amap(work, range(100), max_at_once=5) as results:
            async for _ in results:
                pytest.fail("no result should arrive")

    with pytest.raises(ExceptionGroup) as info:
        await run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, ValueError)
    assert exc.__notes__ == ["raised by amap's fn for item 3: 3"]
    assert finished == []
    assert trio.current_time() == 0.5


async def test_errors_raised_during_cancellation_are_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(i: int) -> int:
        if i == 0:
            await trio.sleep(1)
            raise ValueError("first")
        try:
            await trio.sleep_forever()
        finally:
            if i == 1:
                raise KeyError("cleanup of 1")
        return i

    async def run() -> None:
        async with tf.amap(work, range(3), max_at_once=3) as results:
            async for _ in results:
                pass

    with pytest.raises(ExceptionGroup) as info:
        await run()
    assert [type(e) for e in info.value.exceptions] == [ValueError, KeyError]
    assert info.value.exceptions[1].__notes__ == ["raised by amap's fn for item 1: 1"]


async def test_outcomes_mode_runs_everything() -> None:
    async def work(i: int) -> int:
        await trio.sleep(0)
        if i % 3 == 0:
            raise ValueError(i)
        return i

    async with tf.amap(work, range(10), max_at_once=4, outcomes=True) as results:
        pairs = [p async for p in results]
    assert sorted(item for item, _ in pairs) == list(range(10))
    for item, out in pairs:
        if item % 3 == 0:
            assert isinstance(out, outcome.Error)
            with pytest.raises(ValueError, match=str(item)):
                out.unwrap()
        else:
            assert out.unwrap() == item


async def test_outcomes_mode_still_propagates_base_exceptions() -> None:
    class Stop(BaseException):
        pass

    async def work(i: int) -> int:
        raise Stop

    with pytest.RaisesGroup(Stop):
        async with tf.amap(work, [1], outcomes=True) as results:
            async for _ in results:
                pass


@pytest.mark.parametrize("source", ["sync", "async"])
async def test_source_errors_propagate(source: str) -> None:
    def bad_sync() -> Iterator[int]:
        yield 1
        raise OSError("source broke")

    async def bad_async() -> AsyncIterator[int]:
        yield 1
        raise OSError("source broke")

    items: Any = bad_sync() if source == "sync" else bad_async()
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="source broke")):
        async with tf.amap(double, items, max_at_once=2, outcomes=True) as results:
            async for _ in results:
                pass


async def test_body_error_cancels_workers() -> None:
    before = live_tasks()
    with pytest.RaisesGroup(pytest.RaisesExc(KeyError)):
        async with tf.amap(double, itertools.count(), max_at_once=3) as results:
            async for _ in results:
                raise KeyError("consumer")
    assert live_tasks() == before


# -- cancellation -------------------------------------------------------------------------------


async def test_outside_cancellation_leaves_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = live_tasks()

    async def stuck(i: int) -> int:
        await trio.sleep_forever()
        return i

    with trio.move_on_after(3) as scope:
        async with tf.amap(stuck, aiter_of(list(range(100))), max_at_once=7) as results:
            async for _ in results:
                pass
    assert scope.cancelled_caught
    assert live_tasks() == before


async def test_leaving_early_cancels_running_calls(autojump_clock: trio.testing.MockClock) -> None:
    cancelled = 0

    async def slow(i: int) -> int:
        nonlocal cancelled
        try:
            await trio.sleep(i)
        except trio.Cancelled:
            cancelled += 1
            raise
        return i

    async with tf.amap(slow, range(1, 6), max_at_once=5) as results:
        assert await results.__anext__() == 1
    assert cancelled == 4
    assert trio.current_time() == 1


# -- run_all --------------------------------------------------------------------------------------


async def test_run_all_returns_results_in_order(autojump_clock: trio.testing.MockClock) -> None:
    async def value_after(delay: float, value: str) -> str:
        await trio.sleep(delay)
        return value

    fns = [partial(value_after, d, s) for d, s in [(3, "a"), (1, "b"), (2, "c"), (0, "d")]]
    assert await tf.run_all(fns, max_at_once=2) == ["a", "b", "c", "d"]
    assert trio.current_time() == 3  # a (0-3) beside b (0-1), then c (1-3), then d
    assert await tf.run_all([]) == []


async def test_run_all_outcomes() -> None:
    async def boom() -> int:
        raise ValueError("x")

    async def fine() -> int:
        return 1

    got = await tf.run_all([fine, boom, fine], outcomes=True)
    assert [type(o) for o in got] == [outcome.Value, outcome.Error, outcome.Value]
    with pytest.RaisesGroup(ValueError):
        await tf.run_all([fine, boom, fine])


def test_run_all_bad_fns() -> None:
    with pytest.raises(TypeError, match=r"fns\[1\] must be an async function, got 3 \(int\)"):
        trio.run(tf.run_all, [double, 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="fns must be an iterable of async functions, got 5"):
        trio.run(tf.run_all, 5)  # type: ignore[arg-type]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_at_once": 0}, ValueError, "max_at_once must be >= 1, got 0"),
        ({"max_at_once": True}, TypeError, "max_at_once must be an int or None, got True"),
        ({"max_at_once": 2.0}, TypeError, "max_at_once must be an int or None, got 2.0"),
        ({"max_per_second": 0}, ValueError, "max_per_second must be > 0, got 0"),
        ({"max_per_second": -1}, ValueError, "max_per_second must be > 0, got -1"),
        ({"max_per_second": math.nan}, ValueError, "max_per_second must be finite, got nan"),
        ({"max_per_second": "5"}, TypeError, "max_per_second must be a number, got '5'"),
        ({"ordered": "yes"}, TypeError, "ordered must be a bool, got 'yes'"),
        ({"outcomes": 1}, TypeError, "outcomes must be a bool, got 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        tf.amap(double, [1], **kwargs)


def test_bad_fn_and_items() -> None:
    with pytest.raises(TypeError, match="fn must be an async function, got 'f'"):
        tf.amap("f", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="items must be an iterable or an async iterable, got 7"):
        tf.amap(double, 7)  # type: ignore[arg-type]


async def test_results_outside_the_block() -> None:
    cm = tf.amap(double, [1, 2])
    async with cm as results:
        pass
    with pytest.raises(RuntimeError, match="inside its 'async with' block"):
        await results.__anext__()
    with pytest.raises(RuntimeError, match="entered only once"):
        async with cm:
            pass
