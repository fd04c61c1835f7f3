from __future__ import annotations

import gc
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("coredis")

import coredis

from .servers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the tests that leave it running."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, pause or restart."""
    server = RedisServer()
    yield server
    server.close()
    # Collect the client's unclosed streams now, inside this test's warning filters.
    gc.collect()


def make_client(server: RedisServer, **kwargs: Any) -> Any:
    return coredis.Redis(
        host="127.0.0.1",
        port=server.port,
        connect_timeout=kwargs.pop("connect_timeout", 1.0),
        **kwargs,
    )


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    async with make_client(redis_server) as c:
        # Open the pool's connection now, before the test's leak-check baseline.
        await c.ping()
        yield c


_names = itertools.count(1)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A limiter name (and so Redis keys) of this test's own on the shared server."""
    return f"{request.node.name}-{next(_names)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # coredis drops anyio memory streams unclosed when a connection attempt
    # fails (Redis down): a ResourceWarning from the client, not from trioflow.
    for item in items:
        if "tests/redis/" in str(item.path).replace("\\", "/"):
            item.add_marker(
                pytest.mark.filterwarnings(
                    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
                )
            )
            item.add_marker(
                pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")
            )
            # The client's connection pool opens connections on demand in the
            # client's own task group, which outlives the test body (the
            # client fixture closes it afterwards): those are not leaks.
            # trioflow's own tasks here run in nurseries the tests close.
            item.add_marker(pytest.mark.trioflow_allow_leaks)
