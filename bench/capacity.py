"""CPU per operation of the mailroom worker and of PostgreSQL: the inputs of the capacity model.

    uv run python bench/capacity.py [requests per operation, default 2000]

Starts one uvicorn worker (uvloop, httptools, MAILROOM_AUTH=off) on a
throwaway database of the machine's PostgreSQL (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432), seeds 1,000 agents by COPY and 200
unread messages for one of them, then makes each operation `requests` times,
one at a time on a kept-alive connection: a send to 3 recipients, a pull of
the 100 newest unread messages (what an agent's poll costs when it has mail),
an empty unread page (what a poll costs when it has none) and a mark-read.
For each it prints the worker's CPU time per request (/proc/PID/stat) and
the CPU time of the database's backends per request (/proc/PID/stat of every
backend of the throwaway database, from pg_stat_activity; PostgreSQL's
background writers are not in it), totals over all rounds (/proc counts in
ticks of 10 ms). From those: requests per second one core of each can do.
The operations alternate in rounds of 100 so a busy machine moves them alike.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import temporary_database
from tests.servers import BENCH_OPTIONS, Server

TICKS = os.sysconf("SC_CLK_TCK")
ROUND = 100


def cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # a backend that ended, or PostgreSQL on another machine
    return (int(fields[11]) + int(fields[12])) / TICKS


def backends_cpu(admin: psycopg.Connection, database: str) -> float:
    pids = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return sum(cpu(pid) for (pid,) in pids)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    work = Path(tempfile.mkdtemp(prefix="mailroom-capacity-"))
    with temporary_database(server.rstrip("/") + "/postgres", "mailroom_capacity") as url:
        database = url.rsplit("/", 1)[1].split("?")[0]
        replica = Server(url, work / "worker", *BENCH_OPTIONS)
        try:
            replica.wait_healthy()
            run(url, database, replica, count)
        finally:
            replica.stop()
    shutil.rmtree(work)


def run(url: str, database: str, replica: Server, count: int) -> None:
    agents = [str(uuid.uuid4()) for _ in range(1000)]
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy("COPY agents (id, agent_name) FROM STDIN") as copy,
    ):
        for n, agent in enumerate(agents):
            copy.write_row((agent, f"capacity-{n}"))
    reader, empty = agents[0], agents[1]
    http = httpx.Client(base_url=replica.base_url, timeout=30)
    for n in range(200):
        http.post("/messages", json={"content": f"seed {n}", "recipient_ids": [reader]})
    state = {"n": 0}

    def send() -> None:
        state["n"] += 1
        n = state["n"]
        recipients = [agents[2 + (n * 3 + k) % 998] for k in range(3)]
        response = http.post("/messages", json={"content": "x" * 100, "recipient_ids": recipients})
        assert response.status_code == 201, response.text

    def pull() -> None:
        response = http.get(f"/agents/{reader}/messages/unread", params={"limit": 100})
        assert response.status_code == 200 and len(response.json()) == 100

    def poll_empty() -> None:
        response = http.get(f"/agents/{empty}/messages/unread")
        assert response.status_code == 200 and response.json() == []

    def mark_read() -> None:
        response = http.put(
            f"/agents/{empty}/messages/mark-read",
            json={"read_up_to_date": "2000-01-01T00:00:00Z"},
        )
        assert response.status_code == 200, response.text

    operations = {
        "send to 3 recipients": send,
        "pull 100 unread": pull,
        "poll, nothing unread": poll_empty,
        "mark-read": mark_read,
    }
    worker = replica.process.pid
    # Totals, not a median of rounds: /proc counts in ticks of 10 ms.
    costs: dict[str, list[float]] = {name: [0.0, 0.0] for name in operations}
    with psycopg.connect(url, autocommit=True) as admin:
        for operation in operations.values():
            for _ in range(50):
                operation()  # warm: prepared statements, pool connections
        for _ in range(max(1, count // ROUND)):
            for name, operation in operations.items():
                w, p = cpu(worker), backends_cpu(admin, database)
                for _ in range(ROUND):
                    operation()
                costs[name][0] += cpu(worker) - w
                costs[name][1] += backends_cpu(admin, database) - p
    http.close()
    made = max(1, count // ROUND) * ROUND
    print(f"one worker, auth off; {made} requests an operation, in rounds of {ROUND}")
    print("| operation | worker CPU us | per worker core /s | PostgreSQL CPU us | per PG core /s |")
    print("| --- | --- | --- | --- | --- |")
    for name, (worker_seconds, database_seconds) in costs.items():
        w, p = worker_seconds / made * 1e6, database_seconds / made * 1e6
        worker_rate = f"{1e6 / w:,.0f}" if w else "(under a tick: make more requests)"
        database_rate = f"{1e6 / p:,.0f}" if p else "(under a tick: make more requests)"
        print(f"| {name} | {w:.0f} | {worker_rate} | {p:.0f} | {database_rate} |")


if __name__ == "__main__":
    main()
