"""Request and response bodies: reading a capped body, decoding it into a Struct, encoding JSON."""

from __future__ import annotations

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
        decoded = request.scope[DECODED] = decoder.decode(body)
    except msgspec.MsgspecError as error:
        raise InvalidInput.from_msgspec(error, "body", body, kind) from None
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
