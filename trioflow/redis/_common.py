"""What every Redis-backed primitive shares: bounded calls, failure errors, parking.

Three pieces live here once:

* :func:`call` runs one Redis command or script under a timeout and turns
  every way it can fail (refused, reset, timed out, server error) into one
  :exc:`RedisUnavailableError`, so each primitive has one failure path.
* :func:`park` puts the current task to sleep with a :class:`Parked` record
  in ``task.custom_sleep_data`` — the slot trioflow's admission kernel uses —
  so a task dump says "waiting on redis_limiter 'db'" for a task waiting on
  a global limit, exactly as for a local one.
* :func:`wake` reschedules a parked task (the pub/sub listener of a global
  limiter calls it).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar

import trio
from trio.lowlevel import Task

from .._registry import Inspectable

__all__ = [
    "LeaseLostError",
    "Parked",
    "RedisUnavailableError",
    "call",
    "check_on_unavailable",
    "check_timeout",
    "park",
    "serving",
    "wake",
]

T = TypeVar("T")

OnUnavailable = Literal["raise", "allow"]


class RedisUnavailableError(Exception):
    """Redis did not answer a trioflow call in time, refused it, or failed it.

    Raised by the global limiters and the stream source when a call to Redis
    fails (connection refused or reset, no answer within ``timeout``, an
    error reply). ``__cause__`` is the underlying error. What the operation
    left behind is documented on each method: a call that timed out may or
    may not have run on the server.
    """


class LeaseLostError(Exception):
    """A global limiter's lease expired on the server while its holder still held it.

    This happens when the replica could not renew the lease for longer than
    its TTL (Redis unreachable, a network partition, a process paused for
    longer than the TTL): Redis then gave the slot to someone else, so the
    work done under it was no longer protected by the limit. Raised when the
    holder leaves ``async with limiter.hold():`` (whose body is cancelled as
    soon as the loss is known), ``async with limiter:`` or calls
    ``release()``.
    """


def check_timeout(value: object, param: str = "timeout") -> float:
    """A timeout is a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{param} must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{param} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_on_unavailable(value: object) -> OnUnavailable:
    if value == "raise" or value == "allow":
        return value  # pyright: ignore[reportReturnType]
    raise ValueError(f"on_unavailable must be 'raise' or 'allow', got {value!r}")


async def call(
    what: str,
    timeout: float,  # noqa: ASYNC109 (the one place that applies it)
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """``await fn(*args, **kwargs)`` within ``timeout`` seconds; any failure → RedisUnavailableError.

    ``what`` names the operation in the error ("redis_limiter 'db': acquire").
    Cancellation from outside passes through unchanged.
    """
    try:
        with trio.fail_after(timeout):
            return await fn(*args, **kwargs)
    except trio.TooSlowError as exc:
        raise RedisUnavailableError(
            f"{what}: Redis did not answer within timeout={timeout:g}s"
        ) from exc
    except trio.Cancelled:
        raise
    except Exception as exc:
        raise RedisUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


class Parked:
    """A task parked on a Redis-backed primitive (satisfies ``trioflow._registry.Waiting``)."""

    __slots__ = ("nudged", "parked", "primitive", "since", "task", "weight")

    def __init__(self, primitive: Inspectable, weight: int) -> None:
        self.task: Final[Task] = trio.lowlevel.current_task()
        self.primitive: Final = primitive
        self.weight: Final = weight
        self.since: Final = trio.current_time()
        #: True while the task sleeps in :func:`park`.
        self.parked = False
        #: A :func:`wake` came while the task was not parked (it was in a
        #: round trip): its next :func:`park` returns at once instead.
        self.nudged = False

    def __repr__(self) -> str:
        return f"<Parked {self.task.name!r} weight={self.weight} on {self.primitive.name!r}>"


async def park(record: Parked, deadline: float = math.inf) -> bool:
    """Sleep until :func:`wake` or ``deadline``; ``True`` if woken, ``False`` at the deadline.

    A checkpoint. Cancellation from outside raises :class:`trio.Cancelled`
    with the record cleared; the caller undoes whatever its wait had queued.
    """
    task = record.task
    if record.nudged:
        record.nudged = False
        await trio.lowlevel.checkpoint()
        return True
    woken = False

    def abort(_: Any) -> trio.lowlevel.Abort:
        record.parked = False
        task.custom_sleep_data = None
        return trio.lowlevel.Abort.SUCCEEDED

    record.parked = True
    task.custom_sleep_data = record
    with trio.CancelScope(deadline=deadline):
        await trio.lowlevel.wait_task_rescheduled(abort)
        woken = True
    return woken


def wake(record: Parked) -> None:
    """Reschedule a task sleeping in :func:`park`; if it is not parked yet, its next park returns at once.

    The second half closes the race between a waiter's round trip and its
    park: a wake-up that arrives while the answer "not yet" is on its way
    is not lost.
    """
    if record.parked:
        record.parked = False
        record.task.custom_sleep_data = None
        trio.lowlevel.reschedule(record.task)
    else:
        record.nudged = True


@asynccontextmanager
async def serving(
    start: Callable[[trio.Nursery], Awaitable[None]], flush: Callable[[], Awaitable[None]]
) -> AsyncGenerator[None]:
    """Run a primitive's background tasks for the length of the caller's block.

    ``start(nursery)`` starts them (an exception from it is raised as is,
    after the nursery closed); when the block ends they are cancelled, then
    ``flush()`` runs shielded (it must bound itself). The block's own
    exception is re-raised outside the nursery, so the caller sees it
    rather than a group around it: the background tasks never raise.
    """
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                await start(nursery)
            except Exception as exc:
                failure = exc
                nursery.cancel_scope.cancel()
            if failure is None:
                try:
                    yield
                except BaseException as exc:
                    failure = exc
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        # Also when the nursery raises: an outer cancellation that reached
        # the background tasks comes out of it.
        with trio.CancelScope(shield=True):
            await flush()
    if failure is not None:
        raise failure
