"""``python -m trioflow``: command-line tools.

``python -m trioflow dump URL [--json] [--group] [--deadlocks]`` fetches a
dump from a program running :func:`trioflow.debug.serve` and prints it.
``URL`` may be ``host:port``, ``http://host:port`` or a full
``http://host:port/debug/...`` address.

``python -m trioflow top URL``: a live console (``trioflow.debug._top``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit

from .debug._top import add_arguments as top_arguments
from .debug._top import main as top_main


def _url(raw: str, *, json: bool, group: bool, deadlocks: bool) -> str:
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    path = parts.path
    if path in ("", "/"):
        path = "/debug/deadlocks" if deadlocks else "/debug/tasks"
    query: dict[str, str] = {}
    if json:
        query["format"] = "json"
    if group:
        query["group"] = "1"
    q = urlencode(query) or parts.query
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{q}" if q else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trioflow")
    sub = parser.add_subparsers(dest="command", required=True)
    dump = sub.add_parser("dump", help="print the task dump of a program running tf.debug.serve()")
    dump.add_argument("url", help="host:port or http://host:port[/debug/...]")
    dump.add_argument("--json", action="store_true", help="the JSON form")
    dump.add_argument("--group", action="store_true", help="fold identical stacks")
    dump.add_argument("--deadlocks", action="store_true", help="deadlocks and leaks instead")
    dump.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    top_arguments(
        sub.add_parser("top", help="a live console over a program running tf.debug.serve()")
    )
    args = parser.parse_args(argv)
    if args.command == "top":
        return top_main(args)
    url = _url(args.url, json=args.json, group=args.group, deadlocks=args.deadlocks)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            body: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        print(f"trioflow dump: {url}: HTTP {exc.code} {exc.reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"trioflow dump: cannot fetch {url}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(body.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
