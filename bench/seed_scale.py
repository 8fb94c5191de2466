"""Fill a mailroom database with COPY, not the API: agents, messages, recipient rows.

Usage: seed_scale.py DATABASE_URL MESSAGES [AGENTS]

Applies the migrations, then writes AGENTS agents (default 10,000), MESSAGES
messages with 3 distinct recipients each (sent over the past year, 30% of
receipts read, half of the messages in one of 1,000 conversations), and a
fixed probe that is the same at every size: an agent that received 1,000
messages (the pull, unread and mark-read scenarios) and a conversation of 200
messages (details). Prints the probe ids as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from queries.database import migrate

YEAR_US = 365 * 24 * 3600 * 1_000_000
NOW = datetime.now(UTC)


def when(rng: random.Random) -> datetime:
    return NOW - timedelta(microseconds=rng.randrange(YEAR_US))


def fill(url: str, messages: int, agents: int) -> dict[str, str]:
    rng = random.Random(20261128)  # noqa: S311 - repeatable test data, not secrets
    agent_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(agents)]
    conversations = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(1000)]
    probe_agent, probe_conversation = agent_ids[0], conversations[0]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY agents (id, agent_name, created_at, updated_at) FROM STDIN") as copy:
            for n, agent_id in enumerate(agent_ids):
                copy.write_row((agent_id, f"scale agent {n}", NOW, NOW))
        with cur.copy(
            "COPY conversations (id, title, metadata, created_at, updated_at) FROM STDIN"
        ) as copy:
            for n, conversation_id in enumerate(conversations):
                copy.write_row((conversation_id, f"topic {n}", "{}", NOW, NOW))
        rows: list[tuple[uuid.UUID, uuid.UUID, datetime, bool]] = []
        with cur.copy(
            "COPY messages (id, sender_id, sent_at, conversation_id, content, updated_at)"
            " FROM STDIN"
        ) as copy:
            for n in range(messages + 1200):
                message_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                sent_at = when(rng)
                sender = agent_ids[rng.randrange(1, agents)]
                if n < 1000:  # the probe mailbox: 1,000 received messages
                    recipients = [probe_agent, *rng.sample(agent_ids[1:], 2)]
                    conversation = None
                elif n < 1200:  # the probe conversation: 200 messages
                    recipients = rng.sample(agent_ids[1:], 3)
                    conversation = probe_conversation
                else:
                    recipients = rng.sample(agent_ids[1:], 3)
                    conversation = conversations[rng.randrange(1, 1000)] if n % 2 else None
                copy.write_row((message_id, sender, sent_at, conversation, f"message {n}", sent_at))
                rows.extend((message_id, r, sent_at, rng.random() < 0.3) for r in recipients)
        with cur.copy(
            "COPY message_recipients (message_id, recipient_id, sent_at, is_read, read_at)"
            " FROM STDIN"
        ) as copy:
            for message_id, recipient, sent_at, is_read in rows:
                copy.write_row((message_id, recipient, sent_at, is_read, NOW if is_read else None))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"agent": str(probe_agent), "conversation": str(probe_conversation)}


def main() -> None:
    url, messages = sys.argv[1], int(sys.argv[2])
    agents = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    started = time.monotonic()
    asyncio.run(migrate(url, 10))
    probe = fill(url, messages, agents)
    elapsed = time.monotonic() - started
    print(f"seeded {messages:,} messages, {agents:,} agents in {elapsed:.0f} s", file=sys.stderr)
    print(json.dumps(probe))


if __name__ == "__main__":
    main()
