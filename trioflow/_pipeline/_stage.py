"""One stage of one run: its ports, its counters, and the one exit of every item.

A :class:`StageRun` gets everything it needs once, in a frozen
:class:`StagePorts` record (its inbox, the outbox it owns and closes, how
to fail the run, how to dead-letter, the ledger, the run's telemetry
decision, the process pool); it never sees the run itself. Its loops live
in ``_loops.py``; how one attempt is called lives in ``_attempt.py``.

Accounting rule (the conservation law, per stage): every input item a stage
receives leaves it exactly once — emitted, filtered, skipped, dead-lettered
or unfinished — through :meth:`StageRun.leave`, the only place an item
leaves: it updates the stage's counts, the ledger (for an end of the road)
and the item's span together. The loops keep the rule by giving each
received item exactly one owner at any moment (a worker, the ordered
stage's ``pending`` set, the batch being built) and by calling ``leave``
at the instant an outcome becomes true, with no checkpoint in between: a
send that raises ``Cancelled`` did not send (trio's memory channels are
cancellation-atomic), so the item is unfinished.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from opentelemetry.trace import INVALID_SPAN, Span

from .. import _registry
from .._registry import Holding, Waiting
from ..telemetry import _hooks, _spans
from ..telemetry import _names as names
from ._attempt import Attempt, AwaitableReturned, build_attempt, call_with_retries, duration_clock
from ._envelope import Envelope, Ledger, Outbox, hand_off
from ._fate import Fate
from ._report import DeadLetter, Latency, StageReport
from ._spec import StageSpec
from ._telemetry import activate, end_item, retry_event, start_item

if TYPE_CHECKING:
    import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

__all__ = ["Children", "RunTelemetry", "StagePorts", "StageRun", "Worker"]

_LATENCY_RING: Final = 2048
_DELIVERED: Final = Fate.DELIVERED
_UNFINISHED: Final = Fate.UNFINISHED


@attrs.frozen
class RunTelemetry:
    """The run's telemetry decision, made once when the run starts."""

    run_span: Span = INVALID_SPAN
    """The run's span; ``INVALID_SPAN`` when tracing is off (no stage span, no item span)."""
    trace_items: bool = False
    """One trace per item (``tracing="item"``)."""
    stage_hook: _hooks.StageHook | None = None
    """Records ``trioflow.stage.duration`` (``None`` while metrics are off)."""


@attrs.frozen
class StagePorts:
    """What a stage needs from its run, handed over once."""

    pipeline: str
    inbox: trio.MemoryReceiveChannel[Envelope]
    outbox: Outbox
    """The stage owns it and closes it when it is done."""
    fail: Callable[[BaseException, str, Envelope | None], None]
    """``on_error="fail"``: remember the exception and cancel the run."""
    dead_letter: Callable[[DeadLetter, Envelope], Awaitable[None]]
    """Keep (or send on) one dead letter; a checkpoint if it goes to a channel."""
    ledger: Ledger
    telemetry: RunTelemetry
    process_context: Callable[[], trio_parallel.WorkerContext]


@attrs.define(eq=False)
class Worker:
    """One worker task of a stage, as a task dump shows it."""

    stage: StageRun
    index: int
    """1-based."""
    task: trio.lowlevel.Task | None = None
    state: str = "starting"
    """What it does now: "receiving", "running", "rate limit", "limiter", "backoff", "sending"."""
    item: Envelope | None = None
    """The item it works on (``None`` while it waits for one)."""

    def describe(self) -> str:
        """``stage enrich, worker 3 of 50, running <item #12>, waiting on rate limiter 'api'``."""
        s = self.stage
        text = f"stage {s.name}, worker {self.index} of {len(s.workers)}, {self.state}"
        if self.item is not None:
            text += f" {self.item!r}"
        data = self.task.custom_sleep_data if self.task is not None else None
        if isinstance(data, Waiting):
            text += f", waiting on {data.primitive.kind} {data.primitive.name!r}"
        return text

    def set_state(self, state: str) -> None:
        self.state = state


class Children:
    """What a ``flat_map`` made of one item: the item itself and the envelopes of its results."""

    __slots__ = ("items", "parent")

    def __init__(self, parent: Envelope, items: list[Envelope]) -> None:
        self.parent = parent
        self.items = items


@attrs.frozen
class StageStatistics:
    """What one stage of one run is doing now (the registry entry's ``statistics()``)."""

    name: str
    pipeline: str
    workers: int
    """Its workers (1 for a batch stage)."""
    busy: int
    """Workers with an item in hand."""
    queued: int
    """Items waiting in its input buffer."""
    left: tuple[int, ...]
    """Input items by the fate they left with, indexed by :class:`Fate`."""


class StageRun:
    """One stage of one run: workers, counters and registry entry (kind ``"stage"``).

    Counters are plain ints and floats, updated without locks in the trio
    thread and safe to read from any thread (a metrics exporter).
    """

    kind = "stage"

    def __init__(self, spec: StageSpec, ports: StagePorts) -> None:
        self.spec: Final = spec
        self.name: Final = spec.name
        self.ports: Final = ports
        self.pipeline: Final = ports.pipeline
        self.ledger: Final = ports.ledger
        self.received: int = 0
        #: input items by the fate they left with (index: the Fate's value)
        self.left: Final = [0, 0, 0, 0, 0]
        self.failed: int = 0
        self.retried: int = 0
        #: thread attempts abandoned at shutdown (still running, result discarded)
        self.abandoned: int = 0
        #: envelopes sent downstream (a batch or a flat_map child counts once)
        self.sent: int = 0
        self.busy_time: float = 0.0
        self.latency: Final = [0.0] * _LATENCY_RING
        self.latency_n: int = 0
        n = 1 if spec.kind == "batch" else spec.workers
        self.workers: Final = [Worker(self, i + 1) for i in range(n)]
        self.attributes: Final = {names.STAGE_NAME: spec.name, names.PIPELINE_NAME: ports.pipeline}
        self.span_name: Final = _spans.span_name("stage", spec.name)
        self.batch_span_name: Final = _spans.span_name("batch", spec.name)
        #: this run's ``stage {name}`` span (tracing "stage" and up)
        self.span: Span = INVALID_SPAN
        telemetry = ports.telemetry
        traced = telemetry.run_span is not INVALID_SPAN
        #: one span per item here? then: item envelope -> its span at this stage
        self.item_spans: dict[Envelope, Span] | None = (
            {} if traced and telemetry.trace_items else None
        )
        self.trace_items: Final = self.item_spans is not None
        self.stage_hook: Final = telemetry.stage_hook
        #: the stage-duration hook's cache (its aggregate's cell for this stage)
        self.metric_cell: object = None
        self.call: Attempt = _no_call
        if spec.kind != "batch":
            self.call = build_attempt(spec, ports.process_context, self._abandon)
        _registry.register(self)

    # -- registry / inspection ------------------------------------------------

    def statistics(self) -> StageStatistics:
        """A snapshot of this stage's live state: plain reads, safe from any thread."""
        return StageStatistics(
            name=self.name,
            pipeline=self.pipeline,
            workers=len(self.workers),
            busy=sum(1 for w in self.workers if w.item is not None),
            queued=self.queued,
            left=tuple(self.left),
        )

    @property
    def queued(self) -> int:
        """Items waiting in this stage's input buffer now."""
        return self.ports.inbox.statistics().current_buffer_used

    def _trioflow_holders(self) -> list[Holding]:
        return [Holding(w.task, 1) for w in self.workers if w.item is not None and w.task]

    def _trioflow_waiters(self) -> list[Waiting]:
        return []

    def task_roles(self) -> dict[trio.lowlevel.Task, str]:
        """What each live worker task is, for task dumps: ``stage enrich, worker 3 of 50, ...``."""
        return {w.task: w.describe() for w in self.workers if w.task is not None}

    def __repr__(self) -> str:
        busy = sum(1 for w in self.workers if w.item is not None)
        return (
            f"<trioflow stage {self.name!r} of pipeline {self.pipeline!r}, "
            f"{busy}/{len(self.workers)} busy, {self.received} received>"
        )

    def counts(self) -> dict[str, int]:
        """The stage's counts by name (span attributes, metrics)."""
        left = self.left
        return {
            "received": self.received,
            "emitted": left[_DELIVERED],
            "filtered": left[Fate.FILTERED],
            "skipped": left[Fate.SKIPPED],
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": left[Fate.DEAD_LETTERED],
            "unfinished": left[_UNFINISHED],
        }

    def report(self) -> StageReport:
        n = min(self.latency_n, _LATENCY_RING)
        if n:
            samples = sorted(self.latency[:n])
            latency = Latency(
                count=self.latency_n,
                p50=samples[(n - 1) // 2],
                p99=samples[min(n - 1, math.ceil(0.99 * n) - 1)],
                max=samples[-1],
            )
        else:
            latency = Latency(0, None, None, None)
        left = self.left
        return StageReport(
            received=self.received,
            emitted=left[_DELIVERED],
            filtered=left[Fate.FILTERED],
            skipped=left[Fate.SKIPPED],
            failed=self.failed,
            retried=self.retried,
            dead_lettered=left[Fate.DEAD_LETTERED],
            unfinished=left[_UNFINISHED],
            busy_time=self.busy_time,
            latency=latency,
            abandoned=self.abandoned,
        )

    # -- the one exit ---------------------------------------------------------

    def leave(self, env: Envelope, fate: Fate, exc: BaseException | None = None) -> None:
        """``env`` left this stage with ``fate``: counts, ledger and span, together.

        ``DELIVERED`` means emitted to the next stage: the source item's road
        goes on, so the ledger is not told (the outputs or the sink settle it).
        Never a checkpoint.
        """
        self.left[fate] += 1
        if fate is not _DELIVERED:
            self.ledger.settle(env, fate, exc)
        spans = self.item_spans
        if spans is not None:
            span = spans.pop(env, None)
            if span is not None:
                end_item(span, fate, exc)

    def record(self, dt: float, exc: BaseException | None) -> None:
        """One item's time in the function (all attempts): busy time, latency, the histogram."""
        self.busy_time += dt
        self.latency[self.latency_n & (_LATENCY_RING - 1)] = dt
        self.latency_n += 1
        hook = self.stage_hook
        if hook is not None:
            hook(self, dt, exc)

    def _abandon(self) -> None:
        self.abandoned += 1

    # -- one item -------------------------------------------------------------

    def start_span(self, env: Envelope) -> Span | None:
        """The item's span at this stage (item tracing only); ``None`` if it is not sampled."""
        span = start_item(self.span_name, self.attributes, env)
        if span is not None:
            assert self.item_spans is not None
            self.item_spans[env] = span
        return span

    def _on_retry(self, attempt: int, exc: Exception, delay: float) -> None:
        self.retried += 1
        if self.trace_items:
            retry_event(attempt, exc, delay)

    async def _call(self, env: Envelope, worker: Worker) -> Any:
        retry = self.spec.retry
        if retry is None or retry.attempts == 1:
            return await self.call(env.payload)
        return await call_with_retries(
            self.call, retry, env.payload, self._on_retry, worker.set_state
        )

    async def process(self, env: Envelope, worker: Worker) -> Envelope | Children | None:
        """Run one item through the stage function and its error policy.

        Returns what to emit (the envelope, or a flat_map's children), or
        ``None`` when the item left here (filtered, skipped, dead-lettered,
        failed the run). On cancellation the item leaves unfinished and the
        exception propagates.
        """
        now = duration_clock()
        start = now()
        try:
            if self.trace_items:
                # The ordered loop starts an item's span when it takes the item.
                assert self.item_spans is not None
                span = self.item_spans.get(env) or self.start_span(env)
                with activate(span):
                    result = await self._call(env, worker)
            else:
                result = await self._call(env, worker)
        except Exception as exc:
            self.record(now() - start, exc)
            self.failed += 1
            await self.on_error(env, exc)
            return None
        except BaseException as exc:
            self.leave(env, _UNFINISHED, exc)
            raise
        self.record(now() - start, None)
        kind = self.spec.kind
        if kind == "map":
            env.payload = result
            return env
        if kind == "each" or (kind == "filter" and result):
            return env
        if kind == "filter":
            self.leave(env, Fate.FILTERED)
            return None
        # flat_map
        try:
            items = list(result)
        except TypeError as exc:
            exc.add_note(f"flat_map stage {self.name!r} must return an iterable")
            self.failed += 1
            await self.on_error(env, exc)
            return None
        if not items:
            # Split into nothing: the item left the stage with nothing emitted.
            self.leave(env, Fate.FILTERED)
            return None
        return Children(env, [Envelope(env.id, item, env.parts, env.ctx) for item in items])

    async def on_error(self, env: Envelope, exc: Exception) -> None:
        """The item's last attempt failed: apply ``on_error`` (the item leaves here)."""
        policy = self.spec.on_error
        if isinstance(exc, AwaitableReturned):
            policy = "fail"  # a bug in the stage function: no item would fare better
        if policy == "skip":
            self.leave(env, Fate.SKIPPED, exc)
        elif policy == "dead_letter":
            # Count it only once the dead letter is kept: if sending it to a
            # dead_letters= channel is cancelled, the item is unfinished.
            try:
                await self.ports.dead_letter(DeadLetter(env.payload, self.name, exc), env)
            except BaseException as error:
                self.leave(env, _UNFINISHED, error)
                raise
            self.leave(env, Fate.DEAD_LETTERED, exc)
        else:
            self.leave(env, _UNFINISHED, exc)
            self.ports.fail(exc, f"stage {self.name!r}", env)

    async def emit(self, out: Envelope | Children) -> None:
        """Send one item's result downstream (:func:`hand_off`); it leaves emitted, or
        unfinished if cancelled."""
        outbox = self.ports.outbox
        if isinstance(out, Envelope):
            try:
                await hand_off(outbox, out)
            except BaseException as exc:
                self.leave(out, _UNFINISHED, exc)
                raise
            self.sent += 1
            self.leave(out, _DELIVERED)
            return
        # The children stand for the parent's source item(s), as parts.
        parent = out.parent
        children = out.items
        self.ledger.fan_out(parent, len(children))
        sent = 0
        try:
            for child in children:
                await hand_off(outbox, child)
                sent += 1
                self.sent += 1
        except BaseException as exc:
            # The children already sent live on downstream; the parent leaves
            # unfinished for the ones that were never sent (one share each,
            # less the one its own leaving settles).
            self.ledger.shrink(parent, len(children) - sent - 1)
            self.leave(parent, _UNFINISHED, exc)
            raise
        self.leave(parent, _DELIVERED)


async def _no_call(payload: object) -> Any:  # pragma: no cover - batch stages call nothing
    raise AssertionError("a batch stage has no function")
