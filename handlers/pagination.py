"""Keyset pagination: signed, opaque cursors and the RFC 8288 `Link` header.

A cursor names the last item of a page by its sort key (a timestamp and an
id; for search results by relevance, the rank before them). It is signed with
a key every replica shares (stored in the database), so a cursor that the
service did not issue is refused with 422.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
# Results by relevance: the rank (a float4 in PostgreSQL, so exact in 4 bytes) goes first.
_RANKED = struct.Struct(">1sfq16s")
_SIG_BYTES = 16


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_SIG_BYTES]


def _seal(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload + _sign(key, payload)).rstrip(b"=").decode()


def _unseal(
    key: bytes, cursor: str, layout: struct.Struct, scope: bytes, loc: tuple[str, str]
) -> tuple:
    """The fields of a cursor this service signed with `layout` for `scope`, or 422 at `loc`."""
    invalid = InvalidInput.at(list(loc), "Not a cursor this service issued")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    payload, signature = raw[: layout.size], raw[layout.size :]
    if len(raw) != layout.size + _SIG_BYTES or not hmac.compare_digest(
        signature, _sign(key, payload)
    ):
        raise invalid
    fields = layout.unpack(payload)
    if fields[0] != scope:
        raise invalid
    return fields[1:]


def _micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def encode_cursor(key: bytes, scope: bytes, at: datetime, item_id: UUID) -> str:
    """An opaque cursor for the item sorted at (`at`, `item_id`)."""
    return _seal(key, _PAYLOAD.pack(scope, _micros(at), item_id.bytes))


def decode_cursor(
    key: bytes, scope: bytes, cursor: str, loc: tuple[str, str] = ("query", "cursor")
) -> tuple[datetime, UUID]:
    """The sort key inside a cursor this service issued for `scope`, or 422 at `loc`."""
    micros, id_bytes = _unseal(key, cursor, _PAYLOAD, scope, loc)
    return EPOCH + timedelta(microseconds=micros), UUID(bytes=id_bytes)


def encode_ranked_cursor(key: bytes, scope: bytes, rank: float, at: datetime, item_id: UUID) -> str:
    """An opaque cursor for the item sorted at (`rank`, `at`, `item_id`)."""
    return _seal(key, _RANKED.pack(scope, rank, _micros(at), item_id.bytes))


def decode_ranked_cursor(
    key: bytes, scope: bytes, cursor: str, loc: tuple[str, str] = ("query", "cursor")
) -> tuple[float, datetime, UUID]:
    """The (rank, time, id) inside a ranked cursor this service issued for `scope`, or 422."""
    rank, micros, id_bytes = _unseal(key, cursor, _RANKED, scope, loc)
    return rank, EPOCH + timedelta(microseconds=micros), UUID(bytes=id_bytes)


def page_start(
    request: Request, scope: bytes, cursor: str | None, descending: bool
) -> tuple[datetime, UUID]:
    """Where the requested page starts: after the cursor, or at the very beginning."""
    if cursor is None:
        return NEWEST if descending else OLDEST
    return decode_cursor(request.state.cursor_key, scope, cursor)


def cut_page(
    request: Request, scope: bytes, rows: list[T], limit: int, key: Callable[[T], tuple[str, UUID]]
) -> dict[str, str] | None:
    """Trim `rows` (fetched as limit + 1) to a page; the Link header when more remain.

    `key` gives a row's sort key: its timestamp text and id.
    """
    if len(rows) <= limit:
        return None
    del rows[limit:]
    at, item_id = key(rows[-1])
    cursor = encode_cursor(request.state.cursor_key, scope, datetime.fromisoformat(at), item_id)
    return next_link(request, cursor)


def next_link(request: Request, cursor: str) -> dict[str, str]:
    """The Link header pointing at the page after `cursor`."""
    url = request.url.include_query_params(cursor=cursor)
    return {"Link": f'<{url}>; rel="next"'}
