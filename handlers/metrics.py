"""GET /metrics: the Prometheus text, for the admin key or a scraper's METRICS_TOKEN."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from handlers.access import authenticate
from handlers.common import Forbidden, Unauthorized
from operations.metrics import CONTENT_TYPE, exposition


def bearer_token_matches(request: Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (constant-time compare)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


async def may_scrape(request: Request) -> None:
    """Let through METRICS_TOKEN or, with auth on, the admin key; an agent's key is 403.

    With auth off and no METRICS_TOKEN the metrics are open, like everything else.
    """
    settings = request.state.settings
    token = settings.metrics_token
    if token is not None and bearer_token_matches(request, token):
        return
    if not settings.auth_required:
        if token is None:
            return
        raise Unauthorized("Send the metrics token as 'Authorization: Bearer <token>'")
    if await authenticate(request) is not None:
        raise Forbidden("Only the operator (admin key) or the metrics token may read metrics")


async def metrics(request: Request) -> Response:
    await may_scrape(request)
    return Response(exposition(request.state.pool), media_type=CONTENT_TYPE)
