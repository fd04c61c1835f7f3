"""Reading the source: admit each item into the first stage, stop on request, close what we opened.

The reader's promise: an item taken from the source is sent on (within the
grace), never dropped. ``stop()`` therefore cancels only the *wait* for the
next item (a cancel scope around ``__anext__`` alone): if the source had
already handed the item over when the cancellation arrived (a memory
channel with a sender, a file line read in a thread), ``__anext__`` returns
it and it is admitted outside that scope.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import trio
from opentelemetry.trace import Link

from ..telemetry import _spans
from ._envelope import Envelope, Ledger, hand_off
from ._fate import Fate
from ._telemetry import start_source_span

__all__ = ["SettlingSource", "SourceReader"]

_UNFINISHED: Final = Fate.UNFINISHED
_NOTHING: Final = object()


@runtime_checkable
class SettlingSource(Protocol):
    """A source that wants to hear each item's fate: a queue that acknowledges, say.

    Any iterable or async iterable with this method. The pipeline calls
    ``source.settle(item, fate, exception)`` synchronously, in the trio
    thread, exactly once for every item it read from the source, as soon as
    that item's final fate is known:

    * ``Fate.DELIVERED`` when the last stage delivered it (for an item inside
      a batch: when the batch left the last stage; for an item a ``flat_map``
      split: when every part is settled, with the gravest part's fate);
    * ``Fate.FILTERED``, ``Fate.SKIPPED`` or ``Fate.DEAD_LETTERED`` (with the
      exception of the last attempt) when a stage settled it;
    * ``Fate.UNFINISHED`` when the run ended first (``stop()`` past its grace,
      ``cancel()``, a failure, an outer cancellation), with the exception that
      ended it (often a :class:`trio.Cancelled`) or ``None``.

    ``item`` is the object the source yielded. ``settle`` must not block
    (it is not awaited); start any I/O it needs elsewhere (hand the
    acknowledgement to a task through a channel, say). An exception it raises
    fails the run with that exception (it is raised by ``run()`` / at the end
    of ``open()``); the other items are still settled, each exactly once.
    """

    def settle(self, item: Any, fate: Fate, exception: BaseException | None) -> None: ...


class SourceReader:
    """The run's reader task: source items into the first stage's channel."""

    __slots__ = (
        "_fail",
        "_ledger",
        "_links",
        "_pipeline",
        "_pull",
        "_send",
        "_source",
        "_span_name",
        "_trace",
        "read",
        "stopping",
    )

    def __init__(
        self,
        source: Iterable[Any] | AsyncIterable[Any],
        send: trio.MemorySendChannel[Envelope],
        ledger: Ledger,
        fail: Callable[[BaseException, str, Envelope | None], None],
        pipeline: str,
    ) -> None:
        self._source = source
        self._send = send
        self._ledger = ledger
        self._fail = fail
        self._pipeline = pipeline
        self._span_name = _spans.span_name("source", pipeline)
        self._trace = False
        self._links: Sequence[Link] = ()
        #: the scope around the wait for the next item, while we wait
        self._pull: trio.CancelScope | None = None
        #: source items read so far
        self.read: int = 0
        self.stopping: bool = False

    def trace_items(self, links: Sequence[Link]) -> None:
        """Start one trace per item (``source {pipeline}`` spans, linked by ``links``)."""
        self._trace = True
        self._links = links

    def stop(self) -> None:
        """Read no more: cancel the wait for the next item, if we are waiting. Not a checkpoint."""
        self.stopping = True
        if self._pull is not None:
            self._pull.cancel()

    async def run(self) -> None:
        """Read until the source ends or :meth:`stop`; a source failure fails the run."""
        try:
            source = self._source
            if isinstance(source, AsyncIterable):
                await self._read_async(source)
            else:
                await self._read_sync(source)
        except Exception as exc:
            self._fail(exc, "source", None)
        finally:
            self._send.close()

    async def _read_sync(self, source: Iterable[Any]) -> None:
        it = iter(source)
        try:
            while not self.stopping:
                try:
                    raw = next(it)
                except StopIteration:
                    return
                await self._admit(raw)
        finally:
            if inspect.isgenerator(it):
                it.close()  # a generator the run drove is closed with the run, not at GC

    async def _read_async(self, source: AsyncIterable[Any]) -> None:
        it = source.__aiter__()
        try:
            while True:
                raw: object = _NOTHING
                with trio.CancelScope() as pull:
                    self._pull = pull
                    try:
                        if self.stopping:
                            return
                        raw = await it.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        self._pull = None
                if raw is _NOTHING:
                    return  # stop() cancelled the wait: nothing was read
                # Outside the pull scope: an item read is sent on within the grace.
                await self._admit(raw)
                if self.stopping:
                    return
        finally:
            if inspect.isasyncgen(it):
                await it.aclose()

    async def _admit(self, raw: object) -> None:
        env = Envelope(self.read, raw)
        self._ledger.admit(self.read, raw)
        self.read += 1
        span = (
            start_source_span(self._span_name, self._pipeline, env, self._links)
            if self._trace
            else None
        )
        try:
            await hand_off(self._send, env)
        except BaseException as exc:
            self._ledger.settle(env, _UNFINISHED, exc)
            if span is not None:
                _spans.end_span(span, exc)
            raise
        if span is not None:
            span.end()
