"""The table reads of woken streams and long-polls, many in one statement.

A message to 1,000 recipients wakes 1,000 streams in the same instant; each
would read its inbox through a pool of ten connections, 1,000 round trips
queued behind each other and behind every other request. Instead, the reads
asked for in one event-loop turn go out together, one statement for each
(order, limit) asked (`list_unread_asc_many` or `list_unread_desc_many`: the
waiters' agents and positions in arrays, one LATERAL index read each), at most
MAX_WAITERS a statement, and each waiter gets exactly the rows its own read
would have returned, so the no-gap, no-duplicate reasoning of
handlers/stream.py and the long-poll's page are unchanged.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from queries import Query, sql
from queries.params import array_literal
from validation.responses import MailboxItem

# Waiters one statement reads for: a bound on the statement's arrays and on its rows.
MAX_WAITERS = 500
Position = tuple[datetime, UUID]
Row = tuple[MailboxItem, int]  # an item and the page's bytes up to it (pagination.fit)
Ask = tuple[UUID, Position, "asyncio.Future[list[Row]]"]


class WakeupReads:
    """Unread items after a position, read with every other waiter asking in the same turn."""

    def __init__(self, pool: AsyncConnectionPool, max_bytes: int) -> None:
        self.pool = pool
        self.max_bytes = max_bytes  # MAILROOM_MAX_RESPONSE_BYTES: each waiter's rows stop there
        # (newest first, limit) -> the asks of this turn
        self.asks: dict[tuple[bool, int], list[Ask]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def unread(
        self, agent_id: UUID, after: Position, limit: int, newest_first: bool = False
    ) -> list[Row]:
        """Up to `limit` of the agent's unread items after `after` in that order (oldest
        first: later than `after`; newest first: earlier than `after`), each with the
        page's bytes up to it, stopping past the byte budget as a page does."""
        loop = asyncio.get_running_loop()
        if not self.asks:
            loop.call_soon(self._start)  # after every waiter woken in this turn has asked
        future: asyncio.Future[list[Row]] = loop.create_future()
        self.asks.setdefault((newest_first, limit), []).append((agent_id, after, future))
        return await future

    def _start(self) -> None:
        groups, self.asks = self.asks, {}
        for (newest_first, limit), asks in groups.items():
            statement = sql.list_unread_desc_many if newest_first else sql.list_unread_asc_many
            for start in range(0, len(asks), MAX_WAITERS):
                # A task of its own: a waiter that leaves mid-read (cancelled) must not
                # cancel the others' read, nor lose the pooled connection on its way back.
                task = asyncio.create_task(
                    self._read(statement, limit, asks[start : start + MAX_WAITERS])
                )
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _read(self, statement: Query, limit: int, asks: list[Ask]) -> None:
        found: list[list[Row]] = [[] for _ in asks]
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(
                    statement.text,
                    {
                        "agent_ids": array_literal(agent_id for agent_id, _, _ in asks),
                        "after_sent_ats": array_literal(after[0] for _, after, _ in asks),
                        "after_ids": array_literal(after[1] for _, after, _ in asks),
                        "limit": limit,
                        "max_bytes": self.max_bytes,
                    },
                )
                for *values, page_bytes, waiter in await cur.fetchall():
                    found[waiter - 1].append((MailboxItem(*values), page_bytes))
        except asyncio.CancelledError:
            for _, _, future in asks:
                future.cancel()
            raise
        except Exception as error:
            for _, _, future in asks:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, _, future), items in zip(asks, found, strict=True):
            if not future.done():
                future.set_result(items)
