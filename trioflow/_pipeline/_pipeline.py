"""The Pipeline builder: a declarative chain of stages, run as many times as you like."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, final

import attrs
import trio

from .._admission._protocol import Limiter
from .._admission._rate import RateLimiter
from .._util import raise_type
from ._report import DeadLetter, PipelineReport
from ._retry import Retry
from ._runtime import PipelineRun
from ._stage import Kind, StageSpec, make_batch_spec, make_spec

__all__ = ["Pipeline"]

OnError = Literal["fail", "skip", "dead_letter"]


@final
class Pipeline:
    """An assembly line: items from a source pass through stages, each with its own workers.

    Build it once, declaratively, then run it on a source (an iterable or an
    async iterable)::

        pipe = (
            tf.Pipeline("events")
            .map(enrich, workers=50, limiter=api_limit, rate=api_rate,
                 retry=tf.Retry(3, backoff=tf.Backoff.exponential(0.1, maximum=5.0)),
                 timeout=2.0, on_error="dead_letter", name="enrich")
            .filter(is_valid)
            .batch(size=100, max_wait=1.0)
            .map(write_batch, name="write")
        )
        report = await pipe.run(source)

    Each builder method returns a *new* pipeline (the original is
    unchanged), so a common prefix can be shared. Configuration errors raise
    at the builder call that made them.

    Between stages are bounded memory channels (``buffer=`` items, 0 by
    default: a hand-off), so a slow stage slows the stages before it and,
    in the end, the reading of the source. The number of source items read
    and not yet finished never exceeds :attr:`max_in_flight`.

    Every source item ends in exactly one of: delivered (out of the last
    stage), filtered, skipped, dead-lettered, or unfinished (the run was
    stopped, cancelled or failed first) — see :class:`PipelineReport`.

    Cost: per item and stage, about what the same topology hand-written
    with trio memory channels costs (``bench/pipeline.py``: 1.05-1.15x with
    one worker per stage, 1.03-1.04x with four).
    """

    __slots__ = ("_dead_letters", "_name", "_stages")

    def __init__(
        self,
        name: str,
        *,
        dead_letters: trio.MemorySendChannel[DeadLetter] | None = None,
    ) -> None:
        if not isinstance(name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("name", "a str", name)
        if not name:
            raise ValueError("name must not be empty")
        if dead_letters is not None and not isinstance(
            dead_letters,
            trio.MemorySendChannel,  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise_type("dead_letters", "a trio.MemorySendChannel (or None)", dead_letters)
        self._name = name
        self._dead_letters = dead_letters
        self._stages: tuple[StageSpec, ...] = ()

    @property
    def name(self) -> str:
        return self._name

    @property
    def stages(self) -> tuple[str, ...]:
        """The stage names, in order."""
        return tuple(s.name for s in self._stages)

    @property
    def max_in_flight(self) -> int:
        """The most source items read and not yet finished at any moment (the back-pressure bound).

        It is ``1 + sum over stages of (buffer + held) * m``: the reader's one
        item in hand; per stage, its input buffer plus what its workers hold
        (``workers``; ``workers + 2`` for an ordered stage with several
        workers; ``size`` for a batch stage), times ``m``, the product of the
        sizes of the batch stages before it (a queued batch holds ``size``
        source items).
        """
        total = 1
        m = 1
        for spec in self._stages:
            total += (spec.buffer + spec.held()) * m
            if spec.kind == "batch":
                m *= spec.size
        return total

    def __repr__(self) -> str:
        return f"<trioflow.Pipeline {self._name!r}: {' -> '.join(self.stages) or 'no stages'}>"

    def _add(self, spec: StageSpec, explicit: bool) -> Pipeline:
        names = {s.name for s in self._stages}
        if spec.name in names:
            if explicit:
                raise ValueError(
                    f"name {spec.name!r} is already a stage of pipeline {self._name!r}"
                )
            n = 2
            while f"{spec.name}-{n}" in names:
                n += 1
            spec = attrs.evolve(spec, name=f"{spec.name}-{n}")
        new = Pipeline(self._name, dead_letters=self._dead_letters)
        new._stages = (*self._stages, spec)
        return new

    def _fn_stage(
        self,
        kind: Kind,
        fn: Callable[..., Any],
        workers: int,
        buffer: int,
        limiter: Limiter | trio.CapacityLimiter | None,
        rate: RateLimiter | None,
        retry: Retry | None,
        timeout: float | None,
        on_error: OnError,
        ordered: bool,
        name: str | None,
        executor: Literal["thread", "process"] | None,
    ) -> Pipeline:
        spec = make_spec(
            kind,
            fn,
            name=name,
            workers=workers,
            buffer=buffer,
            limiter=limiter,
            rate=rate,
            retry=retry,
            timeout=timeout,
            on_error=on_error,
            ordered=ordered,
            executor=executor,
        )
        return self._add(spec, name is not None)

    def map(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 1,
        buffer: int = 0,
        limiter: Limiter | trio.CapacityLimiter | None = None,
        rate: RateLimiter | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_error: OnError = "fail",
        ordered: bool = False,
        name: str | None = None,
        executor: Literal["thread", "process"] | None = None,
    ) -> Pipeline:
        """Add a stage that replaces each item with ``await fn(item)``.

        Args:
          fn: an ``async def`` taking one item; with ``executor="thread"`` or
            ``"process"`` a plain sync function, run in a worker thread
            (:func:`trio.to_thread.run_sync`) or a worker process
            (``trio-parallel``; the function and items must pickle).
          workers: how many items the stage works on at once (its tasks).
          buffer: how many items may wait in front of the stage (0: a hand-off).
          limiter: any :class:`~trioflow.Limiter` (also a plain
            :class:`trio.CapacityLimiter`); each attempt holds one token via
            ``limiter.hold()``. Share one limiter between stages or pipelines
            to bound a resource they all use.
          rate: a :class:`~trioflow.RateLimiter`; each attempt takes one token,
            before the limiter (so a worker waiting for rate holds no limiter
            token).
          retry: a :class:`~trioflow.Retry`; failed attempts are retried (after
            a cancellable backoff sleep) before ``on_error`` applies.
          timeout: seconds each *attempt* may take; an attempt that takes
            longer raises :class:`trio.TooSlowError` inside the limiter hold
            (an overload sample for an adaptive limiter), which goes through
            ``retry`` and ``on_error`` like any failure. A thread cannot be
            interrupted: its attempt ends when the thread returns.
          on_error: what happens to an item whose last attempt failed:
            ``"fail"`` cancels the run and raises the exception (with a note
            naming the pipeline, the stage and the item); ``"skip"`` drops it
            (counted in ``skipped``); ``"dead_letter"`` keeps item, stage and
            exception in ``report.dead_letters`` (and sends it to the
            pipeline's ``dead_letters=`` channel, if given).
          ordered: emit in input order even with several workers; a slow item
            holds back the ones behind it (at most ``workers`` of them).
          name: the stage's name in reports, task dumps and spans (default:
            the function's name, made unique).
          executor: ``None`` (the function is async), ``"thread"`` or ``"process"``.

        Raises:
          TypeError, ValueError: for a bad parameter, naming it.
        """
        return self._fn_stage(
            "map",
            fn,
            workers,
            buffer,
            limiter,
            rate,
            retry,
            timeout,
            on_error,
            ordered,
            name,
            executor,
        )

    def filter(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 1,
        buffer: int = 0,
        limiter: Limiter | trio.CapacityLimiter | None = None,
        rate: RateLimiter | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_error: OnError = "fail",
        ordered: bool = False,
        name: str | None = None,
        executor: Literal["thread", "process"] | None = None,
    ) -> Pipeline:
        """Add a stage that passes on the items for which ``fn(item)`` is true.

        ``fn`` may be sync or async. The others are counted as filtered.
        Parameters as for :meth:`map`.
        """
        return self._fn_stage(
            "filter",
            fn,
            workers,
            buffer,
            limiter,
            rate,
            retry,
            timeout,
            on_error,
            ordered,
            name,
            executor,
        )

    def flat_map(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 1,
        buffer: int = 0,
        limiter: Limiter | trio.CapacityLimiter | None = None,
        rate: RateLimiter | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_error: OnError = "fail",
        ordered: bool = False,
        name: str | None = None,
        executor: Literal["thread", "process"] | None = None,
    ) -> Pipeline:
        """Add a stage that replaces each item with the items of the iterable ``await fn(item)``.

        The input item counts as emitted once all its children are sent on;
        an empty result counts it as filtered. Its children carry its source
        item: that source item's fate is the gravest of its children's.
        Parameters as for :meth:`map`.
        """
        return self._fn_stage(
            "flat_map",
            fn,
            workers,
            buffer,
            limiter,
            rate,
            retry,
            timeout,
            on_error,
            ordered,
            name,
            executor,
        )

    def each(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 1,
        buffer: int = 0,
        limiter: Limiter | trio.CapacityLimiter | None = None,
        rate: RateLimiter | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_error: OnError = "fail",
        ordered: bool = False,
        name: str | None = None,
        executor: Literal["thread", "process"] | None = None,
    ) -> Pipeline:
        """Add a side-effect stage: ``await fn(item)``, then pass the item on unchanged.

        Parameters as for :meth:`map`.
        """
        return self._fn_stage(
            "each",
            fn,
            workers,
            buffer,
            limiter,
            rate,
            retry,
            timeout,
            on_error,
            ordered,
            name,
            executor,
        )

    def batch(
        self,
        size: int,
        max_wait: float | None = None,
        *,
        buffer: int = 0,
        name: str | None = None,
    ) -> Pipeline:
        """Add a stage that groups items into lists of ``size``.

        A partial batch goes on when ``max_wait`` seconds have passed since
        its first item arrived, and at the end of the input (also during a
        graceful ``stop()``). Its counts are of the items it batched; the
        next stage receives one list per batch.
        """
        spec = make_batch_spec(size, max_wait, name, buffer)
        return self._add(spec, name is not None)

    # -- running -------------------------------------------------------------

    def _new_run(self, source: object, with_outputs: bool) -> PipelineRun:
        if not self._stages:
            raise ValueError(f"pipeline {self._name!r} has no stages")
        if not isinstance(source, AsyncIterable | Iterable):
            raise_type("source", "an iterable or an async iterable", source)
        if inspect.iscoroutine(source):  # pyright: ignore[reportUnknownArgumentType]
            raise TypeError("source must be an iterable or an async iterable, got a coroutine")
        return PipelineRun(
            self._name,
            self._stages,
            source,  # pyright: ignore[reportUnknownArgumentType]
            self._dead_letters,
            with_outputs,
        )

    async def run(self, source: Iterable[Any] | AsyncIterable[Any]) -> PipelineReport:
        """Run the pipeline over ``source`` to its end and return the report.

        The last stage's outputs are counted and dropped (use :meth:`open`
        to read them). Blocks until every item is finished.

        Cancellation cancels every stage at once. To see what a cancelled
        run left unfinished, use :meth:`open`, whose ``run.report`` survives it.

        Raises:
          Exception: the failure of a stage with ``on_error="fail"`` (or of
            the source), with a note naming the pipeline, the stage and the
            item; an :class:`ExceptionGroup` if several failed at once.
        """
        run = self._new_run(source, with_outputs=False)
        await run.main()
        run.raise_failure()
        return run.report

    def open(
        self, source: Iterable[Any] | AsyncIterable[Any]
    ) -> AbstractAsyncContextManager[PipelineRun]:
        """``async with pipe.open(source) as run:`` — run the pipeline while the block runs.

        ``run.outputs`` yields the last stage's items; ``await
        run.stop(grace)`` ends the run gracefully (e.g. on SIGTERM);
        ``run.report`` holds the final :class:`PipelineReport` after the block,
        whatever happened.

        When the block ends normally, the run is waited for, like a nursery
        waits for its tasks; outputs nobody read are consumed and counted as
        delivered. When the block raises (or is cancelled), the run is
        cancelled at once and everything in flight is reported unfinished.

        Raises:
          Exception: as :meth:`run`, when a stage failed the run.
        """
        return _open(self, source)


@asynccontextmanager
async def _open(pipe: Pipeline, source: object) -> AsyncGenerator[PipelineRun]:
    run = pipe._new_run(source, with_outputs=True)  # pyright: ignore[reportPrivateUsage]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run.main)
            try:
                yield run
            except BaseException:
                run.cancel()
                raise
            nursery.start_soon(run.discard_outputs, name=f"pipeline {run.name}, unread outputs")
    except BaseExceptionGroup as group:
        # The run's own tasks never raise (failures are kept and raised
        # below), so a group here holds the body's exception: give it back
        # unwrapped, as a user of a context manager expects.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    run.raise_failure()
