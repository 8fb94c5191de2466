"""The HTTP client of the dispatchers: httpx over a connection pool that checks every address.

httpx (a runtime dependency for this alone) sends the request; underneath,
httpcore's pool opens its TCP connections through `CheckedBackend`, which
resolves the host itself, refuses the whole name when any address is internal
(webhooks/addresses.py), and connects to an address it checked. TLS still
uses the URL's host name for SNI and certificate checks, and connections are
pooled by that name, so no connection made for one name serves another.
"""

from __future__ import annotations

import ssl
import typing

import httpcore
import httpx

from webhooks.addresses import allowed_addresses


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses webhooks may reach; RefusedAddress otherwise."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await allowed_addresses(host, port, self.allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        raise error or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never sent over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over httpcore's pool with the checking backend (no proxies)."""

    def __init__(self, allow_private: bool, max_connections: int) -> None:
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=CheckedBackend(allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self.pool.handle_async_request(core_request)
        except httpcore.TimeoutException as error:
            raise httpx.TimeoutException(str(error) or "timed out", request=request) from error
        except (httpcore.NetworkError, httpcore.ProtocolError) as error:
            raise httpx.TransportError(str(error) or type(error).__name__) from error
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


class _Stream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self.stream = stream

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        async for part in self.stream:
            yield part

    async def aclose(self) -> None:
        close = getattr(self.stream, "aclose", None)
        if close is not None:
            await close()


def make_client(allow_private: bool, max_connections: int, timeout: float) -> httpx.AsyncClient:
    """The dispatchers' client: no redirects, no proxies from the environment, no cookies kept."""
    return httpx.AsyncClient(
        transport=CheckedTransport(allow_private, max_connections),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
        headers={"user-agent": "mailroom-webhooks"},
    )
