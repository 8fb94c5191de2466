"""Query parameters: one Struct per route's query string, its limits written once on the fields.

handlers/params.py decodes a request's query string into the route's Struct
(422 at ["query", name] for a bad value) and validation/openapi.py derives the
route's documented parameters from the same Struct. Parameters a route does not
know are ignored, as FastAPI does.
"""

from __future__ import annotations

from typing import Annotated, Literal

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
