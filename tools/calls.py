"""A tool call runs an operation of the table in-process: the same rule, limit and handler.

A tool of /mcp never has code of its own that reads or writes mail. It names
an operation (`("POST", "/messages")`), its path parameters, query and body;
this module builds the request that operation would have had from the agent
of the /mcp request, holds the agent to the operation's rate limit and rule
(access/authentication.py `admit`, as the guard does for REST), runs the
operation's handler, and maps an error through the service's own exception
handlers, so a tool is refused exactly when and as REST refuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode
from uuid import UUID

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from access.authentication import AGENT, KEY, PRINCIPAL, admit, caller
from handlers.bodies import DECODED
from handlers.errors import TOO_EXPENSIVE_TYPE
from handlers.operation import Operation
from operations.middleware import SCOPE_KEY as REQUEST_ID
from operations.middleware import ExceptionHandler, handler_for
from validation.errors import InvalidInput
from validation.responses import FieldError

# The scope keys an operation's request carries over from the /mcp request.
CARRIED = ("state", "app", "server", "client", "scheme", AGENT, KEY, PRINCIPAL)
_CURSOR = re.compile(r"[?&]cursor=([^&>]*)")
_DECODER = msgspec.json.Decoder()


class ToolFailure(Exception):
    """An operation refused the call: its HTTP status and the sentence a model reads."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Answer(msgspec.Struct, frozen=True):
    """What an operation answered: its JSON body, decoded, and the next page's cursor."""

    body: Any
    next_cursor: str | None


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Calls:
    """The operations a tool may run, by (method, path), and the exception map."""

    def __init__(
        self,
        operations: list[Operation],
        exception_handlers: Mapping[type[Exception], ExceptionHandler],
    ) -> None:
        self.operations = {(op.method, op.path): op for op in operations}
        self.exception_handlers = exception_handlers

    def _request(
        self,
        outer: Request,
        op: Operation,
        path_params: dict[str, Any],
        query: dict[str, Any],
        body: msgspec.Struct | None,
        headers: dict[str, str],
    ) -> Request:
        path = op.path.format(**path_params)
        host = outer.headers.get("host", "mailroom")
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": op.method,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urlencode(
                {k: _query_text(v) for k, v in query.items() if v is not None}
            ).encode(),
            "headers": [(b"host", host.encode())]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "path_params": {k: str(v) for k, v in path_params.items()},
            REQUEST_ID: outer.scope.get(REQUEST_ID),
        }
        scope.update({key: outer.scope[key] for key in CARRIED if key in outer.scope})
        if body is not None:
            scope[DECODED] = body
        return Request(scope, _no_body)

    async def run(
        self,
        outer: Request,
        method: str,
        path: str,
        *,
        path_params: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        body: msgspec.Struct | None = None,
        headers: dict[str, str] | None = None,
        renamed: Mapping[str, str] | None = None,
    ) -> Answer:
        """Run the operation (method, path) for the agent of `outer`; ToolFailure when refused.

        `renamed` maps a REST field name to the tool argument it came from, so that
        a 422 names what the model sent (`recipient_ids` -> `to`).
        """
        op = self.operations[(method, path)]
        request = self._request(outer, op, path_params or {}, query or {}, body, headers or {})
        try:
            # With MAILROOM_AUTH=off no rule applies, to a tool call as to a REST request.
            if request.state.settings.auth_required and op.rule is not None:
                await admit(request, agent_of(request), op.rule, op.rate_limit)
            response = await op.handler(request)
        except Exception as error:  # mapped exactly as the REST route maps it
            raise await self.failure(request, error, renamed) from None
        body_bytes = bytes(response.body)
        return Answer(
            _DECODER.decode(body_bytes) if body_bytes else None,
            _next_cursor(response.headers.get("link")),
        )

    async def failure(
        self, request: Request, error: Exception, renamed: Mapping[str, str] | None = None
    ) -> ToolFailure:
        """The ToolFailure of an exception, through the handler the service maps it with."""
        handler = handler_for(self.exception_handlers, error)
        if handler is None:
            raise error
        response = await handler(request, error)
        return ToolFailure(response.status_code, failure_text(response, renamed or {}))


def _query_text(value: Any) -> str:
    """A tool argument as the query-string text the operation decodes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _next_cursor(link: str | None) -> str | None:
    if link is None:
        return None
    found = _CURSOR.search(link)
    return None if found is None else unquote(found[1])


def _argument(loc: list[str | int], renamed: Mapping[str, str]) -> str:
    """The tool argument a REST location names: ["body", "recipient_ids", 0] -> `to[0]`."""
    parts = [str(part) for part in loc[1:]] if len(loc) > 1 else [str(part) for part in loc]
    if parts:
        parts[0] = renamed.get(parts[0], parts[0])
    text = parts[0] if parts else "arguments"
    return text + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in parts[1:])


def invalid_text(errors: list[FieldError], renamed: Mapping[str, str]) -> str:
    """A 422 as sentences a model can act on: which argument, and what is wrong with it."""
    lines = [f"Argument `{_argument(e.loc, renamed)}`: {e.msg}." for e in errors]
    return "Invalid arguments; fix them and call again. " + " ".join(lines)


def failure_text(response: Response, renamed: Mapping[str, str]) -> str:
    """The sentence of an error response, as a tool's error text."""
    found = _DECODER.decode(bytes(response.body))
    detail = found.get("detail") if isinstance(found, dict) else None
    if isinstance(detail, list):
        errors = msgspec.convert(detail, list[FieldError])
        if errors and errors[0].type == TOO_EXPENSIVE_TYPE:
            return errors[0].msg  # no argument is wrong: the request asked too much at once
        return invalid_text(errors, renamed)
    text = str(detail) if detail else f"The call failed with status {response.status_code}."
    retry = response.headers.get("retry-after")
    if retry is not None:
        text += (" " if text.endswith((".", "!", "?")) else ". ") + f"Retry in {retry} seconds."
    return text


def arguments_error(error: InvalidInput) -> ToolFailure:
    """ToolFailure (422) for tool arguments that do not fit the tool's input schema."""
    return ToolFailure(422, invalid_text(error.errors, {}))


def agent_of(request: Request) -> UUID:
    """The agent the tools of this /mcp request act as (tools/endpoint.py put it there)."""
    agent_id = caller(request)
    assert agent_id is not None
    return agent_id
