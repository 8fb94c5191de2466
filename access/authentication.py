"""Authentication: the caller behind `Authorization: Bearer <key>`, and the guard of a route.

Every route of the operation table that is not public is wrapped in
`guard(handler, rule, bucket)`. The guard authenticates the caller (the
operator's admin token or an agent's API key), lets the admin through, holds
an agent to its rate limit and to the route's rule (access/rules.py), and only
then runs the handler: a denied request never reaches a write. With
MAILROOM_AUTH=off the guard passes every request straight on.

Failed keys are counted per client address (MAILROOM_AUTH_FAILURE_LIMIT a
minute): past that, each further wrong key from the address is answered 429,
so guessing keys costs time, while a valid key from it still passes. The
address is the connection's, or the one a proxy in FORWARDED_ALLOW_IPS
forwarded (operations/forwarded.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from uuid import UUID

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response

from access.keys import KEY_FORMAT, key_digest
from handlers.http_errors import TooManyRequests, Unauthorized
from operations.forwarded import client_address
from queries import sql

Handler = Callable[[Request], Awaitable[Response]]
Rule = Callable[[Request, UUID], Awaitable[None]]

PRINCIPAL = "mailroom.principal"  # scope key: "admin" or the agent's id, for logs and scopes
AGENT = "mailroom.agent"  # scope key: the calling agent's UUID, None for the admin
KEY = "mailroom.key"  # scope key: the digest of the calling agent's key
FAILED_KEYS = "failed-keys"  # the rate-limit kind of failed authentications, per address


def caller(request: Request) -> UUID | None:
    """The calling agent, or None for the admin and when authentication is off."""
    return request.scope.get(AGENT)


def caller_key(request: Request) -> bytes | None:
    """The digest of the calling agent's key; None for the admin or with auth off."""
    return request.scope.get(KEY)


def principal(request: Request) -> str:
    """Who is calling, as text: an agent's id, "admin", or "-" with authentication off."""
    return request.scope.get(PRINCIPAL, "-")


async def key_is_current(pool: AsyncConnectionPool, agent_id: UUID, digest: bytes) -> bool:
    """Whether the agent still holds the key: a long response re-checks before it goes on."""
    async with pool.connection() as conn:
        return bool(await sql.key_is_current.value(conn, agent_id=agent_id, digest=digest))


def presented_key(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, or None when there is none."""
    # The raw header list, not request.headers: every guarded request comes here,
    # and building Starlette's Headers for one look-up costs more than the look-up.
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            return key if scheme.lower() == "bearer" and key else None
    return None


def refused_key(request: Request, detail: str) -> Unauthorized | TooManyRequests:
    """The 401 for a key or token that is not valid, counted against the caller's address;
    429 once that address has used up its failed authentications. A valid key is never
    refused for its address's failures: a client that guesses cannot lock out the
    others behind the same address."""
    wait = request.state.rate_limits.take(client_address(request.scope), FAILED_KEYS)
    if wait:
        return TooManyRequests(
            f"Too many failed authentications from this address; retry in {wait} seconds "
            "with a valid key",
            {"Retry-After": str(wait)},
        )
    return Unauthorized(detail)


def bearer_key(request: Request) -> str:
    """The key of `Authorization: Bearer <key>`, or 401."""
    key = presented_key(request)
    if key is None:
        if "authorization" not in request.headers:
            raise Unauthorized("Not authenticated")
        raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'")
    return key


async def authenticate(request: Request) -> UUID | None:
    """The agent a Bearer key belongs to (its key's digest kept on the request), None for
    the admin token, 401, or 429 for a wrong key from an address that failed too often."""
    key = bearer_key(request)
    digest = key_digest(key)
    if hmac.compare_digest(digest, request.state.admin_digest):
        return None
    if not KEY_FORMAT.fullmatch(key):
        raise refused_key(request, "Invalid API key")
    async with request.state.pool.connection() as conn:
        agent_id = await sql.get_agent_by_key.value(conn, digest=digest)
    if agent_id is None:
        raise refused_key(request, "Invalid API key")
    request.scope[KEY] = digest
    return agent_id


def identify(request: Request, agent_id: UUID | None) -> None:
    """Record who is calling on the request: the rules, the limits and the log read it."""
    request.scope[AGENT] = agent_id
    request.scope[PRINCIPAL] = "admin" if agent_id is None else str(agent_id)


async def admit(request: Request, agent_id: UUID, rule: Rule, bucket: str | None) -> None:
    """Hold an agent to an operation: a token from its `bucket` (429 when empty), then
    `rule` (403/404). A REST request and a tool call of /mcp pass through here alike."""
    if bucket is not None:
        wait = request.state.rate_limits.take(agent_id, bucket)
        if wait:
            raise TooManyRequests(
                "Too many requests for this API key; retry later", {"Retry-After": str(wait)}
            )
    await rule(request, agent_id)


def guard(handler: Handler, rule: Rule, bucket: str | None) -> Handler:
    """`handler`, run only for the admin or for an agent that `rule` lets through.

    With a `bucket` (the operation's rate limit), an agent's request takes a
    token from it first (429 when it is empty), so requests over the limit
    cost no query of the rule.
    """

    async def guarded(request: Request) -> Response:
        if not request.state.settings.auth_required:
            return await handler(request)
        agent_id = await authenticate(request)
        identify(request, agent_id)
        if agent_id is not None:
            await admit(request, agent_id, rule, bucket)
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
