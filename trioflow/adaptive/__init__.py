"""Adaptive limit algorithms: pure numbers in, a limit out (no trio import).

Give one to a limiter with ``algorithm=``::

    limiter = tf.CapacityLimiter(20, algorithm=tf.adaptive.Vegas())
"""

from ._base import Algorithm as Algorithm
from ._base import Sample as Sample

__all__ = ["Algorithm", "Sample"]
