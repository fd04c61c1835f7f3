"""amap and run_all: run one async function over many items with a fixed set of workers."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast, final, overload

import attrs
import outcome
import trio

from .. import _registry
from .._admission._protocol import Limiter, Pacer, PermitLimiter, check_limiter, check_pacer
from .._admission._rate import RateLimiter
from .._pipeline._retry import Retry
from .._util import check_positive_number, raise_type

__all__ = ["AmapResults", "AmapStatistics", "amap", "check_async_fn", "run_all"]

T = TypeVar("T")
R = TypeVar("R")

_MISSING: Any = object()

#: A worker handing over results, or the consumer taking them, skips the
#: yield to the scheduler while the results channel can go on at once, but
#: not more than this many times in a row. Yielding once per result made
#: every result cost a full pass of Trio's run loop (an I/O poll included);
#: taking up to a buffer-full per pass cuts that while still letting other
#: tasks run at least every _FAIR_EVERY results. Every step stays a
#: cancellation point.
_FAIR_EVERY = 16


async def _send(channel: trio.MemorySendChannel[Any], message: object, streak: int) -> int:
    """Send ``message``; returns the new count of sends in a row that did not yield.

    Always a cancellation point; a schedule point when it must wait or
    after _FAIR_EVERY sends in a row that did not.
    """
    if streak < _FAIR_EVERY:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            channel.send_nowait(message)
        except trio.WouldBlock:
            pass
        else:
            return streak + 1
    await channel.send(message)
    return 0


async def _receive(channel: trio.MemoryReceiveChannel[Any], streak: int) -> tuple[Any, int]:
    """Receive a message (as :func:`_send` does, the other way): ``(message, new streak)``."""
    if streak < _FAIR_EVERY:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return channel.receive_nowait(), streak + 1
        except trio.WouldBlock:
            pass
    return await channel.receive(), 0


def _check_max_at_once(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise_type("max_at_once", "an int or None", value)
    if value < 1:
        raise ValueError(f"max_at_once must be >= 1, got {value!r}")
    return value


def _check_max_per_second(value: object) -> float | None:
    if value is None:
        return None
    return check_positive_number(value, "max_per_second")


def check_async_fn(fn: object, param: str = "fn") -> None:
    """``fn`` is an async function: checked at the call that takes it, not in a worker.

    Accepted: ``async def`` functions and methods, :func:`functools.partial`
    of one, decorated ones (``functools.wraps``), objects with ``async def
    __call__``, and lambdas (``lambda: fetch(url)`` returns a coroutine, as
    trio's ``start_soon`` accepts). Refused with :exc:`TypeError` naming
    ``param``: what is not callable, async generator functions, classes, and
    plain ``def`` functions, methods and builtins.
    """
    if not callable(fn):
        raise_type(param, "an async function", fn)
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func  # pyright: ignore[reportUnknownMemberType]
    target = inspect.unwrap(target)
    if inspect.isasyncgenfunction(target):
        raise TypeError(
            f"{param} must be an async function that returns a result, got {fn!r}, "
            "an async generator function"
        )
    if inspect.iscoroutinefunction(target):
        return
    if inspect.isfunction(target) and target.__name__ == "<lambda>":
        return  # a lambda that returns a coroutine; what it returns is seen when it runs
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target):
        raise TypeError(f"{param} must be an async function (async def), got {fn!r}")
    if inspect.isclass(target):
        raise TypeError(f"{param} must be an async function, got the class {fn!r}")
    call = inspect.getattr_static(type(cast(object, target)), "__call__", None)
    if inspect.isfunction(call) and not inspect.iscoroutinefunction(call):
        raise TypeError(f"{param} must be an async function, got {fn!r}, whose __call__ is sync")


def _check_retry(value: object) -> Retry | None:
    if value is not None and not isinstance(value, Retry):
        raise_type("retry", "a tf.Retry or None", value)
    return value


@final
@attrs.frozen
class AmapStatistics:
    """A snapshot of one :func:`amap` run, from :meth:`AmapResults.statistics`."""

    workers: int
    """Workers started so far (at most ``max_at_once``)."""

    running: int
    """Calls of ``fn`` in progress now (waiting for a retry's backoff included)."""

    items_read: int
    """Items taken from the source so far."""

    results_ready: int
    """Results finished and not yet taken by ``async for`` (the reorder buffer included)."""

    retried: int
    """Attempts beyond the first, so far (with ``retry=``)."""


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@final
class AmapResults(Generic[R], AsyncIterator[R]):
    """The async iterator :func:`amap` yields: ``async for r in results:``.

    ``__anext__`` waits for the next result. It is always a cancellation
    point (a cancelled step takes nothing: no result is lost), and a full
    checkpoint whenever it waits; a result that is already there is handed
    over without a trip through the scheduler, but not more than 16 times
    in a row, so a busy consumer still lets other tasks run. (Yielding on
    every result made each one cost a whole pass of Trio's run loop, about
    three times as much per item: ``bench/tasks.py``.) Can be iterated once,
    inside the ``async with`` block only.
    """

    __slots__ = ("_map",)

    def __init__(self, map_: _Amap[Any, R]) -> None:
        self._map = map_

    def __aiter__(self) -> AmapResults[R]:
        return self

    async def __anext__(self) -> R:
        return await self._map.next_result()

    def statistics(self) -> AmapStatistics:
        """A snapshot of the run (plain reads; safe from any thread)."""
        return self._map.statistics()

    def __repr__(self) -> str:
        return f"<trioflow.AmapResults of {self._map!r}>"


class _Amap(Generic[T, R]):
    """The context manager behind :func:`amap`. One nursery; workers pull items.

    Shape (chosen because a task per item costs about 5× a channel hop):

    * a sync iterable is pulled directly by the workers (``next()`` cannot
      interleave in Trio, so it needs no lock and no feeder task);
    * an async iterable is read by one feeder task (an async generator must
      not be stepped from several tasks) into an unbuffered channel the
      workers receive from;
    * workers are started lazily, one more each time a worker takes an item,
      up to ``max_at_once``, so three items never start fifty workers;
    * results go to the consumer through a channel buffered to the number of
      workers; with ``ordered=True`` a window of ``2 × max_at_once`` slots,
      taken before an item is read and given back when its result is
      yielded, bounds the reorder buffer and the read-ahead.
    """

    __slots__ = (
        "_aiter",
        "_alive",
        "_buckets",
        "_exhausted",
        "_fn",
        "_idle",
        "_in_recv",
        "_index",
        "_indexed",
        "_items",
        "_iter",
        "_limiter",
        "_max",
        "_next_out",
        "_nursery",
        "_nursery_cm",
        "_ordered",
        "_out_recv",
        "_out_send",
        "_outcomes",
        "_pending",
        "_permits",
        "_rate",
        "_read",
        "_retried",
        "_retry",
        "_state",
        "_streak",
        "_window",
        "_workers",
    )

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        max_at_once: object,
        max_per_second: object,
        ordered: object,
        outcomes: object,
        limiter: object = None,
        rate: object = None,
        retry: object = None,
        indexed: bool = False,
    ) -> None:
        check_async_fn(fn)
        if not (hasattr(items, "__aiter__") or hasattr(items, "__iter__")):
            raise_type("items", "an iterable or an async iterable", items)
        if not isinstance(ordered, bool):
            raise_type("ordered", "a bool", ordered)
        if not isinstance(outcomes, bool):
            raise_type("outcomes", "a bool", outcomes)
        self._fn = fn
        self._items = items
        self._max = _check_max_at_once(max_at_once)
        per_second = _check_max_per_second(max_per_second)
        self._rate: Pacer | None = None
        if per_second is not None:
            # burst=1: starts are spaced at least 1/rate apart, never bunched
            self._rate = RateLimiter(per_second, burst=1, name=f"amap {self._fn_name()}")
        self._limiter: Limiter | None = (
            None if limiter is None else check_limiter(limiter, "limiter")
        )
        shared = check_pacer(rate, "rate")
        #: every bucket an attempt takes a token from, in order (own pace, then shared)
        self._buckets: tuple[Pacer, ...] = tuple(b for b in (self._rate, shared) if b is not None)
        #: the limiter has hold(): attempts are samples for an adaptive limit
        self._permits = isinstance(self._limiter, PermitLimiter)
        self._retry: Retry | None = _check_retry(retry)
        self._retried = 0
        self._read = 0
        self._ordered = ordered
        self._outcomes = outcomes
        self._indexed = indexed
        self._iter: Iterator[T] | None = None
        self._aiter: AsyncIterator[T] | None = None
        self._in_recv: trio.MemoryReceiveChannel[tuple[int, T]] | None = None
        self._exhausted = False
        self._index = 0
        self._workers = 0
        self._alive = 0
        #: workers not inside fn: looking for an item, waiting for a token,
        #: or started and not yet running
        self._idle = 0
        self._window: trio.Semaphore | None = None
        self._pending: dict[int, Any] = {}
        self._next_out = 0
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._state = "new"
        self._streak = 0

    async def __aenter__(self) -> AmapResults[R]:
        if self._state != "new":
            raise RuntimeError("an amap() context can be entered only once")
        self._state = "open"
        limit = self._max
        # Dumps name what a task parked inside amap waits on after the call:
        # ``channel receive 'amap of fetch: results'``.
        what = f"amap of {self._fn_name()}"
        if self._ordered and limit is not None:
            self._window = trio.Semaphore(2 * limit)
            _registry.label(self._window, f"{what}: order window")
        buffer = math.inf if limit is None else limit
        self._out_send, self._out_recv = trio.open_memory_channel[Any](buffer)
        _registry.label(self._out_recv, f"{what}: results")
        items = self._items
        self._nursery_cm = trio.open_nursery()
        nursery: trio.Nursery = await self._nursery_cm.__aenter__()
        self._nursery = nursery
        if hasattr(items, "__aiter__"):
            self._aiter = aiter(items)  # pyright: ignore[reportArgumentType]
            in_send, self._in_recv = trio.open_memory_channel[tuple[int, T]](0)
            _registry.label(in_send, f"{what}: inputs")
            _registry.label(self._in_recv, f"{what}: inputs")
            nursery.start_soon(self._feeder, in_send, name=f"amap feeder of {self._fn_name()}")
        else:
            self._iter = iter(items)  # pyright: ignore[reportArgumentType, reportCallIssue, reportUnknownVariableType]
        self._workers = self._alive = self._idle = 1
        nursery.start_soon(self._worker, self._results_end(), name=self._worker_name())
        return AmapResults(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Leaving the block means the caller wants no more results: whatever
        # is still running or unread is cancelled, never waited for.
        self._state = "closed"
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return await self._nursery_cm.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]
        finally:
            self._nursery = None
            self._out_recv.close()

    def __aiter__(self) -> NoReturn:
        # ``async for r in tf.amap(...)``: say what to write instead of
        # Python's "'async for' requires an object with __aiter__".
        raise TypeError(
            "amap() gives an async context manager, not an iterator: write "
            "'async with tf.amap(fn, items) as results:' and then 'async for r in results:' "
            "(the block bounds the workers' lifetime)"
        )

    def statistics(self) -> AmapStatistics:
        """A snapshot of the run (plain reads; safe from any thread)."""
        recv = self._out_recv if self._state != "new" else None
        ready = 0 if recv is None else recv.statistics().current_buffer_used
        return AmapStatistics(
            workers=self._workers,
            running=max(0, self._alive - self._idle),
            items_read=self._read,
            results_ready=ready + len(self._pending),
            retried=self._retried,
        )

    def _fn_name(self) -> str:
        return getattr(self._fn, "__qualname__", None) or repr(self._fn)

    def _worker_name(self) -> str:
        return f"amap worker of {self._fn_name()}"

    def _results_end(self) -> trio.MemorySendChannel[Any]:
        """A worker's own clone of the results channel, labelled for dumps."""
        end = self._out_send.clone()
        _registry.label(end, f"amap of {self._fn_name()}: results")
        return end

    # -- producing ---------------------------------------------------------

    async def _feeder(self, in_send: trio.MemorySendChannel[tuple[int, T]]) -> None:
        source = self._aiter
        assert source is not None
        window = self._window
        try:
            with in_send:
                index = streak = 0
                while True:
                    if window is not None:
                        await window.acquire()
                    try:
                        item = await source.__anext__()
                    except StopAsyncIteration:
                        return
                    streak = await _send(in_send, (index, item), streak)
                    index += 1
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                # We made this iterator, so we close it (an async generator's
                # finally blocks then run here, not in the garbage collector).
                # Not shielded: as anywhere in Trio, cleanup that awaits
                # while the feeder is being cancelled is cancelled too, rather
                # than holding up the exit for as long as it likes.
                await aclose()

    def _grow(self) -> None:
        """One more worker, if the limit allows: called when the last idle worker gets busy."""
        if (self._max is None or self._workers < self._max) and not self._exhausted:
            self._workers += 1
            self._alive += 1
            self._idle += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._worker, self._results_end(), name=self._worker_name())

    async def _worker(self, out: trio.MemorySendChannel[Any]) -> None:
        # A plain "with": aclose() would checkpoint, and a Cancelled raised
        # there would replace an error this worker is raising.
        with out:
            try:
                await self._work(out)
            finally:
                # Every worker sends on its own clone; the original stays open
                # (for _grow to clone) until the last worker is gone, and only
                # then can the consumer see the end of the results.
                self._alive -= 1
                if not self._alive:
                    self._out_send.close()

    async def _work(self, out: trio.MemorySendChannel[Any]) -> None:
        fn = self._fn
        # the one bucket of a plain call (max_per_second's, or a shared rate)
        rate = self._buckets[0] if self._buckets else None
        window = self._window
        ordered = self._ordered or self._indexed
        outcomes = self._outcomes
        sync_source = self._iter
        in_recv = self._in_recv
        # No shared limiter, shared rate or retry: the call is just fn(item).
        plain = self._limiter is None and self._retry is None and len(self._buckets) <= 1
        busy = False
        streak = in_streak = 0

        def started() -> None:
            # Busy now. Grow only when nobody else is idle: a worker still
            # looking for an item or waiting for a token will take the next
            # one, so an extra worker would only pile up behind it.
            nonlocal busy
            if not busy:
                busy = True
                self._idle -= 1
                if not self._idle:
                    self._grow()

        try:
            while True:
                if sync_source is not None:
                    if self._exhausted:
                        return
                    if window is not None:
                        # no checkpoint needed here: out.send() below is one
                        try:
                            window.acquire_nowait()
                        except trio.WouldBlock:
                            await window.acquire()
                    try:
                        item = next(sync_source)
                    except StopIteration:
                        self._exhausted = True
                        if window is not None:
                            window.release()
                        return
                    index = self._index
                    self._index = index + 1
                else:
                    assert in_recv is not None
                    try:
                        (index, item), in_streak = await _receive(in_recv, in_streak)
                    except trio.EndOfChannel:
                        self._exhausted = True
                        return
                self._read += 1
                try:
                    if plain:
                        if rate is not None and not rate.try_acquire():
                            await rate.acquire()
                        started()
                        value: Any = await fn(item)
                    else:
                        value = await self._attempts(item, started)
                    if outcomes:
                        value = outcome.Value(value)
                except Exception as exc:
                    if not outcomes:
                        exc.add_note(f"raised by amap's fn for item {index}: {_short_repr(item)}")
                        raise
                    value = outcome.Error(exc)
                if outcomes and not self._indexed:
                    value = (item, value)
                streak = await _send(out, (index, value) if ordered else value, streak)
                busy = False
                self._idle += 1
        finally:
            if not busy:
                self._idle -= 1

    async def _attempts(self, item: Any, started: Callable[[], None]) -> Any:
        """Every attempt at one item: rate tokens, then a limiter token, then ``fn``; retries.

        Each attempt takes its own tokens (so the rate paces attempts, not
        items) and holds the limiter token only while ``fn`` runs: between
        attempts, during the backoff sleep, nothing is held. With a
        :class:`~trioflow.PermitLimiter` the attempt is a ``hold()`` block,
        so an adaptive limiter learns from it (an overload exception is a drop).
        """
        fn = self._fn
        limiter = self._limiter
        retry = self._retry
        attempt = 1
        while True:
            for bucket in self._buckets:
                if not bucket.try_acquire():
                    await bucket.acquire()
            try:
                if limiter is None:
                    started()
                    return await fn(item)
                if self._permits:
                    async with limiter.hold():  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                        started()
                        return await fn(item)
                async with limiter:
                    started()
                    return await fn(item)
            except Exception as exc:
                if retry is None or attempt >= retry.attempts or not retry.retries(exc):
                    raise
            started()  # busy through the backoff: it holds an item
            await trio.sleep(retry.backoff.delay(attempt))
            attempt += 1
            self._retried += 1

    # -- consuming -----------------------------------------------------------

    async def _receive(self) -> Any:
        value, self._streak = await _receive(self._out_recv, self._streak)
        return value

    async def next_result(self) -> Any:
        if self._state != "open":
            raise RuntimeError("amap() results can be read only inside its 'async with' block")
        if not self._ordered:
            try:
                return await self._receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
        pending = self._pending
        want = self._next_out
        while want not in pending:
            try:
                index, value = await self._receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
            pending[index] = value
        self._next_out = want + 1
        if self._window is not None:
            self._window.release()
        return pending.pop(want)

    def __repr__(self) -> str:
        limit = "unlimited" if self._max is None else f"max_at_once={self._max}"
        return f"<amap of {self._fn_name()}, {limit}, {self._workers} workers, {self._state}>"


@overload
def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    ordered: bool = False,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: Literal[False] = False,
) -> _Amap[T, R]: ...


@overload
def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    ordered: bool = False,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: Literal[True],
) -> _Amap[T, tuple[T, outcome.Outcome[R]]]: ...


def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    ordered: bool = False,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: bool = False,
) -> _Amap[T, Any]:
    """Run ``await fn(item)`` for every item, a bounded number at once, and yield the results.

    Picture a fixed crew of ``max_at_once`` workers at a conveyor belt:
    each takes the next item when its hands are free, so the source is read
    only as fast as the crew can work (a generator that never ends is fine,
    as long as you stop reading)::

        async with tf.amap(fetch, urls, max_at_once=10, max_per_second=50) as results:
            async for page in results:
                ...

    Results come in the order they finish; with ``ordered=True``, in the
    order of ``items``, held in a reorder buffer of at most
    ``2 × max_at_once`` results (a slow item stalls the crew rather than
    letting the buffer grow).

    Errors: by default the first exception from ``fn`` cancels everything
    and comes out of the ``async with`` (in an :class:`ExceptionGroup`, as
    from any Trio nursery), with a note naming the item. With
    ``outcomes=True`` nothing is cancelled: each result is a pair
    ``(item, outcome)`` whose :class:`outcome.Outcome` you ``.unwrap()``
    (its value, or it raises what ``fn`` raised), in the style of
    ``gather(return_exceptions=True)``. Errors from the source itself
    always propagate.

    Leaving the ``async with`` block cancels whatever is still running or
    unread, so breaking out of the loop early is the way to stop. Each
    step of ``async for`` is a cancellation point, and a checkpoint when it
    waits (see :class:`AmapResults` for the fast path).

    Args:
      fn: an async function of one argument.
      items: an iterable or an async iterable, read lazily. A sync iterable
        is read in the event loop, so it must not block.
      max_at_once: how many calls of ``fn`` may run at once (a positive
        int), or ``None`` for no limit (the source is then read as fast as
        it yields: bound it for an endless source).
      max_per_second: how many calls may *start* per second (a positive
        number; calls start at least ``1 / max_per_second`` apart), or ``None``.
      ordered: yield results in the order of ``items``.
      limiter: any :class:`~trioflow.Limiter` (a lane handle gives these calls
        its priority; a :class:`trio.CapacityLimiter` works too), shared
        with whatever else uses it: each call of ``fn`` holds one token
        while it runs (as a ``hold()`` block when the limiter has one, so an
        adaptive limiter learns from it).
      rate: a rate limiter (any :class:`~trioflow.Pacer`: a
        :class:`~trioflow.RateLimiter`, or a
        :class:`~trioflow.redis.RedisRateLimiter` shared by replicas)
        shared with other blocks: each
        call takes one token before it starts (after ``max_per_second``'s).
      retry: a :class:`~trioflow.Retry`: a call that raises one of its
        ``retry_on`` exceptions is tried again, up to ``attempts`` in all,
        after its backoff; every attempt takes its own rate tokens and
        limiter token, and none is held between attempts. The last
        attempt's exception is what counts (raised, or its outcome).
      outcomes: yield ``(item, outcome.Outcome)`` pairs instead of raising.

    Returns:
      An async context manager; entering it gives an :class:`AmapResults`.

    Raises:
      TypeError / ValueError: at this call, for a bad argument (``fn`` that
        is not an async function included).

    Cost: a few microseconds per item, several times less than
    ``aiometer.amap``; an async source adds one channel hop
    (``bench/tasks.py``, ``docs/benchmarks/tasks.md``).
    """
    return _Amap(
        fn,
        items,
        max_at_once=max_at_once,
        max_per_second=max_per_second,
        ordered=ordered,
        outcomes=outcomes,
        limiter=limiter,
        rate=rate,
        retry=retry,
    )


async def _call(fn: Callable[[], Awaitable[R]]) -> R:
    return await fn()


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: Literal[False] = False,
) -> list[R]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: Literal[True],
) -> list[outcome.Outcome[R]]: ...


async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    limiter: Limiter | None = None,
    rate: Pacer | None = None,
    retry: Retry | None = None,
    outcomes: bool = False,
) -> list[Any]:
    """Call every ``fn()`` (a bounded number at once) and return their results in order.

    ``await tf.run_all([partial(fetch, u) for u in urls], max_at_once=10)``
    is :func:`amap` collected into a list: ``results[i]`` is what
    ``fns[i]()`` returned. The first exception cancels the rest and
    propagates (in an :class:`ExceptionGroup`); with ``outcomes=True`` every
    call runs and the list holds :class:`outcome.Outcome` objects instead.

    ``limiter=``, ``rate=`` and ``retry=`` work as for :func:`amap`: each
    call holds a token of ``limiter`` while it runs, takes a token of
    ``rate`` before it starts, and is retried by ``retry``.

    A checkpoint (even for an empty list). Cancelling it cancels every call.

    Raises:
      TypeError: if ``fns`` is not an iterable of async functions (naming
        the first one that is not), or another argument has the wrong type.
      ValueError: for ``max_at_once`` below 1 or ``max_per_second`` not > 0.
    """
    if not hasattr(fns, "__iter__"):
        raise_type("fns", "an iterable of async functions", fns)
    calls = list(fns)
    for i, fn in enumerate(calls):
        check_async_fn(fn, f"fns[{i}]")
    results: list[Any] = [_MISSING] * len(calls)
    async with _Amap(
        _call,
        calls,
        max_at_once=max_at_once,
        max_per_second=max_per_second,
        ordered=False,
        outcomes=outcomes,
        limiter=limiter,
        rate=rate,
        retry=retry,
        indexed=True,
    ) as pairs:
        async for pair in pairs:
            index, value = pair  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
            results[index] = value
    return results
