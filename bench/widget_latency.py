"""Benchmark: how fast the status card in a notebook follows the server, against a bare WebSocket client.

A Jupyter server subprocess with sparkdock runs the backend interface's test double (``tests/fake_backend.py``:
clusters come up in about 50 ms, no Spark), so the numbers are those of the server → event stream → widget
path alone. Each round launches a cluster and measures, from the launch request:

* **sparkdock**: until a :class:`~sparkdock.notebook.widgets.JobCard` following the job shows ``RUNNING``
  (the client's event stream, its listener and the card's update);
* **bare**: until a separate, plain ``websocket-client`` connection to ``sparkdock/api/events`` receives the
  job's ``RUNNING`` message.

Medians over ``--rounds`` are compared. Results go to ``bench/results/widget_latency.json``; a markdown row
for the README is printed. (test_widgets only checks that the card gets there, with a generous deadline.)

Usage: ``.venv/bin/python bench/widget_latency.py [--rounds 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sparkdock.demo import Server  # noqa: E402
from sparkdock.notebook.client import Client  # noqa: E402
from sparkdock.notebook.widgets import JobCard  # noqa: E402

RESULTS = REPO / "bench" / "results" / "widget_latency.json"


class BareListener:
    """A plain WebSocket client of the event stream: the time each (job, state) is first seen."""

    def __init__(self, ws_url: str, token: str) -> None:
        import websocket

        self.seen: dict[tuple[str, str], float] = {}
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=30)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:
                return
            if msg.get("type") == "job":
                self.seen.setdefault((msg["job"]["id"], msg["job"]["state"]), time.monotonic())

    def close(self) -> None:
        self.ws.close()


def _until(pred: object, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)
    return time.monotonic()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    server = Server(backend="auto", extra_args=["--SparkDockApp.backend_class=fake_backend.FakeBackend"])
    card_s: list[float] = []
    bare_s: list[float] = []
    try:
        server.start()
        client = Client(server.url, server.token)
        assert client.events().wait_connected(30), "the client's event stream did not connect"
        bare = BareListener(client.events_url, server.token)
        for i in range(args.rounds + 1):  # round 0 warms up
            t0 = time.monotonic()
            job = client.launch_cluster(name=f"latency-{i}", image="fake/ok")
            card = JobCard(client, job.data).follow()
            t_card = _until(lambda c=card: c.state == "RUNNING")
            _until(lambda j=job.id: (j, "RUNNING") in bare.seen)
            t_bare = bare.seen[(job.id, "RUNNING")]
            if i:
                card_s.append(t_card - t0)
                bare_s.append(t_bare - t0)
            card.close()
            job.terminate()
        bare.close()
        client.close()
    finally:
        server.terminate_jobs(timeout=60)
        server.stop()
    card_med, bare_med = statistics.median(card_s), statistics.median(bare_s)
    result = {
        "benchmark": "launch request to RUNNING shown: a JobCard following the job vs a bare WebSocket client "
                     "of sparkdock/api/events (FakeBackend: no Spark)",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "rounds": args.rounds,
        "card_ms": [round(x * 1000, 1) for x in card_s],
        "bare_ms": [round(x * 1000, 1) for x in bare_s],
        "card_median_ms": round(card_med * 1000, 1),
        "bare_median_ms": round(bare_med * 1000, 1),
        "ratio_card_over_bare": round(card_med / bare_med, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"| Launch to RUNNING shown in the status card, FakeBackend (`bench/widget_latency.py`) | "
          f"{result['card_median_ms']} ms | bare WebSocket client of the event stream: {result['bare_median_ms']} ms"
          f" | {result['ratio_card_over_bare']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
