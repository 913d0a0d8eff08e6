"""Constants of the wire protocol that the server and the client share (the REST contract is in DESIGN.md and
in the OpenAPI document served at ``sparkdock/api/openapi.json``)."""

from __future__ import annotations

#: The WebSocket close code (``WS sparkdock/api/events``) of a client disconnected because it did not read its
#: events: the server keeps at most ``SparkDockApp.event_queue_size`` of them per client. An application code
#: (4000-4999); the client should reconnect and reload the jobs it shows.
SLOW_CONSUMER_CLOSE_CODE = 4008
