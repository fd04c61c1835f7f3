"""Token-bucket arithmetic: pure numbers, no trio, no state.

The rate limiter's bucket is two numbers, ``level`` tokens at time
``stamp``; whoever looks at it at ``now`` computes what accrued since. These
two functions are that computation, kept apart from the limiter's queue and
parking so that its promise — no window of ``T`` seconds grants more than
``rate * T + burst`` tokens — is a property test over plain numbers
(``tests/_admission/test_bucket.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["drain", "refill"]


def refill(level: float, stamp: float, now: float, rate: float, burst: int) -> float:
    """The level at ``now`` of a bucket that held ``level`` at ``stamp`` (capped at ``burst``).

    A ``now`` before ``stamp`` (a clock from another ``trio.run``) accrues nothing.
    """
    if now > stamp:
        level += (now - stamp) * rate
        if level > burst:
            return float(burst)
    return level


def drain(
    level: float, stamp: float, now: float, rate: float, burst: int, demands: Iterable[int]
) -> tuple[int, float, float]:
    """Pay queued demands (sizes in line order) from the bucket, each at its own due time.

    Returns ``(k, level, t)``: the first ``k`` demands are due by ``now``;
    ``level`` is the bucket's level at ``now`` after paying them; ``t`` is
    when the last of them became due (``stamp`` if none was). A demand is
    due at the moment the bucket, draining into the line strictly in order,
    has accrued its tokens; demands behind the first one not yet due are
    not looked at (``demands`` may be a lazy iterator).
    """
    if now < stamp:
        stamp = now
    t = stamp
    k = 0
    for n in demands:
        need = n - level
        if need > 0:
            due = t + need / rate
            if due > now:
                break
            # Paid at its own due time: the bucket is exactly empty then.
            t = due
            level = 0.0
        else:
            level -= n
        k += 1
    # With a demand still waiting, level < its n <= burst: the cap never bites then.
    level += (now - t) * rate
    if level > burst:
        level = float(burst)
    return k, level, t
