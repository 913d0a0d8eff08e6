"""A Jupyter server extension for ``bench/loop_stall.py``: a timer on the server's event loop that records how
late it fires (a blocked loop fires it late), and the server's resident memory.

``POST /loop-probe`` starts a new measuring window; ``GET /loop-probe`` returns
``{"worst_ms", "p99_ms", "samples", "rss_kb"}`` of the window so far. Both need the server's token, as every
route does. Loaded only by the benchmark (``--ServerApp.jpserver_extensions``), never by sparkdock.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

TICK = 0.01  # the timer asks to wake every 10 ms


class Probe:
    """The timer and what it saw in the current window."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Start a new window (and the timer, the first time)."""
        self.lateness = []
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + TICK
            await asyncio.sleep(TICK)
            self.lateness.append(max(0.0, time.monotonic() - expected))

    def summary(self) -> dict[str, Any]:
        """Worst and 99th percentile lateness (ms) of the window, its sample count, and the RSS."""
        late = sorted(self.lateness) or [0.0]
        status = Path("/proc/self/status").read_text().splitlines()
        rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        return {"worst_ms": round(late[-1] * 1000, 1), "p99_ms": round(late[int(len(late) * 0.99)] * 1000, 1),
                "samples": len(self.lateness), "rss_kb": rss}


class ProbeHandler(JupyterHandler):
    """``GET``: the window's figures; ``POST``: a new window."""

    def initialize(self, probe: Probe) -> None:
        self.probe = probe

    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(self.probe.summary()))

    @web.authenticated
    def post(self) -> None:
        self.probe.reset()
        self.finish(json.dumps({"reset": True}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "loop_probe"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    route = url_path_join(serverapp.web_app.settings["base_url"], "loop-probe")
    serverapp.web_app.add_handlers(".*$", [(route, ProbeHandler, {"probe": Probe()})])
