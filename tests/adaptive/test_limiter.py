"""An adaptive algorithm behind a real CapacityLimiter: what is a sample, what is not."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import attrs
import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.adaptive import AIMD, Cruise, Gradient2, LoadFeedback, Sample

from .helpers import ALGORITHMS


@attrs.define(eq=False)
class Recorder:
    """An algorithm that records its samples and returns a scripted limit."""

    limit: int = 4
    min_limit: int = 1
    max_limit: int = 100
    next_limit: int | None = None
    fail: bool = False
    samples: list[Sample] = attrs.field(factory=list[Sample])

    def update(self, sample: Sample) -> int:
        self.samples.append(sample)
        if self.fail:
            raise RuntimeError("algorithm failed")
        if self.next_limit is not None:
            self.limit = self.next_limit
        return self.limit

    def state(self) -> Mapping[str, float]:
        return {"limit": float(self.limit), "samples": float(len(self.samples))}


class AppError(Exception):
    pass


class Shed(Exception):
    pass


async def test_hold_is_a_sample_with_duration_and_inflight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    limiter = tf.CapacityLimiter(algorithm=rec)
    t0 = trio.current_time()

    async def one(delay: float, hold_for: float) -> None:
        await trio.sleep(delay)
        async with limiter.hold():
            await trio.sleep(hold_for)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0, 1.0)
        nursery.start_soon(one, 0.5, 2.0)
    a, b = sorted(rec.samples, key=lambda s: s.start)
    assert (a.start - t0, a.rtt, a.inflight, a.dropped) == (0.0, 1.0, 1, False)
    assert (b.start - t0, b.rtt, b.inflight, b.dropped) == (0.5, 2.0, 2, False)
    assert a.end - t0 == 1.0
    async with limiter:
        await trio.sleep(0.25)
    assert rec.samples[-1].rtt == 0.25


async def test_drop_ignore_overload_errors_and_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    limiter = tf.CapacityLimiter(4, algorithm=rec)

    async with limiter.hold() as permit:
        permit.drop()
    assert rec.samples[-1].dropped

    async with limiter.hold() as permit:
        permit.ignore()
    assert len(rec.samples) == 1

    async def times_out() -> None:
        async with limiter.hold():
            with trio.fail_after(0.5):
                await trio.sleep(1)

    with pytest.raises(trio.TooSlowError):
        await times_out()
    assert len(rec.samples) == 2
    assert rec.samples[-1].dropped
    assert rec.samples[-1].rtt == 0.5

    # an overload exception inside an ExceptionGroup is still overload
    with pytest.raises(ExceptionGroup):
        async with limiter.hold():
            raise ExceptionGroup("x", [trio.TooSlowError()])
    assert len(rec.samples) == 3
    assert rec.samples[-1].dropped

    # other failures are not samples (a fast 500 must not pull the RTT down)
    with pytest.raises(AppError):
        async with limiter.hold():
            raise AppError
    # nor are cancellations (a client giving up must not shrink the limit)
    with trio.move_on_after(0.1):
        async with limiter.hold():
            await trio.sleep(1)

    # drop() beats ignore(), and beats an exception that is not overload
    async def drops_then_fails() -> None:
        async with limiter.hold() as permit:
            permit.ignore()
            permit.drop()
            raise AppError

    with pytest.raises(AppError):
        await drops_then_fails()
    assert len(rec.samples) == 4
    assert rec.samples[-1].dropped
    # plain acquire()/release() is not a block: no sample
    await limiter.acquire()
    limiter.release()
    assert len(rec.samples) == 4
    assert limiter.borrowed_tokens == 0


async def test_overload_is_configurable(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    limiter = tf.CapacityLimiter(4, algorithm=rec, overload=(Shed, trio.TooSlowError))
    with pytest.raises(Shed):
        async with limiter.hold():
            raise Shed
    with pytest.raises(AppError):
        async with limiter.hold():
            raise AppError
    assert [s.dropped for s in rec.samples] == [True]
    with pytest.raises(
        TypeError, match=r"overload must be an exception type or a tuple of them, got 3"
    ):
        tf.CapacityLimiter(4, algorithm=Recorder(), overload=3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"overload must name at least one exception type, got \(\)"
    ):
        tf.CapacityLimiter(4, algorithm=Recorder(), overload=())


async def test_algorithm_sets_total_and_growth_wakes_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(limit=1)
    limiter = tf.CapacityLimiter(algorithm=rec)
    assert limiter.total_tokens == 1
    done: list[int] = []

    async def user(i: int) -> None:
        async with limiter.hold():
            await trio.sleep(1)
            done.append(i)

    rec.next_limit = 3
    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(user, i)
    # the first hold finished at t=1 and grew the limit to 3: the other three
    # ran together, so everything was done by t=2
    assert trio.current_time() == 2.0
    assert limiter.total_tokens == 3
    assert limiter.statistics().algorithm == {"limit": 3.0, "samples": 4.0}


def test_starting_limit_and_bounds() -> None:
    algo = AIMD(initial_limit=30, min_limit=10, max_limit=50)
    assert tf.CapacityLimiter(algorithm=algo).total_tokens == 30
    algo = AIMD(initial_limit=30, min_limit=10, max_limit=50)
    limiter = tf.CapacityLimiter(12, algorithm=algo)
    assert (limiter.total_tokens, algo.limit) == (12, 12)
    for bad in (5, 51, float("inf")):
        with pytest.raises(
            ValueError,
            match=r"total_tokens must be between the algorithm's min_limit=10 and max_limit=50, got",
        ):
            tf.CapacityLimiter(bad, algorithm=AIMD(initial_limit=30, min_limit=10, max_limit=50))
    with pytest.raises(
        TypeError, match=r"got None \(NoneType\); it may be omitted only with algorithm="
    ):
        tf.CapacityLimiter()
    with pytest.raises(TypeError, match=r"algorithm must be an algorithm from trioflow.adaptive"):
        tf.CapacityLimiter(3, algorithm=object())  # type: ignore[arg-type]
    # setting total_tokens moves the algorithm too, within the same bounds
    limiter.total_tokens = 40
    assert algo.limit == 40
    # at run time a total outside the bounds is clamped (an operator's override)
    limiter.total_tokens = 9
    assert (limiter.total_tokens, algo.limit) == (10, 10)
    limiter.total_tokens = math.inf
    assert (limiter.total_tokens, algo.limit) == (50, 50)


def test_one_algorithm_one_limiter() -> None:
    algo = Cruise()
    tf.CapacityLimiter(algorithm=algo)
    with pytest.raises(
        ValueError, match=r"already drives another limiter; give each limiter its own"
    ):
        tf.CapacityLimiter(algorithm=algo)


async def test_user_set_limit_is_where_the_algorithm_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    algo = Gradient2(initial_limit=50)
    limiter = tf.CapacityLimiter(algorithm=algo)
    limiter.total_tokens = 5
    for _ in range(3):
        async with limiter.hold():
            await trio.sleep(0.01)
    assert algo.limit <= 10


async def test_zero_pauses_an_adaptive_limiter(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder(limit=2, next_limit=5)
    limiter = tf.CapacityLimiter(algorithm=rec)
    entered: list[float] = []

    async def user() -> None:
        async with limiter.hold():
            entered.append(trio.current_time())
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(user)
        await trio.testing.wait_all_tasks_blocked()
        limiter.total_tokens = 0  # pause while one block runs
        nursery.start_soon(user)
        await trio.sleep(5)
        # the running block finished and was a sample, but did not resume admission
        assert len(rec.samples) == 1
        assert limiter.total_tokens == 0
        assert len(entered) == 1
        limiter.total_tokens = 3  # resume
    assert len(entered) == 2
    assert rec.limit == 5  # the second sample's limit applied after resuming
    assert limiter.total_tokens == 5


async def test_failing_algorithm_still_gives_tokens_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(fail=True)
    limiter = tf.CapacityLimiter(algorithm=rec)
    with pytest.raises(RuntimeError, match="algorithm failed"):
        async with limiter.hold():
            await trio.sleep(0.1)
    assert limiter.borrowed_tokens == 0
    assert limiter.statistics().borrowers == []


async def test_load_feedback_reads_on_limiter_activity_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    readings: list[float] = []
    loads = iter([0.95, 0.95, 0.2])

    def read() -> float:
        readings.append(trio.current_time())
        return next(loads)

    limiter = tf.CapacityLimiter(algorithm=LoadFeedback(read, interval=1.0, initial_limit=10))
    # a long idle stretch: nothing runs, so nothing is read
    await trio.sleep(100)
    assert readings == []

    async def worker() -> None:
        for _ in range(25):
            async with limiter.hold():
                await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(worker)
    assert len(readings) == 2  # 2.5 s of activity, first sample anchors the interval
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(readings))
    assert limiter.total_tokens == 6  # 10 -> 8 -> 6


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
async def test_every_algorithm_runs_behind_a_limiter(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    algo = ALGORITHMS[name]()
    limiter = tf.CapacityLimiter(algorithm=algo)
    peak = 0

    async def worker() -> None:
        nonlocal peak
        for _ in range(40):
            async with limiter.hold():
                peak = max(peak, limiter.statistics().borrowed_tokens)
                await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(worker)
    assert limiter.borrowed_tokens == 0
    assert algo.min_limit <= limiter.total_tokens <= algo.max_limit
    assert limiter.total_tokens == algo.limit
    assert peak <= algo.max_limit
    assert repr(limiter).endswith(f", {name}>")


async def test_priority_limiter_lanes_feed_one_algorithm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    algo = AIMD(initial_limit=4, max_limit=50)
    limiter = tf.PriorityLimiter(4, [tf.Lane("live"), tf.Lane("batch", priority=1)], algorithm=algo)

    async def user(lane: str) -> None:
        for _ in range(10):
            async with limiter[lane].hold():
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for lane in ("live", "live", "batch", "batch"):
            nursery.start_soon(user, lane)
    # 40 busy samples from both lanes grew one shared limit
    assert limiter.total_tokens == algo.limit > 4
    async with limiter["batch"].hold() as permit:
        permit.drop()
    assert algo.limit == limiter.total_tokens
    assert limiter.statistics().algorithm == algo.state()
