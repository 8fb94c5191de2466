"""Agents: register, read and update, and issue API keys."""

from __future__ import annotations

from uuid import UUID

import msgspec
from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from access.keys import key_digest, new_api_key
from handlers.bodies import decode, decode_update, json_response
from handlers.http_errors import NotFound
from handlers.idempotency import REPLAYED, create_once
from handlers.pagination import cut_name_page, name_page_start
from handlers.params import path_uuid, query
from queries import sql
from queries.params import create_params, update_params
from validation.query_params import AgentsQuery
from validation.requests import AgentCreate, AgentUpdate
from validation.responses import Agent, AgentCreated, ApiKey, DirectoryEntry

SCOPE = b"a"


class _DirectoryRow(msgspec.Struct, frozen=True):
    """Row of list_directory: the entry and its sort key."""

    id: UUID
    agent_name: str
    created_at: str
    sort_name: str


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
    """The directory: every agent by name (ignoring case) then id; `?name=` a prefix."""
    asked = query(request, AgentsQuery)
    after_name, after_id = name_page_start(request, SCOPE, asked.cursor)
    async with request.state.pool.connection() as conn:
        rows = await sql.list_directory.all(
            conn,
            _DirectoryRow,
            prefix=asked.name or "",
            after_name=after_name,
            after_id=after_id,
            limit=asked.limit + 1,
        )
    headers = cut_name_page(request, SCOPE, rows, asked.limit, lambda row: (row.sort_name, row.id))
    return json_response(
        [DirectoryEntry(row.id, row.agent_name, row.created_at) for row in rows], headers=headers
    )


async def get_agent(request: Request) -> Response:
    agent_id = path_uuid(request, "agent_id")
    async with request.state.pool.connection() as conn:
        agent = await sql.get_agent.one(conn, Agent, agent_id=agent_id)
    if agent is None:
        raise NotFound("Agent not found")
    return json_response(agent)


async def update_agent(request: Request) -> Response:
    agent_id = path_uuid(request, "agent_id")
    body = await decode_update(request, AgentUpdate)
    async with request.state.pool.connection() as conn:
        agent = await sql.update_agent.one(conn, Agent, agent_id=agent_id, **update_params(body))
    if agent is None:
        raise NotFound("Agent not found")
    return json_response(agent)


async def rotate_key(request: Request) -> Response:
    """Issue a new API key for the agent; the previous one stops working at once.

    Not served with MAILROOM_AUTH=off (404 like an unknown route): a key made
    by an open service would outlive the switch to authentication.
    """
    if not request.state.settings.auth_required:
        raise NotFound("Not Found")
    agent_id = path_uuid(request, "agent_id")
    key = new_api_key()
    async with request.state.pool.connection() as conn:
        updated = await sql.set_api_key.value(conn, agent_id=agent_id, digest=key_digest(key))
    if updated is None:
        raise NotFound("Agent not found")
    return json_response(ApiKey(agent_id=agent_id, api_key=key))
