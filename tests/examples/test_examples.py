"""Every example, run as a user runs it: a real process, real sockets, short settings.

Each test checks the exit code and the lines and figures the example prints
that show its point (the limits held, the shares, the accounts balanced),
not just that it ran. ``event_service.py`` has its own test file;
``local_api.py`` is a module the examples import.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.examples._process import interrupt_when

# Real processes: skipped by the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# replicas.py and event_backends.py (the flagship's Redis/PostgreSQL mode)
# need real servers: tests/redis/test_examples_redis.py runs them.
NOT_HERE = {"event_service.py", "local_api.py", "replicas.py", "event_backends.py"}


def run(tmp_path: pathlib.Path, script: str, *args: str, timeout: float = 90) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def numbers(pattern: str, text: str) -> list[tuple[str, ...]]:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert found, f"no match for {pattern!r} in:\n{text}"
    return [f if isinstance(f, tuple) else (f,) for f in found]


TESTED = {
    "cpu_stage.py",
    "deadlock.py",
    "fetch_all.py",
    "limited_tasks.py",
    "pipeline_basics.py",
    "priority_lanes.py",
    "webhook_dispatcher.py",
}


def test_every_example_has_a_test_here() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")} - NOT_HERE
    assert scripts == TESTED


def test_limited_tasks(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "limited_tasks.py")
    assert "finished 20 jobs" in out
    assert "borrowed_tokens=0, tasks_waiting=0" in out
    # While busy, never more than the 4 tokens are out.
    for held, total in numbers(r"CapacityLimiter 'workers' at \S+, (\d+)/(\d+) with", out):
        assert int(total) == 4
        assert int(held) <= 4


def test_deadlock_report_names_both_limiters_and_both_locks(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "deadlock.py")
    assert "2 deadlock(s) found" in out
    assert out.count("Found one deadlock") == 2
    # Each report opens with its cycle, before the stacks.
    reports = [r.split("Stacks of the tasks")[0] for r in out.split("Found one deadlock")[1:]]
    limiters = [r for r in reports if "limiter 'orders'" in r]
    locks = [r for r in reports if "ledger_lock" in r]
    assert len(limiters) == len(locks) == 1
    # The limiter cycle: each task waits on what the other holds.
    (report,) = limiters
    assert "waiting on limiter 'payments'" in report
    assert "waiting on limiter 'orders'" in report
    assert "which is held by task" in report
    assert '"checkout-1"' in report
    assert '"refund-1"' in report
    (lock_report,) = locks
    assert '"audit"' in lock_report
    assert '"ledger"' in lock_report
    assert "audit_lock" in lock_report
    # And the grouped dump shows the stacks down to the example's lines.
    assert "deadlock.py" in out


def test_fetch_all_holds_its_limits(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "fetch_all.py", "--pages", "60")
    ((ok, failed),) = numbers(r"^  (\d+) pages, (\d+) failed", out)
    assert int(ok) + int(failed) == 60
    assert len(re.findall(r"^  page \d+ failed: 500$", out, flags=re.MULTILINE)) == int(failed)
    ((peak, limit),) = numbers(r"server saw at most (\d+) requests at once \(limit (\d+)\)", out)
    assert 1 <= int(peak) <= int(limit) == 8
    ((shared_peak,),) = numbers(r"server saw at most (\d+) at once \(both groups share", out)
    assert 1 <= int(shared_peak) <= 8
    assert "news: last spawn returned" in out
    assert "blog: last spawn returned" in out


def test_pipeline_basics_drains_on_sigterm(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "pipeline_basics.py")
    assert "SIGTERM: stop reading, drain" in out
    ((read,),) = numbers(r"^read (\d+) events", out)
    ((delivered, filtered, dead, unfinished),) = numbers(
        r"delivered (\d+), filtered (\d+), dead-lettered (\d+), unfinished (\d+)", out
    )
    assert int(unfinished) == 0
    assert int(delivered) + int(filtered) + int(dead) == int(read)
    assert 0 < int(read) < 1000  # stopped early by the SIGTERM
    assert (
        int(
            numbers(
                r"stage enrich: received +\d+, emitted +\d+, filtered +\d+, retried +(\d+)", out
            )[0][0]
        )
        > 0
    )


def _phase(out: str, title: str) -> dict[str, tuple[int, float, int]]:
    """lane -> (calls, share, peak held) from one phase's table."""
    block = out.split(title, 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^  (\w+) +\d+% +(\d+) +(\d+)% +(\d+) ", block, flags=re.MULTILINE)
    return {name: (int(calls), int(share) / 100, int(peak)) for name, calls, share, peak in rows}


def test_priority_lanes_prints_shares_that_follow_the_lanes(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "priority_lanes.py", "--phase", "0.6")
    alone = _phase(out, "1. batch alone")
    flood = _phase(out, "2. everyone flooding")
    trickle = _phase(out, "3. interactive flood")
    assert set(alone) == set(flood) == set(trickle) == {"interactive", "batch", "reports"}
    # 1: batch alone borrows, but never beyond its 80% cap (8 of 10 tokens).
    assert alone["interactive"][0] == alone["reports"][0] == 0
    assert alone["batch"][1] == 1.0
    assert 0 < alone["batch"][2] <= 8
    # 2: nobody starves; interactive (priority 0, 60% reserve) gets the most;
    # reports stay under their 20% cap.
    assert all(calls > 0 for calls, _, _ in flood.values())
    assert flood["interactive"][1] > flood["batch"][1] > flood["reports"][1]
    assert flood["reports"][2] <= 2
    # 3: the trickle of batch calls is served despite the interactive flood.
    assert trickle["batch"][0] > 0
    ((peak,),) = numbers(r"the API saw \d+ calls, at most (\d+) at once", out)
    assert int(peak) <= 10
    assert re.search(r"reports: \d+ grants, [1-9]\d* of them promoted by max_wait", out), out


def test_cpu_stage_gives_the_same_signatures_in_every_mode(tmp_path: pathlib.Path) -> None:
    out = run(tmp_path, "cpu_stage.py", "--docs", "6", "--words", "300")
    assert "same signatures in every mode: yes" in out
    rows = dict(
        (mode, (float(t), float(x)))
        for mode, t, x in numbers(r"^(in-process|thread|process) +([\d.]+)s +([\d.]+)x", out)
    )
    assert set(rows) == {"in-process", "thread", "process"}
    assert rows["in-process"][1] == 1.0
    # The figure is printed, whatever it is (no timing assertion in tests).
    assert re.search(r"processes vs in-process: [\d.]+x on \d+ cores", out)


def _webhook_command(tmp_path: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(EXAMPLES / "webhook_dispatcher.py"),
        "--dead-letters",
        str(tmp_path / "dead.jsonl"),
        "--summary-json",
        str(tmp_path / "summary.json"),
        *extra,
    ]


def _check_webhook_accounts(tmp_path: pathlib.Path) -> dict[str, Any]:
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["conserved"] is True
    assert summary["acked_all_received"] is True
    subs = summary["subscribers"]
    assert set(subs) == {"billing", "crm", "analytics", "audit"}
    for row in subs.values():
        assert row["sent"] == row["delivered"] + row["dead_lettered"] + row["unfinished"]
        assert row["peak_calls"] <= 6  # --per-subscriber
        # Every delivery we counted as delivered, the subscriber got.
        assert row["server_received"] >= row["delivered"]
    assert summary["peak_calls"] <= 16  # --concurrency
    lines = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert len(lines) == summary["dead_lettered"] == summary["dead_letter_lines"]
    for line in lines:
        record = json.loads(line)
        assert record["subscriber"] in subs
        assert record["idempotency_key"] == str(record["event"]["id"])
    return summary


def test_webhook_dispatcher_accounts_for_every_delivery(tmp_path: pathlib.Path) -> None:
    # audit is down for the whole run: each of its deliveries is tried 4
    # times, then dead-lettered.
    out = run(
        tmp_path,
        *_webhook_command(tmp_path, "--events", "60", "--outage-at", "0", "--outage-for", "60")[1:],
    )
    summary = _check_webhook_accounts(tmp_path)
    assert summary["events"] == 60
    assert summary["sent"] == 240
    assert summary["unfinished"] == 0
    audit = summary["subscribers"]["audit"]
    assert audit["delivered"] == 0
    assert audit["dead_lettered"] == 60
    assert audit["retries"] == 3 * 60
    # billing refuses (422) the one event in 40 without an amount: dead-lettered
    # after one attempt, never retried.
    billing = summary["subscribers"]["billing"]
    assert billing["dead_lettered"] == 1
    assert billing["delivered"] == 59
    assert billing["retries"] == 0
    records = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    audit_records = [r for r in records if r["subscriber"] == "audit"]
    assert len(audit_records) == 60
    (refused,) = [r for r in records if r["subscriber"] == "billing"]
    assert refused["event"]["id"] == 39
    assert refused["attempts"] == 1
    assert "Rejected: 422 from billing" in refused["error"]
    for record in audit_records:
        # Its last attempt got a 500, or (on a loaded machine) no answer in time.
        assert record["attempts"] == 4, record
        assert "500 from audit" in record["error"] or "no answer within" in record["error"], record
    assert re.search(
        r"conservation: 240 deliveries = \d+ delivered \+ \d+ dead-lettered \+ 0 unfinished +OK",
        out,
    ), out
    assert "every delivery counted as delivered reached its subscriber: OK" in out


def test_webhook_dispatcher_sigterm_finishes_what_it_took(tmp_path: pathlib.Path) -> None:
    code, out = interrupt_when(
        _webhook_command(tmp_path, "--events", "1000000", "--progress", "0.3"),
        busy=lambda line: bool((m := re.search(r"delivered +(\d+)", line)) and int(m.group(1)) > 0),
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert code == 0, out
    assert "SIGTERM: taking no new events" in out
    summary = _check_webhook_accounts(tmp_path)
    # Stopped early; every delivery taken was finished within the grace, and
    # the event in hand went to every subscriber.
    assert 0 < summary["events"] < 1_000_000
    assert summary["unfinished"] == 0
    assert summary["sent"] == 4 * summary["events"]


@pytest.mark.parametrize("script", sorted(TESTED))
def test_example_has_a_docstring_with_its_command(script: str) -> None:
    text = (EXAMPLES / script).read_text()
    assert text.startswith('"""')
    assert f"python examples/{script}" in text
