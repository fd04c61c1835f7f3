"""Token-bucket arithmetic on its own: "never more than rate·T + burst", without trio.

A small discrete-event simulation drives :func:`drain` and :func:`refill`
the way the rate limiter does — arrivals that take tokens at once when
nobody is in line, a FIFO that is paid at each demand's due time, wake-ups
that come late — and checks every window of the resulting grants.
"""

from __future__ import annotations

import itertools
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from trioflow._admission._bucket import drain, refill


def worst_excess(grants: list[tuple[float, int]], rate: float) -> float:
    """max over windows [t_i, t_j] of (tokens granted in it) - rate * (t_j - t_i)."""
    best = 0.0
    lowest = 0.0
    before = 0.0
    for t, n in sorted(grants):
        lowest = min(lowest, before - rate * t)
        before += n
        best = max(best, before - rate * t - lowest)
    return best


@settings(max_examples=500, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 100.0]),
    burst=st.integers(1, 5),
    arrivals=st.lists(
        st.tuples(st.floats(0, 0.5), st.integers(1, 5)),  # gap before it, n
        min_size=1,
        max_size=40,
    ),
    lateness=st.lists(st.floats(0, 0.3), min_size=1, max_size=10),
)
def test_no_window_grants_more_than_rate_times_t_plus_burst(
    rate: float, burst: int, arrivals: list[tuple[float, int]], lateness: list[float]
) -> None:
    level, stamp = float(burst), -1e9
    queue: deque[int] = deque()
    grants: list[tuple[float, int]] = []
    now = 0.0
    times = []
    for gap, n in arrivals:
        now += gap
        times.append((now, min(n, burst)))
    late = itertools.cycle(lateness)

    def settle(at: float) -> None:
        nonlocal level, stamp
        pending = list(queue)
        k, new_level, _ = drain(level, stamp, at, rate, burst, pending)
        # Each paid demand is charged to its own due time (the last due of
        # the prefix that ends with it), never to the late moment of the
        # settle: the grants are those instants.
        for j in range(1, k + 1):
            _, _, due = drain(level, stamp, at, rate, burst, pending[:j])
            grants.append((due, queue.popleft()))
        level, stamp = new_level, at

    for at, n in times:
        # Wake-ups for the queue's head, each a little late, until this arrival.
        while queue:
            need = queue[0] - refill(level, stamp, stamp, rate, burst)
            wake = stamp + max(need, 0) / rate + next(late)
            if wake >= at:
                break
            settle(wake)
        settle(at)
        if not queue:
            level = refill(level, stamp, at, rate, burst)
            stamp = at
            if level >= n:
                level -= n
                grants.append((at, n))
                continue
        queue.append(n)
    while queue:
        need = queue[0] - level
        settle(stamp + max(need, 0) / rate + next(late))
    assert sum(n for _, n in grants) == sum(n for _, n in times)
    assert worst_excess(grants, rate) <= burst + 1e-6


def test_refill_caps_and_ignores_a_clock_that_went_back() -> None:
    assert refill(0.0, 0.0, 10.0, 1.0, 3) == 3.0
    assert refill(1.0, 5.0, 4.0, 1.0, 3) == 1.0
    assert refill(0.5, 0.0, 1.0, 1.0, 3) == 1.5


def test_drain_pays_in_order_at_due_times() -> None:
    # Empty bucket at 0, rate 1: demands of 1, 2, 1 are due at 1, 3, 4.
    assert drain(0.0, 0.0, 3.5, 1.0, 5, [1, 2, 1]) == (2, 0.5, 3.0)
    assert drain(0.0, 0.0, 0.5, 1.0, 5, [1]) == (0, 0.5, 0.0)
    # A level that covers the head pays it at once.
    assert drain(2.0, 0.0, 0.0, 1.0, 5, [1, 1, 1]) == (2, 0.0, 0.0)
