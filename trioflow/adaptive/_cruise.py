"""Cruise: trioflow's own algorithm (windowed gradient, slow start, re-measured baseline)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ._base import Sample
from ._checks import check_fraction, check_positive_number
from ._common import Window, check_bounds, check_count, check_open_fraction, clamp

__all__ = ["Cruise"]


@attrs.define(eq=False, kw_only=True)
class Cruise:
    """Cruise control for a limit: get up to speed fast, then hold a small queue.

    Picture cruise control on a car: it accelerates hard from standstill,
    eases off as soon as the road ahead slows, and every so often lifts the
    foot a little to check what "no traffic" feels like today. Concretely,
    samples are folded into windows (``window`` seconds and ``min_samples``
    samples, whichever is later) and each window's **median** RTT of
    successful samples, ``p50``, is judged against a **baseline**, the median
    measured when the downstream was not queueing:

    * **Slow start.** From cold, the limit doubles each busy window until the
      first sign of congestion (a drop, or ``p50 > tolerance * baseline``),
      then drops to ``L * g`` (below). A limit of 200 is reached in about
      five windows, not the minutes additive growth takes (Netflix #35, #74).
    * **Gradient.** Afterwards ``g = clamp(tolerance * baseline / p50, 0.5, 1)``
      and the target is ``L * g + sqrt(L * g)`` (Envoy's rule), smoothed:
      ``L = (1 - smoothing) * L + smoothing * target``. At equilibrium a few
      requests (about ``sqrt(L)``) queue at the downstream: enough to keep it
      busy, few enough to keep the tail short.
    * **Drops shrink.** A window with any drop (``permit.drop()``, an overload
      exception, a timeout) multiplies the limit by ``backoff``. Drops never
      enter the RTT figures, and failures that are not overload are not
      samples at all (the limiter does not feed them), so fast errors cannot
      pull the baseline down (Netflix #176, #146).
    * **A baseline that cannot drift up.** The baseline only falls between
      re-measurements (a faster window lowers it). Every ``probe_interval``
      it is re-measured: if the limiter is busy, one window runs at
      ``probe_factor * L`` (default half, as BBRv2's ProbeRTT), samples that
      started before the probe are left out (Envoy #11579), its median
      becomes the baseline and the limit is restored; if the limiter is not
      busy, the current window's median is the baseline. Five windows in a
      row with ``p50 >= 2 * tolerance * baseline`` (a queue of its own
      would have drained by then) trigger the re-measurement early, so a
      sudden real slowdown does not collapse the limit (Envoy #10647). So the baseline
      follows real slowdowns within one interval, but a queue the limiter
      itself builds cannot raise it (the drift of Netflix #134/#137, #165).
      Envoy pins the limit to 3 for this; half costs far less goodput.
    * **No growth without demand, and a cap.** The limit grows only when the
      window's peak in flight reached ``saturation * L``, and never exceeds
      ``cap_factor`` times that peak, so a quiet spell does not leave a huge
      limit that a sudden spike then floods (Envoy's 10x-spike weakness).

    Pure arithmetic on samples, no clock of its own: a window closes on the
    first sample that finds it old and full enough.

    Cost: ``update()`` takes about 0.4 µs per sample (process CPU time,
    ``bench/adaptive/overhead.py``); how it behaves under load, against the
    other algorithms and the best static limit, is in ``docs/benchmarks/``
    (``bench/adaptive/run.py``).

    Args:
      initial_limit: the limit before any sample.
      min_limit: lower bound (>= 1).
      max_limit: upper bound.
      window: minimum seconds per window.
      min_samples: minimum samples per window.
      tolerance: how much slower than the baseline the median may get
        before the limit shrinks (> 1).
      smoothing: weight of each new target after slow start, in (0, 1].
      backoff: factor applied on a window with drops, in (0, 1).
      probe_interval: seconds between baseline re-measurements.
      probe_factor: fraction of the limit used while re-measuring, in (0, 1].
      saturation: fraction of the limit that must be in flight for growth.
      cap_factor: the limit stays below this times the window's peak in
        flight (>= 1).
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    window: float = 0.1
    min_samples: int = 20
    tolerance: float = 1.25
    smoothing: float = 0.5
    backoff: float = 0.9
    probe_interval: float = 10.0
    probe_factor: float = 0.5
    saturation: float = 0.8
    cap_factor: float = 2.0
    limit: int = attrs.field(init=False)
    """The current limit."""
    _estimate: float = attrs.field(init=False, repr=False)
    #: the limit this algorithm last set; ``limit`` differing means a user set it
    _issued: int = attrs.field(init=False, default=0, repr=False)
    _baseline: float = attrs.field(init=False, default=math.nan, repr=False)
    _last_p50: float = attrs.field(init=False, default=math.nan, repr=False)
    _slow_start: bool = attrs.field(init=False, default=True, repr=False)
    _probing: bool = attrs.field(init=False, default=False, repr=False)
    _probe_from: float = attrs.field(init=False, default=0.0, repr=False)
    _saved: float = attrs.field(init=False, default=0.0, repr=False)
    _next_probe: float | None = attrs.field(init=False, default=None, repr=False)
    _probes: int = attrs.field(init=False, default=0, repr=False)
    #: consecutive windows with the gradient at its floor (p50 > 2.5x baseline at defaults)
    _floored: int = attrs.field(init=False, default=0, repr=False)
    _window: Window = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        check_positive_number(self.window, "window", allow_zero=True)
        check_count(self.min_samples, "min_samples")
        if check_positive_number(self.tolerance, "tolerance") <= 1:
            raise ValueError(f"tolerance must be > 1, got {self.tolerance!r}")
        check_open_fraction(self.smoothing, "smoothing")
        backoff = check_positive_number(self.backoff, "backoff")
        if backoff >= 1:
            raise ValueError(f"backoff must be < 1, got {self.backoff!r}")
        check_positive_number(self.probe_interval, "probe_interval")
        check_open_fraction(self.probe_factor, "probe_factor")
        check_fraction(self.saturation, "saturation")
        if check_positive_number(self.cap_factor, "cap_factor") < 1:
            raise ValueError(f"cap_factor must be >= 1, got {self.cap_factor!r}")
        self.limit = self.initial_limit
        self._estimate = float(self.initial_limit)
        self._issued = self.initial_limit
        self._window = Window(self.window, self.min_samples)

    def _set(self, estimate: float) -> int:
        estimate = min(max(estimate, float(self.min_limit)), float(self.max_limit))
        self._estimate = estimate
        self.limit = clamp(estimate, self.min_limit, self.max_limit)
        self._issued = self.limit
        return self.limit

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (pure arithmetic, no I/O)."""
        if self._probing and sample.start < self._probe_from:
            return self.limit  # admitted before the probe: it saw the old queue
        summary = self._window.add(sample)
        if summary is None:
            return self.limit
        if self.limit != self._issued:  # set from outside (total_tokens=)
            self._estimate = float(self.limit)
            self._probing = False
        p50 = summary.p50_rtt
        now = summary.end
        self._last_p50 = p50
        if self._probing:
            self._probing = False
            self._next_probe = now + self.probe_interval
            if not math.isnan(p50):
                self._baseline = p50
            return self._set(self._saved)

        estimate = self._estimate
        saturated = summary.max_inflight >= self.saturation * estimate
        if math.isnan(p50):  # every sample was a drop
            self._slow_start = False
            return self._set(estimate * self.backoff)
        if math.isnan(self._baseline) or p50 < self._baseline:
            self._baseline = p50
        raw_gradient = self.tolerance * self._baseline / p50
        gradient = min(max(raw_gradient, 0.5), 1.0)
        self._floored = self._floored + 1 if raw_gradient <= 0.5 else 0
        if summary.drops:
            self._slow_start = False
            target = estimate * self.backoff
        elif self._slow_start:
            if gradient < 1.0:
                self._slow_start = False
                target = estimate * gradient
            elif saturated:
                target = estimate * 2
            else:
                target = estimate
        else:
            target = estimate * gradient + math.sqrt(estimate * gradient)
            if target > estimate and not saturated:
                target = estimate
            target = (1 - self.smoothing) * estimate + self.smoothing * target
        target = min(target, max(self.cap_factor * summary.max_inflight, float(self.min_limit)))
        limit = self._set(target)

        due = self._next_probe is None or now >= self._next_probe
        if due or self._floored >= 5:
            # Five windows at the gradient's floor while shrinking: the
            # downstream itself got slower (a queue we built would have
            # drained by now), so re-measure early rather than collapse.
            self._floored = 0
            if saturated and limit > self.min_limit:
                self._probes += 1
                self._probing = True
                self._probe_from = now
                self._saved = self._estimate
                self.limit = max(self.min_limit, math.floor(self._estimate * self.probe_factor))
                self._issued = self.limit
                return self.limit
            self._baseline = p50
            self._next_probe = now + self.probe_interval
        return limit

    def state(self) -> Mapping[str, float]:
        """``limit``, ``estimate``, ``baseline_rtt``, ``p50_rtt`` (last window),
        ``slow_start`` and ``probing`` (1 or 0), and ``probes`` made so far."""
        return {
            "limit": float(self.limit),
            "estimate": self._estimate,
            "baseline_rtt": self._baseline,
            "p50_rtt": self._last_p50,
            "slow_start": float(self._slow_start),
            "probing": float(self._probing),
            "probes": float(self._probes),
        }
