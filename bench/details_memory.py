"""Worker memory while big conversation details are read: the security review's scenario.

Usage: uv run python bench/details_memory.py [messages, default 3000] [bytes each, default 65536]

Starts one service process (one uvicorn worker) on a throwaway database
(created on BENCH_DATABASE_URL's server, or in a throwaway embedded cluster),
writes one conversation of that many messages straight into PostgreSQL (SQL,
not the rate-limited API), each with one recipient, then reads its details
three times at once: once as the review did (one GET each), and once
following every `Link: rel="next"` to the end. For each it prints the
statuses, the bytes and pages received, the time, and the worker's peak
resident memory (VmHWM, reset before each round) above its resting size.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, Cluster, Server

READERS = 3  # the review's three requests at once
MiB = 1024 * 1024


def memory(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status, in bytes (VmRSS: now, VmHWM: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current size (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def seed(url: str, messages: int, size: int) -> str:
    """One conversation of `messages` messages of `size` bytes, from A to B; its id."""
    chunk = "0123456789abcdef" * 4  # 64 bytes; repeated to `size`
    with psycopg.connect(url, autocommit=True) as conn:
        a, b = (
            conn.execute(
                "INSERT INTO agents (agent_name) VALUES (%s) RETURNING id", (n,)
            ).fetchone()[0]
            for n in ("sender", "reader")
        )
        conversation = conn.execute(
            "INSERT INTO conversations (title) VALUES ('big') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            """
            INSERT INTO messages (sender_id, conversation_id, content, sent_at, updated_at)
            SELECT %(a)s, %(c)s, left(g || repeat(%(chunk)s, %(repeats)s), %(size)s),
                   clock_timestamp(), clock_timestamp()
              FROM generate_series(1, %(n)s) AS g
            """,
            {"a": a, "c": conversation, "chunk": chunk, "repeats": size // 64 + 1,
             "size": size, "n": messages},
        )  # fmt: skip
        conn.execute(
            """
            INSERT INTO message_recipients (message_id, recipient_id, sent_at)
            SELECT id, %(b)s, sent_at FROM messages WHERE conversation_id = %(c)s
            """,
            {"b": b, "c": conversation},
        )
        conn.execute("ANALYZE")
    return str(conversation)


def read(base_url: str, path: str, follow: bool) -> tuple[list[int], int, int]:
    """GET `path` (and its next pages when `follow`): statuses, bytes, messages received."""
    statuses, received, count = [], 0, 0
    with httpx.Client(timeout=120) as http:
        url: str | None = base_url + path
        while url is not None:
            response = http.get(url)
            statuses.append(response.status_code)
            received += len(response.content)
            if response.status_code == 200:
                count += len(response.json()["messages"])
            link = response.links.get("next") if follow else None
            url = link["url"] if link else None
    return statuses, received, count


def round_of(replica: Server, path: str, follow: bool) -> None:
    pid = replica.process.pid
    resting = memory(pid, "VmRSS")
    reset_peak(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(READERS) as pool:
        results = list(pool.map(lambda _: read(replica.base_url, path, follow), range(READERS)))
    seconds = time.perf_counter() - started
    peak = memory(pid, "VmHWM")
    statuses = sorted({status for result in results for status in result[0]})
    pages = [len(result[0]) for result in results]
    print(
        f"{'every page' if follow else 'one GET'} x{READERS}: statuses {statuses}, "
        f"pages {pages}, messages {[r[2] for r in results]}, "
        f"{sum(r[1] for r in results) / MiB:.1f} MiB received in {seconds:.1f} s; "
        f"worker resting {resting / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB "
        f"(+{(peak - resting) / MiB:.0f} MiB)"
    )


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 65536
    work = Path(tempfile.mkdtemp(prefix="mailroom-details-"))
    server = os.environ.get("BENCH_DATABASE_URL")
    name = f"mailroom_details_{secrets.token_hex(4)}"
    if server:
        admin = urlunsplit(urlsplit(server)._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name made above
        url = urlunsplit(urlsplit(server)._replace(path="/" + name))
    else:
        url = Cluster(work / "pgdata").url
    replica = Server(url, work / "replica", *BENCH_OPTIONS, MAILROOM_STATEMENT_TIMEOUT="60")
    try:
        replica.wait_healthy()
        started = time.perf_counter()
        conversation = seed(url, messages, size)
        print(
            f"{messages} messages of {size} bytes in one conversation, seeded in "
            f"{time.perf_counter() - started:.1f} s"
        )
        path = f"/conversations/{conversation}/details"
        httpx.get(replica.base_url + f"/conversations/{conversation}", timeout=10)  # warm up
        round_of(replica, path, follow=False)
        round_of(replica, path, follow=True)
    finally:
        replica.stop()
        if server:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
