"""mailroom's wiring: the operation table, the lifespan, the error mapping and the app.

Run it with `uv run service.py` (embedded PostgreSQL unless DATABASE_URL is
set) or `uvicorn service:app`. Reading OPERATIONS top to bottom tells you
every URL the service has, who may call it and which handler answers it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypedDict

import msgspec
import psycopg
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from access.admin import ADMIN_KEY_MISSING, admin_digest, needs_admin_token
from access.authentication import FAILED_KEYS
from access.limits import RateLimits
from access.rules import (
    adds_to_own_message,
    admin_only,
    annotates_own_mail,
    any_principal,
    itself,
    owner_of_metadata,
    retires_itself,
    sender_of_message,
    sends_as_itself,
    starter_of_conversation,
    takes_part,
)
from embedded import embedded_admin_token, start_embedded, stop_embedded
from handlers import (
    agents,
    console,
    conversations,
    docs,
    echo,
    errors,
    health,
    mailbox,
    messages,
    metrics,
    search,
    stream,
    users,
    webhooks,
)
from handlers.http_errors import HTTPError
from handlers.operation import Operation
from operations import collector, forwarded, logs
from operations.http_limits import BoundedHttpToolsProtocol, Limits
from operations.metrics import clean_directory
from operations.middleware import RequestLayer
from operations.retention import run_retention
from operations.termination import call_on_termination
from queries.database import DatabaseDown, make_pool, migrate, purge_expired_keys
from queries.listener import Listener
from queries.wakeups import WakeupReads
from settings import Settings, load_settings
from tools import endpoint as mcp_endpoint
from tools import server as mcp_server
from validation import openapi, requests, responses
from validation.errors import InvalidInput
from validation.openapi import IDEMPOTENCY_KEY, LAST_EVENT_ID
from validation.query_params import (
    ConversationsQuery,
    DeliveriesQuery,
    DetailsQuery,
    DirectoryQuery,
    MailboxQuery,
    RetireQuery,
    SearchQuery,
    StreamQuery,
    UnreadQuery,
)
from webhooks.dispatcher import Dispatcher

HERE = Path(__file__).parent
VERSION = "0.1.0"
log = logging.getLogger("mailroom")
PURGE_INTERVAL = 3600.0  # seconds between two purges of expired Idempotency-Keys
HTTP_PROTOCOL = "service:HttpProtocol"  # uvicorn's --http, by name: each worker imports it

# The operations ---------------------------------------------------------------

# A row without a rule is public; otherwise the admin, or an agent the rule lets
# through (access/rules.py), may call it. docs/security.md has the matrix.
SELF = itself("agent_id")
OPERATIONS = [
    Operation("GET", "/", health.root, "Greeting", response=responses.Root, database=False),
    Operation("GET", "/health", health.health, "Database health (readiness)",
              response=responses.Health, errors=((503, responses.Health),)),
    Operation("GET", "/health/ready", health.health, "Readiness probe",
              response=responses.Health, errors=((503, responses.Health),)),
    Operation("GET", "/health/live", health.live, "Liveness probe; no database",
              response=responses.Health, database=False),
    Operation("GET", "/users/{user_id}", users.get_user, "A sample user", admin_only,
              responses.User, errors=(404, 422)),
    Operation("GET", "/agents", agents.list_agents,
              "The agent directory, by name: the agents a caller may address (the admin also "
              "sees each one's unread count and last activity)", any_principal,
              list[responses.DirectoryEntry], query=DirectoryQuery, errors=(422,), tag="agents"),
    Operation("POST", "/agents", agents.create_agent, "Register an agent", admin_only,
              responses.AgentCreated, 201, requests.AgentCreate, headers=(IDEMPOTENCY_KEY,),
              errors=(409, 422), tag="agents", creates="agent_id"),
    Operation("GET", "/agents/{agent_id}", agents.get_agent, "An agent", SELF,
              responses.AgentProfile, errors=(404, 422), tag="agents"),
    Operation("PUT", "/agents/{agent_id}", agents.update_agent, "Update an agent", SELF,
              responses.AgentUpdated, body=requests.AgentUpdate, errors=(404, 422),
              tag="agents"),
    Operation("DELETE", "/agents/{agent_id}", agents.retire_agent,
              "Retire an agent (its key stops working, nothing new reaches it); "
              "?purge=true (admin) also erases what only it held", retires_itself, None, 204,
              query=RetireQuery, errors=(404, 422), tag="agents"),
    Operation("POST", "/agents/{agent_id}/api-key", agents.rotate_key,
              "Replace an agent's API key; the old one stops working", SELF,
              responses.ApiKey, errors=(404, 422), tag="agents"),
    Operation("POST", "/agents/{agent_id}/webhook-secret", webhooks.rotate_secret,
              "Replace an agent's webhook secret; the old one signs alongside for 24 h", SELF,
              responses.WebhookSecret, errors=(404, 409, 422), tag="webhooks"),
    Operation("GET", "/agents/{agent_id}/deliveries", webhooks.list_deliveries,
              "An agent's webhook deliveries, newest first", SELF, list[responses.Delivery],
              query=DeliveriesQuery, errors=(404, 422), tag="webhooks"),
    Operation("POST", "/agents/{agent_id}/deliveries/{delivery_id}/retry",
              webhooks.retry_delivery, "Send a delivered or dead webhook delivery again",
              SELF, responses.Delivery, errors=(404, 409, 422), tag="webhooks"),
    Operation("GET", "/agents/{agent_id}/messages", mailbox.list_messages,
              "Messages an agent sent or received", SELF, list[responses.MailboxItem],
              query=MailboxQuery, errors=(404, 422), tag="mailbox"),
    Operation("GET", "/agents/{agent_id}/messages/unread", mailbox.list_unread,
              "Unread received messages", SELF, list[responses.MailboxItem],
              query=UnreadQuery, errors=(404, 422), tag="mailbox"),
    Operation("GET", "/agents/{agent_id}/messages/search", search.search_messages,
              "Search the messages an agent sent or received, best match first", SELF,
              list[responses.SearchItem], query=SearchQuery, errors=(404, 422), tag="mailbox"),
    Operation("GET", "/agents/{agent_id}/messages/stream", stream.stream_messages,
              "Unread received messages as Server-Sent Events: missed ones, then live", SELF,
              responses.MailboxItem, query=StreamQuery, headers=(LAST_EVENT_ID,),
              errors=(404, 422), tag="mailbox", media_type="text/event-stream"),
    Operation("PUT", "/agents/{agent_id}/messages/mark-read", mailbox.mark_read,
              "Mark messages read up to a time", SELF, responses.MarkRead,
              body=requests.MarkReadRequest, errors=(404, 422), tag="mailbox"),
    Operation("POST", "/messages", messages.create_message, "Send a message",
              sends_as_itself, responses.Message, 201, requests.MessageCreate,
              headers=(IDEMPOTENCY_KEY,), errors=(409, 422), tag="messages",
              creates="message_id"),
    Operation("PUT", "/messages/{message_id}", messages.update_message, "Update a message",
              sender_of_message, responses.Message, body=requests.MessageUpdate,
              errors=(404, 409, 422), tag="messages"),
    Operation("GET", "/messages/{message_id}/metadata/{agent_id}",
              messages.get_message_metadata,
              "A message and its metadata, for an agent that sent or received it", SELF,
              responses.MessageMetadata, errors=(404, 422), tag="messages"),
    Operation("POST", "/message_recipients", messages.create_recipient, "Add a recipient",
              adds_to_own_message, responses.Recipient, 201, requests.RecipientCreate,
              errors=(409, 422), tag="messages"),
    Operation("PUT", "/message_recipients/{message_id}/{recipient_id}",
              messages.update_recipient, "Set read state", itself("recipient_id"),
              responses.Recipient, body=requests.RecipientUpdate, errors=(404, 422),
              tag="messages"),
    Operation("POST", "/agent_message_metadata", messages.create_metadata,
              "Attach metadata to a message", annotates_own_mail, responses.Metadata, 201,
              requests.MetadataCreate, errors=(409, 422), tag="messages"),
    Operation("PUT", "/agent_message_metadata/{metadata_id}", messages.update_metadata,
              "Update metadata", owner_of_metadata, responses.Metadata,
              body=requests.MetadataUpdate, errors=(404, 409, 422), tag="messages"),
    Operation("POST", "/conversations", conversations.create_conversation,
              "Start a conversation", any_principal, responses.Conversation, 201,
              requests.ConversationCreate, headers=(IDEMPOTENCY_KEY,), errors=(422,),
              tag="conversations", creates="conversation_id"),
    Operation("GET", "/conversations", conversations.list_conversations,
              "Conversations, newest first", any_principal, list[responses.Conversation],
              query=ConversationsQuery, errors=(422,), tag="conversations"),
    Operation("GET", "/conversations/{conversation_id}", conversations.get_conversation,
              "A conversation", takes_part, responses.Conversation, errors=(404, 422),
              tag="conversations"),
    Operation("PUT", "/conversations/{conversation_id}", conversations.update_conversation,
              "Update a conversation", starter_of_conversation, responses.Conversation,
              body=requests.ConversationUpdate, errors=(404, 422), tag="conversations"),
    Operation("GET", "/conversations/{conversation_id}/details", conversations.get_details,
              "A conversation with a page of its messages, its agents and counts", takes_part,
              responses.ConversationDetails, query=DetailsQuery, errors=(404, 422),
              tag="conversations"),
    Operation("POST", "/cli/echo", echo.echo, "Run echo with a validated message",
              any_principal, responses.EchoResult, body=requests.EchoRequest,
              errors=(408, 422), tag="cli", database=False, bucket="echo"),
    # Served outside the API document: the document itself, its two viewers, and the
    # Prometheus scrape (which checks its own token: handlers/metrics.py).
    Operation("GET", "/openapi.json", docs.openapi, "The OpenAPI document", documented=False),
    Operation("GET", "/docs", docs.swagger_ui, "Swagger UI", documented=False),
    Operation("GET", "/redoc", docs.redoc, "ReDoc", documented=False),
    Operation("GET", "/metrics", metrics.metrics, "Prometheus metrics", documented=False),
    # The MCP endpoint (Streamable HTTP, docs/mcp.md): it authenticates its agent itself
    # (the admin token is 403 there); each tool call runs an operation above, its rule too.
    Operation("POST", "/mcp", mcp_endpoint.serve, "MCP tools for agents", documented=False),
    Operation("GET", "/console", console.console, "The operator console", documented=False),
]  # fmt: skip

ROUTES = [
    *(operation.route() for operation in OPERATIONS),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]
OPENAPI_DOCUMENT = msgspec.json.encode(
    openapi.build("mailroom", VERSION, "Messaging between AI agents over PostgreSQL.", OPERATIONS)
)

# Errors: each exception a request can meet, mapped to its status once ------------

EXCEPTION_HANDLERS = {
    HTTPError: errors.http_error,
    HTTPException: errors.starlette_error,
    InvalidInput: errors.invalid_input,
    ClientDisconnect: errors.client_gone,
    psycopg.IntegrityError: errors.integrity_error,
    psycopg.DataError: errors.data_error,
    PoolTimeout: errors.pool_exhausted,
    DatabaseDown: errors.database_unavailable,
    psycopg.OperationalError: errors.database_error,
    psycopg.InterfaceError: errors.database_unavailable,
    Exception: errors.unexpected_error,
}
# The tools of /mcp run the operations above, their errors mapped as above.
MCP_SERVER = mcp_server.build(OPERATIONS, EXCEPTION_HANDLERS)

# Lifespan ---------------------------------------------------------------------


class State(TypedDict):
    """What every request sees as `request.state`."""

    settings: Settings
    pool: AsyncConnectionPool
    listener: Listener
    wakeup_reads: WakeupReads
    cursor_key: bytes
    openapi: bytes
    admin_digest: bytes
    rate_limits: RateLimits
    echo_slots: asyncio.Semaphore
    mcp: StreamableHTTPSessionManager


def make_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        logs.configure(settings.log_level, settings.log_format)
        # prometheus-client's own variable: without it, a worker counts only itself.
        if multiprocessing.parent_process() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning(
                "several workers without PROMETHEUS_MULTIPROC_DIR: "
                "each worker's /metrics counts only its own requests"
            )
        url = settings.database_url
        if url is None:
            log.info("DATABASE_URL is not set: starting the embedded PostgreSQL")
            url = await asyncio.to_thread(start_embedded, Path(settings.data_dir))
        admin = await admin_digest(settings)
        cursor_key = await migrate(url, settings.startup_timeout)
        pool = make_pool(
            url,
            settings.pool_min_size,
            settings.pool_max_size,
            settings.pool_timeout,
            settings.prepare_threshold,
            settings.statement_timeout,
        )
        await pool.open(wait=True, timeout=settings.startup_timeout)
        listener = Listener(
            url, settings.db_check_interval, settings.reconnect_interval, on_reconnect=pool.check
        )
        pool.reachable = lambda: listener.up
        await listener.start(settings.startup_timeout)
        # Streams and long-polls end at SIGTERM: uvicorn waits for open responses
        # before it runs the lifespan's shutdown.
        call_on_termination(listener.shutting_down)
        purge = asyncio.create_task(purge_expired_keys(pool, PURGE_INTERVAL), name="purge")
        dispatcher = Dispatcher(pool, listener.deliveries, settings)
        dispatcher.start()
        tools = AsyncExitStack()
        mcp = await tools.enter_async_context(mcp_endpoint.session_manager(MCP_SERVER, settings))
        retention = None
        if settings.retention_days is not None:
            retention = asyncio.create_task(
                run_retention(
                    pool,
                    settings.retention_days,
                    settings.retention_batch,
                    settings.retention_interval,
                ),
                name="retention",
            )
        collector.tune_after_startup()
        log.info("mailroom %s ready", VERSION, extra=logs.event("startup", version=VERSION))
        try:
            yield State(
                settings=settings,
                pool=pool,
                listener=listener,
                wakeup_reads=WakeupReads(pool, settings.max_response_bytes),
                cursor_key=cursor_key,
                openapi=OPENAPI_DOCUMENT,
                admin_digest=admin,
                rate_limits=RateLimits(
                    {
                        "write": settings.write_rate_limit,
                        "echo": settings.echo_rate_limit,
                        "recipients": settings.recipient_rate_limit,
                        FAILED_KEYS: settings.auth_failure_limit,
                    }
                ),
                echo_slots=asyncio.Semaphore(settings.echo_concurrency),
                mcp=mcp,
            )
        finally:
            await tools.aclose()
            purge.cancel()
            await dispatcher.close()
            if retention is not None:
                retention.cancel()
            await listener.close()
            await pool.close()
            logs.REQUEST_LINES.flush()
            log.info("mailroom stopped", extra=logs.event("shutdown"))

    return lifespan


# The app ----------------------------------------------------------------------


class Service(Starlette):
    """Starlette with one layer around its router (operations/middleware.py) in place of
    Starlette's own: the server error and exception middlewares, which map errors as
    that layer does, would be two more frames that every await of every request
    resumes through (docs/performance.md)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(routes=ROUTES, lifespan=make_lifespan(settings))
        self.proxies = forwarded.TrustedProxies(settings.forwarded_allow_ips)

    def build_middleware_stack(self) -> ASGIApp:
        if self.user_middleware or self.exception_handlers:
            raise RuntimeError(
                "Service builds its own stack: add exception handlers to EXCEPTION_HANDLERS "
                "and per-request work to RequestLayer (operations/middleware.py)"
            )
        return RequestLayer(self.router, EXCEPTION_HANDLERS, self.proxies)


def create_app(settings: Settings) -> Starlette:
    return Service(settings)


SETTINGS = load_settings()
app = create_app(SETTINGS)


class HttpProtocol(BoundedHttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol for this service (`--http service:HttpProtocol`): httptools
    with the settings' bounds on each request's head and body."""

    limits = Limits(
        SETTINGS.max_header_bytes,
        SETTINGS.max_headers,
        SETTINGS.header_timeout,
        SETTINGS.body_timeout,
    )


def own_embedded_server(settings: Settings) -> Settings:
    """Start the embedded PostgreSQL in this process and hand it to the app by URL.

    uvicorn's worker processes end without running exit hooks, so a server a
    worker started would outlive `uv run service.py`; started here, it stops
    when this process does. Its admin token is made here too, for the same reason.
    """
    data_dir = Path(settings.data_dir)
    os.environ["DATABASE_URL"] = start_embedded(data_dir)
    if settings.auth_required and settings.admin_token is None:
        os.environ["MAILROOM_ADMIN_TOKEN"] = embedded_admin_token(data_dir)
    return load_settings()


def main() -> None:
    import uvicorn

    settings = load_settings()
    embedded = settings.database_url is None
    if embedded:
        # uvicorn re-raises the SIGTERM it handled once it has shut down; ending
        # with SystemExit instead lets the `finally` below stop the embedded server.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: sys.exit(0))
        settings = own_embedded_server(settings)
    if needs_admin_token(settings):
        raise SystemExit(ADMIN_KEY_MISSING)
    # Several workers share their metrics through files (prometheus-client's
    # multiprocess mode); the variable is inherited by the workers, which import
    # prometheus_client only after it is set. The directory is emptied first:
    # counters start at zero with the server.
    own_directory = None
    if settings.workers > 1:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            own_directory = tempfile.mkdtemp(prefix="mailroom-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_directory
        clean_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        uvicorn.run(
            "service:app",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level.lower(),
            log_config=str(HERE / "operations" / "logging.json"),
            access_log=False,  # the request middleware logs each request once
            http=HTTP_PROTOCOL,
            # The app applies X-Forwarded-Proto/-Host from FORWARDED_ALLOW_IPS itself
            # (operations/forwarded.py); uvicorn's would hide the proxy's address from it.
            proxy_headers=False,
            # As the image runs it (Containerfile's CMD): no `server: uvicorn` header,
            # and requests still in flight 20 s after SIGTERM are cut off.
            server_header=False,
            timeout_graceful_shutdown=20,
        )
    finally:
        if own_directory is not None:
            shutil.rmtree(own_directory, ignore_errors=True)
        if embedded:
            stop_embedded(Path(settings.data_dir))


if __name__ == "__main__":
    main()
