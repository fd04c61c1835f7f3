"""The flagship with its debugging tools on, as a user runs them: ``top`` against
``--debug-port`` and a ``--timeline`` recording, on a real process."""

from __future__ import annotations

import json
import pathlib
import re
import time
import urllib.request
from typing import Any

import pytest

from tests.debug.trace_events import load, validate
from tests.examples._process import interrupt_when
from tests.examples.test_event_service import _check_accounts, _command, _env, _rows
from trioflow.debug._top import TopState

pytestmark = pytest.mark.slow


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_top_against_the_flagship_shows_its_stages_limiters_and_no_false_stuck(
    tmp_path: pathlib.Path,
) -> None:
    """``top``'s client, pointed at the running flagship, sees the pipeline's stages,
    the API limiter and rate limiter, the enrich workers as one group, and -- once the
    background reachability analysis has run -- no *stuck* lint: a live service busy
    on sockets, a database thread and timers is not stuck. Then SIGTERM still drains."""
    ports: list[int] = []
    seen: dict[str, Any] = {}

    def busy(line: str) -> bool:
        m = re.search(r"debug endpoint on http://127\.0\.0\.1:(\d+)/debug/", line)
        if m:
            ports.append(int(m[1]))
        if not ports or re.search(r" · written [1-9]", line) is None:
            return False
        state = TopState(f"http://127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state.poll()
            assert state.error is None, state.error
            if state.stuck_age is not None:
                break
            time.sleep(0.2)
        seen["resources"] = dict(state.resources)
        seen["groups"] = set(state.groups)
        seen["lints"] = list(state.lints)
        seen["stuck_age"] = state.stuck_age
        seen["deadlocks"] = _get(f"http://127.0.0.1:{ports[0]}/debug/deadlocks?format=json")
        return True

    code, out = interrupt_when(
        _command(tmp_path, "--events", "1000000", "--duration", "120", "--debug-port", "0"),
        busy=busy,
        cwd=tmp_path,
        env=_env(),
    )
    assert code == 0, out
    assert seen["stuck_age"] is not None, "the reachability analysis never ran"
    resources = seen["resources"]
    for label in ("stage 'enrich'", "stage 'write'", "limiter 'enrich-api'"):
        assert label in resources, sorted(resources)
    assert "rate limiter 'api-quota'" in resources, sorted(resources)
    assert resources["stage 'enrich'"].limit == 200
    assert any(g.startswith("stage enrich, worker") for g in seen["groups"]), seen["groups"]
    stuck = [x for x in seen["lints"] if x["kind"] in ("stuck", "error")]
    assert stuck == [], stuck
    assert seen["deadlocks"]["stuck"] == [], seen["deadlocks"]["stuck"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    _check_accounts(summary, _rows(tmp_path))


def test_a_timeline_of_the_flagship_opens_with_tracks_flows_and_counters(
    tmp_path: pathlib.Path,
) -> None:
    """``--timeline`` on a short flagship run writes a trace the viewers import: one
    track per task, wake-up flows, the limiters' counters and the pipeline's items."""
    trace = tmp_path / "trace.json"
    code, out = interrupt_when(
        _command(tmp_path, "--events", "1000000", "--duration", "120", "--timeline", str(trace)),
        busy=lambda line: re.search(r" · written [1-9]", line) is not None,
        cwd=tmp_path,
        env=_env(),
    )
    assert code == 0, out
    events = load(trace.read_text(encoding="utf-8"))
    counts = validate(events)
    assert counts.get("s", 0) > 0, counts  # wake-up flows
    assert counts.get("f", 0) > 0, counts
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert any("enrich-api" in n for n in counters), counters
    assert any("api-quota" in n for n in counters), counters
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(n.startswith("stage enrich, worker") for n in threads), sorted(threads)[:20]
    processes = {
        e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"
    }
    assert any("pipeline 'events'" in n for n in processes), processes
    items = [e for e in events if e["ph"] == "X" and e.get("cat") == "item"]
    stages = {e["name"] for e in items}
    assert {"enrich", "write"} <= stages, stages
    summary = json.loads((tmp_path / "summary.json").read_text())
    _check_accounts(summary, _rows(tmp_path))
