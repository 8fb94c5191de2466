"""Idempotency-Key on POST /messages, /agents and /conversations, in one process and across two."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from queries import sql
from tests.helpers import UNKNOWN, Db, assert_invalid

CREATES = [
    ("/agents", {"agent_name": "idempotent"}, {"agent_name": "other"}),
    ("/conversations", {"title": "idempotent"}, {"title": "other"}),
    ("/messages", {"content": "idempotent"}, {"content": "other"}),
]


def fresh_key() -> str:
    return f"key-{secrets.token_hex(8)}"


@pytest.mark.parametrize(("path", "body", "other"), CREATES)
def test_same_key_and_body_returns_the_original_response(
    client: TestClient, path: str, body: dict[str, Any], other: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": fresh_key()}
    first = client.post(path, json=body, headers=headers)
    again = client.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # Key order and spacing are not the body: the same JSON value is the same request.
    spaced = client.post(
        path, content=b" " + httpx.Request("POST", "/", json=body).content, headers=headers
    )
    assert spaced.status_code == 201 and spaced.json() == first.json()


@pytest.mark.parametrize(("path", "body", "other"), CREATES)
def test_same_key_with_another_body_is_422(
    client: TestClient, path: str, body: dict[str, Any], other: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": fresh_key()}
    assert client.post(path, json=body, headers=headers).status_code == 201
    assert_invalid(client.post(path, json=other, headers=headers), "header", "idempotency-key")


def test_a_message_is_stored_once(client: TestClient, db: Db) -> None:
    recipient = client.post("/agents", json={"agent_name": "r"}).json()["id"]
    body = {"content": f"once {secrets.token_hex(4)}", "recipient_ids": [recipient]}
    headers = {"Idempotency-Key": fresh_key()}
    ids = {client.post("/messages", json=body, headers=headers).json()["id"] for _ in range(3)}
    assert len(ids) == 1
    stored = db.execute(
        "SELECT count(*) AS n FROM messages WHERE content = %s", (body["content"],)
    ).fetchone()
    assert stored == {"n": 1}
    recipients = db.execute(
        "SELECT count(*) AS n FROM message_recipients WHERE recipient_id = %s", (recipient,)
    ).fetchone()
    assert recipients == {"n": 1}


def test_without_a_key_every_post_creates(client: TestClient) -> None:
    body = {"agent_name": "twice"}
    first, second = client.post("/agents", json=body), client.post("/agents", json=body)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


def test_keys_are_scoped_by_route(client: TestClient) -> None:
    headers = {"Idempotency-Key": fresh_key()}
    agent = client.post("/agents", json={"agent_name": "a"}, headers=headers)
    conversation = client.post("/conversations", json={"title": "t"}, headers=headers)
    assert agent.status_code == conversation.status_code == 201
    assert "idempotent-replayed" not in conversation.headers


def test_a_failed_request_keeps_no_key(client: TestClient) -> None:
    headers = {"Idempotency-Key": fresh_key()}
    missing = UNKNOWN
    refused = client.post("/messages", json={"content": "x", "sender_id": missing}, headers=headers)
    assert refused.status_code == 409, refused.text
    fixed = client.post("/messages", json={"content": "x"}, headers=headers)
    assert fixed.status_code == 201, fixed.text
    assert "idempotent-replayed" not in fixed.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "tab\there"])
def test_a_malformed_key_is_422(client: TestClient, key: str) -> None:
    response = client.post(
        "/agents",
        json={"agent_name": "a"},
        headers={"Idempotency-Key": key.encode("utf-8")},  # bytes: sent as UTF-8, not refused
    )
    assert_invalid(response, "header", "idempotency-key")


def test_a_key_of_255_characters_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/agents", json={"agent_name": "a"}, headers={"Idempotency-Key": "k" * 255}
    )
    assert response.status_code == 201, response.text


def test_fifty_concurrent_posts_with_one_key_on_two_replicas_store_one_message(
    servers: list[Any], db: Db
) -> None:
    content = f"raced {secrets.token_hex(4)}"
    headers = {"Idempotency-Key": fresh_key()}
    barrier = threading.Barrier(50)
    responses: list[httpx.Response] = []

    def post(index: int) -> None:
        base_url = servers[index % 2].base_url
        with httpx.Client(base_url=base_url, timeout=30) as http:
            barrier.wait()
            responses.append(http.post("/messages", json={"content": content}, headers=headers))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    stored = db.execute("SELECT count(*) AS n FROM messages WHERE content = %s", (content,))
    assert stored.fetchone() == {"n": 1}


def test_keys_older_than_a_day_are_purged_and_newer_ones_kept(client: TestClient, db: Db) -> None:
    old, new = fresh_key(), fresh_key()
    for key, age in ((old, "25 hours"), (new, "23 hours")):
        db.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)"
            " VALUES ('POST /agents', %s, '\\x00', 201, '{}', now() - %s::interval)",
            (key, age),
        )
    db.execute(sql.purge_idempotency_keys.text)
    left = db.execute(
        "SELECT key FROM idempotency_keys WHERE key IN (%s, %s)", (old, new)
    ).fetchall()
    assert left == [{"key": new}]
