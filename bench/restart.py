"""Restart proof: messages posted through two replicas while PostgreSQL restarts twice.

Usage: uv run python bench/restart.py [seconds between restarts, default 4]

A throwaway embedded cluster (never a shared server) serves two service
processes. Eight clients post messages with two recipients each, alternating
replicas; a client that gets 503 retries the same message with the same
Idempotency-Key, as a careful client would. Meanwhile the cluster is
restarted twice with `pg_ctl restart -m fast`. Afterwards the script checks
the database and prints: requests sent, 201s, 503s, other statuses, requests
that hung, lost acknowledged writes (a 201 whose message or recipients are
missing), duplicates (a message stored twice), each replica's recovery time
(from pg_ctl returning to that replica's next 201) and the 503s each replica
answered during each restart. It fails on a lost write, a duplicate, a status
other than 201 or 503, a recovery slower than 5 s or missing, and a restart no
replica answered a 503 for: an outage nobody saw proves no recovery (one replica
may see it only as a slower request, when its requests of that moment wait on
the pool and then succeed).
"""

from __future__ import annotations

import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, Cluster, Server

CLIENTS = 8
RECIPIENTS = 10
HANG_SECONDS = 7.0  # the pool timeout (5 s) and some: a request slower than this hung


def main() -> None:
    pause = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    work = Path(tempfile.mkdtemp(prefix="mailroom-restart-"))
    cluster = Cluster(work / "pgdata")
    replicas = [Server(cluster.url, work / f"replica-{name}", *BENCH_OPTIONS) for name in "ab"]
    lock = threading.Lock()
    statuses: collections.Counter[str] = collections.Counter()
    acknowledged: dict[str, list[str]] = {}  # content -> recipient ids, for every 201
    successes: list[tuple[float, int]] = []  # (time, replica index) of every 201
    refusals: list[tuple[float, int]] = []  # (time, replica index) of every 503
    stop = threading.Event()
    try:
        for replica in replicas:
            replica.wait_healthy()
        with httpx.Client(base_url=replicas[0].base_url, timeout=10) as http:
            agents = [
                http.post("/agents", json={"agent_name": f"r{n}"}).json()["id"]
                for n in range(RECIPIENTS)
            ]

        def client(index: int) -> None:
            sessions = [httpx.Client(base_url=r.base_url, timeout=HANG_SECONDS) for r in replicas]
            number = 0
            while not stop.is_set():
                number += 1
                content = f"restart client {index} message {number}"
                recipients = [agents[(index + number) % RECIPIENTS], agents[number % RECIPIENTS]]
                recipients = sorted(set(recipients))
                body = {"content": content, "recipient_ids": recipients}
                while True:
                    which = (index + number) % 2
                    try:
                        response = sessions[which].post(
                            "/messages", json=body, headers={"Idempotency-Key": content}
                        )
                    except httpx.TimeoutException:
                        with lock:
                            statuses["hung"] += 1
                        continue
                    except httpx.TransportError as error:
                        with lock:
                            statuses[f"transport error {type(error).__name__}"] += 1
                        time.sleep(0.05)
                        continue
                    with lock:
                        statuses[str(response.status_code)] += 1
                        if response.status_code == 201:
                            acknowledged[content] = recipients
                            successes.append((time.monotonic(), which))
                        elif response.status_code == 503:
                            refusals.append((time.monotonic(), which))
                    if response.status_code != 503:
                        break
                    time.sleep(0.05)  # Retry-After is 1 s; a busy client retries sooner
            for session in sessions:
                session.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        recoveries = []
        outages = []  # per restart, the 503s each replica answered from pg_ctl to the next
        for _ in range(2):
            time.sleep(pause)
            down = time.monotonic()
            cluster.restart()
            back = time.monotonic()
            time.sleep(pause)
            with lock:
                firsts = [
                    min((t for t, r in successes if r == which and t >= back), default=None)
                    for which in range(2)
                ]
                outages.append(
                    [sum(1 for t, r in refusals if r == which and t >= down) for which in range(2)]
                )
            recoveries.append([None if t is None else t - back for t in firsts])
        stop.set()
        for thread in threads:
            thread.join()

        with psycopg.connect(cluster.url, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT m.content, count(DISTINCT m.id), array_agg(DISTINCT r.recipient_id::text)"
                "  FROM messages m LEFT JOIN message_recipients r ON r.message_id = m.id"
                " WHERE m.content LIKE 'restart client %' GROUP BY m.content"
            ).fetchall()
        by_content = {content: (count, set(ids) - {None}) for content, count, ids in stored}
        lost = [
            content
            for content, recipients in acknowledged.items()
            if content not in by_content or by_content[content][1] != set(recipients)
        ]
        duplicates = [content for content, (count, _) in by_content.items() if count > 1]
        others = {s: n for s, n in statuses.items() if s not in ("201", "503")}
        print(f"requests sent: {sum(statuses.values())}")
        print(f"201s: {statuses['201']}")
        print(f"503s: {statuses['503']}")
        print(f"other statuses: {others or 'none'}")
        print(f"lost acknowledged writes: {len(lost)}")
        print(f"duplicates: {len(duplicates)}")
        for number, ((a, b), seen) in enumerate(zip(recoveries, outages, strict=True), 1):
            shown = ", ".join("none" if t is None else f"{t:.2f} s" for t in (a, b))
            print(f"restart {number}: recovery time (replica a, replica b): {shown}")
            print(f"restart {number}: 503s during the outage (replica a, replica b): {seen}")
        times = [t for pair in recoveries for t in pair]
        failed = {
            f"{len(lost)} acknowledged writes lost": bool(lost),
            f"{len(duplicates)} messages stored twice": bool(duplicates),
            f"other statuses: {others}": bool(others),
            "a replica never recovered": any(t is None for t in times),
            "a recovery took over 5 s": any(t is not None and t > 5 for t in times),
            # A restart nobody noticed proves no recovery. One replica may see it only as
            # latency (its requests of that moment waited on the pool and then succeeded).
            "no replica answered a 503 during a restart": any(sum(seen) == 0 for seen in outages),
        }
        failures = [reason for reason, failing in failed.items() if failing]
        if failures:
            raise SystemExit("FAIL: " + "; ".join(failures))
        print("PASS")
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()


if __name__ == "__main__":
    main()
