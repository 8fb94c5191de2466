"""Conversations: create, list, read, update, and the full details document."""

from __future__ import annotations

from uuid import UUID

import msgspec
from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import caller
from handlers.bodies import decode, decode_update, json_response
from handlers.http_errors import NotFound
from handlers.idempotency import create_once
from handlers.pagination import cut_page, page_start
from handlers.params import path_uuid, query
from queries import sql
from queries.params import create_params, update_params
from validation.query_params import ConversationsQuery
from validation.requests import ConversationCreate, ConversationUpdate
from validation.responses import Agent, Conversation

SCOPE = b"c"


async def create_conversation(request: Request) -> Response:
    body = await decode(request, ConversationCreate)
    params = create_params(body, json_fields=("metadata",))
    params["created_by"] = caller(request)
    return await create_once(
        request, body, lambda conn: sql.create_conversation.one(conn, Conversation, **params)
    )


async def list_conversations(request: Request) -> Response:
    """Newest first; `?archived=true|false` filters. An agent sees only its own."""
    asked = query(request, ConversationsQuery)
    after_created_at, after_id = page_start(request, SCOPE, asked.cursor, descending=True)
    page = {
        "archived": asked.archived,
        "after_created_at": after_created_at,
        "after_id": after_id,
        "limit": asked.limit + 1,
    }
    agent_id = caller(request)
    async with request.state.pool.connection() as conn:
        if agent_id is None:
            items = await sql.list_conversations.all(conn, Conversation, **page)
        else:
            items = await sql.list_conversations_of_agent.all(
                conn, Conversation, agent_id=agent_id, **page
            )
    headers = cut_page(request, SCOPE, items, asked.limit, lambda item: (item.created_at, item.id))
    return json_response(items, headers=headers)


async def get_conversation(request: Request) -> Response:
    conversation_id = path_uuid(request, "conversation_id")
    async with request.state.pool.connection() as conn:
        conversation = await sql.get_conversation.one(
            conn, Conversation, conversation_id=conversation_id
        )
    if conversation is None:
        raise NotFound("Conversation not found")
    return json_response(conversation)


async def update_conversation(request: Request) -> Response:
    conversation_id = path_uuid(request, "conversation_id")
    body = await decode_update(request, ConversationUpdate)
    params = update_params(body, json_fields=("metadata",))
    async with request.state.pool.connection() as conn:
        conversation = await sql.update_conversation.one(
            conn, Conversation, conversation_id=conversation_id, **params
        )
    if conversation is None:
        raise NotFound("Conversation not found")
    return json_response(conversation)


class _Messages(msgspec.Struct, frozen=True):
    """Row of get_conversation_messages_json."""

    messages: str
    agent_ids: list[UUID]
    total_messages: int
    unread_count: int


class _Details(Conversation, frozen=True):
    """ConversationDetails as sent: `messages` is PostgreSQL's JSON, passed through."""

    messages: msgspec.Raw
    unique_agents: list[Agent]
    total_messages: int
    unread_count: int


async def get_details(request: Request) -> Response:
    """The conversation with every message (oldest first), its agents and counts.

    An agent gets the messages it sent or received, and the agents and counts
    of those: taking part in a conversation does not open other agents' mail,
    nor their addresses (ip_address and port are its own only).

    Three queries whatever the number of messages. PostgreSQL builds the
    messages, with their recipients and metadata, as one JSON array that goes
    out as it comes: none of those rows becomes a Python object (they were
    two thirds of this request's time).
    """
    conversation_id = path_uuid(request, "conversation_id")
    async with request.state.pool.connection() as conn:
        conversation = await sql.get_conversation.one(
            conn, Conversation, conversation_id=conversation_id
        )
        if conversation is None:
            raise NotFound("Conversation not found")
        found = await sql.get_conversation_messages_json.one(
            conn, _Messages, conversation_id=conversation_id, agent_id=caller(request)
        )
        assert found is not None  # an aggregate: always one row
        agents = await sql.list_agents.all(
            conn, Agent, agent_ids=found.agent_ids, viewer=caller(request)
        )
    return json_response(
        _Details(
            *astuple(conversation),
            messages=msgspec.Raw(found.messages),
            unique_agents=agents,
            total_messages=found.total_messages,
            unread_count=found.unread_count,
        )
    )
