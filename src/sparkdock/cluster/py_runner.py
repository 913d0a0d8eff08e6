"""Run a Python application as ``__main__`` so that its last output reaches the driver's log.

Usage (as the application file of ``spark-submit``; ``roles.driver_command`` puts it there)::

    spark-submit [...] py_runner.py APP.py [args...]

Why: ``spark-submit`` runs a Python application as a child of its JVM and copies the child's output to its own
stdout on a daemon thread (Spark's ``PythonRunner``). When the application exits with a non-zero status, the JVM
exits at once and does not wait for that thread, so the last lines (the traceback that says why the job failed,
from which sparkdock reads the kernel exit code) can be lost on a busy machine. This runner runs the application,
prints an uncaught exception as Python would, then waits (a few seconds at most) until the JVM has read everything
from the pipe before it exits with the application's status.

The application sees what it would see when run directly: ``__name__ == "__main__"``, its own path in
``sys.argv[0]`` and ``__file__``, its folder first on ``sys.path``, and tracebacks without this runner's frames.
Standard library only: it runs in the image and in local drivers alike.
"""

from __future__ import annotations

import fcntl
import os
import runpy
import stat
import struct
import sys
import termios
import time
import traceback
from types import TracebackType

#: how long to wait for the JVM to read the application's last output
DRAIN_TIMEOUT = 5.0


def unread_bytes(fd: int) -> int:
    """Bytes written to the pipe ``fd`` and not read yet by the other end (0 when ``fd`` is not a pipe)."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def drain(timeout: float = DRAIN_TIMEOUT) -> None:
    """Flush stdout and stderr, and wait until the reader of each (a pipe) has taken every byte."""
    fds = set()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):  # closed or replaced by the application
            continue
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(unread_bytes(fd) for fd in fds):
        time.sleep(0.01)


def _app_frames(tb: TracebackType | None, app: str) -> TracebackType | None:
    """The traceback from the application's first frame on (this runner's and ``runpy``'s frames dropped)."""
    first = tb
    while first is not None and os.path.abspath(first.tb_frame.f_code.co_filename) != app:
        first = first.tb_next
    return first if first is not None else tb


def _exit_status(code: object) -> int:
    """The process status of ``SystemExit(code)``, as the interpreter computes it (a message goes to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run(app: str, args: list[str]) -> int:
    """Run ``app`` as ``__main__`` with ``args``; return the exit status it would have had."""
    app = os.path.abspath(app)
    sys.argv = [app, *args]
    sys.path[0] = os.path.dirname(app)  # not this runner's folder: the application's, as for a script
    try:
        runpy.run_path(app, run_name="__main__")
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BaseException as exc:  # printed as the interpreter would, then a status of 1
        traceback.print_exception(type(exc), exc, _app_frames(exc.__traceback__, app))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: py_runner.py APP.py [args...]", file=sys.stderr)
        return 2
    try:
        return run(argv[0], argv[1:])
    finally:
        drain()


if __name__ == "__main__":
    sys.exit(main())
