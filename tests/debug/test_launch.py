"""Dumps without changing code: ``python -m trioflow run`` and ``TRIOFLOW_DEBUG`` (issue 15)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from trioflow.debug._launch import Settings, parse

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
needs_sigusr1 = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1")

APP = textwrap.dedent(
    """
    import os, signal, sys
    import trio

    async def main():
        event = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(event.wait, name="waiter")
            await trio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGUSR1)
            await trio.sleep(0.2)
            event.set()
        print("survived", sys.argv[1:], flush=True)

    trio.run(main)
    """
)


def run(
    tmp_path: pathlib.Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "app.py").write_text(APP)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})),
    )


@needs_sigusr1
def test_without_install_sigusr1_kills_the_process(tmp_path: pathlib.Path) -> None:
    """What the docs say: with nothing installed, SIGUSR1 keeps its default action."""
    proc = run(tmp_path, "app.py")
    assert proc.returncode == -signal.SIGUSR1
    assert "survived" not in proc.stdout


@needs_sigusr1
def test_trioflow_run_gives_dumps_without_a_code_change(tmp_path: pathlib.Path) -> None:
    proc = run(tmp_path, "-m", "trioflow", "run", "app.py", "one", "--two")
    assert proc.returncode == 0, proc.stderr
    assert "survived ['one', '--two']" in proc.stdout
    assert "trioflow task dump: 2 tasks" in proc.stderr
    assert '"waiter" [waiting on event' in proc.stderr
    assert "app.py:8" in proc.stderr  # created by: the start_soon line


@needs_sigusr1
def test_trioflow_debug_environment_variable(tmp_path: pathlib.Path) -> None:
    (tmp_path / "uses_trioflow.py").write_text("import trioflow\n" + APP)
    proc = run(tmp_path, "uses_trioflow.py", env={"TRIOFLOW_DEBUG": "stuck_after=30"})
    assert proc.returncode == 0, proc.stderr
    assert "survived" in proc.stdout
    assert "trioflow task dump" in proc.stderr


def test_a_malformed_environment_variable_is_reported_and_ignored(tmp_path: pathlib.Path) -> None:
    (tmp_path / "uses_trioflow.py").write_text(
        "import trioflow, trio\nasync def main():\n    print('ran')\ntrio.run(main)\n"
    )
    proc = run(tmp_path, "uses_trioflow.py", env={"TRIOFLOW_DEBUG": "stuck_after=soon"})
    assert proc.returncode == 0
    assert "ran" in proc.stdout
    assert "trioflow: ignoring TRIOFLOW_DEBUG='stuck_after=soon': stuck_after must be a number" in (
        proc.stderr
    )


def test_trioflow_run_rejects_bad_options(tmp_path: pathlib.Path) -> None:
    proc = run(tmp_path, "-m", "trioflow", "run", "--stuck-after", "-3", "app.py")
    assert proc.returncode == 2
    assert "stuck_after must be > 0, got -3.0" in proc.stderr
    proc = run(tmp_path, "-m", "trioflow", "run")
    assert proc.returncode == 2
    assert "give a script" in proc.stderr


def test_parse() -> None:
    assert parse("1") == Settings()
    s = parse("signal=none, stuck_after=30, slow_step=0.5, serve=6060, fold_above=none")
    assert s == Settings(signal=None, stuck_after=30.0, slow_step=0.5, serve=6060, fold_above=None)
    if hasattr(signal, "SIGUSR2"):
        assert parse("signal=USR2").signal == signal.SIGUSR2
        assert parse("signal=SIGUSR2").signal == signal.SIGUSR2
    with pytest.raises(ValueError, match="expected key=value"):
        parse("stuck=3")
    with pytest.raises(ValueError, match="on_deadlock must be one of"):
        parse("on_deadlock=panic")
    with pytest.raises(ValueError, match="signal must be a signal name or number, got 'NOPE'"):
        parse("signal=NOPE")
    with pytest.raises(ValueError, match="serve must be an integer or none, got 'x'"):
        parse("serve=x")
