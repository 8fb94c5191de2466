"""Request and response bodies: reading a capped body, decoding it into a Struct, encoding JSON."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from handlers.http_errors import PayloadTooLarge
from validation.errors import InvalidInput
from validation.requests import Input

S = TypeVar("S", bound=Input)

ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}
# Scope key of the decoded body: decode() keeps it there, and a tool call of /mcp
# (tools/calls.py) puts the body it built from its arguments there.
DECODED = "mailroom.body"
# msgspec refusing a float for a top-level int field (every int of a request body is one).
_FLOAT_FOR_INT = re.compile(r"Expected `int(?: \| null)?`, got `float` - at `\$\.(?P<field>\w+)`")


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
    decoded = request.scope.get(DECODED)
    if type(decoded) is kind:
        return decoded
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    body = await read_body(request)
    try:
        try:
            decoded = decoder.decode(body)
        except msgspec.ValidationError as error:
            decoded = _with_integral_floats(body, kind, error)
    except msgspec.MsgspecError as error:
        raise InvalidInput.from_msgspec(error, "body", body, kind) from None
    except UnicodeDecodeError:
        raise InvalidInput.at(["body"], "Body is not valid UTF-8", "json_invalid") from None
    except RecursionError:
        raise InvalidInput.at(["body"], "JSON is nested too deeply", "json_invalid") from None
    request.scope[DECODED] = decoded
    return decoded


def _with_integral_floats(body: bytes, kind: type[S], error: msgspec.ValidationError) -> S:
    """Decode again, taking an integral float (5.0) for an int field, as pydantic does;
    raise the error that remains.

    Clients of the original send 5.0 where an int is due (JSON Schema counts 5.0 as an
    integer too). Only the fields msgspec refused change, so a 1.0 inside a JSON object
    field stays a float; a float with a fraction is still 422.
    """
    data: dict[str, Any] | None = None
    while found := _FLOAT_FOR_INT.fullmatch(str(error)):
        data = msgspec.json.decode(body) if data is None else data
        number = data.get(found["field"])
        if not (isinstance(number, float) and number.is_integer()):
            break
        data[found["field"]] = int(number)
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as again:
            error = again
    raise error


async def decode_update(request: Request, kind: type[S]) -> S:
    """Like decode, for a PUT: at least one field must be sent."""
    update = await decode(request, kind)
    if not update.sent_fields():
        raise InvalidInput.at(["body"], "Send at least one field to change", "missing")
    return update
