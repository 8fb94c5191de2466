"""Authorization: every route crossed with every kind of caller, on a real server.

A fresh small world is built for each cell through the admin key: agents A,
B and C with their keys, messages between them, metadata and conversations.
"own" is A's key on A's things, "other" is B's key on the same request. A
denied request (401, 403) must leave every table exactly as it was.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql
from starlette.testclient import TestClient

from access.authentication import FAILED_KEYS
from access.limits import RateLimits
from embedded import ADMIN_TOKEN_FILE, embedded_admin_token
from service import create_app
from settings import Settings, load_settings
from tests.helpers import UNKNOWN
from tests.servers import Server, clean_env, free_port, run_to_exit

ADMIN = "admin-" + secrets.token_urlsafe(24)
SCRAPER = "scrape-" + secrets.token_urlsafe(24)
CALLERS = ("none", "malformed", "other", "own", "admin")


@pytest.fixture(scope="module")
def secured(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with MAILROOM_AUTH=required, the admin token above and no rate limits."""
    server = Server(
        database_url,
        tmp_path_factory.mktemp("secured"),
        MAILROOM_AUTH="required",
        MAILROOM_ADMIN_TOKEN=ADMIN,
        MAILROOM_WRITE_RATE_LIMIT="0",
        MAILROOM_ECHO_RATE_LIMIT="0",
        MAILROOM_AUTH_FAILURE_LIMIT="0",  # the matrix tries many bad keys
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.kill()


@pytest.fixture
def http(secured: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.base_url, timeout=10) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    """Three agents and their things; ids and keys by name."""

    ids: dict[str, str]
    keys: dict[str, str]

    def headers(self, caller: str) -> dict[str, str]:
        return {
            "none": {},
            "malformed": {"Authorization": "Bearer not-a-key"},
            "other": bearer(self.keys["B"]),
            "own": bearer(self.keys["A"]),
            "admin": bearer(ADMIN),
        }[caller]


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()


def build_world(http: httpx.Client) -> World:
    ids: dict[str, str] = {}
    keys: dict[str, str] = {}
    for name in "ABC":
        agent = created(
            http.post("/agents", json={"agent_name": f"{name}-{secrets.token_hex(3)}"},
                      headers=bearer(ADMIN))
        )  # fmt: skip
        ids[name], keys[name] = agent["id"], agent["api_key"]
    a, b = bearer(keys["A"]), bearer(keys["B"])
    # No delivery has this id: the rule lets A and the admin through to the 404.
    ids["no_delivery"] = "00000000-0000-4000-8000-000000000000"
    ids["conv_a"] = created(http.post("/conversations", json={"title": "A's"}, headers=a))["id"]
    ids["conv_b"] = created(http.post("/conversations", json={"title": "B's"}, headers=b))["id"]

    def send(headers: dict[str, str], sender: str, to: str, **extra: Any) -> str:
        body = {"sender_id": ids[sender], "content": "hi", "recipient_ids": [ids[to]], **extra}
        return created(http.post("/messages", json=body, headers=headers))["id"]

    ids["m_ab"] = send(a, "A", "B")
    ids["m_ba"] = send(b, "B", "A")
    ids["m_ac"] = send(a, "A", "C", conversation_id=ids["conv_a"])
    ids["m_bc"] = send(b, "B", "C", conversation_id=ids["conv_b"])
    ids["md_a"] = created(
        http.post("/agent_message_metadata",
                  json={"message_id": ids["m_ab"], "key": "k", "agent_id": ids["A"]}, headers=a)
    )["id"]  # fmt: skip
    return World(ids, keys)


def now() -> str:
    return datetime.now(UTC).isoformat()


# (name, method, url template, body or None, statuses for CALLERS in order)
DENIED_AGENT = (401, 401, 403, 403)
OWN_ONLY = (401, 401, 403)
MATRIX: list[tuple[str, str, str, Callable[[dict[str, str]], Any] | None, tuple[int, ...]]] = [
    ("root", "GET", "/", None, (200, 200, 200, 200, 200)),
    ("health", "GET", "/health", None, (200, 200, 200, 200, 200)),
    ("ready", "GET", "/health/ready", None, (200, 200, 200, 200, 200)),
    ("live", "GET", "/health/live", None, (200, 200, 200, 200, 200)),
    ("openapi", "GET", "/openapi.json", None, (200, 200, 200, 200, 200)),
    ("docs", "GET", "/docs", None, (200, 200, 200, 200, 200)),
    ("redoc", "GET", "/redoc", None, (200, 200, 200, 200, 200)),
    ("metrics", "GET", "/metrics", None, (*DENIED_AGENT, 200)),
    # MCP: tools act as one agent, so the admin token is refused (tests/test_mcp.py).
    ("mcp", "POST", "/mcp", lambda i: MCP_INITIALIZE, (401, 401, 200, 200, 403)),
    ("user", "GET", "/users/1", None, (*DENIED_AGENT, 200)),
    ("console", "GET", "/console", None, (200, 200, 200, 200, 200)),
    ("directory", "GET", "/agents", None, (401, 401, 200, 200, 200)),
    ("create agent", "POST", "/agents", lambda i: {"agent_name": "new"}, (*DENIED_AGENT, 201)),
    ("get agent", "GET", "/agents/{A}", None, (*OWN_ONLY, 200, 200)),
    ("update agent", "PUT", "/agents/{A}", lambda i: {"agent_name": "z"}, (*OWN_ONLY, 200, 200)),
    ("rotate key", "POST", "/agents/{A}/api-key", None, (*OWN_ONLY, 200, 200)),
    # A has no webhook: let through, it is told to set one first (409).
    ("rotate webhook secret", "POST", "/agents/{A}/webhook-secret", None, (*OWN_ONLY, 409, 409)),
    ("deliveries", "GET", "/agents/{A}/deliveries", None, (*OWN_ONLY, 200, 200)),
    ("retry delivery", "POST", "/agents/{A}/deliveries/{no_delivery}/retry", None,
     (*OWN_ONLY, 404, 404)),
    ("retire agent", "DELETE", "/agents/{A}", None, (*OWN_ONLY, 204, 204)),
    ("purge agent", "DELETE", "/agents/{A}?purge=true", None, (*OWN_ONLY, 403, 204)),
    ("mailbox", "GET", "/agents/{A}/messages", None, (*OWN_ONLY, 200, 200)),
    ("unread", "GET", "/agents/{A}/messages/unread", None, (*OWN_ONLY, 200, 200)),
    ("search", "GET", "/agents/{A}/messages/search?q=hi", None, (*OWN_ONLY, 200, 200)),
    ("stream", "GET", "/agents/{A}/messages/stream", None, (*OWN_ONLY, 200, 200)),
    ("mark read", "PUT", "/agents/{A}/messages/mark-read",
     lambda i: {"read_up_to_date": now()}, (*OWN_ONLY, 200, 200)),
    ("send", "POST", "/messages",
     lambda i: {"sender_id": i["A"], "content": "x", "recipient_ids": [i["C"]]},
     (*OWN_ONLY, 201, 201)),
    ("edit message", "PUT", "/messages/{m_ab}", lambda i: {"content": "edited"},
     (*OWN_ONLY, 200, 200)),
    ("message metadata", "GET", "/messages/{m_ab}/metadata/{A}", None, (*OWN_ONLY, 200, 200)),
    ("add recipient", "POST", "/message_recipients",
     lambda i: {"message_id": i["m_ab"], "recipient_id": i["C"]}, (*OWN_ONLY, 201, 201)),
    ("read state", "PUT", "/message_recipients/{m_ba}/{A}", lambda i: {"is_read": True},
     (*OWN_ONLY, 200, 200)),
    ("add metadata", "POST", "/agent_message_metadata",
     lambda i: {"message_id": i["m_ab"], "key": "k2", "agent_id": i["A"]},
     (*OWN_ONLY, 201, 201)),
    ("edit metadata", "PUT", "/agent_message_metadata/{md_a}", lambda i: {"value": "v"},
     (*OWN_ONLY, 200, 200)),
    ("start conversation", "POST", "/conversations", lambda i: {"title": "t"},
     (401, 401, 201, 201, 201)),
    ("conversations", "GET", "/conversations", None, (401, 401, 200, 200, 200)),
    ("conversation", "GET", "/conversations/{conv_a}", None, (*OWN_ONLY, 200, 200)),
    ("edit conversation", "PUT", "/conversations/{conv_a}", lambda i: {"archived": True},
     (*OWN_ONLY, 200, 200)),
    ("details", "GET", "/conversations/{conv_a}/details", None, (*OWN_ONLY, 200, 200)),
    ("echo", "POST", "/cli/echo", lambda i: {"message": "hi"}, (401, 401, 200, 200, 200)),
]  # fmt: skip
MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "matrix", "version": "1"}},
}  # fmt: skip
CELLS = [
    pytest.param(row, caller, status, id=f"{row[0]}-{caller}")
    for row in MATRIX
    for caller, status in zip(CALLERS, row[4], strict=True)
]


def snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every table of ours, as text."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        return {
            table: sorted(
                row[0]
                for row in conn.execute(
                    pgsql.SQL("SELECT t::text FROM {} t").format(pgsql.Identifier(table))
                ).fetchall()
            )
            for (table,) in tables
        }


def call(http: httpx.Client, world: World, row: tuple, caller: str) -> httpx.Response:
    _, method, template, body, _ = row
    url = template.format(**world.ids)
    headers = world.headers(caller)
    payload = None if body is None else body(world.ids)
    if template == "/mcp":
        headers = {**headers, "Accept": "application/json, text/event-stream"}
    if template.endswith("/stream"):
        with http.stream(method, url, headers=headers) as response:
            response.read() if response.status_code != 200 else None
            return response
    return http.request(method, url, json=payload, headers=headers)


@pytest.mark.parametrize(("row", "caller", "status"), CELLS)
def test_authorization_matrix(
    http: httpx.Client, database_url: str, row: tuple, caller: str, status: int
) -> None:
    world = build_world(http)
    before = snapshot(database_url) if status in (401, 403) else None
    response = call(http, world, row, caller)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert isinstance(response.json()["detail"], str)
    if status == 403:
        detail = response.json()["detail"]
        # The sentence names nothing of A's: no id, no key.
        assert all(value not in detail for value in world.ids.values()), detail
        assert world.keys["A"] not in detail
    if before is not None:
        assert snapshot(database_url) == before, "a denied request changed the database"


def test_every_served_route_is_in_the_matrix() -> None:
    from service import ROUTES

    def shape(path: str) -> str:
        path = path.partition("?")[0]
        return re.sub(r"\{[^}]+\}", "{}", path).replace("/users/1", "/users/{}")

    served = {
        (method, shape(route.path))
        for route in ROUTES
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    assert served == {(method, shape(template)) for _, method, template, *_ in MATRIX}


def test_an_agent_lists_only_the_conversations_it_takes_part_in(http: httpx.Client) -> None:
    world = build_world(http)
    own = http.get("/conversations", headers=world.headers("own"), params={"limit": 1000})
    other = http.get("/conversations", headers=world.headers("other"), params={"limit": 1000})
    mine = {c["id"] for c in own.json()}
    theirs = {c["id"] for c in other.json()}
    assert world.ids["conv_a"] in mine and world.ids["conv_b"] not in mine
    assert world.ids["conv_b"] in theirs and world.ids["conv_a"] not in theirs
    admin = http.get("/conversations", headers=bearer(ADMIN), params={"limit": 1000})
    assert {world.ids["conv_a"], world.ids["conv_b"]} <= {c["id"] for c in admin.json()}
    # C received a message in each: it takes part in both without having started either.
    c_key = bearer(world.keys["C"])
    seen_by_c = {c["id"] for c in http.get("/conversations", headers=c_key).json()}
    assert {world.ids["conv_a"], world.ids["conv_b"]} <= seen_by_c
    assert http.get(f"/conversations/{world.ids['conv_a']}/details", headers=c_key).is_success


def test_the_directory_shows_activity_to_the_admin_only(http: httpx.Client) -> None:
    """Every agent may find every other by name; how much mail each has is the operator's."""
    world = build_world(http)
    name = http.get(f"/agents/{world.ids['C']}", headers=bearer(ADMIN)).json()["agent_name"]
    for caller in ("own", "other", "admin"):
        response = http.get("/agents", params={"name": name}, headers=world.headers(caller))
        assert response.status_code == 200, response.text
        (item,) = response.json()
        assert item["id"] == world.ids["C"]
        fields = {"id", "agent_name", "created_at"}
        if caller == "admin":
            fields |= {"unread_count", "last_active_at"}
            assert item["unread_count"] == 2  # m_ac and m_bc
        assert set(item) == fields, caller


def test_links_to_things_an_agent_cannot_see_are_refused(http: httpx.Client) -> None:
    world = build_world(http)
    ids, b = world.ids, world.headers("other")
    reply = {"sender_id": ids["B"], "content": "x", "parent_message_id": ids["m_ac"]}
    assert http.post("/messages", json=reply, headers=b).status_code == 403
    join = {"sender_id": ids["B"], "content": "x", "conversation_id": ids["conv_a"]}
    assert http.post("/messages", json=join, headers=b).status_code == 403
    move = {"conversation_id": ids["conv_a"]}
    assert http.put(f"/messages/{ids['m_ba']}", json=move, headers=b).status_code == 403
    # B received m_ab: replying to it and annotating it are B's to do.
    fine = {"sender_id": ids["B"], "content": "re", "parent_message_id": ids["m_ab"]}
    assert http.post("/messages", json=fine, headers=b).status_code == 201
    note = {"message_id": ids["m_ab"], "key": "seen", "agent_id": ids["B"]}
    assert http.post("/agent_message_metadata", json=note, headers=b).status_code == 201
    # ...but not a message between A and C.
    note = {"message_id": ids["m_ac"], "key": "seen", "agent_id": ids["B"]}
    assert http.post("/agent_message_metadata", json=note, headers=b).status_code == 403


def test_a_missing_resource_is_404_for_its_would_be_owner_too(http: httpx.Client) -> None:
    world = build_world(http)
    missing = UNKNOWN
    a = world.headers("own")
    assert http.put(f"/messages/{missing}", json={"content": "x"}, headers=a).status_code == 404
    assert http.get(f"/conversations/{missing}", headers=a).status_code == 404
    assert http.put(f"/agent_message_metadata/{missing}", json={"value": "v"},
                    headers=a).status_code == 404  # fmt: skip
    recipient = {"message_id": missing, "recipient_id": world.ids["B"]}
    assert http.post("/message_recipients", json=recipient, headers=a).status_code == 409


def test_rotation_retires_the_old_key_at_once(http: httpx.Client) -> None:
    world = build_world(http)
    a_id, old = world.ids["A"], world.keys["A"]
    rotated = http.post(f"/agents/{a_id}/api-key", headers=bearer(old))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["api_key"]
    assert rotated.json()["agent_id"] == a_id and new != old and new.startswith("mr_")
    assert http.get(f"/agents/{a_id}", headers=bearer(old)).status_code == 401
    assert http.get(f"/agents/{a_id}", headers=bearer(new)).status_code == 200
    by_admin = http.post(f"/agents/{a_id}/api-key", headers=bearer(ADMIN)).json()["api_key"]
    assert http.get(f"/agents/{a_id}", headers=bearer(new)).status_code == 401
    assert http.get(f"/agents/{a_id}", headers=bearer(by_admin)).status_code == 200
    missing = UNKNOWN
    unknown = http.post(f"/agents/{missing}/api-key", headers=bearer(ADMIN))
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Agent not found"})


def test_search_finds_only_the_callers_mail(http: httpx.Client) -> None:
    world = build_world(http)
    ids, a, b = world.ids, world.headers("own"), world.headers("other")
    word = "quince" + secrets.token_hex(3)
    for headers, sender, to in ((a, "A", "B"), (b, "B", "C"), (b, "B", "A")):
        body = {"sender_id": ids[sender], "content": f"{word} note", "recipient_ids": [ids[to]]}
        created(http.post("/messages", json=body, headers=headers))

    def found(agent: str, headers: dict[str, str]) -> list[tuple[str, str]]:
        response = http.get(f"/agents/{ids[agent]}/messages/search", params={"q": word},
                            headers=headers)  # fmt: skip
        assert response.status_code == 200, response.text
        return sorted((item["sender_id"], item["direction"]) for item in response.json())

    assert found("A", a) == sorted([(ids["A"], "sent"), (ids["B"], "received")])
    mail_of_b = sorted([(ids["A"], "received"), (ids["B"], "sent"), (ids["B"], "sent")])
    assert found("B", b) == found("B", bearer(ADMIN)) == mail_of_b
    assert found("C", bearer(ADMIN)) == [(ids["B"], "received")]
    # A's key on B's or C's search: 403, whatever the word.
    for agent in ("B", "C"):
        response = http.get(f"/agents/{ids[agent]}/messages/search", params={"q": word},
                            headers=a)  # fmt: skip
        assert response.status_code == 403


def test_retirement_refuses_the_key_and_ends_its_stream(http: httpx.Client) -> None:
    world = build_world(http)
    a_id, a = world.ids["A"], world.headers("own")
    with http.stream("GET", f"/agents/{a_id}/messages/stream", headers=a,
                     timeout=httpx.Timeout(10, read=10)) as stream:  # fmt: skip
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        assert http.delete(f"/agents/{a_id}", headers=a).status_code == 204
        rest = list(lines)  # the stream ends by itself
    assert "event: retired" in rest
    assert http.get(f"/agents/{a_id}", headers=a).status_code == 401
    assert http.delete(f"/agents/{a_id}", headers=a).status_code == 401
    assert http.delete(f"/agents/{a_id}", headers=bearer(ADMIN)).status_code == 204
    # The others keep their history with A, and cannot write to it any more.
    b = world.headers("other")
    mailbox = http.get(f"/agents/{world.ids['B']}/messages", headers=b).json()
    assert world.ids["m_ab"] in {item["id"] for item in mailbox}
    body = {"sender_id": world.ids["B"], "content": "x", "recipient_ids": [a_id]}
    refused = http.post("/messages", json=body, headers=b)
    assert refused.status_code == 409 and a_id in refused.json()["detail"]


def test_only_the_digest_of_a_key_is_stored(http: httpx.Client, database_url: str) -> None:
    key_header = {"Idempotency-Key": secrets.token_hex(8), **bearer(ADMIN)}
    agent = created(http.post("/agents", json={"agent_name": "digest"}, headers=key_header))
    key = agent["api_key"]
    assert key.startswith("mr_") and len(key) == 46
    dumped = "\n".join(line for rows in snapshot(database_url).values() for line in rows)
    assert key not in dumped
    assert key.encode().hex() not in dumped  # not in a bytea either (the stored 201)
    with psycopg.connect(database_url) as conn:
        (digest,) = conn.execute(
            "SELECT api_key_digest FROM agents WHERE id = %s", (agent["id"],)
        ).fetchone()
    assert bytes(digest) == hashlib.sha256(key.encode()).digest()


def test_a_replayed_agent_creation_issues_a_new_key(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": secrets.token_hex(8), **bearer(ADMIN)}
    first = created(http.post("/agents", json={"agent_name": "twice"}, headers=headers))
    again = http.post("/agents", json={"agent_name": "twice"}, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    second = again.json()
    assert second["id"] == first["id"] and second["api_key"] != first["api_key"]
    me = f"/agents/{first['id']}"
    assert http.get(me, headers=bearer(first["api_key"])).status_code == 401
    assert http.get(me, headers=bearer(second["api_key"])).status_code == 200


def test_idempotency_keys_are_per_caller(http: httpx.Client) -> None:
    world = build_world(http)
    key = {"Idempotency-Key": "same-key-" + secrets.token_hex(4)}
    posted = {}
    for caller in ("own", "other"):
        sender = world.ids["A" if caller == "own" else "B"]
        body = {"sender_id": sender, "content": "hello"}
        response = http.post("/messages", json=body, headers={**key, **world.headers(caller)})
        assert response.status_code == 201 and "idempotent-replayed" not in response.headers
        posted[caller] = response.json()["id"]
    assert posted["own"] != posted["other"]
    body = {"sender_id": world.ids["A"], "content": "hello"}
    replay = http.post("/messages", json=body, headers={**key, **world.headers("own")})
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == posted["own"]


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer x", "Basic " + "a" * 20, "bearer mr_" + "x" * 43, "mr_" + "x" * 43],
)
def test_bad_credentials_are_401(http: httpx.Client, authorization: str) -> None:
    response = http.get("/conversations", headers={"Authorization": authorization})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_responses_carry_the_security_headers(http: httpx.Client) -> None:
    world = build_world(http)
    for response in (
        http.get(f"/agents/{world.ids['A']}", headers=world.headers("own")),
        http.get(f"/agents/{world.ids['A']}", headers=world.headers("other")),
        http.get(f"/agents/{world.ids['A']}"),
        http.get("/health"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    static = http.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert static.status_code == 200 and static.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in static.headers.get("cache-control", "")


def test_post_agents_shows_a_key_only_with_auth_on(client: Any) -> None:
    # `client` is the open-mode app of conftest.py.
    response = client.post("/agents", json={"agent_name": "open"})
    assert response.status_code == 201 and "api_key" not in response.json()


def test_admin_token_from_a_file(database_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token = "file-" + secrets.token_urlsafe(24)
    token_file.write_text(token + "\n")
    server = Server(database_url, tmp_path, MAILROOM_AUTH="required",
                    MAILROOM_ADMIN_TOKEN_FILE=str(token_file))  # fmt: skip
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            assert http.get("/users/1", headers=bearer(token)).status_code == 200
            assert http.get("/users/1", headers=bearer(ADMIN)).status_code == 401
    finally:
        server.kill()


# Limits, on an in-process app with small ones -------------------------------


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        admin_token=ADMIN,
        write_rate_limit=3,
        echo_rate_limit=2,
        recipient_rate_limit=5,
        echo_concurrency=1,
        statement_timeout=1.5,
        metrics_token=SCRAPER,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def new_agent(client: TestClient | httpx.Client) -> tuple[str, dict[str, str]]:
    agent = created(client.post("/agents", json={"agent_name": "l"}, headers=bearer(ADMIN)))
    return agent["id"], bearer(agent["api_key"])


def test_writes_beyond_the_rate_are_429_per_agent(limited: TestClient, db: Any) -> None:
    agent_id, key = new_agent(limited)
    send = {"sender_id": agent_id, "content": "rate"}
    statuses = [limited.post("/messages", json=send, headers=key).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    refused = limited.post("/messages", json=send, headers=key)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert isinstance(refused.json()["detail"], str)
    stored = db.execute("SELECT count(*) AS n FROM messages WHERE sender_id = %s", (agent_id,))
    assert stored.fetchone()["n"] == 3
    # Reads are not writes; another agent and the admin have their own allowance.
    assert limited.get(f"/agents/{agent_id}/messages", headers=key).status_code == 200
    other_id, other_key = new_agent(limited)
    other = {"sender_id": other_id, "content": "rate"}
    assert limited.post("/messages", json=other, headers=other_key).status_code == 201
    for _ in range(5):
        assert limited.post("/messages", json=send, headers=bearer(ADMIN)).status_code == 201


def test_recipients_draw_on_a_budget_of_their_own(limited: TestClient, db: Any) -> None:
    """One write may make up to 1000 recipient rows: they are counted too."""
    agent_id, key = new_agent(limited)
    others = [new_agent(limited)[0] for _ in range(6)]
    send = {"sender_id": agent_id, "content": "fan-out", "recipient_ids": others[:5]}
    first = limited.post("/messages", json=send, headers=key)
    assert first.status_code == 201, first.text
    # The budget (5 a minute) is spent: one more recipient must wait.
    add = {"message_id": first.json()["id"], "recipient_id": others[5]}
    refused = limited.post("/message_recipients", json=add, headers=key)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "recipients" in refused.json()["detail"]
    rows = db.execute("SELECT count(*) AS n FROM message_recipients WHERE message_id = %s",
                      (first.json()["id"],))  # fmt: skip
    assert rows.fetchone()["n"] == 5
    # More recipients than the budget holds can never pass: 422, not a retry.
    too_many = dict(send, recipient_ids=others)
    refused = limited.post("/messages", json=too_many, headers=key)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "recipient_ids"]
    # The admin is not limited.
    admin = limited.post("/messages", json=too_many, headers=bearer(ADMIN))
    assert admin.status_code == 201, admin.text


def test_echo_has_its_own_rate(limited: TestClient) -> None:
    _, key = new_agent(limited)
    statuses = [
        limited.post("/cli/echo", json={"message": "hi"}, headers=key).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_echo_beyond_the_concurrency_cap_is_429(limited: TestClient) -> None:
    slots = limited.app_state["echo_slots"]
    limited.portal.call(slots.acquire)  # one echo "running": the cap is 1
    try:
        busy = limited.post("/cli/echo", json={"message": "hi"}, headers=bearer(ADMIN))
        assert busy.status_code == 429, busy.text
        assert busy.headers["retry-after"] == "1"
    finally:
        limited.portal.call(slots.release)
    assert limited.post("/cli/echo", json={"message": "hi"}, headers=bearer(ADMIN)).is_success


def test_metrics_take_the_admin_key_or_the_metrics_token(limited: TestClient) -> None:
    _, agent_key = new_agent(limited)
    assert limited.get("/metrics", headers=bearer(SCRAPER)).status_code == 200
    assert limited.get("/metrics", headers=bearer(ADMIN)).status_code == 200
    assert limited.get("/metrics", headers=agent_key).status_code == 403
    for headers in ({}, bearer("scrape-wrong-token-0000000")):
        refused = limited.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_pooled_connections_carry_the_statement_timeout(limited: TestClient) -> None:
    pool = limited.app_state["pool"]

    async def show() -> str:
        async with pool.connection() as conn:
            cursor = await conn.execute("SHOW statement_timeout")
            (value,) = await cursor.fetchone()
            return value

    assert limited.portal.call(show) == "1500ms"


def test_a_slow_statement_is_cut_off(limited: TestClient) -> None:
    pool = limited.app_state["pool"]

    async def sleep() -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_sleep(5)")

    with pytest.raises(psycopg.errors.QueryCanceled):
        limited.portal.call(sleep)


# Injection: hostile strings are data ----------------------------------------

HOSTILE = [
    "'; DROP TABLE messages; --",
    '" OR "1"="1',
    "%(content)s %s {} $1 :name",
    "Robert'); DELETE FROM agents WHERE ('a'='a",
    "\\x00 \\\\ \\' E'\\n'",
    "1; SELECT pg_sleep(10)",
    "$$ || $tag$ ' \" `",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_sql_metacharacters_are_stored_and_returned_byte_for_byte(
    http: httpx.Client, text: str
) -> None:
    world = build_world(http)
    a, ids = world.headers("own"), world.ids
    agent = http.put(f"/agents/{ids['A']}", json={"agent_name": text}, headers=a)
    assert agent.status_code == 200 and agent.json()["agent_name"] == text
    conversation = created(http.post(
        "/conversations",
        json={"title": text, "description": text, "metadata": {text: text}},
        headers=a,
    ))  # fmt: skip
    assert (conversation["title"], conversation["description"]) == (text, text)
    assert conversation["metadata"] == {text: text}
    message = created(http.post(
        "/messages",
        json={"sender_id": ids["A"], "content": text, "message_type": text[:50],
              "status": text[:50], "msg_metadata": {text: [text]}, "recipient_ids": [ids["B"]],
              "conversation_id": conversation["id"]},
        headers=a,
    ))  # fmt: skip
    assert message["content"] == text and message["msg_metadata"] == {text: [text]}
    item = created(http.post(
        "/agent_message_metadata",
        json={"message_id": message["id"], "key": text[:100], "value": text, "agent_id": ids["A"]},
        headers=a,
    ))  # fmt: skip
    assert (item["key"], item["value"]) == (text[:100], text)
    inbox = http.get(f"/agents/{ids['B']}/messages/unread", headers=world.headers("other"))
    assert inbox.json()[0]["content"] == text
    details = http.get(f"/conversations/{conversation['id']}/details", headers=a).json()
    assert details["messages"][0]["content"] == text
    assert details["messages"][0]["metadata_items"][0]["value"] == text
    # The tables are all still there, with what was stored.
    assert http.get(f"/agents/{ids['A']}", headers=a).json()["agent_name"] == text


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_query_parameters_are_422_not_500(http: httpx.Client, text: str) -> None:
    world = build_world(http)
    a = world.headers("own")
    mailbox = f"/agents/{world.ids['A']}/messages"
    for name in ("direction", "order", "limit", "cursor"):
        response = http.get(mailbox, params={name: text}, headers=a)
        assert response.status_code == 422, (name, response.text)
    for name in ("archived", "limit", "cursor"):
        response = http.get("/conversations", params={name: text}, headers=a)
        assert response.status_code == 422, (name, response.text)


@pytest.mark.parametrize(
    "message", ["hi; rm -rf /", "$(id)", "`id`", "a | cat /etc/passwd", "x && y", "a\nb"]
)
def test_echo_hostile_input_stays_422_with_auth_on(http: httpx.Client, message: str) -> None:
    world = build_world(http)
    response = http.post("/cli/echo", json={"message": message}, headers=world.headers("own"))
    assert response.status_code == 422, response.text


# Start-up and settings --------------------------------------------------------


def test_a_database_of_its_own_without_an_admin_token_stops_start_up(
    database_url: str, tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=database_url, MAILROOM_AUTH="required")
    argv = [sys.executable, "-m", "uvicorn", "service:app", "--port", str(free_port())]
    result = run_to_exit(argv, env)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "MAILROOM_ADMIN_TOKEN" in said and "MAILROOM_AUTH=off" in said
    # `uv run service.py` says it before starting any worker, without a traceback.
    result = run_to_exit([sys.executable, "service.py"], env)
    assert result.returncode == 1
    assert "needs the operator's key" in result.stderr and "Traceback" not in result.stderr


def test_auth_off_warns_at_start_up(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(Settings(database_url=database_url, auth_required=False))):
        pass
    assert any(
        record.levelname == "WARNING" and "MAILROOM_AUTH=off" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MAILROOM_AUTH": "maybe"}, "MAILROOM_AUTH"),
        ({"MAILROOM_ADMIN_TOKEN": "short"}, "MAILROOM_ADMIN_TOKEN"),
        ({"MAILROOM_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "MAILROOM_ADMIN_TOKEN_FILE"),
        ({"MAILROOM_ADMIN_TOKEN": "x" * 20, "MAILROOM_ADMIN_TOKEN_FILE": "/f"}, "not both"),
        ({"MAILROOM_WRITE_RATE_LIMIT": "-1"}, "MAILROOM_WRITE_RATE_LIMIT"),
        ({"MAILROOM_ECHO_CONCURRENCY": "0"}, "MAILROOM_ECHO_CONCURRENCY"),
        ({"MAILROOM_STATEMENT_TIMEOUT": "soon"}, "MAILROOM_STATEMENT_TIMEOUT"),
    ],
)
def test_bad_auth_settings_stop_start_up_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(SystemExit, match=variable):
        load_settings(environ)


STRONG = "Zq3-" + "0123456789abcdef" * 2  # 36 characters, 20 different


@pytest.mark.parametrize("variable", ["MAILROOM_ADMIN_TOKEN", "METRICS_TOKEN"])
@pytest.mark.parametrize(
    "weak",
    ["x", "0" * 16, "0" * 64, "ab" * 20, "abcdefg" * 5, STRONG[:31], STRONG[:30] + " \t"],
)
def test_weak_operator_secrets_stop_start_up_saying_what_is_needed(
    variable: str, weak: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_settings({variable: weak})
    said = str(stopped.value)
    assert variable in said and weak.strip() not in said
    assert "32 characters" in said and "8 different" in said and "openssl rand" in said


def test_strong_operator_secrets_are_taken(tmp_path: Path) -> None:
    loaded = load_settings({"MAILROOM_ADMIN_TOKEN": STRONG, "METRICS_TOKEN": STRONG[::-1]})
    assert (loaded.admin_token, loaded.metrics_token) == (STRONG, STRONG[::-1])
    for token in (secrets.token_urlsafe(32), secrets.token_hex(16), secrets.token_hex(32)):
        assert load_settings({"MAILROOM_ADMIN_TOKEN": token}).admin_token == token
    weak_file = tmp_path / "weak"
    weak_file.write_text("0" * 40)
    with pytest.raises(SystemExit, match="MAILROOM_ADMIN_TOKEN"):
        load_settings({"MAILROOM_ADMIN_TOKEN_FILE": str(weak_file)})


def test_auth_settings_defaults_and_token_file(tmp_path: Path) -> None:
    defaults = load_settings({})
    assert defaults.auth_required is True and defaults.admin_token is None
    assert defaults.statement_timeout == 10.0
    token_file = tmp_path / "token"
    token_file.write_text(f"  {STRONG}\n")
    settings = load_settings({"MAILROOM_ADMIN_TOKEN_FILE": str(token_file), "MAILROOM_AUTH": "off"})
    assert settings.admin_token == STRONG and not settings.auth_required
    assert load_settings({"MAILROOM_STATEMENT_TIMEOUT": "off"}).statement_timeout is None


def test_the_embedded_server_makes_its_admin_token_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = embedded_admin_token(tmp_path)
    printed = capsys.readouterr().err
    assert token in printed and token.startswith("mr_admin_")
    path = tmp_path / ADMIN_TOKEN_FILE
    assert path.read_text().strip() == token and path.stat().st_mode & 0o777 == 0o600
    assert embedded_admin_token(tmp_path) == token
    assert capsys.readouterr().err == "", "printed only the first time"
    assert [p.name for p in tmp_path.iterdir()] == [ADMIN_TOKEN_FILE]


# From the security review ------------------------------------------------------


def test_a_stream_opened_with_a_replaced_key_ends(http: httpx.Client) -> None:
    world = build_world(http)
    a_id = world.ids["A"]
    url = f"/agents/{a_id}/messages/stream"
    with http.stream("GET", url, headers=world.headers("own"), timeout=20) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        # The world's one unread message for A, replayed first.
        assert next(line for line in lines if line.startswith("event:")) == "event: message"
        rotated = http.post(f"/agents/{a_id}/api-key", headers=world.headers("own"))
        assert rotated.status_code == 200
        send = {"sender_id": world.ids["B"], "content": "after rotation", "recipient_ids": [a_id]}
        assert http.post("/messages", json=send, headers=world.headers("other")).is_success
        rest = list(lines)  # the server ends the stream
    events = [line for line in rest if line.startswith("event:")]
    assert events == ["event: revoked"], rest
    assert not any("after rotation" in line for line in rest)


def test_a_key_replaced_by_an_operators_update_ends_its_stream_at_once(
    http: httpx.Client, database_url: str
) -> None:
    """No message and no heartbeat (15 s) needed: the change of the key's column notifies
    every replica, whatever made it."""
    world = build_world(http)
    a_id = world.ids["A"]
    with http.stream(
        "GET", f"/agents/{a_id}/messages/stream", headers=world.headers("own"), timeout=20
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: message"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE agents SET api_key_digest = sha256('replaced by hand'::bytea)"
                " WHERE id = %s",
                (a_id,),
            )
        started = time.monotonic()
        rest = list(lines)
    assert [line for line in rest if line.startswith("event:")] == ["event: revoked"], rest
    assert time.monotonic() - started < 5


def test_a_long_poll_whose_key_was_replaced_meanwhile_is_401(limited: TestClient) -> None:
    # In process, so that the test sees the poll waiting (subscribed to the listener)
    # before it replaces the key: replaced any earlier, the guard would refuse the poll
    # at the door and the test would pass without a poll ever having waited.
    agent_id, key = new_agent(limited)  # nothing unread: the poll waits
    waiters = limited.app_state["listener"].waiters
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            limited.get, f"/agents/{agent_id}/messages/unread", params={"wait": 3}, headers=key
        )
        deadline = time.monotonic() + 5
        while not waiters.get(UUID(agent_id)):
            assert not waiting.done(), f"the poll ended before it waited: {waiting.result().text}"
            assert time.monotonic() < deadline, "the poll never started waiting"
            time.sleep(0.01)
        assert limited.post(f"/agents/{agent_id}/api-key", headers=key).status_code == 200
        answer = waiting.result(timeout=10)
    assert answer.status_code == 401, answer.text
    assert answer.json() == {"detail": "This API key was replaced while the request waited"}


def test_an_agent_sees_only_its_own_mail_in_a_conversations_details(
    http: httpx.Client,
) -> None:
    world = build_world(http)
    ids = world.ids
    # A tells B something in conv_a, which also holds A's message to C.
    note = {"sender_id": ids["A"], "content": "fyi B", "conversation_id": ids["conv_a"],
            "recipient_ids": [ids["B"]]}  # fmt: skip
    created(http.post("/messages", json=note, headers=world.headers("own")))
    seen_by_b = http.get(f"/conversations/{ids['conv_a']}/details", headers=world.headers("other"))
    assert seen_by_b.status_code == 200
    details = seen_by_b.json()
    assert [m["content"] for m in details["messages"]] == ["fyi B"]
    assert details["total_messages"] == 1
    assert {a["id"] for a in details["unique_agents"]} == {ids["A"], ids["B"]}
    everything = http.get(f"/conversations/{ids['conv_a']}/details", headers=bearer(ADMIN)).json()
    assert everything["total_messages"] == 2
    # Taking part lets B read the conversation, not change it: that is its starter's.
    change = {"title": "renamed by B"}
    refused = http.put(
        f"/conversations/{ids['conv_a']}", json=change, headers=world.headers("other")
    )
    assert refused.status_code == 403


def test_a_bad_body_is_422_before_an_unknown_id_for_agents_too(http: httpx.Client) -> None:
    world = build_world(http)
    missing = UNKNOWN
    for path, body in (
        (f"/messages/{missing}", {"content": 5}),
        (f"/agent_message_metadata/{missing}", {"key": 5}),
        (f"/conversations/{missing}", {"title": 5}),
        (f"/messages/{missing}", {}),
    ):
        for caller in ("own", "admin"):
            response = http.put(path, json=body, headers=world.headers(caller))
            assert response.status_code == 422, (path, caller, response.text)


def test_a_sender_cannot_mark_a_new_recipients_copy_read(http: httpx.Client) -> None:
    world = build_world(http)
    ids = world.ids
    add = {"message_id": ids["m_ab"], "recipient_id": ids["C"], "is_read": True}
    assert (
        http.post("/message_recipients", json=add, headers=world.headers("own")).status_code == 403
    )
    assert http.post("/message_recipients", json=add, headers=bearer(ADMIN)).status_code == 201


def test_key_rotation_is_not_served_with_auth_off(client: Any, agent: Any) -> None:
    # `client` is the open-mode app of conftest.py.
    assert client.post(f"/agents/{agent()['id']}/api-key").status_code == 404


def test_echo_and_writes_draw_on_separate_allowances(limited: TestClient) -> None:
    agent_id, key = new_agent(limited)
    echoes = [limited.post("/cli/echo", json={"message": "x"}, headers=key) for _ in range(3)]
    assert [r.status_code for r in echoes] == [200, 200, 429]
    writes = [
        limited.put(f"/agents/{agent_id}", json={"agent_name": f"n{n}"}, headers=key)
        for n in range(4)
    ]
    assert [r.status_code for r in writes] == [200, 200, 200, 429]


def test_refused_writes_count_against_the_rate(limited: TestClient) -> None:
    _, key = new_agent(limited)
    other_id, _ = new_agent(limited)
    forbidden = [
        limited.put(f"/agents/{other_id}", json={"agent_name": "x"}, headers=key) for _ in range(4)
    ]
    assert [r.status_code for r in forbidden] == [403, 403, 403, 429]


@pytest.mark.parametrize("kind", ["stream", "long-poll"])
def test_opened_at_the_same_moment_no_more_than_the_cap_are_held(
    http: httpx.Client, secured: Server, kind: str
) -> None:
    """50 opens at once: the check and the slot are one step, so the 9th and later are 429
    (the race let 40 of 40 streams through: the check, an await, then the slot).

    The 50 connections are opened first and the 50 requests written in one burst, so the
    server reads them all before it answers any."""
    agent_id, own = new_agent(http)  # no mail: a long-poll waits
    path = f"/agents/{agent_id}/messages/" + ("stream" if kind == "stream" else "unread?wait=20")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {own['Authorization']}\r\n\r\n"
    ).encode()
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.create_connection(("127.0.0.1", secured.port), timeout=30))
            for _ in range(50)
        ]
        for connection in sockets:
            connection.sendall(request)
        statuses = []
        for connection in sockets:
            connection.settimeout(0.5 if kind == "long-poll" else 30)
            try:
                statuses.append(int(connection.recv(64).split()[1]))
            except TimeoutError:
                statuses.append(0)  # a long-poll still waiting: it holds a slot
    accepted = [s for s in statuses if s != 429]
    assert len(accepted) == 8, statuses  # MAILROOM_WAITS_PER_AGENT's default
    assert set(accepted) == ({200} if kind == "stream" else {0}), statuses


def test_an_agent_holds_a_bounded_number_of_streams_and_long_polls(http: httpx.Client) -> None:
    world = build_world(http)
    url = f"/agents/{world.ids['A']}/messages/stream"
    own = world.headers("own")
    readers = []  # a dropped line iterator would close its stream
    with ExitStack() as streams:
        for _ in range(8):  # MAILROOM_WAITS_PER_AGENT's default
            stream = streams.enter_context(http.stream("GET", url, headers=own))
            assert stream.status_code == 200
            readers.append(stream.iter_lines())
            assert next(readers[-1]) == ": connected"  # the server has subscribed it
        ninth = http.get(url, headers=own)
        assert ninth.status_code == 429 and ninth.headers["retry-after"] == "5"
        poll = http.get(url.removesuffix("/stream") + "/unread", params={"wait": 1}, headers=own)
        assert poll.status_code == 429
        with http.stream("GET", url, headers=bearer(ADMIN)) as admin:
            assert admin.status_code == 200  # the operator is not limited
    with http.stream("GET", url, headers=own) as again:
        assert again.status_code == 200


def test_details_hide_other_agents_addresses_from_an_agent(http: httpx.Client) -> None:
    world = build_world(http)
    ids = world.ids
    for name, port in (("A", 7001), ("B", 7002)):
        located = http.put(f"/agents/{ids[name]}", json={"ip_address": "10.0.0.1", "port": port},
                           headers=bearer(world.keys[name]))  # fmt: skip
        assert located.status_code == 200, located.text
    # B starts a conversation and sends A one message in it: A now takes part.
    conv = created(http.post("/conversations", json={}, headers=world.headers("other")))["id"]
    note = {"sender_id": ids["B"], "content": "hi", "conversation_id": conv,
            "recipient_ids": [ids["A"]]}  # fmt: skip
    created(http.post("/messages", json=note, headers=world.headers("other")))

    def addresses(caller: dict[str, str]) -> dict[str, tuple[Any, Any]]:
        details = http.get(f"/conversations/{conv}/details", headers=caller)
        assert details.status_code == 200, details.text
        return {a["id"]: (a["ip_address"], a["port"]) for a in details.json()["unique_agents"]}

    assert addresses(world.headers("own")) == {ids["A"]: ("10.0.0.1", 7001), ids["B"]: (None, None)}
    assert addresses(world.headers("other")) == {
        ids["A"]: (None, None),
        ids["B"]: ("10.0.0.1", 7002),
    }
    assert addresses(bearer(ADMIN)) == {
        ids["A"]: ("10.0.0.1", 7001),
        ids["B"]: ("10.0.0.1", 7002),
    }


def test_failed_keys_are_throttled_per_client_address(database_url: str, tmp_path: Path) -> None:
    """After a burst of bad keys an address's further bad keys are refused (429), while
    its good keys and other addresses go on. A forwarded address counts only from a trusted proxy:
    this server trusts 127.0.0.2 (FORWARDED_ALLOW_IPS), not 127.0.0.1. It runs as
    the image does, without uvicorn's own proxy headers."""
    server = Server(database_url, tmp_path, "--no-proxy-headers", MAILROOM_AUTH="required",
                    MAILROOM_ADMIN_TOKEN=ADMIN, MAILROOM_AUTH_FAILURE_LIMIT="4",
                    FORWARDED_ALLOW_IPS="127.0.0.2")  # fmt: skip
    proxy = httpx.HTTPTransport(local_address="127.0.0.2")
    try:
        server.wait_healthy()
        with (
            httpx.Client(base_url=server.base_url, timeout=10, transport=proxy) as via_proxy,
            httpx.Client(base_url=server.base_url, timeout=10) as direct,
        ):

            def as_client(address: str, key: str, path: str = "/conversations") -> httpx.Response:
                return via_proxy.get(path, headers={"X-Forwarded-For": address, **bearer(key)})

            guess = "mr_" + "A" * 43  # the format of a key, not a key
            statuses = [as_client("203.0.113.7", guess).status_code for _ in range(3)]
            statuses.append(as_client("203.0.113.7", "scrape-guess", "/metrics").status_code)
            assert statuses == [401, 401, 401, 401]
            refused = as_client("203.0.113.7", guess)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert "failed authentications" in refused.json()["detail"]
            # A valid key from that address still passes; its next guess is still 429.
            assert as_client("203.0.113.7", ADMIN).status_code == 200
            assert as_client("203.0.113.7", guess).status_code == 429
            # Another client behind the same proxy is not affected.
            assert as_client("203.0.113.8", ADMIN).status_code == 200
            assert as_client("203.0.113.8", guess).status_code == 401
            # An untrusted peer cannot pick its address: X-Forwarded-For is ignored.
            spoofed = [
                direct.get("/conversations", headers={"X-Forwarded-For": f"198.51.100.{n}",
                                                      **bearer(guess)}).status_code
                for n in range(5)
            ]  # fmt: skip
            assert spoofed == [401, 401, 401, 401, 429]
    finally:
        server.stop()


def test_addresses_failing_by_the_hundred_thousand_do_not_reset_an_agents_bucket() -> None:
    """Client addresses are as many as an attacker has: filling the failed-authentication
    table (which forgets itself when full) leaves the agents' write buckets as they were."""
    limits = RateLimits({"write": 2, FAILED_KEYS: 1})
    agent = uuid.uuid4()
    assert [limits.take(agent, "write") for _ in range(3)][:2] == [0, 0]
    for n in range(RateLimits.MAX_BUCKETS + 10):
        limits.take(f"2001:db8::{n:x}", FAILED_KEYS)
    assert limits.take(agent, "write") > 0, "the agent's spent bucket was forgotten"
    assert len(limits.buckets[FAILED_KEYS]) <= RateLimits.MAX_BUCKETS
