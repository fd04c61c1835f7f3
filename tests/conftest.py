from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio.testing


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


class DetachErrors(logging.Handler):
    """Collects OpenTelemetry's "Failed to detach context" log records.

    OpenTelemetry logs (and swallows) that error when a context is attached
    in one task and detached in another, or across an async generator's
    ``yield``: the very mistakes that merge traces or leave a task's current
    span polluted. Every test fails if one is logged while it runs.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Failed to detach context" in record.getMessage():
            self.records.append(record)


_detach_errors = DetachErrors()
logging.getLogger("opentelemetry.context").addHandler(_detach_errors)


@pytest.fixture(autouse=True)
def detach_errors() -> Iterator[DetachErrors]:
    """Fails the test if OpenTelemetry logged "Failed to detach context" during it."""
    _detach_errors.records.clear()
    yield _detach_errors
    found = list(_detach_errors.records)
    _detach_errors.records.clear()
    if found:
        pytest.fail(
            f'OpenTelemetry logged "Failed to detach context" {len(found)} time(s): '
            "a span was attached in one task (or before a yield) and detached in another",
            pytrace=False,
        )
