"""``serve()``: a read-only HTTP endpoint for dumps, like Go's ``net/http/pprof``."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qs, urlsplit

import trio

from .._util import raise_type
from . import _topdata
from ._deadlock import find_deadlocks, find_leaks
from ._dump import dump_tasks

__all__ = ["serve"]

_MAX_REQUEST = 16 * 1024
_READ_TIMEOUT = 10.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(port: object, host: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise_type("port", "an int", port)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port!r}")
    if not isinstance(host, str):
        raise_type("host", "a str", host)


async def serve(
    port: int = 6060,
    *,
    host: str = "127.0.0.1",
    allow_remote: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve task dumps over HTTP until cancelled.

    Run it in a nursery you own (it is an ordinary task, not a hidden one)::

        port = await nursery.start(tf.debug.serve, 6060)

    Endpoints (``GET`` only; nothing can be changed through it):

    * ``/debug/tasks`` — the dump as text; ``?group=1`` folds identical
      stacks; ``?format=json`` gives the JSON schema'd form;
    * ``/debug/deadlocks`` — cycles found by :func:`find_deadlocks` and
      leaks found by :func:`find_leaks`, as text (``?format=json`` too).

    Each request is answered from the loop, so a loop blocked by synchronous
    code cannot answer: use the signal from :func:`install` for that.

    Args:
      port: TCP port (0 picks a free one; :meth:`nursery.start` returns it).
      host: address to bind; a loopback address unless ``allow_remote``.
      allow_remote: permit a non-loopback ``host``. Dumps show code paths,
        task names and argument-derived names: expose them with care.

    Raises:
      ValueError: for a non-loopback ``host`` without ``allow_remote=True``,
        or a port outside 0..65535.
    """
    _check_address(port, host)
    if not allow_remote and not _is_loopback(host):
        raise ValueError(f"host must be a loopback address unless allow_remote=True, got {host!r}")
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(_handle, listeners)


async def _handle(stream: trio.SocketStream) -> None:
    try:
        with trio.move_on_after(_READ_TIMEOUT):
            data = b""
            while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
            status, ctype, body = _respond(data)
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n"
            ).encode()
            await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


def _respond(data: bytes) -> tuple[str, str, bytes]:
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) < 2:
        return "400 Bad Request", "text/plain", b"bad request\n"
    method, target = parts[0], parts[1]
    if method != "GET":
        return "405 Method Not Allowed", "text/plain", b"read-only: GET only\n"
    url = urlsplit(target)
    query = parse_qs(url.query)
    as_json = query.get("format", [""])[0] == "json"
    group = query.get("group", ["0"])[0] not in ("0", "", "false")
    if url.path == "/debug/tasks":
        dump = dump_tasks()
        if as_json:
            return "200 OK", "application/json", dump.to_json().encode()
        return "200 OK", "text/plain; charset=utf-8", dump.format(group=group).encode()
    if url.path == "/debug/deadlocks":
        dump = dump_tasks()
        deadlocks = find_deadlocks(dump)
        leaks = find_leaks(dump)
        if as_json:
            import json

            doc = {
                "schema": "trioflow.deadlocks/1",
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
            return "200 OK", "application/json", json.dumps(doc).encode()
        text = "\n".join(d.format() for d in deadlocks) or "No deadlock found.\n"
        text += "\n" + ("\n".join(lk.format() for lk in leaks) or "No leak found.") + "\n"
        return "200 OK", "text/plain; charset=utf-8", text.encode()
    if url.path == "/debug/top":  # python -m trioflow top (see _topdata)
        try:
            return "200 OK", "application/json", _topdata.respond(query)
        except ValueError as exc:
            return "400 Bad Request", "text/plain", f"{exc}\n".encode()
    return "404 Not Found", "text/plain", b"not found: try /debug/tasks or /debug/deadlocks\n"
