"""What a task that just parked waits on, cheaply enough for an instrument.

Instruments (the timeline, ``top``'s accounting) ask this at every park, so
it is built for repetition: a task parked on a trioflow primitive carries its
:class:`~trioflow._registry.Waiting` record in ``custom_sleep_data`` (O(1));
a task parked on one of trio's primitives is classified by the task dump's
own rules (:func:`trioflow.debug._dump` walks the coroutine chain to the
innermost known wait frame), once per primitive: trio's primitives park with
their parking lot or themselves as ``custom_sleep_data``, which keys a weak
cache. Only waits with no ``custom_sleep_data`` (sleep, I/O, a nursery
waiting for its children) walk the chain each time, and those walk it by
code objects alone (``cr_code``/``cr_await``), never touching a frame:
asking for a suspended coroutine's frame makes CPython build a frame object,
which lives as long as the wait, so a lookup per park fed the garbage
collector enough long-lived objects to keep it busy in a big service. Only
a wait whose label needs the frame (a primitive found through ``self``)
walks the frames.
"""

from __future__ import annotations

import types
import weakref
from typing import Any, NamedTuple

from trio.lowlevel import Task

from ._dump import (  # pyright: ignore[reportPrivateUsage]
    _classify,  # pyright: ignore[reportPrivateUsage]
    _code,  # pyright: ignore[reportPrivateUsage]
    _codes,  # pyright: ignore[reportPrivateUsage]
    _is_waiting,  # pyright: ignore[reportPrivateUsage]
    iter_frames,
)
from ._model import BlockedOn

__all__ = ["Parked", "WaitCache", "parked_on"]


class Parked(NamedTuple):
    """A park, as an instrument records it."""

    label: str
    """``limiter 'api'``, ``lock 'self.lock' <0x…>``, ``sleep``: :meth:`BlockedOn.describe`."""
    primitive: object
    """The trioflow primitive (registry entry) it waits on, else ``None``."""
    weight: int
    """Tokens asked for (trioflow primitives), else 1."""
    since: float | None
    """``trio.current_time()`` when it parked (trioflow primitives), else ``None``."""


class WaitCache:
    """Parks already worked out, weakly keyed by the object a task parks with."""

    __slots__ = ("by_id",)

    def __init__(self) -> None:
        #: id(obj) -> (weak ref to obj, its park); the ref tells a reused id apart
        self.by_id: dict[int, tuple[weakref.ref[Any], Parked]] = {}

    def get(self, obj: object) -> Parked | None:
        hit = self.by_id.get(id(obj))
        if hit is not None and hit[0]() is obj:
            return hit[1]
        return None

    def put(self, obj: object, park: Parked) -> None:
        if len(self.by_id) > 50_000:  # made on the fly: drop the lot, rebuild
            self.by_id.clear()
        try:
            ref = weakref.ref(obj)
        except TypeError:  # not weakly referenceable: classify it each time
            return
        self.by_id[id(obj)] = (ref, park)


def parked_on(task: Task, cache: WaitCache) -> Parked:
    """What ``task``, parked right now, waits on. Call only while it is parked."""
    csd: Any = task.custom_sleep_data
    if csd is not None:
        # Every park on the same trio primitive is the same Parked: one
        # dict lookup (this runs at every park a recording sees).
        hit = cache.by_id.get(id(csd))
        if hit is not None and hit[0]() is csd:
            return hit[1]
        if _is_waiting(csd):  # a trioflow wait: a record of its own each time
            prim: Any = csd.primitive
            known = cache.get(prim)
            if known is None:
                known = Parked(BlockedOn(prim.kind, prim.name, prim).describe(), prim, 1, None)
                cache.put(prim, known)
            return Parked(known.label, prim, csd.weight, csd.since)
    label = label_by_code(task.coro)
    if label is None:
        label = classify(task, csd).describe()
    park = Parked(label, None, 1, None)
    if csd is not None:
        cache.put(csd, park)
    return park


_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


def label_by_code(coro: Any) -> str | None:
    """:func:`classify`'s label from the chain's code objects alone, when the
    innermost known wait is named by its kind (sleep, I/O, a nursery): no
    frame object is made. ``None`` when the label needs a frame (a primitive
    found through ``self``) or the chain has a link other than a coroutine or
    a generator (an async generator's ``asend``): walk the frames then."""
    codes = _codes
    wait = None
    while coro is not None:
        t: type[Any] = type(coro)  # pyright: ignore[reportUnknownVariableType]
        if t is _CoroutineType:
            code = coro.cr_code
            nxt = coro.cr_await
        elif t is _GeneratorType:
            code = coro.gi_code
            nxt = coro.gi_yieldfrom
        else:
            return None
        c = codes.get(id(code))
        if c is None:
            c = _code(code)
        if not c.hide and c.library and c.wait_kind is not None and c.wait_kind != "parking lot":
            wait = c
        coro = nxt
    if wait is None or wait.self_kind or wait.wait_kind is None:
        return None
    return BlockedOn(wait.wait_kind, "", None).describe()


def classify(task: Task, csd: object) -> BlockedOn:
    """The dump's answer for one parked task (its innermost known wait frame)."""
    wait = lot = None
    user = None
    codes = _codes
    for f, _ in iter_frames(task):
        c = codes.get(id(f.f_code))
        if c is None:
            c = _code(f.f_code)
        if c.hide:
            continue
        if c.library:
            kind = c.wait_kind
            if kind is not None:
                if kind == "parking lot":
                    lot = (f, c, user)
                else:
                    wait = (f, c, user)
        else:
            user = f
    return _classify(wait, lot, csd, {})
