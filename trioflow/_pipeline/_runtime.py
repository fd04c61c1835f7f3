"""One run of a pipeline: the source reader, the stages, shutdown and the report.

Lifecycle (each step is one function, so telemetry can wrap it later):
``PipelineRun.main`` opens the run's cancel scope and nursery, starts
``_read`` (the source) and each stage's ``StageRun.run_stage``; when they are
all done — the source ended and every stage drained, or the scope was
cancelled — ``_settle_leftovers`` counts whatever still sat in a channel as
unfinished, and the report is final.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

import trio
from opentelemetry.trace import INVALID_SPAN, Link, Span

from .. import _registry
from .._registry import Holding, Waiting
from ..telemetry import _hooks, _spans
from . import _telemetry
from ._envelope import DEAD, DELIVERED, FILTERED, SKIPPED, UNFINISHED, Envelope, Ledger
from ._report import DeadLetter, PipelineReport
from ._stage import StageRun, StageSpec

if TYPE_CHECKING:
    import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

__all__ = ["Outputs", "PipelineRun"]


class Outputs:
    """The last stage's items, as ``run.outputs``: ``async for item in run.outputs``.

    Receiving is a checkpoint (it is a :class:`trio.MemoryReceiveChannel`
    underneath); a cancelled receive takes nothing. An item counts as
    *delivered* in the report the moment it is received here.
    """

    __slots__ = ("_ledger", "_receive")

    def __init__(self, receive: trio.MemoryReceiveChannel[Envelope], ledger: Ledger) -> None:
        self._receive = receive
        self._ledger = ledger

    async def receive(self) -> Any:
        """The next output; raises :class:`trio.EndOfChannel` when the run is over."""
        env = await self._receive.receive()
        self._ledger.settle(env, DELIVERED)
        return env.payload

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class PipelineRun:
    """One run of a :class:`~trioflow.Pipeline`: what ``pipe.open(source)`` yields.

    ``run.outputs`` are the last stage's items; ``await run.stop(grace)``
    ends the run gracefully; ``run.report`` is the :class:`PipelineReport`
    (live while running, final once the run is over).
    """

    kind = "pipeline"

    def __init__(
        self,
        name: str,
        specs: Sequence[StageSpec],
        source: Iterable[Any] | AsyncIterable[Any],
        dead_letters: trio.MemorySendChannel[DeadLetter] | None,
        with_outputs: bool,
    ) -> None:
        self.name: Final = name
        self.ledger: Final = Ledger()
        self.source_items: int = 0
        self.failures: list[BaseException] = []
        self.dead_letters: list[DeadLetter] = []
        self._dead_letter_channel = dead_letters
        self._source = source
        self._scope: Final = trio.CancelScope()
        self._reader_scope: Final = trio.CancelScope()
        self._pulling = False
        self._stopping = False
        self._done: Final = trio.Event()
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._process_ctx: trio_parallel.WorkerContext | None = None
        self._needs_processes = any(s.executor == "process" for s in specs)
        #: telemetry (set when the run starts): the run's span, one trace per item?
        self.span: Span = INVALID_SPAN
        self.trace_items: bool = False
        self.source_span_name: Final = _spans.span_name("source", name)
        self.source_links: list[Link] = []

        # Channels: stage i reads _receivers[i]; the reader writes _senders[0];
        # stage i writes _senders[i + 1] (the outputs channel, for the last
        # stage of an open() run) or, in run(), a sink that counts delivery.
        self._senders: list[trio.MemorySendChannel[Envelope]] = []
        self._receivers: list[trio.MemoryReceiveChannel[Envelope]] = []
        for spec in specs:
            s, r = trio.open_memory_channel[Envelope](spec.buffer)
            self._senders.append(s)
            self._receivers.append(r)
        s, r = trio.open_memory_channel[Envelope](0)
        if with_outputs:
            self._senders.append(s)
            self._receivers.append(r)
        else:
            s.close()  # run(): the last stage delivers to a sink; outputs is empty
        #: the last stage's items (empty for ``pipe.run()``)
        self.outputs: Final = Outputs(r, self.ledger)
        self.stages: list[StageRun] = []
        last = len(specs) - 1
        for i, spec in enumerate(specs):
            send = self._senders[i + 1].send if i < last or with_outputs else self._sink
            self.stages.append(StageRun(spec, self, self._receivers[i], send, i == last))
        _registry.register(self)

    # -- inspection ------------------------------------------------------------

    def _trioflow_holders(self) -> list[Holding]:
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return []

    @property
    def was_cancelled(self) -> bool:
        """Whether the run's own scope was cancelled (``cancel()``, a failure, or ``stop()``'s grace)."""
        return self._scope.cancelled_caught

    @property
    def running(self) -> bool:
        """Whether the run has started and not yet ended."""
        return self._started_at is not None and not self._done.is_set()

    def __repr__(self) -> str:
        state = "done" if self._done.is_set() else "stopping" if self._stopping else "running"
        return (
            f"<trioflow pipeline {self.name!r} {state}, {self.source_items} read, "
            f"{len(self.stages)} stages>"
        )

    @property
    def report(self) -> PipelineReport:
        """What the run did with every source item: final once the run is over.

        While the run is still going it is a snapshot, and ``unfinished``
        counts the items in flight.
        """
        counts = self.ledger.counts
        end = self._ended_at
        if end is None:
            end = trio.current_time() if self._started_at is not None else 0.0
        settled = sum(counts)
        unfinished = counts[UNFINISHED] + (self.source_items - settled)
        return PipelineReport(
            source_items=self.source_items,
            outputs=self.stages[-1].sent,
            skipped=counts[SKIPPED],
            unfinished=unfinished,
            dead_letters=tuple(self.dead_letters),
            elapsed=end - (self._started_at if self._started_at is not None else end),
            stages={s.name: s.report() for s in self.stages},
            delivered=counts[DELIVERED],
            filtered=counts[FILTERED],
            dead_lettered=counts[DEAD],
        )

    # -- called by stages --------------------------------------------------------

    async def _sink(self, env: Envelope) -> None:
        self.ledger.settle(env, DELIVERED)

    def close_output(self, stage: StageRun) -> None:
        i = self.stages.index(stage) + 1
        if i < len(self._senders):
            self._senders[i].close()

    def fail(self, exc: BaseException, where: str, env: Envelope | None) -> None:
        """``on_error="fail"`` (or a failing source): remember why, cancel the whole run."""
        note = f"in pipeline {self.name!r}, {where}"
        if env is not None:
            note += f", on {env!r}"
        exc.add_note(note)
        self.failures.append(exc)
        self._scope.cancel()

    async def dead_letter(self, letter: DeadLetter) -> None:
        channel = self._dead_letter_channel
        if channel is not None:
            await channel.send(letter)
        self.dead_letters.append(letter)

    def process_context(self) -> trio_parallel.WorkerContext:
        assert self._process_ctx is not None
        return self._process_ctx

    # -- lifecycle -----------------------------------------------------------------

    async def main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline to its end; never raises a stage failure (see :meth:`raise_failure`)."""
        self._started_at = trio.current_time()
        if _hooks.tracing:
            self.span = _telemetry.start_run(self)
            self.trace_items = _hooks.tracing >= _hooks.ITEM
            self.source_links = _telemetry.links_to(self.span)
        raised: BaseException | None = None
        try:
            with self._scope:
                async with AsyncExitStack() as stack:
                    if self._needs_processes:
                        import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

                        # Worker processes live exactly as long as this run.
                        self._process_ctx = await stack.enter_async_context(
                            trio_parallel.open_worker_context()  # pyright: ignore[reportUnknownMemberType]
                        )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read, name=f"pipeline {self.name}, source")
                        for stage in self.stages:
                            nursery.start_soon(stage.run_stage, name=f"stage {stage.name}")
                        task_status.started()
        except Exception as exc:  # pragma: no cover - a bug in trioflow, or the process pool
            self.fail(exc, "runtime", None)
        except BaseException as exc:
            raised = exc
            raise
        finally:
            self._settle_leftovers()
            self._ended_at = trio.current_time()
            if self.span is not INVALID_SPAN:
                _telemetry.end_run(self, self.span, raised)
            self._done.set()

    async def _read(self) -> None:
        """Feed source items into the first stage until the source ends or ``stop()``."""
        send = self._senders[0]
        try:
            with self._reader_scope:
                if self._stopping:
                    return
                source = self._source
                if isinstance(source, AsyncIterable):
                    await self._read_async(source, send)
                else:
                    # _admit, inlined: one coroutine frame less per item.
                    settle = self.ledger.settle
                    trace = self.trace_items
                    span = None
                    for raw in source:
                        env = Envelope(self.source_items, raw)
                        self.source_items += 1
                        if trace:
                            span = _telemetry.start_source_span(self, env)
                        try:
                            await send.send(env)
                        except BaseException as exc:
                            settle(env, UNFINISHED)
                            if span is not None:
                                _spans.end_span(span, exc)
                            raise
                        if span is not None:
                            span.end()
                        if self._stopping:
                            break
        except Exception as exc:
            self.fail(exc, "source", None)
        finally:
            send.close()

    async def _read_async(
        self, source: AsyncIterable[Any], send: trio.MemorySendChannel[Envelope]
    ) -> None:
        it = source.__aiter__()
        try:
            while True:
                # Only the wait for the next source item is cancelled by
                # stop(); an item already read is sent on, within the grace.
                self._pulling = True
                try:
                    raw = await it.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    self._pulling = False
                await self._admit(raw, send)
                if self._stopping:
                    return
        finally:
            if inspect.isasyncgen(it):
                await it.aclose()

    async def _admit(self, raw: object, send: trio.MemorySendChannel[Envelope]) -> None:
        env = Envelope(self.source_items, raw)
        self.source_items += 1
        span = _telemetry.start_source_span(self, env) if self.trace_items else None
        try:
            await send.send(env)
        except BaseException as exc:
            self.ledger.settle(env, UNFINISHED)
            if span is not None:
                _spans.end_span(span, exc)
            raise
        if span is not None:
            span.end()

    def _settle_leftovers(self) -> None:
        """After every task is done: items still in a channel never finished."""
        ledger = self.ledger
        for receive in self._receivers:
            while True:
                try:
                    env = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                ledger.settle(env, UNFINISHED)
        for send in self._senders:
            send.close()

    async def stop(self, grace: float = math.inf) -> None:
        """Stop reading the source, let admitted items finish for ``grace`` seconds, then cancel.

        Returns when the run is over. Items that did not finish within the
        grace period are reported as unfinished. Calling it again (or after
        the run ended) only shortens the grace. The outputs must still be
        consumed for the last items to finish.

        This is a checkpoint. If ``stop()`` itself is cancelled, the run keeps
        draining with the deadline already set.

        Raises:
          ValueError: if ``grace`` is negative or NaN.
        """
        if isinstance(grace, bool) or not isinstance(grace, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"grace must be a number, got {grace!r} ({type(grace).__name__})")
        if math.isnan(grace) or grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        self._stopping = True
        if self._pulling:
            self._reader_scope.cancel()
        if grace != math.inf:
            deadline = trio.current_time() + grace
            if deadline < self._scope.deadline:
                self._scope.deadline = deadline
        await self._done.wait()

    def cancel(self) -> None:
        """End the run at once: everything in flight is reported unfinished. Not a checkpoint."""
        self._stopping = True
        self._scope.cancel()

    async def wait(self) -> PipelineReport:
        """Wait until the run is over and return the final report.

        Outputs that arrive meanwhile are consumed and counted as delivered
        (a pipeline whose last stage is a sink needs nobody to read them), so
        do not call it while another task reads ``run.outputs``. A checkpoint;
        cancelling it leaves the run going.
        """
        await self.discard_outputs()
        await self._done.wait()
        return self.report

    def raise_failure(self) -> None:
        """Raise what failed the run (``on_error="fail"`` or the source), if anything did."""
        if not self.failures:
            return
        if len(self.failures) == 1:
            raise self.failures[0]
        raise BaseExceptionGroup(
            f"pipeline {self.name!r} failed in {len(self.failures)} places", self.failures
        )

    async def discard_outputs(self) -> None:
        """Consume (and count as delivered) outputs nobody reads, so the run can finish."""
        async for _ in self.outputs:
            pass
