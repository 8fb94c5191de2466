"""Pulling: an agent's mailbox, its unread messages, and marking them read."""

from __future__ import annotations

import asyncio
from uuid import UUID

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from access.authentication import caller_key, key_is_current
from access.limits import hold_wait_slot
from handlers.bodies import decode, json_response
from handlers.http_errors import NotFound, Unauthorized
from handlers.pagination import cut_page, page_start
from handlers.params import path_uuid, query
from operations import metrics
from queries import Query, sql
from validation.query_params import MailboxQuery, UnreadQuery
from validation.requests import MarkReadRequest
from validation.responses import MailboxItem, MarkRead

SCOPE = b"m"
RETIRED_AGENT = "Agent not found: it was retired, and a retired agent receives no messages"
DIRECTIONS = {"all": (True, True), "sent": (True, False), "received": (False, True)}


def _sort_key(item: MailboxItem) -> tuple[str, UUID]:
    return item.sent_at, item.id


async def _read_page(
    request: Request,
    page: MailboxQuery | UnreadQuery,
    newest_first: Query,
    oldest_first: Query,
    **filters: object,
) -> tuple[list[MailboxItem], dict[str, str] | None]:
    """One page of a mailbox query and its Link header; 404 for an unknown agent."""
    agent_id = path_uuid(request, "agent_id")
    descending = page.order == "desc"
    after_sent_at, after_id = page_start(request, SCOPE, page.cursor, descending)
    statement = newest_first if descending else oldest_first
    async with request.state.pool.connection() as conn:
        rows = await statement.page(
            conn,
            MailboxItem,
            agent_id=agent_id,
            after_sent_at=after_sent_at,
            after_id=after_id,
            limit=page.limit + 1,
            max_bytes=request.state.settings.max_response_bytes,
            **filters,
        )
        if not rows and not await sql.agent_exists.value(conn, agent_id=agent_id):
            raise NotFound("Agent not found")
    return cut_page(request, SCOPE, rows, page.limit, _sort_key)


async def list_messages(request: Request) -> Response:
    """Everything the agent sent and/or received (`?direction=`), newest first."""
    page = query(request, MailboxQuery)
    sent, received = DIRECTIONS[page.direction]
    items, headers = await _read_page(
        request, page, sql.list_mailbox_desc, sql.list_mailbox_asc, sent=sent, received=received
    )
    return json_response(items, headers=headers)


async def list_unread(request: Request) -> Response:
    """Received messages not yet read; reading them changes nothing.

    With `?wait=N` (seconds, up to 60) an empty page is not answered at once:
    the request waits until a message arrives (woken by the listener, whichever
    replica stored it), the N seconds pass, or the server shuts down.
    """
    page = query(request, UnreadQuery)
    if not page.wait:
        items, headers = await _read_page(request, page, sql.list_unread_desc, sql.list_unread_asc)
        return json_response(items, headers=headers)
    agent_id = path_uuid(request, "agent_id")
    deadline = asyncio.get_running_loop().time() + page.wait
    # Subscribe before the first read, so a message stored in between still wakes us.
    with hold_wait_slot(request, agent_id) as waiter:
        # A retired agent gets no new mail: nothing to wait for.
        async with request.state.pool.connection() as conn:
            if await sql.agent_is_active.value(conn, agent_id=agent_id) is False:
                raise NotFound(RETIRED_AGENT)
        items, headers = await _read_page(request, page, sql.list_unread_desc, sql.list_unread_asc)
        newest_first = page.order == "desc"
        start = page_start(request, SCOPE, page.cursor, newest_first)
        while not items and not waiter.closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await waiter.wait(remaining):
                break
            waiter.take()
            # The same page, read with every waiter woken in this turn (queries/wakeups.py).
            rows = await request.state.wakeup_reads.unread(
                agent_id, start, page.limit + 1, newest_first
            )
            items, headers = cut_page(request, SCOPE, rows, page.limit, _sort_key)
    if waiter.retired:
        raise NotFound(RETIRED_AGENT)
    key = caller_key(request)
    if key is not None and not await key_is_current(request.state.pool, agent_id, key):
        raise Unauthorized("This API key was replaced while the request waited")
    return json_response(items, headers=headers)


class _Marked(msgspec.Struct, frozen=True):
    """Row of mark_read."""

    agent_exists: bool
    updated_count: int


async def mark_read(request: Request) -> Response:
    """Mark every unread message received up to `read_up_to_date` (inclusive) as read."""
    agent_id = path_uuid(request, "agent_id")
    body = await decode(request, MarkReadRequest)
    async with request.state.pool.connection() as conn:
        marked = await sql.mark_read.one(
            conn, _Marked, agent_id=agent_id, read_up_to_date=body.instant()
        )
    assert marked is not None  # the statement always returns one row
    if not marked.agent_exists:
        raise NotFound("Agent not found")
    count = marked.updated_count
    metrics.MARKED_READ.inc(count)
    return json_response(
        MarkRead(
            updated_count=count, message=f"Marked {count} messages as read for agent {agent_id}"
        )
    )
