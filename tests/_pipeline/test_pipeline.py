"""Pipeline behaviour: back-pressure, order, batching, retries, timeouts, errors, shutdown."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow import _registry
from trioflow._pipeline._runtime import engine_of
from trioflow._pipeline._stage import StageRun
from trioflow.adaptive import _base


async def ident(x: Any) -> Any:
    await trio.sleep(0)
    return x


async def counting_source(counter: list[int]) -> AsyncIterator[int]:
    i = 0
    while True:
        counter[0] += 1
        yield i
        i += 1


# -- back-pressure ---------------------------------------------------------------


async def test_stuck_sink_bounds_items_in_flight_and_stops_the_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    async def stuck(x: Any) -> Any:
        await gate.wait()
        return x

    pipe = (
        tf.Pipeline("bp")
        .map(ident, workers=3, buffer=2)
        .batch(4, buffer=1)
        .map(ident, workers=2, buffer=1, ordered=True)
        .map(stuck, workers=2, buffer=3)
    )
    # 1 + (2+3) + (1+4) + (1+2+2)*4 + (3+2)*4
    assert pipe.max_in_flight == 1 + 5 + 5 + 20 + 20
    yielded = [0]
    async with pipe.open(counting_source(yielded)) as run:
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(100)
        report = run.report
        in_flight = report.source_items - (report.delivered + report.filtered)
        assert report.unfinished == in_flight
        assert in_flight <= pipe.max_in_flight
        # the bound is tight for this topology: every buffer and worker is full
        assert in_flight == pipe.max_in_flight
        before = yielded[0]
        await trio.sleep(100)
        assert yielded[0] == before  # the source is not read while the sink is stuck
        run.cancel()
    assert run.report.unfinished == run.report.source_items


async def test_slow_stage_slows_the_source(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(1)
        return x

    times: list[float] = []

    def source() -> Any:
        for i in range(10):
            times.append(trio.current_time())
            yield i

    report = await tf.Pipeline("slow").map(slow).run(source())
    assert report.delivered == 10
    # with one worker and a hand-off, item i is read about when item i-2 is done
    assert times[-1] >= 7


# -- ordering and batching ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_ordered_keeps_input_order_with_many_workers(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    import random

    rng = random.Random(seed)
    delays = [rng.random() for _ in range(200)]

    async def jitter(x: int) -> int:
        await trio.sleep(delays[x])
        return x

    pipe = tf.Pipeline("ord").map(jitter, workers=16, ordered=True).map(ident, workers=3)
    pipe = pipe.map(jitter, workers=8, ordered=True, name="again")
    async with pipe.open(range(200)) as run:
        got = [x async for x in run.outputs]
    # the middle stage is unordered with 3 workers of equal delay, which may
    # swap neighbours; the last stage is ordered with respect to its input
    assert sorted(got) == list(range(200))
    unordered = await _collect(tf.Pipeline("ord2").map(jitter, workers=16, ordered=True), 200)
    assert unordered == list(range(200))
    shuffled = await _collect(tf.Pipeline("ord3").map(jitter, workers=16), 200)
    assert shuffled != list(range(200))  # without ordered=True the order does change


async def _collect(pipe: tf.Pipeline, n: int) -> list[Any]:
    async with pipe.open(range(n)) as run:
        return [x async for x in run.outputs]


async def test_batch_flushes_partial_batch_after_max_wait_and_at_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(3):
            yield i
        await trio.sleep(10)
        for i in range(3, 5):
            yield i

    got: list[tuple[float, list[int]]] = []
    async with tf.Pipeline("b").batch(10, max_wait=2.0).open(source()) as run:
        t0 = trio.current_time()
        async for batch in run.outputs:
            got.append((trio.current_time() - t0, batch))
    assert got == [(2.0, [0, 1, 2]), (10.0, [3, 4])]
    report = run.report
    assert report.outputs == 2
    assert report.stages["batch"].emitted == 5
    assert report.delivered == 5


async def test_batch_full_batches_go_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with tf.Pipeline("b").batch(3, max_wait=100).open(range(7)) as run:
        got = [(trio.current_time(), b) async for b in run.outputs]
    assert [b for _, b in got] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [t for t, _ in got][:2] == [0.0, 0.0]


async def test_stop_flushes_the_partial_batch_within_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(100):
            yield i
            await trio.sleep(1)

    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        written.append(batch)

    pipe = tf.Pipeline("b").batch(10).each(write)
    async with pipe.open(source()) as run, trio.open_nursery() as nursery:
        nursery.start_soon(run.wait)  # a sink pipeline: nobody reads the outputs
        await trio.sleep(14.5)
        await run.stop(grace=5)
    assert written == [list(range(10)), list(range(10, 15))]
    assert run.report.unfinished == 0
    assert run.report.source_items == 15


# -- retry, backoff, timeout ----------------------------------------------------------------


async def test_retry_backoff_timings(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def flaky(x: int) -> int:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise OSError("try again")
        return x

    retry = tf.Retry(3, backoff=tf.Backoff.exponential(0.5, jitter=0))
    report = await tf.Pipeline("r").map(flaky, retry=retry).run([1])
    assert attempts == [0.0, 0.5, 1.5]
    assert report.stages["flaky"].retried == 2
    assert report.delivered == 1


async def test_retry_gives_up_after_attempts_and_only_retries_retry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[int] = []

    async def bad(x: int) -> int:
        calls.append(x)
        raise KeyError(x) if x else ValueError(x)

    retry = tf.Retry(3, backoff=tf.Backoff.constant(1.0), retry_on=ValueError)
    report = await tf.Pipeline("r").map(bad, retry=retry, on_error="dead_letter").run([0, 1])
    assert calls.count(0) == 3
    assert calls.count(1) == 1  # KeyError is not retried
    s = report.stages["bad"]
    assert (s.failed, s.retried, s.dead_lettered) == (2, 2, 2)
    assert [type(d.exception) for d in report.dead_letters] in (
        [ValueError, KeyError],
        [KeyError, ValueError],
    )
    assert {d.stage for d in report.dead_letters} == {"bad"}


async def test_backoff_sleep_is_cancellable_and_holds_no_limiter_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(1)

    async def fail(x: int) -> int:
        raise OSError

    retry = tf.Retry(5, backoff=tf.Backoff.constant(100.0))
    pipe = tf.Pipeline("r").map(fail, retry=retry, limiter=limiter)
    with trio.move_on_after(50):
        async with pipe.open([1]) as run:
            await trio.sleep(10)
            assert limiter.borrowed_tokens == 0  # asleep in backoff, holding nothing
            [worker] = engine_of(run).stages[0].workers
            assert worker.state == "backoff"
    assert trio.current_time() == 50
    assert run.report.unfinished == 1


async def test_timeout_bounds_each_attempt_and_goes_through_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def hang(x: int) -> int:
        starts.append(trio.current_time())
        await trio.sleep(10)
        return x

    retry = tf.Retry(3, backoff=tf.Backoff.constant(0.5))
    pipe = tf.Pipeline("t").map(hang, timeout=1.0, retry=retry, on_error="dead_letter")
    report = await pipe.run([1])
    assert starts == [0.0, 1.5, 3.0]
    assert trio.current_time() == 4.0
    [letter] = report.dead_letters
    assert isinstance(letter.exception, trio.TooSlowError)
    assert letter.item == 1


@attrs.define
class Recorder:
    """A do-nothing adaptive algorithm that records its samples."""

    limit: int = 4
    min_limit: int = 1
    max_limit: int = 4
    samples: list[_base.Sample] = attrs.field(factory=list[_base.Sample])

    def update(self, sample: _base.Sample) -> int:
        self.samples.append(sample)
        return self.limit

    def state(self) -> Mapping[str, float]:
        return {}


async def test_timeout_is_an_overload_sample_for_an_adaptive_limiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    algo = Recorder()
    limiter = tf.CapacityLimiter(4, algorithm=algo)

    async def work(x: int) -> int:
        await trio.sleep(x)
        return x

    pipe = tf.Pipeline("a").map(work, limiter=limiter, timeout=2.5, on_error="skip", workers=4)
    report = await pipe.run([1, 2, 3, 4])
    assert report.skipped == 2
    assert sorted((s.rtt, s.dropped) for s in algo.samples) == [
        (1.0, False),
        (2.0, False),
        (2.5, True),
        (2.5, True),
    ]


async def test_limiter_bounds_concurrency_across_workers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = tf.CapacityLimiter(2, name="api")
    peak = 0
    now = 0

    async def work(x: int) -> int:
        nonlocal peak, now
        now += 1
        peak = max(peak, now)
        await trio.sleep(1)
        now -= 1
        return x

    report = await tf.Pipeline("l").map(work, workers=8, limiter=limiter).run(range(10))
    assert peak == 2
    assert report.delivered == 10
    assert trio.current_time() == 5


async def test_rate_limits_attempts_and_workers_show_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = tf.RateLimiter(5, name="api")
    starts: list[float] = []

    async def call(x: int) -> int:
        starts.append(trio.current_time())
        return x

    report = await tf.Pipeline("r").map(call, workers=4, rate=api).run(range(10))
    assert report.delivered == 10
    assert sorted(starts) == pytest.approx([i * 0.2 for i in range(10)])


async def test_trio_capacity_limiter_is_accepted(autojump_clock: trio.testing.MockClock) -> None:
    limiter = trio.CapacityLimiter(1)
    report = await tf.Pipeline("l").map(ident, workers=3, limiter=limiter).run(range(5))
    assert report.delivered == 5


# -- errors -------------------------------------------------------------------------------


async def test_fail_cancels_everything_and_raises_the_stage_exception_naming_the_stage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[int] = []

    async def slow(x: int) -> int:
        await trio.sleep(100)
        finished.append(x)
        return x

    async def boom(x: int) -> int:
        if x == 3:
            raise RuntimeError("bad item")
        return x

    pipe = tf.Pipeline("events").map(boom, name="check").map(slow, workers=10, name="enrich")
    with pytest.raises(RuntimeError, match="bad item") as info:
        await pipe.run(range(10))
    assert trio.current_time() == 0  # cancelled at once, nothing waited for the slow stage
    assert finished == []
    assert "in pipeline 'events', stage 'check', on <item #3>" in info.value.__notes__


async def test_fail_through_open_keeps_the_report(autojump_clock: trio.testing.MockClock) -> None:
    async def boom(x: int) -> int:
        raise ValueError(x)

    run: tf.PipelineRun | None = None
    with pytest.raises(ValueError, match="0"):  # noqa: PT012
        async with tf.Pipeline("f").map(boom).open(range(3)) as run:
            async for _ in run.outputs:
                pass
    assert run is not None
    s = run.report.stages["boom"]
    assert (s.received, s.failed, s.unfinished) == (1, 1, 1)
    assert run.report.unfinished == run.report.source_items


async def test_source_failure_fails_the_run(autojump_clock: trio.testing.MockClock) -> None:
    def source() -> Any:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone") as info:
        await tf.Pipeline("s").map(ident).run(source())
    assert "in pipeline 's', source" in info.value.__notes__


async def test_body_exception_cancels_the_run_and_propagates_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(100)
        return x

    with pytest.raises(KeyError):  # noqa: PT012
        async with tf.Pipeline("b").map(slow, workers=4).open(range(10)) as run:
            await trio.sleep(1)
            raise KeyError("user")
    assert trio.current_time() == 1
    assert run.report.unfinished == run.report.source_items == 5


async def test_dead_letters_channel_receives_them(autojump_clock: trio.testing.MockClock) -> None:
    send, receive = trio.open_memory_channel[tf.DeadLetter](10)

    async def bad(x: int) -> int:
        raise ValueError(x)

    pipe = tf.Pipeline("d", dead_letters=send).map(bad, on_error="dead_letter")
    report = await pipe.run([1, 2])
    got = [receive.receive_nowait(), receive.receive_nowait()]
    assert [d.item for d in got] == [1, 2]
    # The channel holds them; the report keeps counts, not a second copy (issue 13).
    assert report.dead_letters == ()
    assert (report.dead_lettered, report.dead_letters_omitted) == (2, 2)


# -- shutdown ---------------------------------------------------------------------------


async def test_stop_drains_admitted_items_and_reads_no_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(x: int) -> int:
        await trio.sleep(3)
        return x

    yielded = [0]
    outs: list[int] = []
    pipe = tf.Pipeline("s").map(work, workers=2, buffer=2)
    async with pipe.open(counting_source(yielded)) as run, trio.open_nursery() as nursery:

        async def consume() -> None:
            async for x in run.outputs:
                outs.append(x)

        nursery.start_soon(consume)
        await trio.sleep(4)
        read = yielded[0]
        await run.stop(grace=100)
    r = run.report
    assert r.unfinished == 0
    assert r.source_items == len(outs) == read
    assert trio.current_time() < 4 + 100


async def test_stop_grace_expires_and_the_rest_is_unfinished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(x: int) -> int:
        await trio.sleep(10)
        return x

    async with tf.Pipeline("s").map(work, workers=3, buffer=1).open(range(100)) as run:
        await trio.sleep(1)
        await run.stop(grace=2)
        assert trio.current_time() == 3
    r = run.report
    assert r.source_items == 5  # 3 workers + 1 buffered + 1 in the reader's hand
    assert r.unfinished == 5
    # 3 in the workers' hands; the buffered one and the reader's never reached the stage
    assert r.stages["work"].unfinished == 3


async def test_outside_cancellation_reports_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(x: int) -> int:
        await trio.sleep(1)
        return x

    with trio.move_on_after(2.5):
        async with tf.Pipeline("c").map(work, workers=2).batch(3).open(range(100)) as run:
            async for _ in run.outputs:
                pass
    r = run.report
    assert r.delivered == 3
    assert r.source_items == r.delivered + r.unfinished


async def test_sigterm_calls_stop_with_grace(autojump_clock: trio.testing.MockClock) -> None:
    async def work(x: int) -> int:
        await trio.sleep(1)
        return x

    async def source() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1
            await trio.sleep(0.25)

    outs: list[int] = []
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with tf.Pipeline("sig").map(work, workers=4).open(source()) as run:

            async def on_sigterm() -> None:
                async for _ in signals:
                    await run.stop(grace=30)
                    return

            async def terminate_at_5() -> None:
                await trio.sleep(5)
                os.kill(os.getpid(), signal.SIGTERM)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(on_sigterm)
                nursery.start_soon(terminate_at_5)
                async for x in run.outputs:
                    outs.append(x)
    r = run.report
    assert r.unfinished == 0
    assert r.delivered == len(outs) == r.source_items > 10


async def test_leaving_the_block_waits_for_the_run_and_consumes_unread_outputs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tf.Pipeline("w").map(ident).open(range(5)) as run:
        pass
    assert run.report.delivered == 5
    assert not run.running


# -- inspection --------------------------------------------------------------------------


async def test_stages_and_pipeline_register_and_name_their_workers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    async def enrich(x: int) -> int:
        await gate.wait()
        return x

    pipe = tf.Pipeline("events").map(enrich, workers=5)
    async with pipe.open(range(3)) as run:
        await trio.testing.wait_all_tasks_blocked()
        engine = engine_of(run)
        stages = [
            s for s in _registry.live("stage") if isinstance(s, StageRun) and s in engine.stages
        ]
        assert [s.name for s in stages] == ["enrich"]
        assert engine in _registry.live("pipeline")
        [stage] = stages
        assert (stage.received, stage.queued) == (3, 0)
        roles = sorted(stage.task_roles().values())
        running = [r for r in roles if ", running <item #" in r]
        assert len(running) == 3
        assert all(r.startswith("stage enrich, worker ") for r in roles)
        assert sum(r.endswith(" of 5, done") for r in roles) == 2  # the source ended
        names = {t.name for t in stage.task_roles()}
        assert "stage enrich, worker 3 of 5" in names
        assert len(stage._trioflow_holders()) == 3  # pyright: ignore[reportPrivateUsage]
        assert "3 received" in repr(stage)
        gate.set()


async def test_task_roles_name_the_limiter_a_worker_waits_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = tf.RateLimiter(1, name="api")
    pool = tf.CapacityLimiter(1, name="api-connections")

    async def enrich(x: int) -> int:
        await trio.sleep(10)
        return x

    pipe = tf.Pipeline("events").map(enrich, workers=3, rate=api, limiter=pool)
    async with pipe.open(range(3)) as run:
        await trio.sleep(1.5)  # item 0 runs, item 1 got a rate token at 1 s, item 2 waits
        roles = sorted(engine_of(run).stages[0].task_roles().values())
        run.cancel()
    assert sum(r.endswith(", waiting on rate_limiter 'api'") for r in roles) == 1
    assert sum(r.endswith(", waiting on limiter 'api-connections'") for r in roles) == 1
    assert all(r.startswith("stage enrich, worker ") for r in roles)


async def test_latency_and_busy_time(autojump_clock: trio.testing.MockClock) -> None:
    async def one(x: int) -> int:
        await trio.sleep(1)
        return x

    report = await tf.Pipeline("lat").map(one, workers=2).run(range(4))
    s = report.stages["one"]
    assert (s.latency.count, s.latency.p50, s.latency.p99) == (4, 1.0, 1.0)
    assert s.busy_time == 4.0
    assert report.elapsed == 2.0


# -- executors ----------------------------------------------------------------------------


def square_in_thread(x: int) -> tuple[int, bool]:
    import threading

    return x * x, threading.current_thread() is threading.main_thread()


def cpu_square(x: int) -> tuple[int, int]:
    return sum(i * i for i in range(x)), os.getpid()


async def test_thread_executor_runs_in_a_thread() -> None:
    async with (
        tf.Pipeline("t").map(square_in_thread, executor="thread", workers=3).open(range(6)) as run
    ):
        got = sorted([x async for x in run.outputs])
    assert got == [(x * x, False) for x in range(6)]


@pytest.mark.slow
def test_process_executor_runs_in_worker_processes() -> None:
    # Real time: worker processes need the real clock to start.
    async def main() -> list[tuple[int, int]]:
        pipe = tf.Pipeline("p").map(cpu_square, executor="process", workers=2, ordered=True)
        async with pipe.open([10, 100, 1000]) as run:
            return [x async for x in run.outputs]

    got = trio.run(main)
    assert [v for v, _ in got] == [sum(i * i for i in range(n)) for n in (10, 100, 1000)]
    assert all(pid != os.getpid() for _, pid in got)


# -- configuration ----------------------------------------------------------------------


def sync_fn(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": 1.5}, TypeError, "workers must be an int"),
        ({"buffer": -1}, ValueError, "buffer must be >= 0, got -1"),
        ({"timeout": 0}, ValueError, "timeout must be > 0, got 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"on_error": "ignore"}, ValueError, "on_error must be 'fail', 'skip' or 'dead_letter'"),
        ({"executor": "fiber"}, ValueError, "executor must be None, 'thread' or 'process'"),
        ({"limiter": 3}, TypeError, "limiter must be a limiter"),
        ({"rate": 10}, TypeError, "rate must be a rate limiter"),
        ({"retry": 3}, TypeError, "retry must be a trioflow.Retry"),
        ({"ordered": 1}, TypeError, "ordered must be a bool"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"name": 7}, TypeError, r"name must be a str or None, got 7 \(int\)"),
        ({"executor": "thread"}, TypeError, "must be a plain sync function"),
    ],
)
def test_bad_stage_configuration_fails_at_build_time(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        tf.Pipeline("x").map(ident, **kwargs)


def test_more_bad_configuration() -> None:
    with pytest.raises(TypeError, match="map stage function must be an async function"):
        tf.Pipeline("x").map(sync_fn)
    with pytest.raises(TypeError, match="fn must be a callable"):
        tf.Pipeline("x").map(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be picklable"):
        tf.Pipeline("x").map(lambda x: x, executor="process")
    with pytest.raises(ValueError, match="name 'a' is already a stage of pipeline 'x'"):
        tf.Pipeline("x").map(ident, name="a").map(ident, name="a")
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        tf.Pipeline("x").batch(0)
    with pytest.raises(ValueError, match="max_wait must be > 0, got -1"):
        tf.Pipeline("x").batch(2, -1)
    with pytest.raises(ValueError, match="name must not be empty"):
        tf.Pipeline("x").batch(2, name="")
    with pytest.raises(TypeError, match=r"name must be a str or None, got 7 \(int\)"):
        tf.Pipeline("x").batch(2, name=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer must be >= 0, got -1"):
        tf.Pipeline("x").batch(2, buffer=-1)
    with pytest.raises(ValueError, match="name must not be empty"):
        tf.Pipeline("")
    with pytest.raises(TypeError, match=r"dead_letters must be a trio.MemorySendChannel"):
        tf.Pipeline("x", dead_letters=[])  # type: ignore[arg-type]
    # default names are made unique; a filter may be sync
    pipe = tf.Pipeline("x").map(ident).map(ident).filter(bool)
    assert pipe.stages == ("ident", "ident-2", "bool")


async def test_bad_run_arguments(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(ValueError, match="pipeline 'x' has no stages"):
        await tf.Pipeline("x").run([1])
    with pytest.raises(TypeError, match="source must be an iterable or an async iterable, got 3"):
        await tf.Pipeline("x").map(ident).run(3)  # type: ignore[arg-type]
    async with tf.Pipeline("x").map(ident).open([1]) as run:
        with pytest.raises(ValueError, match="grace must be >= 0, got -1"):
            await run.stop(grace=-1)


def test_retry_and_backoff_validation_and_jitter() -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        tf.Retry(0)
    with pytest.raises(TypeError, match="retry_on must be an Exception subclass"):
        tf.Retry(2, retry_on=KeyboardInterrupt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"backoff must be a trioflow.Backoff"):
        tf.Retry(2, backoff=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"factor must be >= 1, got 0.5"):
        tf.Backoff.exponential(1, factor=0.5)
    with pytest.raises(ValueError, match="maximum must be >= initial"):
        tf.Backoff.exponential(1, maximum=0.5)
    with pytest.raises(ValueError, match="jitter must be between 0 and 1, got 2"):
        tf.Backoff.constant(1, jitter=2)
    b = tf.Backoff.exponential(1.0, maximum=5.0, jitter=0)
    assert [b.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.delay(10**9) == 5.0
    full = tf.Backoff.exponential(1.0, maximum=8.0)
    draws = [full.delay(3) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert max(draws) - min(draws) > 2.0  # really random
    half = tf.Backoff.constant(2.0, jitter=0.5)
    assert all(1.0 <= half.delay(1) <= 2.0 for _ in range(100))
    assert math.isinf(tf.Backoff.exponential(1).maximum)


# -- more stage kinds, checkpoints and cancellation -------------------------------------


async def test_flat_map_filter_and_each(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[int] = []

    async def split(x: int) -> list[int]:
        return [x] * x  # 0 -> nothing (counted as filtered)

    async def even(x: int) -> bool:
        await trio.sleep(0)
        return x % 2 == 0

    async def note(x: int) -> None:
        seen.append(x)

    pipe = tf.Pipeline("f").flat_map(split, ordered=True, workers=3).filter(even).each(note)
    async with pipe.open(range(5)) as run:
        got = [x async for x in run.outputs]
    assert got == seen == [2, 2, 4, 4, 4, 4]
    r = run.report
    s = r.stages["split"]
    assert (s.received, s.emitted, s.filtered) == (5, 4, 1)
    assert r.stages["even"].received == 10
    # source items: 0 split into nothing, 1 and 3 were filtered, 2 and 4 delivered
    assert (r.delivered, r.filtered, r.unfinished) == (2, 3, 0)


async def test_dead_letter_of_a_batch_keeps_the_list(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def write(batch: list[int]) -> None:
        if 3 in batch:
            raise OSError("db down")

    report = await tf.Pipeline("d").batch(2).each(write, on_error="dead_letter").run(range(5))
    [letter] = report.dead_letters
    assert letter.item == [2, 3]
    assert letter.stage == "write"
    assert (report.delivered, report.dead_lettered) == (3, 2)


async def test_pipeline_is_reusable_and_builders_do_not_mutate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    base = tf.Pipeline("r").map(ident)
    longer = base.filter(bool)
    assert base.stages == ("ident",)
    assert longer.stages == ("ident", "bool")
    first = await longer.run(range(4))
    second = await longer.run(range(4))
    assert first.delivered == second.delivered == 3
    assert "ident -> bool" in repr(longer)


async def test_outputs_receive_is_a_checkpoint_and_cancellation_takes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(1)
        return x

    async with tf.Pipeline("c").map(slow).open(range(3)) as run:
        with trio.move_on_after(0.5):
            await run.outputs.receive()  # cancelled while parked
        with trio.testing.assert_checkpoints():
            assert await run.outputs.receive() == 0
        with trio.CancelScope() as cs:
            cs.cancel()
            await run.outputs.receive()  # cancelled before it could take item 1
        assert [x async for x in run.outputs] == [1, 2]
    assert run.report.delivered == 3


async def test_stop_is_a_checkpoint_and_a_cancelled_stop_leaves_the_drain_going(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(10)
        return x

    async with tf.Pipeline("s").map(slow, workers=2).open(range(100)) as run:
        await trio.sleep(1)
        with trio.move_on_after(1):
            await run.stop(grace=50)  # the caller gives up waiting...
        assert run.running  # ...the drain goes on, within its grace
        snapshot = run.report
        assert snapshot.unfinished == snapshot.source_items == 3
        assert await run.wait() == run.report
        with trio.testing.assert_checkpoints():
            await run.stop()  # already over: returns at once, still a checkpoint
    r = run.report
    assert (r.source_items, r.delivered, r.unfinished) == (3, 3, 0)
    assert trio.current_time() == 20  # items 0, 1 from 0 to 10 s; item 2 from 10 to 20 s


async def test_grace_zero_cancels_right_after_the_reader_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(10)
        return x

    async with tf.Pipeline("s").map(slow).open(range(10)) as run:
        await trio.sleep(1)
        await run.stop(grace=0)
    assert trio.current_time() == 1
    assert run.report.unfinished == run.report.source_items
