"""The pipeline's typed API, its report's summary, and retry predicates."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import trio
import trio.testing

import trioflow as tf

TYPE_TESTS = pathlib.Path(__file__).parent / "typing" / "check_pipeline_types.py"


def test_the_generic_pipeline_types_check() -> None:
    """``Pipeline[In, Out]``: pyright (strict) agrees with every ``assert_type`` there, and
    flags the misuses (a sync function without an executor, a source of the wrong type)."""
    pyright = shutil.which("pyright", path=str(pathlib.Path(sys.executable).parent))
    if pyright is None:  # pragma: no cover - installed with the dev extra
        pytest.skip("pyright is not installed")
    out = subprocess.run(
        [pyright, "--outputjson", str(TYPE_TESTS)], capture_output=True, text=True, timeout=300
    )
    report = json.loads(out.stdout)
    problems = [
        f"{d['range']['start']['line'] + 1}: {d['message']}" for d in report["generalDiagnostics"]
    ]
    assert problems == []
    assert report["summary"]["filesAnalyzed"] == 1


def test_pipelines_are_subscriptable_at_run_time() -> None:
    pipe = tf.Pipeline[int, int]("typed")
    assert repr(pipe) == "<trioflow.Pipeline 'typed': no stages>"


async def test_retry_on_accepts_a_predicate(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[int] = []

    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            self.status = status

    async def call(x: int) -> int:
        calls.append(x)
        raise HTTPError(503 if x == 1 else 404)

    retry = tf.Retry(3, retry_on=lambda exc: isinstance(exc, HTTPError) and exc.status >= 500)
    report = await tf.Pipeline("p").map(call, retry=retry, on_error="skip").run([1, 2])
    assert sorted(calls) == [1, 1, 1, 2]  # the 503 retried, the 404 not
    assert report.stages["call"].retried == 2
    assert retry.retries(HTTPError(500))
    assert not retry.retries(HTTPError(400))
    with pytest.raises(TypeError, match="retry_on must be an Exception subclass, a tuple"):
        tf.Retry(retry_on=42)  # pyright: ignore[reportArgumentType]


async def test_a_predicate_that_raises_fails_the_item_like_the_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken(exc: Exception) -> bool:
        raise RuntimeError("predicate bug")

    async def call(x: int) -> int:
        raise ValueError(x)

    pipe = tf.Pipeline("p").map(call, retry=tf.Retry(3, retry_on=broken), on_error="dead_letter")
    report = await pipe.run([1])
    [letter] = report.dead_letters
    assert isinstance(letter.exception, RuntimeError)


async def test_format_prints_the_conservation_law_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def enrich(x: int) -> int:
        if x % 10 == 0:
            raise ValueError(x)
        await trio.sleep(0.01)
        return x

    async def write(batch: list[int]) -> int:
        return len(batch)

    pipe = (
        tf.Pipeline("events")
        .map(enrich, on_error="dead_letter")
        .filter(lambda x: x % 3 != 0, name="valid")
        .batch(5)
        .map(write, name="write")
    )
    report = await pipe.run(range(30))
    text = report.format()
    lines = text.splitlines()
    assert lines[0].startswith("pipeline 'events': 30 source items in ")
    labels = [line.split()[0] for line in lines[1:6]]
    assert labels == ["delivered", "filtered", "skipped", "dead-lettered", "unfinished"]
    assert lines[1].split()[1] == str(report.delivered)
    assert "(3 dead letters)" in lines[4]
    assert lines[6] == "  = 30: every item accounted for"
    assert [line.split()[1] for line in lines[7:]] == ["enrich", "valid", "batch", "write"]
    assert "dead-lettered 3" in lines[7]
    assert report.conserved
