"""RedisRateLimiter against a real redis-server: sharing, fairness, cancellation, failure."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.redis import RedisRateLimiter, RedisUnavailableError

from .conftest import make_client
from .servers import RedisServer


async def _tat(client: Any, limiter: RedisRateLimiter) -> float:
    raw = await client.get(limiter.key)
    return 0.0 if raw is None else float(raw)


async def test_burst_then_rate_bound(client: Any, name: str) -> None:
    limiter = RedisRateLimiter(client, 200, name=name, burst=10)
    start = trio.current_time()
    for _ in range(30):
        await limiter.acquire()
    elapsed = trio.current_time() - start
    # GCRA's promise: no window of w seconds grants more than rate*w + burst.
    assert 200 * elapsed + 10 + 1 >= 30
    st = limiter.statistics()
    assert st.granted == 30
    assert st.tasks_waiting == 0
    assert st.unavailable == 0


async def test_replicas_share_one_bucket_fairly(redis_server: RedisServer, name: str) -> None:
    """Three 'replicas' (own clients, own limiter objects) draw from one bucket, in equal shares."""
    rate, seconds = 300, 1.5
    counts = [0, 0, 0]
    async with (
        make_client(redis_server) as c0,
        make_client(redis_server) as c1,
        make_client(redis_server) as c2,
    ):
        limiters = [RedisRateLimiter(c, rate, name=name, burst=5) for c in (c0, c1, c2)]

        async def worker(i: int) -> None:
            while True:
                await limiters[i].acquire()
                counts[i] += 1

        start = trio.current_time()
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    for _ in range(4):
                        nursery.start_soon(worker, i)
        elapsed = trio.current_time() - start
    total = sum(counts)
    assert total <= rate * elapsed + 5 + 12  # + the 12 grants that may be sleeping at the end
    for c in counts:
        # FIFO at the server: equal demand gets equal shares.
        assert abs(c - total / 3) <= 0.25 * total / 3, counts


async def test_cancelled_waiter_gives_its_reservation_back(client: Any, name: str) -> None:
    limiter = RedisRateLimiter(client, 1, name=name, burst=1)
    await limiter.acquire()
    before = await _tat(client, limiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire)
        while limiter.statistics().tasks_waiting == 0:
            await trio.sleep(0.001)
        reserved = await _tat(client, limiter)
        assert reserved == pytest.approx(before + 1e6, abs=2)
        nursery.cancel_scope.cancel()
    after = await _tat(client, limiter)
    assert after == pytest.approx(before, abs=2)
    st = limiter.statistics()
    assert st.granted == 1
    assert st.tasks_waiting == 0


async def test_cancel_during_round_trip_takes_nothing(client: Any, name: str) -> None:
    """Cancelled before or during the (shielded) round trip: the tokens go back.

    With rate=0.001 each token moves the bucket's tat 1,000 s ahead, so
    ``(tat - now) / 1e9 µs`` counts the tokens still taken on the server.
    """
    limiter = RedisRateLimiter(client, 0.001, name=name, burst=40)
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire()
    assert scope.cancelled_caught
    assert await _tat(client, limiter) == 0.0
    successes = 0
    for i in range(30):
        with trio.move_on_after(0.00005 * (i % 6)) as scope:
            await limiter.acquire()
        if not scope.cancelled_caught:
            successes += 1
    now = (await client.time()).timestamp() * 1e6
    tat = await _tat(client, limiter)  # 0 once every token went back (the key is deleted)
    taken = 0 if tat == 0 else round((tat - now) / 1e9)
    assert taken == successes == limiter.statistics().granted
    assert successes < 30  # some attempts really were cancelled


async def test_dump_shows_the_waiting_task(client: Any, name: str) -> None:
    limiter = RedisRateLimiter(client, 0.5, name=name, burst=1)
    await limiter.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, name="waiter")
        while limiter.statistics().tasks_waiting == 0:
            await trio.sleep(0.001)
        dump = tf.debug.dump_tasks()
        (info,) = [t for t in dump.tasks if t.name == "waiter"]
        assert info.blocked_on is not None
        assert (info.blocked_on.kind, info.blocked_on.name) == ("redis_rate_limiter", name)
        assert f"redis rate limiter {name!r}" in dump.format()
        nursery.cancel_scope.cancel()


async def test_checkpoints_and_surface(client: Any, name: str) -> None:
    limiter = RedisRateLimiter(client, 1000, name=name, burst=3)
    with trio.testing.assert_checkpoints():
        await limiter.acquire()
    with trio.testing.assert_checkpoints():
        async with limiter:
            pass
    with trio.testing.assert_no_checkpoints():
        assert limiter.try_acquire() is False
    assert await limiter.acquire_if_free(1) is True
    limiter.rate = 0.001
    slow = RedisRateLimiter(client, 0.001, name=f"{name}-slow", burst=3)
    assert await slow.acquire_if_free(3) is True  # a full bucket
    assert await slow.acquire_if_free(1) is False  # the next token is 1,000 s away
    assert slow.statistics().granted == 3
    assert limiter.statistics().rate == 0.001
    assert name in repr(limiter)
    assert limiter in tf._registry.live("redis_rate_limiter")


async def test_bad_arguments(client: Any, name: str) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        RedisRateLimiter(client, 0, name=name)
    with pytest.raises(TypeError, match="name must be a str"):
        RedisRateLimiter(client, 1, name=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="burst must be >= 1, got 0"):
        RedisRateLimiter(client, 1, name=name, burst=0)
    with pytest.raises(ValueError, match="timeout must be"):
        RedisRateLimiter(client, 1, name=name, timeout=-1)
    with pytest.raises(ValueError, match="on_unavailable must be 'raise' or 'allow', got 'x'"):
        RedisRateLimiter(client, 1, name=name, on_unavailable="x")  # type: ignore[arg-type]
    limiter = RedisRateLimiter(client, 1, name=name, burst=2)
    with pytest.raises(ValueError, match="n=3 is more than burst=2"):
        await limiter.acquire(3)
    with pytest.raises(TypeError, match="n must be an int"):
        await limiter.acquire(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n=3 is more than burst=2"):
        limiter.try_acquire(3)


async def test_redis_down_fails_closed_or_open(own_redis: RedisServer, name: str) -> None:
    async with make_client(own_redis) as c:
        closed = RedisRateLimiter(c, 100, name=name, timeout=0.5)
        opened = RedisRateLimiter(c, 100, name=name, timeout=0.5, on_unavailable="allow")
        await closed.acquire()
        own_redis.stop()
        with trio.fail_after(5):
            with pytest.raises(RedisUnavailableError, match=f"redis_rate_limiter {name!r}"):
                await closed.acquire()
            await opened.acquire()
        assert closed.statistics().unavailable == 1
        assert opened.statistics().allowed_unavailable == 1
        own_redis.start()
        # The server came back empty (no script cache, no bucket): calls work again.
        with trio.fail_after(5):
            await closed.acquire()
        assert closed.statistics().granted == 2


async def test_redis_slow_times_out_and_recovers(own_redis: RedisServer, name: str) -> None:
    async with make_client(own_redis) as c:
        limiter = RedisRateLimiter(c, 1000, name=name, burst=5, timeout=0.3)
        await limiter.acquire()
        own_redis.pause()
        try:
            with trio.fail_after(5):
                with pytest.raises(
                    RedisUnavailableError, match=r"did not answer within timeout=0\.3s"
                ):
                    await limiter.acquire()
        finally:
            own_redis.resume()
        # The timed-out request's late answer must not be read as the next one's.
        for _ in range(5):
            with trio.fail_after(5):
                await limiter.acquire()
        # (Not the key's presence: at 1000/s the bucket refills, and its key
        # expires, within milliseconds, which a slow run can take.)
        st = limiter.statistics()
        assert (st.granted, st.unavailable, st.tasks_waiting) == (6, 1, 0)


async def test_plugs_into_every_rate_parameter(client: Any, name: str) -> None:
    """A RedisRateLimiter is a tf.Pacer: stages, amap, run_all and task groups pace on it."""
    limiter = RedisRateLimiter(client, 100, name=name, burst=1)
    assert isinstance(limiter, tf.Pacer)

    async def echo(x: int) -> int:
        return x

    n = 8
    start = trio.current_time()
    pipe = tf.Pipeline("paced").map(echo, workers=4, rate=limiter)
    async with pipe.open(range(n)) as run:
        assert sorted([x async for x in run.outputs]) == list(range(n))
    async with tf.amap(echo, range(n), max_at_once=4, rate=limiter) as results:
        assert sorted([x async for x in results]) == list(range(n))
    assert sorted(await tf.run_all([lambda i=i: echo(i) for i in range(n)], rate=limiter)) == list(
        range(n)
    )
    async with tf.open_task_group(limit=4, rate=limiter) as tg:
        handles = [await tg.spawn(echo, i) for i in range(n)]
        with pytest.raises(trio.WouldBlock):
            tg.spawn_nowait(echo, 0)  # try_acquire never grants: only Redis knows
    assert sorted(h.result() for h in handles) == list(range(n))
    elapsed = trio.current_time() - start
    # Every call took one token from the shared bucket: GCRA spaces 4n grants
    # with burst 1 at least (4n - 1) / rate apart, on the server's clock.
    assert limiter.statistics().granted == 4 * n
    assert elapsed >= (4 * n - 1) / 100 * 0.95
