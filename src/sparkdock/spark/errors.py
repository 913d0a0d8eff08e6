"""Exceptions an application raises for kernel exit codes 4 and 5: ``from sparkdock.spark.errors import ...``.

The public import path for applications; the code lives in :mod:`sparkdock.cluster.errors`.
"""

from __future__ import annotations

from sparkdock.cluster.errors import IntegrityError, OutputMissingError, require_outputs

__all__ = ["IntegrityError", "OutputMissingError", "require_outputs"]
