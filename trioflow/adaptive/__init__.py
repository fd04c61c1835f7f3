"""Adaptive limit algorithms: pure numbers in, a limit out (no trio import).

Give one to a limiter with ``algorithm=``::

    limiter = tf.CapacityLimiter(algorithm=tf.adaptive.Cruise())

Which to pick (figures in ``docs/adaptive.md`` and ``docs/benchmarks/``):
:class:`Cruise` for a remote downstream (trioflow's own; fast from cold,
latency-driven, drift-proof); :class:`LoadFeedback` when a local metric (CPU,
queue length) tells the truth better than latency; :class:`Vegas`,
:class:`Gradient2` and :class:`AIMD` are the well-known rules, for
comparison or for a team that already tuned them elsewhere.
"""

from ._aimd import AIMD as AIMD
from ._base import Algorithm as Algorithm
from ._base import Sample as Sample
from ._cruise import Cruise as Cruise
from ._gradient2 import Gradient2 as Gradient2
from ._load import LoadFeedback as LoadFeedback
from ._vegas import Vegas as Vegas

__all__ = ["AIMD", "Algorithm", "Cruise", "Gradient2", "LoadFeedback", "Sample", "Vegas"]
