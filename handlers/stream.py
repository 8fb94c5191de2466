"""The live inbox: an agent's unread messages as Server-Sent Events, replayed then pushed.

A stream first sends every unread message after its resume position (the
`Last-Event-ID` header, else `?after=`, else the very beginning) from the
table, oldest first, then each new one as it arrives. It subscribes to the
listener *before* the first read, and every wake-up reads the table after the
last position sent, so nothing falls between replay and live and nothing is
sent twice. Event ids are the cursors of the pull endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from access.authentication import caller_key, key_is_current
from access.limits import hold_wait_slot
from handlers.bodies import ENCODER
from handlers.http_errors import NotFound
from handlers.mailbox import RETIRED_AGENT, SCOPE
from handlers.pagination import EPOCH, OLDEST, decode_cursor, encode_cursor, fit
from handlers.params import path_uuid, query
from queries import sql
from queries.listener import Key, Listener, Subscription
from queries.wakeups import WakeupReads
from validation.query_params import StreamQuery
from validation.responses import MailboxItem

BATCH = 500
ONE_MICROSECOND = timedelta(microseconds=1)
# Message ids a stream remembers having sent, to skip a late recipient row twice.
REMEMBERED = 1000
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Comments are single lines with no blank line after them: a blank line ends an event,
# and some clients (httpx-sse) then hand over an event with empty data, which breaks a
# client that parses every `message` event's data as JSON. For the same reason the
# reconnection time (`retry:`) rides on the stream's first event instead of a block of
# its own.
OPENING = b": connected\n"
HEARTBEAT = b": heartbeat\n"
RETRY = b"retry: 1000\n"
REVOKED = b'event: revoked\ndata: {"detail": "This API key was replaced"}\n\n'
SHUTDOWN = (
    b'event: shutdown\ndata: {"detail": "Server shutting down, reconnect with Last-Event-ID"}\n\n'
)
RETIRED = b'event: retired\ndata: {"detail": "This agent was retired; its stream has ended"}\n\n'
Position = tuple[datetime, UUID]


def _resume_position(request: Request) -> Position:
    """Where the stream starts: after Last-Event-ID, else after `?after=`, else the start."""
    key = request.state.cursor_key
    last_event_id = request.headers.get("last-event-id")
    if last_event_id:
        return decode_cursor(key, SCOPE, last_event_id, ("header", "last-event-id"))
    after = query(request, StreamQuery).after
    if after is not None:
        return decode_cursor(key, SCOPE, after, ("query", "after"))
    return OLDEST


class _SlotResponse(StreamingResponse):
    """A stream that gives its wait slot back however it ends, even before it started.

    It watches for the client leaving with one task of its own, which closes the
    waiter (the stream then ends at once, its last write going nowhere), instead
    of StreamingResponse's task group of two tasks and a cancel scope: an idle
    stream is mostly what it holds in memory, and a worker holds thousands.
    """

    def __init__(self, events: AsyncIterator[bytes], subscription: Subscription) -> None:
        super().__init__(events, media_type="text/event-stream", headers=HEADERS)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waiter = self.subscription.waiter

        async def until_disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            waiter.close()

        watcher = asyncio.ensure_future(until_disconnected())
        try:
            await self.stream_response(send)
        except OSError:
            pass  # the client left (ASGI 2.4 servers raise on a write after that)
        finally:
            watcher.cancel()
            self.subscription.release()


async def stream_messages(request: Request) -> Response:
    """Server-Sent Events of the agent's unread messages: replay, then live."""
    agent_id = path_uuid(request, "agent_id")
    position = _resume_position(request)
    state = request.state
    # Registered now, before the first read, so that nothing stored from here on is missed.
    subscription = hold_wait_slot(request, agent_id)
    try:
        async with state.pool.connection() as conn:
            active = await sql.agent_is_active.value(conn, agent_id=agent_id)
        if active is None:
            raise NotFound("Agent not found")
        if not active:
            raise NotFound(RETIRED_AGENT)
    except BaseException:
        subscription.release()
        raise
    events = _events(
        state.pool,
        state.wakeup_reads,
        state.listener,
        state.cursor_key,
        state.settings.stream_heartbeat,
        state.settings.max_response_bytes,
        agent_id,
        position,
        caller_key(request),
        subscription,
    )
    return _SlotResponse(events, subscription)


def _event(cursor_key: bytes, item: MailboxItem, at: Position) -> bytes:
    cursor = encode_cursor(cursor_key, SCOPE, at[0], at[1])
    return b"id: %s\nevent: message\ndata: %s\n\n" % (cursor.encode(), ENCODER.encode(item))


def _position(item: MailboxItem) -> Position:
    return datetime.fromisoformat(item.sent_at), item.id


async def _read_late(
    pool: AsyncConnectionPool, agent_id: UUID, late: list[UUID]
) -> list[MailboxItem]:
    """The late items (see _late) still unread."""
    async with pool.connection() as conn:
        found = []
        for message_id in late:
            item = await sql.get_unread_item.one(
                conn, MailboxItem, agent_id=agent_id, message_id=message_id
            )
            if item is not None:
                found.append(item)
    return found


def _late(keys: list[Key], position: Position, sent: dict[UUID, None]) -> list[UUID]:
    """Notified messages sorted at or before `position` and not sent yet.

    Only a recipient added later to an older message (POST /message_recipients)
    lands behind a stream's position: create_message commits an inbox's rows in
    sent_at order.
    """
    # In microseconds, as the keys are: one conversion a wake-up, not one a key.
    at = ((position[0] - EPOCH) // ONE_MICROSECOND, position[1])
    return [
        message_id
        for micros, message_id in keys
        if (micros, message_id) <= at and message_id not in sent
    ]


async def _events(
    pool: AsyncConnectionPool,
    reads: WakeupReads,
    listener: Listener,
    cursor_key: bytes,
    heartbeat: float,
    max_bytes: int,
    agent_id: UUID,
    position: Position,
    key: bytes | None,
    subscription: Subscription,
) -> AsyncIterator[bytes]:
    """The stream; opened with an agent's key, it ends (`event: revoked`) as soon as that
    key is replaced: the change notifies every replica (migration 0032), and a listener
    back from an outage has every stream check its key, so a heartbeat checks nothing."""
    sent: dict[UUID, None] = {}  # insertion-ordered, the last REMEMBERED ids
    retry = RETRY  # then b"": sent once, with the first event
    # Whether the table may hold something new: the replay, then only after a wake-up.
    # Every stored message wakes its recipients' waiters and a reconnected listener
    # wakes them all, so a heartbeat alone reads nothing.
    woken = True
    with subscription as waiter:
        # A key replaced after the guard checked it and before the subscription was
        # taken notified no one here: checked once more, now that it would be told.
        waiter.rekeyed = True
        yield OPENING
        while not waiter.closed:
            # A wake-up can come after wait() returned: while the heartbeat was written,
            # or after its timer fired and before this task ran again. take() clears it,
            # so it counts here, or it would be lost until the next message.
            woken = woken or waiter.woken
            keys = waiter.take()
            try:
                if waiter.rekeyed and key is not None:
                    waiter.rekeyed = False
                    if not await asyncio.shield(key_is_current(pool, agent_id, key)):
                        yield retry + REVOKED
                        return
                items: list[MailboxItem] = []
                late_items: list[MailboxItem] = []
                more = False
                if woken:
                    late = _late(keys, position, sent)
                    # Read with every waiter woken in the same turn (queries/wakeups.py);
                    # a batch is bounded like a page, by count and by bytes.
                    rows = await reads.unread(agent_id, position, BATCH + 1)
                    items, more = fit(rows, BATCH, max_bytes)
                    if late:
                        # Shielded: a client leaving mid-read cancels the stream again
                        # at every await, which would lose the pooled connection.
                        late_items = await asyncio.shield(_read_late(pool, agent_id, late))
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
                # The database is away: read again when the listener is back (it
                # wakes every waiter) or after the retry interval.
                waiter.pending[:0] = keys
                await waiter.wait(listener.retry_interval)
                woken = True
                continue
            events = []
            for item in items:
                position = _position(item)
                sent[item.id] = None
                events.append(_event(cursor_key, item, position))
            for item in late_items:
                # Its own cursor lies behind the stream; resuming goes on from here.
                sent[item.id] = None
                events.append(_event(cursor_key, item, position))
            if events:
                yield retry + b"".join(events)  # one write for a batch, not one each
                retry = b""
            while len(sent) > REMEMBERED:
                del sent[next(iter(sent))]
            if more:
                continue
            woken = await waiter.wait(heartbeat)
            if not woken and not waiter.closed:
                yield HEARTBEAT
        yield retry + (RETIRED if waiter.retired else SHUTDOWN)
