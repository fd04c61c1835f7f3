"""Hypothesis drives a live limiter one step at a time: safety *and* liveness.

Trio runs in a thread of its own for the whole example; each rule of the
state machine crosses into it with ``trio.from_thread.run``, does one thing
(a task arrives asking for a weight, a holder leaves — on an adaptive
limiter maybe with ``permit.drop()``, which shrinks the limit — a waiter or
holder is cancelled, the total is resized to anything from 0 to above what
is held, or a release races a cancellation in the same instant), waits
until every task is blocked, and checks the invariants against a model of
who should hold what.

Liveness (issue 14): whenever somebody waits on a limiter whose total is
above 0, something is held (so a release will come) and the head does not
fit now, yet it can fit some day: on a fixed limiter its weight is within
the total (a waiter that can never fit was failed with ``ValueError``), on an
adaptive one within ``max_limit`` (and it runs alone once nothing is held).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import trioflow as tf
from trioflow.adaptive import AIMD

MAX_LIMIT = 6


@attrs.define(eq=False)
class Client:
    id: int
    weight: int
    #: "hold": async with limiter.hold(); "acquire": acquire/release_on_behalf_of
    mode: str
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    release: trio.Event = attrs.field(factory=trio.Event)
    drop: bool = False
    #: what the limiter records as holding: the client, or its task under hold()
    borrower: object = None
    #: waiting -> holding -> done | cancelled | refused
    state: str = "waiting"
    held: bool = False


class LimiterMachine(RuleBasedStateMachine):
    adaptive = False

    def __init__(self) -> None:
        super().__init__()
        self.limiter: tf.CapacityLimiter | None = None
        self.clients: list[Client] = []
        self.grants: set[int] = set()
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run_trio, daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- plumbing ----------------------------------------------------------

    def _run_trio(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced in teardown
            self._errors.append(exc)
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        if self.adaptive:
            algorithm = AIMD(initial_limit=3, min_limit=1, max_limit=MAX_LIMIT, backoff=0.5)
            self.limiter = tf.CapacityLimiter(name="stateful", algorithm=algorithm)
        else:
            self.limiter = tf.CapacityLimiter(3, name="stateful")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()

    def step(self, fn: Callable[[], Awaitable[Any]]) -> None:
        if self._errors:
            raise self._errors[0]
        waiting_before = {c.id for c in self.of_state("waiting")}
        before = self.lim().statistics()

        async def run() -> None:
            await fn()
            await trio.testing.wait_all_tasks_blocked()

        trio.from_thread.run(run, trio_token=self._token)
        # FIFO: whoever was granted during this step arrived before everyone
        # still waiting (grants may run in any order, but never skip a waiter).
        granted = {i for i in waiting_before if i in self.grants}
        still_waiting = {c.id for c in self.of_state("waiting")}
        if granted and still_waiting:
            assert max(granted) < min(still_waiting)
        # Safety: a step that granted anything left the limiter within its
        # total, except one adaptive head granted alone (nothing else held).
        after = self.lim().statistics()
        if granted and after.borrowed_tokens > after.total_tokens:
            assert self.adaptive
            assert len(after.borrowers) == 1, (before, after)

    def lim(self) -> tf.CapacityLimiter:
        assert self.limiter is not None
        return self.limiter

    async def _client(self, c: Client) -> None:
        lim = self.lim()
        with c.scope:
            try:
                if c.mode == "hold":
                    async with lim.hold(c.weight) as permit:
                        self._granted(c)
                        await c.release.wait()
                        if c.drop:
                            permit.drop()
                        c.held = False
                else:
                    await lim.acquire_on_behalf_of(c, c.weight)
                    self._granted(c)
                    try:
                        await c.release.wait()
                    finally:
                        if c.held:
                            lim.release_on_behalf_of(c)
                            c.held = False
            except ValueError as exc:
                # Failed by a shrink: it held nothing and can never fit.
                assert c.state == "waiting"
                assert not self.adaptive
                assert f"weight={c.weight} can never be granted" in str(exc)
                assert c.weight > lim.total_tokens > 0
                c.state = "refused"
                return
            finally:
                c.held = False
                if c.state == "holding":
                    c.state = "done"
        if c.state == "waiting":
            c.state = "cancelled"

    def _granted(self, c: Client) -> None:
        assert c.state == "waiting"
        c.held = True
        c.borrower = trio.lowlevel.current_task() if c.mode == "hold" else c
        c.state = "holding"
        self.grants.add(c.id)

    def of_state(self, state: str) -> list[Client]:
        return [c for c in self.clients if c.state == state]

    # -- rules -------------------------------------------------------------

    @rule(weight=st.integers(1, MAX_LIMIT + 1), mode=st.sampled_from(["hold", "acquire"]))
    def arrive(self, weight: int, mode: str) -> None:
        lim = self.lim()
        total = lim.total_tokens
        c = Client(len(self.clients), weight, mode)
        most = MAX_LIMIT if self.adaptive else total
        if (self.adaptive or total != 0) and weight > most:
            # A weight that could never be granted is an error at the call.
            async def bad() -> None:
                with pytest.raises(ValueError, match=f"weight={weight} is more than"):
                    await lim.acquire_on_behalf_of(c, weight)
                with pytest.raises(ValueError, match=f"weight={weight} is more than"):
                    lim.hold(weight)

            self.step(bad)
            return
        self.clients.append(c)

        async def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(self._client, c)

        self.step(start)

    @precondition(lambda self: self.of_state("holding"))
    @rule(data=st.data(), drop=st.booleans())
    def release(self, data: st.DataObject, drop: bool) -> None:
        c = data.draw(st.sampled_from(self.of_state("holding")))
        # On an adaptive limiter a dropped hold() shrinks the limit (AIMD halves it).
        c.drop = drop

        async def go() -> None:
            c.release.set()

        self.step(go)

    @precondition(lambda self: self.of_state("waiting") or self.of_state("holding"))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(self.of_state("waiting") + self.of_state("holding")))

        async def go() -> None:
            c.scope.cancel()

        self.step(go)

    @precondition(
        lambda self: (
            self.of_state("waiting") and any(c.mode == "acquire" for c in self.of_state("holding"))
        )
    )
    @rule(data=st.data(), cancel_first=st.booleans())
    def release_races_cancel(self, data: st.DataObject, cancel_first: bool) -> None:
        holder = data.draw(
            st.sampled_from([c for c in self.of_state("holding") if c.mode == "acquire"])
        )
        waiter = data.draw(st.sampled_from(self.of_state("waiting")))

        async def go() -> None:
            # Both in the same instant: the release may grant the waiter
            # just before (or after) its cancellation lands.
            if cancel_first:
                waiter.scope.cancel()
            self.lim().release_on_behalf_of(holder)
            holder.held = False
            if not cancel_first:
                waiter.scope.cancel()
            holder.release.set()

        self.step(go)

    @rule(total=st.integers(0, MAX_LIMIT))
    def resize(self, total: int) -> None:
        # Anything from a pause to above what is held; below what is held too.
        async def go() -> None:
            self.lim().total_tokens = total

        self.step(go)

    # -- invariants (checked at quiescence, after every step) --------------

    @invariant()
    def books_balance(self) -> None:
        st_ = self.lim().statistics()
        held = sum(c.weight for c in self.clients if c.held)
        assert st_.borrowed_tokens == held
        assert st_.tasks_waiting == len(self.of_state("waiting"))
        assert set(st_.borrowers) == {c.borrower for c in self.clients if c.held}

    @invariant()
    def never_wedged(self) -> None:
        waiting = self.of_state("waiting")
        st_ = self.lim().statistics()
        total, borrowed = st_.total_tokens, st_.borrowed_tokens
        if not waiting or total == 0:
            return  # nobody waits, or admission is paused
        head = min(waiting, key=lambda c: c.id)
        # Somebody holds tokens, so a release is coming...
        assert borrowed > 0, f"{head} waits while nothing is held: wedged"
        # ...and the head waits only because it does not fit yet...
        assert head.weight > total - borrowed
        # ...but it can fit some day.
        assert head.weight <= (MAX_LIMIT if self.adaptive else total)

    def teardown(self) -> None:
        if self._token is not None and not self._errors:

            async def finish() -> None:
                for c in self.clients:
                    c.scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                st_ = self.lim().statistics()
                assert st_.borrowed_tokens == 0
                assert st_.tasks_waiting == 0
                assert all(c.state in ("done", "cancelled", "refused") for c in self.clients)
                assert self._stop is not None
                self._stop.set()

            trio.from_thread.run(finish, trio_token=self._token)
        self._thread.join(timeout=10)
        if self._errors:
            raise self._errors[0]


class AdaptiveLimiterMachine(LimiterMachine):
    adaptive = True


_settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
LimiterMachine.TestCase.settings = _settings
AdaptiveLimiterMachine.TestCase.settings = _settings
test_capacity_limiter_stateful = LimiterMachine.TestCase
test_adaptive_limiter_stateful = AdaptiveLimiterMachine.TestCase
