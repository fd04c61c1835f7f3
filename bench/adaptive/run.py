"""Adaptive concurrency under simulated load: each algorithm vs. the best static limit.

Runs scenarios S1-S10 (see ``scenarios.py``) for AIMD, Vegas, Gradient2,
Cruise and LoadFeedback (each with its defaults, started at its own
``initial_limit``), >= 5 seeds each, in virtual time (MockClock), and
compares each phase with its *oracle*: the smallest static limit whose
goodput is within 1% of the best static goodput, found by a sweep of static
limits over the same phase conditions (seed 0, phase run on its own).

    python bench/adaptive/run.py                  # everything, 5 seeds (long: see docs)
    python bench/adaptive/run.py --quick          # half durations, 2 seeds: a smoke run
    python bench/adaptive/run.py --scenarios S1,S7 --algorithms Cruise,Vegas --jobs 2

Writes ``bench/adaptive/results/results.json``, ``table.md`` (pasted into
docs/benchmarks/adaptive.md) and, with --plots, one PNG per scenario under
``docs/img/adaptive/``.

Metrics per phase (and per algorithm, median over seeds):

* goodput: successful responses (within the 1 s deadline) per second,
  counted by completion time over the phase after its first 2 s, as % of
  the oracle's;
* p50/p99/p99.9: latency of successful responses in that span, as a ratio
  to the oracle's (the oracle's own figures are printed beside them);
* conv: seconds from the phase start to the first of 5 consecutive 1 s
  windows with goodput >= 90% of the oracle's and p99 <= 1.5x the oracle's
  ("never" if that does not happen within the phase);
* osc: (p95 - p5 of the limit, sampled every 100 ms after the first 2 s) /
  oracle limit;
* rej: rejected arrivals (limiter full) as % of arrivals; timeouts likewise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import trio
from scenarios import Scenario, scenarios
from sim import OK, REJECTED, TIMEOUT, Lane, Phase, Result, simulate

import trioflow as tf
from trioflow import adaptive

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
IMG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "img", "adaptive")
SETTLE = 2.0
ALGORITHMS = ["AIMD", "Vegas", "Gradient2", "Cruise", "LoadFeedback"]


def make_algorithm(name: str, seed: int, server: Callable[[], Any]) -> Any:
    if name == "AIMD":
        return adaptive.AIMD()
    if name == "Vegas":
        return adaptive.Vegas(seed=seed)
    if name == "Gradient2":
        return adaptive.Gradient2()
    if name == "Cruise":
        return adaptive.Cruise()
    if name == "LoadFeedback":
        # the load a service would export: busy servers / servers (model A),
        # in service / throughput-optimal count (model B)
        return adaptive.LoadFeedback(lambda: server().utilization(trio.current_time()))
    raise ValueError(f"unknown algorithm {name!r}")


def lanes_factory(sc: Scenario, who: str | int, seed: int):
    def make(server: Callable[[], Any]) -> tuple[list[Lane], Callable[[], float]]:
        if len(sc.lanes) > 1:
            prio = getattr(tf, "PriorityLimiter", None)
            if prio is None:
                raise RuntimeError("S8 needs tf.PriorityLimiter (lanes branch)")
            lanes = [tf.Lane(name, priority=i) for i, (name, _) in enumerate(sc.lanes)]
            if isinstance(who, int):
                lim = prio(who, lanes)
            else:
                algo = make_algorithm(who, seed, server)
                lim = prio(algo.limit, lanes, algorithm=algo)
            srcs = [Lane(name, share, lim.lane(name)) for name, share in sc.lanes]
            return srcs, lambda: lim.total_tokens
        if isinstance(who, int):
            lim = tf.CapacityLimiter(who)
        else:
            lim = tf.CapacityLimiter(algorithm=make_algorithm(who, seed, server))
        return [Lane("all", 1.0, lim)], lambda: lim.total_tokens

    return make


# -- metrics -------------------------------------------------------------------


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return math.nan
    i = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[i]


def phase_bounds(phases: list[Phase]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for p in phases:
        out.append((t, t + p.duration))
        t += p.duration
    return out


def summarize(res: Result, lo: float, hi: float, lane: int | None = None) -> dict[str, float]:
    """Goodput (per second), latency percentiles, rejections, timeouts over [lo, hi)."""
    lats: list[float] = []
    arrivals = rejected = timeouts = 0
    for a, d, lat, c, ln in zip(
        res.arrival, res.done, res.latency, res.code, res.lane, strict=True
    ):
        if lane is not None and ln != lane:
            continue
        if lo <= a < hi:
            arrivals += 1
            if c == REJECTED:
                rejected += 1
            elif c == TIMEOUT:
                timeouts += 1
        if c == OK and lo <= d < hi:
            lats.append(lat)
    lats.sort()
    span = hi - lo
    return {
        "goodput": len(lats) / span,
        "p50": _pct(lats, 0.50),
        "p99": _pct(lats, 0.99),
        "p999": _pct(lats, 0.999),
        "rejected": rejected / arrivals if arrivals else 0.0,
        "timeouts": timeouts / arrivals if arrivals else 0.0,
        "arrivals": float(arrivals),
    }


def windows(res: Result, lo: float, hi: float) -> list[tuple[float, float]]:
    """(goodput, p99) per 1 s window of [lo, hi), by completion time."""
    n = int(hi - lo)
    buckets: list[list[float]] = [[] for _ in range(n)]
    for d, lat, c in zip(res.done, res.latency, res.code, strict=True):
        if c == OK and lo <= d < lo + n:
            buckets[int(d - lo)].append(lat)
    out = []
    for b in buckets:
        b.sort()
        out.append((float(len(b)), _pct(b, 0.99) if b else math.inf))
    return out


def convergence(res: Result, lo: float, hi: float, oracle: dict[str, float]) -> float:
    ws = windows(res, lo, hi)
    good = [g >= 0.9 * oracle["goodput"] and p <= 1.5 * oracle["p99"] for g, p in ws]
    for i in range(len(good) - 4):
        if all(good[i : i + 5]):
            return float(i)
    return math.inf


def limit_stats(res: Result, lo: float, hi: float) -> dict[str, float]:
    vals = sorted(v for t, v in zip(res.limit_t, res.limit_v, strict=True) if lo <= t < hi)
    if not vals:
        return {"p5": math.nan, "p95": math.nan, "median": math.nan, "max": math.nan}
    return {
        "p5": _pct(vals, 0.05),
        "p95": _pct(vals, 0.95),
        "median": _pct(vals, 0.5),
        "max": vals[-1],
    }


# -- oracle --------------------------------------------------------------------


def oracle_grid(sc: Scenario, phase: Phase) -> list[int]:
    if sc.model.kind == "B":
        return list(range(20, 71, 5))
    fs = [0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 3.0]
    return sorted({max(1, round(phase.servers * f)) for f in fs})


def phase_key(sc: Scenario, p: Phase) -> str:
    return json.dumps(
        [asdict(sc.model), p.rate, p.servers, p.scale, p.scale_end, p.error_fraction, p.duration]
        + ([list(sc.lanes)] if len(sc.lanes) > 1 else [])
    )


def _oracle_job(args: tuple[Scenario, Phase, int, float]) -> tuple[int, dict[str, float]]:
    sc, p, limit, duration = args
    steady = Phase(duration, p.rate, p.servers, p.scale, p.scale_end, p.error_fraction, p.name)
    # a ramping phase is judged at its own conditions, so the oracle runs the same ramp
    res = simulate(
        [steady],
        sc.model,
        lanes_factory(Scenario(sc.key, sc.title, [steady], sc.model, sc.lanes), limit, 0),
        0,
        queueing=len(sc.lanes) > 1,
    )
    return limit, summarize(res, min(SETTLE, duration / 4), duration)


def compute_oracles(
    todo: list[tuple[Scenario, Phase]],
    cache: dict[str, Any],
    pool: ProcessPoolExecutor,
    quick: bool,
) -> None:
    jobs = []
    for sc, p in todo:
        key = phase_key(sc, p)
        if key in cache:
            continue
        duration = p.duration if p.scale_end is not None else (5.0 if quick else 8.0)
        for limit in oracle_grid(sc, p):
            jobs.append((key, (sc, p, limit, duration)))
    if not jobs:
        return
    print(f"oracle sweep: {len(jobs)} static runs", flush=True)
    results = list(pool.map(_oracle_job, [j for _, j in jobs]))
    by_key: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for (key, _), r in zip(jobs, results, strict=True):
        by_key.setdefault(key, []).append(r)
    for key, rows in by_key.items():
        best = max(r["goodput"] for _, r in rows)
        limit, stats = min(
            (lr for lr in rows if lr[1]["goodput"] >= 0.99 * best), key=lambda lr: lr[0]
        )
        cache[key] = {"limit": limit, **stats, "sweep": {str(lim): r["goodput"] for lim, r in rows}}


# -- runs ----------------------------------------------------------------------


def _run_job(args: tuple[Scenario, str, int]) -> dict[str, Any]:
    sc, algo, seed = args
    t = time.perf_counter()
    res = simulate(
        sc.phases, sc.model, lanes_factory(sc, algo, seed), seed, queueing=len(sc.lanes) > 1
    )
    return {
        "scenario": sc.key,
        "algorithm": algo,
        "seed": seed,
        "cpu": time.perf_counter() - t,
        "result": {
            "arrival": res.arrival,
            "done": res.done,
            "latency": res.latency,
            "code": res.code,
            "lane": res.lane,
            "limit_t": res.limit_t,
            "limit_v": res.limit_v,
        },
    }


def evaluate(sc: Scenario, run: dict[str, Any], oracles: dict[str, Any]) -> dict[str, Any]:
    res = Result(**run["result"])
    out: dict[str, Any] = {"phases": []}
    for p, (lo, hi) in zip(sc.phases, phase_bounds(sc.phases), strict=True):
        orc = oracles[phase_key(sc, p)]
        settle = min(SETTLE, (hi - lo) / 4)
        s = summarize(res, lo + settle, hi)
        lim = limit_stats(res, lo + settle, hi)
        row = {
            "phase": p.name,
            "goodput_pct": 100 * s["goodput"] / orc["goodput"] if orc["goodput"] else math.nan,
            "p50_x": s["p50"] / orc["p50"],
            "p99_x": s["p99"] / orc["p99"],
            "p999_x": s["p999"] / orc["p999"],
            "conv": convergence(res, lo, hi, orc),
            "osc_pct": 100 * (lim["p95"] - lim["p5"]) / orc["limit"],
            "limit_median": lim["median"],
            "limit_max": limit_stats(res, lo, hi)["max"],
            "rejected_pct": 100 * s["rejected"],
            "timeouts_pct": 100 * s["timeouts"],
        }
        if sc.key == "S3" and p.name == "spike":
            first = summarize(res, lo, lo + 1.0)
            row["first_second_p99_x"] = first["p99"] / orc["p99"]
        if len(sc.lanes) > 1:
            # each lane's goodput as % of its demand, capped at the oracle's
            # total goodput ("keeps >= 99% of its demand up to capacity")
            for i, (name, share) in enumerate(sc.lanes):
                ls = summarize(res, lo + settle, hi, lane=i)
                demand = min(p.rate * share, orc["goodput"])
                row[f"{name}_served_pct"] = 100 * ls["goodput"] / demand
        out["phases"].append(row)
    return out


def median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k != "phase"]
    out: dict[str, Any] = {"phase": rows[0]["phase"]}
    for k in keys:
        vals = [r[k] for r in rows]
        out[k] = statistics.median(vals)
        out[k + "_range"] = [min(vals), max(vals)]
    return out


def fmt(x: float, digits: int = 2) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "never"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.{digits}f}"


def write_table(
    summary: dict[str, Any], oracles_used: dict[str, Any], path: str, meta: dict[str, Any]
) -> None:
    lines = []
    for key, sc_sum in summary.items():
        lines.append(f"#### {key}: {sc_sum['title']}\n")
        for pi, pname in enumerate(sc_sum["phase_names"]):
            orc = oracles_used[key][pi]
            lines.append(
                f"*{pname}* — oracle: limit {orc['limit']}, goodput {orc['goodput']:.0f}/s, "
                f"p50 {1000 * orc['p50']:.1f} ms, p99 {1000 * orc['p99']:.1f} ms, p99.9 {1000 * orc['p999']:.1f} ms\n"
            )
            extra_cols = [
                c
                for c in ("first_second_p99_x", "live_served_pct", "batch_served_pct")
                if c in next(iter(sc_sum["algorithms"].values()))[pi]
            ]
            head = "| algorithm | goodput % | p50 × | p99 × | p99.9 × | conv s | osc % | limit (median) | rejected % | timeouts % |"
            sep = "|---|---|---|---|---|---|---|---|---|---|"
            for c in extra_cols:
                head += f" {c} |"
                sep += "---|"
            lines.append(head)
            lines.append(sep)
            for algo, rows in sc_sum["algorithms"].items():
                r = rows[pi]
                gr = r["goodput_pct_range"]
                line = (
                    f"| {algo} | {fmt(r['goodput_pct'], 1)} ({fmt(gr[0], 1)}–{fmt(gr[1], 1)}) | {fmt(r['p50_x'])} | "
                    f"{fmt(r['p99_x'])} | {fmt(r['p999_x'])} | {fmt(r['conv'], 0)} | {fmt(r['osc_pct'], 0)} | "
                    f"{fmt(r['limit_median'], 0)} | {fmt(r['rejected_pct'], 2)} | {fmt(r['timeouts_pct'], 2)} |"
                )
                for c in extra_cols:
                    line += f" {fmt(r[c])} |"
                lines.append(line)
            lines.append("")
    lines.append(f"Run: {json.dumps(meta)}\n")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(
    sc: Scenario, runs: list[dict[str, Any]], oracles: list[dict[str, Any]], path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bounds = phase_bounds(sc.phases)
    seed = min(r["seed"] for r in runs)
    for run in runs:
        if run["seed"] != seed:
            continue
        res = run["result"]
        ax1.plot(res["limit_t"], res["limit_v"], label=run["algorithm"], lw=1)
        res_obj = Result(**res)
        ws = windows(res_obj, 0.0, bounds[-1][1])
        ax2.plot(
            [i + 0.5 for i in range(len(ws))],
            [1000 * p if math.isfinite(p) else math.nan for _, p in ws],
            lw=1,
        )
    for (lo, hi), orc in zip(bounds, oracles, strict=True):
        ax1.hlines(orc["limit"], lo, hi, colors="k", linestyles="dashed", lw=1)
        ax2.hlines(1000 * orc["p99"], lo, hi, colors="k", linestyles="dashed", lw=1)
    ax1.set_ylabel("limit")
    ax1.set_yscale("log")
    ax2.set_ylabel("p99 per 1 s window (ms)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds (dashed: oracle)")
    ax1.legend(fontsize=8, ncol=5)
    ax1.set_title(f"{sc.key}: {sc.title} (seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half durations, 2 seeds (smoke run)")
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per scenario (default 5; 2 with --quick)"
    )
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5,S6,S7,S8,S9,S10")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument(
        "--jobs", type=int, default=1, help="worker processes (the machine is shared: 1-2)"
    )
    ap.add_argument("--plots", action="store_true", help="write PNGs to docs/img/adaptive/")
    ap.add_argument("--tag", default="", help="suffix for the result files")
    args = ap.parse_args()
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    scs = scenarios(args.quick)
    chosen = [scs[k] for k in args.scenarios.split(",")]
    if not hasattr(tf, "PriorityLimiter"):
        skipped = [s.key for s in chosen if len(s.lanes) > 1]
        if skipped:
            print(f"not run (no tf.PriorityLimiter on this branch): {skipped}")
        chosen = [s for s in chosen if len(s.lanes) == 1]
    algos = args.algorithms.split(",")
    os.makedirs(RESULTS, exist_ok=True)
    cache_path = os.path.join(RESULTS, f"oracle{'-quick' if args.quick else ''}.json")
    cache: dict[str, Any] = {}
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        compute_oracles([(sc, p) for sc in chosen for p in sc.phases], cache, pool, args.quick)
        with open(cache_path, "w") as f:
            json.dump(cache, f)
        jobs = [(sc, a, seed) for sc in chosen for a in algos for seed in range(1, seeds + 1)]
        print(f"{len(jobs)} runs", flush=True)
        runs: list[dict[str, Any]] = []
        for i, r in enumerate(pool.map(_run_job, jobs)):
            runs.append(r)
            if i % 10 == 0:
                print(f"  {i + 1}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary: dict[str, Any] = {}
    oracles_used: dict[str, Any] = {}
    for sc in chosen:
        orcs = [cache[phase_key(sc, p)] for p in sc.phases]
        oracles_used[sc.key] = [{k: v for k, v in o.items() if k != "sweep"} for o in orcs]
        sc_runs = [r for r in runs if r["scenario"] == sc.key]
        per_algo: dict[str, Any] = {}
        for a in algos:
            evs = [evaluate(sc, r, cache) for r in sc_runs if r["algorithm"] == a]
            per_algo[a] = [
                median_rows([e["phases"][i] for e in evs]) for i in range(len(sc.phases))
            ]
        summary[sc.key] = {
            "title": sc.title,
            "phase_names": [p.name for p in sc.phases],
            "algorithms": per_algo,
        }
        if args.plots:
            os.makedirs(IMG, exist_ok=True)
            plot(sc, sc_runs, orcs, os.path.join(IMG, f"{sc.key}{args.tag}.png"))
    meta = {
        "quick": args.quick,
        "seeds": list(range(1, seeds + 1)),
        "oracle_seed": 0,
        "durations_s": {sc.key: [p.duration for p in sc.phases] for sc in chosen},
        "algorithms": algos,
        "wall_s": round(time.perf_counter() - t0),
        "cpu_s": round(sum(r["cpu"] for r in runs)),
        "python": sys.version.split()[0],
        "trio": trio.__version__,
    }
    tag = args.tag or ("-quick" if args.quick else "")
    with open(os.path.join(RESULTS, f"summary{tag}.json"), "w") as f:
        json.dump(
            {"meta": meta, "oracles": oracles_used, "summary": summary}, f, indent=1, default=str
        )
    write_table(summary, oracles_used, os.path.join(RESULTS, f"table{tag}.md"), meta)
    with open(os.path.join(RESULTS, f"table{tag}.md")) as f:
        print(f.read())


if __name__ == "__main__":
    main()
