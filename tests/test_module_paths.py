"""The layered layout keeps the former module paths importable for one release (CHANGELOG, "Deprecated")."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import sparkdock
from sparkdock import _aliases


@pytest.mark.parametrize(("old", "new"), sorted(_aliases.MOVED.items()))
def test_former_path_is_the_same_module(old: str, new: str) -> None:
    """Each former path gives the module object of its new place (so isinstance and patching keep working),
    with a DeprecationWarning, except the public ``sparkdock.widgets``."""
    code = (
        "import importlib, warnings, sys\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "assert old is new, (old, new)\n"
        "print(sum(issubclass(w.category, DeprecationWarning) and 'moved to' in str(w.message) for w in seen))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    warned = int(done.stdout.strip())
    assert warned == (0 if old in _aliases.PUBLIC else 1), (old, done.stdout)


def test_former_cluster_package_keeps_working() -> None:
    """``sparkdock.spark`` (the former ``cluster/``): applications import ``sparkdock.spark.errors``."""
    errors = importlib.import_module("sparkdock.spark.errors")
    from sparkdock.cluster import errors as new_errors
    from sparkdock.cluster import roles

    assert errors.IntegrityError is new_errors.IntegrityError
    assert importlib.import_module("sparkdock.spark.roles") is roles


def test_root_hands_on_the_client_errors() -> None:
    from sparkdock.notebook import client

    for name in ("JobFailed", "SparkdockError", "NotFound", "InvalidSpec"):
        assert getattr(sparkdock, name) is getattr(client, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sparkdock.no_such_name
