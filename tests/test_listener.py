"""The listener judges the database, not its own event loop.

A worker busy with one huge request (a 100 MB header took tens of seconds to
parse) stalls its event loop; a database check that timed out meanwhile says
nothing about PostgreSQL. Here the loop stalls while the listener reconnects:
the attempt that timed out is made again, and the database, which answered all
along, is never declared down (which would refuse every request with 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from queries.listener import Listener
from tests.helpers import LogRecords


class HeldProxy:
    """A TCP proxy to PostgreSQL in its own threads (so a stalled event loop does not stall
    it): while `hold` is set, a new connection is accepted but not forwarded."""

    def __init__(self, upstream: str | tuple[str, int]) -> None:
        self.upstream = upstream  # a Unix socket's path, or (host, port)
        self.hold = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self.forward, args=(client,), daemon=True).start()

    def forward(self, client: socket.socket) -> None:
        while self.hold.is_set():
            time.sleep(0.01)
        if isinstance(self.upstream, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
        else:
            upstream = socket.create_connection(self.upstream)
        self.sockets.append(upstream)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self.server.close()
        for each in self.sockets:
            each.close()


def pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class StallsAfterLoss(logging.Handler):
    """When the listener reports its connection lost, the proxy holds its reconnection
    and the loop stalls 1.5 s (past the 1 s connect timeout), as it did while a worker
    parsed a huge header; a second later the proxy lets the next attempt through."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: HeldProxy) -> None:
        super().__init__()
        self.loop = loop
        self.proxy = proxy
        self.task: asyncio.Task[None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.task is None and "listening connection lost" in record.getMessage():
            self.proxy.hold.set()
            self.task = self.loop.create_task(self.stall())

    async def stall(self) -> None:
        await asyncio.sleep(0.05)  # the reconnection has started and waits on the proxy
        time.sleep(1.5)  # noqa: ASYNC251 - blocks the loop, as parsing a huge header did
        await asyncio.sleep(1.0)  # the attempt that spanned the stall times out by now
        self.proxy.hold.clear()


def test_a_reconnection_that_timed_out_while_the_loop_stalled_does_not_declare_the_database_down(
    database_url: str, client: object
) -> None:
    """The reconnection (1 s connect timeout) times out during the stall: it is made
    again, and the database, which answered all along, is never declared down. (`client`
    runs the app once, which migrates the database the LISTEN statement needs.)"""
    info = conninfo_to_dict(database_url)
    host, port = str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)
    # The embedded server listens on a Unix socket (host is its directory).
    proxy = HeldProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    proxied = make_conninfo(**{**info, "host": "127.0.0.1", "port": str(proxy.port)})

    async def scenario() -> bool:
        async def nothing() -> None:
            pass

        listener = Listener(proxied, 0.3, 0.5, on_reconnect=nothing)
        await listener.start(10)
        stalls = StallsAfterLoss(asyncio.get_running_loop(), proxy)
        logging.getLogger("mailroom.listener").addHandler(stalls)
        try:
            async with await psycopg.AsyncConnection.connect(database_url) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (f"mailroom listener {os.getpid()}",),
                )
            deadline = asyncio.get_running_loop().time() + 30
            while stalls.task is None or not stalls.task.done() or not listener.up:
                assert asyncio.get_running_loop().time() < deadline, "no reconnection"
                await asyncio.sleep(0.1)
            return listener.up
        finally:
            logging.getLogger("mailroom.listener").removeHandler(stalls)
            await listener.close()

    try:
        with LogRecords("mailroom.listener") as log:
            assert asyncio.run(scenario())
    finally:
        proxy.close()
    messages = log.messages()
    assert any("while the event loop was stalled" in m for m in messages), messages
    assert not any("database unreachable" in m for m in messages), messages


def test_each_kind_of_inbox_notification_wakes_its_waiters_and_a_malformed_one_none() -> None:
    """The payloads of the inbox channel, as the listener reads them: a send's (migration
    0034), a replica of the earlier version's one row (notify_inbox()), a retirement, a
    key change; a malformed one is logged and wakes no one."""
    a, b, c = (uuid.uuid4() for _ in range(3))
    message = uuid.uuid4()

    async def nothing() -> None:
        pass

    listener = Listener("postgresql://unused", 1, 1, on_reconnect=nothing)
    waiter_a, waiter_b, waiter_c = (listener.subscribe(x).waiter for x in (a, b, c))
    with LogRecords("mailroom.listener") as log:
        for payload in ("message 12 not-a-uuid " + str(a), f"{a} twelve {message}", "retired x"):
            listener._dispatch(payload)
    assert len([m for m in log.messages() if "malformed notification" in m]) == 3
    assert not any(w.woken or w.closed for w in (waiter_a, waiter_b, waiter_c))

    listener._dispatch(f"message 12 {message} {a} {b}")
    assert (waiter_a.take(), waiter_b.take(), waiter_c.pending) == ([(12, message)],) * 2 + ([],)
    listener._dispatch(f"{c} 13 {message}")
    assert waiter_c.take() == [(13, message)] and not waiter_a.woken
    listener._dispatch(f"rekeyed {a}")
    assert waiter_a.rekeyed and not waiter_b.rekeyed
    listener._dispatch(f"retired {b}")
    assert waiter_b.closed and waiter_b.retired and not waiter_c.closed
