"""The webhook dispatcher of one worker: claims due deliveries, sends them, records the result.

Every replica's workers run one. Deliveries are rows of webhook_deliveries,
written with their message (queries/messages.sql); a dispatcher claims due
ones with FOR UPDATE SKIP LOCKED and a lease (queries/webhooks.sql,
claim_deliveries), so two dispatchers never hold one delivery at once while
both are up, and one that dies leaves its deliveries due again when the lease
ends (at least once: a repeat carries the same webhook-id). It is woken by the
listener when a delivery is written and when an attempt ends, and looks again
after MAILROOM_WEBHOOK_POLL_INTERVAL seconds without either, or when the
earliest retry falls due.

At most MAILROOM_WEBHOOK_CONCURRENCY attempts run at once, and at most
MAILROOM_WEBHOOK_ENDPOINT_CONCURRENCY to one agent's endpoint: a slow or dead
endpoint fills only its own slots, and the claim skips it while they are full,
so it never holds up deliveries to other agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from typing import Any, Literal
from uuid import UUID

import httpx
import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from operations import logs, metrics
from queries import sql
from settings import Settings
from validation.responses import MailboxItem, Timestamp
from webhooks import signing
from webhooks.addresses import RefusedAddress
from webhooks.transport import make_client

log = logging.getLogger("mailroom.webhooks")

# Seconds a claim holds a delivery past the attempt's own timeout: time to write the result.
LEASE_MARGIN = 5.0
# Candidate rows one claim looks at (the due ones, oldest first).
SCAN = 1000
PURGE_INTERVAL = 3600.0  # seconds between two purges of delivered rows
MAX_RETRY_AFTER = 86400.0  # a Retry-After longer than a day is read as a day
JITTER = 0.1  # a retry waits its delay give or take 10 %
# Response body read at most, and for how long, before the connection is dropped instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0
DATABASE_ERRORS = (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError)


class Claimed(msgspec.Struct, frozen=True):
    """Row of claim_deliveries: a delivery, its endpoint and secrets, and the message."""

    id: UUID
    agent_id: UUID
    attempts: int
    created: float
    webhook_url: str | None
    webhook_secret: str | None
    previous_secret: str | None
    message_id: UUID
    sender_id: UUID | None
    sent_at: str
    parent_message_id: UUID | None
    conversation_id: UUID | None
    content: str
    message_type: str | None
    importance: int | None
    status: str | None
    msg_metadata: dict[str, Any] | None
    updated_at: str
    is_read: bool
    read_at: str | None
    created_at: str

    def item(self) -> MailboxItem:
        """The message as GET /agents/{id}/messages/unread lists it."""
        return MailboxItem(
            id=self.message_id,
            sender_id=self.sender_id,
            sent_at=self.sent_at,
            parent_message_id=self.parent_message_id,
            conversation_id=self.conversation_id,
            content=self.content,
            message_type=self.message_type,
            importance=self.importance,
            status=self.status,
            msg_metadata=self.msg_metadata,
            updated_at=self.updated_at,
            direction="received",
            is_read=self.is_read,
            read_at=self.read_at,
        )


class Event(msgspec.Struct, frozen=True):
    """The body of a webhook request."""

    type: Literal["message.received"]
    timestamp: Timestamp
    data: MailboxItem


class Stats(msgspec.Struct, frozen=True):
    """Row of get_delivery_stats."""

    pending: int
    dead: int
    oldest_pending_seconds: float


ENCODER = msgspec.json.Encoder()


def status_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def next_delay(
    schedule: tuple[float, ...], attempts: int, code: int | None, asked: float | None
) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones; None: no attempt left."""
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret
    if code in (429, 503) and asked is not None:
        delay = max(delay, asked)
    return delay


async def drain(response: httpx.Response) -> None:
    """Read a small body to its end, so the connection can serve the next attempt; a
    large, endless or slow one is dropped unread (the status line decided already)."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > DRAIN_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await response.aclose()


class Dispatcher:
    """Claims and sends this worker's share of the due deliveries until closed."""

    def __init__(self, pool: AsyncConnectionPool, wake: asyncio.Event, settings: Settings) -> None:
        self.pool = pool
        self.wake = wake
        self.settings = settings
        self.lease = settings.webhook_timeout + LEASE_MARGIN
        self.client = make_client(
            settings.webhook_allow_private, settings.webhook_concurrency, settings.webhook_timeout
        )
        self.inflight: dict[UUID, int] = {}
        self.attempts: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.settings.webhook_allow_private:
            log.warning(
                "MAILROOM_WEBHOOK_ALLOW_PRIVATE=on: webhooks may reach loopback and private"
                " addresses; never run a shared or public service like this"
            )
        self._tasks = [
            asyncio.create_task(self._run(), name="webhook-dispatcher"),
            asyncio.create_task(self._maintain(), name="webhook-maintenance"),
        ]

    async def close(self) -> None:
        """Stop claiming; attempts still running are cancelled (their leases bring them back)."""
        for task in [*self._tasks, *self.attempts]:
            task.cancel()
        for task in [*self._tasks, *self.attempts]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()

    # Claiming -----------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        while True:
            free = settings.webhook_concurrency - len(self.attempts)
            wait: float | None = settings.webhook_poll_interval
            if free > 0:
                self.wake.clear()
                try:
                    claimed = await self._claim(free)
                    for row in claimed:
                        self._begin(row)
                    if len(claimed) == free:
                        continue  # more may be due
                    due_in = None
                    if not claimed:
                        async with self.pool.connection() as conn:
                            due_in = await sql.get_next_due.value(conn)
                except DATABASE_ERRORS as error:
                    log.warning("webhook dispatcher waiting for the database: %s", error)
                    due_in = settings.reconnect_interval * 4
                # While attempts run, each one ending wakes us to claim again. Due now
                # but not claimed: its endpoint's slots are full, and the same holds.
                if due_in is not None and due_in > 0:
                    wait = min(wait, due_in)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    async def _claim(self, limit: int) -> list[Claimed]:
        cap = self.settings.webhook_endpoint_concurrency
        full = [agent for agent, n in self.inflight.items() if n >= cap]
        busy = [(agent, n) for agent, n in self.inflight.items() if n < cap]
        async with self.pool.connection() as conn:
            return await sql.claim_deliveries.all(
                conn,
                Claimed,
                busy_agents=[agent for agent, _ in busy],
                busy_counts=[n for _, n in busy],
                full_agents=full,
                scan=SCAN,
                per_endpoint=cap,
                limit=limit,
                lease=self.lease,
            )

    def _begin(self, row: Claimed) -> None:
        self.inflight[row.agent_id] = self.inflight.get(row.agent_id, 0) + 1
        task = asyncio.create_task(self._attempt(row), name=f"webhook-{row.id}")
        self.attempts.add(task)
        task.add_done_callback(lambda done: self._end(done, row.agent_id))

    def _end(self, task: asyncio.Task[None], agent_id: UUID) -> None:
        self.attempts.discard(task)
        left = self.inflight.get(agent_id, 1) - 1
        if left > 0:
            self.inflight[agent_id] = left
        else:
            self.inflight.pop(agent_id, None)
        self.wake.set()

    # One attempt ----------------------------------------------------------------------

    async def _send(self, row: Claimed) -> tuple[int | None, str | None, float | None]:
        """POST the delivery: (status code, error, Retry-After seconds)."""
        if row.webhook_url is None or row.webhook_secret is None:
            return None, "The agent has no webhook any more", None
        body = ENCODER.encode(
            Event(type="message.received", timestamp=row.created_at, data=row.item())
        )
        secrets = [row.webhook_secret] + ([row.previous_secret] if row.previous_secret else [])
        headers = signing.headers(secrets, str(row.id), int(time.time()), body)
        headers["content-type"] = "application/json"
        timeout = self.settings.webhook_timeout
        try:
            async with asyncio.timeout(timeout):
                request = self.client.build_request(
                    "POST", row.webhook_url, content=body, headers=headers
                )
                response = await self.client.send(request, stream=True)
            await drain(response)
        except RefusedAddress as error:
            return None, f"Refused: {error}", None
        except TimeoutError:
            return None, f"No response within {timeout:g} s (MAILROOM_WEBHOOK_TIMEOUT)", None
        except httpx.HTTPError as error:
            return None, f"Could not reach the endpoint: {error or type(error).__name__}", None
        except Exception as error:  # an unusable URL, say: a failed attempt, not a lost one
            log.exception("webhook delivery %s: the request could not be sent", row.id)
            return None, f"Could not send the request ({type(error).__name__})", None
        finally:
            self.client.cookies.clear()  # nothing one endpoint sets reaches another
        return response.status_code, None, retry_after(response.headers.get("retry-after"))

    async def _attempt(self, row: Claimed) -> None:
        started = time.monotonic()
        code, error, asked = await self._send(row)
        duration = time.monotonic() - started
        if code is not None and 200 <= code < 300:
            outcome, delay = "delivered", None
        elif code == 410:
            outcome, delay = "disabled", None
        else:
            if code is not None:
                error = f"The endpoint answered {code}"
            delay = next_delay(self.settings.webhook_retry_schedule, row.attempts, code, asked)
            outcome = "dead" if delay is None else "retry"
        try:
            async with self.pool.connection() as conn:
                if outcome == "delivered":
                    await sql.record_delivered.run(
                        conn, delivery_id=row.id, attempt=row.attempts, status_code=code
                    )
                elif outcome == "disabled":
                    await sql.disable_webhook.run(
                        conn, agent_id=row.agent_id, webhook_url=row.webhook_url
                    )
                else:
                    await sql.record_failed.run(
                        conn,
                        delivery_id=row.id,
                        attempt=row.attempts,
                        status_code=code,
                        error=error,
                        delay=delay,
                    )
        except DATABASE_ERRORS as failed:
            # The lease ends and the delivery is tried again (same webhook-id).
            log.warning("webhook delivery %s: result not recorded: %s", row.id, failed)
        metrics.WEBHOOK_ATTEMPTS.labels(outcome, status_class(code)).inc()
        metrics.WEBHOOK_ATTEMPT_DURATION.observe(duration)
        if outcome == "delivered":
            metrics.WEBHOOK_LATENCY.observe(max(time.time() - row.created, 0.0))
        log.info(
            "webhook delivery %s to agent %s, attempt %d: %s (%s) in %.3f s",
            row.id,
            row.agent_id,
            row.attempts,
            outcome,
            code if code is not None else error,
            duration,
            extra=logs.event(
                "webhook_attempt",
                delivery_id=str(row.id),
                agent_id=str(row.agent_id),
                attempt=row.attempts,
                status=code,
                outcome=outcome,
                duration_ms=round(duration * 1000, 1),
                error=error,
                next_attempt_in=None if delay is None else round(delay, 3),
            ),
        )

    # Gauges and retention ---------------------------------------------------------------

    async def _maintain(self) -> None:
        purged_at = -PURGE_INTERVAL
        while True:
            try:
                async with self.pool.connection() as conn:
                    stats = await sql.get_delivery_stats.one(conn, Stats)
                    if time.monotonic() - purged_at >= PURGE_INTERVAL:
                        purged_at = time.monotonic()
                        purged = await sql.purge_delivered.run(
                            conn, retention=self.settings.webhook_retention
                        )
                        if purged:
                            log.info("purged %d delivered webhook deliveries", purged)
                if stats is not None:
                    metrics.WEBHOOK_PENDING.set(stats.pending)
                    metrics.WEBHOOK_DEAD.set(stats.dead)
                    metrics.WEBHOOK_OLDEST_PENDING.set(stats.oldest_pending_seconds)
            except DATABASE_ERRORS as error:
                log.warning("webhook statistics skipped: %s", error)
            await asyncio.sleep(self.settings.webhook_poll_interval)
