"""The SSRF guard of webhooks: a target is resolved and checked before each attempt.

A notification's URL is the user's, but the request leaves from the server: it must not reach what only the
server can reach. Every address a target's host resolves to must be public (:meth:`TargetGuard.refusal`):
loopback, link-local, private, shared (CGNAT), multicast, reserved and cloud metadata addresses are refused,
unless ``SparkDockApp.webhook_allowed_networks`` names them. The check is made in the HTTP client's resolver
(:class:`GuardedResolver`), so the connection goes to exactly the addresses that were checked (a name that
resolves differently a moment later cannot slip through), and redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from tornado.netutil import DefaultLoopResolver, Resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: instance metadata services of the clouds (AWS, GCP, Azure, OpenStack; AWS over IPv6; Alibaba)
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in
                               ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


class TargetRefused(Exception):
    """A webhook target the guard does not allow (never retried)."""


class TargetGuard:
    """Which addresses webhooks may reach: public ones, and those of ``allowed_networks``."""

    def __init__(self, allowed_networks: list[str] | tuple[str, ...] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached, or ``None`` when it may."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return None
        if ip in METADATA_ADDRESSES:
            return "a cloud metadata address"
        for what, flag in (("a loopback", ip.is_loopback), ("a link-local", ip.is_link_local),
                           ("an unspecified", ip.is_unspecified), ("a multicast", ip.is_multicast),
                           ("a private", ip.is_private), ("a reserved", ip.is_reserved)):
            if flag:
                return f"{what} address"
        if not ip.is_global:
            return "not a public address"
        return None

    def check(self, host: str, addresses: list[str]) -> None:
        """Raise :class:`TargetRefused` unless every address ``host`` resolved to may be reached."""
        for address in addresses:
            why = self.refusal(address)
            if why:
                what = host if host == address else f"{host} (it resolves to {address})"
                raise TargetRefused(f"refused: {what} is {why}; SparkDockApp.webhook_allowed_networks may "
                                    "allow it")
        if not addresses:
            raise TargetRefused(f"refused: {host} resolves to no address")


class GuardedResolver(Resolver):
    """A tornado resolver that refuses targets the :class:`TargetGuard` does not allow."""

    def initialize(self, guard: TargetGuard) -> None:  # type: ignore[override]
        """``guard`` checks what the system resolver returns."""
        self.guard = guard
        self.inner = DefaultLoopResolver()

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
                      ) -> list[tuple[int, Any]]:
        """Resolve ``host`` and check every address (a literal address is checked as it is)."""
        found = await self.inner.resolve(host, port, family)
        self.guard.check(host, [addr[0] for _family, addr in found])
        return found
