"""Messages, their recipients and metadata: create, partial update, and the metadata view.

Other tests share the database, so every test registers its own agents and
checks stored rows by the ids (or unique contents) it created.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from starlette.testclient import TestClient

from service import create_app
from tests.helpers import (
    MESSAGE_FIELDS,
    UNKNOWN,
    UTC_TIMESTAMP,
    Db,
    Item,
    assert_invalid,
    assert_not_found,
    db_now,
    instant,
)
from tests.servers import Server

OPTIONAL_MESSAGE_FIELDS = [
    "sender_id",
    "parent_message_id",
    "conversation_id",
    "message_type",
    "importance",
    "status",
    "msg_metadata",
]
RECIPIENT_FIELDS = {"message_id", "recipient_id", "is_read", "read_at"}
METADATA_FIELDS = {"id", "message_id", "key", "value", "agent_id", "created_at"}
MSG_METADATA = {
    "task": "summarise",
    "tags": ["a", "b"],
    "limits": {"retries": 3, "ratio": 0.5, "strict": True, "note": None},
    "unicode": "Grüße, 世界",
    "empty": {},
}


def assert_conflict(response: httpx.Response) -> None:
    """A 409 whose detail is a sentence."""
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail


def without_webhook(agent: Item) -> Item:
    """An agent as others see it: its webhook is shown only to itself and the admin."""
    return {k: v for k, v in agent.items() if not k.startswith("webhook_")}


def unique_content() -> str:
    return f"content {uuid.uuid4()}"


def message_row(db: Db, message_id: str) -> Item:
    """The stored message, with ids as text and msg_metadata parsed."""
    row = db.execute(
        "SELECT sender_id::text, parent_message_id::text, conversation_id::text, content,"
        " message_type, importance, status, msg_metadata FROM messages WHERE id = %s",
        (message_id,),
    ).fetchone()
    assert row is not None
    return row


def messages_with_content(db: Db, content: str) -> int:
    return db.execute(
        "SELECT count(*) AS n FROM messages WHERE content = %s", (content,)
    ).fetchone()["n"]


def recipient_rows(db: Db, **where: str) -> list[Item]:
    """Stored recipient rows matching `message_id=` and/or `recipient_id=`."""
    clauses = " AND ".join(f"{column} = %({column})s" for column in where)
    return db.execute(
        "SELECT message_id::text, recipient_id::text, is_read, read_at"
        f" FROM message_recipients WHERE {clauses}",
        where,
    ).fetchall()


def metadata_rows(db: Db, message_id: str) -> list[Item]:
    return db.execute(
        "SELECT id::text, key, value, agent_id::text FROM agent_message_metadata"
        " WHERE message_id = %s ORDER BY created_at",
        (message_id,),
    ).fetchall()


@pytest.fixture
def recipient(client) -> Callable[..., Item]:
    """Add a recipient through the API: `recipient(message_id, recipient_id, is_read=...)`."""

    def make(message_id: str, recipient_id: str, **fields: Any) -> Item:
        response = client.post(
            "/message_recipients",
            json={"message_id": message_id, "recipient_id": recipient_id, **fields},
        )
        assert response.status_code == 201, response.text
        return response.json()

    return make


@pytest.fixture
def metadata(client) -> Callable[..., Item]:
    """Attach a metadata item through the API: `metadata(message_id, key=..., value=...)`."""

    def make(message_id: str, **fields: Any) -> Item:
        fields.setdefault("key", f"key-{uuid.uuid4()}")
        response = client.post("/agent_message_metadata", json={"message_id": message_id, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    return make


# POST /messages ------------------------------------------------------------


def test_create_returns_every_field(client, agent, conversation, message, db):
    sender = agent()
    topic = conversation(title="t")
    parent = message(sender_id=sender["id"], conversation_id=topic["id"])
    sent = {
        "content": "hello there",
        "sender_id": sender["id"],
        "parent_message_id": parent["id"],
        "conversation_id": topic["id"],
        "message_type": "task",
        "importance": 7,
        "status": "new",
        "msg_metadata": MSG_METADATA,
    }

    response = client.post("/messages", json=sent)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == MESSAGE_FIELDS
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert {field: body[field] for field in sent} == sent
    assert UTC_TIMESTAMP.match(body["sent_at"]), body["sent_at"]
    assert UTC_TIMESTAMP.match(body["updated_at"]), body["updated_at"]
    assert abs(instant(body["sent_at"]) - db_now(db)) < timedelta(minutes=1)
    assert message_row(db, body["id"]) == sent


def test_create_without_optional_fields_stores_nulls(client, db):
    response = client.post("/messages", json={"content": "just text"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert {field: body[field] for field in OPTIONAL_MESSAGE_FIELDS} == dict.fromkeys(
        OPTIONAL_MESSAGE_FIELDS
    )
    row = message_row(db, body["id"])
    assert row == {"content": "just text", **dict.fromkeys(OPTIONAL_MESSAGE_FIELDS)}


def test_create_with_explicit_nulls_stores_nulls(client, db):
    sent = {"content": "nulls", **dict.fromkeys(OPTIONAL_MESSAGE_FIELDS)}

    response = client.post("/messages", json=sent)

    assert response.status_code == 201, response.text
    assert {field: response.json()[field] for field in sent} == sent
    assert message_row(db, response.json()["id"]) == sent


def test_create_gives_each_message_a_new_id(message):
    assert message(content="same")["id"] != message(content="same")["id"]


@pytest.mark.parametrize(
    "msg_metadata",
    [{}, {"n": 12345678901234567890, "x": -0.125, "big": 1e300}, {"deep": [[[{"a": [None]}]]]}],
)
def test_create_msg_metadata_is_returned_unchanged(client, message, db, msg_metadata):
    created = message(msg_metadata=msg_metadata)

    assert created["msg_metadata"] == msg_metadata
    assert message_row(db, created["id"])["msg_metadata"] == msg_metadata


def test_reply_without_conversation_joins_its_parents(client, conversation, message, db):
    topic = conversation(title="thread")
    parent = message(conversation_id=topic["id"])

    reply = message(parent_message_id=parent["id"])

    assert reply["conversation_id"] == topic["id"]
    assert message_row(db, reply["id"])["conversation_id"] == topic["id"]


def test_reply_may_name_another_conversation(client, conversation, message, db):
    first, second = conversation(title="first"), conversation(title="second")
    parent = message(conversation_id=first["id"])

    reply = message(parent_message_id=parent["id"], conversation_id=second["id"])

    assert reply["conversation_id"] == second["id"]
    assert message_row(db, reply["id"])["conversation_id"] == second["id"]


def test_reply_to_a_parent_without_conversation_has_none(message):
    parent = message()

    reply = message(parent_message_id=parent["id"])

    assert (reply["parent_message_id"], reply["conversation_id"]) == (parent["id"], None)


@pytest.mark.parametrize("field", ["sender_id", "parent_message_id", "conversation_id"])
def test_create_with_reference_that_does_not_exist_is_409(client, db, field):
    content = unique_content()

    response = client.post("/messages", json={"content": content, field: str(uuid.uuid4())})

    assert_conflict(response)
    assert messages_with_content(db, content) == 0


# POST /messages with recipient_ids -----------------------------------------


def test_create_with_recipients_stores_their_rows(client, agent, db):
    sender, a, b = agent(), agent(), agent()

    response = client.post(
        "/messages",
        json={"content": "to two", "sender_id": sender["id"], "recipient_ids": [a["id"], b["id"]]},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == MESSAGE_FIELDS
    rows = recipient_rows(db, message_id=body["id"])
    assert sorted(rows, key=lambda row: row["recipient_id"]) == sorted(
        (
            {"message_id": body["id"], "recipient_id": r, "is_read": False, "read_at": None}
            for r in (a["id"], b["id"])
        ),
        key=lambda row: row["recipient_id"],
    )


def test_create_with_empty_recipient_ids_stores_no_rows(message, db):
    created = message(recipient_ids=[])

    assert recipient_rows(db, message_id=created["id"]) == []


def test_create_with_same_recipient_twice_stores_it_once(agent, message, db):
    a = agent()

    created = message(recipient_ids=[a["id"], a["id"], a["id"]])

    assert [row["recipient_id"] for row in recipient_rows(db, message_id=created["id"])] == [
        a["id"]
    ]


def test_create_with_a_missing_recipient_is_409_and_stores_nothing(client, agent, db):
    """All or nothing: neither the message nor the existing recipients' rows remain."""
    sender, present = agent(), agent()
    missing = str(uuid.uuid4())
    content = unique_content()

    response = client.post(
        "/messages",
        json={
            "content": content,
            "sender_id": sender["id"],
            "recipient_ids": [present["id"], missing],
        },
    )

    assert_conflict(response)
    detail = response.json()["detail"]
    assert missing in detail
    assert present["id"] not in detail
    assert messages_with_content(db, content) == 0
    assert recipient_rows(db, recipient_id=present["id"]) == []
    assert client.get(f"/agents/{present['id']}/messages").json() == []
    assert client.get(f"/agents/{sender['id']}/messages").json() == []


def test_create_with_a_missing_recipient_first_still_names_it(client, agent, db):
    present = agent()
    missing = str(uuid.uuid4())
    content = unique_content()

    response = client.post(
        "/messages", json={"content": content, "recipient_ids": [missing, present["id"]]}
    )

    assert_conflict(response)
    assert missing in response.json()["detail"]
    assert messages_with_content(db, content) == 0
    assert recipient_rows(db, recipient_id=present["id"]) == []


def test_create_with_missing_sender_and_recipients_stores_no_recipient_rows(client, agent, db):
    present = agent()
    content = unique_content()

    response = client.post(
        "/messages",
        json={"content": content, "sender_id": UNKNOWN, "recipient_ids": [present["id"]]},
    )

    assert_conflict(response)
    assert messages_with_content(db, content) == 0
    assert recipient_rows(db, recipient_id=present["id"]) == []


# PUT /messages/{id} --------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"content": "edited"},
        {"importance": 0},
        {"message_type": "note", "status": "done"},
        {"msg_metadata": {"replaced": [1, 2]}},
        {"msg_metadata": {}},
    ],
)
def test_put_changes_only_the_fields_sent(client, agent, conversation, message, db, change):
    sender = agent()
    topic = conversation()
    created = message(
        sender_id=sender["id"],
        conversation_id=topic["id"],
        content="original",
        message_type="task",
        importance=5,
        status="new",
        msg_metadata={"a": 1},
    )

    response = client.put(f"/messages/{created['id']}", json=change)

    assert response.status_code == 200, response.text
    body = response.json()
    expected = created | change
    assert {f: body[f] for f in MESSAGE_FIELDS - {"updated_at"}} == {
        f: expected[f] for f in MESSAGE_FIELDS - {"updated_at"}
    }
    row = message_row(db, created["id"])
    assert row == {f: expected[f] for f in row}


def test_put_moves_updated_at_and_keeps_sent_at(client, message):
    created = message()

    body = client.put(f"/messages/{created['id']}", json={"status": "seen"}).json()

    assert body["sent_at"] == created["sent_at"]
    assert UTC_TIMESTAMP.match(body["updated_at"]), body["updated_at"]
    assert instant(body["updated_at"]) > instant(created["updated_at"])


@pytest.mark.parametrize(
    "field", ["message_type", "importance", "status", "msg_metadata", "conversation_id"]
)
def test_put_null_clears_a_nullable_field(client, conversation, message, db, field):
    created = message(
        conversation_id=conversation()["id"],
        message_type="task",
        importance=3,
        status="new",
        msg_metadata={"a": 1},
    )

    response = client.put(f"/messages/{created['id']}", json={field: None})

    assert response.status_code == 200, response.text
    assert response.json()[field] is None
    assert message_row(db, created["id"])[field] is None


def test_put_can_set_parent_and_conversation(client, conversation, message, db):
    topic = conversation()
    parent, child = message(), message()

    response = client.put(
        f"/messages/{child['id']}",
        json={"parent_message_id": parent["id"], "conversation_id": topic["id"]},
    )

    assert response.status_code == 200, response.text
    row = message_row(db, child["id"])
    assert (row["parent_message_id"], row["conversation_id"]) == (parent["id"], topic["id"])


def test_put_sender_id_is_not_writable(client, agent, message, db):
    original, other = agent(), agent()
    created = message(sender_id=original["id"])

    response = client.put(f"/messages/{created['id']}", json={"sender_id": other["id"]})

    assert_invalid(response, "body", "sender_id")
    assert message_row(db, created["id"])["sender_id"] == original["id"]


def test_put_null_content_is_422(client, message, db):
    created = message(content="keep")

    assert_invalid(client.put(f"/messages/{created['id']}", json={"content": None}), "body")
    assert message_row(db, created["id"])["content"] == "keep"


def test_put_unknown_message_is_404(client):
    response = client.put(f"/messages/{UNKNOWN}", json={"content": "x"})

    assert_not_found(response, "Message not found")


@pytest.mark.parametrize("field", ["conversation_id", "parent_message_id"])
def test_put_reference_that_does_not_exist_is_409(client, conversation, message, db, field):
    topic = conversation()
    created = message(conversation_id=topic["id"])
    missing = str(uuid.uuid4())

    response = client.put(f"/messages/{created['id']}", json={field: missing})

    assert_conflict(response)
    row = message_row(db, created["id"])
    assert (row["conversation_id"], row["parent_message_id"]) == (topic["id"], None)


def test_put_a_message_as_its_own_parent_is_409(client, message, db):
    created = message()

    response = client.put(f"/messages/{created['id']}", json={"parent_message_id": created["id"]})

    assert_conflict(response)
    assert "parent_message_id" in response.json()["detail"]
    assert message_row(db, created["id"])["parent_message_id"] is None


def test_put_a_parent_that_replies_to_the_message_is_409(client, message, db):
    root = message()
    reply = message(parent_message_id=root["id"])
    reply_to_reply = message(parent_message_id=reply["id"])

    response = client.put(
        f"/messages/{root['id']}", json={"parent_message_id": reply_to_reply["id"], "content": "x"}
    )

    assert_conflict(response)
    assert message_row(db, root["id"])["parent_message_id"] is None
    assert message_row(db, root["id"])["content"] == root["content"]
    # A parent elsewhere in the tree is fine.
    sibling = message(parent_message_id=root["id"])
    moved = client.put(
        f"/messages/{reply_to_reply['id']}", json={"parent_message_id": sibling["id"]}
    )
    assert moved.status_code == 200, moved.text


def test_two_concurrent_changes_cannot_close_a_reply_cycle(database_url, message):
    """Each change alone is fine; together they would make a cycle. The second
    waits for the first to commit, then sees it and is refused."""
    first, second = message(), message()
    with (
        psycopg.connect(database_url) as one,
        psycopg.connect(database_url, autocommit=True) as two,
    ):
        one.execute(
            "UPDATE messages SET parent_message_id = %s WHERE id = %s", (second["id"], first["id"])
        )
        with ThreadPoolExecutor(1) as pool:
            closing = pool.submit(
                two.execute,
                "UPDATE messages SET parent_message_id = %s WHERE id = %s",
                (first["id"], second["id"]),
            )
            time.sleep(0.3)
            assert not closing.done(), "the second change must wait for the first"
            one.commit()
            with pytest.raises(psycopg.errors.IntegrityError):
                closing.result(timeout=10)


# POST /message_recipients --------------------------------------------------


def test_create_recipient(client, agent, message, db):
    a = agent()
    created = message()

    response = client.post(
        "/message_recipients", json={"message_id": created["id"], "recipient_id": a["id"]}
    )

    assert response.status_code == 201, response.text
    expected = {"message_id": created["id"], "recipient_id": a["id"], "is_read": False}
    assert response.json() == expected | {"read_at": None}
    assert recipient_rows(db, message_id=created["id"]) == [expected | {"read_at": None}]


def test_create_recipient_already_read_sets_read_at(client, agent, message, db):
    a = agent()
    created = message()

    response = client.post(
        "/message_recipients",
        json={"message_id": created["id"], "recipient_id": a["id"], "is_read": True},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == RECIPIENT_FIELDS
    assert body["is_read"] is True
    assert UTC_TIMESTAMP.match(body["read_at"] or ""), body["read_at"]
    (row,) = recipient_rows(db, message_id=created["id"])
    assert row["read_at"] == instant(body["read_at"])


def test_create_recipient_twice_is_409(client, agent, message, recipient, db):
    a = agent()
    created = message()
    recipient(created["id"], a["id"])

    response = client.post(
        "/message_recipients",
        json={"message_id": created["id"], "recipient_id": a["id"], "is_read": True},
    )

    assert_conflict(response)
    rows = recipient_rows(db, message_id=created["id"])
    assert [(r["recipient_id"], r["is_read"]) for r in rows] == [(a["id"], False)]


def test_create_recipient_of_a_recipient_ids_row_is_409(client, agent, message):
    """Rows stored by POST /messages count as duplicates too."""
    a = agent()
    created = message(recipient_ids=[a["id"]])

    response = client.post(
        "/message_recipients", json={"message_id": created["id"], "recipient_id": a["id"]}
    )

    assert_conflict(response)


def test_create_recipient_for_missing_message_is_409(client, agent, db):
    a = agent()
    missing = str(uuid.uuid4())

    response = client.post(
        "/message_recipients", json={"message_id": missing, "recipient_id": a["id"]}
    )

    assert_conflict(response)
    assert recipient_rows(db, recipient_id=a["id"]) == []


def test_create_recipient_for_missing_agent_is_409(client, message, db):
    created = message()
    missing = str(uuid.uuid4())

    response = client.post(
        "/message_recipients", json={"message_id": created["id"], "recipient_id": missing}
    )

    assert_conflict(response)
    assert recipient_rows(db, message_id=created["id"]) == []


# PUT /message_recipients/{message_id}/{recipient_id} -----------------------


def test_put_recipient_read_sets_read_at(client, agent, message, db):
    a = agent()
    created = message(recipient_ids=[a["id"]])

    response = client.put(f"/message_recipients/{created['id']}/{a['id']}", json={"is_read": True})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == RECIPIENT_FIELDS
    assert (body["message_id"], body["recipient_id"], body["is_read"]) == (
        created["id"],
        a["id"],
        True,
    )
    assert UTC_TIMESTAMP.match(body["read_at"] or ""), body["read_at"]
    assert instant(body["read_at"]) >= instant(created["sent_at"])
    (row,) = recipient_rows(db, message_id=created["id"])
    assert (row["is_read"], row["read_at"]) == (True, instant(body["read_at"]))


def test_put_recipient_unread_clears_read_at(client, agent, message, db):
    a = agent()
    created = message(recipient_ids=[a["id"]])
    url = f"/message_recipients/{created['id']}/{a['id']}"
    client.put(url, json={"is_read": True})

    response = client.put(url, json={"is_read": False})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["is_read"], body["read_at"]) == (False, None)
    (row,) = recipient_rows(db, message_id=created["id"])
    assert (row["is_read"], row["read_at"]) == (False, None)


def test_put_recipient_read_again_keeps_the_first_read_at(client, agent, message):
    """read_at is stamped when is_read becomes true, not each time it is sent."""
    a = agent()
    created = message(recipient_ids=[a["id"]])
    url = f"/message_recipients/{created['id']}/{a['id']}"
    first = client.put(url, json={"is_read": True}).json()

    again = client.put(url, json={"is_read": True}).json()

    assert again["read_at"] == first["read_at"]


def test_put_recipient_unread_when_unread_is_a_no_op(client, agent, message):
    a = agent()
    created = message(recipient_ids=[a["id"]])

    response = client.put(f"/message_recipients/{created['id']}/{a['id']}", json={"is_read": False})

    assert response.status_code == 200, response.text
    assert (response.json()["is_read"], response.json()["read_at"]) == (False, None)


@pytest.mark.parametrize("which", ["message", "agent", "pair"])
def test_put_recipient_that_does_not_exist_is_404(client, agent, message, which):
    a, b = agent(), agent()
    created = message(recipient_ids=[a["id"]])
    message_id, recipient_id = {
        "message": (UNKNOWN, a["id"]),
        "agent": (created["id"], UNKNOWN),
        "pair": (created["id"], b["id"]),
    }[which]

    response = client.put(
        f"/message_recipients/{message_id}/{recipient_id}", json={"is_read": True}
    )

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Message recipient not found"}


# POST /agent_message_metadata ----------------------------------------------


def test_create_metadata(client, agent, message, db):
    author = agent()
    created = message()

    response = client.post(
        "/agent_message_metadata",
        json={"message_id": created["id"], "key": "lang", "value": "en", "agent_id": author["id"]},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == METADATA_FIELDS
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert (body["message_id"], body["key"], body["value"], body["agent_id"]) == (
        created["id"],
        "lang",
        "en",
        author["id"],
    )
    assert UTC_TIMESTAMP.match(body["created_at"]), body["created_at"]
    assert metadata_rows(db, created["id"]) == [
        {"id": body["id"], "key": "lang", "value": "en", "agent_id": author["id"]}
    ]


def test_create_metadata_optional_fields_are_null(client, message, db):
    created = message()

    response = client.post(
        "/agent_message_metadata", json={"message_id": created["id"], "key": "k"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["value"], body["agent_id"]) == (None, None)
    assert metadata_rows(db, created["id"]) == [
        {"id": body["id"], "key": "k", "value": None, "agent_id": None}
    ]


def test_create_metadata_value_null_is_allowed(metadata, message):
    assert metadata(message()["id"], key="k", value=None)["value"] is None


@pytest.mark.parametrize("key", ["k", "x" * 255, "ключ"])
def test_create_metadata_key_within_bounds(metadata, message, key):
    assert metadata(message()["id"], key=key)["key"] == key


def test_create_metadata_same_key_twice_on_a_message_is_409(client, metadata, message, db):
    created = message()
    first = metadata(created["id"], key="dup", value="one")

    response = client.post(
        "/agent_message_metadata", json={"message_id": created["id"], "key": "dup", "value": "two"}
    )

    assert_conflict(response)
    assert metadata_rows(db, created["id"]) == [
        {"id": first["id"], "key": "dup", "value": "one", "agent_id": None}
    ]


def test_create_metadata_same_key_on_another_message_is_allowed(metadata, message):
    first, second = message(), message()
    metadata(first["id"], key="shared")

    assert metadata(second["id"], key="shared")["message_id"] == second["id"]


def test_create_metadata_for_missing_message_is_409(client, db):
    missing = str(uuid.uuid4())

    response = client.post("/agent_message_metadata", json={"message_id": missing, "key": "k"})

    assert_conflict(response)
    assert metadata_rows(db, missing) == []


def test_create_metadata_for_missing_agent_is_409(client, message, db):
    created = message()
    missing = str(uuid.uuid4())

    response = client.post(
        "/agent_message_metadata",
        json={"message_id": created["id"], "key": "k", "agent_id": missing},
    )

    assert_conflict(response)
    assert metadata_rows(db, created["id"]) == []


# PUT /agent_message_metadata/{id} ------------------------------------------


@pytest.mark.parametrize(
    "change",
    [{"key": "renamed"}, {"value": "changed"}, {"value": None}, {"key": "both", "value": "v2"}],
)
def test_put_metadata_changes_only_the_fields_sent(client, agent, message, metadata, db, change):
    author = agent()
    created = message()
    item = metadata(created["id"], key="original", value="v1", agent_id=author["id"])

    response = client.put(f"/agent_message_metadata/{item['id']}", json=change)

    assert response.status_code == 200, response.text
    assert response.json() == item | change
    assert metadata_rows(db, created["id"]) == [
        {f: (item | change)[f] for f in ("id", "key", "value", "agent_id")}
    ]


def test_put_metadata_key_taken_by_another_item_is_409(client, message, metadata, db):
    created = message()
    metadata(created["id"], key="taken", value="a")
    item = metadata(created["id"], key="mine", value="b")

    response = client.put(f"/agent_message_metadata/{item['id']}", json={"key": "taken"})

    assert_conflict(response)
    assert sorted(row["key"] for row in metadata_rows(db, created["id"])) == ["mine", "taken"]


def test_put_metadata_key_to_its_own_key_is_allowed(client, message, metadata):
    item = metadata(message()["id"], key="same")

    response = client.put(f"/agent_message_metadata/{item['id']}", json={"key": "same"})

    assert response.status_code == 200, response.text


def test_put_unknown_metadata_is_404(client):
    response = client.put(f"/agent_message_metadata/{UNKNOWN}", json={"value": "x"})

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Metadata not found"}


@pytest.mark.parametrize("change", [{"key": None}, {"key": ""}, {"key": "x" * 256}, {"value": 5}])
def test_put_metadata_invalid_value_is_422(client, message, metadata, db, change):
    created = message()
    item = metadata(created["id"], key="stay", value="put")
    (field,) = change

    response = client.put(f"/agent_message_metadata/{item['id']}", json=change)

    assert_invalid(response, "body", field)
    assert metadata_rows(db, created["id"]) == [
        {"id": item["id"], "key": "stay", "value": "put", "agent_id": None}
    ]


# GET /messages/{message_id}/metadata/{agent_id} ----------------------------


def test_metadata_view_for_the_sender(client, agent, message, metadata):
    sender, reader = agent(), agent()
    created = message(sender_id=sender["id"], recipient_ids=[reader["id"]])
    first = metadata(created["id"], key="one", value="1", agent_id=sender["id"])
    second = metadata(created["id"], key="two", value=None)

    response = client.get(f"/messages/{created['id']}/metadata/{sender['id']}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"message_id", "message", "agent", "metadata_items"}
    assert (body["message_id"], body["message"], body["agent"]) == (
        created["id"],
        created,
        without_webhook(sender),
    )
    assert sorted(body["metadata_items"], key=lambda item: item["key"]) == [first, second]


def test_metadata_view_for_a_recipient_names_that_recipient(client, agent, message, metadata):
    sender, reader = agent(), agent()
    created = message(sender_id=sender["id"], recipient_ids=[reader["id"]])
    item = metadata(created["id"], key="k", value="v")

    response = client.get(f"/messages/{created['id']}/metadata/{reader['id']}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent"] == without_webhook(reader)
    assert body["message"] == created
    assert body["metadata_items"] == [item]


def test_metadata_view_for_a_recipient_added_later(client, agent, message, recipient):
    reader = agent()
    created = message()
    recipient(created["id"], reader["id"])

    response = client.get(f"/messages/{created['id']}/metadata/{reader['id']}")

    assert response.status_code == 200, response.text
    assert response.json()["metadata_items"] == []


def test_metadata_view_for_an_unrelated_agent_is_403(client, agent, message):
    sender, reader, stranger = agent(), agent(), agent()
    created = message(sender_id=sender["id"], recipient_ids=[reader["id"]])

    response = client.get(f"/messages/{created['id']}/metadata/{stranger['id']}")

    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert "does not have access" in detail
    assert stranger["id"] in detail


def test_metadata_view_of_a_senderless_message_is_403_for_others(client, agent, message):
    created = message()

    response = client.get(f"/messages/{created['id']}/metadata/{agent()['id']}")

    assert response.status_code == 403, response.text
    assert "does not have access" in response.json()["detail"]


def test_metadata_view_of_unknown_message_is_404(client, agent):
    response = client.get(f"/messages/{UNKNOWN}/metadata/{agent()['id']}")

    assert_not_found(response, "Message not found")


def test_metadata_view_for_unknown_agent_is_404(client, message):
    response = client.get(f"/messages/{message()['id']}/metadata/{UNKNOWN}")

    assert_not_found(response, "Agent not found")


# A message's metadata is bounded: items and bytes ------------------------------


@pytest.fixture(scope="module")
def small_metadata(settings) -> Iterator[TestClient]:
    """The app holding a message to 3 metadata items and 2,048 bytes of keys and values."""
    small = msgspec.structs.replace(settings, max_metadata_items=3, max_metadata_bytes=2048)
    with TestClient(create_app(small)) as test_client:
        yield test_client


def test_a_message_holds_at_most_max_metadata_items(small_metadata, message, db):
    message_id = message()["id"]
    statuses = [
        small_metadata.post(
            "/agent_message_metadata", json={"message_id": message_id, "key": f"k{n}"}
        ).status_code
        for n in range(4)
    ]
    assert statuses == [201, 201, 201, 409]
    refused = small_metadata.post(
        "/agent_message_metadata", json={"message_id": message_id, "key": "k9", "value": "v"}
    )
    assert refused.status_code == 409
    assert "MAILROOM_MAX_METADATA_ITEMS" in refused.json()["detail"]
    assert [row["key"] for row in metadata_rows(db, message_id)] == ["k0", "k1", "k2"]
    # Another message has its own allowance.
    other = message()["id"]
    created = small_metadata.post("/agent_message_metadata", json={"message_id": other, "key": "k"})
    assert created.status_code == 201, created.text


def test_a_message_holds_at_most_max_metadata_bytes(small_metadata, message, db):
    message_id = message()["id"]
    first = small_metadata.post(
        "/agent_message_metadata", json={"message_id": message_id, "key": "a", "value": "x" * 1500}
    )
    assert first.status_code == 201, first.text
    # 1 + 1,500 stored; 1 + 600 more would be 2,102 bytes: over 2,048.
    over = small_metadata.post(
        "/agent_message_metadata", json={"message_id": message_id, "key": "b", "value": "é" * 300}
    )
    assert over.status_code == 409
    assert "MAILROOM_MAX_METADATA_BYTES" in over.json()["detail"]
    fits = small_metadata.post(
        "/agent_message_metadata", json={"message_id": message_id, "key": "b", "value": "y" * 546}
    )
    assert fits.status_code == 201, fits.text  # exactly 2,048
    # A PUT that grows an item past the budget is refused and changes nothing; one that
    # keeps it within (the item's own old bytes do not count twice) goes through.
    grown = small_metadata.put(
        f"/agent_message_metadata/{first.json()['id']}", json={"value": "x" * 1501}
    )
    assert grown.status_code == 409
    assert "MAILROOM_MAX_METADATA_BYTES" in grown.json()["detail"]
    assert [row["value"] for row in metadata_rows(db, message_id)] == ["x" * 1500, "y" * 546]
    same = small_metadata.put(f"/agent_message_metadata/{first.json()['id']}", json={"key": "c"})
    assert same.status_code == 200, same.text
    missing = small_metadata.put(f"/agent_message_metadata/{UNKNOWN}", json={"value": "v"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Metadata not found"}


def test_concurrent_metadata_writes_never_pass_the_item_cap(database_url, tmp_path):
    """Twenty creates at the same moment on a real server: exactly the cap is stored."""
    server = Server(database_url, tmp_path, MAILROOM_AUTH="off", MAILROOM_MAX_METADATA_ITEMS="5")
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            message_id = http.post("/messages", json={"content": "capped"}).json()["id"]

            def attach(n: int) -> int:
                body = {"message_id": message_id, "key": f"k{n}"}
                return http.post("/agent_message_metadata", json=body).status_code

            with ThreadPoolExecutor(20) as pool:
                statuses = sorted(pool.map(attach, range(20)))
        assert statuses == [201] * 5 + [409] * 15
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM agent_message_metadata WHERE message_id = %s", (message_id,)
            ).fetchone()
        assert row == (5,)
    finally:
        server.stop()
