"""A checker for Chrome trace-event JSON, as the trace viewers import it.

Follows the Trace Event Format document (the ``ph`` types, the fields each
one needs, flow binding) and the rules Perfetto's JSON importer and
catapult's (``chrome://tracing``) apply on import:

* the array form (``[...]``; the closing bracket may be missing) or the
  object form (``{"traceEvents": [...]}``);
* every event: ``ph``, ``pid``, ``tid`` (ints), ``name`` (str), ``ts``
  (µs, a number >= 0; not for ``M``);
* ``X``: ``dur`` >= 0; the complete slices of one thread (pid, tid) nest
  strictly — a slice that starts inside another and ends after it is
  dropped by the importers ("misplaced end"), so it is an error here;
* ``B``/``E``: matched per thread, in time order;
* ``i``/``I``: scope ``s`` in ``g``, ``p``, ``t``;
* ``s``/``t``/``f``: ``id`` and ``cat``; one ``s`` and one ``f`` per
  (cat, name, id), ``s`` not after ``f``; ``s`` and ``t`` bind to the slice
  enclosing their timestamp on their thread, ``f`` with ``"bp": "e"`` too
  (without it, to the next slice to begin there) — an unbound end makes the
  importers drop the arrow, so it is an error here;
* ``C``: ``args`` a non-empty object of numbers;
* ``M``: ``process_name`` / ``thread_name`` with ``args.name`` a str,
  ``process_sort_index`` / ``thread_sort_index`` with an int ``args.sort_index``.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from typing import Any

KNOWN_PH = set("BEXiIstfCM")
METADATA = {
    "process_name": "name",
    "thread_name": "name",
    "process_sort_index": "sort_index",
    "thread_sort_index": "sort_index",
}


class TraceError(AssertionError):
    pass


def load(text: str) -> list[dict[str, Any]]:
    """Parse a trace file's text as the viewers do (a missing ``]`` is allowed)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        doc = json.loads(stripped)
        events = doc["traceEvents"]
    else:
        if not stripped.endswith("]"):
            stripped = stripped.rstrip(",") + "]"
        events = json.loads(stripped)
    if not isinstance(events, list):
        raise TraceError("traceEvents is not a list")
    return events  # type: ignore[no-any-return]


def _num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(events: list[dict[str, Any]]) -> dict[str, int]:
    """Raise :class:`TraceError` for the first broken rule; count events by ``ph``."""
    counts: dict[str, int] = defaultdict(int)
    slices: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    begins: dict[tuple[int, int], list[float]] = defaultdict(list)
    flows: dict[tuple[str, str, object], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    named_threads: set[tuple[int, int]] = set()
    used_threads: set[tuple[int, int]] = set()
    for i, e in enumerate(events):
        where = f"event {i} {e!r:.200}"
        if not isinstance(e, dict):
            raise TraceError(f"{where}: not an object")
        ph = e.get("ph")
        if ph not in KNOWN_PH:
            raise TraceError(f"{where}: unknown ph {ph!r}")
        counts[ph] += 1
        for field in ("pid", "tid"):
            if not isinstance(e.get(field), int) or isinstance(e.get(field), bool):
                raise TraceError(f"{where}: {field} must be an int")
        if not isinstance(e.get("name"), str):
            raise TraceError(f"{where}: name must be a str")
        key = (e["pid"], e["tid"])
        if ph == "M":
            arg = METADATA.get(e["name"])
            if arg is None:
                raise TraceError(f"{where}: unknown metadata {e['name']!r}")
            value = e.get("args", {}).get(arg)
            ok = isinstance(value, str) if arg == "name" else isinstance(value, int)
            if not ok:
                raise TraceError(f"{where}: args.{arg} has the wrong type")
            if e["name"] == "thread_name":
                named_threads.add(key)
            continue
        ts = e.get("ts")
        if not _num(ts) or ts < 0:
            raise TraceError(f"{where}: ts must be a number >= 0")
        if ph == "X":
            dur = e.get("dur")
            if not _num(dur) or dur < 0:
                raise TraceError(f"{where}: X needs dur >= 0")
            # the importers work in integer nanoseconds
            a = round(ts * 1000)
            slices[key].append((a / 1000, (a + round(dur * 1000)) / 1000))
            used_threads.add(key)
        elif ph == "B":
            begins[key].append(ts)
            used_threads.add(key)
        elif ph == "E":
            if not begins[key]:
                raise TraceError(f"{where}: E without B")
            b = begins[key].pop()
            slices[key].append((b, ts))
        elif ph in "iI":
            if e.get("s", "t") not in ("g", "p", "t"):
                raise TraceError(f"{where}: instant scope must be g, p or t")
        elif ph in "stf":
            if "id" not in e or not isinstance(e.get("cat"), str):
                raise TraceError(f"{where}: flow events need id and cat")
            flows[(e["cat"], e["name"], e["id"])][ph].append(e)
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(_num(v) for v in args.values()):
                raise TraceError(f"{where}: C needs args of numbers")
    for key, open_ in begins.items():
        if open_:
            raise TraceError(f"thread {key}: B without E")
    # strict nesting per thread
    starts: dict[tuple[int, int], list[float]] = {}
    ordered: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for key, ss in slices.items():
        ss.sort(key=lambda s: (s[0], -s[1]))
        stack: list[tuple[float, float]] = []
        for s in ss:
            while stack and stack[-1][1] <= s[0]:
                stack.pop()
            if stack and s[1] > stack[-1][1]:
                raise TraceError(f"thread {key}: slice {s} overlaps {stack[-1]} without nesting")
            stack.append(s)
        ordered[key] = ss
        starts[key] = [s[0] for s in ss]

    def enclosing(key: tuple[int, int], ts: float) -> bool:
        ss = ordered.get(key, [])
        i = bisect.bisect_right(starts.get(key, []), ts)
        return any(a <= ts <= b for a, b in ss[max(0, i - 64) : i])

    def next_slice(key: tuple[int, int], ts: float) -> bool:
        return bisect.bisect_left(starts.get(key, []), ts) < len(starts.get(key, []))

    for fkey, parts in flows.items():
        if len(parts["s"]) != 1 or len(parts["f"]) != 1:
            raise TraceError(f"flow {fkey}: needs one s and one f, has {dict(parts)}")
        s, f = parts["s"][0], parts["f"][0]
        if s["ts"] > f["ts"]:
            raise TraceError(f"flow {fkey}: s after f")
        for e in (s, *parts["t"]):
            if not enclosing((e["pid"], e["tid"]), e["ts"]):
                raise TraceError(f"flow {fkey}: {e['ph']} at {e['ts']} has no enclosing slice")
        fk = (f["pid"], f["tid"])
        bound = enclosing(fk, f["ts"]) if f.get("bp") == "e" else next_slice(fk, f["ts"])
        if not bound:
            raise TraceError(f"flow {fkey}: f at {f['ts']} binds to no slice")
    unnamed = used_threads - named_threads
    if unnamed:
        raise TraceError(f"threads without a thread_name: {sorted(unnamed)[:5]}")
    return dict(counts)
