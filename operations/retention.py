"""Retention: the background job deleting messages older than MAILROOM_RETENTION_DAYS.

Every replica runs the loop; each batch is one short transaction that first
takes a transaction-level advisory lock with pg_try_advisory_xact_lock, so
only one replica deletes at a time and the others skip their round (no double
work, no waiting on each other). A batch deletes the oldest `batch` messages
with their recipient rows and metadata; its duration is how long it holds its
row locks, and is kept in /metrics (mailroom_retention_batch_seconds) and in
each batch's log line. docs/lifecycle.md says how to size it and what to do
beyond one table.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from operations import logs, metrics
from queries import sql

log = logging.getLogger("mailroom.retention")
PAUSE = 0.05  # seconds between two batches: room for the requests' own writes


class Deleted(msgspec.Struct, frozen=True):
    """Row of delete_expired_messages: what one batch deleted."""

    messages: int
    recipients: int
    metadata: int
    replies_unlinked: int


async def delete_batch(pool: AsyncConnectionPool, days: int, batch: int) -> Deleted | None:
    """One batch, if this replica's turn: what it deleted, or None when another replica
    holds the turn."""
    started = time.perf_counter()
    async with pool.connection() as conn, conn.transaction():
        if not await sql.take_retention_turn.value(conn):
            return None
        deleted = await sql.delete_expired_messages.one(conn, Deleted, days=days, batch=batch)
    assert deleted is not None  # the statement always returns one row
    seconds = time.perf_counter() - started
    metrics.RETENTION_BATCH_SECONDS.observe(seconds)
    metrics.RETENTION_DELETED.labels("messages").inc(deleted.messages)
    metrics.RETENTION_DELETED.labels("recipients").inc(deleted.recipients)
    metrics.RETENTION_DELETED.labels("metadata").inc(deleted.metadata)
    if deleted.messages:
        log.info(
            "retention deleted %d messages older than %d days in %.1f ms",
            deleted.messages,
            days,
            seconds * 1000,
            extra=logs.event(
                "retention_batch",
                **msgspec.structs.asdict(deleted),
                milliseconds=round(seconds * 1000, 1),
            ),
        )
    return deleted


async def delete_expired(pool: AsyncConnectionPool, days: int, batch: int) -> int:
    """Batches until nothing older is left or another replica has the turn; messages deleted."""
    total = 0
    while True:
        deleted = await delete_batch(pool, days, batch)
        if deleted is None:
            return total
        total += deleted.messages
        if deleted.messages < batch:
            return total
        await asyncio.sleep(PAUSE)


async def run_retention(pool: AsyncConnectionPool, days: int, batch: int, interval: float) -> None:
    """The job of the lifespan: a round at start-up, then every `interval` seconds.

    An unreachable database (or a statement timeout) just skips a round.
    """
    while True:
        try:
            await delete_expired(pool, days, batch)
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as error:
            log.warning("retention round skipped: %s", error)
        await asyncio.sleep(interval)
