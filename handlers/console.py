"""The operator console: one HTML page whose modules under /static/console/ call the API."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

PAGE = (Path(__file__).parent.parent / "static" / "console" / "index.html").read_bytes()


async def console(request: Request) -> Response:
    """The console's page; its Content-Security-Policy is set by the middleware."""
    return HTMLResponse(PAGE)
