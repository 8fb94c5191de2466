"""The original design's sample users (GET /users/{user_id})."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import json_response
from handlers.http_errors import NotFound
from handlers.params import path_int
from queries import sql
from validation.responses import User


async def get_user(request: Request) -> Response:
    user_id = path_int(request, "user_id")
    async with request.state.pool.connection() as conn:
        user = await sql.get_user.one(conn, User, user_id=user_id)
    if user is None:
        raise NotFound("User not found")
    return json_response(user)
