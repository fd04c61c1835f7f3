"""The shared Limiter conformance suite, run against adaptive CapacityLimiters.

The algorithms here get windows too long to close during a test, so the
suite sees a limiter whose size only its ``resize`` changes, while every
block still goes through the adaptive path (sample start recorded at grant,
fed to the algorithm on exit, tokens returned even so).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

import trioflow as tf
from tests.limiter_conformance import *  # noqa: F403
from tests.limiter_conformance import Subject
from trioflow.adaptive import Algorithm

from .helpers import ALGORITHMS, NEVER_DECIDES


def _resize(limiter: Any, n: int | float) -> None:
    limiter.total_tokens = n


MAKERS: dict[str, Callable[[], Algorithm]] = {
    name: functools.partial(make, max_limit=100, **NEVER_DECIDES[name])
    for name, make in ALGORITHMS.items()
}


@pytest.fixture(params=sorted(MAKERS))
def subject(request: pytest.FixtureRequest) -> Subject:
    make_algorithm = MAKERS[request.param]
    return Subject(make=lambda n: tf.CapacityLimiter(n, algorithm=make_algorithm()), resize=_resize)
