"""Limits and a stream source shared by many replicas, on Redis (extra ``[redis]``).

A service that runs as several processes still has one external API rate,
one database connection budget and one stream of events. This package
keeps each of them in Redis, so every replica draws from the same:

* :class:`RedisRateLimiter` — a token bucket in Redis (GCRA on the server's
  clock, one Lua script per call); the surface of :class:`trioflow.RateLimiter`.
* :func:`open_capacity_limiter` → :class:`RedisCapacityLimiter` — at most N
  held across all replicas, as leases with a TTL; a :class:`trioflow.Limiter`.
* :func:`open_stream_source` → :class:`StreamSource` — a consumer group of a
  Redis stream as a pipeline source: read as fast as the pipeline admits,
  acknowledged on each entry's final fate, dead letters to a stream,
  entries a dead replica left pending claimed by the others.

The client is `coredis <https://coredis.readthedocs.io>`_ (it runs on Trio
through AnyIO); pass an open ``coredis.Redis``.
"""

from .. import _util  # pyright: ignore[reportPrivateUsage]
from . import _require  # first: says which extra to install when coredis is missing
from ._capacity import GlobalLimiterStatistics as GlobalLimiterStatistics
from ._capacity import RedisCapacityLimiter as RedisCapacityLimiter
from ._capacity import RedisLimiterStatistics as RedisLimiterStatistics
from ._capacity import open_capacity_limiter as open_capacity_limiter
from ._common import LeaseLostError as LeaseLostError
from ._common import RedisUnavailableError as RedisUnavailableError
from ._rate import RedisRateLimiter as RedisRateLimiter
from ._rate import RedisRateLimiterStatistics as RedisRateLimiterStatistics
from ._stream import SettleFate as SettleFate
from ._stream import StreamEntry as StreamEntry
from ._stream import StreamSource as StreamSource
from ._stream import StreamSourceStatistics as StreamSourceStatistics
from ._stream import open_stream_source as open_stream_source

__all__ = [
    "GlobalLimiterStatistics",
    "LeaseLostError",
    "RedisCapacityLimiter",
    "RedisLimiterStatistics",
    "RedisRateLimiter",
    "RedisRateLimiterStatistics",
    "RedisUnavailableError",
    "SettleFate",
    "StreamEntry",
    "StreamSource",
    "StreamSourceStatistics",
    "open_capacity_limiter",
    "open_stream_source",
]

_util.fixup_module_metadata(__name__, globals())
del _util, _require
