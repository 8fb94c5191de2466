"""Full-text search over an agent's mail: what is findable, in which order, and by whom.

Every test registers its own agents; a search only ever reads the mail of the
agent it names, so the tests do not see each other's messages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers import UNKNOWN, Item, assert_invalid, assert_not_found, ids, next_url, walk

START, STOP = "\ue000", "\ue001"


@pytest.fixture
def send(message: Callable[..., Item]) -> Callable[..., Item]:
    """`send(sender, *recipients, content=...)`: a message from one agent to others."""

    def make(sender: Item, *recipients: Item, **fields: Any) -> Item:
        return message(sender_id=sender["id"], recipient_ids=[r["id"] for r in recipients],
                       **fields)  # fmt: skip

    return make


def search(client: TestClient, agent: Item, q: str, **params: Any) -> list[Item]:
    response = client.get(f"/agents/{agent['id']}/messages/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


def marked(snippet: str) -> list[str]:
    """The words between the markers of a snippet."""
    return [part.split(STOP)[0] for part in snippet.split(START)[1:]]


# (content, queries that find it: by the whole and by its parts, queries that must not)
TOKENS = [
    ("hyphenated id", "the build-1234 failed", ["build-1234", "build", "1234", '"build 1234"'],
     ["build-1235", "1234-build"]),
    ("snake_case", "raise retry_count to 5", ["retry_count", "retry", "count"],
     ["retry_counter", "count_retry"]),
    ("dotted name", "set app.config before start", ["app.config", "app", "config"],
     ["config.app"]),
    ("file path", "edit /usr/local/lib/mailroom/settings.py now",
     ["/usr/local/lib/mailroom/settings.py", "settings.py", "mailroom/settings.py", "lib",
      "settings"], ["settings.pyc", "/usr/lib"]),
    ("URL", "docs at https://example.org/guide/v2?page=3#top",
     ["https://example.org/guide/v2?page=3#top", "example.org", "guide", "v2", "page=3",
      "example.org/guide"], ["example.com", "guide/v3"]),
    ("numbers", "latency 3.14 ms over 10000 calls, version 1.2.3", ["3.14", "10000", "1.2.3",
     "14", "version 1.2.3"], ["3.15", "1.2.4"]),
    ("accents", "Rendez-vous au café de la Gare à Zürich, Ørsted-Straße",
     ["cafe", "café", "CAFÉ", "zurich", "Zürich", "rendez-vous", "orsted", "strasse", "gare"],
     ["caff"]),
    ("mixed languages", "Статус: готово; 東京 deploy done; Grüße",
     ["статус", "Статус", "готово", "東京", "deploy", "grusse", "grüße"], ["готов"]),
    ("e-mail and CamelCase", "ping ops@example.net about HttpClientError",
     ["ops@example.net", "ops", "httpclienterror", "HttpClientError"], ["example.com"]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "content", "found", "missed"), TOKENS, ids=[t[0] for t in TOKENS])
def test_each_kind_of_token_is_found_by_its_parts_and_by_the_whole(
    client: TestClient,
    agent: Callable[..., Item],
    send: Callable[..., Item],
    kind: str,
    content: str,
    found: list[str],
    missed: list[str],
) -> None:
    a, b = agent(), agent()
    sent = send(a, b, content=content)
    send(a, b, content="an unrelated message about nothing in particular")
    for q in found:
        for who in (a, b):
            assert ids(search(client, who, q)) == [sent["id"]], (kind, q)
    for q in missed:
        assert search(client, b, q) == [], (kind, q)


def test_phrases_or_and_exclusions(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b = agent(), agent()
    red_fox = send(a, b, content="the quick red fox jumps")
    red_car = send(a, b, content="a red car and a quick fox")
    blue = send(a, b, content="the blue whale")
    assert ids(search(client, b, '"red fox"')) == [red_fox["id"]]
    assert set(ids(search(client, b, "red fox"))) == {red_fox["id"], red_car["id"]}
    assert ids(search(client, b, "fox -car")) == [red_fox["id"]]
    assert ids(search(client, b, 'fox -"red car"')) == [red_fox["id"]]
    assert set(ids(search(client, b, "whale or car"))) == {blue["id"], red_car["id"]}
    assert ids(search(client, b, "-fox -car")) == [blue["id"]]
    # to_tsquery's operators are plain separators here (all words wanted), never an error.
    assert ids(search(client, b, "red & !(fox | car):*")) == [red_car["id"]]
    for text in ('"unbalanced', "a:b:c", "((( fox", "fox)", "' or 1=1 --", "\\fox"):
        search(client, b, text)


def test_an_agent_finds_only_its_own_mail(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b, c = agent(), agent(), agent()
    mine = send(a, b, content="secret-plan alpha")
    send(b, c, content="secret-plan beta")
    send(c, b, content="secret-plan gamma")
    assert ids(search(client, a, "secret-plan")) == [mine["id"]]
    assert {item["content"] for item in search(client, b, "secret-plan")} == {
        "secret-plan alpha", "secret-plan beta", "secret-plan gamma"}  # fmt: skip
    assert search(client, agent(), "secret-plan") == []


def test_the_item_is_the_mailbox_item_with_a_snippet(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b = agent(), agent()
    content = f"Deploy of build-77 failed {START}twice{STOP} at the café, see app.config"
    sent = send(a, b, content=content, message_type="alert", importance=3)
    (received,) = search(client, b, "build-77 cafe")
    mailbox = client.get(f"/agents/{b['id']}/messages").json()
    assert {**received, "snippet": None} == {**mailbox[0], "snippet": None}
    assert received["id"] == sent["id"] and received["direction"] == "received"
    assert received["content"] == content  # the content itself is untouched
    snippet = received["snippet"]
    assert marked(snippet) == ["build", "77", "cafe"]
    # The markers in the content are gone from the snippet: every marker is one.
    assert snippet.count(START) == snippet.count(STOP) == 3
    assert snippet.replace(START, "").replace(STOP, "") == (
        "Deploy of build-77 failed twice at the cafe, see app.config"
    )
    (own,) = search(client, a, "twice")
    assert own["direction"] == "sent" and own["is_read"] is None
    assert marked(own["snippet"]) == ["twice"]


def test_best_match_first_then_newest_then_by_time(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b = agent(), agent()
    once_old = send(a, b, content="kiwi and other fruit")
    thrice = send(a, b, content="kiwi kiwi kiwi")
    once_new = send(a, b, content="kiwi and other fruit")
    assert ids(search(client, b, "kiwi")) == [thrice["id"], once_new["id"], once_old["id"]]
    newest = ids(search(client, b, "kiwi", order="newest"))
    assert newest == [once_new["id"], thrice["id"], once_old["id"]]


@pytest.mark.parametrize("order", ["relevance", "newest"])
def test_pages_follow_the_link_without_gaps_or_repeats(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item], order: str
) -> None:
    a, b = agent(), agent()
    expected = []
    for n in range(23):
        # Four different ranks, with many ties inside each.
        expected.append(send(a, b, content="mango " * (1 + n % 4) + f"item {n}")["id"])
    pages = walk(client, f"/agents/{b['id']}/messages/search?q=mango&limit=5&order={order}")
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [item for page in pages for item in page]
    assert sorted(ids(flat)) == sorted(expected)
    assert ids(flat) == ids(search(client, b, "mango", order=order))


@pytest.mark.parametrize("order", ["relevance", "newest"])
def test_pages_stop_at_the_byte_budget(
    small_pages: TestClient, agent: Callable[..., Item], send: Callable[..., Item], order: str
) -> None:
    """Eight 4,000-character matches: each counts its content and its snippet, so a page
    under the small app's 20,000-byte budget holds two, and Link continues."""
    a, b = agent(), agent()
    expected = [send(a, b, content=f"kiwi {n} " + "x" * 4000)["id"] for n in range(8)]
    url = f"/agents/{b['id']}/messages/search?q=kiwi&limit=100&order={order}"
    pages = walk(small_pages, url)
    assert [len(page) for page in pages] == [2, 2, 2, 2]
    assert sorted(ids([item for page in pages for item in page])) == sorted(expected)


def test_filters_narrow_the_results(
    client: TestClient,
    agent: Callable[..., Item],
    send: Callable[..., Item],
    conversation: Callable[..., Item],
) -> None:
    a, b = agent(), agent()
    topic = conversation(title="t")
    to_b = send(a, b, content="papaya one", conversation_id=topic["id"])
    to_a = send(b, a, content="papaya two")
    to_self = send(b, b, content="papaya three")
    everything = {to_b["id"], to_a["id"], to_self["id"]}
    assert set(ids(search(client, b, "papaya"))) == everything
    assert len(search(client, b, "papaya")) == 3  # the one to itself once, as received
    assert set(ids(search(client, b, "papaya", direction="received"))) == {
        to_b["id"], to_self["id"]}  # fmt: skip
    assert set(ids(search(client, b, "papaya", direction="sent"))) == {to_a["id"], to_self["id"]}
    assert ids(search(client, b, "papaya", conversation_id=topic["id"])) == [to_b["id"]]
    middle = to_a["sent_at"]
    assert set(ids(search(client, b, "papaya", since=middle))) == {to_a["id"], to_self["id"]}
    assert ids(search(client, b, "papaya", until=middle)) == [to_b["id"]]
    naive = datetime.fromisoformat(middle).astimezone(UTC).replace(tzinfo=None).isoformat()
    assert ids(search(client, b, "papaya", until=naive)) == [to_b["id"]]
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert search(client, b, "papaya", since=later) == []


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({}, ("query", "q")),
        ({"q": ""}, ("query", "q")),
        ({"q": "!!! ... ---"}, ("query", "q")),
        ({"q": "x" * 1001}, ("query", "q")),
        ({"q": "a\x00b"}, ("query", "q")),  # PostgreSQL text holds no NUL
        ({"q": "x", "limit": "0"}, ("query", "limit")),
        ({"q": "x", "limit": "1001"}, ("query", "limit")),
        ({"q": "x", "cursor": "not-a-cursor"}, ("query", "cursor")),
        ({"q": "x", "since": "yesterday"}, ("query", "since")),
        ({"q": "x", "until": "2026-13-01T00:00:00Z"}, ("query", "until")),
        ({"q": "x", "order": "oldest"}, ("query", "order")),
        ({"q": "x", "direction": "both"}, ("query", "direction")),
        ({"q": "x", "conversation_id": "nope"}, ("query", "conversation_id")),
    ],
)
def test_bad_input_is_422_at_the_parameter(
    client: TestClient, agent: Callable[..., Item], params: dict[str, str], loc: tuple[str, str]
) -> None:
    a = agent()
    assert_invalid(client.get(f"/agents/{a['id']}/messages/search", params=params), *loc)


def test_a_query_of_1000_characters_is_fine(client: TestClient, agent: Callable[..., Item]) -> None:
    assert search(client, agent(), "word " * 200) == []


def test_cursors_are_signed_and_belong_to_their_order(
    client: TestClient, agent: Callable[..., Item], send: Callable[..., Item]
) -> None:
    a, b = agent(), agent()
    for _ in range(3):
        send(a, b, content="lychee")
    url = f"/agents/{b['id']}/messages/search"
    by_rank = next_url(client.get(url, params={"q": "lychee", "limit": 1}))
    by_time = next_url(client.get(url, params={"q": "lychee", "limit": 1, "order": "newest"}))
    mailbox = next_url(client.get(f"/agents/{b['id']}/messages", params={"limit": 1}))
    assert by_rank and by_time and mailbox
    rank_cursor = by_rank.split("cursor=")[1]
    time_cursor = by_time.split("cursor=")[1]
    mailbox_cursor = mailbox.split("cursor=")[1]
    for order, cursor in (("newest", rank_cursor), ("relevance", time_cursor),
                          ("relevance", mailbox_cursor), ("newest", mailbox_cursor)):  # fmt: skip
        response = client.get(url, params={"q": "lychee", "order": order, "cursor": cursor})
        assert_invalid(response, "query", "cursor")
    forged = rank_cursor[:-2] + ("AA" if not rank_cursor.endswith("AA") else "BB")
    assert_invalid(client.get(url, params={"q": "lychee", "cursor": forged}), "query", "cursor")


def test_unknown_and_malformed_agents(client: TestClient) -> None:
    assert_not_found(
        client.get(f"/agents/{UNKNOWN}/messages/search", params={"q": "x"}),
        "Agent not found",
    )
    assert_invalid(client.get("/agents/nope/messages/search", params={"q": "x"}), "path")
