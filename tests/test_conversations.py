"""Conversations: create, list (filtered, paged), read, partial update, and the details document.

Other tests share the database, so list tests look at the conversations they
create (the newest) and compare pages with a listing taken in the same test.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from tests.helpers import (
    MESSAGE_FIELDS,
    SMALL_PAGE_BYTES,
    UNKNOWN,
    Db,
    Item,
    assert_invalid,
    assert_not_found,
    cursor_of,
    ids,
    instant,
    next_url,
    query_of,
    walk,
)

CONVERSATION_FIELDS = {
    "id",
    "title",
    "description",
    "archived",
    "metadata",
    "created_at",
    "updated_at",
}
DETAIL_FIELDS = {"messages", "unique_agents", "total_messages", "unread_count"}
METADATA = {
    "owner": "planner",
    "tags": ["build", "nightly"],
    "limits": {"retries": 3, "ratio": 0.25, "strict": True, "note": None},
    "unicode": "Grüße, 世界",
    "empty": {},
}


def stored(db: Db, conversation_id: str) -> dict[str, Any]:
    """The conversation's row as the database holds it."""
    row = db.execute(
        "SELECT title, description, archived, metadata FROM conversations WHERE id = %s",
        (conversation_id,),
    ).fetchone()
    assert row is not None
    return row


def listing(client: TestClient, **params: Any) -> list[Item]:
    response = client.get("/conversations", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()


def put(client: TestClient, conversation_id: str, body: Any) -> Any:
    return client.put(f"/conversations/{conversation_id}", json=body)


# POST /conversations ---------------------------------------------------------


def test_create_with_no_fields_uses_defaults(client, db):
    response = client.post("/conversations", json={})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CONVERSATION_FIELDS
    assert uuid.UUID(body["id"])
    assert (body["title"], body["description"], body["archived"], body["metadata"]) == (
        None,
        None,
        False,
        {},
    )
    assert instant(body["created_at"]) == instant(body["updated_at"])
    assert stored(db, body["id"]) == {
        "title": None,
        "description": None,
        "archived": False,
        "metadata": {},
    }


def test_create_returns_and_stores_every_field(client, db):
    sent = {"title": "nightly build", "description": "why", "archived": True, "metadata": METADATA}

    response = client.post("/conversations", json=sent)

    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in sent} == sent
    assert stored(db, body["id"]) == sent


def test_create_metadata_comes_back_unchanged_on_read(client, conversation):
    created = conversation(metadata=METADATA)

    assert created["metadata"] == METADATA
    assert client.get(f"/conversations/{created['id']}").json()["metadata"] == METADATA


def test_create_title_of_255_characters_is_accepted(conversation):
    title = "é" * 255

    assert conversation(title=title)["title"] == title


def test_create_explicit_nulls_for_optional_fields(conversation):
    created = conversation(title=None, description=None)

    assert (created["title"], created["description"]) == (None, None)


def test_create_title_over_255_is_422(client):
    assert_invalid(client.post("/conversations", json={"title": "x" * 256}), "body", "title")


@pytest.mark.parametrize("field", ["id", "created_at", "updated_at", "topic"])
def test_create_unknown_field_is_422(client, field):
    response = client.post("/conversations", json={"title": "t", field: "x"})

    assert_invalid(response, "body", field)


@pytest.mark.parametrize("metadata", [[], ["a"], "{}", 1, True, None])
def test_create_metadata_not_an_object_is_422(client, metadata):
    response = client.post("/conversations", json={"metadata": metadata})

    assert_invalid(response, "body", "metadata")


@pytest.mark.parametrize("archived", ["true", 0, 1, None])
def test_create_archived_not_a_boolean_is_422(client, archived):
    response = client.post("/conversations", json={"archived": archived})

    assert_invalid(response, "body", "archived")


@pytest.mark.parametrize("content", [b"not json", b"[]", b'"title"', b"null", b""])
def test_create_body_not_a_json_object_is_422(client, content):
    response = client.post(
        "/conversations", content=content, headers={"content-type": "application/json"}
    )

    assert_invalid(response)


# GET /conversations ----------------------------------------------------------


def test_list_is_newest_first(client, conversation):
    mine = [conversation(title=f"c{i}")["id"] for i in range(3)]

    items = listing(client)

    assert [i for i in ids(items) if i in mine] == mine[::-1]
    created = [instant(item["created_at"]) for item in items]
    assert created == sorted(created, reverse=True)


def test_list_items_are_whole_conversations(client, conversation):
    created = conversation(title="whole", description="d", metadata={"a": [1]})

    (item,) = [i for i in listing(client) if i["id"] == created["id"]]

    assert item == created


@pytest.mark.parametrize("archived", [True, False])
def test_list_filters_by_archived(client, conversation, archived):
    wanted = conversation(archived=archived)
    other = conversation(archived=not archived)

    items = listing(client, archived=str(archived).lower())

    assert {i["archived"] for i in items} == {archived}
    assert wanted["id"] in ids(items)
    assert other["id"] not in ids(items)


def test_list_without_filter_has_both(client, conversation):
    a, b = conversation(archived=True), conversation(archived=False)

    found = ids(listing(client))

    assert a["id"] in found and b["id"] in found


@pytest.mark.parametrize("archived", ["yes", "1", "True", "FALSE", ""])
def test_list_archived_not_true_or_false_is_422(client, archived):
    assert_invalid(client.get("/conversations", params={"archived": archived}), "query", "archived")


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "2.0", ""])
def test_list_limit_out_of_range_is_422(client, limit):
    assert_invalid(client.get("/conversations", params={"limit": limit}), "query", "limit")


def test_list_default_limit_is_100(client, conversation):
    for _ in range(101):
        conversation()

    response = client.get("/conversations")

    assert response.status_code == 200
    assert len(response.json()) == 100
    assert next_url(response) is not None


def test_list_pages_follow_next(client, conversation):
    mine = [conversation()["id"] for _ in range(5)]

    first = client.get("/conversations", params={"limit": 2})
    assert ids(first.json()) == mine[:-3:-1]
    second = client.get(next_url(first))
    assert ids(second.json()) == mine[-3:-5:-1]
    assert query_of(next_url(second))["limit"] == ["2"]


def test_walking_the_whole_list_visits_each_once_in_order(client, conversation):
    for _ in range(3):
        conversation()
    whole = [item for page in walk(client, "/conversations?limit=1000") for item in page]

    pages = walk(client, "/conversations?limit=7")

    assert [item for page in pages for item in page] == whole
    assert all(len(page) == 7 for page in pages[:-1])
    assert len(ids(whole)) == len(set(ids(whole)))


def test_walking_while_conversations_are_created(client, conversation):
    """New conversations land in front of the walk: no duplicates, no skips of older ones."""
    for _ in range(6):
        conversation()
    before = listing(client)

    seen: list[Item] = []
    url: str | None = "/conversations?limit=2"
    for _ in range(4):
        response = client.get(url)
        seen.extend(response.json())
        url = next_url(response)
        conversation()

    assert seen == before[:8]


def test_walking_filtered_list_keeps_the_filter(client, conversation):
    for archived in (True, False, True, True, False):
        conversation(archived=archived)
    whole = listing(client, archived="true")

    pages = walk(client, "/conversations?archived=true&limit=2")

    assert [item for page in pages for item in page] == whole


@pytest.mark.parametrize(
    "tamper",
    [lambda c: c[:-3], lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:], lambda c: "x"],
    ids=["truncated", "changed", "made up"],
)
def test_list_cursor_not_issued_is_422(client, conversation, tamper):
    conversation()
    conversation()
    url = next_url(client.get("/conversations", params={"limit": 1}))
    assert url is not None

    response = client.get("/conversations", params={"cursor": tamper(cursor_of(url))})

    assert_invalid(response, "query", "cursor")


def test_mailbox_cursor_is_not_a_conversation_cursor(client, agent, message):
    a = agent()
    for _ in range(2):
        message(sender_id=a["id"])
    url = next_url(client.get(f"/agents/{a['id']}/messages", params={"limit": 1}))
    assert url is not None

    response = client.get("/conversations", params={"cursor": cursor_of(url)})

    assert_invalid(response, "query", "cursor")


# GET /conversations/{id} -----------------------------------------------------


def test_get_returns_the_created_conversation(client, conversation):
    created = conversation(title="t", description="d", archived=True, metadata={"k": "v"})

    response = client.get(f"/conversations/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_get_unknown_is_404(client):
    assert_not_found(client.get(f"/conversations/{UNKNOWN}"), "Conversation not found")


@pytest.mark.parametrize("conversation_id", ["nope", "42", f"{UNKNOWN}0"])
def test_get_malformed_id_is_422(client, conversation_id):
    response = client.get(f"/conversations/{conversation_id}")

    assert_invalid(response, "path", "conversation_id")


# PUT /conversations/{id} -----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"title": "renamed"},
        {"description": "now described"},
        {"archived": True},
        {"metadata": {"new": 1}},
        {"title": "both", "archived": True},
    ],
)
def test_put_changes_only_the_fields_sent(client, conversation, db, change):
    created = conversation(title="t", description="d", metadata={"old": True})

    response = put(client, created["id"], change)

    assert response.status_code == 200, response.text
    expected = {**created, **change}
    body = response.json()
    assert {k: v for k, v in body.items() if k != "updated_at"} == {
        k: v for k, v in expected.items() if k != "updated_at"
    }
    assert stored(db, created["id"]) == {
        k: expected[k] for k in ("title", "description", "archived", "metadata")
    }
    assert client.get(f"/conversations/{created['id']}").json() == body


def test_put_moves_updated_at_and_keeps_created_at(client, conversation):
    created = conversation()

    body = put(client, created["id"], {"title": "later"}).json()

    assert body["created_at"] == created["created_at"]
    assert instant(body["updated_at"]) > instant(created["updated_at"])


def test_put_metadata_replaces_it_wholesale(client, conversation, db):
    created = conversation(metadata={"a": 1, "b": {"c": 2}})

    body = put(client, created["id"], {"metadata": {"b": {"d": 3}}}).json()

    assert body["metadata"] == {"b": {"d": 3}}
    assert stored(db, created["id"])["metadata"] == {"b": {"d": 3}}


def test_put_empty_metadata_clears_it(client, conversation, db):
    created = conversation(metadata={"a": 1})

    response = put(client, created["id"], {"metadata": {}})

    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {}
    assert stored(db, created["id"])["metadata"] == {}


def test_put_null_clears_title_and_description(client, conversation, db):
    created = conversation(title="t", description="d")

    body = put(client, created["id"], {"title": None, "description": None}).json()

    assert (body["title"], body["description"]) == (None, None)
    assert stored(db, created["id"])["title"] is None


@pytest.mark.parametrize("field", ["archived", "metadata"])
def test_put_null_for_required_field_is_422(client, conversation, db, field):
    created = conversation(title="t", archived=True, metadata={"keep": 1})

    assert_invalid(put(client, created["id"], {field: None}), "body", field)
    assert stored(db, created["id"]) == {
        "title": "t",
        "description": None,
        "archived": True,
        "metadata": {"keep": 1},
    }


def test_put_empty_body_is_422(client, conversation, db):
    created = conversation(title="t")

    assert_invalid(put(client, created["id"], {}))
    assert stored(db, created["id"])["title"] == "t"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x" * 256}, "title"),
        ({"metadata": []}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"archived": "false"}, "archived"),
        ({"archived": 0}, "archived"),
        ({"id": UNKNOWN}, "id"),
        ({"created_at": "2030-01-01T00:00:00Z"}, "created_at"),
        ({"title": "t2", "colour": "red"}, "colour"),
    ],
)
def test_put_invalid_body_is_422(client, conversation, db, body, field):
    created = conversation(title="t")

    assert_invalid(put(client, created["id"], body), "body", field)
    assert stored(db, created["id"])["title"] == "t"


def test_put_body_not_an_object_is_422(client, conversation):
    assert_invalid(put(client, conversation()["id"], ["title"]))


def test_put_unknown_is_404(client):
    assert_not_found(put(client, UNKNOWN, {"title": "t"}), "Conversation not found")


def test_put_unknown_with_invalid_body_is_422(client):
    """When the id is unknown and the body invalid, 422 wins."""
    assert_invalid(put(client, UNKNOWN, {"archived": None}))
    assert_invalid(put(client, UNKNOWN, {}))


def test_put_malformed_id_is_422(client):
    assert_invalid(put(client, "nope", {"title": "t"}), "path", "conversation_id")


# GET /conversations/{id}/details ---------------------------------------------


@pytest.fixture
def scene(client, agent, message, conversation) -> dict[str, Any]:
    """A conversation of three messages between a, b and d; e talks to a elsewhere.

    m1: a -> b, d (b has read it, and attached a metadata item)
    m2: b -> a, a reply to m1 without a conversation_id (joins m1's conversation)
    m3: a -> nobody
    """
    a, b, d, e = agent(), agent(), agent(ip_address="10.0.0.7", port=8080), agent()
    topic = conversation(title="scene", metadata={"k": 1})
    m1 = message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=[b["id"], d["id"]])
    m2 = message(sender_id=b["id"], parent_message_id=m1["id"], recipient_ids=[a["id"]])
    m3 = message(sender_id=a["id"], conversation_id=topic["id"], importance=2)
    message(sender_id=e["id"], recipient_ids=[a["id"]], conversation_id=conversation()["id"])
    message(sender_id=e["id"], recipient_ids=[a["id"]])
    read = client.put(f"/message_recipients/{m1['id']}/{b['id']}", json={"is_read": True})
    assert read.status_code == 200, read.text
    item = client.post(
        "/agent_message_metadata",
        json={"message_id": m1["id"], "key": "priority", "value": "high", "agent_id": b["id"]},
    )
    assert item.status_code == 201, item.text
    response = client.get(f"/conversations/{topic['id']}/details")
    assert response.status_code == 200, response.text
    return {
        "agents": {"a": a, "b": b, "d": d, "e": e},
        "conversation": topic,
        "messages": [m1, m2, m3],
        "read_at": read.json()["read_at"],
        "metadata_item": item.json(),
        "details": response.json(),
    }


def test_details_has_the_conversations_fields(client, scene):
    details = scene["details"]
    conversation = scene["conversation"]

    assert set(details) == CONVERSATION_FIELDS | DETAIL_FIELDS
    current = client.get(f"/conversations/{conversation['id']}").json()
    assert {f: details[f] for f in CONVERSATION_FIELDS} == current


def test_details_messages_are_oldest_first_and_whole(scene):
    messages = scene["details"]["messages"]

    assert ids(messages) == ids(scene["messages"])
    for got, posted in zip(messages, scene["messages"], strict=True):
        assert set(got) == MESSAGE_FIELDS | {"recipients", "metadata_items"}
        assert {f: got[f] for f in MESSAGE_FIELDS} == posted
    assert messages[1]["conversation_id"] == scene["conversation"]["id"]


def test_details_messages_carry_their_recipients(scene):
    a, b, d = (scene["agents"][k] for k in "abd")
    m1, m2, m3 = scene["details"]["messages"]

    assert sorted(m1["recipients"], key=lambda r: r["recipient_id"]) == sorted(
        [
            {"recipient_id": b["id"], "is_read": True, "read_at": scene["read_at"]},
            {"recipient_id": d["id"], "is_read": False, "read_at": None},
        ],
        key=lambda r: r["recipient_id"],
    )
    assert m2["recipients"] == [{"recipient_id": a["id"], "is_read": False, "read_at": None}]
    assert m3["recipients"] == []


def test_details_messages_carry_their_metadata_items(scene):
    m1, m2, m3 = scene["details"]["messages"]

    assert m1["metadata_items"] == [scene["metadata_item"]]
    assert m2["metadata_items"] == m3["metadata_items"] == []


def test_details_unique_agents_are_every_sender_and_recipient_once(client, scene):
    unique = scene["details"]["unique_agents"]
    members = [scene["agents"][k] for k in "abd"]

    assert len(ids(unique)) == len(set(ids(unique)))
    assert sorted(ids(unique)) == sorted(ids(members))
    for item in unique:
        # Others in a conversation see an agent without its webhook.
        own_view = client.get(f"/agents/{item['id']}").json()
        assert item == {k: v for k, v in own_view.items() if not k.startswith("webhook_")}


def test_details_counts(scene):
    details = scene["details"]

    assert details["total_messages"] == 3
    assert details["unread_count"] == 2  # d's copy of m1 and a's copy of m2


def test_details_unread_count_counts_recipient_rows(client, agent, message, conversation):
    a, b, c, d = agent(), agent(), agent(), agent()
    topic = conversation()
    m = message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=ids([b, c, d]))
    url = f"/conversations/{topic['id']}/details"

    before = client.get(url).json()
    client.put(f"/message_recipients/{m['id']}/{c['id']}", json={"is_read": True})
    after = client.get(url).json()

    assert (before["total_messages"], before["unread_count"]) == (1, 3)
    assert (after["total_messages"], after["unread_count"]) == (1, 2)


def test_details_follow_mark_read(client, agent, message, conversation):
    a, b = agent(), agent()
    topic = conversation()
    m = message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=[b["id"]])
    client.put(f"/agents/{b['id']}/messages/mark-read", json={"read_up_to_date": m["sent_at"]})

    details = client.get(f"/conversations/{topic['id']}/details").json()

    (recipient,) = details["messages"][0]["recipients"]
    assert (recipient["is_read"], details["unread_count"]) == (True, 0)
    assert recipient["read_at"] is not None


def test_details_self_sent_and_senderless_messages(client, agent, message, conversation):
    """An agent that sent to itself is listed once; a message with no sender adds no agent."""
    a, b = agent(), agent()
    topic = conversation()
    message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=[a["id"]])
    message(conversation_id=topic["id"], recipient_ids=[b["id"]])

    details = client.get(f"/conversations/{topic['id']}/details").json()

    assert sorted(ids(details["unique_agents"])) == sorted([a["id"], b["id"]])
    assert (details["total_messages"], details["unread_count"]) == (2, 2)


def test_details_of_an_empty_conversation(client, conversation):
    topic = conversation(title="quiet")

    response = client.get(f"/conversations/{topic['id']}/details")

    assert response.status_code == 200
    assert response.json() == {
        **topic,
        "messages": [],
        "unique_agents": [],
        "total_messages": 0,
        "unread_count": 0,
    }


def test_details_unknown_is_404(client):
    response = client.get(f"/conversations/{UNKNOWN}/details")

    assert_not_found(response, "Conversation not found")


def test_details_malformed_id_is_422(client):
    assert_invalid(client.get("/conversations/nope/details"), "path", "conversation_id")


def test_details_spell_awkward_values_as_the_other_routes_do(client, agent, message, conversation):
    """PostgreSQL builds the details' messages; they must read back as the messages did."""
    a, b = agent(), agent()
    topic = conversation()
    awkward = {
        "content": 'tab\t newline\n quote" backslash\\ \x01 \x1f \x7f é ✓ 𝄞 \u2028 </script>',
        "msg_metadata": {
            "float": 1e300,
            "small": 5e-324,
            "int": 9007199254740993,
            "negative": -0.0,
            "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
            "unicode key ✓": "\x00 inside json",
        },
        "message_type": "ünïcödé",
        "importance": 0,
    }
    sent = message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=[b["id"]],
                   **awkward)  # fmt: skip
    details = client.get(f"/conversations/{topic['id']}/details").json()
    (got,) = details["messages"]
    assert {field: got[field] for field in sent} == sent
    assert got["recipients"] == [{"recipient_id": b["id"], "is_read": False, "read_at": None}]
    (pulled,) = client.get(f"/agents/{b['id']}/messages/unread").json()
    assert {field: pulled[field] for field in sent} == sent


# Details in pages, and every page within the byte budget ------------------------------


def a_thread(agent, message, conversation, count: int, size: int = 10) -> tuple[dict, list]:
    """A conversation of `count` messages from a to b, each of `size` characters."""
    a, b = agent(), agent()
    topic = conversation()
    sent = [
        message(sender_id=a["id"], conversation_id=topic["id"], recipient_ids=[b["id"]],
                content=f"{n:04d}" + "x" * (size - 4))
        for n in range(count)
    ]  # fmt: skip
    return topic, sent


def test_details_within_the_bounds_answer_whole_without_a_link(
    client, agent, message, conversation
):
    topic, sent = a_thread(agent, message, conversation, 3)

    response = client.get(f"/conversations/{topic['id']}/details")

    assert response.status_code == 200 and "link" not in response.headers
    assert ids(response.json()["messages"]) == ids(sent)


def test_details_pages_follow_next_and_keep_the_whole_counts(client, agent, message, conversation):
    topic, sent = a_thread(agent, message, conversation, 5)
    url = f"/conversations/{topic['id']}/details?limit=2"

    first = client.get(url)
    pages = walk(client, url)

    assert [len(page["messages"]) for page in pages] == [2, 2, 1]
    assert [m["id"] for page in pages for m in page["messages"]] == ids(sent)
    assert query_of(next_url(first))["limit"] == ["2"]
    whole = client.get(f"/conversations/{topic['id']}/details").json()
    for page in pages:
        rest = {key: value for key, value in page.items() if key != "messages"}
        assert rest == {key: value for key, value in whole.items() if key != "messages"}
        assert (page["total_messages"], page["unread_count"]) == (5, 5)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x"])
def test_details_limit_out_of_range_is_422(client, conversation, limit):
    response = client.get(f"/conversations/{conversation()['id']}/details", params={"limit": limit})

    assert_invalid(response, "query", "limit")


def test_details_cursor_of_another_list_is_422(client, agent, message, conversation):
    topic, _ = a_thread(agent, message, conversation, 3)
    listed = client.get("/conversations", params={"limit": 1})
    mailbox_cursor = cursor_of(next_url(listed))

    response = client.get(
        f"/conversations/{topic['id']}/details", params={"cursor": mailbox_cursor}
    )

    assert_invalid(response, "query", "cursor")


def test_details_pages_stop_at_the_byte_budget(small_pages, agent, message, conversation):
    topic, sent = a_thread(agent, message, conversation, 7, size=8_000)
    url = f"/conversations/{topic['id']}/details"

    first = small_pages.get(url)
    pages = walk(small_pages, url)

    assert first.status_code == 200 and next_url(first) is not None
    assert [len(page["messages"]) for page in pages] == [2, 2, 2, 1]
    assert [m["id"] for page in pages for m in page["messages"]] == ids(sent)
    assert all(len(msgspec.json.encode(page["messages"])) <= SMALL_PAGE_BYTES for page in pages)


def test_details_message_larger_than_the_budget_comes_alone(
    small_pages, agent, message, conversation
):
    topic, sent = a_thread(agent, message, conversation, 3, size=30_000)

    pages = walk(small_pages, f"/conversations/{topic['id']}/details")

    assert [ids(page["messages"]) for page in pages] == [[m["id"]] for m in sent]


def test_conversation_lists_stop_at_the_byte_budget(small_pages, conversation):
    big = {"padding": "p" * 7_000}
    made = [conversation(title=f"big {n}", metadata=big) for n in range(5)]
    url = "/conversations?limit=5"

    pages = walk(small_pages, url)

    # Older conversations of other tests follow the five on the third page.
    assert [ids(page) for page in pages[:2]] == [ids(made)[:2:-1], ids(made)[2:0:-1]]
    assert pages[2][0]["id"] == made[0]["id"]
