"""GET /metrics: the Prometheus text, for a scraper holding the metrics token."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from handlers.common import Unauthorized
from operations.metrics import CONTENT_TYPE, exposition

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token_matches(request: Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (constant-time compare)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


def require_metrics_token(request: Request) -> None:
    """401 unless METRICS_TOKEN is unset or the request presents it."""
    token = request.state.settings.metrics_token
    if token is not None and not bearer_token_matches(request, token):
        raise Unauthorized("Missing or wrong metrics token (Authorization: Bearer)", CHALLENGE)


async def metrics(request: Request) -> Response:
    require_metrics_token(request)
    return Response(exposition(request.state.pool), media_type=CONTENT_TYPE)
