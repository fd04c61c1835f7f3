"""The issue's targets against the medians in results/summary*.json, as markdown.

    python bench/adaptive/targets.py results/summary-base.json results/summary-cruise.json
    python bench/adaptive/targets.py --tables --plots results/summary-*.json

Summaries are merged per scenario *and algorithm* (a later file replaces an
earlier one's rows for the algorithms it ran), so the comparison rows and
Cruise can be run separately. ``--tables`` also prints the per-scenario
tables; ``--plots`` draws one PNG per scenario (limit and p99 per 1 s
window of each algorithm's first seed, oracle dashed) to docs/img/adaptive/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
IMG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "img", "adaptive")


def fmt(x: float, digits: int = 2) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "never"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.{digits}f}"


# (target, scenario, phase name or "*" for the whole scenario, metric, bound, "min"/"max")
# "min": the figure must be >= bound; "max": <= bound; "info": shown, not judged.
TARGETS: list[tuple[str, str, str, str, float, str]] = [
    ("2x overload: goodput >= 99%", "S1", "overload", "goodput_pct", 99, "min"),
    ("2x overload: p99 <= 1.1x", "S1", "overload", "p99_x", 1.1, "max"),
    ("contention 300 s: goodput >= 97%", "S7", "contention", "goodput_pct", 97, "min"),
    ("contention 300 s: p99 <= 1.2x", "S7", "contention", "p99_x", 1.2, "max"),
    ("capacity step down: converge <= 2 s", "S2", "c=10 (down)", "conv", 2, "max"),
    ("capacity step up: converge <= 5 s", "S2", "c=40 (up)", "conv", 5, "max"),
    ("cold start 20 ms: converge <= 5 s", "S6", "cold", "conv", 5, "max"),
    ("cold start 20 ms: peak <= 1.25x best limit", "S6", "cold", "peak_x", 1.25, "max"),
    ("cold start 100 ms: converge <= 5 s", "S11", "cold", "conv", 5, "max"),
    ("cold start 100 ms: peak <= 1.25x best limit", "S11", "cold", "peak_x", 1.25, "max"),
    ("spike: first-second p99 <= 1.3x", "S3", "spike", "first_second_p99_x", 1.3, "max"),
    ("50% fast errors: goodput >= 95%", "S5", "errors", "goodput_pct", 95, "min"),
    ("50% fast errors: recovery <= 2 s", "S5", "after", "conv", 2, "max"),
    ("fast errors fed as drops: goodput >= 95%", "S5d", "errors", "goodput_pct", 95, "min"),
    ("fast errors fed as drops: recovery <= 2 s", "S5d", "after", "conv", 2, "max"),
    ("oscillation <= 20% (S1)", "S1", "overload", "osc_pct", 20, "max"),
    ("false rejections <= 0.1% at 0.8x (S10)", "S10", "0.8x", "rejected_pct", 0.1, "max"),
    ("false rejections <= 0.1%, Pareto (S14)", "S14", "0.8x pareto", "rejected_pct", 0.1, "max"),
    ("random walk >= 99% of per-segment oracle", "S12", "*", "goodput_pct", 99, "min"),
    ("slowdown x3: worst 20 s segment >= 99%", "S4", "*", "worst_goodput_pct", 99, "min"),
    ("slowdown x3: worst segment p99 <= 1.1x", "S4", "*", "worst_p99_x", 1.1, "max"),
    ("live lane keeps >= 99% (S8)", "S8", "lanes", "live_served_pct", 99, "min"),
    ("random walk: changes settled <= 5 s", "S12", "*", "settled_5s_pct", 0, "info"),
    ("cancellations not sampled: rejected at 0.8x", "S13", "0.8x", "rejected_pct", 0, "info"),
    ("cancellations not sampled: goodput at 2x", "S13", "2x", "goodput_pct", 0, "info"),
    ("cancellations fed as drops: rejected at 0.8x", "S13d", "0.8x", "rejected_pct", 0, "info"),
    ("cancellations fed as drops: goodput at 2x", "S13d", "2x", "goodput_pct", 0, "info"),
]

UNITS = {
    "goodput_pct": "{:.1f}%",
    "worst_goodput_pct": "{:.1f}%",
    "settled_5s_pct": "{:.0f}%",
    "live_served_pct": "{:.1f}%",
    "rejected_pct": "{:.2f}%",
    "osc_pct": "{:.0f}%",
    "conv": "{:.0f} s",
}


def merge(paths: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    summary: dict[str, Any] = {}
    oracles: dict[str, Any] = {}
    metas: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        metas.append(data["meta"])
        oracles.update(data["oracles"])
        for key, sc in data["summary"].items():
            into = summary.setdefault(key, {**sc, "algorithms": {}, "aggregate": {}, "traces": {}})
            for part in ("algorithms", "aggregate", "traces"):
                into[part].update(sc.get(part, {}))
    return summary, oracles, metas


def algorithms_in(summary: dict[str, Any]) -> list[str]:
    order = ["AIMD", "Vegas", "Gradient2", "Envoy", "Cruise", "LoadFeedback"]
    seen = {a for sc in summary.values() for a in sc["algorithms"]}
    return [a for a in order if a in seen] + sorted(seen - set(order))


def figure(summary: dict[str, Any], key: str, phase: str, metric: str, algo: str) -> float | None:
    sc = summary.get(key)
    if sc is None or algo not in sc["algorithms"]:
        return None
    if phase == "*":
        return sc["aggregate"][algo][metric]
    row = sc["algorithms"][algo][sc["phase_names"].index(phase)]
    return row.get(metric)


def targets_table(summary: dict[str, Any]) -> list[str]:
    algos = algorithms_in(summary)
    lines = ["| target | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    met = dict.fromkeys(algos, 0)
    judged = dict.fromkeys(algos, 0)
    total = sum(1 for t in TARGETS if t[5] != "info")
    for name, key, phase, metric, bound, kind in TARGETS:
        cells = []
        for a in algos:
            v = figure(summary, key, phase, metric, a)
            if v is None:
                cells.append("not run")
                continue
            if kind != "info":
                judged[a] += 1
            text = UNITS.get(metric, "{:.2f}x").format(v) if math.isfinite(v) else "never"
            if kind == "info":
                n = len(summary[key]["aggregate"][a]["seeds"])
                cells.append(text if n >= 5 else f"{text} ({n} seed{'s' if n > 1 else ''})")
                continue
            ok = v >= bound if kind == "min" else v <= bound
            met[a] += ok
            n = len(summary[key]["aggregate"][a]["seeds"])
            few = "" if n >= 5 else f" ({n} seed{'s' if n > 1 else ''})"
            cells.append(f"{text} {'✅' if ok else '❌ missed'}{few}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        f"| **targets met (of {total})** | "
        + " | ".join(
            f"**{met[a]}**" + ("" if judged[a] == total else f" of {judged[a]} run") for a in algos
        )
        + " |"
    )
    return lines


def scenario_tables(summary: dict[str, Any], oracles: dict[str, Any]) -> list[str]:
    algos = algorithms_in(summary)
    lines: list[str] = []
    for key, sc in summary.items():
        if not sc["algorithms"]:
            continue
        lines.append(f"### {key}: {sc['title']}\n")
        if len(sc["phase_names"]) > 1:
            lines.append(
                "| whole scenario | " + " | ".join(a for a in algos if a in sc["aggregate"]) + " |"
            )
            lines.append("|---|" + "---|" * sum(1 for a in algos if a in sc["aggregate"]))
            for metric, label in (
                ("goodput_pct", "goodput % of per-phase oracle"),
                ("worst_goodput_pct", "worst phase goodput %"),
                ("median_p99_x", "median phase p99 ×"),
                ("worst_p99_x", "worst phase p99 ×"),
                ("settled_5s_pct", "changes settled ≤ 5 s, %"),
            ):
                cells = [
                    fmt(sc["aggregate"][a][metric], 1 if "pct" in metric else 2)
                    for a in algos
                    if a in sc["aggregate"]
                ]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
        for pi, pname in enumerate(sc["phase_names"]):
            orc = oracles[key][pi]
            lines.append(
                f"*{pname}* — oracle: limit {orc['limit']}, goodput {orc['goodput']:.0f}/s, "
                f"p50 {1000 * orc['p50']:.1f} ms, p99 {1000 * orc['p99']:.1f} ms, "
                f"p99.9 {1000 * orc['p999']:.1f} ms\n"
            )
            first = next(iter(sc["algorithms"].values()))[pi]
            extra = [
                c
                for c in ("first_second_p99_x", "live_served_pct", "batch_served_pct")
                if c in first
            ]
            head = (
                "| algorithm | goodput % (min–max) | p50 × | p99 × | p99.9 × | conv s | osc % "
                "| limit median | peak × | rejected % | timeouts % | cancelled % |"
            )
            sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"
            for c in extra:
                head += f" {c} |"
                sep += "---|"
            lines += [head, sep]
            for a in algos:
                if a not in sc["algorithms"]:
                    continue
                r = sc["algorithms"][a][pi]
                lo, hi = r["goodput_pct_range"]
                n = len(sc["aggregate"][a]["seeds"])
                name = a if n >= 5 else f"{a} ({n} seed{'s' if n > 1 else ''})"
                line = (
                    f"| {name} | {fmt(r['goodput_pct'], 1)} ({fmt(lo, 1)}–{fmt(hi, 1)}) "
                    f"| {fmt(r['p50_x'])} | {fmt(r['p99_x'])} | {fmt(r['p999_x'])} "
                    f"| {fmt(r['conv'], 0)} | {fmt(r['osc_pct'], 0)} | {fmt(r['limit_median'], 0)} "
                    f"| {fmt(r['peak_x'])} | {fmt(r['rejected_pct'], 2)} "
                    f"| {fmt(r['timeouts_pct'], 2)} | {fmt(r['cancelled_pct'], 2)} |"
                )
                for c in extra:
                    line += f" {fmt(r[c])} |"
                lines.append(line)
            lines.append("")
    return lines


def plot(key: str, sc: dict[str, Any], oracles: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for algo in algorithms_in({key: sc}):
        tr = sc["traces"].get(algo)
        if tr is None:
            continue
        ax1.plot(tr["limit_t"], tr["limit_v"], label=f"{algo} (seed {tr['seed']})", lw=1)
        p99 = [math.nan if v is None else v for v in tr["p99_ms"]]
        ax2.plot([i + 0.5 for i in range(len(p99))], p99, lw=1)
    for (lo, hi), orc in zip(sc["phase_bounds"], oracles, strict=True):
        ax1.hlines(orc["limit"], lo, hi, colors="k", linestyles="dashed", lw=1)
        ax2.hlines(1000 * orc["p99"], lo, hi, colors="k", linestyles="dashed", lw=1)
    ax1.set_ylabel("limit")
    ax1.set_yscale("log")
    ax2.set_ylabel("p99 per 1 s window (ms)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds (dashed: oracle)")
    ax1.legend(fontsize=7, ncol=3)
    ax1.set_title(f"{key}: {sc['title']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--tables", action="store_true", help="also print the per-scenario tables")
    ap.add_argument("--plots", action="store_true", help="write PNGs to docs/img/adaptive/")
    args = ap.parse_args()
    summary, oracles, metas = merge(args.summaries)
    print("\n".join(targets_table(summary)))
    if args.tables:
        print()
        print("\n".join(scenario_tables(summary, oracles)))
    if args.plots:
        os.makedirs(IMG, exist_ok=True)
        for key, sc in summary.items():
            plot(key, sc, oracles[key], os.path.join(IMG, f"{key}.png"))
    print(
        "Runs: "
        + "; ".join(
            f"{','.join(m['algorithms'])}: seeds {m['seeds']}, {m['cpu_s']} s CPU" for m in metas
        )
    )


if __name__ == "__main__":
    main()
