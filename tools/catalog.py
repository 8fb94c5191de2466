"""The tools of /mcp: their arguments (one Struct each), descriptions, and the operations they run.

Each tool is a thin call of one or two operations of the table (tools/calls.py)
with the calling agent filled in; the arguments' limits are the REST fields'
own types, so they are written once. Descriptions are read by the model that
decides which tool to call: they say what the tool is for and what to pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

import msgspec
from msgspec import Meta
from starlette.requests import Request

from queries import sql
from tools import text
from tools.calls import Calls, ToolFailure, agent_of, invalid_text
from validation.errors import InvalidInput
from validation.query_params import Cursor, Instant, Limit, SearchText, Wait
from validation.requests import (
    Content,
    ConversationCreate,
    Importance,
    JsonObject,
    Label,
    MarkReadRequest,
    MessageCreate,
    Title,
)
from validation.responses import Agent


class Arguments(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every tool's arguments: an argument the tool does not know is an error."""


PageLimit = Annotated[Limit, Meta(description="How many items at most (1 to 1000, default 100)")]
PageCursor = Annotated[
    Cursor,
    Meta(description="The next_cursor of the previous call, to get the next page; omit it first"),
]


class NoArguments(Arguments, frozen=True):
    """whoami takes no arguments."""


class ListAgents(Arguments, frozen=True):
    """Arguments of list_agents."""

    name: (
        Annotated[
            str,
            Meta(
                max_length=255,
                description="Only agents whose name starts with this text (case ignored)",
            ),
        ]
        | None
    ) = None
    limit: PageLimit = 100
    cursor: PageCursor | None = None


class SendMessage(Arguments, frozen=True):
    """Arguments of send_message."""

    to: Annotated[
        list[UUID],
        Meta(
            min_length=1,
            max_length=1000,
            description="The ids of the agents to send to (find them with list_agents)",
        ),
    ]
    content: Annotated[Content, Meta(description="The message text, 1 to 65536 characters")]
    conversation_id: (
        Annotated[UUID, Meta(description="Post it in this conversation (one you take part in)")]
        | None
    ) = None
    reply_to: Annotated[UUID, Meta(description="The id of the message this one answers")] | None = (
        None
    )
    importance: Annotated[Importance, Meta(description="0 (lowest) to 10 (highest)")] | None = None
    message_type: (
        Annotated[Label, Meta(description="A label of your choice, e.g. question or result")] | None
    ) = None
    metadata: (
        Annotated[JsonObject, Meta(description="Any JSON object, stored with the message")] | None
    ) = None
    idempotency_key: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=255,
                description=(
                    "Any text unique to this message: a retry with the same key and arguments "
                    "sends nothing twice"
                ),
            ),
        ]
        | None
    ) = None


class CheckInbox(Arguments, frozen=True):
    """Arguments of check_inbox."""

    unread_only: Annotated[
        bool,
        Meta(
            description=(
                "true (default): unread received messages, oldest first; false: every message "
                "you received, newest first, read or not"
            )
        ),
    ] = True
    wait_seconds: Annotated[
        Wait,
        Meta(
            description=(
                "With unread_only, wait up to this many seconds (0 to 60) for a message when "
                "none is unread; returns as soon as one arrives"
            )
        ),
    ] = 0
    limit: PageLimit = 100
    cursor: PageCursor | None = None


class MarkRead(Arguments, frozen=True):
    """Arguments of mark_read."""

    up_to: (
        Annotated[
            str,
            Meta(
                extra_json_schema={"format": "date-time"},
                description=(
                    "Mark messages sent at or before this time: pass the read_up_to value "
                    "check_inbox returned. Omitted: every message received so far"
                ),
            ),
        ]
        | None
    ) = None


class ReadThread(Arguments, frozen=True):
    """Arguments of read_thread: exactly one of the two."""

    message_id: Annotated[UUID, Meta(description="A message you sent or received")] | None = None
    conversation_id: Annotated[UUID, Meta(description="A conversation you take part in")] | None = (
        None
    )
    cursor: PageCursor | None = None


class SearchMessages(Arguments, frozen=True):
    """Arguments of search_messages."""

    q: SearchText
    order: Annotated[
        Literal["relevance", "newest"],
        Meta(description="relevance (default): best match first; newest: newest first"),
    ] = "relevance"
    direction: Annotated[
        Literal["all", "sent", "received"],
        Meta(description="Search the messages you sent, received, or both (default)"),
    ] = "all"
    conversation_id: (
        Annotated[UUID, Meta(description="Only messages of this conversation")] | None
    ) = None
    since: (
        Annotated[Instant, Meta(description="Only messages sent at or after this time")] | None
    ) = None
    until: Annotated[Instant, Meta(description="Only messages sent before this time")] | None = None
    limit: PageLimit = 100
    cursor: PageCursor | None = None


class StartConversation(Arguments, frozen=True):
    """Arguments of start_conversation."""

    title: Annotated[Title, Meta(description="A short title, up to 255 characters")] | None = None
    description: Annotated[str, Meta(description="What the conversation is about")] | None = None
    metadata: Annotated[JsonObject, Meta(description="Any JSON object")] | None = None


class ListConversations(Arguments, frozen=True):
    """Arguments of list_conversations."""

    limit: PageLimit = 100
    cursor: PageCursor | None = None


class Result(NamedTuple):
    """What a tool returns: the REST JSON (structured content) and a short text for a model."""

    structured: dict[str, Any]
    text: str


ToolFunction = Callable[[Calls, Request, Any], Awaitable[Result]]


class Tool(NamedTuple):
    """One tool: what tools/list shows of it, and the function tools/call runs."""

    name: str
    description: str
    arguments: type[Arguments]
    function: ToolFunction
    read_only: bool


async def _names(request: Request, messages: list[dict[str, Any]]) -> dict[str, str]:
    """The name of each sender, for the text rendering (names are public: GET /agents)."""
    ids = list({m["sender_id"] for m in messages if m.get("sender_id")})
    if not ids:
        return {}
    async with request.state.pool.connection() as conn:
        agents = await sql.list_agents.all(conn, Agent, agent_ids=ids, viewer=agent_of(request))
    return {str(agent.id): agent.agent_name for agent in agents}


async def whoami(calls: Calls, request: Request, args: NoArguments) -> Result:
    me = agent_of(request)
    answer = await calls.run(request, "GET", "/agents/{agent_id}", path_params={"agent_id": me})
    return Result(answer.body, text.whoami(answer.body))


async def list_agents(calls: Calls, request: Request, args: ListAgents) -> Result:
    answer = await calls.run(
        request,
        "GET",
        "/agents",
        query={"name": args.name, "limit": args.limit, "cursor": args.cursor},
    )
    found = {"agents": answer.body, "next_cursor": answer.next_cursor}
    return Result(found, text.agents(answer.body, answer.next_cursor))


async def send_message(calls: Calls, request: Request, args: SendMessage) -> Result:
    body = MessageCreate(
        content=args.content,
        sender_id=agent_of(request),
        parent_message_id=args.reply_to,
        conversation_id=args.conversation_id,
        message_type=args.message_type,
        importance=args.importance,
        msg_metadata=args.metadata,
        recipient_ids=args.to,
    )
    headers = {} if args.idempotency_key is None else {"Idempotency-Key": args.idempotency_key}
    answer = await calls.run(
        request,
        "POST",
        "/messages",
        body=body,
        headers=headers,
        renamed={
            "recipient_ids": "to",
            "parent_message_id": "reply_to",
            "msg_metadata": "metadata",
            "idempotency-key": "idempotency_key",
        },
    )
    return Result(answer.body, text.sent(answer.body, len(set(args.to))))


async def check_inbox(calls: Calls, request: Request, args: CheckInbox) -> Result:
    me = agent_of(request)
    page = {"limit": args.limit, "cursor": args.cursor}
    if args.unread_only:
        answer = await calls.run(
            request,
            "GET",
            "/agents/{agent_id}/messages/unread",
            path_params={"agent_id": me},
            query={**page, "order": "asc", "wait": args.wait_seconds},
            renamed={"wait": "wait_seconds"},
        )
    elif args.wait_seconds:
        raise ToolFailure(
            422, "wait_seconds works with unread_only=true only; set one of them back."
        )
    else:
        answer = await calls.run(
            request,
            "GET",
            "/agents/{agent_id}/messages",
            path_params={"agent_id": me},
            query={**page, "direction": "received", "order": "desc"},
        )
    messages = answer.body
    newest = max((m["sent_at"] for m in messages), key=datetime.fromisoformat, default=None)
    found = {"messages": messages, "next_cursor": answer.next_cursor, "read_up_to": newest}
    return Result(found, text.inbox(messages, await _names(request, messages), found))


async def mark_read(calls: Calls, request: Request, args: MarkRead) -> Result:
    me = agent_of(request)
    renamed = {"read_up_to_date": "up_to"}
    try:
        body = MarkReadRequest(read_up_to_date=args.up_to or datetime.now(UTC).isoformat())
    except InvalidInput as error:
        raise ToolFailure(422, invalid_text(error.errors, renamed)) from None
    answer = await calls.run(
        request,
        "PUT",
        "/agents/{agent_id}/messages/mark-read",
        path_params={"agent_id": me},
        body=body,
        renamed=renamed,
    )
    return Result(answer.body, text.marked(answer.body))


async def read_thread(calls: Calls, request: Request, args: ReadThread) -> Result:
    if (args.message_id is None) == (args.conversation_id is None):
        raise ToolFailure(422, "Pass exactly one of message_id and conversation_id.")
    conversation_id = args.conversation_id
    found: dict[str, Any] = {}
    if args.message_id is not None:
        answer = await calls.run(
            request,
            "GET",
            "/messages/{message_id}/metadata/{agent_id}",
            path_params={"message_id": args.message_id, "agent_id": agent_of(request)},
        )
        found["message"] = answer.body["message"]
        found["metadata_items"] = answer.body["metadata_items"]
        conversation_id = answer.body["message"]["conversation_id"]
    if conversation_id is not None:
        answer = await calls.run(
            request,
            "GET",
            "/conversations/{conversation_id}/details",
            path_params={"conversation_id": conversation_id},
            query={"cursor": args.cursor},
        )
        found["conversation"] = answer.body
        found["next_cursor"] = answer.next_cursor
    messages = found["conversation"]["messages"] if "conversation" in found else [found["message"]]
    return Result(found, text.thread(found, messages, await _names(request, messages)))


async def search_messages(calls: Calls, request: Request, args: SearchMessages) -> Result:
    answer = await calls.run(
        request,
        "GET",
        "/agents/{agent_id}/messages/search",
        path_params={"agent_id": agent_of(request)},
        query={
            "q": args.q,
            "order": args.order,
            "direction": args.direction,
            "conversation_id": args.conversation_id,
            "since": None if args.since is None else args.since.isoformat(),
            "until": None if args.until is None else args.until.isoformat(),
            "limit": args.limit,
            "cursor": args.cursor,
        },
    )
    messages = answer.body
    found = {"messages": messages, "next_cursor": answer.next_cursor}
    return Result(found, text.search(messages, await _names(request, messages), found))


async def start_conversation(calls: Calls, request: Request, args: StartConversation) -> Result:
    body = ConversationCreate(
        title=args.title, description=args.description, metadata=args.metadata or {}
    )
    answer = await calls.run(request, "POST", "/conversations", body=body)
    return Result(answer.body, text.conversation_started(answer.body))


async def list_conversations(calls: Calls, request: Request, args: ListConversations) -> Result:
    answer = await calls.run(
        request, "GET", "/conversations", query={"limit": args.limit, "cursor": args.cursor}
    )
    found = {"conversations": answer.body, "next_cursor": answer.next_cursor}
    return Result(found, text.conversations(answer.body, answer.next_cursor))


TOOLS = [
    Tool(
        "whoami",
        "Who you are on mailroom: your agent id and name. Other agents send to this id.",
        NoArguments,
        whoami,
        read_only=True,
    ),
    Tool(
        "list_agents",
        "Find agents to message: their ids and names, by name (case ignored), then id. "
        "Pass `name` to find a peer by the start of its name. When next_cursor is not null, "
        "call again with it for more.",
        ListAgents,
        list_agents,
        read_only=True,
    ),
    Tool(
        "send_message",
        "Send a message to one or more agents (their ids, from list_agents). The message and "
        "all its recipients are stored together or not at all: an unknown recipient id sends "
        "nothing. Use reply_to to answer a message and conversation_id to post in a "
        "conversation you take part in.",
        SendMessage,
        send_message,
        read_only=False,
    ),
    Tool(
        "check_inbox",
        "Read the messages sent to you. By default the unread ones, oldest first; reading "
        "does not mark them read (call mark_read with the read_up_to this returns). With "
        "wait_seconds, waits until a message arrives (up to 60 s) when none is unread: use "
        "it to wait for an answer. When next_cursor is not null, call again with it for more.",
        CheckInbox,
        check_inbox,
        read_only=True,
    ),
    Tool(
        "mark_read",
        "Mark the messages you received as read, up to a time (inclusive): pass the read_up_to "
        "of your last check_inbox so that a message that arrived since stays unread.",
        MarkRead,
        mark_read,
        read_only=False,
    ),
    Tool(
        "read_thread",
        "Read a whole thread: a conversation's messages (oldest first) with their recipients "
        "and agents, by conversation_id, or the conversation of a message by message_id (just "
        "that message when it belongs to none). You see the messages you sent or received. "
        "A long thread comes in pages: when next_cursor is not null, call again with the same "
        "arguments and that cursor for the next messages.",
        ReadThread,
        read_thread,
        read_only=True,
    ),
    Tool(
        "search_messages",
        "Find messages you sent or received by their words: ids like build-1234, names like "
        "retry_count or app.config, paths, URLs and numbers are found by a part or the whole. "
        'q takes web-search syntax: "an exact phrase", a or b, -excluded. Each result has a '
        "snippet with the matched words between \\uE000 and \\uE001 (shown as [[ ]] in the "
        "text). When next_cursor is not null, call again with it for more.",
        SearchMessages,
        search_messages,
        read_only=True,
    ),
    Tool(
        "start_conversation",
        "Start a conversation: a thread that groups messages. Pass its id as conversation_id "
        "to send_message; the agents you send to can then read it with read_thread.",
        StartConversation,
        start_conversation,
        read_only=False,
    ),
    Tool(
        "list_conversations",
        "The conversations you take part in (started, or sent or received a message in), "
        "newest first. When next_cursor is not null, call again with it for more.",
        ListConversations,
        list_conversations,
        read_only=True,
    ),
]
