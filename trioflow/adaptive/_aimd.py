"""AIMD: grow by one while busy, shrink by a factor on overload."""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ._base import Sample
from ._checks import check_positive_number
from ._common import Window, check_bounds, check_count, clamp

__all__ = ["AIMD"]


@attrs.define(eq=False, kw_only=True)
class AIMD:
    """Additive increase, multiplicative decrease: the TCP Reno rule for a limit.

    Picture a thermostat with one rule each way: while the limiter is busy the
    limit creeps up by one per sample; on overload it is cut to ``backoff``
    times itself. It needs an explicit overload signal (``permit.drop()``, an
    overload exception, or a block slower than ``timeout``); latency below the
    timeout does not slow it down, so it settles where the downstream starts
    failing, which on a queueing server means long queues.

    Per sample (or per window, with ``window > 0``), with limit ``L``:

    * dropped, or ``rtt > timeout``: ``L = max(min_limit, min(L - 1, floor(backoff * L)))``;
    * else if ``2 * inflight >= L`` (the limiter was at least half used):
      ``L = min(max_limit, L + 1)``;
    * else unchanged.

    Defaults follow Netflix ``AIMDLimit`` (backoff 0.9, timeout 5 s) except
    the bounds: Netflix pins ``min_limit`` at 20, trioflow uses 1..1000.

    Cost: ``update()`` is on the order of a microsecond per sample (figures
    in ``docs/benchmarks/adaptive.md``).

    Args:
      initial_limit: the limit before any sample (a limiter given
        ``total_tokens`` starts there instead).
      min_limit: the limit never goes below this (>= 1).
      max_limit: the limit never goes above this.
      backoff: the factor applied on overload, in (0, 1).
      timeout: a sample slower than this many seconds counts as a drop.
      window: seconds over which samples are folded into one (mean RTT, peak
        inflight, any drop) before the rule runs; 0 runs it on every sample.
        A window means one cut per window however many requests failed,
        which tames the collapse a burst of drops causes per sample.
      min_samples: a window also needs at least this many samples to close.
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    backoff: float = 0.9
    timeout: float = 5.0
    window: float = 0.0
    min_samples: int = 1
    limit: int = attrs.field(init=False)
    """The current limit."""
    _window: Window = attrs.field(init=False, repr=False)
    _drops: int = attrs.field(init=False, default=0, repr=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        backoff = check_positive_number(self.backoff, "backoff")
        if backoff >= 1:
            raise ValueError(f"backoff must be < 1, got {self.backoff!r}")
        check_positive_number(self.timeout, "timeout")
        check_positive_number(self.window, "window", allow_zero=True)
        check_count(self.min_samples, "min_samples")
        self.limit = self.initial_limit
        self._window = Window(self.window, self.min_samples)

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (pure arithmetic, no I/O)."""
        summary = self._window.add(sample)
        if summary is None:
            return self.limit
        folded = summary.as_sample()
        limit = self.limit
        if folded.dropped or folded.rtt > self.timeout:
            self._drops += 1
            limit = clamp(
                min(limit - 1, math.floor(limit * self.backoff)), self.min_limit, self.max_limit
            )
        elif 2 * folded.inflight >= limit:
            limit = min(self.max_limit, limit + 1)
        self.limit = limit
        return limit

    def state(self) -> Mapping[str, float]:
        """``limit`` and ``decreases`` (cuts made so far)."""
        return {"limit": float(self.limit), "decreases": float(self._drops)}
