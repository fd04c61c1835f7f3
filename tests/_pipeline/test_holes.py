"""Regression tests for the eight holes of issue 13; each fails on the runtime before it.

1. a graceful stop dropped an item already read;
2. a thread stage that never returns blocked stop(grace) and cancellation;
3. a sink that committed was counted unfinished when the grace ended;
4. open() lost the stage failure when its body raised too;
5. dead letters grew without bound;
6. a closed dead_letters= channel failed the run as an "internal error";
7. a sync generator source was closed only at garbage collection;
8. a predicate returning a coroutine passed every item.
"""

from __future__ import annotations

import math
import pathlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf


async def ident(x: Any) -> Any:
    return x


async def consume(run: tf.PipelineRun[Any], into: list[Any]) -> None:
    async for out in run.outputs:
        into.append(out)


# -- 1. a graceful stop drops an item already read -------------------------------------


async def test_issue13_stop_keeps_an_item_a_channel_source_already_handed_over() -> None:
    send, receive = trio.open_memory_channel[int](0)
    got: list[int] = []
    async with tf.Pipeline("ch").map(ident).open(receive) as run, trio.open_nursery() as nursery:
        nursery.start_soon(consume, run, got)
        await trio.testing.wait_all_tasks_blocked()  # the reader waits in receive()
        send.send_nowait(7)  # handed straight to the waiting reader...
        await run.stop(math.inf)  # ...before it runs again
    r = run.report
    assert (r.source_items, r.delivered, r.unfinished) == (1, 1, 0)
    assert got == [7]


async def test_issue13_stop_keeps_an_item_a_thread_backed_source_already_read() -> None:
    """A line read in a thread (as ``trio.open_file`` does) when stop() arrives is sent on."""
    reading = threading.Event()
    release = threading.Event()

    def read_line() -> str:
        reading.set()
        release.wait(10)
        return "line"

    async def lines() -> AsyncIterator[str]:
        while True:
            yield await trio.to_thread.run_sync(read_line)

    got: list[str] = []
    async with tf.Pipeline("file").map(ident).open(lines()) as run, trio.open_nursery() as nursery:
        nursery.start_soon(consume, run, got)
        await trio.to_thread.run_sync(reading.wait)
        nursery.start_soon(run.stop, 5.0)
        await trio.testing.wait_all_tasks_blocked()  # stop() cancelled the read's wait
        release.set()  # the thread returns its line into a cancelled scope
    r = run.report
    assert (r.source_items, r.delivered, r.unfinished) == (1, 1, 0)
    assert got == ["line"]


async def test_issue13_stop_keeps_file_lines_read(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("".join(f"{i}\n" for i in range(1000)))

    async def lines() -> AsyncIterator[str]:
        async with await trio.open_file(path) as f:
            async for line in f:
                yield line

    for _ in range(5):
        got: list[str] = []
        async with (
            tf.Pipeline("file").map(ident).open(lines()) as run,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(consume, run, got)
            while run.report.source_items < 3:
                await trio.sleep(0)
            await run.stop(grace=5)
        r = run.report
        assert r.unfinished == 0, r
        assert r.delivered == r.source_items == len(got)


# -- 2. a thread stage that never returns ---------------------------------------------------


def _stuck_stage() -> tuple[tf.Pipeline[Any, Any], threading.Event, threading.Event]:
    started = threading.Event()
    release = threading.Event()
    # Old runtimes wait for the thread: a watchdog releases it so they fail, not hang.
    watchdog = threading.Timer(20, release.set)
    watchdog.daemon = True
    watchdog.start()

    def stuck(x: int) -> int:
        started.set()
        release.wait()
        return x

    return tf.Pipeline("stuck").map(stuck, executor="thread", name="stuck"), started, release


async def test_issue13_a_stuck_thread_does_not_hold_up_stop_after_the_grace() -> None:
    pipe, started, release = _stuck_stage()
    try:
        async with pipe.open([1, 2]) as run:
            await trio.to_thread.run_sync(started.wait)
            await run.stop(grace=0.05)
        assert not release.is_set()  # the run ended while the thread still ran
        r = run.report
        assert (r.source_items, r.unfinished) == (2, 2)
        assert r.stages["stuck"].abandoned == 1
        assert r.abandoned_threads == 1
        assert "1 thread attempt(s) abandoned" in r.format()
    finally:
        release.set()


async def test_issue13_a_stuck_thread_does_not_hold_up_outer_cancellation() -> None:
    pipe, started, release = _stuck_stage()
    run: tf.PipelineRun[Any] | None = None
    try:
        with trio.move_on_after(0.2):
            async with pipe.open([1]) as run:
                await trio.to_thread.run_sync(started.wait)
                await trio.sleep_forever()
        assert not release.is_set()
        assert run is not None
        assert run.report.unfinished == 1
        assert run.report.stages["stuck"].abandoned == 1
    finally:
        release.set()


# -- 3. a sink's fate is what the sink did ----------------------------------------------


async def test_issue13_a_shielded_commit_that_outlives_the_grace_is_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    committed: list[int] = []

    async def write(batch: list[int]) -> int:
        with trio.CancelScope(shield=True):  # the commit: whole, once begun
            await trio.sleep(2)
            committed.extend(batch)
        return len(batch)

    got: list[int] = []
    pipe = tf.Pipeline("sink").batch(3).map(write, name="write")
    async with pipe.open(range(3)) as run, trio.open_nursery() as nursery:
        nursery.start_soon(consume, run, got)
        await trio.sleep(1)  # the commit is under way
        await run.stop(grace=0.5)  # the grace ends during the commit
    r = run.report
    assert committed == [0, 1, 2]
    assert (r.delivered, r.unfinished) == (3, 0)  # committed -> delivered, once
    assert got == [3]


async def test_issue13_a_commit_cancelled_before_it_ran_is_unfinished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    committed: list[int] = []

    async def write(batch: list[int]) -> int:
        await trio.sleep(2)  # cancelled here: nothing committed
        committed.extend(batch)  # the commit is the last step
        return len(batch)

    pipe = tf.Pipeline("sink").batch(3).map(write, name="write")
    async with pipe.open(range(3)) as run, trio.open_nursery() as nursery:
        nursery.start_soon(consume, run, [])
        await trio.sleep(1)
        await run.stop(grace=0.5)
    r = run.report
    assert committed == []
    assert (r.delivered, r.unfinished) == (0, 3)  # rolled back -> unfinished


# -- 4. open() keeps the stage failure when the body raises -----------------------------


async def test_issue13_open_raises_the_stage_failure_and_the_body_exception() -> None:
    async def boom(x: int) -> int:
        raise ValueError("the stage failed")

    with pytest.RaisesGroup(ValueError, KeyError, match="failed, and the body of open"):
        async with tf.Pipeline("both").map(boom).open([1]) as run:
            await trio.testing.wait_all_tasks_blocked()
            assert not run.running
            raise KeyError("the body failed")


# -- 5. dead letters are bounded ------------------------------------------------------------


async def bad(x: int) -> int:
    raise ValueError(x)


async def test_issue13_a_drained_dead_letters_channel_keeps_counts_not_items() -> None:
    send, receive = trio.open_memory_channel[tf.DeadLetter](math.inf)
    pipe = tf.Pipeline("d", dead_letters=send).map(bad, on_error="dead_letter")
    report = await pipe.run(range(50))
    assert receive.statistics().current_buffer_used == 50  # the channel holds them all
    assert report.dead_letters == ()
    assert (report.dead_lettered, report.dead_letters_omitted) == (50, 50)


async def test_issue13_without_a_channel_a_bounded_number_is_kept() -> None:
    pipe = tf.Pipeline("d", max_dead_letters=3).map(bad, on_error="dead_letter")
    report = await pipe.run(range(10))
    assert [d.item for d in report.dead_letters] == [0, 1, 2]  # the first ones
    assert (report.dead_lettered, report.dead_letters_omitted) == (10, 7)
    assert "(10 dead letters)" in report.format()
    default = await tf.Pipeline("d").map(bad, on_error="dead_letter").run(range(1005))
    assert (len(default.dead_letters), default.dead_letters_omitted) == (1000, 5)
    with pytest.raises(ValueError, match="max_dead_letters must be >= 0, got -1"):
        tf.Pipeline("d", max_dead_letters=-1)


# -- 6. a closed dead_letters= channel ----------------------------------------------------


async def test_issue13_a_closed_dead_letters_channel_fails_clearly_and_keeps_the_letter() -> None:
    send, receive = trio.open_memory_channel[tf.DeadLetter](0)
    receive.close()
    pipe = tf.Pipeline("d", dead_letters=send).map(bad, on_error="dead_letter", name="bad")
    with pytest.raises(
        RuntimeError, match=r"the dead_letters= channel .* of pipeline 'd' is closed"
    ):
        async with pipe.open([1]) as run:
            pass
    r = run.report
    assert (r.source_items, r.dead_lettered) == (1, 1)
    assert [(d.item, d.stage) for d in r.dead_letters] == [(1, "bad")]


# -- 7. generator sources are closed with the run -------------------------------------------


@pytest.mark.parametrize("ending", ["stop", "cancel"])
async def test_issue13_a_sync_generator_source_is_closed_when_the_run_ends(ending: str) -> None:
    closed: list[bool] = []

    def numbers() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    gen = numbers()  # held here: only the run may close it, not the garbage collector
    async with tf.Pipeline("g").map(ident).open(gen) as run, trio.open_nursery() as nursery:
        nursery.start_soon(consume, run, [])
        await trio.sleep(0.01)
        if ending == "stop":
            await run.stop(0)
        else:
            run.cancel()
    assert closed == [True]
    assert gen.gi_frame is None


async def test_issue13_an_async_generator_source_is_closed_on_outer_cancellation() -> None:
    closed: list[bool] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                await trio.sleep(0)
                yield i
                i += 1
        finally:
            closed.append(True)

    agen = numbers()
    with trio.move_on_after(0.01):
        async with tf.Pipeline("g").map(ident).open(agen) as run:
            await consume(run, [])
    assert closed == [True]


# -- 8. an awaitable where a value was expected ---------------------------------------------


async def is_even(x: int) -> bool:
    return x % 2 == 0


async def test_issue13_a_predicate_returning_a_coroutine_is_a_type_error() -> None:
    pipe = tf.Pipeline("f").filter(lambda x: is_even(x), on_error="skip", name="even")  # pyright: ignore[reportUnknownLambdaType]
    with pytest.raises(TypeError, match=r"stage 'even': .* returned an awaitable \(coroutine\)"):
        await pipe.run(range(4))


async def test_issue13_a_thread_function_returning_a_coroutine_is_a_type_error() -> None:
    pipe = tf.Pipeline("f").map(lambda x: is_even(x), executor="thread", on_error="dead_letter")  # pyright: ignore[reportUnknownLambdaType]
    with pytest.raises(TypeError, match="returned an awaitable"):
        await pipe.run(range(4))
