"""Bytes on disk per message and per recipient row, indexes included, at a seeded scale.

    uv run python bench/storage.py [messages, default 1000000]

Fills a throwaway database of the machine's PostgreSQL (BENCH_DATABASE_URL,
default postgresql://postgres@127.0.0.1:5432) with bench/seed_scale.py (3
recipient rows a message, 30% read, short contents), vacuums it, and prints
pg_total_relation_size and each index's size of `messages` and
`message_recipients`, divided by their rows. The indexes are in place while
the rows are copied in, as under live traffic (random uuid keys split pages
the same way).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seed_scale import fill

from queries.database import migrate
from tests.helpers import temporary_database

TABLES = ("messages", "message_recipients")


def report(url: str) -> None:
    with psycopg.connect(url) as conn:
        for table in TABLES:
            rows, heap, total, content = conn.execute(
                f"SELECT (SELECT count(*) FROM {table}), pg_relation_size('{table}'),"  # noqa: S608 - our own table names
                f" pg_total_relation_size('{table}'),"
                + (
                    " (SELECT avg(octet_length(content)) FROM messages)"
                    if table == "messages"
                    else " NULL"
                )
            ).fetchone()  # type: ignore[misc]
            print(
                f"{table}: {rows:,} rows, {total / 2**20:,.1f} MiB in all:"
                f" {total / rows:,.0f} bytes a row ({heap / rows:,.0f} in the table itself"
                + (f", contents {float(content):.0f} bytes on average)" if content else ")")
            )
            for name, size in conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)"
                "  FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1",
                (table,),
            ):
                print(f"  index {name}: {size / rows:,.0f} bytes a row")


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    with temporary_database(server.rstrip("/") + "/postgres", "mailroom_storage") as url:
        started = time.monotonic()
        asyncio.run(migrate(url, 30))
        fill(url, messages, 10_000)
        print(f"seeded {messages:,} messages in {time.monotonic() - started:.0f} s")
        report(url)


if __name__ == "__main__":
    main()
