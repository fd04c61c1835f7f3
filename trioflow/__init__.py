"""trioflow: structured-concurrency building blocks for Trio.

Import as ``import trioflow as tf``. Every public name is re-exported here;
its home module is one hop away (``trioflow/_admission/_capacity.py`` for
``tf.CapacityLimiter``). Public submodules: :mod:`trioflow.adaptive`,
:mod:`trioflow.telemetry`, :mod:`trioflow.debug`, :mod:`trioflow.testing`.
"""

from . import adaptive as adaptive
from . import debug as debug
from . import telemetry as telemetry
from . import testing as testing

# -- admission: who may run now --
from ._admission._capacity import CapacityLimiter as CapacityLimiter
from ._admission._capacity import LimiterStatistics as LimiterStatistics
from ._admission._face import Permit as Permit

# -- admission: priority lanes (one kernel, a lane handle per lane) --
from ._admission._lane_policy import Lane as Lane
from ._admission._lanes import LaneLimiter as LaneLimiter
from ._admission._lanes import LaneStatistics as LaneStatistics
from ._admission._lanes import PriorityLimiter as PriorityLimiter
from ._admission._lanes import PriorityLimiterStatistics as PriorityLimiterStatistics
from ._admission._protocol import Limiter as Limiter
from ._admission._protocol import Pacer as Pacer
from ._admission._protocol import PermitLimiter as PermitLimiter

# -- rate limits: how many start per second --
from ._admission._rate import RateLimiter as RateLimiter
from ._admission._rate import RateLimiterStatistics as RateLimiterStatistics
from ._admission._rate import Reservation as Reservation

# -- pipelines: stages with workers, back-pressure, retries, dead letters --
from ._pipeline._fate import Fate as Fate
from ._pipeline._pipeline import Pipeline as Pipeline
from ._pipeline._pipeline import StageOptions as StageOptions
from ._pipeline._reader import SettlingSource as SettlingSource
from ._pipeline._report import DeadLetter as DeadLetter
from ._pipeline._report import Latency as Latency
from ._pipeline._report import PipelineReport as PipelineReport
from ._pipeline._report import StageReport as StageReport
from ._pipeline._retry import Backoff as Backoff
from ._pipeline._retry import Retry as Retry
from ._pipeline._runtime import Outputs as Outputs
from ._pipeline._runtime import PipelineRun as PipelineRun

# -- running many tasks: task groups and parallel map --
from ._tasks._amap import AmapResults as AmapResults
from ._tasks._amap import AmapStatistics as AmapStatistics
from ._tasks._amap import amap as amap
from ._tasks._amap import run_all as run_all
from ._tasks._group import TaskGroup as TaskGroup
from ._tasks._group import TaskGroupStatistics as TaskGroupStatistics
from ._tasks._group import TaskHandle as TaskHandle
from ._tasks._group import open_task_group as open_task_group

# -- (later sections are added here, one block per building block) --

#: The public names (``from trioflow import *``, and what the tests derive
#: their lists from); tests/test_public_api.py checks it is complete.
__all__ = [
    "AmapResults",
    "AmapStatistics",
    "Backoff",
    "CapacityLimiter",
    "DeadLetter",
    "Fate",
    "Lane",
    "LaneLimiter",
    "LaneStatistics",
    "Latency",
    "Limiter",
    "LimiterStatistics",
    "Outputs",
    "Pacer",
    "Permit",
    "PermitLimiter",
    "Pipeline",
    "PipelineReport",
    "PipelineRun",
    "PriorityLimiter",
    "PriorityLimiterStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
    "Reservation",
    "Retry",
    "SettlingSource",
    "StageOptions",
    "StageReport",
    "TaskGroup",
    "TaskGroupStatistics",
    "TaskHandle",
    "adaptive",
    "amap",
    "debug",
    "open_task_group",
    "run_all",
    "telemetry",
    "testing",
]
from ._util import fixup_module_metadata as _fixup_module_metadata

__version__ = "0.1.0.dev0"

_fixup_module_metadata(__name__, globals())
_fixup_module_metadata(adaptive.__name__, adaptive.__dict__)
_fixup_module_metadata(telemetry.__name__, telemetry.__dict__)
_fixup_module_metadata(debug.__name__, debug.__dict__)
_fixup_module_metadata(testing.__name__, testing.__dict__)
del _fixup_module_metadata
