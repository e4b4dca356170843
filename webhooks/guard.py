"""The SSRF guard: webhooks may reach only public addresses, unless MESH_WEBHOOK_ALLOW names a
network or host. Checked at registration and again at every delivery, where the HTTP client
connects only to the addresses the guard passed (its resolver filters them)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from webhooks.settings import Allowlist

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(OSError):
    """The target is not a public address and the allow-list does not name it."""


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class Guard:
    def __init__(self, allow: Allowlist) -> None:
        self.allow = allow

    def allowed(self, host: str, address: Address) -> bool:
        return public(address) or self.allow.allows_host(host) or self.allow.allows_address(address)

    def check_literal(self, host: str) -> None:
        """For a URL whose host is an IP address (the resolver is not asked for those)."""
        address = literal(host)
        if address is not None and not self.allowed(host, address):
            raise Refused(f"{host} is not a public address (MESH_WEBHOOK_ALLOW can allow it)")

    async def check(self, url: str) -> None:
        """Resolve the URL's host; Refused unless every address it has may be reached."""
        host = URL(url).host or ""
        if literal(host) is not None:
            self.check_literal(host)
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise Refused(f"host {host} does not resolve") from e
        for info in infos:
            address = literal(str(info[4][0]))
            if address is None or not self.allowed(host, address):
                raise Refused(
                    f"host {host} resolves to a private, loopback, link-local or reserved "
                    "address (MESH_WEBHOOK_ALLOW can allow it)"
                )

    def resolver(self) -> AbstractResolver:
        return GuardedResolver(self)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the guard allows (so the client connects
    to a checked address even if DNS changes between checks)."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if self._passes(host, r)]
        if not kept:
            raise Refused(
                f"host {host} resolves only to private, loopback, link-local or reserved "
                "addresses (MESH_WEBHOOK_ALLOW can allow them)"
            )
        return kept

    def _passes(self, host: str, result: Any) -> bool:
        address = literal(str(result["host"]))
        return address is not None and self._guard.allowed(host, address)

    async def close(self) -> None:
        await self._inner.close()
