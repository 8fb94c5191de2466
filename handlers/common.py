"""What every handler shares: reading input, encoding output, HTTP errors."""

from __future__ import annotations

import re
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from msgspec import UNSET
from psycopg import AsyncConnection
from psycopg.types.json import Json
from starlette.requests import Request
from starlette.responses import Response

from queries import Query
from validation.errors import InvalidInput
from validation.requests import Input

S = TypeVar("S", bound=Input)
T = TypeVar("T")

ENCODER = msgspec.json.Encoder()
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}
_DECODED = "mailroom.body"  # scope key of the decoded body


class HTTPError(Exception):
    """An error response with a `{"detail": sentence}` body."""

    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class Unauthorized(HTTPError):
    """No key, or one that is not valid: the client should authenticate."""

    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class TooManyRequests(HTTPError):
    status_code = 429


class NotFound(HTTPError):
    status_code = 404


class Forbidden(HTTPError):
    status_code = 403


class Conflict(HTTPError):
    status_code = 409


class PayloadTooLarge(HTTPError):
    status_code = 413


class Timeout(HTTPError):
    status_code = 408


async def one_or_404(
    query: Query, conn: AsyncConnection, row: type[T], missing: str, /, **params: Any
) -> T:
    """The row `query` finds, or 404 with `missing` as its detail ("Agent not found")."""
    found = await query.one(conn, row, **params)
    if found is None:
        raise NotFound(missing)
    return found


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Encode `content` (Structs, lists, dicts) with the shared msgspec encoder."""
    return Response(
        ENCODER.encode(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


async def read_body(request: Request) -> bytes:
    """The request body, refusing more than the configured number of bytes (413)."""
    limit: int = request.state.settings.max_body_bytes
    too_large = PayloadTooLarge(f"Request body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise too_large
    return bytes(chunks)


async def decode(request: Request, kind: type[S]) -> S:
    """Decode and validate a JSON body into `kind`, or raise InvalidInput (422).

    The result is kept on the request: an authorization rule that read the body
    and the handler that runs next share one decoding.
    """
    decoded = request.scope.get(_DECODED)
    if type(decoded) is kind:
        return decoded
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    body = await read_body(request)
    try:
        decoded = request.scope[_DECODED] = decoder.decode(body)
    except msgspec.MsgspecError as error:
        raise InvalidInput.from_msgspec(error) from None
    except UnicodeDecodeError:
        raise InvalidInput.at(["body"], "Body is not valid UTF-8", "json_invalid") from None
    except RecursionError:
        raise InvalidInput.at(["body"], "JSON is nested too deeply", "json_invalid") from None
    return decoded


async def decode_update(request: Request, kind: type[S]) -> S:
    """Like decode, for a PUT: at least one field must be sent."""
    update = await decode(request, kind)
    if not update.sent_fields():
        raise InvalidInput.at(["body"], "Send at least one field to change", "missing")
    return update


def path_uuid(request: Request, name: str) -> UUID:
    """A UUID path parameter, or 422 naming it."""
    raw = request.path_params[name]
    # Only the canonical 8-4-4-4-12 spelling: Python's UUID() would also take
    # braces, a urn: prefix or hyphens anywhere.
    if not _UUID_TEXT.fullmatch(raw):
        raise InvalidInput.at(["path", name], f"Not a valid UUID: {raw!r}", "uuid_parsing")
    return UUID(raw)


def path_int(request: Request, name: str) -> int:
    """An integer path parameter, or 422 naming it."""
    raw = request.path_params[name]
    text = raw.removeprefix("-")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidInput.at(["path", name], f"Not a valid integer: {raw!r}", "int_parsing")
    return int(raw)


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str:
    """A query parameter that must be one of `choices`; the first is the default."""
    value = request.query_params.get(name, choices[0])
    if value not in choices:
        allowed = ", ".join(choices)
        raise InvalidInput.at(["query", name], f"Must be one of: {allowed}", "enum")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or not low <= int(raw) <= high:
        raise InvalidInput.at(
            ["query", name], f"Must be an integer from {low} to {high}", "value_error"
        )
    return int(raw)


def query_bool(request: Request, name: str) -> bool | None:
    """An optional true/false query parameter."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise InvalidInput.at(["query", name], "Must be true or false", "bool_parsing")
    return raw == "true"


def json_param(value: Any) -> Json | None:
    """A JSON object parameter; None stays SQL NULL.

    The columns are `json`, not `jsonb`: json keeps the client's key order and
    number spelling, so an object is returned unchanged (jsonb rewrites 1e300).
    """
    return None if value is None or value is UNSET else Json(value)


def create_params(body: Input, json_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """Query parameters from a create body: one per field."""
    params = msgspec.structs.asdict(body)
    for name in json_fields:
        params[name] = json_param(params[name])
    return params


def update_params(body: Input, json_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """Query parameters from a partial update: each field plus a `set_<field>` flag."""
    params: dict[str, Any] = {}
    for name in body.__struct_fields__:
        value = getattr(body, name)
        params[f"set_{name}"] = value is not UNSET
        params[name] = (
            json_param(value) if name in json_fields else (None if value is UNSET else value)
        )
    return params
