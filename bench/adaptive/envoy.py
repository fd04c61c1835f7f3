"""Envoy's adaptive-concurrency gradient controller, as a comparison row (bench only).

Written for this benchmark from a reading of Envoy's
``source/extensions/filters/http/adaptive_concurrency/controller/gradient_controller.cc``
and its proto defaults; it is not part of trioflow. It implements the
``trioflow.adaptive.Algorithm`` protocol so the same ``CapacityLimiter``
enforces it (admission ``outstanding < limit``, as Envoy's CAS).

What Envoy does, and how the port does it:

* A histogram of request latencies. Every ``update_interval`` (the docs'
  100 ms) its ``percentile`` (default p50) is the sample RTT, the histogram
  is cleared and ``L = L*g + sqrt(L*g)`` with
  ``g = clamp(min_rtt * (1 + buffer) / sample_rtt, 0.5, 2)``, truncated and
  clamped to ``[min_concurrency, max_limit]``. No samples: no change.
* A minRTT measurement at start-up and every ``min_rtt_interval`` plus up to
  ``jitter`` of it: the limit is saved and pinned to ``min_concurrency``,
  the histogram cleared, requests that started earlier are not sampled; once
  ``request_count`` samples arrived, min RTT is their percentile and the saved
  limit is restored. The limit starts at ``min_concurrency``. Five updates in
  a row that leave the limit at the minimum start a measurement at once.
* Delay only: every response is timed whatever its status, so a sample the
  application marked as a drop is timed like any other (Envoy's controller
  has no error signal). Responses the limiter does not feed (cancellations,
  errors not marked as drops) are not timed, as Envoy's ``cancelLatencySample``.

Envoy runs on timers; this port has only samples, so a timer that fell due
fires at the first sample that finishes after it (the simulation has samples
every few milliseconds whenever anything is in flight, and with nothing in
flight Envoy's timers find an empty histogram and do nothing either).

Configuration: the proto defaults (p50, jitter 15%, request_count 50,
min_concurrency 3, buffer 25%, max 1000) and, for the two required fields,
the values of Envoy's documentation example (update interval 100 ms, minRTT
interval 60 s).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from trioflow.adaptive import Sample

__all__ = ["EnvoyGradient"]


class EnvoyGradient:
    def __init__(
        self,
        seed: int,
        *,
        update_interval: float = 0.1,
        min_rtt_interval: float = 60.0,
        jitter: float = 0.15,
        request_count: int = 50,
        min_concurrency: int = 3,
        buffer: float = 0.25,
        percentile: float = 0.5,
        max_limit: int = 1000,
    ) -> None:
        self.update_interval = update_interval
        self.min_rtt_interval = min_rtt_interval
        self.jitter = jitter
        self.request_count = request_count
        self.buffer = buffer
        self.percentile = percentile
        self.min_limit = min_concurrency
        self.max_limit = max_limit
        self.initial_limit = min_concurrency
        self.limit = min_concurrency
        self._rng = random.Random(seed)
        self._hist: list[float] = []
        self._min_rtt = math.nan
        self._sample_rtt = math.nan
        self._deferred = 0  # > 0 while measuring minRTT (Envoy's inMinRTTSamplingWindow)
        self._epoch = -math.inf
        self._next_reset: float | None = None
        self._next_min_rtt: float | None = None
        self._at_min = 0
        self._started = False
        self._measurements = 0

    # -- Envoy's operations ------------------------------------------------

    def _quantile(self) -> float:
        hist = sorted(self._hist)
        self._hist.clear()
        return hist[min(len(hist) - 1, int(self.percentile * len(hist)))]

    def _set_limit(self, new: int, now: float) -> None:
        old = self.limit
        self.limit = new
        if self._deferred == 0 and old == self.min_limit and new == self.min_limit:
            self._at_min += 1
        else:
            self._at_min = 0
        if self._at_min >= 5:
            self._next_min_rtt = now  # Envoy: enableTimer(0)

    def _enter_min_rtt(self, now: float) -> None:
        if self._deferred > 0:  # already measuring: the timer's firing is spent
            self._next_min_rtt = None
            return
        self._measurements += 1
        self._deferred = self.limit
        self._set_limit(self.min_limit, now)
        self._hist.clear()
        self._epoch = now
        self._next_min_rtt = None

    def _update_min_rtt(self, now: float) -> None:
        if self._hist:
            self._min_rtt = self._quantile()
        self._set_limit(self._deferred, now)
        self._deferred = 0
        spread = math.ceil(self.min_rtt_interval * 1000 * self.jitter)
        extra = self._rng.randrange(spread) / 1000 if spread > 0 else 0.0
        self._next_min_rtt = now + self.min_rtt_interval + extra
        self._next_reset = now + self.update_interval

    def _reset_window(self, now: float) -> None:
        if not self._hist:
            return
        self._sample_rtt = self._quantile()
        gradient = min(max(self._min_rtt * (1 + self.buffer) / self._sample_rtt, 0.5), 2.0)
        limit = self.limit * gradient
        new = int(limit + math.sqrt(limit))
        self._set_limit(max(self.min_limit, min(self.max_limit, new)), now)

    def _run_timers(self, now: float) -> None:
        while True:
            reset, min_rtt = self._next_reset, self._next_min_rtt
            if min_rtt is not None and min_rtt <= now and (reset is None or min_rtt <= reset):
                self._enter_min_rtt(min_rtt)
            elif reset is not None and reset <= now:
                if self._deferred > 0:
                    self._next_reset = None  # re-armed when the measurement ends
                else:
                    self._reset_window(reset)
                    self._next_reset = reset + self.update_interval
            else:
                return

    # -- the Algorithm protocol --------------------------------------------

    def update(self, sample: Sample) -> int:
        now = sample.end
        if not self._started:
            self._started = True
            self._next_reset = sample.start + self.update_interval
            self._enter_min_rtt(sample.start)
        self._run_timers(now)
        if sample.start < self._epoch:
            return self.limit  # started before the minRTT window: not sampled
        self._hist.append(sample.rtt)
        if self._deferred > 0 and len(self._hist) >= self.request_count:
            self._update_min_rtt(now)
        return self.limit

    def state(self) -> Mapping[str, float]:
        return {
            "limit": float(self.limit),
            "min_rtt": self._min_rtt,
            "sample_rtt": self._sample_rtt,
            "measuring": float(self._deferred > 0),
            "measurements": float(self._measurements),
        }
