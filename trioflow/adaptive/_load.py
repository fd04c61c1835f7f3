"""LoadFeedback: resize from an external load metric (CPU, queue length, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs

from ._base import Sample
from ._checks import check_fraction, check_positive_number, raise_type
from ._common import check_bounds

__all__ = ["LoadFeedback"]


@attrs.define(eq=False)
class LoadFeedback:
    """Resize from a load metric you already have: shrink when hot, grow when cool.

    Picture a pool that looks at the machine's load gauge now and then:
    above ``high`` it shrinks by ``decrease``, below ``low`` it grows by
    ``increase``, in between it holds. This is the classic hand-written
    pattern (shrink the pool by 20% above 80% CPU, grow it by 20% below
    50%, every 10 s), made safe to share:

    * ``read_load()`` is called **at most once per** ``interval``, from
      :meth:`update`, i.e. when the limiter finishes a block. There is no
      timer and no background task: an idle limiter reads nothing and
      changes nothing.
    * It grows only if the limiter was used (the peak in flight since the
      last reading reached ``min_utilization`` of the limit), so an idle
      service does not creep to ``max_limit`` and then admit a spike.
    * Each change moves the limit by at least one.

    Latency and drops are not read: this algorithm trusts the metric. Use it
    when the bottleneck is local (CPU, memory, a worker pool) and measured
    better than latency can show; use :class:`Cruise` for a remote one.

    Cost: ``update()`` is on the order of a microsecond per sample between
    readings, plus ``read_load()`` once per interval (figures in
    ``docs/benchmarks/adaptive.md``).

    Args:
      read_load: returns the current load, a finite number (for instance a
        CPU fraction, or queue length / capacity). Exceptions it raises
        propagate out of the block that triggered the reading.
      high: above this load, shrink.
      low: below this load, grow (``low <= high``).
      decrease: factor applied when shrinking, in (0, 1).
      increase: factor applied when growing, > 1.
      interval: seconds between readings (on the limiter's clock).
      initial_limit: the limit before any change.
      min_limit: lower bound (>= 1).
      max_limit: upper bound.
      min_utilization: fraction of the limit that must have been in flight
        since the last reading for a growth (0 grows regardless).
    """

    read_load: Callable[[], float]
    high: float = attrs.field(default=0.8, kw_only=True)
    low: float = attrs.field(default=0.5, kw_only=True)
    decrease: float = attrs.field(default=0.8, kw_only=True)
    increase: float = attrs.field(default=1.2, kw_only=True)
    interval: float = attrs.field(default=10.0, kw_only=True)
    initial_limit: int = attrs.field(default=20, kw_only=True)
    min_limit: int = attrs.field(default=1, kw_only=True)
    max_limit: int = attrs.field(default=1000, kw_only=True)
    min_utilization: float = attrs.field(default=0.5, kw_only=True)
    limit: int = attrs.field(init=False)
    """The current limit."""
    _next: float | None = attrs.field(init=False, default=None, repr=False)
    _peak: int = attrs.field(init=False, default=0, repr=False)
    _last_load: float = attrs.field(init=False, default=math.nan, repr=False)
    _readings: int = attrs.field(init=False, default=0, repr=False)

    def __attrs_post_init__(self) -> None:
        if not callable(self.read_load):
            raise_type("read_load", "a callable returning a number", self.read_load)
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        for name in ("high", "low"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise_type(name, "a number", value)
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low!r} and high={self.high!r}")
        decrease = check_positive_number(self.decrease, "decrease")
        if decrease >= 1:
            raise ValueError(f"decrease must be < 1, got {self.decrease!r}")
        if check_positive_number(self.increase, "increase") <= 1:
            raise ValueError(f"increase must be > 1, got {self.increase!r}")
        check_positive_number(self.interval, "interval")
        check_fraction(self.min_utilization, "min_utilization")
        self.limit = self.initial_limit

    def update(self, sample: Sample) -> int:
        """Take one sample; read the load if ``interval`` has passed; return the limit."""
        if sample.inflight > self._peak:
            self._peak = sample.inflight
        now = sample.end
        if self._next is None:
            self._next = now + self.interval
            return self.limit
        if now < self._next:
            return self.limit
        self._next = now + self.interval
        load = self.read_load()
        if isinstance(load, bool) or not isinstance(load, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("read_load()", "a number", load)
        if math.isnan(load):
            raise ValueError(f"read_load() must return a number, got {load!r}")
        self._last_load = float(load)
        self._readings += 1
        limit = self.limit
        if load > self.high:
            limit = max(self.min_limit, min(limit - 1, math.floor(limit * self.decrease)))
        elif load < self.low and self._peak >= self.min_utilization * limit:
            limit = min(self.max_limit, max(limit + 1, math.floor(limit * self.increase)))
        self._peak = 0
        self.limit = limit
        return limit

    def state(self) -> Mapping[str, float]:
        """``limit``, ``load`` (last reading, ``nan`` before the first) and ``readings``."""
        return {
            "limit": float(self.limit),
            "load": self._last_load,
            "readings": float(self._readings),
        }
