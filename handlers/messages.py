"""Messages, their recipients and their key-value metadata."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from access.limits import take_recipients
from handlers.bodies import decode, decode_update, json_response
from handlers.http_errors import Conflict, Forbidden, NotFound
from handlers.idempotency import REPLAYED, create_once
from handlers.params import path_uuid
from handlers.rows import one_or_404, update_one
from operations import metrics
from queries import sql
from queries.params import create_params, update_params
from settings import Settings
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


def metadata_full(settings: Settings) -> Conflict:
    return Conflict(
        f"A message holds at most {settings.max_metadata_items} metadata items and "
        f"{settings.max_metadata_bytes} bytes of their keys and values "
        "(MAILROOM_MAX_METADATA_ITEMS, MAILROOM_MAX_METADATA_BYTES), and this one would "
        "pass that: change an existing item with PUT /agent_message_metadata/{metadata_id}"
    )


async def create_metadata(request: Request) -> Response:
    body = await decode(request, MetadataCreate)
    settings = request.state.settings
    async with request.state.pool.connection() as conn, conn.transaction():
        await sql.lock_message_metadata.run(conn, message_id=body.message_id)
        item = await sql.create_metadata.one(
            conn,
            Metadata,
            **create_params(body),
            max_items=settings.max_metadata_items,
            max_bytes=settings.max_metadata_bytes,
        )
    if item is None:
        raise metadata_full(settings)
    return json_response(item, 201)


async def update_metadata(request: Request) -> Response:
    metadata_id = path_uuid(request, "metadata_id")
    params = update_params(await decode_update(request, MetadataUpdate))
    settings = request.state.settings
    async with request.state.pool.connection() as conn, conn.transaction():
        if not await sql.lock_metadata_item.value(conn, metadata_id=metadata_id):
            raise NotFound("Metadata not found")
        item = await sql.update_metadata.one(
            conn, Metadata, metadata_id=metadata_id, max_bytes=settings.max_metadata_bytes, **params
        )
    if item is None:
        raise metadata_full(settings)
    return json_response(item)


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
