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
from .._admission._protocol import Limiter, Pacer, check_limiter, check_pacer
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


class _Books:
    """A group's settings and counters, shared with its tasks (which report how they end).

    Plain ints: :meth:`TaskGroup.statistics` may be read from another thread.
    """

    __slots__ = (
        "cancelled",
        "failed",
        "failures",
        "finished",
        "limiter",
        "live",
        "name",
        "on_error",
        "rate",
        "returned",
        "task_parent",
        "waiting",
    )

    def __init__(
        self, name: str, on_error: OnError, limiter: Limiter | None, rate: Pacer | None
    ) -> None:
        self.name: Final = name
        self.on_error: Final = on_error
        #: what bounds the group (one token per task, from its start to its end)
        self.limiter: Final = limiter
        #: paces task starts: one token per task, taken after its slot
        self.rate: Final = rate
        #: what each task's span is parented to; None = tasks get no span
        self.task_parent: SpanContext | None = None
        #: tasks holding their slot and not finished
        self.live: int = 0
        #: calls (and start_soon tasks) waiting for a slot or a rate token
        self.waiting: int = 0
        self.finished: int = 0
        self.failed: int = 0
        self.cancelled: int = 0
        self.returned: int = 0
        #: on_error="collect": failures in the order they happened
        self.failures: list[Exception] = []

    async def admit(self, borrower: _Task, *, slot: bool = True, rate: bool = True) -> None:
        """Take the task's slot, then its rate token (each only if asked and configured).

        A checkpoint (even with nothing to take), atomic with respect to
        cancellation: if it raises, the task holds no slot it took here.
        The caller counts itself in ``waiting``.
        """
        limiter = self.limiter if slot else None
        bucket = self.rate if rate else None
        if limiter is None and bucket is None:
            await trio.lowlevel.checkpoint()
            return
        if limiter is not None:
            await limiter.acquire_on_behalf_of(borrower)
        if bucket is not None:
            try:
                await bucket.acquire()
            except BaseException:
                if limiter is not None:
                    limiter.release_on_behalf_of(borrower)
                raise

    def give_back(self, borrower: _Task) -> None:
        if self.limiter is not None:
            self.limiter.release_on_behalf_of(borrower)


class _Task:
    """One task of a group: its state, and the one runner that moves it along.

    ``pending`` (made; maybe waiting for its slot) -> ``running`` -> one of
    ``returned``, ``failed``, ``cancelled``. Only this class changes the
    state; :class:`TaskHandle` reads it. It is also what holds the task's
    slot in the group's limiter (the borrower), from admission to the end.
    """

    __slots__ = ("books", "cancel_requested", "error", "event", "scope", "state", "task", "value")

    def __init__(self, books: _Books) -> None:
        self.books: Final = books
        self.state: int = _PENDING
        self.value: Any = None
        self.error: BaseException | None = None
        # Made when the task starts, so a task waiting to run carries none.
        self.scope: trio.CancelScope | None = None
        self.cancel_requested: bool = False
        self.event: trio.Event | None = None
        self.task: trio.lowlevel.Task | None = None

    def _end(self, state: int) -> None:
        self.state = state
        books = self.books
        books.finished += 1
        if state == _RETURNED:
            books.returned += 1
        elif state == _FAILED:
            books.failed += 1
        else:
            books.cancelled += 1
        if self.event is not None:
            self.event.set()

    def label_event(self) -> None:
        """Name the done-event for dumps: a task in ``wait()`` shows ``event 'jobs: fetch done'``."""
        assert self.event is not None
        name = "a task not started yet" if self.task is None else self.task.name
        _registry.label(self.event, f"{self.books.name}: {name} done")

    def _never_ran(self, work: Coroutine[Any, Any, Any], queued: tuple[bool, bool]) -> None:
        """A start_soon task cancelled while it waited for its turn."""
        books = self.books
        books.waiting -= 1
        if not queued[0]:
            books.give_back(self)  # it held its slot already, and waited for the rate
        work.close()
        self._end(_CANCELLED)

    async def run(
        self,
        work: Any,
        args: tuple[object, ...] = (),
        queued: tuple[bool, bool] | None = None,
        task_status: trio.TaskStatus[Any] | None = None,
    ) -> None:
        """The one runner of a group's tasks.

        ``work`` is the coroutine to run, or for :meth:`TaskGroup.start` the
        function to call with ``args`` and ``task_status`` (it must be
        called in this task). ``queued`` (from ``start_soon``): this task
        still has to take its slot and/or its rate token, in that order.
        """
        books = self.books
        if queued is not None:
            self.task = trio.lowlevel.current_task()
            # TaskHandle.cancel() while it waits for its turn cancels this scope.
            admission = self.scope = trio.CancelScope()
            if self.cancel_requested:
                admission.cancel()
            try:
                with admission:
                    await books.admit(self, slot=queued[0], rate=queued[1])
            except BaseException:
                # Cancelled by the group before it got to run.
                self._never_ran(work, queued)
                raise
            if admission.cancelled_caught:
                self._never_ran(work, queued)
                return
            books.waiting -= 1
            books.live += 1
        status: _StatusProxy | None = None
        if task_status is not None:
            status = _StatusProxy(task_status)
            work = work(*args, task_status=status)
        self.task = trio.lowlevel.current_task()
        self.state = _RUNNING
        if self.event is not None:
            self.label_event()  # wait() came first: now the task has a name
        span: Span | None = None
        try:
            if self.cancel_requested:
                # cancelled before it ran: its coroutine never takes a step
                work.close()
                self._end(_CANCELLED)
                return
            # The handle's own scope is what TaskHandle.cancel() cancels.
            scope = self.scope = trio.CancelScope()
            parent = books.task_parent
            if parent is not None:
                # The span's parent is the group's span, passed explicitly: a
                # trio child copies its *spawner's* context, which may be any task's.
                span = _spans.start_span(
                    _spans.span_name("task", self.task.name),
                    parent=parent,
                    attributes={_names.TASK_GROUP_NAME: books.name},
                )
                work = _in_span(work, span)
            with scope:
                self.value = await work
                if span is not None:
                    _spans.end_span(span)
                self._end(_RETURNED)
                return
            # Only the handle's own scope was cancelled: not a failure.
            if span is not None:
                _spans.end_span(span, attributes={"trioflow.cancelled": True})
            self._end(_CANCELLED)
        except BaseException as exc:
            if span is not None:
                _spans.end_span(span, exc)
            if _is_cancellation(exc):
                self._end(_CANCELLED)
                raise
            self.error = exc
            self._end(_FAILED)
            if (
                books.on_error == "collect"
                and isinstance(exc, Exception)
                and (status is None or status.started_called)
            ):
                books.failures.append(exc)
                return
            raise
        finally:
            books.live -= 1
            books.give_back(self)


async def _in_span(work: Coroutine[Any, Any, Any], span: Span) -> Any:
    """``await work`` with ``span`` current, so spans the task starts nest under it."""
    with _spans.activate(span):
        return await work


@final
class TaskHandle(Generic[T_co]):
    """A claim ticket for one task of a :class:`TaskGroup`: is it done, its result, cancel it.

    Returned by :meth:`TaskGroup.spawn`, :meth:`TaskGroup.start_soon` and
    :meth:`TaskGroup.spawn_nowait`. The task runs in the group's nursery
    whatever you do with the handle; dropping it loses nothing but the result.
    """

    __slots__ = ("__weakref__", "_task")

    def __init__(self, task: _Task) -> None:
        self._task: Final = task

    @property
    def task(self) -> trio.lowlevel.Task | None:
        """The :class:`trio.lowlevel.Task` once it started, else ``None``."""
        return self._task.task

    @property
    def name(self) -> str:
        """The task's name (as trio shows it), or ``"<not started>"``."""
        task = self._task.task
        return "<not started>" if task is None else task.name

    @property
    def done(self) -> bool:
        """True once the task returned, failed or was cancelled."""
        return self._task.state >= _RETURNED

    @property
    def cancelled(self) -> bool:
        """True if the task ended by cancellation (its own :meth:`cancel`, or the group's)."""
        return self._task.state == _CANCELLED

    def result(self) -> T_co:
        """The task's return value; raises what the task raised.

        Not a checkpoint and never blocks: call it after the task finished
        (after the group exited, or after :meth:`wait`).

        Raises:
          RuntimeError: if the task has not finished yet, or it was cancelled
            (a cancelled task has no result; :attr:`cancelled` tells which).
          Exception: whatever the task raised, with its traceback.
        """
        t = self._task
        state = t.state
        if state == _RETURNED:
            return t.value  # type: ignore[no-any-return]
        if state == _FAILED:
            assert t.error is not None
            raise t.error
        if state == _CANCELLED:
            raise RuntimeError(f"task {self.name!r} was cancelled, so it has no result")
        raise RuntimeError(f"task {self.name!r} has not finished; it has no result yet")

    def cancel(self) -> None:
        """Cancel this task only (the rest of the group runs on). Not a checkpoint.

        A task cancelled before it started never runs its function (if it
        was waiting for its slot, it stops waiting). A cancelled task is not
        a failure: under ``on_error="cancel"`` the group is not cancelled by
        it. Idempotent; does nothing once it is done.
        """
        t = self._task
        if t.scope is None:
            t.cancel_requested = True
        else:
            t.scope.cancel()

    async def wait(self) -> None:
        """Block until the task is done (returned, failed or cancelled).

        A checkpoint. Cancelling the wait leaves the task alone.
        """
        t = self._task
        if t.state >= _RETURNED:
            await trio.lowlevel.checkpoint()
            return
        if t.event is None:
            t.event = trio.Event()
            t.label_event()
        await t.event.wait()

    def __repr__(self) -> str:
        return f"<trioflow.TaskHandle {self.name!r} {_STATE_NAMES[self._task.state]}>"


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

    returned: int
    """Tasks that returned normally (its own counter: a snapshot never runs backwards)."""


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

    Three ways in, as in trio: ``await tg.spawn(fn)`` waits for a slot (the
    back-pressure call); ``tg.start_soon(fn)`` always schedules the task, as
    :meth:`trio.Nursery.start_soon` does, and the task waits for its slot
    itself; ``tg.spawn_nowait(fn)`` starts it only if a slot is free now,
    else raises :exc:`trio.WouldBlock`.

    Cost: a spawned empty task costs a few microseconds, the same order as
    a bare ``nursery.start_soon`` (most of the difference is the cancel
    scope each task runs in, which is what makes :meth:`TaskHandle.cancel`
    possible): see ``bench/tasks.py`` and ``docs/benchmarks/tasks.md``.
    """

    __slots__ = (
        "__weakref__",
        "_books",
        "_entered",
        "_name",
        "_nursery",
        "_nursery_cm",
        "_span",
        "_trace_tasks",
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
        limiter = _resolve_limit(limit, self._name)
        self._books = _Books(self._name, on_error, limiter, check_pacer(rate, "rate"))
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._entered = False
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
                if not self._books.failures:
                    raise
                others: list[BaseException] = [nursery_exc]
                if isinstance(nursery_exc, BaseExceptionGroup):
                    others = list(nursery_exc.exceptions)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
                raise self._failure_group(others) from None
            finally:
                self._nursery = None
            if self._books.failures:
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
        limiter = self._books.limiter
        attributes: dict[str, str | int | float] = {
            _names.TASK_GROUP_NAME: self._name,
            "trioflow.task_group.on_error": self._books.on_error,
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
            self._books.task_parent = _spans.context_of(span)

    def _close_span(self, exc: BaseException | None) -> None:
        """End the group's span with how it exited and what its tasks did."""
        span = self._span
        self._span = INVALID_SPAN
        books = self._books
        books.task_parent = None
        _spans.end_span(
            span,
            exc,
            attributes={
                "trioflow.task_group.tasks": books.finished,
                "trioflow.task_group.failed": books.failed,
                "trioflow.task_group.cancelled": books.cancelled,
            },
        )

    def _failure_group(self, others: list[BaseException]) -> BaseExceptionGroup[BaseException]:
        failures = self._books.failures
        self._books.failures = []
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
        task = _Task(self._books)
        books = self._books
        books.waiting += 1
        try:
            await books.admit(task)
        except BaseException:
            coro.close()
            raise
        finally:
            books.waiting -= 1
        return self._launch(task, coro, fn if name is None else name)

    def start_soon(
        self, fn: Callable[..., Awaitable[T]], *args: object, name: object = None
    ) -> TaskHandle[T]:
        """Schedule ``fn(*args)`` in the group; it runs when its slot is free. Not a checkpoint.

        Like :meth:`trio.Nursery.start_soon`: it never fails for capacity
        and never blocks, so code moved into a limited group keeps working
        under load. The task is scheduled at once and waits for its slot
        (and rate token) itself, so a flood of ``start_soon`` calls makes
        that many tasks, each holding its coroutine: use :meth:`spawn` in a
        loop that should be paced. Tasks scheduled together take their
        slots in the order trio runs them. Cancelling the handle (or the
        group) while it waits means it never runs.

        Raises:
          TypeError: if ``fn`` is not an async function.
          RuntimeError: if the group is not open.
        """
        nursery = self._open_nursery()
        coro = _call(fn, args)
        books = self._books
        task = _Task(books)
        name = fn if name is None else name
        slot = books.limiter is None
        if not slot:
            try:
                books.limiter.acquire_on_behalf_of_nowait(task)  # pyright: ignore[reportOptionalMemberAccess]
                slot = True
            except trio.WouldBlock:
                pass
        paced = books.rate is None or (slot and books.rate.try_acquire())
        if slot and paced:
            return self._launch(task, coro, name)
        # Not now: the task takes what it lacks when it runs.
        books.waiting += 1
        try:
            nursery.start_soon(task.run, coro, (), (not slot, not paced), name=name)
        except BaseException:
            books.waiting -= 1
            coro.close()
            if slot:
                books.give_back(task)
            raise
        return TaskHandle(task)

    def spawn_nowait(
        self, fn: Callable[..., Awaitable[T]], *args: object, name: object = None
    ) -> TaskHandle[T]:
        """Start ``fn(*args)`` in the group now if a slot is free, else raise. Not a checkpoint.

        The non-blocking :meth:`spawn`, named by trio's ``_nowait``
        convention, for callers that must not block and would rather drop
        (or retry) the work than queue it.

        Raises:
          trio.WouldBlock: if ``limit`` tasks are running (or others wait
            for a slot first), or the group's rate has no token now:
            nothing was started.
          TypeError: if ``fn`` is not an async function.
          RuntimeError: if the group is not open.
        """
        self._open_nursery()
        books = self._books
        task = _Task(books)
        limiter = books.limiter
        if limiter is not None:
            limiter.acquire_on_behalf_of_nowait(task)
        if books.rate is not None and not books.rate.try_acquire():
            books.give_back(task)
            raise trio.WouldBlock
        try:
            coro = _call(fn, args)
        except BaseException:
            books.give_back(task)
            raise
        return self._launch(task, coro, fn if name is None else name)

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
        books = self._books
        task = _Task(books)
        books.waiting += 1
        try:
            await books.admit(task)
        finally:
            books.waiting -= 1
        books.live += 1
        try:
            nursery = self._open_nursery()
            return await nursery.start(task.run, fn, args, name=fn if name is None else name)
        finally:
            if task.state == _PENDING:
                # the task never ran, so its runner never gave the slot back
                books.live -= 1
                books.give_back(task)

    def _launch(self, task: _Task, coro: Coroutine[Any, Any, Any], name: object) -> TaskHandle[Any]:
        """Start a task that holds its slot and rate token."""
        try:
            nursery = self._open_nursery()
            nursery.start_soon(task.run, coro, name=name)
        except BaseException:
            coro.close()
            self._books.give_back(task)
            raise
        self._books.live += 1
        return TaskHandle(task)

    # -- state ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The group's name (given, or ``task-group-N``)."""
        return self._name

    @property
    def on_error(self) -> OnError:
        """``"cancel"`` or ``"collect"``: what a failing task does to the rest."""
        return self._books.on_error

    @property
    def limiter(self) -> Limiter | None:
        """The limiter that bounds the group (``None`` without a limit)."""
        return self._books.limiter

    @property
    def rate(self) -> Pacer | None:
        """The rate limiter that paces the group's task starts, if any."""
        return self._books.rate

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The group's nursery cancel scope: ``tg.cancel_scope.cancel()`` cancels every task.

        Raises:
          RuntimeError: if the group is not open.
        """
        return self._open_nursery().cancel_scope

    def statistics(self) -> TaskGroupStatistics:
        """A snapshot of the group (plain reads; safe from any thread)."""
        books = self._books
        limiter = books.limiter
        return TaskGroupStatistics(
            name=self._name,
            limit=None if limiter is None else limiter.total_tokens,
            running=books.live,
            waiting=books.waiting,
            finished=books.finished,
            failed=books.failed,
            cancelled=books.cancelled,
            returned=books.returned,
        )

    def _trioflow_holders(self) -> list[Holding]:
        nursery = self._nursery
        if nursery is None:
            return []
        return [Holding(task, 1) for task in nursery.child_tasks]

    def _trioflow_waiters(self) -> list[Waiting]:
        # Spawners park on the limiter's queue with their task record as
        # borrower; show those, with the limiter they wait on.
        waiters_of = getattr(self._books.limiter, "_trioflow_waiters", None)
        if waiters_of is None:
            return []
        books = self._books
        out: list[Waiting] = []
        for waiter in waiters_of():
            borrower = getattr(waiter, "borrower", None)
            if isinstance(borrower, _Task) and borrower.books is books:
                out.append(waiter)
        return out

    def __repr__(self) -> str:
        books = self._books
        limiter = books.limiter
        limit = "" if limiter is None else f"/{limiter.total_tokens}"
        return (
            f"<trioflow.TaskGroup {self._name!r} at {id(self):#x}, "
            f"{books.live}{limit} running with {books.waiting} waiting>"
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


def _resolve_limit(limit: object, name: str) -> Limiter | None:
    """``limit=``: ``None``, a positive int (a new limiter named after the group), or a limiter."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        return CapacityLimiter(limit, name=name)
    if isinstance(limit, bool | float):
        raise_type("limit", "an int, a limiter or None", limit)
    return check_limiter(limit, "limit", expected="an int, a limiter or None")


def open_task_group(
    *,
    limit: int | object | None = None,
    on_error: OnError = "cancel",
    name: str | None = None,
    trace_tasks: bool | None = None,
    rate: Pacer | None = None,
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
      rate: a rate limiter (any :class:`~trioflow.Pacer`: a
        :class:`~trioflow.RateLimiter`, or a
        :class:`~trioflow.redis.RedisRateLimiter` shared by replicas) that
        paces task *starts*: each
        task takes one token after its slot and before it starts (so
        ``spawn``/``start`` also wait for the rate, holding the slot, and
        a ``start_soon`` task waits for it itself).
        A cancellation while waiting for the token gives the slot back.
        May be shared with other groups, ``amap`` and pipeline stages.
        ``spawn_nowait`` starts a task only when ``rate.try_acquire()``
        grants now, so with a Redis rate limiter (whose ``try_acquire``
        is always ``False``) it always raises :exc:`trio.WouldBlock`.

    Telemetry: with tracing at ``"stage"`` or ``"item"`` the group is one
    span, ``task_group {name}``, from ``async with`` to its exit, child of
    the span current where the group was opened; it ends with the error
    the group raised, if any. With tracing ``"off"`` the cost is one flag
    check when the group opens and one per task.

    Raises:
      TypeError: if ``limit`` is not an int, a limiter or ``None``,
        ``name`` is not a str, ``trace_tasks`` is not a bool or ``None``, or
        ``rate`` is not a :class:`~trioflow.Pacer` or ``None``.
      ValueError: if ``limit`` is below 1 or ``on_error`` is not one of the two.
    """
    return TaskGroup(limit=limit, on_error=on_error, name=name, trace_tasks=trace_tasks, rate=rate)
