"""What runs in a notebook's kernel: the client, the widgets and ``%%sparksql``.

It talks to the server over HTTP and WebSocket only, never in-process.
"""
