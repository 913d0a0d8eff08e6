"""Staging of an automated job's application into a file its driver reads.

Inline code and SQL scripts are written to ``<job dir>/app/``; a ``path`` is checked (it must name a file under
the server's root directory, checked again here as a symlink may have changed since submission, of at most
:data:`~sparkdock.server.limits.MAX_APP_FILE_BYTES`) and copied there, so that the driver (a local process or a
container the file is copied into) always reads a private copy.
Problems found here carry their exit code: 11 (invalid inputs) or 12 (cannot be staged or parsed).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from sparkdock.backends.base import StagedApp
from sparkdock.server.limits import MAX_APP_FILE_BYTES, PathRefused, resolve_under_root

#: Conf keys sparkdock sets itself; an application may not override them.
RESERVED_CONF = frozenset({"spark.master", "spark.submit.deployMode", "spark.driver.host", "spark.app.id"})


class StagingError(Exception):
    """The application cannot be staged; ``code`` is 11 or 12."""

    def __init__(self, code: int, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


def _sql_has_statement(script: str) -> bool:
    for line in script.splitlines():
        text = line.split("--", 1)[0].strip().strip(";").strip()
        if text:
            return True
    return False


def _read_app_file(raw: str, root_dir: Path) -> str:
    try:
        src = resolve_under_root(raw, root_dir)
    except PathRefused as exc:
        raise StagingError(11, f"application path {raw!r} {exc}") from None
    if not src.is_file():
        raise StagingError(11, f"application path {raw!r} does not exist or is not a file")
    try:
        with src.open("rb") as f:
            data = f.read(MAX_APP_FILE_BYTES + 1)
        if len(data) > MAX_APP_FILE_BYTES:
            raise StagingError(11, f"application path {raw!r} is larger than {MAX_APP_FILE_BYTES} bytes")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StagingError(11, f"application path {raw!r} cannot be read: {exc}") from None


def stage_application(job_dir: Path, application: dict, attempt: int, root_dir: Path) -> StagedApp:
    """Write the application for its driver; raise :class:`StagingError` with code 11 or 12.

    A ``path`` is read only if it lies under ``root_dir`` (the server's root directory)."""
    app_type = application["type"]
    conf = dict(application.get("conf") or {})
    reserved = sorted(RESERVED_CONF & conf.keys())
    if reserved:
        raise StagingError(11, f"conf {', '.join(reserved)} is set by sparkdock and cannot be given")
    args = [str(a) for a in application.get("args") or []]
    if any("\x00" in a for a in args):
        raise StagingError(11, "args must not contain NUL characters")
    code = application.get("code")
    if code is None:
        code = _read_app_file(application["path"], root_dir)
    if app_type == "pyspark":
        try:
            ast.parse(code, filename="<application>")
        except SyntaxError as exc:
            raise StagingError(12, f"Python syntax error at line {exc.lineno}: {exc.msg}") from None
        name = "app.py"
    else:
        if not _sql_has_statement(code):
            raise StagingError(12, "the SQL script has no statement")
        name = "app.sql"
    app_dir = job_dir / "app"
    try:
        if app_dir.exists():
            shutil.rmtree(app_dir)
        app_dir.mkdir(parents=True)
        target = app_dir / name
        target.write_text(code, encoding="utf-8")
        app_dir.chmod(0o755)
        target.chmod(0o644)
    except OSError as exc:
        raise StagingError(12, f"cannot write the application for its driver: {exc}") from None
    return StagedApp(type=app_type, file=target, args=args, conf=conf)
