"""Exception handlers: every error a request can meet, mapped to its status once.

Handlers raise; these turn the exception into the contract's JSON body.
Database constraint violations become 409 with a sentence naming the field,
values the database cannot store become 422, an unreachable database 503, and
a statement that ran out of time or memory 422 without Retry-After: the same
request would fail the same way, so it is the request that must change.
"""

from __future__ import annotations

import logging
import re
import secrets

import psycopg
from psycopg import errors as pg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from handlers.bodies import json_response
from handlers.http_errors import HTTPError
from operations.middleware import SCOPE_KEY as REQUEST_ID_KEY
from validation.errors import InvalidInput
from validation.responses import ErrorDetail, FieldError, ValidationErrorBody

log = logging.getLogger("mailroom.errors")

# 'Key (recipient_id)=(0c8f...) is not present in table "agents".'
_KEY = re.compile(r"Key \((?P<columns>[^)]*)\)=\((?P<values>.*)\)")
# What a foreign-key column points at, for the 409 sentence.
_REFERENCED = {
    "sender_id": "Agent",
    "recipient_id": "Agent",
    "agent_id": "Agent",
    "message_id": "Message",
    "parent_message_id": "Message",
    "conversation_id": "Conversation",
}
_DUPLICATE = {
    "message_recipients_pkey": "This agent is already a recipient of this message",
    "agent_message_metadata_message_key": "This message already has a metadata item with this key",
}
# Checks between rows rather than on one value: a conflict with what is stored, 409.
_CONFLICTS = {
    "messages_reply_cycle": "A message cannot be its own parent or reply to one of its own "
    "replies: choose a parent_message_id outside its thread of replies",
}
RETRY_AFTER = {"Retry-After": "1"}
# SQLSTATEs (codes, or a class by its two digits) of a statement that needed more
# than one request may have: more time than statement_timeout (57014), more
# memory than the server could give (53200), more temporary disk than
# temp_file_limit (53400), or past one of PostgreSQL's own size limits (class 54,
# e.g. a jsonb value over 256 MB or a string over 1 GB). Not a full disk (53100)
# or too many connections (53300): those are the server's state, not the
# request's size, and stay 503.
TOO_EXPENSIVE = ("57014", "53200", "53400", "54")
TOO_EXPENSIVE_TYPE = "too_expensive"  # the 422 item's type: ask for less, do not retry


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(ErrorDetail(detail), status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return _error(exc.status_code, exc.detail, exc.headers)


async def starlette_error(request: Request, exc: Exception) -> Response:
    """Unknown routes (404) and wrong methods (405), with a JSON detail too."""
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # One Route per method: Starlette names only the first route's methods.
        allowed = set()
        for route in request.app.routes:
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
                allowed |= route.methods or set()
        headers = {"Allow": ", ".join(sorted(allowed))}
    return _error(exc.status_code, exc.detail, headers)


async def invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return json_response(ValidationErrorBody(exc.errors), 422)


async def integrity_error(request: Request, exc: Exception) -> Response:
    """Unique and foreign-key violations and reply cycles: 409 naming the field."""
    assert isinstance(exc, psycopg.IntegrityError)
    diag = exc.diag
    if diag.constraint_name == "agent_retired":  # refuse_retired(), migrations 0021 and 0033
        return _error(409, diag.message_primary or "This agent is retired")
    if diag.constraint_name in _CONFLICTS:
        return _error(409, _CONFLICTS[diag.constraint_name])
    key = _KEY.search(diag.message_detail or "")
    if isinstance(exc, pg.ForeignKeyViolation) and key:
        column, value = key["columns"], key["values"]
        noun = _REFERENCED.get(column, "Referenced row")
        return _error(409, f"{noun} {value} not found ({column})")
    if isinstance(exc, pg.UniqueViolation):
        detail = _DUPLICATE.get(
            diag.constraint_name or "", "A row with these values already exists"
        )
        return _error(409, detail)
    # NOT NULL and CHECK violations: input the validation should have refused.
    field = diag.column_name or "body"
    log.warning("constraint %s rejected input: %s", diag.constraint_name, diag.message_primary)
    return json_response(
        ValidationErrorBody(
            [FieldError("value_error", ["body", field], diag.message_primary or "Invalid value")]
        ),
        422,
    )


async def data_error(request: Request, exc: Exception) -> Response:
    """Values PostgreSQL cannot store (NUL characters, out-of-range numbers): 422."""
    message = _first_line(exc)
    where = "query" if request.method == "GET" else "body"
    return json_response(
        ValidationErrorBody([FieldError("value_error", [where], f"Cannot store value: {message}")]),
        422,
    )


async def database_error(request: Request, exc: Exception) -> Response:
    """An OperationalError: a statement too expensive for one request (422), or else an
    unreachable database (503)."""
    assert isinstance(exc, psycopg.OperationalError)
    if (exc.sqlstate or "").startswith(TOO_EXPENSIVE):
        return await too_expensive(request, exc)
    return await database_unavailable(request, exc)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """Server down or restarting: 503, try again shortly."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _error(503, "Database unavailable, try again shortly", RETRY_AFTER)


async def too_expensive(request: Request, exc: Exception) -> Response:
    """A statement that ran out of time or memory: 422 saying to ask for less, no Retry-After.

    Logged with the request id (returned as X-Request-ID) for the operator, who
    finds the statement in PostgreSQL's log at the same moment.
    """
    assert isinstance(exc, psycopg.Error)
    resource = "time" if isinstance(exc, pg.QueryCanceled) else "memory or space"
    log.warning(
        "too expensive for one request on %s %s: SQLSTATE %s: %s",
        request.method,
        request.url.path,
        exc.sqlstate,
        _first_line(exc),
        extra={"request_id": request.scope.get(REQUEST_ID_KEY)},
    )
    where = "query" if request.method == "GET" else "body"
    message = (
        f"This request needs more database {resource} than one request may use, so the "
        "same request will fail again: ask for less at once (a smaller limit, fewer "
        "items, a smaller value) rather than retrying it"
    )
    return json_response(
        ValidationErrorBody([FieldError(TOO_EXPENSIVE_TYPE, [where], message)]), 422
    )


async def pool_exhausted(request: Request, exc: Exception) -> Response:
    """Every connection busy for the whole pool timeout: 503, try again shortly."""
    log.warning("no free database connection for %s %s: %s", request.method, request.url.path, exc)
    return _error(
        503, "Service busy: no database connection became free, try again shortly", RETRY_AFTER
    )


async def client_gone(request: Request, exc: Exception) -> Response:
    """The connection closed before the body arrived (the client left, or the server's
    MAILROOM_BODY_TIMEOUT closed it): nobody reads this answer, the log line says why."""
    path = request.url.path
    log.info("connection closed before the request body of %s %s arrived", request.method, path)
    return _error(400, "The connection closed before the request body arrived")


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: log it with the request id, which the client can quote, and leak nothing.

    The request layer (operations/middleware.py) sends the answer with the id as
    X-Request-ID, then raises the error on to the server, as Starlette did.
    """
    error_id = request.scope.get(REQUEST_ID_KEY) or secrets.token_hex(8)
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": error_id},
    )
    return _error(500, f"Internal server error (request id {error_id})")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
