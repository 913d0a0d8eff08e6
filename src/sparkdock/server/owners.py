"""Who may see and act on which job: owners and admins (the authorization model of ``docs/SECURITY.md``).

Two questions are asked of every request, in this order:

1. **May this user use the API at all?** jupyter_server's Authorizer decides, on the resource
   ``sparkdock:jobs`` (``read`` for GET, ``write`` for POST and DELETE, and ``write`` for the credentials).
2. **Which jobs?** When owners are enforced, a user sees and acts on the jobs they created only; an admin on all
   of them. A job the caller may not see answers 404, as if it did not exist.

Owners are enforced only when the identity provider gives stable user names: JupyterHub's, or any configured
IdentityProvider. jupyter_server's own token and password providers make a fresh anonymous user for each request
without a cookie, so under them every caller is the one owner ``default`` (``SparkDockApp.enforce_owners``
forces either way).

An admin is a user named in ``SparkDockApp.admin_users`` (under JupyterHub, by default, the server's owner), or
a user the Authorizer allows the same action on ``sparkdock:admin``. Authorizers that allow every authenticated
user everything (jupyter_server's ``AllowAllAuthorizer``, JupyterHub's ``JupyterHubAuthorizer``) are not asked:
they would make everyone an admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_core.utils import ensure_async

DEFAULT_OWNER = "default"
ADMIN_RESOURCE = "sparkdock:admin"

#: jupyter_server's providers that name anonymous users at random: owners mean nothing under them.
_RANDOM_NAME_PROVIDERS = frozenset({
    "jupyter_server.auth.identity.IdentityProvider",
    "jupyter_server.auth.identity.PasswordIdentityProvider",
    "jupyter_server.auth.identity.LegacyIdentityProvider",
})
#: Authorizers that allow every authenticated user every action: they cannot say who is an admin.
_ALLOW_ALL_AUTHORIZERS = frozenset({
    "jupyter_server.auth.authorizer.AllowAllAuthorizer",
    "jupyterhub.singleuser.extension.JupyterHubAuthorizer",
})


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the owner name stored on the jobs they create, and whether they see every job."""

    name: str
    sees_all: bool

    def may_see(self, owner: str | None) -> bool:
        """Whether a job of ``owner`` is visible to (and may be acted on by) this caller."""
        return self.sees_all or owner == self.name

    @property
    def owner_filter(self) -> str | None:
        """The owner to filter lists by (``None``: every job)."""
        return None if self.sees_all else self.name


class OwnerPolicy:
    """Resolves the :class:`Caller` of a request from the server's identity provider and authorizer.

    Args:
        setting: ``"auto"``, ``"on"`` or ``"off"`` (``SparkDockApp.enforce_owners``).
        identity_provider: the server's IdentityProvider (decides ``auto``).
        admin_users: names that see and act on every job.
    """

    def __init__(self, setting: str, identity_provider: Any, admin_users: set[str] | frozenset[str]) -> None:
        if setting == "auto":
            self.enforced = _qualname(identity_provider) not in _RANDOM_NAME_PROVIDERS
        else:
            self.enforced = setting == "on"
        self.admin_users = frozenset(admin_users)

    def describe(self) -> str:
        """One line for the server log."""
        if not self.enforced:
            return f"owners not enforced: every caller is the owner {DEFAULT_OWNER!r}"
        admins = ", ".join(sorted(self.admin_users)) or "none named"
        return f"owners enforced: each user sees their own jobs; admins: {admins}, or allowed {ADMIN_RESOURCE}"

    async def caller(self, handler: Any, user: Any, action: str) -> Caller:
        """The caller of ``handler``'s request by ``user`` (authenticated), for ``action`` (read/write)."""
        if not self.enforced:
            return Caller(DEFAULT_OWNER, sees_all=True)
        name = str(getattr(user, "username", None) or user)
        if name in self.admin_users:
            return Caller(name, sees_all=True)
        authorizer = handler.authorizer
        if _qualname(authorizer) in _ALLOW_ALL_AUTHORIZERS:
            return Caller(name, sees_all=False)
        admin = await ensure_async(authorizer.is_authorized(handler, user, action, ADMIN_RESOURCE))
        return Caller(name, sees_all=bool(admin))
