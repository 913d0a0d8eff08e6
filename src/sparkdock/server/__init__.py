"""The Jupyter server extension: :class:`~sparkdock.server.app.SparkDockApp` and its REST/WebSocket handlers."""
