"""Vegas: estimate the queue from RTT against a no-load RTT (TCP Vegas)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import attrs

from ._base import Sample
from ._checks import check_positive_number
from ._common import Window, check_bounds, check_count, check_open_fraction, clamp

__all__ = ["Vegas"]


def _log10_floor(limit: float) -> int:
    return max(1, int(math.log10(max(limit, 1.0))))


@attrs.define(eq=False, kw_only=True)
class Vegas:
    """Vegas: keep a small queue at the downstream, estimated from latency.

    Picture a checkout line seen from the door: with ``L`` requests out and
    each taking ``rtt`` where it would take ``noload`` alone, about
    ``q = ceil(L * (1 - noload / rtt))`` of them are waiting rather than
    being served. Vegas grows the limit while that queue is short and
    shrinks it when it is long. It reacts to latency before anything fails,
    so it keeps queues (and tail latency) small.

    Per window (see ``window``), with ``f = max(1, floor(log10 L))``,
    ``alpha = 3f`` and ``beta = 6f``:

    * every ``U[0.5, 1) * probe_multiplier * L`` windows, ``noload`` is reset
      to the current RTT (a probe; the limit is unchanged);
    * a window faster than ``noload`` becomes the new ``noload``;
    * otherwise ``q = ceil(L * (1 - noload / rtt))`` and the target is
      ``L - f`` on a drop; ``L`` (hold) if fewer than ``L / 2`` were in flight;
      ``L + beta`` if ``q <= f``; ``L + f`` if ``q < alpha``; ``L - f`` if
      ``q > beta``; else ``L``;
    * ``L = (1 - smoothing) * L + smoothing * target``, within the bounds.

    This is Netflix ``VegasLimit`` (defaults alike) behind Netflix's
    ``WindowedLimit`` (1 s windows of at least 10 samples, mean RTT). The
    window is on by default because Netflix's unwindowed default compares a
    single request against the fastest single request ever seen, which on
    ordinary latency spread reads as a permanent queue and collapses the
    limit (to about 7 at 80% load in the research simulation).

    Cost: ``update()`` is on the order of a microsecond per sample (figures
    in ``docs/benchmarks/adaptive.md``).

    Args:
      initial_limit: the limit before any sample.
      min_limit: lower bound (>= 1).
      max_limit: upper bound.
      smoothing: weight of the new target, in (0, 1].
      probe_multiplier: how rarely ``noload`` is re-measured, in windows per
        unit of limit.
      window: seconds per window (0: every sample is its own window).
      min_samples: samples a window needs to close.
      seed: seeds the probe jitter, so a run is reproducible.
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    smoothing: float = 1.0
    probe_multiplier: int = 30
    window: float = 1.0
    min_samples: int = 10
    seed: int = 0
    limit: int = attrs.field(init=False)
    """The current limit."""
    _estimate: float = attrs.field(init=False, repr=False)
    #: the limit this algorithm last set; ``limit`` differing means a user set it
    _issued: int = attrs.field(init=False, default=0, repr=False)
    _noload: float = attrs.field(init=False, default=0.0, repr=False)
    _probe_count: int = attrs.field(init=False, default=0, repr=False)
    _probe_jitter: float = attrs.field(init=False, default=0.0, repr=False)
    _rng: random.Random = attrs.field(init=False, repr=False)
    _window: Window = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        check_open_fraction(self.smoothing, "smoothing")
        check_count(self.probe_multiplier, "probe_multiplier")
        check_positive_number(self.window, "window", allow_zero=True)
        check_count(self.min_samples, "min_samples")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        self.limit = self.initial_limit
        self._estimate = float(self.initial_limit)
        self._issued = self.initial_limit
        self._rng = random.Random(self.seed)
        self._probe_jitter = self._rng.uniform(0.5, 1.0)
        self._window = Window(self.window, self.min_samples)

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (pure arithmetic, no I/O)."""
        summary = self._window.add(sample)
        if summary is None:
            return self.limit
        if self.limit != self._issued:  # set from outside (total_tokens=)
            self._estimate = float(self.limit)
        folded = summary.as_sample()
        rtt = folded.rtt
        estimate = self._estimate
        self._probe_count += 1
        if self._probe_count >= self._probe_jitter * self.probe_multiplier * estimate:
            self._probe_count = 0
            self._probe_jitter = self._rng.uniform(0.5, 1.0)
            self._noload = rtt
            return self.limit
        if self._noload == 0 or rtt < self._noload:
            self._noload = rtt
            return self.limit
        f = _log10_floor(estimate)
        alpha, beta = 3 * f, 6 * f
        queue = math.ceil(estimate * (1 - self._noload / rtt)) if rtt > 0 else 0
        if folded.dropped:
            target = estimate - f
        elif 2 * folded.inflight < estimate:
            return self.limit
        elif queue <= f:
            target = estimate + beta
        elif queue < alpha:
            target = estimate + f
        elif queue > beta:
            target = estimate - f
        else:
            return self.limit
        target = min(max(target, 1.0), float(self.max_limit))
        estimate = (1 - self.smoothing) * estimate + self.smoothing * target
        estimate = min(max(estimate, float(self.min_limit)), float(self.max_limit))
        self._estimate = estimate
        self.limit = clamp(estimate, self.min_limit, self.max_limit)
        self._issued = self.limit
        return self.limit

    def state(self) -> Mapping[str, float]:
        """``limit``, ``estimate`` (unrounded) and ``noload_rtt`` (seconds)."""
        return {"limit": float(self.limit), "estimate": self._estimate, "noload_rtt": self._noload}
