"""Jupyter config of sparkdock's lab role, loaded with ``--config`` (see :func:`roles.lab_command`).

It sets the lab's token from the role's properties file (``SPARKDOCK_PROPERTIES_FILE``, key
``spark.sparkdock.lab.token``), so that the token is on no command line and in no environment variable. When
the variable is unset, Jupyter's own default applies (a made-up token, printed in the log). A file that is
named but cannot be read, or holds no token, stops the lab with a message rather than starting it open.
"""

from __future__ import annotations

import os
from typing import Any


def lab_token(environ: dict[str, str] | None = None) -> str | None:
    """The token the properties file gives, ``None`` without a file; ``SystemExit`` when it is unusable."""
    from sparkdock.cluster import properties

    env = os.environ if environ is None else environ
    path = env.get(properties.PROPERTIES_ENV)
    if not path:
        return None
    try:
        token = properties.read(path).get(properties.LAB_TOKEN_KEY, "")
    except OSError as exc:
        raise SystemExit(f"sparkdock lab: cannot read the properties file {path}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"sparkdock lab: the properties file {path} holds no {properties.LAB_TOKEN_KEY}")
    return token


def apply(c: Any) -> None:
    """Set ``IdentityProvider.token`` in the Jupyter config object ``c``."""
    token = lab_token()
    if token is not None:
        c.IdentityProvider.token = token


if "c" in globals():  # loaded by Jupyter as a config file (``c`` is its config object)
    apply(globals()["c"])
