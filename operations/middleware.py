"""The one layer around the router: a trusted proxy's headers, a request id, the security
headers, errors turned into responses, and one log line and the metrics per request.

Pure ASGI (no BaseHTTPMiddleware), so streamed responses pass through untouched,
and one layer, not several: each response start is copied once, with header tuples
built at import, and a request costs a few dictionary look-ups more, not a task.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from operations import metrics
from operations.forwarded import TrustedProxies
from operations.logs import REQUEST_ID, REQUEST_LINES, RequestLines

log = logging.getLogger(RequestLines.ACCESS)
errors_log = logging.getLogger("mailroom.errors")

HEADER = b"x-request-id"
# A client's id is kept when it is this: short, and safe in a log line and a header.
WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# The label of a request no route matched (404): raw paths would explode the label set.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
SCOPE_KEY = "mailroom.request_id"
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

CONSOLE_PAGE, CONSOLE_FILES, STATIC = "/console", "/static/console/", "/static/"
# The console runs only its own files: no inline script or style, no other origin, no
# framing, no base tag, and no native form submission (a form posted before its module
# loaded would put the typed key in the URL).
CONSOLE_POLICY = b"default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
NOSNIFF = (b"x-content-type-options", b"nosniff")
CSP = (b"content-security-policy", CONSOLE_POLICY)
NO_STORE = (b"cache-control", b"no-store")
NO_CACHE = (b"cache-control", b"no-cache")
CACHE_CONTROL = b"cache-control"
# What each kind of path gets: (headers always added, a Cache-Control added unless the
# response has its own). The documentation pages' static files may be cached; the
# console's files are revalidated on every load (`no-cache`) so an upgrade never mixes
# versions; everything else is `no-store`.
API_HEADERS = ((NOSNIFF,), NO_STORE)
CONSOLE_PAGE_HEADERS = ((NOSNIFF, CSP), NO_STORE)
CONSOLE_FILE_HEADERS = ((NOSNIFF, CSP), NO_CACHE)
STATIC_HEADERS = ((NOSNIFF,), None)


def handler_for(
    errors: Mapping[type[Exception], ExceptionHandler], error: Exception
) -> ExceptionHandler | None:
    """The handler of the nearest class of `error` that has one, as Starlette looks them up."""
    for kind in type(error).__mro__:
        handler = errors.get(kind)
        if handler is not None:
            return handler
    return None


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when well-formed, otherwise a new one."""
    for name, value in scope["headers"]:
        if name == HEADER:
            if WELL_FORMED.fullmatch(value):
                return value.decode()
            break
    return os.urandom(16).hex()  # 32 hex digits, a fifth of the cost of uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/agents/{agent_id}`), or UNMATCHED."""
    route = scope.get("route")
    return getattr(route, "path_format", UNMATCHED) if route is not None else UNMATCHED


def security_headers(path: str) -> tuple[tuple[tuple[bytes, bytes], ...], tuple | None]:
    """The headers a response to `path` carries: `X-Content-Type-Options: nosniff` on
    every response, `Cache-Control: no-store` on all but static files, and the console's
    page and files also CONSOLE_POLICY (with `no-cache` on its files)."""
    if path.startswith(STATIC):
        return CONSOLE_FILE_HEADERS if path.startswith(CONSOLE_FILES) else STATIC_HEADERS
    return CONSOLE_PAGE_HEADERS if path == CONSOLE_PAGE else API_HEADERS


class RequestLayer:
    """The one layer between the server and the router. For each HTTP request it
    applies a trusted proxy's headers (operations/forwarded.py), gives the request
    an id (returned as X-Request-ID) and the security headers of its path
    (security_headers), turns an exception into its response (`errors`, which must
    map `Exception`), then logs and counts the request.

    It stands in for Starlette's own two exception layers (Service in service.py):
    every await of every request passes through each frame around the router, and
    an open stream holds them for its life (docs/performance.md).
    """

    def __init__(
        self,
        app: ASGIApp,
        errors: Mapping[type[Exception], ExceptionHandler],
        proxies: TrustedProxies,
    ) -> None:
        self.app = app
        self.errors = errors
        self.unexpected = errors[Exception]  # the 500 of a bug
        self.proxies = proxies
        # (method, route, status) -> the label children, looked up once.
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.proxies.apply(scope)
        rid = request_id(scope)
        scope[SCOPE_KEY] = rid  # the error handlers and the tools of /mcp read it
        token = REQUEST_ID.set(rid)
        added, cache_control = security_headers(scope["path"])
        added = (*added, (HEADER, rid.encode()))
        status = 0  # until a response starts

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                if cache_control is not None and all(n != CACHE_CONTROL for n, _ in headers):
                    message = {**message, "headers": [*headers, *added, cache_control]}
                else:
                    message = {**message, "headers": [*headers, *added]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:
            if status:  # a response has begun (a stream): the server closes the connection
                errors_log.error(
                    "error after the response to %s %s began",
                    scope["method"],
                    scope["path"],
                    exc_info=error,
                    extra={"request_id": rid},
                )
                raise
            await self._answer(scope, receive, send_with_headers, error)
        finally:
            self._record(scope, status or 500, time.perf_counter() - started, rid)
            REQUEST_ID.reset(token)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
        """Send the response `errors` maps `error` to. An unexpected error, or a handler
        that failed, is answered by the `Exception` handler (500) and raised on to the
        server, as Starlette's own layer does: a test client raises it, uvicorn logs it
        and closes the connection."""
        request = Request(scope, receive)
        handler = handler_for(self.errors, error)
        try:
            if handler is None or handler is self.unexpected:
                raise error
            response = await handler(request, error)
        except Exception as unexpected:
            response = await self.unexpected(request, unexpected)
            await response(scope, receive, send)
            raise
        await response(scope, receive, send)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        method = scope["method"]
        if method not in METHODS:
            method = "OTHER"
        key = (method, route_template(scope), status)
        children = self._children.get(key)
        if children is None:
            label = (method, key[1], STATUS_CLASSES.get(status // 100, "other"))
            children = (metrics.REQUESTS.labels(*label), metrics.LATENCY.labels(*label))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if log.isEnabledFor(logging.INFO):
            REQUEST_LINES.add(rid, key, seconds, scope.get("mailroom.principal"))
