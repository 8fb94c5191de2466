"""Conversations: create, list, read, update, and the full details document."""

from __future__ import annotations

from uuid import UUID

import msgspec
from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import caller
from handlers.bodies import decode, json_response
from handlers.idempotency import create_once
from handlers.pagination import cut_page, next_link, page_start, time_cursor
from handlers.params import path_uuid, query
from handlers.rows import one_or_404, read_one, update_one
from queries import sql
from queries.params import create_params
from validation.query_params import ConversationsQuery, DetailsQuery
from validation.requests import ConversationCreate, ConversationUpdate
from validation.responses import Agent, Conversation

SCOPE = b"c"
DETAILS_SCOPE = b"d"  # cursors of a details document's messages
ID, MISSING = "conversation_id", "Conversation not found"


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
        "max_bytes": request.state.settings.max_response_bytes,
    }
    agent_id = caller(request)
    async with request.state.pool.connection() as conn:
        if agent_id is None:
            rows = await sql.list_conversations.page(conn, Conversation, **page)
        else:
            rows = await sql.list_conversations_of_agent.page(
                conn, Conversation, agent_id=agent_id, **page
            )
    items, headers = cut_page(
        request, SCOPE, rows, asked.limit, lambda item: (item.created_at, item.id)
    )
    return json_response(items, headers=headers)


async def get_conversation(request: Request) -> Response:
    found = await read_one(request, sql.get_conversation, Conversation, MISSING, ID)
    return json_response(found)


async def update_conversation(request: Request) -> Response:
    return await update_one(
        request, ConversationUpdate, sql.update_conversation, Conversation, MISSING, ID,
        json_fields=("metadata",),
    )  # fmt: skip


class _Messages(msgspec.Struct, frozen=True):
    """Row of get_conversation_messages_json."""

    messages: str
    agent_ids: list[UUID]
    total_messages: int
    unread_count: int
    next_sent_at: str | None  # the sort key of the page's last message, when more follow
    next_id: UUID | None


class _Details(Conversation, frozen=True):
    """ConversationDetails as sent: `messages` is PostgreSQL's JSON, passed through."""

    messages: msgspec.Raw
    unique_agents: list[Agent]
    total_messages: int
    unread_count: int


async def get_details(request: Request) -> Response:
    """The conversation with a page of its messages (oldest first), its agents and counts.

    A page holds up to `?limit=` messages (1000 by default, the most) and stops
    early at MAILROOM_MAX_RESPONSE_BYTES; `Link: rel="next"` continues it. The
    agents and counts are the whole conversation's on every page, so a
    conversation within both bounds answers in one page, as it always did.

    An agent gets the messages it sent or received, and the agents and counts
    of those: taking part in a conversation does not open other agents' mail,
    nor their addresses (ip_address and port are its own only).

    Three queries whatever the number of messages. PostgreSQL builds the
    page's messages, with their recipients and metadata, as one JSON array
    that goes out as it comes: none of those rows becomes a Python object
    (they were two thirds of this request's time).
    """
    conversation_id = path_uuid(request, "conversation_id")
    asked = query(request, DetailsQuery)
    after_sent_at, after_id = page_start(request, DETAILS_SCOPE, asked.cursor, descending=False)
    async with request.state.pool.connection() as conn:
        conversation = await one_or_404(
            sql.get_conversation,
            conn,
            Conversation,
            "Conversation not found",
            conversation_id=conversation_id,
        )
        found = await sql.get_conversation_messages_json.one(
            conn,
            _Messages,
            conversation_id=conversation_id,
            agent_id=caller(request),
            after_sent_at=after_sent_at,
            after_id=after_id,
            limit=asked.limit,
            max_bytes=request.state.settings.max_response_bytes,
        )
        assert found is not None  # an aggregate: always one row
        agents = await sql.list_agents.all(
            conn, Agent, agent_ids=found.agent_ids, viewer=caller(request)
        )
    headers = None
    if found.next_sent_at is not None and found.next_id is not None:
        cursor = time_cursor(request, DETAILS_SCOPE, found.next_sent_at, found.next_id)
        headers = next_link(request, cursor)
    return json_response(
        _Details(
            *astuple(conversation),
            messages=msgspec.Raw(found.messages),
            unique_agents=agents,
            total_messages=found.total_messages,
            unread_count=found.unread_count,
        ),
        headers=headers,
    )
