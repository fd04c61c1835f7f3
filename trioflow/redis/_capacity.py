"""RedisCapacityLimiter: at most ``total_tokens`` held at once across every replica.

How it works
------------

Redis keeps, under one prefix: the *leases* (a sorted set of lease ids by
expiry, on the server's clock, and a hash of their weights), the tokens in
use, and the *line* of waiters (a sorted set by arrival number, with a
second one of their expiries). One Lua script does every operation
atomically, and each run first *reaps*: it removes leases and waiters whose
expiry passed — which is how a replica killed by SIGKILL gives its slots
back within one TTL, with nobody having to notice it died.

A grant goes to the head of the line only (or to a newcomer when nobody
waits), and only if its whole weight fits: the same FIFO rule as the local
kernel, across replicas, so a heavy waiter is not overtaken and no replica
is starved. Whenever tokens free up, or the head changes, the script
PUBLISHes the id of the new head on the limiter's channel; each replica's
listener task wakes its own waiter with that id, which runs the script
again. Waiting is therefore wake-up driven. A waiter also re-runs the
script every ``ttl / 2`` seconds while it waits: that keeps its place in
line alive (a dead replica's waiters expire like its leases) and recovers
from a wake-up lost while the pub/sub connection was down.

Leases are renewed by a task in the limiter's own nursery (see
:func:`open_capacity_limiter`), every ``ttl / 3``, for all the replica's
leases in one round trip. Renewal *on use* would not do: a holder that
spends a long time in one call (the very case a limit protects) makes no
use of the limiter meanwhile, and its lease would expire under it. A lease
that the server no longer has, or that could not be renewed for a whole
TTL, is *lost*: the holder's ``hold()`` body is cancelled and it gets
:exc:`LeaseLostError`.

:meth:`RedisCapacityLimiter.release` is synchronous, as ``tf.Limiter``
requires: it frees the tokens locally at once and hands the lease to the
*releaser* task of the same nursery, which deletes it in Redis (in batches) and
thereby wakes the next waiter.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, final

import attrs
import trio

from .. import _registry
from .._admission._face import Permit
from .._admission._kernel import fits_total, never_granted
from .._registry import Holding, Waiting
from .._util import check_optional_name, check_total_tokens, check_weight
from ..telemetry import _hooks
from ._common import (
    LeaseLostError,
    Parked,
    RedisUnavailableError,
    call,
    check_timeout,
    park,
    serving,
    wake,
)

__all__ = ["RedisCapacityLimiter", "RedisLimiterStatistics", "open_capacity_limiter"]

#: Lua numbers are doubles; "unlimited" travels as this.
_INF: Final = 10**15

_SCRIPT: Final = """
local leases, weights, queue, qexp, seqk, usedk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local chan = ARGV[1]
local op = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changed = false
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
  local w = tonumber(redis.call('HGET', weights, id) or '0')
  redis.call('HDEL', weights, id)
  redis.call('ZREM', leases, id)
  redis.call('DECRBY', usedk, w)
  changed = true
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', qexp, '-inf', now)) do
  redis.call('ZREM', qexp, id)
  redis.call('ZREM', queue, id)
  changed = true
end
local function head() return redis.call('ZRANGE', queue, 0, 0)[1] end
local function notify()
  local h = head()
  if h then redis.call('PUBLISH', chan, h) end
end
if op == 'acquire' then
  local id, weight, total, ttl = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local h = head()
  local used = tonumber(redis.call('GET', usedk) or '0')
  if (not h or h == id) and used + weight <= total then
    redis.call('ZADD', leases, now + ttl, id)
    redis.call('HSET', weights, id, weight)
    redis.call('INCRBY', usedk, weight)
    if h then
      redis.call('ZREM', queue, id)
      redis.call('ZREM', qexp, id)
      changed = true
    end
    if changed then notify() end
    return 1
  end
  if ARGV[7] == 'wait' then
    if not redis.call('ZSCORE', queue, id) then
      redis.call('ZADD', queue, redis.call('INCR', seqk), id)
    end
    redis.call('ZADD', qexp, now + ttl, id)
  end
  if changed then notify() end
  return 0
elseif op == 'release' then
  local out = {}
  local h = head()
  for i = 3, #ARGV do
    local id = ARGV[i]
    local w = redis.call('HGET', weights, id)
    if w then
      redis.call('HDEL', weights, id)
      redis.call('ZREM', leases, id)
      redis.call('DECRBY', usedk, tonumber(w))
      changed = true
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
    if redis.call('ZREM', queue, id) == 1 then
      redis.call('ZREM', qexp, id)
      if id == h then changed = true end
    end
  end
  if changed then notify() end
  return out
elseif op == 'renew' then
  local ttl = tonumber(ARGV[3])
  local out = {}
  for i = 4, #ARGV do
    if redis.call('ZSCORE', leases, ARGV[i]) then
      redis.call('ZADD', leases, 'XX', now + ttl, ARGV[i])
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  if changed then notify() end
  return out
elseif op == 'state' then
  if changed then notify() end
  return {tonumber(redis.call('GET', usedk) or '0'), redis.call('ZCARD', leases),
          redis.call('ZCARD', queue)}
end
return redis.error_reply('unknown op ' .. op)
"""


@attrs.frozen
class RedisLimiterStatistics:
    """A snapshot of a global limiter as this replica sees it, from :meth:`RedisCapacityLimiter.statistics`."""

    name: str
    """The limiter's name (shared by every replica)."""

    total_tokens: int | float
    """Tokens all replicas together may hold at once."""

    borrowed_tokens: int
    """Tokens *this replica* holds (others' are in Redis: :meth:`RedisCapacityLimiter.global_statistics`)."""

    tasks_waiting: int
    """Tasks of this replica waiting for tokens."""

    borrowers: list[object]
    """Who holds this replica's tokens (tasks, or ``to_thread`` placeholders)."""

    leases_lost: int
    """Leases this replica held that expired on the server before they were released."""

    unavailable: int
    """Calls to Redis that failed or did not answer within ``timeout``."""


@attrs.frozen
class GlobalLimiterStatistics:
    """What Redis holds for a global limiter, from :meth:`RedisCapacityLimiter.global_statistics`."""

    borrowed_tokens: int
    """Tokens held by all replicas together."""

    leases: int
    """Live leases, all replicas."""

    waiting: int
    """Waiters in line, all replicas."""


class _Lease:
    """One lease this replica holds: its id in Redis, its weight, whether it is lost."""

    __slots__ = ("confirmed_until", "id", "lost", "scope", "weight")

    def __init__(self, lease_id: str, weight: int, confirmed_until: float) -> None:
        self.id: Final = lease_id
        self.weight = weight
        #: Local time until which the server surely still has the lease.
        self.confirmed_until = confirmed_until
        self.lost = False
        #: The cancel scope of the ``hold()`` block holding it, if any.
        self.scope: trio.CancelScope | None = None


@final
class RedisCapacityLimiter:
    """A capacity limiter whose tokens are shared by every replica: at most ``total_tokens`` in all.

    The picture of :class:`trioflow.CapacityLimiter` — a sack of tokens;
    each task takes some for the length of its work and gives them back —
    with the sack in Redis, so fifty database connections stay fifty however
    many replicas run. Made only by :func:`open_capacity_limiter`, whose
    nursery runs its listener, lease renewal and releaser tasks.

    * ``async with limiter:``, ``await limiter.acquire(weight)`` /
      ``limiter.release()``, ``async with limiter.hold(weight) as permit:``,
      and trio's ``*_on_behalf_of`` methods (so
      ``trio.to_thread.run_sync(fn, limiter=limiter)`` works): it is a
      :class:`trioflow.Limiter`.
    * Acquiring is a checkpoint and atomic with respect to cancellation; a
      cancelled waiter leaves the shared line (one shielded round trip
      bounded by ``timeout``). While it waits a task parks (a task dump shows
      it waiting on this limiter) until the listener wakes it.
    * Each holder is a lease with a TTL (``ttl`` seconds) renewed in the
      background while held. A lease lost on the server (renewal impossible
      for a whole TTL) is reported: the ``hold()`` body is cancelled and
      :exc:`LeaseLostError` raised at its end; ``async with limiter:`` and
      :meth:`release` raise it too.
    * Waiters are served first come, first served across all replicas, and
      a heavy waiter at the head is not overtaken.
    * Failure (fail closed): each Redis call is bounded by ``timeout``;
      :meth:`acquire` raises :exc:`RedisUnavailableError` when Redis fails
      or does not answer. A limit on concurrency never fails open.

    ``total_tokens`` is sent with each call: every replica must use the
    same value; setting it here takes effect at once for this replica's
    waiters (growing it wakes them) and for its next calls.

    The ``nowait`` variants can never take a global token without a round
    trip: they raise :class:`trio.WouldBlock` (after the usual argument
    checks), so callers fall back to the waiting form.

    Cost: an uncontended acquire/release is two Redis round trips (the
    release's runs in the background): about two ``PING`` round trips, two orders of
    magnitude above a local :class:`trioflow.CapacityLimiter`
    (``bench/redis.py``, ``docs/benchmarks/redis.md``).
    """

    __slots__ = (
        "__weakref__",
        "_client",
        "_holders",
        "_ids",
        "_keys",
        "_leases_lost",
        "_name",
        "_pending_release",
        "_release_wanted",
        "_releasing",
        "_renew_wanted",
        "_replica",
        "_script",
        "_serving",
        "_timeout",
        "_total",
        "_ttl",
        "_unavailable",
        "_waiters",
    )

    kind = "redis_limiter"

    def __init__(
        self,
        client: Any,
        total_tokens: int | float,
        name: str,
        ttl: float,
        timeout: float,
        prefix: str | None,
    ) -> None:
        self._total = check_total_tokens(total_tokens)
        self._name: Final = name
        self._ttl: Final = ttl
        self._timeout: Final = timeout
        base = prefix if prefix is not None else f"trioflow:limiter:{{{name}}}"
        self._keys: Final = [
            f"{base}:{part}" for part in ("leases", "weights", "queue", "qexp", "seq", "used")
        ]
        self._client: Final = client
        self._script: Final = client.register_script(_SCRIPT)
        self._replica: Final = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._holders: dict[object, _Lease] = {}
        #: lease id -> the parked record of the local task waiting under that id
        self._waiters: dict[str, Parked] = {}
        self._pending_release: list[str] = []
        #: lease ids whose release call is under way
        self._releasing = 0
        self._release_wanted = trio.Event()
        self._renew_wanted = trio.Event()
        self._leases_lost = 0
        self._unavailable = 0
        #: True inside open_capacity_limiter's block (its tasks are running)
        self._serving = False
        _registry.register(self)

    @property
    def channel(self) -> str:
        """The pub/sub channel on which Redis names the next waiter to try."""
        return f"{self._keys[0]}:wake"

    # -- Limiter surface: configuration and state ------------------------------

    @property
    def name(self) -> str:
        """The limit's name (replicas using the same name share it)."""
        return self._name

    @property
    def replica_id(self) -> str:
        """This limiter's lease ids in Redis start with ``"<replica_id>:"`` (for operators)."""
        return self._replica

    @property
    def leases_key(self) -> str:
        """The Redis sorted set of live leases (lease id → expiry, server milliseconds)."""
        return self._keys[0]

    @property
    def ttl(self) -> float:
        """Seconds a lease lives on the server without renewal."""
        return self._ttl

    @property
    def total_tokens(self) -> int | float:
        """Tokens all replicas may hold at once; settable (every replica must agree)."""
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: int | float) -> None:
        self._total = check_total_tokens(value)
        for record in list(self._waiters.values()):
            wake(record)

    @property
    def borrowed_tokens(self) -> int:
        """Tokens this replica holds."""
        return sum(lease.weight for lease in self._holders.values())

    @property
    def available_tokens(self) -> int | float:
        """``total_tokens`` less what *this replica* holds (an upper bound on what is free)."""
        return self._total - self.borrowed_tokens

    def statistics(self) -> RedisLimiterStatistics:
        """This replica's side (no round trip; safe from any thread)."""
        return RedisLimiterStatistics(
            name=self._name,
            total_tokens=self._total,
            borrowed_tokens=self.borrowed_tokens,
            tasks_waiting=len(self._waiters),
            borrowers=list(self._holders),
            leases_lost=self._leases_lost,
            unavailable=self._unavailable,
        )

    async def global_statistics(self) -> GlobalLimiterStatistics:
        """What Redis holds for this limiter, all replicas (one round trip; reaps expired leases).

        Raises:
          RedisUnavailableError: Redis failed or did not answer within ``timeout``.
        """
        used, leases, waiting = await self._run("state")
        return GlobalLimiterStatistics(int(used), int(leases), int(waiting))

    def _trioflow_holders(self) -> list[Holding]:
        return [Holding(b, lease.weight) for b, lease in self._holders.items()]

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._waiters.values())

    def __repr__(self) -> str:
        total = "inf" if self._total == math.inf else str(self._total)
        return (
            f"<trioflow.redis.RedisCapacityLimiter {self._name!r} at {id(self):#x}, "
            f"{self.borrowed_tokens}/{total} held here with {len(self._waiters)} waiting>"
        )

    # -- the round trip --------------------------------------------------------

    async def _run(self, op: str, *args: object) -> Any:
        try:
            return await call(
                f"{self.kind} {self._name!r}: {op}",
                self._timeout,
                self._script,
                keys=self._keys,
                args=[self.channel, op, *args],
            )
        except RedisUnavailableError:
            self._unavailable += 1
            raise

    def _check_weight(self, weight: object) -> int:
        weight = check_weight(weight)
        total = self._total
        if total != 0 and total != math.inf and weight > total:
            raise ValueError(
                f"weight={weight} is more than {self.kind} {self._name!r}'s "
                f"total_tokens={total}: it could never be granted"
            )
        return weight

    def _check_borrower(self, borrower: object) -> None:
        if borrower in self._holders:
            raise RuntimeError(
                f"this borrower is already holding tokens of {self.kind} {self._name!r}; "
                "release them before acquiring again"
            )

    # -- acquire ---------------------------------------------------------------

    async def acquire_on_behalf_of(self, borrower: object, weight: int = 1) -> None:
        """Take ``weight`` tokens of the global limit for ``borrower``, waiting in the shared line.

        A checkpoint, and atomic with respect to cancellation: cancelled, it
        holds nothing and has left the line. Each round trip is shielded and
        bounded by ``timeout``, so a cancellation takes effect within one
        round trip.

        Raises:
          RedisUnavailableError: Redis failed or did not answer within
            ``timeout`` (nothing is held; a lease the server may have granted
            meanwhile is released in the background, or expires within ``ttl``).
          RuntimeError: ``borrower`` already holds tokens of this limiter.
          ValueError, TypeError: a bad ``weight``; or, while it waits,
            ``total_tokens`` was lowered below ``weight`` (not to 0, a pause):
            it leaves the line, so those behind it go on.
        """
        if weight.__class__ is not int or weight != 1:
            weight = self._check_weight(weight)
        self._check_borrower(borrower)
        if not self._serving:
            raise RuntimeError(
                f"{self.kind} {self._name!r} is not open: use it inside "
                "'async with trioflow.redis.open_capacity_limiter(...)'"
            )
        await trio.lowlevel.checkpoint_if_cancelled()
        lease_id = f"{self._replica}:{next(self._ids)}"
        record = Parked(self, weight)
        self._waiters[lease_id] = record
        granted = False
        waited = False
        sent = trio.current_time()
        try:
            while True:
                if not fits_total(self._total, weight):
                    # Lowered below this waiter's weight while it waited: it can
                    # never be granted, and in the shared FIFO line it would
                    # hold back every waiter behind it, on every replica.
                    raise never_granted(weight, self.kind, self._name, self._total)
                total = _INF if self._total == math.inf else self._total
                # Shielded (and bounded by timeout) so that a grant is never
                # lost to a cancellation arriving during the round trip.
                with trio.CancelScope(shield=True):
                    sent = trio.current_time()
                    # A wake-up from here on (during the round trip) means
                    # "try again"; one from before is answered by this call.
                    record.nudged = False
                    granted = bool(
                        await self._run(
                            "acquire", lease_id, weight, total, round(self._ttl * 1000), "wait"
                        )
                    )
                if granted:
                    break
                waited = True
                await park(record, trio.current_time() + self._ttl / 2)
        except BaseException:
            # Cancelled, or Redis failed: leave the line, and if a timed-out
            # call did grant a lease after all, give it back.
            del self._waiters[lease_id]
            await self._withdraw(lease_id)
            raise
        del self._waiters[lease_id]
        lease = _Lease(lease_id, weight, sent + self._ttl)
        self._holders[borrower] = lease
        self._renew_wanted.set()
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            self._drop(borrower)
            raise
        if waited:
            hook = _hooks.wait_hook
            if hook is not None:
                hook(self, record.since, trio.current_time())

    async def _withdraw(self, lease_id: str) -> None:
        """Leave the shared line (shielded; on failure the releaser retries, and the entry expires)."""
        with trio.CancelScope(shield=True):
            try:
                await self._run("release", lease_id)
            except RedisUnavailableError:
                self._queue_release(lease_id)

    async def acquire(self, weight: int = 1) -> None:
        """Take ``weight`` tokens for the current task (see :meth:`acquire_on_behalf_of`)."""
        await self.acquire_on_behalf_of(trio.lowlevel.current_task(), weight)

    def acquire_on_behalf_of_nowait(self, borrower: object, weight: int = 1) -> None:
        """Raises :class:`trio.WouldBlock` always: a global token needs a round trip.

        Checks its arguments as :meth:`acquire_on_behalf_of` does first.
        Not a checkpoint.
        """
        if weight.__class__ is not int or weight != 1:
            self._check_weight(weight)
        self._check_borrower(borrower)
        raise trio.WouldBlock

    def acquire_nowait(self, weight: int = 1) -> None:
        """Raises :class:`trio.WouldBlock` always (see :meth:`acquire_on_behalf_of_nowait`)."""
        self.acquire_on_behalf_of_nowait(trio.lowlevel.current_task(), weight)

    # -- release ---------------------------------------------------------------

    def _drop(self, borrower: object) -> _Lease:
        lease = self._holders.pop(borrower)
        self._queue_release(lease.id)
        return lease

    def _queue_release(self, lease_id: str) -> None:
        self._pending_release.append(lease_id)
        self._release_wanted.set()

    def release_on_behalf_of(self, borrower: object, weight: int | None = None) -> None:
        """Give back what ``borrower`` holds. Never blocks; not a checkpoint.

        The tokens are free for this replica at once; Redis learns in the
        background (the releaser task), which wakes the next waiter.
        Giving back part of a lease (``weight`` less than held) shrinks it
        locally and in Redis at the next renewal.

        Raises:
          LeaseLostError: the lease had expired on the server (the tokens
            are given back all the same).
          RuntimeError: ``borrower`` holds no tokens of this limiter.
          ValueError: ``weight`` is more than it holds, or below 1.
        """
        lease = self._holders.get(borrower)
        if lease is None:
            raise RuntimeError(
                f"this borrower isn't holding any of {self.kind} {self._name!r}'s tokens"
            )
        if weight is not None:
            weight = check_weight(weight)
            if weight > lease.weight:
                raise ValueError(
                    f"weight={weight!r} is more than the {lease.weight} tokens "
                    f"this borrower holds of {self.kind} {self._name!r}"
                )
            if weight < lease.weight:
                # Partial release is kept local: the lease stays whole in
                # Redis (the safe side) until it is released in full.
                lease.weight -= weight
                return
        self._drop(borrower)
        if lease.lost:
            raise LeaseLostError(
                f"{self.kind} {self._name!r}: this holder's lease expired on the server "
                f"before it was released (not renewed for ttl={self._ttl:g}s)"
            )

    def release(self, weight: int | None = None) -> None:
        """Give back what the current task holds (see :meth:`release_on_behalf_of`)."""
        self.release_on_behalf_of(trio.lowlevel.current_task(), weight)

    # -- context managers ------------------------------------------------------

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def hold(self, weight: int = 1) -> _HoldContext:
        """``async with limiter.hold(weight) as permit:`` — hold ``weight`` global tokens for the block.

        Entering blocks like :meth:`acquire`. If the lease is lost while
        the block runs, the block is cancelled and :exc:`LeaseLostError` is
        raised from it. Leaving is not a checkpoint. The
        :class:`~trioflow.Permit`'s ``drop()``/``ignore()`` are recorded
        (this limiter is not adaptive).
        """
        if weight.__class__ is not int or weight != 1:
            weight = self._check_weight(weight)
        return _HoldContext(self, weight)

    # -- background tasks (run by open_capacity_limiter's nursery) -------------

    async def _listen(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Wake the local waiter Redis names as the head of the line."""
        started = False
        delay = 0.05
        while True:
            try:
                async with self._client.pubsub(channels=[self.channel]) as pubsub:
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        # Reconnected: wake-ups may have been missed meanwhile.
                        for record in list(self._waiters.values()):
                            wake(record)
                    delay = 0.05
                    async for message in pubsub:
                        if message["type"] != "message":
                            continue
                        data = message["data"]
                        lease_id = data.decode() if isinstance(data, bytes) else str(data)
                        record = self._waiters.get(lease_id)
                        if record is not None:
                            wake(record)
            except trio.Cancelled:
                raise
            except Exception:
                if not started:
                    raise
                self._unavailable += 1
            await trio.sleep(delay)
            delay = min(delay * 2, self._ttl / 3)

    async def _renew_loop(self) -> None:
        interval = self._ttl / 3
        while True:
            if not self._holders:
                self._renew_wanted = trio.Event()
                await self._renew_wanted.wait()
                await trio.sleep(interval)
                continue
            leases = list(self._holders.items())
            sent = trio.current_time()
            try:
                reply = await self._run(
                    "renew", round(self._ttl * 1000), *(lease.id for _, lease in leases)
                )
            except RedisUnavailableError:
                now = trio.current_time()
                for _, lease in leases:
                    if not lease.lost and lease.confirmed_until <= now:
                        self._lose(lease)
                await trio.sleep(min(interval, self._timeout))
                continue
            for (_, lease), alive in zip(leases, reply, strict=True):
                if lease.lost:
                    continue
                if int(alive):
                    lease.confirmed_until = sent + self._ttl
                else:
                    self._lose(lease)
            await trio.sleep(interval)

    def _lose(self, lease: _Lease) -> None:
        lease.lost = True
        self._leases_lost += 1
        if lease.scope is not None:
            lease.scope.cancel()

    async def _release_loop(self) -> None:
        delay = 0.05
        while True:
            if not self._pending_release:
                self._release_wanted = trio.Event()
                await self._release_wanted.wait()
            batch = self._pending_release
            self._pending_release = []
            self._releasing = len(batch)
            try:
                await self._run("release", *batch)
            except BaseException as exc:
                # Put them back (for the next try, or the flush on close);
                # an entry left in Redis expires within ttl anyway.
                self._pending_release[:0] = batch
                if not isinstance(exc, RedisUnavailableError):
                    raise
                await trio.sleep(delay)
                delay = min(delay * 2, self._ttl)
                continue
            finally:
                self._releasing = 0
            delay = 0.05

    async def _flush(self) -> None:
        """On close: give Redis back every lease still held or queued for release."""
        for borrower in list(self._holders):
            self._drop(borrower)
        if self._pending_release:
            batch = self._pending_release
            self._pending_release = []
            # What cannot be given back expires on the server within ttl.
            with trio.CancelScope(shield=True), contextlib.suppress(RedisUnavailableError):
                await self._run("release", *batch)


class _HoldContext:
    """``async with limiter.hold(weight) as permit:`` on a global limiter."""

    __slots__ = ("_limiter", "_permit", "_scope", "_task")

    def __init__(self, limiter: RedisCapacityLimiter, weight: int) -> None:
        self._limiter = limiter
        self._permit = Permit(weight)
        self._task: trio.lowlevel.Task | None = None
        self._scope: trio.CancelScope | None = None

    async def __aenter__(self) -> Permit:
        if self._task is not None:
            raise RuntimeError("a hold() context can be entered only once")
        task = trio.lowlevel.current_task()
        limiter = self._limiter
        await limiter.acquire_on_behalf_of(task, self._permit.weight)
        self._task = task
        scope = self._scope = trio.CancelScope()
        scope.__enter__()
        limiter._holders[task].scope = scope  # pyright: ignore[reportPrivateUsage]
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._task is not None
        assert self._scope is not None
        limiter = self._limiter
        lease = limiter._holders.get(self._task)  # pyright: ignore[reportPrivateUsage]
        lost = lease is not None and lease.lost
        try:
            suppressed = self._scope.__exit__(exc_type, exc, tb)
        finally:
            if lease is not None:
                limiter._drop(self._task)  # pyright: ignore[reportPrivateUsage]
        if lost:
            raise LeaseLostError(
                f"{limiter.kind} {limiter.name!r}: the lease expired on the server while held "
                f"(not renewed for ttl={limiter.ttl:g}s); the block was cancelled"
            ) from (None if suppressed else exc)
        return bool(suppressed)


@asynccontextmanager
async def open_capacity_limiter(
    client: Any,
    total_tokens: int | float,
    *,
    name: str,
    ttl: float = 10.0,
    timeout: float = 1.0,  # noqa: ASYNC109 (bounds each Redis call, not the block)
    prefix: str | None = None,
) -> AsyncGenerator[RedisCapacityLimiter]:
    """Open a global capacity limiter named ``name``: ``total_tokens`` shared by every replica.

    ``async with trioflow.redis.open_capacity_limiter(client, 50, name="db") as db:``
    then use ``db`` as any :class:`trioflow.Limiter`. The block runs a
    nursery with three small tasks: the pub/sub listener that wakes this
    replica's waiters, the lease renewer, and the releaser. Entering
    subscribes (one round trip, bounded by ``timeout``); leaving gives back
    in Redis every lease still held (shielded, bounded by ``timeout``;
    what it cannot give back expires within ``ttl``).

    Args:
      client: an open :class:`coredis.Redis` client.
      total_tokens: tokens all replicas together may hold at once (an int
        >= 0, or ``math.inf``); every replica must pass the same.
      name: the limiter's name: replicas using the same name share it.
      ttl: seconds a lease outlives its replica's last renewal: the time a
        dead replica's slots take to come back (renewal runs every ``ttl/3``).
      timeout: seconds each Redis call may take.
      prefix: the Redis key prefix (default ``trioflow:limiter:{<name>}``).

    Raises:
      RedisUnavailableError: Redis could not be reached on entry.
    """
    checked = check_optional_name(name)
    if checked is None:
        raise TypeError("name must be a str: it names the limit every replica shares")
    ttl = check_timeout(ttl, "ttl")
    timeout = check_timeout(timeout)
    if prefix is not None and not isinstance(prefix, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"prefix must be a str, got {prefix!r}")
    limiter = RedisCapacityLimiter(client, total_tokens, checked, ttl, timeout, prefix)

    async def start(nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(timeout):
                await nursery.start(limiter._listen)  # pyright: ignore[reportPrivateUsage]
        except Exception as exc:
            what = (
                f"within timeout={timeout:g}s" if isinstance(exc, trio.TooSlowError) else str(exc)
            )
            raise RedisUnavailableError(
                f"{limiter.kind} {checked!r}: could not subscribe {what}"
            ) from exc
        nursery.start_soon(limiter._renew_loop)  # pyright: ignore[reportPrivateUsage]
        nursery.start_soon(limiter._release_loop)  # pyright: ignore[reportPrivateUsage]
        limiter._serving = True  # pyright: ignore[reportPrivateUsage]

    async def close() -> None:
        limiter._serving = False  # pyright: ignore[reportPrivateUsage]
        await limiter._flush()  # pyright: ignore[reportPrivateUsage]

    async with serving(start, close):
        yield limiter
