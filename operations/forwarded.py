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

from starlette.types import Scope

EVERYONE = "*"
# uvicorn's default: a proxy on the same host (a sidecar, or Caddy on a laptop).
LOCAL = ("127.0.0.1", "::1")
SCHEMES = {b"http": "http", b"https": "https"}
# A host name, an IPv4 address or a bracketed IPv6 address, with an optional port.
HOST = re.compile(rb"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KNOWN_PEERS = 1024  # peers whose verdict is kept; past that the memory starts again
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


class TrustedProxies:
    """Applies X-Forwarded-Proto and X-Forwarded-Host of requests from a trusted proxy.

    Each header counts only when it comes once with one well-formed value: a
    list ("https, http"), which proxies that append rather than replace would
    send, names hops this service cannot verify, and is ignored. The request
    layer (operations/middleware.py) calls `apply` on each request's scope.
    """

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self.everyone = trusted == (EVERYONE,)
        self.networks: tuple[Network, ...] = (
            () if self.everyone else tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        )
        # Peer address -> whether it is a proxy: parsing it costs a request a few per cent
        # of its time, and a worker sees the same few peers (its proxies) again and again.
        self._peers: dict[str, bool] = {}

    def trusts(self, client: tuple[str, int] | None) -> bool:
        if self.everyone:
            return True
        if client is None or not self.networks:
            return False
        peer = client[0]
        verdict = self._peers.get(peer)
        if verdict is None:
            if len(self._peers) >= KNOWN_PEERS:
                self._peers.clear()
            verdict = self._peers[peer] = self.is_proxy(peer)
        return verdict

    def is_proxy(self, text: str) -> bool:
        """Whether an address (text) lies in FORWARDED_ALLOW_IPS's networks."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:  # a Unix socket's peer, or a test client's name
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers this way
        return any(address in network for network in self.networks)

    def forwarded_client(self, values: list[bytes]) -> str | None:
        """The client's address in X-Forwarded-For (its `values`): walking from the right
        (the hop the proxy added), the first address that is not itself a trusted proxy.
        With `*` every hop is trusted, so the rightmost: the one the nearest proxy saw."""
        hops = [hop.strip() for value in values for hop in value.decode("latin-1").split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None  # a hop that is not an address: believe none of them
            if self.everyone or not self.is_proxy(hop):
                return hop
        return hops[0] if hops else None

    def apply(self, scope: Scope) -> None:
        """From a trusted proxy: the scheme and Host the client used, in the scope, and
        the client's address kept apart (`client_address`)."""
        if not self.trusts(scope.get("client")):
            return
        protos, hosts, hops = [], [], []
        for name, value in scope["headers"]:  # one pass: most requests have none of them
            if name == b"x-forwarded-for":
                hops.append(value)
            elif name == b"x-forwarded-proto":
                protos.append(value.strip().lower())
            elif name == b"x-forwarded-host":
                hosts.append(value.strip())
        if len(protos) == 1 and protos[0] in SCHEMES:
            scope["scheme"] = SCHEMES[protos[0]]
        if len(hosts) == 1 and HOST.fullmatch(hosts[0]):
            headers = [(name, value) for name, value in scope["headers"] if name != b"host"]
            scope["headers"] = [*headers, (b"host", hosts[0])]
        if hops:
            client = self.forwarded_client(hops)
            if client is not None:
                scope[CLIENT] = client


def client_address(scope: Scope) -> str:
    """Where a request comes from: the address a trusted proxy forwarded, else the peer's."""
    forwarded = scope.get(CLIENT)
    if forwarded is not None:
        return forwarded
    client = scope.get("client")
    return client[0] if client else "-"
