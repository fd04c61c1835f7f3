"""Throwaway real servers for the Redis tests: redis-server and a PostgreSQL cluster.

Each runs on 127.0.0.1 from a temporary directory and is stopped by the
test that started it; nothing relies on a system service. A test that needs
a server which is not installed is skipped with the reason (CI installs both).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def missing(what: str) -> None:
    """Skip a test whose server is not installed; under CI (``CI=true``), fail it.

    A developer without the server still gets a green run of everything
    else; CI, which installs both servers, must never pass by skipping.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI must install it: see .ci/run)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {limit}s")


class RedisServer:
    """One redis-server process: start, stop, pause (SIGSTOP: slow), resume, restart."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            missing("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.dir = tempfile.mkdtemp(prefix="trioflow-redis-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return hits[-1] if hits else None


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb in a temp dir), trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        initdb, postgres = pg_bin("initdb"), pg_bin("postgres")
        if initdb is None or postgres is None:
            missing("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="trioflow-pg-")
        data = Path(self.dir) / "data"
        self.port = free_port()
        env = dict(os.environ)
        user_args: list[str] = []
        self._demote: int | None = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as 'nobody'.
            import pwd

            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._demote = nobody.pw_uid
            user_args = ["--user", "nobody"]
        subprocess.run(
            [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._demote,
            env=env,
        )
        del user_args
        self.proc = subprocess.Popen(
            [
                postgres, "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", self.dir, "-F", "-c", "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._demote,
        )  # fmt: skip
        _wait_port(self.port, self.proc, "postgres")
        # Accepting TCP is not yet accepting logins: wait for a real query.
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("select 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)
