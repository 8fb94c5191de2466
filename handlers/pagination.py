"""Keyset pagination: signed, opaque cursors, pages bounded by count and bytes, and the
RFC 8288 `Link` header.

A cursor names the last item of a page by its sort key (a timestamp or a
name, and an id; for search results by relevance, the rank before them). It
is signed with a key every replica shares (stored in the database), so a
cursor that the service did not issue is refused with 422.

A page holds at most `limit` items and stops early, before the item that
would take it past MAILROOM_MAX_RESPONSE_BYTES (its first item always
stays): the `Link` then continues after its last item. The statements count
the bytes of what a caller can make large (content, metadata, names) as a
running `page_bytes` and stop reading there, so neither PostgreSQL nor the
worker holds much more than a page.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from starlette.requests import Request

from validation.errors import InvalidInput

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Sort keys before the first page: past every real row in either direction.
NEWEST = (datetime(9999, 12, 31, tzinfo=UTC), UUID(int=(1 << 128) - 1))
OLDEST = (datetime(1, 1, 2, tzinfo=UTC), UUID(int=0))
_PAYLOAD = struct.Struct(">1sq16s")
# Search results by relevance: the rank (a float4 in PostgreSQL, exact in 4 bytes) first.
_RANKED = struct.Struct(">1sfq16s")
_SIG_BYTES = 16
_NAME_AT = 17  # a name cursor's payload: the scope byte, the id's 16 bytes, then the name


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, "sha256")[:_SIG_BYTES]  # one call: a stream signs each event


@functools.lru_cache(maxsize=4096)
def _seal(key: bytes, payload: bytes) -> str:
    """The payload and its signature, as URL-safe base64 without padding.

    Remembered for the last 4,096 payloads: a message to 1,000 recipients gives each
    of their streams the same event id, and signing it was a tenth of a fan-out's CPU.
    """
    return base64.urlsafe_b64encode(payload + _sign(key, payload)).rstrip(b"=").decode()


def _unseal(key: bytes, scope: bytes, cursor: str, loc: tuple[str, str]) -> bytes:
    """The payload of a cursor this service sealed for `scope` (scope byte included), or 422."""
    invalid = InvalidInput.at(list(loc), "Not a cursor this service issued")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    payload, signature = raw[:-_SIG_BYTES], raw[-_SIG_BYTES:]
    if len(raw) <= _SIG_BYTES or not hmac.compare_digest(signature, _sign(key, payload)):
        raise invalid
    if payload[:1] != scope:
        raise invalid
    return payload


def encode_cursor(key: bytes, scope: bytes, at: datetime, item_id: UUID) -> str:
    """An opaque cursor for the item sorted at (`at`, `item_id`)."""
    micros = (at - EPOCH) // timedelta(microseconds=1)
    return _seal(key, _PAYLOAD.pack(scope, micros, item_id.bytes))


def decode_cursor(
    key: bytes, scope: bytes, cursor: str, loc: tuple[str, str] = ("query", "cursor")
) -> tuple[datetime, UUID]:
    """The sort key inside a cursor this service issued for `scope`, or 422 at `loc`."""
    payload = _unseal(key, scope, cursor, loc)
    if len(payload) != _PAYLOAD.size:
        raise InvalidInput.at(list(loc), "Not a cursor this service issued")
    _, micros, id_bytes = _PAYLOAD.unpack(payload)
    return EPOCH + timedelta(microseconds=micros), UUID(bytes=id_bytes)


def encode_ranked_cursor(key: bytes, scope: bytes, rank: float, at: datetime, item_id: UUID) -> str:
    """An opaque cursor for the item sorted at (`rank`, `at`, `item_id`)."""
    micros = (at - EPOCH) // timedelta(microseconds=1)
    return _seal(key, _RANKED.pack(scope, rank, micros, item_id.bytes))


def decode_ranked_cursor(
    key: bytes, scope: bytes, cursor: str, loc: tuple[str, str] = ("query", "cursor")
) -> tuple[float, datetime, UUID]:
    """The (rank, time, id) inside a ranked cursor this service issued for `scope`, or 422."""
    payload = _unseal(key, scope, cursor, loc)
    if len(payload) != _RANKED.size:
        raise InvalidInput.at(list(loc), "Not a cursor this service issued")
    _, rank, micros, id_bytes = _RANKED.unpack(payload)
    return rank, EPOCH + timedelta(microseconds=micros), UUID(bytes=id_bytes)


def encode_name_cursor(key: bytes, scope: bytes, name: str, item_id: UUID) -> str:
    """An opaque cursor for the item sorted at (`name`, `item_id`): the name travels in it,
    so a page goes on from where the last one ended even if that agent is renamed since."""
    return _seal(key, scope + item_id.bytes + name.encode())


def name_page_start(request: Request, scope: bytes, cursor: str | None) -> tuple[str, UUID]:
    """Where a page sorted by name starts: after the cursor, or before every name (a name
    is never empty)."""
    if cursor is None:
        return "", OLDEST[1]
    payload = _unseal(request.state.cursor_key, scope, cursor, ("query", "cursor"))
    if len(payload) < _NAME_AT:
        raise InvalidInput.at(["query", "cursor"], "Not a cursor this service issued")
    return payload[_NAME_AT:].decode(), UUID(bytes=payload[1:_NAME_AT])


def page_start(
    request: Request, scope: bytes, cursor: str | None, descending: bool
) -> tuple[datetime, UUID]:
    """Where the requested page starts: after the cursor, or at the very beginning."""
    if cursor is None:
        return NEWEST if descending else OLDEST
    return decode_cursor(request.state.cursor_key, scope, cursor)


def fit(rows: list[tuple[T, int]], limit: int, max_bytes: int) -> tuple[list[T], bool]:
    """The page in `rows`, and whether more items follow it.

    `rows` pairs each item with `page_bytes`, the page's bytes up to and
    including it, and comes from a statement that reads at most limit + 1 rows
    and stops after the first row whose predecessors already pass `max_bytes`
    (but not before two): so a row left over after the page means more follow.
    """
    kept = 0
    for _, through in rows[:limit]:
        if kept and through > max_bytes:
            break
        kept += 1
    return [item for item, _ in rows[:kept]], len(rows) > kept


def time_cursor(request: Request, scope: bytes, at: str, item_id: UUID) -> str:
    """The cursor of the item sorted at `at` (a timestamp's text) and `item_id`."""
    return encode_cursor(request.state.cursor_key, scope, datetime.fromisoformat(at), item_id)


def cut_page(
    request: Request,
    scope: bytes,
    rows: list[tuple[T, int]],
    limit: int,
    key: Callable[[T], tuple[str, UUID]],
) -> tuple[list[T], dict[str, str] | None]:
    """The page in `rows` (see fit) and its Link header when more remain.

    `key` gives an item's sort key: its timestamp text and id.
    """
    items, more = fit(rows, limit, request.state.settings.max_response_bytes)
    if not more:
        return items, None
    return items, next_link(request, time_cursor(request, scope, *key(items[-1])))


def next_link(request: Request, cursor: str) -> dict[str, str]:
    """The RFC 8288 header naming the next page: this request's URL with `cursor`."""
    url = request.url.include_query_params(cursor=cursor)
    return {"Link": f'<{url}>; rel="next"'}
