"""Helpers shared by the tests: types, Link headers, pages, error bodies, timestamps, streams,
logs."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql as pgsql
from starlette.testclient import TestClient

# An object of the API as JSON, and the `db` fixture's connection (rows as dicts).
Item = dict[str, Any]
Db = psycopg.Connection[dict[str, Any]]
# A well-formed id that no row has.
UNKNOWN = "00000000-0000-4000-8000-000000000000"
# How long a stream test waits for one event.
EVENT_SECONDS = 10
# RFC 8288 as the contract writes it: `<url>; rel="next"`.
NEXT_LINK = re.compile(r'^<(?P<url>[^<>]+)>;\s*rel="next"$')
# RFC 3339 in UTC with microseconds, as API.md's Conventions require.
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)$")


def next_url(response: httpx.Response) -> str | None:
    """The URL of the `Link: <...>; rel="next"` header, or None when there is none."""
    link = response.headers.get("link")
    if link is None:
        return None
    found = NEXT_LINK.match(link)
    assert found, f"not an RFC 8288 rel=next Link header: {link!r}"
    return found["url"]


def query_of(url: str) -> dict[str, list[str]]:
    """The query parameters of a URL."""
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def cursor_of(url: str) -> str:
    """The `cursor` parameter of a next-page URL."""
    (cursor,) = query_of(url)["cursor"]
    return cursor


def walk(
    client: TestClient,
    url: str,
    between: Callable[[], object] | None = None,
    max_pages: int = 500,
) -> list[list[dict[str, Any]]]:
    """Every page from `url` on, following rel="next"; `between` runs before each next fetch."""
    pages = []
    next_page: str | None = url
    while next_page is not None:
        assert len(pages) < max_pages, "the next links never end"
        response = client.get(next_page)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_page = next_url(response)
        if next_page is not None and between is not None:
            between()
    return pages


def ids(items: list[dict[str, Any]]) -> list[str]:
    """The `id` of each item, in order."""
    return [item["id"] for item in items]


def assert_invalid(response: httpx.Response, *loc: str | int) -> None:
    """A 422 in the FastAPI shape; with `loc`, one error is located there (or below it)."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for error in detail:
        assert isinstance(error["type"], str) and isinstance(error["msg"], str), error
        assert isinstance(error["loc"], list), error
    if loc:
        assert any(error["loc"][: len(loc)] == list(loc) for error in detail), detail


def assert_not_found(response: httpx.Response, detail: str) -> None:
    """A 404 with the contract's sentence."""
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": detail}


def instant(timestamp: str) -> datetime:
    """An RFC 3339 timestamp from a response as an aware datetime."""
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.tzinfo is not None, timestamp
    return parsed


# MAILROOM_MAX_RESPONSE_BYTES of the `small_pages` app (conftest.py).
SMALL_PAGE_BYTES = 20_000

# The fields of a message as the API returns it (API.md).
MESSAGE_FIELDS = {
    "id",
    "sender_id",
    "sent_at",
    "parent_message_id",
    "conversation_id",
    "content",
    "message_type",
    "importance",
    "status",
    "msg_metadata",
    "updated_at",
}


def db_now(db: Db) -> datetime:
    """The database's clock, which stamps every row."""
    return db.execute("SELECT clock_timestamp() AS now").fetchone()["now"]


def with_database(url: str, name: str) -> str:
    """The same server URL, naming another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextmanager
def temporary_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin_url = with_database(server_url, "postgres")
    identifier = pgsql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(identifier))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))


class Event:
    """One Server-Sent Event (or a comment line, as kind 'comment')."""

    def __init__(self, kind: str, data: str = "", event_id: str | None = None) -> None:
        self.kind, self.data, self.id = kind, data, event_id

    def json(self) -> Any:
        return json.loads(self.data)


class Stream:
    """An SSE client over a real socket: events parsed as they arrive."""

    def __init__(
        self, base_url: str, agent_id: str, params: dict[str, str] | None = None, **headers: str
    ) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=EVENT_SECONDS))
        self.context = self.client.stream(
            "GET", f"/agents/{agent_id}/messages/stream", params=params, headers=headers
        )
        self.response = self.context.__enter__()
        self.lines = self.response.iter_lines()

    def next(self, include_comments: bool = False) -> Event:
        """The next event; heartbeats alone do not keep a test waiting past EVENT_SECONDS."""
        deadline = time.monotonic() + EVENT_SECONDS
        fields: dict[str, str] = {}
        for line in self.lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event within {EVENT_SECONDS} s")
            if line.startswith(":"):
                if include_comments:
                    return Event("comment", line[1:].strip())
                continue
            if line == "":
                if "event" in fields or "data" in fields:
                    return Event(
                        fields.get("event", "message"), fields.get("data", ""), fields.get("id")
                    )
                fields.clear()
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    def messages(self, count: int) -> list[Event]:
        events = [self.next() for _ in range(count)]
        assert all(event.kind == "message" for event in events), [e.kind for e in events]
        return events

    def close(self) -> None:
        self.context.__exit__(None, None, None)
        self.client.close()


class LogRecords(logging.Handler):
    """The records one logger (and its children) writes inside the block, for a test to read."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]

    def __enter__(self) -> LogRecords:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
