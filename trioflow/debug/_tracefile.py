"""The timeline's trace file: event tuples in, Chrome trace-event JSON out.

This module imports nothing but the standard library, so that a full
recording can run it as a script in a process of its own
(``python -I -S _tracefile.py``): the recorder in the program only appends
event tuples and ships them in chunks (``marshal``, a fraction of a
microsecond an event), and the JSON encoding, a few microseconds an event,
runs on another core instead of taking the program's GIL. The same code
encodes a flight recorder's dump, and a full recording when no process can
be started (in a thread, as before).

The wire protocol (the program's pipe to the writer's stdin): a sequence of
messages, each a 4-byte little-endian length and that many bytes of one
``marshal``led object (``marshal.load`` on a pipe would read it a few bytes
at a time): ``(path, base, slow_step)``, then chunks (lists of event
tuples), then ``("end", t)``. The writer finishes the file when it reads the
end, or when the pipe closes without one (the program died: what it sent is
written and the JSON array closed), and exits 0, or 1 with the error on
stderr.
"""

from __future__ import annotations

import itertools
import json
import marshal
import math
import os
import signal
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

# Event tuples. Field 1 is always a perf_counter() time (the flight
# recorder trims on it).
STEP = 0  # (STEP, t0, t1, tid)
PARK = 1  # (PARK, t, tid, label, weight)
WAKE = 2  # (WAKE, t, tid, waker tid or 0 for the loop)
MEET = 3  # (MEET, t, tid, name, pid, pid label)
EXIT = 4  # (EXIT, t, tid)
COUNT = 5  # (COUNT, t, label, in use, waiting)
IDLE = 6  # (IDLE, t0, t1)
NOTE = 7  # (NOTE, t, text)
ITEM = 8  # (ITEM, t end, tid, pid, pipeline label, stage, duration, error type or None)

#: Item tracks are the worker task's id plus this (a tid of their own: the
#: format keys threads by tid, and the worker's run/wait slices are on its tid).
ITEM_TID = 1_000_000_000

LOOP_PID = 1
LOOP_TID = 0


def _ns_str(ns: int) -> str:
    """Integer nanoseconds as the format's microseconds, to the nanosecond.

    (A float's ``.3f`` is exact here: below 2**53 ns, some 100 days, the
    error of ``ns / 1000`` is far under the half nanosecond it rounds to,
    and it formats faster than integer division; the hot branches of
    :meth:`_Encoder.encode` write it out inline.)
    """
    return f"{ns / 1000:.3f}" if ns > 0 else "0.000"


class _Encoder:
    """Turns event tuples into trace-event JSON objects (one string each).

    Stateful across chunks: a park's slice ends at its wake-up, and a flow's
    two ends are written when both steps they bind to are known.
    """

    def __init__(self, base: float, slow_step: float) -> None:
        self.base = base
        self.slow_ns = int(slow_step * 1e9)
        self.names: dict[str, str] = {}  # str -> its JSON literal
        self.pids_seen: set[int] = set()
        self.pid_of: dict[int, int] = {}
        self.parks: dict[int, tuple[int, str, int]] = {}  # tid -> (ns, label, weight)
        #: waker tid -> [(flow id, wake ns, woken tid)] to start at the waker's step
        self.flow_out: dict[int, list[tuple[int, int, int]]] = {}
        #: woken tid -> (flow id, waker pid, waker tid, start ns): both ends are
        #: written at the woken task's next step, so no arrow dangles
        self.flow_in: dict[int, tuple[int, int, int, int]] = {}
        self.flow_ids = itertools.count(1)
        self.last_ns = 0
        self.count = 0
        #: item track tid -> where its last item slice ended (ns): slices never overlap
        self.item_ends: dict[int, int] = {}

    def _j(self, s: str) -> str:
        lit = self.names.get(s)
        if lit is None:
            if len(self.names) > 100_000:
                self.names.clear()
            lit = self.names[s] = json.dumps(s, ensure_ascii=False)
        return lit

    def ns(self, t: float) -> int:
        return int((t - self.base) * 1e9)

    def prelude(self) -> list[str]:
        return [
            self.meta_process(LOOP_PID, "trio.run"),
            '{"ph":"M","pid":1,"tid":0,"name":"thread_name","args":{"name":"loop: I/O wait"}}',
            '{"ph":"M","pid":1,"tid":0,"name":"thread_sort_index","args":{"sort_index":-1}}',
        ]

    def meta_process(self, pid: int, label: str) -> str:
        self.pids_seen.add(pid)
        return (
            f'{{"ph":"M","pid":{pid},"tid":0,"name":"process_name","args":{{"name":{self._j(label)}}}}},\n'
            f'{{"ph":"M","pid":{pid},"tid":0,"name":"process_sort_index","args":{{"sort_index":{pid}}}}}'
        )

    def encode(self, events: Iterable[tuple[Any, ...]]) -> list[str]:
        out: list[str] = []
        add = out.append
        base = self.base
        pid_of = self.pid_of
        parks = self.parks
        flow_out = self.flow_out
        flow_in = self.flow_in
        slow = self.slow_ns
        for e in events:
            k = e[0]
            if k == STEP:
                tid = e[3]
                pid = pid_of.get(tid)
                if pid is None:  # never met (trimmed away): skip its events
                    continue
                a = int((e[1] - base) * 1e9)
                b = int((e[2] - base) * 1e9)
                if a < 0:
                    a = 0
                if b <= a:
                    b = a + 1
                add(
                    f'{{"ph":"X","pid":{pid},"tid":{tid},"ts":{a / 1000:.3f},'
                    f'"dur":{(b - a) / 1000:.3f},"cat":"run","name":"run"}}'
                )
                src = flow_in.pop(tid, None)
                if src is not None:  # both ends known: write the arrow
                    fid, spid, stid, sts = src
                    add(
                        f'{{"ph":"s","pid":{spid},"tid":{stid},"ts":{_ns_str(sts)},'
                        f'"id":{fid},"cat":"wake","name":"wake"}},\n'
                        f'{{"ph":"f","bp":"e","pid":{pid},"tid":{tid},"ts":{_ns_str((a + b) // 2)},'
                        f'"id":{fid},"cat":"wake","name":"wake"}}'
                    )
                outs = flow_out.pop(tid, None)
                if outs:
                    for fid, w, woken in outs:
                        w = min(max(w, a + 1), b - 1) if b - a >= 2 else a
                        flow_in[woken] = (fid, pid, tid, w)
                if b - a >= slow:
                    add(
                        f'{{"ph":"i","s":"t","pid":{pid},"tid":{tid},"ts":{_ns_str(a)},'
                        f'"cat":"slow","name":"slow step","args":{{"ms":{(b - a) / 1e6:.3f}}}}}'
                    )
                if b > self.last_ns:
                    self.last_ns = b
            elif k == PARK:
                tid = e[2]
                if tid in pid_of:
                    parks[tid] = (int((e[1] - base) * 1e9), e[3], e[4])
            elif k == WAKE:
                tid = e[2]
                pid = pid_of.get(tid)
                if pid is None:
                    continue
                w = int((e[1] - base) * 1e9)
                park = parks.pop(tid, None)
                if park is not None:
                    add(self._wait(pid, tid, park, w, False))
                waker = e[3]
                if waker and waker != tid and waker in pid_of:
                    flow_out.setdefault(waker, []).append((next(self.flow_ids), w, tid))
            elif k == MEET:
                tid, name, pid, label = e[2], e[3], e[4], e[5]
                if pid not in self.pids_seen:
                    add(self.meta_process(pid, label))
                if pid_of.get(tid) != pid:
                    pid_of[tid] = pid
                    add(
                        f'{{"ph":"M","pid":{pid},"tid":{tid},"name":"thread_name",'
                        f'"args":{{"name":{self._j(f"{name} #{tid}")}}}}},\n'
                        f'{{"ph":"M","pid":{pid},"tid":{tid},"name":"thread_sort_index",'
                        f'"args":{{"sort_index":{tid}}}}}'
                    )
            elif k == EXIT:
                tid = e[2]
                parks.pop(tid, None)
                flow_in.pop(tid, None)
                pid_of.pop(tid, None)
            elif k == COUNT:
                t = int((e[1] - base) * 1e9)
                add(
                    f'{{"ph":"C","pid":{LOOP_PID},"tid":0,"ts":{_ns_str(t)},"name":{self._j(e[2])},'
                    f'"args":{{"in use":{_num(e[3])},"waiting":{e[4]}}}}}'
                )
            elif k == IDLE:
                a = int((e[1] - base) * 1e9)
                b = max(a + 1, int((e[2] - base) * 1e9))
                add(
                    f'{{"ph":"X","pid":{LOOP_PID},"tid":{LOOP_TID},"ts":{_ns_str(a)},'
                    f'"dur":{_ns_str(b - a)},"cat":"idle","name":"I/O wait"}}'
                )
            elif k == ITEM:
                tid = e[2]
                if tid not in pid_of:
                    continue
                pid = e[3]
                if pid not in self.pids_seen:
                    add(self.meta_process(pid, e[4]))
                itid = ITEM_TID + tid
                b = int((e[1] - base) * 1e9)
                last = self.item_ends.get(itid)
                if last is None:
                    add(
                        f'{{"ph":"M","pid":{pid},"tid":{itid},"name":"thread_name",'
                        f'"args":{{"name":{self._j(f"stage {e[5]} (task #{tid})")}}}}}'
                    )
                    last = 0
                a = max(last, b - int(e[6] * 1e9), 0)
                if b <= a:
                    b = a + 1
                self.item_ends[itid] = b
                outcome = "ok" if e[7] is None else e[7]
                add(
                    f'{{"ph":"X","pid":{pid},"tid":{itid},"ts":{_ns_str(a)},'
                    f'"dur":{_ns_str(b - a)},"cat":"item","name":{self._j(e[5])},'
                    f'"args":{{"outcome":{self._j(outcome)}}}}}'
                )
                if b > self.last_ns:
                    self.last_ns = b
            elif k == NOTE:
                t = int((e[1] - base) * 1e9)
                add(
                    f'{{"ph":"i","s":"g","pid":{LOOP_PID},"tid":{LOOP_TID},"ts":{_ns_str(t)},'
                    f'"cat":"note","name":{self._j(e[2])}}}'
                )
        self.count += len(out)
        return out

    def _wait(self, pid: int, tid: int, park: tuple[int, str, int], end: int, still: bool) -> str:
        a, label, weight = park
        end = max(end, a + 1)
        name = f"wait {label}" + (" (still waiting)" if still else "")
        args = f',"args":{{"weight":{weight}}}' if weight != 1 else ""
        return (
            f'{{"ph":"X","pid":{pid},"tid":{tid},"ts":{_ns_str(a)},"dur":{_ns_str(end - a)},'
            f'"cat":"wait","name":{self._j(name)}{args}}}'
        )

    def finish(self, end_t: float | None) -> list[str]:
        """Close what is still open: tasks still parked get a slice to the end."""
        end = self.last_ns if end_t is None else max(self.last_ns, self.ns(end_t))
        out = [
            self._wait(self.pid_of[tid], tid, park, end, True)
            for tid, park in self.parks.items()
            if tid in self.pid_of
        ]
        self.parks.clear()
        self.count += len(out)
        return out


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    if math.isfinite(x):
        return f"{x:.6g}"
    return "0"


class TraceStream:
    """Writes a trace file as chunks of events arrive: ``[``, the events
    separated by ``,\\n``, and ``]`` at :meth:`close`. A file cut short
    still opens (the array form needs no closing bracket)."""

    def __init__(self, file: TextIO, base: float, slow_step: float) -> None:
        self.file = file
        self.encoder = _Encoder(base, slow_step)
        self.first = True
        self._write(self.encoder.prelude())

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        f = self.file
        if self.first:
            f.write("[\n")
            self.first = False
        else:
            f.write(",\n")
        f.write(",\n".join(lines))

    def feed(self, events: Iterable[tuple[Any, ...]]) -> None:
        self._write(self.encoder.encode(events))

    def close(self, end: float | None) -> int:
        """Close what is still open (parked tasks' waits, to ``end`` or the last
        event) and the array; returns the trace events written."""
        self._write(self.encoder.finish(end))
        self.file.write("\n]\n")
        return self.encoder.count


def write_trace(
    path: Path, events: list[tuple[Any, ...]], base: float, slow_step: float, end: float
) -> int:
    """Encode ``events`` into ``path`` in one go (flight dumps); atomic (temp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        stream = TraceStream(f, base, slow_step)
        stream.feed(events)
        n = stream.close(end)
    os.replace(tmp, path)
    return n


def message(obj: Any) -> bytes:
    """One message of the writer's protocol."""
    data = marshal.dumps(obj)
    return struct.pack("<I", len(data)) + data


def _read(pipe: BinaryIO) -> Any:
    """The next message's object; ``EOFError`` when the pipe closed before a whole one."""
    head = pipe.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack("<I", head)
    data = pipe.read(n)
    if len(data) < n:
        raise EOFError
    return marshal.loads(data)


def serve(pipe: BinaryIO) -> int:
    """The writer process: read the protocol from ``pipe``, write the file."""
    path, base, slow_step = _read(pipe)
    with open(path, "w", encoding="utf-8") as f:
        stream = TraceStream(f, base, slow_step)
        while True:
            try:
                msg = _read(pipe)
            except EOFError:  # the program is gone: close what it sent
                stream.close(None)
                return 0
            if isinstance(msg, list):
                stream.feed(msg)  # pyright: ignore[reportUnknownArgumentType]
            else:
                stream.close(msg[1])
                return 0


def _main() -> int:  # pragma: no cover - runs in the writer process (tests drive it there)
    # A terminal's Ctrl-C, or a service manager's SIGTERM to the whole
    # group, is for the program: the writer finishes when the program closes
    # the pipe (or dies), so that the file it leaves is whole.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    try:
        return serve(sys.stdin.buffer)
    except BaseException as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(_main())
