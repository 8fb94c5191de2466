"""Retiring an agent (DELETE /agents/{id}) and purging it (?purge=true): what stops, what stays.

The open mode (MAILROOM_AUTH=off) here; tests/test_access.py retires with keys.
The streams and long-polls are held on one replica and the agent retired
through the other: the retirement reaches them through PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql
from starlette.testclient import TestClient

from tests.helpers import UNKNOWN, Item, Stream, assert_invalid, assert_not_found, ids
from tests.servers import Server


@pytest.fixture
def send(message: Callable[..., Item]) -> Callable[..., Item]:
    def make(sender: Item | None, *recipients: Item, **fields: Any) -> Item:
        sender_id = None if sender is None else sender["id"]
        return message(sender_id=sender_id, recipient_ids=[r["id"] for r in recipients], **fields)

    return make


def retire(client: TestClient, agent: Item, **params: str) -> None:
    response = client.delete(f"/agents/{agent['id']}", params=params)
    assert response.status_code == 204, response.text
    assert response.content == b""


def test_a_retired_agent_is_gone_but_its_history_stays_with_the_others(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b = agent(agent_name="kumquat-a"), agent(agent_name="kumquat-b")
    to_b = send(a, b, content="before retirement kumquat")
    to_a = send(b, a, content="a reply kumquat")
    retire(client, a)
    assert_not_found(client.get(f"/agents/{a['id']}"), "Agent not found")
    directory = client.get("/agents", params={"name": "kumquat-", "limit": 1000}).json()
    assert a["id"] not in ids(directory) and b["id"] in ids(directory)
    assert_not_found(client.put(f"/agents/{a['id']}", json={"port": 80}), "Agent not found")
    # The other party's history is whole: both messages, the sender still named.
    mailbox = client.get(f"/agents/{b['id']}/messages").json()
    assert ids(mailbox) == [to_a["id"], to_b["id"]]
    assert mailbox[1]["sender_id"] == a["id"]
    assert (
        len(client.get(f"/agents/{b['id']}/messages/search", params={"q": "kumquat"}).json()) == 2
    )
    # Nothing new reaches it, nor leaves as from it: 409 naming it.
    refused = client.post("/messages", json={"sender_id": b["id"], "content": "x",
                                             "recipient_ids": [a["id"]]})  # fmt: skip
    assert refused.status_code == 409
    detail = f"Agent {a['id']} is retired and receives no messages (recipient_ids)"
    assert refused.json() == {"detail": detail}
    refused = client.post("/messages", json={"sender_id": a["id"], "content": "x"})
    assert refused.status_code == 409 and a["id"] in refused.json()["detail"]
    added = client.post("/message_recipients", json={"message_id": to_b["id"],
                                                     "recipient_id": a["id"]})  # fmt: skip
    assert added.status_code == 409 and a["id"] in added.json()["detail"]
    # Its own history stays readable (to the admin, or anyone in the open mode).
    assert ids(client.get(f"/agents/{a['id']}/messages").json()) == [to_a["id"], to_b["id"]]


def test_a_send_naming_one_retired_agent_among_many_stores_nothing(
    client: TestClient, agent: Callable[..., Item], db: Any
) -> None:
    """The check is the statement's (migration 0033): one retired agent in the middle of
    a long recipient list refuses the whole send, naming it, and no row is left."""
    others = [agent() for _ in range(30)]
    retired = agent()
    retire(client, retired)
    wanted = [o["id"] for o in others[:15]] + [retired["id"]] + [o["id"] for o in others[15:]]
    content = f"to many, one retired {time.monotonic_ns()}"
    refused = client.post("/messages", json={"content": content, "recipient_ids": wanted})
    assert refused.status_code == 409, refused.text
    detail = f"Agent {retired['id']} is retired and receives no messages (recipient_ids)"
    assert refused.json() == {"detail": detail}
    assert db.execute("SELECT count(*) AS n FROM messages WHERE content = %s",
                      (content,)).fetchone()["n"] == 0  # fmt: skip
    for other in (others[0], others[-1]):
        assert client.get(f"/agents/{other['id']}/messages").json() == []
    # Without it, the same send stores every row.
    wanted.remove(retired["id"])
    stored = client.post("/messages", json={"content": content, "recipient_ids": wanted})
    assert stored.status_code == 201, stored.text
    rows = db.execute("SELECT count(*) AS n FROM message_recipients WHERE message_id = %s",
                      (stored.json()["id"],)).fetchone()["n"]  # fmt: skip
    assert rows == 30


def test_retiring_twice_is_204_and_an_unknown_agent_404(
    client: TestClient, agent: Callable[..., Item], db: Any
) -> None:
    a = agent()
    retire(client, a)
    query = "SELECT retired_at, api_key_digest FROM agents WHERE id = %s"
    first = db.execute(query, (a["id"],)).fetchone()
    retire(client, a)
    assert db.execute(query, (a["id"],)).fetchone() == first
    assert first["retired_at"] is not None and first["api_key_digest"] is None
    assert_not_found(client.delete(f"/agents/{UNKNOWN}"), "Agent not found")
    assert_not_found(client.delete(f"/agents/{UNKNOWN}?purge=true"), "Agent not found")
    assert_invalid(client.delete(f"/agents/{a['id']}", params={"purge": "yes"}), "query", "purge")
    assert_invalid(client.delete("/agents/not-an-id"), "path", "agent_id")


def test_a_retried_registration_after_retirement_registers_a_new_agent(
    client: TestClient,
) -> None:
    """The stored answer of the POST /agents that made an agent goes with its retirement: a
    retry with the same Idempotency-Key registers a new agent, not the retired one again."""
    headers = {"Idempotency-Key": f"register-{time.monotonic_ns()}"}
    first = client.post("/agents", json={"agent_name": "again"}, headers=headers)
    assert first.status_code == 201, first.text
    replay = client.post("/agents", json={"agent_name": "again"}, headers=headers)
    assert replay.json()["id"] == first.json()["id"]  # before: a replay
    retire(client, first.json())
    after = client.post("/agents", json={"agent_name": "again"}, headers=headers)
    assert after.status_code == 201, after.text
    assert after.json()["id"] != first.json()["id"]
    assert client.get(f"/agents/{after.json()['id']}").status_code == 200


def rows_naming(database_url: str, value: str) -> dict[str, list[str]]:
    """Every row of every table that holds `value` anywhere (also inside a bytea), by table."""
    found: dict[str, list[str]] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]  # fmt: skip
        for table in tables:
            rows = conn.execute(
                pgsql.SQL(
                    "SELECT t::text FROM {} t WHERE strpos(t::text, %s) > 0"
                    " OR strpos(t::text, %s) > 0"
                ).format(pgsql.Identifier(table)),
                (value, value.encode().hex()),
            ).fetchall()
            if rows:
                found[table] = [row[0] for row in rows]
    return found


def test_purge_leaves_no_row_of_the_agent_and_the_others_history_intact(
    client: TestClient,
    agent: Callable[..., Item],
    send: Callable[..., Item],
    conversation: Callable[..., Item],
    database_url: str,
    db: Any,
) -> None:
    a, b, c = agent(), agent(), agent()
    topic = conversation(title="purge")
    db.execute("UPDATE conversations SET created_by = %s WHERE id = %s", (a["id"], topic["id"]))
    to_b = send(a, b, content="kept for b", conversation_id=topic["id"])
    to_self = send(a, a, content="only a held this")
    alone = send(a, content="sent to nobody")
    reply = send(b, b, content="b replies to a's note to itself", parent_message_id=to_self["id"])
    from_c = send(c, a, b, content="c to a and b")
    from_c_to_a = send(c, a, content="c to a only")
    for message_id, owner in ((to_b["id"], a), (to_b["id"], b), (from_c["id"], a)):
        note = {"message_id": message_id, "key": f"k-{owner['id'][:8]}", "agent_id": owner["id"]}
        assert client.post("/agent_message_metadata", json=note).status_code == 201
    key = {"Idempotency-Key": "purge-test-" + a["id"][:8]}
    assert client.post("/messages", json={"sender_id": a["id"], "content": "idem",
                                          "recipient_ids": [b["id"]]},
                       headers=key).status_code == 201  # fmt: skip
    before = rows_naming(database_url, a["id"])
    assert {"agents", "messages", "message_recipients", "agent_message_metadata",
            "conversations", "idempotency_keys"} <= set(before)  # fmt: skip

    retire(client, a, purge="true")

    assert rows_naming(database_url, a["id"]) == {}
    assert_not_found(client.delete(f"/agents/{a['id']}", params={"purge": "true"}),
                     "Agent not found")  # fmt: skip
    assert_not_found(client.delete(f"/agents/{a['id']}"), "Agent not found")
    # b's history: every message it sent or received, a's now without a sender.
    b_mail = {item["id"]: item for item in client.get(f"/agents/{b['id']}/messages").json()}
    assert {to_b["id"], reply["id"], from_c["id"]} <= set(b_mail)
    assert b_mail[to_b["id"]]["sender_id"] is None and b_mail[to_b["id"]]["content"] == "kept for b"
    assert b_mail[reply["id"]]["parent_message_id"] is None  # its parent only a held
    metadata = client.get(f"/messages/{to_b['id']}/metadata/{b['id']}").json()["metadata_items"]
    assert [item["agent_id"] for item in metadata] == [b["id"]]
    # c keeps what it sent, a's copy gone.
    c_mail = ids(client.get(f"/agents/{c['id']}/messages").json())
    assert {from_c["id"], from_c_to_a["id"]} <= set(c_mail)
    # What only a held is gone.
    for gone in (to_self, alone):
        assert db.execute("SELECT 1 FROM messages WHERE id = %s", (gone["id"],)).fetchone() is None
    starter = db.execute("SELECT created_by FROM conversations WHERE id = %s", (topic["id"],))
    assert starter.fetchone() == {"created_by": None}


def test_retirement_ends_streams_and_long_polls_on_every_replica(servers: list[Server]) -> None:
    a, b = servers
    created = httpx.post(f"{a.base_url}/agents", json={"agent_name": "retiring"}, timeout=10)
    agent = created.json()["id"]
    streams = [Stream(server.base_url, agent) for server in (a, b)]
    polled: dict[str, httpx.Response] = {}

    def long_poll() -> None:
        polled["b"] = httpx.get(f"{b.base_url}/agents/{agent}/messages/unread",
                                params={"wait": 30}, timeout=40)  # fmt: skip

    poller = threading.Thread(target=long_poll)
    poller.start()
    try:
        time.sleep(0.5)  # the long-poll is waiting
        started = time.monotonic()
        assert httpx.delete(f"{a.base_url}/agents/{agent}", timeout=10).status_code == 204
        for stream in streams:
            event = stream.next()
            assert event.kind == "retired", event.kind
            assert "retired" in event.json()["detail"]
            with pytest.raises(EOFError):
                stream.next()
        poller.join(10)
        assert not poller.is_alive()
        assert time.monotonic() - started < 5
    finally:
        for stream in streams:
            stream.close()
    assert polled["b"].status_code == 404
    assert "retired" in polled["b"].json()["detail"]
    # New ones are refused at once.
    for server in (a, b):
        refused = httpx.get(f"{server.base_url}/agents/{agent}/messages/stream", timeout=10)
        assert refused.status_code == 404 and "retired" in refused.json()["detail"]
        waited = httpx.get(f"{server.base_url}/agents/{agent}/messages/unread",
                           params={"wait": 30}, timeout=10)  # fmt: skip
        assert waited.status_code == 404
