"""One stage of a pipeline: its configuration (checked at build time) and its runtime.

A :class:`StageSpec` is what ``Pipeline.map(...)`` & co. record: immutable,
validated when the stage is added, reusable across runs. A :class:`StageRun`
is one stage of one run: its workers, its counters (plain attributes that
metrics may read from another thread) and its registry entry (kind
``"stage"``), so a task dump can say "stage enrich, worker 3 of 50".

Accounting rule (the conservation law, per stage): every input item a stage
receives leaves it exactly once — emitted, filtered, skipped, dead-lettered
or unfinished. The code keeps it by giving each received item exactly one
owner at any moment (a worker, the ordered stage's ``pending`` set, the batch
being built) and by counting an outcome only at the instant it becomes true,
with no checkpoint in between: a send that raises ``Cancelled`` did not send
(trio's memory channels are cancellation-atomic), so the item is unfinished.
"""

from __future__ import annotations

import inspect
import math
import pickle
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio
from opentelemetry.trace import INVALID_SPAN, Span

from .. import _registry
from .._admission._protocol import Limiter
from .._admission._rate import RateLimiter
from .._registry import Holding, Waiting
from .._util import check_count, check_optional_name, check_positive_number, raise_type
from ..telemetry import _hooks, _spans
from ._envelope import DEAD, FILTERED, SKIPPED, UNFINISHED, Envelope, Ledger
from ._report import DeadLetter, Latency, StageReport
from ._retry import Retry
from ._telemetry import (
    DEAD_LETTERED,
    EMITTED,
    end_item,
    end_stage,
    retry_event,
    start_item,
    start_stage,
    worker_context,
)
from ._telemetry import FILTERED as FILTERED_OUTCOME
from ._telemetry import (
    SKIPPED as SKIPPED_OUTCOME,
)
from ._telemetry import (
    UNFINISHED as UNFINISHED_OUTCOME,
)

if TYPE_CHECKING:
    from ._runtime import PipelineRun

__all__ = ["StageRun", "StageSpec"]

Kind = Literal["map", "filter", "flat_map", "each", "batch"]
OnError = Literal["fail", "skip", "dead_letter"]
Executor = Literal["thread", "process"]

_ON_ERROR: Final = ("fail", "skip", "dead_letter")
_EXECUTORS: Final = (None, "thread", "process")
_LATENCY_RING: Final = 2048


def duration_clock() -> Callable[[], float]:
    """A clock for *durations* (busy time, latency) that agrees with trio's clock.

    With trio's default clock (``perf_counter() + offset``) the offset cancels
    out of every difference, so read ``perf_counter`` directly: one call per
    read instead of three, six per item and stage. Any other clock (a
    ``MockClock``, a custom one) is used as it is.
    """
    clock = trio.lowlevel.current_clock()
    kind = type(clock)
    if kind.__name__ == "SystemClock" and kind.__module__.startswith("trio."):
        return time.perf_counter
    return clock.current_time


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we want the class's __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _fn_name(fn: object) -> str:
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name != "<lambda>":
        return name
    return type(fn).__name__ if not inspect.isfunction(fn) else "lambda"


def check_rate(rate: object) -> RateLimiter | None:
    """``rate=`` is a :class:`~trioflow.RateLimiter` (or ``None``)."""
    if rate is not None and not isinstance(rate, RateLimiter):
        raise_type("rate", "a trioflow.RateLimiter (or None)", rate)
    return rate


@attrs.frozen
class StageSpec:
    """A validated stage: what it does and how (see ``Pipeline.map`` for the parameters)."""

    kind: Kind
    name: str
    fn: Callable[[Any], Any] | None
    workers: int = 1
    buffer: int = 0
    limiter: Limiter | trio.CapacityLimiter | None = None
    rate: RateLimiter | None = None
    retry: Retry | None = None
    timeout: float | None = None
    on_error: OnError = "fail"
    ordered: bool = False
    executor: Executor | None = None
    size: int = 0
    max_wait: float | None = None
    is_async: bool = True

    def held(self) -> int:
        """The most input items this stage holds at once (outside its input buffer)."""
        if self.kind == "batch":
            return self.size
        if self.ordered and self.workers > 1:
            return self.workers + 2
        return self.workers


def check_stage_name(name: object) -> str | None:
    """A stage's ``name=``: ``None`` (named after its function) or a non-empty str."""
    checked = check_optional_name(name)
    if checked == "":
        raise ValueError("name must not be empty")
    return checked


def make_spec(
    kind: Kind,
    fn: object,
    *,
    name: object,
    workers: object = 1,
    buffer: object = 0,
    limiter: object = None,
    rate: object = None,
    retry: object = None,
    timeout: object = None,
    on_error: object = "fail",
    ordered: object = False,
    executor: object = None,
) -> StageSpec:
    """Check one function stage's configuration; every error names the parameter."""
    if not callable(fn):
        raise_type("fn", "a callable", fn)
    stage_name = check_stage_name(name)
    n_workers = check_count(workers, "workers")
    n_buffer = check_count(buffer, "buffer", minimum=0)
    if limiter is not None and not isinstance(limiter, Limiter | trio.CapacityLimiter):
        raise_type("limiter", "a trioflow.Limiter (or None)", limiter)
    rate_limiter = check_rate(rate)
    if retry is not None and not isinstance(retry, Retry):
        raise_type("retry", "a trioflow.Retry (or None)", retry)
    t = None if timeout is None else check_positive_number(timeout, "timeout")
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'fail', 'skip' or 'dead_letter', got {on_error!r}")
    if not isinstance(ordered, bool):
        raise_type("ordered", "a bool", ordered)
    if executor not in _EXECUTORS:
        raise ValueError(f"executor must be None, 'thread' or 'process', got {executor!r}")
    is_async = _is_async_callable(fn)
    if executor is None:
        if not is_async and kind != "filter":
            raise TypeError(
                f"{kind} stage function must be an async function (or pass executor='thread' "
                f"or 'process' for a sync one), got {fn!r}"
            )
    else:
        if is_async:
            raise TypeError(
                f"with executor={executor!r} the stage function must be a plain sync function, "
                f"got the async function {fn!r}"
            )
        if executor == "process":
            try:
                import trio_parallel  # noqa: F401  # pyright: ignore[reportUnusedImport, reportMissingTypeStubs]
            except ImportError as exc:  # pragma: no cover - trio-parallel is installed in CI
                raise ImportError(
                    "executor='process' needs trio-parallel: pip install 'trioflow[process]'"
                ) from exc
            try:
                pickle.dumps(fn)
            except Exception as exc:
                raise TypeError(
                    f"with executor='process' the stage function must be picklable "
                    f"(a module-level function), got {fn!r}: {exc}"
                ) from None
    return StageSpec(
        kind=kind,
        name=_fn_name(fn) if stage_name is None else stage_name,
        fn=fn,  # pyright: ignore[reportArgumentType]
        workers=n_workers,
        buffer=n_buffer,
        limiter=limiter,  # pyright: ignore[reportArgumentType]
        rate=rate_limiter,
        retry=retry,
        timeout=t,
        on_error=on_error,  # pyright: ignore[reportArgumentType]
        ordered=ordered,
        executor=executor,  # pyright: ignore[reportArgumentType]
        is_async=is_async,
    )


def make_batch_spec(size: object, max_wait: object, name: object, buffer: object) -> StageSpec:
    n = check_count(size, "size")
    wait = None if max_wait is None else check_positive_number(max_wait, "max_wait")
    stage_name = check_stage_name(name)
    return StageSpec(
        kind="batch",
        name="batch" if stage_name is None else stage_name,
        fn=None,
        buffer=check_count(buffer, "buffer", minimum=0),
        size=n,
        max_wait=wait,
    )


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
        """``stage enrich, worker 3 of 50, running <item #12>, waiting on rate limiter 'api'``.

        The last part names the trioflow primitive the task is parked on, if
        any (read from the task's ``custom_sleep_data``; see ``_registry``).
        """
        s = self.stage
        text = f"stage {s.name}, worker {self.index} of {len(s.workers)}, {self.state}"
        if self.item is not None:
            text += f" {self.item!r}"
        data = self.task.custom_sleep_data if self.task is not None else None
        if isinstance(data, Waiting):
            text += f", waiting on {data.primitive.kind} {data.primitive.name!r}"
        return text


class _Slot:
    """An item in an ordered stage, from receipt to emission, in input order."""

    __slots__ = ("done", "env", "out")

    def __init__(self, env: Envelope) -> None:
        self.env = env
        self.out: Envelope | list[Envelope] | None = None
        self.done = trio.Event()


class StageRun:
    """One stage of one run: workers, counters and registry entry.

    Counters are plain ints and floats, updated without locks in the trio
    thread and safe to read from any thread (a metrics exporter).
    """

    kind = "stage"

    def __init__(
        self,
        spec: StageSpec,
        run: PipelineRun,
        inbox: trio.MemoryReceiveChannel[Envelope],
        send: Callable[[Envelope], Awaitable[None]],
        last: bool,
    ) -> None:
        self.spec: Final = spec
        self.name: Final = spec.name
        self.run: Final = run
        self.inbox: Final = inbox
        self._send: Final = send
        self._ledger: Ledger = run.ledger
        self._last: Final = last
        self.received: int = 0
        self.emitted: int = 0
        self.filtered: int = 0
        self.skipped: int = 0
        self.failed: int = 0
        self.retried: int = 0
        self.dead_lettered: int = 0
        self.unfinished: int = 0
        #: envelopes sent downstream (a batch or a flat_map child counts once)
        self.sent: int = 0
        self.busy_time: float = 0.0
        self._latency = [0.0] * _LATENCY_RING
        self._latency_n = 0
        n = 1 if spec.kind == "batch" else spec.workers
        self.workers: list[Worker] = [Worker(self, i + 1) for i in range(n)]
        self._call = self._make_call()
        #: telemetry: what names this stage in spans and metrics
        self.telemetry_attributes: Final = {
            "trioflow.name": spec.name,
            "trioflow.pipeline": run.name,
        }
        self.span_name: Final = _spans.span_name("stage", spec.name)
        #: this run's ``stage {name}`` span (tracing "stage" and up)
        self.span: Span = INVALID_SPAN
        #: one span per item here? (tracing "item"; fixed when the stage starts)
        self._trace_items = False
        #: trioflow.stage.duration recorder (None while metrics are off)
        self._stage_hook: _hooks.StageHook | None = None
        _registry.register(self)

    # -- registry / inspection ------------------------------------------------

    @property
    def queued(self) -> int:
        """Items waiting in this stage's input buffer now."""
        return self.inbox.statistics().current_buffer_used

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
            f"<trioflow stage {self.name!r} of pipeline {self.run.name!r}, "
            f"{busy}/{len(self.workers)} busy, {self.received} received>"
        )

    def report(self) -> StageReport:
        n = min(self._latency_n, _LATENCY_RING)
        if n:
            samples = sorted(self._latency[:n])
            latency = Latency(
                count=self._latency_n,
                p50=samples[(n - 1) // 2],
                p99=samples[min(n - 1, math.ceil(0.99 * n) - 1)],
                max=samples[-1],
            )
        else:
            latency = Latency(0, None, None, None)
        return StageReport(
            received=self.received,
            emitted=self.emitted,
            filtered=self.filtered,
            skipped=self.skipped,
            failed=self.failed,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            unfinished=self.unfinished,
            busy_time=self.busy_time,
            latency=latency,
        )

    def _record_time(self, start: float, exc: BaseException | None = None) -> None:
        self._record_dt(trio.current_time() - start, exc)

    def _record_dt(self, dt: float, exc: BaseException | None = None) -> None:
        self.busy_time += dt
        self._latency[self._latency_n & (_LATENCY_RING - 1)] = dt
        self._latency_n += 1
        hook = self._stage_hook
        if hook is not None:
            hook(self, dt, exc)

    # -- calling the stage function -------------------------------------------

    def _make_call(self) -> Callable[[object], Awaitable[Any]]:
        """Build the one-attempt call: executor, then timeout inside limiter, inside rate.

        Built once per run so the per-item path has no configuration branches.
        """
        spec = self.spec
        fn: Any = spec.fn
        if spec.kind == "batch":
            return _never
        if spec.executor == "thread":

            async def base(payload: object) -> Any:
                return await trio.to_thread.run_sync(fn, payload)

        elif spec.executor == "process":
            run = self.run

            async def base(payload: object) -> Any:
                ctx = run.process_context()
                return await ctx.run_sync(fn, payload, kill_on_cancel=True)  # pyright: ignore[reportUnknownMemberType]

        elif not spec.is_async:  # a sync filter predicate

            async def base(payload: object) -> Any:
                return fn(payload)

        else:
            base = fn
        timeout = spec.timeout
        if timeout is not None:
            inner = base

            async def base(payload: object) -> Any:
                with trio.fail_after(timeout):
                    return await inner(payload)

        limiter = spec.limiter
        if limiter is not None:
            inner2 = base
            if isinstance(limiter, trio.CapacityLimiter):

                async def base(payload: object) -> Any:
                    async with limiter:
                        return await inner2(payload)

            else:

                async def base(payload: object) -> Any:
                    # The timeout scope is INSIDE the hold, so a TooSlowError
                    # leaves the hold as an overload sample for an adaptive limiter.
                    async with limiter.hold():
                        return await inner2(payload)

        rate = spec.rate
        if rate is not None:
            inner3 = base

            async def base(payload: object) -> Any:
                # Rate first, then the limiter: a worker waiting for a rate
                # token holds no limiter token (the limiter's latency samples
                # stay clean); the price is that a token may be spent while the
                # worker then waits for the limiter, so the real rate is at
                # most the configured one, never above it.
                await rate.acquire()
                return await inner3(payload)

        return base

    async def _attempts(self, payload: object, worker: Worker) -> Any:
        """Call the stage function, retrying per ``retry=``; raise the last failure."""
        retry = self.spec.retry
        call = self._call
        if retry is None:
            return await call(payload)
        attempt = 1
        while True:
            try:
                return await call(payload)
            except Exception as exc:
                if attempt >= retry.attempts or not isinstance(exc, retry.retry_on):
                    raise
                delay = retry.backoff.delay(attempt)
                if self._trace_items:
                    retry_event(attempt, exc, delay)
                attempt += 1
                self.retried += 1
                if delay > 0:
                    worker.state = "backoff"
                    await trio.sleep(delay)
                    worker.state = "running"

    async def _process(self, env: Envelope, worker: Worker) -> Envelope | list[Envelope] | None:
        """Run one item through the stage function and its error policy.

        Returns what to emit (the envelope, or a flat_map's children), or
        ``None`` when the item was settled here (filtered, skipped,
        dead-lettered, or failed the run). Raises only cancellation (and
        other BaseExceptions): the caller then counts the item unfinished.
        """
        start = trio.current_time()
        try:
            if self._trace_items:
                with _spans.activate(start_item(self, env)):
                    result = await self._attempts(env.payload, worker)
            else:
                result = await self._attempts(env.payload, worker)
        except Exception as exc:
            self._record_time(start, exc)
            self.failed += 1
            await self._on_error(env, exc)
            return None
        self._record_time(start)
        kind = self.spec.kind
        if kind == "map":
            env.payload = result
            return env
        if kind == "each":
            return env
        if kind == "filter":
            if result:
                return env
            self.filtered += 1
            self._ledger.settle(env, FILTERED)
            if self._trace_items:
                end_item(env.ctx, FILTERED_OUTCOME)
            return None
        # flat_map
        try:
            items = list(result)
        except TypeError as exc:
            exc.add_note(f"flat_map stage {self.name!r} must return an iterable")
            if self._stage_hook is not None:
                self._stage_hook(self, 0.0, exc)
            self.failed += 1
            await self._on_error(env, exc)
            return None
        if not items:
            # Split into nothing: the item left the stage with nothing emitted.
            self.filtered += 1
            self._ledger.settle(env, FILTERED)
            if self._trace_items:
                end_item(env.ctx, FILTERED_OUTCOME)
            return None
        return [Envelope(env.id, item, env.parts, env.ctx) for item in items]

    async def _on_error(self, env: Envelope, exc: Exception) -> None:
        policy = self.spec.on_error
        trace = self._trace_items
        if policy == "skip":
            self.skipped += 1
            self._ledger.settle(env, SKIPPED)
            if trace:
                end_item(env.ctx, SKIPPED_OUTCOME, exc)
        elif policy == "dead_letter":
            # Count it only once the dead letter is kept: if sending it to a
            # dead_letters= channel is cancelled, the item is unfinished.
            try:
                await self.run.dead_letter(DeadLetter(env.payload, self.name, exc))
            except BaseException:
                if trace:
                    end_item(env.ctx, UNFINISHED_OUTCOME, exc)
                raise
            self.dead_lettered += 1
            self._ledger.settle(env, DEAD)
            if trace:
                end_item(env.ctx, DEAD_LETTERED, exc)
        else:
            self.unfinished += 1
            self._ledger.settle(env, UNFINISHED)
            if trace:
                end_item(env.ctx, UNFINISHED_OUTCOME, exc)
            self.run.fail(exc, f"stage {self.name!r}", env)

    async def _emit(self, out: Envelope | list[Envelope]) -> None:
        """Send one item's result downstream; count it emitted, or unfinished if cancelled."""
        send = self._send
        trace = self._trace_items
        if isinstance(out, Envelope):
            # The item's span, read before the hand-off: the next stage
            # replaces out.ctx with its own as soon as it takes the item.
            span = out.ctx if trace else None
            try:
                await send(out)
            except BaseException as exc:
                self.unfinished += 1
                self._ledger.settle(out, UNFINISHED)
                if trace:
                    end_item(span, UNFINISHED_OUTCOME, exc)
                raise
            self.sent += 1
            self.emitted += 1
            if trace:
                end_item(span, EMITTED)
            return
        # The children stand for the parent's source item(s): settle them as parts.
        self._ledger.fan_out(out[0], len(out))
        span = out[0].ctx if trace else None
        sent = 0
        try:
            for child in out:
                await send(child)
                sent += 1
                self.sent += 1
        except BaseException as exc:
            # The children already sent live on downstream; the rest end here.
            self.unfinished += 1
            for child in out[sent:]:
                self._ledger.settle(child, UNFINISHED)
            if trace:
                end_item(span, UNFINISHED_OUTCOME, exc)
            raise
        self.emitted += 1
        if trace:
            end_item(span, EMITTED)

    # -- the stage's tasks ------------------------------------------------------

    async def run_stage(self) -> None:
        """Run the stage's workers until the input ends (or cancellation); then close the output."""
        run = self.run
        self._stage_hook = _hooks.stage_hook
        if run.span is not INVALID_SPAN:
            self._trace_items = run.trace_items
            self.span = start_stage(self, run.span)
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                spec = self.spec
                if spec.kind == "batch":
                    nursery.start_soon(
                        self._traced(self._batcher), self.workers[0], name=self._task_name(1)
                    )
                elif spec.ordered and spec.workers > 1:
                    await self._start_ordered(nursery)
                else:
                    worker = self._traced(self._worker)
                    for w in self.workers:
                        nursery.start_soon(worker, w, name=self._task_name(w.index))
        except BaseException as exc:
            raised = exc
            raise
        finally:
            self.run.close_output(self)
            if self.span is not INVALID_SPAN:
                end_stage(self, self.span, raised)

    def _traced(
        self, fn: Callable[[Worker], Awaitable[None]]
    ) -> Callable[[Worker], Awaitable[None]]:
        """``fn`` itself when tracing is off; else ``fn`` run inside :func:`worker_context`."""
        if self.span is INVALID_SPAN:
            return fn

        async def traced(worker: Worker) -> None:
            with worker_context(self):
                await fn(worker)

        return traced

    def _task_name(self, index: int) -> str:
        return f"stage {self.name}, worker {index} of {len(self.workers)}"

    async def _worker(self, worker: Worker) -> None:
        spec = self.spec
        if spec.kind in ("map", "each") and (spec.retry is None or spec.retry.attempts == 1):
            await self._fast_worker(worker, spec.kind == "map")
            return
        worker.task = trio.lowlevel.current_task()
        receive = self.inbox.receive
        process = self._process
        emit = self._emit
        try:
            while True:
                worker.state = "receiving"
                try:
                    env = await receive()
                except trio.EndOfChannel:
                    return
                self.received += 1
                worker.item = env
                worker.state = "running"
                try:
                    out = await process(env, worker)
                except BaseException as exc:
                    self.unfinished += 1
                    self._ledger.settle(env, UNFINISHED)
                    if self._trace_items:
                        end_item(env.ctx, UNFINISHED_OUTCOME, exc)
                    raise
                if out is not None:
                    worker.state = "sending"
                    await emit(out)
                worker.item = None
        finally:
            worker.item = None
            worker.state = "done"

    async def _one_traced(self, env: Envelope, worker: Worker) -> None:
        """One item of :meth:`_fast_worker` through the general (traced) path."""
        try:
            out = await self._process(env, worker)
        except BaseException as exc:
            self.unfinished += 1
            self._ledger.settle(env, UNFINISHED)
            end_item(env.ctx, UNFINISHED_OUTCOME, exc)
            raise
        if out is not None:
            worker.state = "sending"
            await self._emit(out)
        worker.item = None

    async def _fast_worker(self, worker: Worker, is_map: bool) -> None:
        """``_worker`` for a map/each stage without retries, inlined (one coroutine per item).

        Same accounting as the general path; it exists because the per-item
        cost of a pipeline is mostly coroutine frames. Measured by
        ``bench/pipeline.py`` (3 trivial stages, CPU time on 2 loaded vCPUs):
        1.05-1.15x the same topology hand-written with memory channels at 1
        worker per stage, 1.03-1.04x at 4 workers per stage.
        """
        worker.task = trio.lowlevel.current_task()
        receive = self.inbox.receive
        send = self._send
        call = self._call
        now = duration_clock()
        ledger = self._ledger
        latency = self._latency
        mask = _LATENCY_RING - 1
        hook = self._stage_hook
        trace = self._trace_items
        try:
            while True:
                worker.state = "receiving"
                try:
                    env = await receive()
                except trio.EndOfChannel:
                    return
                self.received += 1
                worker.item = env
                worker.state = "running"
                if trace and (env.ctx is not None or env.parts is not None):
                    # A traced item (or a batch to link): the general path,
                    # which starts and ends its span. Untraced items (not
                    # sampled) stay on this path, at one check's cost.
                    await self._one_traced(env, worker)
                    continue
                try:
                    start = now()
                    try:
                        result = await call(env.payload)
                    except Exception as exc:
                        self._record_dt(now() - start, exc)
                        self.failed += 1
                        await self._on_error(env, exc)
                        worker.item = None
                        continue
                    dt = now() - start
                    if hook is not None:
                        hook(self, dt, None)
                    self.busy_time += dt
                    latency[self._latency_n & mask] = dt
                    self._latency_n += 1
                    if is_map:
                        env.payload = result
                except BaseException:
                    self.unfinished += 1
                    ledger.settle(env, UNFINISHED)
                    raise
                worker.state = "sending"
                try:
                    await send(env)
                except BaseException:
                    self.unfinished += 1
                    ledger.settle(env, UNFINISHED)
                    raise
                self.sent += 1
                self.emitted += 1
                worker.item = None
        finally:
            worker.item = None
            worker.state = "done"

    async def _start_ordered(self, nursery: trio.Nursery) -> None:
        """Ordered stage: a dispatcher numbers items, workers fill slots, an emitter sends in order.

        The order channel holds at most ``workers`` slots, so a slow head item
        stalls intake instead of growing a reorder buffer without bound.
        """
        pending: set[_Slot] = set()
        self._pending = pending
        order_s, order_r = trio.open_memory_channel[_Slot](self.spec.workers)
        work_s, work_r = trio.open_memory_channel[_Slot](0)

        async def dispatcher() -> None:
            try:
                while True:
                    try:
                        env = await self.inbox.receive()
                    except trio.EndOfChannel:
                        return
                    self.received += 1
                    slot = _Slot(env)
                    pending.add(slot)
                    await order_s.send(slot)
                    await work_s.send(slot)
            finally:
                order_s.close()
                work_s.close()

        async def worker(w: Worker) -> None:
            w.task = trio.lowlevel.current_task()
            try:
                while True:
                    w.state = "receiving"
                    try:
                        slot = await work_r.receive()
                    except trio.EndOfChannel:
                        return
                    w.item = slot.env
                    w.state = "running"
                    slot.out = await self._process(slot.env, w)
                    if slot.out is None:
                        pending.discard(slot)  # settled by _process
                    slot.done.set()
                    w.item = None
            finally:
                w.item = None
                w.state = "done"

        async def emitter() -> None:
            async for slot in order_r:
                await slot.done.wait()
                out = slot.out
                if out is not None:
                    pending.discard(slot)  # from here on _emit accounts for it
                    await self._emit(out)

        async def ordered() -> None:
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(dispatcher, name=f"stage {self.name}, dispatcher")
                    traced_worker = self._traced(worker)
                    for w in self.workers:
                        inner.start_soon(traced_worker, w, name=self._task_name(w.index))
                    inner.start_soon(emitter, name=f"stage {self.name}, emitter")
            finally:
                # Whatever is still pending was received and never left: unfinished.
                for slot in pending:
                    self.unfinished += 1
                    self._ledger.settle(slot.env, UNFINISHED)
                    if self._trace_items:
                        end_item(slot.env.ctx, UNFINISHED_OUTCOME)
                pending.clear()
                order_r.close()
                work_r.close()

        nursery.start_soon(ordered, name=f"stage {self.name}")

    async def _batcher(self, worker: Worker) -> None:
        """Collect ``size`` items (or what came within ``max_wait`` of the first) into one list."""
        worker.task = trio.lowlevel.current_task()
        size = self.spec.size
        max_wait = self.spec.max_wait
        receive = self.inbox.receive
        batch: list[Envelope] = []
        first_at = 0.0
        try:
            while True:
                worker.state = "receiving"
                if batch and max_wait is not None:
                    with trio.move_on_at(first_at + max_wait):
                        try:
                            env = await receive()
                        except trio.EndOfChannel:
                            break
                        self.received += 1
                        batch.append(env)
                        if self._trace_items:
                            start_item(self, env)
                    # else: max_wait passed, flush the partial batch
                else:
                    try:
                        env = await receive()
                    except trio.EndOfChannel:
                        break
                    self.received += 1
                    if not batch:
                        first_at = trio.current_time()
                    batch.append(env)
                    if self._trace_items:
                        start_item(self, env)
                if len(batch) >= size or (
                    max_wait is not None and trio.current_time() >= first_at + max_wait
                ):
                    out, batch = batch, []
                    await self._flush(out, first_at, worker)
            if batch:
                out, batch = batch, []
                await self._flush(out, first_at, worker)
        finally:
            for env in batch:
                self.unfinished += 1
                self._ledger.settle(env, UNFINISHED)
                if self._trace_items:
                    end_item(env.ctx, UNFINISHED_OUTCOME)
            worker.item = None
            worker.state = "done"

    async def _flush(self, parts: list[Envelope], first_at: float, worker: Worker) -> None:
        out = Envelope(parts[0].id, [p.payload for p in parts], parts)
        worker.item = out
        worker.state = "sending"
        self._record_time(first_at)
        try:
            await self._send(out)
        except BaseException as exc:
            self.unfinished += len(parts)
            self._ledger.settle(out, UNFINISHED)
            if self._trace_items:
                for p in parts:
                    end_item(p.ctx, UNFINISHED_OUTCOME, exc)
            raise
        finally:
            worker.item = None
        self.sent += 1
        self.emitted += len(parts)
        if self._trace_items:
            for p in parts:
                end_item(p.ctx, EMITTED)


async def _never(payload: object) -> Any:  # pragma: no cover - batch stages call nothing
    raise AssertionError("a batch stage has no function")
