"""Input Structs: every request body the API accepts, with its constraints.

Unknown fields are refused everywhere, so a client can never set a
server-owned field (`id`, `created_at`, `sent_at`, `read_at`, ...). In the
update Structs a field left out is UNSET (keep the stored value), while an
explicit null clears a nullable field.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from validation.errors import InvalidInput

# PostgreSQL cannot store NUL (U+0000) in text: every text field refuses it here, with a
# 422 naming the field, and the document says so with the same pattern.
NO_NUL = "^[^\\u0000]*$"
AgentName = Annotated[
    str, Meta(min_length=1, max_length=255, pattern=NO_NUL, description="1..255 characters")
]
# What canonical_ip accepts, as JSON Schema formats (as in the original, "" is refused).
# Each branch repeats the type: without it openapi-python-client types the field as Any.
IpAddress = Annotated[
    str,
    Meta(
        description="A single IPv4 or IPv6 address, returned in canonical form",
        extra_json_schema={
            "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]
        },
    ),
]
# An int field takes an integral number, 5 or 5.0, as pydantic does (handlers.common.decode).
Port = Annotated[int, Meta(ge=1, le=65535, description="1..65535; 8080.0 is taken as 8080")]
Content = Annotated[str, Meta(min_length=1, max_length=65536, pattern=NO_NUL)]
Label = Annotated[str, Meta(min_length=1, max_length=50, pattern=NO_NUL)]
Importance = Annotated[int, Meta(ge=0, le=10, description="0..10; 5.0 is taken as 5")]
Title = Annotated[str, Meta(max_length=255, pattern=NO_NUL)]
Text = Annotated[str, Meta(pattern=NO_NUL)]
MetadataKey = Annotated[str, Meta(min_length=1, max_length=255, pattern=NO_NUL)]
JsonObject = dict[str, Any]
RecipientIds = Annotated[list[UUID], Meta(max_length=1000)]

_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")
ECHO_MIN_LENGTH, ECHO_MAX_LENGTH = 1, 1000
ECHO_CHARACTERS = re.compile(r"[A-Za-z0-9 .,!?_-]*")
# The same rule as one pattern on the unstripped text, for the OpenAPI document: what
# str.strip() removes around 1..1000 allowed characters that start and end with no space.
_STRIPPED = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x10000)) if c.isspace())
ECHO_PATTERN = (
    f"^[{_STRIPPED}]*[A-Za-z0-9.,!?_-](?:[A-Za-z0-9 .,!?_-]{{0,{ECHO_MAX_LENGTH - 2}}}"
    f"[A-Za-z0-9.,!?_-])?[{_STRIPPED}]*$"
)


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are an error."""

    def sent_fields(self) -> dict[str, Any]:
        """The fields the client sent (UNSET ones left out)."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


def canonical_ip(value: str | UnsetType | None) -> str | UnsetType | None:
    """The address in `ipaddress` text form; anything but one address is 422."""
    if not isinstance(value, str):
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or getattr(address, "scope_id", None):
        raise InvalidInput.at(["body", "ip_address"], f"Not a valid IP address: {value!r}")
    return str(address)


class AgentCreate(Input):
    """Register an agent."""

    agent_name: AgentName
    ip_address: IpAddress | None = None
    port: Port | None = None

    def __post_init__(self) -> None:
        self.ip_address = canonical_ip(self.ip_address)


class AgentUpdate(Input):
    """Change any of an agent's fields; null clears ip_address or port."""

    agent_name: AgentName | UnsetType = UNSET
    ip_address: IpAddress | UnsetType | None = UNSET
    port: Port | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        self.ip_address = canonical_ip(self.ip_address)


class MessageCreate(Input):
    """Send a message, optionally to recipients in the same transaction."""

    content: Content
    sender_id: UUID | None = None
    parent_message_id: UUID | None = None
    conversation_id: UUID | None = None
    message_type: Label | None = None
    importance: Importance | None = None
    status: Label | None = None
    msg_metadata: JsonObject | None = None
    recipient_ids: RecipientIds | None = None


class MessageUpdate(Input):
    """Change a message; sender_id is not writable."""

    content: Content | UnsetType = UNSET
    parent_message_id: UUID | UnsetType | None = UNSET
    conversation_id: UUID | UnsetType | None = UNSET
    message_type: Label | UnsetType | None = UNSET
    importance: Importance | UnsetType | None = UNSET
    status: Label | UnsetType | None = UNSET
    msg_metadata: JsonObject | UnsetType | None = UNSET


class RecipientCreate(Input):
    """Add a recipient to a message."""

    message_id: UUID
    recipient_id: UUID
    is_read: bool = False


class RecipientUpdate(Input):
    """Set a recipient's read state; read_at follows it."""

    is_read: bool


class MetadataCreate(Input):
    """Attach a key-value pair to a message."""

    message_id: UUID
    key: MetadataKey
    value: Text | None = None
    agent_id: UUID | None = None


class MetadataUpdate(Input):
    """Change a metadata item's key or value."""

    key: MetadataKey | UnsetType = UNSET
    value: Text | UnsetType | None = UNSET


class ConversationCreate(Input):
    """Start a conversation."""

    title: Title | None = None
    description: Text | None = None
    archived: bool = False
    metadata: JsonObject = msgspec.field(default_factory=dict)


class ConversationUpdate(Input):
    """Change a conversation; a metadata object replaces the stored one."""

    title: Title | UnsetType | None = UNSET
    description: Text | UnsetType | None = UNSET
    archived: bool | UnsetType = UNSET
    metadata: JsonObject | UnsetType = UNSET


class MarkReadRequest(Input):
    """Mark every received message sent at or before this instant as read."""

    read_up_to_date: Annotated[
        str,
        Meta(
            extra_json_schema={"format": "date-time"},
            description="RFC 3339; without an offset it is taken as UTC",
        ),
    ]

    def __post_init__(self) -> None:
        self.instant()  # refuse a malformed timestamp while decoding

    def instant(self) -> datetime:
        """The instant, with digits past the microsecond cut off, never rounded up.

        Rounding would move a time just before a message's sent_at onto it.
        """
        text = _EXTRA_DIGITS.sub(r"\1", self.read_up_to_date)
        try:
            moment = msgspec.convert(text, datetime)
        except msgspec.ValidationError as error:
            raise InvalidInput.from_msgspec(
                error, ["body", "read_up_to_date"], self.read_up_to_date
            ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class EchoRequest(Input):
    """Text for echo: after stripping, 1..1000 of A-Z a-z 0-9 space . , ! ? - _"""

    # Documented, not enforced by msgspec: the check below words the 422 as the contract says.
    message: Annotated[str, Meta(extra_json_schema={"pattern": ECHO_PATTERN})]

    def __post_init__(self) -> None:
        sent, self.message = self.message, self.message.strip()
        loc = ["body", "message"]
        if len(self.message) < ECHO_MIN_LENGTH:
            raise InvalidInput.pydantic(
                "string_too_short", loc, {"min_length": ECHO_MIN_LENGTH}, sent
            )
        if len(self.message) > ECHO_MAX_LENGTH:
            raise InvalidInput.pydantic(
                "string_too_long", loc, {"max_length": ECHO_MAX_LENGTH}, sent
            )
        if not ECHO_CHARACTERS.fullmatch(self.message):
            raise InvalidInput.at(
                loc,
                "Message contains invalid characters: after trimming it must be"
                f" {ECHO_MIN_LENGTH} to {ECHO_MAX_LENGTH} of A-Z a-z 0-9, space and . , ! ? - _",
            )
