"""The data directory and the job store kept private: the folder 0700, the database 0600.

The data directory holds the job store, every job's logs and staged applications, and the secrets folders of
running clusters. Whoever can write it can replace any of them, so the server refuses to start when the folder
or the database is writable by the group or by others, or belongs to another user. Read access for others
(what an older sparkdock left: 0755 and 0644) is taken away at start, with a line in the log.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


class UnsafePermissions(RuntimeError):
    """The data directory or the job store can be changed by someone else: the server must not start."""


def _check(path: Path, what: str) -> os.stat_result:
    st = path.stat()
    if st.st_uid != os.getuid():
        raise UnsafePermissions(
            f"the sparkdock {what} {path} belongs to user id {st.st_uid}, not to the user the server runs as "
            f"({os.getuid()}); use a {what} of your own (SparkDockApp.data_dir)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        fix = f"chmod {'700' if path.is_dir() else '600'} {path}"
        raise UnsafePermissions(
            f"the sparkdock {what} {path} is writable by {'group and others' if st.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): anyone who can write it could replace the job store or a "
            f"cluster's secrets. Run `{fix}` and start again"
        )
    return st


def _tighten(path: Path, mode: int, what: str) -> None:
    st = _check(path, what)
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(mode)
        log.info("sparkdock: %s %s was readable by others (mode %04o); now %04o", what, path,
                 stat.S_IMODE(st.st_mode), mode)


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory 0700, or check an existing one: raises :class:`UnsafePermissions` when it is
    group- or world-writable or someone else's; read access for others is removed."""
    if not data_dir.exists():
        data_dir.mkdir(mode=DIR_MODE, parents=True)
    _tighten(data_dir, DIR_MODE, "data directory")


def prepare_store_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its WAL and shared-memory files the
    same mode), or check an existing one as :func:`prepare_data_dir` does."""
    if not path.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    _tighten(path, FILE_MODE, "job store")
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            _tighten(companion, FILE_MODE, "job store")
