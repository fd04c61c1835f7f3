"""Run an example as a real process, wait until its output says it is busy, then SIGTERM it."""

from __future__ import annotations

import os
import pathlib
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence


def interrupt_when(
    command: Sequence[str],
    *,
    busy: Callable[[str], bool],
    cwd: pathlib.Path,
    env: dict[str, str] | None = None,
    wait: float = 60.0,
) -> tuple[int, str]:
    """Start ``command``; once a line satisfies ``busy``, send SIGTERM; return (exit code, output).

    Lines are read by a thread, so a process that goes silent cannot hang the
    test: after ``wait`` seconds without a busy line it fails with what it
    printed. The process is killed if it outlives the test.
    """
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    out: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                raise AssertionError(f"not busy within {wait} s:\n{''.join(out)}") from None
            if line is None:
                raise AssertionError(f"exited before it was busy:\n{''.join(out)}")
            out.append(line)
            if busy(line):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=wait)
        reader.join(timeout=wait)
        while not lines.empty():
            line = lines.get_nowait()
            if line is not None:
                out.append(line)
        return proc.returncode, "".join(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=wait)
        if proc.stdout is not None:
            proc.stdout.close()
