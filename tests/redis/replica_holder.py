"""A replica process for the kill test: takes ``weight`` tokens of a global limiter, says so, holds them."""

from __future__ import annotations

import sys

import coredis
import trio

from trioflow.redis import open_capacity_limiter


async def main(port: int, name: str, total: int, weight: int, ttl: float) -> None:
    async with (
        coredis.Redis(host="127.0.0.1", port=port) as client,
        open_capacity_limiter(client, total, name=name, ttl=ttl) as limiter,
        limiter.hold(weight),
    ):
        print("holding", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    port, name, total, weight, ttl = sys.argv[1:]
    trio.run(main, int(port), name, int(total), int(weight), float(ttl))
