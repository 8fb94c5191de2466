"""The one row a request names: found, or 404 with a sentence saying what is missing."""

from __future__ import annotations

from typing import Any, TypeVar

from psycopg import AsyncConnection

from handlers.http_errors import NotFound
from queries import Query

T = TypeVar("T")


async def one_or_404(
    query: Query, conn: AsyncConnection, row: type[T], missing: str, /, **params: Any
) -> T:
    """The row `query` finds, or 404 with `missing` as its detail ("Agent not found")."""
    found = await query.one(conn, row, **params)
    if found is None:
        raise NotFound(missing)
    return found
