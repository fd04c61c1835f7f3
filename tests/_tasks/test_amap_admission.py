"""amap and run_all with limiter=, rate= and retry= (issue 14), and their call-time checks."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.adaptive import AIMD


async def test_limiter_bounds_the_calls_and_is_shared(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(2, name="api")
    peak = 0

    async def call(x: int) -> int:
        nonlocal peak
        peak = max(peak, limiter.borrowed_tokens)
        await trio.sleep(1)
        return x

    async with tf.amap(call, range(10), max_at_once=5, limiter=limiter) as results:
        got = sorted([r async for r in results])
    assert got == list(range(10))
    assert peak == 2
    assert limiter.borrowed_tokens == 0


async def test_a_trio_limiter_works_too(autojump_clock: trio.testing.MockClock) -> None:
    limiter = trio.CapacityLimiter(3)
    peak = 0

    async def call(x: int) -> int:
        nonlocal peak
        peak = max(peak, limiter.borrowed_tokens)
        await trio.sleep(1)
        return x

    assert await tf.run_all(
        [functools.partial(call, i) for i in range(7)], limiter=limiter
    ) == list(range(7))
    assert peak == 3


async def test_a_lane_gives_the_calls_its_priority(autojump_clock: trio.testing.MockClock) -> None:
    pool = tf.PriorityLimiter(1, [tf.Lane("hi", priority=0), tf.Lane("lo", priority=1)])
    order: list[str] = []

    async def call(tag: str) -> None:
        order.append(tag)
        await trio.sleep(1)

    pool["lo"].acquire_on_behalf_of_nowait("blocker")
    async with trio.open_nursery() as nursery:
        lo = functools.partial(tf.run_all, [functools.partial(call, "lo")], limiter=pool["lo"])
        hi = functools.partial(tf.run_all, [functools.partial(call, "hi")], limiter=pool["hi"])
        nursery.start_soon(lo)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hi)
        await trio.testing.wait_all_tasks_blocked()
        pool["lo"].release_on_behalf_of("blocker")
    assert order == ["hi", "lo"]


async def test_shared_rate_paces_calls_with_other_users(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = tf.RateLimiter(2, burst=1)
    starts: list[float] = []

    async def call(x: int) -> None:
        starts.append(trio.current_time())

    t0 = trio.current_time()
    assert rate.try_acquire()  # someone else took the only token
    await tf.run_all([functools.partial(call, i) for i in range(3)], max_at_once=3, rate=rate)
    assert [round(t - t0, 6) for t in starts] == [0.5, 1.0, 1.5]


async def test_retry_tries_again_holding_nothing_between_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(1)
    rate = tf.RateLimiter(100, burst=10)
    attempts: list[float] = []
    held_while_sleeping: list[int] = []

    async def flaky(x: int) -> int:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return x * 10

    retry = tf.Retry(attempts=3, backoff=tf.Backoff.constant(1.0))

    async def watch() -> None:
        await trio.sleep(0.5)  # inside the first backoff
        held_while_sleeping.append(limiter.borrowed_tokens)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with tf.amap(flaky, [4], limiter=limiter, rate=rate, retry=retry) as results:
            assert [r async for r in results] == [40]
            assert results.statistics().retried == 2
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] == pytest.approx(1.0)
    assert held_while_sleeping == [0]
    assert limiter.borrowed_tokens == 0
    assert rate.statistics().granted == 3  # one rate token per attempt


async def test_retry_gives_up_after_attempts_and_raises_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def always(x: int) -> int:
        nonlocal calls
        calls += 1
        raise ValueError(f"attempt {calls}")

    with pytest.raises(ExceptionGroup) as info:
        await tf.run_all([functools.partial(always, 1)], retry=tf.Retry(attempts=2))
    assert calls == 2
    assert info.group_contains(ValueError, match="attempt 2")


async def test_retry_only_what_retry_on_names_and_outcomes_keep_the_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def wrong(x: int) -> int:
        nonlocal calls
        calls += 1
        raise KeyError(x)

    retry = tf.Retry(attempts=5, retry_on=ConnectionError)
    async with tf.amap(wrong, [1], retry=retry, outcomes=True) as results:
        [(item, result)] = [r async for r in results]
    assert (item, calls) == (1, 1)
    with pytest.raises(KeyError):
        result.unwrap()


async def test_adaptive_limiter_learns_from_amap_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(algorithm=AIMD(initial_limit=4, min_limit=1, max_limit=8))

    async def overloaded(x: int) -> int:
        await trio.sleep(0.1)
        raise trio.TooSlowError

    async with tf.amap(overloaded, range(3), max_at_once=1, limiter=limiter, outcomes=True) as rs:
        assert len([r async for r in rs]) == 3
    # every call was a drop sample: AIMD cut the limit
    assert limiter.total_tokens < 4
    assert limiter.statistics().algorithm is not None


async def test_cancelled_while_holding_or_waiting_leaves_the_limiter_clean(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(1)

    async def slow(x: int) -> int:
        await trio.sleep(10)
        return x

    with trio.move_on_after(5):
        async with tf.amap(slow, range(4), max_at_once=4, limiter=limiter) as results:
            async for _ in results:
                pass
    assert limiter.statistics().borrowed_tokens == 0
    assert limiter.statistics().tasks_waiting == 0


def sync_fn(x: int) -> int:
    return x


async def agen(x: int):  # type: ignore[no-untyped-def]
    yield x


class SyncCallable:
    def __call__(self, x: int) -> int:
        return x


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (sync_fn, r"^fn must be an async function \(async def\), got <function sync_fn"),
        (functools.partial(sync_fn), r"^fn must be an async function \(async def\)"),
        (agen, r"^fn must be an async function that returns a result, .*async generator"),
        (SyncCallable(), r"whose __call__ is sync"),
        (42, r"^fn must be an async function, got 42 \(int\)"),
    ],
)
async def test_fn_is_checked_at_the_call(
    fn: object, message: str, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(TypeError, match=message):
        tf.amap(fn, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message.replace("^fn", "^fns\\[0\\]")):
        await tf.run_all([fn])  # type: ignore[list-item]


async def test_async_callables_and_partials_are_fine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    assert await tf.run_all([functools.partial(add, 1, 2), lambda: add(3, 4)]) == [3, 7]
    async with tf.amap(AsyncCallable(), [5]) as results:
        assert [r async for r in results] == [5]


async def test_bad_limiter_rate_retry_name_the_parameter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"^limiter must be a limiter \(.*\), got 3 \(int\)"):
        tf.amap(f, [1], limiter=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^rate must be a rate limiter \(.*\) or None, got 2.5"):
        tf.amap(f, [1], rate=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^retry must be a tf.Retry or None, got 3"):
        await tf.run_all([functools.partial(f, 1)], retry=3)  # type: ignore[arg-type]
    pool = tf.PriorityLimiter(2, [tf.Lane("a")])
    with pytest.raises(TypeError, match=r"pass one of its lanes, limiter=limiter.lane\(name\)"):
        tf.amap(f, [1], limiter=pool)  # type: ignore[arg-type]


async def test_async_for_without_async_with_says_what_to_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"'async with tf.amap\(fn, items\) as results:'"):
        async for _ in tf.amap(f, [1]):  # type: ignore[attr-defined]
            pass


async def test_statistics_reads_the_run(autojump_clock: trio.testing.MockClock) -> None:
    gate = trio.Event()

    async def wait(x: int) -> int:
        await gate.wait()
        return x

    async with tf.amap(wait, range(5), max_at_once=3) as results:
        await trio.testing.wait_all_tasks_blocked()
        st = results.statistics()
        assert (st.workers, st.running, st.items_read, st.results_ready) == (3, 3, 3, 0)
        gate.set()
        got = sorted([r async for r in results])
    assert got == list(range(5))
