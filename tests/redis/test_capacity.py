"""RedisCapacityLimiter against a real redis-server: exclusion across replicas, FIFO,
cancellation, wake-ups, leases (kill, loss), failure."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.redis import (
    LeaseLostError,
    RedisCapacityLimiter,
    RedisUnavailableError,
    open_capacity_limiter,
)

from .conftest import make_client
from .servers import RedisServer


async def _wait_for(predicate: Any, limit: float = 10.0) -> None:
    """Wait (real time, bounded) until ``predicate()``: for state another process or Redis changes."""
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.002)


def _settled(limiter: RedisCapacityLimiter) -> bool:
    """Every local release has reached Redis."""
    return not limiter._pending_release and not limiter._releasing


async def test_is_a_limiter_and_basic_surface(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 3, name=name) as limiter:
        assert isinstance(limiter, tf.Limiter)
        assert isinstance(limiter, RedisCapacityLimiter)
        assert limiter in tf._registry.live("redis_limiter")
        with trio.testing.assert_checkpoints():
            await limiter.acquire(weight=2)
        st = limiter.statistics()
        assert (st.borrowed_tokens, st.tasks_waiting) == (2, 0)
        assert st.borrowers == [trio.lowlevel.current_task()]
        assert limiter.available_tokens == 1
        assert "2/3" in repr(limiter)
        assert name in repr(limiter)
        with pytest.raises(RuntimeError, match="already holding"):
            await limiter.acquire()
        with trio.testing.assert_no_checkpoints():
            limiter.release()
        async with limiter.hold(3) as permit:
            assert isinstance(permit, tf.Permit)
            permit.drop()
            assert (await limiter.global_statistics()).borrowed_tokens == 3
        with trio.testing.assert_checkpoints():
            async with limiter:
                pass
        with pytest.raises(trio.WouldBlock):
            limiter.acquire_nowait()
        await _wait_for(lambda: _settled(limiter))
        g = await limiter.global_statistics()
        assert (g.borrowed_tokens, g.leases, g.waiting) == (0, 0, 0)


async def test_bad_arguments(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 3, name=name) as limiter:
        for bad, exc, msg in (
            (0, ValueError, r"weight must be >= 1, got 0"),
            (1.5, TypeError, r"weight must be an int, got 1.5"),
            (True, TypeError, r"weight must be an int, got True"),
            (4, ValueError, r"weight=4 is more than .* total_tokens=3"),
        ):
            with pytest.raises(exc, match=msg):
                await limiter.acquire(weight=bad)
            with pytest.raises(exc, match=msg):
                limiter.hold(weight=bad)
        with pytest.raises(RuntimeError, match="isn't holding"):
            limiter.release()
        await limiter.acquire(weight=2)
        with pytest.raises(ValueError, match="weight=3 is more than the 2 tokens"):
            limiter.release(weight=3)
        limiter.release()
    # Used after its block closed (its tasks are gone): a clear error, not a silent leak.
    with pytest.raises(RuntimeError, match="is not open: use it inside"):
        await limiter.acquire()
    with pytest.raises(TypeError, match="name must be a str"):
        async with open_capacity_limiter(client, 3, name=None):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="ttl must be a finite number"):
        async with open_capacity_limiter(client, 3, name=name, ttl=0):
            pass
    with pytest.raises(ValueError, match="total_tokens must be >= 0, got -1"):
        async with open_capacity_limiter(client, -1, name=name):
            pass


async def test_exclusion_across_replicas_randomized(redis_server: RedisServer, name: str) -> None:
    """Three replicas (own clients and limiters) never hold more than total together."""
    total = 4
    held = 0
    peak = 0
    async with (
        make_client(redis_server) as c0,
        make_client(redis_server) as c1,
        make_client(redis_server) as c2,
        open_capacity_limiter(c0, total, name=name) as l0,
        open_capacity_limiter(c1, total, name=name) as l1,
        open_capacity_limiter(c2, total, name=name) as l2,
    ):
        limiters = [l0, l1, l2]
        done = [0, 0, 0]

        async def worker(i: int, seed: int) -> None:
            nonlocal held, peak
            rng = random.Random(seed)
            for _ in range(6):
                weight = rng.randint(1, total)
                async with limiters[i].hold(weight):
                    held += weight
                    peak = max(peak, held)
                    assert held <= total
                    for _ in range(rng.randrange(3)):
                        await trio.sleep(0)
                    held -= weight
                done[i] += 1

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for seed in range(12):
                    nursery.start_soon(worker, seed % 3, seed)
        assert done == [24, 24, 24]
        assert peak <= total
        await _wait_for(lambda: all(_settled(lim) for lim in limiters))
        g = await l0.global_statistics()
        assert (g.borrowed_tokens, g.leases, g.waiting) == (0, 0, 0)


async def test_fifo_across_replicas_heavy_head_not_overtaken(
    redis_server: RedisServer, name: str
) -> None:
    async with (
        make_client(redis_server) as ca,
        make_client(redis_server) as cb,
        open_capacity_limiter(ca, 3, name=name) as a,
        open_capacity_limiter(cb, 3, name=name) as b,
    ):
        order: list[str] = []
        await a.acquire(weight=2)

        async def take(lim: RedisCapacityLimiter, weight: int, tag: str) -> None:
            async with lim.hold(weight):
                order.append(tag)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, b, 3, "heavy")
            await _wait_for(lambda: b.statistics().tasks_waiting == 1)
            g = await b.global_statistics()
            assert g.waiting == 1
            # One token is free, but the heavy head is first: the light one waits behind it.
            nursery.start_soon(take, a, 1, "light")
            await _wait_for(lambda: a.statistics().tasks_waiting == 1)
            await trio.sleep(0.05)
            assert order == []
            a.release()
        assert order == ["heavy", "light"]


async def test_lowering_the_total_fails_a_waiter_that_can_never_fit(
    redis_server: RedisServer, name: str
) -> None:
    """The wedge of a weighted head, across replicas: the total drops below a waiting
    head's weight. The head fails with a ValueError naming the limiter, its weight and
    the new total, leaves the shared line, and the lighter waiter behind it (on the
    other replica) is served. Lowering to 0 is a pause, not a failure."""
    async with (
        make_client(redis_server) as ca,
        make_client(redis_server) as cb,
        open_capacity_limiter(ca, 3, name=name) as a,
        open_capacity_limiter(cb, 3, name=name) as b,
    ):
        await a.acquire(weight=1)
        failures: list[ValueError] = []
        light_done = trio.Event()

        async def heavy() -> None:
            try:
                await b.acquire_on_behalf_of("heavy", weight=3)
            except ValueError as exc:
                failures.append(exc)

        async def light() -> None:
            async with a.hold(1):
                light_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(heavy)
            await _wait_for(lambda: b.statistics().tasks_waiting == 1)
            # in the shared line, not only parked here (else light could go first)
            with trio.fail_after(10):
                while (await b.global_statistics()).waiting != 1:
                    await trio.sleep(0.002)
            nursery.start_soon(light)
            await _wait_for(lambda: a.statistics().tasks_waiting == 1)
            # paused: the heavy head keeps waiting
            b.total_tokens = 0
            await trio.sleep(0.05)
            assert failures == []
            assert b.statistics().tasks_waiting == 1
            # every replica agrees on the new total (the docs' rule)
            a.total_tokens = 2
            b.total_tokens = 2
            with trio.fail_after(10):
                await light_done.wait()
        (exc,) = failures
        assert str(exc) == (
            f"weight=3 can never be granted by redis_limiter {name!r}: its total_tokens=2 now"
        ), str(exc)
        assert "heavy" not in b.statistics().borrowers
        a.release()
        await _wait_for(lambda: _settled(a) and _settled(b))
        g = await a.global_statistics()
        assert (g.borrowed_tokens, g.leases, g.waiting) == (0, 0, 0)


async def test_waiting_is_wake_up_driven(redis_server: RedisServer, name: str) -> None:
    """With ttl=600 a waiter's own re-check comes after 300 s: only a wake-up can serve it in time."""
    async with (
        make_client(redis_server) as ca,
        make_client(redis_server) as cb,
        open_capacity_limiter(ca, 1, name=name, ttl=600) as a,
        open_capacity_limiter(cb, 1, name=name, ttl=600) as b,
    ):
        await a.acquire()
        got = trio.Event()

        async def waiter() -> None:
            async with b:
                got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await _wait_for(lambda: b.statistics().tasks_waiting == 1)
            a.release()
            with trio.fail_after(10):
                await got.wait()


async def test_cancelled_waiter_leaves_the_shared_line(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 2, name=name) as limiter:
        await limiter.acquire(weight=1)
        light_done = trio.Event()

        async def light() -> None:
            async with limiter.hold(1):
                light_done.set()

        async with trio.open_nursery() as nursery:
            heavy_scope = trio.CancelScope()

            async def heavy() -> None:
                with heavy_scope:
                    await limiter.acquire_on_behalf_of("heavy", weight=2)

            nursery.start_soon(heavy)
            await _wait_for(lambda: limiter.statistics().tasks_waiting == 1)
            nursery.start_soon(light)
            await _wait_for(lambda: limiter.statistics().tasks_waiting == 2)
            # Cancelling the heavy head lets the light waiter behind it go.
            heavy_scope.cancel()
            with trio.fail_after(10):
                await light_done.wait()
        assert "heavy" not in limiter.statistics().borrowers
        limiter.release()
        await _wait_for(lambda: _settled(limiter))
        g = await limiter.global_statistics()
        assert (g.borrowed_tokens, g.leases, g.waiting) == (0, 0, 0)


async def test_cancel_at_the_fast_path_gives_back(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 2, name=name) as limiter:
        for enter in (
            lambda: limiter.acquire(),
            lambda: limiter.acquire(weight=2),
            lambda: limiter.hold().__aenter__(),
        ):
            with trio.CancelScope() as scope:
                scope.cancel()
                await enter()
            assert scope.cancelled_caught
            assert limiter.borrowed_tokens == 0
        # Cancelled in the middle of the round trip: the grant, if any, goes back.
        for _ in range(20):
            with trio.move_on_after(0.0001):
                await limiter.acquire()
            assert limiter.statistics().borrowers == []
        await _wait_for(lambda: _settled(limiter))
        assert (await limiter.global_statistics()).borrowed_tokens == 0


async def test_to_thread_and_resize(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 2, name=name) as limiter:
        import threading
        import time

        inside = 0
        peak = 0
        lock = threading.Lock()

        def work() -> int:
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.005)
            with lock:
                inside -= 1
            return 7

        results: list[int] = []

        async def one() -> None:
            results.append(await trio.to_thread.run_sync(work, limiter=limiter))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
        assert results == [7] * 6
        assert peak <= 2

        limiter.total_tokens = 0  # paused
        got = trio.Event()

        async def waiter() -> None:
            async with limiter:
                got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await _wait_for(lambda: limiter.statistics().tasks_waiting == 1)
            limiter.total_tokens = math.inf  # growing wakes the waiter
            with trio.fail_after(10):
                await got.wait()


async def test_dump_says_waiting_on_redis_limiter(client: Any, name: str) -> None:
    async with open_capacity_limiter(client, 1, name=name) as limiter:
        await limiter.acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire, name="waiter")
            # Parked, not in the middle of a round trip.
            await _wait_for(lambda: any(r.parked for r in limiter._waiters.values()))
            dump = tf.debug.dump_tasks()
            (info,) = [t for t in dump.tasks if t.name == "waiter"]
            assert info.blocked_on is not None
            assert (info.blocked_on.kind, info.blocked_on.name) == ("redis_limiter", name)
            assert f"waiting on redis limiter {name!r}" in dump.format()
            (me,) = [t for t in dump.tasks if t.state == "running"]
            assert name in " ".join(me.holding)
            nursery.cancel_scope.cancel()
        limiter.release()


async def test_sigkilled_replica_gives_its_slots_back_within_ttl(
    redis_server: RedisServer, name: str
) -> None:
    ttl = 1.0
    script = Path(__file__).with_name("replica_holder.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(redis_server.port), name, "4", "2", str(ttl)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == b"holding"
        async with (
            make_client(redis_server) as c,
            open_capacity_limiter(c, 4, name=name, ttl=ttl) as limiter,
        ):
            assert (await limiter.global_statistics()).borrowed_tokens == 2
            await limiter.acquire(weight=2)
            got = trio.Event()

            async def more() -> None:
                await limiter.acquire_on_behalf_of("more", weight=2)
                got.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(more)
                await _wait_for(lambda: limiter.statistics().tasks_waiting == 1)
                proc.send_signal(signal.SIGKILL)
                start = trio.current_time()
                with trio.fail_after(10 * ttl):
                    await got.wait()
                recovered = trio.current_time() - start
            assert recovered < 10 * ttl
            limiter.release()
            limiter.release_on_behalf_of("more")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_lost_lease_cancels_the_hold_and_is_reported(client: Any, name: str) -> None:
    """The server dropped the lease (as after a partition longer than the TTL)."""
    async with open_capacity_limiter(client, 2, name=name, ttl=0.6) as limiter:
        body_cancelled = False

        async def held() -> None:
            nonlocal body_cancelled
            async with limiter.hold(2):
                # What the server does to a lease nobody renewed: it is gone.
                await client.delete([limiter._keys[0], limiter._keys[1]])
                await client.set(limiter._keys[5], "0")
                try:
                    await trio.sleep(30)
                except trio.Cancelled:
                    body_cancelled = True
                    raise

        with pytest.raises(LeaseLostError, match="expired on the server"):
            await held()
        assert body_cancelled
        assert limiter.statistics().leases_lost == 1
        # async with / release(): reported at release.
        await limiter.acquire()
        await client.delete([limiter._keys[0], limiter._keys[1]])
        await client.set(limiter._keys[5], "0")
        await _wait_for(lambda: limiter.statistics().leases_lost == 2)
        with pytest.raises(LeaseLostError):
            limiter.release()
        assert limiter.borrowed_tokens == 0


async def test_partition_longer_than_ttl_loses_the_lease(own_redis: RedisServer, name: str) -> None:
    """Redis SIGSTOPped for longer than the TTL: the holder learns its lease is gone."""
    async with (
        make_client(own_redis) as c,
        open_capacity_limiter(c, 1, name=name, ttl=0.6, timeout=0.2) as limiter,
    ):

        async def held() -> None:
            async with limiter.hold():
                own_redis.pause()
                await trio.sleep(30)

        try:
            with trio.fail_after(10), pytest.raises(LeaseLostError):
                await held()
        finally:
            own_redis.resume()
        assert limiter.statistics().leases_lost == 1
        # Redis is back: the limiter works again.
        with trio.fail_after(10):
            async with limiter:
                pass


async def test_redis_down_fails_closed(own_redis: RedisServer, name: str) -> None:
    async with (
        make_client(own_redis) as c,
        open_capacity_limiter(c, 2, name=name, timeout=0.3) as limiter,
    ):
        own_redis.stop()
        with (
            trio.fail_after(10),
            pytest.raises(RedisUnavailableError, match=f"redis_limiter {name!r}"),
        ):
            await limiter.acquire()
        assert limiter.borrowed_tokens == 0
        assert limiter.statistics().tasks_waiting == 0
        own_redis.start()
        with trio.fail_after(10):
            async with limiter:
                pass
    own_redis.stop()
    async with make_client(own_redis) as c:
        with trio.fail_after(10), pytest.raises(RedisUnavailableError, match="could not subscribe"):
            async with open_capacity_limiter(c, 2, name=name, timeout=0.3):
                pass


async def test_redis_slow_times_out(own_redis: RedisServer, name: str) -> None:
    async with (
        make_client(own_redis) as c,
        open_capacity_limiter(c, 2, name=name, timeout=0.3) as limiter,
    ):
        own_redis.pause()
        try:
            with (
                trio.fail_after(10),
                pytest.raises(RedisUnavailableError, match=r"within timeout=0\.3s"),
            ):
                await limiter.acquire()
        finally:
            own_redis.resume()
        with trio.fail_after(10):
            async with limiter.hold(2):
                pass


async def test_random_cancellations_never_leak_or_overcommit(
    redis_server: RedisServer, name: str
) -> None:
    """Many seeds: waiters on two replicas cancelled at random points (before, during and
    after round trips, while parked): exclusion holds and nothing is left in Redis."""
    total = 3
    async with (
        make_client(redis_server) as ca,
        make_client(redis_server) as cb,
        open_capacity_limiter(ca, total, name=name) as a,
        open_capacity_limiter(cb, total, name=name) as b,
    ):
        for seed in range(8):
            rng = random.Random(seed)
            held = 0

            async def worker(lim: RedisCapacityLimiter, rng: random.Random) -> None:
                nonlocal held
                for _ in range(4):
                    weight = rng.randint(1, total)
                    with trio.move_on_after(rng.choice([0, 0.0002, 0.001, 0.005, 1.0])):
                        async with lim.hold(weight):
                            held += weight
                            try:
                                assert held <= total
                                await trio.sleep(rng.choice([0, 0.001]))
                            finally:
                                held -= weight

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for i in range(8):
                        nursery.start_soon(worker, (a, b)[i % 2], random.Random(rng.random()))
            assert held == 0
            await _wait_for(lambda: _settled(a) and _settled(b))
            for lim in (a, b):
                st = lim.statistics()
                assert (st.borrowed_tokens, st.tasks_waiting, st.borrowers) == (0, 0, [])
            g = await a.global_statistics()
            assert (g.borrowed_tokens, g.leases, g.waiting) == (0, 0, 0), seed
