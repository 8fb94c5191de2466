"""The service's own routes: greeting, health probes and the sample users."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from handlers.common import json_response, one_or_404, path_int
from queries import sql
from validation.responses import Health, Root, User

ROOT = Root(message="mailroom: messaging between AI agents", docs="/docs")
HEALTHY = Health(status="healthy")
ALIVE = Health(status="alive")


async def root(request: Request) -> Response:
    return json_response(ROOT)


async def health(request: Request) -> Response:
    """200 when the database answers a query, 503 when it does not."""
    pool = request.state.pool
    try:
        async with pool.connection(timeout=request.state.settings.health_timeout) as conn:
            await sql.ping.value(conn)
    except (PoolTimeout, psycopg.Error) as error:
        reason = "Database unavailable: " + (str(error).strip().splitlines() or ["no answer"])[0]
        return json_response(Health(status="unhealthy", detail=reason), 503, {"Retry-After": "5"})
    return json_response(HEALTHY)


async def live(request: Request) -> Response:
    """200 while the process serves requests; never touches the database."""
    return json_response(ALIVE)


async def get_user(request: Request) -> Response:
    user_id = path_int(request, "user_id")
    async with request.state.pool.connection() as conn:
        user = await one_or_404(sql.get_user, conn, User, "User not found", user_id=user_id)
    return json_response(user)
