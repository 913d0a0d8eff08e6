"""How a cluster's secrets reach its processes: one Java properties file per role, mode 0600.

Decided once, for every secret of a cluster (security part 1, see ``docs/SECURITY.md``):

* In standalone mode Spark wants ``spark.authenticate.secret`` in its conf; ``spark.authenticate.secret.file``
  is refused outside Kubernetes and ``-D`` options show in ``ps``. So every role is started with
  ``--properties-file FILE``, a file only its user can read (0600). In a container the file is mounted
  read-only at :data:`CONTAINER_PATH`.
* The SQL password (:data:`SQL_PASSWORD_KEY`, read by the Thrift Server's authenticator from the JVM's
  properties) and the lab token (:data:`LAB_TOKEN_KEY`, read by ``lab_config.py``) travel in the same file,
  in the file of the role that needs them only.
* A secret is therefore never on a command line, in an environment variable, in job JSON, in events or in logs.
  Spark redacts these keys in its UIs (its default ``spark.redaction.regex`` matches ``secret``, ``password``
  and ``token``).

The same file also closes the paths that submit code without the secret: the master's REST submission server
(``spark.master.rest.enabled=false``) and the UIs' kill links (``spark.ui.killEnabled=false``).

Standard library only: the module runs inside the image too (the entrypoint reads :data:`PROPERTIES_ENV`).
"""

from __future__ import annotations

import contextlib
import os
import secrets as _secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CONTAINER_PATH",
    "LAB_TOKEN_KEY",
    "PROPERTIES_ENV",
    "SECRET_KEY",
    "SQL_PASSWORD_KEY",
    "control_plane_conf",
    "dumps",
    "loads",
    "new_secret",
    "read",
    "write",
]

#: The shared secret of a cluster's Spark RPC (master, workers, executors, every application).
SECRET_KEY = "spark.authenticate.secret"
#: The SQL endpoint's password, in the SQL role's file only.
SQL_PASSWORD_KEY = "spark.sparkdock.sql.password"
#: The lab's access token, in the lab role's file only.
LAB_TOKEN_KEY = "spark.sparkdock.lab.token"
#: Environment variable naming the role's properties file (a path: never a secret itself).
PROPERTIES_ENV = "SPARKDOCK_PROPERTIES_FILE"
#: Where a container finds its role's file (mounted read-only).
CONTAINER_PATH = "/run/sparkdock/spark.properties"


def new_secret() -> str:
    """A fresh random secret for ``spark.authenticate.secret`` (256 bits, URL-safe characters)."""
    return _secrets.token_urlsafe(32)


def control_plane_conf(secret: str) -> dict[str, str]:
    """The Spark properties every role of a cluster gets: authentication with ``secret``, encrypted RPC, and
    no way to submit or kill applications except through authenticated RPC."""
    if not secret:
        raise ValueError("a cluster's secret must not be empty")
    return {
        "spark.authenticate": "true",
        SECRET_KEY: secret,
        "spark.network.crypto.enabled": "true",
        "spark.master.rest.enabled": "false",
        "spark.ui.killEnabled": "false",
    }


def _escape(text: str, key: bool) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch in "=:#!" or (ch == " " and (key or i == 0)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def dumps(props: Mapping[str, str]) -> str:
    """The text of a properties file (UTF-8, as Spark reads it) holding ``props``."""
    lines = ["# sparkdock: written by the backend for one role of one cluster; keep it private (0600)"]
    lines += [f"{_escape(k, True)}={_escape(v, False)}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}


def _split(line: str) -> tuple[str, str]:
    """Key and raw value of one logical line (the first unescaped ``=``, ``:`` or blank separates them)."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t":
            rest = line[i + 1:].lstrip(" \t")
            if ch in " \t" and rest[:1] in ("=", ":"):
                rest = rest[1:].lstrip(" \t")
            return line[:i], rest
        i += 1
    return line, ""


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and i + 6 <= len(text):
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_UNESCAPE.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def loads(text: str) -> dict[str, str]:
    """Parse the text of a Java properties file (comments, ``=``/``:`` separators, escapes, continuations)."""
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line goes on
            logical += line[:-1]
            continue
        logical += line
        key, value = _split(logical)
        props[_unescape(key)] = _unescape(value)
        logical = ""
    if logical:
        key, value = _split(logical)
        props[_unescape(key)] = _unescape(value)
    return props


def read(path: str | os.PathLike[str]) -> dict[str, str]:
    """The properties of a file (``OSError`` when it cannot be read)."""
    return loads(Path(path).read_text(encoding="utf-8"))


def write(path: str | os.PathLike[str], props: Mapping[str, str]) -> Path:
    """Write ``props`` to ``path``, mode 0600, atomically (a reader sees the old file or the whole new one).

    The file is created 0600 before a byte is written, so its content is never readable by others, whatever the
    umask. Its folder must exist.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".properties", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(props))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target
