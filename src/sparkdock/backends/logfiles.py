"""Per-job log files: rotated, capped per job, read from their end, followed from an offset.

Every component's output goes to ``<job dir>/logs/<component>.log``. A file that reaches the segment size
(:attr:`LogPolicy.segment_bytes`) is rotated: ``driver.log`` becomes ``driver.log.1`` (``.1`` becomes ``.2``,
and so on), and a new ``driver.log`` starts. After each rotation the job's folder is brought back under its cap
(:attr:`LogPolicy.max_job_bytes`) by deleting its oldest rotated segments, leaving room for every current file to
grow to a segment; a component's current file is never deleted, so the newest lines always stay readable.

Two ways to rotate, depending on who writes:

* :class:`RotatingWriter`, for output that sparkdock itself writes (a Docker driver's streamed output, a removed
  container's saved logs): it renames and reopens;
* :func:`rotate_copytruncate`, for a file that another process appends to (the local backend's Spark processes
  write to their log through an inherited ``O_APPEND`` descriptor, and keep running across server restarts):
  the file is copied to ``.1`` and truncated in place, as logrotate's ``copytruncate`` does (a line written
  between the copy and the truncation can be lost).

:class:`LogFollower` reads what was appended since its last read (it keeps the offset and follows a rotation),
and :func:`tail_lines` reads the last lines across segments without reading whole files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

#: Default cap of one job's logs (all components, rotated segments included).
DEFAULT_MAX_JOB_BYTES = 256 * 1024 * 1024

#: How many component files the cap is shared between (a current file is at most cap / this).
COMPONENT_SHARE = 16

log = logging.getLogger(__name__)

#: One copy-truncate at a time in this process.
_COPYTRUNCATE = threading.Lock()

_SEGMENT = re.compile(r"^(?P<base>.+\.log)\.(?P<n>\d+)$")


@dataclass(frozen=True)
class LogPolicy:
    """How big one job's logs may grow."""

    max_job_bytes: int = DEFAULT_MAX_JOB_BYTES
    """The cap of one job's ``logs/`` folder: its oldest rotated segments are deleted to stay under it."""

    @property
    def segment_bytes(self) -> int:
        """The size at which a component's file is rotated (a share of the cap, at least 64 KiB)."""
        return max(64 * 1024, self.max_job_bytes // COMPONENT_SHARE)


def segments(path: Path) -> list[Path]:
    """The rotated segments of ``path`` that exist, newest first (``.1``, ``.2``, …)."""
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            m = _SEGMENT.match(entry.name)
            if m and m.group("base") == path.name:
                found.append((int(m.group("n")), Path(entry.path)))
    return [p for _, p in sorted(found)]


def _shift(path: Path) -> None:
    """Make room for a new ``.1``: ``.n`` becomes ``.n+1``, from the oldest down."""
    for seg in reversed(segments(path)):
        n = int(seg.name.rsplit(".", 1)[1])
        os.replace(seg, path.with_name(f"{path.name}.{n + 1}"))


def enforce_cap(logs_dir: Path, policy: LogPolicy) -> None:
    """Delete the oldest rotated segments in ``logs_dir`` (whichever component they belong to) so that its files
    stay under the cap until the next rotation: the rotated segments may use what the current files (each up to
    a segment) leave of the cap. Current files are never deleted."""
    current = 0
    rotated: list[tuple[float, int, Path, int]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(logs_dir):
            with contextlib.suppress(OSError):
                if not entry.is_file():
                    continue
                m = _SEGMENT.match(entry.name)
                if m is None:
                    current += 1
                    continue
                st = entry.stat()
                rotated.append((st.st_mtime, -int(m.group("n")), Path(entry.path), st.st_size))
    budget = policy.max_job_bytes - current * policy.segment_bytes
    total = sum(size for *_, size in rotated)
    for *_, path, size in sorted(rotated):  # the least recently written first
        if total <= budget:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size


class RotatingWriter:
    """Append bytes to a component's log, rotating it at the segment size and keeping the job under its cap."""

    def __init__(self, path: Path, policy: LogPolicy, *, append: bool = True) -> None:
        self.path = path
        self.policy = policy
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab" if append else "wb")
        self._size = self._fh.tell()

    def write(self, data: bytes) -> None:
        """Append ``data`` (rotating first when the file is full)."""
        if self._size and self._size + len(data) > self.policy.segment_bytes:
            self.rotate()
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)

    def rotate(self) -> None:
        """Start a new file now: the current one becomes ``.1``."""
        self._fh.close()
        _shift(self.path)
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = self.path.open("wb")
        self._size = 0
        enforce_cap(self.path.parent, self.policy)

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> RotatingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rotate_copytruncate(path: Path, policy: LogPolicy) -> bool:
    """Rotate ``path`` in place if it reached the segment size (for a file another process appends to with
    ``O_APPEND``): copy it to ``.1``, truncate it, then keep the job under its cap. True if it rotated."""
    with _COPYTRUNCATE:  # the health round and a driver's follower may look at the same file
        try:
            if path.stat().st_size < policy.segment_bytes:
                return False
        except OSError:
            return False
        _shift(path)
        rotated = path.with_name(f"{path.name}.1")
        with path.open("r+b") as src, rotated.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            # What the writer appended meanwhile, read right before the truncation, through the same descriptor:
            # only a line written between this last read and the truncate (microseconds) can be lost.
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
            os.ftruncate(src.fileno(), 0)
        enforce_cap(path.parent, policy)
        return True


def rotate_dir(logs_dir: Path, policy: LogPolicy) -> None:
    """:func:`rotate_copytruncate` every component's current file in ``logs_dir``; a file that cannot be rotated
    now (a full disk, a file just removed) is logged and left for the next time."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(logs_dir):
            if entry.name.endswith(".log") and entry.is_file():
                try:
                    rotate_copytruncate(Path(entry.path), policy)
                except OSError as exc:
                    log.warning("could not rotate %s: %s", entry.path, exc)


def tail_lines(path: Path, lines: int | None) -> str:
    """The last ``lines`` lines of a component's log, across its rotated segments, read backwards from the end
    in blocks (``None``: everything kept, oldest segment first: at most the job's cap); ``""`` if there is none."""
    files = [path, *segments(path)]  # newest first
    if lines is None:
        parts = []
        for f in reversed(files):
            with contextlib.suppress(FileNotFoundError):
                parts.append(f.read_bytes())
        return b"".join(parts).decode(errors="replace")
    if lines <= 0:
        return ""
    blocks: list[bytes] = []  # newest last once reversed
    newlines = 0
    for f in files:
        try:
            with f.open("rb") as fh:
                pos = fh.seek(0, os.SEEK_END)
                while pos > 0 and newlines <= lines:
                    step = min(65536, pos)
                    pos -= step
                    fh.seek(pos)
                    block = fh.read(step)
                    blocks.append(block)
                    newlines += block.count(b"\n")
        except FileNotFoundError:
            continue
        if newlines > lines:
            break
    text = b"".join(reversed(blocks)).decode(errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:])


class LogFollower:
    """Read what a component's log gained since the last read, from a kept offset (never the whole file).

    A rotation is followed: when the file was renamed away (:class:`RotatingWriter`), the rest of the old file
    (now ``.1``) is read first; when it was truncated in place (:func:`rotate_copytruncate`), reading starts
    again at its beginning. A follower that falls more than one rotation behind (a segment is 1/16 of the job's
    cap) skips the parts in between: it is for watching what a log says now, not for copying it.
    """

    def __init__(self, path: Path, *, from_end: bool = True, max_read: int = 1024 * 1024) -> None:
        self.path = path
        self.max_read = max_read
        self.offset = 0
        self._inode: int | None = None
        self._draining: Path | None = None  # the file renamed away, read to its end first
        if from_end:
            with contextlib.suppress(OSError):
                st = path.stat()
                self.offset, self._inode = st.st_size, st.st_ino

    def read_bytes(self) -> bytes:
        """What was appended since the last call, at most ``max_read`` bytes (the rest comes next time)."""
        if self._draining is not None:
            with contextlib.suppress(OSError):
                data = self._read(self._draining)
                if data:
                    return data
            self._draining, self.offset = None, 0
        try:
            st = self.path.stat()
        except OSError:
            return b""
        if self._inode is not None and st.st_ino != self._inode:  # renamed away: finish the old file first
            old = self.path.with_name(f"{self.path.name}.1")
            with contextlib.suppress(OSError):
                if old.stat().st_ino == self._inode:
                    self._draining = old
            self._inode = st.st_ino
            if self._draining is not None:
                return self.read_bytes()
            self.offset = 0
        elif st.st_size < self.offset:  # truncated in place
            self.offset = 0
        self._inode = st.st_ino
        return self._read(self.path)

    def _read(self, path: Path) -> bytes:
        with path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.max_read)
        self.offset += len(data)
        return data

    def count(self, needle: bytes, carry: bytes = b"", max_chunks: int = 64) -> tuple[int, bytes]:
        """How many times ``needle`` was appended since the last read (reading at most ``max_chunks`` chunks),
        and the bytes to pass as ``carry`` next time (an occurrence cut by a chunk's end is counted once)."""
        found = 0
        for _ in range(max_chunks):
            chunk = self.read_bytes()
            if not chunk:
                break
            data = carry + chunk
            found += data.count(needle)
            carry = data[-(len(needle) - 1):] if len(needle) > 1 else b""
        return found, carry
