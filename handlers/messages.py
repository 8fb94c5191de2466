"""Messages, their recipients and their key-value metadata."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from access.limits import take_recipients
from handlers.bodies import decode, json_response
from handlers.http_errors import Conflict, Forbidden, NotFound
from handlers.idempotency import REPLAYED, create_once
from handlers.params import path_uuid
from handlers.rows import one_or_404, update_one
from operations import metrics
from queries import sql
from queries.params import create_params
from validation.requests import (
    MessageCreate,
    MessageUpdate,
    MetadataCreate,
    MetadataUpdate,
    RecipientCreate,
    RecipientUpdate,
)
from validation.responses import Agent, Message, MessageMetadata, Metadata, Recipient


async def create_message(request: Request) -> Response:
    """Store a message and, with recipient_ids, its recipient rows: all or nothing."""
    body = await decode(request, MessageCreate)
    take_recipients(request, len(set(body.recipient_ids or ())))
    params = create_params(body, json_fields=("msg_metadata",))
    response = await create_once(
        request, body, lambda conn: sql.create_message.one(conn, Message, **params)
    )
    if REPLAYED not in response.headers:  # a replay stored nothing
        metrics.MESSAGES_SENT.inc()
        metrics.RECIPIENTS.inc(len(body.recipient_ids or ()))
    return response


async def update_message(request: Request) -> Response:
    return await update_one(
        request, MessageUpdate, sql.update_message, Message, "Message not found", "message_id",
        json_fields=("msg_metadata",),
    )  # fmt: skip


async def create_recipient(request: Request) -> Response:
    body = await decode(request, RecipientCreate)
    take_recipients(request, 1)
    async with request.state.pool.connection() as conn:
        recipient = await sql.create_recipient.one(conn, Recipient, **create_params(body))
    if recipient is None:
        raise Conflict(f"Message {body.message_id} not found (message_id)")
    metrics.RECIPIENTS.inc()
    return json_response(recipient, 201)


async def update_recipient(request: Request) -> Response:
    message_id = path_uuid(request, "message_id")
    recipient_id = path_uuid(request, "recipient_id")
    body = await decode(request, RecipientUpdate)
    async with request.state.pool.connection() as conn:
        recipient = await one_or_404(
            sql.update_recipient,
            conn,
            Recipient,
            "Message recipient not found",
            message_id=message_id,
            recipient_id=recipient_id,
            is_read=body.is_read,
        )
    return json_response(recipient)


async def create_metadata(request: Request) -> Response:
    body = await decode(request, MetadataCreate)
    async with request.state.pool.connection() as conn:
        item = await sql.create_metadata.one(conn, Metadata, **create_params(body))
    return json_response(item, 201)


async def update_metadata(request: Request) -> Response:
    return await update_one(
        request, MetadataUpdate, sql.update_metadata, Metadata, "Metadata not found", "metadata_id"
    )


class _Access(msgspec.Struct, frozen=True):
    """Row of get_message_access."""

    message_exists: bool
    agent_exists: bool
    has_access: bool


async def get_message_metadata(request: Request) -> Response:
    """A message with its metadata, for an agent that sent or received it."""
    message_id = path_uuid(request, "message_id")
    agent_id = path_uuid(request, "agent_id")
    async with request.state.pool.connection() as conn:
        access = await sql.get_message_access.one(
            conn, _Access, message_id=message_id, agent_id=agent_id
        )
        assert access is not None  # the statement always returns one row
        if not access.message_exists:
            raise NotFound("Message not found")
        if not access.agent_exists:
            raise NotFound("Agent not found")
        if not access.has_access:
            raise Forbidden(f"Agent {agent_id} does not have access to this message")
        message = await sql.get_message.one(conn, Message, message_id=message_id)
        agent = await sql.get_agent.one(conn, Agent, agent_id=agent_id)
        items = await sql.list_message_metadata.all(conn, Metadata, message_id=message_id)
    assert message is not None and agent is not None
    return json_response(
        MessageMetadata(message_id=message_id, message=message, agent=agent, metadata_items=items)
    )
