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
    abandoned: int = 0
    """Thread attempts (``executor="thread"``) abandoned when the run ended: their items
    are ``unfinished``; the threads ran on in the background and their results were
    discarded."""


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
    dead_letters_omitted: int = 0
    """Dead letters not kept in :attr:`dead_letters`: sent to the pipeline's
    ``dead_letters=`` channel (which then holds them), or past ``max_dead_letters``."""
    pipeline: str = ""
    """The pipeline's name."""

    @property
    def abandoned_threads(self) -> int:
        """Thread attempts abandoned when the run ended, over all stages."""
        return sum(s.abandoned for s in self.stages.values())

    @property
    def conserved(self) -> bool:
        """Whether every source item has exactly one fate (the conservation law holds)."""
        return self.source_items == (
            self.delivered + self.filtered + self.skipped + self.dead_lettered + self.unfinished
        )

    def format(self) -> str:
        """The human summary a service prints at exit, in the order of the conservation law.

        ::

            pipeline 'events': 6000 source items in 12.3 s
              delivered      5810   (30 outputs)
              filtered        150
              skipped           0
              dead-lettered    40   (40 dead letters)
              unfinished        0
              = 6000: every item accounted for
              stage enrich    received 6000  emitted 5960  dead-lettered 40  retried 12  p50 20.1 ms  p99 81.0 ms
              ...

        Zero counts of a stage are left out; a stage line names retries,
        failures and abandoned threads when there were any.
        """
        total = self.delivered + self.filtered + self.skipped + self.dead_lettered + self.unfinished
        name = f"pipeline {self.pipeline!r}" if self.pipeline else "pipeline"
        letters = len(self.dead_letters) + self.dead_letters_omitted
        rows = [
            ("delivered", self.delivered, f"({self.outputs} outputs)"),
            ("filtered", self.filtered, ""),
            ("skipped", self.skipped, ""),
            ("dead-lettered", self.dead_lettered, f"({letters} dead letters)" if letters else ""),
            ("unfinished", self.unfinished, ""),
        ]
        width = max(len(str(self.source_items)), 4)
        lines = [f"{name}: {self.source_items} source items in {self.elapsed:.1f} s"]
        for label, n, note in rows:
            lines.append(f"  {label:<14}{n:>{width}}   {note}".rstrip())
        verdict = (
            "every item accounted for"
            if total == self.source_items
            else f"MISMATCH: {self.source_items} read"
        )
        lines.append(f"  = {total}: {verdict}")
        if self.abandoned_threads:
            lines.append(
                f"  note: {self.abandoned_threads} thread attempt(s) abandoned at shutdown "
                "(counted unfinished; the threads ran on and their results were discarded)"
            )
        stage_width = max((len(n) for n in self.stages), default=0)
        for stage_name, st in self.stages.items():
            lines.append(f"  stage {stage_name:<{stage_width}}  {_stage_line(st)}")
        return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _stage_line(st: StageReport) -> str:
    parts = [f"received {st.received}"]
    for label, n in (
        ("emitted", st.emitted),
        ("filtered", st.filtered),
        ("skipped", st.skipped),
        ("dead-lettered", st.dead_lettered),
        ("unfinished", st.unfinished),
        ("failed", st.failed),
        ("retried", st.retried),
        ("abandoned threads", st.abandoned),
    ):
        if n:
            parts.append(f"{label} {n}")
    if st.latency.count:
        parts.append(f"p50 {_ms(st.latency.p50)}  p99 {_ms(st.latency.p99)}")
    return "  ".join(parts)
