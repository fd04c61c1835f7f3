"""Scenarios S1-S10 of the adaptive-concurrency benchmark (issue 5).

Model A: M/G/c FIFO, c = 20, lognormal service with mean 20 ms and sigma 0.5
(capacity about 1000 requests/s). Model B: contention, S(n) = S0 (1 +
0.02 (n-1) + 5e-4 n (n-1)) with S0 the same lognormal (throughput peaks near
n = 44, about 785 requests/s). Clients are open-loop Poisson with a 1 s
deadline. ``quick`` halves every duration (for trying things, not for the
table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim import Model, Phase


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    phases: list[Phase]
    model: Model = field(default_factory=Model)
    lanes: tuple[tuple[str, float], ...] = (("all", 1.0),)


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
        Scenario(
            "S5",
            "50% fast errors for 10 s (2000 req/s)",
            [
                ph(20, 2000, "before"),
                ph(10, 2000, "errors", error_fraction=0.5),
                ph(10, 2000, "after"),
            ],
        ),
        Scenario(
            "S6",
            "cold start, best limit ~200 (c=200, 12500 req/s)",
            [ph(10, 12500, "cold", servers=200)],
        ),
        Scenario(
            "S7",
            "contention model B (1600 req/s)",
            [ph(30, 1600, "contention")],
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
    ]
    del a
    return {s.key: s for s in out}
