"""The lane policy on its own: plain numbers in, a choice out, no trio.

``LanePolicy.choose`` is compared against a reference written the slow,
obvious way (sort the eligible heads), over random pools: lanes with
priorities, reserves, caps and ``max_wait``, random holdings, random queues,
a clock at a random time, fixed and adaptive. And its liveness: with nothing
borrowed and a total above 0, somebody always goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from trioflow._admission._lane_policy import Lane, LanePolicy, cap_tokens, reserved_tokens


@attrs.frozen(eq=False)
class Req:
    weight: int
    lane: int
    seq: int
    since: float


@attrs.define
class Pool:
    total: int
    in_use: list[int]
    queues: list[OrderedDict[Req, None]]
    alone_ok: bool = False

    @property
    def borrowed(self) -> int:
        return sum(self.in_use)

    def fits(self, weight: int) -> bool:
        if weight <= self.total - self.borrowed:
            return True
        return self.alone_ok and not self.borrowed and self.total > 0


lanes_st = st.lists(
    st.builds(
        lambda i, priority, reserve, limit, max_wait: Lane(
            f"l{i}",
            priority=priority,
            reserve=min(reserve, limit),
            limit=limit,
            max_wait=max_wait,
        ),
        st.integers(0, 1000),
        st.integers(0, 2),
        st.sampled_from([0.0, 0.1, 0.25, 0.3]),
        st.sampled_from([0.2, 0.5, 0.7, 1.0]),
        st.one_of(st.none(), st.sampled_from([1.0, 5.0])),
    ),
    min_size=1,
    max_size=4,
).map(lambda ls: [attrs.evolve(lane, name=f"lane{i}") for i, lane in enumerate(ls)])


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[Lane], Pool, float]:
    lanes = draw(lanes_st.filter(lambda ls: sum(lane.reserve for lane in ls) <= 1.0))
    total = draw(st.integers(0, 12))
    in_use = [draw(st.integers(0, 5)) for _ in lanes]
    seq = 0
    queues: list[OrderedDict[Req, None]] = []
    for i in range(len(lanes)):
        q: OrderedDict[Req, None] = OrderedDict()
        for _ in range(draw(st.integers(0, 3))):
            seq += 1
            q[Req(draw(st.integers(1, 6)), i, seq, draw(st.floats(0, 10)))] = None
        queues.append(q)
    # Arrival order across lanes is random too.
    order = draw(st.permutations(list(range(1, seq + 1))))
    renumbered: list[OrderedDict[Req, None]] = []
    for q in queues:
        heads = sorted(order[r.seq - 1] for r in q)
        renumbered.append(
            OrderedDict(
                (Req(r.weight, r.lane, s, r.since), None) for r, s in zip(q, heads, strict=True)
            )
        )
    pool = Pool(total, in_use, renumbered, alone_ok=draw(st.booleans()))
    return lanes, pool, draw(st.floats(0, 12))


def reference(lanes: Sequence[Lane], pool: Pool, now: float) -> Req | None:
    """The module docstring's rules, written the slow, obvious way."""
    reserved = reserved_tokens(lanes, pool.total)
    caps = [cap_tokens(lane, r, pool.total) for lane, r in zip(lanes, reserved, strict=True)]
    if pool.total - pool.borrowed <= 0:
        return None
    alone = pool.alone_ok and pool.borrowed == 0
    heads = [(i, next(iter(q))) for i, q in enumerate(pool.queues) if q]
    eligible = [(i, h) for i, h in heads if alone or pool.in_use[i] + h.weight <= caps[i]]
    owed = [(i, h) for i, h in eligible if pool.in_use[i] < reserved[i]]
    if owed:
        _, best = min(owed, key=lambda ih: (lanes[ih[0]].priority, ih[1].seq))
        return best if pool.fits(best.weight) else None
    if not eligible:
        return None
    top = min(lane.priority for lane in lanes)

    def rank(ih: tuple[int, Req]) -> tuple[int, int]:
        i, h = ih
        wait = lanes[i].max_wait
        promoted = wait is not None and now - h.since >= wait
        return (top if promoted else lanes[i].priority, h.seq)

    _, best = min(eligible, key=rank)
    return best if pool.fits(best.weight) else None


@settings(max_examples=2000, deadline=None)
@given(pools())
def test_choose_matches_the_reference(case: tuple[list[Lane], Pool, float]) -> None:
    lanes, pool, now = case
    policy = LanePolicy[Req](lanes, pool.total, lambda: now)
    chosen = policy.choose(pool)
    assert chosen is reference(lanes, pool, now)
    if chosen is not None:
        # The contract the kernel relies on.
        assert chosen is next(iter(pool.queues[chosen.lane]))
        assert pool.fits(chosen.weight)
        alone = pool.alone_ok and not pool.borrowed
        assert alone or pool.in_use[chosen.lane] + chosen.weight <= policy.caps[chosen.lane]


@settings(max_examples=1000, deadline=None)
@given(pools())
def test_nothing_borrowed_means_somebody_goes(case: tuple[list[Lane], Pool, float]) -> None:
    """Liveness: with nothing held and tokens to give, a head that can fit is granted."""
    lanes, pool, now = case
    pool.in_use = [0] * len(lanes)
    policy = LanePolicy[Req](lanes, pool.total, lambda: now)
    # Queued weights are within their lane's cap (the faces and the kernel
    # see to that on fixed pools); adaptive pools take any weight.
    if not pool.alone_ok:
        for q in pool.queues:
            for r in [r for r in q if r.weight > policy.caps[r.lane]]:
                del q[r]
    if pool.total > 0 and any(pool.queues):
        assert policy.choose(pool) is not None


@settings(max_examples=1000, deadline=None)
@given(pools())
def test_fast_path_admits_only_what_fits_the_cap(case: tuple[list[Lane], Pool, float]) -> None:
    lanes, pool, now = case
    policy = LanePolicy[Req](lanes, pool.total, lambda: now)
    for lane in range(len(lanes)):
        for weight in range(1, 8):
            admitted = policy.admits(pool, lane, weight)
            within = (
                pool.in_use[lane] + weight <= policy.caps[lane]
                and weight <= pool.total - pool.borrowed
            )
            alone = pool.alone_ok and not pool.borrowed and pool.total > 0
            assert admitted == (within or alone)


def test_reserves_and_caps_round_as_documented() -> None:
    lanes = [Lane("a", reserve=1 / 3), Lane("b", reserve=1 / 3), Lane("c", reserve=1 / 3)]
    assert reserved_tokens(lanes, 10) == [4, 3, 3]
    assert cap_tokens(Lane("x", limit=0.5), 0, 6) == 3
    assert cap_tokens(Lane("x", limit=0.1), 0, 3) == 1  # never 0 while total >= 1
