"""One rule for what a rate limiter is (issue 18): tf.Pacer, checked once for every rate=."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import pytest
import trio
import trio.testing

import trioflow as tf
from trioflow._admission._protocol import check_pacer


class OneTokenASecond:
    """A rate limiter of the user's own: never grants at once, one token per second.

    Not a tf.RateLimiter: what the rate= parameters accept is the protocol.
    """

    def __init__(self) -> None:
        self.rate = 1.0
        self.burst = 1
        self.granted = 0
        self.asked_nowait = 0
        self._next = 0.0

    async def acquire(self, n: int = 1) -> None:
        now = trio.current_time()
        due = max(now, self._next)
        self._next = due + n / self.rate
        await trio.sleep_until(due)
        self.granted += n

    def try_acquire(self, n: int = 1) -> bool:
        self.asked_nowait += 1
        return False

    def statistics(self) -> dict[str, int]:
        return {"granted": self.granted}

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def test_rate_limiters_are_pacers_and_capacity_limiters_are_not() -> None:
    assert isinstance(tf.RateLimiter(5), tf.Pacer)
    assert isinstance(OneTokenASecond(), tf.Pacer)
    for limiter in (tf.CapacityLimiter(2), trio.CapacityLimiter(2)):
        assert isinstance(limiter, tf.Limiter)
        assert not isinstance(limiter, tf.Pacer)
    rate = tf.RateLimiter(5)
    assert check_pacer(rate) is rate
    assert check_pacer(None) is None


async def _noop(x: int) -> int:
    return x


def _amap(rate: object) -> object:
    return tf.amap(_noop, [1], rate=rate)  # type: ignore[arg-type]


def _group(rate: object) -> object:
    return tf.open_task_group(rate=rate)  # type: ignore[arg-type]


def _stage(rate: object) -> object:
    return tf.Pipeline("p").map(_noop, rate=rate)  # type: ignore[arg-type]


ENTRY_POINTS = [_amap, _group, _stage]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["amap", "task_group", "stage"])
def test_a_capacity_limiter_as_rate_is_told_to_go_to_limiter(
    entry: Callable[[object], object],
) -> None:
    with pytest.raises(TypeError, match=r"^rate must be a rate limiter, got .*pass it as limiter="):
        entry(tf.CapacityLimiter(3, name="db"))


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["amap", "task_group", "stage"])
@pytest.mark.parametrize("bad", [5, 2.5, "fast", object()], ids=["int", "float", "str", "object"])
def test_rate_names_the_parameter_and_the_value(
    entry: Callable[[object], object], bad: object
) -> None:
    with pytest.raises(
        TypeError, match=r"^rate must be a rate limiter \(.*tf\.Pacer\) or None, got"
    ):
        entry(bad)


async def _run_stage(rate: OneTokenASecond, n: int) -> list[int]:
    pipe = tf.Pipeline("p").map(_noop, workers=4, rate=rate)
    async with pipe.open(range(n)) as run:
        return sorted([x async for x in run.outputs])


async def _run_amap(rate: OneTokenASecond, n: int) -> list[int]:
    async with tf.amap(_noop, range(n), max_at_once=4, rate=rate) as results:
        return sorted([x async for x in results])


async def _run_group(rate: OneTokenASecond, n: int) -> list[int]:
    async with tf.open_task_group(limit=4, rate=rate) as tg:
        handles = [await tg.spawn(_noop, i) for i in range(n)]
    return sorted(h.result() for h in handles)


async def _run_all(rate: OneTokenASecond, n: int) -> list[int]:
    fns: list[Callable[[], Awaitable[Any]]] = [lambda i=i: _noop(i) for i in range(n)]
    return sorted(await tf.run_all(fns, max_at_once=4, rate=rate))


@pytest.mark.parametrize(
    "run", [_run_stage, _run_amap, _run_group, _run_all], ids=["stage", "amap", "group", "run_all"]
)
async def test_a_users_own_pacer_paces_every_consumer(
    autojump_clock: trio.testing.MockClock,
    run: Callable[[OneTokenASecond, int], Awaitable[list[int]]],
) -> None:
    rate = OneTokenASecond()
    start = trio.current_time()
    assert await run(rate, 6) == list(range(6))
    # one token per call, granted one a second: 6 calls span 5 s whatever the concurrency
    assert rate.granted == 6
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_each_retry_attempt_takes_its_own_token_from_a_users_pacer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = OneTokenASecond()
    tries = 0

    async def flaky(x: int) -> int:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise ConnectionError("try again")
        return x

    retry = tf.Retry(attempts=3, retry_on=(ConnectionError,), backoff=tf.Backoff.constant(0.0))
    async with tf.amap(flaky, [7], rate=rate, retry=retry) as results:
        assert [x async for x in results] == [7]
    assert tries == 3
    assert rate.granted == 3
