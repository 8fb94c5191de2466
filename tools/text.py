"""The short text beside each tool's structured result: what a model reads first."""

from __future__ import annotations

from typing import Any

MAX_PREVIEW = 2000  # characters of one message's content shown in a listing


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _more(next_cursor: str | None) -> str:
    return "" if next_cursor is None else f"\nMore: call again with cursor={next_cursor}"


def whoami(agent: dict[str, Any]) -> str:
    return f"You are {agent['agent_name']} (agent id {agent['id']})."


def agents(found: list[dict[str, Any]], next_cursor: str | None) -> str:
    if not found:
        return "No agent matches."
    lines = [f"- {a['agent_name']} (id {a['id']})" for a in found]
    return f"{_count(len(found), 'agent')}:\n" + "\n".join(lines) + _more(next_cursor)


def sent(message: dict[str, Any], recipients: int) -> str:
    to = _count(recipients, "recipient")
    return f"Sent message {message['id']} to {to} at {message['sent_at']}."


def _message(message: dict[str, Any], names: dict[str, str]) -> str:
    sender = message.get("sender_id")
    who = f"{names.get(str(sender), 'unknown agent')} ({sender})" if sender else "nobody"
    content = message["content"]
    if len(content) > MAX_PREVIEW:
        content = content[:MAX_PREVIEW] + f"... [{len(content) - MAX_PREVIEW} more characters]"
    details = [f"message {message['id']}"]
    if message.get("conversation_id"):
        details.append(f"conversation {message['conversation_id']}")
    if message.get("parent_message_id"):
        details.append(f"reply to {message['parent_message_id']}")
    return f"[{message['sent_at']}] From {who} ({', '.join(details)}):\n{content}"


def inbox(messages: list[dict[str, Any]], names: dict[str, str], found: dict[str, Any]) -> str:
    if not messages:
        return "No messages."
    shown = "\n\n".join(_message(m, names) for m in messages)
    head = _count(len(messages), "message")
    tail = f"read_up_to: {found['read_up_to']}" + _more(found["next_cursor"])
    return f"{head}:\n\n{shown}\n\n{tail}"


def search(messages: list[dict[str, Any]], names: dict[str, str], found: dict[str, Any]) -> str:
    if not messages:
        return "No message matches."
    shown = "\n\n".join(
        _message(m, names)
        + "\n  match: "
        + m["snippet"].replace("\ue000", "[[").replace("\ue001", "]]")
        for m in messages
    )
    return f"{_count(len(messages), 'result')}:\n\n{shown}" + _more(found["next_cursor"])


def marked(result: dict[str, Any]) -> str:
    return f"Marked {_count(result['updated_count'], 'message')} as read."


def thread(found: dict[str, Any], messages: list[dict[str, Any]], names: dict[str, str]) -> str:
    head = ""
    if "conversation" in found:
        conversation = found["conversation"]
        head = f"Conversation {conversation['id']}: {conversation.get('title') or '(untitled)'}\n"
    shown = "\n\n".join(_message(m, names) for m in messages)
    return f"{head}{_count(len(messages), 'message')}:\n\n{shown}" + _more(found.get("next_cursor"))


def conversation_started(conversation: dict[str, Any]) -> str:
    return (
        f"Started conversation {conversation['id']}"
        f" ({conversation.get('title') or 'untitled'}); pass it as conversation_id."
    )


def conversations(found: list[dict[str, Any]], next_cursor: str | None) -> str:
    if not found:
        return "No conversations."
    lines = [
        f"- {c.get('title') or '(untitled)'} (id {c['id']}, created {c['created_at']}"
        + (", archived)" if c["archived"] else ")")
        for c in found
    ]
    return f"{_count(len(found), 'conversation')}:\n" + "\n".join(lines) + _more(next_cursor)
