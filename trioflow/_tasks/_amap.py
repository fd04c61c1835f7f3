"""amap and run_all: run one async function over many items with a fixed set of workers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, final, overload

import outcome
import trio

from .._admission._rate import RateLimiter
from .._util import check_positive_number, raise_type

__all__ = ["AmapResults", "amap", "run_all"]

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
    every result made each one cost a whole pass of Trio's run loop: 15 µs
    against 5 µs per item in ``bench/tasks.py``.) Can be iterated once,
    inside the ``async with`` block only.
    """

    __slots__ = ("_map",)

    def __init__(self, map_: _Amap[Any, R]) -> None:
        self._map = map_

    def __aiter__(self) -> AmapResults[R]:
        return self

    async def __anext__(self) -> R:
        return await self._map.next_result()

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
        "_exhausted",
        "_fn",
        "_idle",
        "_in_recv",
        "_index",
        "_indexed",
        "_items",
        "_iter",
        "_max",
        "_next_out",
        "_nursery",
        "_nursery_cm",
        "_ordered",
        "_out_recv",
        "_out_send",
        "_outcomes",
        "_pending",
        "_rate",
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
        indexed: bool = False,
    ) -> None:
        if not callable(fn):
            raise_type("fn", "an async function", fn)
        if not (hasattr(items, "__aiter__") or hasattr(items, "__iter__")):
            raise_type("items", "an iterable or an async iterable", items)
        if not isinstance(ordered, bool):
            raise_type("ordered", "a bool", ordered)
        if not isinstance(outcomes, bool):
            raise_type("outcomes", "a bool", outcomes)
        self._fn = fn
        self._items = items
        self._max = _check_max_at_once(max_at_once)
        rate = _check_max_per_second(max_per_second)
        self._rate: RateLimiter | None = None
        if rate is not None:
            # burst=1: starts are spaced at least 1/rate apart, never bunched
            self._rate = RateLimiter(rate, burst=1, name=f"amap {self._fn_name()}")
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
        if self._ordered and limit is not None:
            self._window = trio.Semaphore(2 * limit)
        buffer = math.inf if limit is None else limit
        self._out_send, self._out_recv = trio.open_memory_channel[Any](buffer)
        items = self._items
        self._nursery_cm = trio.open_nursery()
        nursery: trio.Nursery = await self._nursery_cm.__aenter__()
        self._nursery = nursery
        if hasattr(items, "__aiter__"):
            self._aiter = aiter(items)  # pyright: ignore[reportArgumentType]
            in_send, self._in_recv = trio.open_memory_channel[tuple[int, T]](0)
            nursery.start_soon(self._feeder, in_send, name=f"amap feeder of {self._fn_name()}")
        else:
            self._iter = iter(items)  # pyright: ignore[reportArgumentType, reportCallIssue, reportUnknownVariableType]
        self._workers = self._alive = self._idle = 1
        nursery.start_soon(self._worker, self._out_send.clone(), name=self._worker_name())
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

    def _fn_name(self) -> str:
        return getattr(self._fn, "__qualname__", None) or repr(self._fn)

    def _worker_name(self) -> str:
        return f"amap worker of {self._fn_name()}"

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
            self._nursery.start_soon(self._worker, self._out_send.clone(), name=self._worker_name())

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
        rate = self._rate
        window = self._window
        ordered = self._ordered or self._indexed
        outcomes = self._outcomes
        sync_source = self._iter
        in_recv = self._in_recv
        idle = True
        streak = in_streak = 0
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
                if rate is not None and not rate.try_acquire():
                    await rate.acquire()
                # Busy now. Grow only when nobody else is idle: a worker still
                # looking for an item or waiting for a rate token will take the
                # next one, so an extra worker would only pile up behind it.
                idle = False
                self._idle -= 1
                if not self._idle:
                    self._grow()
                if outcomes:
                    try:
                        value: Any = outcome.Value(await fn(item))
                    except Exception as exc:
                        value = outcome.Error(exc)
                    value = value if self._indexed else (item, value)
                else:
                    try:
                        value = await fn(item)
                    except Exception as exc:
                        exc.add_note(f"raised by amap's fn for item {index}: {_short_repr(item)}")
                        raise
                streak = await _send(out, (index, value) if ordered else value, streak)
                idle = True
                self._idle += 1
        finally:
            if idle:
                self._idle -= 1

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
    outcomes: Literal[True],
) -> _Amap[T, tuple[T, outcome.Outcome[R]]]: ...


def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    ordered: bool = False,
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
      outcomes: yield ``(item, outcome.Outcome)`` pairs instead of raising.

    Returns:
      An async context manager; entering it gives an :class:`AmapResults`.

    Raises:
      TypeError / ValueError: at this call, for a bad argument.

    Cost: about 5–7 µs per item with 10 workers, 5.7–9.3× less than
    ``aiometer.amap`` on the same run (``bench/tasks.py``,
    ``docs/benchmarks/``); an async source adds one hop (13–16 µs in all).
    """
    return _Amap(
        fn,
        items,
        max_at_once=max_at_once,
        max_per_second=max_per_second,
        ordered=ordered,
        outcomes=outcomes,
    )


async def _call(fn: Callable[[], Awaitable[R]]) -> R:
    return await fn()


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    outcomes: Literal[False] = False,
) -> list[R]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    outcomes: Literal[True],
) -> list[outcome.Outcome[R]]: ...


async def run_all(
    fns: Iterable[Callable[[], Awaitable[R]]],
    *,
    max_at_once: int | None = None,
    max_per_second: float | None = None,
    outcomes: bool = False,
) -> list[Any]:
    """Call every ``fn()`` (a bounded number at once) and return their results in order.

    ``await tf.run_all([partial(fetch, u) for u in urls], max_at_once=10)``
    is :func:`amap` collected into a list: ``results[i]`` is what
    ``fns[i]()`` returned. The first exception cancels the rest and
    propagates (in an :class:`ExceptionGroup`); with ``outcomes=True`` every
    call runs and the list holds :class:`outcome.Outcome` objects instead.

    A checkpoint (even for an empty list). Cancelling it cancels every call.

    Raises:
      TypeError: if ``fns`` is not an iterable of callables (naming the
        first one that is not), or another argument has the wrong type.
      ValueError: for ``max_at_once`` below 1 or ``max_per_second`` not > 0.
    """
    if not hasattr(fns, "__iter__"):
        raise_type("fns", "an iterable of async functions", fns)
    calls = list(fns)
    for i, fn in enumerate(calls):
        if not callable(fn):
            raise_type(f"fns[{i}]", "an async function", fn)
    results: list[Any] = [_MISSING] * len(calls)
    async with _Amap(
        _call,
        calls,
        max_at_once=max_at_once,
        max_per_second=max_per_second,
        ordered=False,
        outcomes=outcomes,
        indexed=True,
    ) as pairs:
        async for pair in pairs:
            index, value = pair  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
            results[index] = value
    return results
