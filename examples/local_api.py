"""A small, real HTTP API on 127.0.0.1 for the examples to call.

It is a trio server on a real socket speaking HTTP/1.1 through ``h11``
(keep-alive included), with a downstream's behaviour you can dial in:

* ``capacity`` requests are worked on at once; up to ``max_queue`` more wait
  in line; beyond that it answers ``503`` at once (overload);
* each request takes a lognormal time (``latency`` mean, ``sigma``);
* ``fail_rate`` of requests answer ``500`` (a bug, not overload);
* ``reject(body)`` may refuse a webhook with ``422`` (a client error: the
  sender should not retry it);
* ``degrade(at, capacity=..., latency=...)`` changes the above mid-run, so an
  adaptive limiter in front of it has something to adapt to.

Endpoints: ``GET /enrich?id=N`` (JSON), ``POST /webhook`` (JSON body echoed
with a receipt; the ``Idempotency-Key`` header of every accepted call is
counted in ``stats.webhooks``), ``GET /health``. Start it inside your own nursery::

    api = LocalAPI(capacity=20, latency=0.02)
    port = await nursery.start(api.serve)

It stops when that nursery is cancelled; nothing outlives it.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

__all__ = ["APIStats", "LocalAPI"]


@attrs.define
class APIStats:
    """What the server saw (read it from the example to print a summary)."""

    served: int = 0
    overloaded: int = 0
    failed: int = 0
    in_progress: int = 0
    peak_in_progress: int = 0
    webhooks: Counter[str] = attrs.field(factory=Counter[str])
    """``POST /webhook`` calls answered 200, by ``Idempotency-Key`` header
    (a key counted twice is a delivery the sender repeated)."""


@attrs.define(eq=False)
class LocalAPI:
    capacity: int = 20
    latency: float = 0.02
    sigma: float = 0.5
    max_queue: int = 200
    fail_rate: float = 0.0
    seed: int | None = None
    reject: Callable[[Any], str | None] | None = None
    """For ``POST /webhook``: given the JSON body, a reason to refuse it (``422``), or ``None``."""
    stats: APIStats = attrs.field(factory=APIStats)
    _slots: trio.Semaphore | None = attrs.field(default=None, init=False)
    _queued: int = attrs.field(default=0, init=False)
    _rng: random.Random = attrs.field(init=False)
    _changes: list[tuple[float, dict[str, Any]]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def degrade(self, at: float, **changes: Any) -> None:
        """At ``at`` seconds after start, set ``capacity``/``latency``/``fail_rate``/...."""
        self._changes.append((at, changes))

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port); report the port through ``task_status``."""
        self._slots = trio.Semaphore(self.capacity)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_changes)
            task_status.started(port)
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _apply_changes(self) -> None:
        start = trio.current_time()
        for at, changes in sorted(self._changes, key=lambda c: c[0]):
            await trio.sleep_until(start + at)
            for key, value in changes.items():
                if key == "capacity":
                    self._resize(int(value))
                else:
                    setattr(self, key, value)

    def _resize(self, capacity: int) -> None:
        # A semaphore cannot shrink in place; swap in a new one. Requests
        # already working finish under the old one.
        self.capacity = capacity
        self._slots = trio.Semaphore(capacity)

    def _service_time(self) -> float:
        mu = math.log(self.latency) - self.sigma**2 / 2
        return self._rng.lognormvariate(mu, self.sigma)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                status, payload = await self._handle(request, body)
                await self._send(conn, stream, status, payload)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and request is None:
                    return None, b""
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _send(
        self, conn: h11.Connection, stream: trio.SocketStream, status: int, payload: object
    ) -> None:
        data = json.dumps(payload).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out += conn.send(h11.Data(data=data))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    async def _handle(self, request: h11.Request, body: bytes) -> tuple[int, object]:
        url = urlsplit(request.target.decode())
        if url.path == "/health":
            return 200, {"ok": True}
        if url.path == "/enrich" and request.method == b"GET":
            query = parse_qs(url.query)
            ident = query.get("id", ["?"])[0]
            return await self._work(lambda: self._enrich(ident))
        if url.path == "/webhook" and request.method == b"POST":
            try:
                doc = json.loads(body or b"null")
            except ValueError:
                return 400, {"error": "body is not JSON"}
            reason = self.reject(doc) if self.reject is not None else None
            if reason is not None:
                return 422, {"error": reason}
            key = dict(request.headers).get(b"idempotency-key", b"").decode()
            return await self._work(lambda: self._receive(doc, key))
        return 404, {"error": f"no route {url.path}"}

    def _receive(self, doc: object, key: str) -> dict[str, Any]:
        self.stats.webhooks[key] += 1
        return {"received": doc, "receipt": self._rng.getrandbits(32)}

    def _enrich(self, ident: str) -> dict[str, Any]:
        rng = random.Random(ident)  # the same id always enriches the same way
        return {
            "id": ident,
            "region": rng.choice(["eu", "us", "ap"]),
            "score": round(rng.random(), 4),
        }

    async def _work(self, make: Callable[[], object]) -> tuple[int, object]:
        if self._queued >= self.max_queue:
            self.stats.overloaded += 1
            return 503, {"error": "overloaded"}
        slots = self._slots
        assert slots is not None
        self._queued += 1
        admitted = False
        try:
            async with slots:
                admitted = True
                self._queued -= 1
                self.stats.in_progress += 1
                self.stats.peak_in_progress = max(
                    self.stats.peak_in_progress, self.stats.in_progress
                )
                try:
                    await trio.sleep(self._service_time())
                finally:
                    self.stats.in_progress -= 1
        finally:
            if not admitted:
                self._queued -= 1
        if self._rng.random() < self.fail_rate:
            self.stats.failed += 1
            return 500, {"error": "internal error"}
        self.stats.served += 1
        return 200, make()
