"""``trioflow.stage.duration`` aggregated in process, for exporters trioflow wraps.

The SDK's ``Histogram.record`` costs on the order of 10 µs (attribute
hashing, a ``Measurement``, the exemplar filter, a lock per storage), which
is more than a trivial pipeline stage's own work per item. The
OpenTelemetry API has no way to hand the SDK a histogram aggregated
elsewhere, so when every reader of the meter provider is a
:class:`~trioflow.telemetry._metric_export.StageDurationReader` (what
:func:`~trioflow.telemetry.configure` builds, and what
:func:`~trioflow.telemetry.metric_reader` makes), trioflow keeps the
histogram itself — bucket counts, sum, minimum and maximum per attribute
set, the SDK's explicit-bucket aggregation — and the reader adds it to
each export as the SDK would have (cumulative temporality). A record is
then a bisect and a few additions under a lock, on the order of 0.5 µs
(``docs/benchmarks/telemetry.md``).

This module imports neither trio nor the SDK: the hook runs in pipeline
workers, the snapshot in the SDK's collection thread.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, Final

from . import _hooks
from ._spans import error_type

__all__ = ["Cell", "Point", "StageDurations", "make_aggregating_hook"]

#: What the instrument is called and says, whichever path records it.
NAME: Final = "trioflow.stage.duration"
UNIT: Final = "s"
DESCRIPTION: Final = "How long a pipeline stage took over one item: its function, with every retry."


class Cell:
    """One histogram part: bucket counts, sum, minimum, maximum.

    A cell of one stage run has one writer, the Trio thread that runs the
    stage, and no lock: the writer makes :attr:`gen` odd while it updates
    and even when done, and a reader retries until it copied the cell
    between two equal, even readings (a sequence lock).
    """

    __slots__ = ("attributes", "counts", "gen", "max", "min", "sum")

    def __init__(self, attributes: Mapping[str, str], buckets: int) -> None:
        self.attributes: Final = dict(attributes)
        self.counts: Final = [0] * buckets
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.gen = 0

    def add(self, duration: float, i: int) -> None:
        """Count ``duration`` in bucket ``i`` (a shared cell: under its store's lock)."""
        self.counts[i] += 1
        self.sum += duration
        if duration < self.min:
            self.min = duration
        if duration > self.max:
            self.max = duration

    def merge(self, counts: Sequence[int], total: float, low: float, high: float) -> None:
        """Add a copy of another part (under its store's lock)."""
        mine = self.counts
        for i, c in enumerate(counts):
            mine[i] += c
        self.sum += total
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    def copy(self) -> tuple[list[int], float, float, float]:
        """A consistent copy of a single-writer cell, from any thread."""
        while True:
            gen = self.gen
            if not gen & 1:
                copied = (list(self.counts), self.sum, self.min, self.max)
                if self.gen == gen:
                    return copied
            time.sleep(0)  # the writer is mid-update: let it finish


#: One point of a snapshot: attributes, bucket counts, count, sum, min, max.
Point = tuple[dict[str, str], list[int], int, float, float, float]

_Key = frozenset[tuple[str, str]]


class StageDurations:
    """The in-process histogram of one meter provider's ``trioflow.stage.duration``.

    Each stage run counts its items into a cell of its own
    (:meth:`stage_cell`), written only by the Trio thread that runs it, with
    no lock; an item whose last attempt failed goes to a cell shared by
    its attribute set, under :attr:`lock`. :meth:`snapshot` (the SDK's
    collection thread) adds the parts up per attribute set, and folds the
    cell of a stage run that is gone into the shared one, so cells do not
    pile up in a service that runs many pipelines. Points are kept for the
    provider's life, as the SDK keeps a cumulative point per attribute set.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: Final = tuple(float(b) for b in bounds)
        self.lock: Final = threading.Lock()
        self._shared: Final[dict[_Key, Cell]] = {}
        self._own: list[tuple[weakref.ref[Any], Cell]] = []
        #: The cumulative points' start, as the SDK stamps its own.
        self.start_time_unix_nano: Final = time.time_ns()

    def __bool__(self) -> bool:
        """Has any item been counted (or is a stage run counting)?"""
        return bool(self._shared or self._own)

    def stage_cell(self, stage: Any) -> Cell:
        """A new cell for one stage run (weakly referenced; written only by its thread)."""
        cell = Cell(stage.attributes, len(self.bounds) + 1)
        with self.lock:
            self._own.append((weakref.ref(stage), cell))
        return cell

    def add_shared(self, attributes: Mapping[str, str], duration: float) -> None:
        """Count one duration in the shared cell of ``attributes`` (any thread)."""
        key = frozenset(attributes.items())
        i = bisect_left(self.bounds, duration)
        with self.lock:
            cell = self._shared.get(key)
            if cell is None:
                cell = self._shared[key] = Cell(attributes, len(self.bounds) + 1)
            cell.add(duration, i)

    def snapshot(self) -> list[Point]:
        """Every attribute set that has counted an item: its parts added up."""
        with self.lock:
            totals: dict[_Key, Cell] = {}
            for key, cell in self._shared.items():
                total = totals[key] = Cell(cell.attributes, len(self.bounds) + 1)
                total.merge(cell.counts, cell.sum, cell.min, cell.max)
            live: list[tuple[weakref.ref[Any], Cell]] = []
            for ref, cell in self._own:
                key = frozenset(cell.attributes.items())
                gone = ref() is None  # before the copy: a gone run writes no more
                counts, total_sum, low, high = cell.copy()
                for target in (totals, self._shared) if gone else (totals,):
                    part = target.get(key)
                    if part is None:
                        part = target[key] = Cell(cell.attributes, len(self.bounds) + 1)
                    part.merge(counts, total_sum, low, high)
                if not gone:
                    live.append((ref, cell))
            self._own = live
        return [
            (dict(c.attributes), list(c.counts), sum(c.counts), c.sum, c.min, c.max)
            for c in totals.values()
            if any(c.counts)
        ]


def make_aggregating_hook(store: StageDurations) -> _hooks.StageHook:
    """The stage hook that counts each item's duration into ``store``.

    A stage run caches its own cell (``StageRun.metric_cell``) and counts
    into it without a lock (see :class:`Cell`); an item whose last attempt
    failed goes to the shared cell of its attributes with its
    ``error.type``, under the store's lock.
    """
    bounds = store.bounds

    def on_item(stage: Any, duration: float, exc: BaseException | None) -> None:
        if exc is not None:
            store.add_shared({**stage.attributes, "error.type": error_type(exc)}, duration)
            return
        cell: Cell | None = stage.metric_cell
        if cell is None:
            cell = stage.metric_cell = store.stage_cell(stage)
        i = bisect_left(bounds, duration)
        cell.gen += 1
        cell.counts[i] += 1
        cell.sum += duration
        if duration < cell.min:
            cell.min = duration
        if duration > cell.max:
            cell.max = duration
        cell.gen += 1

    return on_item
