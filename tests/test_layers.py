"""The import rule of the layered layout, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from … import`` counts, wherever it is: at module level, inside a function, under
``if TYPE_CHECKING:``; so do ``importlib.import_module("sparkdock.…")`` calls with a literal (or f-string
prefix) name. Relative imports are resolved against the importing module.

The layers, from the bottom up (:data:`RULES` says what each may import; every layer is under the rule):

- ``version`` (``_version.py``) imports nothing: every layer above ``cluster`` may read ``__version__``;
- ``model`` (lifecycle, exit codes, specs) imports nothing of sparkdock outside itself;
- ``cluster`` (and ``spark``, its former name, shipped with it in the image) imports nothing of sparkdock outside
  itself, and is standard-library only: the image ships it without sparkdock's dependencies. The only other
  imports it may make are of the runtime the image installs (pyspark, impyla), inside a function, so that
  importing any ``sparkdock.cluster`` module needs the standard library alone;
- ``backends`` imports ``model`` and ``cluster``;
- ``server`` imports the layers below it; ``notebook`` talks to the server over HTTP only, so it imports
  ``model`` alone;
- the top (the package root, ``cli``, ``demo``) may import every layer.

No module takes part in an import circle, within a layer or across layers. A planted bad module and a planted
circle in a copy of the tree prove that the checks fail.
"""

from __future__ import annotations

import ast
import itertools
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
#: the layer of the package root (``sparkdock/__init__.py``) and of the modules beside it but ``_version``
TOP = "top"
#: module at the package root -> its layer (``_version`` is a leaf layer of its own)
ROOT_MODULES = {"cli": TOP, "demo": TOP, "_aliases": TOP, "__main__": TOP, "_version": "version"}

#: third-party modules the image installs next to the cluster layer (import name -> pip name in the Dockerfile)
IMAGE_RUNTIME = {"pyspark": "pyspark", "impala": "impyla"}


@dataclass(frozen=True)
class Rule:
    """What one layer may import."""

    layers: frozenset[str]
    """the sparkdock layers it may import (itself included)"""
    stdlib_only: bool = False
    """True: outside sparkdock, only the standard library at module level, and :data:`IMAGE_RUNTIME` in functions"""


#: every layer, and what it may import
RULES: dict[str, Rule] = {
    "version": Rule(frozenset({"version"}), stdlib_only=True),
    "model": Rule(frozenset({"model"})),
    "cluster": Rule(frozenset({"cluster"}), stdlib_only=True),
    "backends": Rule(frozenset({"backends", "cluster", "model"})),
    "server": Rule(frozenset({"server", "backends", "cluster", "model", "version"})),
    "notebook": Rule(frozenset({"notebook", "model"})),
    TOP: Rule(frozenset({TOP, "notebook", "server", "backends", "cluster", "model", "version"})),
}


@dataclass(frozen=True)
class Import:
    """One import found in a module."""

    line: int
    target: str
    """the imported module, absolute (``sparkdock.server.manager``, ``os.path``, ``pyspark.sql``)"""
    in_function: bool
    names: tuple[str, ...] = ()
    """``from target import names``: the names imported (each may be a sub-module of ``target``)"""


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
    return LAYER_OF_PACKAGE.get(parts[1]) or ROOT_MODULES.get(parts[1], "?")


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
                    yield Import(child.lineno, target, inner, tuple(a.name for a in child.names))
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


def import_graph(src: Path) -> dict[str, dict[str, int]]:
    """sparkdock's modules and the sparkdock modules each imports (with the line of the first such import).

    An edge names the module the source names: ``from pkg import mod`` is an edge to ``pkg.mod`` when that is a
    module, else to ``pkg``; ``import a.b.c`` is an edge to ``a.b.c``. The parent packages Python runs on the way
    are not edges of their own: a package's ``__init__`` importing its modules is no circle.
    """
    paths = {module_name(path, src): path for path in sorted((src / PACKAGE).rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in paths:  # sparkdock.__version__ -> sparkdock
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        edges = graph.setdefault(module, {})
        for imp in imports_of(path, src):
            if layer_of(imp.target) is None:
                continue
            subs = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in paths]
            whole = len(subs) < len(imp.names) or not imp.names  # some name is not a sub-module
            for target in [*subs, *([resolve(imp.target)] if whole else [])]:
                if target and target != module:
                    edges.setdefault(target, imp.line)
    return graph


def import_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each group of modules of :func:`import_graph` that import one another, as one circle through them
    (``a -> b -> a``); empty when there is none (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    def circle(group: set[str]) -> list[str]:
        start = min(group)
        paths = {start: [start]}
        todo = [start]
        while todo:  # breadth first, inside the group, back to the start
            v = todo.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in group and w not in paths:
                    paths[w] = [*paths[v], w]
                    todo.append(w)
        raise AssertionError(group)  # a strongly connected group always closes

    return sorted(circle(g) for g in groups)


def describe_circle(circle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a (line 12) -> b (line 3) -> a``: each step with the line of the import that makes it."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(circle)]
    return " -> ".join([*steps, circle[-1]])


def test_every_layer_keeps_the_import_rule() -> None:
    found = violations(SRC)
    assert not found, "imports against the layer rule:\n" + "\n".join(map(str, found))


def test_every_layer_is_under_the_rule() -> None:
    """No layer is left unchecked: each layer a module can be in has its rule, and each has modules."""
    layers = set(LAYER_OF_PACKAGE.values()) | set(ROOT_MODULES.values())
    assert set(RULES) == layers
    seen = {layer_of(module_name(path, SRC)) for path in (SRC / PACKAGE).rglob("*.py")}
    assert seen == layers, seen ^ layers


def test_no_import_circles() -> None:
    """No module imports, through any chain of imports (in functions and under TYPE_CHECKING too), itself."""
    graph = import_graph(SRC)
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(describe_circle(c, graph) for c in circles)


def test_the_graph_sees_the_imports_a_circle_would_use() -> None:
    """The edges the circle check reads: a sub-module named by ``from pkg import mod``, an import inside a
    function, one under ``TYPE_CHECKING``, and a name from a package (an edge to its ``__init__``)."""
    graph = import_graph(SRC)
    assert "sparkdock.server.automated" in graph["sparkdock.server.manager"]
    assert "sparkdock.notebook.widgets.render" in graph["sparkdock.notebook.widgets.card"]  # from … import render
    assert "sparkdock.notebook.widgets" not in graph["sparkdock.notebook.widgets.card"]
    assert "sparkdock.notebook.widgets.card" in graph["sparkdock.notebook.client"]  # inside a function
    assert "sparkdock.notebook.client" in graph["sparkdock.notebook.widgets.panels"]  # under TYPE_CHECKING
    assert "sparkdock.server.app" in graph["sparkdock"]  # the entry point, inside a function
    assert "sparkdock._version" in graph["sparkdock.server.app"]


def test_the_rule_reads_every_layer() -> None:
    """The walk sees the modules of each ruled layer, and each of them has imports to check."""
    per_layer: dict[str, int] = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        layer = layer_of(module_name(path, SRC))
        if layer in RULES and list(imports_of(path, SRC)):
            per_layer[layer] = per_layer.get(layer, 0) + 1
    assert per_layer.get("model", 0) >= 3 and per_layer.get("cluster", 0) >= 6, per_layer
    assert all(per_layer.get(layer, 0) >= 1 for layer in set(RULES) - {"version"}), per_layer


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


def test_a_planted_circle_fails_the_check(tmp_path: Path) -> None:
    """Circles planted in a copy of the tree: one inside a layer (through a function-level import and one under
    TYPE_CHECKING), one through a package's ``__init__``; each is reported once, with its lines."""
    src = tmp_path / "src"
    shutil.copytree(SRC / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert import_circles(import_graph(src)) == []
    server = src / PACKAGE / "server"
    (server / "ring_a.py").write_text("def f():\n    from sparkdock.server import ring_b\n")
    (server / "ring_b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .ring_c import X\n")
    (server / "ring_c.py").write_text("from . import ring_a\nX = 1\n")
    widgets = src / PACKAGE / "notebook" / "widgets"
    (widgets / "loop.py").write_text("from sparkdock.notebook.widgets import JobCard\n")  # the package itself
    init = widgets / "__init__.py"
    init.write_text(init.read_text() + "from sparkdock.notebook.widgets.loop import *\n")

    graph = import_graph(src)
    circles = import_circles(graph)
    assert circles == [
        ["sparkdock.notebook.widgets", "sparkdock.notebook.widgets.loop", "sparkdock.notebook.widgets"],
        ["sparkdock.server.ring_a", "sparkdock.server.ring_b", "sparkdock.server.ring_c", "sparkdock.server.ring_a"],
    ], circles
    assert describe_circle(circles[1], graph) == (
        "sparkdock.server.ring_a (line 2) -> sparkdock.server.ring_b (line 4) -> sparkdock.server.ring_c (line 1)"
        " -> sparkdock.server.ring_a"
    )
