"""Per-job log files (sparkdock.backends.logfiles) on a real file system: rotation under a per-job cap, reading
the newest lines across segments, following from an offset, and copy-truncate under a real writing process."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from pathlib import Path

from sparkdock.backends.logfiles import (
    LogFollower,
    LogPolicy,
    RotatingWriter,
    rotate_copytruncate,
    segments,
    tail_lines,
)

CAP = 1024 * 1024  # the smallest cap the server accepts: segments of 64 KiB


def _total(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_a_writer_rotates_and_keeps_the_job_under_its_cap(tmp_path):
    logs = tmp_path / "logs"
    policy = LogPolicy(CAP)
    assert policy.segment_bytes == 64 * 1024
    lines = [f"line {i:07d} {'x' * 80}\n" for i in range(40_000)]  # 3.6 MB
    with RotatingWriter(logs / "driver.log", policy) as out:
        for line in lines:
            out.write(line.encode())
    assert _total(logs) <= CAP
    assert len(segments(logs / "driver.log")) >= 10  # rotated, the oldest segments deleted
    assert tail_lines(logs / "driver.log", 3) == "".join(lines[-3:])
    # more lines than the current file holds: read across segments, newest last, none missing or repeated
    many = tail_lines(logs / "driver.log", 2000)
    assert many == "".join(lines[-2000:])
    everything = tail_lines(logs / "driver.log", None)  # all that is kept, oldest segment first
    assert everything.endswith(lines[-1]) and everything in "".join(lines)


def test_the_cap_is_shared_by_the_components_of_a_job(tmp_path):
    logs = tmp_path / "logs"
    policy = LogPolicy(CAP)
    writers = [RotatingWriter(logs / f"{c}.log", policy) for c in ("master", "worker-1", "sql", "driver")]
    for i in range(8000):
        for w in writers:
            w.write(f"{w.path.stem} {i:06d} {'y' * 100}\n".encode())
    for w in writers:
        w.close()
    assert _total(logs) <= CAP
    for w in writers:  # every component keeps its newest lines
        assert tail_lines(w.path, 1) == f"{w.path.stem} 007999 {'y' * 100}\n"


def _drain(follower: LogFollower) -> bytes:
    got = []
    while chunk := follower.read_bytes():
        got.append(chunk)
    return b"".join(got)


def test_a_follower_reads_each_line_once_across_rotations(tmp_path):
    """Small reads (4 KB) of a file renamed away with 20 KB still unread: the rest of the old file comes first,
    then the new one, every line once."""
    path = tmp_path / "logs" / "driver.log"
    policy = LogPolicy(CAP)
    with RotatingWriter(path, policy) as out:
        out.write(b"before the follower\n")
        follower = LogFollower(path, max_read=4096)  # from the end: only what comes next
        got = []
        for i in range(3000):
            out.write(f"{i:05d} {'z' * 200}\n".encode())
            if i % 100 == 99:  # reads less often than lines come, more often than the file rotates
                got.append(_drain(follower))
        got.append(_drain(follower))
    assert len(segments(path)) >= 5
    read = b"".join(got).decode().splitlines()
    assert [line[:5] for line in read] == [f"{i:05d}" for i in range(3000)]
    assert follower.read_bytes() == b""


def test_copy_truncate_under_a_process_that_keeps_appending(tmp_path):
    """The local backend's Spark processes write to their log through an O_APPEND descriptor they inherited;
    rotating copies and truncates in place, and their next lines go on at the start of the file. A writer far
    faster than Spark's (a line every few microseconds) loses the lines written between the rotation's last
    read and its truncation (as with logrotate's copytruncate; microseconds, unless the machine deschedules the
    rotation right then): none is reordered or repeated, and a line written while no rotation runs is kept."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "worker-1.log"
    policy = LogPolicy(CAP)
    writer = ("import sys\nfor i in range(60000):\n    sys.stdout.write(f'w {i:06d} ' + 'q' * 60 + '\\n')\n"
              "    sys.stdout.flush()\nsys.stderr.write('burst done\\n')\nsys.stderr.flush()\n"
              "sys.stdin.readline()\nprint('the last line')\n")
    with path.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=fh, stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    follower = LogFollower(path, from_end=False)
    rotated = 0
    try:
        while not select.select([proc.stderr], [], [], 0)[0]:  # rotate while the burst goes on
            rotated += rotate_copytruncate(path, policy)
            # the rotated parts leave room under the cap for the current file (which the writer keeps growing)
            assert sum(p.stat().st_size for p in segments(path)) <= CAP - policy.segment_bytes
            _drain(follower)
        assert proc.stderr.readline() == b"burst done\n"
        rotate_copytruncate(path, policy)
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert proc.wait(30) == 0 and rotated >= 3  # (8 to 34 rotations seen; fewer on a busy machine)
    finally:
        proc.kill()
        proc.wait()
    rotate_copytruncate(path, policy)
    assert _total(logs) <= CAP
    assert tail_lines(path, 1) == "the last line\n"
    # (a line the writer was writing while a rotation read the file may be cut at the segment's end)
    kept = [int(n) for n in re.findall(r"w (\d{6}) q{60}\n", tail_lines(path, None))]
    # (no count of kept lines: when the rotation falls far behind this writer, one rotated part alone can exceed
    # the cap, and the cap then deletes it whole)
    assert kept == sorted(set(kept)), "lines reordered or repeated"


def test_a_follower_counts_a_warning_once_even_when_a_read_cuts_it(tmp_path):
    """What the resource watchdog does every 2 s: count Spark's warning in what the driver's log gained, in
    chunks (never the whole file), an occurrence cut by a chunk's end counted once."""
    path = tmp_path / "driver.log"
    needle = b"Initial job has not accepted any resources"
    path.write_bytes(b"an earlier attempt: " + needle + b"\n")
    follower = LogFollower(path, max_read=50)  # tiny chunks: the warning is cut across reads
    with path.open("ab") as fh:
        fh.write(b"x" * 37 + b" WARN TaskSchedulerImpl: " + needle + b"; check your cluster UI\n" + b"y" * 80 + b"\n")
    found, carry = follower.count(needle)
    assert found == 1  # the earlier attempt's line is not counted: the follower starts at the end
    with path.open("ab") as fh:
        fh.write(b"WARN TaskSchedulerImpl: " + needle + b"\n" + b"z" * 10)
    found, carry = follower.count(needle, carry)
    assert found == 1 and follower.count(needle, carry)[0] == 0
