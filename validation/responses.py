"""Output Structs: the exact shape of every response body."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

# Server-set instants, RFC 3339 in UTC with microseconds, as the statements
# return them (the SQL function rfc3339, queries/migrations/0005_shared_definitions.sql).
Timestamp = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={"format": "date-time"}, examples=["2026-11-28T19:20:01.123456Z"]
    ),
]


class Root(msgspec.Struct, frozen=True):
    """Service greeting with a pointer to the API documentation."""

    message: str
    docs: str


class Health(msgspec.Struct, frozen=True, omit_defaults=True):
    """Whether the service and its database answer."""

    status: str
    detail: str | None = None


class User(msgspec.Struct, frozen=True):
    """A sample user (read-only)."""

    id: int
    name: str
    email: str
    created_at: Timestamp


class Agent(msgspec.Struct, frozen=True):
    """A registered agent."""

    id: UUID
    agent_name: str
    ip_address: str | None
    port: int | None
    created_at: Timestamp
    updated_at: Timestamp


class DirectoryEntry(msgspec.Struct, frozen=True):
    """An agent a caller may address: who it is, never where it runs. The admin (and an
    open service) also gets each agent's unread count and the time of the last message
    it sent or received (null: none yet); an agent's key gets neither field."""

    id: UUID
    agent_name: str
    created_at: Timestamp
    unread_count: int | UnsetType = UNSET
    last_active_at: Timestamp | UnsetType | None = UNSET


class AgentProfile(Agent, frozen=True):
    """An agent as it and the admin see it: with its webhook."""

    webhook_url: str | None
    webhook_disabled_at: Annotated[
        Timestamp | None,
        msgspec.Meta(
            description="When the endpoint answered 410 Gone and the webhook was disabled;"
            " setting webhook_url again re-enables it"
        ),
    ]


class AgentUpdated(AgentProfile, frozen=True):
    """An agent after a change; webhook_secret only when webhook_url was set: shown this once."""

    webhook_secret: (
        Annotated[
            str,
            msgspec.Meta(
                description="The Standard Webhooks signing secret (whsec_ + base64), shown once"
            ),
        ]
        | UnsetType
    ) = UNSET


class AgentCreated(AgentUpdated, frozen=True):
    """A registered agent; its API key (with authentication on) and webhook_secret (with
    a webhook_url) are shown this once."""

    api_key: str | UnsetType = UNSET


class WebhookSecret(msgspec.Struct, frozen=True):
    """A new webhook signing secret; the previous one keeps signing alongside it until
    previous_valid_until."""

    agent_id: UUID
    webhook_secret: str
    previous_valid_until: Timestamp


class Delivery(msgspec.Struct, frozen=True):
    """One message's delivery to an agent's webhook; its id is the webhook-id header."""

    id: UUID
    message_id: UUID
    status: Literal["pending", "delivered", "dead"]
    attempts: Annotated[int, msgspec.Meta(description="Attempts begun since made or retried")]
    created_at: Timestamp
    last_attempt_at: Timestamp | None
    last_status_code: Annotated[
        int | None, msgspec.Meta(description="The endpoint's last HTTP status; null: none")
    ]
    last_error: str | None
    next_attempt_at: Annotated[
        Timestamp | None, msgspec.Meta(description="When it is tried next (pending only)")
    ]
    delivered_at: Timestamp | None


class ApiKey(msgspec.Struct, frozen=True):
    """A newly issued API key; the agent's previous key no longer works."""

    agent_id: UUID
    api_key: str


class Message(msgspec.Struct, frozen=True):
    """A message as stored."""

    id: UUID
    sender_id: UUID | None
    sent_at: Timestamp
    parent_message_id: UUID | None
    conversation_id: UUID | None
    content: str
    message_type: str | None
    importance: int | None
    status: str | None
    msg_metadata: dict[str, Any] | None
    updated_at: Timestamp


class MailboxItem(Message, frozen=True):
    """A message in an agent's mailbox, with that agent's view of it."""

    direction: Literal["sent", "received"]
    is_read: bool | None
    read_at: Timestamp | None


class SearchItem(MailboxItem, frozen=True):
    """A mailbox item that matched a search, with the words around the match."""

    snippet: Annotated[
        str,
        msgspec.Meta(
            description=(
                "A few words of the content around the match, accents folded; each matched "
                "word between U+E000 and U+E001 (private-use characters, never in the text "
                "itself). Fragments are joined by ' … '"
            )
        ),
    ]


class MarkRead(msgspec.Struct, frozen=True):
    """How many received messages a mark-read turned to read."""

    updated_count: int
    message: str


class Recipient(msgspec.Struct, frozen=True):
    """One recipient of one message, with its read state."""

    message_id: UUID
    recipient_id: UUID
    is_read: bool
    read_at: Timestamp | None


class RecipientState(msgspec.Struct, frozen=True):
    """A recipient's read state, as listed inside a message."""

    recipient_id: UUID
    is_read: bool
    read_at: Timestamp | None


class Metadata(msgspec.Struct, frozen=True):
    """A key-value pair attached to a message."""

    id: UUID
    message_id: UUID
    key: str
    value: str | None
    agent_id: UUID | None
    created_at: Timestamp


class MessageMetadata(msgspec.Struct, frozen=True):
    """A message, the agent asking for it, and the message's metadata."""

    message_id: UUID
    message: Message
    agent: Agent
    metadata_items: list[Metadata]


class Conversation(msgspec.Struct, frozen=True):
    """A conversation that groups messages."""

    id: UUID
    title: str | None
    description: str | None
    archived: bool
    metadata: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp


class DetailedMessage(Message, frozen=True):
    """A message of a conversation with its recipients and metadata."""

    recipients: list[RecipientState]
    metadata_items: list[Metadata]


class ConversationDetails(Conversation, frozen=True):
    """A conversation with all its messages, the agents in it and its counts."""

    messages: list[DetailedMessage]
    unique_agents: list[Agent]
    total_messages: int
    unread_count: int


class EchoResult(msgspec.Struct, frozen=True):
    """What running echo printed, or why it failed."""

    success: bool
    message: str
    output: str | None
    error: str | None


class ErrorDetail(msgspec.Struct, frozen=True):
    """An error sentence."""

    detail: str


# What pydantic filled an error's msg from (min_length, max_length, ge, le, error, ...).
FilledIn = Annotated[
    dict[str, Any], msgspec.Meta(description="The values in msg, e.g. max_length, ge, le, error")
]


class FieldError(msgspec.Struct, frozen=True):
    """One invalid input, located FastAPI-style (`["body", "port"]`), in pydantic's words."""

    type: Annotated[
        str, msgspec.Meta(description="pydantic's error type, e.g. missing, string_too_long")
    ]
    loc: list[str | int]
    msg: str
    input: Annotated[Any, msgspec.Meta(description="The refused value, when known")] = UNSET
    ctx: FilledIn | UnsetType = UNSET


class ValidationErrorBody(msgspec.Struct, frozen=True):
    """Every problem found in a request's input."""

    detail: list[FieldError]
