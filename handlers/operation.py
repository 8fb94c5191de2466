"""One row of the operation table: a (method, path), who may call it, what answers, its Structs.

service.py lists every operation once. From a row come both the Starlette
route (the handler behind its guard) and the operation's entry in the OpenAPI
document (validation/openapi.py), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from access.authentication import Handler, Rule, guard
from validation.openapi import Header
from validation.query_params import Query
from validation.responses import ErrorDetail, ValidationErrorBody

# Methods whose calls take a token from the caller's rate limit ("write" bucket): every
# method that changes something, DELETE too (it writes as much as a PUT).
RATE_LIMITED = frozenset({"POST", "PUT", "DELETE"})


class Operation(NamedTuple):
    """One (method, path) of the API.

    `rule` None makes the operation public (no key needed); otherwise the admin
    or an agent the rule lets through may call it. `errors` lists the statuses
    particular to the operation, each a code (body `{"detail": ...}`, or the 422
    list) or a (code, body type) pair; the rest are derived in error_bodies().
    """

    method: str
    path: str
    handler: Handler
    summary: str
    rule: Rule | None = None
    response: Any = None
    status: int = 200
    body: type | None = None
    query: type[Query] | None = None
    headers: tuple[Header, ...] = ()
    errors: tuple[int | tuple[int, Any], ...] = ()
    tag: str = "core"
    media_type: str = "application/json"
    database: bool = True
    bucket: str | None = None  # the rate limit taken; default: "write" for POST, PUT, DELETE
    documented: bool = True  # False: served, but outside the API document (docs, metrics)
    # For a create (201): the path parameter its new `id` fills in other operations; the
    # document links the response to each of them (generated clients follow the links).
    creates: str | None = None

    @property
    def public(self) -> bool:
        return self.rule is None

    @property
    def rate_limit(self) -> str | None:
        """The bucket an agent's call takes a token from, None when not limited."""
        if self.public:
            return None
        return self.bucket or ("write" if self.method in RATE_LIMITED else None)

    @property
    def paginated(self) -> bool:
        return self.query is not None and "cursor" in self.query.__struct_fields__

    def route(self) -> Route:
        """The Starlette route: the handler, behind its guard unless public."""
        endpoint = self.handler
        if self.rule is not None:
            endpoint = guard(self.handler, self.rule, self.rate_limit)
        return Route(
            self.path,
            Endpoint(endpoint),
            methods=[self.method],
            name=self.handler.__name__,
            include_in_schema=self.documented,
        )

    def error_bodies(self) -> dict[int, Any]:
        """Every error status the operation can answer, with the type of its body:
        401 and 403 unless public, 413 with a body, 429 when rate limited, 503
        when it uses the database, and its own."""
        codes: dict[int, Any] = {}
        if not self.public:
            codes[401] = codes[403] = ErrorDetail
        if self.body is not None:
            codes[413] = ErrorDetail
        if self.rate_limit is not None:
            codes[429] = ErrorDetail
        if self.database:
            codes[503] = ErrorDetail
        for error in self.errors:
            code, body = error if isinstance(error, tuple) else (error, None)
            codes[code] = body or (ValidationErrorBody if code == 422 else ErrorDetail)
        return dict(sorted(codes.items()))


class Endpoint:
    """A handler as the route's ASGI app: its request in, its response out.

    What Starlette makes of a function endpoint (request_response) does the
    same inside a second copy of the app's exception handling, which the
    request layer around the router (operations/middleware.py) already gives
    every route with the same handlers. That copy is two more coroutine frames
    that every await of every request passes through, and that an open stream
    holds for its life (docs/performance.md).
    """

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)
