"""The one LISTEN connection of a process, fanning new-message notifications out to waiters.

Every recipient row that create_message or create_recipient stores calls
`notify_inbox()` (queries/migrations/0005_shared_definitions.sql), which sends
`'<recipient_id> <sent_at in µs> <message_id>'` on the channel `inbox_channel()`
in the same statement, so the notification leaves at commit and reaches every
replica. Streams and long-polls of that recipient are woken; they read what is
new from the table, never from the notification, so a notification lost while
the connection was down costs nothing: on every (re)connection all waiters are
woken to read the table again.

The listening connection doubles as the process's view of the database: when
it is lost it reconnects at once, and when that fails, `up` is false and the
pool refuses requests at once (503) instead of making each wait for its
timeout; when it is back, the pool's idle connections are checked and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from uuid import UUID

import psycopg
from psycopg import AsyncConnection

from queries import sql

log = logging.getLogger("mailroom.listener")

# A key in an inbox: (sent_at in microseconds since the epoch, message id).
Key = tuple[int, UUID]
# Keys kept per waiter between two reads; beyond that it just reads the table.
MAX_PENDING = 1000


class Waiter:
    """One stream or long-poll waiting for an agent's new messages.

    A flag and, only while someone waits, a future and its timer: thousands of
    idle streams each hold one, so it is smaller than an asyncio.Event (a deque
    of its own) with an asyncio.timeout around each wait.
    """

    __slots__ = ("_future", "closed", "pending", "woken")

    def __init__(self) -> None:
        self.woken = False
        self.pending: list[Key] = []
        self.closed = False
        self._future: asyncio.Future[bool] | None = None

    def _wake(self) -> None:
        self.woken = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)

    def notify(self, key: Key | None) -> None:
        """Wake the waiter; `key` (None: just read the table again) is kept for take()."""
        if key is not None and len(self.pending) < MAX_PENDING:
            self.pending.append(key)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def wait(self, seconds: float) -> bool:
        """Wait until woken or `seconds` pass; True when woken."""
        if self.woken:
            return True
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = loop.call_later(seconds, _time_is_up, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._future = None

    def take(self) -> list[Key]:
        """The keys notified since the last call (the caller reads the table next)."""
        self.woken = False
        keys, self.pending = self.pending, []
        return keys


def _time_is_up(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Subscription:
    """One registered waiter; `release()` (or leaving its `with` block) unregisters it."""

    __slots__ = ("agent_id", "registry", "waiter")

    def __init__(self, registry: dict[UUID, set[Waiter]], agent_id: UUID, waiter: Waiter) -> None:
        self.registry = registry
        self.agent_id = agent_id
        self.waiter = waiter

    def release(self) -> None:
        waiters = self.registry.get(self.agent_id)
        if waiters is not None:
            waiters.discard(self.waiter)
            if not waiters:
                del self.registry[self.agent_id]

    def __enter__(self) -> Waiter:
        return self.waiter

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Listener:
    """LISTEN on one dedicated connection; reconnects until closed."""

    def __init__(
        self,
        url: str,
        check_interval: float,
        retry_interval: float,
        on_reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self.url = url
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self.on_reconnect = on_reconnect
        self.waiters: dict[UUID, set[Waiter]] = {}
        self.up = False
        self.closing = False
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_seconds: float) -> None:
        """Start listening; returns once the first LISTEN is in place (or after `wait_seconds`)."""
        self._task = asyncio.create_task(self._run(), name="mailroom-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await self.connected.wait()

    async def close(self) -> None:
        """Stop listening and end every waiter (streams send their final event)."""
        self.shutting_down()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def shutting_down(self) -> None:
        """End streams and long-polls now (SIGTERM), ahead of the lifespan's shutdown."""
        self.closing = True
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.close()

    def subscribe(self, agent_id: UUID) -> Subscription:
        """A waiter for `agent_id`'s new messages, registered at once (before any await)
        until the subscription is released or its `with` block ends."""
        waiter = Waiter()
        if self.closing:
            waiter.close()
        self.waiters.setdefault(agent_id, set()).add(waiter)
        return Subscription(self.waiters, agent_id, waiter)

    def _dispatch(self, payload: str) -> None:
        try:
            recipient, micros, message = payload.split(" ")
            agent_id, key = UUID(recipient), (int(micros), UUID(message))
        except ValueError:
            log.warning("ignoring a malformed notification %r", payload)
            return
        for waiter in self.waiters.get(agent_id, ()):
            waiter.notify(key)

    def _wake_all(self) -> None:
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.notify(None)

    async def _run(self) -> None:
        lost_at = -self.retry_interval
        while not self.closing:
            try:
                conn = await AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, round(self.retry_interval)),
                    application_name=f"mailroom listener {os.getpid()}",
                )
            except psycopg.OperationalError as error:
                self._set_down(error)
                await asyncio.sleep(self.retry_interval)
                continue
            try:
                async with conn:
                    await sql.listen_inbox.run(conn)
                    await self._set_up()
                    while not self.closing:
                        async for notify in conn.notifies(timeout=self.check_interval):
                            self._dispatch(notify.payload)
                        # Quiet for a while: prove the connection still answers.
                        async with asyncio.timeout(self.check_interval):
                            await sql.ping.value(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as error:
                # Reconnect at once: only a failed connection attempt means the
                # database is down (a killed listening connection alone refuses
                # no request). Twice within the interval: wait first.
                log.warning("listening connection lost: %s", _first_line(error))
                if asyncio.get_running_loop().time() - lost_at < self.retry_interval:
                    await asyncio.sleep(self.retry_interval)
                lost_at = asyncio.get_running_loop().time()

    def _set_down(self, error: Exception) -> None:
        if self.up:
            log.warning("database unreachable, refusing requests: %s", _first_line(error))
        self.up = False

    async def _set_up(self) -> None:
        was_set = self.connected.is_set()
        self.up = True
        self.connected.set()
        if was_set:
            log.info("listening again: refreshing the pool, waking every stream")
            await self.on_reconnect()
        self._wake_all()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
