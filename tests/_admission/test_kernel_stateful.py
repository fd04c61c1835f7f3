"""Hypothesis drives a live CapacityLimiter one step at a time.

Trio runs in a thread of its own for the whole example; each rule of the
state machine crosses into it with ``trio.from_thread.run``, does one thing
(a task arrives asking for a weight, a holder releases, a waiter or holder
is cancelled, the limit is resized, or a release races a cancellation in
the same instant), waits until every task is blocked, and checks the
invariants against a model of who should hold what.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import trioflow as tf


@attrs.define(eq=False)
class Client:
    id: int
    weight: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    release: trio.Event = attrs.field(factory=trio.Event)
    state: str = "waiting"  # waiting -> holding -> done | cancelled
    held: bool = False


class LimiterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.limiter: tf.CapacityLimiter | None = None
        self.clients: list[Client] = []
        self.grants: set[int] = set()
        self.prev_borrowed = 0
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
        self.limiter = tf.CapacityLimiter(3, name="stateful")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()

    def step(self, fn: Callable[[], Awaitable[Any]]) -> None:
        waiting_before = {c.id for c in self.of_state("waiting")}

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

    def lim(self) -> tf.CapacityLimiter:
        assert self.limiter is not None
        return self.limiter

    async def _client(self, c: Client) -> None:
        lim = self.lim()
        with c.scope:
            await lim.acquire_on_behalf_of(c, c.weight)
            c.held = True
            c.state = "holding"
            self.grants.add(c.id)
            try:
                await c.release.wait()
            finally:
                if c.held:
                    lim.release_on_behalf_of(c)
                    c.held = False
                c.state = "done"
        if c.state == "waiting":
            c.state = "cancelled"

    def of_state(self, state: str) -> list[Client]:
        return [c for c in self.clients if c.state == state]

    # -- rules -------------------------------------------------------------

    @rule(weight=st.integers(1, 4))
    def arrive(self, weight: int) -> None:
        lim = self.lim()
        total = lim.total_tokens
        c = Client(len(self.clients), weight)
        if total != 0 and weight > total:
            # Asking for more than the total is an error at the call.
            async def bad() -> None:
                try:
                    await lim.acquire_on_behalf_of(c, weight)
                except ValueError as exc:
                    assert "is more than" in str(exc)
                else:  # pragma: no cover - would be a bug
                    raise AssertionError("weight above total was accepted")

            self.step(bad)
            return
        self.clients.append(c)

        async def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(self._client, c)

        self.step(start)

    @precondition(lambda self: self.of_state("holding"))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(self.of_state("holding")))

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

    @precondition(lambda self: self.of_state("waiting") and self.of_state("holding"))
    @rule(data=st.data(), cancel_first=st.booleans())
    def release_races_cancel(self, data: st.DataObject, cancel_first: bool) -> None:
        holder = data.draw(st.sampled_from(self.of_state("holding")))
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

    @rule(total=st.integers(0, 6))
    def resize(self, total: int) -> None:
        async def go() -> None:
            self.lim().total_tokens = total

        self.step(go)

    # -- invariants (checked at quiescence, after every step) --------------

    @invariant()
    def books_balance(self) -> None:
        st_ = self.lim().statistics()
        held = sum(c.weight for c in self.clients if c.held)
        assert st_.borrowed_tokens == held
        assert st_.borrowed_tokens >= 0
        assert st_.tasks_waiting == len(self.of_state("waiting"))
        assert set(st_.borrowers) == {c for c in self.clients if c.held}

    @invariant()
    def never_over_total_except_after_shrink(self) -> None:
        st_ = self.lim().statistics()
        assert st_.borrowed_tokens <= st_.total_tokens or st_.borrowed_tokens <= self.prev_borrowed
        self.prev_borrowed = st_.borrowed_tokens

    @invariant()
    def nobody_starves_while_capacity_is_free(self) -> None:
        waiting = self.of_state("waiting")
        if waiting:
            head = min(waiting, key=lambda c: c.id)
            assert head.weight > self.lim().total_tokens - self.lim().borrowed_tokens

    def teardown(self) -> None:
        if self._token is not None and not self._errors:

            async def finish() -> None:
                for c in self.clients:
                    c.scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                st_ = self.lim().statistics()
                assert st_.borrowed_tokens == 0
                assert st_.tasks_waiting == 0
                assert all(c.state in ("done", "cancelled") for c in self.clients)
                assert self._stop is not None
                self._stop.set()

            trio.from_thread.run(finish, trio_token=self._token)
        self._thread.join(timeout=10)
        if self._errors:
            raise self._errors[0]


LimiterMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_capacity_limiter_stateful = LimiterMachine.TestCase
