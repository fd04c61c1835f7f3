"""How an item travels through a pipeline, and the ledger of source-item fates.

Every item moves between stages inside an :class:`Envelope`: the user's
payload, the id of the source item it came from, the envelopes a batch was
made of, and a ``ctx`` slot that telemetry fills with the item's trace
context (so one item's stage spans form one trace across channels).

The :class:`Ledger` settles each *source* item exactly once. Stages call
:meth:`Ledger.settle` only at an end of the road — delivered, filtered,
skipped, dead-lettered, unfinished — never when an item merely moves on.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEAD", "DELIVERED", "FILTERED", "SKIPPED", "UNFINISHED", "Envelope", "Ledger"]

# Fates, in increasing gravity: a split source item takes its gravest part's fate.
FILTERED: Final = 0
DELIVERED: Final = 1
SKIPPED: Final = 2
DEAD: Final = 3
UNFINISHED: Final = 4


class Envelope:
    """One item in flight: ``payload``, source id ``id``, batch ``parts``, telemetry ``ctx``."""

    __slots__ = ("ctx", "id", "parts", "payload")

    def __init__(
        self,
        id: int,
        payload: object,
        parts: list[Envelope] | None = None,
        ctx: object | None = None,
    ) -> None:
        #: the source item's index (for a batch: its first part's)
        self.id: int = id
        self.payload: object = payload
        #: the envelopes a batch (or a child of a batch) stands for; None for one item
        self.parts: list[Envelope] | None = parts
        #: telemetry's slot: the item's trace context, carried across stages
        self.ctx: object | None = ctx

    def __repr__(self) -> str:
        if self.parts is None:
            return f"<item #{self.id}>"
        return f"<batch of {len(self.parts)} from #{self.id}>"


class Ledger:
    """Counts of source items by fate; each source id is settled exactly once."""

    __slots__ = ("counts", "journal", "split")

    def __init__(self) -> None:
        #: settled source items by fate (index: FILTERED..UNFINISHED)
        self.counts: list[int] = [0, 0, 0, 0, 0]
        #: source id -> [live parts, gravest fate so far], for items a flat_map split
        self.split: dict[int, list[int]] = {}
        #: when a dict (tests set it), every settlement: source id -> fates, in order
        self.journal: dict[int, list[int]] | None = None

    def settle(self, env: Envelope, fate: int) -> None:
        """``env`` reached an end of the road: settle the source item(s) it stands for."""
        parts = env.parts
        if parts is None:
            if self.split:
                self._settle_id(env.id, fate)
            else:
                self.counts[fate] += 1
                if self.journal is not None:
                    self.journal.setdefault(env.id, []).append(fate)
        else:
            for part in parts:
                self.settle(part, fate)

    def _settle_id(self, sid: int, fate: int) -> None:
        entry = self.split.get(sid)
        if entry is None:
            self.counts[fate] += 1
            if self.journal is not None:
                self.journal.setdefault(sid, []).append(fate)
            return
        entry[0] -= 1
        if fate > entry[1]:
            entry[1] = fate
        if entry[0] == 0:
            del self.split[sid]
            self.counts[entry[1]] += 1
            if self.journal is not None:
                self.journal.setdefault(sid, []).append(entry[1])

    def fan_out(self, env: Envelope, children: int) -> None:
        """``env`` became ``children`` (>= 1) envelopes standing for the same source items."""
        if children == 1:
            return
        parts = env.parts
        if parts is None:
            entry = self.split.get(env.id)
            if entry is None:
                self.split[env.id] = [children, FILTERED]
            else:
                entry[0] += children - 1
        else:
            for part in parts:
                self.fan_out(part, children)
