# pyright: strict, reportUnnecessaryTypeIgnoreComment=true
"""Type tests for the generic Pipeline (checked by pyright, never run: see test_api.py)."""

from __future__ import annotations

from typing import Any, assert_type

import trioflow as tf


async def parse(line: str) -> int:
    return int(line)


async def double(x: int) -> float:
    return x * 2.0


async def explode(x: int) -> list[str]:
    return [str(x)] * x


def blocking(x: float) -> bytes:
    return repr(x).encode()


async def is_big(x: float) -> bool:
    return x > 10


async def typed() -> None:
    pipe = tf.Pipeline[str, str]("typed").map(parse)
    assert_type(pipe, tf.Pipeline[str, int])
    assert_type(pipe.map(double), tf.Pipeline[str, float])
    assert_type(pipe.flat_map(explode), tf.Pipeline[str, str])
    assert_type(pipe.map(double).batch(10), tf.Pipeline[str, list[float]])
    assert_type(pipe.map(double).filter(is_big), tf.Pipeline[str, float])
    assert_type(pipe.map(double).map(blocking, executor="thread"), tf.Pipeline[str, bytes])
    assert_type(tf.Pipeline("untyped"), tf.Pipeline[Any, Any])
    async with pipe.map(double).open(["1", "2"]) as run:
        async for out in run.outputs:
            assert_type(out, float)
    # A sync function without an executor is a type error:
    pipe.map(blocking)  # pyright: ignore[reportArgumentType]
    # ... and so is a source of the wrong type:
    await pipe.run([1, 2])  # pyright: ignore[reportArgumentType]
