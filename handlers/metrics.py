"""GET /metrics: the Prometheus text, for the admin key or a scraper's METRICS_TOKEN."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from access.authentication import (
    authenticate,
    presented_key,
    refused_key,
)
from handlers.http_errors import Forbidden, Unauthorized
from operations.metrics import CONTENT_TYPE, exposition


async def may_scrape(request: Request) -> None:
    """Let through METRICS_TOKEN or, with auth on, the admin key; an agent's key is 403.

    With auth off and no METRICS_TOKEN the metrics are open, like everything else.
    A wrong token counts against the caller's address like a wrong key.
    """
    settings = request.state.settings
    token = settings.metrics_token
    if not settings.auth_required and token is None:
        return
    presented = presented_key(request)
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return
    if not settings.auth_required:
        missing = "Send the metrics token as 'Authorization: Bearer <token>'"
        raise Unauthorized(missing) if presented is None else refused_key(request, missing)
    if await authenticate(request) is not None:
        raise Forbidden("Only the operator (admin key) or the metrics token may read metrics")


async def metrics(request: Request) -> Response:
    await may_scrape(request)
    return Response(exposition(request.state.pool), media_type=CONTENT_TYPE)
