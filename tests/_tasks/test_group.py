from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow import _registry

from .helpers import Gauge, live_tasks


async def value_after(delay: float, value: Any) -> Any:
    await trio.sleep(delay)
    return value


async def fail_after(delay: float, exc: BaseException) -> None:
    await trio.sleep(delay)
    raise exc


# -- results, handles, statistics ---------------------------------------------------


async def test_results_and_statistics(autojump_clock: trio.testing.MockClock) -> None:
    async with tf.open_task_group(limit=3, name="calc") as tg:
        handles = [await tg.spawn(value_after, (i % 4) / 10, i * i) for i in range(10)]
        assert tg.statistics().running <= 3
    assert [h.result() for h in handles] == [i * i for i in range(10)]
    assert all(h.done and not h.cancelled for h in handles)
    stats = tg.statistics()
    assert stats == tf.TaskGroupStatistics(
        name="calc", limit=3, running=0, waiting=0, finished=10, failed=0, cancelled=0, returned=10
    )
    assert handles[0].name.endswith("value_after")
    assert "returned" in repr(handles[0])


async def test_task_names_and_repr() -> None:
    async with tf.open_task_group(name="named", limit=2) as tg:
        h = tg.start_soon(trio.sleep, 0, name="sleeper")
        assert h.name == "<not started>"
        assert "1/2 running" in repr(tg)  # spawned: it holds its slot already
        await trio.testing.wait_all_tasks_blocked()
        assert h.name == "sleeper"
    assert tg.name == "named"
    assert tg.on_error == "cancel"


async def test_result_before_done_raises() -> None:
    async with tf.open_task_group() as tg:
        h = await tg.spawn(trio.sleep, 1)
        with pytest.raises(RuntimeError, match="has not finished"):
            h.result()
        assert not h.done
        h.cancel()


async def test_wait_for_one_task(autojump_clock: trio.testing.MockClock) -> None:
    async with tf.open_task_group() as tg:
        slow = await tg.spawn(value_after, 5, "slow")
        fast = await tg.spawn(value_after, 1, "fast")
        await fast.wait()
        assert fast.result() == "fast"
        assert not slow.done
        assert trio.current_time() == 1
        with trio.testing.assert_checkpoints():
            await fast.wait()  # already done: still a checkpoint
        # cancelling a wait leaves the task alone
        with trio.move_on_after(1):
            await slow.wait()
        assert not slow.done
    assert slow.result() == "slow"


# -- limits and back-pressure ---------------------------------------------------------


async def test_spawn_blocks_while_full() -> None:
    gate = trio.Event()
    async with tf.open_task_group(limit=2) as tg:
        await tg.spawn(gate.wait)
        await tg.spawn(gate.wait)
        spawned: list[tf.TaskHandle[None]] = []

        async def third() -> None:
            spawned.append(await tg.spawn(gate.wait))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert spawned == []
            stats = tg.statistics()
            assert (stats.running, stats.waiting) == (2, 1)
            assert "with 1 waiting" in repr(tg)
            gate.set()
        assert len(spawned) == 1


async def test_spawn_nowait_would_block_when_full() -> None:
    gate = trio.Event()
    async with tf.open_task_group(limit=1) as tg:
        tg.spawn_nowait(gate.wait)
        with pytest.raises(trio.WouldBlock):
            tg.spawn_nowait(gate.wait)
        assert tg.limiter is not None
        assert tg.statistics().running == tg.limiter.borrowed_tokens == 1
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        h = tg.spawn_nowait(trio.sleep, 0)
    assert h.done
    assert tg.statistics().finished == 2


async def test_start_soon_when_full_schedules_and_the_task_waits_for_its_slot() -> None:
    # Issue 14: as trio's start_soon, it never fails for capacity.
    gate = trio.Event()
    order: list[str] = []

    async def job(tag: str) -> None:
        order.append(tag)
        await gate.wait()

    async with tf.open_task_group(limit=1) as tg:
        first = tg.start_soon(job, "first")
        second = tg.start_soon(job, "second")  # full: scheduled, waits for the slot
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first"]
        st = tg.statistics()
        assert (st.running, st.waiting) == (1, 1)
        assert tg.limiter is not None
        assert tg.limiter.borrowed_tokens == 1
        assert not second.done
        gate.set()
    assert order == ["first", "second"]
    assert first.result() is None
    assert second.result() is None
    assert tg.statistics().finished == 2


async def test_start_soon_task_cancelled_while_waiting_never_runs() -> None:
    gate = trio.Event()
    ran: list[str] = []

    async def job(tag: str) -> None:
        ran.append(tag)
        await gate.wait()

    async with tf.open_task_group(limit=1) as tg:
        tg.start_soon(job, "holder")
        waiting = tg.start_soon(job, "never")
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()  # while it waits for its slot
        await trio.testing.wait_all_tasks_blocked()
        assert waiting.done
        assert waiting.cancelled
        assert tg.statistics().waiting == 0
        gate.set()
    assert ran == ["holder"]
    st = tg.statistics()
    assert (st.finished, st.cancelled, st.returned) == (2, 1, 1)
    assert tg.limiter is not None
    assert tg.limiter.borrowed_tokens == 0


async def test_start_soon_tasks_waiting_for_slots_are_cancelled_with_the_group() -> None:
    started: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        await trio.sleep_forever()

    async with tf.open_task_group(limit=2) as tg:
        handles = [tg.start_soon(job, i) for i in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        assert tg.statistics().waiting == 3
        tg.cancel_scope.cancel()
    assert len(started) == 2
    assert all(h.cancelled for h in handles)
    assert tg.statistics().waiting == 0
    assert tg.limiter is not None
    assert tg.limiter.borrowed_tokens == 0


async def test_spawn_is_a_checkpoint_and_cancellation_atomic() -> None:
    gate = trio.Event()
    async with tf.open_task_group(limit=1) as tg:
        with trio.testing.assert_checkpoints():
            await tg.spawn(gate.wait)
        # waiting for a slot, then cancelled: nothing started, nothing held
        with trio.move_on_after(0.01) as scope:
            await tg.spawn(gate.wait)
        assert scope.cancelled_caught
        stats = tg.statistics()
        assert (stats.running, stats.waiting) == (1, 0)
        assert tg.limiter.borrowed_tokens == 1
        # granted at once but cancelled at the checkpoint: the slot goes back
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as cs:
            cs.cancel()
            await tg.spawn(trio.sleep, 0)
        assert cs.cancelled_caught
        assert tg.limiter.borrowed_tokens == 0
        assert tg.statistics().running == 0
    assert tg.statistics().finished == 1


async def test_spawn_without_limit_is_a_checkpoint() -> None:
    async with tf.open_task_group() as tg:
        with trio.testing.assert_checkpoints():
            await tg.spawn(trio.sleep, 0)
        with trio.CancelScope() as cs:
            cs.cancel()
            await tg.spawn(trio.sleep, 0)
        assert cs.cancelled_caught
    assert tg.statistics().finished == 1


@pytest.mark.parametrize("seed", range(30))
async def test_limit_never_exceeded_randomized(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(1, 6)
    shared = tf.CapacityLimiter(limit, name="shared")
    gauge = Gauge()
    finished = 0

    async def job(delay_steps: int, fail: bool) -> None:
        nonlocal finished
        gauge.enter()
        try:
            assert gauge.now <= limit
            for _ in range(delay_steps):
                await trio.lowlevel.checkpoint()
            if fail:
                raise ValueError("boom")
        finally:
            gauge.exit()
            finished += 1

    n_jobs = rng.randint(10, 40)
    n_fail = 0

    async def feed(tg: tf.TaskGroup, jobs: int) -> None:
        nonlocal n_fail
        for _ in range(jobs):
            fail = rng.random() < 0.2
            n_fail += fail
            if rng.random() < 0.3:
                try:
                    tg.spawn_nowait(job, rng.randint(0, 5), fail)
                    continue
                except trio.WouldBlock:
                    pass
            if rng.random() < 0.2:
                tg.start_soon(job, rng.randint(0, 5), fail)
                continue
            await tg.spawn(job, rng.randint(0, 5), fail)

    leaves: list[BaseException] = []

    async def run_group() -> None:
        try:
            async with tf.open_task_group(limit=shared, on_error="collect") as tg:
                await feed(tg, n_jobs)
        except ExceptionGroup as group:
            leaves.extend(group.exceptions)

    async with trio.open_nursery() as nursery:
        for _ in range(3):  # three groups share one limiter
            nursery.start_soon(run_group)
    assert gauge.peak <= limit  # job() also asserts it at every entry
    assert shared.borrowed_tokens == 0
    assert finished == 3 * n_jobs
    assert len(leaves) == n_fail
    assert all(isinstance(e, ValueError) for e in leaves)


async def test_limit_accepts_trio_capacity_limiter() -> None:
    limiter = trio.CapacityLimiter(2)
    gauge = Gauge()

    async def job() -> None:
        gauge.enter()
        await trio.sleep(0.001)
        gauge.exit()

    async with tf.open_task_group(limit=limiter) as tg:
        for _ in range(10):
            await tg.spawn(job)
    assert gauge.peak == 2
    assert limiter.borrowed_tokens == 0
    assert tg.statistics().limit == 2


async def test_int_limit_makes_a_limiter_named_after_the_group() -> None:
    tg = tf.open_task_group(limit=4, name="crawl")
    assert isinstance(tg.limiter, tf.CapacityLimiter)
    assert tg.limiter.name == "crawl"
    assert tg.limiter.total_tokens == 4
    assert tf.open_task_group().limiter is None


# -- start() ------------------------------------------------------------------------


async def serve(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> str:
    await trio.sleep(0)
    task_status.started(port + 1)
    await trio.sleep(1)
    return "served"


async def test_start_like_nursery_start(autojump_clock: trio.testing.MockClock) -> None:
    async with tf.open_task_group(limit=1) as tg:
        assert await tg.start(serve, 8000) == 8001
        assert tg.statistics().running == 1
        with pytest.raises(trio.WouldBlock):
            tg.spawn_nowait(trio.sleep, 0)
    assert tg.statistics().finished == 1


@pytest.mark.parametrize("on_error", ["cancel", "collect"])
async def test_start_error_before_started_comes_out_of_start(on_error: Any) -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(0)
        raise OSError("port in use")

    async def lazy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(0)

    async with tf.open_task_group(limit=1, on_error=on_error) as tg:
        with pytest.raises(OSError, match="port in use"):
            await tg.start(broken)
        with pytest.raises(RuntimeError, match="without calling"):
            await tg.start(lazy)
        assert tg.limiter.borrowed_tokens == 0
        await tg.spawn(trio.sleep, 0)  # the slot is free again
    assert tg.statistics().failed == 1


# -- error policies -------------------------------------------------------------------


async def test_cancel_policy_first_failure_cancels_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="first")):
        async with tf.open_task_group(name="g") as tg:
            slow = await tg.spawn(value_after, 10, "never")
            bad = await tg.spawn(fail_after, 1, ValueError("first"))
            await trio.sleep(5)
            pytest.fail("the body should have been cancelled")
    assert slow.cancelled
    with pytest.raises(RuntimeError, match="was cancelled"):
        slow.result()
    with pytest.raises(ValueError, match="first"):
        bad.result()
    assert trio.current_time() == 1
    stats = tg.statistics()
    assert (stats.failed, stats.cancelled, stats.finished) == (1, 1, 2)


async def test_errors_raised_during_cancellation_are_all_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def cleanup_fails() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise KeyError("during cleanup")

    tg = tf.open_task_group()
    handles: list[tf.TaskHandle[None]] = []

    async def run() -> None:
        async with tg:
            handles.append(await tg.spawn(cleanup_fails))
            await tg.spawn(fail_after, 1, ValueError("first"))

    with pytest.raises(ExceptionGroup) as info:
        await run()
    (victim,) = handles
    kinds = [type(e) for e in info.value.exceptions]
    assert kinds == [ValueError, KeyError]  # the first failure first
    with pytest.raises(KeyError, match="during cleanup"):
        victim.result()
    assert tg.statistics().failed == 2


async def test_collect_policy_runs_everything(autojump_clock: trio.testing.MockClock) -> None:
    handles: list[tf.TaskHandle[str]] = []

    async def run() -> None:
        async with tf.open_task_group(on_error="collect", name="c") as tg:
            handles.append(await tg.spawn(value_after, 10, "done"))
            await tg.spawn(fail_after, 2, KeyError("b"))
            await tg.spawn(fail_after, 1, ValueError("a"))

    with pytest.raises(ExceptionGroup, match="2 task\\(s\\) failed in task group 'c'") as info:
        await run()
    (ok,) = handles
    assert [type(e) for e in info.value.exceptions] == [ValueError, KeyError]
    assert ok.result() == "done"
    assert trio.current_time() == 10


async def test_collect_policy_body_error_is_kept_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def run() -> None:
        async with tf.open_task_group(on_error="collect") as tg:
            await tg.spawn(fail_after, 0, ValueError("task"))
            await trio.sleep(1)
            raise OSError("body")

    with pytest.raises(ExceptionGroup) as info:
        await run()
    assert [type(e) for e in info.value.exceptions] == [ValueError, OSError]


async def test_collect_policy_failures_survive_an_outside_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def run() -> None:
        with trio.move_on_after(5):
            async with tf.open_task_group(on_error="collect") as tg:
                await tg.spawn(fail_after, 1, ValueError("before the cancel"))
                await tg.spawn(trio.sleep_forever)

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="before the cancel")):
        await run()
    assert trio.current_time() == 5


async def test_tasks_may_spawn_after_the_body_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[int] = []

    async def parent(tg: tf.TaskGroup) -> None:
        await trio.sleep(1)  # the body has ended by now; the group is still open
        await tg.spawn(child, 7)

    async def child(n: int) -> None:
        seen.append(n)

    async with tf.open_task_group(limit=2) as tg:
        await tg.spawn(parent, tg)
    assert seen == [7]
    assert tg.statistics().finished == 2


async def test_collect_policy_does_not_swallow_base_exceptions() -> None:
    class Stop(BaseException):
        pass

    async def run() -> None:
        async with tf.open_task_group(on_error="collect") as tg:
            await tg.spawn(fail_after, 0, Stop())
            await trio.sleep_forever()

    with pytest.RaisesGroup(Stop):
        await run()


# -- cancellation ---------------------------------------------------------------------------


async def test_handle_cancel_cancels_only_that_task(autojump_clock: trio.testing.MockClock) -> None:
    async with tf.open_task_group(limit=5) as tg:
        a = await tg.spawn(value_after, 10, "a")
        b = await tg.spawn(value_after, 10, "b")
        await trio.sleep(1)
        a.cancel()
        await a.wait()
        assert a.cancelled
        assert a.done
        a.cancel()  # idempotent
    assert b.result() == "b"
    stats = tg.statistics()
    assert (stats.cancelled, stats.failed, stats.finished) == (1, 0, 2)


async def test_cancel_before_start_never_calls_fn() -> None:
    called: list[int] = []

    async def record() -> None:
        called.append(1)

    async with tf.open_task_group() as tg:
        h = tg.start_soon(record)
        h.cancel()
    assert called == []
    assert h.cancelled


async def test_outside_cancellation_leaves_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = live_tasks()
    limiter = tf.CapacityLimiter(3)
    with trio.move_on_after(5):
        async with tf.open_task_group(limit=limiter) as tg:
            for _ in range(100):
                await tg.spawn(trio.sleep_forever)
    assert live_tasks() == before
    assert limiter.borrowed_tokens == 0
    assert limiter.statistics().tasks_waiting == 0
    stats = tg.statistics()
    assert (stats.running, stats.waiting, stats.cancelled) == (0, 0, 3)
    with pytest.raises(RuntimeError, match="is closed"):
        await tg.spawn(trio.sleep, 0)


async def test_group_cancel_scope() -> None:
    async with tf.open_task_group() as tg:
        h = await tg.spawn(trio.sleep_forever)
        tg.cancel_scope.cancel()
    assert h.cancelled


async def test_group_cancel_scope_absorbs_the_bodys_cancelled() -> None:
    """As a nursery does: cancelling the group's own scope ends the block quietly."""
    try:
        async with tf.open_task_group() as tg:
            h = await tg.spawn(trio.sleep_forever)
            tg.cancel_scope.cancel()
            await trio.sleep_forever()
    except trio.Cancelled:  # pragma: no cover - the bug this test pins
        pytest.fail("the group's own Cancelled escaped its async with block")
    assert h.cancelled


# -- registry (what task dumps read) -------------------------------------------------------


async def test_registered_with_holders_and_waiters() -> None:
    gate = trio.Event()
    tg = tf.open_task_group(limit=1, name="dumped")
    assert tg in _registry.live("task_group")
    async with tg, trio.open_nursery() as nursery:
        h = await tg.spawn(gate.wait, name="holder")
        nursery.start_soon(tg.spawn, gate.wait)
        await trio.testing.wait_all_tasks_blocked()
        holders = tg._trioflow_holders()
        assert [x.borrower for x in holders] == [h.task]
        waiters = tg._trioflow_waiters()
        assert len(waiters) == 1
        assert waiters[0].primitive is tg.limiter
        gate.set()
    assert tg._trioflow_holders() == []
    assert tg._trioflow_waiters() == []


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"limit": 0}, ValueError, "limit must be >= 1, got 0"),
        ({"limit": -3}, ValueError, "limit must be >= 1, got -3"),
        ({"limit": True}, TypeError, "limit must be an int, a limiter or None, got True"),
        ({"limit": 2.5}, TypeError, "limit must be an int, a limiter or None, got 2.5"),
        ({"limit": "10"}, TypeError, "limit must be an int, a limiter or None, got '10'"),
        (
            {"on_error": "ignore"},
            ValueError,
            "on_error must be 'cancel' or 'collect', got 'ignore'",
        ),
        ({"name": 3}, TypeError, "name must be a str or None, got 3"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        tf.open_task_group(**kwargs)


async def test_not_an_async_function_frees_the_slot() -> None:
    def sync_fn() -> None:
        pass

    async with tf.open_task_group(limit=1) as tg:
        with pytest.raises(
            TypeError, match=r"fn must be an async function, got <function .*sync_fn"
        ):
            tg.start_soon(sync_fn)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="which returned None rather than a coroutine"):
            await tg.spawn(sync_fn)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fn must be an async function, got 3"):
            await tg.spawn(3)  # type: ignore[arg-type]
        assert tg.limiter.borrowed_tokens == 0
        await tg.spawn(trio.sleep, 0)
    assert tg.statistics().finished == 1


async def test_misuse_outside_the_block() -> None:
    tg = tf.open_task_group(name="x")
    with pytest.raises(RuntimeError, match="task group 'x' is not open"):
        await tg.spawn(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="is not open"):
        tg.start_soon(trio.sleep, 0)
    async with tg:
        pass
    with pytest.raises(RuntimeError, match="task group 'x' is closed"):
        tg.start_soon(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="is closed"):
        await tg.start(serve, 1)
    with pytest.raises(RuntimeError, match="entered only once"):
        async with tg:
            pass
