"""What do the Redis-backed primitives deliver, and what do they cost?

Starts its own throwaway ``redis-server`` on 127.0.0.1 (Debian's package),
then:

1. **Global rate across processes.** ``--procs`` replica processes (4) each
   run ``--tasks`` tasks (32) that loop ``await limiter.acquire()`` on one
   ``RedisRateLimiter(rate=--rate, burst=--burst)`` for ``--window`` seconds
   from a common start instant; the grants inside the window are compared
   with the ideal ``rate * T + burst``, and each process's share with the
   fair share ``1/procs``.
2. **Per-call cost**, in one process, interleaved in rotating order, median
   of repeats: ``tf.RateLimiter.acquire()`` (never limiting) vs
   ``RedisRateLimiter.acquire()`` (never limiting) vs one ``PING`` round trip
   (the floor for anything that asks Redis); ``async with
   tf.CapacityLimiter`` vs ``async with RedisCapacityLimiter`` (acquire: one
   round trip; release: a background one).
3. **Lease recovery**: a replica process holds half the slots of a global
   limiter (TTL ``--ttl``) and is SIGKILLed while this process waits for
   them; the time from the kill until the wait is granted.
4. **Stream source throughput**: ``--entries`` entries through a trivial
   pipeline (one ``map`` stage, settle → ack) fed by ``open_stream_source``,
   against a hand-written ``XREADGROUP`` / ``XACK`` loop with the same batch
   size, each on a fresh stream.

    python bench/redis.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import coredis
import trio

import trioflow as tf
from trioflow.redis import RedisRateLimiter, open_capacity_limiter, open_stream_source


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("needs redis-server (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="trioflow-bench-redis-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(1000):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, port, workdir


def client(port: int) -> Any:
    return coredis.Redis(host="127.0.0.1", port=port)


# -- 1: the global rate, across processes ---------------------------------------


async def rate_replica(
    port: int, name: str, rate: float, burst: int, window: float, tasks: int
) -> None:
    """One replica process: ``tasks`` tasks acquire until the window ends; print grants in it.

    Says "ready" once connected, then reads the common start instant (wall
    clock) from stdin.
    """
    granted = 0
    async with client(port) as c:
        limiter = RedisRateLimiter(c, rate, name=name, burst=burst, timeout=5.0)
        await c.ping()
        print("ready", flush=True)
        start = float(await trio.to_thread.run_sync(sys.stdin.readline))
        await trio.sleep(max(0.0, start - time.time()))
        end = start + window

        async def worker() -> None:
            nonlocal granted
            while True:
                await limiter.acquire()
                if time.time() >= end:
                    return
                granted += 1

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
    print(granted, flush=True)


def part_rate(port: int, procs: int, rate: float, burst: int, window: float, tasks: int) -> None:
    name = f"bench-rate-{os.getpid()}-{time.time()}"
    cmd = [
        sys.executable,
        __file__,
        "--rate-replica",
        str(port),
        name,
        str(rate),
        str(burst),
        str(window),
        str(tasks),
    ]
    children = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    start = time.time() + 0.5  # every process is connected and waiting
    for child in children:
        assert child.stdin is not None
        child.stdin.write(f"{start!r}\n")
        child.stdin.flush()
    counts = []
    for child in children:
        assert child.stdout is not None
        out = child.stdout.read()
        child.wait(timeout=window + 60)
        assert child.stdin is not None
        child.stdin.close()
        counts.append(int(out.strip().splitlines()[-1]))
    total = sum(counts)
    ideal = rate * window + burst
    fair = total / procs
    print(
        f"1. global rate {rate:g}/s, burst {burst}, {procs} processes x {tasks} tasks, {window:g} s"
    )
    print(
        f"   granted {total} in the window; ideal rate*T+burst = {ideal:g}: {100 * (total / ideal - 1):+.2f}%"
    )
    for i, n in enumerate(counts):
        print(f"   process {i}: {n:6d}  ({100 * (n / fair - 1):+.1f}% of the fair share)")


# -- 2: per-call cost ------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[None]], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t) / n


async def part_cost(port: int, repeats: int, n: int) -> None:
    async with (
        client(port) as c,
        open_capacity_limiter(c, 10**6, name=f"bench-cap-{time.time()}") as glim,
    ):
        local_rate = tf.RateLimiter(1e9, burst=1000)
        global_rate = RedisRateLimiter(c, 1e9, name=f"bench-cost-{time.time()}", burst=1000)
        local_lim = tf.CapacityLimiter(10**6)

        async def ping() -> None:
            await c.ping()

        async def local_cap() -> None:
            async with local_lim:
                pass

        async def global_cap() -> None:
            async with glim:
                pass

        sides: dict[str, Callable[[], Awaitable[None]]] = {
            "tf.RateLimiter.acquire": local_rate.acquire,
            "RedisRateLimiter.acquire": global_rate.acquire,
            "PING round trip": ping,
            "async with tf.CapacityLimiter": local_cap,
            "async with RedisCapacityLimiter": global_cap,
        }
        results: dict[str, list[float]] = {k: [] for k in sides}
        names = list(sides)
        for r in range(repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                results[k].append(await timed(sides[k], n))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"2. per-call cost (median of {repeats} x {n} calls, rotating order)")
        for k, v in med.items():
            print(f"   {k:34s} {v * 1e6:9.1f} µs   {v / med['PING round trip']:6.2f}x PING")
        print(
            f"   RedisRateLimiter / tf.RateLimiter: "
            f"{med['RedisRateLimiter.acquire'] / med['tf.RateLimiter.acquire']:.0f}x; "
            f"RedisCapacityLimiter / tf.CapacityLimiter: "
            f"{med['async with RedisCapacityLimiter'] / med['async with tf.CapacityLimiter']:.0f}x"
        )


# -- 3: lease recovery after SIGKILL ---------------------------------------------


async def holder(port: int, name: str, total: int, weight: int, ttl: float) -> None:
    async with (
        client(port) as c,
        open_capacity_limiter(c, total, name=name, ttl=ttl) as lim,
        lim.hold(weight),
    ):
        print("holding", flush=True)
        await trio.sleep_forever()


async def part_recovery(port: int, ttl: float, repeats: int) -> None:
    total = 8
    times = []
    for _ in range(repeats):
        name = f"bench-lease-{time.time()}"
        proc = subprocess.Popen(
            [sys.executable, __file__, "--holder", str(port), name, str(total), str(total // 2), str(ttl)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        await trio.to_thread.run_sync(proc.stdout.readline)
        async with client(port) as c, open_capacity_limiter(c, total, name=name, ttl=ttl) as lim:
            await lim.acquire_on_behalf_of("mine", total // 2)
            async with trio.open_nursery() as nursery:
                got = trio.Event()

                async def rest(got: trio.Event = got) -> None:
                    await lim.acquire_on_behalf_of("rest", total // 2)
                    got.set()

                nursery.start_soon(rest)
                while not lim.statistics().tasks_waiting:
                    await trio.sleep(0.001)
                await trio.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
                t = trio.current_time()
                await got.wait()
                times.append(trio.current_time() - t)
            lim.release_on_behalf_of("mine")
            lim.release_on_behalf_of("rest")
        proc.wait()
        proc.stdout.close()
    print(
        f"3. lease recovery: SIGKILL of a replica holding {total // 2} of {total} slots, ttl {ttl:g} s"
    )
    print(
        "   slots back after " + ", ".join(f"{t:.2f}" for t in times) + " s"
        f"  (max {max(times) / ttl:.2f}x TTL; the promise is <= 2x)"
    )


# -- 4: stream source throughput ---------------------------------------------------


async def fill(c: Any, stream: str, n: int) -> None:
    for i in range(0, n, 1000):
        async with c.pipeline(transaction=False) as pipe:
            for j in range(i, min(n, i + 1000)):
                pipe.xadd(stream, {"n": str(j)})


async def by_hand(c: Any, stream: str, n: int, count: int) -> float:
    await c.xgroup_create(stream, "g", "0", mkstream=True)
    t = time.perf_counter()
    done = 0
    while done < n:
        reply = await c.xreadgroup("g", "me", {stream: ">"}, count=count, block=100)
        entries = reply[stream.encode()] if reply else ()
        ids = [e.identifier for e in entries]
        for _ in entries:
            await trio.lowlevel.checkpoint()  # the "work"
        if ids:
            await c.xack(stream, "g", ids)
        done += len(ids)
    return n / (time.perf_counter() - t)


async def with_source(c: Any, stream: str, n: int, count: int) -> float:
    t = time.perf_counter()
    async with open_stream_source(c, stream, "g", consumer="me", count=count, block=0.1) as source:

        async def work(entry: Any) -> Any:
            return entry

        pipe = tf.Pipeline("bench").map(work, workers=8)
        seen = 0
        async with pipe.open(source) as run:
            async for entry in run.outputs:
                source.settle(entry, "delivered", None)  # what the pipeline will do itself
                seen += 1
                if seen == n:
                    await run.stop()
    return n / (time.perf_counter() - t)


async def part_stream(port: int, n: int, count: int, repeats: int) -> None:
    hand: list[float] = []
    src: list[float] = []
    async with client(port) as c:
        for r in range(repeats):
            for side in ((by_hand, hand), (with_source, src))[:: 1 if r % 2 == 0 else -1]:
                stream = f"bench-stream-{time.time()}"
                await fill(c, stream, n)
                side[1].append(await side[0](c, stream, n, count))
                await c.delete([stream])
    h, s = statistics.median(hand), statistics.median(src)
    print(f"4. stream: {n} entries, batches of {count}, median of {repeats}")
    print(f"   hand-written XREADGROUP/XACK loop  {h:9.0f} entries/s")
    print(f"   open_stream_source + Pipeline      {s:9.0f} entries/s   ({s / h:.2f}x the loop)")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--entries", type=int, default=20_000)
    p.add_argument("--tasks", type=int, default=32, help="tasks per replica process")
    p.add_argument("--rate-replica", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--holder", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rate_replica:
        port, name, rate, burst, window, tasks = args.rate_replica
        trio.run(rate_replica, int(port), name, float(rate), int(burst), float(window), int(tasks))
        return
    if args.holder:
        port, name, total, weight, ttl = args.holder
        trio.run(holder, int(port), name, int(total), int(weight), float(ttl))
        return
    if args.quick:
        args.window, args.entries = 2.0, 3000
    server, port, workdir = start_redis()
    try:
        print(
            f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); redis-server on 127.0.0.1:{port}"
        )
        part_rate(port, args.procs, args.rate, args.burst, args.window, args.tasks)
        trio.run(part_cost, port, 3 if args.quick else 7, 500 if args.quick else 1000)
        trio.run(part_recovery, port, args.ttl, 2 if args.quick else 5)
        trio.run(part_stream, port, args.entries, 64, 2 if args.quick else 5)
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
