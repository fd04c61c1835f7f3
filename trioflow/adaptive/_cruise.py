"""Cruise: trioflow's own algorithm (RTT-scaled cohort windows, slow start, re-measured baseline)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ._base import Sample
from ._checks import check_fraction, check_positive_number
from ._common import check_bounds, check_count, check_open_fraction, clamp

__all__ = ["Cruise"]

#: a window waits this many median RTTs past its last counted start, so the
#: slow requests it admitted have come back (leaving them out biases it fast)
_GRACE_RTTS = 2.0
#: a cut at the gradient's floor "helped" if the next median fell below this fraction
_HELPED = 0.8
#: a baseline is the median of this many windows' worth of samples (min_samples each)
_BASELINE_WINDOWS = 4
#: the throughput history kept for the hill-climb (windows)
_HISTORY = 48
#: the cap on the limit follows the highest peak in flight of this many windows
_CAP_WINDOWS = 16


def _significant(ordered: list[float]) -> float:
    """How far under the baseline a window's median must be to lower it.

    Three standard errors of the median (``1.25 * spread / sqrt(n)``, the
    spread in log terms from the quartiles): a noisy window of a few dozen
    samples must not ratchet the baseline down, or the minimum of many such
    windows would bias it 20-30% low.
    """
    n = len(ordered)
    lo, hi = ordered[n // 4], ordered[(3 * n) // 4]
    if lo <= 0:
        return 1.0
    spread = math.log(hi / lo) / 1.349
    return math.exp(-3 * 1.2533 * spread / math.sqrt(n))


@attrs.define(eq=False, kw_only=True)
class Cruise:
    """Cruise control for a limit: get up to speed fast, then hold a small queue.

    Picture cruise control on a car: it accelerates hard from standstill,
    eases off as soon as the road ahead slows, and every so often lifts the
    foot a little to check what "no traffic" feels like today.

    **Windows scale with the RTT.** A window is a *cohort*: the successful
    requests that were admitted after the previous decision. It closes once
    it has covered ``max(window, window_rtts * m)`` seconds of admissions
    plus a grace of ``2 * m`` for them to come back (``m``: the last window's
    median RTT), and holds at least ``min_samples`` samples; only requests
    admitted before ``now - 2 * m`` count, so a slow request is not left out
    for being slow (that would bias the median fast). The same rules hold at
    a 1 ms and at a 1 s downstream. The window's **median** RTT, ``p50``, is
    judged against a **baseline** ``B``, the median measured when the
    downstream was not queueing. With ``L`` the limit:

    * **Slow start.** From cold, while ``p50 <= tolerance * B`` and the
      window was busy, ``L = min(growth * L, growth * X * B * L / ⌊L⌋)``,
      with ``X`` the window's delivered rate (successes that finished, per
      second): the second term, Little's law's concurrency at the no-queue
      latency, stops the growth once throughput stops following the limit.
      The first window with ``p50 > tolerance * B`` (or a counted drop) ends
      slow start at ``L * max(g, 0.5)`` (below). From cold the baseline is
      the pooled median of the first ``4 * min_samples`` samples of windows
      no slower than it beyond noise.
    * **Gradient.** Afterwards ``g = clamp(tolerance * B / p50, 0.5,
      growth)`` (no more than 1 unless the window was busy) and
      ``L = (1 - smoothing) * L + smoothing * L * g`` (0.3: a window's
      median of 20-50 samples is ~10% noise, so a step averages over about
      three windows): the median is held at
      ``tolerance`` times the baseline, a queue of about a quarter of a
      service time. At the floor (``p50 >= 2 * tolerance * B``, a deep
      queue) the cut ``L * 0.5`` is not smoothed. After two busy windows in
      a row at or under the baseline (no queue at all) the limit grows by
      ``growth`` unsmoothed, so it recovers from a collapse (even from 1) or
      follows a capacity step up in a few windows.
    * **Throughput hill-climb.** On a downstream whose service time grows
      with concurrency (contention), latency rises long before throughput
      peaks. Over the last 48 busy windows after slow start (leaving out
      the two after a probe or a deep cut; in slow start throughput follows
      the limit, which says nothing of what lies past capacity) Cruise
      fits ``log X`` against ``log L``; while
      that elasticity exceeds ``climb`` by two standard errors (more
      concurrency still buys throughput, beyond noise), latency alone does
      not shrink the limit: the target is at least ``L + sqrt(L)``.
    * **Drops shrink, fast drops do not.** A window with a counted drop
      (``permit.drop()``, an overload exception, a timeout) multiplies the
      limit by ``backoff``; a drop closes the window after one median RTT,
      and only drops of requests admitted after the last cut count (one cut
      per round trip, not one per late drop). A drop that came back in under
      ``fast_drop * B`` is not evidence of queueing (a fast error reported
      as a drop) and is not counted. Drops never enter the RTT figures.
    * **A baseline that cannot drift up.** Between re-measurements the
      baseline only falls: when the pooled samples of the last 4 windows
      have a median three standard errors under it, that median becomes
      the baseline (one window's median, under a heavy tail, is noisy
      enough that the lowest of a few hundred sat 20-30% low). A request
      that comes back after its window closed counts in the next one, so
      a window's median is not biased fast by the slow requests it could
      not wait for. Every ``probe_interval`` it is re-measured: if the
      limiter is busy, one window of ``4 * min_samples`` samples runs at
      ``probe_factor * L`` (as BBRv2's ProbeRTT) and the limit is
      restored; its median becomes the baseline, pooled with the previous
      re-measurement's samples (or the cold start's) when the two medians
      agree within two standard errors, so that a re-measurement's own
      noise (some 7% at 80 samples) does not move the limit every
      interval while a real change is taken at once. If not busy, the
      pooled median of the last windows is the baseline.
      0.7 by default: the limit sits about a quarter above what the
      downstream serves at once, so 0.7 of it still drains the queue, and
      idles less of the downstream than halving (ProbeRTT's choice), which
      cost a contended or slowing downstream several percent of its
      goodput (``docs/benchmarks/adaptive.md``). When
      the gradient is at its floor and the cut it made did not bring the
      median down (by 20%), the queue is not the limiter's own: the
      downstream got slower, so that median becomes the baseline and the
      limit goes back to where it was before the cuts (Envoy #10647). A
      queue the limiter itself builds cannot raise the baseline (the drift
      of Netflix #134/#137, #165).
    * **No change without demand, and a cap.** The gradient moves the limit
      only when the window's peak in flight reached ``ceil(saturation *
      limit)`` (an integer test, so a limit of 1 that is full can grow): a
      limit that was not full did not build the queue it sees, and cutting
      it turns away the next burst (false rejections below capacity). Drops
      still cut. The limit never exceeds ``cap_factor`` times the highest
      peak in flight of the last 16 windows, so a quiet spell does not leave
      a huge limit that a sudden spike then floods (Envoy's 10x-spike
      weakness), while one short window's lull does not cut it.

    Pure arithmetic on samples, no clock of its own: a window closes on the
    first sample that finds it old and full enough.

    Cost: ``update()`` is on the order of a microsecond per sample (figures
    in ``docs/benchmarks/adaptive.md``); how it behaves under load, against the
    other algorithms, Envoy's controller and the best static limit, is in
    ``docs/benchmarks/adaptive.md`` (``bench/adaptive/run.py``).

    Args:
      initial_limit: the limit before any sample.
      min_limit: lower bound (>= 1).
      max_limit: upper bound.
      window: minimum seconds of admissions per window (0: RTT-scaled only).
      window_rtts: seconds of admissions per window, in median RTTs (> 0).
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
      growth: factor per window in slow start and with no queue (> 1).
      fast_drop: drops faster than this times the baseline are not counted,
        in [0, 1] (0 counts every drop).
      climb: the throughput elasticity above which latency does not shrink
        the limit (>= 0; a large value turns the hill-climb off).
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    window: float = 0.0
    window_rtts: float = 2.0
    min_samples: int = 20
    tolerance: float = 1.25
    smoothing: float = 0.3
    backoff: float = 0.9
    probe_interval: float = 10.0
    probe_factor: float = 0.7
    saturation: float = 0.8
    cap_factor: float = 2.0
    growth: float = 1.5
    fast_drop: float = 0.5
    climb: float = 0.0
    limit: int = attrs.field(init=False)
    """The current limit."""
    _estimate: float = attrs.field(init=False, repr=False)
    #: the limit this algorithm last set; ``limit`` differing means a user set it
    _issued: int = attrs.field(init=False, default=0, repr=False)
    _baseline: float = attrs.field(init=False, default=math.nan, repr=False)
    _last_p50: float = attrs.field(init=False, default=math.nan, repr=False)
    _slow_start: bool = attrs.field(init=False, default=True, repr=False)
    _probing: bool = attrs.field(init=False, default=False, repr=False)
    _saved: float = attrs.field(init=False, default=0.0, repr=False)
    _next_probe: float | None = attrs.field(init=False, default=None, repr=False)
    _probes: int = attrs.field(init=False, default=0, repr=False)
    #: consecutive windows with the gradient at its floor, the limit before
    #: them and the last one's median
    _floored: int = attrs.field(init=False, default=0, repr=False)
    _floor_from: float = attrs.field(init=False, default=0.0, repr=False)
    _floor_p50: float = attrs.field(init=False, default=0.0, repr=False)
    # the open window: admissions since ``_open`` (start, rtt, inflight)
    _open: float | None = attrs.field(init=False, default=None, repr=False)
    #: the previous window's counted cohort (admitted in this span): its
    #: stragglers count in this window
    _before: tuple[float, float] = attrs.field(init=False, default=(0.0, -1.0), repr=False)
    _starts: list[float] = attrs.field(init=False, factory=list[float], repr=False)
    _rtts: list[float] = attrs.field(init=False, factory=list[float], repr=False)
    _peak: int = attrs.field(init=False, default=0, repr=False)
    _drops: int = attrs.field(init=False, default=0, repr=False)
    #: successes that finished since the window opened (the delivered rate)
    _done: int = attrs.field(init=False, default=0, repr=False)
    #: consecutive windows with no queue at all (median at or under the baseline)
    _clear: int = attrs.field(init=False, default=0, repr=False)
    #: drops of requests admitted before this (the last cut) are not counted again
    _drop_epoch: float = attrs.field(init=False, default=-math.inf, repr=False)
    #: (log limit, log delivered rate) of recent busy windows, for the hill-climb
    _history: list[tuple[float, float]] = attrs.field(
        init=False, factory=list[tuple[float, float]], repr=False
    )
    _elasticity: float = attrs.field(init=False, default=math.nan, repr=False)
    _windows: int = attrs.field(init=False, default=0, repr=False)
    #: windows to leave out of the hill-climb's fit (after a probe or a deep cut)
    _settle: int = attrs.field(init=False, default=0, repr=False)
    #: samples of the first windows from cold, for the first baseline
    _pool: list[float] = attrs.field(init=False, factory=list[float], repr=False)
    #: the last windows' peaks in flight, for the cap
    _peaks: list[int] = attrs.field(init=False, factory=list[int], repr=False)
    #: the last probe's samples (sorted)
    _last_probe: list[float] = attrs.field(init=False, factory=list[float], repr=False)
    #: the last _BASELINE_WINDOWS windows' samples (sorted), pooled to move the baseline
    _recent: list[list[float]] = attrs.field(init=False, factory=list[list[float]], repr=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)
        check_positive_number(self.window, "window", allow_zero=True)
        check_positive_number(self.window_rtts, "window_rtts")
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
        if check_positive_number(self.growth, "growth") <= 1:
            raise ValueError(f"growth must be > 1, got {self.growth!r}")
        check_fraction(self.fast_drop, "fast_drop")
        check_positive_number(self.climb, "climb", allow_zero=True)
        self.limit = self.initial_limit
        self._estimate = float(self.initial_limit)
        self._issued = self.initial_limit

    def _set(self, estimate: float) -> int:
        estimate = min(max(estimate, float(self.min_limit)), float(self.max_limit))
        self._estimate = estimate
        self.limit = clamp(estimate, self.min_limit, self.max_limit)
        self._issued = self.limit
        return self.limit

    def _reopen(self, now: float) -> None:
        self._open = now
        self._starts = []
        self._rtts = []
        self._peak = 0
        self._drops = 0
        self._done = 0

    def update(self, sample: Sample) -> int:
        """Take one sample; return the new limit (pure arithmetic, no I/O)."""
        if self.limit != self._issued:  # set from outside (total_tokens=)
            self._estimate = float(self.limit)
            self._issued = self.limit
            if self._probing:
                self._probing = False
                self._next_probe = None
        if self._open is None:
            self._reopen(sample.start)
        opened = self._open
        assert opened is not None
        if sample.dropped:
            fast = sample.rtt < self.fast_drop * self._baseline  # False while no baseline
            if not fast and sample.start >= self._drop_epoch:
                self._drops += 1
        else:
            self._done += 1
        if not sample.dropped and (
            sample.start >= opened
            or (self._before[0] <= sample.start <= self._before[1] and not self._probing)
        ):
            # a straggler of the previous window counts in this one: leaving
            # it out would bias every window's median fast (by a tenth of the
            # samples under a heavy tail), and the baseline's minimum with it
            self._starts.append(sample.start)
            self._rtts.append(sample.rtt)
            if sample.inflight > self._peak:
                self._peak = sample.inflight
        now = sample.end
        rtts = self._rtts
        m = self._last_p50
        if math.isnan(m):  # no median yet: the slowest so far, so none are cut off
            m = max(rtts) if rtts else sample.rtt
        if self._drops and now >= opened + m:
            pass  # overload: decide now (at most once per round trip)
        elif now < opened + _GRACE_RTTS * m + max(self.window, self.window_rtts * m):
            return self.limit
        cut = now - _GRACE_RTTS * m
        starts = self._starts
        counted = [rtt for start, rtt in zip(starts, rtts, strict=True) if start <= cut]
        # a baseline (a probe, or the first windows from cold) is measured
        # over _BASELINE_WINDOWS times as many samples as a decision
        needed = self.min_samples * (_BASELINE_WINDOWS if self._probing else 1)
        if not self._drops and len(counted) < needed:
            return self.limit
        self._before = (opened, cut)
        return self._decide(now, counted, self._done / max(now - opened, 1e-9))

    def _decide(self, now: float, counted: list[float], rate: float) -> int:
        drops, peak = self._drops, self._peak
        self._reopen(now)
        self._windows += 1
        counted.sort()
        p50 = counted[len(counted) // 2] if counted else math.nan
        if not math.isnan(p50):
            self._last_p50 = p50
        if self._probing:
            self._probing = False
            self._next_probe = now + self.probe_interval
            if not math.isnan(p50):
                self._baseline = self._remeasured(counted)
            self._recent.clear()
            self._history.clear()  # the fit is against this baseline's windows
            self._settle = 2
            self._set(self._saved)
            return self.limit

        estimate = self._estimate
        saturated = peak >= math.ceil(self.saturation * self.limit)
        if drops:
            self._slow_start = False
            self._drop_epoch = now
            return self._set(estimate * self.backoff)
        if math.isnan(p50):
            return self.limit
        pool = self._pool
        if len(pool) < _BASELINE_WINDOWS * self.min_samples and (
            math.isnan(self._baseline) or p50 * _significant(counted) <= self._baseline
        ):
            # from cold: the median of the first few windows that were not
            # slower than it beyond noise, pooled (one window of 20 samples
            # is 14% off either way)
            pool.extend(counted)
            pool.sort()
            self._baseline = pool[len(pool) // 2]
            self._last_probe = list(pool)  # the first re-measurement pools with it
        else:
            # A baseline is the median of _BASELINE_WINDOWS windows' samples,
            # here as between re-measurements: the last windows pooled. One
            # window's median under a heavy tail is noisy enough that the
            # lowest of a few hundred windows ratchets it 20-30% low.
            recent = self._recent
            recent.append(counted)
            if len(recent) > _BASELINE_WINDOWS:
                del recent[0]
            pooled = self._pooled()
            if pooled and pooled[len(pooled) // 2] < self._baseline * _significant(pooled):
                self._baseline = pooled[len(pooled) // 2]
        baseline = self._baseline
        raw_gradient = self.tolerance * baseline / p50
        floored = raw_gradient <= 0.5
        if floored:
            self._history.clear()  # a deep queue, or the downstream changed: start the fit afresh
            self._settle = 2
            if self._floored and p50 >= _HELPED * self._floor_p50:
                # Cutting the limit did not bring the median down: the queue
                # is not ours, the downstream itself got slower. Its median
                # now (at the lower limit) is the new baseline, and the
                # limit goes back to where it was (Envoy #10647).
                self._floored = 0
                self._baseline = p50
                self._recent.clear()
                self._last_probe = []
                self._next_probe = now + self.probe_interval
                return self._set(self._floor_from)
            if not self._floored:
                self._floor_from = estimate
            self._floored += 1
            self._floor_p50 = p50
        else:
            self._floored = 0
        self._clear = self._clear + 1 if p50 <= baseline else 0
        # Slow start's windows are not in the fit: below capacity throughput
        # follows the limit, and a fit that keeps them reads "more
        # concurrency still pays" long after the downstream is full.
        climbing = not self._slow_start and self._climb(saturated and not floored, rate)
        if self._slow_start:
            if raw_gradient < 1.0:
                self._slow_start = False
                target = estimate * max(raw_gradient, 0.5)
            elif saturated:
                # Little's law: the rate reached at the applied (whole) limit,
                # scaled to the estimate, at the no-queue latency
                little = rate * baseline * estimate / max(self.limit, 1)
                target = max(estimate, min(estimate * self.growth, self.growth * little))
            else:
                target = estimate
        elif saturated and self._clear >= 2:
            target = estimate * self.growth  # twice no queue at all: recover fast
        else:
            gradient = min(max(raw_gradient, 0.5), self.growth)
            if not saturated:
                # no growth without demand, and no shrinking either: a queue
                # the limit did not bind on is not the limit's to fix
                gradient = 1.0
            target = estimate * gradient
            if climbing:
                target = max(target, estimate + math.sqrt(estimate))
            if not floored:
                target = (1 - self.smoothing) * estimate + self.smoothing * target
        # The cap follows the highest peak of the last few windows: one short
        # window's peak is noise (a Poisson lull), and capping at it cuts a
        # limit the next burst needs.
        peaks = self._peaks
        peaks.append(peak)
        if len(peaks) > _CAP_WINDOWS:
            del peaks[0]
        target = min(target, max(self.cap_factor * max(peaks), float(self.min_limit)))
        limit = self._set(target)

        if self._next_probe is None:  # the first baseline is from cold: no probe yet
            self._next_probe = now + self.probe_interval
        if now >= self._next_probe:
            if saturated and limit > self.min_limit:
                self._probes += 1
                self._probing = True
                self._saved = self._estimate
                self.limit = max(self.min_limit, math.floor(self._estimate * self.probe_factor))
                self._issued = self.limit
                return self.limit
            pooled = self._pooled()
            self._baseline = pooled[len(pooled) // 2] if pooled else p50
            self._next_probe = now + self.probe_interval
        return limit

    def _remeasured(self, counted: list[float]) -> float:
        """A probe's baseline: its median, pooled with the last probe's
        samples when the two agree within noise (two standard errors of
        the difference), so a re-measurement's own noise (7% at 80
        samples) does not move the limit every interval; a real change
        (beyond noise) is taken at once."""
        last, self._last_probe = self._last_probe, counted
        p50 = counted[len(counted) // 2]
        if not last:
            return p50
        old = last[len(last) // 2]
        se_new = -math.log(_significant(counted)) / 3
        se_old = -math.log(_significant(last)) / 3
        if abs(math.log(p50 / old)) > 2 * math.hypot(se_new, se_old):
            return p50
        both = sorted(last + counted)
        return both[len(both) // 2]

    def _pooled(self) -> list[float]:
        """The last windows' samples, sorted, if they make a baseline's worth."""
        if len(self._recent) < _BASELINE_WINDOWS:
            return []
        pooled = sorted(x for window in self._recent for x in window)
        return pooled if len(pooled) >= _BASELINE_WINDOWS * self.min_samples else []

    def _climb(self, saturated: bool, rate: float) -> bool:
        """Record a busy window; True while more concurrency still buys throughput.

        The elasticity is the least-squares slope of ``log X`` on ``log L``
        over the last ``_HISTORY`` busy windows; it counts only when it is
        above ``climb`` by two standard errors (noise alone must not climb).
        """
        if self._settle > 0:  # the windows right after a probe or a deep cut are transients
            self._settle -= 1
            return False
        if not saturated or rate <= 0:
            return False
        history = self._history
        history.append((math.log(self.limit), math.log(rate)))
        if len(history) > _HISTORY:
            del history[0]
        n = len(history)
        if n < 8:
            return False
        mx = math.fsum(x for x, _ in history) / n
        my = math.fsum(y for _, y in history) / n
        sxx = math.fsum((x - mx) ** 2 for x, _ in history)
        if sxx < 1e-6:
            self._elasticity = math.nan
            return False
        slope = math.fsum((x - mx) * (y - my) for x, y in history) / sxx
        residual = math.fsum((y - my - slope * (x - mx)) ** 2 for x, y in history)
        se = math.sqrt(residual / (n - 2) / sxx)
        self._elasticity = slope
        return slope - 2 * se > self.climb

    def state(self) -> Mapping[str, float]:
        """``limit``, ``estimate``, ``baseline_rtt``, ``p50_rtt`` (last window),
        ``slow_start`` and ``probing`` (1 or 0), ``probes`` and ``windows``
        so far, and ``elasticity`` (the hill-climb's last fit, ``nan`` before
        one)."""
        return {
            "limit": float(self.limit),
            "estimate": self._estimate,
            "baseline_rtt": self._baseline,
            "p50_rtt": self._last_p50,
            "slow_start": float(self._slow_start),
            "probing": float(self._probing),
            "probes": float(self._probes),
            "elasticity": self._elasticity,
            "windows": float(self._windows),
        }
