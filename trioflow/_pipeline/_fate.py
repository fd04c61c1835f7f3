"""What became of an item: one vocabulary for the ledger, stages, spans, metrics and reports."""

from __future__ import annotations

import enum
from typing import Final, final

__all__ = ["FATES", "Fate"]


@final
class Fate(enum.IntEnum):
    """The end of an item's road, ordered by gravity (``Fate.UNFINISHED`` is the gravest).

    Every item a stage receives leaves it with exactly one fate, and every
    source item ends the run with exactly one. A source item that a
    ``flat_map`` split into several takes the gravest fate of its parts: one
    part unfinished makes the whole item unfinished, whatever became of the
    others. ``max(fates)`` gives that rule.

    Spans and metrics name a fate with :attr:`outcome` (``"delivered"``) and,
    at a stage, with :attr:`stage_outcome` (where ``DELIVERED`` reads
    ``"emitted"``: the item went on to the next stage).
    """

    FILTERED = 0
    """A ``filter`` dropped it (or a ``flat_map`` turned it into nothing)."""
    DELIVERED = 1
    """It came out of the last stage (at a stage: it was emitted to the next one)."""
    SKIPPED = 2
    """A stage gave up on it with ``on_error="skip"``."""
    DEAD_LETTERED = 3
    """A stage gave up on it with ``on_error="dead_letter"``."""
    UNFINISHED = 4
    """The run ended (stopped past its grace, cancelled or failed) before it did."""

    @property
    def outcome(self) -> str:
        """The fate's name in spans, metrics and reports: ``"delivered"``, ``"dead_lettered"``..."""
        return _OUTCOMES[self]

    @property
    def stage_outcome(self) -> str:
        """The fate at a stage: as :attr:`outcome`, but ``"emitted"`` for ``DELIVERED``."""
        return _STAGE_OUTCOMES[self]


_OUTCOMES: Final = ("filtered", "delivered", "skipped", "dead_lettered", "unfinished")
_STAGE_OUTCOMES: Final = ("filtered", "emitted", "skipped", "dead_lettered", "unfinished")

#: Every fate, least grave first (index = value).
FATES: Final = tuple(Fate)
