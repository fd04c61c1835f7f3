from __future__ import annotations

import gc
import math
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from tests.limiter_conformance import *  # noqa: F403
from tests.limiter_conformance import Subject
from trioflow import _registry


def _resize(limiter: Any, n: int | float) -> None:
    limiter.total_tokens = n


@pytest.fixture
def subject() -> Subject:
    return Subject(make=lambda n: tf.CapacityLimiter(n), resize=_resize)


@pytest.mark.parametrize(
    ("value", "exc", "msg"),
    [
        (-1, ValueError, r"^total_tokens must be >= 0, got -1$"),
        (1.5, TypeError, r"^total_tokens must be an int or math.inf, got 1.5 \(float\)$"),
        ("3", TypeError, r"^total_tokens must be an int or math.inf, got '3' \(str\)$"),
        (None, TypeError, r"^total_tokens must be an int or math.inf, got None"),
        (True, TypeError, r"^total_tokens must be an int or math.inf, got True"),
        (-math.inf, TypeError, r"^total_tokens must be an int or math.inf"),
    ],
)
async def test_bad_total_tokens(value: object, exc: type[Exception], msg: str) -> None:
    with pytest.raises(exc, match=msg):
        tf.CapacityLimiter(value)  # type: ignore[arg-type]
    limiter = tf.CapacityLimiter(1)
    with pytest.raises(exc, match=msg):
        limiter.total_tokens = value  # type: ignore[assignment]
    assert limiter.total_tokens == 1


async def test_bad_name_and_algorithm() -> None:
    with pytest.raises(TypeError, match=r"^name must be a str or None, got 3 \(int\)$"):
        tf.CapacityLimiter(1, name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^algorithm must be an algorithm from trioflow.adaptive"):
        tf.CapacityLimiter(1, algorithm="vegas")  # type: ignore[arg-type]


async def test_zero_is_valid_and_inf_is_unlimited() -> None:
    paused = tf.CapacityLimiter(0)
    with pytest.raises(trio.WouldBlock):
        paused.acquire_nowait()
    # A weight above a paused total is not an error: it fits once resumed.
    with pytest.raises(trio.WouldBlock):
        paused.acquire_nowait(weight=5)
    unlimited = tf.CapacityLimiter(math.inf)
    for i in range(100):
        unlimited.acquire_on_behalf_of_nowait(i, weight=1000)
    assert unlimited.borrowed_tokens == 100_000
    assert unlimited.available_tokens == math.inf
    assert "/inf" in repr(unlimited)


async def test_repr_and_default_name() -> None:
    a = tf.CapacityLimiter(4)
    b = tf.CapacityLimiter(4, name="api")
    assert a.name.startswith("limiter-")
    assert a.name != tf.CapacityLimiter(1).name
    await b.acquire(weight=3)
    r = repr(b)
    assert r.startswith("<trioflow.CapacityLimiter 'api' at 0x")
    assert r.endswith(", 3/4 with 0 waiting>")
    b.release()


async def test_registry_is_weak_and_knows_holders_and_waiters() -> None:
    limiter = tf.CapacityLimiter(1, name="registered")
    assert limiter in _registry.live("limiter")
    await limiter.acquire()

    async def waiter() -> None:
        async with limiter:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        holders = limiter._trioflow_holders()
        assert [(h.borrower, h.weight) for h in holders] == [(trio.lowlevel.current_task(), 1)]
        (w,) = limiter._trioflow_waiters()
        assert w.primitive is limiter
        assert w.weight == 1
        assert w.since <= trio.current_time()
        # The parked task carries its waiter record, for O(1) dumps.
        assert w.task.custom_sleep_data is w
        limiter.release()
    assert w.task.custom_sleep_data is None
    del w, holders
    limiter = None
    gc.collect()
    assert all(p.name != "registered" for p in _registry.live())


async def test_release_partial_then_rest() -> None:
    limiter = tf.CapacityLimiter(5)
    await limiter.acquire(weight=5)
    limiter.release(weight=2)
    assert limiter.borrowed_tokens == 3
    assert limiter.statistics().borrowers == [trio.lowlevel.current_task()]
    limiter.release()
    assert limiter.borrowed_tokens == 0
    assert limiter.statistics().borrowers == []


async def test_release_from_another_task_wakes_waiters() -> None:
    limiter = tf.CapacityLimiter(1)
    limiter.acquire_on_behalf_of_nowait("job")
    got: list[str] = []

    async def waiter() -> None:
        async with limiter:
            got.append("in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        limiter.release_on_behalf_of("job")
    assert got == ["in"]


async def test_hold_context_enters_once() -> None:
    limiter = tf.CapacityLimiter(2)
    ctx = limiter.hold()
    async with ctx:
        with pytest.raises(RuntimeError, match="only once"):
            await ctx.__aenter__()
    assert limiter.borrowed_tokens == 0


async def test_waiting_since_uses_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    limiter = tf.CapacityLimiter(1)
    await limiter.acquire()
    start = trio.current_time()

    async def waiter() -> None:
        async with limiter:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(30)
        (w,) = limiter._trioflow_waiters()
        assert w.since == start
        assert trio.current_time() - w.since == 30
        limiter.release()
