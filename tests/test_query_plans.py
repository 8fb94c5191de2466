"""The pull queries read indexes, never a sequential scan of the big tables.

A separate database is seeded with SQL (thousands of agents' mailboxes), then
every mailbox, unread, mark-read, conversation-details and search statement is
EXPLAINed with realistic parameters. Every message holds the common word
"message"; one in 5,000 also the rare "zephyr-42".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from handlers.pagination import NEWEST, OLDEST
from queries import sql
from queries.database import migrate
from tests.helpers import temporary_database

BIG_TABLES = {"messages", "message_recipients", "agent_message_metadata"}
# The directory's table: read through its index, never scanned (25,001 agents seeded).
DIRECTORY_TABLES = {"agents"}

SEED = """
INSERT INTO agents (agent_name) SELECT 'agent ' || g FROM generate_series(1, 5000) AS g;
INSERT INTO agents (agent_name) SELECT 'Peer ' || g FROM generate_series(1, 20000) AS g;
INSERT INTO agents (agent_name) VALUES ('archivist');
INSERT INTO conversations (title) SELECT 'topic ' || g FROM generate_series(1, 2000) AS g;
WITH a AS (SELECT array_agg(id ORDER BY id) AS ids FROM agents WHERE agent_name LIKE 'agent %'),
     c AS (SELECT array_agg(id ORDER BY id) AS ids FROM conversations)
INSERT INTO messages (sender_id, conversation_id, content, sent_at)
SELECT a.ids[1 + g % 5000], c.ids[1 + g % 2000],
       'message ' || g || CASE WHEN g % 5000 = 0 THEN ' zephyr-42' ELSE '' END,
       now() - make_interval(secs => g)
  FROM a, c, generate_series(1, 60000) AS g;
WITH a AS (SELECT array_agg(id ORDER BY id) AS ids FROM agents WHERE agent_name LIKE 'agent %')
INSERT INTO message_recipients (message_id, recipient_id, sent_at, is_read)
SELECT m.id, a.ids[1 + (abs(hashtext(m.id::text)) + k * 7) % 5000], m.sent_at, k > 1
  FROM messages m, a, generate_series(1, 3) AS k
ON CONFLICT DO NOTHING;
-- One agent copied on one message in ten: a mailbox big enough that a rare word is
-- found faster through the GIN index than by reading the mailbox.
INSERT INTO message_recipients (message_id, recipient_id, sent_at)
SELECT m.id, a.id, m.sent_at
  FROM messages m, agents a
 WHERE a.agent_name = 'archivist' AND abs(hashtext(m.id::text)) % 10 = 0
ON CONFLICT DO NOTHING;
INSERT INTO agent_message_metadata (message_id, key, value)
SELECT id, 'k', 'v' FROM messages;
"""


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a fresh, seeded database of its own."""
    with temporary_database(database_url, "mailroom_plans") as url:
        asyncio.run(migrate(url, 10))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SEED)
            # As autovacuum would: statistics, and the GIN index's pending list merged (a
            # fresh bulk load leaves it long, which makes every index search look costly).
            conn.execute("VACUUM ANALYZE")
            yield conn


def scanned_tables(plan: dict[str, Any]) -> set[str]:
    """Relations read by a sequential scan anywhere in an EXPLAIN (FORMAT JSON) plan."""
    found = set()
    if plan.get("Node Type") == "Seq Scan":
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= scanned_tables(child)
    return found


def used_indexes(plan: dict[str, Any]) -> set[str]:
    """Indexes read anywhere in an EXPLAIN (FORMAT JSON) plan."""
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= used_indexes(child)
    return found


def plan_of(conn: psycopg.Connection[Any], query_text: str, params: dict[str, Any]) -> Any:
    cur = conn.execute(f"EXPLAIN (FORMAT JSON) {query_text}", params)  # type: ignore[arg-type]
    document = cur.fetchone()[0]
    return document[0]["Plan"] if isinstance(document, list) else json.loads(document)[0]["Plan"]


def explain(conn: psycopg.Connection[Any], query_text: str, params: dict[str, Any]) -> set[str]:
    return scanned_tables(plan_of(conn, query_text, params))


def busiest(conn: psycopg.Connection[Any], query: str) -> Any:
    return conn.execute(query).fetchone()[0]


def cases(conn: psycopg.Connection[Any]) -> list[tuple[str, dict[str, Any]]]:
    agent_id = busiest(
        conn,
        "SELECT recipient_id FROM message_recipients WHERE recipient_id <> "
        "(SELECT id FROM agents WHERE agent_name = 'archivist') "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    archivist = busiest(conn, "SELECT id FROM agents WHERE agent_name = 'archivist'")
    conversation_id = busiest(
        conn, "SELECT conversation_id FROM messages GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    mailbox: list[tuple[str, dict[str, Any]]] = []
    for name, start in (("desc", NEWEST), ("asc", OLDEST)):
        page = {"agent_id": agent_id, "after_sent_at": start[0], "after_id": start[1], "limit": 101,
                "max_bytes": 4_194_304}  # fmt: skip
        for sent, received in ((True, True), (True, False), (False, True)):
            mailbox.append((f"list_mailbox_{name}", {**page, "sent": sent, "received": received}))
        mailbox.append((f"list_unread_{name}", page))
    details = {"conversation_id": conversation_id}
    searches = [
        (name, {**search_params(who, q), "sent": sent, "received": received})
        for who in (agent_id, archivist)
        for name in ("search_messages_by_relevance", "search_messages_by_time")
        for q in ("zephyr-42", "message", '"message 5000"', "message -zephyr")
        for sent, received in ((True, True), (True, False), (False, True))
        # Ranking a word in every message means reading every message of the agent; for
        # the archivist, a party to a tenth of the table, reading the table is cheaper and
        # PostgreSQL rightly does (docs/search.md, "Cost").
        if not (who == archivist and name.endswith("relevance") and q.startswith("message"))
    ]
    details_page = {**details, "after_sent_at": OLDEST[0], "after_id": OLDEST[1], "limit": 1000,
                    "max_bytes": 4_194_304}  # fmt: skip
    agent_ids = [row[0] for row in conn.execute("SELECT id FROM agents LIMIT 10")]
    return [
        *mailbox,
        *searches,
        ("mark_read", {"agent_id": agent_id, "read_up_to_date": OLDEST[0]}),
        # The retention batch and an agent's purge (planned, not run).
        ("delete_expired_messages", {"days": 0, "batch": 500}),  # every row is older
        ("retire_agent", {"agent_id": agent_id}),
        ("purge_agent", {"agent_id": agent_id}),
        ("agent_exists", {"agent_id": agent_id}),
        ("get_conversation", details),
        ("get_conversation_messages_json", {**details_page, "agent_id": None}),
        ("get_conversation_messages_json", {**details_page, "agent_id": agent_id}),
        ("list_agents", {"agent_ids": agent_ids, "viewer": agent_id}),
        # The directory: the admin's page reads each agent's counts from the inbox indexes.
        *(
            (
                "list_directory",
                {
                    "prefix": prefix,
                    "after_name": "",
                    "after_id": OLDEST[1],
                    "activity": activity,
                    "limit": 1001,
                    "max_bytes": 4_194_304,
                },
            )
            for prefix in ("", "Agent 4")
            for activity in (True, False)
        ),
        # What authorization adds to the requests of an agent key.
        ("get_agent_by_key", {"digest": b"\0" * 32}),
        ("get_conversation_party", {**details, "agent_id": agent_id}),
        (
            "list_conversations_of_agent",
            {
                "agent_id": agent_id,
                "archived": None,
                "after_created_at": NEWEST[0],
                "after_id": NEWEST[1],
                "limit": 101,
                "max_bytes": 4_194_304,
            },
        ),
    ]


def search_params(agent_id: Any, q: str) -> dict[str, Any]:
    return {
        "q": q,
        "agent_id": agent_id,
        "sent": True,
        "received": True,
        "conversation_id": None,
        "since": None,
        "until": None,
        "after_rank": float("inf"),
        "after_sent_at": NEWEST[0],
        "after_id": NEWEST[1],
        "limit": 101,
        "max_bytes": 4_194_304,
    }


def test_a_search_for_a_rare_word_reads_the_gin_index(seeded: psycopg.Connection[Any]) -> None:
    """The agent's mail is not read first when the word is rare: the index finds it."""
    agent_id = busiest(seeded, "SELECT id FROM agents WHERE agent_name = 'archivist'")
    for name in ("search_messages_by_relevance", "search_messages_by_time"):
        for q in ("zephyr-42", "zephyr"):
            plan = plan_of(seeded, getattr(sql, name).text, search_params(agent_id, q))
            assert "messages_search" in used_indexes(plan), (name, q)
            assert scanned_tables(plan) & BIG_TABLES == set()


def test_pull_queries_never_scan_big_tables(seeded: psycopg.Connection[Any]):
    """EXPLAIN (without ANALYZE: the writes are planned, not run)."""
    problems = {}
    for name, params in cases(seeded):
        text = getattr(sql, name).text
        tables = explain(seeded, text, params) & BIG_TABLES
        if tables:
            problems[f"{name}({sorted(k for k, v in params.items() if v is True)})"] = tables
    assert problems == {}, f"sequential scans: {problems}"


def test_the_directory_reads_the_agents_index(seeded: psycopg.Connection[Any]):
    """Every page of GET /agents, with and without a name prefix, is one index range."""
    start = {"after_name": "", "after_id": OLDEST[1], "limit": 101, "activity": False,
             "max_bytes": 4_194_304}  # fmt: skip
    cases = {
        "first page": {**start, "prefix": ""},
        "later page": {**start, "prefix": "", "after_name": "peer 5"},
        "prefix": {**start, "prefix": "PEER 12"},
        "prefix, later page": {**start, "prefix": "peer 1", "after_name": "peer 15"},
    }
    problems = {
        name: tables
        for name, params in cases.items()
        if (tables := explain(seeded, sql.list_directory.text, params) & DIRECTORY_TABLES)
    }
    assert problems == {}, f"sequential scans: {problems}"
