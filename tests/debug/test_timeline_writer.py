"""A full recording's writer process: what happens when it, or the program, dies.

(Every test of ``test_timeline.py`` runs with the process and with the
thread fallback; these are the cases only a process has.)
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

import trioflow as tf
from trioflow.debug import _timeline, _tracefile

from .trace_events import load, validate

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def wait_until(what: str, ready: object, timeout: float = 60.0) -> None:
    """Poll an outside process's state (not a timing assertion: a deadline)."""
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0: it is gone once it is one.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


async def steps(n: int) -> None:
    for _ in range(n):
        await trio.lowlevel.checkpoint()


async def test_a_full_recording_is_written_by_a_process_that_ends_with_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.json"
    with tf.debug.record_timeline(path) as tl:
        writer = tl._writer
        assert isinstance(writer, _timeline._ProcessWriter)
        await steps(100)
    assert writer.proc.returncode == 0
    events = load(path.read_text(encoding="utf-8"))
    validate(events)
    assert sum(e["name"] == "run" for e in events) >= 100


async def test_no_process_falls_back_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "")
    path = tmp_path / "t.json"
    with tf.debug.record_timeline(path) as tl:
        assert isinstance(tl._writer, _timeline._ThreadWriter)
        await steps(10)
    validate(load(path.read_text(encoding="utf-8")))


async def test_a_pipe_that_cannot_be_made_non_blocking_falls_back_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_start = _timeline._start_writer_process

    def start() -> subprocess.Popen[bytes] | None:
        proc = real_start()
        if proc is not None:
            started.append(proc)
        return proc

    def refuse(fd: int, blocking: bool) -> None:
        raise OSError("not on this pipe")

    monkeypatch.setattr(_timeline, "_start_writer_process", start)
    monkeypatch.setattr(os, "set_blocking", refuse)
    path = tmp_path / "t.json"
    with tf.debug.record_timeline(path) as tl:
        assert isinstance(tl._writer, _timeline._ThreadWriter)
        await steps(10)
    validate(load(path.read_text(encoding="utf-8")))
    (proc,) = started
    assert proc.returncode is not None  # the process started for nothing was reaped


@posix_only
async def test_a_writer_process_that_dies_fails_the_stop_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_timeline, "_CHUNK", 20)
    path = tmp_path / "t.json"
    tl = tf.debug.record_timeline(path, sample_interval=1e-6)
    with tl:
        writer = tl._writer
        assert isinstance(writer, _timeline._ProcessWriter)
        writer.proc.kill()
        writer.proc.wait()
        await steps(200)  # chunks handed to a pipe nobody reads: the loop goes on
        with pytest.raises(OSError, match=r"writing the timeline to .*t\.json failed") as info:
            tl.stop()
    assert f"exited with {-signal.SIGKILL}" in str(info.value)


@posix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_writer_ignores_the_signals_that_stop_the_program(tmp_path: Path) -> None:
    """A terminal's Ctrl-C or a service manager's SIGTERM to the whole group
    must not cut the file short: the writer ends when the program does."""
    path = tmp_path / "t.json"
    with tf.debug.record_timeline(path) as tl:
        writer = tl._writer
        assert isinstance(writer, _timeline._ProcessWriter)
        pid = writer.proc.pid
        wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

        def ignoring() -> bool:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                line = next(x for x in f if x.startswith("SigIgn:"))
            mask = int(line.split()[1], 16)
            return all(mask & (1 << (s - 1)) for s in wanted)

        wait_until("the writer ignores SIGINT, SIGTERM and SIGHUP", ignoring)
        for s in wanted:
            os.kill(pid, s)
        await steps(50)
    assert writer.proc.returncode == 0
    validate(load(path.read_text(encoding="utf-8")))


PROGRAM = textwrap.dedent(
    """
    import os, signal, sys, time
    import trio
    import trioflow as tf
    from trioflow.debug import _timeline, _tracefile

    _timeline._CHUNK = 100

    async def main():
        with tf.debug.record_timeline(sys.argv[1], sample_interval=1e-6) as tl:
            writer = tl._writer
            hand = writer.hand
            steps = [0]

            def counted(chunk):
                steps[0] += sum(e[0] == 0 for e in chunk)
                hand(chunk)

            writer.hand = counted
            while steps[0] < 500:
                await trio.lowlevel.checkpoint()
            print(writer.proc.pid, steps[0], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no stop(), no finally

    trio.run(main)
    """
)


@pytest.mark.slow  # a Python process of its own, importing trioflow
@posix_only
def test_a_program_killed_mid_recording_leaves_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    writer_pid, handed = (int(x) for x in done.stdout.split())  # handed: steps sent
    wait_until("the writer process ends after the program", lambda: gone(writer_pid))
    text = path.read_text(encoding="utf-8")
    assert text.rstrip().endswith("]")  # closed by the writer, not cut short
    events = json.loads(text)
    validate(events)
    assert sum(e["name"] == "run" for e in events) == handed


def test_the_writer_protocol_in_process(tmp_path: Path) -> None:
    """What the writer process does with what the program sends, read here:
    a header, chunks, the end; or a pipe that closes without an end."""
    base = 0.0  # times in binary fractions of a second: exact in µs
    meet = (_tracefile.MEET, base, 7, "worker", 2, "nursery of task 1 main")
    chunks = [
        [meet, (_tracefile.STEP, 0.25, 0.5, 7)],
        [(_tracefile.PARK, 0.5, 7, "sleep", 1)],
    ]
    for ended in (True, False):
        path = tmp_path / f"t-{ended}.json"
        wire = _tracefile.message((str(path), base, 0.01))
        wire += b"".join(_tracefile.message(c) for c in chunks)
        if ended:
            wire += _tracefile.message(("end", 2.0))
        else:
            wire += _tracefile.message(chunks[0])[:7]  # cut inside a message
        assert _tracefile.serve(io.BytesIO(wire)) == 0
        events = json.loads(path.read_text(encoding="utf-8"))
        validate(events)
        (run,) = [e for e in events if e["name"] == "run"]
        assert (run["ts"], run["dur"]) == (250_000.0, 250_000.0)
        (wait,) = [e for e in events if e["name"].startswith("wait sleep")]
        assert wait["name"] == "wait sleep (still waiting)"
        assert wait["ts"] == 500_000.0
        # The end closes the still-parked wait at the end's time; a pipe
        # that closed early, at the last event the writer had (1 ns long).
        assert wait["dur"] == (1_500_000.0 if ended else 0.001)


SLOW_READER = textwrap.dedent(
    """
    import sys, time
    total = 0
    while True:
        data = sys.stdin.buffer.read1(16384)
        if not data:
            break
        total += len(data)
        time.sleep(0.0005)
    print(total)
    """
)


@posix_only
def test_a_writer_far_behind_makes_the_sender_wait_until_it_is_back_under_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory waiting for the writer stays bounded: past the bound the loop
    writes, blocking, until it is back under; below it, it never waits."""
    bound = 300_000
    monkeypatch.setattr(_timeline, "_MAX_PENDING", bound)
    with subprocess.Popen(
        [sys.executable, "-c", SLOW_READER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as reader:
        writer = _timeline._ProcessWriter(reader, Path("unused.json"), 0.0, 0.01)
        sent = len(_tracefile.message(("unused.json", 0.0, 0.01)))  # the header
        behind = 0
        for _ in range(60):
            payload = b"x" * 100_000
            writer._send(payload)
            sent += len(payload)
            assert writer.pending_bytes <= bound
            assert writer.pending_bytes == sum(len(v) for v in writer.pending)
            behind = max(behind, writer.pending_bytes)
        assert behind > 0  # the slow reader did leave data waiting, without a wait
        writer._drain(0)
        assert writer.pending_bytes == 0
        assert writer.error is None
        assert reader.stdin is not None
        assert reader.stdout is not None
        reader.stdin.close()
        out = reader.stdout.read()
        assert reader.wait(timeout=60) == 0
    assert int(out) == sent
