"""Settling sources: a source with ``settle(item, fate, exception)`` hears every item's fate once."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow import Fate


class Queue:
    """A sync source that acknowledges: it records each fate as the pipeline settles it."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.settled: list[tuple[Any, Fate, BaseException | None]] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def settle(self, item: Any, fate: Fate, exception: BaseException | None) -> None:
        self.settled.append((item, fate, exception))

    def fates(self) -> dict[Any, Fate]:
        out: dict[Any, Fate] = {}
        for item, fate, _ in self.settled:
            assert item not in out, f"{item!r} settled twice"
            out[item] = fate
        return out


class AsyncQueue(Queue):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Any]:
        for item in self.items:
            await trio.sleep(0.1)
            yield item


def test_the_protocol_is_runtime_checkable() -> None:
    assert isinstance(Queue([]), tf.SettlingSource)
    assert not isinstance([1, 2], tf.SettlingSource)
    assert list(Fate) == sorted(Fate)  # ordered by gravity
    assert max(Fate.DELIVERED, Fate.UNFINISHED) is Fate.UNFINISHED
    assert [f.outcome for f in Fate] == [
        "filtered",
        "delivered",
        "skipped",
        "dead_lettered",
        "unfinished",
    ]
    assert Fate.DELIVERED.stage_outcome == "emitted"


@pytest.mark.parametrize("kind", [Queue, AsyncQueue])
async def test_every_fate_is_settled_once_when_it_is_known(
    kind: type[Queue], autojump_clock: trio.testing.MockClock
) -> None:
    source = kind(list(range(12)))
    seen_at_delivery: list[bool] = []

    async def split(x: int) -> list[int]:
        return [] if x == 5 else [x, x]

    async def write(batch: list[int]) -> int:
        return len(batch)

    pipe = (
        tf.Pipeline("q")
        .map(_dead_on_3, on_error="dead_letter")
        .map(_skip_on_4, on_error="skip")
        .filter(lambda x: x != 6, name="not6")
        .flat_map(split)
        .batch(4)
        .map(write)
    )
    async with pipe.open(source) as run:
        async for _ in run.outputs:
            # A batch's items are settled when the batch leaves the last stage: now.
            seen_at_delivery.append(len(source.settled) > 0)
    fates = source.fates()
    assert set(fates) == set(range(12))
    assert fates[3] is Fate.DEAD_LETTERED
    assert fates[4] is Fate.SKIPPED
    assert fates[5] is Fate.FILTERED  # split into nothing
    assert fates[6] is Fate.FILTERED
    assert all(fates[i] is Fate.DELIVERED for i in (0, 1, 2, 7, 8, 9, 10, 11))
    errors = {item: exc for item, _, exc in source.settled}
    assert isinstance(errors[3], ValueError)
    assert isinstance(errors[4], KeyError)
    assert errors[0] is None
    assert all(seen_at_delivery)
    assert run.report.conserved


async def _dead_on_3(x: int) -> int:
    if x == 3:
        raise ValueError("dead")
    return x


async def _skip_on_4(x: int) -> int:
    if x == 4:
        raise KeyError("skip")
    return x


@pytest.mark.parametrize("ending", ["stop", "cancel", "outer"])
async def test_items_in_flight_are_settled_unfinished_when_the_run_ends(
    ending: str, autojump_clock: trio.testing.MockClock
) -> None:
    source = AsyncQueue(list(range(100)))

    async def slow(x: int) -> int:
        await trio.sleep(10)
        return x

    pipe = tf.Pipeline("q").map(slow, workers=3)
    run: tf.PipelineRun[Any] | None = None
    with trio.move_on_after(5 if ending == "outer" else math.inf):
        async with pipe.open(source) as run:
            await trio.sleep(1)
            if ending == "stop":
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run.stop, 2.0)  # the grace ends mid-call
                    async for _ in run.outputs:
                        pass
            elif ending == "cancel":
                run.cancel()
            else:
                await trio.sleep_forever()
    assert run is not None
    r = run.report
    fates = source.fates()
    assert len(fates) == r.source_items > 0
    assert all(f is Fate.UNFINISHED for f in fates.values())
    assert all(exc is None or isinstance(exc, trio.Cancelled) for _, _, exc in source.settled)


async def test_a_graceful_stop_settles_what_it_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = AsyncQueue(list(range(100)))

    async def slow(x: int) -> int:
        await trio.sleep(1)
        return x

    async with tf.Pipeline("q").map(slow, workers=3).open(source) as run:
        await trio.sleep(0.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.stop, 10.0)
            async for _ in run.outputs:
                pass
    fates = source.fates()
    assert len(fates) == run.report.source_items > 0
    assert all(f is Fate.DELIVERED for f in fates.values())


async def test_an_exception_from_settle_fails_the_run_and_the_others_are_still_settled() -> None:
    class Picky(Queue):
        def settle(self, item: Any, fate: Fate, exception: BaseException | None) -> None:
            super().settle(item, fate, exception)
            if item == 2:
                raise OSError("ack failed")

    source = Picky(list(range(5)))
    with pytest.raises(OSError, match="ack failed") as info:
        async with tf.Pipeline("q").map(ident).open(source) as run:
            pass
    assert any("source.settle() for the source item 2" in n for n in info.value.__notes__)
    fates = source.fates()  # each item read settled once, also after the failure
    assert len(fates) == run.report.source_items
    assert fates[2] is Fate.DELIVERED


async def ident(x: int) -> int:
    return x
