"""The Pipeline builder: a declarative chain of stages, run as many times as you like."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypedDict, final, overload

import attrs
import trio

from .._admission._protocol import Limiter, Pacer
from .._util import check_count, raise_type
from ._report import DeadLetter, PipelineReport
from ._retry import Retry
from ._runtime import MAX_DEAD_LETTERS, PipelineRun, RunEngine, new_run
from ._spec import Executor, Kind, OnError, StageSpec, make_batch_spec, make_spec

if TYPE_CHECKING:
    from typing import Unpack

    from typing_extensions import TypeVar

    In = TypeVar("In", default=Any)
    Out = TypeVar("Out", default=Any)
else:
    from typing import TypeVar

    In = TypeVar("In")
    Out = TypeVar("Out")

R = TypeVar("R")

__all__ = ["Pipeline", "StageOptions"]


class StageOptions(TypedDict, total=False):
    """The options every function stage takes (``map``, ``filter``, ``flat_map``, ``each``).

    See :meth:`Pipeline.map` for what each one does.
    """

    workers: int
    buffer: int
    limiter: Limiter | None
    rate: Pacer | None
    retry: Retry | None
    timeout: float | None
    on_error: OnError
    ordered: bool
    name: str | None


@final
class Pipeline(Generic[In, Out]):
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

    Typed: a ``Pipeline[In, Out]`` takes items of type ``In`` and emits
    items of type ``Out``; ``.map(f)`` with ``f: Out -> Awaitable[R]`` gives a
    ``Pipeline[In, R]``, ``.batch(n)`` a ``Pipeline[In, list[Out]]``, and
    ``run.outputs`` yields ``Out``. ``tf.Pipeline("x")`` is a
    ``Pipeline[Any, Any]``; write ``tf.Pipeline[Event, Event]("x")`` to type
    the source.

    Cost: per item and stage, about what the same topology hand-written
    with trio memory channels costs, microseconds (``bench/pipeline.py``;
    figures in ``docs/benchmarks/pipeline.md``).
    """

    __slots__ = ("_dead_letters", "_max_dead_letters", "_name", "_stages")

    def __init__(
        self,
        name: str,
        *,
        dead_letters: trio.MemorySendChannel[DeadLetter] | None = None,
        max_dead_letters: int = MAX_DEAD_LETTERS,
    ) -> None:
        """Args:
        name: the pipeline's name in reports, task dumps, spans and metrics.
        dead_letters: a channel that receives every dead letter (then
          ``report.dead_letters`` keeps none, only their count). Sending
          to it is a checkpoint that waits while the channel is full; if
          its receiver closed it, the run fails with an error naming it.
        max_dead_letters: without a channel, how many dead letters
          ``report.dead_letters`` keeps (the first ones); the rest are
          counted in ``report.dead_letters_omitted`` (default 1000).
        """
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
        self._max_dead_letters = check_count(max_dead_letters, "max_dead_letters", minimum=0)
        self._stages: tuple[StageSpec, ...] = ()

    @property
    def name(self) -> str:
        """The pipeline's name."""
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

    def _add(self, spec: StageSpec, explicit: bool) -> Pipeline[In, Any]:
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
        new = Pipeline[In, Any](
            self._name, dead_letters=self._dead_letters, max_dead_letters=self._max_dead_letters
        )
        new._stages = (*self._stages, spec)
        return new

    def _fn_stage(
        self, kind: Kind, fn: object, executor: object, options: StageOptions
    ) -> Pipeline[In, Any]:
        spec = make_spec(kind, fn, executor=executor, **options)
        return self._add(spec, options.get("name") is not None)

    @overload
    def map(
        self,
        fn: Callable[[Out], Awaitable[R]],
        *,
        executor: None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]: ...

    @overload
    def map(
        self, fn: Callable[[Out], R], *, executor: Executor, **options: Unpack[StageOptions]
    ) -> Pipeline[In, R]: ...

    def map(
        self,
        fn: Callable[[Out], Any],
        *,
        executor: Executor | None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Any]:
        """Add a stage that replaces each item with ``await fn(item)``.

        Args:
          fn: an ``async def`` taking one item; with ``executor="thread"`` or
            ``"process"`` a plain sync function, run in a worker thread
            (:func:`trio.to_thread.run_sync`) or a worker process
            (``trio-parallel``; the function and items must pickle). A sync
            function without an executor is a type error (and a
            :class:`TypeError` here).
          executor: ``None`` (the function is async), ``"thread"`` or
            ``"process"``. A thread cannot be interrupted: when the run ends
            (the grace ran out, or it was cancelled) a running thread attempt
            is *abandoned* — its item is unfinished, the thread runs on in
            the background and its result is discarded
            (``StageReport.abandoned``) — so the run ends on time.
          workers: how many items the stage works on at once (its tasks).
          buffer: how many items may wait in front of the stage (0: a hand-off).
          limiter: any :class:`~trioflow.Limiter` (also a plain
            :class:`trio.CapacityLimiter`); each attempt holds one token via
            ``limiter.hold()``. Share one limiter between stages or pipelines
            to bound a resource they all use.
          rate: a rate limiter (any :class:`~trioflow.Pacer`: a
            :class:`~trioflow.RateLimiter`, or a
            :class:`~trioflow.redis.RedisRateLimiter` shared by replicas);
            each attempt takes one token,
            before the limiter (so a worker waiting for rate holds no limiter
            token).
          retry: a :class:`~trioflow.Retry`; failed attempts are retried (after
            a cancellable backoff sleep) before ``on_error`` applies.
          timeout: seconds each *attempt* may take; an attempt that takes
            longer raises :class:`trio.TooSlowError` inside the limiter hold
            (an overload sample for an adaptive limiter), which goes through
            ``retry`` and ``on_error`` like any failure. A thread attempt is
            not interrupted by its timeout: it holds its limiter token until
            the thread returns, then fails with :class:`trio.TooSlowError`.
          on_error: what happens to an item whose last attempt failed:
            ``"fail"`` cancels the run and raises the exception (with a note
            naming the pipeline, the stage and the item); ``"skip"`` drops it
            (counted in ``skipped``); ``"dead_letter"`` keeps item, stage and
            exception in ``report.dead_letters`` (or sends it to the
            pipeline's ``dead_letters=`` channel, if given). A function that
            returns an awaitable where a value was expected always fails the
            run with a :class:`TypeError`.
          ordered: emit in input order even with several workers; a slow item
            holds back the ones behind it (at most ``workers`` of them).
          name: the stage's name in reports, task dumps and spans (default:
            the function's name, made unique).

        Raises:
          TypeError, ValueError: for a bad parameter, naming it.
        """
        return self._fn_stage("map", fn, executor, options)

    def filter(
        self,
        fn: Callable[[Out], bool | Awaitable[bool]],
        *,
        executor: Executor | None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]:
        """Add a stage that passes on the items for which ``fn(item)`` is true.

        ``fn`` may be sync or async (a sync one runs in the worker task). The
        others are counted as filtered. A predicate that returns an awaitable
        (``lambda x: async_check(x)``: a coroutine is always true) fails the
        run with a :class:`TypeError` at its first call. Parameters as for
        :meth:`map`.
        """
        return self._fn_stage("filter", fn, executor, options)

    @overload
    def flat_map(
        self,
        fn: Callable[[Out], Awaitable[Iterable[R]]],
        *,
        executor: None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]: ...

    @overload
    def flat_map(
        self,
        fn: Callable[[Out], Iterable[R]],
        *,
        executor: Executor,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]: ...

    def flat_map(
        self,
        fn: Callable[[Out], Any],
        *,
        executor: Executor | None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Any]:
        """Add a stage that replaces each item with the items of the iterable ``await fn(item)``.

        The input item counts as emitted once all its children are sent on;
        an empty result counts it as filtered. Its children carry its source
        item: that source item's fate is the gravest of its children's.
        Parameters as for :meth:`map`.
        """
        return self._fn_stage("flat_map", fn, executor, options)

    @overload
    def each(
        self,
        fn: Callable[[Out], Awaitable[object]],
        *,
        executor: None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]: ...

    @overload
    def each(
        self, fn: Callable[[Out], object], *, executor: Executor, **options: Unpack[StageOptions]
    ) -> Pipeline[In, Out]: ...

    def each(
        self,
        fn: Callable[[Out], Any],
        *,
        executor: Executor | None = None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]:
        """Add a side-effect stage: ``await fn(item)``, then pass the item on unchanged.

        Parameters as for :meth:`map`.
        """
        return self._fn_stage("each", fn, executor, options)

    def batch(
        self,
        size: int,
        max_wait: float | None = None,
        *,
        buffer: int = 0,
        name: str | None = None,
    ) -> Pipeline[In, list[Out]]:
        """Add a stage that groups items into lists of ``size``.

        A partial batch goes on when ``max_wait`` seconds have passed since
        its first item arrived, and at the end of the input (also during a
        graceful ``stop()``). Its counts are of the items it batched; the
        next stage receives one list per batch. An item in a batch has the
        batch's fate: if the batch is the last stage's input, its items are
        delivered when the last stage delivers the batch, and unfinished if
        it does not finish (see "Sinks" in the pipeline guide).
        """
        spec = make_batch_spec(size, max_wait, name, buffer)
        return self._add(spec, name is not None)

    # -- running -------------------------------------------------------------

    def _new_run(self, source: object, with_outputs: bool) -> RunEngine:
        if not self._stages:
            raise ValueError(f"pipeline {self._name!r} has no stages")
        if not isinstance(source, AsyncIterable | Iterable):
            raise_type("source", "an iterable or an async iterable", source)
        if inspect.iscoroutine(source):  # pyright: ignore[reportUnknownArgumentType]
            raise TypeError("source must be an iterable or an async iterable, got a coroutine")
        return RunEngine(
            self._name,
            self._stages,
            source,  # pyright: ignore[reportUnknownArgumentType]
            self._dead_letters,
            self._max_dead_letters,
            with_outputs,
        )

    async def run(self, source: Iterable[In] | AsyncIterable[In]) -> PipelineReport:
        """Run the pipeline over ``source`` to its end and return the report.

        The last stage's outputs are counted (as delivered) and dropped (use
        :meth:`open` to read them). Blocks until every item is finished.
        A sync generator given as the source is closed when the run ends,
        and an async generator is ``aclose()``-d.

        Cancellation cancels every stage at once. To see what a cancelled
        run left unfinished, use :meth:`open`, whose ``run.report`` survives it.

        Raises:
          Exception: the failure of a stage with ``on_error="fail"`` (or of
            the source, or of a settling source's ``settle()``), with a note
            naming the pipeline, the stage and the item; an
            :class:`ExceptionGroup` if several failed at once.
        """
        engine = self._new_run(source, with_outputs=False)
        await engine.main()
        engine.raise_failure()
        return engine.report()

    def open(
        self, source: Iterable[In] | AsyncIterable[In]
    ) -> AbstractAsyncContextManager[PipelineRun[Out]]:
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
          Exception: as :meth:`run`, when a stage failed the run. If the
            block raised too, both surface, as a nursery raises them: a
            :class:`BaseExceptionGroup` holding the run's failure(s) and the
            block's exception.
        """
        return _open(self, source)


@asynccontextmanager
async def _open(pipe: Pipeline[Any, Any], source: object) -> AsyncGenerator[PipelineRun[Any]]:
    engine = pipe._new_run(source, with_outputs=True)  # pyright: ignore[reportPrivateUsage]
    run = new_run(engine)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.main)
            try:
                yield run
            except BaseException:
                engine.cancel()
                raise
            nursery.start_soon(
                engine.discard_outputs, name=f"pipeline {engine.name}, unread outputs"
            )
    except BaseExceptionGroup as group:
        # The run's own tasks never raise (failures are kept), so a group
        # here holds the block's exception. Alone, give it back unwrapped, as
        # a user of a context manager expects; with the run's own failure,
        # raise both, as a nursery would.
        failure = engine.failure()
        if failure is not None:
            raise BaseExceptionGroup(
                f"pipeline {engine.name!r} failed, and the body of open() raised",
                [*engine.failures, *group.exceptions],
            ) from None
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    engine.raise_failure()
