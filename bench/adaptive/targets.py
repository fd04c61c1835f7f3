"""Print the issue's targets against the medians in results/summary-*.json (markdown).

python bench/adaptive/targets.py results/summary-a.json results/summary-b.json
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

Row = tuple[str, str, str, str, Callable[[dict[str, Any]], float], Callable[[float], bool], str]

# (target, scenario, phase, what, value from the phase row, met?, format)
TARGETS: list[Row] = [
    (
        "2x overload: goodput >= 99%",
        "S1",
        "overload",
        "goodput_pct",
        lambda r: r["goodput_pct"],
        lambda v: v >= 99,
        "{:.1f}%",
    ),
    (
        "2x overload: p99 <= 1.1x",
        "S1",
        "overload",
        "p99_x",
        lambda r: r["p99_x"],
        lambda v: v <= 1.1,
        "{:.2f}x",
    ),
    (
        "contention: goodput >= 97%",
        "S7",
        "contention",
        "goodput_pct",
        lambda r: r["goodput_pct"],
        lambda v: v >= 97,
        "{:.1f}%",
    ),
    (
        "contention: p99 <= 1.2x (together)",
        "S7",
        "contention",
        "p99_x",
        lambda r: r["p99_x"],
        lambda v: v <= 1.2,
        "{:.2f}x",
    ),
    (
        "capacity step down: converge <= 2 s",
        "S2",
        "c=10 (down)",
        "conv",
        lambda r: r["conv"],
        lambda v: v <= 2,
        "{:.0f} s",
    ),
    (
        "capacity step up: converge <= 5 s",
        "S2",
        "c=40 (up)",
        "conv",
        lambda r: r["conv"],
        lambda v: v <= 5,
        "{:.0f} s",
    ),
    (
        "cold start to ~200: converge <= 5 s",
        "S6",
        "cold",
        "conv",
        lambda r: r["conv"],
        lambda v: v <= 5,
        "{:.0f} s",
    ),
    (
        "cold start: peak limit / oracle limit",
        "S6",
        "cold",
        "limit_max",
        lambda r: r["limit_max"],
        lambda v: True,
        "{:.0f}",
    ),
    (
        "spike: first-second p99 <= 1.3x",
        "S3",
        "spike",
        "first_second_p99_x",
        lambda r: r["first_second_p99_x"],
        lambda v: v <= 1.3,
        "{:.2f}x",
    ),
    (
        "error burst: goodput >= 95%",
        "S5",
        "errors",
        "goodput_pct",
        lambda r: r["goodput_pct"],
        lambda v: v >= 95,
        "{:.1f}%",
    ),
    (
        "error burst: recovery <= 2 s",
        "S5",
        "after",
        "conv",
        lambda r: r["conv"],
        lambda v: v <= 2,
        "{:.0f} s",
    ),
    (
        "oscillation <= 20% (S1)",
        "S1",
        "overload",
        "osc_pct",
        lambda r: r["osc_pct"],
        lambda v: v <= 20,
        "{:.0f}%",
    ),
    (
        "false rejections <= 0.1% (S10)",
        "S10",
        "0.8x",
        "rejected_pct",
        lambda r: r["rejected_pct"],
        lambda v: v <= 0.1,
        "{:.2f}%",
    ),
    (
        "live lane keeps >= 99% (S8)",
        "S8",
        "lanes",
        "live_served_pct",
        lambda r: r["live_served_pct"],
        lambda v: v >= 99,
        "{:.1f}%",
    ),
]


def main() -> None:
    summary: dict[str, Any] = {}
    oracles: dict[str, Any] = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            data = json.load(f)
        summary.update(data["summary"])
        oracles.update(data["oracles"])
    algos: list[str] = []
    for sc in summary.values():
        for a in sc["algorithms"]:
            if a not in algos:
                algos.append(a)
    print("| target | " + " | ".join(algos) + " |")
    print("|---|" + "---|" * len(algos))
    for name, key, phase, _, get, ok, form in TARGETS:
        if key not in summary:
            print(f"| {name} | " + " | ".join("not run" for _ in algos) + " |")
            continue
        sc = summary[key]
        i = sc["phase_names"].index(phase)
        cells = []
        for a in algos:
            v = get(sc["algorithms"][a][i])
            if name.startswith("cold start: peak"):
                v = v / oracles[key][i]["limit"]
                cells.append(f"{v:.2f}x")
                continue
            text = "never" if isinstance(v, float) and math.isinf(v) else form.format(v)
            cells.append(f"{text} {'✅' if ok(v) else '❌'}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
