"""The deterministic simulation behind ``bench/adaptive/run.py``.

Everything runs inside ``trio.run`` on ``trio.testing.MockClock(autojump_threshold=0)``:
virtual time, so a 60-second scenario takes as long as its events take to
process, and the same seed gives the same run.

Event-light on purpose (the machine is shared): the downstream servers are
plain arithmetic, not tasks. Model A is an M/G/c FIFO server kept as a heap
of the c servers' next-free times: a request that reaches it at ``t`` starts
at ``max(t, earliest free)`` and finishes ``service`` later, and that server
stays busy until then *even if the client gave up* (work continues after a
client timeout, as on a real server). Model B is contention: every request
admitted runs at once, and its service time is ``S0 * (1 + sigma*(n-1) +
kappa*n*(n-1))`` with ``n`` the requests in service when it starts
(including those whose clients gave up). The only tasks are: one arrival
task per traffic source, one task per admitted request (it holds its
limiter token and sleeps until its response or its deadline), and one task
recording the limit every 100 ms.

Service times are lognormal, bimodal or Pareto (``Model``). A phase may make
a share of requests fail fast (``error_fraction``: an application error, or
with ``errors_as_drops`` one the application reports as overload through
``permit.drop()``) or have a share of callers give up early
(``cancel_fraction``: the caller's cancel scope fires within
``CANCEL_AFTER``; the limiter does not sample a cancelled block, unless
``cancels_as_drops`` makes the application call ``permit.drop()`` on the way
out, the mistake the docs warn against). A cancelled caller's work still
runs to the end on the server.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

DEADLINE = 1.0  # seconds: a client gives up (trio.TooSlowError, an overload drop) after this
FAST_ERROR_TIME = 0.001  # seconds a fast failure takes (a 500 that did no real work)
QUEUE_WAIT = 0.050  # with queueing=True (S8): how long a request may wait for a token
CANCEL_AFTER = (0.002, 0.040)  # a cancelling caller gives up uniformly within this (seconds)

OK, TIMEOUT, REJECTED, ERROR, CANCELLED = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Phase:
    """Steady conditions for a span of a scenario."""

    duration: float
    rate: float  # Poisson arrivals per second
    servers: int = 20  # c, model A
    scale: float = 1.0  # service-time multiplier (model A and B)
    scale_end: float | None = None  # if set, the scale ramps linearly to this over the phase
    error_fraction: float = 0.0  # requests that fail fast (not overload)
    cancel_fraction: float = 0.0  # callers that give up early (cancel), see CANCEL_AFTER
    name: str = ""

    def scale_at(self, into: float) -> float:
        if self.scale_end is None:
            return self.scale
        return self.scale + (self.scale_end - self.scale) * min(1.0, into / self.duration)


@dataclass(frozen=True)
class Model:
    kind: str = "A"  # "A" (M/G/c FIFO) or "B" (contention)
    mean: float = 0.020  # mean service time, seconds (lognormal)
    sigma: float = 0.5  # lognormal shape
    bimodal: tuple[float, float, float] | None = None  # (p_fast, fast, slow) fixed service times
    pareto_alpha: float | None = None  # Pareto service with this shape and mean ``mean``
    usl_sigma: float = 0.02
    usl_kappa: float = 5e-4


class ServerA:
    """M/G/c FIFO: a heap of each server's next-free time."""

    def __init__(self, servers: int) -> None:
        self.free = [0.0] * servers
        heapq.heapify(self.free)

    def submit(self, now: float, service: float) -> float:
        start = max(now, self.free[0])
        finish = start + service
        heapq.heapreplace(self.free, finish)
        return finish

    def set_servers(self, servers: int, now: float) -> None:
        have = len(self.free)
        if servers > have:
            self.free.extend([now] * (servers - have))
        elif servers < have:
            # The servers that leave are the ones busy the longest: their
            # current work still completes, then they are gone.
            self.free.sort()
            del self.free[servers:]
        heapq.heapify(self.free)

    def utilization(self, now: float) -> float:
        return sum(1 for t in self.free if t > now) / len(self.free)


class ServerB:
    """Contention: service time grows with the requests in service."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.finishing: list[float] = []

    def in_service(self, now: float) -> int:
        f = self.finishing
        while f and f[0] <= now:
            heapq.heappop(f)
        return len(f)

    def submit(self, now: float, service: float) -> float:
        n = self.in_service(now) + 1
        m = self.model
        finish = now + service * (1 + m.usl_sigma * (n - 1) + m.usl_kappa * n * (n - 1))
        heapq.heappush(self.finishing, finish)
        return finish

    def set_servers(self, servers: int, now: float) -> None:
        pass

    def utilization(self, now: float) -> float:
        # Load as a service would see it: in service vs. the throughput-optimal count.
        m = self.model
        best = math.sqrt((1 - m.usl_sigma) / m.usl_kappa)
        return self.in_service(now) / best


@dataclass
class Lane:
    """One traffic source: its share of the rate and (with lanes) its limiter face."""

    name: str
    share: float
    limiter: Any


@dataclass
class Result:
    arrival: list[float] = field(default_factory=list[float])
    done: list[float] = field(default_factory=list[float])
    latency: list[float] = field(default_factory=list[float])
    code: list[int] = field(default_factory=list[int])
    lane: list[int] = field(default_factory=list[int])
    limit_t: list[float] = field(default_factory=list[float])
    limit_v: list[float] = field(default_factory=list[float])
    t0: float = 0.0


class _AppError(Exception):
    """A fast failure that is not overload: the limiter does not sample it."""


def _service_sampler(model: Model, rng: random.Random) -> Callable[[], float]:
    if model.bimodal is not None:
        p_fast, fast, slow = model.bimodal

        def bimodal() -> float:
            return fast if rng.random() < p_fast else slow

        return bimodal
    if model.pareto_alpha is not None:
        alpha = model.pareto_alpha
        scale = model.mean * (alpha - 1) / alpha  # x_m, so that the mean is model.mean

        def pareto() -> float:
            return scale * rng.paretovariate(alpha)

        return pareto
    mu = math.log(model.mean) - model.sigma**2 / 2  # lognormal with the given mean

    def lognormal() -> float:
        return rng.lognormvariate(mu, model.sigma)

    return lognormal


async def _run(
    phases: list[Phase],
    model: Model,
    lanes: list[Lane],
    seed: int,
    sample_limit: Callable[[], float],
    on_server: Callable[[Any], None] | None,
    queueing: bool = False,
    errors_as_drops: bool = False,
    cancels_as_drops: bool = False,
) -> Result:
    res = Result()
    t0 = trio.current_time()
    res.t0 = t0
    bounds: list[float] = []
    acc = 0.0
    for p in phases:
        acc += p.duration
        bounds.append(acc)
    total = acc
    server: ServerA | ServerB = ServerA(phases[0].servers) if model.kind == "A" else ServerB(model)
    if on_server is not None:
        on_server(server)
    service = _service_sampler(model, random.Random(seed * 7919 + 1))
    coin = random.Random(seed * 7919 + 2)
    impatience = random.Random(seed * 7919 + 3)
    state = {"phase": 0}

    def phase_at(now: float) -> Phase:
        i = state["phase"]
        while i < len(phases) - 1 and now - t0 >= bounds[i]:
            i += 1
            server.set_servers(phases[i].servers, now)
        state["phase"] = i
        return phases[i]

    arrival_l, done_l, lat_l, code_l, lane_l = (
        res.arrival,
        res.done,
        res.latency,
        res.code,
        res.lane,
    )

    def record(arrived: float, done: float, code: int, lane: int) -> None:
        arrival_l.append(arrived - t0)
        done_l.append(done - t0)
        lat_l.append(done - arrived)
        code_l.append(code)
        lane_l.append(lane)

    #: one Event per arrival task parked because its limiter was full
    parked: list[trio.Event] = []

    def wake_arrivals() -> None:
        # Tokens change only when a request finishes (its release, and the
        # algorithm's new limit), so a full limiter stays full until then.
        if parked:
            for ev in parked:
                ev.set()
            parked.clear()

    async def queued_request(limiter: Any, arrived: float, lane: int) -> None:
        # Wait up to QUEUE_WAIT for a token (waiters are served by lane
        # priority), else rejected; then the same request as below.
        code = REJECTED
        try:
            async with contextlib.AsyncExitStack() as stack:
                permit = None
                with trio.move_on_after(QUEUE_WAIT):
                    permit = await stack.enter_async_context(limiter.hold())
                    code = OK
                if permit is not None:
                    await body(arrived, permit)
        except trio.TooSlowError:
            code = TIMEOUT
        except _AppError:
            code = ERROR
        record(arrived, trio.current_time(), code, lane)
        wake_arrivals()

    async def body(arrived: float, permit: Any) -> None:
        now = trio.current_time()
        phase = phase_at(now)
        if phase.error_fraction and coin.random() < phase.error_fraction:
            await trio.sleep(FAST_ERROR_TIME)
            if errors_as_drops:
                permit.drop()  # a fast 500 reported as overload (the mistake S5d shows)
            raise _AppError
        finish = server.submit(now, service() * phase.scale_at(now - t0 - _start(phase)))
        remaining = DEADLINE - (now - arrived)
        if finish - now > remaining:
            await trio.sleep(max(remaining, 0.0))
            raise trio.TooSlowError
        try:
            await trio.sleep(finish - now)
        except trio.Cancelled:
            # The caller gave up (its server-side work still runs to the end).
            if cancels_as_drops:
                permit.drop()  # the mistake S13d shows: a cancellation is not overload
            raise

    async def attempt(limiter: Any, arrived: float) -> int:
        try:
            async with limiter.hold() as permit:
                await body(arrived, permit)
        except trio.TooSlowError:
            return TIMEOUT
        except _AppError:
            return ERROR
        return OK

    async def request(limiter: Any, arrived: float, lane: int) -> None:
        phase = phase_at(arrived)
        if phase.cancel_fraction and impatience.random() < phase.cancel_fraction:
            code = CANCELLED
            with trio.move_on_at(arrived + impatience.uniform(*CANCEL_AFTER)):
                code = await attempt(limiter, arrived)
        else:
            code = await attempt(limiter, arrived)
        record(arrived, trio.current_time(), code, lane)
        wake_arrivals()

    starts: dict[int, float] = {}
    acc = 0.0
    for p in phases:
        starts[id(p)] = acc
        acc += p.duration

    def _start(p: Phase) -> float:
        return starts[id(p)]

    async def arrivals(nursery: trio.Nursery, idx: int, src: Lane) -> None:
        rng = random.Random(seed * 7919 + 100 + idx)
        limiter = src.limiter
        end = t0 + total
        nxt = t0 + rng.expovariate(phases[0].rate * src.share)
        while nxt < end:
            if queueing:
                await trio.sleep_until(nxt)
                nursery.start_soon(queued_request, limiter, nxt, idx)
                nxt += rng.expovariate(phase_at(nxt).rate * src.share)
                continue
            if limiter.available_tokens < 1:
                # Full: every arrival before the next finished request is
                # rejected. Sleep until a request finishes, then count them
                # in one go (exact, and half the events at 2x overload).
                ev = trio.Event()
                parked.append(ev)
                with trio.move_on_at(end):
                    await ev.wait()
                now = trio.current_time()
                while nxt < now and nxt < end:
                    record(nxt, nxt, REJECTED, idx)
                    nxt += rng.expovariate(phase_at(nxt).rate * src.share)
                continue
            await trio.sleep_until(nxt)
            if limiter.available_tokens >= 1:
                nursery.start_soon(request, limiter, nxt, idx)
            else:
                record(nxt, nxt, REJECTED, idx)
            nxt += rng.expovariate(phase_at(nxt).rate * src.share)

    async def sampler() -> None:
        end = t0 + total
        while trio.current_time() < end:
            res.limit_t.append(trio.current_time() - t0)
            res.limit_v.append(sample_limit())
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler)
        for idx, src in enumerate(lanes):
            nursery.start_soon(arrivals, nursery, idx, src)
    return res


def simulate(
    phases: list[Phase],
    model: Model,
    make_lanes: Callable[[Callable[[], Any]], tuple[list[Lane], Callable[[], float]]],
    seed: int,
    queueing: bool = False,
    errors_as_drops: bool = False,
    cancels_as_drops: bool = False,
) -> Result:
    """Run one scenario with one limiter configuration and one seed.

    ``make_lanes(server_getter)`` builds the limiter(s) inside the run and
    returns the traffic sources and a function reading the current limit.
    """
    # trio shuffles each scheduling batch with its own RNG; seed it so a run
    # is reproducible (bench only: a private attribute, read-only elsewhere).
    trio._core._run._r.seed(seed)  # type: ignore[attr-defined]
    box: dict[str, Any] = {}

    async def main() -> Result:
        lanes, sample_limit = make_lanes(lambda: box["server"])

        def on_server(server: Any) -> None:
            box["server"] = server

        return await _run(
            phases,
            model,
            lanes,
            seed,
            sample_limit,
            on_server,
            queueing,
            errors_as_drops,
            cancels_as_drops,
        )

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
