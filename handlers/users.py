"""The original design's sample users (GET /users/{user_id})."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import json_response
from handlers.params import path_int
from handlers.rows import one_or_404
from queries import sql
from validation.responses import User


async def get_user(request: Request) -> Response:
    user_id = path_int(request, "user_id")
    async with request.state.pool.connection() as conn:
        user = await one_or_404(sql.get_user, conn, User, "User not found", user_id=user_id)
    return json_response(user)
