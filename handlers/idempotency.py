"""Idempotent creation: the `Idempotency-Key` header of POST /messages, /agents, /conversations.

The first request with a key stores its resource and, in the same
transaction, the key with a hash of the body and the 201 response. A retry
with the same key and body gets that response again (same id) and stores
nothing; the same key with another body is 422. Two requests racing with one
key, on any replicas, meet at the key's primary key: the second waits for the
first's transaction, then answers with its response. A request that fails
(409, 422, 503) stores no key, so it can be retried.

Keys are scoped by caller and route: two agents (or the admin) using the same
key never meet. With MAILROOM_AUTH=off every request is the same caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import principal
from handlers.bodies import ENCODER, json_response
from queries import sql
from validation.errors import InvalidInput

HEADER = "idempotency-key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
CREATED = 201
Insert = Callable[[AsyncConnection], Awaitable[Any]]


class _Stored(msgspec.Struct, frozen=True):
    """Row of get_idempotent_response."""

    request_hash: bytes
    status: int | None
    response: bytes | None


def _key(request: Request) -> str | None:
    """The Idempotency-Key header: 1 to 255 printable ASCII characters, or 422."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not (0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise InvalidInput.at(
            ["header", HEADER], f"Must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


async def create_once(request: Request, body: msgspec.Struct, insert: Insert) -> Response:
    """201 with what `insert` stores; with an Idempotency-Key, at most once per key."""
    key = _key(request)
    pool = request.state.pool
    if key is None:
        async with pool.connection() as conn:
            created = await insert(conn)
        return json_response(created, CREATED)
    scope = f"{principal(request)} {request.method} {request.url.path}"
    request_hash = hashlib.sha256(ENCODER.encode(body)).digest()
    names = {"scope": scope, "key": key}
    async with pool.connection() as conn, conn.transaction():
        if await sql.claim_idempotency_key.value(conn, request_hash=request_hash, **names):
            response = ENCODER.encode(await insert(conn))
            await sql.save_idempotent_response.run(conn, status=CREATED, response=response, **names)
            return Response(response, CREATED, media_type="application/json")
        stored = await sql.get_idempotent_response.one(conn, _Stored, **names)
    if stored is None or stored.status is None or stored.response is None:
        # Purged between the two statements: rare enough to ask for a retry.
        raise InvalidInput.at(["header", HEADER], "This key is being reused; retry the request")
    if stored.request_hash != request_hash:
        raise InvalidInput.at(
            ["header", HEADER], "This key was already used with a different request body"
        )
    return Response(
        stored.response,
        stored.status,
        headers={REPLAYED: "true"},
        media_type="application/json",
    )
