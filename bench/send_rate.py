"""The send path's serialization points: sends per second by concurrent senders, with and
without the notification.

    uv run python bench/send_rate.py [seconds per cell, default 3]

Runs create_message (queries/messages.sql, as the service runs it: per-recipient
advisory locks, the inserts, one pg_notify per 200 recipients) on a throwaway
database of the machine's PostgreSQL (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432), from 1, 2, 4 and 8 connections at once,
each sender to its own 3 recipients, while a listening connection (as the
service's stream listener) LISTENs on the inbox channel and drains every
notification. Without the service in between: what is measured is PostgreSQL's
side of a send, where the serialization points are.

"Without the notification" is a bench-only switch: in its throwaway database the
bench replaces notify_recipients() with a function that does nothing, then restores
it; the service has no such setting. A third mode measures a design that
keeps the notification out of the data's commit: the same silent function,
then, once the send has committed, its notifications from a statement of
their own on the same connection, in a transaction with synchronous_commit
off (a notification takes an xid, so its commit writes a record; not waiting
for that record's flush, it holds the notify lock for microseconds). The modes alternate cell
by cell, five cells each, and the median counts, so a busy machine moves
them alike. Each cell gives sends per second and the CPU time of the senders'
PostgreSQL backends per send (/proc/PID/stat of each pg_backend_pid(), when
PostgreSQL runs on this machine).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queries import sql
from queries.database import migrate
from tests.helpers import temporary_database

CONCURRENCY = (1, 2, 4, 8)
REPEATS = 5  # cells per mode and concurrency, alternating; the median counts
RECIPIENTS = 3
TICKS = os.sysconf("SC_CLK_TCK")
# The third mode's second statement: the notifications of one committed send, in a
# transaction of their own that does not wait for its commit record's flush (a lost
# notification costs nothing: streams read the table, a restarted server wakes them all).
AFTER_COMMIT = """WITH quick AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT notify_recipients(message_id, sent_at, array_agg(recipient_id))
  FROM message_recipients, quick WHERE message_id = %s GROUP BY message_id, sent_at"""
MODES = ("notify", "silent", "after commit")
SILENT = """CREATE OR REPLACE FUNCTION notify_recipients(message_id uuid, sent_at timestamptz,
                                                    recipient_ids uuid[])
RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$"""


def backend_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # PostgreSQL runs elsewhere
    return (int(fields[11]) + int(fields[12])) / TICKS


def drain(url: str, stop: threading.Event, counted: list[int]) -> None:
    """The stream listener's part: LISTEN and take every notification."""
    with psycopg.connect(url, autocommit=True) as conn:
        sql_text = sql.listen_inbox.text.replace("%%", "%")
        conn.execute(sql_text)
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                counted[0] += 1


async def run(url: str, seconds: float) -> None:
    await migrate(url, 30)
    agents = [str(uuid.uuid4()) for _ in range(1 + RECIPIENTS * max(CONCURRENCY))]
    with psycopg.connect(url) as conn:
        for agent in agents:
            conn.execute("INSERT INTO agents (id, agent_name) VALUES (%s, 'rate')", (agent,))
        definition = "SELECT pg_get_functiondef('notify_recipients'::regproc)"
        original = conn.execute(definition).fetchone()[0]  # type: ignore[index]
        settings = conn.execute(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync'),"
            " current_setting('server_version')"
        ).fetchone()
    print(f"PostgreSQL {settings[2]}, synchronous_commit={settings[0]}, fsync={settings[1]}")  # type: ignore[index]
    stop, counted = threading.Event(), [0]
    listener = threading.Thread(target=drain, args=(url, stop, counted), daemon=True)
    listener.start()
    rows = []
    try:
        for concurrency in CONCURRENCY:
            runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
            for _ in range(REPEATS):
                for mode in MODES:
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute(original if mode == "notify" else SILENT)
                    runs[mode].append(
                        await measure_cpu(url, agents, concurrency, seconds, mode == MODES[2])
                    )
            figures = {
                mode: (
                    statistics.median(rate for rate, _ in cells),
                    statistics.median(cpu for _, cpu in cells),
                )
                for mode, cells in runs.items()
            }
            rows.append((concurrency, figures))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(original)
        stop.set()
        listener.join(5)
    print(
        f"{RECIPIENTS} recipients a send, distinct per sender; median of {REPEATS} cells"
        f" of {seconds:.0f} s"
    )
    print(
        "| senders | sends/s, notify in the send | without notify | notify after commit |"
        " PG CPU us/send: in the send | without | after commit |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for concurrency, figures in rows:
        rates = " | ".join(f"{figures[mode][0]:,.0f}" for mode in MODES)
        cpus = " | ".join(f"{figures[mode][1]:.0f}" for mode in MODES)
        print(f"| {concurrency} | {rates} | {cpus} |")
    print(f"notifications the listener drained: {counted[0]:,}")


async def measure_cpu(
    url: str, agents: list[str], concurrency: int, seconds: float, after_commit: bool
) -> tuple[float, float]:
    """(sends per second, backend CPU us per send) of one cell."""
    conns = [
        await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(concurrency)
    ]
    pids = [conn.info.backend_pid for conn in conns]
    before = sum(backend_cpu(pid) for pid in pids)
    until = time.monotonic() + seconds
    started = time.monotonic()

    async def loop(conn: psycopg.AsyncConnection, n: int) -> int:
        own = agents[1 + n * RECIPIENTS : 1 + (n + 1) * RECIPIENTS]
        sends = 0
        while time.monotonic() < until:
            message_id = await sql.create_message.value(
                conn,
                sender_id=agents[0],
                parent_message_id=None,
                conversation_id=None,
                content="rate",
                message_type="text",
                importance=0,
                status="sent",
                msg_metadata=None,
                recipient_ids=own,
            )
            if after_commit:
                await conn.execute(AFTER_COMMIT, (message_id,))
            sends += 1
        return sends

    counts = await asyncio.gather(*(loop(conn, n) for n, conn in enumerate(conns)))
    elapsed = time.monotonic() - started
    after = sum(backend_cpu(pid) for pid in pids)
    for conn in conns:
        await conn.close()
    sends = sum(counts)
    return sends / elapsed, (after - before) / max(sends, 1) * 1e6


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    with temporary_database(server.rstrip("/") + "/postgres", "mailroom_rate") as url:
        asyncio.run(run(url, seconds))


if __name__ == "__main__":
    main()
