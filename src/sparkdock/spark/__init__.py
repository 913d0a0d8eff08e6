"""Compatibility package: the former name of :mod:`sparkdock.cluster` (stdlib only, also shipped in the image).

``sparkdock.spark.errors`` stays the public import for applications (kernel exit codes 4 and 5). The other
former modules (``sparkdock.cluster.roles``, ``.probes``, ``.classify``, ``.entrypoint``, ``.sql_runner``) are
aliases of their :mod:`sparkdock.cluster` modules for one release (see CHANGELOG).
"""

from __future__ import annotations

import importlib
import sys

from sparkdock.cluster import PYSPARK_VERSION

__all__ = ["PYSPARK_VERSION"]

for _name in ("classify", "entrypoint", "probes", "roles", "sql_runner"):
    sys.modules.setdefault(f"{__name__}.{_name}", importlib.import_module(f"sparkdock.cluster.{_name}"))
