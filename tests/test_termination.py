"""SIGTERM waits for the connections already in the accept queue (operations/termination.py)."""

from __future__ import annotations

import asyncio
import socket
import time

from operations.termination import ACCEPT_SECONDS, accepted_then


def listening() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    return server


def test_the_handler_runs_once_the_queued_connection_is_accepted() -> None:
    events: list[str] = []

    async def scenario() -> None:
        with listening() as server, socket.create_connection(server.getsockname()):

            async def accept_later() -> None:
                await asyncio.sleep(0.2)
                server.accept()[0].close()
                events.append("accepted")

            task = asyncio.create_task(accept_later())
            await accepted_then([server.fileno()], events.append, "handler")
            await task

    asyncio.run(scenario())
    assert events == ["accepted", "handler"]


def test_the_handler_runs_at_once_with_nothing_queued() -> None:
    events: list[str] = []
    with listening() as server:
        started = time.monotonic()
        asyncio.run(accepted_then([server.fileno()], events.append, "handler"))
    assert events == ["handler"]
    assert time.monotonic() - started < ACCEPT_SECONDS / 2


def test_the_handler_runs_after_the_bound_when_connections_stay_queued() -> None:
    events: list[str] = []
    with listening() as server, socket.create_connection(server.getsockname()):
        started = time.monotonic()
        asyncio.run(accepted_then([server.fileno()], events.append, "handler"))
        waited = time.monotonic() - started
    assert events == ["handler"]
    assert ACCEPT_SECONDS <= waited < ACCEPT_SECONDS + 2
