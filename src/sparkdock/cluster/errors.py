"""Exceptions an application can raise so that sparkdock reports the right kernel exit code (stdlib only).

Kernel exit codes 4 and 5 (seed 000) describe failures only the application can detect. Raise these from a
PySpark job (they are importable in every driver, local or in the image)::

    from sparkdock.spark.errors import IntegrityError, require_outputs

    if df.count() != expected:
        raise IntegrityError(f"integrity check failed: {df.count()} rows, expected {expected}")
    require_outputs("/data/out/result.parquet")   # raises OutputMissingError if it was not written

The job then ends ``EXECUTOR_ERROR`` 18 with "Task fails with kernel exit code: 4" (or 5).
"""

from __future__ import annotations

import os

__all__ = ["IntegrityError", "OutputMissingError", "require_outputs"]


class IntegrityError(Exception):
    """A dataset failed an integrity check (checksum, row count, schema): kernel exit code 4."""


class OutputMissingError(Exception):
    """A declared output was not produced: kernel exit code 5."""


def require_outputs(*paths: str) -> None:
    """Raise :class:`OutputMissingError` naming every path in ``paths`` that does not exist."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise OutputMissingError("declared output missing: " + ", ".join(missing))
