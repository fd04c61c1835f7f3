"""A program that deadlocks on purpose, and the report that explains it.

Two services share two connection pools, ``orders`` and ``payments``. A
refund takes ``payments`` then ``orders``; a checkout takes ``orders`` then
``payments``. Run one of each at the same moment and each holds what the
other needs: both wait forever. A third task waits on a trio ``Lock`` that
is part of the same kind of inversion.

The program notices that no refund finished within a second, asks
``tf.debug.find_deadlocks()`` what is going on, prints the jstack-style
report and a grouped task dump, then cancels everything and exits.

    python examples/deadlock.py
"""

from __future__ import annotations

import trio

import trioflow as tf

orders = tf.CapacityLimiter(1, name="orders")
payments = tf.CapacityLimiter(1, name="payments")
audit_lock = trio.Lock()
ledger_lock = trio.Lock()


async def checkout(both_in: trio.Event) -> None:
    async with orders:
        await both_in.wait()  # the other one now holds payments
        async with payments:
            print("checkout done")


async def refund(both_in: trio.Event) -> None:
    async with payments:
        both_in.set()
        async with orders:
            print("refund done")


async def audit(ready: trio.Event) -> None:
    async with audit_lock:
        await ready.wait()
        async with ledger_lock:
            pass


async def ledger(ready: trio.Event) -> None:
    async with ledger_lock:
        ready.set()
        async with audit_lock:
            pass


async def main() -> None:
    tf.debug.install()  # spawn records ("created by"), SIGUSR1 dumps
    both_in = trio.Event()
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(checkout, both_in, name="checkout-1")
        nursery.start_soon(refund, both_in, name="refund-1")
        nursery.start_soon(audit, ready, name="audit")
        nursery.start_soon(ledger, ready, name="ledger")
        await trio.sleep(1)  # they should all have finished by now
        deadlocks = tf.debug.find_deadlocks()
        print(f"{len(deadlocks)} deadlock(s) found\n")
        for deadlock in deadlocks:
            print(deadlock)
        print(tf.debug.dump_tasks().format(group=True))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
