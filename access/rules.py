"""The authorization rules of the operation table: which agent may call a route.

A rule reads what it needs (a path id, the decoded body, one row) and raises
403 without naming anything of another agent; a resource that does not exist
is 404 as it would be for the admin. The admin never meets a rule.
"""

from __future__ import annotations

from uuid import UUID

import msgspec
from starlette.requests import Request

from access.authentication import Rule
from handlers.bodies import decode, decode_update
from handlers.http_errors import Forbidden, NotFound
from handlers.params import path_uuid, query
from handlers.rows import one_or_404
from queries import Query, sql
from validation.query_params import RetireQuery
from validation.requests import (
    ConversationUpdate,
    Input,
    MessageCreate,
    MessageUpdate,
    MetadataCreate,
    MetadataUpdate,
    RecipientCreate,
)


async def any_principal(request: Request, agent_id: UUID) -> None:
    """Any valid key."""


async def admin_only(request: Request, agent_id: UUID) -> None:
    """Only the operator's admin token."""
    raise Forbidden("Only the operator (admin key) may do this")


def itself(name: str) -> Rule:
    """The agent named by the path parameter `name` must be the caller."""

    async def rule(request: Request, agent_id: UUID) -> None:
        if path_uuid(request, name) != agent_id:
            raise Forbidden("An agent may only do this for itself")

    rule.__doc__ = f"{{{name}}} is the caller"
    return rule


async def retires_itself(request: Request, agent_id: UUID) -> None:
    """{agent_id} is the caller, who may retire itself; only the admin may purge."""
    purge = query(request, RetireQuery).purge  # a bad value is 422 before a 403
    if path_uuid(request, "agent_id") != agent_id:
        raise Forbidden("An agent may only do this for itself")
    if purge:
        raise Forbidden("Only the operator (admin key) may purge an agent; retire it without purge")


async def _check_links(
    request: Request, agent_id: UUID, parent_id: UUID | None, conversation_id: UUID | None
) -> None:
    """A message may only reply to a message and join a conversation its sender can see.

    Ids that do not exist are left to the handler (409 naming the field).
    """
    if parent_id is None and conversation_id is None:
        return
    async with request.state.pool.connection() as conn:
        if parent_id is not None:
            party = await sql.get_message_party.value(conn, message_id=parent_id, agent_id=agent_id)
            if party is False:
                raise Forbidden("An agent may only reply to messages it sent or received")
        if conversation_id is not None:
            party = await sql.get_conversation_party.value(
                conn, conversation_id=conversation_id, agent_id=agent_id
            )
            if party is False:
                raise Forbidden("An agent may only post in conversations it takes part in")


async def sends_as_itself(request: Request, agent_id: UUID) -> None:
    """sender_id is the caller; the parent message and conversation are the caller's."""
    body = await decode(request, MessageCreate)
    if body.sender_id != agent_id:
        raise Forbidden("An agent may only send messages as itself (sender_id)")
    await _check_links(request, agent_id, body.parent_message_id, body.conversation_id)


class _Owner(msgspec.Struct, frozen=True):
    """Row of the owner queries: get_message_sender, get_metadata_owner,
    get_conversation_starter (NULL: nobody, e.g. the operator)."""

    owner: UUID | None


async def _owner(request: Request, query: Query, **params: object) -> _Owner | None:
    """The row naming who owns something, or None when there is no such thing."""
    async with request.state.pool.connection() as conn:
        return await query.one(conn, _Owner, **params)


async def _owned(
    request: Request, agent_id: UUID, query: Query, missing: str, refused: str, **params: object
) -> None:
    """404 `missing` when the thing does not exist, 403 `refused` when it is not the caller's."""
    async with request.state.pool.connection() as conn:
        found = await one_or_404(query, conn, _Owner, missing, **params)
    if found.owner != agent_id:
        raise Forbidden(refused)


async def sender_of_message(request: Request, agent_id: UUID) -> None:
    """{message_id} was sent by the caller, and the new links are the caller's."""
    message_id = path_uuid(request, "message_id")
    body = await decode_update(request, MessageUpdate)  # a bad body is 422 before a 404
    await _owned(
        request,
        agent_id,
        sql.get_message_sender,
        "Message not found",
        "An agent may only edit messages it sent",
        message_id=message_id,
    )
    await _check_links(
        request,
        agent_id,
        body.parent_message_id if isinstance(body.parent_message_id, UUID) else None,
        body.conversation_id if isinstance(body.conversation_id, UUID) else None,
    )


async def adds_to_own_message(request: Request, agent_id: UUID) -> None:
    """The message_id of the body was sent by the caller (a missing one is the handler's 409);
    the new recipient's copy starts unread: read state is the recipient's to change."""
    body = await decode(request, RecipientCreate)
    if body.is_read:
        raise Forbidden("Only the recipient may mark a message read (is_read)")
    found = await _owner(request, sql.get_message_sender, message_id=body.message_id)
    if found is not None and found.owner != agent_id:
        raise Forbidden("An agent may only add recipients to messages it sent")


async def annotates_own_mail(request: Request, agent_id: UUID) -> None:
    """agent_id is the caller, who sent or received the message of the body."""
    body = await decode(request, MetadataCreate)
    if body.agent_id != agent_id:
        raise Forbidden("An agent may only attach metadata as itself (agent_id)")
    async with request.state.pool.connection() as conn:
        party = await sql.get_message_party.value(
            conn, message_id=body.message_id, agent_id=agent_id
        )
    if party is False:
        raise Forbidden("An agent may only attach metadata to messages it sent or received")


def owner_of(
    id_name: str, body: type[Input], query: Query, missing: str, refused: str, doc: str
) -> Rule:
    """The caller owns the row named by {id_name}, as `query` says (its `owner` column).

    The body is decoded first, so a bad body is 422 before a 404 or a 403.
    """

    async def rule(request: Request, agent_id: UUID) -> None:
        resource_id = path_uuid(request, id_name)
        await decode_update(request, body)
        await _owned(request, agent_id, query, missing, refused, **{id_name: resource_id})

    rule.__doc__ = doc
    return rule


owner_of_metadata = owner_of(
    "metadata_id", MetadataUpdate, sql.get_metadata_owner, "Metadata not found",
    "An agent may only edit metadata it attached", "{metadata_id} was attached by the caller.",
)  # fmt: skip
starter_of_conversation = owner_of(
    "conversation_id", ConversationUpdate, sql.get_conversation_starter, "Conversation not found",
    "Only the agent that started a conversation may change it",
    "The caller started {conversation_id}: only it (and the admin) may change it.",
)  # fmt: skip


async def takes_part(request: Request, agent_id: UUID) -> None:
    """The caller started {conversation_id}, or sent or received a message in it."""
    conversation_id = path_uuid(request, "conversation_id")
    async with request.state.pool.connection() as conn:
        party = await sql.get_conversation_party.value(
            conn, conversation_id=conversation_id, agent_id=agent_id
        )
    if party is None:
        raise NotFound("Conversation not found")
    if not party:
        raise Forbidden("An agent may only see conversations it takes part in")
