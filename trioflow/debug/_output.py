"""Where debugging reports go: a writer thread, so a report never blocks the program.

A report is handed over with :meth:`Output.post`, which never blocks and
never takes a lock the caller might hold: it is safe from a signal handler
(``queue.SimpleQueue.put`` is reentrant), from the run loop and from any
thread. A daemon thread does the writing. When the destination is a full
pipe nobody reads, only that thread waits; reports beyond a small backlog
are dropped and counted (the next report that gets through says how many).
A write that fails (``BrokenPipeError``, a closed file) is reported once,
on ``sys.__stderr__`` when that is not the failing file, and swallowed:
debugging output never takes the program down.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from typing import TextIO

__all__ = ["Output"]

#: reports waiting for the writer beyond which new ones are dropped
_BACKLOG = 8
_STOP = object()


class Output:
    """One destination (``file``, or ``sys.stderr`` at the time of writing)."""

    def __init__(self, file: TextIO | None) -> None:
        self._file = file
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: reports dropped because the writer was behind (the file is not being read)
        self.dropped = 0
        #: write failures seen (only the first is reported)
        self.failures = 0
        self._thread = threading.Thread(
            target=self._run, name="trioflow report writer", daemon=True
        )
        self._thread._trioflow_watchdog = True  # type: ignore[attr-defined]
        self._thread.start()

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    def post(self, text: str) -> None:
        """Queue ``text`` for writing; never blocks (safe in a signal handler)."""
        if self._queue.qsize() >= _BACKLOG:
            self.dropped += 1
            return
        self._queue.put(text if text.endswith("\n") else text + "\n")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything posted so far is written (or failed). ``False`` on timeout."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), then stop the thread."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        reported_drops = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            assert isinstance(item, str)
            dropped = self.dropped
            if dropped != reported_drops:
                item = (
                    f"trioflow: {dropped - reported_drops} report(s) were dropped: "
                    "the output is not being read fast enough\n" + item
                )
                reported_drops = dropped
            f = self.file
            try:
                f.write(item)
                f.flush()
            except Exception as exc:  # a broken pipe, a closed file: never the program's problem
                self.failures += 1
                if self.failures == 1:
                    self._report_failure(f, exc)

    def _report_failure(self, failed: TextIO, exc: Exception) -> None:
        err = sys.__stderr__
        if err is None or err is failed:
            return
        with contextlib.suppress(Exception):
            err.write(
                f"trioflow: writing a debugging report failed ({exc!r}); "
                "later failures are swallowed silently\n"
            )
            err.flush()
