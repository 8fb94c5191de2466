"""Retention (MAILROOM_RETENTION_DAYS): the job deletes exactly what is older, one replica
at a time, in batches, while the service goes on storing messages.

Old messages are written straight into the table (a client cannot backdate
sent_at); everything else goes through the API.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql

from operations.retention import delete_expired
from queries.database import make_pool
from tests.helpers import Item
from tests.servers import Server

DAYS = 30

# `count` messages sent `age` ago by %(sender)s to %(recipients)s, each with a metadata
# item; their ids, oldest first.
BACKDATED = """
WITH made AS (
    INSERT INTO messages (sender_id, content, sent_at, updated_at)
    SELECT %(sender)s, 'old message ' || g, now() - %(age)s::interval - make_interval(secs => g),
           now() - %(age)s::interval
      FROM generate_series(1, %(count)s) AS g
    RETURNING id, sent_at
), copies AS (
    INSERT INTO message_recipients (message_id, recipient_id, sent_at)
    SELECT made.id, r, made.sent_at FROM made, unnest(%(recipients)s::uuid[]) AS r
), notes AS (
    INSERT INTO agent_message_metadata (message_id, key, value, agent_id)
    SELECT id, 'k', 'v', %(sender)s FROM made
)
SELECT id FROM made ORDER BY sent_at
"""


Db = psycopg.Connection[dict[str, Any]]


def backdate(db: Db, sender: str, recipients: list[str], count: int, age: str) -> list[str]:
    rows = db.execute(
        BACKDATED, {"sender": sender, "recipients": recipients, "count": count, "age": age}
    ).fetchall()
    return [str(row["id"]) for row in rows]


def remaining(db: Db, ids: list[str]) -> dict[str, int]:
    """How many rows of these messages are left, table by table."""
    found = {}
    for table, column in (("messages", "id"), ("message_recipients", "message_id"),
                          ("agent_message_metadata", "message_id")):  # fmt: skip
        statement = pgsql.SQL("SELECT count(*) AS n FROM {} WHERE {} = ANY(%s::uuid[])").format(
            pgsql.Identifier(table), pgsql.Identifier(column)
        )
        found[table] = db.execute(statement, (ids,)).fetchone()["n"]
    return found


def test_the_job_deletes_exactly_what_is_older(
    database_url: str, agent: Callable[..., Item], message: Callable[..., Item], db: Any
) -> None:
    a, b = agent(), agent()
    old = backdate(db, a["id"], [b["id"]], 120, f"{DAYS} days 1 minute")
    young = backdate(db, a["id"], [b["id"]], 30, f"{DAYS - 1} days 23 hours")
    reply = message(sender_id=b["id"], content="re", parent_message_id=old[-1],
                    recipient_ids=[a["id"]])  # fmt: skip

    async def run() -> int:
        pool = make_pool(database_url, 1, 2, 5, None)
        await pool.open(wait=True)
        try:
            return await delete_expired(pool, DAYS, 50)
        finally:
            await pool.close()

    deleted = asyncio.run(run())
    assert deleted >= len(old)  # other tests' mail is all new: only these are this old
    assert remaining(db, old) == {"messages": 0, "message_recipients": 0,
                                  "agent_message_metadata": 0}  # fmt: skip
    assert remaining(db, young) == {"messages": 30, "message_recipients": 30,
                                    "agent_message_metadata": 30}  # fmt: skip
    kept = db.execute("SELECT parent_message_id FROM messages WHERE id = %s", (reply["id"],))
    assert kept.fetchone() == {"parent_message_id": None}
    assert asyncio.run(run()) == 0  # nothing older left: a second round deletes nothing


@pytest.fixture
def retaining(database_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Two replicas running the job every 0.2 s, 50 messages a batch."""
    running = []
    try:
        for name in ("a", "b"):
            logs = tmp_path / name
            logs.mkdir()
            running.append(Server(database_url, logs, MAILROOM_RETENTION_DAYS=str(DAYS),
                                  MAILROOM_RETENTION_BATCH="50",
                                  MAILROOM_RETENTION_INTERVAL="0.2"))  # fmt: skip
        yield running
    finally:
        for server in running:
            server.stop()


def deleted_by(server: Server) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = re.search(r'^mailroom_retention_deleted_total\{kind="messages"\} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def test_two_replicas_share_the_work_while_sends_continue(
    database_url: str, agent: Callable[..., Item], db: Any, retaining: list[Server]
) -> None:
    a, b, c = agent(), agent(), agent()
    for server in retaining:
        server.wait_healthy()
    # Other tests share the database: their expired messages go first, then the count starts.
    expired = "SELECT count(*) AS n FROM messages WHERE sent_at < now() - %s::interval"
    deadline = time.monotonic() + 60
    while db.execute(expired, (f"{DAYS} days",)).fetchone()["n"]:
        assert time.monotonic() < deadline, "the expired messages of other tests stayed"
        time.sleep(0.2)
    before = sum(deleted_by(server) for server in retaining)
    old = backdate(db, a["id"], [b["id"], c["id"]], 1000, f"{DAYS + 5} days")
    sent: list[int] = []
    stop = threading.Event()

    def keep_sending(server: Server) -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            while not stop.is_set():
                body = {"sender_id": b["id"], "content": "new", "recipient_ids": [a["id"], c["id"]]}
                sent.append(http.post("/messages", json=body).status_code)

    senders = [threading.Thread(target=keep_sending, args=(s,)) for s in retaining]
    for thread in senders:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while remaining(db, old)["messages"] and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in senders:
            thread.join()
    assert remaining(db, old) == {"messages": 0, "message_recipients": 0,
                                  "agent_message_metadata": 0}  # fmt: skip
    assert sent and set(sent) == {201}
    new = db.execute("SELECT count(*) AS n FROM message_recipients WHERE recipient_id = %s",
                     (a["id"],)).fetchone()  # fmt: skip
    assert new["n"] == len(sent)  # every message sent meanwhile is still there
    # Each message deleted once: the two replicas' counts add up to exactly the old ones.
    assert sum(deleted_by(server) for server in retaining) - before == len(old)
    logs = "".join(server.output() for server in retaining)
    assert "deadlock" not in logs
    assert len(re.findall(r"retention deleted \d+ messages", logs)) >= len(old) // 50
