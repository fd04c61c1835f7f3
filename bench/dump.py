"""How long does a task dump take, and what does trioflow's bookkeeping cost?

1. ``tf.debug.dump_tasks()`` (and ``format()``, ``format(group=True)``,
   ``to_json()``), ``tf.debug.find_stuck()`` and one pass of the stuck-task
   check (its total loop time and its longest slice) on programs of 1k / 10k /
   100k tasks in mixed states: parked on a trioflow limiter, a trio Lock,
   a memory channel, an Event, sleeping, and runnable; nested two nurseries
   deep. Beside it, stackscope 0.2 (``stackscope.extract(root,
   recurse_child_tasks=True)``, then ``format()``) on the same program,
   where it is installed and where it finishes within --stackscope-max
   tasks (it is ~100x slower).
2. The cost the bookkeeping adds to a contended limiter acquire (1000 tasks
   on 10 tokens): the kernel as shipped against the same kernel with the
   stamps dumps read stripped out (``since`` and ``custom_sleep_data``), and
   with ``tf.debug.install()`` active (spawn records, deadlock check); plus
   what install() adds to each spawn. CPU time (``time.process_time``), so
   other load on a shared machine disturbs it less; ratio of medians,
   rotating order.

    python bench/dump.py [--repeats N] [--sizes 1000,10000,100000] [--stackscope-max 10000]

Prints medians in ms (wall, and CPU time of this process for the dump, which
other load on a shared machine disturbs less) and the ratio stackscope /
trioflow.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

import trioflow as tf

try:
    import stackscope  # pyright: ignore

    HAVE_STACKSCOPE = True
except ImportError:  # pragma: no cover
    HAVE_STACKSCOPE = False


async def build(nursery: trio.Nursery, n: int) -> list[Any]:
    """n tasks in mixed states, returns what keeps them parked."""
    limiter = tf.CapacityLimiter(1, name="api")
    lock = trio.Lock()
    event = trio.Event()
    send, receive = trio.open_memory_channel[int](0)
    await limiter.acquire()
    await lock.acquire()

    async def on_limiter() -> None:
        async with limiter:
            pass

    async def on_lock() -> None:
        async with lock:
            pass

    async def on_channel() -> None:
        await receive.receive()

    async def on_event() -> None:
        await event.wait()

    async def sleeper() -> None:
        await trio.sleep(3600)

    async def group(k: int) -> None:
        async with trio.open_nursery() as inner:
            for i in range(k):
                fn = (on_limiter, on_lock, on_channel, on_event, sleeper)[i % 5]
                inner.start_soon(fn)
            await event.wait()

    per = 100
    for _ in range(n // per):
        nursery.start_soon(group, per - 1)
    await trio.testing.wait_all_tasks_blocked()
    return [limiter, lock, event, send, receive]


def time_dump(n: int, repeats: int, use_stackscope: bool) -> dict[str, float]:
    out: dict[str, list[float]] = {
        "dump": [],
        "dump_cpu": [],
        "format": [],
        "grouped": [],
        "json": [],
        "find_stuck": [],
        "stackscope": [],
        "stuck_slice": [],
        "stuck_pass": [],
        "fork_stuck": [],
        "fork_stuck_pause": [],
        "fork_json": [],
        "fork_json_pause": [],
    }

    async def forked(render: Any) -> tuple[float, float]:
        """What the endpoint does above fork_above: the wall time of the
        answer, and the longest the loop went without running a ticker."""
        from trioflow.debug._fork import in_child

        longest = 0.0
        done = False

        async def ticker() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done:
                await trio.sleep(0.001)
                now = time.perf_counter()
                longest = max(longest, now - last)
                last = now

        async with trio.open_nursery() as n:
            n.start_soon(ticker)
            await trio.sleep(0.01)
            longest = 0.0
            t0 = time.perf_counter()
            await in_child(render, alarm_after=600)
            took = time.perf_counter() - t0
            done = True
        return took, longest

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            keep = await build(nursery, n)
            for r in range(repeats):
                order = ["tf", "ss"] if r % 2 == 0 else ["ss", "tf"]
                for side in order:
                    if side == "tf":
                        c0 = time.process_time()
                        t0 = time.perf_counter()
                        d = tf.debug.dump_tasks()
                        t1 = time.perf_counter()
                        c1 = time.process_time()
                        d.format()
                        t2 = time.perf_counter()
                        d.format(group=True)
                        t3 = time.perf_counter()
                        d.to_json()
                        t4 = time.perf_counter()
                        tf.debug.find_stuck()
                        t5 = time.perf_counter()
                        out["dump"].append(t1 - t0)
                        out["dump_cpu"].append(c1 - c0)
                        out["format"].append(t2 - t1)
                        out["grouped"].append(t3 - t2)
                        out["json"].append(t4 - t3)
                        out["find_stuck"].append(t5 - t4)
                    elif use_stackscope:
                        t0 = time.perf_counter()
                        st = stackscope.extract(  # pyright: ignore
                            trio.lowlevel.current_root_task(), recurse_child_tasks=True
                        )
                        st.format()  # pyright: ignore
                        out["stackscope"].append(time.perf_counter() - t0)
            if tf.debug._fork.can_fork():  # pyright: ignore[reportPrivateUsage]
                took, pause = await forked(
                    lambda: "\n".join(str(x) for x in tf.debug.find_stuck()).encode()
                )
                out["fork_stuck"].append(took)
                out["fork_stuck_pause"].append(pause)
                took, pause = await forked(lambda: tf.debug.dump_tasks().to_json().encode())
                out["fork_json"].append(took)
                out["fork_json_pause"].append(pause)
            # One stuck-task pass (what install(stuck_after=...) runs): every
            # task parked "long enough", so phase 2 describes all of them.
            from trioflow.debug._stuck import StuckScan

            scan = StuckScan(1e-9, trio.lowlevel.current_trio_token(), lambda _text: None, _raise)
            for _ in range(2):  # the second pass sees every task twice: all candidates
                scan.kick()
                while scan._busy:  # pyright: ignore[reportPrivateUsage]
                    await trio.sleep(0)
            out["stuck_slice"].append(scan.longest_slice)
            out["stuck_pass"].append(scan.last_pass_cost)
            nursery.cancel_scope.cancel()
            del keep

    trio.run(main)
    return {k: statistics.median(v) * 1000 for k, v in out.items() if v}


def _raise(exc: BaseException) -> None:
    raise exc


ROUNDS = 50


def contended(variant: str) -> float:
    """CPU seconds per acquire: 1000 tasks x ROUNDS acquisitions of 10 tokens.

    ``variant``: ``"plain"``; ``"install"`` (tf.debug.install() active:
    spawn records and the deadlock check); ``"no-stamps"`` (the kernel with
    the two things dumps read stripped out: the ``since`` stamp taken when a
    waiter queues, and ``task.custom_sleep_data`` set while it is parked).
    """
    from trioflow._admission import _kernel

    saved = (_kernel.Kernel._enqueue, _kernel.park)  # pyright: ignore[reportPrivateUsage]
    if variant == "no-stamps":
        _kernel.Kernel._enqueue = _enqueue_no_stamp  # type: ignore[method-assign]
        _kernel.park = _park_no_sleep_data

    async def run() -> float:
        if variant == "install":
            tf.debug.install(signal=None)
        limiter = tf.CapacityLimiter(10)

        async def worker() -> None:
            for _ in range(ROUNDS):
                async with limiter:
                    await trio.lowlevel.checkpoint()

        t0 = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(worker)
        return (time.process_time() - t0) / (1000 * ROUNDS)

    try:
        return trio.run(run)
    finally:
        _kernel.Kernel._enqueue, _kernel.park = saved  # type: ignore[method-assign]


def _enqueue_no_stamp(self: Any, borrower: object, weight: int, lane: int, primitive: Any) -> Any:
    """The kernel's ``_enqueue`` without the ``since`` stamp (no clock read)."""
    from trioflow._admission._kernel import Waiter

    self._seq += 1
    waiter = Waiter(trio.lowlevel.current_task(), borrower, weight, lane, primitive, self._seq, 0.0)
    self.queues[lane][waiter] = None
    self.waiting += 1
    if weight > 1:
        self._heavy += 1
    return waiter


async def _park_no_sleep_data(
    waiter: Any, on_abort: Callable[[], object], on_parked: Callable[[], object] | None = None
) -> None:
    """``park`` without ``task.custom_sleep_data`` (what a dump reads the waiter from)."""
    waiter.parked = True

    def abort(_: Any) -> trio.lowlevel.Abort:
        waiter.parked = False
        on_abort()
        return trio.lowlevel.Abort.SUCCEEDED

    if on_parked is not None:
        on_parked()
    await trio.lowlevel.wait_task_rescheduled(abort)


def spawn_cost(installed: bool) -> float:
    """CPU seconds per start_soon of a task that returns at once."""

    async def noop() -> None:
        pass

    async def run() -> float:
        if installed:
            tf.debug.install(signal=None)
        t0 = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(20_000):
                nursery.start_soon(noop)
        return (time.process_time() - t0) / 20_000

    return trio.run(run)


#: spawns per run of the instruction-count cases below (bench/instructions.py sets it)
N_SPAWNS = 2000


async def _spawn_many() -> None:
    async def noop() -> None:
        pass

    async with trio.open_nursery() as nursery:
        for _ in range(N_SPAWNS):
            nursery.start_soon(noop)


async def spawns_plain() -> None:
    """``N_SPAWNS`` tasks that return at once, nothing installed."""
    await _spawn_many()


class _NoopSpawnHook(trio.abc.Instrument):
    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        pass


async def spawns_noop_instrument() -> None:
    """The same under an instrument whose ``task_spawned`` does nothing: any spawn hook's floor."""
    hook = _NoopSpawnHook()
    trio.lowlevel.add_instrument(hook)
    try:
        await _spawn_many()
    finally:
        trio.lowlevel.remove_instrument(hook)


async def spawns_installed() -> None:
    """The same with ``tf.debug.install()`` active (its ``created_by`` record per spawn)."""
    with tf.debug.install(signal=None):
        await _spawn_many()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--stackscope-max", type=int, default=10_000)
    args = parser.parse_args()
    print(f"stackscope available: {HAVE_STACKSCOPE}")
    for n in [int(s) for s in args.sizes.split(",")]:
        use_ss = HAVE_STACKSCOPE and n <= args.stackscope_max
        reps = args.repeats if n <= 10_000 else max(2, args.repeats // 2)
        res = time_dump(n, reps, use_ss)
        line = (
            f"{n:>7} tasks: dump_tasks {res['dump']:8.1f} ms (CPU {res['dump_cpu']:7.1f} ms)"
            f"   format {res['format']:8.1f} ms   grouped {res['grouped']:7.1f} ms"
            f"   to_json {res['json']:8.1f} ms   find_stuck {res['find_stuck']:8.1f} ms"
            f"   stuck pass {res['stuck_pass']:7.1f} ms in slices of <= {res['stuck_slice']:5.1f} ms"
        )
        if "fork_stuck" in res:
            line += (
                f"   forked (the endpoint): find_stuck {res['fork_stuck']:8.1f} ms,"
                f" loop paused <= {res['fork_stuck_pause']:6.1f} ms;"
                f" to_json {res['fork_json']:8.1f} ms, loop paused <= {res['fork_json_pause']:6.1f} ms"
            )
        if "stackscope" in res:
            ratio = res["stackscope"] / (res["dump"] + res["format"])
            line += f"   stackscope {res['stackscope']:9.1f} ms ({ratio:.0f}x dump+format)"
        print(line)

    variants = ["plain", "no-stamps", "install"]
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats * 3):
        for v in variants[r % 3 :] + variants[: r % 3]:
            runs[v].append(contended(v))
    med = {v: statistics.median(x) for v, x in runs.items()}
    print(
        "contended acquire, 1000 tasks / 10 tokens, CPU per acquire: "
        f"kernel without dump stamps {med['no-stamps'] * 1e6:.2f} us, "
        f"as shipped {med['plain'] * 1e6:.2f} us (ratio {med['plain'] / med['no-stamps']:.3f}), "
        f"with install() {med['install'] * 1e6:.2f} us (ratio {med['install'] / med['plain']:.3f})"
    )
    spawns: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.repeats * 2):
        for side in (False, True) if r % 2 == 0 else (True, False):
            spawns[side].append(spawn_cost(side))
    s0, s1 = statistics.median(spawns[False]), statistics.median(spawns[True])
    print(
        f"start_soon + exit, CPU per task: plain {s0 * 1e6:.2f} us, "
        f"with install() {s1 * 1e6:.2f} us (+{(s1 - s0) * 1e6:.2f} us, ratio {s1 / s0:.3f})"
    )


if __name__ == "__main__":
    main()
