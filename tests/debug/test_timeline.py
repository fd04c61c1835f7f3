from __future__ import annotations

import gc
import io
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.debug import _timeline

from .trace_events import TraceError, load, validate

needs_sigusr2 = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2")


@pytest.fixture(autouse=True, params=["process", "thread"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each way a full recording is written: a writer
    process, and the thread used when no process can be started."""
    monkeypatch.setattr(_timeline, "_WRITER", request.param)
    return str(request.param)


def read(path: Path) -> list[dict[str, Any]]:
    events = load(path.read_text(encoding="utf-8"))
    validate(events)
    return events


def threads(events: list[dict[str, Any]]) -> dict[tuple[int, int], str]:
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def processes(events: list[dict[str, Any]]) -> dict[int, str]:
    return {
        e["pid"]: e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "process_name"
    }


def tid_of(events: list[dict[str, Any]], name: str) -> tuple[int, int]:
    (key,) = [k for k, v in threads(events).items() if v.startswith(name + " #")]
    return key


async def contended(limiter: tf.CapacityLimiter, lock: trio.Lock, event: trio.Event) -> None:
    """Three workers on a 1-token limiter, a lock and an event, in one nursery."""

    async def worker(i: int) -> None:
        async with limiter.hold(weight=1):
            await trio.sleep(0)
        async with lock:
            await trio.lowlevel.checkpoint()
        await event.wait()

    async with trio.open_nursery() as n:
        for i in range(3):
            n.start_soon(worker, i, name=f"worker{i}")
        await trio.testing.wait_all_tasks_blocked()
        event.set()


async def test_full_recording_has_tracks_waits_flows_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    limiter = tf.CapacityLimiter(1, name="api")
    with tf.debug.record_timeline(path, sample_interval=1e-6) as tl:
        await contended(limiter, trio.Lock(), trio.Event())
    assert tl.dumps == [path]
    events = read(path)

    # one track per task, named, grouped by the nursery they run in
    keys = [tid_of(events, f"worker{i}") for i in range(3)]
    assert len({pid for pid, _ in keys}) == 1
    pid = keys[0][0]
    assert processes(events)[pid].startswith("nursery of task ")
    assert "test_full_recording" in processes(events)[pid]

    def on(key: tuple[int, int], ph: str) -> list[dict[str, Any]]:
        return [e for e in events if (e.get("pid"), e.get("tid")) == key and e["ph"] == ph]

    names = Counter(e["name"] for k in keys for e in on(k, "X"))
    assert names["run"] >= 3 * 3
    # two of three waited for the one token; all three waited for the event
    assert names["wait limiter 'api'"] == 2
    assert sum(v for n, v in names.items() if n.startswith("wait event")) == 3

    # flows: the token's release in one worker wakes the next; set() wakes all three
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys()
    pairs = {
        ((starts[i]["pid"], starts[i]["tid"]), (ends[i]["pid"], ends[i]["tid"])) for i in starts
    }
    parent = next(k for k, v in threads(events).items() if "test_full_recording" in v)
    for k in keys:
        assert (parent, k) in pairs  # spawned by, and the event set by, the test task
    assert any(a in keys and b in keys and a != b for a, b in pairs)  # release -> grant

    # counters: the limiter's in-use and waiting, as they changed
    counts = [e for e in events if e["ph"] == "C" and e["name"] == "limiter 'api'"]
    assert {c["args"]["in use"] for c in counts} >= {0, 1}
    assert max(c["args"]["waiting"] for c in counts) == 2
    assert counts[-1]["args"] == {"in use": 0, "waiting": 0}


async def test_a_rate_limiter_has_a_counter_track(tmp_path: Path) -> None:
    """A rate limiter's spent burst and waiters are a counter track, named as dumps name it."""
    path = tmp_path / "t.json"
    quota = tf.RateLimiter(1000, burst=2, name="tl-quota")
    with tf.debug.record_timeline(path, sample_interval=1e-6):
        async with trio.open_nursery() as n:
            for _ in range(6):
                n.start_soon(quota.acquire)
    events = read(path)
    counts = [e for e in events if e["ph"] == "C" and e["name"] == "rate limiter 'tl-quota'"]
    assert counts, sorted({e["name"] for e in events if e["ph"] == "C"})
    assert max(c["args"]["waiting"] for c in counts) >= 1  # six callers, a burst of two
    assert counts[-1]["args"]["waiting"] == 0


async def test_wait_slices_name_trio_primitives_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    limiter = tf.CapacityLimiter(3, name="heavy")
    send, receive = trio.open_memory_channel[int](0)
    lock = trio.Lock()

    async def heavy() -> None:
        async with limiter.hold(weight=3):
            pass

    async def locked() -> None:
        async with lock:
            pass

    with tf.debug.record_timeline(path):
        async with trio.open_nursery() as n:
            await limiter.acquire()
            await lock.acquire()
            n.start_soon(heavy, name="heavy")
            n.start_soon(receive.receive, name="receiver")
            n.start_soon(locked, name="locked")
            await trio.testing.wait_all_tasks_blocked()
            limiter.release()
            lock.release()
            await send.send(1)
    events = read(path)
    waits = {
        threads(events)[(e["pid"], e["tid"])].split(" #")[0]: e
        for e in events
        if e["ph"] == "X" and e["name"].startswith("wait ")
    }
    assert waits["heavy"]["name"] == "wait limiter 'heavy'"
    assert waits["heavy"]["args"] == {"weight": 3}
    assert waits["receiver"]["name"].startswith("wait channel receive")
    assert waits["locked"]["name"].startswith("wait lock 'lock' <0x")


async def test_slow_steps_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "t.json"

    async def hog() -> None:
        time.sleep(0.03)  # synchronous: blocks the loop

    with tf.debug.record_timeline(path, slow_step=0.02):
        async with trio.open_nursery() as n:
            n.start_soon(hog, name="hog")
            n.start_soon(trio.lowlevel.checkpoint, name="quick")
    events = read(path)
    slow = [e for e in events if e["ph"] == "i" and e["name"] == "slow step"]
    assert [(e["pid"], e["tid"]) for e in slow] == [tid_of(events, "hog")]
    assert slow[0]["args"]["ms"] >= 30


async def test_still_parked_tasks_end_with_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    async with trio.open_nursery() as n:
        with tf.debug.record_timeline(path):
            n.start_soon(trio.sleep_forever, name="forever")
            await trio.testing.wait_all_tasks_blocked()
        n.cancel_scope.cancel()
    events = read(path)
    key = tid_of(events, "trio.sleep_forever") if False else None
    key = tid_of(events, "forever")
    (wait,) = [
        e
        for e in events
        if (e.get("pid"), e.get("tid")) == key and e["ph"] == "X" and e["name"].startswith("wait")
    ]
    assert wait["name"] == "wait sleep (still waiting)"


async def test_cancelled_waiter_is_woken_by_the_canceller(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    limiter = tf.CapacityLimiter(1, name="api")
    await limiter.acquire()
    with tf.debug.record_timeline(path):
        async with trio.open_nursery() as n:
            n.start_soon(limiter.acquire, name="waiter")
            await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()
    limiter.release()
    assert limiter.statistics().tasks_waiting == 0
    events = read(path)
    waiter = tid_of(events, "waiter")
    (wait,) = [
        e
        for e in events
        if (e.get("pid"), e.get("tid")) == waiter and e["name"] == "wait limiter 'api'"
    ]
    ends = [e for e in events if e["ph"] == "f" and (e["pid"], e["tid"]) == waiter]
    assert len(ends) == 2  # spawned, then woken by the cancel
    assert ends[-1]["ts"] >= wait["ts"] + wait["dur"]


async def test_big_chunks_stream_through_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_timeline, "_CHUNK", 50)
    path = tmp_path / "t.json"
    # Primitives earlier tests left for the collector would each add counter
    # samples to every step here: collect them so the bound below is about
    # streaming, not about what else happens to be alive.
    gc.collect()
    with tf.debug.record_timeline(path, sample_interval=1e-6) as tl:
        for _ in range(300):
            await trio.lowlevel.checkpoint()
        rec = tl._recorder
        assert rec is not None
        # A tick hands every full chunk to the writer thread. (Ticks are
        # spaced out when sampling the registry is slow, as under coverage,
        # so how many came during the loop is not fixed: tick once more.)
        rec.tick(time.perf_counter())
        assert len(rec.events) < 50
        assert tl._handed >= tl.events - 50
    assert tl.events > 300
    events = read(path)
    runs = [e for e in events if e["name"] == "run"]
    assert len(runs) >= 300


@pytest.mark.parametrize("seed", range(12))
async def test_random_programs_give_valid_traces(tmp_path: Path, seed: int) -> None:
    """Spawns, locks, events, limiters, channels, cancellations in random order."""
    rnd = random.Random(seed)
    path = tmp_path / "t.json"
    limiter = tf.CapacityLimiter(rnd.randint(1, 3), name="l")
    lock = trio.Lock()
    send, receive = trio.open_memory_channel[int](rnd.randint(0, 2))
    events_: list[trio.Event] = [trio.Event() for _ in range(4)]

    async def actor(i: int, ops: list[int]) -> None:
        for op in ops:
            if op == 0:
                async with limiter.hold(weight=rnd.randint(1, limiter.total_tokens)):  # type: ignore[arg-type]
                    await trio.lowlevel.checkpoint()
            elif op == 1:
                async with lock:
                    await trio.sleep(0)
            elif op == 2:
                events_[i % 4].set()
            elif op == 3:
                with trio.move_on_after(0.001):
                    await events_[(i + 1) % 4].wait()
            elif op == 4:
                with trio.move_on_after(0.001):
                    await send.send(i)
            elif op == 5:
                with trio.move_on_after(0.001):
                    await receive.receive()

    window = rnd.choice([None, 10.0])
    tl = tf.debug.record_timeline(path, window=window, signal=None, sample_interval=1e-4)
    with tl:
        async with trio.open_nursery() as n:
            for i in range(rnd.randint(2, 8)):
                n.start_soon(actor, i, [rnd.randint(0, 5) for _ in range(rnd.randint(1, 12))])
            if rnd.random() < 0.3:
                await trio.sleep(0.0005)
                n.cancel_scope.cancel()
        if window is not None:
            tl.dump()
    read(path)


# -- flight recorder ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1e-6
        return self.t


async def test_flight_recorder_keeps_only_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_timeline, "_now", clock)
    path = tmp_path / "f.json"
    limiter = tf.CapacityLimiter(1, name="api")
    out = io.StringIO()
    tl = tf.debug.record_timeline(path, window=5.0, signal=None, sample_interval=0.5, file=out)
    with tl:
        async with trio.open_nursery() as n:
            n.start_soon(
                trio.lowlevel.checkpoint, name="early"
            )  # runs and exits, then is forgotten
            await limiter.acquire()
            n.start_soon(limiter.acquire, name="parked")  # parks before the window, stays parked
            await trio.testing.wait_all_tasks_blocked()
            clock.t += 60.0  # a minute passes
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            n.start_soon(trio.lowlevel.checkpoint, name="late")
            await trio.testing.wait_all_tasks_blocked()
            dumped = tl.dump()
            limiter.release()
    assert dumped == path
    assert f"written to {path}" in out.getvalue()
    events = read(path)
    names = {v.split(" #")[0] for v in threads(events).values()}
    assert "late" in names
    assert "parked" in names
    assert "early" not in names
    assert min(e["ts"] for e in events if e["ph"] != "M") >= 0
    parked = tid_of(events, "parked")
    (wait,) = [
        e
        for e in events
        if (e["pid"], e["tid"]) == parked and e["ph"] == "X" and e["name"].startswith("wait")
    ]
    assert wait["name"] == "wait limiter 'api' (still waiting)"
    # the counter's value from before the window is kept at its start
    (first, *rest) = [e for e in events if e["ph"] == "C" and e["name"] == "limiter 'api'"]
    assert first["args"] == {"in use": 1, "waiting": 0}  # sampled before the minute passed
    assert first["ts"] == min(e["ts"] for e in events if e["ph"] != "M")
    assert rest[0]["args"] == {"in use": 1, "waiting": 1}
    spans = [e["ts"] for e in events if e["ph"] not in "MC"]
    assert max(spans) - min(spans) <= 5.0e6 + 1e3


async def test_flight_recorder_caps_events(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    tl = tf.debug.record_timeline(
        path, window=3600.0, signal=None, max_events=100, sample_interval=1e-6
    )
    with tl:
        for _ in range(500):
            await trio.lowlevel.checkpoint()
        rec = tl._recorder
        assert rec is not None
        rec.tick(time.perf_counter())  # a sample trims
        assert tl.events <= 100
        tl.dump()
    events = read(path)
    notes = [e["name"] for e in events if e["ph"] == "i" and e["s"] == "g"]
    assert notes
    assert notes[0].startswith("flight recorder: the last ")


async def test_flight_dumps_are_numbered_and_exceptions_dump(tmp_path: Path) -> None:
    path = tmp_path / "f.trace.json"
    out = io.StringIO()
    tl = tf.debug.record_timeline(path, window=10, signal=None, file=out)
    with pytest.raises(ZeroDivisionError), tl:  # noqa: PT012
        await trio.lowlevel.checkpoint()
        tl.dump()
        await trio.lowlevel.checkpoint()
        1 / 0  # noqa: B018
    assert tl.dumps == [path, tmp_path / "f-2.trace.json"]
    for p in tl.dumps:
        read(p)


@needs_sigusr2
async def test_signal_dumps_the_flight_recorder(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    out = io.StringIO()
    tl = tf.debug.record_timeline(path, window=10, file=out)
    assert tl.signal == signal.SIGUSR2
    old = signal.getsignal(signal.SIGUSR2)
    with tl:
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep_forever, name="sleeper")
            await trio.testing.wait_all_tasks_blocked()
            # A burst of real signals before the loop runs again: one dump.
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGUSR2)
            while not tl.dumps:
                await trio.lowlevel.checkpoint()
            for _ in range(10):
                await trio.lowlevel.checkpoint()
            n.cancel_scope.cancel()
    assert signal.getsignal(signal.SIGUSR2) == old  # restored on stop
    assert tl.dumps == [path]  # stop() joined the writing thread
    assert out.getvalue().count("written to") == 1
    events = read(path)
    assert "sleeper" in {v.split(" #")[0] for v in threads(events).values()}


@needs_sigusr2
async def test_signal_while_the_loop_is_blocked(tmp_path: Path) -> None:
    """The handler only asks the loop; the dump follows once the loop runs."""
    path = tmp_path / "f.json"
    with tf.debug.record_timeline(path, window=10, file=io.StringIO()) as tl:

        async def hog() -> None:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.01)  # the handler runs in here: it must not write or block
            assert not tl.dumps

        async with trio.open_nursery() as n:
            n.start_soon(hog, name="hog")
        while not tl.dumps:
            await trio.lowlevel.checkpoint()
    events = read(path)
    assert "hog" in {v.split(" #")[0] for v in threads(events).values()}


# -- install() and the environment ---------------------------------------------------


async def test_install_option_records_until_the_run_ends(tmp_path: Path) -> None:
    path = tmp_path / "i.json"

    async def main() -> None:
        tf.debug.install(signal=None, timeline=path)
        await trio.sleep(0)

    await trio.to_thread.run_sync(trio.run, main)
    events = read(path)
    assert any(e["name"] == "run" for e in events)


async def test_environment_variable_starts_a_flight_recorder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.json"
    monkeypatch.setenv("TRIOFLOW_TIMELINE", str(path))
    monkeypatch.setenv("TRIOFLOW_TIMELINE_WINDOW", "30")
    with tf.debug.install(signal=None) as inst:
        tl = inst.timeline
        assert tl is not None
        assert tl.window == 30.0
        await trio.sleep(0)
        tl.dump()
    read(path)
    monkeypatch.setenv("TRIOFLOW_TIMELINE_WINDOW", "soon")
    with pytest.raises(ValueError, match="TRIOFLOW_TIMELINE_WINDOW must be a number"):
        tf.debug.install(signal=None)


async def test_record_timeline_path_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOFLOW_TIMELINE", raising=False)
    with pytest.raises(ValueError, match="TRIOFLOW_TIMELINE"):
        tf.debug.record_timeline()
    monkeypatch.setenv("TRIOFLOW_TIMELINE", str(tmp_path / "e.json"))
    assert tf.debug.record_timeline().path == tmp_path / "e.json"


# -- bad input ---------------------------------------------------------------------------


async def test_bad_parameters(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        tf.debug.record_timeline(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be"):
        tf.debug.record_timeline(p, window=0)
    with pytest.raises(ValueError, match="give window= too"):
        tf.debug.record_timeline(p, signal=signal.SIGINT)
    with pytest.raises(TypeError, match="signal must be a signal number or None"):
        tf.debug.record_timeline(p, window=1, signal="USR2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slow_step must be"):
        tf.debug.record_timeline(p, slow_step=-1)
    with pytest.raises(ValueError, match="max_events must be >= 1"):
        tf.debug.record_timeline(p, window=1, max_events=0)
    with pytest.raises(ValueError, match="path must be a file"):
        tf.debug.record_timeline(tmp_path)
    with pytest.raises(TypeError, match="timeline must be a path"):
        tf.debug.install(signal=None, timeline=3)  # type: ignore[arg-type]
    tl = tf.debug.record_timeline(p)
    with pytest.raises(RuntimeError, match="dump\\(\\) is for a flight recorder"):
        tl.dump()
    with tl, pytest.raises(RuntimeError, match="already started"):
        tl.start()
    assert "stopped" in repr(tl)


def test_start_outside_trio_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"inside trio\.run"):
        tf.debug.record_timeline(tmp_path / "x.json").start()


def test_the_checker_catches_broken_traces() -> None:
    ok = [
        {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "t"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10, "name": "run"},
    ]
    validate(ok)
    bad_nesting = [*ok, {"ph": "X", "pid": 1, "tid": 1, "ts": 5, "dur": 10, "name": "run"}]
    with pytest.raises(TraceError, match="overlaps"):
        validate(bad_nesting)
    unbound = [
        *ok,
        {"ph": "s", "pid": 1, "tid": 1, "ts": 50, "id": 1, "cat": "c", "name": "w"},
        {"ph": "f", "bp": "e", "pid": 1, "tid": 1, "ts": 60, "id": 1, "cat": "c", "name": "w"},
    ]
    with pytest.raises(TraceError, match="no enclosing slice"):
        validate(unbound)
    with pytest.raises(TraceError, match="without a thread_name"):
        validate(ok[1:])
    with pytest.raises(TraceError, match="C needs args"):
        validate([*ok, {"ph": "C", "pid": 1, "tid": 0, "ts": 1, "name": "c", "args": {"x": "1"}}])


async def test_long_recordings_forget_dead_nurseries_and_primitives(tmp_path: Path) -> None:
    """A service opening a nursery and a limiter per request must not grow the recorder."""
    import gc

    tl = tf.debug.record_timeline(tmp_path / "f.json", window=1.0, signal=None)
    with tl:
        rec = tl._recorder
        assert rec is not None
        for i in range(1500):
            limiter = tf.CapacityLimiter(1, name=f"per-request-{i}")
            async with trio.open_nursery() as n:
                n.start_soon(trio.lowlevel.checkpoint)
            rec.tick(time.perf_counter())
            del limiter
        gc.collect()
        rec.tick(time.perf_counter())
        assert len(rec.nurseries) <= 1024
        assert not any(label.startswith("limiter 'per-request-") for label in rec.gauges)
        assert len(rec.base_counts) <= 2 * len(rec.gauges) + 64


# -- pipeline items --------------------------------------------------------------


@pytest.mark.parametrize("path_kind", ["fast", "general"])
@pytest.mark.parametrize("window", [None, 10.0], ids=["full", "flight"])
async def test_pipeline_items_in_each_stage_are_slices_on_worker_tracks(
    tmp_path: Path, path_kind: str, window: float | None
) -> None:
    """Every item's time in every stage, with its outcome, on the worker that ran it; both
    worker copies (the inlined fast loop and the general one, which retry= selects)."""
    path = tmp_path / "t.json"

    async def parse(x: int) -> int:
        await trio.sleep(0)
        if x % 4 == 3:
            raise ValueError(f"bad {x}")
        return x

    async def store(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x

    options: dict[str, Any] = {}
    if path_kind == "general":
        options["retry"] = tf.Retry(
            attempts=2, retry_on=(OSError,), backoff=tf.Backoff.constant(0.0)
        )
    pipe = (
        tf.Pipeline("orders")
        .map(parse, workers=2, on_error="skip", name="parse", **options)
        .map(store, workers=1, name="store", **options)
    )
    tl = tf.debug.record_timeline(path, window=window, signal=None)
    with tl:
        report = await pipe.run(range(12))
        if window is not None:
            tl.dump()
    assert tf.telemetry._hooks.timeline_hook is None  # stopping gave the hook back
    assert (report.delivered, report.skipped) == (9, 3)
    events = read(path)

    (pid,) = [p for p, label in processes(events).items() if label == "pipeline 'orders'"]
    tracks = {tid: name for (p, tid), name in threads(events).items() if p == pid}
    assert sorted({name.split(" (")[0] for name in tracks.values()}) == [
        "stage parse",
        "stage store",
    ]
    # one track per worker task, named after its task's own track
    assert sum(name.startswith("stage parse") for name in tracks.values()) <= 2
    assert all(tid > _timeline._ITEM_TID for tid in tracks)
    task_tracks = {tid for (_, tid) in threads(events) if tid < _timeline._ITEM_TID}
    assert {tid - _timeline._ITEM_TID for tid in tracks} <= task_tracks

    items = [e for e in events if e["ph"] == "X" and e.get("cat") == "item"]
    assert all(e["pid"] == pid for e in items)
    outcomes = Counter((e["name"], e["args"]["outcome"]) for e in items)
    assert outcomes == {("parse", "ok"): 9, ("parse", "ValueError"): 3, ("store", "ok"): 9}


async def test_items_of_a_run_started_before_the_recording_are_not_recorded(
    tmp_path: Path,
) -> None:
    """The hook is read once per run: a run that began first shows tasks, not items."""
    path = tmp_path / "t.json"
    gate = trio.Event()

    async def wait(x: int) -> int:
        await gate.wait()
        return x

    pipe = tf.Pipeline("early").map(wait, name="wait")
    async with pipe.open(range(3)) as run:
        await trio.testing.wait_all_tasks_blocked()
        with tf.debug.record_timeline(path):
            gate.set()
            assert [x async for x in run.outputs] == [0, 1, 2]
    events = read(path)
    assert not [e for e in events if e.get("cat") == "item"]


async def test_items_reach_both_the_timeline_and_the_stage_histogram(tmp_path: Path) -> None:
    """With metrics on, a run feeds the stage-duration histogram and the timeline alike."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    path = tmp_path / "t.json"

    async def double(x: int) -> int:
        return 2 * x

    try:
        with tf.telemetry.use(meter_provider=mp), tf.debug.record_timeline(path):
            report = await tf.Pipeline("both").map(double, name="double").run(range(7))
            data = reader.get_metrics_data()
    finally:
        mp.shutdown()
    assert report.delivered == 7
    (hist,) = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "trioflow.stage.duration"
    ]
    assert sum(p.count for p in hist.data.data_points) == 7  # type: ignore[attr-defined]
    items = [e for e in read(path) if e.get("cat") == "item"]
    assert len(items) == 7
