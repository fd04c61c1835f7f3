from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import trio
import trio.testing

import trioflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = json.loads((pathlib.Path(tf.debug.__file__).parent / "taskdump.schema.json").read_text())


async def get(port: int, target: str, method: str = "GET") -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, body.decode()


async def crosswise(nursery: trio.Nursery) -> None:
    a = tf.CapacityLimiter(1, name="a")
    b = tf.CapacityLimiter(1, name="b")
    both = trio.Event()
    n = [0]

    async def take(x: tf.CapacityLimiter, y: tf.CapacityLimiter) -> None:
        async with x:
            n[0] += 1
            if n[0] == 2:
                both.set()
            await both.wait()
            async with y:
                pass

    nursery.start_soon(take, a, b, name="left")
    nursery.start_soon(take, b, a, name="right")
    await trio.testing.wait_all_tasks_blocked()


async def test_endpoints() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(tf.debug.serve, 0)
        assert port > 0
        await crosswise(nursery)

        status, text = await get(port, "/debug/tasks")
        assert status == 200
        assert text.startswith("trioflow task dump: ")
        assert '"left" [waiting on limiter' in text

        status, text = await get(port, "/debug/tasks?group=1")
        assert status == 200
        assert "1 task [waiting on limiter" in text

        status, body = await get(port, "/debug/tasks?format=json")
        assert status == 200
        doc = json.loads(body)
        jsonschema.validate(doc, SCHEMA)
        assert {"left", "right"} <= {t["name"] for t in doc["tasks"]}

        status, text = await get(port, "/debug/deadlocks")
        assert status == 200
        assert text.startswith("Found one deadlock (2 tasks):")
        assert '"left"' in text
        assert '"right"' in text
        assert "No leak found." in text

        status, body = await get(port, "/debug/deadlocks?format=json")
        doc = json.loads(body)
        assert doc["schema"] == "trioflow.deadlocks/1"
        assert len(doc["deadlocks"]) == 1
        assert doc["leaks"] == []

        assert (await get(port, "/nothing"))[0] == 404
        assert (await get(port, "/debug/tasks", method="POST"))[0] == 405
        assert (await get(port, "/debug/tasks", method="DELETE"))[0] == 405
        nursery.cancel_scope.cancel()


async def test_serve_refuses_remote_addresses_unless_asked() -> None:
    with pytest.raises(ValueError, match=r"host must be a loopback address .* got '0.0.0.0'"):
        await tf.debug.serve(0, host="0.0.0.0")
    with pytest.raises(ValueError, match=r"port must be between 0 and 65535, got 70000"):
        await tf.debug.serve(70000)
    with pytest.raises(TypeError, match=r"port must be an int, got '80'"):
        await tf.debug.serve("80")  # type: ignore[arg-type]


@pytest.mark.slow
async def test_command_line_dump() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trioflow", "dump", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    async with trio.open_nursery() as nursery:
        port = await nursery.start(tf.debug.serve, 0)
        await crosswise(nursery)
        proc = await trio.to_thread.run_sync(cli, f"127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr
        assert '"left" [waiting on limiter' in proc.stdout
        proc = await trio.to_thread.run_sync(cli, f"http://127.0.0.1:{port}", "--deadlocks")
        assert proc.stdout.startswith("Found one deadlock (2 tasks):")
        proc = await trio.to_thread.run_sync(cli, f"127.0.0.1:{port}", "--json")
        jsonschema.validate(json.loads(proc.stdout), SCHEMA)
        nursery.cancel_scope.cancel()
    # nothing listening any more: a clear error, exit status 1
    proc = await trio.to_thread.run_sync(cli, f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert "cannot fetch http://127.0.0.1:" in proc.stderr


# -- hardening (issue 15: "never hurt the service") ------------------------------


async def raw(port: int, payload: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        data = b""
        with trio.fail_after(20):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "payload",
    [
        b"GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /debug/tasks?format=xml HTTP/1.1\r\n\r\n",
        b"GET /debug/tasks?full=maybe HTTP/1.1\r\n\r\n",
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET /debug/tasks\r\n\r\n",
        b"GET /debug/tasks HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET http://example.com/debug/tasks HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_requests_get_a_400_and_the_server_lives_on(payload: bytes) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(tf.debug.serve, 0)
        status, _ = await raw(port, payload)
        assert status == 400
        status, text = await get(port, "/debug/tasks")  # still serving
        assert status == 200
        assert text.startswith("trioflow task dump")
        nursery.cancel_scope.cancel()


async def test_only_loopback_host_headers_unless_remote_is_allowed() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(tf.debug.serve, 0)
        for host in ("evil.example", "evil.example:80", "10.0.0.1"):
            status, body = await raw(
                port, f"GET /debug/tasks HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            assert status == 403, host
            assert b"not a loopback name" in body
        for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
            status, _ = await raw(
                port, f"GET /debug/tasks HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            assert status == 200, host
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(tf.debug.serve, 0, allow_remote=True))
        status, _ = await raw(port, b"GET /debug/tasks HTTP/1.1\r\nHost: anything.example\r\n\r\n")
        assert status == 200
        nursery.cancel_scope.cancel()


async def test_parameters_are_type_checked() -> None:
    with pytest.raises(TypeError, match=r"allow_remote must be a bool, got 'false'"):
        await tf.debug.serve(0, allow_remote="false")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"max_connections must be an int, got 2.5"):
        await tf.debug.serve(0, max_connections=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_connections must be >= 1, got 0"):
        await tf.debug.serve(0, max_connections=0)
    with pytest.raises(ValueError, match=r"idle_timeout must be > 0, got 0"):
        await tf.debug.serve(0, idle_timeout=0)
    with pytest.raises(TypeError, match=r"fold_above must be an int or None, got '5'"):
        await tf.debug.serve(0, fold_above="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"host must be a loopback address"):
        await tf.debug.serve(0, host="0.0.0.0")


async def test_concurrent_requests_share_one_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    from trioflow.debug import _serve

    calls: list[int] = []
    real = _serve.dump_tasks

    def counting() -> tf.debug.TaskDump:
        calls.append(1)
        return real()

    monkeypatch.setattr(_serve, "dump_tasks", counting)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(tf.debug.serve, 0, cache_for=60))
        results: list[int] = []

        async def one() -> None:
            status, _ = await get(port, "/debug/tasks")
            results.append(status)

        async with trio.open_nursery() as clients:
            for _ in range(10):
                clients.start_soon(one)
        assert results == [200] * 10
        assert len(calls) == 1
        nursery.cancel_scope.cancel()


async def test_idle_connections_are_closed_and_connections_capped() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(tf.debug.serve, 0, max_connections=2, idle_timeout=0.5)
        )
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.1)  # both accepted, both idle
        status, _body = await raw(port, b"GET /debug/tasks HTTP/1.1\r\n\r\n")
        assert status == 503
        with trio.fail_after(20):
            for s in idle:  # closed by the server after idle_timeout
                assert await s.receive_some() == b""
                await s.aclose()
        status, _ = await get(port, "/debug/tasks")
        assert status == 200
        nursery.cancel_scope.cancel()


async def test_big_dumps_fold_by_default_and_full_gives_everything() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(tf.debug.serve, 0, fold_above=50))
        for i in range(200):
            nursery.start_soon(trio.Event().wait, name=f"request-{i}")
        await trio.testing.wait_all_tasks_blocked()
        status, text = await get(port, "/debug/tasks")
        assert status == 200
        assert "(folded: 20" in text
        assert "200 tasks [waiting on event, 200 distinct objects]" in text
        status, text = await get(port, "/debug/tasks?full=1")
        assert text.count("[waiting on event") == 200
        nursery.cancel_scope.cancel()


async def test_big_programs_are_answered_by_a_forked_child() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(tf.debug.serve, 0, fork_above=50))
        for i in range(100):
            nursery.start_soon(trio.Event().wait, name=f"request-{i}")
        await trio.testing.wait_all_tasks_blocked()
        status, text = await get(port, "/debug/tasks?full=1")
        assert status == 200
        assert text.count("[waiting on event") == 100
        status, text = await get(port, "/debug/deadlocks")
        assert status == 200
        assert "No deadlock found." in text
        status, text = await get(port, "/debug/tasks?format=json")
        doc = json.loads(text)
        jsonschema.validate(doc, SCHEMA)
        assert len(doc["tasks"]) > 100
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs POSIX")
@pytest.mark.parametrize("fork_above", [2000, None])
async def test_the_analyses_fork_whatever_the_task_count(
    fork_above: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/debug/deadlocks walks the heap, whose size the task count does not tell:
    it is answered by a forked child even for a small program (not with
    ``fork_above=None``); a small program's task dump stays in the loop."""
    from trioflow.debug import _fork, _serve

    forked: list[int] = []
    real = _fork.in_child

    async def counting(render: Any, **kw: Any) -> bytes:
        forked.append(1)
        return await real(render, **kw)

    monkeypatch.setattr(_serve, "in_child", counting)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(tf.debug.serve, 0, fork_above=fork_above))
        status, text = await get(port, "/debug/tasks")
        assert status == 200
        assert forked == []
        status, text = await get(port, "/debug/deadlocks")
        assert status == 200
        assert "No deadlock found." in text
        assert forked == ([1] if fork_above is not None else [])
        nursery.cancel_scope.cancel()
