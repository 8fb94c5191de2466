"""Who may call what: API keys, the authorization rules of the route table, rate limits.

Every route of service.py that is not public is wrapped in `guard(handler,
rule)`. The guard authenticates the caller (`Authorization: Bearer <key>`,
the operator's admin token or an agent's API key), lets the admin through,
holds an agent to the route's rule and to its write rate, and only then runs
the handler. A denied request therefore never reaches a write. With
MAILROOM_AUTH=off the guard passes every request straight on.

The rules read what they need (a path id, a decoded body, one row) and raise
403 without naming anything of another agent; a resource that does not exist
is 404 as it would be for the admin.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers.common import (
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    decode,
    decode_update,
    path_uuid,
)
from queries import Query, sql
from validation.requests import (
    ConversationUpdate,
    MessageCreate,
    MessageUpdate,
    MetadataCreate,
    MetadataUpdate,
    RecipientCreate,
)

Handler = Callable[[Request], Awaitable[Response]]
Rule = Callable[[Request, UUID], Awaitable[None]]

KEY_PREFIX = "mr_"
# "mr_" and 32 random bytes in URL-safe base64 (43 characters).
_KEY_FORMAT = re.compile(r"mr_[A-Za-z0-9_-]{43}")
PRINCIPAL = "mailroom.principal"  # scope key: "admin" or the agent's id, for logs and scopes
AGENT = "mailroom.agent"  # scope key: the calling agent's UUID, None for the admin
KEY = "mailroom.key"  # scope key: the digest of the calling agent's key
WRITES = frozenset({"POST", "PUT"})


def new_api_key() -> str:
    """A fresh key: a recognisable prefix (for secret scanners) and 32 random bytes."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    """What the database keeps of a key: its SHA-256 digest, never the key."""
    return hashlib.sha256(key.encode()).digest()


def caller(request: Request) -> UUID | None:
    """The calling agent, or None for the admin and when authentication is off."""
    return request.scope.get(AGENT)


def caller_key(request: Request) -> bytes | None:
    """The digest of the calling agent's key; None for the admin or with auth off."""
    return request.scope.get(KEY)


async def key_is_current(pool: AsyncConnectionPool, agent_id: UUID, digest: bytes) -> bool:
    """Whether the agent still holds the key: a long response re-checks before it goes on."""
    async with pool.connection() as conn:
        return bool(await sql.key_is_current.value(conn, agent_id=agent_id, digest=digest))


def room_to_wait(request: Request, agent_id: UUID) -> None:
    """429 when an agent key already holds MAILROOM_WAITS_PER_AGENT streams and
    long-polls open on this process: each one is a read per new message."""
    if caller(request) is None:
        return
    limit = request.state.settings.waits_per_agent
    if len(request.state.listener.waiters.get(agent_id, ())) >= limit:
        raise TooManyRequests(
            f"This agent already has {limit} streams or long-polls open; close one first",
            {"Retry-After": "5"},
        )


def principal(request: Request) -> str:
    """Who is calling, as text: an agent's id, "admin", or "-" with authentication off."""
    return request.scope.get(PRINCIPAL, "-")


def presented_key(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, or None when there is none."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def bearer_key(request: Request) -> str:
    """The key of `Authorization: Bearer <key>`, or 401."""
    key = presented_key(request)
    if key is None:
        if "authorization" not in request.headers:
            raise Unauthorized("Not authenticated")
        raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'")
    return key


async def authenticate(request: Request) -> UUID | None:
    """The agent a Bearer key belongs to (its key's digest kept on the request), None for
    the admin token, or 401."""
    key = bearer_key(request)
    digest = key_digest(key)
    if hmac.compare_digest(digest, request.state.admin_digest):
        return None
    if not _KEY_FORMAT.fullmatch(key):
        raise Unauthorized("Invalid API key")
    async with request.state.pool.connection() as conn:
        agent_id = await sql.get_agent_by_key.value(conn, digest=digest)
    if agent_id is None:
        raise Unauthorized("Invalid API key")
    request.scope[KEY] = digest
    return agent_id


def guard(handler: Handler, rule: Rule, bucket: str = "write") -> Handler:
    """`handler`, run only for the admin or for an agent that `rule` lets through.

    An agent's POST and PUT take a token from its `bucket` first (429 when it
    is empty), so requests over the limit cost no query of the rule.
    """

    async def guarded(request: Request) -> Response:
        if not request.state.settings.auth_required:
            return await handler(request)
        agent_id = await authenticate(request)
        request.scope[AGENT] = agent_id
        request.scope[PRINCIPAL] = "admin" if agent_id is None else str(agent_id)
        if agent_id is not None:
            if request.method in WRITES:
                wait = request.state.rate_limits.take(agent_id, bucket)
                if wait:
                    raise TooManyRequests(
                        "Too many requests for this API key; retry later",
                        {"Retry-After": str(wait)},
                    )
            await rule(request, agent_id)
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


# The rules ------------------------------------------------------------------


async def any_principal(request: Request, agent_id: UUID) -> None:
    """Any valid key."""


async def admin_only(request: Request, agent_id: UUID) -> None:
    """Only the operator's admin token."""
    raise Forbidden("Only the operator (admin key) may do this")


def itself(name: str) -> Rule:
    """The agent named by the path parameter `name` must be the caller."""

    async def rule(request: Request, agent_id: UUID) -> None:
        if path_uuid(request, name) != agent_id:
            raise Forbidden("An agent may only do this for itself")

    rule.__doc__ = f"{{{name}}} is the caller"
    return rule


async def _check_links(
    request: Request, agent_id: UUID, parent_id: UUID | None, conversation_id: UUID | None
) -> None:
    """A message may only reply to a message and join a conversation its sender can see.

    Ids that do not exist are left to the handler (409 naming the field).
    """
    if parent_id is None and conversation_id is None:
        return
    async with request.state.pool.connection() as conn:
        if parent_id is not None:
            party = await sql.get_message_party.value(conn, message_id=parent_id, agent_id=agent_id)
            if party is False:
                raise Forbidden("An agent may only reply to messages it sent or received")
        if conversation_id is not None:
            party = await sql.get_conversation_party.value(
                conn, conversation_id=conversation_id, agent_id=agent_id
            )
            if party is False:
                raise Forbidden("An agent may only post in conversations it takes part in")


async def sends_as_itself(request: Request, agent_id: UUID) -> None:
    """sender_id is the caller; the parent message and conversation are the caller's."""
    body = await decode(request, MessageCreate)
    if body.sender_id != agent_id:
        raise Forbidden("An agent may only send messages as itself (sender_id)")
    await _check_links(request, agent_id, body.parent_message_id, body.conversation_id)


class _Owner(msgspec.Struct, frozen=True):
    """Row of the owner queries: get_message_sender, get_metadata_owner,
    get_conversation_starter (NULL: nobody, e.g. the operator)."""

    owner: UUID | None


async def _owner(request: Request, query: Query, **params: object) -> _Owner | None:
    """The row naming who owns something, or None when there is no such thing."""
    async with request.state.pool.connection() as conn:
        return await query.one(conn, _Owner, **params)


async def _owned(
    request: Request, agent_id: UUID, query: Query, missing: str, refused: str, **params: object
) -> None:
    """404 `missing` when the thing does not exist, 403 `refused` when it is not the caller's."""
    found = await _owner(request, query, **params)
    if found is None:
        raise NotFound(missing)
    if found.owner != agent_id:
        raise Forbidden(refused)


async def sender_of_message(request: Request, agent_id: UUID) -> None:
    """{message_id} was sent by the caller, and the new links are the caller's."""
    message_id = path_uuid(request, "message_id")
    body = await decode_update(request, MessageUpdate)  # a bad body is 422 before a 404
    await _owned(
        request,
        agent_id,
        sql.get_message_sender,
        "Message not found",
        "An agent may only edit messages it sent",
        message_id=message_id,
    )
    await _check_links(
        request,
        agent_id,
        body.parent_message_id if isinstance(body.parent_message_id, UUID) else None,
        body.conversation_id if isinstance(body.conversation_id, UUID) else None,
    )


async def adds_to_own_message(request: Request, agent_id: UUID) -> None:
    """The message_id of the body was sent by the caller (a missing one is the handler's 409);
    the new recipient's copy starts unread: read state is the recipient's to change."""
    body = await decode(request, RecipientCreate)
    if body.is_read:
        raise Forbidden("Only the recipient may mark a message read (is_read)")
    found = await _owner(request, sql.get_message_sender, message_id=body.message_id)
    if found is not None and found.owner != agent_id:
        raise Forbidden("An agent may only add recipients to messages it sent")


async def annotates_own_mail(request: Request, agent_id: UUID) -> None:
    """agent_id is the caller, who sent or received the message of the body."""
    body = await decode(request, MetadataCreate)
    if body.agent_id != agent_id:
        raise Forbidden("An agent may only attach metadata as itself (agent_id)")
    async with request.state.pool.connection() as conn:
        party = await sql.get_message_party.value(
            conn, message_id=body.message_id, agent_id=agent_id
        )
    if party is False:
        raise Forbidden("An agent may only attach metadata to messages it sent or received")


async def owner_of_metadata(request: Request, agent_id: UUID) -> None:
    """{metadata_id} was attached by the caller."""
    metadata_id = path_uuid(request, "metadata_id")
    await decode_update(request, MetadataUpdate)  # a bad body is 422 before a 404
    await _owned(
        request,
        agent_id,
        sql.get_metadata_owner,
        "Metadata not found",
        "An agent may only edit metadata it attached",
        metadata_id=metadata_id,
    )


async def started(request: Request, agent_id: UUID) -> None:
    """The caller started {conversation_id}: only it (and the admin) may change it."""
    conversation_id = path_uuid(request, "conversation_id")
    await decode_update(request, ConversationUpdate)  # a bad body is 422 before a 404
    await _owned(
        request,
        agent_id,
        sql.get_conversation_starter,
        "Conversation not found",
        "Only the agent that started a conversation may change it",
        conversation_id=conversation_id,
    )


async def takes_part(request: Request, agent_id: UUID) -> None:
    """The caller started {conversation_id}, or sent or received a message in it."""
    conversation_id = path_uuid(request, "conversation_id")
    async with request.state.pool.connection() as conn:
        party = await sql.get_conversation_party.value(
            conn, conversation_id=conversation_id, agent_id=agent_id
        )
    if party is None:
        raise NotFound("Conversation not found")
    if not party:
        raise Forbidden("An agent may only see conversations it takes part in")


# Limits -------------------------------------------------------------------


class RateLimits:
    """Token buckets per (agent, kind) in this process: a replica's own count.

    Each kind allows `per_minute` requests a minute, with bursts of as many;
    0 turns the kind's limit off. The admin and an unauthenticated service are
    never limited here.
    """

    def __init__(self, per_minute: dict[str, int]) -> None:
        self.per_minute = per_minute
        self.buckets: dict[tuple[UUID, str], tuple[float, float]] = {}

    def take(self, agent_id: UUID, kind: str) -> int:
        """0 when a request may go ahead, else the whole seconds to wait."""
        capacity = self.per_minute.get(kind, 0)
        if capacity <= 0:
            return 0
        rate = capacity / 60.0
        now = time.monotonic()
        tokens, then = self.buckets.get((agent_id, kind), (float(capacity), now))
        tokens = min(float(capacity), tokens + (now - then) * rate)
        if tokens < 1.0:
            self.buckets[(agent_id, kind)] = (tokens, now)
            return max(1, int((1.0 - tokens) / rate + 0.999))
        if len(self.buckets) > 100_000:
            self.buckets.clear()  # full buckets are the default: forgetting them loses nothing
        self.buckets[(agent_id, kind)] = (tokens - 1.0, now)
        return 0


CONSOLE_PAGE, CONSOLE_FILES = "/console", "/static/console/"
# The console runs only its own files: no inline script or style, no other origin, no
# framing, no base tag, and no native form submission (a form posted before its module
# loaded would put the typed key in the URL).
CONSOLE_POLICY = b"default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every response, and `Cache-Control:
    no-store` on every response but the static files of the documentation pages.

    The console's page and files also carry CONSOLE_POLICY; its files are
    revalidated on every load (`no-cache`) so an upgrade never mixes versions.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        console_file = path.startswith(CONSOLE_FILES)
        console = console_file or path == CONSOLE_PAGE
        cacheable = path.startswith("/static/") and not console_file
        cache_control = b"no-cache" if console_file else b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-content-type-options", b"nosniff"))
                if console:
                    headers.append((b"content-security-policy", CONSOLE_POLICY))
                if not cacheable and all(name != b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", cache_control))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# The embedded server's admin token ------------------------------------------

ADMIN_TOKEN_FILE = "mailroom-admin-token"  # noqa: S105 - a file name


def embedded_admin_token(data_dir: Path) -> str:
    """The admin token of `uv run service.py` without DATABASE_URL or MAILROOM_ADMIN_TOKEN.

    Made on the first start, kept (mode 0600) in the embedded server's data
    directory and printed once on the terminal; later starts read it back.
    Workers starting together agree on one token: the file appears whole, by a
    hard link that only the first of them can make.
    """
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = KEY_PREFIX + "admin_" + secrets.token_urlsafe(32)
    draft = path.with_name(f".{ADMIN_TOKEN_FILE}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        draft.unlink()
    # Printed, not logged: this is the one time the operator sees it.
    print(
        f"mailroom: generated the admin token {token}\n"
        f"mailroom: it is kept in {path} and will not be printed again",
        file=sys.stderr,
        flush=True,
    )
    return token
