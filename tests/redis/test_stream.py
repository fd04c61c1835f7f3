"""StreamSource against a real redis-server: back-pressure, settle → ack / dead letter /
pending, claiming a dead consumer's entries, restart, Redis paused, a real pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import trioflow as tf
from trioflow.redis import RedisUnavailableError, StreamEntry, open_stream_source

from .conftest import make_client
from .servers import RedisServer


async def _add(client: Any, stream: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append((await client.xadd(stream, {"n": str(i)})).decode())
    return ids


async def _pending(client: Any, stream: str, group: str) -> int:
    summary = await client.xpending(stream, group)
    return int(summary.pending)


async def _settled(source: Any) -> None:
    with trio.fail_after(10):
        while source.statistics().settling:
            await trio.sleep(0.002)


async def test_reads_only_as_fast_as_iterated(client: Any, name: str) -> None:
    await _add(client, name, 100)
    async with open_stream_source(client, name, "g", consumer="a", count=5) as source:
        it = aiter(source)
        first = [await anext(it) for _ in range(3)]
        assert [e.fields[b"n"] for e in first] == [b"0", b"1", b"2"]
        # One read of count=5 so far: the other 95 are still in the stream, not taken.
        assert await _pending(client, name, "g") == 5
        assert source.statistics().in_flight == 3


async def test_settle_acks_dead_letters_and_leaves_unfinished_pending(
    client: Any, name: str
) -> None:
    await _add(client, name, 5)
    async with open_stream_source(client, name, "g", consumer="a", count=5) as source:
        it = aiter(source)
        e = [await anext(it) for _ in range(5)]
        source.settle(e[0], "delivered", None)
        source.settle(e[1], "FILTERED", None)
        source.settle(e[2], "skipped", None)
        source.settle(e[3], "dead_lettered", ValueError("bad payload"))
        source.settle(e[4], "unfinished", None)
        source.settle(e[0], "dead_lettered", None)  # a second fate does nothing
        await _settled(source)
        st = source.statistics()
        assert (st.acked, st.dead_lettered, st.left_pending, st.in_flight) == (3, 1, 1, 0)
        pending = await client.xpending(name, "g", start="-", end="+", count=10)
        assert [p.identifier.decode() for p in pending] == [e[4].id]
        (dead,) = await client.xrange(source.dead_letter_stream)
        assert dead.field_values[b"trioflow.source_id"].decode() == e[3].id
        assert dead.field_values[b"trioflow.error.type"] == b"ValueError"
        assert dead.field_values[b"trioflow.error.message"] == b"bad payload"
        assert dead.field_values[b"n"] == b"3"
        with pytest.raises(ValueError, match="fate must be one of"):
            source.settle(e[4], "lost", None)
        with pytest.raises(TypeError, match="item must be a StreamEntry"):
            source.settle("x", "delivered", None)  # type: ignore[arg-type]


async def test_fate_objects_with_a_name(client: Any, name: str) -> None:
    class Fate:
        def __init__(self, name: str) -> None:
            self.name = name

    await _add(client, name, 1)
    async with open_stream_source(client, name, "g", consumer="a") as source:
        entry = await anext(aiter(source))
        source.settle(entry, Fate("DELIVERED"), None)
    # Leaving flushed the acknowledgement.
    assert await _pending(client, name, "g") == 0
    with pytest.raises(RuntimeError, match="is closed"):
        await anext(aiter(source))


async def test_dead_consumer_entries_are_claimed(redis_server: RedisServer, name: str) -> None:
    async with make_client(redis_server) as ca, make_client(redis_server) as cb:
        await _add(ca, name, 6)
        async with open_stream_source(ca, name, "g", consumer="dies", count=4) as a:
            it = aiter(a)
            taken = [await anext(it) for _ in range(2)]
            a.settle(taken[0], "delivered", None)
        # "dies" stopped with one entry unfinished and two read but never handed out.
        assert await _pending(ca, name, "g") == 3
        got: list[StreamEntry] = []
        async with open_stream_source(
            cb, name, "g", consumer="survivor", count=10, claim_idle=0.2, block=0.05
        ) as b:
            with trio.fail_after(10):
                async for entry in b:
                    got.append(entry)
                    b.settle(entry, "delivered", None)
                    if len(got) == 5:
                        break
            assert b.statistics().claimed >= 1
        numbers = sorted(int(e.fields[b"n"]) for e in got)
        assert numbers == [1, 2, 3, 4, 5]
        assert await _pending(ca, name, "g") == 0


async def test_restart_with_the_same_name_rereads_its_pending(client: Any, name: str) -> None:
    await _add(client, name, 3)
    async with open_stream_source(client, name, "g", consumer="a", count=3) as source:
        entry = await anext(aiter(source))
        source.settle(entry, "unfinished", None)
    async with open_stream_source(client, name, "g", consumer="a", count=3) as source:
        it = aiter(source)
        again = [await anext(it) for _ in range(3)]
        assert [e.fields[b"n"] for e in again] == [b"0", b"1", b"2"]
        assert again[0].deliveries == 2
        for e in again:
            source.settle(e, "delivered", None)
    assert await _pending(client, name, "g") == 0


def _fail_first_counts(source: Any, *failures: Callable[[], Awaitable[None]]) -> None:
    """Make the source's next delivery-count round trips run ``failures`` instead, in turn."""
    real = source._deliveries_script
    pending = list(failures)

    async def counts(*args: Any, **kwargs: Any) -> Any:
        if pending:
            await pending.pop(0)()
        return await real(*args, **kwargs)

    setattr(source, "_deliveries_script", counts)  # noqa: B010 (a Final attribute)


async def test_restart_reread_cut_at_the_delivery_counts_rereads_at_once(
    client: Any, name: str
) -> None:
    """A failed or cancelled count round trip on the restart path loses nothing and waits
    for no claim: the history cursor moves only once the entries are in the buffer."""
    await _add(client, name, 3)
    async with open_stream_source(client, name, "g", consumer="a", count=3) as source:
        await anext(aiter(source))  # read three, hand out one, settle none
    assert await _pending(client, name, "g") == 3

    scope = trio.CancelScope()

    async def cancel() -> None:
        scope.cancel()
        await trio.lowlevel.checkpoint()

    async def refuse() -> None:
        raise ConnectionError("connection reset by the injected fault")

    async with open_stream_source(
        client, name, "g", consumer="a", count=3, claim_idle=3600, block=0.05
    ) as source:
        _fail_first_counts(source, cancel, refuse)
        it = aiter(source)
        with scope:
            await anext(it)
        assert scope.cancelled_caught
        with trio.fail_after(10), pytest.raises(RedisUnavailableError, match="delivery counts"):
            await anext(it)
        # Not after claim_idle (an hour): at once, from this consumer's own history.
        with trio.fail_after(10):
            again = [await anext(it) for _ in range(3)]
        assert [e.fields[b"n"] for e in again] == [b"0", b"1", b"2"]
        # Redis counted each history read that reached it: the first read, the
        # cut one, the refused one, and this one.
        assert [e.deliveries for e in again] == [4, 4, 4]
        st = source.statistics()
        assert (st.read, st.claimed, st.unavailable) == (3, 0, 1)
        for e in again:
            source.settle(e, "delivered", None)
        await _settled(source)
    assert await _pending(client, name, "g") == 0


async def test_claim_cut_at_the_delivery_counts_is_claimed_again(
    redis_server: RedisServer, name: str
) -> None:
    """A cancelled count round trip after XAUTOCLAIM: the claimed entries stay pending
    here with their idle time reset, and a later pass claims them again: none lost."""
    async with make_client(redis_server) as ca, make_client(redis_server) as cb:
        await _add(ca, name, 4)
        async with open_stream_source(ca, name, "g", consumer="dies", count=4) as a:
            await anext(aiter(a))
        assert await _pending(ca, name, "g") == 4
        scope = trio.CancelScope()

        async def cancel() -> None:
            scope.cancel()
            await trio.lowlevel.checkpoint()

        got: list[StreamEntry] = []
        async with open_stream_source(
            cb, name, "g", consumer="survivor", count=10, claim_idle=0.2, block=0.05
        ) as b:
            _fail_first_counts(b, cancel)
            it = aiter(b)
            with scope:
                await anext(it)
            assert scope.cancelled_caught
            with trio.fail_after(10):
                while len(got) < 4:
                    entry = await anext(it)
                    got.append(entry)
                    b.settle(entry, "delivered", None)
            await _settled(b)
            assert b.statistics().claimed == 4
        assert sorted(int(e.fields[b"n"]) for e in got) == [0, 1, 2, 3]
        assert await _pending(ca, name, "g") == 0


async def test_a_poison_entry_is_dead_lettered_after_max_deliveries(client: Any, name: str) -> None:
    """An entry that every consumer takes and never settles (it kills them) stops going round."""
    (poison,) = await _add(client, name, 1)
    for delivery in (1, 2, 3):
        # A consumer that dies with the entry in hand: it stays pending.
        async with open_stream_source(
            client, name, "g", consumer="a", max_deliveries=3, block=0.05
        ) as source:
            entry = await anext(aiter(source))
            assert (entry.id, entry.deliveries) == (poison, delivery)
    (healthy,) = await _add(client, name, 1)
    async with open_stream_source(
        client, name, "g", consumer="a", max_deliveries=3, block=0.05
    ) as source:
        with trio.fail_after(10):
            entry = await anext(aiter(source))
        # The fourth delivery would exceed 3: the source dead-letters it and goes on.
        assert (entry.id, entry.deliveries) == (healthy, 1)
        source.settle(entry, "delivered", None)
        await _settled(source)
        st = source.statistics()
        assert (st.read, st.exhausted, st.dead_lettered, st.acked) == (1, 1, 0, 1)
    assert await _pending(client, name, "g") == 0
    (dead,) = await client.xrange(f"{name}:dead")
    assert dead.field_values[b"trioflow.source_id"].decode() == poison
    assert dead.field_values[b"trioflow.error.type"] == b"MaxDeliveriesExceeded"
    assert b"delivered 4 times" in dead.field_values[b"trioflow.error.message"]
    assert dead.field_values[b"n"] == b"0"


async def test_a_claimed_entry_carries_its_delivery_count_and_none_means_no_bound(
    redis_server: RedisServer, name: str
) -> None:
    async with make_client(redis_server) as ca, make_client(redis_server) as cb:
        (only,) = await _add(ca, name, 1)
        for consumer in ("a", "b", "a", "b", "a"):
            async with open_stream_source(
                ca if consumer == "a" else cb,
                name,
                "g",
                consumer=consumer,
                claim_idle=0.01,
                max_deliveries=None,
                block=0.05,
            ) as source:
                with trio.fail_after(10):
                    entry = await anext(aiter(source))
                assert entry.id == only
                last = entry.deliveries
        # Read once, then re-read or claimed four times: Redis counted each.
        assert last == 5
        assert await _pending(ca, name, "g") == 1


async def test_redis_paused_then_back_acks_land_late_never_early(
    own_redis: RedisServer, name: str
) -> None:
    async with make_client(own_redis) as c:
        await _add(c, name, 4)
        async with open_stream_source(
            c, name, "g", consumer="a", count=4, timeout=0.3, block=0.1
        ) as source:
            it = aiter(source)
            e = [await anext(it) for _ in range(4)]
            own_redis.pause()
            try:
                source.settle(e[0], "delivered", None)
                source.settle(e[1], "unfinished", None)
                with trio.fail_after(10), pytest.raises(RedisUnavailableError):
                    await anext(it)
                await trio.sleep(0.5)
                assert source.statistics().settling == 1
                assert source.statistics().acked == 0
            finally:
                own_redis.resume()
            await _settled(source)
            assert source.statistics().acked == 1
        pending = await c.xpending(name, "g", start="-", end="+", count=10)
        # e[1] (unfinished) and e[2], e[3] (never settled) are pending; e[0] acknowledged.
        assert sorted(p.identifier.decode() for p in pending) == sorted(x.id for x in e[1:])


async def test_bad_arguments(client: Any, name: str) -> None:
    with pytest.raises(TypeError, match="stream must be a non-empty str"):
        async with open_stream_source(client, "", "g"):
            pass
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        async with open_stream_source(client, name, "g", count=0):
            pass
    with pytest.raises(ValueError, match="claim_idle must be a finite number"):
        async with open_stream_source(client, name, "g", claim_idle=-1):
            pass
    with pytest.raises(ValueError, match="max_deliveries must be >= 1, got 0"):
        async with open_stream_source(client, name, "g", max_deliveries=0):
            pass
    with pytest.raises(TypeError, match="max_deliveries must be an int, got '3'"):
        async with open_stream_source(client, name, "g", max_deliveries="3"):  # type: ignore[arg-type]
            pass


async def test_feeds_a_real_pipeline(client: Any, name: str) -> None:
    # The pipeline settles every entry it read by itself (tf.SettlingSource):
    # delivered and filtered entries are acknowledged, dead letters copied to
    # the dead-letter stream, and what the stop left unfinished stays pending.
    await _add(client, name, 40)
    seen: list[int] = []
    async with open_stream_source(client, name, "g", consumer="a", count=4, block=0.05) as source:
        assert isinstance(source, tf.SettlingSource)

        async def work(entry: StreamEntry) -> StreamEntry:
            n = int(entry.fields[b"n"])
            seen.append(n)
            if n % 7 == 3:
                raise ValueError(f"bad entry {n}")
            return entry

        pipe = (
            tf.Pipeline(name)
            .filter(lambda e: int(e.fields[b"n"]) % 5 != 0)
            .map(work, workers=3, on_error="dead_letter")
        )
        async with pipe.open(source) as run:
            delivered = 0
            async for _ in run.outputs:
                delivered += 1
                if delivered == 20:
                    await run.stop(grace=5)
        await _settled(source)
        stats = source.statistics()
    report = run.report
    assert report.conserved
    assert report.delivered >= 20
    assert stats.read == report.source_items
    assert stats.acked == report.delivered + report.filtered + report.skipped
    assert stats.dead_lettered == report.dead_lettered > 0
    assert stats.left_pending == report.unfinished
    assert len(await client.xrange(source.dead_letter_stream)) == report.dead_lettered
    # Still pending: the unfinished ones, and what the last read fetched
    # ahead (at most count=4) that the stop kept from the pipeline.
    pending = await _pending(client, name, "g")
    assert report.unfinished <= pending <= report.unfinished + 4


async def test_acknowledgements_settled_one_at_a_time_go_in_batches(client: Any, name: str) -> None:
    """Entries settled one by one, as a pipeline's workers settle them, share an XACK."""
    await _add(client, name, 64)
    calls: list[int] = []
    real = client.xack

    async def counted_xack(stream: str, group: str, ids: list[str]) -> Any:
        calls.append(len(ids))
        return await real(stream, group, ids)

    client.xack = counted_xack
    try:
        async with open_stream_source(client, name, "g", consumer="a", count=64) as source:
            it = aiter(source)
            for _ in range(64):
                entry = await anext(it)
                source.settle(entry, "delivered", None)
                await trio.lowlevel.checkpoint()  # the acknowledging task may run here
            await _settled(source)
            assert source.statistics().acked == 64
    finally:
        del client.xack
    assert sum(calls) == 64
    # one read's worth in one call; a few if the machine stalls us past a linger
    # (unbatched, this made about 14)
    assert len(calls) <= 4, calls
    assert await _pending(client, name, "g") == 0
