"""422 items in FastAPI's words: pydantic v2's type, msg, ctx and input for each cause.

Every expected item below is what FastAPI with pydantic 2.14 answers for the
same input (checked against a FastAPI app with the same constraints, strict
types as API.md asks), so clients and tests written against the original read
mailroom's 422s unchanged. A cause with no pydantic counterpart keeps the
service's own sentence; the last tests pin those too.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
import pytest
from starlette.testclient import TestClient

from validation.errors import InvalidInput
from validation.responses import FieldError

UNKNOWN = "00000000-0000-4000-8000-000000000000"
Item = dict[str, Any]


def only_item(response: Any) -> Item:
    """The one item of a 422 body."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert list(body) == ["detail"], body
    (item,) = body["detail"]
    return item


def send(client: TestClient, method: str, path: str, body: Any) -> Any:
    """`body` as JSON, or as raw bytes when it is bytes."""
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return client.request(method, path, content=body, headers=headers)
    return client.request(method, path, json=body)


# Bodies ----------------------------------------------------------------------

LONG_NAME = "a" * 256
TOO_MANY = [UNKNOWN] * 1001

# (id, method, path, body, the 422 item FastAPI gives for it)
BODY_CASES: list[tuple[str, str, str, Any, Item]] = [
    (
        "missing",
        "POST",
        "/agents",
        {"port": 80},
        {
            "type": "missing",
            "loc": ["body", "agent_name"],
            "msg": "Field required",
            "input": {"port": 80},
        },
    ),
    (
        "string_too_short",
        "POST",
        "/agents",
        {"agent_name": ""},
        {
            "type": "string_too_short",
            "loc": ["body", "agent_name"],
            "msg": "String should have at least 1 character",
            "input": "",
            "ctx": {"min_length": 1},
        },
    ),
    (
        "string_too_long",
        "POST",
        "/agents",
        {"agent_name": LONG_NAME},
        {
            "type": "string_too_long",
            "loc": ["body", "agent_name"],
            "msg": "String should have at most 255 characters",
            "input": LONG_NAME,
            "ctx": {"max_length": 255},
        },
    ),
    (
        "string_too_long-label",
        "PUT",
        f"/messages/{UNKNOWN}",
        {"message_type": "t" * 51},
        {
            "type": "string_too_long",
            "loc": ["body", "message_type"],
            "msg": "String should have at most 50 characters",
            "input": "t" * 51,
            "ctx": {"max_length": 50},
        },
    ),
    (
        "string_too_short-metadata-key",
        "POST",
        "/agent_message_metadata",
        {"message_id": UNKNOWN, "key": ""},
        {
            "type": "string_too_short",
            "loc": ["body", "key"],
            "msg": "String should have at least 1 character",
            "input": "",
            "ctx": {"min_length": 1},
        },
    ),
    (
        "extra_forbidden",
        "POST",
        "/agents",
        {"agent_name": "x", "created_at": "2020-01-01T00:00:00Z"},
        {
            "type": "extra_forbidden",
            "loc": ["body", "created_at"],
            "msg": "Extra inputs are not permitted",
            "input": "2020-01-01T00:00:00Z",
        },
    ),
    (
        "greater_than_equal",
        "POST",
        "/agents",
        {"agent_name": "x", "port": 0},
        {
            "type": "greater_than_equal",
            "loc": ["body", "port"],
            "msg": "Input should be greater than or equal to 1",
            "input": 0,
            "ctx": {"ge": 1},
        },
    ),
    (
        "less_than_equal",
        "POST",
        "/agents",
        {"agent_name": "x", "port": 65536},
        {
            "type": "less_than_equal",
            "loc": ["body", "port"],
            "msg": "Input should be less than or equal to 65535",
            "input": 65536,
            "ctx": {"le": 65535},
        },
    ),
    (
        "greater_than_equal-importance",
        "POST",
        "/messages",
        {"content": "x", "importance": -1},
        {
            "type": "greater_than_equal",
            "loc": ["body", "importance"],
            "msg": "Input should be greater than or equal to 0",
            "input": -1,
            "ctx": {"ge": 0},
        },
    ),
    (
        "less_than_equal-importance",
        "PUT",
        f"/messages/{UNKNOWN}",
        {"importance": 11},
        {
            "type": "less_than_equal",
            "loc": ["body", "importance"],
            "msg": "Input should be less than or equal to 10",
            "input": 11,
            "ctx": {"le": 10},
        },
    ),
    (
        "int_type-text",
        "POST",
        "/agents",
        {"agent_name": "x", "port": "8080"},
        {
            "type": "int_type",
            "loc": ["body", "port"],
            "msg": "Input should be a valid integer",
            "input": "8080",
        },
    ),
    (
        "int_type-boolean",
        "PUT",
        f"/agents/{UNKNOWN}",
        {"port": True},
        {
            "type": "int_type",
            "loc": ["body", "port"],
            "msg": "Input should be a valid integer",
            "input": True,
        },
    ),
    (
        "int_from_float",
        "POST",
        "/agents",
        {"agent_name": "x", "port": 80.5},
        {
            "type": "int_from_float",
            "loc": ["body", "port"],
            "msg": "Input should be a valid integer, got a number with a fractional part",
            "input": 80.5,
        },
    ),
    (
        "string_type",
        "POST",
        "/messages",
        {"content": 5},
        {
            "type": "string_type",
            "loc": ["body", "content"],
            "msg": "Input should be a valid string",
            "input": 5,
        },
    ),
    (
        "string_type-null",
        "PUT",
        f"/agents/{UNKNOWN}",
        {"agent_name": None},
        {
            "type": "string_type",
            "loc": ["body", "agent_name"],
            "msg": "Input should be a valid string",
            "input": None,
        },
    ),
    (
        "bool_type",
        "POST",
        "/conversations",
        {"archived": 1},
        {
            "type": "bool_type",
            "loc": ["body", "archived"],
            "msg": "Input should be a valid boolean",
            "input": 1,
        },
    ),
    (
        "bool_type-text",
        "PUT",
        f"/message_recipients/{UNKNOWN}/{UNKNOWN}",
        {"is_read": "true"},
        {
            "type": "bool_type",
            "loc": ["body", "is_read"],
            "msg": "Input should be a valid boolean",
            "input": "true",
        },
    ),
    (
        "uuid_parsing",
        "POST",
        "/messages",
        {"content": "x", "sender_id": "nope"},
        {
            "type": "uuid_parsing",
            "loc": ["body", "sender_id"],
            "msg": "Input should be a valid UUID, invalid character: found `n` at 0",
            "input": "nope",
            "ctx": {"error": "invalid character: found `n` at 0"},
        },
    ),
    (
        "uuid_parsing-length",
        "POST",
        "/message_recipients",
        {"message_id": "0000", "recipient_id": UNKNOWN},
        {
            "type": "uuid_parsing",
            "loc": ["body", "message_id"],
            "msg": "Input should be a valid UUID, invalid length: found 4",
            "input": "0000",
            "ctx": {"error": "invalid length: found 4"},
        },
    ),
    (
        "uuid_parsing-in-a-list",
        "POST",
        "/messages",
        {"content": "x", "recipient_ids": [UNKNOWN, UNKNOWN[:-1] + "g"]},
        {
            "type": "uuid_parsing",
            "loc": ["body", "recipient_ids", 1],
            "msg": "Input should be a valid UUID, invalid character: found `g` at 35",
            "input": UNKNOWN[:-1] + "g",
            "ctx": {"error": "invalid character: found `g` at 35"},
        },
    ),
    (
        "uuid_type",
        "POST",
        "/messages",
        {"content": "x", "conversation_id": 5},
        {
            "type": "uuid_type",
            "loc": ["body", "conversation_id"],
            "msg": "UUID input should be a string, bytes or UUID object",
            "input": 5,
        },
    ),
    (
        "list_type",
        "POST",
        "/messages",
        {"content": "x", "recipient_ids": UNKNOWN},
        {
            "type": "list_type",
            "loc": ["body", "recipient_ids"],
            "msg": "Input should be a valid list",
            "input": UNKNOWN,
        },
    ),
    (
        "too_long",
        "POST",
        "/messages",
        {"content": "x", "recipient_ids": TOO_MANY},
        {
            "type": "too_long",
            "loc": ["body", "recipient_ids"],
            "msg": "List should have at most 1000 items after validation, not 1001",
            "input": TOO_MANY,
            "ctx": {"field_type": "List", "max_length": 1000, "actual_length": 1001},
        },
    ),
    (
        "dict_type",
        "POST",
        "/messages",
        {"content": "x", "msg_metadata": [1]},
        {
            "type": "dict_type",
            "loc": ["body", "msg_metadata"],
            "msg": "Input should be a valid dictionary",
            "input": [1],
        },
    ),
    (
        "dict_type-conversation",
        "PUT",
        f"/conversations/{UNKNOWN}",
        {"metadata": "x"},
        {
            "type": "dict_type",
            "loc": ["body", "metadata"],
            "msg": "Input should be a valid dictionary",
            "input": "x",
        },
    ),
    (
        "model_attributes_type-array",
        "POST",
        "/agents",
        [{"agent_name": "x"}],
        {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": [{"agent_name": "x"}],
        },
    ),
    (
        "model_attributes_type-null",
        "POST",
        "/conversations",
        b"null",
        {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": None,
        },
    ),
    (
        "missing-empty-body",
        "POST",
        "/messages",
        b"",
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None},
    ),
    (
        "json_invalid",
        "POST",
        "/agents",
        b"agent_name=x",
        {
            "type": "json_invalid",
            "loc": ["body", 0],
            "msg": "JSON decode error",
            "ctx": {"error": "Expecting value"},
        },
    ),
    (
        "json_invalid-delimiter",
        "POST",
        "/agents",
        b'{"agent_name" "x"}',
        {
            "type": "json_invalid",
            "loc": ["body", 14],
            "msg": "JSON decode error",
            "ctx": {"error": "Expecting ':' delimiter"},
        },
    ),
    (
        "json_invalid-trailing",
        "POST",
        "/agents",
        b'{"agent_name": "x"} {}',
        {
            "type": "json_invalid",
            "loc": ["body", 20],
            "msg": "JSON decode error",
            "ctx": {"error": "Extra data"},
        },
    ),
    (
        "json_invalid-truncated",
        "POST",
        "/agents",
        b'{"agent_name": ',
        {
            "type": "json_invalid",
            "loc": ["body", 15],
            "msg": "JSON decode error",
            "ctx": {"error": "Expecting value"},
        },
    ),
    (
        "datetime_parsing",
        "PUT",
        f"/agents/{UNKNOWN}/messages/mark-read",
        {"read_up_to_date": "yesterday"},
        {
            "type": "datetime_parsing",
            "loc": ["body", "read_up_to_date"],
            "msg": (
                "Input should be a valid datetime, expected RFC 3339 such as 2026-01-31T12:00:00Z"
            ),
            "input": "yesterday",
            "ctx": {"error": "expected RFC 3339 such as 2026-01-31T12:00:00Z"},
        },
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [case[1:] for case in BODY_CASES],
    ids=[case[0] for case in BODY_CASES],
)
def test_a_body_error_is_the_item_fastapi_gives(
    client: TestClient, method: str, path: str, body: Any, expected: Item
) -> None:
    assert only_item(send(client, method, path, body)) == expected


def test_items_keep_fastapis_key_order(client: TestClient) -> None:
    """type, loc, msg, input, ctx: the order FastAPI writes them in."""
    response = client.post("/agents", json={"agent_name": ""})
    assert response.status_code == 422, response.text
    assert list(only_item(response)) == ["type", "loc", "msg", "input", "ctx"]


def test_the_422_schema_documents_input_and_ctx_as_optional(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    item = document["components"]["schemas"]["FieldError"]
    assert {"type", "loc", "msg", "input", "ctx"} <= set(item["properties"])
    assert sorted(item["required"]) == ["loc", "msg", "type"]
    assert item["properties"]["ctx"]["type"] == "object"


# Path and query parameters ---------------------------------------------------


@pytest.fixture(scope="module")
def agent_id(client: TestClient) -> str:
    response = client.post("/agents", json={"agent_name": "fastapi-errors"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_malformed_uuid_in_the_path_is_uuid_parsing(client: TestClient) -> None:
    assert only_item(client.get("/agents/not-a-uuid")) == {
        "type": "uuid_parsing",
        "loc": ["path", "agent_id"],
        "msg": "Input should be a valid UUID, invalid character: found `n` at 0",
        "input": "not-a-uuid",
        "ctx": {"error": "invalid character: found `n` at 0"},
    }


def test_a_uuid_with_a_short_group_in_the_path_says_which_group(client: TestClient) -> None:
    short = "00000000-0000-4000-8000-00000000000"
    item = only_item(client.get(f"/conversations/{short}"))
    assert item["type"] == "uuid_parsing"
    assert item["ctx"] == {"error": "invalid group length in group 4: expected 12, found 11"}
    assert item["msg"] == f"Input should be a valid UUID, {item['ctx']['error']}"


def test_a_uuid_without_hyphens_in_the_path_asks_for_the_canonical_form(
    client: TestClient,
) -> None:
    bare = UNKNOWN.replace("-", "")
    assert only_item(client.get(f"/agents/{bare}")) == {
        "type": "uuid_parsing",
        "loc": ["path", "agent_id"],
        "msg": "Input should be a valid UUID, expected the hyphenated 8-4-4-4-12 form",
        "input": bare,
        "ctx": {"error": "expected the hyphenated 8-4-4-4-12 form"},
    }


def test_a_non_integer_in_the_path_is_int_parsing(client: TestClient) -> None:
    assert only_item(client.get("/users/one")) == {
        "type": "int_parsing",
        "loc": ["path", "user_id"],
        "msg": "Input should be a valid integer, unable to parse string as an integer",
        "input": "one",
    }


# (id, path under the agent, query string, the 422 item FastAPI gives for a Query(...))
QUERY_CASES: list[tuple[str, str, str, Item]] = [
    (
        "int_parsing",
        "/messages",
        "limit=many",
        {
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "many",
        },
    ),
    (
        "int_parsing-fraction",
        "/messages/unread",
        "limit=1.5",
        {
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "1.5",
        },
    ),
    (
        "greater_than_equal",
        "/messages",
        "limit=0",
        {
            "type": "greater_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        },
    ),
    (
        "less_than_equal",
        "/messages/unread",
        "limit=1001",
        {
            "type": "less_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be less than or equal to 1000",
            "input": "1001",
            "ctx": {"le": 1000},
        },
    ),
    (
        "less_than_equal-huge",
        "/messages",
        "limit=99999999999999999999999",
        {
            "type": "less_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be less than or equal to 1000",
            "input": "99999999999999999999999",
            "ctx": {"le": 1000},
        },
    ),
    (
        "greater_than_equal-wait",
        "/messages/unread",
        "wait=-1",
        {
            "type": "greater_than_equal",
            "loc": ["query", "wait"],
            "msg": "Input should be greater than or equal to 0",
            "input": "-1",
            "ctx": {"ge": 0},
        },
    ),
    (
        "less_than_equal-wait",
        "/messages/unread",
        "wait=61",
        {
            "type": "less_than_equal",
            "loc": ["query", "wait"],
            "msg": "Input should be less than or equal to 60",
            "input": "61",
            "ctx": {"le": 60},
        },
    ),
]


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [case[1:] for case in QUERY_CASES],
    ids=[case[0] for case in QUERY_CASES],
)
def test_an_integer_query_parameter_error_is_the_item_fastapi_gives(
    client: TestClient, agent_id: str, path: str, query: str, expected: Item
) -> None:
    response = client.get(f"/agents/{agent_id}{path}?{query}")
    assert only_item(response) == expected


@pytest.mark.parametrize(
    ("path", "name", "choices"),
    [
        ("/messages", "direction", {"all", "sent", "received"}),
        ("/messages", "order", {"asc", "desc"}),
        ("/messages/unread", "order", {"asc", "desc"}),
    ],
)
def test_a_choice_outside_the_list_is_literal_error_naming_the_choices(
    client: TestClient, agent_id: str, path: str, name: str, choices: set[str]
) -> None:
    item = only_item(client.get(f"/agents/{agent_id}{path}", params={name: "sideways"}))
    expected = item["ctx"]["expected"]
    assert item == {
        "type": "literal_error",
        "loc": ["query", name],
        "msg": f"Input should be {expected}",
        "input": "sideways",
        "ctx": {"expected": expected},
    }
    # pydantic's list: "'a', 'b' or 'c'", each choice once.
    *first, last = expected.split(" or ")
    assert len(first) == 1, expected
    named = [*first[0].split(", "), last]
    assert sorted(named) == sorted(f"'{choice}'" for choice in choices)


def test_a_boolean_query_parameter_that_is_not_true_or_false_is_bool_parsing(
    client: TestClient,
) -> None:
    assert only_item(client.get("/conversations", params={"archived": "maybe"})) == {
        "type": "bool_parsing",
        "loc": ["query", "archived"],
        "msg": "Input should be a valid boolean, unable to interpret input",
        "input": "maybe",
    }


def test_a_cursor_the_service_did_not_issue_keeps_its_own_sentence(
    client: TestClient, agent_id: str
) -> None:
    """An opaque cursor has no pydantic counterpart: the service's words stay."""
    response = client.get(f"/agents/{agent_id}/messages", params={"cursor": "forged"})
    assert only_item(response) == {
        "type": "value_error",
        "loc": ["query", "cursor"],
        "msg": "Not a cursor this service issued",
    }


class PageQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A query Struct as the query-parameter work will declare one."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    order: Literal["desc", "asc"] = "desc"
    archived: bool | None = None


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/agents/{agent}/messages/unread", {"limit": "many"}),
        ("/agents/{agent}/messages/unread", {"limit": "0"}),
        ("/agents/{agent}/messages/unread", {"limit": "1001"}),
        ("/agents/{agent}/messages/unread", {"order": "sideways"}),
        ("/conversations", {"archived": "maybe"}),
    ],
)
def test_a_query_struct_decoded_by_msgspec_gives_the_same_item_as_the_api(
    client: TestClient, agent_id: str, path: str, params: dict[str, str]
) -> None:
    """from_msgspec(where="query") words msgspec's errors on a str mapping as the API does."""
    from_api = only_item(client.get(path.format(agent=agent_id), params=params))
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert(params, PageQuery, strict=False)
    translated = InvalidInput.from_msgspec(raised.value, "query", params, PageQuery)
    (error,) = translated.errors
    assert json.loads(msgspec.json.encode(error)) == from_api


def test_from_msgspec_without_the_input_still_gives_pydantics_words() -> None:
    """The input is optional: without it the item has no `input`, the rest is the same."""
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert({"limit": "0"}, PageQuery, strict=False)
    (error,) = InvalidInput.from_msgspec(raised.value, where="query").errors
    assert error == FieldError(
        type="greater_than_equal",
        loc=["query", "limit"],
        msg="Input should be greater than or equal to 1",
        ctx={"ge": 1},
    )


# No pydantic counterpart: the service's own words ----------------------------


def test_a_number_too_large_for_any_integer_keeps_msgspecs_sentence(client: TestClient) -> None:
    response = send(client, "POST", "/agents", b'{"agent_name": "x", "port": 1e400}')
    assert only_item(response) == {
        "type": "value_error",
        "loc": ["body", "port"],
        "msg": "Number out of range",
    }


def test_an_invalid_ip_address_keeps_its_sentence(client: TestClient) -> None:
    response = client.post("/agents", json={"agent_name": "x", "ip_address": "localhost"})
    assert only_item(response) == {
        "type": "value_error",
        "loc": ["body", "ip_address"],
        "msg": "Not a valid IP address: 'localhost'",
    }
