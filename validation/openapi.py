"""The OpenAPI 3.1 document, generated from the same Structs that validate requests."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec

from validation.responses import ErrorDetail, ValidationErrorBody

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
# Writes are rate limited per caller.
_RATE_LIMITED = {"POST", "PUT"}
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


class Param(NamedTuple):
    """A query (or, with `where="header"`, header) parameter."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"


class Operation(NamedTuple):
    """One (method, path) of the API as the documentation shows it.

    `errors` lists the statuses particular to the operation, each a code (body
    `{"detail": ...}`, or the 422 list) or a (code, body type) pair. The rest
    are derived: 401 and 403 unless `public`, 413 with a body, 429 on writes,
    503 when it uses the database (whose 422 then also covers a statement that
    ran out of time or memory).
    """

    method: str
    path: str
    summary: str
    response: Any = None
    status: int = 200
    body: type | None = None
    errors: tuple[int | tuple[int, Any], ...] = ()
    query: tuple[Param, ...] = ()
    tag: str = "core"
    media_type: str = "application/json"
    public: bool = False
    database: bool = True

    def error_bodies(self) -> dict[int, Any]:
        """Every error status the operation can answer, with the type of its body."""
        codes: dict[int, Any] = {}
        if not self.public:
            codes[401] = codes[403] = ErrorDetail
        if self.body is not None:
            codes[413] = ErrorDetail
        if self.method in _RATE_LIMITED:
            codes[429] = ErrorDetail
        if self.database:
            codes[503] = ErrorDetail
        for error in self.errors:
            code, body = error if isinstance(error, tuple) else (error, None)
            codes[code] = body or (ValidationErrorBody if code == 422 else ErrorDetail)
        return dict(sorted(codes.items()))


LIMIT = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Items per page"
)
CURSOR = Param("cursor", {"type": "string"}, "Opaque cursor from a Link rel=next header")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "Same key and body within 24 h: the original 201 response, nothing stored twice; "
    "same key with another body: 422",
    "header",
)
ORDER = Param("order", {"enum": ["desc", "asc"], "default": "desc"}, "Order by sent_at")


def build(title: str, version: str, description: str, operations: list[Operation]) -> dict:
    """The whole document as a dict, ready to encode once."""
    types: set[Any] = {ErrorDetail, ValidationErrorBody}
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
                "schema": {"type": "integer"}
                if name == "user_id"
                else {"type": "string", "format": "uuid"},
            }
            for name in _PATH_PARAM.findall(op.path)
        ]
        parameters += [
            {
                "name": p.name,
                "in": p.where,
                "required": False,
                "schema": p.schema,
                "description": p.description,
            }
            for p in op.query
        ]
        responses: dict[str, Any] = {
            str(op.status): {
                "description": "Success",
                **(
                    {"content": {op.media_type: {"schema": by_type[op.response]}}}
                    if op.response is not None
                    else {}
                ),
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
            "operationId": op.method.lower() + _NOT_WORD.sub("_", op.path.lower()).rstrip("_"),
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.public:
            operation["security"] = []
        if op.body is not None:
            if op.method == "PUT":
                # A partial update names at least one field (handlers.common.decode_update).
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
