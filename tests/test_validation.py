"""The contract's input rules across routes: 422 (and its shape), 413, 404/405, never a 500.

Other tests share the database, so each test checks stored rows only by the
ids or unique contents it created itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.helpers import UNKNOWN, Db, Item, assert_invalid

Ids = dict[str, str]

MIB = 1_048_576

# Every route that reads a JSON body, with {placeholders} for the ids in its path.
BODY_ROUTES = [
    ("POST", "/agents"),
    ("PUT", "/agents/{agent}"),
    ("POST", "/messages"),
    ("PUT", "/messages/{message}"),
    ("POST", "/message_recipients"),
    ("PUT", "/message_recipients/{message}/{agent}"),
    ("POST", "/agent_message_metadata"),
    ("PUT", "/agent_message_metadata/{metadata}"),
    ("POST", "/conversations"),
    ("PUT", "/conversations/{conversation}"),
    ("PUT", "/agents/{agent}/messages/mark-read"),
    ("POST", "/cli/echo"),
]
PUT_ROUTES = [(method, path) for method, path in BODY_ROUTES if method == "PUT"]

# A body each route accepts, with {placeholders} for ids (see fill).
VALID_BODY: dict[tuple[str, str], Item] = {
    ("POST", "/agents"): {"agent_name": "valid"},
    ("PUT", "/agents/{agent}"): {"port": 8080},
    ("POST", "/messages"): {"content": "valid"},
    ("PUT", "/messages/{message}"): {"status": "valid"},
    ("POST", "/message_recipients"): {"message_id": "{message}", "recipient_id": "{agent}"},
    ("PUT", "/message_recipients/{message}/{agent}"): {"is_read": False},
    ("POST", "/agent_message_metadata"): {"message_id": "{message}", "key": "k"},
    ("PUT", "/agent_message_metadata/{metadata}"): {"value": "valid"},
    ("POST", "/conversations"): {"title": "valid"},
    ("PUT", "/conversations/{conversation}"): {"title": "valid"},
    ("PUT", "/agents/{agent}/messages/mark-read"): {"read_up_to_date": "2000-01-01T00:00:00Z"},
    ("POST", "/cli/echo"): {"message": "valid"},
}


def route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


def url(path: str, ids: Ids) -> str:
    return path.format(**ids)


def unknown_ids() -> Ids:
    return dict.fromkeys(("agent", "message", "metadata", "conversation"), UNKNOWN)


def fill(body: Item, ids: Ids) -> Item:
    """The body with {placeholders} in its string values replaced by ids."""
    filled = {}
    for name, value in body.items():
        if isinstance(value, str):
            for placeholder, actual in ids.items():
                value = value.replace(f"{{{placeholder}}}", actual)
        filled[name] = value
    return filled


def count(db: Db, query: str, *params: Any) -> int:
    return db.execute(f"SELECT count(*) AS n FROM {query}", params).fetchone()["n"]


@pytest.fixture(scope="module")
def existing(client: TestClient) -> Ids:
    """One row of each resource, for routes whose path names one."""

    def create(path: str, body: Item) -> Item:
        response = client.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    agent = create("/agents", {"agent_name": "validation"})
    message = create("/messages", {"content": "validation", "recipient_ids": [agent["id"]]})
    metadata = create("/agent_message_metadata", {"message_id": message["id"], "key": "validation"})
    conversation = create("/conversations", {"title": "validation"})
    return {
        "agent": agent["id"],
        "message": message["id"],
        "metadata": metadata["id"],
        "conversation": conversation["id"],
    }


@pytest.fixture(scope="module")
def user_client(client: TestClient) -> Iterator[TestClient]:
    """The same running app, seen as a user sees it: a server error is a 500, not a raise."""
    plain = TestClient(client.app, raise_server_exceptions=False)
    plain.app_state.update(client.app_state)
    yield plain
    plain.close()


def send(client: TestClient, method: str, path: str, body: bytes | str) -> httpx.Response:
    """A raw body, labelled as JSON."""
    return client.request(method, path, content=body, headers={"content-type": "application/json"})


# The 422 body ----------------------------------------------------------------


def test_422_has_the_fastapi_shape(client):
    response = client.post("/agents", json={"agent_name": "shape", "port": "8080"})

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["detail"]
    assert isinstance(body["detail"], list) and len(body["detail"]) == 1
    (error,) = body["detail"]
    assert {"type", "loc", "msg"} <= set(error)
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["msg"], str) and error["msg"]
    assert error["loc"] == ["body", "port"]


def test_422_for_a_path_parameter_is_located_in_the_path(client):
    response = client.get("/agents/not-a-uuid")

    assert_invalid(response)
    assert response.json()["detail"][0]["loc"] == ["path", "agent_id"]


def test_422_for_a_query_parameter_is_located_in_the_query(client, existing):
    response = client.get(f"/agents/{existing['agent']}/messages", params={"limit": "many"})

    assert_invalid(response)
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_422_inside_a_list_is_located_at_the_item(client, existing):
    response = client.post(
        "/messages", json={"content": "x", "recipient_ids": [existing["agent"], "nope"]}
    )

    assert_invalid(response)
    assert response.json()["detail"][0]["loc"] == ["body", "recipient_ids", 1]


# Bodies that are not a JSON object -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b'{"a": 1,}', b"{'a': 1}", b'{"a": 1} {"b": 2}', b"\xff\xfe{}"],
    ids=["empty", "text", "truncated", "trailing-comma", "single-quotes", "two-values", "bytes"],
)
@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_body_that_is_not_json_is_422(client, existing, route, body):
    method, path = route

    assert_invalid(send(client, method, url(path, existing), body), "body")


@pytest.mark.parametrize("body", ["[]", '[{"agent_name": "x"}]', '"text"', "null", "1", "true"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_body_that_is_not_an_object_is_422(client, existing, route, body):
    method, path = route

    response = send(client, method, url(path, existing), body)

    assert_invalid(response, "body")


def test_rejected_create_stores_nothing(client, db):
    name = f"rejected-{uuid.uuid4()}"

    response = send(client, "POST", "/agents", json.dumps([{"agent_name": name}]))

    assert response.status_code == 422, response.text
    assert count(db, "agents WHERE agent_name = %s", name) == 0


# Unknown fields ----------------------------------------------------------------

UNKNOWN_FIELDS = [
    (("POST", "/agents"), ["id", "created_at", "updated_at", "name"]),
    (("PUT", "/agents/{agent}"), ["id", "created_at", "updated_at"]),
    (("POST", "/messages"), ["id", "sent_at", "updated_at", "recipients"]),
    (("PUT", "/messages/{message}"), ["id", "sent_at", "updated_at", "sender_id"]),
    (("POST", "/message_recipients"), ["read_at", "sent_at"]),
    (("PUT", "/message_recipients/{message}/{agent}"), ["read_at", "message_id"]),
    (("POST", "/agent_message_metadata"), ["id", "created_at"]),
    (("PUT", "/agent_message_metadata/{metadata}"), ["id", "created_at", "message_id"]),
    (("POST", "/conversations"), ["id", "created_at", "updated_at"]),
    (("PUT", "/conversations/{conversation}"), ["id", "created_at", "updated_at"]),
    (("PUT", "/agents/{agent}/messages/mark-read"), ["updated_count"]),
    (("POST", "/cli/echo"), ["output"]),
]


@pytest.mark.parametrize(
    ("route", "field"),
    [(route, field) for route, fields in UNKNOWN_FIELDS for field in fields],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else value,
)
def test_unknown_field_is_422(client, existing, route, field):
    """A client can never set a server-owned field, not even to a plausible value."""
    method, path = route
    body = fill(VALID_BODY[route], existing) | {field: "2026-01-01T00:00:00.000000Z"}

    response = client.request(method, url(path, existing), json=body)

    assert_invalid(response, "body", field)


def test_create_with_a_client_chosen_id_stores_nothing(client, db):
    chosen = str(uuid.uuid4())

    response = client.post("/agents", json={"id": chosen, "agent_name": "chooser"})

    assert_invalid(response, "body", "id")
    assert count(db, "agents WHERE id = %s", chosen) == 0


def test_put_with_a_server_field_changes_nothing(client, existing, db):
    before = client.get(f"/agents/{existing['agent']}").json()

    response = client.put(
        f"/agents/{existing['agent']}",
        json={"agent_name": "sneaky", "created_at": "2000-01-01T00:00:00.000000Z"},
    )

    assert_invalid(response, "body", "created_at")
    assert client.get(f"/agents/{existing['agent']}").json() == before


# Missing required fields -------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (("POST", "/agents"), {}, "agent_name"),
        (("POST", "/agents"), {"ip_address": "10.0.0.1", "port": 80}, "agent_name"),
        (("POST", "/messages"), {}, "content"),
        (("POST", "/messages"), {"importance": 3}, "content"),
        (("POST", "/message_recipients"), {"message_id": "{message}"}, "recipient_id"),
        (("POST", "/message_recipients"), {"recipient_id": "{agent}"}, "message_id"),
        (("POST", "/agent_message_metadata"), {"message_id": "{message}"}, "key"),
        (("POST", "/agent_message_metadata"), {"key": "k"}, "message_id"),
        (("PUT", "/message_recipients/{message}/{agent}"), {}, "is_read"),
        (("PUT", "/agents/{agent}/messages/mark-read"), {}, "read_up_to_date"),
        (("POST", "/cli/echo"), {}, "message"),
    ],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else None,
)
def test_missing_required_field_is_422(client, existing, route, body, field):
    method, path = route

    response = client.request(method, url(path, existing), json=fill(body, existing))

    assert_invalid(response, "body", field)


# Wrong and loose types ---------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (("POST", "/agents"), {"agent_name": 5}, "agent_name"),
        (("POST", "/agents"), {"agent_name": ["x"]}, "agent_name"),
        (("POST", "/agents"), {"agent_name": "x", "port": 80.5}, "port"),  # 80.0 is 80
        (("POST", "/agents"), {"agent_name": "x", "port": 99999999999999999999999}, "port"),
        (("POST", "/agents"), {"agent_name": "x", "ip_address": 167772161}, "ip_address"),
        (("POST", "/messages"), {"content": 5}, "content"),
        (("POST", "/messages"), {"content": None}, "content"),
        (("POST", "/messages"), {"content": "x", "importance": "5"}, "importance"),
        (("POST", "/messages"), {"content": "x", "importance": 5.5}, "importance"),
        (("POST", "/messages"), {"content": "x", "importance": True}, "importance"),
        (("POST", "/messages"), {"content": "x", "message_type": 5}, "message_type"),
        (("POST", "/messages"), {"content": "x", "status": False}, "status"),
        (("POST", "/messages"), {"content": "x", "msg_metadata": []}, "msg_metadata"),
        (("POST", "/messages"), {"content": "x", "msg_metadata": "{}"}, "msg_metadata"),
        (("POST", "/messages"), {"content": "x", "msg_metadata": 1}, "msg_metadata"),
        (("POST", "/messages"), {"content": "x", "sender_id": "not-a-uuid"}, "sender_id"),
        (("POST", "/messages"), {"content": "x", "sender_id": 5}, "sender_id"),
        (("POST", "/messages"), {"content": "x", "parent_message_id": "1"}, "parent_message_id"),
        (("POST", "/messages"), {"content": "x", "conversation_id": ""}, "conversation_id"),
        (("POST", "/messages"), {"content": "x", "recipient_ids": "{agent}"}, "recipient_ids"),
        (("POST", "/messages"), {"content": "x", "recipient_ids": [5]}, "recipient_ids"),
        (("PUT", "/messages/{message}"), {"importance": "3"}, "importance"),
        (("PUT", "/messages/{message}"), {"msg_metadata": ["x"]}, "msg_metadata"),
        (("POST", "/message_recipients"), {"message_id": 1, "recipient_id": 2}, "message_id"),
        (("POST", "/agent_message_metadata"), {"message_id": "{message}", "key": 5}, "key"),
        (
            ("POST", "/agent_message_metadata"),
            {"message_id": "{message}", "key": "k", "value": 5},
            "value",
        ),
        (
            ("POST", "/agent_message_metadata"),
            {"message_id": "{message}", "key": "k", "value": {"a": "b"}},
            "value",
        ),
        (("PUT", "/agent_message_metadata/{metadata}"), {"value": ["v"]}, "value"),
        (("POST", "/conversations"), {"title": 5}, "title"),
        (("POST", "/conversations"), {"metadata": []}, "metadata"),
        (("POST", "/conversations"), {"metadata": None}, "metadata"),
        (("PUT", "/agents/{agent}/messages/mark-read"), {"read_up_to_date": 5}, "read_up_to_date"),
        (
            ("PUT", "/agents/{agent}/messages/mark-read"),
            {"read_up_to_date": "yesterday"},
            "read_up_to_date",
        ),
        (("POST", "/cli/echo"), {"message": 5}, "message"),
    ],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else None,
)
def test_wrong_type_is_422(client, existing, route, body, field):
    method, path = route

    response = client.request(method, url(path, existing), json=fill(body, existing))

    assert_invalid(response, "body", field)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (("POST", "/agents"), {"agent_name": "x", "port": "8080"}, "port"),
        (("PUT", "/agents/{agent}"), {"port": "8080"}, "port"),
        (("PUT", "/message_recipients/{message}/{agent}"), {"is_read": 1}, "is_read"),
        (("PUT", "/message_recipients/{message}/{agent}"), {"is_read": 0}, "is_read"),
        (("PUT", "/message_recipients/{message}/{agent}"), {"is_read": "false"}, "is_read"),
        (("POST", "/conversations"), {"archived": 1}, "archived"),
        (("POST", "/conversations"), {"archived": 0}, "archived"),
        (("POST", "/conversations"), {"archived": "true"}, "archived"),
        (("PUT", "/conversations/{conversation}"), {"archived": 1}, "archived"),
        (("PUT", "/conversations/{conversation}"), {"archived": "false"}, "archived"),
    ],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else None,
)
def test_strict_types_do_not_coerce(client, existing, route, body, field):
    """A port sent as "8080" and booleans sent as 0 or 1 are refused, not coerced."""
    method, path = route

    assert_invalid(client.request(method, url(path, existing), json=body), "body", field)


@pytest.mark.parametrize("is_read", [1, 0, "true", None])
def test_new_recipient_is_read_must_be_a_boolean(client, existing, db, is_read):
    fresh = client.post("/agents", json={"agent_name": "strict"}).json()["id"]
    body = {"message_id": existing["message"], "recipient_id": fresh, "is_read": is_read}

    assert_invalid(client.post("/message_recipients", json=body), "body", "is_read")
    assert count(db, "message_recipients WHERE recipient_id = %s", fresh) == 0


@pytest.mark.parametrize(
    ("route", "field"),
    [
        (("PUT", "/agents/{agent}"), "agent_name"),
        (("PUT", "/messages/{message}"), "content"),
        (("PUT", "/conversations/{conversation}"), "archived"),
        (("PUT", "/conversations/{conversation}"), "metadata"),
        (("PUT", "/message_recipients/{message}/{agent}"), "is_read"),
        (("PUT", "/agent_message_metadata/{metadata}"), "key"),
    ],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else value,
)
def test_put_null_for_a_required_field_is_422(client, existing, route, field):
    method, path = route

    assert_invalid(client.request(method, url(path, existing), json={field: None}), "body", field)


# Empty PUT bodies and precedence over unknown ids -----------------------------


@pytest.mark.parametrize("route", PUT_ROUTES, ids=route_id)
def test_put_with_no_field_is_422(client, existing, route):
    method, path = route

    assert_invalid(client.request(method, url(path, existing), json={}), "body")


def test_put_with_no_field_does_not_touch_the_row(client, existing):
    before = client.get(f"/agents/{existing['agent']}").json()

    assert_invalid(client.put(f"/agents/{existing['agent']}", json={}))
    assert client.get(f"/agents/{existing['agent']}").json() == before


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"no_such_field": 1}'],
    ids=["text", "array", "empty", "extra"],
)
@pytest.mark.parametrize("route", PUT_ROUTES, ids=route_id)
def test_invalid_body_wins_over_an_unknown_id(client, route, body):
    method, path = route

    response = send(client, method, url(path, unknown_ids()), body)

    assert_invalid(response, "body")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (("PUT", "/agents/{agent}"), {"port": "8080"}),
        (("PUT", "/messages/{message}"), {"sender_id": UNKNOWN}),
        (("PUT", "/message_recipients/{message}/{agent}"), {"is_read": 1}),
        (("PUT", "/agent_message_metadata/{metadata}"), {"key": ""}),
        (("PUT", "/conversations/{conversation}"), {"archived": None}),
        (("PUT", "/agents/{agent}/messages/mark-read"), {"read_up_to_date": "soon"}),
    ],
    ids=lambda value: route_id(value) if isinstance(value, tuple) else None,
)
def test_invalid_value_wins_over_an_unknown_id(client, route, body):
    method, path = route

    assert_invalid(client.request(method, url(path, unknown_ids()), json=body), "body")


# Bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "x" * 65537}, "content"),
        ({"content": "é" * 65537}, "content"),
        ({"importance": -1}, "importance"),
        ({"importance": 11}, "importance"),
        ({"message_type": ""}, "message_type"),
        ({"message_type": "x" * 51}, "message_type"),
        ({"status": ""}, "status"),
        ({"status": "x" * 51}, "status"),
    ],
    ids=lambda value: None if isinstance(value, dict) else value,
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_message_value_out_of_bounds_is_422(client, existing, db, method, body, field):
    marker = f"bounds {uuid.uuid4()}"
    if method == "POST":
        response = client.post("/messages", json={"content": marker} | body)
    else:
        response = client.put(f"/messages/{existing['message']}", json=body)

    assert_invalid(response, "body", field)
    assert count(db, "messages WHERE content = %s", marker) == 0
    assert count(db, "messages WHERE id = %s AND content = 'validation'", existing["message"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"content": "x"},
        {"content": "x" * 65536},
        {"content": "é" * 65536},
        {"content": "😀" * 65536},
        {"content": "x", "importance": 0},
        {"content": "x", "importance": 10},
        {"content": "x", "message_type": "t" * 50, "status": "s" * 50},
        {"content": "x", "message_type": "t", "status": "s"},
    ],
    ids=["content-1", "content-65536", "content-65536-2-byte", "content-65536-4-byte",
         "importance-0", "importance-10", "labels-50", "labels-1"],
)  # fmt: skip
def test_message_value_at_the_bounds_is_accepted(client, db, body):
    """Lengths count characters, not bytes."""
    response = client.post("/messages", json=body)

    assert response.status_code == 201, response.text[:300]
    stored = db.execute(
        "SELECT content, importance, message_type, status FROM messages WHERE id = %s",
        (response.json()["id"],),
    ).fetchone()
    assert {field: stored[field] for field in body} == body


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_metadata_key_out_of_bounds_is_422(client, existing, key):
    response = client.post(
        "/agent_message_metadata", json={"message_id": existing["message"], "key": key}
    )

    assert_invalid(response, "body", "key")


# Malformed path and query parameters -------------------------------------------

BAD_UUIDS = [
    "not-a-uuid",
    "123",
    "00000000-0000-4000-8000-00000000000",
    "00000000-0000-4000-8000-0000000000000",
    "g0000000-0000-4000-8000-000000000000",
    "00000000-0000-4000-8000-00000000000%00",
]


@pytest.mark.parametrize("bad", BAD_UUIDS)
@pytest.mark.parametrize(
    ("method", "path", "name", "body"),
    [
        ("GET", "/agents/{bad}", "agent_id", None),
        ("PUT", "/agents/{bad}", "agent_id", {"port": 80}),
        ("GET", "/agents/{bad}/messages", "agent_id", None),
        ("GET", "/agents/{bad}/messages/unread", "agent_id", None),
        (
            "PUT",
            "/agents/{bad}/messages/mark-read",
            "agent_id",
            {"read_up_to_date": "2000-01-01T00:00:00Z"},
        ),
        ("PUT", "/messages/{bad}", "message_id", {"content": "x"}),
        ("GET", "/messages/{bad}/metadata/{agent}", "message_id", None),
        ("GET", "/messages/{message}/metadata/{bad}", "agent_id", None),
        ("PUT", "/message_recipients/{bad}/{agent}", "message_id", {"is_read": True}),
        ("PUT", "/message_recipients/{message}/{bad}", "recipient_id", {"is_read": True}),
        ("PUT", "/agent_message_metadata/{bad}", "metadata_id", {"value": "v"}),
        ("GET", "/conversations/{bad}", "conversation_id", None),
        ("PUT", "/conversations/{bad}", "conversation_id", {"title": "t"}),
        ("GET", "/conversations/{bad}/details", "conversation_id", None),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("/") else None,
)
def test_malformed_uuid_in_the_path_is_422(client, existing, method, path, name, body, bad):
    response = client.request(method, url(path, existing | {"bad": bad}), json=body)

    assert_invalid(response, "path", name)


@pytest.mark.parametrize("user_id", ["abc", "1.5", "1e3", "0x1", "1_000", "%201", "+-1", "\u0661"])
def test_malformed_user_id_is_422(client, user_id):
    assert_invalid(client.get(f"/users/{user_id}"), "path", "user_id")


def test_user_id_too_large_for_any_integer_is_never_a_500(user_client):
    response = user_client.get("/users/99999999999999999999999999")

    assert response.status_code in (404, 422), response.text


@pytest.mark.parametrize(
    "limit", ["abc", "", "0", "1001", "-1", "1.5", "1e2", "99999999999999999999"]
)
@pytest.mark.parametrize(
    "path", ["/agents/{agent}/messages", "/agents/{agent}/messages/unread", "/conversations"]
)
def test_malformed_or_out_of_range_limit_is_422(client, existing, path, limit):
    response = client.get(url(path, existing), params={"limit": limit})

    assert_invalid(response, "query", "limit")


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_limit_at_the_bounds_is_accepted(client, existing, limit):
    response = client.get(f"/agents/{existing['agent']}/messages", params={"limit": limit})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/agents/{agent}/messages", {"order": "sideways"}, "order"),
        ("/agents/{agent}/messages", {"direction": "up"}, "direction"),
        ("/agents/{agent}/messages/unread", {"order": "ASC"}, "order"),
        ("/agents/{agent}/messages", {"cursor": "not-a-cursor"}, "cursor"),
        ("/conversations", {"cursor": "\x00"}, "cursor"),
        ("/conversations", {"archived": "yes"}, "archived"),
    ],
)
def test_malformed_query_value_is_422(client, existing, path, params, name):
    assert_invalid(client.get(url(path, existing), params=params), "query", name)


# Body size -------------------------------------------------------------------


def padded_message(size: int) -> tuple[bytes, str]:
    """A valid POST /messages body of exactly `size` bytes (JSON whitespace), and its content."""
    content = f"sized {uuid.uuid4()}"
    body = json.dumps({"content": content}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}", content


def chunks(body: bytes, size: int = 65536) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail


def test_body_of_exactly_one_mebibyte_is_accepted(client, db):
    body, content = padded_message(MIB)
    assert len(body) == MIB

    response = send(client, "POST", "/messages", body)

    assert response.status_code == 201, response.text[:300]
    assert count(db, "messages WHERE content = %s", content) == 1


def test_body_one_byte_over_one_mebibyte_is_413_and_stores_nothing(client, db):
    body, content = padded_message(MIB + 1)

    response = send(client, "POST", "/messages", body)

    assert_too_large(response)
    assert count(db, "messages WHERE content = %s", content) == 0


def test_chunked_body_of_exactly_one_mebibyte_is_accepted(client, db):
    body, content = padded_message(MIB)

    response = client.post(
        "/messages", content=chunks(body), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 201, response.text[:300]
    assert count(db, "messages WHERE content = %s", content) == 1


def test_chunked_body_one_byte_over_is_413_and_stores_nothing(client, db):
    body, content = padded_message(MIB + 1)

    response = client.post(
        "/messages", content=chunks(body), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_too_large(response)
    assert count(db, "messages WHERE content = %s", content) == 0


def test_one_mebibyte_with_too_long_content_is_422_not_413(client):
    """The size check lets exactly 1 MiB through; the content rule then refuses it."""
    prefix, suffix = b'{"content": "', b'"}'
    body = prefix + b"x" * (MIB - len(prefix) - len(suffix)) + suffix
    assert len(body) == MIB

    assert_invalid(send(client, "POST", "/messages", body), "body", "content")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_every_body_route_refuses_more_than_one_mebibyte(client, existing, route, chunked):
    method, path = route
    body = b"[" + b" " * MIB + b"]"

    response = client.request(
        method,
        url(path, existing),
        content=chunks(body) if chunked else body,
        headers={"content-type": "application/json"},
    )

    assert_too_large(response)


def test_too_large_put_changes_nothing(client, existing):
    before = client.get(f"/agents/{existing['agent']}").json()
    body = json.dumps({"agent_name": "huge", "port": 1}).encode()
    body = body[:-1] + b" " * MIB + b"}"

    assert_too_large(send(client, "PUT", f"/agents/{existing['agent']}", body))
    assert client.get(f"/agents/{existing['agent']}").json() == before


# NUL characters ----------------------------------------------------------------


@pytest.mark.parametrize("nul", ["\x00", "\x00tail", "head\x00tail"])
def test_nul_in_an_agent_name_is_a_4xx_and_stores_nothing(user_client, db, nul):
    marker = f"nul-{uuid.uuid4()}"

    response = user_client.post("/agents", json={"agent_name": marker + nul})

    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["detail"], list | str)
    assert count(db, "agents WHERE agent_name LIKE %s", marker + "%") == 0


@pytest.mark.parametrize("field", ["content", "message_type", "status"])
def test_nul_in_a_message_string_is_a_4xx_and_stores_nothing(user_client, existing, db, field):
    marker = f"nul {uuid.uuid4()}"
    body = {"content": marker, field: f"{marker}\x00tail", "recipient_ids": [existing["agent"]]}
    recipients_before = count(db, "message_recipients WHERE recipient_id = %s", existing["agent"])

    response = user_client.post("/messages", json=body)

    assert 400 <= response.status_code < 500, response.text
    assert count(db, "messages WHERE content LIKE %s", marker + "%") == 0
    assert (
        count(db, "message_recipients WHERE recipient_id = %s", existing["agent"])
        == recipients_before
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/agents/{agent}", {"agent_name": "bad\x00"}),
        ("/messages/{message}", {"content": "bad\x00"}),
        ("/messages/{message}", {"status": "\x00"}),
        ("/agent_message_metadata/{metadata}", {"key": "k\x00"}),
        ("/agent_message_metadata/{metadata}", {"value": "v\x00"}),
        ("/conversations/{conversation}", {"title": "t\x00"}),
        ("/conversations/{conversation}", {"description": "d\x00"}),
    ],
)
def test_nul_in_a_put_is_a_4xx_and_changes_nothing(user_client, existing, db, path, body):
    rows = {
        "agent": "SELECT agent_name, updated_at FROM agents WHERE id = %s",
        "message": "SELECT content, status, updated_at FROM messages WHERE id = %s",
        "metadata": "SELECT key, value FROM agent_message_metadata WHERE id = %s",
        "conversation": "SELECT title, description, archived, metadata::text, updated_at"
        " FROM conversations WHERE id = %s",
    }

    def snapshot() -> dict[str, Item]:
        return {
            name: db.execute(query, (existing[name],)).fetchone() for name, query in rows.items()
        }

    before = snapshot()

    response = user_client.put(url(path, existing), json=body)

    assert 400 <= response.status_code < 500, response.text
    assert snapshot() == before


@pytest.mark.parametrize("field", ["key", "value"])
def test_nul_in_new_metadata_is_a_4xx_and_stores_nothing(user_client, existing, db, field):
    key = f"nul-{uuid.uuid4()}"
    body = {"message_id": existing["message"], "key": key, "value": "v"}
    body[field] += "\x00"

    response = user_client.post("/agent_message_metadata", json=body)

    assert 400 <= response.status_code < 500, response.text
    assert count(db, "agent_message_metadata WHERE key LIKE %s", key + "%") == 0


def test_raw_nul_byte_inside_a_json_string_is_422(client, db):
    """A control character must be escaped in JSON; unescaped it is not JSON."""
    marker = f"raw {uuid.uuid4()}"

    response = send(client, "POST", "/messages", f'{{"content": "{marker}\x00"}}'.encode())

    assert_invalid(response, "body")
    assert count(db, "messages WHERE content LIKE %s", marker + "%") == 0


@pytest.mark.parametrize("path", ["/agents/%00", "/messages/%00/metadata/%00", "/users/%00"])
def test_nul_in_the_path_is_422(client, path):
    assert_invalid(client.get(path), "path")


NUL_JSON = {"k\x00ey": "v\x00alue", "list": ["\x00"], "nested": {"\x00": {"deep": "a\x00b"}}}


def test_nul_in_msg_metadata_is_stored_and_reads_back_unchanged(
    user_client, agent, conversation, db
):
    """msg_metadata is returned unchanged (API.md) and its strings may hold \\u0000 (README,
    "JSON objects"): such an object is stored (201), and every later read returns it as sent."""
    sender, reader = agent(), agent()
    topic = conversation()
    marker = f"nul-metadata {uuid.uuid4()}"
    response = user_client.post(
        "/messages",
        json={
            "content": marker,
            "sender_id": sender["id"],
            "conversation_id": topic["id"],
            "recipient_ids": [reader["id"]],
            "msg_metadata": NUL_JSON,
        },
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["msg_metadata"] == NUL_JSON
    stored = db.execute("SELECT msg_metadata FROM messages WHERE id = %s", (created["id"],))
    assert stored.fetchone()["msg_metadata"] == NUL_JSON
    reads = [
        f"/messages/{created['id']}/metadata/{reader['id']}",
        f"/agents/{reader['id']}/messages",
        f"/agents/{sender['id']}/messages/unread",
        f"/agents/{reader['id']}/messages/unread",
        f"/conversations/{topic['id']}/details",
    ]
    for read in reads:
        answer = user_client.get(read)
        assert answer.status_code == 200, (read, answer.text)
    view = user_client.get(reads[0]).json()
    assert view["message"]["msg_metadata"] == NUL_JSON
    (item,) = user_client.get(reads[1]).json()
    assert item["msg_metadata"] == NUL_JSON
    (detailed,) = user_client.get(reads[4]).json()["messages"]
    assert detailed["msg_metadata"] == NUL_JSON


def test_nul_in_msg_metadata_put_is_stored_unchanged(user_client, message, db):
    created = message(msg_metadata={"before": True})

    response = user_client.put(f"/messages/{created['id']}", json={"msg_metadata": NUL_JSON})

    assert response.status_code == 200, response.text
    assert response.json()["msg_metadata"] == NUL_JSON
    stored = db.execute("SELECT msg_metadata FROM messages WHERE id = %s", (created["id"],))
    assert stored.fetchone()["msg_metadata"] == NUL_JSON


def test_nul_in_conversation_metadata_is_stored_and_reads_back_unchanged(user_client, db):
    response = user_client.post("/conversations", json={"metadata": NUL_JSON})

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["metadata"] == NUL_JSON
    stored = db.execute("SELECT metadata FROM conversations WHERE id = %s", (created["id"],))
    assert stored.fetchone()["metadata"] == NUL_JSON
    answer = user_client.get(f"/conversations/{created['id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"] == NUL_JSON


# Deeply nested JSON ------------------------------------------------------------


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize(
    ("path", "body"),
    [("/messages", '{{"content": "deep", "msg_metadata": {{"a": {}}}}}'),
     ("/conversations", '{{"metadata": {{"a": {}}}}}')],
    ids=["msg_metadata", "conversation-metadata"],
)  # fmt: skip
def test_deeply_nested_json_object_is_a_4xx_not_a_500(user_client, path, body, depth):
    """Valid JSON under 1 MiB, nested deeper than any decoder follows: invalid input, no crash."""
    body = body.format("[" * depth + "]" * depth)
    assert len(body) < MIB

    response = send(user_client, "POST", path, body)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


# Unknown routes and wrong methods ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/agents/{agent}/nope"),
        ("GET", "/messages/{message}/metadata"),
        ("GET", "/users"),
        ("GET", "/static/no-such-file.js"),
    ],
)
def test_unknown_route_is_404_with_json_detail(client, existing, method, path):
    response = client.request(method, url(path, existing))

    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/agents/{agent}"),
        ("POST", "/agents/{agent}"),
        ("DELETE", "/agents"),  # GET lists the directory, POST registers
        ("PUT", "/agents"),
        ("POST", "/console"),
        ("GET", "/messages"),
        ("GET", "/messages/{message}"),
        ("DELETE", "/messages/{message}"),
        ("GET", "/message_recipients"),
        ("GET", "/message_recipients/{message}/{agent}"),
        ("GET", "/agent_message_metadata/{metadata}"),
        ("DELETE", "/conversations/{conversation}"),
        ("POST", "/agents/{agent}/messages/mark-read"),
        ("POST", "/health"),
        ("GET", "/cli/echo"),
        ("PUT", "/users/1"),
    ],
)
def test_wrong_method_is_405_with_json_detail(client, existing, method, path):
    response = client.request(method, url(path, existing))

    assert response.status_code == 405, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "allow" in response.headers


@pytest.mark.parametrize(
    "spelling",
    [
        "{{{id}}}",
        "urn:uuid:{id}",
        "{hex}",
        "{hex_misplaced}",
    ],
)
def test_path_uuid_must_be_canonical(client, agent, spelling):
    """Python's UUID() takes braces, urn: prefixes and stray hyphens; the path does not."""
    agent_id = agent()["id"]
    hex_id = agent_id.replace("-", "")
    path_id = spelling.format(id=agent_id, hex=hex_id, hex_misplaced=f"{hex_id[:5]}-{hex_id[5:]}")
    response = client.get(f"/agents/{path_id}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "agent_id"]
    assert client.get(f"/agents/{agent_id.upper()}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/conversations", {"GET", "HEAD", "POST"}),
        ("PATCH", "/agents/00000000-0000-0000-0000-000000000000", {"DELETE", "GET", "HEAD", "PUT"}),
    ],
)
def test_405_allow_header_names_every_method_of_the_path(client, method, path, allowed):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert set(response.headers["allow"].split(", ")) == allowed
