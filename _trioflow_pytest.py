"""trioflow's pytest plugin: the part pytest loads at start-up, kept to nothing.

pytest imports every ``pytest11`` plugin of every installed distribution at
start-up, also in projects that never use trio (trioflow may be installed as
someone else's dependency). So this module lives outside the ``trioflow``
package (importing ``trioflow.anything`` runs ``trioflow/__init__.py``, which
imports trio, OpenTelemetry and every building block) and imports nothing
but pytest: it declares the ini options and markers, and only for a trio
test that opted in does it import ``trioflow.testing._plugin``, which does
the work. ``-p no:trioflow`` removes even this.

What a test opts into, and how, is documented in :mod:`trioflow.testing`
and ``docs/debugging.md`` ("The pytest plugin").
"""

from __future__ import annotations

from collections.abc import Generator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trioflow_check",
        "check every trio test for leaked tasks and deadlocks, as @pytest.mark.trioflow_check "
        "does for one (trioflow)",
        type="bool",
        default=False,
    )
    parser.addini(
        "trioflow_leak_check",
        "in checked tests, fail one that leaves tasks running or parked after it returns (trioflow)",
        type="bool",
        default=True,
    )
    parser.addini(
        "trioflow_deadlock_check",
        "in checked tests, fail one at once, with a dump, when all its tasks are asleep for good "
        "(trioflow)",
        type="bool",
        default=True,
    )
    parser.addini(
        "trioflow_leak_grace",
        "seconds (wall clock) a checked test's leftover tasks get to finish before they count "
        "as leaked (trioflow)",
        default="1.0",
    )
    parser.addini(
        "trioflow_timeout",
        "seconds (wall clock) after which a trio test is dumped and failed; 0 is off (trioflow)",
        default="0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trioflow_check: fail this trio test if it leaks tasks or deadlocks (trioflow)",
    )
    config.addinivalue_line(
        "markers",
        "trioflow_timeout(seconds): dump every task and fail if this trio test runs longer",
    )
    config.addinivalue_line(
        "markers", "trioflow_allow_leaks: do not fail this test for tasks it leaves behind"
    )


def _seconds(item: pytest.Item, marker_name: str | None, ini: str) -> float:
    marker = item.get_closest_marker(marker_name) if marker_name else None
    raw: object
    if marker is not None:
        raw = marker.args[0] if marker.args else marker.kwargs.get("seconds")
        where = f"{marker_name} marker"
    else:
        raw = item.config.getini(ini)
        where = f"{ini} ini option"
    try:
        value = float(raw)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{where} must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise pytest.UsageError(f"{where} must be >= 0, got {raw!r}")
    return value


@pytest.hookimpl(tryfirst=True, wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    # Only trio tests (pytest-trio marks them, also in trio_mode); nothing
    # at all is imported for any other test.
    if isinstance(item, pytest.Function) and item.get_closest_marker("trio") is not None:
        config = item.config
        checks = bool(config.getini("trioflow_check")) or (
            item.get_closest_marker("trioflow_check") is not None
        )
        timeout = _seconds(item, "trioflow_timeout", "trioflow_timeout")
        if checks or timeout > 0:
            from trioflow.testing._plugin import wrap_item

            wrap_item(
                item,
                leak_check=checks
                and bool(config.getini("trioflow_leak_check"))
                and item.get_closest_marker("trioflow_allow_leaks") is None,
                deadlock_check=checks and bool(config.getini("trioflow_deadlock_check")),
                timeout=timeout,
                grace=_seconds(item, None, "trioflow_leak_grace"),
            )
    return (yield)
