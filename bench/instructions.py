"""Instruction counts for the hot paths, repeatable on a loaded machine.

Wall and CPU times on a shared 2-core machine move by tens of percent from
one run to the next; instruction counts do not. This runs each case of the
admission and task benchmarks in a child process under
``valgrind --tool=callgrind`` twice, with ``n`` and ``2n`` operations, and
prints the difference divided by ``n``: instructions per operation, with
interpreter start-up and set-up (building a deep queue included) cancelled
out. Ratios compare cases measured the same way.

    python bench/instructions.py [--only limiter,depth,lanes,rate,tasks,install] [--depths 1000,10000,100000]

Needs ``valgrind`` on the PATH.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import trio

HERE = os.path.dirname(os.path.abspath(__file__))


def child(spec: str) -> None:
    """Run one case once: ``module:function:CONST=n[:arg]`` (module in bench/)."""
    module_name, function, setting, *rest = spec.split(":")
    const, n = setting.split("=")
    sys.path.insert(0, HERE)
    module = importlib.import_module(module_name)
    setattr(module, const, int(n))
    fn: Callable[..., Any] = getattr(module, function)
    args: list[Any] = []
    if rest:
        side, *extra = rest
        args.append(resolve(side) if side in ("trio", "trioflow") else getattr(module, side))
        args += [int(x) for x in extra]
    trio.run(fn, *args)


def resolve(side: str) -> Any:
    import trioflow as tf

    return {"trio": trio.CapacityLimiter, "trioflow": tf.CapacityLimiter}[side]


def instructions(spec: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                spec,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode or m is None:
            raise RuntimeError(f"{spec} failed:\n{proc.stderr[-2000:]}")
        return int(m.group(1))


def per_op(module: str, function: str, const: str, n: int, extra: str = "") -> float:
    tail = f":{extra}" if extra else ""
    small = instructions(f"{module}:{function}:{const}={n}{tail}")
    large = instructions(f"{module}:{function}:{const}={2 * n}{tail}")
    value = (large - small) / n
    print(f"    ({module}.{function} {extra or ''}: {value:,.0f} instr/op)", flush=True)
    return value


def show(title: str, rows: dict[str, float], baseline: str) -> None:
    print(title)
    base = rows[baseline]
    for name, value in rows.items():
        print(f"  {name:40s} {value:10,.0f} instr/op   {value / base:5.3f}x {baseline}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--only", default="limiter,depth,lanes,rate,tasks,install")
    parser.add_argument("--depths", default="1000,10000,100000")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    only = set(args.only.split(","))
    if "limiter" in only:
        show(
            "uncontended async with (bench/limiter.py)",
            {
                "trio.CapacityLimiter": per_op(
                    "limiter", "uncontended", "N_UNCONTENDED", 2000, "trio"
                ),
                "tf.CapacityLimiter": per_op(
                    "limiter", "uncontended", "N_UNCONTENDED", 2000, "trioflow"
                ),
                "one checkpoint (floor)": per_op(
                    "limiter", "checkpoint_only", "N_UNCONTENDED", 2000, "trio"
                ),
            },
            "trio.CapacityLimiter",
        )
    if "depth" in only:
        for depth in (int(d) for d in args.depths.split(",")):
            show(
                f"release -> grant with {depth:,} queued (bench/limiter.py at_depth)",
                {
                    side: per_op("limiter", "at_depth", "GRANTS_PER_DEPTH", 500, f"{side}:{depth}")
                    for side in ("trio", "trioflow")
                },
                "trio",
            )
    if "lanes" in only:
        # 1000 tasks over 3 lanes contending for 10 tokens; per acquisition.
        show(
            "1000 tasks contending for 10 tokens (bench/lanes.py contended)",
            {
                name: per_op("lanes", "contended", "ROUNDS", 4, side) / 1000
                for name, side in (
                    ("trio.CapacityLimiter", "trio_limiter"),
                    ("tf.CapacityLimiter", "tf_limiter"),
                    ("tf lanes (3 lanes)", "tf_lanes"),
                )
            },
            "trio.CapacityLimiter",
        )
    if "rate" in only:
        show(
            "non-limiting rate acquire (bench/rate.py)",
            {
                name: per_op("rate", fn, "N_OVERHEAD", 2000)
                for name, fn in (
                    ("checkpoint()", "loop_checkpoint"),
                    ("async def + checkpoint (no clock)", "loop_wrapper"),
                    ("async def + one clock read (floor)", "loop_wrapper_clock"),
                    ("await acquire()", "loop_acquire"),
                    ("async with limiter", "loop_async_with"),
                )
            },
            "checkpoint()",
        )
    if "tasks" in only:
        show(
            "spawn + run of a task taking one checkpoint (bench/tasks.py)",
            {
                name: per_op("tasks", fn, "N_TASKS", 1000)
                for name, fn in (
                    ("trio nursery start_soon", "plain_nursery"),
                    ("tf task group start_soon", "tf_start_soon"),
                    ("tf task group await spawn", "tf_spawn"),
                    ("tf task group spawn, limit=100", "tf_spawn_limited"),
                )
            },
            "trio nursery start_soon",
        )
    if "install" in only:
        show(
            "spawn + exit of a task that returns at once, with and without install() (bench/dump.py)",
            {
                name: per_op("dump", fn, "N_SPAWNS", 2000)
                for name, fn in (
                    ("plain trio", "spawns_plain"),
                    ("a do-nothing task_spawned (floor)", "spawns_noop_instrument"),
                    ("tf.debug.install()", "spawns_installed"),
                )
            },
            "plain trio",
        )


if __name__ == "__main__":
    main()
