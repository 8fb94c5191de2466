"""Proxy headers: the scheme, host and address of a client, as a trusted reverse proxy reports them.

Behind a proxy (Caddy in compose, an ingress controller or a Gateway in
Kubernetes) the connection mailroom sees is the proxy's: plain HTTP, sometimes
under another Host. The proxy reports what the client used in
X-Forwarded-Proto and X-Forwarded-Host, and every absolute URL the service
builds (the Link header of a page, Starlette's trailing-slash redirects) is
built from them, but only when the connection comes from an address in
FORWARDED_ALLOW_IPS: from anyone else the headers are claims and are ignored.

uvicorn's own proxy support (--proxy-headers) reads the same variable but
applies X-Forwarded-Proto only, never X-Forwarded-Host, and replaces the
connection's address with the X-Forwarded-For one before the app sees it, so
the app could no longer tell whether the proxy is trusted. mailroom therefore
runs uvicorn with --no-proxy-headers (the image's CMD, `python service.py`) and
decides here, once. The client's address from X-Forwarded-For is kept apart
(`client_address`), for the one limit keyed on it: failed authentications
(access/authentication.py); the connection's own address stays in the scope.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Receive, Scope, Send

EVERYONE = "*"
# uvicorn's default: a proxy on the same host (a sidecar, or Caddy on a laptop).
LOCAL = ("127.0.0.1", "::1")
SCHEMES = {b"http": "http", b"https": "https"}
# A host name, an IPv4 address or a bracketed IPv6 address, with an optional port.
HOST = re.compile(rb"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CLIENT = "mailroom.client"  # scope key: the client's address a trusted proxy forwarded


def trusted_proxies(text: str) -> tuple[str, ...]:
    """FORWARDED_ALLOW_IPS: `*`, or IP addresses and networks separated by commas
    (empty trusts no one)."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if EVERYONE in items:
        if items != (EVERYONE,):
            raise ValueError("`*` trusts every address: write it alone or leave it out")
        return items
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network; write addresses and networks "
                "separated by commas (10.0.0.0/8,192.168.1.5), or * to trust every address"
            ) from None
    return items


class ForwardedHeaders:
    """Applies X-Forwarded-Proto and X-Forwarded-Host of requests from a trusted proxy.

    Each header counts only when it comes once with one well-formed value: a
    list ("https, http"), which proxies that append rather than replace would
    send, names hops this service cannot verify, and is ignored.
    """

    def __init__(self, app: ASGIApp, trusted: tuple[str, ...]) -> None:
        self.app = app
        self.everyone = trusted == (EVERYONE,)
        self.networks: tuple[Network, ...] = (
            () if self.everyone else tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        )

    def trusts(self, client: tuple[str, int] | None) -> bool:
        if self.everyone:
            return True
        if client is None or not self.networks:
            return False
        return self.is_proxy(client[0])

    def is_proxy(self, text: str) -> bool:
        """Whether an address (text) lies in FORWARDED_ALLOW_IPS's networks."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:  # a Unix socket's peer, or a test client's name
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers this way
        return any(address in network for network in self.networks)

    def forwarded_client(self, scope: Scope) -> str | None:
        """The client's address in X-Forwarded-For: walking from the right (the hop the
        proxy added), the first address that is not itself a trusted proxy. With `*`
        every hop is trusted, so the rightmost: the one the nearest proxy saw."""
        hops = [
            hop.strip()
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None  # a hop that is not an address: believe none of them
            if self.everyone or not self.is_proxy(hop):
                return hop
        return hops[0] if hops else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.trusts(scope.get("client")):
            apply_forwarded(scope)
            client = self.forwarded_client(scope)
            if client is not None:
                scope[CLIENT] = client
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """Where a request comes from: the address a trusted proxy forwarded, else the peer's."""
    forwarded = scope.get(CLIENT)
    if forwarded is not None:
        return forwarded
    client = scope.get("client")
    return client[0] if client else "-"


def apply_forwarded(scope: Scope) -> None:
    """Set the scope's scheme and Host header from the forwarded ones, where valid."""
    protos, hosts = [], []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            protos.append(value.strip().lower())
        elif name == b"x-forwarded-host":
            hosts.append(value.strip())
    if len(protos) == 1 and protos[0] in SCHEMES:
        scope["scheme"] = SCHEMES[protos[0]]
    if len(hosts) == 1 and HOST.fullmatch(hosts[0]):
        headers = [(name, value) for name, value in scope["headers"] if name != b"host"]
        scope["headers"] = [*headers, (b"host", hosts[0])]
