"""``python -m trioflow``: command-line tools.

``python -m trioflow dump URL [--json] [--group] [--full] [--deadlocks]``
fetches a dump from a program running :func:`trioflow.debug.serve` and
prints it. ``URL`` may be ``host:port``, ``http://host:port`` or a full
``http://host:port/debug/...`` address. Large dumps come folded; ``--full``
asks for every task.

``python -m trioflow run [options] app.py [args...]`` (or ``-m module``)
runs a program unchanged with :func:`trioflow.debug.install` done at the
start of every ``trio.run``: ``kill -USR1 <pid>`` then writes a dump
instead of killing the process. Options: ``--stuck-after S``,
``--slow-step S``, ``--signal NAME|none``, ``--serve PORT``,
``--fold-above N|none``, ``--on-deadlock warn|exit|ignore``.

``python -m trioflow top URL``: a live console over the same endpoint
(``trioflow.debug._top``).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from .debug._top import add_arguments as top_arguments
from .debug._top import main as top_main


def _url(raw: str, *, json: bool, group: bool, deadlocks: bool, full: bool = False) -> str:
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
    if full:
        query["full"] = "1"
    q = urlencode(query) or parts.query
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{q}" if q else "")


# -- dump ----------------------------------------------------------------------


def _add_dump(sub: Any) -> None:
    p = sub.add_parser("dump", help="print the task dump of a program running tf.debug.serve()")
    p.add_argument("url", help="host:port or http://host:port[/debug/...]")
    p.add_argument("--json", action="store_true", help="the JSON form")
    p.add_argument("--group", action="store_true", help="fold identical stacks")
    p.add_argument("--full", action="store_true", help="every task, even in a large dump")
    p.add_argument("--deadlocks", action="store_true", help="deadlocks and leaks instead")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def _dump(args: argparse.Namespace) -> int:
    url = _url(args.url, json=args.json, group=args.group, deadlocks=args.deadlocks, full=args.full)
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


# -- run -----------------------------------------------------------------------


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a program with tf.debug.install() done in every trio.run (no code change)",
    )
    p.add_argument("--signal", help="signal that writes a dump (default USR1; 'none' for none)")
    p.add_argument("--stuck-after", help="seconds: report tasks parked longer")
    p.add_argument("--slow-step", help="seconds: report a loop blocked longer")
    p.add_argument("--serve", help="port: also serve /debug/tasks on localhost")
    p.add_argument("--fold-above", help="fold signal dumps of more tasks (default 100)")
    p.add_argument("--on-deadlock", help="warn (default), exit or ignore")
    p.add_argument("-m", dest="module", help="run a module, as python -m does")
    p.add_argument("target", nargs=argparse.REMAINDER, help="app.py [args...]")


def _run(args: argparse.Namespace) -> int:
    from trioflow.debug import _launch  # pyright: ignore[reportPrivateUsage]

    # TRIOFLOW_DEBUG gives the defaults, the options override them.
    text = os.environ.get(_launch.ENV, "")
    if text.strip().lower() in ("0", "off", "false", "no"):
        text = ""
    given = [
        f"{key}={value}"
        for key, value in (
            ("signal", args.signal),
            ("stuck_after", args.stuck_after),
            ("slow_step", args.slow_step),
            ("serve", args.serve),
            ("fold_above", args.fold_above),
            ("on_deadlock", args.on_deadlock),
        )
        if value is not None
    ]
    try:
        settings = _launch.parse(",".join(p for p in [text.strip(), *given] if p))
    except ValueError as exc:
        print(f"trioflow run: {exc}", file=sys.stderr)
        return 2
    if args.module is None and not args.target:
        print("trioflow run: give a script (app.py) or -m module", file=sys.stderr)
        return 2
    _launch.enable(settings)
    if args.module is not None:
        sys.argv = [args.module, *args.target]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script, *rest = args.target
        sys.argv = [script, *rest]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


# One line per command: (add its parser, run it).
def _add_top(sub: Any) -> None:
    top_arguments(
        sub.add_parser("top", help="a live console over a program running tf.debug.serve()")
    )


_COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "dump": (_add_dump, _dump),
    "run": (_add_run, _run),
    "top": (_add_top, top_main),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trioflow")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in _COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    return _COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
