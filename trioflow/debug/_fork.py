"""Take a costly look at the program in a forked child, so the loop pauses only for the fork.

A dump of 100,000 tasks as JSON, or :func:`find_stuck`'s heap walk, takes
seconds of CPU. ``os.fork()`` copies the process (page tables only: tens of
milliseconds at 100k tasks, see ``docs/benchmarks/debug.md``); the child
does the work on its own copy of the heap, writes the text to a pipe and
exits; the loop goes on meanwhile, reading that pipe like any other.

The child runs only the render function, then ``os._exit``: no atexit
handlers, no buffered output of the parent flushed twice, no trio run
continued. It never takes a lock another thread might have held at the
fork (only the calling thread exists in the child), except the registry's;
an alarm ends a child that hangs anyway, and the parent then reports
that the child did not answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable

import trio

__all__ = ["can_fork", "in_child"]


def can_fork() -> bool:
    """Is forking available here (a POSIX system, the main interpreter)?"""
    return hasattr(os, "fork") and sys.platform != "emscripten"


async def in_child(render: Callable[[], bytes], *, alarm_after: float = 60.0) -> bytes:
    """``render()`` run in a forked copy of the process; its bytes, read without blocking the loop.

    A checkpoint (it waits for the child). Cancelling it kills the child.

    Raises:
      RuntimeError: if the child failed (its traceback is in the message) or
        did not answer within ``alarm_after`` seconds.
    """
    r, w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the
        # child; the child here only renders and exits, under an alarm.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: measured by the tests through its output
        code = 0
        try:
            os.close(r)
            signal.alarm(max(1, int(alarm_after) + 1))
            try:
                data = b"ok\n" + render()
            except BaseException:
                data = b"error\n" + traceback.format_exc().encode()
                code = 1
            view = memoryview(data)
            while view:
                n = os.write(w, view)
                view = view[n:]
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    try:
        stream = trio.lowlevel.FdStream(r)
        async with stream:
            with trio.move_on_after(alarm_after) as scope:
                while chunk := await stream.receive_some(1 << 20):
                    chunks.append(chunk)
        if scope.cancelled_caught:
            raise RuntimeError(f"the forked child did not answer within {alarm_after}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it has exited already, or it must
        # Reap it even when cancelled (a cancelled wait here left a zombie):
        # after SIGKILL this returns at once, so the shield cannot hang.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(os.waitpid, pid, 0)
    data = b"".join(chunks)
    status, _, body = data.partition(b"\n")
    if status != b"ok":
        raise RuntimeError(
            "the forked child failed: " + (body.decode("utf-8", "replace") or "no output")
        )
    return body
