"""Agents: register, read and update, issue API keys, and retire them."""

from __future__ import annotations

import logging
from uuid import UUID

import msgspec
from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import caller
from access.keys import key_digest, new_api_key
from handlers.bodies import decode, json_response
from handlers.http_errors import NotFound
from handlers.idempotency import REPLAYED, create_once
from handlers.pagination import encode_name_cursor, fit, name_page_start, next_link
from handlers.params import path_uuid, query
from handlers.rows import one_or_404, read_one, update_one
from operations import metrics
from queries import sql
from queries.params import create_params
from validation.query_params import DirectoryQuery, RetireQuery
from validation.requests import AgentCreate, AgentUpdate
from validation.responses import Agent, AgentCreated, ApiKey, DirectoryEntry

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


async def create_agent(request: Request) -> Response:
    """Register an agent; with authentication on, the 201 carries its API key, once.

    Only the key's digest is stored, also under an Idempotency-Key, so a replay
    cannot show the first key again: it issues a new one instead (the first
    answer's key, which the client never saw, stops working).
    """
    body = await decode(request, AgentCreate)
    key = new_api_key() if request.state.settings.auth_required else None
    digest = None if key is None else key_digest(key)
    params = create_params(body)
    response = await create_once(
        request, body, lambda conn: sql.create_agent.one(conn, Agent, digest=digest, **params)
    )
    if key is None:
        return response
    agent = msgspec.json.decode(response.body, type=Agent)
    replayed = REPLAYED in response.headers
    if replayed:
        async with request.state.pool.connection() as conn:
            await sql.set_api_key.run(conn, agent_id=agent.id, digest=digest)
    created = AgentCreated(*astuple(agent), api_key=key)
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
    return json_response(await read_one(request, sql.get_agent, Agent, MISSING, "agent_id"))


async def update_agent(request: Request) -> Response:
    return await update_one(request, AgentUpdate, sql.update_agent, Agent, MISSING, "agent_id")


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
