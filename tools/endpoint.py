"""POST /mcp: who is calling and how much it sends, checked before the MCP SDK sees a byte.

The caller is an agent, authenticated by the same `Authorization: Bearer
<key>` as REST (401 with WWW-Authenticate otherwise); the admin token is 403,
since a tool always acts as one agent. With MAILROOM_AUTH=off nothing is
authenticated and the agent is named by the `X-Mailroom-Agent` header. The
body is read with the REST body cap (413), then handed to the SDK's session
manager (stateless: any replica answers any request), which mailroom's
lifespan runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from access.authentication import authenticate, identify
from handlers.bodies import read_body
from handlers.http_errors import Forbidden
from queries import sql
from settings import Settings
from validation.errors import InvalidInput

AGENT_HEADER = "x-mailroom-agent"


@asynccontextmanager
async def session_manager(
    server: Server, settings: Settings
) -> AsyncIterator[StreamableHTTPSessionManager]:
    """The SDK's session manager for one run of the service: stateless, JSON answers."""
    manager = StreamableHTTPSessionManager(
        app=server,
        # No session is kept: a request carries all it needs, so replicas need no
        # sticky sessions; answers are plain JSON, not an SSE stream per request.
        stateless=True,
        json_response=True,
        # The Host and Origin of a request are not checked: the Bearer key is, and a
        # proxy in front (compose, a Kubernetes Service) sets a Host of its own.
        security_settings=None,
        max_request_body_size=settings.max_body_bytes,
    )
    async with manager.run():
        yield manager


async def _named_agent(request: Request) -> UUID:
    """With MAILROOM_AUTH=off: the agent the X-Mailroom-Agent header names, or 422."""
    raw = request.headers.get(AGENT_HEADER)
    loc = ["header", AGENT_HEADER]
    if raw is None:
        raise InvalidInput.at(
            loc,
            "With MAILROOM_AUTH=off, name the agent the tools act as in the "
            "X-Mailroom-Agent header (its id)",
            "missing",
        )
    try:
        agent_id = UUID(raw.strip())
    except ValueError:
        raise InvalidInput.at(loc, "Not an agent id (a UUID)", "uuid_parsing") from None
    async with request.state.pool.connection() as conn:
        if not await sql.agent_exists.value(conn, agent_id=agent_id):
            raise InvalidInput.at(loc, "No agent has this id: register it with POST /agents")
    return agent_id


class _ToSdk(Response):
    """The response of POST /mcp: whatever the SDK answers to the body read here."""

    def __init__(self, manager: StreamableHTTPSessionManager, body: bytes) -> None:
        self.manager = manager
        self.request_body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": self.request_body, "more_body": False}
            return await receive()

        await self.manager.handle_request(scope, replay, send)


async def serve(request: Request) -> Response:
    """Authenticate the agent, read the capped body, and let the SDK answer it."""
    if request.state.settings.auth_required:
        agent_id = await authenticate(request)
        if agent_id is None:
            raise Forbidden(
                "The admin token cannot call MCP tools: a tool acts as one agent. "
                "Use that agent's API key."
            )
    else:
        agent_id = await _named_agent(request)
    identify(request, agent_id)
    body = await read_body(request)
    return _ToSdk(request.state.mcp, body)
