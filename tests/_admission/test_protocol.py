"""One rule for what a limiter is (issue 14): tf.Limiter is trio's interface."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

import trioflow as tf
from trioflow._admission._protocol import check_limiter
from trioflow.adaptive import AIMD


def test_trio_capacity_limiter_is_a_limiter_but_has_no_permits() -> None:
    plain = trio.CapacityLimiter(3)
    assert isinstance(plain, tf.Limiter)
    assert not isinstance(plain, tf.PermitLimiter)
    assert check_limiter(plain, "limiter") is plain


def test_every_trioflow_limiter_is_a_permit_limiter() -> None:
    pool = tf.PriorityLimiter(4, [tf.Lane("a"), tf.Lane("b")])
    for limiter in (
        tf.CapacityLimiter(2),
        tf.CapacityLimiter(algorithm=AIMD()),
        pool.lane("a"),
        pool["b"],
    ):
        assert isinstance(limiter, tf.Limiter)
        assert isinstance(limiter, tf.PermitLimiter)
        assert check_limiter(limiter, "limiter") is limiter


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: 3, r"^limiter must be a limiter \(.*\), got 3 \(int\)$"),
        (lambda: None, r"^limiter must be a limiter \(.*\), got None \(NoneType\)$"),
        # made inside the test: a live primitive made at collection would
        # show in every other test's registry readings
        (
            lambda: tf.RateLimiter(1),
            r"^limiter must be a limiter \(.*\), got <trioflow.RateLimiter",
        ),
    ],
)
def test_check_limiter_names_the_parameter_and_the_value(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        check_limiter(make(), "limiter")


def test_a_priority_limiter_is_not_a_limiter_and_the_error_says_use_a_lane() -> None:
    pool = tf.PriorityLimiter(4, [tf.Lane("a")], name="pool")
    assert not isinstance(pool, tf.Limiter)
    with pytest.raises(
        TypeError, match=r"limit must be .* pass one of its lanes, limit=limiter.lane"
    ):
        check_limiter(pool, "limit")
    with pytest.raises(TypeError, match=r"pass one of its lanes"):
        tf.open_task_group(limit=pool)  # type: ignore[arg-type]


async def test_a_trio_limiter_bounds_a_task_group() -> None:
    plain = trio.CapacityLimiter(2)
    peak = 0

    async def job() -> None:
        nonlocal peak
        peak = max(peak, plain.borrowed_tokens)
        await trio.sleep(0)

    async with tf.open_task_group(limit=plain) as tg:
        for _ in range(6):
            await tg.spawn(job)
    assert peak == 2
    assert plain.borrowed_tokens == 0
