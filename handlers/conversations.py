"""Conversations: create, list, read, update, and the full details document."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from handlers.access import caller
from handlers.common import (
    NotFound,
    create_params,
    decode,
    decode_update,
    json_response,
    path_uuid,
    query_bool,
    query_int,
    update_params,
)
from handlers.idempotency import create_once
from handlers.pagination import cut_page, page_start
from queries import sql
from validation.requests import ConversationCreate, ConversationUpdate
from validation.responses import (
    Agent,
    Conversation,
    ConversationDetails,
    DetailedMessage,
    Message,
    Metadata,
    Recipient,
    RecipientState,
)

SCOPE = b"c"
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


async def create_conversation(request: Request) -> Response:
    body = await decode(request, ConversationCreate)
    params = create_params(body, json_fields=("metadata",))
    params["created_by"] = caller(request)
    return await create_once(
        request, body, lambda conn: sql.create_conversation.one(conn, Conversation, **params)
    )


async def list_conversations(request: Request) -> Response:
    """Newest first; `?archived=true|false` filters. An agent sees only its own."""
    archived = query_bool(request, "archived")
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after_created_at, after_id = page_start(request, SCOPE, descending=True)
    page = {"archived": archived, "after_created_at": after_created_at, "after_id": after_id}
    agent_id = caller(request)
    async with request.state.pool.connection() as conn:
        if agent_id is None:
            items = await sql.list_conversations.all(conn, Conversation, limit=limit + 1, **page)
        else:
            items = await sql.list_conversations_of_agent.all(
                conn, Conversation, agent_id=agent_id, limit=limit + 1, **page
            )
    headers = cut_page(request, SCOPE, items, limit, lambda item: (item.created_at, item.id))
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


async def get_details(request: Request) -> Response:
    """The conversation with every message (oldest first), its agents and counts.

    Five queries whatever the number of messages: the conversation, its
    messages, then the recipients, metadata and agents of exactly those.
    """
    conversation_id = path_uuid(request, "conversation_id")
    async with request.state.pool.connection() as conn:
        conversation = await sql.get_conversation.one(
            conn, Conversation, conversation_id=conversation_id
        )
        if conversation is None:
            raise NotFound("Conversation not found")
        messages = await sql.list_conversation_messages.all(
            conn, Message, conversation_id=conversation_id
        )
        message_ids = [m.id for m in messages]
        recipients = await sql.list_recipients_of_messages.all(
            conn, Recipient, message_ids=message_ids
        )
        metadata = await sql.list_metadata_of_messages.all(conn, Metadata, message_ids=message_ids)
        agent_ids = {m.sender_id for m in messages} | {r.recipient_id for r in recipients}
        agent_ids.discard(None)
        agents = await sql.list_agents.all(conn, Agent, agent_ids=list(agent_ids))

    states: defaultdict[UUID, list[RecipientState]] = defaultdict(list)
    for r in recipients:
        states[r.message_id].append(RecipientState(r.recipient_id, r.is_read, r.read_at))
    items: defaultdict[UUID, list[Metadata]] = defaultdict(list)
    for item in metadata:
        items[item.message_id].append(item)
    return json_response(
        ConversationDetails(
            *astuple(conversation),
            messages=[DetailedMessage(*astuple(m), states[m.id], items[m.id]) for m in messages],
            unique_agents=agents,
            total_messages=len(messages),
            unread_count=sum(not r.is_read for r in recipients),
        )
    )
