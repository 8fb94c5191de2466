"""Agents: register, list, read and update, issue API keys and webhook secrets, and retire them."""

from __future__ import annotations

import logging
from uuid import UUID

import msgspec
from msgspec import UNSET
from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import caller
from access.keys import key_digest, new_api_key
from handlers.bodies import decode, decode_update, json_response
from handlers.http_errors import NotFound
from handlers.idempotency import REPLAYED, create_once
from handlers.pagination import encode_name_cursor, fit, name_page_start, next_link
from handlers.params import path_uuid, query
from handlers.rows import one_or_404, read_one
from operations import metrics
from queries import sql
from queries.params import create_params, update_params
from validation.errors import InvalidInput
from validation.query_params import DirectoryQuery, RetireQuery
from validation.requests import AgentCreate, AgentUpdate
from validation.responses import (
    AgentCreated,
    AgentProfile,
    AgentUpdated,
    ApiKey,
    DirectoryEntry,
)
from webhooks.addresses import RefusedAddress, check_url
from webhooks.signing import new_secret

SCOPE = b"a"
MISSING = "Agent not found"
log = logging.getLogger("mailroom.agents")


class _DirectoryRow(msgspec.Struct, frozen=True):
    """Row of list_directory; the activity columns are NULL unless asked for."""

    id: UUID
    agent_name: str
    created_at: str
    unread_count: int | None
    last_active_at: str | None
    sort_name: str  # the cursor's sort key: the lower-cased name


class _KeyHolder(msgspec.Struct, frozen=True):
    """Row of set_api_key: the agent whose key was replaced."""

    id: UUID


async def webhook_secret_for(request: Request, url: str | None) -> str | None:
    """A new signing secret for a webhook URL being set, once its address is allowed;
    422 saying why when the URL points at an internal address."""
    if url is None:
        return None
    try:
        await check_url(url, request.state.settings.webhook_allow_private)
    except RefusedAddress as refused:
        raise InvalidInput.at(["body", "webhook_url"], f"Refused: {refused}") from None
    return new_secret()


async def create_agent(request: Request) -> Response:
    """Register an agent; with authentication on, the 201 carries its API key, once, and
    with a webhook_url, its webhook signing secret, once.

    Only the key's digest is stored, also under an Idempotency-Key, so a replay
    cannot show the first key again: it issues a new one instead (the first
    answer's key, which the client never saw, stops working). The webhook
    secret is stored (it signs) but never in the stored answer: a replay is
    given a new one likewise.
    """
    body = await decode(request, AgentCreate)
    secret = await webhook_secret_for(request, body.webhook_url)
    key = new_api_key() if request.state.settings.auth_required else None
    digest = None if key is None else key_digest(key)
    params = create_params(body)
    response = await create_once(
        request,
        body,
        lambda conn: sql.create_agent.one(
            conn, AgentProfile, digest=digest, webhook_secret=secret, **params
        ),
    )
    if key is None and secret is None:
        return response
    agent = msgspec.json.decode(response.body, type=AgentProfile)
    replayed = REPLAYED in response.headers
    if replayed:
        async with request.state.pool.connection() as conn, conn.transaction():
            if key is not None:
                await sql.set_api_key.run(conn, agent_id=agent.id, digest=digest)
            if secret is not None:
                await sql.set_webhook_secret.run(conn, agent_id=agent.id, secret=secret)
    created = AgentCreated(
        *astuple(agent),
        webhook_secret=UNSET if secret is None else secret,
        api_key=UNSET if key is None else key,
    )
    return json_response(created, 201, {REPLAYED: "true"} if replayed else None)


async def list_agents(request: Request) -> Response:
    """The directory: agents by name then id, `?name=` a case-insensitive prefix.

    The admin's items carry each agent's unread count and last activity (three
    index reads per agent of the page); an agent's key sees names only.
    """
    page = query(request, DirectoryQuery)
    limit, name = page.limit, page.name
    after_name, after_id = name_page_start(request, SCOPE, page.cursor)
    activity = caller(request) is None
    max_bytes = request.state.settings.max_response_bytes
    async with request.state.pool.connection() as conn:
        found = await sql.list_directory.page(
            conn,
            _DirectoryRow,
            prefix=name or "",
            after_name=after_name,
            after_id=after_id,
            activity=activity,
            limit=limit + 1,
            max_bytes=max_bytes,
        )
    rows, more = fit(found, limit, max_bytes)
    headers = None
    if more:
        last = rows[-1]
        cursor = encode_name_cursor(request.state.cursor_key, SCOPE, last.sort_name, last.id)
        headers = next_link(request, cursor)
    items = [
        DirectoryEntry(row.id, row.agent_name, row.created_at, row.unread_count, row.last_active_at)
        if activity
        else DirectoryEntry(row.id, row.agent_name, row.created_at)
        for row in rows
    ]
    return json_response(items, headers=headers)


async def get_agent(request: Request) -> Response:
    """The agent with its webhook: the caller is the agent itself or the admin."""
    agent = await read_one(request, sql.get_agent_profile, AgentProfile, MISSING, "agent_id")
    return json_response(agent)


async def update_agent(request: Request) -> Response:
    """Change an agent; a webhook_url sent issues a new webhook secret, returned this once."""
    agent_id = path_uuid(request, "agent_id")
    body = await decode_update(request, AgentUpdate)
    url = body.webhook_url if isinstance(body.webhook_url, str) else None
    secret = await webhook_secret_for(request, url)
    params = update_params(body)
    async with request.state.pool.connection() as conn:
        agent = await one_or_404(
            sql.update_agent,
            conn,
            AgentProfile,
            MISSING,
            agent_id=agent_id,
            webhook_secret=secret,
            **params,
        )
    return json_response(AgentUpdated(*astuple(agent), webhook_secret=secret or UNSET))


async def rotate_key(request: Request) -> Response:
    """Issue a new API key for the agent; the previous one stops working at once.

    Not served with MAILROOM_AUTH=off (404 like an unknown route): a key made
    by an open service would outlive the switch to authentication.
    """
    if not request.state.settings.auth_required:
        raise NotFound("Not Found")
    agent_id = path_uuid(request, "agent_id")
    key = new_api_key()
    digest = key_digest(key)
    async with request.state.pool.connection() as conn:
        await one_or_404(
            sql.set_api_key, conn, _KeyHolder, "Agent not found", agent_id=agent_id, digest=digest
        )
    return json_response(ApiKey(agent_id=agent_id, api_key=key))


class _Purged(msgspec.Struct, frozen=True):
    """Row of purge_agent: how many rows of each kind were erased or changed."""

    agents: int
    received_copies: int
    messages: int
    metadata: int
    idempotency_keys: int
    replies_unlinked: int


async def retire_agent(request: Request) -> Response:
    """Retire an agent (204): its key stops working, its streams and long-polls end, nothing
    new reaches it; its history stays with the other parties. Again: 204, nothing changes.

    With `?purge=true` (the admin) also erase what only it held, and its row: a later call
    is 404. docs/lifecycle.md has the whole rule.
    """
    agent_id = path_uuid(request, "agent_id")
    purge = query(request, RetireQuery).purge
    purged = None
    async with request.state.pool.connection() as conn, conn.transaction():
        if not await sql.retire_agent.value(conn, agent_id=agent_id):
            raise NotFound(MISSING)
        if purge:
            purged = await sql.purge_agent.one(conn, _Purged, agent_id=agent_id)
    # The other replicas hear it from the database at commit; this one ends its own at once.
    request.state.listener.retire(agent_id)
    metrics.AGENTS_RETIRED.labels(purged=str(purge).lower()).inc()
    if purged is None:
        log.info("retired agent %s", agent_id)
    else:
        log.info("retired and purged agent %s: %s", agent_id, msgspec.structs.asdict(purged))
    return Response(status_code=204)
