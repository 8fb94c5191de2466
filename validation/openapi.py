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
    403: "The agent may not see this resource",
    404: "A resource named in the path does not exist",
    405: "Method not allowed",
    408: "The command timed out",
    409: "Duplicate key, or a reference to a row that does not exist",
    413: "Body larger than the limit (1 MiB by default)",
    422: "Invalid input",
    503: "Database unavailable; retry after the Retry-After header's seconds",
}


class Param(NamedTuple):
    """A query (or, with `where="header"`, header) parameter."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"


class Operation(NamedTuple):
    """One (method, path) of the API as the documentation shows it."""

    method: str
    path: str
    summary: str
    response: Any = None
    status: int = 200
    body: type | None = None
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    tag: str = "core"
    media_type: str = "application/json"


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
        for code in op.errors:
            body = ValidationErrorBody if code == 422 else ErrorDetail
            responses[str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {"application/json": {"schema": by_type[body]}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.method.lower() + _NOT_WORD.sub("_", op.path.lower()).rstrip("_"),
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.body]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components},
    }
