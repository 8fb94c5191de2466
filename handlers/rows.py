"""The one row a request names: read or updated, or 404 with a sentence saying what is missing."""

from __future__ import annotations

from typing import Any, TypeVar

from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import decode_update, json_response
from handlers.http_errors import NotFound
from handlers.params import path_uuid
from queries import Query
from queries.params import update_params
from validation.requests import Input

T = TypeVar("T")


async def one_or_404(
    query: Query, conn: AsyncConnection, row: type[T], missing: str, /, **params: Any
) -> T:
    """The row `query` finds, or 404 with `missing` as its detail ("Agent not found")."""
    found = await query.one(conn, row, **params)
    if found is None:
        raise NotFound(missing)
    return found


async def read_one(request: Request, query: Query, row: type[T], missing: str, id_name: str) -> T:
    """The row named by the path parameter `id_name` (a UUID), or 404 `missing`."""
    resource_id = path_uuid(request, id_name)
    async with request.state.pool.connection() as conn:
        return await one_or_404(query, conn, row, missing, **{id_name: resource_id})


async def update_one(
    request: Request,
    body: type[Input],
    query: Query,
    row: type[T],
    missing: str,
    id_name: str,
    json_fields: tuple[str, ...] = (),
) -> Response:
    """A partial update (PUT) of the row named by `id_name`: the changed row, or 404."""
    resource_id = path_uuid(request, id_name)
    params = update_params(await decode_update(request, body), json_fields)
    async with request.state.pool.connection() as conn:
        changed = await one_or_404(query, conn, row, missing, **{id_name: resource_id}, **params)
    return json_response(changed)
