"""``serve()``: a read-only HTTP endpoint for dumps, like Go's ``net/http/pprof``.

Hardened for a live service: a malformed request gets a 400 and nothing
escapes a connection's handler; the ``Host`` header must name a loopback
address unless remote access was allowed (a DNS-rebinding page in a browser
gets a 403, not the dump); one dump is taken at a time and its answer is
reused for ``cache_for`` seconds (ten concurrent requests cost one dump);
connections are capped and idle ones closed; the text and JSON of a large
dump are rendered in a worker thread, so only the walk itself (a few µs per
task) runs on the loop.

While ``/debug/top`` is watched, the reachability analysis behind its
*stuck* lints (:func:`find_stuck`) runs in the background at most every
:data:`STUCK_EVERY` seconds — in a forked child, whatever the number of
tasks, because its cost follows the heap (a fifth of a second for a
service of a few hundred tasks with a big heap) — and frames carry its
last findings; nobody watching, it never runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import trio

from .._util import check_positive_number, raise_type
from . import _topdata
from ._deadlock import find_deadlocks, find_leaks
from ._dump import dump_tasks
from ._fork import can_fork, in_child
from ._model import TaskDump
from ._reach import find_stuck

__all__ = ["serve"]

_MAX_REQUEST = 16 * 1024
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

#: Seconds between two reachability analyses for ``/debug/top``'s *stuck* lints.
STUCK_EVERY = 10.0

_Answer = tuple[str, str, bytes]  # status, content type, body
_Render = Callable[[], tuple[str, bytes]]  # (content type, body), run in a worker thread


class _BadRequest(Exception):
    pass


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """``127.0.0.1:6060`` -> ``127.0.0.1``; ``[::1]:6060`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name)
    if values is None:
        return False
    raw = values[-1].lower()
    if raw in ("", "1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise _BadRequest(f"{name} must be 0 or 1, got {raw!r}")


def _format(query: dict[str, list[str]]) -> str:
    fmt = query.get("format", ["text"])[-1]
    if fmt not in ("text", "json"):
        raise _BadRequest(f"format must be 'text' or 'json', got {fmt!r}")
    return fmt


# -- the pages: one line per route ------------------------------------------------


def _tasks_page(server: _Server, query: dict[str, list[str]]) -> _Render:
    fmt, full, group = _format(query), _flag(query, "full"), _flag(query, "group")
    dump = dump_tasks()
    if fmt == "json":
        return lambda: (_JSON, dump.to_json().encode())
    fold = group or (not full and server.fold_above is not None and len(dump) > server.fold_above)
    return lambda: (_TEXT, _tasks_text(dump, fold, server.fold_above).encode())


def _tasks_text(dump: TaskDump, fold: bool, fold_above: int | None) -> str:
    if not fold:
        return dump.format()
    note = ""
    if fold_above is not None and len(dump) > fold_above:
        note = f"(folded: {len(dump)} tasks > fold_above={fold_above}; ?full=1 for every task)\n"
    return note + dump.format(group=True)


def _deadlocks_page(server: _Server, query: dict[str, list[str]]) -> _Render:
    fmt = _format(query)
    dump = dump_tasks()
    deadlocks = find_deadlocks(dump)
    leaks = find_leaks(dump)
    stuck = find_stuck()
    if fmt == "json":
        doc = {
            "schema": "trioflow.deadlocks/1",
            "stuck": [
                {
                    "kind": st.kind,
                    "tasks": [t.id for t in st.tasks],
                    "reasons": st.reasons,
                    "report": st.format(),
                }
                for st in stuck
            ],
            "deadlocks": [
                {
                    "tasks": [t.id for t in d.tasks],
                    "resources": [None if r is None else r.describe() for r in d.resources],
                    "report": d.format(),
                }
                for d in deadlocks
            ],
            "leaks": [
                {
                    "kind": lk.kind,
                    "task": None if lk.task is None else lk.task.id,
                    "resource": lk.resource,
                    "detail": lk.detail,
                }
                for lk in leaks
            ],
        }
        return lambda: (_JSON, json.dumps(doc).encode())
    text = "\n".join(d.format() for d in deadlocks) or "No deadlock found.\n"
    text += "\n" + ("\n".join(st.format() for st in stuck) or "No stuck task found.\n")
    text += "\n" + ("\n".join(lk.format() for lk in leaks) or "No leak found.") + "\n"
    return lambda: (_TEXT, text.encode())


_ROUTES: dict[str, Callable[[_Server, dict[str, list[str]]], _Render]] = {
    "/debug/tasks": _tasks_page,
    "/debug/deadlocks": _deadlocks_page,
}


# -- the server --------------------------------------------------------------------


class _Server:
    def __init__(
        self,
        allow_remote: bool,
        max_connections: int,
        idle_timeout: float,
        cache_for: float,
        fold_above: int | None,
        fork_above: int | None,
    ) -> None:
        self.fork_above = fork_above
        self.allow_remote = allow_remote
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.cache_for = cache_for
        self.fold_above = fold_above
        self.connections = 0
        #: one dump at a time; the others wait and take the cached answer
        self._lock = trio.Lock()
        self._render = trio.CapacityLimiter(1)
        self._cache: dict[tuple[str, str], tuple[float, _Answer]] = {}
        #: for tests and the curious
        self.dumps_taken = 0
        #: serve()'s own nursery: the background reachability analysis runs there
        self.nursery: trio.Nursery | None = None
        #: the last analysis' findings, when it ended, whether one is running
        self.stuck: list[_topdata.Lint] = []
        self.stuck_at: float | None = None
        self.stuck_started = -math.inf
        self.stuck_running = False
        self.stuck_runs = 0

    def forks(self, *, analysis: bool) -> bool:
        """Answer in a forked child? Always for the analyses (their cost follows
        the heap, not the task count: a few hundred tasks can take 300 ms in the
        loop); for a dump, above ``fork_above`` live tasks. Never with
        ``fork_above=None`` or where forking is unavailable."""
        if self.fork_above is None or not can_fork():
            return False
        return analysis or trio.lowlevel.current_statistics().tasks_living > self.fork_above

    def watch_stuck(self) -> None:
        """Start a reachability analysis in the background if the last began ``STUCK_EVERY`` s ago."""
        now = time.monotonic()
        if self.nursery is None or self.stuck_running or now - self.stuck_started < STUCK_EVERY:
            return  # one at a time: a walk longer than STUCK_EVERY is not doubled
        self.stuck_started = now
        self.stuck_running = True
        self.nursery.start_soon(self._find_stuck, name="trioflow.debug.serve: find_stuck")

    async def _find_stuck(self) -> None:
        # Nothing escapes: a failure becomes a lint, never a crash of the service.
        try:
            if self.forks(analysis=True):
                raw = await in_child(
                    lambda: json.dumps(_topdata.stuck_lints(find_stuck())).encode()
                )
                lints: list[_topdata.Lint] = json.loads(raw)
            else:
                await trio.lowlevel.checkpoint()  # so a cancelled serve() never starts the walk
                lints = _topdata.stuck_lints(find_stuck())
        except Exception as exc:
            lints = [
                {
                    "kind": "error",
                    "subject": "find_stuck",
                    "text": f"the reachability analysis failed: {exc!r}",
                    "task": None,
                }
            ]
        finally:
            self.stuck_running = False
        self.stuck = lints
        self.stuck_at = time.monotonic()
        self.stuck_runs += 1

    async def handle(self, stream: trio.SocketStream) -> None:
        # Nothing escapes: an exception here would end serve_listeners and
        # with it the application that runs the endpoint.
        try:
            if self.connections >= self.max_connections:
                with trio.move_on_after(1.0):
                    await self._send(stream, ("503 Service Unavailable", _TEXT, b"busy\n"))
                    # Read what the client sent, so closing does not reset the
                    # connection before it has read the answer.
                    await stream.send_eof()
                    while await stream.receive_some(4096):
                        pass
                return
            self.connections += 1
            try:
                await self._serve_one(stream)
            finally:
                self.connections -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await stream.aclose()

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        data = b""
        with trio.move_on_after(self.idle_timeout):
            while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
        if b"\r\n\r\n" not in data:
            if data:  # a partial request: say so; an idle connection is simply closed
                with trio.move_on_after(1.0):
                    await self._send(stream, ("400 Bad Request", _TEXT, b"bad request\n"))
            return
        try:
            answer = await self.respond(data)
        except Exception as exc:  # a bug of ours: a 500, never a crash of the application
            answer = ("500 Internal Server Error", _TEXT, f"internal error: {exc!r}\n".encode())
        # A client that stops reading must not hold the connection for ever.
        with trio.move_on_after(max(self.idle_timeout, 30.0)):
            await self._send(stream, answer)

    async def _send(self, stream: trio.SocketStream, answer: _Answer) -> None:
        status, ctype, body = answer
        head = (
            f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            "Cache-Control: no-store\r\n\r\n"
        ).encode()
        await stream.send_all(head + body)

    async def respond(self, data: bytes) -> _Answer:
        try:
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                raise _BadRequest("malformed request line")
            method, target = parts[0], parts[1]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip():
                    raise _BadRequest("malformed header line")
                headers[name.lower()] = value.strip()
            if not target.startswith("/") or target.startswith("//"):
                raise _BadRequest("the target must be a path")
            url = urlsplit(target)
            query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
        except (_BadRequest, ValueError, UnicodeError) as exc:
            return "400 Bad Request", _TEXT, f"bad request: {exc}\n".encode()
        if (
            not self.allow_remote
            and "host" in headers
            and not _is_loopback(_host_name(headers["host"]))
        ):
            return (
                "403 Forbidden",
                _TEXT,
                b"forbidden: the Host header is not a loopback name "
                b"(serve(allow_remote=True) accepts any)\n",
            )
        if method != "GET":
            return "405 Method Not Allowed", _TEXT, b"read-only: GET only\n"
        if url.path == "/debug/top":
            # python -m trioflow top: small delta frames of its own (_topdata),
            # cheap enough to skip the dump lock, the cache and the fork; the
            # stuck lints come from the last background analysis.
            # the first request seeds the accounting in chunks, never in one pause
            await _topdata.start_accounting_async()
            try:
                body = _topdata.respond(
                    query,
                    self.stuck,
                    None if self.stuck_at is None else time.monotonic() - self.stuck_at,
                )
            except ValueError as exc:
                return "400 Bad Request", _TEXT, f"bad request: {exc}\n".encode()
            if "task" not in query and "group" not in query:
                self.watch_stuck()
            return "200 OK", _JSON, body
        page = _ROUTES.get(url.path)
        if page is None:
            return (
                "404 Not Found",
                _TEXT,
                b"not found: try /debug/tasks, /debug/deadlocks or /debug/top\n",
            )
        try:  # every page takes the same parameters: check them before any work
            _format(query)
            _flag(query, "full")
            _flag(query, "group")
        except _BadRequest as exc:
            return "400 Bad Request", _TEXT, f"bad request: {exc}\n".encode()
        key = (url.path, json.dumps(sorted((k, v[-1]) for k, v in query.items())))
        async with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < self.cache_for:
                return cached[1]
            self.dumps_taken += 1
            if self.forks(analysis=url.path == "/debug/deadlocks"):
                # A big program, or the analyses: the whole look (walk, analysis,
                # rendering) in a forked child; the loop pauses only for the fork.
                def everything() -> bytes:
                    ctype, body = page(self, query)()
                    return ctype.encode() + b"\n" + body

                raw = await in_child(everything)
                ctype_b, _, body = raw.partition(b"\n")
                ctype = ctype_b.decode()
            else:
                render = page(self, query)
                # Rendering (~60 MB of JSON at 100k tasks) runs in a thread.
                ctype, body = await trio.to_thread.run_sync(render, limiter=self._render)
            answer: _Answer = ("200 OK", ctype, body)
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.cache_for}
            self._cache[key] = (now, answer)
            return answer


def _check_optional_int(value: object, param: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise_type(param, "an int or None", value)


def _check(
    port: object,
    host: object,
    allow_remote: object,
    max_connections: object,
    idle_timeout: object,
    cache_for: object,
    fold_above: object,
) -> tuple[float, float]:
    if isinstance(port, bool) or not isinstance(port, int):
        raise_type("port", "an int", port)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port!r}")
    if not isinstance(host, str):
        raise_type("host", "a str", host)
    if not isinstance(allow_remote, bool):
        raise_type("allow_remote", "a bool", allow_remote)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise_type("max_connections", "an int", max_connections)
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
    idle = check_positive_number(idle_timeout, "idle_timeout")
    cache = check_positive_number(cache_for, "cache_for", allow_zero=True)
    _check_optional_int(fold_above, "fold_above")
    if not allow_remote and not _is_loopback(host):
        raise ValueError(f"host must be a loopback address unless allow_remote=True, got {host!r}")
    return idle, cache


async def serve(
    port: int = 6060,
    *,
    host: str = "127.0.0.1",
    allow_remote: bool = False,
    max_connections: int = 16,
    idle_timeout: float = 5.0,
    cache_for: float = 1.0,
    fold_above: int | None = 100,
    fork_above: int | None = 2000,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve task dumps over HTTP until cancelled.

    Run it in a nursery you own (it is an ordinary task, not a hidden one)::

        port = await nursery.start(tf.debug.serve, 6060)

    Endpoints (``GET`` only; nothing can be changed through it):

    * ``/debug/tasks`` — the dump as text, folded into groups of tasks
      doing the same thing when there are more than ``fold_above`` tasks
      (``?full=1`` for every task, ``?group=1`` to fold a small one);
      ``?format=json`` gives the JSON schema'd form (always every task);
    * ``/debug/deadlocks`` — cycles found by :func:`find_deadlocks`, tasks
      nothing can wake found by :func:`find_stuck` and leaks found by
      :func:`find_leaks`, as text (``?format=json`` too);
    * ``/debug/top`` — what ``python -m trioflow top URL`` shows, as small
      JSON frames that carry only what changed (``?since=V``); see
      ``docs/debugging.md``. While it is asked for, :func:`find_stuck`
      runs in a background task of this one at most every ``STUCK_EVERY``
      (10) seconds — in a forked child (in-process if ``fork_above`` is
      ``None``) — for its *stuck* lints.

    Each dump is taken on the loop (a few µs per task) and rendered in a
    worker thread; one dump is taken at a time, and an identical request
    within ``cache_for`` seconds gets the same answer. A loop blocked by
    synchronous code cannot answer: use the signal from :func:`install`.
    Malformed requests get a 400; an exception inside the endpoint gives a
    500 and never reaches the application.

    Args:
      port: TCP port (0 picks a free one; :meth:`nursery.start` returns it).
      host: address to bind; a loopback address unless ``allow_remote``.
      allow_remote: permit a non-loopback ``host`` and any ``Host`` header.
        Without it, requests whose ``Host`` header is not a loopback name
        get a 403 (a DNS-rebinding page in a browser cannot read the dump).
        Dumps show code paths, task names and argument-derived names:
        expose them with care.
      max_connections: connections served at once; more get a 503.
      idle_timeout: seconds a connection may take to send its request
        before it is closed.
      cache_for: seconds an answer is reused for the same request (``0``:
        never; still one dump at a time).
      fold_above: text dumps of more tasks than this are folded; ``None``
        never folds.
      fork_above: with more live tasks than this, a request is answered by
        a forked copy of the process (POSIX), so the loop pauses only for
        the fork rather than for the walk and the rendering;
        ``/debug/deadlocks`` and ``/debug/top``'s stuck analysis, whose cost
        follows the heap rather than the task count, always fork; ``None``
        never forks (then they run in the loop too).

    Raises:
      ValueError: for a non-loopback ``host`` without ``allow_remote=True``,
        a port outside 0..65535, a bound out of range.
      TypeError: for a parameter of the wrong type (``allow_remote`` must be
        a real ``bool``: the string ``"false"`` is refused, not truthy).
    """
    idle, cache = _check(
        port, host, allow_remote, max_connections, idle_timeout, cache_for, fold_above
    )
    _check_optional_int(fork_above, "fork_above")
    server = _Server(allow_remote, max_connections, idle, cache, fold_above, fork_above)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        server.nursery = nursery
        task_status.started(bound)
        await trio.serve_listeners(server.handle, listeners)
