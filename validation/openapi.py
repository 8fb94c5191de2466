"""The OpenAPI 3.1 document, generated from the same Structs that validate requests."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from validation.responses import ErrorDetail, ValidationErrorBody

if TYPE_CHECKING:
    from handlers.operation import Operation

_PATH_PARAM = re.compile(r"{(\w+)}")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_REF = "#/components/schemas/{name}"
_ERROR_TEXT = {
    401: "No API key, or one the service does not know",
    403: "The key is valid but does not grant access to this resource (another agent's)",
    404: "A resource named in the path does not exist",
    405: "Method not allowed",
    408: "The command timed out",
    409: "Duplicate key, or a reference to a row that does not exist",
    413: "Body larger than the limit (1 MiB by default)",
    422: "Invalid input",
    429: "Too many requests from this caller; retry after the Retry-After header's seconds",
    503: "Database unavailable; retry after the Retry-After header's seconds",
}
# What a status also means on an operation that runs statements (handlers/errors.py):
# a statement that ran out of time (statement_timeout) or memory is 422 with type
# too_expensive and no Retry-After, since the same request fails the same way.
_DATABASE_ERROR_TEXT = {
    422: "Invalid input; or (type too_expensive) the request needs more database time or"
    " memory than one request may use: ask for less (a smaller limit, fewer items)"
    " instead of retrying it unchanged",
    503: "Database unreachable, or no connection free within the pool timeout; retry after"
    " the Retry-After header's seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_ERROR_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: Bearer",
            "required": True,
            "schema": {"type": "string", "pattern": "^Bearer"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
# The response header of a paginated list (a route with a `cursor` parameter).
_LINK = {
    "Link": {
        "description": 'RFC 8288: `<url>; rel="next"`, the URL of the next page (its `cursor`'
        " parameter is opaque: follow the URL as given). Absent on the last page.",
        "required": False,
        "schema": {"type": "string", "pattern": '^<[^>]+>; rel="next"$'},
    }
}
EVENT_STREAM = "text/event-stream"
# The `itemSchema` of OpenAPI 3.2's sequential media types, carried as an extension: in
# OpenAPI 3.1 the schema of a text/event-stream body describes the text, not its events.
ITEM_SCHEMA = "x-itemSchema"
SECURITY_SCHEME = "bearer"
_SECURITY_SCHEMES = {
    SECURITY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`: an agent's API key (returned once by"
        " POST /agents, replaced by POST /agents/{agent_id}/api-key) or the admin token"
        " (MAILROOM_ADMIN_TOKEN). Not checked when the service runs with MAILROOM_AUTH=off.",
    }
}


# handlers/params.path_int reads up to 18 digits (int() of a longer text is slow): a longer
# id is 422, and the document says so.
USER_ID = {"type": "integer", "minimum": -(10**18 - 1), "maximum": 10**18 - 1}


class Header(NamedTuple):
    """A request header an operation reads (query parameters come from its query Struct)."""

    name: str
    schema: dict[str, Any]
    description: str


IDEMPOTENCY_KEY = Header(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "Same key and body within 24 h: the original 201 response, nothing stored twice; "
    "same key with another body: 422",
)
LAST_EVENT_ID = Header(
    "Last-Event-ID", {"type": "string"}, "Resume after this event id (wins over after)"
)


def query_parameters(kind: type | None) -> list[dict[str, Any]]:
    """The documented query parameters of a query Struct, in field order."""
    if kind is None:
        return []
    _, components = msgspec.json.schema_components([kind], ref_template=_REF)
    properties = components[kind.__name__]["properties"]
    required = set(components[kind.__name__].get("required", ()))  # the fields without default
    parameters = []
    for name, field_schema in properties.items():
        field_schema = dict(field_schema)
        # `X | None` documents as anyOf [X, null]; an absent parameter is the None.
        options = field_schema.pop("anyOf", None)
        if options is not None:
            field_schema |= next(o for o in options if o.get("type") != "null")
        description = field_schema.pop("description", "")
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": field_schema,
                "description": description,
            }
        )
    return parameters


def _operation_id(op: Operation) -> str:
    return op.method.lower() + _NOT_WORD.sub("_", op.path.lower()).rstrip("_")


def _json_data(schema: dict[str, Any]) -> dict[str, Any]:
    """An event's `data` field: text holding a JSON document that `schema` describes."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _event_stream(item: dict[str, Any], item_name: str, end: dict[str, Any]) -> dict[str, Any]:
    """The media type object of a stream of Server-Sent Events carrying `item`s.

    The body is text, never one JSON document: a generated client reads it as a
    string, and parses each event's `data` as JSON (the `x-itemSchema` says how).
    """
    return {
        "schema": {
            "type": "string",
            "description": "Server-Sent Events (text/event-stream), not JSON. Each `message`"
            f" event carries one {item_name} as JSON in `data:` and its cursor in `id:` (resume"
            " with the Last-Event-ID header or ?after=). Another event name (`revoked`,"
            ' `shutdown`) is the last one: its `data:` is `{"detail": sentence}`. The first'
            " event also carries `retry:` (milliseconds before reconnecting). Lines starting"
            " with `:` are comments (heartbeats) to ignore. `x-itemSchema` describes one event.",
        },
        ITEM_SCHEMA: {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
                "data": {"type": "string"},
            },
            "oneOf": [
                {
                    "required": ["id"],
                    "properties": {"event": {"const": "message"}, "data": _json_data(item)},
                },
                {
                    "properties": {"event": {"not": {"const": "message"}}, "data": _json_data(end)},
                },
            ],
        },
    }


def _page_headers(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The headers of a success answer: `Link` on a paginated list (it takes a cursor)."""
    paginated = any(p["in"] == "query" and p["name"] == "cursor" for p in parameters)
    return {"headers": _LINK} if paginated else {}


def _links(op: Operation, operations: list[Operation]) -> dict[str, Any]:
    """OpenAPI links from a create's response to every operation that takes the new id."""
    if op.creates is None:
        return {}
    placeholder = "{" + op.creates + "}"
    return {
        "links": {
            _operation_id(target): {
                "operationId": _operation_id(target),
                "parameters": {op.creates: "$response.body#/id"},
                "description": f"The created resource's `id` is `{op.creates}` of {target.method}"
                f" {target.path}",
            }
            for target in operations
            if placeholder in target.path
        }
    }


def build(title: str, version: str, description: str, operations: Sequence[Operation]) -> dict:
    """The whole document as a dict, ready to encode once."""
    types: set[Any] = {ErrorDetail, ValidationErrorBody}
    operations = [op for op in operations if op.documented]
    for op in operations:
        types.update(t for t in (op.body, op.response) if t is not None)
        types.update(op.error_bodies().values())
    ordered = sorted(types, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    by_type = dict(zip(ordered, schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": USER_ID if name == "user_id" else {"type": "string", "format": "uuid"},
            }
            for name in _PATH_PARAM.findall(op.path)
        ]
        parameters += query_parameters(op.query)
        parameters += [
            {"name": h.name, "in": "header", "required": False, "schema": h.schema,
             "description": h.description}
            for h in op.headers
        ]  # fmt: skip
        if op.response is None:
            content = {}
        elif op.media_type == EVENT_STREAM:
            stream = _event_stream(by_type[op.response], op.response.__name__, by_type[ErrorDetail])
            content = {"content": {op.media_type: stream}}
        else:
            content = {"content": {op.media_type: {"schema": by_type[op.response]}}}
        responses: dict[str, Any] = {
            str(op.status): {
                "description": "Success",
                **_page_headers(parameters),
                **content,
                **_links(op, operations),
            }
        }
        for code, body in op.error_bodies().items():
            text = _DATABASE_ERROR_TEXT.get(code) if op.database else None
            responses[str(code)] = {
                "description": text or _ERROR_TEXT[code],
                **({"headers": _ERROR_HEADERS[code]} if code in _ERROR_HEADERS else {}),
                "content": {"application/json": {"schema": by_type[body]}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.public:
            operation["security"] = []
        if op.body is not None:
            if op.method == "PUT":
                # A partial update names at least one field (handlers.bodies.decode_update).
                components[op.body.__name__]["minProperties"] = 1
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.body]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
        "security": [{SECURITY_SCHEME: []}],
    }
