"""Pulling: an agent's mailbox, its unread messages, mark-read, and paging through them.

Other tests share the database, so every test registers its own agents and
looks only at their mailboxes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from starlette.testclient import TestClient

from tests.helpers import (
    MESSAGE_FIELDS,
    SMALL_PAGE_BYTES,
    UNKNOWN,
    UTC_TIMESTAMP,
    Db,
    Item,
    assert_invalid,
    assert_not_found,
    cursor_of,
    db_now,
    ids,
    instant,
    next_url,
    query_of,
    walk,
)

VIEW_FIELDS = {"direction", "is_read", "read_at"}
PULL_PATHS = ["messages", "messages/unread"]


@pytest.fixture
def send(message: Callable[..., Item]) -> Callable[..., Item]:
    """`send(sender, *recipients, **fields)`: a message from one agent to others."""

    def make(sender: Item | None, *recipients: Item, **fields: Any) -> Item:
        sender_id = None if sender is None else sender["id"]
        return message(sender_id=sender_id, recipient_ids=[r["id"] for r in recipients], **fields)

    return make


def pull(client: TestClient, agent_id: str, path: str = "messages", **params: Any) -> list[Item]:
    """One page of /agents/{id}/<path>, which must answer 200."""
    response = client.get(f"/agents/{agent_id}/{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def mark_read(client: TestClient, agent_id: str, up_to: str) -> dict[str, Any]:
    response = client.put(f"/agents/{agent_id}/messages/mark-read", json={"read_up_to_date": up_to})
    assert response.status_code == 200, response.text
    return response.json()


def read_state(db: Db, message_id: str, recipient_id: str) -> dict[str, Any]:
    """The stored recipient row's read state."""
    row = db.execute(
        "SELECT is_read, read_at FROM message_recipients"
        " WHERE message_id = %s AND recipient_id = %s",
        (message_id, recipient_id),
    ).fetchone()
    assert row is not None
    return row


def set_read(client: TestClient, message_id: str, recipient_id: str) -> Item:
    response = client.put(
        f"/message_recipients/{message_id}/{recipient_id}", json={"is_read": True}
    )
    assert response.status_code == 200, response.text
    return response.json()


def micros(timestamp: str, shift: int, offset: timezone = UTC) -> str:
    """`timestamp` moved by `shift` microseconds, written with six digits at `offset`."""
    moved = instant(timestamp) + timedelta(microseconds=shift)
    return moved.astimezone(offset).isoformat(timespec="microseconds")


# GET /agents/{id}/messages -------------------------------------------------


def test_lists_sent_and_received_newest_first(client, agent, send):
    a, b, c = agent(), agent(), agent()
    m1 = send(a, b)
    m2 = send(b, a)
    m3 = send(c, a, b)
    m4 = send(a, c)
    send(b, c)  # neither from nor to a

    items = pull(client, a["id"])

    assert ids(items) == [m4["id"], m3["id"], m2["id"], m1["id"]]
    assert [i["direction"] for i in items] == ["sent", "received", "received", "sent"]


def test_item_is_the_message_plus_the_agents_view(client, agent, conversation, send):
    a, b = agent(), agent()
    topic = conversation(title="t")
    parent = send(b, a)
    sent = send(
        a,
        b,
        content="full",
        parent_message_id=parent["id"],
        conversation_id=topic["id"],
        message_type="task",
        importance=7,
        status="new",
        msg_metadata={"k": [1, {"x": None}]},
    )

    items = {i["id"]: i for i in pull(client, a["id"])}

    for posted, direction, is_read in ((sent, "sent", None), (parent, "received", False)):
        item = items[posted["id"]]
        assert set(item) == MESSAGE_FIELDS | VIEW_FIELDS
        assert {f: item[f] for f in MESSAGE_FIELDS} == posted
        assert (item["direction"], item["is_read"], item["read_at"]) == (direction, is_read, None)


def test_received_item_shows_read_state(client, agent, send):
    a, b = agent(), agent()
    m = send(b, a)
    recipient = set_read(client, m["id"], a["id"])

    (item,) = pull(client, a["id"])

    assert item["is_read"] is True
    assert item["read_at"] == recipient["read_at"] is not None


def test_sent_item_has_null_read_state_even_when_read(client, agent, send):
    """The sender's view never shows a recipient's read state."""
    a, b = agent(), agent()
    m = send(a, b)
    set_read(client, m["id"], b["id"])

    (item,) = pull(client, a["id"])

    assert (item["direction"], item["is_read"], item["read_at"]) == ("sent", None, None)


def test_message_to_several_recipients_is_listed_once_for_sender(client, agent, send):
    a, b, c = agent(), agent(), agent()
    m = send(a, b, c)

    assert ids(pull(client, a["id"])) == [m["id"]]


def test_message_without_recipients_is_listed_as_sent(client, agent, send):
    a = agent()
    m = send(a)

    (item,) = pull(client, a["id"])

    assert (item["id"], item["direction"]) == (m["id"], "sent")


def test_self_sent_message_appears_once_as_received(client, agent, send):
    a, b = agent(), agent()
    m = send(a, a, b)

    items = pull(client, a["id"])

    assert [(i["id"], i["direction"], i["is_read"]) for i in items] == [
        (m["id"], "received", False)
    ]


def test_direction_sent_lists_only_sent_including_self_sent(client, agent, send):
    a, b = agent(), agent()
    m1 = send(a, b)
    send(b, a)
    m3 = send(a, a)

    items = pull(client, a["id"], direction="sent")

    assert ids(items) == [m3["id"], m1["id"]]
    assert {(i["direction"], i["is_read"], i["read_at"]) for i in items} == {("sent", None, None)}


def test_direction_received_lists_only_received(client, agent, send):
    a, b = agent(), agent()
    send(a, b)
    m2 = send(b, a)
    m3 = send(a, a)

    items = pull(client, a["id"], direction="received")

    assert ids(items) == [m3["id"], m2["id"]]
    assert {i["direction"] for i in items} == {"received"}


def test_direction_all_is_the_default(client, agent, send):
    a, b = agent(), agent()
    send(a, b)
    send(b, a)
    send(a, a)

    everything = pull(client, a["id"], direction="all")

    assert everything == pull(client, a["id"])
    assert len(everything) == 3


def test_order_asc_lists_oldest_first(client, agent, send):
    a, b = agent(), agent()
    sent = [send(a, b), send(b, a), send(a, a), send(b, a)]

    assert ids(pull(client, a["id"], order="asc")) == ids(sent)
    assert ids(pull(client, a["id"], order="desc")) == ids(sent)[::-1]


def test_order_asc_applies_to_each_direction(client, agent, send):
    a, b = agent(), agent()
    s1, r1, s2, r2 = send(a, b), send(b, a), send(a, b), send(b, a)

    assert ids(pull(client, a["id"], direction="sent", order="asc")) == ids([s1, s2])
    assert ids(pull(client, a["id"], direction="received", order="asc")) == ids([r1, r2])


def test_agent_with_no_messages_gets_an_empty_list(client, agent):
    response = client.get(f"/agents/{agent()['id']}/messages")

    assert response.status_code == 200
    assert response.json() == []
    assert "link" not in response.headers


@pytest.mark.parametrize("direction", ["both", "SENT", "", "inbox"])
def test_invalid_direction_is_422(client, agent, direction):
    response = client.get(f"/agents/{agent()['id']}/messages", params={"direction": direction})

    assert_invalid(response, "query", "direction")


@pytest.mark.parametrize("path", PULL_PATHS)
@pytest.mark.parametrize("order", ["ASC", "newest", "", "1"])
def test_invalid_order_is_422(client, agent, path, order):
    response = client.get(f"/agents/{agent()['id']}/{path}", params={"order": order})

    assert_invalid(response, "query", "order")


@pytest.mark.parametrize("path", PULL_PATHS)
def test_unknown_agent_is_404(client, path):
    assert_not_found(client.get(f"/agents/{UNKNOWN}/{path}"), "Agent not found")


def test_unknown_agent_is_404_for_every_direction(client):
    for direction in ("all", "sent", "received"):
        response = client.get(f"/agents/{UNKNOWN}/messages", params={"direction": direction})
        assert_not_found(response, "Agent not found")


@pytest.mark.parametrize("path", PULL_PATHS)
@pytest.mark.parametrize("agent_id", ["not-a-uuid", "123", "00000000-0000-4000-8000-00000000000"])
def test_malformed_agent_id_is_422(client, path, agent_id):
    assert_invalid(client.get(f"/agents/{agent_id}/{path}"), "path", "agent_id")


def test_timestamps_are_utc_with_microseconds(client, agent, send, db):
    """Also an instant whose microseconds are zero is written with six digits (API.md)."""
    a, b = agent(), agent()
    m = send(b, a)
    db.execute(
        "UPDATE messages SET sent_at = date_trunc('second', sent_at) WHERE id = %s", (m["id"],)
    )
    db.execute(
        "UPDATE message_recipients SET sent_at = date_trunc('second', sent_at)"
        " WHERE message_id = %s",
        (m["id"],),
    )
    set_read(client, m["id"], a["id"])

    (item,) = pull(client, a["id"])

    for field in ("sent_at", "updated_at", "read_at"):
        assert UTC_TIMESTAMP.match(item[field]), (field, item[field])


# GET /agents/{id}/messages/unread --------------------------------------------


def test_unread_lists_received_unread_newest_first(client, agent, send):
    a, b = agent(), agent()
    m1 = send(b, a)
    m2 = send(b, a)
    m3 = send(b, a)
    send(a, b)  # sent by a: never in a's unread
    set_read(client, m2["id"], a["id"])

    items = pull(client, a["id"], "messages/unread")

    assert ids(items) == [m3["id"], m1["id"]]
    for item in items:
        assert set(item) == MESSAGE_FIELDS | VIEW_FIELDS
        assert (item["direction"], item["is_read"], item["read_at"]) == ("received", False, None)


def test_unread_order_asc_is_oldest_first(client, agent, send):
    a, b, c = agent(), agent(), agent()
    received = [send(b, a), send(c, a), send(b, a, c)]

    assert ids(pull(client, a["id"], "messages/unread", order="asc")) == ids(received)


def test_unread_includes_self_sent(client, agent, send):
    a = agent()
    m = send(a, a)

    assert ids(pull(client, a["id"], "messages/unread")) == [m["id"]]


def test_unread_item_equals_the_message(client, agent, send):
    a, b = agent(), agent()
    m = send(b, a, importance=3, msg_metadata={"x": 1})

    (item,) = pull(client, a["id"], "messages/unread")

    assert {f: item[f] for f in MESSAGE_FIELDS} == m


def test_reading_unread_changes_no_read_state(client, agent, send, db):
    a, b = agent(), agent()
    sent = [send(b, a), send(b, a)]

    first = pull(client, a["id"], "messages/unread")
    second = pull(client, a["id"], "messages/unread", order="asc")
    pull(client, a["id"])

    assert ids(first) == ids(sent)[::-1]
    assert ids(second) == ids(sent)
    for m in sent:
        assert read_state(db, m["id"], a["id"]) == {"is_read": False, "read_at": None}


def test_unread_of_agent_with_everything_read_is_empty(client, agent, send):
    a, b = agent(), agent()
    m = send(b, a)
    set_read(client, m["id"], a["id"])

    response = client.get(f"/agents/{a['id']}/messages/unread")

    assert response.status_code == 200
    assert response.json() == []
    assert "link" not in response.headers


# PUT /agents/{id}/messages/mark-read ----------------------------------------


def test_mark_read_is_inclusive_at_a_returned_sent_at(client, agent, send, db):
    a, b = agent(), agent()
    m1, m2, m3 = send(b, a), send(b, a), send(b, a)

    body = mark_read(client, a["id"], m2["sent_at"])

    assert body == {
        "updated_count": 2,
        "message": f"Marked 2 messages as read for agent {a['id']}",
    }
    assert read_state(db, m1["id"], a["id"])["is_read"] is True
    assert read_state(db, m2["id"], a["id"])["is_read"] is True
    assert read_state(db, m3["id"], a["id"]) == {"is_read": False, "read_at": None}
    assert ids(pull(client, a["id"], "messages/unread")) == [m3["id"]]


def test_mark_read_one_microsecond_before_leaves_the_message_unread(client, agent, send, db):
    a, b = agent(), agent()
    m = send(b, a)

    body = mark_read(client, a["id"], micros(m["sent_at"], -1))

    assert body["updated_count"] == 0
    assert read_state(db, m["id"], a["id"])["is_read"] is False


def test_mark_read_one_nanosecond_before_leaves_the_message_unread(client, agent, send, db):
    """RFC 3339 allows more than six fractional digits; the instant is not rounded up."""
    a, b = agent(), agent()
    m = send(b, a)
    just_before = micros(m["sent_at"], -1).removesuffix("+00:00") + "999Z"

    body = mark_read(client, a["id"], just_before)

    assert body["updated_count"] == 0
    assert read_state(db, m["id"], a["id"])["is_read"] is False


def test_mark_read_sets_read_at_to_now(client, agent, send, db):
    a, b = agent(), agent()
    m = send(b, a)
    before = db_now(db)

    mark_read(client, a["id"], m["sent_at"])

    after = db_now(db)
    stored = read_state(db, m["id"], a["id"])
    assert stored["is_read"] is True
    assert before <= stored["read_at"] <= after
    (item,) = pull(client, a["id"])
    assert (item["is_read"], instant(item["read_at"])) == (True, stored["read_at"])


def test_mark_read_counts_only_unread_and_keeps_earlier_read_at(client, agent, send, db):
    a, b = agent(), agent()
    m1, m2 = send(b, a), send(b, a)
    first_read = set_read(client, m1["id"], a["id"])["read_at"]

    body = mark_read(client, a["id"], m2["sent_at"])

    assert body["updated_count"] == 1
    assert body["message"] == f"Marked 1 messages as read for agent {a['id']}"
    assert read_state(db, m1["id"], a["id"])["read_at"] == instant(first_read)
    assert mark_read(client, a["id"], m2["sent_at"])["updated_count"] == 0


def test_mark_read_touches_only_this_agents_received_rows(client, agent, send, db):
    a, b, c = agent(), agent(), agent()
    shared = send(b, a, c)
    sent_by_a = send(a, b)

    body = mark_read(client, a["id"], sent_by_a["sent_at"])

    assert body["updated_count"] == 1
    assert read_state(db, shared["id"], a["id"])["is_read"] is True
    assert read_state(db, shared["id"], c["id"]) == {"is_read": False, "read_at": None}
    assert read_state(db, sent_by_a["id"], b["id"]) == {"is_read": False, "read_at": None}


def test_mark_read_with_nothing_to_mark_reports_zero(client, agent):
    a = agent()

    body = mark_read(client, a["id"], "2030-01-01T00:00:00Z")

    assert body == {"updated_count": 0, "message": f"Marked 0 messages as read for agent {a['id']}"}


def test_mark_read_timestamp_without_offset_is_utc(client, agent, send, db):
    a, b = agent(), agent()
    m1, m2 = send(b, a), send(b, a)
    just_before_m2 = micros(m2["sent_at"], -1).removesuffix("+00:00")
    at_m2 = micros(m2["sent_at"], 0).removesuffix("+00:00")

    assert mark_read(client, a["id"], just_before_m2)["updated_count"] == 1
    assert read_state(db, m2["id"], a["id"])["is_read"] is False
    assert mark_read(client, a["id"], at_m2)["updated_count"] == 1
    assert read_state(db, m1["id"], a["id"])["is_read"] is True
    assert read_state(db, m2["id"], a["id"])["is_read"] is True


@pytest.mark.parametrize(
    "offset", [timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
def test_mark_read_honours_the_offset(client, agent, send, db, offset):
    """The same instant written at another offset marks the same messages."""
    a, b = agent(), agent()
    m1, m2 = send(b, a), send(b, a)

    assert mark_read(client, a["id"], micros(m1["sent_at"], 0, offset))["updated_count"] == 1
    assert read_state(db, m1["id"], a["id"])["is_read"] is True
    assert read_state(db, m2["id"], a["id"])["is_read"] is False


def test_mark_read_unknown_agent_is_404(client):
    response = client.put(
        f"/agents/{UNKNOWN}/messages/mark-read",
        json={"read_up_to_date": "2030-01-01T00:00:00Z"},
    )

    assert_not_found(response, "Agent not found")


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01",
        "",
        1767225600,
        None,
        ["2026-01-01T00:00:00Z"],
    ],
)
def test_mark_read_bad_timestamp_is_422(client, agent, send, db, value):
    a, b = agent(), agent()
    m = send(b, a)

    response = client.put(f"/agents/{a['id']}/messages/mark-read", json={"read_up_to_date": value})

    assert_invalid(response, "body", "read_up_to_date")
    assert read_state(db, m["id"], a["id"])["is_read"] is False


def test_mark_read_missing_field_is_422(client, agent):
    response = client.put(f"/agents/{agent()['id']}/messages/mark-read", json={})

    assert_invalid(response, "body", "read_up_to_date")


@pytest.mark.parametrize(
    "body",
    [
        b'{"read_up_to_date": "2030-01-01T00:00:00Z", "agent_id": "x"}',
        b"not json",
        b'["2030-01-01T00:00:00Z"]',
        b"",
    ],
)
def test_mark_read_bad_body_is_422(client, agent, send, db, body):
    a, b = agent(), agent()
    m = send(b, a)

    response = client.put(
        f"/agents/{a['id']}/messages/mark-read",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert_invalid(response)
    assert read_state(db, m["id"], a["id"])["is_read"] is False


def test_mark_read_malformed_agent_id_is_422(client):
    response = client.put(
        "/agents/nope/messages/mark-read", json={"read_up_to_date": "2030-01-01T00:00:00Z"}
    )

    assert_invalid(response, "path", "agent_id")


def test_mark_read_unknown_agent_with_bad_body_is_422(client):
    """When the id is unknown and the body invalid, 422 wins."""
    response = client.put(f"/agents/{UNKNOWN}/messages/mark-read", json={})

    assert_invalid(response)


# Pagination ------------------------------------------------------------------


@pytest.mark.parametrize("path", PULL_PATHS)
def test_default_limit_is_100(client, agent, send, path):
    a, b = agent(), agent()
    for _ in range(101):
        send(b, a)

    first = client.get(f"/agents/{a['id']}/{path}")

    assert first.status_code == 200
    assert len(first.json()) == 100
    url = next_url(first)
    assert url is not None
    last = client.get(url)
    assert len(last.json()) == 1
    assert next_url(last) is None


@pytest.mark.parametrize("path", PULL_PATHS)
@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "", "1e2", " 5"])
def test_limit_out_of_range_is_422(client, agent, path, limit):
    response = client.get(f"/agents/{agent()['id']}/{path}", params={"limit": limit})

    assert_invalid(response, "query", "limit")


@pytest.mark.parametrize("path", PULL_PATHS)
def test_huge_limit_is_422_not_500(client, agent, path):
    response = client.get(f"/agents/{agent()['id']}/{path}", params={"limit": "1" + "0" * 5000})

    assert_invalid(response, "query", "limit")


@pytest.mark.parametrize("limit", [1, 1000])
def test_limit_bounds_are_accepted(client, agent, send, limit):
    a, b = agent(), agent()
    m1, m2 = send(b, a), send(b, a)

    items = pull(client, a["id"], limit=limit)

    assert ids(items) == ([m2["id"]] if limit == 1 else [m2["id"], m1["id"]])


def test_link_only_when_more_items_exist(client, agent, send):
    a, b = agent(), agent()
    m1, m2, m3 = send(b, a), send(a, b), send(b, a)
    url = f"/agents/{a['id']}/messages"

    exact = client.get(url, params={"limit": 3})
    assert ids(exact.json()) == [m3["id"], m2["id"], m1["id"]]
    assert "link" not in exact.headers

    fewer = client.get(url, params={"limit": 10})
    assert len(fewer.json()) == 3
    assert "link" not in fewer.headers

    first = client.get(url, params={"limit": 2})
    assert ids(first.json()) == [m3["id"], m2["id"]]
    second = client.get(next_url(first))
    assert ids(second.json()) == [m1["id"]]
    assert "link" not in second.headers


def test_next_link_keeps_the_query_and_the_path(client, agent, send):
    a, b = agent(), agent()
    for _ in range(3):
        send(b, a)

    response = client.get(
        f"/agents/{a['id']}/messages", params={"direction": "received", "order": "asc", "limit": 1}
    )

    url = next_url(response)
    assert url is not None
    assert url.split("?")[0].endswith(f"/agents/{a['id']}/messages")
    query = query_of(url)
    assert (query["direction"], query["order"], query["limit"]) == (["received"], ["asc"], ["1"])
    assert len(query["cursor"]) == 1


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("messages", {}),
        ("messages", {"order": "asc"}),
        ("messages", {"direction": "sent"}),
        ("messages", {"direction": "received", "order": "asc"}),
        ("messages/unread", {}),
        ("messages/unread", {"order": "asc"}),
    ],
)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_walking_next_visits_each_item_once_in_order(client, agent, send, path, params, limit):
    a, b, c = agent(), agent(), agent()
    for i in range(4):
        send(b, a)
        send(a, c)
        send(a, a, b)
        if i % 2:
            send(c, a, b)
    whole = pull(client, a["id"], path, limit=1000, **params)

    pages = walk(client, f"/agents/{a['id']}/{path}?" + urlencode({**params, "limit": limit}))

    assert [item for page in pages for item in page] == whole
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


@pytest.mark.parametrize("path", PULL_PATHS)
def test_walking_newest_first_while_messages_arrive(client, agent, send, path):
    """New messages land in front of the walk: the old ones are each seen once, in order."""
    a, b = agent(), agent()
    for _ in range(7):
        send(b, a)
    before = pull(client, a["id"], path)

    pages = walk(client, f"/agents/{a['id']}/{path}?limit=2", between=lambda: send(b, a))

    assert [item for page in pages for item in page] == before


def test_walking_oldest_first_while_messages_arrive(client, agent, send):
    """New messages land behind the walk: every item is seen once, old ones first, in order."""
    a, b = agent(), agent()
    for _ in range(6):
        send(b, a)
        send(a, b)
    before = pull(client, a["id"], order="asc")
    arrived: list[Item] = []

    def arrive() -> None:
        if len(arrived) < 10:
            arrived.extend([send(b, a), send(a, b)])

    pages = walk(client, f"/agents/{a['id']}/messages?order=asc&limit=3", between=arrive)

    seen = ids([item for page in pages for item in page])
    assert len(seen) == len(set(seen))
    assert seen[: len(before)] == ids(before)
    assert seen[len(before) :] == ids(arrived)


def test_walking_unread_oldest_first_while_messages_arrive(client, agent, send):
    a, b = agent(), agent()
    for _ in range(5):
        send(b, a)
    before = pull(client, a["id"], "messages/unread", order="asc")
    arrived: list[Item] = []

    def arrive() -> None:
        if len(arrived) < 4:
            arrived.append(send(b, a))

    pages = walk(client, f"/agents/{a['id']}/messages/unread?order=asc&limit=2", between=arrive)

    assert ids([item for page in pages for item in page]) == ids(before) + ids(arrived)


# Cursors ---------------------------------------------------------------------


@pytest.fixture
def issued_cursor(client, agent, send) -> tuple[str, str]:
    """An agent id and a cursor the service issued for its mailbox."""
    a, b = agent(), agent()
    for _ in range(3):
        send(b, a)
    url = next_url(client.get(f"/agents/{a['id']}/messages", params={"limit": 1}))
    assert url is not None
    return a["id"], cursor_of(url)


def _flip(text: str, index: int) -> str:
    replacement = "B" if text[index] != "B" else "C"
    return text[:index] + replacement + text[index + 1 :]


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "first character changed": lambda c: _flip(c, 0),
    "middle character changed": lambda c: _flip(c, len(c) // 2),
    "signature character changed": lambda c: _flip(c, len(c) - 5),
    "last four dropped": lambda c: c[:-4],
    "half of it": lambda c: c[: len(c) // 2],
    "one character added": lambda c: c + "A",
    "four characters added": lambda c: c + "AAAA",
    "doubled": lambda c: c + c,
    "a character inserted": lambda c: c[:20] + "." + c[20:],
    "non-base64 characters inserted": lambda c: c[:20] + "..." + c[20:],
    "made up": lambda c: "abc",
    "empty": lambda c: "",
    "punctuation": lambda c: "not a cursor!",
    "non-ascii": lambda c: "é" * len(c),
    "random bytes of the right length": lambda c: (
        base64.urlsafe_b64encode(bytes(41)).rstrip(b"=").decode()
    ),
}


@pytest.mark.parametrize("path", PULL_PATHS)
@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_cursor_not_issued_by_the_service_is_422(client, issued_cursor, path, tamper):
    agent_id, cursor = issued_cursor
    forged = tamper(cursor)
    assert forged != cursor

    response = client.get(f"/agents/{agent_id}/{path}", params={"cursor": forged})

    assert_invalid(response, "query", "cursor")


def test_issued_cursor_is_accepted(client, issued_cursor):
    agent_id, cursor = issued_cursor

    response = client.get(f"/agents/{agent_id}/messages", params={"cursor": cursor})

    assert response.status_code == 200
    assert len(response.json()) == 2


def test_conversation_cursor_is_not_a_mailbox_cursor(client, agent, conversation):
    for _ in range(2):
        conversation()
    url = next_url(client.get("/conversations", params={"limit": 1}))
    assert url is not None

    response = client.get(f"/agents/{agent()['id']}/messages", params={"cursor": cursor_of(url)})

    assert_invalid(response, "query", "cursor")


# Pages within the byte budget --------------------------------------------------------


@pytest.mark.parametrize("path", PULL_PATHS)
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_pages_stop_at_the_byte_budget(small_pages, agent, send, path, order):
    a, b = agent(), agent()
    sent = [send(a, b, content=f"{n:04d}" + "y" * 7_996) for n in range(5)]
    sent.append(send(a, b, content="small", msg_metadata={"padding": "m" * 7_990}))
    sent.append(send(a, b, content="z" * 30_000))  # more than a page on its own
    newest_first = ids(sent)[::-1]

    pages = walk(small_pages, f"/agents/{b['id']}/{path}?order={order}")

    expected = newest_first if order == "desc" else newest_first[::-1]
    assert [item["id"] for page in pages for item in page] == expected
    sizes = [len(page) for page in pages]
    assert sizes == ([1, 2, 2, 2] if order == "desc" else [2, 2, 2, 1])
    for page in pages:
        assert len(page) == 1 or len(msgspec.json.encode(page)) <= SMALL_PAGE_BYTES


def test_a_stream_replays_a_big_backlog_in_bounded_batches(small_pages, agent, send):
    a, b = agent(), agent()
    sent = [send(a, b, content=f"{n:04d}" + "s" * 7_996) for n in range(5)]
    got = []
    with small_pages.stream("GET", f"/agents/{b['id']}/messages/stream") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                got.append(msgspec.json.decode(line[5:])["id"])
                if len(got) == len(sent):
                    break
    assert got == ids(sent)
