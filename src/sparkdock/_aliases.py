"""Former module paths (before the layered layout) kept importable for one release.

``import sparkdock.manager`` and friends resolve to the module at its new place (the same module object, so
``isinstance`` and monkeypatching keep working) and warn once with a :class:`DeprecationWarning`.
``sparkdock.widgets`` stays a public name without a warning: the README and the notebooks use it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: former module -> its place in the layered layout
MOVED: dict[str, str] = {
    "sparkdock.lifecycle": "sparkdock.model.lifecycle",
    "sparkdock.exit_codes": "sparkdock.model.exit_codes",
    "sparkdock.specs": "sparkdock.model.specs",
    "sparkdock.store": "sparkdock.server.store",
    "sparkdock.events": "sparkdock.server.events",
    "sparkdock.manager": "sparkdock.server.manager",
    "sparkdock.automated": "sparkdock.server.automated",
    "sparkdock.staging": "sparkdock.server.staging",
    "sparkdock.sql": "sparkdock.server.hiveserver2",
    "sparkdock.client": "sparkdock.notebook.client",
    "sparkdock.magics": "sparkdock.notebook.magics",
    "sparkdock.widgets": "sparkdock.notebook.widgets",
    "sparkdock.widgets.card": "sparkdock.notebook.widgets.card",
    "sparkdock.widgets.panels": "sparkdock.notebook.widgets.panels",
    "sparkdock.widgets.render": "sparkdock.notebook.widgets.render",
}
#: former names that stay public (no warning)
PUBLIC = {"sparkdock.widgets"}


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder module, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        if name not in PUBLIC:
            warnings.warn(f"{name} moved to {MOVED[name]}; the old path goes away in the next release",
                          DeprecationWarning, stacklevel=2)
        # The import system returns whatever sys.modules holds for the name once this returns.
        sys.modules[name] = importlib.import_module(MOVED[name])


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the former module paths of :data:`MOVED`."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=fullname == "sparkdock.widgets")


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent). First, because ``sparkdock.widgets`` resolves to
    the ``sparkdock.notebook.widgets`` package, whose ``__path__`` would let the path finder load
    ``sparkdock.widgets.card`` a second time, as a different module object."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
