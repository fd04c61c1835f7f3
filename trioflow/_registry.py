"""The one registry of live trioflow primitives.

Every limiter, lane, rate limiter, task group and pipeline registers itself
here when it is made, weakly: the registry never keeps a primitive alive. Task
dumps, deadlock detection and metrics read it; primitives never import them.

What a registered primitive offers (the :class:`Inspectable` protocol):

* ``kind`` and ``name`` — what a dump prints ("limiter 'api'"); ``kind`` is
  a snake_case identifier (``limiter``, ``lane``, ``priority_limiter``,
  ``rate_limiter``, ``task_group``, ``pipeline``, ``stage``), which dumps may
  display with spaces;
* ``_trioflow_holders()`` — who holds it now, and how much;
* ``_trioflow_waiters()`` — who waits on it now, for how much, since when;
* optionally ``_trioflow_pool`` — the primitive whose tokens this one shares
  (a lane handle's :class:`~trioflow.PriorityLimiter`; a limiter's is
  itself): readers such as deadlock detection fold primitives with the same
  pool into one resource. Absent means the primitive itself.

A task parked on a trioflow primitive also carries its :class:`Waiting`
record in ``task.custom_sleep_data`` (the slot trio reserves for whoever
parks the task), so a dump finds what any task waits on in O(1) without
scanning every primitive.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs
from trio.lowlevel import Task

__all__ = [
    "Holding",
    "Inspectable",
    "Waiting",
    "label",
    "label_of",
    "live",
    "register",
]


@runtime_checkable
class Waiting(Protocol):
    """A task parked on a primitive: what it waits on, for how much, since when."""

    @property
    def task(self) -> Task: ...

    @property
    def primitive(self) -> Inspectable:
        """The object the task waits on (a limiter, a lane handle, a rate limiter...)."""
        ...

    @property
    def weight(self) -> int: ...

    @property
    def since(self) -> float:
        """``trio.current_time()`` when the task parked."""
        ...


@attrs.frozen
class Holding:
    """One holder of a primitive: ``borrower`` holds ``weight`` tokens of it.

    ``borrower`` is usually a :class:`trio.lowlevel.Task`; for
    ``trio.to_thread.run_sync(limiter=...)`` it is trio's per-call placeholder.
    """

    borrower: object
    weight: int
    lane: str | None = None


@runtime_checkable
class Inspectable(Protocol):
    """What the registry's readers may ask of a registered primitive."""

    @property
    def kind(self) -> str:
        """The primitive's kind, a snake_case identifier: ``"limiter"``, ``"lane"``, ``"rate_limiter"``..."""
        ...

    @property
    def name(self) -> str: ...

    def _trioflow_holders(self) -> list[Holding]: ...

    def _trioflow_waiters(self) -> list[Waiting]: ...


# id -> weak reference. A plain dict guarded by a lock (readers may be the
# OpenTelemetry exporter thread) rather than a WeakSet, whose iteration is not
# safe against concurrent mutation from another thread.
#
# The weakref callback never takes the lock and never touches the dict: a
# garbage collection can run it in the middle of any allocation, including
# one made while this very thread holds the lock (a plain lock would then
# wait for itself forever; a reentrant one would let the dict change under
# an iteration). It only records the dead key in ``_dead`` (a deque, whose
# append is atomic and never blocks); the next locked operation sweeps what
# was recorded. Under the lock nothing runs but dict and deque operations.
_lock = threading.Lock()
_entries: dict[int, weakref.ref[Inspectable]] = {}
_dead: collections.deque[int] = collections.deque()
_counter = itertools.count(1)


def _forget(key: int) -> Callable[[object], None]:
    def callback(_: object) -> None:
        _dead.append(key)

    return callback


def _sweep() -> None:
    """Drop the entries of primitives that died (call with ``_lock`` held)."""
    while _dead:
        _entries.pop(_dead.popleft(), None)


def register(obj: Inspectable) -> None:
    """Record ``obj`` as live until it is garbage-collected."""
    key = next(_counter)
    ref = weakref.ref(obj, _forget(key))
    with _lock:
        _sweep()
        _entries[key] = ref


def live(kind: str | None = None) -> list[Inspectable]:
    """Every registered primitive still alive (of one ``kind`` if given), oldest first.

    Safe to call from any thread, also while garbage collections free
    registered primitives: it copies the entries under a lock and reads
    nothing but plain attributes afterwards.
    """
    with _lock:
        _sweep()
        refs = list(_entries.values())
    out: list[Inspectable] = []
    for ref in refs:
        obj = ref()
        if obj is not None and (kind is None or obj.kind == kind):
            out.append(obj)
    return out


#: Names for trio objects a primitive owns (a pipeline's channels), weakly
#: keyed. No lock: one ``WeakKeyDictionary`` operation at a time is safe from
#: any thread, and its weakref callbacks take none.
_labels: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def label(obj: object, text: str) -> None:
    """Name ``obj``, a trio object a primitive owns, for dumps: ``"events: parse → store"``.

    A dump names a task parked on a trio primitive by the variable that holds
    it in user code; a primitive's internals (a pipeline's channels) have no
    such variable, so the primitive labels them here. Weak: the label goes
    with the object. Objects that cannot be weakly referenced are not labelled.
    """
    with contextlib.suppress(TypeError):
        _labels[obj] = text


def label_of(obj: object) -> str | None:
    """The label :func:`label` gave ``obj``, if any. Any thread; never blocks."""
    try:
        return _labels.get(obj)
    except TypeError:
        return None


def default_name(kind: str) -> str:
    """A readable default name for an unnamed primitive: ``limiter-3``, ``rate-limiter-4``."""
    return f"{kind.replace('_', '-')}-{next(_names)}"


_names = itertools.count(1)
