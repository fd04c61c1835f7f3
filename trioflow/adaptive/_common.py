"""What the algorithms share: parameter checks, bounds, and the sample window."""

from __future__ import annotations

import math

from ._base import Sample
from ._checks import check_count, check_fraction, check_positive_number

__all__ = [
    "Window",
    "WindowSummary",
    "check_bounds",
    "check_count",
    "check_open_fraction",
    "clamp",
]


def check_open_fraction(value: object, param: str) -> float:
    """A number in (0, 1]: a weight or factor that must not be zero."""
    fraction = check_fraction(value, param)
    if fraction == 0:
        raise ValueError(f"{param} must be > 0, got 0")
    return fraction


def check_bounds(initial_limit: object, min_limit: object, max_limit: object) -> None:
    """``1 <= min_limit <= initial_limit <= max_limit``, all ints."""
    lo = check_count(min_limit, "min_limit")
    hi = check_count(max_limit, "max_limit")
    start = check_count(initial_limit, "initial_limit")
    if lo > hi:
        raise ValueError(f"min_limit must be <= max_limit, got min_limit={lo} and max_limit={hi}")
    if not lo <= start <= hi:
        raise ValueError(
            f"initial_limit must be between min_limit={lo} and max_limit={hi}, got {start}"
        )


def clamp(value: float, lo: int, hi: int) -> int:
    """``value`` rounded down and kept within ``[lo, hi]``."""
    if math.isnan(value):
        return lo
    return int(min(max(math.floor(value), lo), hi))


class WindowSummary:
    """One closed window of samples, as the windowed algorithms see it."""

    __slots__ = ("count", "drops", "end", "max_inflight", "mean_rtt", "p50_rtt", "start")

    def __init__(
        self,
        start: float,
        end: float,
        count: int,
        drops: int,
        max_inflight: int,
        mean_rtt: float,
        p50_rtt: float,
    ) -> None:
        self.start = start
        self.end = end
        #: samples in the window, drops included
        self.count = count
        #: samples that were drops
        self.drops = drops
        #: most tokens in use at any grant in the window
        self.max_inflight = max_inflight
        #: mean and median RTT of the samples that were not drops (``nan`` if none)
        self.mean_rtt = mean_rtt
        self.p50_rtt = p50_rtt

    def as_sample(self) -> Sample:
        """The window folded into one sample: mean RTT, peak inflight, any drop."""
        rtt = self.mean_rtt if not math.isnan(self.mean_rtt) else self.end - self.start
        return Sample(self.start, rtt, self.max_inflight, self.drops > 0)


class Window:
    """Collects samples until ``duration`` seconds and ``min_samples`` samples have passed.

    A window is measured on the samples' own clock (their ``end``), so it
    needs no timer: it closes on the first sample that finds it old and full
    enough. Drops count toward ``min_samples`` but their RTT is left out of
    the latency figures: a request that failed on overload (often fast, a
    503) says nothing about how long a success takes.
    """

    __slots__ = ("_drops", "_max_inflight", "_rtts", "_start", "duration", "min_samples")

    def __init__(self, duration: float, min_samples: int) -> None:
        self.duration = duration
        self.min_samples = min_samples
        self._start: float | None = None
        self._rtts: list[float] = []
        self._drops = 0
        self._max_inflight = 0

    def add(self, sample: Sample) -> WindowSummary | None:
        """Add one sample; return the window's summary if this sample closed it."""
        if self._start is None:
            self._start = sample.start
        if sample.dropped:
            self._drops += 1
        else:
            self._rtts.append(sample.rtt)
        if sample.inflight > self._max_inflight:
            self._max_inflight = sample.inflight
        count = len(self._rtts) + self._drops
        end = sample.end
        if count < self.min_samples or end - self._start < self.duration:
            return None
        rtts = self._rtts
        if rtts:
            rtts.sort()
            mean = math.fsum(rtts) / len(rtts)
            p50 = rtts[len(rtts) // 2]
        else:
            mean = p50 = math.nan
        summary = WindowSummary(self._start, end, count, self._drops, self._max_inflight, mean, p50)
        self._start = None
        self._rtts = []
        self._drops = 0
        self._max_inflight = 0
        return summary


def check_window(duration: object, min_samples: object) -> tuple[float, int]:
    return (
        check_positive_number(duration, "window", allow_zero=True),
        check_count(min_samples, "min_samples"),
    )
