"""mailroom: the settings, lifespan, route table and error mapping of the service.

Run it with `uv run service.py` (embedded PostgreSQL unless DATABASE_URL is
set) or `uvicorn service:app`. Reading this file top to bottom tells you every
URL the service has and which handler answers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TypedDict

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from handlers import agents, conversations, core, docs, echo, errors, mailbox, messages, stream
from handlers.common import HTTPError
from queries.database import (
    DatabaseDown,
    make_pool,
    migrate,
    normalise_url,
    purge_expired_keys,
    start_embedded,
)
from queries.listener import Listener
from validation import openapi
from validation import requests as rq
from validation import responses as rs
from validation.errors import InvalidInput
from validation.openapi import CURSOR, IDEMPOTENCY_KEY, LIMIT, ORDER, Operation, Param

HERE = Path(__file__).parent
VERSION = "0.1.0"
log = logging.getLogger("mailroom")
PURGE_INTERVAL = 3600.0  # seconds between two purges of expired Idempotency-Keys


# Settings ------------------------------------------------------------------


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, read once from the environment (see README)."""

    database_url: str | None = None
    data_dir: str = ".mailroom/pgdata"
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on all interfaces
    port: int = 8000
    workers: int = os.cpu_count() or 1
    log_level: str = "INFO"
    pool_min_size: int = 2
    pool_max_size: int = 10
    db_connections: int | None = None
    pool_timeout: float = 5.0
    prepare_threshold: int | None = 5
    startup_timeout: float = 30.0
    health_timeout: float = 2.0
    echo_timeout: float = 5.0
    echo_output_limit: int = 65536
    max_body_bytes: int = 1_048_576
    stream_heartbeat: float = 15.0
    reconnect_interval: float = 0.5
    db_check_interval: float = 5.0


# Environment variable -> (field, parser). A parser raises ValueError on bad text.
ENVIRONMENT = {
    "DATABASE_URL": ("database_url", normalise_url),
    "MAILROOM_DATA_DIR": ("data_dir", str),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "WEB_CONCURRENCY": ("workers", int),
    "LOG_LEVEL": ("log_level", str.upper),
    "MAILROOM_POOL_MIN_SIZE": ("pool_min_size", int),
    "MAILROOM_POOL_MAX_SIZE": ("pool_max_size", int),
    "MAILROOM_DB_CONNECTIONS": ("db_connections", int),
    "MAILROOM_POOL_TIMEOUT": ("pool_timeout", float),
    "MAILROOM_PREPARE_THRESHOLD": (
        "prepare_threshold",
        lambda text: None if text.lower() in ("off", "none", "") else int(text),
    ),
    "MAILROOM_STARTUP_TIMEOUT": ("startup_timeout", float),
    "MAILROOM_ECHO_TIMEOUT": ("echo_timeout", float),
    "MAILROOM_ECHO_OUTPUT_LIMIT": ("echo_output_limit", int),
    "MAILROOM_MAX_BODY_BYTES": ("max_body_bytes", int),
    "MAILROOM_STREAM_HEARTBEAT": ("stream_heartbeat", float),
    "MAILROOM_RECONNECT_INTERVAL": ("reconnect_interval", float),
    "MAILROOM_DB_CHECK_INTERVAL": ("db_check_interval", float),
}


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment; a bad value stops start-up naming the variable."""
    values = {}
    for variable, (field, parse) in ENVIRONMENT.items():
        text = environ.get(variable)
        if text is None or (text == "" and variable == "DATABASE_URL"):
            continue
        try:
            values[field] = parse(text.strip())
        except ValueError as error:
            raise SystemExit(f"mailroom: invalid {variable}={text!r}: {error}") from None
    settings = Settings(**values)
    if settings.db_connections is not None and "MAILROOM_POOL_MAX_SIZE" not in environ:
        # The replica's share of max_connections, split between its workers.
        per_worker = max(1, settings.db_connections // settings.workers)
        settings = msgspec.structs.replace(
            settings,
            pool_max_size=per_worker,
            pool_min_size=min(settings.pool_min_size, per_worker),
        )
    problems = [
        ("PORT", not 0 < settings.port < 65536),
        ("WEB_CONCURRENCY", settings.workers < 1),
        ("LOG_LEVEL", settings.log_level not in logging.getLevelNamesMapping()),
        ("MAILROOM_POOL_MIN_SIZE", settings.pool_min_size < 0),
        (
            "MAILROOM_DB_CONNECTIONS",
            settings.db_connections is not None and settings.db_connections < 1,
        ),
        ("MAILROOM_POOL_MAX_SIZE", settings.pool_max_size < max(1, settings.pool_min_size)),
        ("MAILROOM_POOL_TIMEOUT", settings.pool_timeout <= 0),
        ("MAILROOM_STARTUP_TIMEOUT", settings.startup_timeout <= 0),
        ("MAILROOM_ECHO_TIMEOUT", settings.echo_timeout <= 0),
        ("MAILROOM_ECHO_OUTPUT_LIMIT", settings.echo_output_limit < 1),
        ("MAILROOM_MAX_BODY_BYTES", settings.max_body_bytes < 1),
        ("MAILROOM_STREAM_HEARTBEAT", settings.stream_heartbeat <= 0),
        ("MAILROOM_RECONNECT_INTERVAL", settings.reconnect_interval <= 0),
        ("MAILROOM_DB_CHECK_INTERVAL", settings.db_check_interval <= 0),
    ]
    for variable, bad in problems:
        if bad:
            raise SystemExit(f"mailroom: invalid {variable}={environ.get(variable)!r}")
    return settings


# Lifespan ------------------------------------------------------------------


class State(TypedDict):
    """What every request sees as `request.state`."""

    settings: Settings
    pool: AsyncConnectionPool
    listener: Listener
    cursor_key: bytes
    openapi: bytes


def make_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        url = settings.database_url
        if url is None:
            log.info("DATABASE_URL is not set: starting the embedded PostgreSQL")
            url = await asyncio.to_thread(start_embedded, Path(settings.data_dir))
        cursor_key = await migrate(url, settings.startup_timeout)
        pool = make_pool(
            url,
            settings.pool_min_size,
            settings.pool_max_size,
            settings.pool_timeout,
            settings.prepare_threshold,
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
        log.info("mailroom %s ready", VERSION)
        try:
            yield State(
                settings=settings,
                pool=pool,
                listener=listener,
                cursor_key=cursor_key,
                openapi=OPENAPI_DOCUMENT,
            )
        finally:
            purge.cancel()
            await listener.close()
            await pool.close()
            log.info("mailroom stopped")

    return lifespan


def call_on_termination(callback: Callable[[], None]) -> None:
    """Run `callback` on the event loop when SIGTERM or SIGINT arrives, then the
    server's own handler (uvicorn's, which stops accepting and drains requests).

    Only in the main thread, and only over a handler the server installed: under
    a test client there is none and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, previous=previous) -> None:
            loop.call_soon_threadsafe(callback)
            previous(number, frame)

        signal.signal(signum, handler)


# Routes --------------------------------------------------------------------

ROUTES = [
    Route("/", core.root, methods=["GET"]),
    Route("/health", core.health, methods=["GET"]),
    Route("/health/ready", core.health, methods=["GET"]),
    Route("/health/live", core.live, methods=["GET"]),
    Route("/users/{user_id}", core.get_user, methods=["GET"]),
    Route("/agents", agents.create_agent, methods=["POST"]),
    Route("/agents/{agent_id}", agents.get_agent, methods=["GET"]),
    Route("/agents/{agent_id}", agents.update_agent, methods=["PUT"]),
    Route("/agents/{agent_id}/messages", mailbox.list_messages, methods=["GET"]),
    Route("/agents/{agent_id}/messages/unread", mailbox.list_unread, methods=["GET"]),
    Route("/agents/{agent_id}/messages/stream", stream.stream_messages, methods=["GET"]),
    Route("/agents/{agent_id}/messages/mark-read", mailbox.mark_read, methods=["PUT"]),
    Route("/messages", messages.create_message, methods=["POST"]),
    Route("/messages/{message_id}", messages.update_message, methods=["PUT"]),
    Route(
        "/messages/{message_id}/metadata/{agent_id}",
        messages.get_message_metadata,
        methods=["GET"],
    ),
    Route("/message_recipients", messages.create_recipient, methods=["POST"]),
    Route(
        "/message_recipients/{message_id}/{recipient_id}",
        messages.update_recipient,
        methods=["PUT"],
    ),
    Route("/agent_message_metadata", messages.create_metadata, methods=["POST"]),
    Route("/agent_message_metadata/{metadata_id}", messages.update_metadata, methods=["PUT"]),
    Route("/conversations", conversations.create_conversation, methods=["POST"]),
    Route("/conversations", conversations.list_conversations, methods=["GET"]),
    Route("/conversations/{conversation_id}", conversations.get_conversation, methods=["GET"]),
    Route("/conversations/{conversation_id}", conversations.update_conversation, methods=["PUT"]),
    Route("/conversations/{conversation_id}/details", conversations.get_details, methods=["GET"]),
    Route("/cli/echo", echo.echo, methods=["POST"]),
    Route("/openapi.json", docs.openapi, methods=["GET"], include_in_schema=False),
    Route("/docs", docs.swagger_ui, methods=["GET"], include_in_schema=False),
    Route("/redoc", docs.redoc, methods=["GET"], include_in_schema=False),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]

# The documentation of the routes above; tests check both list the same pairs (the
# api-key rotation's route comes with authentication). Errors listed here are each
# operation's own; 401/403 (unless public), 413, 429 and 503 are added by openapi.py.
DIRECTION = Param("direction", {"enum": ["all", "sent", "received"], "default": "all"}, "Which")
ARCHIVED = Param("archived", {"type": "boolean"}, "Only archived (true) or active (false)")
WAIT = Param(
    "wait",
    {"type": "integer", "minimum": 0, "maximum": 60, "default": 0},
    "Seconds to wait for a message when there is none yet (long-poll)",
)
AFTER = Param("after", {"type": "string"}, "Resume after this cursor (an event id)")
LAST_EVENT_ID = Param(
    "Last-Event-ID", {"type": "string"}, "Resume after this event id (wins over after)", "header"
)
API = [
    Operation("GET", "/", "Greeting", rs.Root, public=True, database=False),
    Operation("GET", "/health", "Database health (readiness)", rs.Health,
              errors=((503, rs.Health),), public=True),
    Operation("GET", "/health/ready", "Readiness probe", rs.Health, errors=((503, rs.Health),),
              public=True),
    Operation("GET", "/health/live", "Liveness probe; no database", rs.Health, public=True,
              database=False),
    Operation("GET", "/users/{user_id}", "A sample user", rs.User, errors=(404, 422)),
    Operation("POST", "/agents", "Register an agent", rs.Agent, 201, rq.AgentCreate,
              (409, 422), query=(IDEMPOTENCY_KEY,), tag="agents"),
    Operation("GET", "/agents/{agent_id}", "An agent", rs.Agent, errors=(404, 422),
              tag="agents"),
    Operation("PUT", "/agents/{agent_id}", "Update an agent", rs.Agent, 200, rq.AgentUpdate,
              (404, 422), tag="agents"),
    Operation("POST", "/agents/{agent_id}/api-key",
              "Replace an agent's API key; the old one stops working", rs.ApiKey,
              errors=(404, 422), tag="agents"),
    Operation("GET", "/agents/{agent_id}/messages", "Messages an agent sent or received",
              list[rs.MailboxItem], errors=(404, 422), query=(DIRECTION, ORDER, LIMIT, CURSOR),
              tag="mailbox"),
    Operation("GET", "/agents/{agent_id}/messages/unread", "Unread received messages",
              list[rs.MailboxItem], errors=(404, 422), query=(ORDER, LIMIT, CURSOR, WAIT),
              tag="mailbox"),
    Operation("GET", "/agents/{agent_id}/messages/stream",
              "Unread received messages as Server-Sent Events: missed ones, then live",
              rs.MailboxItem, errors=(404, 422), query=(AFTER, LAST_EVENT_ID),
              tag="mailbox", media_type="text/event-stream"),
    Operation("PUT", "/agents/{agent_id}/messages/mark-read", "Mark messages read up to a time",
              rs.MarkRead, 200, rq.MarkReadRequest, (404, 422), tag="mailbox"),
    Operation("POST", "/messages", "Send a message", rs.Message, 201, rq.MessageCreate,
              (409, 422), query=(IDEMPOTENCY_KEY,), tag="messages"),
    Operation("PUT", "/messages/{message_id}", "Update a message", rs.Message, 200,
              rq.MessageUpdate, (404, 409, 422), tag="messages"),
    Operation("GET", "/messages/{message_id}/metadata/{agent_id}",
              "A message and its metadata, for an agent that sent or received it",
              rs.MessageMetadata, errors=(404, 422), tag="messages"),
    Operation("POST", "/message_recipients", "Add a recipient", rs.Recipient, 201,
              rq.RecipientCreate, (409, 422), tag="messages"),
    Operation("PUT", "/message_recipients/{message_id}/{recipient_id}", "Set read state",
              rs.Recipient, 200, rq.RecipientUpdate, (404, 422), tag="messages"),
    Operation("POST", "/agent_message_metadata", "Attach metadata to a message", rs.Metadata,
              201, rq.MetadataCreate, (409, 422), tag="messages"),
    Operation("PUT", "/agent_message_metadata/{metadata_id}", "Update metadata", rs.Metadata,
              200, rq.MetadataUpdate, (404, 409, 422), tag="messages"),
    Operation("POST", "/conversations", "Start a conversation", rs.Conversation, 201,
              rq.ConversationCreate, (422,), query=(IDEMPOTENCY_KEY,), tag="conversations"),
    Operation("GET", "/conversations", "Conversations, newest first", list[rs.Conversation],
              errors=(422,), query=(ARCHIVED, LIMIT, CURSOR), tag="conversations"),
    Operation("GET", "/conversations/{conversation_id}", "A conversation", rs.Conversation,
              errors=(404, 422), tag="conversations"),
    Operation("PUT", "/conversations/{conversation_id}", "Update a conversation",
              rs.Conversation, 200, rq.ConversationUpdate, (404, 422), tag="conversations"),
    Operation("GET", "/conversations/{conversation_id}/details",
              "A conversation with its messages, agents and counts", rs.ConversationDetails,
              errors=(404, 422), tag="conversations"),
    Operation("POST", "/cli/echo", "Run echo with a validated message", rs.EchoResult, 200,
              rq.EchoRequest, (408, 422), tag="cli", database=False),
]  # fmt: skip

OPENAPI_DOCUMENT = msgspec.json.encode(
    openapi.build("mailroom", VERSION, "Messaging between AI agents over PostgreSQL.", API)
)

# Errors --------------------------------------------------------------------

EXCEPTION_HANDLERS = {
    HTTPError: errors.http_error,
    HTTPException: errors.starlette_error,
    InvalidInput: errors.invalid_input,
    psycopg.IntegrityError: errors.integrity_error,
    psycopg.DataError: errors.data_error,
    PoolTimeout: errors.pool_exhausted,
    DatabaseDown: errors.database_unavailable,
    psycopg.OperationalError: errors.database_unavailable,
    psycopg.InterfaceError: errors.database_unavailable,
    Exception: errors.unexpected_error,
}


def create_app(settings: Settings) -> Starlette:
    return Starlette(
        routes=ROUTES,
        lifespan=make_lifespan(settings),
        exception_handlers=EXCEPTION_HANDLERS,
    )


app = create_app(load_settings())


def main() -> None:
    import uvicorn

    settings = load_settings()
    uvicorn.run(
        "service:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
