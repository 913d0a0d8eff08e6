"""sparkdock: interactive Spark clusters and batch Spark jobs from a Jupyter notebook."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "connect"]


def connect(*args: Any, **kwargs: Any) -> Any:
    """Connect to the sparkdock server extension; see :func:`sparkdock.client.connect`."""
    from .client import connect as _connect

    return _connect(*args, **kwargs)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import SparkDockApp

    return [{"module": "sparkdock", "app": SparkDockApp}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sparkdock``: registers the ``%%sparksql`` cell magic."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
