from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow import _registry
from trioflow.debug import BlockedOn, TaskDump, TaskInfo, dump_tasks

SCHEMA = json.loads((pathlib.Path(tf.debug.__file__).parent / "taskdump.schema.json").read_text())


def running(dump: TaskDump) -> TaskInfo:
    (me,) = [t for t in dump.tasks if t.state == "running"]
    return me


def by_name(dump: TaskDump, name: str) -> TaskInfo:
    matches = [t for t in dump.tasks if t.name == name]
    assert len(matches) == 1, [t.name for t in dump.tasks]
    return matches[0]


async def test_every_kind_of_wait_is_named(autojump_clock: trio.testing.MockClock) -> None:
    api = tf.CapacityLimiter(1, name="api")
    db = tf.CapacityLimiter(2, name="db")
    the_lock = trio.Lock()
    trio_limiter = trio.CapacityLimiter(1)
    sem = trio.Semaphore(0)
    done = trio.Event()
    _send, receive = trio.open_memory_channel[int](0)
    send2, _receive2 = trio.open_memory_channel[int](0)
    a, b = trio.socket.socketpair()

    async def holder() -> None:
        async with db, api, the_lock:
            await trio_limiter.acquire()
            await done.wait()

    async def on_api() -> None:
        async with api:
            pass

    async def on_lock() -> None:
        async with the_lock:
            pass

    async def on_channel() -> None:
        await receive.receive()

    async def sender() -> None:
        await send2.send(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder, name="holder")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(on_api, name="on-api")
        nursery.start_soon(on_lock, name="on-lock")
        nursery.start_soon(trio_limiter.acquire, name="on-trio-limiter")
        nursery.start_soon(sem.acquire, name="on-sem")
        nursery.start_soon(on_channel, name="on-channel")
        nursery.start_soon(sender, name="sender")
        nursery.start_soon(trio.sleep, 1000, name="sleeper")
        nursery.start_soon(a.recv, 1, name="on-io")
        await trio.sleep(2.5)
        dump = dump_tasks()

        assert by_name(dump, "holder").blocked_on == BlockedOn("event", "done", done)
        assert sorted(by_name(dump, "holder").holding) == [
            f"capacity limiter <{id(trio_limiter):#x}>",
            "limiter 'api'",
            "limiter 'db'",
            f"lock 'the_lock' <{id(the_lock):#x}>",
        ]
        t = by_name(dump, "on-api")
        assert t.state == "blocked"
        assert t.blocked_on == BlockedOn("limiter", "api", api)
        assert t.blocked_for == 2.5  # stamped when it parked, read on trio's clock
        assert by_name(dump, "on-lock").blocked_on == BlockedOn("lock", "the_lock", the_lock)
        assert by_name(dump, "on-lock").blocked_for is None  # trio keeps no stamp
        assert by_name(dump, "on-trio-limiter").blocked_on == BlockedOn(
            "capacity limiter", "", trio_limiter
        )
        assert by_name(dump, "on-sem").blocked_on == BlockedOn("semaphore", "", sem)
        assert by_name(dump, "on-channel").blocked_on == BlockedOn(
            "channel receive", "receive", receive
        )
        assert by_name(dump, "sender").blocked_on == BlockedOn("channel send", "send2", send2)
        assert by_name(dump, "sleeper").blocked_on == BlockedOn("sleep", "", None)
        assert by_name(dump, "on-io").blocked_on == BlockedOn("I/O", "", None)
        me = running(dump)
        assert me.state == "running"
        assert me.blocked_on is None
        for name in ("holder", "on-api", "sleeper"):
            assert by_name(dump, name).parent_id == me.id
            assert by_name(dump, name).depth == me.depth + 1

        # who holds and who waits, per primitive
        res = {r.describe(): r for r in dump.resources}
        assert res["limiter 'api'"].holders == [by_name(dump, "holder").id]
        assert res["limiter 'api'"].waiters == [by_name(dump, "on-api").id]
        done.set()
        nursery.cancel_scope.cancel()
    a.close()
    b.close()


async def test_stack_is_outermost_first_and_trimmed_at_the_library_call() -> None:
    async def inner() -> None:
        await trio.sleep(1000)

    async def outer() -> None:
        await inner()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outer, name="outer")
        await trio.testing.wait_all_tasks_blocked()
        t = by_name(dump_tasks(), "outer")
        assert [f.function for f in t.stack] == [
            "test_stack_is_outermost_first_and_trimmed_at_the_library_call.<locals>.outer",
            "test_stack_is_outermost_first_and_trimmed_at_the_library_call.<locals>.inner",
            "sleep",
        ]
        assert t.stack[0].filename == __file__
        full = by_name(dump_tasks(full_stacks=True), "outer")
        assert len(full.stack) > len(t.stack)
        assert full.stack[: len(t.stack)] == t.stack
        nursery.cancel_scope.cancel()


async def test_frames_inside_an_async_generator_are_shown() -> None:
    async def gen() -> Any:
        await trio.sleep_forever()
        yield 1

    async def consumer() -> None:
        async for _ in gen():
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer, name="consumer")
        await trio.testing.wait_all_tasks_blocked()
        t = by_name(dump_tasks(), "consumer")
        names = [f.function.rsplit(".", 1)[-1] for f in t.stack]
        assert names == ["consumer", "gen", "sleep_forever"]
        assert t.blocked_on == BlockedOn("sleep", "", None)
        nursery.cancel_scope.cancel()


async def test_runnable_state() -> None:
    async def spinner() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spinner, name="spinner")
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        # The spinner was rescheduled by its own checkpoint: it is queued, not parked.
        t = by_name(dump_tasks(), "spinner")
        assert t.state == "runnable"
        assert t.blocked_on is None
        assert "[runnable]" in t.header()
        nursery.cancel_scope.cancel()


def test_created_by_is_recorded_only_with_install() -> None:
    # A plain trio.run: under trioflow's pytest plugin, trio tests always record spawners.
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever, name="before")
            with tf.debug.install(signal=None):
                line = _line() + 1
                nursery.start_soon(trio.sleep_forever, name="after")
                await trio.testing.wait_all_tasks_blocked()
                dump = dump_tasks()
            me = running(dump)
            assert by_name(dump, "before").created_by is None
            created = by_name(dump, "after").created_by
            assert created is not None
            assert created.task_id == me.id
            assert created.name == me.name
            assert created.frame is not None
            assert (created.frame.filename, created.frame.lineno) == (__file__, line)
            text = by_name(dump, "after").format()
            assert f'created by "{me.name}" in task {me.id}\n\t{__file__}:{line}' in text
            assert "in a nursery of task" in by_name(dump, "before").format()
            nursery.cancel_scope.cancel()

    trio.run(main)


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno


async def test_ids_are_stable_across_dumps() -> None:
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(trio.sleep_forever, name=f"t{i}")
        await trio.testing.wait_all_tasks_blocked()
        first = {t.name: t.id for t in dump_tasks()}
        second = {t.name: t.id for t in dump_tasks()}
        assert first == second
        assert len(set(first.values())) == len(first)
        nursery.cancel_scope.cancel()


async def test_format_goroutine_style(autojump_clock: trio.testing.MockClock) -> None:
    api = tf.CapacityLimiter(1, name="api")
    db = tf.CapacityLimiter(1, name="db")

    async def enrich() -> None:
        async with db, api:
            pass

    async with trio.open_nursery() as nursery:
        await api.acquire()
        for i in range(3):
            nursery.start_soon(enrich, name=f"enrich-{i}")
        await trio.sleep(2.4)
        dump = dump_tasks()
        # trio runs new tasks in random order: the first to run holds db
        (first,) = [t for t in dump.tasks if t.holding == ["limiter 'db'"]]
        others = sorted(t.name for t in dump.tasks if t.name.startswith("enrich") and t != first)
        text = first.format().splitlines()
        assert (
            text[0]
            == f"task {first.id} \"{first.name}\" [waiting on limiter 'api' (weight 1 of 1 tokens, 1 borrowed), 2.4s]:"
        )
        assert text[1] == "LimiterFace.__aenter__(...)"
        assert text[2].startswith("\t")
        assert "trioflow/_admission/_face.py:" in text[2]
        assert text[3] == "test_format_goroutine_style.<locals>.enrich(...)"
        assert text[4].startswith(f"\t{__file__}:")
        assert "holding limiter 'db'" in text
        full = dump.format()
        assert full.startswith(f"trioflow task dump: {len(dump)} tasks\n")
        assert first.format() in full

        grouped = dump.format(group=True)
        # enrich-1 and -2 wait on db, held by enrich-0: same stack, same wait
        assert (
            f'2 tasks [waiting on limiter \'db\' (weight 1 of 1 tokens, 1 borrowed), 2.4s]: "{others[0]}", "{others[1]}"'
            in grouped
        )
        assert (
            f"1 task [waiting on limiter 'api' (weight 1 of 1 tokens, 1 borrowed), 2.4s]: \"{first.name}\""
            in grouped
        )
        api.release()
        nursery.cancel_scope.cancel()


async def test_json_follows_the_schema(autojump_clock: trio.testing.MockClock) -> None:
    api = tf.CapacityLimiter(1, name="api")
    lock = trio.Lock()

    async def worker() -> None:
        async with api, lock:
            await trio.sleep_forever()

    with tf.debug.install(signal=None):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, name="w1")
            nursery.start_soon(worker, name="w2")
            await trio.sleep(1)
            doc = json.loads(dump_tasks().to_json())
            jsonschema.validate(doc, SCHEMA)
            assert doc["schema"] == tf.debug.SCHEMA_VERSION == "trioflow.taskdump/1"
            tasks = {t["name"]: t for t in doc["tasks"]}
            # trio runs new tasks in random order: one holds, the other waits
            holder, waiter = sorted(
                (tasks["w1"], tasks["w2"]), key=lambda t: t["blocked_on"]["kind"] == "limiter"
            )
            assert waiter["blocked_on"]["kind"] == "limiter"
            assert waiter["blocked_on"]["name"] == "api"
            assert waiter["blocked_on"]["obj_id"] == f"{id(api):#x}"
            assert waiter["blocked_for"] == 1.0
            assert holder["blocked_on"]["kind"] == "sleep"
            assert holder["holding"] == ["limiter 'api'"]  # trio's lock: nobody waits on it
            assert holder["created_by"]["frame"]["filename"] == __file__
            api_res = [r for r in doc["resources"] if r["name"] == "api"]
            assert api_res[0]["holders"] == [holder["id"]]
            assert api_res[0]["waiters"] == [waiter["id"]]
            # a document that breaks the schema is caught (the check can fail)
            doc["tasks"][0]["state"] = "sleeping"
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(doc, SCHEMA)
            nursery.cancel_scope.cancel()


def test_dump_outside_trio_run_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"dump_tasks\(\) must be called from inside trio.run"):
        dump_tasks()


async def test_include_system_shows_trio_s_own_tasks() -> None:
    names = {t.name for t in dump_tasks(include_system=True)}
    assert "<init>" in names
    assert "<TrioToken.run_sync_soon task>" in names
    assert "<init>" not in {t.name for t in dump_tasks()}


class _Bucket:
    """The registry protocol as a rate limiter implements it: enough to park on."""

    kind = "rate limiter"

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: list[_Wait] = []
        _registry.register(self)

    def _trioflow_holders(self) -> list[_registry.Holding]:
        return []

    def _trioflow_waiters(self) -> list[_registry.Waiting]:
        return list(self.waiters)

    async def acquire(self) -> None:
        task = trio.lowlevel.current_task()
        w = _Wait(task, self, 1, trio.current_time())
        self.waiters.append(w)
        task.custom_sleep_data = w
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)


class _Wait:
    def __init__(self, task: trio.lowlevel.Task, primitive: Any, weight: int, since: float):
        self.task = task
        self.primitive = primitive
        self.weight = weight
        self.since = since


async def test_any_registered_primitive_shows_by_kind_and_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rate limiter (or lane, task group, stage) that follows the registry
    protocol appears in dumps as itself, with no change to the debug code."""
    bucket = _Bucket("x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bucket.acquire, name="caller")
        await trio.sleep(0.5)
        t = by_name(dump_tasks(), "caller")
        assert t.blocked_on == BlockedOn("rate limiter", "x", bucket)
        assert t.header() == f"task {t.id} \"caller\" [waiting on rate limiter 'x', 0.5s]:"
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not hasattr(tf, "RateLimiter"), reason="RateLimiter not merged yet")
async def test_waiting_on_a_real_rate_limiter(autojump_clock: trio.testing.MockClock) -> None:
    rate = tf.RateLimiter(1, burst=1, name="x")  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        await rate.acquire()
        nursery.start_soon(rate.acquire, name="caller")
        await trio.testing.wait_all_tasks_blocked()
        t = by_name(dump_tasks(), "caller")
        assert "rate limiter 'x'" in t.header()
        nursery.cancel_scope.cancel()


async def test_the_running_task_shows_its_whole_stack() -> None:
    async def deeper() -> TaskDump:
        return dump_tasks()

    dump = await deeper()
    me = running(dump)
    names = [f.function.rsplit(".", 1)[-1] for f in me.stack]
    assert names[-2:] == ["test_the_running_task_shows_its_whole_stack", "deeper"]
    assert me.stack[-1].filename == __file__


async def test_created_by_points_at_the_spawning_line_through_trioflow_and_trio() -> None:
    """Issue 15: not trioflow/_tasks/_group.py, not the trio.run(...) line."""
    started = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        started.set()
        await trio.sleep_forever()

    with tf.debug.install(signal=None):
        async with trio.open_nursery() as nursery:
            async with tf.open_task_group(name="jobs") as tg:
                spawn_line = _line() + 1
                await tg.spawn(trio.sleep_forever, name="via-spawn")
                serve_line = _line() + 1
                listeners = await nursery.start(trio.serve_tcp, handler, 0)
                port = listeners[0].socket.getsockname()[1]
                client = await trio.open_tcp_stream("127.0.0.1", port)
                await started.wait()
                await trio.testing.wait_all_tasks_blocked()
                dump = dump_tasks()
                spawned = by_name(dump, "via-spawn").created_by
                assert spawned is not None
                assert spawned.frame is not None
                assert (spawned.frame.filename, spawned.frame.lineno) == (__file__, spawn_line)
                handlers = [t for t in dump if t.name.endswith("handler")]
                assert len(handlers) == 1
                by_trio = handlers[0].created_by
                assert by_trio is not None
                assert by_trio.frame is not None
                # spawned inside trio's serve_listeners: the line that started serving
                assert (by_trio.frame.filename, by_trio.frame.lineno) == (__file__, serve_line)
                tg.cancel_scope.cancel()
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_an_exited_creator_is_marked() -> None:
    with tf.debug.install(signal=None):
        async with trio.open_nursery() as nursery:

            async def spawner() -> None:
                nursery.start_soon(trio.sleep_forever, name="orphan")

            nursery.start_soon(spawner, name="spawner")
            await trio.testing.wait_all_tasks_blocked()
            orphan = by_name(dump_tasks(), "orphan")
            assert orphan.created_by is not None
            assert orphan.created_by.exited
            assert "(exited)" in orphan.format()
            assert orphan.to_dict()["created_by"]["exited"] is True
            nursery.cancel_scope.cancel()


def test_a_weight_above_the_capacity_is_flagged() -> None:
    """A limiter shrunk under a waiter (total_tokens set lower) leaves a weight that never fits."""
    from trioflow.debug._dump import _weight_detail  # pyright: ignore[reportPrivateUsage]

    class Shrunk:
        def statistics(self) -> object:
            return tf.LimiterStatistics(
                name="api", total_tokens=1, borrowed_tokens=3, tasks_waiting=1, borrowers=()
            )

    assert _weight_detail(Shrunk(), 2) == "weight 2 of 1 tokens, 3 borrowed: can never fit"
    assert _weight_detail(object(), 2) == ""


async def test_deadlines_shields_and_weights() -> None:
    api = tf.CapacityLimiter(3, name="api")
    release = trio.Event()

    async def heavy() -> None:
        await api.acquire(weight=2)

    async def with_deadline() -> None:
        with trio.move_on_after(30):
            await trio.Event().wait()

    async def shielded() -> None:
        with trio.CancelScope(shield=True):
            await release.wait()  # a shield: only the event ends it

    async with trio.open_nursery() as nursery:
        await api.acquire(weight=3)
        try:
            nursery.start_soon(heavy, name="heavy")
            nursery.start_soon(with_deadline, name="timed")
            nursery.start_soon(shielded, name="shielded")
            await trio.testing.wait_all_tasks_blocked()
            dump = dump_tasks()
            waiter = by_name(dump, "heavy")
            assert waiter.wait_detail == "weight 2 of 3 tokens, 3 borrowed"
            assert "(weight 2 of 3 tokens, 3 borrowed)" in waiter.header()
            timed = by_name(dump, "timed")
            assert timed.deadline is not None
            assert 25 < timed.deadline <= 30
            assert ", deadline in " in timed.header()
            shield = by_name(dump, "shielded")
            assert shield.shielded
            assert shield.deadline is None
            assert shield.header().endswith(", shielded]:")
            assert {t["name"]: t["shielded"] for t in dump.to_dict()["tasks"]}["shielded"] is True
        finally:
            release.set()
            nursery.cancel_scope.cancel()
    api.release(weight=3)


def test_snake_case_registry_kinds_print_with_a_space() -> None:
    """Registry kinds are becoming identifiers (rate_limiter); both spellings print the same."""
    from trioflow.debug._model import describe

    assert describe("rate_limiter", "api", None) == "rate limiter 'api'"
    assert describe("rate limiter", "api", None) == "rate limiter 'api'"
    assert describe("task_group", "jobs", None) == "task group 'jobs'"
    assert describe("wait_all_tasks_blocked", "", None) == "wait_all_tasks_blocked"


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
async def test_pipeline_channels_are_named_after_the_stages_they_join(ordered: bool) -> None:
    """A task parked on a pipeline's channel says which stages it sits between (issue 15)."""
    gate = trio.Event()

    async def parse(x: int) -> int:
        return x

    async def store(x: int) -> int:
        await gate.wait()
        return x

    pipe = (
        tf.Pipeline("orders")
        .map(parse, workers=2, ordered=ordered, name="parse")
        .map(store, name="store")
    )
    async with pipe.open(range(20)) as run:
        await trio.testing.wait_all_tasks_blocked()
        dump = dump_tasks()
        waits = {t.name: t.blocked_on.describe() for t in dump.tasks if t.blocked_on is not None}
        text = dump.format()
        gate.set()
        assert len([x async for x in run.outputs]) == 20
    assert waits["pipeline orders, source"].startswith("channel send 'orders: source → parse' <0x")
    parse_waits = {v for k, v in waits.items() if k.startswith("stage parse")}
    assert any(w.startswith("channel send 'orders: parse → store'") for w in parse_waits), waits
    if ordered:
        # the ordered stage's own channels name the stage and their role
        assert any("'orders: parse (" in w for w in parse_waits), waits
    assert "waiting on channel send 'orders: parse → store'" in text


async def test_labels_are_weak_and_never_block() -> None:
    send, receive = trio.open_memory_channel[int](0)
    _registry.label(send, "p: a → b")
    assert _registry.label_of(send) == "p: a → b"
    assert _registry.label_of(receive) is None
    _registry.label(3, "an int cannot be weakly referenced: not labelled")
    assert _registry.label_of(3) is None
    assert _registry.label_of([]) is None  # unhashable: no label, no error
    del send
    import gc

    gc.collect()
    # the label went with the channel end: nothing keeps it alive
    assert "p: a → b" not in _registry._labels.values()
    receive.close()


async def test_amap_channels_and_task_handles_are_named_in_dumps() -> None:
    """A task parked inside amap, or on a TaskHandle, says on what (issue 15).

    Each wait here is on a trio object that trioflow owns: without its label
    a dump shows a bare ``channel send <0x…>`` or ``event <0x…>``.
    """
    gate = trio.Event()

    async def slow(x: int) -> int:
        if x == 0:
            await gate.wait()
        return x

    async def numbers() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    def waits_of(dump: TaskDump) -> list[str]:
        return [t.blocked_on.describe() for t in dump.tasks if t.blocked_on is not None]

    async with tf.open_task_group(name="jobs") as tg:
        handle = await tg.spawn(gate.wait)

        async def wait_for_it() -> None:
            await handle.wait()

        tg.start_soon(wait_for_it)
        # item 0 holds the one worker: the feeder waits to hand over item 1
        async with tf.amap(slow, numbers(), max_at_once=1) as fed:
            # nobody reads these: the worker waits to hand over its second result
            async with tf.amap(slow, range(1, 10), max_at_once=1) as unread:
                # item 0 is slow: a reader waits for it while the results
                # behind it fill the order window
                async with tf.amap(slow, range(10), max_at_once=2, ordered=True) as ordered:
                    got: list[int] = []

                    async def read() -> None:
                        got.extend([r async for r in ordered])

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read)
                        await trio.testing.wait_all_tasks_blocked()
                        dump = dump_tasks()
                        gate.set()
                    assert got == list(range(10))
                assert [r async for r in unread] == list(range(1, 10))
            assert [r async for r in fed] == list(range(10))
        name = handle.name
    waits = waits_of(dump)
    text = dump.format()

    def some(prefix: str) -> bool:
        return any(w.startswith(prefix) for w in waits)

    what = "amap of test_amap_channels_and_task_handles_are_named_in_dumps.<locals>.slow"
    assert some(f"channel send '{what}: inputs' <0x"), waits
    assert some(f"channel send '{what}: results' <0x"), waits
    assert some(f"channel receive '{what}: results' <0x"), waits
    assert some(f"semaphore '{what}: order window' <0x"), waits
    assert some(f"event 'jobs: {name} done' <0x"), waits
    assert f"waiting on event 'jobs: {name} done'" in text
