"""Fixtures for the blocking client: a live pytest-jupyter server (FakeBackend) and a Client on its real URL.

The client is blocking, so tests run its calls with ``asyncio.to_thread`` and the server loop keeps running.
"""

from __future__ import annotations

import asyncio

import pytest

from sparkdock.notebook.client import Client


@pytest.fixture
def server_url(jp_serverapp, jp_http_port, jp_base_url, jp_fetch) -> str:
    """The URL of the live test server (jp_fetch makes sure it listens)."""
    return f"http://localhost:{jp_http_port}{jp_base_url}"


@pytest.fixture
def server_token(jp_serverapp) -> str:
    """The test server's token."""
    return jp_serverapp.identity_provider.token


@pytest.fixture
def client(server_url, server_token):
    """A :class:`Client` on the live test server (closed at the end)."""
    c = Client(server_url, server_token)
    yield c
    c.close()


def run(fn, *args, **kwargs):
    """Run a blocking client call in a thread (awaitable)."""
    return asyncio.to_thread(fn, *args, **kwargs)
