"""RedisRateLimiter: one token bucket shared by every replica, kept in Redis.

How it works
------------

The bucket is GCRA (the "generic cell rate algorithm"), which is a token
bucket stored as one number: the *theoretical arrival time* ``tat`` — the
instant at which the bucket would be full again if nobody took anything
more. Each token moves ``tat`` forward by ``interval = 1/rate`` seconds; a
request for ``n`` tokens at time ``now`` is allowed at
``max(tat, now) + n * interval - burst * interval``. One Lua script per call
reads ``now`` from the *server's* clock (``redis.call('TIME')``), so the
replicas' clocks never matter, and updates ``tat`` atomically.

A caller that cannot go now is not refused: the script *reserves* its
tokens (moves ``tat`` forward) and answers with the delay until they are
due. The caller then sleeps locally until that instant — one round trip,
no polling — and goes. Because every reservation is ordered by the server,
callers are served in the order their requests reached Redis, whichever
replica they come from: replicas that demand equally get equal shares, and
none is starved. A caller cancelled while it sleeps gives its reservation
back (a second script moves ``tat`` back by its tokens), so a cancelled
waiter takes nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Final, final

import attrs
import trio

from .. import _registry
from .._registry import Holding, Waiting
from .._util import check_optional_name, check_positive_number, check_weight
from ..telemetry import _hooks
from ._common import (
    OnUnavailable,
    Parked,
    RedisUnavailableError,
    call,
    check_on_unavailable,
    check_timeout,
    park,
)

__all__ = ["RedisRateLimiter", "RedisRateLimiterStatistics"]

# KEYS[1]: the bucket's tat (server microseconds). ARGV: interval (µs per
# token), burst, n, mode ("wait": reserve and say when; "try": take only if
# free now; "refund": give n tokens back). Returns {granted, wait_us,
# tokens_left * 1000}. Numbers travel as strings with 17 significant digits:
# Lua's tostring() would round a microsecond timestamp to 14.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local mode = ARGV[4]
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local function store(value)
  local ttl = math.ceil((value - now) / 1000) + 1
  if value > now then
    redis.call('SET', KEYS[1], string.format('%.17g', value), 'PX', ttl)
  else
    redis.call('DEL', KEYS[1])
  end
end
if mode == 'refund' then
  local back = tat - n * interval
  if back < now then back = now end
  store(back)
  return {0, 0, math.floor((now + tau - back) / interval * 1000)}
end
local new_tat = tat + n * interval
local wait = new_tat - tau - now
if wait > 0 and mode == 'try' then
  return {0, math.ceil(wait), math.floor((now + tau - tat) / interval * 1000)}
end
store(new_tat)
if wait < 0 then wait = 0 end
local left = (now + tau - new_tat) / interval
if left < 0 then left = 0 end
return {1, math.ceil(wait), math.floor(left * 1000)}
"""


@attrs.frozen
class RedisRateLimiterStatistics:
    """A snapshot of a global rate limiter, from :meth:`RedisRateLimiter.statistics`."""

    name: str
    """The rate limiter's name (every replica that shares the bucket uses the same)."""

    rate: float
    """Tokens added per second, across all replicas."""

    burst: int
    """The bucket's size."""

    tokens: float | None
    """Tokens free in the shared bucket as of this replica's last call (``None``
    before the first); another replica may have taken them since."""

    tasks_waiting: int
    """Tasks of this replica sleeping until their reserved tokens are due."""

    granted: int
    """Tokens this replica was granted, net of those given back by cancellations."""

    unavailable: int
    """Calls of this replica for which Redis failed or did not answer in time."""

    allowed_unavailable: int
    """Of those, calls let through anyway (``on_unavailable="allow"``)."""


@final
class RedisRateLimiter:
    """A token bucket in Redis that every replica of a service draws from: ``rate`` per second in all.

    The same picture as :class:`trioflow.RateLimiter` — a bucket that fills
    with ``rate`` tokens per second up to ``burst``, and each call takes
    some — except that the bucket lives in Redis under ``name``, so every
    process that makes a ``RedisRateLimiter`` with that name shares it: ten
    replicas at ``rate=100`` send 100 calls per second in all, not 1,000.

    * ``await limiter.acquire(n)`` (or ``async with limiter:`` for one
      token) makes one Redis round trip: a Lua script on the server's clock
      takes the tokens, or reserves them and answers when they are due; the
      caller then sleeps *locally* until that instant. No polling, and no
      background task.
    * Callers are served in the order their requests reach Redis, from
      whichever replica: equal demand gets equal shares.
    * Cancellation: :meth:`acquire` is a checkpoint and atomic with respect
      to cancellation: a caller cancelled while it sleeps gives its
      reservation back (one more round trip, shielded, bounded by
      ``timeout``), so those behind it are not delayed by tokens nobody
      uses. The round trip itself is shielded (it is bounded by ``timeout``)
      so that its answer is never lost: a cancellation that arrives during
      it takes effect when it returns, with the tokens given back.
    * Failure: every call is bounded by ``timeout`` seconds. When Redis
      fails or does not answer, ``on_unavailable="raise"`` (the default:
      fail closed) raises :exc:`RedisUnavailableError`; ``"allow"`` (fail
      open) lets the call through at once, counted in
      :attr:`RedisRateLimiterStatistics.allowed_unavailable`. Fail open only
      when exceeding the limit for the length of an outage is harmless.
      A call that timed out may have reserved tokens on the server: they
      are spent, never returned (the safe direction).

    ``rate`` and ``burst`` are sent with every call, so every replica must
    use the same values (set them from the same configuration); changing
    them here takes effect at this replica's next call.

    Cost: one Redis round trip per :meth:`acquire` — about one plain
    ``PING``, two orders of magnitude above a local
    :class:`trioflow.RateLimiter` acquire (``bench/redis.py``,
    ``docs/benchmarks/redis.md``).

    Args:
      client: an open :class:`coredis.Redis` client (``async with
        coredis.Redis(...) as client:``).
      rate: tokens per second, for all replicas together: a finite number > 0.
      name: the bucket's name: replicas that use the same name share one
        bucket. Also what dumps, metrics and ``repr`` call it.
      burst: the bucket's size (an int >= 1): the most one call may ask for,
        and the most that go at once after a quiet spell.
      timeout: seconds each Redis call may take (default 1.0).
      on_unavailable: ``"raise"`` (default) or ``"allow"``: see above.
      key: the Redis key (default ``trioflow:rate:<name>``).

    .. note::

       :meth:`try_acquire` cannot know without a round trip whether the
       shared bucket has tokens: it never takes any and returns ``False``
       (so ``amap`` and task groups fall back to :meth:`acquire`). Use
       ``await limiter.acquire_if_free(n)`` to ask Redis.
    """

    __slots__ = (
        "__weakref__",
        "_allowed_unavailable",
        "_burst",
        "_client",
        "_granted",
        "_key",
        "_name",
        "_on_unavailable",
        "_rate",
        "_script",
        "_timeout",
        "_tokens",
        "_unavailable",
        "_waiting",
    )

    kind = "redis_rate_limiter"

    def __init__(
        self,
        client: Any,
        rate: float,
        *,
        name: str,
        burst: int = 1,
        timeout: float = 1.0,
        on_unavailable: OnUnavailable = "raise",
        key: str | None = None,
    ) -> None:
        self._rate = check_positive_number(rate, "rate")
        self._burst = check_weight(burst, "burst")
        checked = check_optional_name(name)
        if checked is None:
            raise TypeError("name must be a str: it names the bucket every replica shares")
        self._name: Final = checked
        self._timeout = check_timeout(timeout)
        self._on_unavailable = check_on_unavailable(on_unavailable)
        if key is not None and not isinstance(key, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"key must be a str, got {key!r}")
        self._key: Final = key if key is not None else f"trioflow:rate:{checked}"
        self._client: Final = client
        self._script: Final = client.register_script(_GCRA)
        self._tokens: float | None = None
        self._granted = 0
        self._unavailable = 0
        self._allowed_unavailable = 0
        self._waiting: dict[Parked, None] = {}
        _registry.register(self)

    # -- configuration ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The shared bucket's name."""
        return self._name

    @property
    def key(self) -> str:
        """The Redis key holding the bucket."""
        return self._key

    @property
    def rate(self) -> float:
        """Tokens per second for all replicas; settable (takes effect at this replica's next call)."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = check_positive_number(value, "rate")

    @property
    def burst(self) -> int:
        """The bucket's size; settable (takes effect at this replica's next call)."""
        return self._burst

    @burst.setter
    def burst(self, value: int) -> None:
        self._burst = check_weight(value, "burst")

    def _check_n(self, n: object) -> int:
        n = check_weight(n, "n")
        if n > self._burst:
            raise ValueError(f"n={n} is more than burst={self._burst}: it could never be granted")
        return n

    # -- the one round trip ----------------------------------------------------

    async def _run(self, n: int, mode: str) -> tuple[bool, float]:
        """Run the script; ``(granted, wait seconds)``. Raises RedisUnavailableError."""
        interval = 1e6 / self._rate
        try:
            reply = await call(
                f"{self.kind} {self._name!r}: {mode}",
                self._timeout,
                self._script,
                keys=[self._key],
                args=[repr(interval), self._burst, n, mode],
            )
        except RedisUnavailableError:
            self._unavailable += 1
            raise
        granted, wait_us, milli = (int(x) for x in reply)
        self._tokens = milli / 1000
        return bool(granted), wait_us / 1e6

    async def _refund(self, n: int) -> None:
        """Give ``n`` reserved tokens back (shielded; best effort within ``timeout``)."""
        with trio.CancelScope(shield=True):
            try:
                await self._run(n, "refund")
            except RedisUnavailableError:
                # Lost: the tokens stay spent, which errs on the safe side.
                return
        self._granted -= n

    # -- the public calls ------------------------------------------------------

    async def acquire(self, n: int = 1) -> None:
        """Take ``n`` tokens from the shared bucket, sleeping until they are due.

        One Redis round trip (shielded, bounded by ``timeout``), then a local
        sleep if the tokens are reserved for later. A checkpoint, and atomic
        with respect to cancellation: if it raises :class:`trio.Cancelled`,
        the tokens were given back (or, if Redis could not be reached to give
        them back, left spent: never used twice).

        Raises:
          RedisUnavailableError: Redis failed or did not answer within
            ``timeout`` and ``on_unavailable="raise"``.
          ValueError: if ``n`` is below 1 or above ``burst``.
          TypeError: if ``n`` is not an int.
        """
        if n != 1 or type(n) is not int:
            n = self._check_n(n)
        await trio.lowlevel.checkpoint_if_cancelled()
        wait = 0.0
        try:
            with trio.CancelScope(shield=True):
                _, wait = await self._run(n, "wait")
        except RedisUnavailableError:
            if self._on_unavailable == "raise":
                raise
            self._allowed_unavailable += 1
            await trio.lowlevel.checkpoint()
            return
        self._granted += n
        try:
            if wait <= 0:
                await trio.lowlevel.checkpoint()
                return
            record = Parked(self, n)
            self._waiting[record] = None
            try:
                await park(record, trio.current_time() + wait)
            finally:
                del self._waiting[record]
            hook = _hooks.wait_hook
            if hook is not None:
                hook(self, record.since, trio.current_time())
        except BaseException:
            await self._refund(n)
            raise

    async def acquire_if_free(self, n: int = 1) -> bool:
        """Take ``n`` tokens only if the shared bucket has them now; never waits for tokens.

        One Redis round trip; a checkpoint. Returns ``False`` (taking
        nothing) when the tokens are not free now. Cancelled after the
        server granted them, it gives them back.

        Raises:
          RedisUnavailableError: as :meth:`acquire`; with
            ``on_unavailable="allow"`` it returns ``True`` instead.
        """
        if n != 1 or type(n) is not int:
            n = self._check_n(n)
        await trio.lowlevel.checkpoint_if_cancelled()
        granted = False
        try:
            with trio.CancelScope(shield=True):
                granted, _ = await self._run(n, "try")
        except RedisUnavailableError:
            if self._on_unavailable == "raise":
                raise
            self._allowed_unavailable += 1
            await trio.lowlevel.checkpoint()
            return True
        if not granted:
            await trio.lowlevel.checkpoint()
            return False
        self._granted += n
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            await self._refund(n)
            raise
        return True

    def try_acquire(self, n: int = 1) -> bool:
        """Always ``False``: whether the shared bucket has tokens is known only to Redis.

        Present so that code written for :class:`trioflow.RateLimiter`
        (``if not rate.try_acquire(): await rate.acquire()``) works
        unchanged and correctly. Never blocks, never takes tokens, not a
        checkpoint. Use :meth:`acquire_if_free` to ask Redis.

        Raises:
          ValueError: if ``n`` is below 1 or above ``burst``.
        """
        if n != 1 or type(n) is not int:
            self._check_n(n)
        return False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    # -- state -----------------------------------------------------------------

    def statistics(self) -> RedisRateLimiterStatistics:
        """What this replica knows of the shared bucket (no round trip; safe from any thread)."""
        return RedisRateLimiterStatistics(
            name=self._name,
            rate=self._rate,
            burst=self._burst,
            tokens=self._tokens,
            tasks_waiting=len(self._waiting),
            granted=self._granted,
            unavailable=self._unavailable,
            allowed_unavailable=self._allowed_unavailable,
        )

    def _trioflow_holders(self) -> list[Holding]:
        # Tokens are spent, not held.
        return []

    def _trioflow_waiters(self) -> list[Waiting]:
        return list(self._waiting)

    def __repr__(self) -> str:
        return (
            f"<trioflow.redis.RedisRateLimiter {self._name!r} at {id(self):#x}, "
            f"{self._rate:g}/s burst {self._burst} with {len(self._waiting)} waiting>"
        )
