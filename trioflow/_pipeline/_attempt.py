"""How a stage calls its function on one item: a chain of small named layers.

One *attempt* goes, outermost first, through::

    rate limit -> limiter hold -> timeout -> executor (the call itself)

and :func:`call_with_retries` repeats attempts per ``retry=``, sleeping
between them with no rate token and no limiter token held. The chain is
built once per stage and run (:func:`build_attempt`), so the per-item path
has no configuration branches; a layer that is not configured is not in
the chain at all.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._admission._protocol import Limiter, Pacer, PermitLimiter
from ._retry import Retry
from ._spec import StageSpec

if TYPE_CHECKING:
    import trio_parallel  # pyright: ignore[reportMissingTypeStubs]

__all__ = ["AwaitableReturned", "build_attempt", "call_with_retries", "duration_clock"]

#: One attempt: ``await attempt(payload)`` gives the function's result or raises.
Attempt = Callable[[object], Awaitable[Any]]


class AwaitableReturned(TypeError):
    """A stage function returned an awaitable where a value was expected (a bug, never retried)."""


def duration_clock() -> Callable[[], float]:
    """A clock for *durations* (busy time, latency) that agrees with trio's clock.

    With trio's default clock (``perf_counter() + offset``) the offset cancels
    out of every difference, so read ``perf_counter`` directly: one call per
    read instead of three. Any other clock (a ``MockClock``) is used as it is.
    """
    clock = trio.lowlevel.current_clock()
    kind = type(clock)
    if kind.__name__ == "SystemClock" and kind.__module__.startswith("trio."):
        return time.perf_counter
    return clock.current_time


def _refuse_awaitable(result: object, stage: str, fn: object) -> None:
    """Raise :class:`AwaitableReturned` if a sync function gave an awaitable (and close it)."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited" warning on top of the error
        raise AwaitableReturned(
            f"stage {stage!r}: {fn!r} returned an awaitable ({type(result).__name__}) where a "
            "value was expected; make the function itself 'async def' (a lambda or a sync "
            "function that calls an async one returns an un-awaited coroutine)"
        )


# -- the innermost layer: how the function runs ----------------------------------------


def _sync_predicate(fn: Callable[[object], Any], stage: str) -> Attempt:
    """A sync ``filter`` predicate, called in the worker task."""

    async def call_predicate(payload: object) -> Any:
        result = fn(payload)
        if result is not True and result is not False:
            _refuse_awaitable(result, stage, fn)
        return result

    return call_predicate


def _checked_async(fn: Callable[[object], Awaitable[Any]], stage: str) -> Attempt:
    """An async ``filter`` predicate: its result is a truth value, never an awaitable."""

    async def call_predicate(payload: object) -> Any:
        result = await fn(payload)
        if result is not True and result is not False:
            _refuse_awaitable(result, stage, fn)
        return result

    return call_predicate


def _boxed(fn: Callable[[object], Any], payload: object, started: list[bool]) -> tuple[Any]:
    """Run ``fn`` in the thread; the result boxed, so that an awaitable reaches our own check."""
    started.append(True)
    return (fn(payload),)


def _in_thread(fn: Callable[[object], Any], stage: str, abandoned: Callable[[], None]) -> Attempt:
    """``executor="thread"``: the function runs in a worker thread.

    Cancellation (the grace ran out, the run or its caller was cancelled)
    *abandons* the thread: the attempt ends at once, the thread runs on to
    its end in the background and its result is discarded (counted by
    ``abandoned``). A stage ``timeout=`` does not abandon (see :func:`_timed_thread`).
    """

    async def call_in_thread(payload: object) -> Any:
        started: list[bool] = []
        try:
            (result,) = await trio.to_thread.run_sync(
                _boxed, fn, payload, started, abandon_on_cancel=True
            )
        except trio.Cancelled:
            if started:  # the function runs on in its thread (else it never started)
                abandoned()
            raise
        _refuse_awaitable(result, stage, fn)
        return result

    return call_in_thread


def _in_process(
    fn: Callable[[object], Any], stage: str, context: Callable[[], trio_parallel.WorkerContext]
) -> Attempt:
    """``executor="process"``: the function runs in a worker process of the run's pool."""

    async def call_in_process(payload: object) -> Any:
        result = await context().run_sync(fn, payload, kill_on_cancel=True)  # pyright: ignore[reportUnknownMemberType]
        _refuse_awaitable(result, stage, fn)
        return result

    return call_in_process


# -- the outer layers -----------------------------------------------------------------


def _timed(inner: Attempt, timeout: float) -> Attempt:
    """``timeout=``: the attempt raises :class:`trio.TooSlowError` after ``timeout`` seconds."""

    async def timed(payload: object) -> Any:
        with trio.fail_after(timeout):
            return await inner(payload)

    return timed


def _timed_thread(inner: Attempt, timeout: float) -> Attempt:
    """``timeout=`` on a thread stage: a thread cannot be interrupted, so the attempt waits for
    it and raises :class:`trio.TooSlowError` (discarding the result) if it took longer.

    The limiter token is held until the thread returns, so a timed-out thread
    never lets another attempt past the limit.
    """

    async def timed_thread(payload: object) -> Any:
        start = trio.current_time()
        result = await inner(payload)
        if trio.current_time() - start > timeout:
            raise trio.TooSlowError
        return result

    return timed_thread


def _limited(inner: Attempt, limiter: Limiter) -> Attempt:
    """``limiter=``: each attempt holds one token (an adaptive limiter samples the attempt)."""
    if not isinstance(limiter, PermitLimiter):  # trio.CapacityLimiter, say: no hold()

        async def limited_plain(payload: object) -> Any:
            async with limiter:
                return await inner(payload)

        return limited_plain

    async def limited(payload: object) -> Any:
        # The timeout scope is INSIDE the hold, so a TooSlowError leaves the
        # hold as an overload sample for an adaptive limiter.
        async with limiter.hold():
            return await inner(payload)

    return limited


def _rate_limited(inner: Attempt, rate: Pacer) -> Attempt:
    """``rate=``: each attempt takes one token first, before the limiter."""

    async def rate_limited(payload: object) -> Any:
        # Rate first, then the limiter: a worker waiting for a rate token
        # holds no limiter token (the limiter's latency samples stay clean);
        # the price is that a token may be spent while the worker then waits
        # for the limiter, so the real rate is at most the configured one.
        await rate.acquire()
        return await inner(payload)

    return rate_limited


def build_attempt(
    spec: StageSpec,
    process_context: Callable[[], trio_parallel.WorkerContext],
    abandoned: Callable[[], None],
) -> Attempt:
    """The one-attempt chain for ``spec``, built once per run (outermost layer first:
    rate, limiter, timeout, executor)."""
    fn: Any = spec.fn
    assert fn is not None
    if spec.executor == "thread":
        call = _in_thread(fn, spec.name, abandoned)
    elif spec.executor == "process":
        call = _in_process(fn, spec.name, process_context)
    elif not spec.is_async:  # a sync filter predicate
        call = _sync_predicate(fn, spec.name)
    elif spec.kind == "filter":
        call = _checked_async(fn, spec.name)
    else:
        call = fn
    if spec.timeout is not None:
        call = (_timed_thread if spec.executor == "thread" else _timed)(call, spec.timeout)
    if spec.limiter is not None:
        call = _limited(call, spec.limiter)
    if spec.rate is not None:
        call = _rate_limited(call, spec.rate)
    return call


async def call_with_retries(
    attempt: Attempt,
    retry: Retry,
    payload: object,
    on_retry: Callable[[int, Exception, float], None],
    set_state: Callable[[str], None],
) -> Any:
    """``await attempt(payload)`` up to ``retry.attempts`` times; raise the last failure.

    Between attempts: ``on_retry(attempt, exc, delay)`` (counts, span event),
    then a cancellable backoff sleep holding nothing. A bug in the stage
    function (:class:`AwaitableReturned`) and cancellation are never retried.
    """
    n = 1
    while True:
        try:
            return await attempt(payload)
        except AwaitableReturned:
            raise
        except Exception as exc:
            if n >= retry.attempts or not retry.retries(exc):
                raise
            delay = retry.backoff.delay(n)
            on_retry(n, exc, delay)
            n += 1
            if delay > 0:
                set_state("backoff")
                await trio.sleep(delay)
                set_state("running")
