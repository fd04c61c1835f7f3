"""Every instrument's attributes, read through a real MeterProvider: one name attribute per kind.

The attribute ``trioflow.name`` used to mean the limiter, the lane's
limiter, the rate limiter or the group depending on the instrument; each
kind now has its own (``trioflow.limiter.name``...), listed in one module,
and instrument names follow OpenTelemetry's naming rules.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

import trioflow as tf
from trioflow.telemetry import _metrics, _names

from .conftest import Otel

#: The pipeline's own instruments are named by the pipeline's code (tests/telemetry/test_pipeline.py).
PIPELINE_OWNED = ("trioflow.stage.", "trioflow.pipeline.")
#: The Redis stream source's instruments need a real Redis (tests/redis/test_telemetry.py).
REDIS_OWNED = ("trioflow.stream_source.",)

#: What each instrument outside the pipeline is about, so which name attributes it may carry.
EXPECTED: dict[str, set[frozenset[str]]] = {
    _names.LIMITER_LIMIT: {
        frozenset({_names.LIMITER_NAME}),
        frozenset({_names.LIMITER_NAME, _names.LANE_NAME}),
    },
    _names.LIMITER_USAGE: {
        frozenset({_names.LIMITER_NAME}),
        frozenset({_names.LIMITER_NAME, _names.LANE_NAME}),
    },
    _names.LIMITER_QUEUE_SIZE: {
        frozenset({_names.LIMITER_NAME}),
        frozenset({_names.LIMITER_NAME, _names.LANE_NAME}),
    },
    _names.LIMITER_WAIT_DURATION: {
        frozenset({_names.LIMITER_NAME, _names.KIND}),
        frozenset({_names.LIMITER_NAME, _names.LANE_NAME, _names.KIND}),
        frozenset({_names.RATE_LIMITER_NAME, _names.KIND}),
    },
    _names.RATE_LIMITER_TOKENS: {frozenset({_names.RATE_LIMITER_NAME})},
    _names.TASK_GROUP_RUNNING: {frozenset({_names.TASK_GROUP_NAME})},
    _names.TASK_GROUP_QUEUE_SIZE: {frozenset({_names.TASK_GROUP_NAME})},
    _names.TASK_GROUP_TASKS: {frozenset({_names.TASK_GROUP_NAME, _names.OUTCOME})},
}


async def test_every_instrument_names_its_object_per_kind(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    pool = tf.PriorityLimiter(
        2, [tf.Lane("interactive", priority=0), tf.Lane("batch")], name="pool"
    )
    db = tf.CapacityLimiter(1, name="db")
    api = tf.RateLimiter(1, burst=1, name="api")
    seen: dict[str, list[tuple[dict[str, Any], float]]] = {}

    async def hold(
        limiter: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with limiter:
            task_status.started()
            await trio.sleep(1)

    async with tf.open_task_group(limit=1, name="jobs") as tg, trio.open_nursery() as nursery:
        await nursery.start(hold, db)
        await nursery.start(hold, pool["batch"])
        await nursery.start(hold, pool["batch"])
        nursery.start_soon(hold, pool["interactive"])  # waits for a token
        nursery.start_soon(hold, db)  # waits: db and the lane have queues now
        await tg.spawn(trio.sleep, 5)
        nursery.start_soon(tg.spawn, trio.sleep, 1)  # waits for the group's slot
        await trio.testing.wait_all_tasks_blocked()
        for name, metric in otel.metrics().items():
            for p in metric.data.data_points:
                value = p.value if isinstance(p, NumberDataPoint) else 0.0
                seen.setdefault(name, []).append((dict(p.attributes or {}), value))
        await api.acquire()
        await api.acquire()  # waits a second for its token
    for name, metric in otel.metrics().items():
        if name == _names.LIMITER_WAIT_DURATION or name == _names.TASK_GROUP_TASKS:
            for p in metric.data.data_points:
                assert isinstance(p, HistogramDataPoint | NumberDataPoint)
                seen.setdefault(name, []).append((dict(p.attributes or {}), 0.0))

    ours = {spec.name for spec in _metrics.OBSERVED} | {_names.LIMITER_WAIT_DURATION}
    checked = {n for n in ours if not n.startswith(PIPELINE_OWNED + REDIS_OWNED)}
    assert checked == set(EXPECTED)
    assert set(EXPECTED) <= set(seen), sorted(set(EXPECTED) - set(seen))
    name_attributes = set(_names.NAME_ATTRIBUTE.values())
    for name in checked:
        for attributes, _ in seen[name]:
            keys = frozenset(attributes)
            assert keys in EXPECTED[name], (name, attributes)
            assert "trioflow.name" not in keys
            assert "trioflow.lane" not in keys
            assert len(keys & name_attributes) >= 1
            for key, value in attributes.items():
                assert key.startswith("trioflow."), key
                assert isinstance(value, str)
                if key == _names.KIND:
                    assert value in {_names.LIMITER, _names.LANE, _names.RATE_LIMITER}
    # The points name the objects this test made.
    limits = {frozenset(a.items()): v for a, v in seen[_names.LIMITER_LIMIT]}
    assert limits[frozenset({(_names.LIMITER_NAME, "db")})] == 1
    lane = frozenset({(_names.LIMITER_NAME, "pool"), (_names.LANE_NAME, "interactive")})
    queues = {frozenset(a.items()): v for a, v in seen[_names.LIMITER_QUEUE_SIZE]}
    assert queues[lane] == 1
    assert queues[frozenset({(_names.LIMITER_NAME, "db")})] == 1
    usage = {frozenset(a.items()): v for a, v in seen[_names.LIMITER_USAGE]}
    assert usage[frozenset({(_names.LIMITER_NAME, "pool"), (_names.LANE_NAME, "batch")})] == 2
    groups = {frozenset(a.items()): v for a, v in seen[_names.TASK_GROUP_QUEUE_SIZE]}
    assert groups[frozenset({(_names.TASK_GROUP_NAME, "jobs")})] == 1
    assert {(_names.RATE_LIMITER_NAME, "api"), (_names.KIND, "rate_limiter")} in [
        set(a.items()) for a, _ in seen[_names.LIMITER_WAIT_DURATION]
    ]


def test_instrument_names_follow_the_naming_rules(otel: Otel) -> None:
    """semantic-conventions general/naming.md: no ``_total``, units set, limit/usage pairs."""
    specs = {spec.name: spec for spec in _metrics.OBSERVED}
    for spec in specs.values():
        assert spec.name == spec.name.lower()
        assert not spec.name.endswith(("_total", ".total"))
        assert spec.unit
        assert spec.description.endswith(".")
    # A limit and its usage share a namespace and a unit, so usage / limit is a utilization.
    assert specs[_names.LIMITER_LIMIT].unit == specs[_names.LIMITER_USAGE].unit == "{token}"
    for name in (_names.LIMITER_USAGE, _names.LIMITER_QUEUE_SIZE, _names.TASK_GROUP_QUEUE_SIZE):
        assert specs[name].shape == "updown"
        assert not name.split(".")[-1].endswith("s")  # up-down counters are not plural


def test_registry_kinds_in_either_spelling() -> None:
    """Kinds are becoming snake_case identifiers; the old spelled-out ones still read."""
    assert _names.kind_id("rate limiter") == _names.RATE_LIMITER
    assert _names.kind_id("priority limiter") == _names.PRIORITY_LIMITER
    assert _names.kind_id("task_group") == _names.TASK_GROUP

    class Old:
        kind = "rate limiter"
        name = "legacy"

    class New:
        kind = "rate_limiter"
        name = "current"

    assert _metrics.identity(Old()) == {_names.RATE_LIMITER_NAME: "legacy"}
    assert _metrics.identity(New()) == {_names.RATE_LIMITER_NAME: "current"}
    assert _metrics.wait_attributes(Old())[_names.KIND] == "rate_limiter"
    assert _metrics.READERS[_names.kind_id(Old.kind)] is _metrics.read_rate
