"""Connecting to PostgreSQL: URL forms, the embedded server, the pool, migrations."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
import psycopg
from psycopg import AsyncConnection
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from queries import sql

log = logging.getLogger("mailroom.database")

MIGRATIONS = Path(__file__).parent / "migrations"
RECONNECT_TIMEOUT = 3.0  # seconds psycopg_pool keeps retrying one lost connection
SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://", "postgresql+psycopg://")

# json in and out through msgspec, the same codec as the HTTP layer.
set_json_dumps(msgspec.json.encode)
set_json_loads(msgspec.json.decode)


class AddressLoader(Loader):
    """inet as the `ipaddress` module's text, the contract's canonical form.

    PostgreSQL writes some addresses differently (`::ffff:1.2.3.4`), so the
    text is normalised here rather than returned as PostgreSQL spells it.
    """

    def load(self, data: Buffer) -> str:
        return str(ipaddress.ip_address(bytes(data).decode()))


def normalise_url(url: str) -> str:
    """A libpq URL from any DATABASE_URL form the original's clients use.

    SQLAlchemy's `postgresql+asyncpg://` and `postgresql+psycopg://` name a
    driver, which libpq does not know; asyncpg spells `sslmode` as `ssl`.
    """
    scheme = next((s for s in SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"must start with one of {', '.join(SCHEMES)}")
    # Only the scheme and the query change: a URL without a host (a Unix
    # socket given as ?host=/path) must keep its empty authority.
    base, _, query = ("postgresql://" + url.removeprefix(scheme)).partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if "ssl" in params:
        params.setdefault("sslmode", params.pop("ssl"))
    return f"{base}?{urlencode(params)}" if params else base


async def connect_with_retry(url: str, deadline: float) -> AsyncConnection:
    """One connection, retried until `deadline` (monotonic) while the server starts."""
    while True:
        try:
            return await AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"cannot reach the database: {error}") from None
            log.warning("database not reachable yet, retrying: %s", str(error).strip())
            await asyncio.sleep(1)


async def migrate(url: str, wait_seconds: float) -> bytes:
    """Apply pending migrations once across replicas; return the shared cursor key.

    Everything happens in one transaction holding a transaction-level advisory
    lock, so it also serialises replicas behind PgBouncer in transaction mode
    (a session-level lock could be taken and released on different servers).
    """
    conn = await connect_with_retry(url, time.monotonic() + wait_seconds)
    async with conn, conn.transaction():
        await sql.lock_migrations.run(conn)
        await sql.create_migrations_table.run(conn)
        applied = set(await sql.list_migrations.column(conn))
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.stem not in applied:
                log.info("applying migration %s", path.name)
                await conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                await sql.record_migration.run(conn, version=path.stem)
        await sql.seed_users.run(conn)
        return await sql.get_or_create_secret.value(
            conn, name="cursor", proposal=secrets.token_bytes(32)
        )


async def configure_connection(conn: AsyncConnection) -> None:
    """Run on every new pooled connection: UTC sessions, contract-shaped values."""
    conn.adapters.register_loader("inet", AddressLoader)
    await sql.configure_session.run(conn)


class DatabaseDown(PoolTimeout):
    """The pool refused at once: the listener knows the database is unreachable."""


class Borrowed:
    """`async with pool.connection() as conn`: a connection of the pool, put back at the end."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout

    async def __aenter__(self) -> AsyncConnection:
        self.conn = await self.pool.getconn(self.timeout)
        return self.conn

    async def __aexit__(self, *exc_info: object) -> None:
        await self.pool.putconn(self.conn)


class Pool(AsyncConnectionPool):
    """The pool, refusing at once (PoolTimeout, so 503) while the database is known down,
    with its borrowers queued at a gate of its own.

    `reachable` is the listener's view (queries/listener.py): while its own
    connection is lost, waiting for a pooled connection would only make every
    request hang until the pool timeout.

    The gate (`turns`, a semaphore of `max_size`, taken by getconn() and given
    back by putconn()) lets only as many borrowers in as the pool has
    connections, so a borrower past it finds one ready. Under load, requests
    then wait in a plain FIFO of futures instead of psycopg_pool's
    own queue, where each waiter costs a Condition, a task (wait_for), and the
    pool's lock held across the hand-over, which turns into a convoy of lock
    waiters: about a sixth of a loaded GET /users/1 (docs/performance.md).
    """

    reachable: Callable[[], bool] = staticmethod(lambda: True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turns = asyncio.Semaphore(self.max_size)
        self.queued = 0  # borrowers waiting at the gate
        self.gate_timeouts = 0  # borrowers that gave up there

    async def _queue(self, seconds: float) -> float:
        """Wait for a turn at the gate, at most `seconds` (PoolTimeout); the seconds left
        of them for the connection itself."""
        started = time.monotonic()
        self.queued += 1
        try:
            async with asyncio.timeout(seconds):
                await self.turns.acquire()
        except TimeoutError:
            self.gate_timeouts += 1
            raise PoolTimeout(f"couldn't get a connection after {seconds:.2f} sec") from None
        finally:
            self.queued -= 1
        return max(seconds - (time.monotonic() - started), 0.001)

    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's figures, with the gate's waiters and time-outs counted in."""
        stats = super().get_stats()
        stats["requests_waiting"] = stats.get("requests_waiting", 0) + self.queued
        stats["requests_errors"] = stats.get("requests_errors", 0) + self.gate_timeouts
        return stats

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:  # noqa: ASYNC109 - the pool's signature
        """A connection, after a turn at the gate; putconn() gives both back."""
        if not self.reachable():
            raise DatabaseDown("the database is unreachable")
        if timeout is None:
            timeout = self.timeout
        if self.turns.locked():
            timeout = await self._queue(timeout)
        else:
            await self.turns.acquire()  # free: returns without suspending
        try:
            return await super().getconn(timeout)
        except BaseException:
            self.turns.release()
            raise

    async def putconn(self, conn: AsyncConnection) -> None:
        try:
            await super().putconn(conn)
        finally:
            self.turns.release()

    def connection(self, timeout: float | None = None) -> Borrowed:  # type: ignore[override]
        """A connection for an `async with` block, without psycopg_pool's commit at its end.

        Pooled connections are in autocommit mode, so that commit (or rollback on
        an error) has nothing to do, yet it costs a lock and a generator: about
        11 us of a 300 us GET /users/1 (docs/performance.md). A transaction block
        (`conn.transaction()`) ends its transaction itself, and putconn() rolls
        back a connection returned inside one, as psycopg_pool always does.
        """
        return Borrowed(self, timeout)


def make_pool(
    url: str,
    min_size: int,
    max_size: int,
    timeout: float,
    prepare_threshold: int | None,
    statement_timeout: float | None = None,
) -> Pool:
    """The one pool of the process, opened by the lifespan.

    psycopg_pool retries a lost connection with a growing delay (1, 2, 4, 8 s
    ...) for `reconnect_timeout`; a short one ends those attempts early, and
    the listener calls `pool.check()` (which replaces broken connections and
    grows an empty pool at once) as soon as the database answers again.

    `statement_timeout` (seconds) goes in the connection's startup options, so
    no request holds a pooled connection for long; PgBouncer refuses startup
    options, and behind it the timeout belongs on the database role instead.
    """
    kwargs: dict[str, object] = {"autocommit": True, "prepare_threshold": prepare_threshold}
    if statement_timeout is not None:
        options = conninfo_to_dict(url).get("options") or ""
        kwargs["options"] = f"{options} -c statement_timeout={round(statement_timeout * 1000)}"
    return Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        configure=configure_connection,
        kwargs=kwargs,
        name="mailroom",
        reconnect_timeout=RECONNECT_TIMEOUT,
    )


async def purge_expired_keys(pool: AsyncConnectionPool, interval: float) -> None:
    """Forget Idempotency-Keys older than a day, at start-up and every `interval` seconds.

    Each replica runs it; the statement is cheap (an index range) and idempotent.
    An unreachable database just skips a round.
    """
    while True:
        try:
            async with pool.connection() as conn:
                purged = await sql.purge_idempotency_keys.run(conn)
            if purged:
                log.info("purged %d idempotency keys older than 24 hours", purged)
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as error:
            log.warning("idempotency key purge skipped: %s", error)
        await asyncio.sleep(interval)
