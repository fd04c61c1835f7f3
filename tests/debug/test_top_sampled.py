"""``/debug/top`` on a busy loop: the step hooks on for a window of each period,
estimates that still add up, spawns and exits always seen, and a watchdog that
names a task blocking the loop while the hooks are off."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.debug import _topdata
from trioflow.debug._topwatch import running_task

from .topcheck import accounting, busy, check_sums


@pytest.fixture(autouse=True)
def no_leftover_accounting() -> Iterator[None]:
    yield
    acct = _topdata._active
    assert acct is None or not acct.installed


class StepClock(trio.abc.Instrument):
    """Time that passes by the step (10 µs each), hooks or not: the accounting's
    clock in these tests, so windows and estimates are exact functions of the
    schedule. Added before the accounting, so its tick comes first. It also
    opens the windows on time, as the watchdog thread does (whose beats are
    in real time, so they are turned off here)."""

    def __init__(self) -> None:
        self.steps = 0
        self.by_group: dict[str, int] = {}

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        g = _topdata.group_of(task.name)
        self.by_group[g] = self.by_group.get(g, 0) + 1
        acct = _topdata._active
        if (
            acct is not None
            and acct.sampled
            and not acct.stepping
            and self.now() - acct.off_since >= _topdata.PERIOD - _topdata.WINDOW
        ):
            acct.open_window()

    def now(self) -> float:
        return self.steps * 1e-5


@pytest.fixture
async def step_clock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StepClock]:
    clock = StepClock()
    monkeypatch.setattr(_topdata, "_now", clock.now)
    monkeypatch.setattr(_topdata, "WINDOW", 0.001)  # 100 steps
    monkeypatch.setattr(_topdata, "PERIOD", 0.01)  # of every 1,000
    monkeypatch.setattr(_topdata, "BEAT", 3600.0)  # the clock opens the windows
    trio.lowlevel.add_instrument(clock)
    yield clock
    trio.lowlevel.remove_instrument(clock)


def frame() -> dict[str, Any]:
    return json.loads(_topdata.respond({"since": ["0"]}))  # type: ignore[no-any-return]


@pytest.mark.parametrize("seed", range(5))
async def test_estimates_follow_the_steps_when_sampled(step_clock: StepClock, seed: int) -> None:
    rnd = random.Random(seed)
    done = trio.Event()
    heavy, light = rnd.randint(4000, 8000), rnd.randint(1000, 2000)

    async def spin(n: int) -> None:
        for _ in range(n):
            await trio.lowlevel.checkpoint()
        await done.wait()

    acct = accounting()
    base = dict(step_clock.by_group)
    async with trio.open_nursery() as n:
        for i in range(5):
            n.start_soon(spin, heavy, name=f"heavy-{i}")
            n.start_soon(spin, light, name=f"light-{i}")
        await trio.testing.wait_all_tasks_blocked()
        f = frame()
        groups = {g[0]: g for g in f["groups"]}
        assert acct.sampled
        # one step in ten seen (a window of 100 steps in 1,000)
        assert 0.05 < f["coverage"] < 0.2
        for name, want in (("heavy-*", 5 * (heavy + 1)), ("light-*", 5 * (light + 1))):
            truth = step_clock.by_group[name] - base.get(name, 0)
            assert truth == want
            polls = groups[name][3]
            assert 0.8 * truth < polls < 1.2 * truth, (name, polls, truth)
            # all five parked on the event, whatever the hooks saw
            assert groups[name][2] == 5
            assert groups[name][9].startswith("event"), groups[name]
        done.set()
    _topdata.stop_accounting(acct)


@pytest.mark.parametrize("seed", range(20))
async def test_spawns_and_exits_are_seen_with_the_hooks_off(
    step_clock: StepClock, seed: int
) -> None:
    """Tasks come and go in and out of windows: the accounting's tasks are always
    live ones, and the per-group sums match the records they summarize."""
    rnd = random.Random(seed)
    limiter = tf.CapacityLimiter(rnd.randint(1, 3), name="l")
    event = trio.Event()

    async def actor(ops: list[int]) -> None:
        for op in ops:
            if op == 0:
                async with limiter:
                    await trio.lowlevel.checkpoint()
            elif op == 1:
                with trio.move_on_after(0.001):
                    await event.wait()
            else:
                for _ in range(rnd.randint(1, 300)):
                    await trio.lowlevel.checkpoint()

    acct = accounting()
    try:
        async with trio.open_nursery() as n:
            for round_ in range(rnd.randint(3, 8)):
                for i in range(rnd.randint(1, 6)):
                    ops = [rnd.randint(0, 2) for _ in range(rnd.randint(1, 6))]
                    n.start_soon(actor, ops, name=f"actor-{round_}-{i}")
                for _ in range(rnd.randint(1, 400)):
                    await trio.lowlevel.checkpoint()
                check_sums(acct)
                frame()  # a frame relabels; the sums stay whole
                check_sums(acct)
        check_sums(acct)
        assert acct.sampled
        assert not any(name.startswith("actor") for name in acct.groups)  # all gone
    finally:
        _topdata.stop_accounting(acct)


async def test_a_quiet_loop_stays_fully_accounted() -> None:
    """A few steps a second: every step seen, polls exact, coverage 1."""

    async def tick() -> None:
        for _ in range(20):
            await trio.sleep(0.005)

    acct = accounting()
    try:
        async with trio.open_nursery() as n:
            for i in range(3):
                n.start_soon(tick, name=f"tick-{i}")
        f = frame()
        assert not acct.sampled
        assert f["coverage"] == 1.0
    finally:
        _topdata.stop_accounting(acct)


def test_running_task_is_found_from_the_stack() -> None:
    import sys

    seen: list[Any] = []

    async def inner() -> None:
        seen.append((running_task(sys._getframe()), trio.lowlevel.current_task()))

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(inner)
        # the runner's own frame, with no frame of a task inside it
        seen.append((running_task(sys._getframe().f_back), None))

    trio.run(main)
    found, task = seen[0]
    assert found is task
    assert running_task(None) is None


def blocks_sleeping() -> None:
    time.sleep(0.3)  # a blocking call in async code: the loop stops


def blocks_spinning() -> None:
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # pure Python, no checkpoint
        pass


@pytest.mark.parametrize("block", [blocks_sleeping, blocks_spinning])
async def test_the_watchdog_names_a_step_that_blocks_with_the_hooks_off(
    monkeypatch: pytest.MonkeyPatch, block: Any
) -> None:
    monkeypatch.setattr(_topdata, "FULL_BELOW", 0.0)  # sample at once
    monkeypatch.setattr(_topdata, "WINDOW", 0.0)  # the first window ends at the next step
    monkeypatch.setattr(_topdata, "PERIOD", 1e9)  # and no other begins

    blocked = trio.Event()

    async def blocker() -> None:
        await trio.sleep(0.05)
        block()
        blocked.set()
        await trio.sleep_forever()  # alive when the frame names it

    acct = accounting()
    try:
        async with trio.open_nursery() as n:
            for i in range(4):
                n.start_soon(busy, name=f"busy-{i}")
            n.start_soon(blocker, name="blocker")
            await blocked.wait()
            assert not acct.stepping
            assert acct.watchdog is not None
            with trio.fail_after(5):  # its next look, a beat later, reports it
                while not acct.blocked:
                    await trio.sleep(0.005)
            f = _topdata.respond({"slow_ms": ["100"]})
            n.cancel_scope.cancel()
    finally:
        _topdata.stop_accounting(acct)
    lints = [lint for lint in json.loads(f)["lints"] if lint["kind"] == "never yields"]
    assert len(lints) == 1, lints
    assert "'blocker' ran" in lints[0]["text"]
    ran_ms = int(lints[0]["text"].split(" ran ")[1].split(" ms")[0])
    assert 200 <= ran_ms <= 300  # a lower bound: within two beats of the 300 ms
    assert acct.watchdog.looks > 0


async def test_the_watchdog_opens_the_windows_and_the_accounting_stops_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real time: the thread asks the loop for a window once a period, and a
    sampled accounting nobody asks for stops at its next window."""
    monkeypatch.setattr(_topdata, "FULL_BELOW", 0.0)
    monkeypatch.setattr(_topdata, "WINDOW", 0.002)
    monkeypatch.setattr(_topdata, "PERIOD", 0.02)
    monkeypatch.setattr(_topdata, "BEAT", 0.002)

    acct = accounting()
    try:
        async with trio.open_nursery() as n:
            for i in range(3):
                n.start_soon(busy, name=f"busy-{i}")
            with trio.fail_after(10):
                while acct.windows < 3:
                    await trio.sleep(0.005)
            assert acct.sampled
            seen = json.loads(_topdata.respond({}))["coverage"]
            assert 0 < seen < 1
            monkeypatch.setattr(_topdata, "IDLE_AFTER", 0.0)
            with trio.fail_after(10):
                while acct.installed:
                    await trio.sleep(0.005)
            assert _topdata._active is None
            n.cancel_scope.cancel()
    finally:
        _topdata.stop_accounting(acct)


async def test_seeding_in_chunks_lets_the_loop_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """start_accounting_async seeds SEED_CHUNK tasks between checkpoints: the
    other tasks run between chunks, tasks that exit or appear meanwhile are
    accounted right, and every parked one has its label."""
    monkeypatch.setattr(_topdata, "SEED_CHUNK", 100)
    event = trio.Event()
    ticks = 0

    async def parked() -> None:
        await event.wait()

    async def short() -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks % 5 == 0:
                n.start_soon(short, name="short")  # come and go while seeding
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        for i in range(2000):
            n.start_soon(parked, name=f"parked-{i}")
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(ticker, name="ticker")
        await trio.lowlevel.checkpoint()
        before = ticks
        acct = await _topdata.start_accounting_async()
        try:
            assert ticks - before >= 2000 // 100 - 1  # the loop ran between chunks
            f = frame()
            groups = {g[0]: g for g in f["groups"]}
            assert groups["parked-*"][1] == 2000
            assert groups["parked-*"][2] == 2000  # all parked, on the event
            assert groups["parked-*"][9].startswith("event")
            for task in acct.tasks:  # only live ones: those that exited were dropped
                coro: Any = task.coro
                assert coro.cr_frame is not None
            assert await _topdata.start_accounting_async() is acct  # once per run
        finally:
            _topdata.stop_accounting(acct)
        event.set()
        n.cancel_scope.cancel()


async def test_seeding_cancelled_removes_the_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_topdata, "SEED_CHUNK", 10)
    event = trio.Event()
    async with trio.open_nursery() as n:
        for i in range(200):
            n.start_soon(event.wait, name=f"parked-{i}")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            n.start_soon(lambda: _cancel_soon(scope))
            await _topdata.start_accounting_async()
        assert scope.cancelled_caught
        assert _topdata._active is None
        event.set()


async def _cancel_soon(scope: trio.CancelScope) -> None:
    for _ in range(3):
        await trio.lowlevel.checkpoint()
    scope.cancel()


async def test_label_lookup_agrees_with_the_dump_and_makes_no_frames_for_a_sleep() -> None:
    """parked_on's walk by code objects gives classify()'s label wherever it
    answers, and for a sleep it builds no frame object (each would live as
    long as the wait and feed the garbage collector)."""
    import gc

    from trioflow.debug._parked import WaitCache, classify, label_by_code, parked_on

    lock = trio.Lock()
    event = trio.Event()
    send, receive = trio.open_memory_channel[int](0)
    a, b = trio.testing.memory_stream_pair()

    async def sleeper() -> None:
        await trio.sleep(3600)

    async def nested() -> None:
        async def deeper() -> None:
            await trio.sleep_forever()

        await deeper()

    async def waits_on_lock() -> None:
        async with lock:
            pass

    async def agen_user() -> None:
        async def ticks() -> AsyncIterator[int]:
            while True:
                await trio.sleep(3600)
                yield 1

        async for _ in ticks():
            pass

    async def parent() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)

    bodies = {
        "sleeper": sleeper,
        "nested": nested,
        "lock": waits_on_lock,
        "event": event.wait,
        "receive": receive.receive,
        "stream": partial_receive(b),
        "agen": agen_user,
        "parent": parent,
    }
    async with lock, trio.open_nursery() as n:
        for name, fn in bodies.items():
            n.start_soon(fn, name=name)
        await trio.testing.wait_all_tasks_blocked()
        tasks = {t.name: t for t in n.child_tasks}
        by_code = 0
        for name, task in tasks.items():
            csd: Any = task.custom_sleep_data
            want = classify(task, csd).describe()
            got = parked_on(task, WaitCache()).label
            assert got == want, name
            fast = label_by_code(task.coro)
            if fast is not None:
                by_code += 1
                assert fast == want, name
        assert by_code >= 3  # the sleeps and the nursery, at least

        sleepers = []
        for i in range(50):
            n.start_soon(sleeper, name=f"more-{i}")
        await trio.testing.wait_all_tasks_blocked()
        sleepers = [t for t in n.child_tasks if t.name.startswith("more-")]
        cache = WaitCache()
        parked_on(sleepers[0], cache)  # warm the code cache
        gc.disable()
        try:
            gc.collect()
            before = gc.get_count()[0]  # objects the collector was told of
            for task in sleepers:
                assert parked_on(task, cache).label == "sleep"
            made = gc.get_count()[0] - before
        finally:
            gc.enable()
        # the walk by frames makes about five per chain (259 for these 50)
        assert made < len(sleepers), made
        n.cancel_scope.cancel()
    await a.aclose()
    send.close()


def partial_receive(stream: Any) -> Any:
    async def receive() -> None:
        await stream.receive_some()

    return receive
