"""Agents (register, read, partial update) and the read-only sample users.

Other tests share the database, so every test registers its own agents.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.helpers import (
    UNKNOWN,
    UTC_TIMESTAMP,
    Db,
    Item,
    assert_invalid,
    assert_not_found,
    cursor_of,
    db_now,
    instant,
    next_url,
    walk,
)

# The agent itself (and the admin) also sees its webhook (docs/webhooks.md).
AGENT_FIELDS = {"id", "agent_name", "ip_address", "port", "created_at", "updated_at"} | {
    "webhook_url",
    "webhook_disabled_at",
}


def stored(db: Db, agent_id: str) -> Item:
    """The agent's row as the database holds it, with the address as text."""
    row = db.execute(
        "SELECT agent_name, host(ip_address) AS ip_address, port FROM agents WHERE id = %s",
        (agent_id,),
    ).fetchone()
    assert row is not None
    return row


# POST /agents --------------------------------------------------------------


def test_create_returns_the_agent_with_server_set_fields(client, db):
    response = client.post(
        "/agents", json={"agent_name": "planner", "ip_address": "10.0.0.7", "port": 8080}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == AGENT_FIELDS
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert (body["agent_name"], body["ip_address"], body["port"]) == ("planner", "10.0.0.7", 8080)
    assert UTC_TIMESTAMP.match(body["created_at"]), body["created_at"]
    assert UTC_TIMESTAMP.match(body["updated_at"]), body["updated_at"]
    assert abs(instant(body["created_at"]) - db_now(db)) < timedelta(minutes=1)
    assert stored(db, body["id"]) == {
        "agent_name": "planner",
        "ip_address": "10.0.0.7",
        "port": 8080,
    }


def test_create_gives_each_agent_a_new_id(agent):
    """agent_name is not unique: the id is the identity."""
    first, second = agent(agent_name="twin"), agent(agent_name="twin")

    assert first["id"] != second["id"]
    assert first["agent_name"] == second["agent_name"] == "twin"


def test_create_without_optional_fields_stores_nulls(client, db):
    response = client.post("/agents", json={"agent_name": "bare"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["ip_address"], body["port"]) == (None, None)
    assert stored(db, body["id"]) == {"agent_name": "bare", "ip_address": None, "port": None}


def test_create_with_explicit_nulls(agent):
    created = agent(agent_name="nulls", ip_address=None, port=None)

    assert (created["ip_address"], created["port"]) == (None, None)


@pytest.mark.parametrize("name", ["a", "x" * 255, "é" * 255, "名前"])
def test_create_agent_name_within_bounds(agent, name):
    """The limit counts characters, not bytes."""
    assert agent(agent_name=name)["agent_name"] == name


@pytest.mark.parametrize("name", ["", "x" * 256])
def test_create_agent_name_out_of_bounds_is_422(client, name):
    assert_invalid(client.post("/agents", json={"agent_name": name}), "body", "agent_name")


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_create_port_within_bounds(agent, port):
    assert agent(port=port)["port"] == port


@pytest.mark.parametrize("port", [0, -1, 65536, 100000, "8080", 80.5, True])
def test_create_port_invalid_is_422(client, port):
    response = client.post("/agents", json={"agent_name": "p", "port": port})

    assert_invalid(response, "body", "port")


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::ffff:192.0.2.1", str(ipaddress.ip_address("::ffff:192.0.2.1"))),
    ],
)
def test_create_ip_address_is_returned_in_canonical_form(client, db, sent, canonical):
    response = client.post("/agents", json={"agent_name": "ip", "ip_address": sent})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["ip_address"] == canonical
    assert client.get(f"/agents/{body['id']}").json()["ip_address"] == canonical
    assert ipaddress.ip_address(stored(db, body["id"])["ip_address"]) == ipaddress.ip_address(sent)


@pytest.mark.parametrize(
    "address",
    [
        "localhost",
        "1.2.3.4 ",
        " 1.2.3.4",
        "10.0.0.0/8",
        "2001:db8::/32",
        "10.0.0.1/32",
        "256.1.1.1",
        "1.2.3",
        "",
        "fe80::1%eth0",
        "1.2.3.4, 5.6.7.8",
    ],
)
def test_create_ip_address_that_is_not_one_address_is_422(client, db, address):
    name = f"bad-ip-{uuid.uuid4()}"
    response = client.post("/agents", json={"agent_name": name, "ip_address": address})

    assert_invalid(response, "body", "ip_address")
    assert (
        db.execute("SELECT count(*) AS n FROM agents WHERE agent_name = %s", (name,)).fetchone()[
            "n"
        ]
        == 0
    )


@pytest.mark.parametrize("address", [1234, ["10.0.0.1"], {"ip": "10.0.0.1"}])
def test_create_ip_address_not_a_string_is_422(client, address):
    response = client.post("/agents", json={"agent_name": "ip", "ip_address": address})

    assert_invalid(response, "body", "ip_address")


# GET /agents/{id} ----------------------------------------------------------


def test_get_returns_what_create_returned(client, agent):
    created = agent(agent_name="reader", ip_address="2001:db8::7", port=443)

    response = client.get(f"/agents/{created['id']}")

    assert response.status_code == 200, response.text
    assert response.json() == created


def test_get_unknown_agent_is_404(client):
    assert_not_found(client.get(f"/agents/{UNKNOWN}"), "Agent not found")


# PUT /agents/{id} ----------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"agent_name": "renamed"},
        {"ip_address": "192.0.2.44"},
        {"port": 9090},
        {"agent_name": "renamed", "port": 1},
        {"agent_name": "all", "ip_address": "::2", "port": 65535},
    ],
)
def test_put_changes_only_the_fields_sent(client, agent, db, change):
    created = agent(agent_name="before", ip_address="10.1.2.3", port=8000)

    response = client.put(f"/agents/{created['id']}", json=change)

    assert response.status_code == 200, response.text
    body = response.json()
    expected = {field: created[field] for field in ("agent_name", "ip_address", "port")} | change
    assert {field: body[field] for field in expected} == expected
    assert set(body) == AGENT_FIELDS
    assert (body["id"], body["created_at"]) == (created["id"], created["created_at"])
    assert stored(db, created["id"]) == expected
    assert client.get(f"/agents/{created['id']}").json() == body


def test_put_moves_updated_at_and_keeps_created_at(client, agent):
    created = agent()

    body = client.put(f"/agents/{created['id']}", json={"port": 7000}).json()

    assert UTC_TIMESTAMP.match(body["updated_at"]), body["updated_at"]
    assert body["created_at"] == created["created_at"]
    assert instant(body["updated_at"]) > instant(created["updated_at"])


@pytest.mark.parametrize(("cleared", "kept"), [("ip_address", "port"), ("port", "ip_address")])
def test_put_null_clears_a_nullable_field(client, agent, db, cleared, kept):
    created = agent(agent_name="clear-me", ip_address="10.9.8.7", port=8123)

    response = client.put(f"/agents/{created['id']}", json={cleared: None})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body[cleared] is None
    assert body[kept] == created[kept]
    row = stored(db, created["id"])
    assert row[cleared] is None
    assert row[kept] == created[kept]


def test_put_null_clears_both(client, agent):
    created = agent(ip_address="10.9.8.7", port=8123)

    body = client.put(f"/agents/{created['id']}", json={"ip_address": None, "port": None}).json()

    assert (body["ip_address"], body["port"]) == (None, None)


def test_put_null_agent_name_is_422_and_keeps_it(client, agent, db):
    created = agent(agent_name="keep-me")

    response = client.put(f"/agents/{created['id']}", json={"agent_name": None})

    assert_invalid(response, "body", "agent_name")
    assert stored(db, created["id"])["agent_name"] == "keep-me"


def test_put_ip_address_is_stored_in_canonical_form(client, agent, db):
    created = agent()

    response = client.put(f"/agents/{created['id']}", json={"ip_address": "2001:DB8:0::1"})

    assert response.status_code == 200, response.text
    assert response.json()["ip_address"] == "2001:db8::1"
    assert stored(db, created["id"])["ip_address"] == "2001:db8::1"


@pytest.mark.parametrize(
    "change",
    [
        {"ip_address": "localhost"},
        {"ip_address": "1.2.3.4 "},
        {"ip_address": "10.0.0.0/8"},
        {"port": 0},
        {"port": 65536},
        {"port": "8080"},
        {"agent_name": ""},
        {"agent_name": "x" * 256},
    ],
)
def test_put_invalid_value_is_422_and_changes_nothing(client, agent, db, change):
    created = agent(agent_name="steady", ip_address="10.0.0.1", port=8080)
    (field,) = change

    response = client.put(f"/agents/{created['id']}", json=change)

    assert_invalid(response, "body", field)
    assert stored(db, created["id"]) == {
        "agent_name": "steady",
        "ip_address": "10.0.0.1",
        "port": 8080,
    }


def test_put_unknown_agent_is_404(client):
    assert_not_found(client.put(f"/agents/{UNKNOWN}", json={"port": 80}), "Agent not found")


# GET /users/{id} -----------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "name", "email"),
    [
        (1, "John Doe", "john@example.com"),
        (2, "Jane Smith", "jane@example.com"),
        (3, "Bob Johnson", "bob@example.com"),
    ],
)
def test_get_sample_user(client, user_id, name, email):
    response = client.get(f"/users/{user_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "name", "email", "created_at"}
    assert (body["id"], body["name"], body["email"]) == (user_id, name, email)
    assert UTC_TIMESTAMP.match(body["created_at"]), body["created_at"]


@pytest.mark.parametrize("user_id", ["4", "0", "-1", "999999", "3000000000"])
def test_get_unknown_user_is_404(client, user_id):
    """Any well-formed integer without a row, even one past the int4 range, is a 404."""
    assert_not_found(client.get(f"/users/{user_id}"), "User not found")


# GET /agents (the directory) ---------------------------------------------------

DIRECTORY_FIELDS = {"id", "agent_name", "created_at", "unread_count", "last_active_at"}


def directory(client, **params: Any) -> list[Item]:
    response = client.get("/agents", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_directory_lists_agents_by_name_then_id_without_their_address(client, agent):
    prefix = f"dir-{uuid.uuid4().hex[:8]}-"
    made = [
        agent(agent_name=prefix + name, ip_address="10.0.0.9", port=9000)
        for name in ("carol", "alice", "bob", "alice")
    ]
    items = directory(client, name=prefix, limit=1000)
    assert [item["agent_name"] for item in items] == [
        prefix + n for n in ("alice", "alice", "bob", "carol")
    ]
    alices = sorted(a["id"] for a in made if a["agent_name"].endswith("alice"))
    assert [item["id"] for item in items[:2]] == alices  # same name: by id
    for item in items:
        assert set(item) == DIRECTORY_FIELDS  # MAILROOM_AUTH=off: the admin's view
        assert UTC_TIMESTAMP.match(item["created_at"])


def test_directory_orders_names_ignoring_case(client, agent):
    prefix = f"case-{uuid.uuid4().hex[:8]}-"
    made = [agent(agent_name=prefix + name) for name in ("Beta", "alpha", "Alpha", "gamma")]
    items = directory(client, name=prefix, limit=1000)
    by_lower = sorted(made, key=lambda a: (a["agent_name"].lower(), a["id"]))
    assert [item["id"] for item in items] == [a["id"] for a in by_lower]


def test_directory_name_is_a_case_insensitive_prefix(client, agent):
    tag = uuid.uuid4().hex[:8]
    agent(agent_name=f"Scout-{tag}")
    agent(agent_name=f"scout-{tag}-2")
    agent(agent_name=f"x-scout-{tag}")
    names = {item["agent_name"] for item in directory(client, name=f"SCOUT-{tag}")}
    assert names == {f"Scout-{tag}", f"scout-{tag}-2"}
    # LIKE's wildcards are plain characters in a prefix.
    assert directory(client, name=f"scout_{tag}") == []
    assert directory(client, name=f"%cout-{tag}") == []  # as a wildcard it would match


def test_directory_pages_by_the_link_header_each_agent_once(client, agent):
    prefix = f"page-{uuid.uuid4().hex[:8]}-"
    made = {agent(agent_name=f"{prefix}{i % 3}")["id"] for i in range(7)}
    pages = walk(client, f"/agents?name={prefix}&limit=3")
    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [item["id"] for page in pages for item in page]
    assert sorted(seen) == sorted(made)
    keys = [(item["agent_name"].lower(), item["id"]) for page in pages for item in page]
    assert keys == sorted(keys)


def test_directory_pages_stop_at_the_byte_budget(small_pages, agent):
    prefix = f"long-{uuid.uuid4().hex[:8]}-"
    made = [agent(agent_name=f"{prefix}{i:03d}".ljust(250, "n"))["id"] for i in range(100)]
    pages = walk(small_pages, f"/agents?name={prefix}&limit=100")
    # 250-byte names: 80 of them fill SMALL_PAGE_BYTES (20,000).
    assert [len(page) for page in pages] == [80, 20]
    assert [item["id"] for page in pages for item in page] == made


def test_directory_page_goes_on_after_its_last_agent_is_renamed(client, agent):
    prefix = f"rename-{uuid.uuid4().hex[:8]}-"
    made = [agent(agent_name=f"{prefix}{letter}")["id"] for letter in "abcd"]
    first = client.get("/agents", params={"name": prefix, "limit": 2})
    assert [item["id"] for item in first.json()] == made[:2]
    client.put(f"/agents/{made[1]}", json={"agent_name": prefix + "z"})
    rest = walk(client, next_url(first))
    assert [item["id"] for page in rest for item in page] == [made[2], made[3], made[1]]


def test_directory_activity_is_unread_count_and_last_message(client, agent, message):
    prefix = f"act-{uuid.uuid4().hex[:8]}-"
    agent(agent_name=prefix + "a")  # never sent or received anything
    talker, reader = agent(agent_name=prefix + "b"), agent(agent_name=prefix + "c")
    message(sender_id=talker["id"], recipient_ids=[reader["id"]])
    last = message(sender_id=talker["id"], recipient_ids=[reader["id"]])
    client.put(f"/message_recipients/{last['id']}/{reader['id']}", json={"is_read": True})
    items = {item["agent_name"][-1]: item for item in directory(client, name=prefix)}
    assert items["a"]["unread_count"] == 0 and items["a"]["last_active_at"] is None
    assert items["b"]["unread_count"] == 0
    assert items["c"]["unread_count"] == 1
    assert instant(items["b"]["last_active_at"]) == instant(last["sent_at"])
    assert instant(items["c"]["last_active_at"]) == instant(last["sent_at"])


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": "0"}, ("query", "limit")),
        ({"limit": "1001"}, ("query", "limit")),
        ({"limit": "ten"}, ("query", "limit")),
        ({"cursor": "not-a-cursor"}, ("query", "cursor")),
        ({"name": "x" * 256}, ("query", "name")),
        ({"name": "a\x00b"}, ("query", "name")),
    ],
)
def test_directory_invalid_query_is_422(client, params, loc):
    assert_invalid(client.get("/agents", params=params), *loc)


def test_directory_refuses_a_mailbox_cursor(client, agent, message):
    """A cursor of another list is not a directory position (each list signs its own)."""
    sender, receiver = agent(), agent()
    for _ in range(2):
        message(sender_id=sender["id"], recipient_ids=[receiver["id"]])
    mailbox = client.get(f"/agents/{receiver['id']}/messages", params={"limit": 1})
    cursor = cursor_of(next_url(mailbox))
    assert_invalid(client.get("/agents", params={"cursor": cursor}), "query", "cursor")
