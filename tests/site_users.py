"""A site's own identity provider and authorizer, as a deployment that knows its users configures them: users
keyed by token, with stable names (so sparkdock enforces owners), and permissions by user.

* ``alice`` holds the server's token (what ``jp_fetch`` sends) and ``bob`` his own: both may read and write;
* ``reader`` may only read;
* ``admin`` may read and write, and is allowed ``sparkdock:admin``.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth import Authorizer, IdentityProvider, User

TOKENS = {"bob": "bob-token", "reader": "reader-token", "admin": "admin-token"}


def auth(user: str) -> dict[str, str]:
    """The Authorization header of ``user`` (``alice`` has the server's token: pass no header)."""
    return {"Authorization": f"token {TOKENS[user]}"}


class TokenUsers(IdentityProvider):
    """Users keyed by token: the server's token is alice's."""

    def get_user(self, handler: Any) -> User | None:
        token = self.get_token(handler)
        names = {self.token: "alice", **{v: k for k, v in TOKENS.items()}}
        if not token or token not in names:
            return None
        handler._token_authenticated = True  # a script with a token: no XSRF cookie, no origin check
        return User(names[token])


class RolePermissions(Authorizer):
    """``reader`` reads only; ``admin`` alone is allowed ``sparkdock:admin``; everyone else reads and writes."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        if resource == "sparkdock:admin":
            return user.username == "admin"
        if user.username == "reader":
            return action == "read"
        return True
