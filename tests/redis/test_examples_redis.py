"""The examples that need real servers, run as a user runs them: replicas.py (Redis),
and the flagship's second mode (a Redis stream in, PostgreSQL out)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .redis_pending import pending_event_ids
from .servers import PostgresServer, RedisServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


def test_replicas_share_limits_and_recover_a_killed_replica(
    own_redis: RedisServer, tmp_path: pathlib.Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "replicas.py"),
            "--redis", own_redis.url,
            "--replicas", "3",
            "--events", "900",
            "--rate", "300",
            "--ttl", "1.5",
            "--claim-idle", "1.5",
            "--kill-after", "1.0",
            "--summary-json", str(tmp_path / "summary.json"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=_env(),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    # Every event written exactly once, whichever replica took it; nothing left pending.
    assert s["conserved"] is True
    assert s["rows"] == s["distinct"] == 900
    assert s["pending_left"] == 0
    # The killed replica's leases and pending entries came back.
    assert s["leases_back_after"] is not None
    assert s["entries_back_after"] is not None
    # The survivors shared the work; the global rate held (burst 6 on top).
    assert s["shares"]["1"] > 0
    assert s["shares"]["2"] > 0
    assert s["rate_achieved"] <= 300 * 1.1 + 6 / max(s["elapsed"], 1e-9)
    assert "SIGKILLed replica 0" in proc.stdout
    assert "every event written exactly once" in proc.stdout


def test_event_service_broker_and_postgres_mode(
    own_redis: RedisServer, postgres: PostgresServer, tmp_path: pathlib.Path
) -> None:
    import psycopg

    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "event_service.py"),
            "--broker", own_redis.url,
            "--database", postgres.url,
            "--events", "600",
            "--duration", "15",
            "--quiet",
            "--jaeger-file", str(tmp_path / "trace.jaeger.json"),
            "--summary-json", str(tmp_path / "summary.json"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["conserved"] is True
    assert summary["source_items"] == 600  # every published event was read from the stream
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events").fetchone()
        assert row is not None
        rows, distinct = row
        written_ids = {r[0] for r in conn.execute("SELECT id FROM events")}
    assert rows == distinct == summary["database_rows"] == summary["written"]
    assert rows > 450
    # At least once, never acknowledged before it was processed: every event
    # that is in the database had its entry acknowledged, and every entry
    # still pending is one whose event is not in the database.
    pending_ids = pending_event_ids(own_redis.port, "events", "event-service")
    assert not (pending_ids & written_ids)
    assert len(pending_ids) <= 600 - rows
