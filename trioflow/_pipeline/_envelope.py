"""How an item travels through a pipeline, and the ledger of source-item fates.

Every item moves between stages inside an :class:`Envelope`: the user's
payload, the id of the source item it came from, the envelopes a batch was
made of, and a ``ctx`` slot that telemetry fills with the item's trace
context (so one item's stage spans form one trace across channels).

The :class:`Ledger` settles each *source* item exactly once. Stages call
:meth:`Ledger.settle` only at an end of the road — delivered, filtered,
skipped, dead-lettered, unfinished — never when an item merely moves on.
When the source settles items itself (a :class:`~trioflow.SettlingSource`,
such as a message queue that acknowledges), the ledger keeps each source
item until its fate is known and hands it back then, exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import trio

from ._fate import Fate

__all__ = ["Envelope", "Ledger", "Outbox", "hand_off"]

#: ``settle(item, fate, exception)``: a settling source's own method.
SettleFn = Callable[[object, Fate, BaseException | None], None]
#: ``on_error(exc, item)``: what the run does when ``settle`` raised.
SettleErrorFn = Callable[[Exception, object], None]

_FILTERED: Final = Fate.FILTERED


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
        #: telemetry's slot: the span the next stage's span continues from
        self.ctx: object | None = ctx

    def __repr__(self) -> str:
        if self.parts is None:
            return f"<item #{self.id}>"
        return f"<batch of {len(self.parts)} from #{self.id}>"


class Outbox(Protocol):
    """Where envelopes go: the next stage's channel, ``run.outputs``, or ``run()``'s sink."""

    def send_nowait(self, value: Envelope, /) -> None: ...

    async def send(self, value: Envelope, /) -> None: ...

    def close(self) -> None: ...


async def hand_off(outbox: Outbox, env: Envelope) -> None:
    """Send ``env`` on; a receiver already waiting takes it at once, with no checkpoint.

    So a cancellation that arrives after an item's work was done never loses
    a hand-off that needed no wait (the sink that committed, then was
    cancelled): only a hand-off that must *wait* can be cancelled, and then
    nothing was sent (trio's channels are cancellation-atomic).
    """
    try:
        outbox.send_nowait(env)
    except trio.WouldBlock:
        await outbox.send(env)


class _Split:
    """A source item a ``flat_map`` split: its live parts and the gravest fate so far."""

    __slots__ = ("exc", "fate", "live")

    def __init__(self, live: int) -> None:
        self.live = live
        self.fate: Fate = _FILTERED
        self.exc: BaseException | None = None


class Ledger:
    """Counts of source items by fate; each source id is settled exactly once."""

    __slots__ = ("_items", "_on_error", "_settle", "counts", "journal", "split")

    def __init__(
        self, settle: SettleFn | None = None, on_error: SettleErrorFn | None = None
    ) -> None:
        #: settled source items by fate (index: the Fate's value)
        self.counts: list[int] = [0, 0, 0, 0, 0]
        #: source id -> its parts still alive, for items a flat_map split
        self.split: dict[int, _Split] = {}
        #: when a dict (tests set it), every settlement: source id -> fates, in order
        self.journal: dict[int, list[Fate]] | None = None
        self._settle = settle
        self._on_error = on_error
        #: source id -> the item as read, kept only for a settling source
        self._items: dict[int, object] | None = {} if settle is not None else None

    def admit(self, sid: int, item: object) -> None:
        """The source item ``item`` was read as id ``sid`` (kept if the source settles)."""
        items = self._items
        if items is not None:
            items[sid] = item

    def settle(self, env: Envelope, fate: Fate, exc: BaseException | None = None) -> None:
        """``env`` reached an end of the road: settle the source item(s) it stands for."""
        parts = env.parts
        if parts is None:
            if self.split:
                self._settle_part(env.id, fate, exc)
            else:
                self._final(env.id, fate, exc)
        else:
            for part in parts:
                self.settle(part, fate, exc)

    def _settle_part(self, sid: int, fate: Fate, exc: BaseException | None) -> None:
        entry = self.split.get(sid)
        if entry is None:
            self._final(sid, fate, exc)
            return
        entry.live -= 1
        if fate > entry.fate:
            entry.fate = fate
            entry.exc = exc
        if entry.live == 0:
            del self.split[sid]
            self._final(sid, entry.fate, entry.exc)

    def _final(self, sid: int, fate: Fate, exc: BaseException | None) -> None:
        self.counts[fate] += 1
        if self.journal is not None:
            self.journal.setdefault(sid, []).append(fate)
        settle = self._settle
        if settle is not None:
            assert self._items is not None
            item = self._items.pop(sid)
            try:
                settle(item, fate, exc)
            except Exception as error:
                # Surfaced by the run (it fails with this error), never swallowed;
                # the other items are still settled, each exactly once.
                if self._on_error is None:  # pragma: no cover - the runtime always sets it
                    raise
                self._on_error(error, item)

    def fan_out(self, env: Envelope, children: int) -> None:
        """``env`` became ``children`` (>= 1) envelopes standing for the same source items."""
        if children == 1:
            return
        parts = env.parts
        if parts is None:
            entry = self.split.get(env.id)
            if entry is None:
                self.split[env.id] = _Split(children)
            else:
                entry.live += children - 1
        else:
            for part in parts:
                self.fan_out(part, children)

    def shrink(self, env: Envelope, shares: int) -> None:
        """Take back ``shares`` of a :meth:`fan_out` that were never sent (settles nothing)."""
        if shares <= 0:
            return
        parts = env.parts
        if parts is None:
            self.split[env.id].live -= shares
        else:
            for part in parts:
                self.shrink(part, shares)
