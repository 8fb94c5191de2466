"""mailroom: the settings, lifespan, route table and error mapping of the service.

Run it with `uv run service.py` (embedded PostgreSQL unless DATABASE_URL is
set) or `uvicorn service:app`. Reading this file top to bottom tells you every
URL the service has and which handler answers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
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
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from handlers import (
    access,
    agents,
    conversations,
    core,
    docs,
    echo,
    errors,
    mailbox,
    messages,
    metrics,
    stream,
)
from handlers.access import (
    adds_to_own_message,
    admin_only,
    annotates_own_mail,
    any_principal,
    guard,
    itself,
    owner_of_metadata,
    sender_of_message,
    sends_as_itself,
    started,
    takes_part,
)
from handlers.common import HTTPError
from operations import logs
from operations.http_limits import BoundedHttpToolsProtocol, Limits
from operations.metrics import clean_directory
from operations.middleware import RequestTelemetry
from queries.database import (
    DatabaseDown,
    make_pool,
    migrate,
    normalise_url,
    purge_expired_keys,
    start_embedded,
    stop_embedded,
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
HTTP_PROTOCOL = "service:HttpProtocol"  # uvicorn's --http, by name: each worker imports it


# Settings ------------------------------------------------------------------


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, read once from the environment (see README)."""

    database_url: str | None = None
    data_dir: str = ".mailroom/pgdata"
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on all interfaces
    port: int = 8000
    workers: int = os.cpu_count() or 1
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_token: str | None = None
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
    auth_required: bool = True
    admin_token: str | None = None
    write_rate_limit: int = 600
    echo_rate_limit: int = 60
    echo_concurrency: int = 4
    waits_per_agent: int = 8
    statement_timeout: float | None = 10.0
    max_header_bytes: int = 16384
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0


AUTH_MODES = {"required": True, "off": False}  # MAILROOM_AUTH

# Environment variable -> (field, parser). A parser raises ValueError on bad text.
ENVIRONMENT = {
    "DATABASE_URL": ("database_url", normalise_url),
    "MAILROOM_DATA_DIR": ("data_dir", str),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "WEB_CONCURRENCY": ("workers", int),
    "LOG_LEVEL": ("log_level", str.upper),
    "LOG_FORMAT": ("log_format", str.lower),
    # The file (a mounted Secret) first, so that METRICS_TOKEN itself wins when both are set.
    "METRICS_TOKEN_FILE": ("metrics_token", lambda path: _secret(read_file(path))),
    "METRICS_TOKEN": ("metrics_token", lambda text: _secret(text)),
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
    "MAILROOM_AUTH": ("auth_required", lambda text: _choice(text, AUTH_MODES)),
    "MAILROOM_ADMIN_TOKEN": ("admin_token", lambda text: _admin_token(text, "the variable")),
    "MAILROOM_ADMIN_TOKEN_FILE": (
        "admin_token",
        lambda path: _admin_token(read_file(path).strip(), "the file"),
    ),
    "MAILROOM_WRITE_RATE_LIMIT": ("write_rate_limit", int),
    "MAILROOM_ECHO_RATE_LIMIT": ("echo_rate_limit", int),
    "MAILROOM_ECHO_CONCURRENCY": ("echo_concurrency", int),
    "MAILROOM_WAITS_PER_AGENT": ("waits_per_agent", int),
    "MAILROOM_STATEMENT_TIMEOUT": (
        "statement_timeout",
        lambda text: None if text.lower() in ("off", "none", "0") else float(text),
    ),
    # Bounds on one connection's request head and body (operations/http_limits.py).
    "MAILROOM_MAX_HEADER_BYTES": ("max_header_bytes", int),
    "MAILROOM_MAX_HEADERS": ("max_headers", int),
    "MAILROOM_HEADER_TIMEOUT": ("header_timeout", float),
    "MAILROOM_BODY_TIMEOUT": ("body_timeout", float),
}
MIN_ADMIN_TOKEN = 16  # characters: a shorter operator secret is refused at start-up


def _choice(text: str, choices: Mapping[str, object]) -> object:
    if text not in choices:
        raise ValueError(f"must be one of: {', '.join(choices)}")
    return choices[text]


def _admin_token(text: str, source: str) -> str:
    if len(text) < MIN_ADMIN_TOKEN or not text.isascii() or not text.isprintable():
        raise ValueError(
            f"the admin token in {source} must be at least {MIN_ADMIN_TOKEN} printable "
            "ASCII characters"
        )
    return text


def read_file(path: str) -> str:
    """A setting kept in a file (a mounted Kubernetes Secret, for example)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None


def _secret(text: str) -> str | None:
    """A token from the environment or a file; empty means unset."""
    return text.strip() or None


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment; a bad value stops start-up naming the variable."""
    if environ.get("MAILROOM_ADMIN_TOKEN") and environ.get("MAILROOM_ADMIN_TOKEN_FILE"):
        raise SystemExit(
            "mailroom: set MAILROOM_ADMIN_TOKEN or MAILROOM_ADMIN_TOKEN_FILE, not both"
        )
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
        ("LOG_FORMAT", settings.log_format not in logs.FORMATS),
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
        ("MAILROOM_WRITE_RATE_LIMIT", settings.write_rate_limit < 0),
        ("MAILROOM_ECHO_RATE_LIMIT", settings.echo_rate_limit < 0),
        ("MAILROOM_ECHO_CONCURRENCY", settings.echo_concurrency < 1),
        ("MAILROOM_WAITS_PER_AGENT", settings.waits_per_agent < 1),
        (
            "MAILROOM_STATEMENT_TIMEOUT",
            settings.statement_timeout is not None and settings.statement_timeout < 0.001,
        ),
        ("MAILROOM_MAX_HEADER_BYTES", settings.max_header_bytes < 1024),
        ("MAILROOM_MAX_HEADERS", settings.max_headers < 1),
        ("MAILROOM_HEADER_TIMEOUT", settings.header_timeout <= 0),
        ("MAILROOM_BODY_TIMEOUT", settings.body_timeout <= 0),
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
    admin_digest: bytes
    rate_limits: access.RateLimits
    echo_slots: asyncio.Semaphore


ADMIN_KEY_MISSING = (
    "mailroom: MAILROOM_AUTH=required (the default) needs the operator's key: set "
    "MAILROOM_ADMIN_TOKEN or MAILROOM_ADMIN_TOKEN_FILE, or MAILROOM_AUTH=off for a local "
    "experiment (only the embedded database makes one up by itself)"
)


def needs_admin_token(settings: Settings) -> bool:
    """Auth is on, no admin token is configured and none can be made (a database of its own)."""
    return settings.auth_required and not settings.admin_token and bool(settings.database_url)


async def admin_digest(settings: Settings) -> bytes:
    """The digest of the admin token, or b"" (matches no key) when auth is off."""
    if not settings.auth_required:
        log.warning(
            "MAILROOM_AUTH=off: no API keys are checked; every caller may read and change "
            "everything. Use it for local experiments only."
        )
        return b""
    if needs_admin_token(settings):
        log.error(ADMIN_KEY_MISSING)
        raise RuntimeError(ADMIN_KEY_MISSING)
    token = settings.admin_token or await asyncio.to_thread(
        access.embedded_admin_token, Path(settings.data_dir)
    )
    return access.key_digest(token)


def make_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        logs.configure(settings.log_level, settings.log_format)
        if int(os.environ.get("WEB_CONCURRENCY", "1")) > 1 and not os.environ.get(
            "PROMETHEUS_MULTIPROC_DIR"
        ):
            log.warning(
                "WEB_CONCURRENCY > 1 without PROMETHEUS_MULTIPROC_DIR: "
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
        log.info("mailroom %s ready", VERSION, extra=logs.event("startup", version=VERSION))
        try:
            yield State(
                settings=settings,
                pool=pool,
                listener=listener,
                cursor_key=cursor_key,
                openapi=OPENAPI_DOCUMENT,
                admin_digest=admin,
                rate_limits=access.RateLimits(
                    {"write": settings.write_rate_limit, "echo": settings.echo_rate_limit}
                ),
                echo_slots=asyncio.Semaphore(settings.echo_concurrency),
            )
        finally:
            purge.cancel()
            await listener.close()
            await pool.close()
            logs.REQUEST_LINES.flush()
            log.info("mailroom stopped", extra=logs.event("shutdown"))

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

# Routes without a guard are public; a guarded one answers the admin, or an
# agent its rule lets through (handlers/access.py; the README has the matrix).
SELF = itself("agent_id")
ROUTES = [
    Route("/", core.root, methods=["GET"]),
    Route("/health", core.health, methods=["GET"]),
    Route("/health/ready", core.health, methods=["GET"]),
    Route("/health/live", core.live, methods=["GET"]),
    Route("/users/{user_id}", guard(core.get_user, admin_only), methods=["GET"]),
    Route("/agents", guard(agents.create_agent, admin_only), methods=["POST"]),
    Route("/agents/{agent_id}", guard(agents.get_agent, SELF), methods=["GET"]),
    Route("/agents/{agent_id}", guard(agents.update_agent, SELF), methods=["PUT"]),
    Route("/agents/{agent_id}/api-key", guard(agents.rotate_key, SELF), methods=["POST"]),
    Route("/agents/{agent_id}/messages", guard(mailbox.list_messages, SELF), methods=["GET"]),
    Route("/agents/{agent_id}/messages/unread", guard(mailbox.list_unread, SELF), methods=["GET"]),
    Route(
        "/agents/{agent_id}/messages/stream",
        guard(stream.stream_messages, SELF),
        methods=["GET"],
    ),
    Route("/agents/{agent_id}/messages/mark-read", guard(mailbox.mark_read, SELF), methods=["PUT"]),
    Route("/messages", guard(messages.create_message, sends_as_itself), methods=["POST"]),
    Route(
        "/messages/{message_id}",
        guard(messages.update_message, sender_of_message),
        methods=["PUT"],
    ),
    Route(
        "/messages/{message_id}/metadata/{agent_id}",
        guard(messages.get_message_metadata, SELF),
        methods=["GET"],
    ),
    Route(
        "/message_recipients",
        guard(messages.create_recipient, adds_to_own_message),
        methods=["POST"],
    ),
    Route(
        "/message_recipients/{message_id}/{recipient_id}",
        guard(messages.update_recipient, itself("recipient_id")),
        methods=["PUT"],
    ),
    Route(
        "/agent_message_metadata",
        guard(messages.create_metadata, annotates_own_mail),
        methods=["POST"],
    ),
    Route(
        "/agent_message_metadata/{metadata_id}",
        guard(messages.update_metadata, owner_of_metadata),
        methods=["PUT"],
    ),
    Route(
        "/conversations",
        guard(conversations.create_conversation, any_principal),
        methods=["POST"],
    ),
    Route(
        "/conversations",
        guard(conversations.list_conversations, any_principal),
        methods=["GET"],
    ),
    Route(
        "/conversations/{conversation_id}",
        guard(conversations.get_conversation, takes_part),
        methods=["GET"],
    ),
    Route(
        "/conversations/{conversation_id}",
        guard(conversations.update_conversation, started),
        methods=["PUT"],
    ),
    Route(
        "/conversations/{conversation_id}/details",
        guard(conversations.get_details, takes_part),
        methods=["GET"],
    ),
    Route("/cli/echo", guard(echo.echo, any_principal, bucket="echo"), methods=["POST"]),
    Route("/openapi.json", docs.openapi, methods=["GET"], include_in_schema=False),
    Route("/docs", docs.swagger_ui, methods=["GET"], include_in_schema=False),
    Route("/redoc", docs.redoc, methods=["GET"], include_in_schema=False),
    Route("/metrics", metrics.metrics, methods=["GET"], include_in_schema=False),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]

# The documentation of the routes above; tests check both list the same pairs.
# Errors listed here are each
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
    Operation("POST", "/agents", "Register an agent", rs.AgentCreated, 201, rq.AgentCreate,
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
    ClientDisconnect: errors.client_gone,
    psycopg.IntegrityError: errors.integrity_error,
    psycopg.DataError: errors.data_error,
    PoolTimeout: errors.pool_exhausted,
    DatabaseDown: errors.database_unavailable,
    psycopg.OperationalError: errors.database_error,
    psycopg.InterfaceError: errors.database_unavailable,
    Exception: errors.unexpected_error,
}


def create_app(settings: Settings) -> Starlette:
    return Starlette(
        routes=ROUTES,
        # The telemetry outermost: it times and logs every response, headers included.
        middleware=[Middleware(RequestTelemetry), Middleware(access.SecurityHeaders)],
        lifespan=make_lifespan(settings),
        exception_handlers=EXCEPTION_HANDLERS,
    )


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
        os.environ["MAILROOM_ADMIN_TOKEN"] = access.embedded_admin_token(data_dir)
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
    os.environ.setdefault("LOG_FORMAT", settings.log_format)  # read by logging.json's formatter
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
            proxy_headers=True,
        )
    finally:
        if own_directory is not None:
            shutil.rmtree(own_directory, ignore_errors=True)
        if embedded:
            stop_embedded(Path(settings.data_dir))


if __name__ == "__main__":
    main()
