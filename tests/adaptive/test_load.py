"""LoadFeedback against a scripted load metric (no trio)."""

from __future__ import annotations

import pytest

from trioflow.adaptive import LoadFeedback, Sample


class Script:
    def __init__(self, *loads: float) -> None:
        self.loads = list(loads)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.loads.pop(0)


def test_reads_at_most_once_per_interval_and_follows_the_rule() -> None:
    script = Script(0.9, 0.9, 0.6, 0.3, 0.3)
    algo = LoadFeedback(script, interval=10.0, initial_limit=100)
    limits = []
    for i in range(600):  # one sample every 0.1 s for 60 s, limiter full
        t = i * 0.1
        limits.append(algo.update(Sample(t, 0.05, algo.limit, False)))
    assert script.calls == 5  # at 10, 20, 30, 40, 50 s after the first sample
    distinct = [limits[0]]
    for x in limits:
        if x != distinct[-1]:
            distinct.append(x)
    assert distinct == [100, 80, 64, 76, 91]
    assert algo.state()["readings"] == 5
    assert algo.state()["load"] == 0.3


def test_idle_limiter_does_not_grow() -> None:
    script = Script(0.1, 0.1)
    algo = LoadFeedback(script, interval=1.0, initial_limit=40)
    for i in range(25):
        algo.update(Sample(i * 0.1, 0.01, 3, False))
    assert script.calls == 2
    assert algo.limit == 40
    free = LoadFeedback(Script(0.1), interval=1.0, initial_limit=40, min_utilization=0)
    for i in range(12):
        free.update(Sample(i * 0.1, 0.01, 3, False))
    assert free.limit == 48


def test_moves_by_at_least_one_and_respects_bounds() -> None:
    algo = LoadFeedback(Script(*[1.0] * 5), interval=1.0, initial_limit=3, min_limit=2)
    for i in range(60):
        algo.update(Sample(i * 0.1, 0.01, 3, False))
    assert algo.limit == 2
    up = LoadFeedback(Script(*[0.0] * 5), interval=1.0, initial_limit=2, max_limit=4)
    for i in range(60):
        up.update(Sample(i * 0.1, 0.01, up.limit, False))
    assert up.limit == 4


def test_bad_parameters_and_bad_readings() -> None:
    with pytest.raises(TypeError, match=r"read_load must be a callable returning a number, got 3"):
        LoadFeedback(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"low must be <= high, got low=0.9 and high=0.8"):
        LoadFeedback(lambda: 0.0, low=0.9)
    with pytest.raises(ValueError, match=r"increase must be > 1, got 1.0"):
        LoadFeedback(lambda: 0.0, increase=1.0)
    with pytest.raises(ValueError, match=r"decrease must be < 1, got 1.2"):
        LoadFeedback(lambda: 0.0, decrease=1.2)
    with pytest.raises(ValueError, match=r"interval must be > 0, got 0"):
        LoadFeedback(lambda: 0.0, interval=0)
    algo = LoadFeedback(lambda: "hot", interval=1.0)  # type: ignore[arg-type,return-value]
    algo.update(Sample(0, 0.01, 1, False))
    with pytest.raises(TypeError, match=r"read_load\(\) must be a number, got 'hot'"):
        algo.update(Sample(2, 0.01, 1, False))
    nan = LoadFeedback(lambda: float("nan"), interval=1.0)
    nan.update(Sample(0, 0.01, 1, False))
    with pytest.raises(ValueError, match=r"read_load\(\) must return a number, got nan"):
        nan.update(Sample(2, 0.01, 1, False))
