from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

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
        await stream.send_all(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
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
