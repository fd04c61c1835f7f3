"""A stage's tasks: the worker loop (and its one fast copy), the ordered loop, the batcher.

Each loop owns the items it holds and hands each to :meth:`StageRun.leave`
(directly, or through ``process`` / ``emit``) exactly once. :func:`run_stage`
starts a stage's tasks and closes its outbox when they are done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio
from opentelemetry.trace import INVALID_SPAN

from .. import _registry
from ._attempt import duration_clock
from ._envelope import Envelope, hand_off
from ._fate import Fate
from ._stage import Children, StageRun, Worker
from ._telemetry import end_item, end_stage, start_batch, start_stage, worker_context

__all__ = ["run_stage"]

_DELIVERED: Final = Fate.DELIVERED
_UNFINISHED: Final = Fate.UNFINISHED
_LATENCY_MASK: Final = 2048 - 1


async def run_stage(stage: StageRun) -> None:
    """Run the stage's tasks until its input ends (or cancellation); then close its outbox."""
    telemetry = stage.ports.telemetry
    if telemetry.run_span is not INVALID_SPAN:
        stage.span = start_stage(stage.name, stage.spec.kind, stage.attributes, telemetry.run_span)
    raised: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            spec = stage.spec
            if spec.kind == "batch":
                nursery.start_soon(
                    _traced(stage, _batcher), stage, stage.workers[0], name=_task_name(stage, 1)
                )
            elif spec.has_ordered_loop:
                nursery.start_soon(_ordered, stage, name=f"stage {stage.name}")
            else:
                fast = spec.kind in ("map", "each") and (
                    spec.retry is None or spec.retry.attempts == 1
                )
                worker = _traced(stage, _fast_worker if fast else _worker)
                for w in stage.workers:
                    nursery.start_soon(worker, stage, w, name=_task_name(stage, w.index))
    except BaseException as exc:
        raised = exc
        raise
    finally:
        stage.ports.outbox.close()
        if stage.span is not INVALID_SPAN:
            end_stage(stage.span, stage.counts(), raised)


Loop = Callable[[StageRun, Worker], Awaitable[None]]


def _traced(stage: StageRun, fn: Loop) -> Loop:
    """``fn`` itself when tracing is off; else ``fn`` run inside :func:`worker_context`."""
    if stage.span is INVALID_SPAN:
        return fn

    async def traced(stage: StageRun, worker: Worker) -> None:
        with worker_context(stage.span, stage.trace_items):
            await fn(stage, worker)

    return traced


def _task_name(stage: StageRun, index: int) -> str:
    return f"stage {stage.name}, worker {index} of {len(stage.workers)}"


async def _worker(stage: StageRun, worker: Worker) -> None:
    """The general worker: receive, process (retries, any kind), emit."""
    worker.task = trio.lowlevel.current_task()
    receive = stage.ports.inbox.receive
    try:
        while True:
            worker.state = "receiving"
            try:
                env = await receive()
            except trio.EndOfChannel:
                return
            await _one(stage, env, worker)
    finally:
        worker.item = None
        worker.state = "done"


async def _one(stage: StageRun, env: Envelope, worker: Worker) -> None:
    stage.received += 1
    worker.item = env
    worker.state = "running"
    out = await stage.process(env, worker)
    if out is not None:
        worker.state = "sending"
        await stage.emit(out)
    worker.item = None


async def _fast_worker(stage: StageRun, worker: Worker) -> None:
    """:func:`_worker` for a map/each stage without retries, inlined: the one fast copy.

    Same accounting as the general path (``process`` then ``emit``, written
    out); it exists because the per-item cost of a pipeline is mostly
    coroutine frames. A traced item takes the general path. Measured by
    ``bench/pipeline.py`` (see ``docs/benchmarks/pipeline.md``).
    """
    worker.task = trio.lowlevel.current_task()
    receive = stage.ports.inbox.receive
    outbox = stage.ports.outbox
    send_nowait = outbox.send_nowait
    send = outbox.send
    call = stage.call
    now = duration_clock()
    latency = stage.latency
    hook = stage.stage_hook
    trace = stage.trace_items
    is_map = stage.spec.kind == "map"
    leave = stage.leave
    try:
        while True:
            worker.state = "receiving"
            try:
                env = await receive()
            except trio.EndOfChannel:
                return
            if trace and env.ctx is not None:
                # A sampled item (or batch): the general path, which starts
                # and ends its span. Unsampled items stay here.
                await _one(stage, env, worker)
                continue
            stage.received += 1
            worker.item = env
            worker.state = "running"
            start = now()
            try:
                result = await call(env.payload)
            except Exception as exc:
                stage.record(now() - start, exc)
                stage.failed += 1
                await stage.on_error(env, exc)
                worker.item = None
                continue
            except BaseException as exc:
                leave(env, _UNFINISHED, exc)
                raise
            dt = now() - start
            if hook is not None:
                hook(stage, dt, None)
            stage.busy_time += dt
            latency[stage.latency_n & _LATENCY_MASK] = dt
            stage.latency_n += 1
            if is_map:
                env.payload = result
            worker.state = "sending"
            try:
                try:  # hand_off(), inlined
                    send_nowait(env)
                except trio.WouldBlock:
                    await send(env)
            except BaseException as exc:
                leave(env, _UNFINISHED, exc)
                raise
            stage.sent += 1
            leave(env, _DELIVERED)
            worker.item = None
    finally:
        worker.item = None
        worker.state = "done"


class _Slot:
    """An item in an ordered stage, from receipt to emission, in input order."""

    __slots__ = ("done", "env", "out")

    def __init__(self, env: Envelope) -> None:
        self.env = env
        self.out: Envelope | Children | None = None
        self.done = trio.Event()


async def _ordered(stage: StageRun) -> None:
    """Ordered stage: a dispatcher numbers items, workers fill slots, an emitter sends in order.

    The order channel holds at most ``workers`` slots, so a slow head item
    stalls intake instead of growing a reorder buffer without bound. A slot
    is owned by ``pending`` from receipt until a worker settles it or the
    emitter takes it; what is still pending at the end never left: unfinished.
    """
    pending: set[_Slot] = set()
    order_s, order_r = trio.open_memory_channel[_Slot](stage.spec.workers)
    work_s, work_r = trio.open_memory_channel[_Slot](0)
    for end, what in (
        (order_s, "in order"),
        (order_r, "in order"),
        (work_s, "to workers"),
        (work_r, "to workers"),
    ):
        _registry.label(end, f"{stage.pipeline}: {stage.name} ({what})")

    async def dispatcher() -> None:
        try:
            while True:
                try:
                    env = await stage.ports.inbox.receive()
                except trio.EndOfChannel:
                    return
                stage.received += 1
                if stage.trace_items:
                    stage.start_span(env)  # from receipt, like every other loop
                slot = _Slot(env)
                pending.add(slot)
                await order_s.send(slot)
                await work_s.send(slot)
        finally:
            order_s.close()
            work_s.close()

    async def worker(stage: StageRun, w: Worker) -> None:
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
                try:
                    slot.out = await stage.process(slot.env, w)
                except BaseException:
                    pending.discard(slot)  # process() let it leave, unfinished
                    raise
                if slot.out is None:
                    pending.discard(slot)  # it left in process()
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
                pending.discard(slot)  # from here on emit() accounts for it
                await stage.emit(out)

    try:
        async with trio.open_nursery() as inner:
            inner.start_soon(dispatcher, name=f"stage {stage.name}, dispatcher")
            traced_worker = _traced(stage, worker)
            for w in stage.workers:
                inner.start_soon(traced_worker, stage, w, name=_task_name(stage, w.index))
            inner.start_soon(emitter, name=f"stage {stage.name}, emitter")
    finally:
        for slot in pending:
            stage.leave(slot.env, _UNFINISHED)
        pending.clear()
        order_r.close()
        work_r.close()


async def _batcher(stage: StageRun, worker: Worker) -> None:
    """Collect ``size`` items (or what came within ``max_wait`` of the first) into one list."""
    worker.task = trio.lowlevel.current_task()
    size = stage.spec.size
    max_wait = stage.spec.max_wait
    receive = stage.ports.inbox.receive
    trace = stage.trace_items
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
                    stage.received += 1
                    batch.append(env)
                    if trace:
                        stage.start_span(env)
                # else: max_wait passed, flush the partial batch
            else:
                try:
                    env = await receive()
                except trio.EndOfChannel:
                    break
                stage.received += 1
                if not batch:
                    first_at = trio.current_time()
                batch.append(env)
                if trace:
                    stage.start_span(env)
            if len(batch) >= size or (
                max_wait is not None and trio.current_time() >= first_at + max_wait
            ):
                out, batch = batch, []
                await _flush(stage, out, first_at, worker)
        if batch:
            out, batch = batch, []
            await _flush(stage, out, first_at, worker)
    finally:
        for env in batch:
            stage.leave(env, _UNFINISHED)
        worker.item = None
        worker.state = "done"


async def _flush(stage: StageRun, parts: list[Envelope], first_at: float, worker: Worker) -> None:
    """Send one batch on: each of its items leaves when it does."""
    out = Envelope(parts[0].id, [p.payload for p in parts], parts)
    worker.item = out
    worker.state = "sending"
    stage.record(trio.current_time() - first_at, None)
    spans = stage.item_spans
    batch_span = None
    if spans is not None:
        batch_span = start_batch(
            stage.batch_span_name, stage.attributes, out, [spans.get(p) for p in parts]
        )
    try:
        await hand_off(stage.ports.outbox, out)
    except BaseException as exc:
        for p in parts:
            stage.leave(p, _UNFINISHED, exc)
        if batch_span is not None:
            end_item(batch_span, _UNFINISHED, exc)
        raise
    finally:
        worker.item = None
    stage.sent += 1
    for p in parts:
        stage.leave(p, _DELIVERED)
    if batch_span is not None:
        end_item(batch_span, _DELIVERED)
