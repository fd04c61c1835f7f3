"""Pure unit tests of the adaptive algorithms: rules, bounds, windows. No trio."""

from __future__ import annotations

import ast
import math
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trioflow
from trioflow.adaptive import AIMD, Algorithm, Cruise, Gradient2, Sample, Vegas

from .helpers import ALGORITHMS, busy, feed, stream

ALL = list(ALGORITHMS.values())


def test_no_trio_import_in_adaptive() -> None:
    root = pathlib.Path(trioflow.__file__).parent / "adaptive"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not any(n.split(".")[0] == "trio" for n in names), path


@pytest.mark.parametrize("cls", ALL, ids=list(ALGORITHMS))
def test_protocol_and_bounds_validation(cls: type) -> None:
    algo = cls()
    assert isinstance(algo, Algorithm)
    assert algo.limit == 20
    assert all(isinstance(v, float) for v in algo.state().values())
    with pytest.raises(
        ValueError, match=r"min_limit must be <= max_limit, got min_limit=5 and max_limit=4"
    ):
        cls(min_limit=5, max_limit=4, initial_limit=4)
    with pytest.raises(
        ValueError, match=r"initial_limit must be between min_limit=1 and max_limit=10, got 11"
    ):
        cls(initial_limit=11, max_limit=10)
    with pytest.raises(ValueError, match=r"min_limit must be >= 1, got 0"):
        cls(min_limit=0)
    with pytest.raises(TypeError, match=r"max_limit must be an int, got 2.5 \(float\)"):
        cls(max_limit=2.5)
    with pytest.raises(TypeError, match=r"initial_limit must be an int, got True"):
        cls(initial_limit=True)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (AIMD, {"backoff": 1.0}, r"backoff must be < 1, got 1.0"),
        (AIMD, {"timeout": 0}, r"timeout must be > 0, got 0"),
        (AIMD, {"window": -1}, r"window must be >= 0, got -1"),
        (Vegas, {"smoothing": 0}, r"smoothing must be > 0, got 0"),
        (Vegas, {"smoothing": 1.5}, r"smoothing must be between 0 and 1, got 1.5"),
        (Vegas, {"probe_multiplier": 0}, r"probe_multiplier must be >= 1, got 0"),
        (Vegas, {"min_samples": 0}, r"min_samples must be >= 1, got 0"),
        (Gradient2, {"tolerance": 0.9}, r"tolerance must be >= 1, got 0.9"),
        (Gradient2, {"queue_size": -1}, r"queue_size must be >= 0, got -1"),
        (Gradient2, {"long_window": 0}, r"long_window must be >= 1, got 0"),
        (Gradient2, {"smoothing": 0}, r"smoothing must be > 0, got 0"),
        (Gradient2, {"backoff": 0.0}, r"backoff must be > 0, got 0"),
        (Gradient2, {"backoff": -0.1}, r"backoff must be between 0 and 1, got -0.1"),
        (Cruise, {"tolerance": 1.0}, r"tolerance must be > 1, got 1.0"),
        (Cruise, {"probe_factor": 0}, r"probe_factor must be > 0, got 0"),
        (Cruise, {"smoothing": 0}, r"smoothing must be > 0, got 0"),
        (Cruise, {"cap_factor": 0.5}, r"cap_factor must be >= 1, got 0.5"),
        (Cruise, {"probe_interval": math.inf}, r"probe_interval must be finite, got inf"),
    ],
)
def test_bad_parameters(cls: type, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# -- AIMD -------------------------------------------------------------------


def test_aimd_grows_by_one_when_half_used_and_holds_otherwise() -> None:
    algo = AIMD(initial_limit=10)
    assert feed(algo, stream(rtt=0.01, inflight=6, n=4)) == [11, 12, 13, 13]
    assert feed(algo, stream(rtt=0.01, inflight=1, n=5)) == [13] * 5


def test_aimd_cuts_on_drop_and_on_timeout() -> None:
    algo = AIMD(initial_limit=100, timeout=1.0)
    assert algo.update(Sample(0, 0.01, 50, dropped=True)) == 90
    assert algo.update(Sample(0, 1.5, 50, dropped=False)) == 81
    # small limits still fall by at least one, and stop at min_limit
    algo = AIMD(initial_limit=3, min_limit=2)
    assert feed(algo, stream(rtt=0.01, inflight=1, n=3, dropped=True)) == [2, 2, 2]


def test_aimd_window_cuts_once_per_window() -> None:
    per_sample = AIMD(initial_limit=100)
    windowed = AIMD(initial_limit=100, window=0.1, min_samples=5)
    burst = list(stream(rtt=0.01, inflight=100, n=10, gap=0.001, dropped=True))
    feed(per_sample, iter(burst))
    assert per_sample.limit == 32  # ten cuts: the per-sample collapse
    feed(windowed, iter(burst))
    assert windowed.limit == 100  # window not closed yet (10 ms < 100 ms)
    windowed.update(Sample(0.2, 0.01, 100, dropped=False))
    assert windowed.limit == 90


# -- Vegas ------------------------------------------------------------------


def test_vegas_grows_without_queue_and_shrinks_with_one() -> None:
    algo = Vegas(initial_limit=20, window=0, min_samples=1)
    algo.update(Sample(0, 0.020, 20, False))  # sets noload
    assert algo.state()["noload_rtt"] == 0.020
    # rtt equal to noload: queue 0 <= f=1 -> +beta (6)
    assert algo.update(Sample(0, 0.020, 20, False)) == 26
    # rtt 2x noload: queue = ceil(26 * 0.5) = 13 > beta=6 -> -f
    assert algo.update(Sample(0, 0.040, 26, False)) == 25
    # mid-range queue holds
    assert algo.update(Sample(0, 0.0236, 25, False)) == 25  # q = ceil(25*0.1525)=4: alpha<=4<=beta
    # drop: -f
    assert algo.update(Sample(0, 0.020, 25, True)) == 24
    # under half used: hold
    assert algo.update(Sample(0, 0.020, 5, False)) == 24


def test_vegas_window_uses_mean_rtt() -> None:
    algo = Vegas(initial_limit=20, window=1.0, min_samples=10)
    # 10 samples over 0.009 s: the window (1 s) has not closed
    feed(algo, stream(rtt=0.02, inflight=20, n=10))
    assert algo.state()["noload_rtt"] == 0
    algo.update(Sample(1.0, 0.02, 20, False))
    assert algo.state()["noload_rtt"] == pytest.approx(0.02)


def test_vegas_probe_resets_noload() -> None:
    algo = Vegas(initial_limit=1, max_limit=1, probe_multiplier=1, window=0, min_samples=1)
    algo.update(Sample(0, 0.010, 1, False))
    seen = set()
    for _ in range(5):
        algo.update(Sample(0, 0.050, 1, False))
        seen.add(algo.state()["noload_rtt"])
    assert 0.050 in seen  # a probe adopted the slower RTT as the new no-load RTT


# -- Gradient2 --------------------------------------------------------------


def test_gradient2_holds_at_steady_rtt_and_shrinks_when_slow() -> None:
    algo = Gradient2(initial_limit=50)
    busy(algo, rtt=0.02, n=200)
    steady = algo.limit
    assert steady > 50  # g = 1 at steady RTT: the queue allowance grows it
    busy(algo, rtt=0.2, n=30)
    assert algo.limit < steady * 0.6


def test_gradient2_reads_drops_unlike_netflix() -> None:
    algo = Gradient2(initial_limit=100)
    assert algo.update(Sample(0, 0.01, 100, True)) == 90
    netflix = Gradient2(initial_limit=100, backoff=1.0)
    assert netflix.update(Sample(0, 0.01, 100, True)) == 100


def test_gradient2_ignores_idle_samples() -> None:
    algo = Gradient2(initial_limit=50)
    feed(algo, stream(rtt=1.0, inflight=3, n=50))
    assert algo.limit == 50


# -- Cruise -----------------------------------------------------------------


# Cruise's own rules: tests/adaptive/test_cruise.py


def test_external_limit_is_adopted() -> None:
    for cls in (Vegas, Gradient2, Cruise):
        algo = cls(initial_limit=50)
        algo.limit = 7
        s = Sample(0, 0.01, 1, False)
        for i in range(200):
            algo.update(Sample(i * 0.01, s.rtt, 1, False))
        assert algo.limit <= 14, cls  # started from 7, not from 50


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ALL),
    st.lists(
        st.tuples(st.floats(0.0, 5.0), st.integers(0, 2000), st.booleans(), st.floats(0.0, 1.0)),
        max_size=300,
    ),
)
def test_any_sample_stream_stays_in_bounds(
    cls: type, raw: list[tuple[float, int, bool, float]]
) -> None:
    algo = cls(initial_limit=10, min_limit=2, max_limit=50)
    t = 0.0
    for rtt, inflight, dropped, gap in raw:
        t += gap
        limit = algo.update(Sample(t, rtt, inflight, dropped))
        assert 2 <= limit <= 50
        assert limit == algo.limit
        assert all(isinstance(v, float) for v in algo.state().values())
