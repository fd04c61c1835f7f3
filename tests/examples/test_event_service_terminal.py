"""The flagship on a real terminal (a pseudo-terminal): one progress line redrawn in place.

Its plain-lines behaviour when the output is a pipe is checked by
``test_event_service.py``, which reads it through a pipe.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "event_service.py"

REDRAW = re.compile(
    r"\r\[ *[\d.]+s\] done [\d,]+/1,500 \(\d+%\) · written [\d,]+ · [\d,]+/s"
    r"( · ETA (<1 s|\d+ s|\d+ min \d\d s))? · limit \d+ · in flight \d+ · p99 \d+ ms\x1b\[K"
)


def run_on_a_terminal(command: list[str], cwd: pathlib.Path, columns: int) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as stdout and stderr; return (exit code, bytes written).

    Output post-processing is off, so what the program wrote arrives unchanged
    (no "\\n" turned into "\\r\\n").
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        command, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode()


def _command(tmp_path: pathlib.Path, events: int) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--events",
        str(events),
        "--database",
        str(tmp_path / "events.sqlite3"),
        "--jaeger-file",
        str(tmp_path / "trace.jaeger.json"),
    ]


@pytest.mark.slow
def test_one_live_line_then_the_summary(tmp_path: pathlib.Path) -> None:
    code, out = run_on_a_terminal(
        _command(tmp_path, 1500),
        cwd=tmp_path,
        columns=200,
    )
    assert code == 0, out
    live, summary = out.split("pipeline 'events': ", 1)
    # One line on the screen: redrawn in place (carriage return, clear to the
    # end of the line), never a new line per report.
    assert live.strip("\n").count("\n") == 0, live
    redraws = REDRAW.findall(live)
    assert len(REDRAW.sub("", live).strip("\n")) == 0, f"not a redraw: {REDRAW.sub('', live)!r}"
    assert len(live.split("\r")) - 1 >= 3, live  # it moved while we watched
    assert redraws
    # The last redraw, as the run ended, shows every event done.
    assert live.rstrip("\n").split("\r")[-1].split("] ", 1)[1].startswith("done 1,500/1,500 (100%)")
    assert "every event accounted for" in summary
    assert re.search(
        r"^adaptive limit +from \d+ → (max|min) \d+ at \d+ s → (max|min) \d+ at \d+ s → final \d+$",
        summary,
        flags=re.M,
    ), summary


@pytest.mark.slow
def test_a_narrow_terminal_cuts_the_line_instead_of_wrapping(tmp_path: pathlib.Path) -> None:
    code, out = run_on_a_terminal(
        _command(tmp_path, 600),
        cwd=tmp_path,
        columns=40,
    )
    assert code == 0, out
    live = out.split("pipeline 'events': ", 1)[0].strip("\n")
    for redraw in live.split("\r")[1:]:
        assert len(redraw.removesuffix("\x1b[K")) <= 39, redraw
