"""TaskGroup: a nursery with a limit, an error policy, task handles and a name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, Generic, Literal, TypeVar, final

import attrs
import trio
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext

from .. import _registry
from .._admission._capacity import CapacityLimiter
from .._admission._rate import RateLimiter
from .._registry import Holding, Waiting
from .._util import check_optional_name, raise_type
from ..telemetry import _hooks, _names, _spans

__all__ = ["TaskGroup", "TaskGroupStatistics", "TaskHandle", "open_task_group"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

OnError = Literal["cancel", "collect"]

# A TaskHandle's life: made by spawn, its task runs, then one of three ends.
_PENDING: Final = 0
_RUNNING: Final = 1
_RETURNED: Final = 2
_FAILED: Final = 3
_CANCELLED: Final = 4

_STATE_NAMES: Final = ("pending", "running", "returned", "failed", "cancelled")


def _is_cancellation(exc: BaseException) -> bool:
    """``trio.Cancelled``, or a group made only of them (a cancelled inner nursery)."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return rest is None
    return False


@final
class TaskHandle(Generic[T_co]):
    """A claim ticket for one task of a :class:`TaskGroup`: is it done, its result, cancel it.

    Returned by :meth:`TaskGroup.spawn` and :meth:`TaskGroup.start_soon`. The
    task runs in the group's nursery whatever you do with the handle;
    dropping it loses nothing but the result.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_requested",
        "_error",
        "_event",
        "_group",
        "_scope",
        "_state",
        "_value",
        "task",
    )

    def __init__(self, group: TaskGroup) -> None:
        self._group: Final = group
        self._state = _PENDING
        self._value: Any = None
        self._error: BaseException | None = None
        # Made when the task starts, so a task waiting to run carries none.
        self._scope: trio.CancelScope | None = None
        self._cancel_requested = False
        self._event: trio.Event | None = None
        #: The :class:`trio.lowlevel.Task` once it started, else ``None``.
        self.task: trio.lowlevel.Task | None = None

    @property
    def name(self) -> str:
        """The task's name (as trio shows it), or ``"<not started>"``."""
        return "<not started>" if self.task is None else self.task.name

    @property
    def done(self) -> bool:
        """True once the task returned, failed or was cancelled."""
        return self._state >= _RETURNED

    @property
    def cancelled(self) -> bool:
        """True if the task ended by cancellation (its own :meth:`cancel`, or the group's)."""
        return self._state == _CANCELLED

    def result(self) -> T_co:
        """The task's return value; raises what the task raised.

        Not a checkpoint and never blocks: call it after the task finished
        (after the group exited, or after :meth:`wait`).

        Raises:
          RuntimeError: if the task has not finished yet, or it was cancelled
            (a cancelled task has no result; :attr:`cancelled` tells which).
          Exception: whatever the task raised, with its traceback.
        """
        state = self._state
        if state == _RETURNED:
            return self._value  # type: ignore[no-any-return]
        if state == _FAILED:
            assert self._error is not None
            raise self._error
        if state == _CANCELLED:
            raise RuntimeError(f"task {self.name!r} was cancelled, so it has no result")
        raise RuntimeError(f"task {self.name!r} has not finished; it has no result yet")

    def cancel(self) -> None:
        """Cancel this task only (the rest of the group runs on). Not a checkpoint.

        A task cancelled before it started never runs its function. A
        cancelled task is not a failure: under ``on_error="cancel"`` the
        group is not cancelled by it. Idempotent; does nothing once it is done.
        """
        if self._scope is None:
            self._cancel_requested = True
        else:
            self._scope.cancel()

    async def wait(self) -> None:
        """Block until the task is done (returned, failed or cancelled).

        A checkpoint. Cancelling the wait leaves the task alone.
        """
        if self._state >= _RETURNED:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    def _finish(self, state: int) -> None:
        self._state = state
        if self._event is not None:
            self._event.set()

    def __repr__(self) -> str:
        return f"<trioflow.TaskHandle {self.name!r} {_STATE_NAMES[self._state]}>"


@attrs.frozen
class TaskGroupStatistics:
    """A snapshot of a task group, from :meth:`TaskGroup.statistics`."""

    name: str
    """The group's name."""

    limit: int | float | None
    """How many of its tasks may run at once (the limiter's ``total_tokens``), or ``None``."""

    running: int
    """Tasks spawned and not finished (each holds a slot of the limit, if any)."""

    waiting: int
    """Calls parked in :meth:`TaskGroup.spawn` / :meth:`TaskGroup.start` waiting for a slot."""

    finished: int
    """Tasks that ended, whichever way (``failed`` and ``cancelled`` included)."""

    failed: int
    """Tasks that raised an exception (cancellations excluded)."""

    cancelled: int
    """Tasks that ended by cancellation."""


class _StatusProxy:
    """Passes ``task_status.started()`` through, noting that it was called."""

    __slots__ = ("_inner", "started_called")

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.started_called = False

    def started(self, value: object = None) -> None:
        self._inner.started(value)
        self.started_called = True


@final
class TaskGroup:
    """A nursery that bounds how many of its tasks run, and decides what one failure does.

    Picture Go's ``errgroup.Group`` with ``SetLimit``, as a Trio nursery:
    ``await tg.spawn(fn, *args)`` starts ``fn(*args)`` in the group when a
    slot is free and waits for one when ``limit`` tasks are running, so a
    loop that spawns thousands of tasks is throttled at the loop (back-pressure)
    instead of piling them all into memory. Leaving the ``async with`` block
    waits for every task, as a nursery does.

    Open one with :func:`open_task_group`.

    Errors: with ``on_error="cancel"`` the first failure cancels the rest of
    the group (and the body), and the group raises every failure — the first
    one first, then any raised while the others were being cancelled — in an
    :class:`ExceptionGroup`, as a Trio nursery does. With
    ``on_error="collect"`` a failure cancels nothing: every task runs to its
    end and the group raises all failures together at exit. Either way no
    error is dropped, and :meth:`TaskHandle.result` re-raises each task's own.

    Cost: spawn + run of an empty task is 1.4–1.8× a bare
    ``nursery.start_soon`` with ``await spawn`` and 1.9–2.5× with
    ``start_soon`` (anyio's task group: 2.6–3.1×), measured by
    ``bench/tasks.py`` (``docs/benchmarks/``). Most of it is the cancel
    scope each task runs in, which is what makes :meth:`TaskHandle.cancel`
    possible.
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_entered",
        "_failed",
        "_failures",
        "_finished",
        "_limiter",
        "_live",
        "_name",
        "_nursery",
        "_nursery_cm",
        "_on_error",
        "_rate",
        "_returned",
        "_span",
        "_task_parent",
        "_trace_tasks",
        "_waiting",
    )

    kind = "task_group"

    def __init__(
        self,
        *,
        limit: object,
        on_error: object,
        name: object,
        trace_tasks: object = None,
        rate: object = None,
    ) -> None:
        self._name: str = check_optional_name(name) or _registry.default_name(self.kind)
        if on_error not in ("cancel", "collect"):
            raise ValueError(f"on_error must be 'cancel' or 'collect', got {on_error!r}")
        if trace_tasks is not None and not isinstance(trace_tasks, bool):
            raise_type("trace_tasks", "True, False or None", trace_tasks)
        self._trace_tasks: bool | None = trace_tasks
        #: the group's ``task_group {name}`` span (INVALID_SPAN when not traced)
        self._span: Span = INVALID_SPAN
        #: what each task's span is parented to; None = tasks get no span
        self._task_parent: SpanContext | None = None
        self._on_error: OnError = on_error  # pyright: ignore[reportAttributeAccessIssue]
        self._limiter: Any = _resolve_limit(limit, self._name)
        if rate is not None and not isinstance(rate, RateLimiter):
            raise_type("rate", "a tf.RateLimiter or None", rate)
        #: paces task starts: one token per task, taken after its slot
        self._rate: RateLimiter | None = rate
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._entered = False
        self._waiting = 0
        #: tasks spawned and not finished (a plain int: statistics() may be
        #: read from another thread, where the nursery's set is not safe)
        self._live = 0
        self._finished = 0
        self._failed = 0
        self._cancelled = 0
        self._returned = 0
        #: on_error="collect": failures in the order they happened
        self._failures: list[Exception] = []
        _registry.register(self)

    # -- the nursery -------------------------------------------------------

    async def __aenter__(self) -> TaskGroup:
        if self._entered:
            raise RuntimeError(f"task group {self._name!r} can be entered only once")
        self._entered = True
        if _hooks.tracing:
            self._open_span()
        self._nursery_cm = trio.open_nursery()
        try:
            self._nursery = await self._nursery_cm.__aenter__()
        except BaseException as exc:
            self._close_span(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            try:
                # True when the nursery absorbed the body's exception (a
                # Cancelled from the group's own cancel scope): so do we.
                absorbed: bool = await self._nursery_cm.__aexit__(exc_type, exc, tb)
            except BaseException as nursery_exc:
                if not self._failures:
                    raise
                others: list[BaseException] = [nursery_exc]
                if isinstance(nursery_exc, BaseExceptionGroup):
                    others = list(nursery_exc.exceptions)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
                raise self._failure_group(others) from None
            finally:
                self._nursery = None
            if self._failures:
                raise self._failure_group([])
        except BaseException as raised:
            if self._span is not INVALID_SPAN:
                self._close_span(raised)
            raise
        if self._span is not INVALID_SPAN:
            # Here exc is None, or the Cancelled the group's own scope caught.
            self._close_span(exc)
        return absorbed

    # -- telemetry -----------------------------------------------------------

    def _open_span(self) -> None:
        """Start the ``task_group {name}`` span under the opener's current span."""
        limiter = self._limiter
        attributes: dict[str, str | int | float] = {
            _names.TASK_GROUP_NAME: self._name,
            "trioflow.task_group.on_error": self._on_error,
        }
        if limiter is not None:
            attributes["trioflow.task_group.limit"] = limiter.total_tokens
        span = self._span = _spans.start_span(
            _spans.span_name(self.kind, self._name), attributes=attributes
        )
        trace_tasks = self._trace_tasks
        if trace_tasks is None:
            trace_tasks = _hooks.tracing >= _hooks.ITEM
        if trace_tasks:
            self._task_parent = _spans.context_of(span)

    def _close_span(self, exc: BaseException | None) -> None:
        """End the group's span with how it exited and what its tasks did."""
        span = self._span
        self._span = INVALID_SPAN
        self._task_parent = None
        _spans.end_span(
            span,
            exc,
            attributes={
                "trioflow.task_group.tasks": self._finished,
                "trioflow.task_group.failed": self._failed,
                "trioflow.task_group.cancelled": self._cancelled,
            },
        )

    def _failure_group(self, others: list[BaseException]) -> BaseExceptionGroup[BaseException]:
        failures = self._failures
        self._failures = []
        return BaseExceptionGroup(
            f"{len(failures)} task(s) failed in task group {self._name!r}", [*failures, *others]
        )

    def _open_nursery(self) -> trio.Nursery:
        nursery = self._nursery
        if nursery is None:
            if self._entered:
                raise RuntimeError(f"task group {self._name!r} is closed")
            raise RuntimeError(
                f"task group {self._name!r} is not open: use 'async with tf.open_task_group() as tg:'"
            )
        return nursery

    # -- spawning ----------------------------------------------------------

    async def spawn(
        self, fn: Callable[..., Awaitable[T]], *args: object, name: object = None
    ) -> TaskHandle[T]:
        """Start ``fn(*args)`` in the group, waiting for a slot if ``limit`` tasks run.

        This is the back-pressure call: in a loop it paces the loop to the
        group's limit. It is a checkpoint whether or not it waited, and
        atomic with respect to cancellation: if it raises
        :class:`trio.Cancelled`, no task was started and no slot is held.
        Slots are served first come, first served (the limiter's queue).

        Beware the errgroup deadlock: a task that spawns into its own
        full group and waits there holds a slot while it waits.

        Args:
          fn: an async function; the task runs ``await fn(*args)``.
          *args: positional arguments for ``fn`` (use :func:`functools.partial`
            for keyword arguments).
          name: the task's name in trio and in task dumps (default: ``fn``'s).

        Returns:
          The task's :class:`TaskHandle`.

        Raises:
          RuntimeError: if the group is not open (outside its ``async with``
            or after it exited).
        """
        self._open_nursery()
        # Called here, as trio's start_soon does, so that a function that is
        # not async fails at this call rather than inside the task.
        coro = _call(fn, args)
        handle: TaskHandle[T] = TaskHandle(self)
        limiter = self._limiter
        try:
            if limiter is None:
                if self._rate is None:
                    await trio.lowlevel.checkpoint()
            else:
                self._waiting += 1
                try:
                    await limiter.acquire_on_behalf_of(handle)
                finally:
                    self._waiting -= 1
            await self._paced(handle)
        except BaseException:
            coro.close()
            raise
        self._launch(handle, coro, fn if name is None else name)
        return handle

    async def _paced(self, handle: TaskHandle[Any]) -> None:
        """Take the task's rate token (after its slot); if cancelled, give the slot back."""
        rate = self._rate
        if rate is None:
            return
        self._waiting += 1
        try:
            await rate.acquire()
        except BaseException:
            if self._limiter is not None:
                self._limiter.release_on_behalf_of(handle)
            raise
        finally:
            self._waiting -= 1

    def start_soon(
        self, fn: Callable[..., Awaitable[T]], *args: object, name: object = None
    ) -> TaskHandle[T]:
        """Start ``fn(*args)`` in the group now if a slot is free. Not a checkpoint.

        Like :meth:`trio.Nursery.start_soon`, for callers that must not block
        (a callback, a sync function). The task begins at the next
        checkpoint.

        Raises:
          trio.WouldBlock: if ``limit`` tasks are running (or others wait
            for a slot first): nothing was started.
          RuntimeError: if the group is not open.
        """
        self._open_nursery()
        handle: TaskHandle[T] = TaskHandle(self)
        limiter = self._limiter
        if limiter is not None:
            limiter.acquire_on_behalf_of_nowait(handle)
        if self._rate is not None and not self._rate.try_acquire():
            if limiter is not None:
                limiter.release_on_behalf_of(handle)
            raise trio.WouldBlock
        try:
            coro = _call(fn, args)
        except BaseException:
            if limiter is not None:
                limiter.release_on_behalf_of(handle)
            raise
        self._launch(handle, coro, fn if name is None else name)
        return handle

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: object, name: object = None
    ) -> Any:
        """Start ``fn(*args, task_status=...)`` and wait until it calls ``task_status.started()``.

        Like :meth:`trio.Nursery.start`, with the group's slot taken first
        (waiting for one as :meth:`spawn` does). Returns the value passed to
        ``started()``. An exception raised before ``started()`` comes out of
        this call (under either error policy) and the slot is given back.
        A checkpoint; cancelling it cancels the starting task.

        Raises:
          RuntimeError: if the group is not open, or ``fn`` returned without
            calling ``started()``.
        """
        self._open_nursery()
        handle: TaskHandle[Any] = TaskHandle(self)
        limiter = self._limiter
        if limiter is not None:
            self._waiting += 1
            try:
                await limiter.acquire_on_behalf_of(handle)
            finally:
                self._waiting -= 1
        await self._paced(handle)
        self._live += 1
        try:
            nursery = self._open_nursery()
            return await nursery.start(
                self._run, handle, fn, args, name=fn if name is None else name
            )
        finally:
            if handle._state == _PENDING:  # pyright: ignore[reportPrivateUsage]
                # the task never ran, so its runner never gave the slot back
                self._live -= 1
                if limiter is not None:
                    limiter.release_on_behalf_of(handle)

    def _launch(
        self, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any], name: object
    ) -> None:
        try:
            nursery = self._open_nursery()
            nursery.start_soon(self._run, handle, coro, name=name)
            self._live += 1
        except BaseException:
            coro.close()
            if self._limiter is not None:
                self._limiter.release_on_behalf_of(handle)
            raise

    # -- the task's runner ---------------------------------------------------

    async def _run(
        self,
        handle: TaskHandle[Any],
        work: Any,
        args: tuple[object, ...] = (),
        task_status: trio.TaskStatus[Any] | None = None,
    ) -> None:
        # One runner, one coroutine frame per task. spawn/start_soon pass the
        # coroutine they made (``work``); start passes fn and args, and trio
        # passes task_status, since fn must be called with it in this task.
        status: _StatusProxy | None = None
        if task_status is not None:
            status = _StatusProxy(task_status)
            work = work(*args, task_status=status)
        handle.task = trio.lowlevel.current_task()
        handle._state = _RUNNING  # pyright: ignore[reportPrivateUsage]
        try:
            # The handle's own scope is what TaskHandle.cancel() cancels.
            if handle._cancel_requested:  # pyright: ignore[reportPrivateUsage]
                # cancelled before it ran: its coroutine never takes a step
                work.close()
                self._cancelled += 1
                handle._finish(_CANCELLED)  # pyright: ignore[reportPrivateUsage]
                return
            scope = handle._scope = trio.CancelScope()  # pyright: ignore[reportPrivateUsage]
            parent = self._task_parent
            if parent is not None:
                await self._run_traced(handle, work, scope, parent)
                return
            with scope:
                value = await work
                self._returned += 1
                handle._value = value  # pyright: ignore[reportPrivateUsage]
                handle._finish(_RETURNED)  # pyright: ignore[reportPrivateUsage]
                return
            # Only the handle's own scope was cancelled: not a failure.
            self._cancelled += 1
            handle._finish(_CANCELLED)  # pyright: ignore[reportPrivateUsage]
        except BaseException as exc:
            if _is_cancellation(exc):
                self._cancelled += 1
                handle._finish(_CANCELLED)  # pyright: ignore[reportPrivateUsage]
                raise
            self._failed += 1
            handle._error = exc  # pyright: ignore[reportPrivateUsage]
            handle._finish(_FAILED)  # pyright: ignore[reportPrivateUsage]
            if (
                self._on_error == "collect"
                and isinstance(exc, Exception)
                and (status is None or status.started_called)
            ):
                self._failures.append(exc)
                return
            raise
        finally:
            self._finished += 1
            self._live -= 1
            if self._limiter is not None:
                self._limiter.release_on_behalf_of(handle)

    async def _run_traced(
        self,
        handle: TaskHandle[Any],
        work: Any,
        scope: trio.CancelScope,
        parent: SpanContext,
    ) -> None:
        """:meth:`_run`'s body with a ``task {name}`` span, current around the function.

        The span's parent is the group's span, passed explicitly: a trio
        child copies its *spawner's* context, which may be any task's.
        """
        assert handle.task is not None
        span = _spans.start_span(
            _spans.span_name("task", handle.task.name),
            parent=parent,
            attributes={_names.TASK_GROUP_NAME: self._name},
        )
        try:
            with scope, _spans.activate(span):
                value = await work
                self._returned += 1
                handle._value = value  # pyright: ignore[reportPrivateUsage]
                handle._finish(_RETURNED)  # pyright: ignore[reportPrivateUsage]
                _spans.end_span(span)
                return
        except BaseException as exc:
            _spans.end_span(span, exc)
            raise
        # Only the handle's own scope was cancelled: not a failure.
        _spans.end_span(span, attributes={"trioflow.cancelled": True})
        self._cancelled += 1
        handle._finish(_CANCELLED)  # pyright: ignore[reportPrivateUsage]

    # -- state ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The group's name (given, or ``task_group-N``)."""
        return self._name

    @property
    def on_error(self) -> OnError:
        """``"cancel"`` or ``"collect"``: what a failing task does to the rest."""
        return self._on_error

    @property
    def limiter(self) -> Any:
        """The limiter that bounds the group (``None`` without a limit)."""
        return self._limiter

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The group's nursery cancel scope: ``tg.cancel_scope.cancel()`` cancels every task.

        Raises:
          RuntimeError: if the group is not open.
        """
        return self._open_nursery().cancel_scope

    def statistics(self) -> TaskGroupStatistics:
        """A snapshot of the group (plain reads; safe from any thread)."""
        limiter = self._limiter
        return TaskGroupStatistics(
            name=self._name,
            limit=None if limiter is None else limiter.total_tokens,
            running=self._live,
            waiting=self._waiting,
            finished=self._finished,
            failed=self._failed,
            cancelled=self._cancelled,
        )

    def _trioflow_holders(self) -> list[Holding]:
        nursery = self._nursery
        if nursery is None:
            return []
        return [Holding(task, 1) for task in nursery.child_tasks]

    def _trioflow_waiters(self) -> list[Waiting]:
        # Spawners park on the limiter's queue with their handle as borrower;
        # show those, with the limiter they wait on.
        waiters_of = getattr(self._limiter, "_trioflow_waiters", None)
        if waiters_of is None:
            return []
        out: list[Waiting] = []
        for waiter in waiters_of():
            borrower = getattr(waiter, "borrower", None)
            if isinstance(borrower, TaskHandle) and borrower._group is self:  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
                out.append(waiter)
        return out

    def __repr__(self) -> str:
        limiter = self._limiter
        limit = "" if limiter is None else f"/{limiter.total_tokens}"
        return (
            f"<trioflow.TaskGroup {self._name!r} at {id(self):#x}, "
            f"{self._live}{limit} running with {self._waiting} waiting>"
        )


def _call(fn: Callable[..., Awaitable[Any]], args: tuple[object, ...]) -> Coroutine[Any, Any, Any]:
    """``fn(*args)``, checked to be a coroutine (what trio can run as a task)."""
    if not callable(fn):
        raise_type("fn", "an async function", fn)
    coro = fn(*args)
    if not isinstance(coro, Coroutine):
        raise TypeError(
            f"fn must be an async function, got {fn!r}, which returned {coro!r} "
            "rather than a coroutine"
        )
    return coro  # pyright: ignore[reportUnknownVariableType]


def _resolve_limit(limit: object, name: str) -> Any:
    """``limit=``: ``None``, a positive int (a new limiter named after the group), or a limiter."""
    if limit is None:
        return None
    if isinstance(limit, bool):
        raise_type("limit", "an int, a limiter or None", limit)
    if isinstance(limit, int):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        return CapacityLimiter(limit, name=name)
    if all(
        callable(getattr(limit, method, None))
        for method in (
            "acquire_on_behalf_of",
            "acquire_on_behalf_of_nowait",
            "release_on_behalf_of",
        )
    ):
        return limit
    raise_type("limit", "an int, a limiter or None", limit)


def open_task_group(
    *,
    limit: int | object | None = None,
    on_error: OnError = "cancel",
    name: str | None = None,
    trace_tasks: bool | None = None,
    rate: RateLimiter | None = None,
) -> TaskGroup:
    """Open a task group: ``async with tf.open_task_group(limit=10) as tg:``.

    Args:
      limit: how many of the group's tasks may run at once. ``None`` (no
        limit); a positive int (the group makes a
        :class:`~trioflow.CapacityLimiter` of that size, named after the
        group); or any limiter — a :class:`~trioflow.CapacityLimiter`, a
        lane handle, an adaptive limiter, even a :class:`trio.CapacityLimiter`
        — which may be shared with other groups and code. Each task holds
        one token of it from spawn to its end.
      on_error: ``"cancel"`` (the first failure cancels the rest; all
        failures are raised together) or ``"collect"`` (nothing is cancelled;
        all failures are raised together at exit).
      name: what task dumps, ``repr``, spans and the limiter it makes call it.
      trace_tasks: whether each task gets a ``task {task name}`` span, child
        of the group's ``task_group {name}`` span and current while the
        task's function runs (so spans the function starts nest under it).
        ``None`` (default): only when telemetry traces at ``"item"`` level;
        ``True``/``False`` force it on or off for this group. Nothing is
        traced while tracing is ``"off"`` (see :mod:`trioflow.telemetry`).
      rate: a :class:`~trioflow.RateLimiter` that paces task *starts*: each
        task takes one token after its slot and before it starts (so
        ``spawn``/``start`` also wait for the rate, holding the slot, and
        ``start_soon`` raises :exc:`trio.WouldBlock` when no token is free).
        A cancellation while waiting for the token gives the slot back.
        May be shared with other groups, ``amap`` and pipeline stages.

    Telemetry: with tracing at ``"stage"`` or ``"item"`` the group is one
    span, ``task_group {name}``, from ``async with`` to its exit, child of
    the span current where the group was opened; it ends with the error
    the group raised, if any. With tracing ``"off"`` the cost is one flag
    check when the group opens and one per task.

    Raises:
      TypeError: if ``limit`` is not an int, a limiter or ``None``,
        ``name`` is not a str, ``trace_tasks`` is not a bool or ``None``, or
        ``rate`` is not a :class:`~trioflow.RateLimiter` or ``None``.
      ValueError: if ``limit`` is below 1 or ``on_error`` is not one of the two.
    """
    return TaskGroup(limit=limit, on_error=on_error, name=name, trace_tasks=trace_tasks, rate=rate)
