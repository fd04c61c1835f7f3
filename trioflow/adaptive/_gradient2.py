"""Gradient2: shrink when short-term RTT rises above a long-term average."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._base import Sample
from ._checks import check_positive_number
from ._common import Window, check_bounds, check_count, check_open_fraction, clamp

__all__ = ["Gradient2"]


@attrs.define(eq=False, kw_only=True)
class Gradient2:
    """Gradient2: compare each RTT with a slow average of past RTTs.

    Picture a driver who knows how long the commute usually takes (a slow
    moving average, ``long_rtt``) and eases off when today's trip is
    slower than ``tolerance`` times that. The ratio is the *gradient*; the
    limit follows it, plus a small ``queue_size`` allowance so it can probe
    upward.

    Per sample (or window), with limit ``L`` and RTT ``rtt``:

    * ``long_rtt`` is the plain mean of the first 10 samples, then an
      exponential average over ``long_window`` samples; when
      ``long_rtt / rtt > 2`` (the load fell away) it decays by 5%;
    * dropped: ``L = backoff * L`` (trioflow's addition, see below);
    * fewer than ``L / 2`` in flight: unchanged (no evidence about capacity);
    * else ``g = clamp(tolerance * long_rtt / rtt, 0.5, 1)`` and
      ``L = (1 - smoothing) * L + smoothing * (L * g + queue_size)``.

    Defaults follow Netflix ``Gradient2Limit`` except ``min_limit`` (Netflix
    20, here 1) and drops: Netflix never reads ``didDrop`` (its issue #176),
    so a downstream that fails fast with 503s never shrinks the limit; here a
    drop multiplies the limit by ``backoff`` (set ``backoff=1`` for Netflix's
    behaviour). Known weakness, kept on purpose so it can be compared: the
    long average chases the short-term RTT it is meant to judge, so under
    steady overload the reference creeps up and the limit with it (Netflix
    #134, #137); :class:`Cruise` re-measures its baseline instead.

    Cost: ``update()`` is microseconds per sample (figures in
    ``docs/benchmarks/adaptive.md``).

    Args:
      initial_limit: the limit before any sample.
      min_limit: lower bound (>= 1).
      max_limit: upper bound.
      smoothing: weight of the new target, in (0, 1].
      queue_size: the allowance added to ``L * g`` each update.
      long_window: samples in the long exponential average.
      tolerance: how much slower than ``long_rtt`` a sample may be before
        the limit shrinks (>= 1).
      backoff: the factor applied on a drop, in (0, 1].
      window: seconds per window (0: every sample is its own window).
      min_samples: samples a window needs to close.
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    smoothing: float = 0.2
    queue_size: int = 4
    long_window: int = 600
    tolerance: float = 1.5
    backoff: float = 0.9
    window: float = 0.0
    min_samples: int = 1
    limit: int = attrs.field(init=False)
    """The current limit."""
    _estimate: float = attrs.field(init=False, repr=False)
    #: the limit this algorithm last set; ``limit`` differing means a user set it
    _issued: int = attrs.field(init=False, default=0, repr=False)
    _long: float = attrs.field(init=False, default=0.0, repr=False)
    _count: int = attrs.field(init=False, default=0, repr=False)
    _last_rtt: float = attrs.field(init=False, default=0.0, repr=False)
    _window: Window = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        check_open_fraction(self.smoothing, "smoothing")
        check_count(self.queue_size, "queue_size", minimum=0)
        check_count(self.long_window, "long_window")
        if check_positive_number(self.tolerance, "tolerance") < 1:
            raise ValueError(f"tolerance must be >= 1, got {self.tolerance!r}")
        check_open_fraction(self.backoff, "backoff")
        check_positive_number(self.window, "window", allow_zero=True)
        check_count(self.min_samples, "min_samples")
        self.limit = self.initial_limit
        self._estimate = float(self.initial_limit)
        self._issued = self.initial_limit
        self._window = Window(self.window, self.min_samples)

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (pure arithmetic, no I/O)."""
        summary = self._window.add(sample)
        if summary is None:
            return self.limit
        if self.limit != self._issued:  # set from outside (total_tokens=)
            self._estimate = float(self.limit)
        folded = summary.as_sample()
        estimate = self._estimate
        if folded.dropped:
            estimate = max(float(self.min_limit), estimate * self.backoff)
            self._estimate = estimate
            self.limit = clamp(estimate, self.min_limit, self.max_limit)
            self._issued = self.limit
            return self.limit
        rtt = folded.rtt
        if rtt <= 0:
            return self.limit
        self._last_rtt = rtt
        self._count += 1
        if self._count <= 10:
            self._long += (rtt - self._long) / self._count
        else:
            self._long += (rtt - self._long) * 2 / (self.long_window + 1)
        if self._long / rtt > 2:
            self._long *= 0.95
        if folded.inflight < estimate / 2:
            return self.limit
        gradient = min(max(self.tolerance * self._long / rtt, 0.5), 1.0)
        target = estimate * gradient + self.queue_size
        estimate = (1 - self.smoothing) * estimate + self.smoothing * target
        estimate = min(max(estimate, float(self.min_limit)), float(self.max_limit))
        self._estimate = estimate
        self.limit = clamp(estimate, self.min_limit, self.max_limit)
        self._issued = self.limit
        return self.limit

    def state(self) -> Mapping[str, float]:
        """``limit``, ``estimate``, ``long_rtt`` and ``last_rtt`` (seconds)."""
        return {
            "limit": float(self.limit),
            "estimate": self._estimate,
            "long_rtt": self._long,
            "last_rtt": self._last_rtt,
        }
