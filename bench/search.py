"""Search latency and the retention job under load, on a database filled by seed_scale.py.

Usage: uv run python bench/search.py [messages, default 100000] [requests per case, default 200]

At the 1,000,000-message scale of issue 15: `uv run python bench/search.py 1000000` (the
seeding alone takes several minutes on two cores). Needs BENCH_DATABASE_URL (a server
where it may create and drop the database `mailroom_search_bench`; default
postgresql://postgres@127.0.0.1:5432).

1. Seeds MESSAGES messages among 10,000 agents (bench/seed_scale.py: each message is
   "message <n>" to 3 recipients, sent over the past year), starts one replica with
   authentication on, and gives one ordinary agent (about MESSAGES * 4 / 10,000 messages
   of its own) an API key.
2. Search p50/p99 (sequential requests, limit 20): a rare word (a number that occurs
   once), a common word ("message", in every message), a phrase ("message <n>"),
   as that agent with its key, and as the admin on the same agent and on the probe
   agent (1,000 received messages).
3. The mixed scenario (70% mailbox and unread pulls, 30% sends, 8 concurrent clients)
   for MIXED_SECONDS, then again for as long as the retention job takes to delete the
   oldest tenth of the messages (100,000 at 1M) in batches of 500: mixed p99 before and during, the
   batches' duration (the time each holds its row locks) p50/p99/max.
Prints a Markdown table of each; bounded: every phase has a request count or a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from seed_scale import fill  # noqa: E402

from operations import retention  # noqa: E402
from queries.database import make_pool, migrate  # noqa: E402
from tests.servers import BENCH_OPTIONS, Server  # noqa: E402

DATABASE = "mailroom_search_bench"
MIXED_SECONDS = 15.0
CLIENTS = 8
RETENTION_BATCH = 500
WARM_UP = 5  # untimed requests before each case: the pool's connections, the caches


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.1f} | {percentile(values, 0.99) * 1000:.1f}"


def fresh_database(server: str) -> str:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"{server}/{DATABASE}"


def give_key(url: str, probe: str) -> tuple[str, str, dict[str, str]]:
    """An ordinary agent (the 6th seeded) with a new key; words to search for in its mail."""
    key = "mr_" + secrets.token_urlsafe(32)
    with psycopg.connect(url, autocommit=True) as conn:
        agent = conn.execute("SELECT id FROM agents WHERE agent_name = 'scale agent 5'").fetchone()[
            0
        ]
        conn.execute("UPDATE agents SET api_key_digest = %s WHERE id = %s",
                     (hashlib.sha256(key.encode()).digest(), agent))  # fmt: skip
        # A number in one of its received messages: a word that occurs once in the table.
        content = conn.execute(
            "SELECT m.content FROM message_recipients r JOIN messages m ON m.id = r.message_id"
            " WHERE r.recipient_id = %s ORDER BY r.sent_at LIMIT 1", (agent,)
        ).fetchone()[0]  # fmt: skip
        probe_content = conn.execute(
            "SELECT m.content FROM message_recipients r JOIN messages m ON m.id = r.message_id"
            " WHERE r.recipient_id = %s ORDER BY r.sent_at LIMIT 1", (probe,)
        ).fetchone()[0]  # fmt: skip
    number = content.split()[-1]
    return (
        str(agent),
        key,
        {
            "rare": number,
            "common": "message",
            "phrase": f'"{content}"',
            "probe_rare": probe_content.split()[-1],
            "probe_phrase": f'"{probe_content}"',
        },
    )


async def timed_searches(base: str, agent: str, q: str, headers: dict[str, str],
                         count: int) -> list[float]:  # fmt: skip
    times = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for n in range(WARM_UP + count):
            started = time.perf_counter()
            response = await http.get(f"/agents/{agent}/messages/search",
                                      params={"q": q, "limit": 20})  # fmt: skip
            if n >= WARM_UP:
                times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            assert response.json(), f"nothing found for {q!r}"
    return times


async def mixed(base: str, agents: list[str], headers: dict[str, str], done: Callable[[], bool],
                rng: random.Random) -> tuple[list[float], int]:  # fmt: skip
    """The mixed scenario until `done()`: latencies, and the count of non-2xx answers."""
    times: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            while not done():
                agent = rng.choice(agents)
                roll = rng.random()
                started = time.perf_counter()
                if roll < 0.35:
                    response = await http.get(f"/agents/{agent}/messages", params={"limit": 100})
                elif roll < 0.7:
                    response = await http.get(f"/agents/{agent}/messages/unread",
                                              params={"limit": 100})  # fmt: skip
                else:
                    body = {"sender_id": agent, "content": f"mixed {rng.random()}",
                            "recipient_ids": rng.sample(agents, 3)}  # fmt: skip
                    response = await http.post("/messages", json=body)
                times.append(time.perf_counter() - started)
                failures += not response.is_success

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return times, failures


async def retention_run(url: str, days: int, batches: list[float]) -> tuple[int, float]:
    """The job's own loop, timing each batch as the histogram in /metrics does; the
    messages it deleted and the seconds it ran."""
    pool = make_pool(url, 1, 2, 30, None)
    await pool.open(wait=True)
    total, started = 0, time.perf_counter()
    try:
        while True:
            begun = time.perf_counter()
            deleted = await retention.delete_batch(pool, days, RETENTION_BATCH)
            batches.append(time.perf_counter() - begun)
            total += deleted.messages if deleted else 0
            if deleted is None or deleted.messages < RETENTION_BATCH:
                return total, time.perf_counter() - started
            await asyncio.sleep(retention.PAUSE)
    finally:
        await pool.close()


async def measure(url: str, base: str, admin: dict[str, str], probe: str, messages: int,
                  count: int) -> None:  # fmt: skip
    agent, key, words = give_key(url, probe)
    print(f"\n### Search, {messages:,} messages, 10,000 agents ({count} requests each, limit 20)\n")
    print("| query | caller, mailbox | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    own = {"Authorization": f"Bearer {key}"}
    for kind in ("rare", "common", "phrase"):
        q = words[kind]
        for caller, who, headers in (("agent", agent, own), ("admin", agent, admin)):
            times = await timed_searches(base, who, q, headers, count)
            print(f"| {kind} `{q}` | {caller}, an ordinary agent | {summary(times)} |")
        probe_q = words.get(f"probe_{kind}", q)
        times = await timed_searches(base, probe, probe_q, admin, count)
        print(
            f"| {kind} `{probe_q}` | admin, the probe agent (1,000 received) | {summary(times)} |"
        )

    with psycopg.connect(url) as conn:
        agents = [str(row[0]) for row in conn.execute("SELECT id FROM agents LIMIT 1000")]
        # Days that leave the newest nine tenths: a tenth is older (sent_at spans a year).
        (cutoff,) = conn.execute(
            "SELECT percentile_disc(0.1) WITHIN GROUP (ORDER BY sent_at) FROM messages"
        ).fetchone()
        (age,) = conn.execute("SELECT extract(day FROM now() - %s)::int", (cutoff,)).fetchone()
        (older,) = conn.execute(
            "SELECT count(*) FROM messages WHERE sent_at < now() - make_interval(days => %s)",
            (age,),
        ).fetchone()
    rng = random.Random(15)  # noqa: S311 - a repeatable load, not a secret
    deadline = time.monotonic() + MIXED_SECONDS
    before, failed_before = await mixed(
        base, agents, admin, lambda: time.monotonic() > deadline, rng
    )
    batches: list[float] = []
    job = asyncio.create_task(retention_run(url, age, batches))
    during, failed_during = await mixed(base, agents, admin, job.done, rng)
    deleted, took = await job
    print(f"\n### Retention: {deleted:,} messages older than {age} days (of {older:,}),"
          f" batches of {RETENTION_BATCH}, while the mixed scenario runs\n")  # fmt: skip
    print("| mixed scenario | requests | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|")
    print(f"| before | {len(before):,} | {summary(before)} | {failed_before} |")
    print(f"| during retention | {len(during):,} | {summary(during)} | {failed_during} |")
    print(f"\nRetention: {len(batches)} batches in {took:.1f} s (the mixed scenario ran"
          f" until the job ended); one batch's transaction p50"
          f" {percentile(batches, 0.5) * 1000:.1f} ms, p99 {percentile(batches, 0.99) * 1000:.1f}"
          f" ms, max {max(batches) * 1000:.1f} ms.")  # fmt: skip
    print(f"Mixed p99 during / before: {percentile(during, 0.99) / percentile(before, 0.99):.2f}x")


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    url = fresh_database(server.rstrip("/"))
    started = time.monotonic()
    asyncio.run(migrate(url, 10))
    probe = fill(url, messages, 10_000)["agent"]
    print(f"seeded {messages:,} messages in {time.monotonic() - started:.0f} s", file=sys.stderr)
    token = "bench-admin-" + secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="mailroom-search-"))
    replica = Server(url, work / "replica", *BENCH_OPTIONS, MAILROOM_AUTH="required",
                     MAILROOM_ADMIN_TOKEN=token, MAILROOM_WRITE_RATE_LIMIT="0")  # fmt: skip
    try:
        replica.wait_healthy()
        admin = {"Authorization": f"Bearer {token}"}
        asyncio.run(measure(url, replica.base_url, admin, probe, messages, count))
        print(f"replica log: {replica.stdout_path}", file=sys.stderr)
    finally:
        replica.stop()
        with psycopg.connect(f"{server.rstrip('/')}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
