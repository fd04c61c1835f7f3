"""StreamSource: a Redis Streams consumer group as a pipeline source, at least once.

How it works
------------

Each replica is one *consumer* of one *consumer group* of a stream. Reading
(``XREADGROUP``) hands an entry to this consumer and puts it in the group's
pending list (PEL) until someone acknowledges it (``XACK``). The source
reads only when it is iterated and its small local buffer is empty, so a
pipeline that admits nothing reads nothing: back-pressure reaches the
broker, and what the replica has taken is bounded by ``count``.

The pipeline calls :meth:`StreamSource.settle` once for every entry it read
when that entry's fate is final. ``settle`` never blocks: it queues the id,
and a task of the source's own nursery acknowledges in batches (up to a
read's worth; it waits at most 5 ms for one to fill). A
dead-lettered entry is copied, with the exception, to the dead-letter
stream and acknowledged in one Lua script (atomically: never acknowledged
without its copy). An *unfinished* entry (the run stopped or was cancelled
first) is left pending; so is any entry the replica read and never handed
out. Pending entries idle longer than ``claim_idle`` are taken over by
whichever replica reads next (``XAUTOCLAIM``), before it reads new ones:
that is how a dead or stopped replica's work is finished by the others. On
start, a consumer first re-reads its own pending entries (a restart with
the same ``consumer`` name picks up where it left).

A *poison* entry, one whose processing kills or wedges every replica that
takes it, would go round the replicas for ever that way. Redis counts each
entry's deliveries (a claim and a re-read each add one); an entry claimed or
re-read with more than ``max_deliveries`` is not handed to the pipeline
again but dead-lettered by the source itself (``exhausted``), with the count.

A read cut short (its delivery-count round trip failed, or the reader was
cancelled during it) loses nothing: the restart re-read's cursor moves only
once the entries are buffered, so the next iteration reads them again, and
entries just claimed stay pending here and are claimed again after
``claim_idle``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final, Protocol, final

import attrs
import trio
from coredis.exceptions import StreamDuplicateConsumerGroupError

from .. import _registry
from .._registry import Holding, Waiting
from .._util import check_count
from ._common import RedisUnavailableError, call, check_timeout, serving

__all__ = [
    "SettleFate",
    "StreamEntry",
    "StreamSource",
    "StreamSourceStatistics",
    "open_stream_source",
]

# KEYS[1] stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] id,
# then field, value pairs for the dead-letter entry.
_DEAD_LETTER: Final = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS[1] stream; ARGV[1] group, then ids: how many times each id was
# delivered (0 when it is no longer pending), in one round trip.
_DELIVERIES: Final = """
local out = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  out[#out + 1] = p[1] and p[1][4] or 0
end
return out
"""

#: Fates after which an entry is acknowledged (its work is done, or was
#: given up on purpose); ``dead_lettered`` is acknowledged with its copy.
_ACK_FATES: Final = frozenset({"delivered", "filtered", "skipped"})
_FATES: Final = _ACK_FATES | {"dead_lettered", "unfinished"}


#: how long the acknowledging task waits for a batch to fill before sending
#: what it has (an entry's acknowledgement is at most this much later)
_ACK_LINGER: Final = 0.005


class SettleFate(Protocol):
    """What :meth:`StreamSource.settle` reads of a fate: its ``name`` (``tf.Fate`` has one)."""

    @property
    def name(self) -> str: ...


@attrs.frozen
class StreamEntry:
    """One stream entry as the pipeline sees it: its id and its fields."""

    id: str
    """The entry's stream id (``"1700000000000-0"``)."""

    fields: Mapping[Any, Any]
    """Its field/value pairs, as the client returns them (``bytes`` unless the
    client decodes responses)."""

    deliveries: int = 1
    """How many times Redis has delivered this entry: 1 for a first read; more for an
    entry claimed from another consumer or re-read after a restart."""


@attrs.frozen
class StreamSourceStatistics:
    """Counters of a stream source, from :meth:`StreamSource.statistics`."""

    stream: str
    """The stream's key."""
    group: str
    """The consumer group."""
    consumer: str
    """This replica's consumer name."""
    read: int
    """Entries handed to the pipeline (new, claimed and re-read)."""
    claimed: int
    """Of those, entries taken over from other consumers (idle past ``claim_idle``)."""
    acked: int
    """Entries acknowledged (delivered, filtered or skipped)."""
    dead_lettered: int
    """Entries the pipeline dead-lettered, copied to the dead-letter stream and acknowledged."""
    exhausted: int
    """Entries the source dead-lettered itself, never handing them to the pipeline:
    claimed or re-read after more than ``max_deliveries`` deliveries."""
    left_pending: int
    """Entries settled as unfinished: left pending for another consumer (or a restart)."""
    settling: int
    """Settled entries whose acknowledgement has not reached Redis yet."""
    in_flight: int
    """Entries handed to the pipeline and not yet settled."""
    unavailable: int
    """Redis calls that failed or did not answer within ``timeout``."""


@final
class StreamSource:
    """A consumer of a Redis stream's consumer group, iterated as a pipeline source.

    Made by :func:`open_stream_source`. ``async for entry in source`` yields
    :class:`StreamEntry` objects, reading from Redis only as fast as it is
    iterated (``count`` entries per round trip at most). Give it to
    ``pipe.run(source)``: the pipeline calls :meth:`settle` for each entry's
    final fate, and the entry is acknowledged (delivered, filtered, skipped),
    copied to the dead-letter stream and acknowledged (dead-lettered), or
    left pending for another replica (unfinished). At least once: an entry
    is acknowledged only after its fate is known, never before.

    Iterating blocks in ``XREADGROUP ... BLOCK`` up to ``block`` seconds at a
    time while the stream is empty; it is a checkpoint, and a cancellation
    there leaves whatever that read took pending (claimed later). The
    iteration never ends on its own: stop it with ``run.stop()`` or a cancel
    scope.
    """

    __slots__ = (
        "__weakref__",
        "_acked",
        "_block",
        "_buffer",
        "_claim_cursor",
        "_claim_idle",
        "_claim_next",
        "_claimed",
        "_client",
        "_closed",
        "_consumer",
        "_count",
        "_dead",
        "_dead_letter",
        "_dead_lettered",
        "_dead_script",
        "_deliveries_script",
        "_exhausted",
        "_full",
        "_group",
        "_history",
        "_left_pending",
        "_max_deliveries",
        "_out",
        "_read",
        "_sending",
        "_settled",
        "_stream",
        "_timeout",
        "_to_ack",
        "_unavailable",
        "_wanted",
    )

    kind = "redis_stream_source"

    def __init__(
        self,
        client: Any,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int,
        block: float,
        claim_idle: float,
        dead_letter_stream: str,
        timeout: float,
        max_deliveries: int | None = None,
    ) -> None:
        self._client: Final = client
        self._stream: Final = stream
        self._group: Final = group
        self._consumer: Final = consumer
        self._count: Final = count
        self._block: Final = block
        self._claim_idle: Final = claim_idle
        self._dead_letter: Final = dead_letter_stream
        self._timeout: Final = timeout
        self._max_deliveries: Final = max_deliveries
        self._dead_script: Final = client.register_script(_DEAD_LETTER)
        self._deliveries_script: Final = client.register_script(_DELIVERIES)
        self._buffer: deque[StreamEntry] = deque()
        #: re-reading this consumer's own pending entries first (from this id on)
        self._history: str | None = "0"
        #: when the next XAUTOCLAIM pass is due, and where it goes on from
        self._claim_next = trio.current_time()
        self._claim_cursor = "0-0"
        #: ids handed to the pipeline and not yet settled
        self._out: set[str] = set()
        self._to_ack: list[str] = []
        #: dead letters to send: (id, fields, the pipeline's fate (else the source's own))
        self._dead: list[tuple[str, list[Any], bool]] = []
        self._wanted = trio.Event()
        #: set when a read's worth of acknowledgements is queued (ends the linger)
        self._full = trio.Event()
        self._sending = 0
        self._read = 0
        self._claimed = 0
        self._acked = 0
        self._dead_lettered = 0
        self._exhausted = 0
        self._left_pending = 0
        self._settled = 0
        self._unavailable = 0
        #: set when open_stream_source's block ends (no acknowledging task any more)
        self._closed = False
        _registry.register(self)

    @property
    def name(self) -> str:
        """``<stream>/<group>/<consumer>``: what dumps and ``repr`` call it."""
        return f"{self._stream}/{self._group}/{self._consumer}"

    @property
    def dead_letter_stream(self) -> str:
        """The stream dead-lettered entries are copied to."""
        return self._dead_letter

    # -- reading ---------------------------------------------------------------

    def __aiter__(self) -> StreamSource:
        return self

    async def __anext__(self) -> StreamEntry:
        if self._closed:
            raise RuntimeError(
                f"{self.kind} {self.name!r} is closed: iterate it inside "
                "'async with trioflow.redis.open_stream_source(...)'"
            )
        while not self._buffer:
            await self._fill()
        entry = self._buffer.popleft()
        self._read += 1
        self._out.add(entry.id)
        return entry

    async def _run(self, what: str, fn: Any, *args: Any, extra: float = 0.0, **kwargs: Any) -> Any:
        try:
            return await call(
                f"{self.kind} {self.name!r}: {what}", self._timeout + extra, fn, *args, **kwargs
            )
        except RedisUnavailableError:
            self._unavailable += 1
            raise

    async def _fill(self) -> None:
        """One round trip that fills the buffer (or blocks up to ``block`` seconds)."""
        client = self._client
        if self._history is not None:
            # Our own pending entries first (a restart with the same name).
            reply = await self._run(
                "xreadgroup (own pending)",
                client.xreadgroup,
                self._group,
                self._consumer,
                {self._stream: self._history},
                count=self._count,
            )
            entries = _entries(reply, self._stream)
            if not entries:
                self._history = None
                return
            # The delivery counts first: if that round trip fails or is
            # cancelled, the history cursor has not moved, so the next read
            # re-reads these entries (they are still pending here), rather
            # than leaving them to a claim after claim_idle.
            counted = await self._counted([e for e in entries if e.field_values])
            last = entries[-1].identifier
            self._history = last.decode() if isinstance(last, bytes) else str(last)
            trimmed = [_entry(raw, 0).id for raw in entries if not raw.field_values]
            if trimmed:
                # Pending but trimmed from the stream: nothing left to process.
                self._to_ack.extend(trimmed)
                self._wanted.set()
            self._buffer.extend(counted)
            return
        if trio.current_time() >= self._claim_next:
            reply = await self._run(
                "xautoclaim",
                client.xautoclaim,
                self._stream,
                self._group,
                self._consumer,
                int(self._claim_idle * 1000),
                self._claim_cursor,
                count=self._count,
            )
            # Go on from where this pass stopped; "0-0" means it reached the end.
            # (If the delivery counts below fail or are cancelled, the entries
            # just claimed stay pending under this consumer with their idle
            # time reset: a later pass, here or in another replica, claims
            # them again after claim_idle. At least once, never lost.)
            cursor = reply[0]
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            claimed = await self._counted([e for e in reply[1] if e.field_values])
            if claimed:
                self._claimed += len(claimed)
                self._buffer.extend(claimed)
                return
            if self._claim_cursor == "0-0":
                # A whole pass found nothing idle enough: look again after a
                # tenth of claim_idle.
                self._claim_next = trio.current_time() + self._claim_idle / 10
        reply = await self._run(
            "xreadgroup",
            client.xreadgroup,
            self._group,
            self._consumer,
            {self._stream: ">"},
            count=self._count,
            block=int(self._block * 1000),
            extra=self._block,
        )
        self._buffer.extend(_entry(e, 1) for e in _entries(reply, self._stream))

    async def _counted(self, raws: list[Any]) -> list[StreamEntry]:
        """Entries delivered before, with Redis's delivery counts; the exhausted are
        queued as dead letters instead (one round trip, none when ``raws`` is empty)."""
        if not raws:
            return []
        ids = [_entry(raw, 0).id for raw in raws]
        counts = await self._run(
            "delivery counts",
            self._deliveries_script,
            keys=[self._stream],
            args=[self._group, *ids],
        )
        out: list[StreamEntry] = []
        limit = self._max_deliveries
        for raw, count in zip(raws, counts, strict=True):
            entry = _entry(raw, int(count))
            if limit is not None and entry.deliveries > limit:
                fields: list[Any] = [
                    "trioflow.source_id",
                    entry.id,
                    "trioflow.error.type",
                    "MaxDeliveriesExceeded",
                    "trioflow.error.message",
                    f"delivered {entry.deliveries} times with no final fate "
                    f"(max_deliveries={limit}): taken out of the pending list",
                ]
                for key, value in entry.fields.items():
                    fields += [key, value]
                self._dead.append((entry.id, fields, False))
                self._wanted.set()
            else:
                out.append(entry)
        return out

    # -- settling --------------------------------------------------------------

    def settle(
        self, item: StreamEntry, fate: SettleFate | str, exception: BaseException | None
    ) -> None:
        """Record ``item``'s final fate; the acknowledgement follows in the background.

        ``fate`` is a ``tf.Fate`` (or its lower-case name): ``delivered``,
        ``filtered`` and ``skipped`` acknowledge the entry; ``dead_lettered``
        copies it, with ``exception``'s type and message, to the dead-letter
        stream and acknowledges it; ``unfinished`` leaves it pending. Only
        the first fate of an entry counts: a second ``settle`` of it does
        nothing. Never blocks; not a checkpoint.

        Raises:
          TypeError: ``item`` is not a :class:`StreamEntry`.
          ValueError: an unknown fate.
        """
        if not isinstance(item, StreamEntry):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"item must be a StreamEntry this source yielded, got {item!r}")
        name = (fate if isinstance(fate, str) else fate.name).lower()
        if name not in _FATES:
            raise ValueError(
                "fate must be one of delivered, filtered, skipped, dead_lettered, "
                f"unfinished, got {fate!r}"
            )
        if item.id not in self._out:
            return  # settled before (or not read here): the first fate stands
        self._out.discard(item.id)
        self._settled += 1
        if name in _ACK_FATES:
            self._to_ack.append(item.id)
            if len(self._to_ack) >= self._count:
                self._full.set()
        elif name == "dead_lettered":
            fields: list[Any] = ["trioflow.source_id", item.id]
            if exception is not None:
                fields += [
                    "trioflow.error.type",
                    type(exception).__qualname__,
                    "trioflow.error.message",
                    str(exception),
                ]
            for key, value in item.fields.items():
                fields += [key, value]
            self._dead.append((item.id, fields, True))
            self._full.set()
        else:  # unfinished
            self._left_pending += 1
            return
        self._wanted.set()

    async def _ack_loop(self) -> None:
        delay = 0.05
        while True:
            if not self._to_ack and not self._dead:
                self._wanted = trio.Event()
                await self._wanted.wait()
            if not self._dead and len(self._to_ack) < self._count:
                # Let a batch gather, up to a read's worth or _ACK_LINGER:
                # one XACK per batch, not one per few entries while the
                # pipeline settles them one at a time. (close() flushes.)
                self._full = trio.Event()
                with trio.move_on_after(_ACK_LINGER):
                    await self._full.wait()
            try:
                await self._send()
                delay = 0.05
            except RedisUnavailableError:
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _send(self) -> None:
        """Acknowledge what is queued (one XACK for the batch; one script per dead letter)."""
        while self._dead:
            entry_id, fields, from_pipeline = self._dead[0]
            self._sending = 1
            try:
                await self._run(
                    "dead letter",
                    self._dead_script,
                    keys=[self._stream, self._dead_letter],
                    args=[self._group, entry_id, *fields],
                )
            finally:
                self._sending = 0
            self._dead.pop(0)
            if from_pipeline:
                self._dead_lettered += 1
            else:
                self._exhausted += 1
        if self._to_ack:
            batch = self._to_ack
            self._to_ack = []
            self._sending = len(batch)
            try:
                await self._run("xack", self._client.xack, self._stream, self._group, batch)
            except BaseException:
                # Put them back: for the next try, or the flush on close.
                self._to_ack[:0] = batch
                raise
            finally:
                self._sending = 0
            self._acked += len(batch)

    # -- state -----------------------------------------------------------------

    def statistics(self) -> StreamSourceStatistics:
        """This source's counters (no round trip; safe from any thread)."""
        return StreamSourceStatistics(
            stream=self._stream,
            group=self._group,
            consumer=self._consumer,
            read=self._read,
            claimed=self._claimed,
            acked=self._acked,
            dead_lettered=self._dead_lettered,
            exhausted=self._exhausted,
            left_pending=self._left_pending,
            settling=len(self._to_ack) + len(self._dead) + self._sending,
            in_flight=len(self._out),
            unavailable=self._unavailable,
        )

    def _trioflow_holders(self) -> list[Holding]:
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return []

    def __repr__(self) -> str:
        return (
            f"<trioflow.redis.StreamSource {self.name!r}, {self._read} read, "
            f"{self._acked + self._dead_lettered + self._exhausted} acknowledged>"
        )


def _entries(reply: Any, stream: str) -> list[Any]:
    if not reply:
        return []
    for key, entries in reply.items():
        if (key.decode() if isinstance(key, bytes) else key) == stream:
            return list(entries)
    return []


def _entry(raw: Any, deliveries: int) -> StreamEntry:
    ident = raw.identifier
    return StreamEntry(
        ident.decode() if isinstance(ident, bytes) else str(ident),
        dict(raw.field_values),
        deliveries,
    )


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.asynccontextmanager
async def open_stream_source(
    client: Any,
    stream: str,
    group: str,
    *,
    consumer: str | None = None,
    count: int = 16,
    block: float = 1.0,
    claim_idle: float = 30.0,
    max_deliveries: int | None = 10,
    dead_letter_stream: str | None = None,
    start: str = "0",
    timeout: float = 1.0,  # noqa: ASYNC109 (bounds each Redis call, not the block)
) -> AsyncGenerator[StreamSource]:
    """Open a stream source: consumer ``consumer`` of group ``group`` of ``stream``.

    ``async with trioflow.redis.open_stream_source(client, "events", "writers") as source:``
    then ``await pipe.run(source)``. Entering creates the group if it does
    not exist (reading from ``start``: ``"0"``, the whole stream, or ``"$"``,
    only what is added from now on) and the stream with it. The block runs
    the acknowledging task; leaving flushes every queued acknowledgement
    (shielded, bounded by ``timeout``) and leaves everything else pending.

    Args:
      client: an open :class:`coredis.Redis` client.
      stream: the stream's key.
      group: the consumer group every replica shares.
      consumer: this replica's name in the group (default ``<host>-<pid>``);
        reuse a name across restarts to pick up its own pending entries.
      count: the most entries one read takes (and so the most this replica
        holds unread in its buffer): an int >= 1.
      block: seconds one read waits for new entries before trying again.
      claim_idle: seconds an entry may stay pending with another consumer
        before this one takes it over.
      max_deliveries: an entry claimed or re-read after more deliveries
        than this (Redis counts them) is dead-lettered by the source with
        the count, not handed to the pipeline again: a poison entry that
        kills or wedges its consumers stops going round the replicas. An
        int >= 1, or ``None`` for no bound.
      dead_letter_stream: where dead letters go (default ``<stream>:dead``).
      start: where a newly created group starts reading.
      timeout: seconds each Redis call may take (beyond ``block`` for reads).

    Raises:
      RedisUnavailableError: Redis could not be reached on entry.
    """
    for param, value in (("stream", stream), ("group", group), ("start", start)):
        if not isinstance(value, str) or not value:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"{param} must be a non-empty str, got {value!r}")
    if consumer is None:
        consumer = _default_consumer()
    elif not isinstance(consumer, str) or not consumer:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"consumer must be a non-empty str, got {consumer!r}")
    count = check_count(count, "count")
    block = check_timeout(block, "block")
    claim_idle = check_timeout(claim_idle, "claim_idle")
    if max_deliveries is not None:
        max_deliveries = check_count(max_deliveries, "max_deliveries")
    timeout = check_timeout(timeout)
    dead = dead_letter_stream if dead_letter_stream is not None else f"{stream}:dead"
    try:
        await call(
            f"redis_stream_source {stream!r}: create group",
            timeout,
            client.xgroup_create,
            stream,
            group,
            start,
            mkstream=True,
        )
    except RedisUnavailableError as exc:
        if not isinstance(exc.__cause__, StreamDuplicateConsumerGroupError):
            raise
    source = StreamSource(
        client,
        stream,
        group,
        consumer,
        count=count,
        block=block,
        claim_idle=claim_idle,
        dead_letter_stream=dead,
        timeout=timeout,
        max_deliveries=max_deliveries,
    )

    async def run_acks(nursery: trio.Nursery) -> None:
        nursery.start_soon(source._ack_loop)  # pyright: ignore[reportPrivateUsage]

    async def flush() -> None:
        source._closed = True  # pyright: ignore[reportPrivateUsage]
        # Whatever cannot be acknowledged now stays pending: redelivered, never lost.
        with contextlib.suppress(RedisUnavailableError):
            await source._send()  # pyright: ignore[reportPrivateUsage]

    async with serving(run_acks, flush):
        yield source
