"""sparkdock: interactive Spark clusters and batch Spark jobs from a Jupyter notebook."""

from __future__ import annotations

from typing import Any

from sparkdock import _aliases
from sparkdock._version import __version__

#: the client's error classes, handed on so that a notebook can write ``except sparkdock.JobFailed``
_CLIENT_ERRORS = ("AuthError", "Conflict", "InvalidSpec", "JobFailed", "NotFound", "QuotaExceeded", "RequestTimeout",
                  "ServerUnreachable", "SparkdockError", "WaitTimeout")

__all__ = ["__version__", "cluster_options", "connect", "notify", *_CLIENT_ERRORS]

_aliases.install()


def connect(*args: Any, **kwargs: Any) -> Any:
    """Connect to the sparkdock server extension; see :func:`sparkdock.notebook.client.connect`."""
    from sparkdock.notebook.client import connect as _connect

    return _connect(*args, **kwargs)


def cluster_options(*args: Any, **kwargs: Any) -> Any:
    """What a cluster request may ask of the server and its defaults; see
    :func:`sparkdock.notebook.client.cluster_options`."""
    from sparkdock.notebook.client import cluster_options as _cluster_options

    return _cluster_options(*args, **kwargs)


def notify(*args: Any, **kwargs: Any) -> Any:
    """Notifications (webhook or email) for a job; see :func:`sparkdock.notebook.client.notify`."""
    from sparkdock.notebook.client import notify as _notify

    return _notify(*args, **kwargs)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from sparkdock.server.app import SparkDockApp

    return [{"module": "sparkdock", "app": SparkDockApp}]


def __getattr__(name: str) -> Any:
    """``sparkdock.widgets`` (and the former module names) and the client's error classes, imported on first
    use: ``import sparkdock`` stays light for the server."""
    import importlib

    full = f"{__name__}.{name}"
    if full in _aliases.MOVED:
        return importlib.import_module(full)
    if name in _CLIENT_ERRORS:
        return getattr(importlib.import_module("sparkdock.notebook.errors"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sparkdock``: registers the ``%%sparksql`` cell magic."""
    from sparkdock.notebook.magics import load_ipython_extension as _load

    _load(ipython)
