"""``python -m trioflow top URL``: a live console over :func:`trioflow.debug.serve`.

This module is the console's model: it fetches ``/debug/top`` frames,
merges each delta into what it already has and turns cumulative sums into
rates between two frames. It needs nothing beyond the standard library; the
screen (``_topview``, on textual) is imported only when the console starts,
so the ``console`` extra (``pip install '.[console]'`` in a clone of
trioflow) is only needed to run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

__all__ = ["GroupRow", "ResourceRow", "TopState", "add_arguments", "main"]


def base_url(raw: str) -> str:
    """``host:port`` / ``http://host:port[/...]`` -> ``http://host:port``."""
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if not parts.netloc:
        raise ValueError(f"url must be host:port or http://host:port, got {raw!r}")
    return f"{parts.scheme}://{parts.netloc}"


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@attrs.define
class GroupRow:
    """Tasks that do the same thing, with rates over the last refresh."""

    name: str
    tasks: int
    parked: int
    polls: int
    busy: float
    parked_total: float
    """Seconds parked by parks that ended."""
    parked_sum: float
    """Sum of the start times of the parks going on (the server's clock)."""
    max_step: float
    max_task: int
    waiting_on: str
    waiting_count: int
    busy_pct: float = 0.0
    """Share of one CPU these tasks used since the previous frame, in %."""
    polls_per_s: float = 0.0
    parked_time: float = 0.0
    """Seconds its tasks have spent parked, the parks going on included."""

    def at(self, now: float) -> None:
        self.parked_time = self.parked_total + self.parked * now - self.parked_sum


@attrs.define
class ResourceRow:
    label: str
    kind: str
    limit: float | None
    in_use: float
    waiting: int
    wait_p99: float | None
    waits: int


SORT_KEYS = ("busy", "polls", "tasks", "parked", "max_step", "name")


@attrs.define
class TopState:
    """What the console shows, kept up to date frame by frame."""

    base: str
    slow_ms: float = 50.0
    wait_s: float = 10.0
    version: int = 0
    time: float | None = None
    tasks: int = 0
    groups: dict[str, GroupRow] = attrs.Factory(dict[str, GroupRow])
    resources: dict[str, ResourceRow] = attrs.Factory(dict[str, ResourceRow])
    lints: list[dict[str, Any]] = attrs.Factory(list[dict[str, Any]])
    #: seconds since the service's last reachability analysis ended (None: none yet)
    stuck_age: float | None = None
    #: the share of the time the service's step hooks saw (1.0: every step)
    coverage: float = 1.0
    frames: int = 0
    last_bytes: int = 0
    error: str | None = None
    sort: str = "busy"
    filter: str = ""

    def frame_url(self) -> str:
        return (
            f"{self.base}/debug/top?since={self.version}"
            f"&slow_ms={self.slow_ms:g}&wait_s={self.wait_s:g}"
        )

    def poll(self) -> None:
        """Fetch and apply one frame; a failure is kept in ``error`` (shown, retried)."""
        try:
            with urllib.request.urlopen(self.frame_url(), timeout=5.0) as resp:
                body = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.error = f"cannot fetch {self.base}/debug/top: {exc}"
            return
        self.last_bytes = len(body)
        self.apply(json.loads(body))

    def apply(self, frame: dict[str, Any]) -> None:
        """Merge one frame (full or delta)."""
        if frame.get("schema") != "trioflow.top/1":
            self.error = f"unknown schema {frame.get('schema')!r}"
            return
        self.error = None
        dt = None if self.time is None else frame["time"] - self.time
        if frame["full"]:
            old = self.groups
            self.groups = {}
            self.resources = {}
        else:
            old = self.groups
            for name in frame["gone"]:
                self.groups.pop(name, None)
            for label in frame["gone_resources"]:
                self.resources.pop(label, None)
        for raw in frame["groups"]:
            row = GroupRow(*raw)
            prev = old.get(row.name)
            if prev is not None and dt:
                row.busy_pct = max(0.0, (row.busy - prev.busy) / dt * 100)
                row.polls_per_s = max(0.0, (row.polls - prev.polls) / dt)
            self.groups[row.name] = row
        if dt:
            # rows missing from a delta did not change: nothing ran there
            changed = {raw[0] for raw in frame["groups"]}
            for name, row in self.groups.items():
                if name not in changed:
                    row.busy_pct = 0.0
                    row.polls_per_s = 0.0
        for row in self.groups.values():
            row.at(frame["time"])
        for raw in frame["resources"]:
            r = ResourceRow(*raw)
            self.resources[r.label] = r
        self.lints = frame["lints"]
        self.stuck_age = frame.get("stuck_age")
        self.coverage = frame.get("coverage", 1.0)
        self.version = frame["v"]
        self.time = frame["time"]
        self.tasks = frame["tasks"]
        self.frames += 1

    def sorted_groups(self) -> list[GroupRow]:
        rows = [g for g in self.groups.values() if self.filter.lower() in g.name.lower()]
        key = self.sort
        if key == "name":
            return sorted(rows, key=lambda g: g.name)
        attr = {"busy": "busy_pct", "polls": "polls_per_s"}.get(key, key)
        return sorted(rows, key=lambda g: (-getattr(g, attr), g.name))

    def next_sort(self) -> str:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        return self.sort

    def group_tasks(self, name: str) -> dict[str, Any]:
        return fetch_json(f"{self.base}/debug/top?group={quote(name, safe='')}")

    def task_stack(self, tid: int) -> str:
        doc = fetch_json(f"{self.base}/debug/top?task={tid}")
        return str(doc["text"])


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.1f}s"
    return f"{seconds * 1e3:.1f}ms"


def num(x: float | None) -> str:
    if x is None:
        return "∞"
    return f"{x:g}" if isinstance(x, float) else str(x)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="host:port or http://host:port of tf.debug.serve()")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument(
        "--slow-ms", type=float, default=50.0, help="'never yields' above this step (ms)"
    )
    p.add_argument("--wait-s", type=float, default=10.0, help="'long wait' above this wait (s)")


def main(args: argparse.Namespace) -> int:
    """Run the console until ``q``; 2 if the console extra is missing."""
    try:
        state = TopState(base_url(args.url), slow_ms=args.slow_ms, wait_s=args.wait_s)
    except ValueError as exc:
        print(f"trioflow top: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print(f"trioflow top: --interval must be > 0, got {args.interval!r}", file=sys.stderr)
        return 2
    try:
        from ._topview import TopApp
    except ImportError as exc:
        print(
            f"trioflow top needs the console extra ({exc}): "
            "pip install '.[console]' in a clone of trioflow",
            file=sys.stderr,
        )
        return 2
    TopApp(state, interval=args.interval).run()
    return 0
