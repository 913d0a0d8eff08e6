"""Shared fixtures: a Jupyter server with the sparkdock extension (pytest-jupyter)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def sparkdock_config():
    """Per-test overrides of SparkDockApp config (a dict)."""
    return {}


@pytest.fixture
def jp_server_config(tmp_path, sparkdock_config):
    """A server with sparkdock enabled, its data in the test's tmp dir, and no unauthenticated access."""
    from fake_backend import FakeBackend

    FakeBackend.reset()
    cfg = {"backend_class": FakeBackend, "data_dir": str(tmp_path / "sparkdock"), "retry_backoff": 0.1}
    cfg.update(sparkdock_config)
    return {
        "ServerApp": {
            "jpserver_extensions": {"sparkdock": True},
            "allow_unauthenticated_access": False,
        },
        "SparkDockApp": cfg,
    }
