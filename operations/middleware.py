"""The middleware: a request id, one log line and the metrics per request; security headers.

Pure ASGI (no BaseHTTPMiddleware), so streamed responses pass through untouched
and a request costs a few dictionary look-ups more, not a task.
"""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from operations import metrics
from operations.logs import REQUEST_ID, REQUEST_LINES, RequestLines

log = logging.getLogger(RequestLines.ACCESS)

HEADER = b"x-request-id"
# A client's id is kept when it is this: short, and safe in a log line and a header.
WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# The label of a request no route matched (404): raw paths would explode the label set.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
SCOPE_KEY = "mailroom.request_id"


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


class RequestTelemetry:
    """Gives each HTTP request an id (returned as X-Request-ID), then logs and counts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, route, status class) -> the label children, looked up once.
        self._children: dict[tuple[str, str, str], tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        scope[SCOPE_KEY] = rid  # the 500 handler (outside this middleware) reads it
        token = REQUEST_ID.set(rid)
        header = (HEADER, rid.encode())
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started, rid)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        route = route_template(scope)
        status_class = STATUS_CLASSES.get(status // 100, "other")
        key = (method, route, status_class)
        children = self._children.get(key)
        if children is None:
            children = (metrics.REQUESTS.labels(*key), metrics.LATENCY.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if log.isEnabledFor(logging.INFO):
            REQUEST_LINES.add(
                rid,
                {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "principal": scope.get("mailroom.principal"),
                },
            )


CONSOLE_PAGE, CONSOLE_FILES = "/console", "/static/console/"
# The console runs only its own files: no inline script or style, no other origin, no
# framing, no base tag, and no native form submission (a form posted before its module
# loaded would put the typed key in the URL).
CONSOLE_POLICY = b"default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every response, and `Cache-Control:
    no-store` on every response but the static files of the documentation pages.

    The console's page and files also carry CONSOLE_POLICY; its files are
    revalidated on every load (`no-cache`) so an upgrade never mixes versions.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        console_file = path.startswith(CONSOLE_FILES)
        console = console_file or path == CONSOLE_PAGE
        cacheable = path.startswith("/static/") and not console_file
        cache_control = b"no-cache" if console_file else b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-content-type-options", b"nosniff"))
                if console:
                    headers.append((b"content-security-policy", CONSOLE_POLICY))
                if not cacheable and all(name != b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", cache_control))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
