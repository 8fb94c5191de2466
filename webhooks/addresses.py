"""Where a webhook may go: no loopback, private, link-local or other internal address (SSRF).

The rule is applied twice: when a URL is saved (a 422 saying why) and again
to every address a name resolves to, each time the dispatcher connects
(webhooks/transport.py), so a name that later resolves elsewhere (DNS
rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
RESOLVE_SECONDS = 5.0  # a name looked up when a URL is saved, at most


class RefusedAddress(Exception):
    """A webhook URL points where mailroom may not send requests; the text says why."""


def refusal(address: Address) -> str | None:
    """Why `address` may not be reached, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services such as 169.254.169.254 live)"
    if address.is_multicast:
        return "a multicast address"
    if address in UNIQUE_LOCAL:
        return "a unique-local IPv6 address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address that is not publicly routable"
    return None


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (a literal address is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise RefusedAddress(f"the host {host!r} does not resolve ({error.strerror})") from None
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def allowed_addresses(host: str, port: int, allow_private: bool) -> list[Address]:
    """The addresses to connect to for `host`; RefusedAddress when any of them is internal."""
    addresses = await resolve(host, port)
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                shown = host if host == str(address) else f"{host} ({address})"
                raise RefusedAddress(f"{shown} is {why}: webhooks may only reach public addresses")
    return addresses


def default_port(url: str) -> tuple[str, int]:
    """The host and port a webhook URL connects to."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme.lower() == "https" else 80)


async def check_url(url: str, allow_private: bool) -> None:
    """RefusedAddress when a URL's host is, or resolves to, an internal address, or does
    not resolve within RESOLVE_SECONDS."""
    host, port = default_port(url)
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await allowed_addresses(host, port, allow_private)
    except TimeoutError:
        raise RefusedAddress(
            f"the host {host!r} did not resolve within {RESOLVE_SECONDS:g} s"
        ) from None
