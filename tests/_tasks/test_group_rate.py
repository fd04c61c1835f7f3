"""open_task_group(rate=...): task starts paced by a tf.RateLimiter."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trioflow as tf


async def test_spawn_paces_task_starts(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def job() -> None:
        starts.append(trio.current_time())

    t0 = trio.current_time()
    rate = tf.RateLimiter(10, burst=1, name="starts")
    async with tf.open_task_group(limit=3, rate=rate) as tg:
        for _ in range(21):
            await tg.spawn(job)
    # One start per 0.1 s after the first (burst 1): exactly the bucket's pace.
    assert [round(s - t0, 6) for s in starts] == [round(i * 0.1, 6) for i in range(21)]


async def test_start_is_paced_too(autojump_clock: trio.testing.MockClock) -> None:
    async def ready(task_status: trio.TaskStatus[float]) -> None:
        task_status.started(trio.current_time())

    rate = tf.RateLimiter(4, burst=1)
    t0 = trio.current_time()
    async with tf.open_task_group(rate=rate) as tg:
        times = [await tg.start(ready) for _ in range(5)]
    assert [round(t - t0, 6) for t in times] == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_spawn_nowait_would_block_without_a_token_and_keeps_no_slot() -> None:
    rate = tf.RateLimiter(1, burst=1)
    limiter = tf.CapacityLimiter(5)
    async with tf.open_task_group(limit=limiter, rate=rate) as tg:
        tg.spawn_nowait(trio.sleep, 0)
        with pytest.raises(trio.WouldBlock):
            tg.spawn_nowait(trio.sleep, 0)
        # the refused start gave its slot back
        assert limiter.borrowed_tokens == 1


async def test_start_soon_without_a_token_waits_for_it_holding_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = tf.RateLimiter(1, burst=1)
    limiter = tf.CapacityLimiter(5)
    starts: list[float] = []

    async def job() -> None:
        starts.append(trio.current_time())

    t0 = trio.current_time()
    async with tf.open_task_group(limit=limiter, rate=rate) as tg:
        tg.start_soon(job)
        tg.start_soon(job)  # no token now: scheduled, waits for it
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.borrowed_tokens == 1  # the waiting task holds its slot
        assert tg.statistics().waiting == 1
    assert [round(t - t0, 6) for t in starts] == [0.0, 1.0]
    assert limiter.borrowed_tokens == 0


async def test_start_soon_cancelled_while_waiting_for_the_rate_gives_the_slot_back() -> None:
    rate = tf.RateLimiter(1, burst=1)
    limiter = tf.CapacityLimiter(5)
    async with tf.open_task_group(limit=limiter, rate=rate) as tg:
        tg.start_soon(trio.sleep, 0)
        h = tg.start_soon(trio.sleep, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.borrowed_tokens == 1
        h.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert h.cancelled
        assert limiter.borrowed_tokens == 0


async def test_cancelled_while_waiting_for_the_rate_gives_the_slot_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = tf.RateLimiter(1, burst=1)
    limiter = tf.CapacityLimiter(5)
    async with tf.open_task_group(limit=limiter, rate=rate) as tg:
        await tg.spawn(trio.sleep, 0)  # spends the only token
        with trio.move_on_after(0.5) as scope:
            await tg.spawn(trio.sleep, 0)  # holds a slot, waits for the rate
        assert scope.cancelled_caught
        assert tg.statistics().waiting == 0
    assert limiter.borrowed_tokens == 0
    assert rate.statistics().tasks_waiting == 0


async def test_rate_must_be_a_rate_limiter() -> None:
    with pytest.raises(
        TypeError, match=r"^rate must be a rate limiter \(.*\) or None, got 5 \(int\)$"
    ):
        tf.open_task_group(rate=5)  # type: ignore[arg-type]
