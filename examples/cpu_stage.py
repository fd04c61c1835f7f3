"""A CPU-bound stage in worker processes, next to an async I/O stage.

A document pipeline: ``fetch`` asks an HTTP API (a real server on
127.0.0.1, ``local_api.py``) about each document — I/O, 16 at once on the
event loop — and ``fingerprint`` computes a MinHash signature of its text in
pure Python, the kind of CPU work (parsing, hashing, scoring, resizing) that
holds the GIL. The same pipeline runs three ways:

* ``in-process``: the CPU function called from an ``async def`` stage. It
  blocks the event loop for the whole computation: nothing else runs —
  not the fetches, not a heartbeat, not a signal handler;
* ``thread``: ``executor="thread"``. The loop stays free, but the GIL lets
  one thread compute at a time: no faster;
* ``process``: ``executor="process"`` (trio-parallel worker processes, one
  per core, started by the run and stopped when it ends). The loop stays
  free and the cores compute in parallel.

For each it prints the time, the speed-up over ``in-process``, and the
event loop's worst lag (a heartbeat that sleeps 10 ms notes how late it
wakes). The signatures must be identical in all three modes.

The figures are honest, not tuned: the process run includes starting its
workers and pickling every item both ways, and the machine's core count and
load are printed with them. On a 2-core machine the ceiling is 2x; a busy
machine gets less.

    python examples/cpu_stage.py                 # 40 documents
    python examples/cpu_stage.py --docs 12       # quicker
    python examples/cpu_stage.py --repeat 3      # median of 3 runs per mode
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import trio

import trioflow as tf

# -- the CPU-bound work: a plain function, importable and picklable -----------

WORDS = [f"w{i}" for i in range(4000)]
N_HASHES = 64
_MERSENNE = (1 << 61) - 1


def document_text(doc_id: int, words: int) -> list[str]:
    rng = random.Random(doc_id)
    return rng.choices(WORDS, k=words)


def fingerprint(doc: dict[str, Any]) -> dict[str, Any]:
    """MinHash signature of the document's word 3-shingles (pure Python, holds the GIL)."""
    text = document_text(doc["id"], doc["words"])
    shingles = {
        int.from_bytes(hashlib.blake2b(" ".join(text[i : i + 3]).encode(), digest_size=8).digest())
        for i in range(len(text) - 2)
    }
    rng = random.Random(0)  # the same hash family for every document
    params = [(rng.randrange(1, _MERSENNE), rng.randrange(_MERSENNE)) for _ in range(N_HASHES)]
    signature = [min((a * s + b) % _MERSENNE for s in shingles) for a, b in params]
    return {**doc, "signature": signature}


# -- the pipeline -----------------------------------------------------------------


async def heartbeat(lags: list[float]) -> None:
    """How late the event loop wakes a task that asked to sleep 10 ms."""
    while True:
        asked = trio.current_time()
        await trio.sleep(0.01)
        lags.append(trio.current_time() - asked - 0.01)


async def run_once(mode: str, docs: int, words: int, url: str) -> tuple[float, float, str]:
    import httpx  # the worker processes import this module too; keep them light

    async def fetch(doc_id: int) -> dict[str, Any]:
        response = await client.get(url, params={"id": doc_id})
        response.raise_for_status()
        return {**response.json(), "id": doc_id, "words": words}

    async def fingerprint_inline(doc: dict[str, Any]) -> dict[str, Any]:
        return fingerprint(doc)  # blocks the loop while it computes

    pipe = tf.Pipeline(f"documents ({mode})").map(fetch, workers=16, name="fetch")
    cores = os.cpu_count() or 1
    if mode == "in-process":
        pipe = pipe.map(fingerprint_inline, workers=cores, name="fingerprint")
    elif mode == "thread":
        pipe = pipe.map(fingerprint, executor="thread", workers=cores, name="fingerprint")
    else:
        pipe = pipe.map(fingerprint, executor="process", workers=cores, name="fingerprint")

    lags: list[float] = []
    digest = hashlib.sha256()
    results: list[tuple[int, list[int]]] = []
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat, lags)
        start = trio.current_time()
        async with pipe.open(range(docs)) as run:
            async for doc in run.outputs:
                results.append((doc["id"], doc["signature"]))
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    report = run.report
    assert report.delivered == report.source_items == docs, report
    for doc_id, signature in sorted(results):
        digest.update(f"{doc_id}:{signature}".encode())
    return elapsed, max(lags, default=0.0), digest.hexdigest()[:16]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from local_api import LocalAPI  # examples/local_api.py, beside this file

    modes = ["in-process", "thread", "process"]
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.docs} documents of {args.words} words; {cores} cores, load average "
        f"{load:.1f} at start; {args.repeat} run(s) per mode, order rotated, median shown"
    )
    times: dict[str, list[float]] = {m: [] for m in [*modes, "start-up"]}
    lags: dict[str, list[float]] = {m: [] for m in modes}
    digests: set[str] = set()
    api = LocalAPI(capacity=50, latency=0.02, seed=args.seed)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(api.serve)
        url = f"http://127.0.0.1:{port}/enrich"
        for r in range(args.repeat):
            for mode in modes[r % 3 :] + modes[: r % 3]:
                elapsed, lag, digest = await run_once(mode, args.docs, args.words, url)
                times[mode].append(elapsed)
                lags[mode].append(lag)
                digests.add(digest)
                print(
                    f"  run {r + 1} {mode:10s} {elapsed:6.2f} s   worst loop lag "
                    f"{lag * 1000:6.0f} ms   signatures {digest}",
                    flush=True,
                )
            # What the process run pays before and after its work: starting
            # and stopping the workers (an almost empty run, same pipeline).
            elapsed, _, _ = await run_once("process", cores, 3, url)
            times["start-up"].append(elapsed)
        nursery.cancel_scope.cancel()

    base = statistics.median(times["in-process"])
    print(f"\n{'mode':10s} {'time':>7s} {'speed-up':>9s} {'worst loop lag':>15s}")
    result: dict[str, Any] = {"cores": cores, "load": load, "modes": {}}
    for mode in modes:
        t = statistics.median(times[mode])
        lag = statistics.median(lags[mode])
        print(f"{mode:10s} {t:6.2f}s {base / t:8.2f}x {lag * 1000:12.0f} ms")
        result["modes"][mode] = {"seconds": t, "speedup": base / t, "loop_lag": lag}
    startup = statistics.median(times["start-up"])
    steady = result["modes"]["process"]["seconds"] - startup
    result["startup"] = startup
    print(
        f"  (the process run includes {startup:.2f} s to start and stop {cores} workers, "
        f"measured on an empty run; without it {steady:.2f} s, {base / max(steady, 1e-9):.2f}x)"
    )
    same = len(digests) == 1
    result["same_signatures"] = same
    print(
        f"same signatures in every mode: {'yes' if same else 'NO'} ({', '.join(sorted(digests))})"
    )
    print(
        f"processes vs in-process: {result['modes']['process']['speedup']:.2f}x on {cores} "
        f"cores (ceiling {cores}x; includes starting the workers and pickling)"
    )
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--docs", type=int, default=40, help="documents (default 40)")
    p.add_argument("--words", type=int, default=2000, help="words per document (CPU per item)")
    p.add_argument("--repeat", type=int, default=1, help="runs per mode (median shown)")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


if __name__ == "__main__":
    outcome = trio.run(main, parse_args())
    sys.exit(0 if outcome["same_signatures"] else 1)
