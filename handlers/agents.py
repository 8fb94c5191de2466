"""Agents: register, read and update."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from handlers.common import NotFound, decode, decode_update, json_response, path_uuid, update_params
from handlers.idempotency import create_once
from queries import sql
from validation.requests import AgentCreate, AgentUpdate
from validation.responses import Agent


async def create_agent(request: Request) -> Response:
    body = await decode(request, AgentCreate)
    return await create_once(
        request,
        body,
        lambda conn: sql.create_agent.one(
            conn, Agent, agent_name=body.agent_name, ip_address=body.ip_address, port=body.port
        ),
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
