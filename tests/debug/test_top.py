from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow.debug import _topdata
from trioflow.debug._top import TopState, base_url

from .topcheck import check_sums

ROOT = Path(__file__).resolve().parents[2]


def get(port: int, query: str = "") -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/top{query}", timeout=10) as r:
        return json.loads(r.read())


async def aget(port: int, query: str = "") -> Any:
    return await trio.to_thread.run_sync(get, port, query)


def groups_of(frame: dict[str, Any]) -> dict[str, list[Any]]:
    return {g[0]: g for g in frame["groups"]}


@pytest.fixture(autouse=True)
def no_leftover_accounting() -> Iterator[None]:
    yield
    assert _topdata._active is None or not _topdata._active.installed


async def test_frames_group_tasks_and_send_deltas() -> None:
    limiter = tf.CapacityLimiter(1, name="api")
    release = trio.Event()

    async def holder(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with limiter:
            task_status.started()
            await release.wait()

    async def worker() -> None:
        async with limiter:
            pass

    async def spinner() -> None:
        for _ in range(5):
            await trio.lowlevel.checkpoint()
        await trio.sleep_forever()

    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        await n.start(holder, name="holder")  # holds the one token before any worker runs
        for i in range(4):
            n.start_soon(worker, name=f"worker-{i}")
        await trio.testing.wait_all_tasks_blocked()
        first = await aget(port)
        assert first["schema"] == "trioflow.top/1"
        assert first["full"] is True
        g = groups_of(first)
        # seeded from the task tree: every worker is parked on the limiter already
        assert g["worker-*"][1:3] == [4, 4]
        assert g["worker-*"][9:] == ["limiter 'api'", 4]
        (api,) = [r for r in first["resources"] if r[0] == "limiter 'api'"]
        assert api[1:5] == ["limiter", 1, 1, 4]

        n.start_soon(spinner, name="spinner")
        await trio.testing.wait_all_tasks_blocked()
        second = await aget(port, f"?since={first['v']}")
        assert second["full"] is False
        g2 = groups_of(second)
        assert "spinner" in g2  # new
        assert g2["spinner"][3] == 6  # polls: the first step and five checkpoints
        assert "worker-*" not in g2  # unchanged: not sent
        assert "holder" not in g2

        release.set()
        await trio.testing.wait_all_tasks_blocked()
        third = await aget(port, f"?since={second['v']}")
        assert "worker-*" in third["gone"]  # all four got the token and exited
        assert "holder" in third["gone"]
        (api,) = [r for r in third["resources"] if r[0] == "limiter 'api'"]
        assert api[3:5] == [0, 0]
        assert api[6] == 4  # four waits ended: the p99 is over them
        assert api[5] is not None
        n.cancel_scope.cancel()


async def test_lints_long_wait_and_never_yields() -> None:
    # ("never fits" cannot be staged on a trioflow limiter any more: shrinking
    # the total below a waiter's weight wakes that waiter with a ValueError.)
    tiny = tf.CapacityLimiter(1, name="tiny")

    async def greedy() -> None:
        await tiny.acquire()

    async def hog() -> None:
        time.sleep(0.03)  # blocks the loop: no checkpoint

    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        await aget(port)  # the accounting starts here
        await tiny.acquire()
        n.start_soon(greedy, name="greedy")
        n.start_soon(hog, name="hog")
        await trio.testing.wait_all_tasks_blocked()
        frame = await aget(port, "?slow_ms=20&wait_s=0")
        kinds = {lint["kind"]: lint for lint in frame["lints"]}
        assert "never fits" not in kinds
        assert "'greedy' has waited on limiter 'tiny'" in kinds["long wait"]["text"]
        assert "'hog' ran" in kinds["never yields"]["text"]
        # greedy is not stuck: the test task holds the token and could release it
        assert "stuck" not in kinds
        quiet = await aget(port, "?slow_ms=1000&wait_s=3600")
        assert quiet["lints"] == []
        n.cancel_scope.cancel()
    tiny.release()


async def frames_until(port: int, done: Any) -> dict[str, Any]:
    """Frames, fetched until ``done(frame)`` holds (the analysis runs in the background)."""
    frame: dict[str, Any] = {}
    with trio.move_on_after(30):
        while True:
            frame = await aget(port)
            if done(frame):
                return frame
            await trio.sleep(0.01)
    raise AssertionError(f"no such frame within 30 s; the last: {frame}")


@pytest.mark.parametrize("fork_above", [None, 2000], ids=["in-process", "forked"])
async def test_stuck_lints_come_from_the_reachability_analysis(
    fork_above: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks nothing can wake, in a live service (a listener is running), are *stuck* lints.

    A cycle (each task sends into the other's full channel) and a task
    waiting on an event nobody else refers to are found, by the in-process
    analysis and by the forked one; a task waiting on an event a live task
    could set, a sleeper and the endpoint's own tasks are not. The service
    runs as a system task, as in ``test_reach``: a test's own cancel scopes,
    which the test runner could cancel, would count as a way to wake it.
    """
    from trioflow.debug import _serve

    monkeypatch.setattr(_serve, "STUCK_EVERY", 0.0)
    set_later = trio.Event()  # this test task could set it
    stop, finish, ended = trio.Event(), trio.Event(), trio.Event()
    ports: list[int] = []
    ready = trio.Event()

    async def send_first(
        send: trio.MemorySendChannel[int], recv: trio.MemoryReceiveChannel[int]
    ) -> None:
        async with send, recv:
            await send.send(1)  # the other task sends too: nobody ever receives

    async def orphan() -> None:
        await trio.Event().wait()

    async def service() -> None:
        async with trio.open_nursery() as n:
            ports.append(await n.start(partial(tf.debug.serve, 0, fork_above=fork_above)))
            async with trio.open_nursery() as hang:
                ab_send, ab_recv = trio.open_memory_channel[int](0)
                ba_send, ba_recv = trio.open_memory_channel[int](0)
                hang.start_soon(send_first, ab_send, ba_recv, name="ping")
                hang.start_soon(send_first, ba_send, ab_recv, name="pong")
                del ab_send, ab_recv, ba_send, ba_recv  # only ping and pong hold the ends
                hang.start_soon(orphan, name="orphan")
                hang.start_soon(set_later.wait, name="waiter")
                hang.start_soon(trio.sleep_forever, name="sleeper")
                ready.set()
                await stop.wait()
                hang.cancel_scope.cancel()
            ports.clear()  # the hung tasks are gone
            await finish.wait()
            n.cancel_scope.cancel()
        ended.set()

    trio.lowlevel.spawn_system_task(service, name="service")
    await ready.wait()
    port = ports[0]
    first = await aget(port)
    assert first["stuck_age"] is None  # no analysis yet: this frame starts the first
    frame = await frames_until(port, lambda f: sum(x["kind"] == "stuck" for x in f["lints"]) == 2)
    stuck = [x for x in frame["lints"] if x["kind"] == "stuck"]
    assert frame["lints"][: len(stuck)] == stuck, "stuck lints come first"
    assert frame["stuck_age"] is not None
    cycle = next(x for x in stuck if x["subject"].startswith("cycle"))
    assert "'ping'" in cycle["text"], cycle
    assert "'pong'" in cycle["text"], cycle
    assert "only each other could wake" in cycle["text"]
    alone = next(x for x in stuck if not x["subject"].startswith("cycle"))
    assert "'orphan' can never be woken" in alone["text"], alone
    assert "none can ever set() it" in alone["text"]
    assert isinstance(alone["task"], int)
    text = json.dumps(stuck)
    for fine in ("waiter", "sleeper", "serve"):
        assert f"'{fine}" not in text
    stop.set()
    # the next analysis sees they are gone
    await frames_until(port, lambda f: not any(x["kind"] == "stuck" for x in f["lints"]))
    assert not ports
    finish.set()
    await ended.wait()


async def test_a_failing_reachability_analysis_is_a_lint(monkeypatch: pytest.MonkeyPatch) -> None:
    from trioflow.debug import _serve

    def broken() -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(_serve, "find_stuck", broken)
    async with trio.open_nursery() as n:
        port = await n.start(partial(tf.debug.serve, 0, fork_above=None))
        await aget(port)
        frame = await frames_until(port, lambda f: f["stuck_age"] is not None)
        (lint,) = [x for x in frame["lints"] if x["kind"] == "error"]
        assert lint["subject"] == "find_stuck"
        assert "RuntimeError('boom')" in lint["text"]
        n.cancel_scope.cancel()


async def test_rate_limiters_and_lanes_have_rows() -> None:
    """Every limiting kind gets a resource row, named as dumps name it (a rate limiter was missing)."""
    quota = tf.RateLimiter(0.001, burst=2, name="top-quota")  # nothing refills during the test
    pool = tf.PriorityLimiter(1, [tf.Lane("fast"), tf.Lane("slow", priority=1)], name="top-pool")
    await quota.acquire(2)
    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        for i in range(3):
            n.start_soon(quota.acquire, name=f"paced-{i}")
        async with pool.lane("fast"):
            n.start_soon(pool.lane("slow").acquire, name="behind")
            await trio.testing.wait_all_tasks_blocked()
            frame = await aget(port)
            rows = {r[0]: r for r in frame["resources"]}
            (rate,) = [r for k, r in rows.items() if k == "rate limiter 'top-quota'"]
            assert rate[1:5] == ["rate_limiter", 2.0, 2.0, 3]  # burst 2, all spent, 3 waiting
            lanes = [r for k, r in rows.items() if k.startswith("lane ") and "top-pool" in k]
            assert len(lanes) == 2, sorted(rows)
            assert sum(r[4] for r in lanes) == 1  # the one task behind the held token
            g = groups_of(frame)
            assert g["paced-*"][9:] == ["rate limiter 'top-quota'", 3]  # waits carry the row's name
            n.cancel_scope.cancel()


async def test_stage_whose_outputs_nobody_reads() -> None:
    # a stage name no other test uses: a same-named stage another test left
    # for the collector would make top tell them apart by address
    pipe = tf.Pipeline("p").map(_double, workers=2, name="unread-double")
    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        await aget(port)
        async with pipe.open(range(100)):
            # nobody reads run.outputs: the workers fill the channel and park sending
            await trio.testing.wait_all_tasks_blocked()
            acct = _topdata._active
            assert acct is not None
            for rec in acct.tasks.values():  # as if they had been parked a while
                rec.park_t -= 5.0
            frame = await aget(port)
            lints = [x for x in frame["lints"] if x["kind"] == "unread outputs"]
            assert lints
            assert lints[0]["subject"] == "stage 'unread-double'"
            assert "nobody reads its outputs" in lints[0]["text"]
            n.cancel_scope.cancel()


async def _double(x: int) -> int:
    return 2 * x


@pytest.mark.parametrize("buffer", [0, 2])
async def test_a_stage_row_has_the_wait_to_hand_it_an_item(
    buffer: int, autojump_clock: trio.testing.MockClock
) -> None:
    """A stage's WAIT p99: how long upstream waited to hand it an item (back-pressure).

    One worker taking 1 s an item behind a source that has everything at
    once: the reader waits 1 s per item to hand the next over (with a
    buffer, once it is full). A stage nobody waits on has no waits. Frames
    are built in the trio thread, as ``serve()`` builds them, so the mock
    clock is the only clock.
    """

    def frame() -> dict[str, Any]:
        return json.loads(_topdata.respond({}))  # type: ignore[no-any-return]

    async def slow(x: int) -> int:
        await trio.sleep(1.0)
        return x

    pipe = (
        tf.Pipeline("p")
        .map(slow, workers=1, buffer=buffer, name=f"slow-{buffer}")
        .map(_double, workers=4, name=f"quick-{buffer}")
    )
    try:
        frame()
        async with pipe.open(range(6 + buffer)) as run:
            frame()  # this frame finds the stages' input channels
            async for _ in run.outputs:
                pass
        rows = {r[0]: r for r in frame()["resources"]}
    finally:
        acct = _topdata._active
        assert acct is not None
        _topdata.stop_accounting(acct)
    _, kind, _, _, _, p99, waits = rows[f"stage 'slow-{buffer}'"]
    assert kind == "stage"
    assert waits >= 3, rows
    assert p99 == pytest.approx(1.0, abs=1e-6), rows
    # the quick stage's four workers are always free: nobody waits to hand over
    assert rows[f"stage 'quick-{buffer}'"][6] == 0, rows


async def test_task_and_group_detail_and_bad_queries() -> None:
    async def parked_here() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        n.start_soon(parked_here, name="parked-1")
        await trio.testing.wait_all_tasks_blocked()
        await aget(port)
        detail = await aget(port, "?group=parked-*")
        assert detail["count"] == 1
        ((tid, name, *_rest, label, _for),) = detail["tasks"]
        assert name == "parked-1"
        assert label == "sleep"
        stack = await aget(port, f"?task={tid}")
        assert "parked_here" in stack["text"]
        gone = await aget(port, "?task=999999")
        assert "gone" in gone["text"]
        for bad, msg in [
            ("?task=x", "task must be a task id"),
            ("?since=-1", "since must be >= 0"),
            ("?slow_ms=abc", "slow_ms must be a number"),
        ]:
            with pytest.raises(urllib.error.HTTPError) as info:
                await aget(port, bad)
            assert info.value.code == 400
            assert msg in info.value.read().decode()
        n.cancel_scope.cancel()


async def test_accounting_stops_when_nobody_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        await aget(port)
        acct = _topdata._active
        assert acct is not None
        assert acct.installed
        monkeypatch.setattr(_topdata, "IDLE_AFTER", 0.0)
        with trio.fail_after(5):  # the next window's end sees it is idle
            while acct.installed:
                await trio.sleep(0.005)
        assert _topdata._active is None
        n.cancel_scope.cancel()


# -- the console's model ------------------------------------------------------------------


def test_state_merges_deltas_and_computes_rates() -> None:
    st = TopState("http://x")
    base = {"schema": "trioflow.top/1", "tasks": 3, "lints": [], "gone": [], "gone_resources": []}
    st.apply(
        {
            **base,
            "v": 1,
            "full": True,
            "time": 10.0,
            "groups": [
                ["a-*", 2, 1, 10, 0.5, 1.0, 9.0, 0.1, 5, "sleep", 1],
                ["b", 1, 0, 3, 0.1, 0.0, 0.0, 0.01, 7, "", 0],
            ],
            "resources": [["limiter 'x'", "limiter", 4, 1, 0, None, 0]],
        }
    )
    assert st.groups["a-*"].parked_time == pytest.approx(1.0 + 10.0 - 9.0)
    st.apply(
        {
            **base,
            "v": 2,
            "full": False,
            "time": 12.0,
            "gone": ["b"],
            "groups": [["a-*", 2, 1, 30, 1.5, 1.0, 9.0, 0.1, 5, "sleep", 1]],
            "resources": [],
        }
    )
    a = st.groups["a-*"]
    assert a.busy_pct == pytest.approx(50.0)  # 1 s of CPU over 2 s
    assert a.polls_per_s == pytest.approx(10.0)
    assert a.parked_time == pytest.approx(4.0)
    assert "b" not in st.groups
    assert "limiter 'x'" in st.resources  # unchanged rows stay
    assert st.version == 2
    assert "since=2" in st.frame_url()
    st.filter = "zzz"
    assert st.sorted_groups() == []
    st.filter = ""
    assert [st.next_sort() for _ in range(6)][-1] == "busy"
    st.apply({"schema": "other/9"})
    assert st.error is not None


def test_base_url() -> None:
    assert base_url("localhost:6060") == "http://localhost:6060"
    assert base_url("http://h:1/debug/tasks") == "http://h:1"
    with pytest.raises(ValueError, match="url must be host:port"):
        base_url("http://")


# -- the console, driven ---------------------------------------------------------------------


class Service:
    """A small trio service with tf.debug.serve, in a thread of its own."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.ready = threading.Event()
        self.token: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=trio.run, args=(self.main,), daemon=True)

    async def main(self) -> None:
        lim = tf.CapacityLimiter(3, name="api")

        async def worker() -> None:
            while True:
                async with lim:
                    await trio.sleep(0.005)

        async with trio.open_nursery() as n:
            self.port = await n.start(tf.debug.serve, 0)
            for i in range(12):
                n.start_soon(worker, name=f"worker-{i}")
            self.token = trio.lowlevel.current_trio_token()
            self.cancel = n.cancel_scope
            self.ready.set()

    def __enter__(self) -> Service:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        self.token.run_sync_soon(self.cancel.cancel)
        self.thread.join(20)


def test_console_with_the_pilot() -> None:
    pytest.importorskip("textual")
    from textual.widgets import DataTable, Static

    from trioflow.debug._topview import GroupScreen, StackScreen, TopApp

    async def drive(port: int) -> None:
        app = TopApp(TopState(f"http://127.0.0.1:{port}"), interval=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            groups = app.query_one("#groups", DataTable)
            for _ in range(100):
                await pilot.pause(0.05)
                if app.state.frames >= 3:
                    break
            names = [groups.get_row_at(i)[0] for i in range(groups.row_count)]
            assert "worker-*" in names
            res = app.query_one("#resources", DataTable)
            assert "limiter 'api'" in [res.get_row_at(i)[0] for i in range(res.row_count)]
            await pilot.press("s")
            assert app.state.sort == "polls"
            await pilot.press("slash", *"work", "enter")
            await pilot.pause(0.1)
            assert app.state.filter == "work"
            assert [groups.get_row_at(i)[0] for i in range(groups.row_count)] == ["worker-*"]
            await pilot.press("enter")
            for _ in range(100):
                await pilot.pause(0.05)
                if (
                    isinstance(app.screen, GroupScreen)
                    and app.screen.query_one("#tasks", DataTable).row_count
                ):
                    break
            assert isinstance(app.screen, GroupScreen)
            assert app.screen.query_one("#tasks", DataTable).row_count == 12
            await pilot.press("enter")
            for _ in range(100):
                await pilot.pause(0.05)
                if isinstance(app.screen, StackScreen):
                    break
            assert isinstance(app.screen, StackScreen)
            text = str(app.screen.query_one("#stack", Static).render())
            assert "worker" in text
            await pilot.press("escape", "escape")
            assert not isinstance(app.screen, (GroupScreen, StackScreen))
            await pilot.press("q")

    with Service() as svc:
        assert svc.port is not None
        asyncio.run(drive(svc.port))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_console_in_a_real_terminal(tmp_path: Path) -> None:
    """`python -m trioflow top` in tmux against a running example server."""
    pytest.importorskip("textual")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    session = f"trioflow-top-{os.getpid()}"
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the example server did not start"
        port = int(server.stdout.readline().split()[-1])
        cmd = f"{sys.executable} -m trioflow top 127.0.0.1:{port} --interval 0.5"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "40", cmd],
            check=True,
            cwd=ROOT,
        )

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-t", session, "-p"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        def wait_for(text: str) -> str:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                s = screen()
                if text in s:
                    return s
                time.sleep(0.1)
            raise AssertionError(f"{text!r} never appeared:\n{screen()}")

        s = wait_for("worker-*")
        assert "limiter 'api'" in s
        wait_for("limiter 'tiny'")
        subprocess.run(["tmux", "send-keys", "-t", session, "s"], check=True)
        wait_for("sort: polls")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alive = (
                subprocess.run(
                    ["tmux", "has-session", "-t", session], capture_output=True
                ).returncode
                == 0
            )
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, "q did not quit"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        server.terminate()
        server.wait(10)
        assert server.stdout is not None
        server.stdout.close()


_SERVER = """
import trio, trioflow as tf
async def main():
    lim = tf.CapacityLimiter(3, name="api")
    tiny = tf.CapacityLimiter(1, name="tiny")
    async def worker():
        while True:
            async with lim:
                await trio.sleep(0.005)
    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        for i in range(12):
            n.start_soon(worker, name=f"worker-{i}")
        await tiny.acquire()
        n.start_soon(tiny.acquire, name="greedy")
        while tiny.statistics().tasks_waiting == 0:
            await trio.sleep(0.001)
        print("port", port, flush=True)
trio.run(main)
"""


@pytest.mark.parametrize("seed", range(10))
async def test_accounting_sums_stay_consistent(seed: int) -> None:
    """Random spawns, parks, wake-ups, cancellations: the per-group sums always
    match the per-task records they summarize."""
    import random

    rnd = random.Random(seed)
    limiter = tf.CapacityLimiter(rnd.randint(1, 3), name="l")
    lock = trio.Lock()
    event = trio.Event()

    async def actor(ops: list[int]) -> None:
        for op in ops:
            if op == 0:
                async with limiter:
                    await trio.lowlevel.checkpoint()
            elif op == 1:
                async with lock:
                    await trio.sleep(0)
            elif op == 2:
                with trio.move_on_after(0.001):
                    await event.wait()
            else:
                await trio.lowlevel.checkpoint()

    acct = _topdata.start_accounting()
    try:
        async with trio.open_nursery() as n:
            for i in range(rnd.randint(2, 10)):
                n.start_soon(
                    actor, [rnd.randint(0, 3) for _ in range(rnd.randint(1, 10))], name=f"actor-{i}"
                )
            for _ in range(rnd.randint(0, 5)):
                await trio.lowlevel.checkpoint()
                check_sums(acct)
            if rnd.random() < 0.3:
                n.cancel_scope.cancel()
        check_sums(acct)
        assert not any(name.startswith("actor") for name in acct.groups)  # all gone
    finally:
        _topdata.stop_accounting(acct)


@pytest.fixture
def fork_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children forked during the test (os.fork wrapped, still real)."""
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs POSIX")
async def test_cancelling_serve_kills_a_running_analysis(
    monkeypatch: pytest.MonkeyPatch, fork_pids: list[int]
) -> None:
    """serve() cancelled while its background analysis runs in a forked child
    ends at once, and the child is killed and reaped (no orphan keeps working)."""
    from trioflow.debug import _serve

    def slow() -> list[Any]:
        time.sleep(60)  # in the child: a walk that takes a minute
        return []

    monkeypatch.setattr(_serve, "find_stuck", slow)
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            port = await n.start(tf.debug.serve, 0)
            await aget(port)  # starts the analysis
            while not fork_pids:
                await trio.sleep(0.01)
            n.cancel_scope.cancel()
    (pid,) = fork_pids
    with pytest.raises((ProcessLookupError, ChildProcessError)):
        os.kill(pid, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs POSIX")
async def test_one_analysis_at_a_time(
    monkeypatch: pytest.MonkeyPatch, fork_pids: list[int]
) -> None:
    """Frames asked while an analysis runs do not start another one (a walk longer
    than STUCK_EVERY is not doubled); the next frame after it ends does."""
    from trioflow.debug import _serve

    def slow() -> list[Any]:
        time.sleep(0.5)  # in the child
        return []

    monkeypatch.setattr(_serve, "STUCK_EVERY", 0.0)
    monkeypatch.setattr(_serve, "find_stuck", slow)
    async with trio.open_nursery() as n:
        port = await n.start(tf.debug.serve, 0)
        await aget(port)
        for _ in range(5):
            await aget(port)
        assert len(fork_pids) == 1
        await frames_until(port, lambda f: f["stuck_age"] is not None)
        await aget(port)
        assert len(fork_pids) == 2
        n.cancel_scope.cancel()
