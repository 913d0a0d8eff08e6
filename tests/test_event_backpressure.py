"""Back-pressure of the event WebSocket, on a real Jupyter server (FakeBackend) with real WebSocket clients.

The server keeps at most ``event_queue_size`` events per client (32 here) and writes the next one only when the
previous one has left for the network. A client that stops reading is disconnected with close code 4008 and a
reason, and the server keeps nothing more for it; the other clients keep receiving. The Python client's event
stream, disconnected that way, reconnects and reloads the jobs (a snapshot over REST).
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
import websocket

from client_fixtures import client, run, server_token, server_url  # noqa: F401
from job_helpers import until
from sparkdock.model.protocol import SLOW_CONSUMER_CLOSE_CODE
from sparkdock.notebook.client import Client, EventStream
from sparkdock.server.handlers import EVENT_SOCKET_SNDBUF

#: a receive buffer this small (the kernel doubles it) stops the flow after a few KB unless the client reads
SMALL_RCVBUF = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
CHANGES = 200
QUEUE = 32


@pytest.fixture
def sparkdock_config():
    return {"event_queue_size": QUEUE}


def _read_until_close(ws: websocket.WebSocket) -> tuple[int, int | None, str]:
    """Read everything the server sent: (bytes of job events, close code, close reason)."""
    received = 0
    while True:
        opcode, frame = ws.recv_data_frame()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
            return received, code, frame.data[2:].decode()
        received += len(frame.data)


async def test_a_client_that_never_reads_is_dropped_while_the_others_keep_receiving(
    jp_serverapp, client, server_token  # noqa: F811
):
    bus = jp_serverapp.web_app.settings["sparkdock_manager"].bus
    header = [f"Authorization: token {server_token}"]

    # 1. a raw client that never reads, with a tiny receive buffer
    silent = await run(websocket.create_connection, client.events_url, header=header, sockopt=SMALL_RCVBUF,
                       timeout=20)
    # 2. the Python client's stream, reading everything
    fast: list[dict[str, Any]] = []
    stream = client.events()
    stream.add_listener(fast.append)
    # 3. a Python client's stream whose listener hangs until the server has dropped it; it must resynchronise
    unstuck = threading.Event()
    seen: dict[str, dict[str, Any]] = {}

    def on_job(job: dict[str, Any]) -> None:
        unstuck.wait(60)
        seen[job["id"]] = job

    other = Client(client.url, server_token)  # the lagging stream's own REST client (its own thread)

    def snapshot() -> None:
        for job in other.request("GET", "jobs")["jobs"]:
            seen[job["id"]] = job

    lagging = EventStream(client.events_url, server_token, sockopt=SMALL_RCVBUF)
    lagging.add_listener(on_job, snapshot)
    lagging.start()
    assert await run(stream.wait_connected, 10) and await run(lagging.wait_connected, 10)
    await until(lambda: bus.subscriber_count == 3, "three subscribers", timeout=10)

    # 200 changes of one job, each event about 20 KB (the job's args): 4 MB for each client
    code = "# fake: " + json.dumps({"reports": CHANGES, "report_interval": 0.001}) + "\nprint(1)\n"
    body = {"kind": "automated", "name": "busy",
            "application": {"type": "pyspark", "code": code, "args": ["x" * 200] * 100}}
    job = await run(client.request, "POST", "jobs", json_body=body)

    try:
        # both clients that do not read are dropped, while the job is still changing
        await until(lambda: bus.subscriber_count == 1, "the two clients that do not read dropped", timeout=60)
        unstuck.set()
        received, close_code, reason = await run(_read_until_close, silent)
        assert close_code == SLOW_CONSUMER_CLOSE_CODE, (close_code, reason)
        assert "too slow" in reason and f"{QUEUE} events" in reason, reason

        done = await run(lambda: client.job(job["id"]).wait(timeout=60))
        assert done.state == "COMPLETE"
        await until(lambda: any(j["id"] == job["id"] and j["state"] == "COMPLETE" for j in fast),
                    "the reading client got the final event", timeout=10)
        # the lagging Python client reconnected (not a silent gap): its snapshot, or an event after it, has the
        # job's final state
        await until(lambda: seen.get(job["id"], {}).get("state") == "COMPLETE",
                    "the lagging client caught up with the job's end", timeout=10)
    finally:
        unstuck.set()
        silent.close()
        lagging.close()
        other.close()

    # the reading client got every change of the job, in order
    progress = [j["runtime_status"]["activity"] for j in fast if j["id"] == job["id"]]
    tasks = [a for a in progress if a and a.startswith("tasks ")]
    assert tasks == [f"tasks {i}/{CHANGES}" for i in range(1, CHANGES + 1)], tasks[:5]
    # memory: what reached the silent client is what the network buffers held when it was dropped, a small
    # part of the 4 MB; nothing more was kept for it (its subscription is gone)
    fast_bytes = sum(len(json.dumps(j)) for j in fast if j["id"] == job["id"])
    assert fast_bytes > 4_000_000
    assert received < fast_bytes / 4, (received, fast_bytes)
    # (the queue was emptied when it was dropped: only the socket's bounded send buffer had reached the wire)
    assert received < 2 * EVENT_SOCKET_SNDBUF + 128 * 1024, received
    # the lagging client was told why (with its tiny buffer it may fall behind again after a resync: it then
    # resynchronises again; what matters is that it ends up with the job's final state, checked above)
    assert lagging.resyncs >= 1 and lagging.last_close is not None
    assert lagging.last_close[0] == SLOW_CONSUMER_CLOSE_CODE
    await until(lambda: bus.subscriber_count == 1, "only the reading client left subscribed", timeout=10)
