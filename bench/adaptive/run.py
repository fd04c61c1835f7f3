"""Adaptive concurrency under simulated load: each algorithm vs. the best static limit.

Runs the scenarios of ``scenarios.py`` for AIMD, Vegas, Gradient2, Envoy's
gradient controller (``envoy.py``, a port for comparison), Cruise and
LoadFeedback (each with its defaults, started at its own ``initial_limit``),
>= 5 seeds each, in virtual time (MockClock), and compares each phase with
its *oracle*: the smallest static limit whose mean goodput over the oracle
seeds is within 1% of the best static mean goodput, found by a sweep of
static limits over the same phase conditions (the phase run on its own,
10 s per steady phase, seeds 101-103; the oracle's figures are the means
over those seeds).

    python bench/adaptive/run.py                  # everything, 5 seeds (long: see docs)
    python bench/adaptive/run.py --quick          # half durations, 2 seeds: a smoke run
    python bench/adaptive/run.py --scenarios S1,S7 --algorithms Cruise,Vegas --jobs 2

Writes ``bench/adaptive/results/summary<tag>.json`` and ``table<tag>.md``;
``targets.py`` merges summaries (per scenario and algorithm, so algorithms
can run separately), prints the targets and the per-scenario tables for
docs/benchmarks/adaptive.md and, with --plots, draws one PNG per scenario
under ``docs/img/adaptive/``.

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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import trio
from envoy import EnvoyGradient
from scenarios import Scenario, scenarios
from sim import CANCELLED, OK, REJECTED, TIMEOUT, Lane, Phase, Result, simulate

import trioflow as tf
from trioflow import adaptive

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
IMG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "img", "adaptive")
SETTLE = 2.0
ALGORITHMS = ["AIMD", "Vegas", "Gradient2", "Envoy", "Cruise", "LoadFeedback"]
ORACLE_SEEDS = (101, 102, 103)  # not the runs' seeds (1-5): the oracle is not fitted to them
ORACLE_STEADY = 10.0  # seconds per static run of a steady phase (8 with --quick)


def make_algorithm(name: str, seed: int, server: Callable[[], Any]) -> Any:
    if name == "AIMD":
        return adaptive.AIMD()
    if name == "Vegas":
        return adaptive.Vegas(seed=seed)
    if name == "Gradient2":
        return adaptive.Gradient2()
    if name == "Envoy":
        return EnvoyGradient(seed)
    if name == "Cruise":
        return adaptive.Cruise()
    if name.startswith("Cruise:"):
        # a variant for exploring, e.g. "Cruise:tolerance=1.2;climb=0.2" (never in the table)
        kwargs = {k: json.loads(v) for k, v in (kv.split("=") for kv in name[7:].split(";"))}
        return adaptive.Cruise(**kwargs)
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
    arrivals = rejected = timeouts = cancelled = 0
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
            elif c == CANCELLED:
                cancelled += 1
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
        "cancelled": cancelled / arrivals if arrivals else 0.0,
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
    fs = [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0]
    return sorted({max(1, round(phase.servers * f)) for f in fs})


def steady(p: Phase) -> bool:
    return p.scale_end is None


def phase_key(sc: Scenario, p: Phase) -> str:
    # A steady phase's oracle does not depend on how long the phase lasts
    # (the random walk's segments share one per server count); a ramp's does.
    return json.dumps(
        [asdict(sc.model), p.rate, p.servers, p.scale, p.scale_end, p.error_fraction]
        + [p.cancel_fraction, None if steady(p) else p.duration]
        + ([list(sc.lanes)] if len(sc.lanes) > 1 else [])
    )


def _sim(sc: Scenario, phases: list[Phase], who: str | int, seed: int) -> Result:
    one = Scenario(sc.key, sc.title, phases, sc.model, sc.lanes)
    return simulate(
        phases,
        sc.model,
        lanes_factory(one, who, seed),
        seed,
        queueing=len(sc.lanes) > 1,
        errors_as_drops=sc.errors_as_drops,
        cancels_as_drops=sc.cancels_as_drops,
    )


def _oracle_job(args: tuple[Scenario, Phase, int, float, int]) -> tuple[int, dict[str, float]]:
    sc, p, limit, duration, seed = args
    alone = Phase(
        duration,
        p.rate,
        p.servers,
        p.scale,
        p.scale_end,
        p.error_fraction,
        p.cancel_fraction,
        p.name,
    )
    # a ramping phase is judged at its own conditions, so the oracle runs the same ramp
    res = _sim(sc, [alone], limit, seed)
    return limit, summarize(res, min(SETTLE, duration / 4), duration)


def compute_oracles(
    todo: list[tuple[Scenario, Phase]],
    cache: dict[str, Any],
    pool: ProcessPoolExecutor,
    quick: bool,
) -> None:
    jobs = []
    seen: set[str] = set()
    for sc, p in todo:
        key = phase_key(sc, p)
        if key in cache or key in seen:
            continue
        seen.add(key)
        duration = (8.0 if quick else ORACLE_STEADY) if steady(p) else p.duration
        for limit in oracle_grid(sc, p):
            for seed in ORACLE_SEEDS:
                jobs.append((key, (sc, p, limit, duration, seed)))
    if not jobs:
        return
    print(f"oracle sweep: {len(jobs)} static runs", flush=True)
    results = list(pool.map(_oracle_job, [j for _, j in jobs]))
    by_key: dict[str, dict[int, list[dict[str, float]]]] = {}
    for (key, _), (limit, stats) in zip(jobs, results, strict=True):
        by_key.setdefault(key, {}).setdefault(limit, []).append(stats)
    for key, per_limit in by_key.items():
        means = {
            lim: {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
            for lim, runs in per_limit.items()
        }
        best = max(m["goodput"] for m in means.values())
        limit = min(lim for lim, m in means.items() if m["goodput"] >= 0.99 * best)
        cache[key] = {
            "limit": limit,
            **means[limit],
            "seeds": list(ORACLE_SEEDS),
            "sweep": {str(lim): m["goodput"] for lim, m in sorted(means.items())},
        }


# -- runs ----------------------------------------------------------------------


def _run_job(args: tuple[Scenario, str, int, dict[str, Any]]) -> dict[str, Any]:
    """One run, evaluated in the worker (a 300 s run's raw records stay there)."""
    sc, algo, seed, oracles = args
    t = time.process_time()
    res = _sim(sc, sc.phases, algo, seed)
    ws = windows(res, 0.0, sum(p.duration for p in sc.phases))
    return {
        "scenario": sc.key,
        "algorithm": algo,
        "seed": seed,
        "cpu": time.process_time() - t,
        "eval": evaluate(sc, res, oracles),
        # what the plots draw: the limit every 100 ms, p99 per 1 s window
        "trace": {
            "limit_t": res.limit_t,
            "limit_v": res.limit_v,
            "p99_ms": [round(1000 * p, 2) if math.isfinite(p) else None for _, p in ws],
        },
    }


def evaluate(sc: Scenario, res: Result, oracles: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"phases": []}
    good = oracle_good = 0.0
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
            "peak_x": limit_stats(res, lo, hi)["max"] / orc["limit"],
            "rejected_pct": 100 * s["rejected"],
            "timeouts_pct": 100 * s["timeouts"],
            "cancelled_pct": 100 * s["cancelled"],
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
        good += s["goodput"] * (hi - lo - settle)
        oracle_good += orc["goodput"] * (hi - lo - settle)
    rows = out["phases"]
    # the whole scenario against the per-phase oracle (the random walk's target),
    # and the share of changes (phases after the first) settled within 5 s
    out["aggregate"] = {
        "goodput_pct": 100 * good / oracle_good if oracle_good else math.nan,
        "settled_5s_pct": (
            100 * sum(1 for r in rows[1:] if r["conv"] <= 5) / (len(rows) - 1)
            if len(rows) > 1
            else math.nan
        ),
        "worst_goodput_pct": min(r["goodput_pct"] for r in rows),
        "worst_p99_x": max(r["p99_x"] for r in rows),
        "median_p99_x": statistics.median(r["p99_x"] for r in rows),
    }
    return out


def median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k != "phase"]
    out: dict[str, Any] = {"phase": rows[0]["phase"]}
    for k in keys:
        vals = [r[k] for r in rows]
        out[k] = statistics.median(vals)
        out[k + "_range"] = [min(vals), max(vals)]
    return out


def run_key(r: dict[str, Any]) -> str:
    return f"{r['scenario']}/{r['algorithm']}/{r['seed']}"


def summarize_runs(
    chosen: list[Scenario], algos: list[str], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for sc in chosen:
        per_algo: dict[str, Any] = {}
        aggregate: dict[str, Any] = {}
        traces: dict[str, Any] = {}
        for a in algos:
            mine = sorted(
                (r for r in runs if r["scenario"] == sc.key and r["algorithm"] == a),
                key=lambda r: r["seed"],
            )
            if not mine:
                continue
            evs = [r["eval"] for r in mine]
            per_algo[a] = [
                median_rows([e["phases"][i] for e in evs]) for i in range(len(sc.phases))
            ]
            aggregate[a] = median_rows([{"phase": "all", **e["aggregate"]} for e in evs])
            aggregate[a]["seeds"] = [r["seed"] for r in mine]
            traces[a] = {"seed": mine[0]["seed"], **mine[0]["trace"]}
        summary[sc.key] = {
            "title": sc.title,
            "phase_names": [p.name for p in sc.phases],
            "phase_bounds": phase_bounds(sc.phases),
            "algorithms": per_algo,
            "aggregate": aggregate,
            "traces": traces,
        }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half durations, 2 seeds (smoke run)")
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per scenario (default 5; 2 with --quick)"
    )
    ap.add_argument("--scenarios", default=",".join(scenarios()))
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument(
        "--jobs", type=int, default=1, help="worker processes (the machine is shared: 1-2)"
    )
    ap.add_argument(
        "--tag",
        default="",
        help="suffix for the result files; finished runs are kept in runs<tag>.jsonl "
        "and not run again (delete it, or use another tag, after changing an algorithm)",
    )
    ap.add_argument(
        "--summarize-only",
        action="store_true",
        help="run nothing: summarize the runs already in runs<tag>.jsonl (whatever seeds are there)",
    )
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
    tag = args.tag or ("-quick" if args.quick else "")
    runs_path = os.path.join(RESULTS, f"runs{tag}.jsonl")
    runs: list[dict[str, Any]] = []
    if os.path.exists(runs_path):
        with open(runs_path) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    done = {run_key(r) for r in runs}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        known = len(cache)
        compute_oracles([(sc, p) for sc in chosen for p in sc.phases], cache, pool, args.quick)
        if len(cache) > known:  # write only what is new (runs in parallel read this file)
            tmp = cache_path + f".{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(cache, f)
            os.replace(tmp, cache_path)
        jobs = [
            (sc, a, seed, {phase_key(sc, p): cache[phase_key(sc, p)] for p in sc.phases})
            for sc in chosen
            for a in algos
            for seed in range(1, seeds + 1)
            if f"{sc.key}/{a}/{seed}" not in done and not args.summarize_only
        ]
        # shortest first: if a run is cut short, most scenarios are complete
        jobs.sort(key=lambda j: sum(p.duration * min(p.rate, 50 * p.servers) for p in j[0].phases))
        print(f"{len(jobs)} runs ({len(done)} already in {runs_path})", flush=True)
        futures = [pool.submit(_run_job, j) for j in jobs]
        with open(runs_path, "a") as out:
            for i, fut in enumerate(as_completed(futures)):
                r = fut.result()
                runs.append(r)
                out.write(json.dumps(r) + "\n")
                out.flush()
                print(
                    f"  {i + 1}/{len(jobs)} {run_key(r)} cpu {r['cpu']:.0f} s "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    summary = summarize_runs(chosen, algos, runs)
    oracles_used = {
        sc.key: [
            {k: v for k, v in cache[phase_key(sc, p)].items() if k != "sweep"} for p in sc.phases
        ]
        for sc in chosen
    }
    mine = [r for r in runs if r["scenario"] in {sc.key for sc in chosen}]
    meta = {
        "quick": args.quick,
        "seeds": list(range(1, seeds + 1)),
        "oracle_seeds": list(ORACLE_SEEDS),
        "oracle_steady_s": 8.0 if args.quick else ORACLE_STEADY,
        "durations_s": {sc.key: [round(p.duration, 2) for p in sc.phases] for sc in chosen},
        "algorithms": algos,
        "wall_s": round(time.perf_counter() - t0),
        "cpu_s": round(sum(r["cpu"] for r in mine)),
        "python": sys.version.split()[0],
        "trio": trio.__version__,
    }
    with open(os.path.join(RESULTS, f"summary{tag}.json"), "w") as f:
        json.dump(
            {"meta": meta, "oracles": oracles_used, "summary": summary}, f, indent=1, default=str
        )
    from targets import scenario_tables, targets_table

    table = [
        *targets_table(summary),
        "",
        *scenario_tables(summary, oracles_used),
        f"Run: {json.dumps(meta)}",
    ]
    with open(os.path.join(RESULTS, f"table{tag}.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
