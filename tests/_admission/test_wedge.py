"""Issue 14: no sequence of calls parks a waiter forever while tokens are free.

A weighted waiter at the head of a FIFO whose total dropped below its weight
could never be granted, and every lighter waiter queued behind it waited
too. The total gets there four ways, each pinned here: an adaptive algorithm
shrinking it, a user shrinking it, a paused limiter resumed at a smaller
total, and a lane whose cap shrank with its limiter's total. Each test runs
under a deadline on a virtual clock, so a wedge fails fast instead of hanging.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.adaptive import AIMD


async def test_adaptive_shrink_below_a_queued_weight_runs_it_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One permit.drop() shrinks AIMD's limit from 4 to 3 while hold(weight=4)
    # waits; nothing is held then, so no sample could ever grow it back.
    # The heavy head must run (alone: nothing else is borrowed) and its
    # sample lets the algorithm move again; the light waiter behind follows.
    limiter = tf.CapacityLimiter(algorithm=AIMD(initial_limit=4, min_limit=1, max_limit=10))
    order: list[str] = []

    async def heavy() -> None:
        async with limiter.hold(weight=4):
            order.append("heavy")
            assert limiter.borrowed_tokens == 4

    async def light() -> None:
        async with limiter:
            order.append("light")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with limiter.hold() as permit:
                nursery.start_soon(heavy)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(light)
                await trio.testing.wait_all_tasks_blocked()
                permit.drop()
            await trio.testing.wait_all_tasks_blocked()
            assert order  # the heavy head ran without anybody else's release
    assert order == ["heavy", "light"]
    assert limiter.borrowed_tokens == 0
    assert limiter.statistics().tasks_waiting == 0


async def test_adaptive_weight_is_checked_against_max_limit_not_the_current_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(algorithm=AIMD(initial_limit=2, min_limit=1, max_limit=5))
    # Above the current limit (2) but within max_limit: runs once nothing else is held.
    with trio.fail_after(60):
        await limiter.acquire(weight=5)
    assert limiter.borrowed_tokens == 5
    limiter.release()
    with pytest.raises(ValueError, match=r"weight=6 is more than .*max_limit=5"):
        await limiter.acquire(weight=6)
    with pytest.raises(ValueError, match=r"weight=6 is more than .*max_limit=5"):
        limiter.hold(weight=6)
    with pytest.raises(ValueError, match=r"weight=6 is more than .*max_limit=5"):
        limiter.acquire_nowait(weight=6)


async def test_adaptive_oversized_head_waits_for_the_others_to_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(algorithm=AIMD(initial_limit=2, min_limit=1, max_limit=5))
    limiter.acquire_on_behalf_of_nowait("a")
    got = trio.Event()

    async def heavy() -> None:
        await limiter.acquire(weight=4)
        got.set()
        limiter.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heavy)
        await trio.testing.wait_all_tasks_blocked()
        assert not got.is_set()
        # A nowait attempt does not overtake the heavy head.
        with pytest.raises(trio.WouldBlock):
            limiter.acquire_on_behalf_of_nowait("b")
        limiter.release_on_behalf_of("a")
        with trio.fail_after(60):
            await got.wait()


async def test_user_shrink_below_a_queued_weight_fails_it_and_frees_those_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(5, name="api")
    limiter.acquire_on_behalf_of_nowait("holder", weight=5)
    errors: list[BaseException] = []
    served: list[str] = []

    async def heavy() -> None:
        with pytest.raises(ValueError, match="can never be granted") as info:
            await limiter.acquire(weight=4)
        errors.append(info.value)

    async def light() -> None:
        async with limiter:
            served.append("light")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heavy)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(light)
            await trio.testing.wait_all_tasks_blocked()
            limiter.total_tokens = 3  # 4 can never fit now
            await trio.testing.wait_all_tasks_blocked()
            assert len(errors) == 1
            limiter.release_on_behalf_of("holder")
    [exc] = errors
    message = str(exc)
    assert "limiter 'api'" in message
    assert "weight=4" in message
    assert "total_tokens=3" in message
    assert served == ["light"]
    assert limiter.statistics() == tf.LimiterStatistics("api", 3, 0, 0, [])


async def test_resume_from_zero_at_a_smaller_total_fails_who_cannot_fit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(5, name="paused")
    limiter.total_tokens = 0
    outcomes: list[str] = []

    async def ask(weight: int) -> None:
        try:
            await limiter.acquire(weight=weight)
        except ValueError:
            outcomes.append(f"{weight}: too big")
        else:
            outcomes.append(f"{weight}: granted")
            limiter.release()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for weight in (5, 2, 1):
                nursery.start_soon(ask, weight)
                await trio.testing.wait_all_tasks_blocked()
            # Paused: everyone may still fit later, nobody is failed.
            assert limiter.statistics().tasks_waiting == 3
            assert outcomes == []
            limiter.total_tokens = 3
    # The doomed head fails; both behind it fit in 3 and are granted at
    # once (the three tasks then run in any order).
    assert sorted(outcomes) == ["1: granted", "2: granted", "5: too big"]


async def test_a_lane_whose_cap_shrank_below_its_head_fails_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.PriorityLimiter(10, [tf.Lane("a"), tf.Lane("b", limit=0.5)], name="pool")
    a, b = limiter["a"], limiter["b"]
    a.acquire_on_behalf_of_nowait("holder", weight=10)
    errors: list[str] = []
    served: list[str] = []

    async def heavy() -> None:
        try:
            await b.acquire(weight=5)
        except ValueError as exc:
            errors.append(str(exc))

    async def light() -> None:
        async with b:
            served.append("light")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heavy)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(light)
            await trio.testing.wait_all_tasks_blocked()
            limiter.total_tokens = 6  # b's cap: floor(0.5 * 6) = 3 < 5
            await trio.testing.wait_all_tasks_blocked()
            assert len(errors) == 1
            a.release_on_behalf_of("holder")
    assert "lane 'pool/b'" in errors[0]
    assert "weight=5" in errors[0]
    assert "total_tokens=3" in errors[0]
    assert served == ["light"]


async def test_adaptive_lane_head_above_its_cap_runs_when_nothing_is_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.PriorityLimiter(
        4,
        [tf.Lane("a"), tf.Lane("b", limit=0.5)],
        algorithm=AIMD(initial_limit=4, min_limit=1, max_limit=10),
    )
    b = limiter["b"]
    # b's cap is 2 under 4, 5 under max_limit=10: weight 4 is accepted and
    # runs once nothing else is borrowed.
    with trio.fail_after(60):
        async with b.hold(weight=4):
            assert limiter.borrowed_tokens == 4
    with pytest.raises(ValueError, match="weight=6"):
        b.hold(weight=6)
