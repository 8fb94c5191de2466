"""Query parameters: one Struct per route's query string, its limits written once on the fields.

handlers/params.py decodes a request's query string into the route's Struct
(422 at ["query", name] for a bad value) and validation/openapi.py derives the
route's documented parameters from the same Struct. Parameters a route does not
know are ignored, as FastAPI does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

Limit = Annotated[int, Meta(ge=1, le=1000, description="Items per page")]
Cursor = Annotated[str, Meta(description="Opaque cursor from a Link rel=next header")]
Order = Annotated[Literal["desc", "asc"], Meta(description="Order by sent_at")]
Direction = Annotated[
    Literal["all", "sent", "received"],
    Meta(description="Which messages: sent, received, or both"),
]
MAX_WAIT = 60  # seconds: the longest long-poll (proxies in front must wait longer)
Wait = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_WAIT,
        description="Seconds to wait for a message when none is there (long-poll)",
    ),
]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every query Struct."""


class Page(Query, frozen=True, kw_only=True):
    """A page of a keyset-paginated list."""

    limit: Limit = 100
    cursor: Cursor | None = None


class MailboxQuery(Page, frozen=True, kw_only=True):
    """GET /agents/{agent_id}/messages."""

    direction: Direction = "all"
    order: Order = "desc"


class UnreadQuery(Page, frozen=True, kw_only=True):
    """GET /agents/{agent_id}/messages/unread."""

    order: Order = "desc"
    wait: Wait = 0


class StreamQuery(Query, frozen=True, kw_only=True):
    """GET /agents/{agent_id}/messages/stream (the Last-Event-ID header wins over `after`)."""

    after: Annotated[str, Meta(description="Resume after this cursor (an event id)")] | None = None


class RetireQuery(Query, frozen=True, kw_only=True):
    """DELETE /agents/{agent_id}."""

    purge: Annotated[
        bool,
        Meta(
            description=(
                "Also erase what only this agent held (admin only): its received copies, "
                "metadata, keys and row; what it sent stays with its recipients, sender null"
            )
        ),
    ] = False


class DetailsQuery(Page, frozen=True, kw_only=True):
    """GET /conversations/{conversation_id}/details: a page of its messages, oldest first.

    The default is the most, 1000: a conversation within it (and within
    MAILROOM_MAX_RESPONSE_BYTES) answers whole, as the original did.
    """

    limit: Annotated[int, Meta(ge=1, le=1000, description="Messages per page")] = 1000


class ConversationsQuery(Page, frozen=True, kw_only=True):
    """GET /conversations."""

    archived: Annotated[bool, Meta(description="Only archived (true) or active (false)")] | None = (
        None
    )


SearchText = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=1000,
        pattern="^[^\\x00]*$",  # PostgreSQL text holds no NUL
        description=(
            'Words to find, in web-search syntax: "a phrase", `or`, `-excluded`; any other '
            "punctuation joins the parts of one term (build-1234, app.config, a/b.py)"
        ),
    ),
]
Instant = Annotated[
    datetime,
    Meta(
        description="RFC 3339; without an offset it is taken as UTC",
        extra_json_schema={"format": "date-time"},
    ),
]


class SearchQuery(Page, frozen=True, kw_only=True):
    """GET /agents/{agent_id}/messages/search."""

    q: SearchText
    order: Annotated[
        Literal["relevance", "newest"],
        Meta(description="Best match first (newest first among equals), or newest first"),
    ] = "relevance"
    direction: Direction = "all"
    conversation_id: (
        Annotated[UUID, Meta(description="Only messages of this conversation")] | None
    ) = None
    since: Annotated[Instant, Meta(description="Only messages sent at or after")] | None = None
    until: Annotated[Instant, Meta(description="Only messages sent before")] | None = None

    def window(self) -> tuple[datetime | None, datetime | None]:
        """`since` and `until` as instants: a time without an offset is UTC."""
        return _utc(self.since), _utc(self.until)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class DirectoryQuery(Page, frozen=True, kw_only=True):
    """GET /agents."""

    name: (
        Annotated[
            str,
            Meta(
                max_length=255,
                pattern="^[^\\x00]*$",
                description="Only agents whose name starts with this, ignoring case",
            ),
        ]
        | None
    ) = None


class DeliveriesQuery(Page, frozen=True, kw_only=True):
    """GET /agents/{agent_id}/deliveries, newest first."""

    status: (
        Annotated[
            Literal["pending", "delivered", "dead"],
            Meta(description="Only deliveries in this state; all when left out"),
        ]
        | None
    ) = None
