"""The one LISTEN connection of a process, fanning new-message notifications out to waiters.

The recipients that create_message or create_recipient stores are notified by
`notify_recipients()` (queries/migrations/0034_one_notification_per_send.sql),
`'message <sent_at in µs> <message_id> <recipient_id> ...'` (up to 200
recipients a notification) on the channel `inbox_channel()`, in the same
statement, so the notification leaves at commit and reaches every replica.
(Replicas of an earlier version, until a rolling update has replaced them,
send one `'<recipient_id> <sent_at in µs> <message_id>'` per recipient row,
notify_inbox(); it is read as well.) Streams and long-polls of those
recipients are woken; they read what is new from the table, never from the
notification, so a notification lost while the connection was down costs
nothing: on every (re)connection all waiters are woken to read the table again.

The same channel carries `'retired <agent_id>'` (notify_retired(), migration 0021):
every replica then ends that agent's streams and long-polls.

The same connection listens on `webhook_channel()` (queries/migrations/0010_webhooks.sql),
which each new webhook delivery notifies: `deliveries` is set then, and on every
(re)connection, to wake the process's webhook dispatcher (webhooks/dispatcher.py).

The listening connection doubles as the process's view of the database: when
it is lost it reconnects at once, and when that fails, `up` is false and the
pool refuses requests at once (503) instead of making each wait for its
timeout; when it is back, the pool's idle connections are checked and replaced.

It judges the database, not its own event loop: a check that timed out while
the loop was stalled (a worker busy with one huge request, a long pause) is
made again at once instead of counting as a failure (LoopLag).
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
from psycopg.errors import ConnectionTimeout

from queries import sql

log = logging.getLogger("mailroom.listener")

# A key in an inbox: (sent_at in microseconds since the epoch, message id).
Key = tuple[int, UUID]
# Keys kept per waiter between two reads; beyond that it just reads the table.
MAX_PENDING = 1000
# A check that timed out counts only if the loop ran its timers within this many
# seconds of their time throughout it. A stalled one is made again, for as long
# as the stalls go on: a database that is gone refuses connections (an error, not
# a timeout), and the pool's timeout still bounds each request's wait meanwhile.
STALL = 0.25


class LoopLag:
    """How late this process's event loop runs its timers, sampled every TICK seconds."""

    TICK = 0.1
    REPORT = 1.0  # a stall this long is logged: every request waited as long

    def __init__(self) -> None:
        self.last_tick = 0.0
        self.last_stall = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.last_tick = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="mailroom-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.TICK)
            now = loop.time()
            lag = now - self.last_tick - self.TICK
            if lag > STALL:
                self.last_stall = now
            if lag > self.REPORT:
                log.warning(
                    "event loop stalled for %.1f s: every request of this worker waited", lag
                )
            self.last_tick = now

    def stalled_since(self, since: float) -> bool:
        """Whether the loop stalled at some point after `since` (loop time), now included."""
        now = asyncio.get_running_loop().time()
        # A tick that is overdue right now is a stall its task has not seen yet.
        return self.last_stall >= since or now - self.last_tick > self.TICK + STALL


class Waiter:
    """One stream or long-poll waiting for an agent's new messages.

    A flag and, only while someone waits, a future and its timer: thousands of
    idle streams each hold one, so it is smaller than an asyncio.Event (a deque
    of its own) with an asyncio.timeout around each wait.
    """

    __slots__ = ("_future", "closed", "pending", "rekeyed", "retired", "woken")

    def __init__(self) -> None:
        self.woken = False
        self.pending: list[Key] = []
        self.closed = False
        self.retired = False  # closed because its agent was retired, not for a shutdown
        # The agent's key may have changed (or a notification saying so was missed while
        # the listener was away): a stream opened with a key checks it before going on.
        self.rekeyed = False
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

    def rekey(self) -> None:
        """Wake the waiter to check its key (it may have been replaced)."""
        self.rekeyed = True
        self._wake()

    def close(self, retired: bool = False) -> None:
        self.closed = True
        self.retired = self.retired or retired
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
        # Set when a webhook delivery may be due: the dispatcher waits on it.
        self.deliveries = asyncio.Event()
        self.lag = LoopLag()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_seconds: float) -> None:
        """Start listening; returns once the first LISTEN is in place (or after `wait_seconds`)."""
        self.lag.start()
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
        await self.lag.stop()

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

    def retire(self, agent_id: UUID) -> None:
        """End the streams and long-polls of an agent that was retired."""
        for waiter in self.waiters.get(agent_id, ()):
            waiter.close(retired=True)

    def _dispatch(self, payload: str) -> None:
        kind, _, named = payload.partition(" ")
        try:
            if kind in ("retired", "rekeyed"):
                agent_id = UUID(named)
                if kind == "retired":
                    self.retire(agent_id)
                else:
                    for waiter in self.waiters.get(agent_id, ()):
                        waiter.rekey()
                return
            if kind == "message":
                micros, message, *recipients = named.split(" ")
            else:  # one recipient row, from a replica of the earlier version (notify_inbox())
                recipient, micros, message = payload.split(" ")
                recipients = [recipient]
            key = (int(micros), UUID(message))
            agent_ids = [UUID(recipient) for recipient in recipients]
        except ValueError:
            log.warning("ignoring a malformed notification %r", payload)
            return
        waiters = self.waiters
        for agent_id in agent_ids:
            for waiter in waiters.get(agent_id, ()):
                waiter.notify(key)

    def _wake_all(self) -> None:
        """After the listener was away: notifications may have been missed, of messages
        and of keys, so every waiter reads the table and checks its key."""
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.rekey()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        lost_at = -self.retry_interval
        while not self.closing:
            started = loop.time()
            try:
                conn = await AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, round(self.retry_interval)),
                    application_name=f"mailroom listener {os.getpid()}",
                )
            except psycopg.OperationalError as error:
                if isinstance(error, ConnectionTimeout) and self._excused(started):
                    continue
                self._set_down(error)
                await asyncio.sleep(self.retry_interval)
                continue
            try:
                async with conn:
                    await sql.listen_inbox.run(conn)
                    await sql.listen_webhooks.run(conn)
                    webhooks = await sql.get_webhook_channel.value(conn)
                    await self._set_up()
                    while not self.closing:
                        async for notify in conn.notifies(timeout=self.check_interval):
                            if notify.channel == webhooks:
                                self.deliveries.set()
                            else:
                                self._dispatch(notify.payload)
                        # Quiet for a while: prove the connection still answers.
                        await self._ping(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as error:
                # Reconnect at once: only a failed connection attempt means the
                # database is down (a killed listening connection alone refuses
                # no request). Twice within the interval: wait first.
                log.warning("listening connection lost: %s", _first_line(error))
                if asyncio.get_running_loop().time() - lost_at < self.retry_interval:
                    await asyncio.sleep(self.retry_interval)
                lost_at = asyncio.get_running_loop().time()

    async def _ping(self, conn: AsyncConnection) -> None:
        """A query on the listening connection, made again at once when it timed out
        only because the loop stalled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                async with asyncio.timeout(self.check_interval):
                    await sql.ping.value(conn)
                return
            except TimeoutError:
                if not self._excused(started):
                    raise

    def _excused(self, started: float) -> bool:
        """A check that timed out while the loop stalled: made again at once, not a failure."""
        if not self.lag.stalled_since(started):
            return False
        log.warning("a database check timed out while the event loop was stalled: checking again")
        return True

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
        self.deliveries.set()  # notifications may have been missed while it was down


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
