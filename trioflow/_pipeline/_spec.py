"""A stage's configuration, checked when the stage is added (build time).

A :class:`StageSpec` is what ``Pipeline.map(...)`` & co. record: immutable,
validated once, reused by every run. Every check here raises at the builder
call that made the mistake, naming the parameter and the value.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs

from .._admission._protocol import Limiter, Pacer, check_limiter, check_pacer
from .._util import check_count, check_optional_name, check_positive_number, raise_type
from ._retry import Retry

__all__ = ["Executor", "Kind", "OnError", "StageSpec", "make_batch_spec", "make_spec"]

Kind = Literal["map", "filter", "flat_map", "each", "batch"]
OnError = Literal["fail", "skip", "dead_letter"]
Executor = Literal["thread", "process"]

_ON_ERROR: Final = ("fail", "skip", "dead_letter")
_EXECUTORS: Final = (None, "thread", "process")


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, or an object whose ``__call__`` is)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we want the class's __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _fn_name(fn: object) -> str:
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name != "<lambda>":
        return name
    return type(fn).__name__ if not inspect.isfunction(fn) else "lambda"


def check_stage_limiter(limiter: object) -> Limiter | None:
    """``limiter=`` of a stage: any limiter (a trio.CapacityLimiter is one), or ``None``.

    The one place a stage decides "is this a limiter".
    """
    return None if limiter is None else check_limiter(limiter, "limiter")


def check_rate(rate: object) -> Pacer | None:
    """``rate=`` is any rate limiter (a :class:`~trioflow.Pacer`) or ``None``."""
    return check_pacer(rate, "rate")


def check_stage_name(name: object) -> str | None:
    """A stage's ``name=``: ``None`` (named after its function) or a non-empty str."""
    checked = check_optional_name(name)
    if checked == "":
        raise ValueError("name must not be empty")
    return checked


@attrs.frozen
class StageSpec:
    """A validated stage: what it does and how (see ``Pipeline.map`` for the parameters)."""

    kind: Kind
    name: str
    fn: Callable[[Any], Any] | None
    workers: int = 1
    buffer: int = 0
    limiter: Limiter | None = None
    rate: Pacer | None = None
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

    @property
    def has_ordered_loop(self) -> bool:
        """Whether the stage runs the ordered loop (dispatcher, workers, emitter)."""
        return self.ordered and self.workers > 1 and self.kind != "batch"


def _check_executor_fn(fn: object, executor: str, is_async: bool) -> None:
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
                "executor='process' needs trio-parallel: the process extra, "
                "pip install '.[process]' in a clone of trioflow"
            ) from exc
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"with executor='process' the stage function must be picklable "
                f"(a module-level function), got {fn!r}: {exc}"
            ) from None


def make_spec(
    kind: Kind,
    fn: object,
    *,
    name: object = None,
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
    checked_limiter = check_stage_limiter(limiter)
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
    is_async = is_async_callable(fn)
    if executor is None:
        if not is_async and kind != "filter":
            raise TypeError(
                f"{kind} stage function must be an async function (or pass executor='thread' "
                f"or 'process' for a sync one), got {fn!r}"
            )
    else:
        _check_executor_fn(fn, str(executor), is_async)
    return StageSpec(
        kind=kind,
        name=_fn_name(fn) if stage_name is None else stage_name,
        fn=fn,  # pyright: ignore[reportArgumentType]
        workers=n_workers,
        buffer=n_buffer,
        limiter=checked_limiter,
        rate=rate_limiter,
        retry=retry,
        timeout=t,
        on_error=on_error,  # pyright: ignore[reportArgumentType]
        ordered=ordered,
        executor=executor,  # pyright: ignore[reportArgumentType]
        is_async=is_async,
    )


def make_batch_spec(size: object, max_wait: object, name: object, buffer: object) -> StageSpec:
    """Check a ``batch`` stage's configuration."""
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
