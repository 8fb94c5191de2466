"""The listener judges the database, not its own event loop.

A worker busy with one huge request (a 100 MB header took tens of seconds to
parse) stalls its event loop; a database check that timed out meanwhile says
nothing about PostgreSQL. Here the loop stalls while the listener reconnects:
the attempt that timed out is made again, and the database, which answered all
along, is never declared down (which would refuse every request with 503).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import psycopg

from queries.listener import Listener
from tests.helpers import LogRecords


class StallsAfterLoss(logging.Handler):
    """When the listener reports its connection lost, the loop stalls four times 0.6 s
    while it reconnects, as it did while a worker parsed a huge header."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.task: asyncio.Task[None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.task is None and "listening connection lost" in record.getMessage():
            self.task = self.loop.create_task(self.stalls())

    async def stalls(self) -> None:
        for _ in range(4):
            time.sleep(0.6)  # noqa: ASYNC251 - blocks the loop, as parsing a huge header did
            await asyncio.sleep(0)


def test_a_reconnection_that_timed_out_while_the_loop_stalled_does_not_declare_the_database_down(
    database_url: str,
) -> None:
    """Its connection attempt (1 s timeout) spans the stalls: it is made again, and the
    database, which answered all along, is never declared down."""

    async def scenario() -> bool:
        async def nothing() -> None:
            pass

        listener = Listener(database_url, 0.3, 0.5, on_reconnect=nothing)
        await listener.start(10)
        stalls = StallsAfterLoss(asyncio.get_running_loop())
        logging.getLogger("mailroom.listener").addHandler(stalls)
        try:
            async with await psycopg.AsyncConnection.connect(database_url) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (f"mailroom listener {os.getpid()}",),
                )
            deadline = asyncio.get_running_loop().time() + 10
            while stalls.task is None or not stalls.task.done() or not listener.up:
                assert asyncio.get_running_loop().time() < deadline, "no reconnection"
                await asyncio.sleep(0.1)
            return listener.up
        finally:
            logging.getLogger("mailroom.listener").removeHandler(stalls)
            await listener.close()

    with LogRecords("mailroom.listener") as log:
        assert asyncio.run(scenario())
    messages = log.messages()
    assert any("while the event loop was stalled" in m for m in messages), messages
    assert not any("database unreachable" in m for m in messages), messages
