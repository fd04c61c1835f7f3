"""Scenarios of the adaptive-concurrency benchmark (S1-S10: issue 5; the rest: issue 20).

Model A: M/G/c FIFO, c = 20, lognormal service with mean 20 ms and sigma 0.5
(capacity about 1000 requests/s). Model B: contention, S(n) = S0 (1 +
0.02 (n-1) + 5e-4 n (n-1)) with S0 the same lognormal (throughput peaks near
n = 44, about 785 requests/s). Clients are open-loop Poisson with a 1 s
deadline. ``quick`` halves every duration (for trying things, not for the
table).

Issue 20 added the cases where Cruise broke: a 100 ms downstream from cold
(S11), contention held for 300 s (S7 is now 300 s), a capacity random walk
(S12), callers that cancel (S13 correct, S13d fed as drops), Pareto service
(S14), and fast errors fed as drops (S5d). These were fixed before Cruise
was changed, and are not tuned to any algorithm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sim import Model, Phase


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    phases: list[Phase]
    model: Model = field(default_factory=Model)
    lanes: tuple[tuple[str, float], ...] = (("all", 1.0),)
    #: the application calls ``permit.drop()`` on its fast errors (S5d)
    errors_as_drops: bool = False
    #: the application calls ``permit.drop()`` when its caller cancels (S13d: the mistake)
    cancels_as_drops: bool = False


WALK_SEED = 20  # the random walk's own seed: the same walk for every algorithm and run seed
WALK_RATE = 3600.0  # 1.2x the capacity of the largest segment (60 servers)


def random_walk(segments: int = 8) -> list[tuple[float, int]]:
    """(duration, servers) per segment: 5-60 servers, each held 20-40 s."""
    rng = random.Random(WALK_SEED)
    return [(rng.uniform(20, 40), rng.randint(5, 60)) for _ in range(segments)]


def scenarios(quick: bool = False) -> dict[str, Scenario]:
    k = 0.5 if quick else 1.0

    def ph(duration: float, rate: float, name: str, **kw: object) -> Phase:
        return Phase(duration * k, rate, name=name, **kw)  # type: ignore[arg-type]

    a = Model()
    out = [
        Scenario("S1", "2x steady overload", [ph(30, 2000, "overload")]),
        Scenario(
            "S2",
            "capacity steps 20 -> 10 -> 40 (2500 req/s)",
            [
                ph(20, 2500, "c=20", servers=20),
                ph(20, 2500, "c=10 (down)", servers=10),
                ph(20, 2500, "c=40 (up)", servers=40),
            ],
        ),
        Scenario(
            "S3",
            "10x spike for 10 s (500 -> 5000 -> 500 req/s)",
            [ph(20, 500, "before"), ph(10, 5000, "spike"), ph(10, 500, "after")],
        ),
        Scenario(
            "S4",
            "service time x3 over 120 s (1500 req/s)",
            [
                ph(20, 1500, f"ramp {i + 1}/6", scale=1 + 2 * i / 6, scale_end=1 + 2 * (i + 1) / 6)
                for i in range(6)
            ],
        ),
        *(
            Scenario(
                key,
                f"50% fast errors for 10 s{title} (2000 req/s)",
                [
                    ph(20, 2000, "before"),
                    ph(10, 2000, "errors", error_fraction=0.5),
                    ph(after, 2000, "after"),
                ],
                errors_as_drops=as_drops,
            )
            for key, title, after, as_drops in (
                ("S5", "", 10, False),
                ("S5d", ", fed as drops", 30, True),
            )
        ),
        Scenario(
            "S6",
            "cold start, best limit ~200 (c=200, 12500 req/s)",
            [ph(10, 12500, "cold", servers=200)],
        ),
        Scenario(
            "S7",
            "contention model B held for 300 s (1600 req/s)",
            [ph(300, 1600, "contention")],
            model=Model(kind="B"),
        ),
        Scenario(
            "S8",
            "two lanes, live 90% / batch 10% at 3x overload",
            [ph(30, 3000, "lanes")],
            lanes=(("live", 0.9), ("batch", 0.1)),
        ),
        Scenario(
            "S9",
            "bimodal service 90% 10 ms / 10% 200 ms (1380 req/s)",
            [ph(30, 1380, "bimodal")],
            model=Model(bimodal=(0.9, 0.010, 0.200)),
        ),
        Scenario("S10", "0.8x load (800 req/s)", [ph(30, 800, "0.8x")]),
        Scenario(
            "S11",
            "cold start, 100 ms downstream, best limit ~200 (c=200, 2500 req/s)",
            [ph(20, 2500, "cold", servers=200)],
            model=Model(mean=0.100),
        ),
        Scenario(
            "S12",
            f"capacity random walk, 5-60 servers every 20-40 s ({WALK_RATE:.0f} req/s)",
            [
                ph(duration, WALK_RATE, f"walk {i + 1}: c={servers}", servers=servers)
                for i, (duration, servers) in enumerate(random_walk())
            ],
        ),
        Scenario(
            "S13",
            "10% of callers cancel within 2-40 ms (not sampled): 0.8x load, then 2x",
            [
                ph(20, 800, "0.8x", cancel_fraction=0.1),
                ph(20, 2000, "2x", cancel_fraction=0.1),
            ],
        ),
        Scenario(
            "S13d",
            "10% of callers cancel within 2-40 ms, fed as drops (the mistake): 0.8x, then 2x",
            [
                ph(20, 800, "0.8x", cancel_fraction=0.1),
                ph(20, 2000, "2x", cancel_fraction=0.1),
            ],
            cancels_as_drops=True,
        ),
        Scenario(
            "S14",
            "Pareto service (alpha 1.5, mean 20 ms) at 0.8x load (800 req/s)",
            [ph(30, 800, "0.8x pareto")],
            model=Model(pareto_alpha=1.5),
        ),
    ]
    del a
    return {s.key: s for s in out}
