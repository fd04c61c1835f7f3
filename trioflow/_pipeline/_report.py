"""What a pipeline run reports: per-stage counts, dead letters, latencies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

__all__ = ["DeadLetter", "Latency", "PipelineReport", "StageReport"]


@attrs.frozen
class DeadLetter:
    """An item a stage gave up on (``on_error="dead_letter"``), with why and where."""

    item: object
    """The item as the stage received it (a list for the output of a ``batch`` stage)."""
    stage: str
    """The name of the stage that gave up."""
    exception: BaseException
    """The exception of the last attempt."""


@attrs.frozen
class Latency:
    """Per-item time in a stage (from receiving an item to its outcome), in seconds.

    Quantiles come from the most recent items (a ring of 2048 samples), so a
    long run reports its recent behaviour; ``None`` when no item finished.
    """

    count: int
    """Items measured in all."""
    p50: float | None
    """Median."""
    p99: float | None
    """99th percentile."""
    max: float | None
    """Largest of the kept samples."""


@attrs.frozen
class StageReport:
    """Counts of one stage's *input* items (a batch stage counts the items it batched).

    The conservation law: ``received == emitted + filtered + skipped +
    dead_lettered + unfinished``. ``failed`` counts items whose last attempt
    failed, whatever the error policy then did with them (skipped,
    dead-lettered, or — with ``on_error="fail"`` — left unfinished as the
    pipeline failed); ``retried`` counts retries (attempts after the first).
    """

    received: int
    emitted: int
    filtered: int
    skipped: int
    failed: int
    retried: int
    dead_lettered: int
    unfinished: int
    busy_time: float
    """Seconds the stage's workers spent on items (summed over workers)."""
    latency: Latency


@attrs.frozen
class PipelineReport:
    """What one run of a pipeline did with every source item.

    Every item read from the source ends in exactly one of ``delivered``,
    ``filtered``, ``skipped``, ``dead_lettered`` or ``unfinished`` (counts of
    *source* items), so ``source_items`` is their sum. A source item that a
    ``flat_map`` split takes the gravest fate of its parts (unfinished, then
    dead-lettered, skipped, delivered, filtered).
    """

    source_items: int
    """Items read from the source."""
    outputs: int
    """Items the last stage emitted (a batch counts once)."""
    skipped: int
    """Source items a stage gave up on with ``on_error="skip"``."""
    unfinished: int
    """Source items still in flight when the run ended (stopped, cancelled or failed)."""
    dead_letters: Sequence[DeadLetter]
    """Items a stage gave up on with ``on_error="dead_letter"``, in order."""
    elapsed: float
    """Seconds from the start of the run to its end."""
    stages: Mapping[str, StageReport]
    """Each stage's report, by stage name, in pipeline order."""
    delivered: int = 0
    """Source items that came out of the last stage (taken from ``run.outputs``)."""
    filtered: int = 0
    """Source items a ``filter`` dropped (or a ``flat_map`` turned into nothing)."""
    dead_lettered: int = 0
    """Source items inside the dead letters."""
