"""Searching an agent's mail: full-text search over what it sent and received."""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import astuple
from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import json_response
from handlers.http_errors import NotFound
from handlers.mailbox import DIRECTIONS
from handlers.pagination import (
    NEWEST,
    decode_cursor,
    decode_ranked_cursor,
    encode_cursor,
    encode_ranked_cursor,
    fit,
    next_link,
)
from handlers.params import path_uuid, query
from queries import sql
from validation.errors import InvalidInput
from validation.query_params import SearchQuery
from validation.responses import SearchItem

# Cursors of the two orders are not interchangeable, nor with the mailbox's.
BY_RELEVANCE, BY_TIME = b"r", b"s"
NO_TERMS = (
    "The search has no word to look for: give at least one letter or digit "
    "(punctuation alone only separates words)"
)


class _Hit(SearchItem, frozen=True):
    """Row of the search statements: the item, its rank (0 in time order) and the page's
    bytes up to it."""

    rank: float
    page_bytes: int


async def search_messages(request: Request) -> Response:
    """The agent's sent and/or received messages matching `q`, best first or newest first."""
    agent_id = path_uuid(request, "agent_id")
    page = query(request, SearchQuery)
    sent, received = DIRECTIONS[page.direction]
    since, until = page.window()
    key = request.state.cursor_key
    by_relevance = page.order == "relevance"
    after_rank, (after_sent_at, after_id) = float("inf"), NEWEST
    if page.cursor is not None and by_relevance:
        after_rank, after_sent_at, after_id = decode_ranked_cursor(key, BY_RELEVANCE, page.cursor)
    elif page.cursor is not None:
        after_sent_at, after_id = decode_cursor(key, BY_TIME, page.cursor)
    statement = sql.search_messages_by_relevance if by_relevance else sql.search_messages_by_time
    async with request.state.pool.connection() as conn:
        if not await sql.count_search_terms.value(conn, q=page.q):
            raise InvalidInput.at(["query", "q"], NO_TERMS)
        # Planned for each search's own words: a generic plan cannot tell a rare word (read
        # the GIN index) from a common one (read the agent's mailbox instead).
        hits = await statement.all(
            conn,
            _Hit,
            prepare=False,
            q=page.q,
            agent_id=agent_id,
            sent=sent,
            received=received,
            conversation_id=page.conversation_id,
            since=since,
            until=until,
            after_rank=after_rank,
            after_sent_at=after_sent_at,
            after_id=after_id,
            limit=page.limit + 1,
            max_bytes=request.state.settings.max_response_bytes,
        )
        if not hits and not await sql.agent_exists.value(conn, agent_id=agent_id):
            raise NotFound("Agent not found")
    budget = request.state.settings.max_response_bytes
    kept, more = fit([(hit, hit.page_bytes) for hit in hits], page.limit, budget)
    headers = next_link(request, _cursor(key, by_relevance, kept[-1])) if more else None
    return json_response([SearchItem(*astuple(hit)[:-2]) for hit in kept], headers=headers)


def _cursor(key: bytes, by_relevance: bool, last: _Hit) -> str:
    at = datetime.fromisoformat(last.sent_at)
    if by_relevance:
        return encode_ranked_cursor(key, BY_RELEVANCE, last.rank, at, last.id)
    return encode_cursor(key, BY_TIME, at, last.id)
