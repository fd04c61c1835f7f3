"""The shared Limiter conformance suite, run against adaptive CapacityLimiters.

The algorithms here get windows too long to close during a test, so the
suite sees a limiter whose size only its ``resize`` changes, while every
block still goes through the adaptive path (sample start recorded at grant,
fed to the algorithm on exit, tokens returned even so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import trioflow as tf
from tests.limiter_conformance import *  # noqa: F403
from tests.limiter_conformance import Subject
from trioflow.adaptive import AIMD, Algorithm, Cruise, LoadFeedback, Vegas


def _resize(limiter: Any, n: int | float) -> None:
    limiter.total_tokens = n


MAKERS: dict[str, Callable[[], Algorithm]] = {
    "Cruise": lambda: Cruise(window=1e9, max_limit=100),
    "Vegas": lambda: Vegas(window=1e9, max_limit=100),
    "AIMD": lambda: AIMD(window=1e9, max_limit=100),
    "LoadFeedback": lambda: LoadFeedback(lambda: 0.6, interval=1e9, max_limit=100),
}


@pytest.fixture(params=sorted(MAKERS))
def subject(request: pytest.FixtureRequest) -> Subject:
    make_algorithm = MAKERS[request.param]
    return Subject(make=lambda n: tf.CapacityLimiter(n, algorithm=make_algorithm()), resize=_resize)
