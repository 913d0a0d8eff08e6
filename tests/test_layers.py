"""The import rule of the layered layout, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from … import`` counts, wherever it is: at module level, inside a function, under
``if TYPE_CHECKING:``; so do ``importlib.import_module("sparkdock.…")`` calls with a literal (or f-string
prefix) name. Relative imports are resolved against the importing module.

Step 1 of the layers (issue 24) puts two layers under the rule:

- ``model`` (lifecycle, exit codes, specs) imports nothing of sparkdock outside itself;
- ``cluster`` (and ``spark``, its former name, shipped with it in the image) imports nothing of sparkdock outside
  itself, and is standard-library only: the image ships it without sparkdock's dependencies. The only other
  imports it may make are of the runtime the image installs (pyspark, impyla), inside a function, so that
  importing any ``sparkdock.cluster`` module needs the standard library alone.

Step 2 adds the other layers to :data:`RULES`. A planted bad module in a copy of the tree proves the check fails.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "sparkdock"

#: sub-package -> the layer it belongs to (``spark`` is the compatibility name of ``cluster``)
LAYER_OF_PACKAGE = {"model": "model", "cluster": "cluster", "spark": "cluster", "backends": "backends",
                    "server": "server", "notebook": "notebook"}
#: modules at the package root (``sparkdock/__init__.py``, ``cli.py``, ``demo.py``, ``_aliases.py``)
TOP = "top"

#: third-party modules the image installs next to the cluster layer (import name -> pip name in the Dockerfile)
IMAGE_RUNTIME = {"pyspark": "pyspark", "impala": "impyla"}


@dataclass(frozen=True)
class Rule:
    """What one layer may import."""

    layers: frozenset[str]
    """the sparkdock layers it may import (itself included)"""
    stdlib_only: bool = False
    """True: outside sparkdock, only the standard library at module level, and :data:`IMAGE_RUNTIME` in functions"""


#: the layers under the rule, and what each may import; a layer missing here is not checked yet (step 2)
RULES: dict[str, Rule] = {
    "model": Rule(frozenset({"model"})),
    "cluster": Rule(frozenset({"cluster"}), stdlib_only=True),
}


@dataclass(frozen=True)
class Import:
    """One import found in a module."""

    line: int
    target: str
    """the imported module, absolute (``sparkdock.server.manager``, ``os.path``, ``pyspark.sql``)"""
    in_function: bool


def module_name(path: Path, src: Path) -> str:
    """``src/sparkdock/model/specs.py`` -> ``sparkdock.model.specs``; ``…/__init__.py`` -> its package."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a sparkdock module (``None`` for a module outside sparkdock, ``"?"`` for an unknown one)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return TOP
    if parts[1] in LAYER_OF_PACKAGE:
        return LAYER_OF_PACKAGE[parts[1]]
    return TOP if parts[1] in {"cli", "demo", "_aliases", "__main__"} else "?"


def _import_module_target(call: ast.Call) -> str | None:
    """The module named by ``importlib.import_module(<literal or f-string>)``, up to its first placeholder."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in {"import_module", "__import__"} or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value).rstrip(".")
        return prefix or None
    return None


def imports_of(path: Path, src: Path) -> Iterator[Import]:
    """Every import of one module, wherever it is in the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module_name(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(child.lineno, alias.name, inner)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                if target == PACKAGE:  # from sparkdock import server: the layer is the name imported
                    for alias in child.names:
                        yield Import(child.lineno, f"{PACKAGE}.{alias.name}", inner)
                else:
                    yield Import(child.lineno, target, inner)
            elif isinstance(child, ast.Call) and (target := _import_module_target(child)):
                yield Import(child.lineno, target, inner)
            yield from visit(child, inner)

    yield from visit(tree, False)


@dataclass(frozen=True)
class Violation:
    """One import against the rule (``line`` 0 and ``target`` empty: a module of no layer)."""

    where: str
    line: int
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.why}" if self.line else f"{self.where}: {self.why}"


def violations(src: Path, rules: dict[str, Rule] = RULES) -> list[Violation]:
    """Each import against the rule; empty when the tree keeps the rule."""
    found: list[Violation] = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        own = layer_of(module_name(path, src))
        where = path.relative_to(src).as_posix()
        if own == "?":
            found.append(Violation(where, 0, "", "a module of no layer (add its sub-package to LAYER_OF_PACKAGE)"))
            continue
        rule = rules.get(own or "")
        if rule is None:
            continue
        for imp in imports_of(path, src):
            top = imp.target.split(".")[0]
            target_layer = layer_of(imp.target)
            if target_layer is not None:
                if target_layer not in rule.layers:
                    allowed = ", ".join(sorted(rule.layers))
                    found.append(Violation(where, imp.line, imp.target, f"{own} imports {imp.target} "
                                           f"({target_layer}); {own} may import only {allowed}"))
            elif rule.stdlib_only and top not in sys.stdlib_module_names:
                if top not in IMAGE_RUNTIME:
                    found.append(Violation(where, imp.line, imp.target, f"{own} imports {imp.target}, which is not "
                                           f"in the standard library ({own} must import with it alone)"))
                elif not imp.in_function:
                    found.append(Violation(where, imp.line, imp.target, f"{own} imports {imp.target} at module "
                                           f"level; import the image's runtime inside the function that needs it"))
    return found


def test_model_and_cluster_keep_the_import_rule() -> None:
    found = violations(SRC)
    assert not found, "imports against the layer rule:\n" + "\n".join(map(str, found))


def test_the_rule_reads_every_layer() -> None:
    """The walk sees the modules of each ruled layer, and each of them has imports to check."""
    per_layer: dict[str, int] = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        layer = layer_of(module_name(path, SRC))
        if layer in RULES and list(imports_of(path, SRC)):
            per_layer[layer] = per_layer.get(layer, 0) + 1
    assert per_layer.get("model", 0) >= 3 and per_layer.get("cluster", 0) >= 6, per_layer


def test_the_image_installs_the_cluster_runtime() -> None:
    """The third-party modules ``cluster`` may import lazily are those the Dockerfile installs in the image."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    install = " ".join(line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip install" in line)
    for module, dist in IMAGE_RUNTIME.items():
        assert re.search(rf'"{dist}==', install), f"the image does not install {dist} (for import {module})"


PLANTED_MODEL = '''\
"""A model module that breaks the rule in every way the test must see."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..cluster import roles
from sparkdock import server

if TYPE_CHECKING:
    from sparkdock.server.manager import JobManager


def helper():
    import sparkdock.backends.docker
    import importlib

    return importlib.import_module("sparkdock.notebook.client")
'''

PLANTED_CLUSTER = '''\
"""A cluster module that needs more than the standard library."""
import json
import pydantic
from sparkdock.model import lifecycle


def run():
    from pyspark.sql import SparkSession  # allowed: the image's runtime, lazily
    import importlib

    return importlib.import_module(f"sparkdock.server.{json.dumps('x')}")
'''

PLANTED_SPARK = '''\
"""The compatibility package is part of the cluster layer."""
from impala.dbapi import connect
from ..cluster.errors import IntegrityError
'''


def test_a_planted_bad_module_fails_the_check(tmp_path: Path) -> None:
    """The same check over a copy of the tree with bad modules planted: it fails and names each import."""
    src = tmp_path / "src"
    shutil.copytree(SRC / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert violations(src) == []  # the copy is as clean as the tree
    (src / PACKAGE / "model" / "planted.py").write_text(PLANTED_MODEL)
    (src / PACKAGE / "cluster" / "planted.py").write_text(PLANTED_CLUSTER)
    (src / PACKAGE / "spark" / "planted.py").write_text(PLANTED_SPARK)
    (src / PACKAGE / "newlayer").mkdir()
    (src / PACKAGE / "newlayer" / "__init__.py").write_text("")

    found = violations(src)
    assert found, "the check passed a tree with planted bad imports: it cannot fail"
    got = {f"{v.where}:{v.line} {v.target}" if v.line else str(v) for v in found}
    model, cluster, spark = (f"sparkdock/{d}/planted.py" for d in ("model", "cluster", "spark"))
    assert got == {
        f"{model}:6 sparkdock.cluster",  # relative, up one package
        f"{model}:7 sparkdock.server",  # from sparkdock import <layer>
        f"{model}:10 sparkdock.server.manager",  # under TYPE_CHECKING
        f"{model}:14 sparkdock.backends.docker",  # inside a function
        f"{model}:17 sparkdock.notebook.client",  # importlib.import_module with a literal
        f"{cluster}:3 pydantic",  # not the standard library
        f"{cluster}:4 sparkdock.model",  # another layer
        f"{cluster}:11 sparkdock.server",  # an f-string's literal prefix
        f"{spark}:2 impala.dbapi",  # the image's runtime, but at module level
        "sparkdock/newlayer/__init__.py: a module of no layer (add its sub-package to LAYER_OF_PACKAGE)",
    }, "\n".join(map(str, found))


@pytest.mark.parametrize(("module", "layer"), [
    ("sparkdock", TOP), ("sparkdock.cli", TOP), ("sparkdock.model.specs", "model"),
    ("sparkdock.spark.errors", "cluster"), ("sparkdock.server.app", "server"), ("os.path", None),
    ("sparkdock.nowhere", "?"),
])
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer
