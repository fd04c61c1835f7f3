"""Every attribute and instrument name trioflow reports, in one place.

Attributes name the object they describe **per kind**
(``trioflow.limiter.name``, ``trioflow.lane.name``...), so one attribute
never means a limiter on one metric and a stage on another, and a query can
say which kind it wants without knowing the instrument. Instruments follow
OpenTelemetry's naming rules (``semantic-conventions``, ``general/naming.md``):
a total is ``.limit``, the part of it in use is ``.usage``, a histogram of
times is ``.duration`` in seconds, up-down counters are not plural, and no
name ends in ``_total``.

Registry kinds are snake_case identifiers (``"rate_limiter"``,
``"task_group"``); :func:`kind_id` also accepts the older spelled-out kinds
(``"rate limiter"``) while primitives move over.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BATCH_LINKS_DROPPED",
    "BATCH_SIZE",
    "BATCH_TRACE_ID",
    "CANCELLED",
    "ERROR_TYPE",
    "ITEM_TRACE_IDS",
    "KIND",
    "LANE",
    "LANE_NAME",
    "LIMITER",
    "LIMITER_LIMIT",
    "LIMITER_NAME",
    "LIMITER_QUEUE_SIZE",
    "LIMITER_USAGE",
    "LIMITER_WAIT_DURATION",
    "NAME_ATTRIBUTE",
    "ORIGIN",
    "OUTCOME",
    "PIPELINE",
    "PIPELINE_NAME",
    "PRIORITY_LIMITER",
    "RATE_LIMITER",
    "RATE_LIMITER_NAME",
    "RATE_LIMITER_TOKENS",
    "REDIS_LIMITER",
    "REDIS_RATE_LIMITER",
    "REDIS_STREAM_SOURCE",
    "RETRY_EVENT",
    "STAGE",
    "STAGE_NAME",
    "STREAM_SOURCE_IN_FLIGHT",
    "STREAM_SOURCE_NAME",
    "STREAM_SOURCE_READ",
    "STREAM_SOURCE_SETTLED",
    "STREAM_SOURCE_UNAVAILABLE",
    "TASK_GROUP",
    "TASK_GROUP_NAME",
    "TASK_GROUP_QUEUE_SIZE",
    "TASK_GROUP_RUNNING",
    "TASK_GROUP_TASKS",
    "WAIT_DURATION",
    "WAIT_EVENT",
    "kind_id",
]

# -- registry kinds (snake_case identifiers) -----------------------------------

LIMITER: Final = "limiter"
LANE: Final = "lane"
PRIORITY_LIMITER: Final = "priority_limiter"
RATE_LIMITER: Final = "rate_limiter"
TASK_GROUP: Final = "task_group"
PIPELINE: Final = "pipeline"
STAGE: Final = "stage"
#: The replicas' limiters (:mod:`trioflow.redis`) report like their local peers.
REDIS_LIMITER: Final = "redis_limiter"
REDIS_RATE_LIMITER: Final = "redis_rate_limiter"
#: A Redis Streams consumer as a pipeline source (:func:`trioflow.redis.open_stream_source`).
REDIS_STREAM_SOURCE: Final = "redis_stream_source"


def kind_id(kind: str) -> str:
    """A registry kind as a snake_case identifier: ``"rate limiter"`` → ``"rate_limiter"``."""
    return kind.replace(" ", "_")


# -- attributes that name an object, one per kind --------------------------------

LIMITER_NAME: Final = "trioflow.limiter.name"
#: A lane's own name (without its limiter's ``"<limiter>/"`` prefix); the
#: lane's limiter is :data:`LIMITER_NAME` on the same point.
LANE_NAME: Final = "trioflow.lane.name"
RATE_LIMITER_NAME: Final = "trioflow.rate_limiter.name"
TASK_GROUP_NAME: Final = "trioflow.task_group.name"
PIPELINE_NAME: Final = "trioflow.pipeline.name"
STAGE_NAME: Final = "trioflow.stage.name"
#: A stream source's ``<stream>/<group>/<consumer>``.
STREAM_SOURCE_NAME: Final = "trioflow.stream_source.name"

#: Registry kind -> the attribute that carries an object's name.
NAME_ATTRIBUTE: Final[dict[str, str]] = {
    LIMITER: LIMITER_NAME,
    LANE: LANE_NAME,
    PRIORITY_LIMITER: LIMITER_NAME,
    RATE_LIMITER: RATE_LIMITER_NAME,
    TASK_GROUP: TASK_GROUP_NAME,
    PIPELINE: PIPELINE_NAME,
    STAGE: STAGE_NAME,
    REDIS_LIMITER: LIMITER_NAME,
    REDIS_RATE_LIMITER: RATE_LIMITER_NAME,
    REDIS_STREAM_SOURCE: STREAM_SOURCE_NAME,
}

# -- other attributes ------------------------------------------------------------

#: The registry kind of the object a wait was on (``"limiter"``, ``"lane"``,
#: ``"rate_limiter"``), on the wait histogram and the wait event.
KIND: Final = "trioflow.kind"
OUTCOME: Final = "trioflow.outcome"
#: Where a stream source's entry came from: ``new`` or ``claimed``.
ORIGIN: Final = "trioflow.origin"
CANCELLED: Final = "trioflow.cancelled"
ERROR_TYPE: Final = "error.type"
WAIT_DURATION: Final = "trioflow.wait.duration"
BATCH_SIZE: Final = "trioflow.batch.size"
BATCH_LINKS_DROPPED: Final = "trioflow.batch.links_dropped"
#: On an item's span: the trace id (32 hex digits) of the batch it went
#: into, for Jaeger's "Lookup by Trace ID".
BATCH_TRACE_ID: Final = "trioflow.batch.trace_id"
#: On a batch span: the trace ids of the items in it (within the link limit).
ITEM_TRACE_IDS: Final = "trioflow.item.trace_ids"

# -- events ------------------------------------------------------------------------

WAIT_EVENT: Final = "trioflow.wait"
RETRY_EVENT: Final = "trioflow.retry"

# -- instruments outside the pipeline ----------------------------------------------

LIMITER_LIMIT: Final = "trioflow.limiter.limit"
LIMITER_USAGE: Final = "trioflow.limiter.usage"
LIMITER_QUEUE_SIZE: Final = "trioflow.limiter.queue.size"
LIMITER_WAIT_DURATION: Final = "trioflow.limiter.wait.duration"
STREAM_SOURCE_READ: Final = "trioflow.stream_source.read"
STREAM_SOURCE_SETTLED: Final = "trioflow.stream_source.settled"
STREAM_SOURCE_IN_FLIGHT: Final = "trioflow.stream_source.in_flight"
STREAM_SOURCE_UNAVAILABLE: Final = "trioflow.stream_source.unavailable"
RATE_LIMITER_TOKENS: Final = "trioflow.rate_limiter.tokens"
TASK_GROUP_RUNNING: Final = "trioflow.task_group.running"
TASK_GROUP_QUEUE_SIZE: Final = "trioflow.task_group.queue.size"
TASK_GROUP_TASKS: Final = "trioflow.task_group.tasks"
