"""One run of a pipeline: the engine (reader, stages, shutdown, report) and its public face.

Lifecycle: :meth:`RunEngine.main` decides telemetry once, builds each
stage's ports, opens the run's cancel scope and nursery and starts the
reader and each stage; when they are all done — the source ended and every
stage drained, or the scope was cancelled — :meth:`RunEngine._settle_leftovers`
counts whatever still sat in a channel as unfinished, and the report is final.

:class:`PipelineRun` is what users hold: outputs, stop, cancel, wait, report.
Everything else is the engine's, out of the public API.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

import attrs
import trio
from opentelemetry.trace import INVALID_SPAN, Span

from .. import _registry
from .._registry import Holding, Waiting
from ..telemetry import _hooks
from ._envelope import Envelope, Ledger, Outbox
from ._fate import Fate
from ._loops import run_stage
from ._reader import SettlingSource, SourceReader
from ._report import DeadLetter, PipelineReport
from ._spec import StageSpec
from ._stage import RunTelemetry, StagePorts, StageRun
from ._telemetry import end_run, links_to, start_run

if TYPE_CHECKING:
    import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

__all__ = ["Outputs", "PipelineRun", "RunEngine", "engine_of", "new_run"]

Out = TypeVar("Out", covariant=True)

_DELIVERED: Final = Fate.DELIVERED
_UNFINISHED: Final = Fate.UNFINISHED


class Outputs(Generic[Out]):
    """The last stage's items, as ``run.outputs``: ``async for item in run.outputs``.

    Receiving is a checkpoint (it is a :class:`trio.MemoryReceiveChannel`
    underneath); a cancelled receive takes nothing. An item counts as
    *delivered* in the report the moment it is received here.
    """

    __slots__ = ("_ledger", "_receive")

    def __init__(self, receive: trio.MemoryReceiveChannel[Envelope], ledger: Ledger) -> None:
        self._receive = receive
        self._ledger = ledger

    async def receive(self) -> Out:
        """The next output; raises :class:`trio.EndOfChannel` when the run is over."""
        env = await self._receive.receive()
        self._ledger.settle(env, _DELIVERED)
        return env.payload  # pyright: ignore[reportReturnType]

    def __aiter__(self) -> AsyncIterator[Out]:
        return self

    async def __anext__(self) -> Out:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class _Sink:
    """``pipe.run()``'s outbox for the last stage: every item is delivered on arrival."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def send_nowait(self, value: Envelope, /) -> None:
        self._ledger.settle(value, _DELIVERED)

    async def send(self, value: Envelope, /) -> None:  # pragma: no cover - send_nowait never blocks
        self.send_nowait(value)

    def close(self) -> None:
        pass


#: How many dead letters a run keeps in ``report.dead_letters`` by default
#: (without a ``dead_letters=`` channel); the rest are counted.
MAX_DEAD_LETTERS: Final = 1000


def _both(first: _hooks.StageHook, second: _hooks.StageHook) -> _hooks.StageHook:
    """One stage hook that calls two (metrics and the timeline, both on)."""

    def both(stage: object, duration: float, exc: BaseException | None) -> None:
        first(stage, duration, exc)
        second(stage, duration, exc)

    return both


@attrs.frozen
class RunStatistics:
    """A run's source items, read and settled (the registry entry's ``statistics()``)."""

    name: str
    source_items: int
    """Items read from the source so far."""
    settled: tuple[int, ...]
    """Source items settled, indexed by :class:`Fate`; the rest are in flight."""


class RunEngine:
    """Everything one run needs; registered as kind ``"pipeline"``."""

    kind = "pipeline"

    def __init__(
        self,
        name: str,
        specs: Sequence[StageSpec],
        source: Iterable[Any] | AsyncIterable[Any],
        dead_letters: trio.MemorySendChannel[DeadLetter] | None,
        max_dead_letters: int,
        with_outputs: bool,
    ) -> None:
        self.name: Final = name
        self.specs: Final = tuple(specs)
        settle = source.settle if isinstance(source, SettlingSource) else None
        self.ledger: Final = Ledger(settle, self._settle_failed)
        self.failures: list[BaseException] = []
        self.kept_letters: list[DeadLetter] = []
        self.omitted_letters: int = 0
        self._max_letters = max_dead_letters
        self._letter_channel = dead_letters
        self.scope: Final = trio.CancelScope()
        self.stopping: bool = False
        self.done: Final = trio.Event()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._process_ctx: trio_parallel.WorkerContext | None = None
        self.span: Span = INVALID_SPAN

        # Channels: stage i reads receivers[i]; the reader writes senders[0];
        # stage i writes senders[i + 1] (the outputs channel, for the last
        # stage of an open() run) or, in run(), a sink that counts delivery.
        self.senders: list[trio.MemorySendChannel[Envelope]] = []
        self.receivers: list[trio.MemoryReceiveChannel[Envelope]] = []
        for spec in specs:
            s, r = trio.open_memory_channel[Envelope](spec.buffer)
            self.senders.append(s)
            self.receivers.append(r)
        s, r = trio.open_memory_channel[Envelope](0)
        self.outboxes: list[Outbox] = [*self.senders[1:]]
        if with_outputs:
            self.senders.append(s)
            self.receivers.append(r)
            self.outboxes.append(s)
        else:
            s.close()  # run(): the last stage delivers to a sink; outputs is empty
            self.outboxes.append(_Sink(self.ledger))
        # Dumps name a task parked on these after the stages they join.
        ends = ["source", *(spec.name for spec in specs), "outputs"]
        for i, (send, receive) in enumerate(zip(self.senders, self.receivers, strict=True)):
            text = f"{name}: {ends[i]} → {ends[i + 1]}"
            _registry.label(send, text)
            _registry.label(receive, text)
        self.outputs: Final = Outputs[Any](r, self.ledger)
        self.reader: Final = SourceReader(source, self.senders[0], self.ledger, self.fail, name)
        self.stages: list[StageRun] = []
        _registry.register(self)

    # -- inspection ------------------------------------------------------------

    def statistics(self) -> RunStatistics:
        """Source items read and settled by fate, now: plain reads, safe from any thread."""
        return RunStatistics(
            name=self.name, source_items=self.source_items, settled=tuple(self.ledger.counts)
        )

    def _trioflow_holders(self) -> list[Holding]:
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return []

    @property
    def source_items(self) -> int:
        return self.reader.read

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else "stopping" if self.stopping else "running"
        return (
            f"<trioflow pipeline {self.name!r} {state}, {self.reader.read} read, "
            f"{len(self.specs)} stages>"
        )

    def counts(self) -> dict[str, int]:
        """Source items by fate, and those in flight (span attributes, metrics)."""
        counts = self.ledger.counts
        settled = sum(counts)
        out = {"source_items": self.reader.read}
        for fate in Fate:
            out[fate.outcome] = counts[fate]
        out["unfinished"] += self.reader.read - settled
        return out

    def report(self) -> PipelineReport:
        counts = self.ledger.counts
        end = self.ended_at
        if end is None:
            end = trio.current_time() if self.started_at is not None else 0.0
        read = self.reader.read
        return PipelineReport(
            source_items=read,
            outputs=self.stages[-1].sent if self.stages else 0,
            skipped=counts[Fate.SKIPPED],
            unfinished=counts[_UNFINISHED] + (read - sum(counts)),
            dead_letters=tuple(self.kept_letters),
            elapsed=end - (self.started_at if self.started_at is not None else end),
            stages={s.name: s.report() for s in self.stages},
            delivered=counts[_DELIVERED],
            filtered=counts[Fate.FILTERED],
            dead_lettered=counts[Fate.DEAD_LETTERED],
            dead_letters_omitted=self.omitted_letters,
            pipeline=self.name,
        )

    # -- the stages' ports -------------------------------------------------------

    def fail(self, exc: BaseException, where: str, env: Envelope | None) -> None:
        """``on_error="fail"`` (or a failing source): remember why, cancel the whole run."""
        note = f"in pipeline {self.name!r}, {where}"
        if env is not None:
            note += f", on {env!r}"
        exc.add_note(note)
        self.failures.append(exc)
        self.scope.cancel()

    def _settle_failed(self, exc: Exception, item: object) -> None:
        self.fail(exc, f"source.settle() for the source item {item!r}", None)

    async def dead_letter(self, letter: DeadLetter, env: Envelope) -> None:
        """Send ``letter`` to the ``dead_letters=`` channel, or keep it (up to the maximum).

        A checkpoint only with a channel. If the channel's receiver is gone,
        the letter is kept in the report and the run fails with an error
        that names the channel.
        """
        channel = self._letter_channel
        if channel is None:
            if len(self.kept_letters) < self._max_letters:
                self.kept_letters.append(letter)
            else:
                self.omitted_letters += 1
            return
        try:
            await channel.send(letter)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.kept_letters.append(letter)
            error = RuntimeError(
                f"the dead_letters= channel {channel!r} of pipeline {self.name!r} is closed "
                f"({type(exc).__name__}): the dead letter of {env!r} from stage "
                f"{letter.stage!r} is kept in report.dead_letters instead"
            )
            error.__cause__ = exc
            self.fail(error, f"stage {letter.stage!r}", env)
            return
        self.omitted_letters += 1

    def process_context(self) -> trio_parallel.WorkerContext:
        assert self._process_ctx is not None
        return self._process_ctx

    # -- lifecycle -----------------------------------------------------------------

    def _start_telemetry(self) -> RunTelemetry:
        """Decide once, for the whole run, what telemetry costs per item (nothing when off).

        ``tf.telemetry.use()`` already switched off a side whose provider
        reports nowhere, so with no SDK there is no hook and no tracing here.
        """
        stage_hook = _hooks.stage_hook if _hooks.metrics else None
        timeline = _hooks.timeline_hook
        if timeline is not None:
            stage_hook = timeline if stage_hook is None else _both(stage_hook, timeline)
        if not _hooks.tracing:
            return RunTelemetry(stage_hook=stage_hook)
        span = start_run(self.name, [s.name for s in self.specs])
        self.span = span
        trace_items = _hooks.tracing >= _hooks.ITEM
        if trace_items:
            self.reader.trace_items(links_to(span))
        return RunTelemetry(span, trace_items, stage_hook)

    async def main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline to its end; never raises a stage failure (see :meth:`raise_failure`)."""
        self.started_at = trio.current_time()
        telemetry = self._start_telemetry()
        for i, spec in enumerate(self.specs):
            ports = StagePorts(
                pipeline=self.name,
                inbox=self.receivers[i],
                outbox=self.outboxes[i],
                fail=self.fail,
                dead_letter=self.dead_letter,
                ledger=self.ledger,
                telemetry=telemetry,
                process_context=self.process_context,
            )
            self.stages.append(StageRun(spec, ports))
        raised: BaseException | None = None
        try:
            with self.scope:
                async with AsyncExitStack() as stack:
                    if any(s.executor == "process" for s in self.specs):
                        import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

                        # Worker processes live exactly as long as this run.
                        self._process_ctx = await stack.enter_async_context(
                            trio_parallel.open_worker_context()  # pyright: ignore[reportUnknownMemberType]
                        )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.reader.run, name=f"pipeline {self.name}, source")
                        for stage in self.stages:
                            nursery.start_soon(run_stage, stage, name=f"stage {stage.name}")
                        task_status.started()
        except Exception as exc:  # pragma: no cover - a bug in trioflow, or the process pool
            self.fail(exc, "runtime", None)
        except BaseException as exc:
            raised = exc
            raise
        finally:
            self._settle_leftovers(raised)
            self.ended_at = trio.current_time()
            if self.span is not INVALID_SPAN:
                end_run(
                    self.span, self.counts(), raised or self.failure(), self.scope.cancelled_caught
                )
            self.done.set()

    def _settle_leftovers(self, exc: BaseException | None) -> None:
        """After every task is done: items still in a channel never finished."""
        ledger = self.ledger
        for receive in self.receivers:
            while True:
                try:
                    env = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                ledger.settle(env, _UNFINISHED, exc)
        for send in self.senders:
            send.close()

    def stop(self, grace: float) -> None:
        """Stop reading; give what was admitted ``grace`` seconds, then cancel. Not a checkpoint."""
        self.stopping = True
        self.reader.stop()
        if grace != math.inf:
            deadline = trio.current_time() + grace
            if deadline < self.scope.deadline:
                self.scope.deadline = deadline

    def cancel(self) -> None:
        self.stopping = True
        self.reader.stop()
        self.scope.cancel()

    def failure(self) -> BaseException | None:
        """What failed the run (one exception, or a group of them), or ``None``."""
        failures = self.failures
        if not failures:
            return None
        if len(failures) == 1:
            return failures[0]
        return BaseExceptionGroup(
            f"pipeline {self.name!r} failed in {len(failures)} places", failures
        )

    def raise_failure(self) -> None:
        """Raise what failed the run (``on_error="fail"`` or the source), if anything did."""
        failure = self.failure()
        if failure is not None:
            raise failure

    async def discard_outputs(self) -> None:
        """Consume (and count as delivered) outputs nobody reads, so the run can finish."""
        async for _ in self.outputs:
            pass


class PipelineRun(Generic[Out]):
    """One run of a :class:`~trioflow.Pipeline`: what ``pipe.open(source)`` yields.

    ``run.outputs`` are the last stage's items; ``await run.stop(grace)``
    ends the run gracefully; ``run.report`` is the :class:`PipelineReport`
    (live while running, final once the run is over). Made by
    :meth:`Pipeline.open`, never directly.
    """

    __slots__ = ("_engine",)

    _engine: RunEngine

    def __init__(self) -> None:
        raise TypeError("trioflow.PipelineRun has no public constructor: use Pipeline.open()")

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._engine.name

    @property
    def outputs(self) -> Outputs[Out]:
        """The last stage's items (empty for ``pipe.run()``)."""
        return self._engine.outputs

    @property
    def report(self) -> PipelineReport:
        """What the run did with every source item: final once the run is over.

        While the run is still going it is a snapshot, and ``unfinished``
        counts the items in flight.
        """
        return self._engine.report()

    @property
    def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters kept so far (``report.dead_letters``)."""
        return tuple(self._engine.kept_letters)

    @property
    def running(self) -> bool:
        """Whether the run has started and not yet ended."""
        engine = self._engine
        return engine.started_at is not None and not engine.done.is_set()

    @property
    def was_cancelled(self) -> bool:
        """Whether the run's own scope was cancelled (``cancel()``, a failure, or ``stop()``'s grace)."""
        return self._engine.scope.cancelled_caught

    def __repr__(self) -> str:
        return repr(self._engine)

    async def stop(self, grace: float = math.inf) -> None:
        """Stop reading the source, let admitted items finish for ``grace`` seconds, then cancel.

        Returns when the run is over. Every item already read from the
        source goes on into the pipeline; items that did not finish within
        the grace period are reported as unfinished. Calling it again (or
        after the run ended) only shortens the grace. The outputs must still
        be consumed for the last items to finish (read ``run.outputs`` in
        another task, or call ``stop`` from one).

        This is a checkpoint. If ``stop()`` itself is cancelled, the run keeps
        draining with the deadline already set.

        Raises:
          TypeError: if ``grace`` is not a number.
          ValueError: if ``grace`` is negative or NaN.
        """
        if isinstance(grace, bool) or not isinstance(grace, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"grace must be a number, got {grace!r} ({type(grace).__name__})")
        if math.isnan(grace) or grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        self._engine.stop(grace)
        await self._engine.done.wait()

    def cancel(self) -> None:
        """End the run at once: everything in flight is reported unfinished. Not a checkpoint."""
        self._engine.cancel()

    async def wait(self) -> PipelineReport:
        """Wait until the run is over and return the final report.

        Outputs that arrive meanwhile are consumed and counted as delivered
        (a pipeline whose last stage is a sink needs nobody to read them), so
        do not call it while another task reads ``run.outputs``. A checkpoint;
        cancelling it leaves the run going.
        """
        await self._engine.discard_outputs()
        await self._engine.done.wait()
        return self._engine.report()


def new_run(engine: RunEngine) -> PipelineRun[Any]:
    """The public face of ``engine``."""
    run = cast("PipelineRun[Any]", object.__new__(PipelineRun))
    run._engine = engine  # pyright: ignore[reportPrivateUsage]
    return run


def engine_of(run: PipelineRun[Any]) -> RunEngine:
    """The engine behind a run (for the builder and trioflow's own tests)."""
    return run._engine  # pyright: ignore[reportPrivateUsage]
