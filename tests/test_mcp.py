"""The MCP endpoint on a real server with keys: the SDK's own client, REST side by side.

A tool runs the operation REST runs, with its rule: every refusal is compared
with what the same request by REST answers, and a refused call must leave
every table as it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import string
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import psycopg
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import UNKNOWN
from tests.servers import Server
from tests.test_access import ADMIN, bearer, snapshot

TOOLS = {
    "whoami",
    "list_agents",
    "send_message",
    "check_inbox",
    "search_messages",
    "mark_read",
    "read_thread",
    "start_conversation",
    "list_conversations",
}
MAX_BODY = 65536
# What an MCP client sends with each POST (Streamable HTTP).
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}


def start(database_url: str, logs: Path, **variables: str) -> Server:
    server = Server(
        database_url,
        logs,
        MAILROOM_AUTH="required",
        MAILROOM_ADMIN_TOKEN=ADMIN,
        MAILROOM_MAX_BODY_BYTES=str(MAX_BODY),
        LOG_FORMAT="json",
        **variables,
    )
    server.wait_healthy()
    return server


@pytest.fixture(scope="module")
def secured(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Authentication on, no rate limits, JSON log lines."""
    server = start(
        database_url,
        tmp_path_factory.mktemp("mcp"),
        MAILROOM_WRITE_RATE_LIMIT="0",
        MAILROOM_ECHO_RATE_LIMIT="0",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(secured: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.base_url, timeout=30) as client:
        yield client


def register(http: httpx.Client, name: str | None = None) -> dict[str, Any]:
    """A new agent (with its api_key), registered by the admin."""
    name = name or f"mcp-{secrets.token_hex(4)}"
    response = http.post("/agents", json={"agent_name": name}, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    return response.json()


@asynccontextmanager
async def session(base_url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """The official SDK's client, initialized, with `headers` on every request."""
    timeout = httpx2.Timeout(30, read=90)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
        streamable_http_client(base_url + "/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as opened,
    ):
        await opened.initialize()
        yield opened


def as_agent(base_url: str, agent: dict[str, Any]):
    return session(base_url, bearer(agent["api_key"]))


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


async def ok(opened: ClientSession, tool: str, **arguments: Any) -> Any:
    """The structured content of a call that must succeed."""
    result = await opened.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    return result.structured_content


# The SDK's client ---------------------------------------------------------------


def test_sdk_client_lists_tools_and_two_agents_exchange_a_message(
    secured: Server, http: httpx.Client
) -> None:
    alice, bob = register(http, f"alice-{secrets.token_hex(3)}"), register(http)

    async def scenario() -> None:
        async with as_agent(secured.base_url, alice) as a, as_agent(secured.base_url, bob) as b:
            listed = (await a.list_tools()).tools
            assert {tool.name for tool in listed} == TOOLS
            for tool in listed:
                assert tool.description and len(tool.description) > 40, tool.name
                assert tool.input_schema["type"] == "object", tool.name
                assert tool.input_schema["additionalProperties"] is False
                for name, field in tool.input_schema["properties"].items():
                    assert field.get("description") or "anyOf" in field, (tool.name, name)
            me = await ok(a, "whoami")
            assert me["id"] == alice["id"] and me["agent_name"] == alice["agent_name"]
            found = await ok(b, "list_agents", name=alice["agent_name"][:9].upper())
            assert [agent["id"] for agent in found["agents"]] == [alice["id"]]
            assert set(found["agents"][0]) == {"id", "agent_name", "created_at"}

            sent = await ok(b, "send_message", to=[alice["id"]], content="Lunch at noon?")
            assert sent["sender_id"] == bob["id"] and sent["content"] == "Lunch at noon?"
            inbox = await a.call_tool("check_inbox", {})
            assert not inbox.is_error
            (item,) = inbox.structured_content["messages"]
            assert item["id"] == sent["id"] and item["direction"] == "received"
            assert item["is_read"] is False
            rendered = text_of(inbox)
            assert bob["agent_name"] in rendered and "Lunch at noon?" in rendered
            assert sent["sent_at"] in rendered
            up_to = inbox.structured_content["read_up_to"]
            assert up_to == sent["sent_at"]

            reply = await ok(a, "send_message", to=[bob["id"]], content="Yes", reply_to=sent["id"])
            assert reply["parent_message_id"] == sent["id"]
            assert (await ok(a, "mark_read", up_to=up_to))["updated_count"] == 1
            assert (await ok(a, "check_inbox"))["messages"] == []
            history = await ok(a, "check_inbox", unread_only=False)
            assert [m["id"] for m in history["messages"]] == [sent["id"]]
            assert history["messages"][0]["is_read"] is True
            thread = await ok(b, "read_thread", message_id=reply["id"])
            assert thread["message"]["content"] == "Yes"

    asyncio.run(scenario())


def test_search_messages_finds_own_mail_by_a_part_of_an_id_and_marks_it(
    secured: Server, http: httpx.Client
) -> None:
    alice, bob, carol = register(http), register(http), register(http)
    # Letters only: a hex tag like 5e948a is read as the number 5e948 and the word a.
    tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))

    async def scenario() -> None:
        async with (
            as_agent(secured.base_url, alice) as a,
            as_agent(secured.base_url, bob) as b,
            as_agent(secured.base_url, carol) as c,
        ):
            sent = await ok(b, "send_message", to=[alice["id"]], content=f"build-{tag} is green")
            await ok(b, "send_message", to=[carol["id"]], content=f"build-{tag} for carol")
            found = await a.call_tool("search_messages", {"q": tag})
            assert not found.is_error, text_of(found)
            (item,) = found.structured_content["messages"]
            assert item["id"] == sent["id"] and item["direction"] == "received"
            assert "\ue000" in item["snippet"] and f"[[{tag}]]" in text_of(found)
            assert bob["agent_name"] in text_of(found)
            # Carol's copy is hers: alice's search never shows it, nor carol's alice's.
            theirs = await ok(c, "search_messages", q=f"build-{tag}", direction="received")
            assert [m["content"] for m in theirs["messages"]] == [f"build-{tag} for carol"]
            empty = await a.call_tool("search_messages", {"q": "..."})
            assert empty.is_error and "no word" in text_of(empty)

    asyncio.run(scenario())


def test_conversations_through_tools(secured: Server, http: httpx.Client) -> None:
    alice, bob = register(http), register(http)

    async def scenario() -> None:
        async with as_agent(secured.base_url, alice) as a, as_agent(secured.base_url, bob) as b:
            started = await ok(a, "start_conversation", title="Plan", metadata={"k": 1})
            assert started["title"] == "Plan" and started["metadata"] == {"k": 1}
            cid = started["id"]
            await ok(a, "send_message", to=[bob["id"]], content="step 1", conversation_id=cid)
            mine = await ok(a, "list_conversations", limit=1000)
            assert cid in {c["id"] for c in mine["conversations"]}
            theirs = await ok(b, "list_conversations", limit=1000)
            assert cid in {c["id"] for c in theirs["conversations"]}
            thread = await ok(b, "read_thread", conversation_id=cid)
            assert [m["content"] for m in thread["conversation"]["messages"]] == ["step 1"]
            assert thread["conversation"]["total_messages"] == 1

    asyncio.run(scenario())


def test_a_long_thread_comes_in_pages_by_next_cursor(secured: Server, http: httpx.Client) -> None:
    """70 messages of 64,000 characters pass the page's byte budget (4 MiB): read_thread
    answers the first page and a next_cursor that reads the rest, oldest first."""
    alice, bob = register(http), register(http)
    cid = http.post("/conversations", json={"title": "long"}, headers=bearer(ADMIN)).json()["id"]
    sent = []
    for n in range(70):
        body = {"sender_id": alice["id"], "recipient_ids": [bob["id"]],
                "content": f"{n:02d}" + "x" * 64_000, "conversation_id": cid}  # fmt: skip
        response = http.post("/messages", json=body, headers=bearer(ADMIN))
        assert response.status_code == 201, response.text
        sent.append(response.json()["id"])

    async def scenario() -> None:
        async with as_agent(secured.base_url, bob) as b:
            first = await b.call_tool("read_thread", {"conversation_id": cid})
            assert not first.is_error, text_of(first)
            page = first.structured_content
            assert page["conversation"]["total_messages"] == 70
            cursor = page["next_cursor"]
            assert cursor is not None and f"cursor={cursor}" in text_of(first)
            seen = [m["id"] for m in page["conversation"]["messages"]]
            assert 0 < len(seen) < 70
            rest = await ok(b, "read_thread", conversation_id=cid, cursor=cursor)
            seen += [m["id"] for m in rest["conversation"]["messages"]]
            assert rest["next_cursor"] is None
            assert seen == sent

    asyncio.run(scenario())


def test_pages_of_list_agents_follow_next_cursor(secured: Server, http: httpx.Client) -> None:
    tag = secrets.token_hex(4)
    made = {register(http, f"page{tag}-{n}")["id"] for n in range(5)}
    caller = register(http)

    async def scenario() -> list[str]:
        seen: list[str] = []
        async with as_agent(secured.base_url, caller) as opened:
            cursor = None
            for _ in range(10):
                arguments: dict[str, Any] = {"name": f"page{tag}", "limit": 2}
                if cursor is not None:
                    arguments["cursor"] = cursor
                page = await ok(opened, "list_agents", **arguments)
                seen += [agent["id"] for agent in page["agents"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    return seen
        raise AssertionError("next_cursor never ended")

    seen = asyncio.run(scenario())
    assert len(seen) == len(made) and set(seen) == made


# MCP and REST see the same mail --------------------------------------------------


def test_rest_sent_is_seen_by_check_inbox_and_tool_sent_by_rest(
    secured: Server, http: httpx.Client
) -> None:
    alice, bob = register(http), register(http)
    body = {"sender_id": alice["id"], "content": "by REST", "recipient_ids": [bob["id"]]}
    by_rest = http.post("/messages", json=body, headers=bearer(alice["api_key"]))
    assert by_rest.status_code == 201, by_rest.text

    async def scenario() -> dict[str, Any]:
        async with as_agent(secured.base_url, bob) as b:
            inbox = await ok(b, "check_inbox")
            assert [m["id"] for m in inbox["messages"]] == [by_rest.json()["id"]]
            return await ok(b, "send_message", to=[alice["id"]], content="by MCP")

    by_tool = asyncio.run(scenario())
    unread = http.get(f"/agents/{alice['id']}/messages/unread", headers=bearer(alice["api_key"]))
    assert unread.status_code == 200
    (item,) = unread.json()
    assert item["id"] == by_tool["id"] and item["content"] == "by MCP"
    # The structured content is the REST item, field for field.
    assert {k: v for k, v in item.items() if k in by_tool} == by_tool


def test_check_inbox_wait_returns_as_soon_as_a_message_arrives(
    secured: Server, http: httpx.Client
) -> None:
    alice, bob = register(http), register(http)

    def send_later() -> None:
        time.sleep(1.0)
        body = {"sender_id": alice["id"], "content": "wake up", "recipient_ids": [bob["id"]]}
        with httpx.Client(base_url=secured.base_url) as other:
            assert other.post("/messages", json=body, headers=bearer(alice["api_key"])).is_success

    async def scenario() -> tuple[float, dict[str, Any]]:
        async with as_agent(secured.base_url, bob) as b:
            sender = threading.Thread(target=send_later)
            started = time.monotonic()
            sender.start()
            found = await ok(b, "check_inbox", wait_seconds=10)
            elapsed = time.monotonic() - started
            sender.join()
            return elapsed, found

    elapsed, found = asyncio.run(scenario())
    assert [m["content"] for m in found["messages"]] == ["wake up"]
    assert 0.9 <= elapsed < 5, elapsed


def test_check_inbox_wait_with_nothing_arriving_returns_empty_after_the_wait(
    secured: Server, http: httpx.Client
) -> None:
    bob = register(http)

    async def scenario() -> tuple[float, dict[str, Any]]:
        async with as_agent(secured.base_url, bob) as b:
            started = time.monotonic()
            found = await ok(b, "check_inbox", wait_seconds=1)
            return time.monotonic() - started, found

    elapsed, found = asyncio.run(scenario())
    assert found["messages"] == [] and 0.9 <= elapsed < 4, elapsed


# Refusals: exactly as REST, and nothing changes -----------------------------------


def world(http: httpx.Client) -> dict[str, Any]:
    """A and B; B's conversation with C, and a message from B to C in it."""
    a, b, c = register(http), register(http), register(http)
    conv = http.post("/conversations", json={"title": "B's"}, headers=bearer(b["api_key"]))
    body = {
        "sender_id": b["id"],
        "content": "private",
        "recipient_ids": [c["id"]],
        "conversation_id": conv.json()["id"],
    }
    message = http.post("/messages", json=body, headers=bearer(b["api_key"]))
    assert message.status_code == 201, message.text
    return {"A": a, "B": b, "C": c, "conv_b": conv.json()["id"], "m_bc": message.json()["id"]}


# (tool, arguments, the same request by REST as A: method, url, body), ids from world().
REFUSALS = [
    (
        "send_message",
        lambda w: {"to": [w["C"]["id"]], "content": "x", "conversation_id": w["conv_b"]},
        lambda w: ("POST", "/messages", {"sender_id": w["A"]["id"], "content": "x",
                                         "recipient_ids": [w["C"]["id"]],
                                         "conversation_id": w["conv_b"]}),
    ),
    (
        "send_message",
        lambda w: {"to": [w["C"]["id"]], "content": "x", "reply_to": w["m_bc"]},
        lambda w: ("POST", "/messages", {"sender_id": w["A"]["id"], "content": "x",
                                         "recipient_ids": [w["C"]["id"]],
                                         "parent_message_id": w["m_bc"]}),
    ),
    (
        "send_message",
        lambda w: {"to": [w["C"]["id"], UNKNOWN], "content": "x"},
        lambda w: ("POST", "/messages", {"sender_id": w["A"]["id"], "content": "x",
                                         "recipient_ids": [w["C"]["id"], UNKNOWN]}),
    ),
    (
        "read_thread",
        lambda w: {"conversation_id": w["conv_b"]},
        lambda w: ("GET", f"/conversations/{w['conv_b']}/details", None),
    ),
    (
        "read_thread",
        lambda w: {"message_id": w["m_bc"]},
        lambda w: ("GET", f"/messages/{w['m_bc']}/metadata/{w['A']['id']}", None),
    ),
    (
        "read_thread",
        lambda w: {"conversation_id": UNKNOWN},
        lambda w: ("GET", f"/conversations/{UNKNOWN}/details", None),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tool", "arguments", "rest"),
    REFUSALS,
    ids=["foreign-conversation", "foreign-parent", "unknown-recipient", "foreign-thread",
         "foreign-message", "unknown-conversation"],
)  # fmt: skip
def test_a_tool_on_another_agents_mail_is_refused_as_rest_refuses_it(
    secured: Server, http: httpx.Client, database_url: str, tool, arguments, rest
) -> None:
    w = world(http)
    method, url, body = rest(w)
    by_rest = http.request(method, url, json=body, headers=bearer(w["A"]["api_key"]))
    assert by_rest.status_code in (403, 404, 409), by_rest.text
    before = snapshot(database_url)

    async def call() -> Any:
        async with as_agent(secured.base_url, w["A"]) as a:
            return await a.call_tool(tool, arguments(w))

    result = asyncio.run(call())
    assert result.is_error
    assert text_of(result) == by_rest.json()["detail"]
    assert snapshot(database_url) == before, "a refused tool call changed the database"


def test_an_agents_own_tools_never_reach_another_agents_mail(
    secured: Server, http: httpx.Client
) -> None:
    """whoami, check_inbox, mark_read and list_conversations take no agent id: they act on
    the caller's own mailbox, so B's unread mail stays B's and stays unread."""
    w = world(http)

    async def scenario() -> None:
        async with as_agent(secured.base_url, w["A"]) as a:
            assert (await ok(a, "whoami"))["id"] == w["A"]["id"]
            assert (await ok(a, "check_inbox", unread_only=False))["messages"] == []
            assert (await ok(a, "mark_read"))["updated_count"] == 0
            listed = await ok(a, "list_conversations", limit=1000)
            assert w["conv_b"] not in {c["id"] for c in listed["conversations"]}

    asyncio.run(scenario())
    unread = http.get(f"/agents/{w['C']['id']}/messages/unread", headers=bearer(ADMIN))
    assert [m["id"] for m in unread.json()] == [w["m_bc"]]


def initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }


@pytest.mark.parametrize(
    ("who", "status"), [("none", 401), ("malformed", 401), ("unknown", 401), ("admin", 403)]
)
def test_mcp_authenticates_before_any_mcp_processing(
    http: httpx.Client, database_url: str, who: str, status: int
) -> None:
    headers = {
        "none": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "unknown": bearer("mr_" + "A" * 43),
        "admin": bearer(ADMIN),
    }[who]
    before = snapshot(database_url)
    response = http.post("/mcp", json=initialize_body(), headers={**MCP_HEADERS, **headers})
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert "agent" in response.json()["detail"]
    assert snapshot(database_url) == before


# Protocol errors: never a 500 --------------------------------------------------------


def rpc(http: httpx.Client, key: str, payload: Any, **extra: Any) -> httpx.Response:
    headers = {**MCP_HEADERS, **bearer(key), "Content-Type": "application/json"}
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http.post("/mcp", content=content, headers=headers, **extra)


def call_body(name: str, arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def test_malformed_json_rpc_is_a_json_rpc_error(http: httpx.Client) -> None:
    """The SDK's answers: 400 for a body that is not a JSON-RPC message, 200 with an error
    for a message it understood but cannot serve; never a 500, always a JSON-RPC error."""
    key = register(http)["api_key"]
    bad_params = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}
    no_arguments = call_body("whoami", "x")
    for payload, status, codes in [
        (b"{not json", 400, {-32700}),
        ({"hello": "world"}, 400, {-32600, -32602}),
        ([1, 2], 400, {-32600, -32602}),
        (bad_params, 400, {-32600, -32602}),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/frobnicate"}, 200, {-32601}),
        (no_arguments, 200, {-32602}),
    ]:
        response = rpc(http, key, payload)
        assert response.status_code == status, (payload, response.text)
        error = response.json()["error"]
        assert error["code"] in codes and error["message"], (payload, response.text)


def test_unknown_tool_is_invalid_params_and_wrong_types_a_tool_error(http: httpx.Client) -> None:
    key = register(http)["api_key"]
    unknown = rpc(http, key, call_body("delete_everything", {}))
    assert unknown.status_code == 200, unknown.text
    error = unknown.json()["error"]
    assert error["code"] == -32602 and "send_message" in error["message"]

    for arguments, argument in [
        ({"to": "not-a-list", "content": "x"}, "to"),
        ({"to": ["not-a-uuid"], "content": "x"}, "to[0]"),
        ({"to": [], "content": "x"}, "to"),
        ({"to": [UNKNOWN], "content": ""}, "content"),
        ({"to": [UNKNOWN], "content": "x", "importance": 11}, "importance"),
        ({"to": [UNKNOWN], "content": "x", "sender_id": UNKNOWN}, "sender_id"),
        ({"content": "x"}, "to"),
    ]:
        response = rpc(http, key, call_body("send_message", arguments))
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["isError"] is True, result
        assert f"`{argument}`" in result["content"][0]["text"], result
    wait = rpc(http, key, call_body("check_inbox", {"wait_seconds": 61}))
    assert "`wait_seconds`" in wait.json()["result"]["content"][0]["text"]
    both = rpc(http, key, call_body("read_thread", {}))
    assert "exactly one" in both.json()["result"]["content"][0]["text"]
    when = rpc(http, key, call_body("mark_read", {"up_to": "yesterday"}))
    assert "`up_to`" in when.json()["result"]["content"][0]["text"]


def test_an_oversized_body_is_413_also_chunked(http: httpx.Client) -> None:
    key = register(http)["api_key"]
    big = json.dumps(call_body("send_message", {"to": [UNKNOWN], "content": "x" * MAX_BODY}))
    response = rpc(http, key, big.encode())
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:
        data = big.encode()
        for at in range(0, len(data), 8192):
            yield data[at : at + 8192]

    headers = {**MCP_HEADERS, **bearer(key), "Content-Type": "application/json"}
    chunked = http.post("/mcp", content=chunks(), headers=headers)
    assert chunked.status_code == 413, chunked.text


def test_get_and_delete_of_mcp_are_405(http: httpx.Client) -> None:
    key = register(http)["api_key"]
    for method in ("GET", "DELETE"):
        response = http.request(method, "/mcp", headers={**MCP_HEADERS, **bearer(key)})
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"


# Limits, logs and metrics carry over -----------------------------------------------


def test_each_tool_call_is_one_log_line_and_counted(secured: Server, http: httpx.Client) -> None:
    alice = register(http)
    secret = f"secret-{secrets.token_hex(8)}"

    async def scenario() -> None:
        async with as_agent(secured.base_url, alice) as a:
            await ok(a, "send_message", to=[alice["id"]], content=secret)
            result = await a.call_tool("send_message", {"to": [UNKNOWN], "content": secret})
            assert result.is_error

    asyncio.run(scenario())
    time.sleep(0.3)
    lines = [json.loads(line) for line in secured.output().splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("tool") and line.get("principal") == alice["id"]]
    assert [(c["tool"], c["outcome"]) for c in calls] == [
        ("send_message", "ok"),
        ("send_message", "conflict"),
    ]
    assert all(isinstance(c["duration_ms"], float | int) for c in calls)
    assert secret not in secured.output()
    scrape = http.get("/metrics", headers=bearer(ADMIN)).text
    assert re.search(
        r'mailroom_mcp_tool_calls_total\{outcome="ok",tool="send_message"\} \d', scrape
    )
    assert 'mailroom_mcp_tool_calls_total{outcome="conflict",tool="send_message"}' in scrape


@pytest.fixture(scope="module")
def limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two writes a minute, one long-poll per agent key, statements cut off after 1 s."""
    server = start(
        database_url,
        tmp_path_factory.mktemp("mcp-limited"),
        MAILROOM_WRITE_RATE_LIMIT="2",
        MAILROOM_WAITS_PER_AGENT="1",
        MAILROOM_STATEMENT_TIMEOUT="1",
    )
    try:
        yield server
    finally:
        server.stop()


def test_write_rate_and_wait_slots_apply_to_tool_calls(limited: Server) -> None:
    with httpx.Client(base_url=limited.base_url, timeout=30) as admin:
        alice, bob = register(admin), register(admin)

    async def scenario() -> None:
        async with (
            as_agent(limited.base_url, alice) as a,
            as_agent(limited.base_url, bob) as b1,
            as_agent(limited.base_url, bob) as b2,
        ):
            for _ in range(2):
                await ok(a, "send_message", to=[alice["id"]], content="x")
            third = await a.call_tool("send_message", {"to": [alice["id"]], "content": "x"})
            assert third.is_error and "Too many requests" in text_of(third)
            assert re.search(r"Retry in \d+ seconds", text_of(third))
            marked = await a.call_tool("mark_read", {})  # a PUT: a write too
            assert marked.is_error and "Too many requests" in text_of(marked)
            assert (await ok(a, "whoami"))["id"] == alice["id"]  # reads are not limited

            first = asyncio.create_task(b1.call_tool("check_inbox", {"wait_seconds": 3}))
            await asyncio.sleep(0.7)
            second = await b2.call_tool("check_inbox", {"wait_seconds": 3})
            assert second.is_error and "long-polls open" in text_of(second), text_of(second)
            assert not (await first).is_error

    asyncio.run(scenario())


def test_statement_timeout_cuts_off_a_tool_call(limited: Server, database_url: str) -> None:
    """A send blocked by a lock on its recipient's row ends at the 1 s statement_timeout
    as a tool error (422 too_expensive by REST, its sentence without an argument to fix),
    and stores nothing."""
    with httpx.Client(base_url=limited.base_url, timeout=30) as admin:
        alice, bob = register(admin), register(admin)
    with psycopg.connect(database_url) as locker:
        locker.execute("SELECT 1 FROM agents WHERE id = %s FOR UPDATE", (bob["id"],))

        async def scenario() -> tuple[float, Any]:
            async with as_agent(limited.base_url, alice) as a:
                started = time.monotonic()
                result = await a.call_tool("send_message", {"to": [bob["id"]], "content": "x"})
                return time.monotonic() - started, result

        elapsed, result = asyncio.run(scenario())
        locker.rollback()
    text = text_of(result)
    assert result.is_error and "more database time" in text and "Argument" not in text, text
    assert 0.9 <= elapsed < 5, elapsed
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM messages WHERE sender_id = %s", (alice["id"],))
        assert stored.fetchone() == (0,)


# Replicas and the open mode ----------------------------------------------------------


def test_two_replicas_answer_alternating_requests(servers: list[Any]) -> None:
    """The open mode (the fixture's replicas run MAILROOM_AUTH=off): the agent is named by
    X-Mailroom-Agent; with no session, any replica answers any request."""
    with httpx.Client(timeout=30) as client:
        a_url, b_url = (server.base_url for server in servers)
        alice = client.post(a_url + "/agents", json={"agent_name": "alice"}).json()
        bob = client.post(b_url + "/agents", json={"agent_name": "bob"}).json()

        def post(url: str, agent: dict[str, Any], payload: Any) -> dict[str, Any]:
            headers = {**MCP_HEADERS, "X-Mailroom-Agent": agent["id"]}
            response = client.post(url + "/mcp", json=payload, headers=headers)
            assert response.status_code == 200, response.text
            return response.json()

        assert post(a_url, alice, initialize_body())["result"]["serverInfo"]["name"] == "mailroom"
        listed = post(b_url, alice, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert {tool["name"] for tool in listed["result"]["tools"]} == TOOLS
        for n in range(4):
            url = (a_url, b_url)[n % 2]
            sent = post(
                url, alice, call_body("send_message", {"to": [bob["id"]], "content": f"{n}"})
            )
            assert sent["result"]["isError"] is False, sent
        inbox = post(a_url, bob, call_body("check_inbox", {}))["result"]["structuredContent"]
        assert [m["content"] for m in inbox["messages"]] == ["0", "1", "2", "3"]
        again = post(b_url, bob, call_body("check_inbox", {}))["result"]["structuredContent"]
        assert again == inbox

        missing = client.post(a_url + "/mcp", json=initialize_body(), headers=MCP_HEADERS)
        assert missing.status_code == 422, missing.text
        assert missing.json()["detail"][0]["loc"] == ["header", "x-mailroom-agent"]
        unknown = client.post(
            a_url + "/mcp",
            json=initialize_body(),
            headers={**MCP_HEADERS, "X-Mailroom-Agent": UNKNOWN},
        )
        assert unknown.status_code == 422, unknown.text


# The TypeScript SDK's client (the MCP Inspector's CLI mode) --------------------------

# Pinned: the CLI's options change between versions (2.x has --header and --strict).
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def inspector(base_url: str, key: str, *arguments: str) -> Any:
    argv = ["npx", "-y", INSPECTOR, "--cli", base_url + "/mcp", "--transport", "http"]
    argv += ["--header", f"Authorization: Bearer {key}", *arguments]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and re.search(r"npm (ERR!|error)", done.stderr):
        pytest.skip(
            f"npm could not fetch {INSPECTOR} (needs the npm registry): {done.stderr[-300:]}"
        )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(
    shutil.which("npx") is None, reason="needs node and npx (apt-get install -y nodejs npm)"
)
def test_the_inspector_cli_lists_and_calls_tools(secured: Server, http: httpx.Client) -> None:
    alice = register(http)
    # --strict: exit 6 if a tool's schema has an error-severity portability problem.
    listed = inspector(secured.base_url, alice["api_key"], "--method", "tools/list", "--strict")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS
    called = inspector(
        secured.base_url,
        alice["api_key"],
        "--method",
        "tools/call",
        "--tool-name",
        "send_message",
        "--tool-arg",
        f'to=["{alice["id"]}"]',
        "--tool-arg",
        "content=from the inspector",
    )
    assert called.get("isError") is not True, called
    assert called["structuredContent"]["content"] == "from the inspector"
    me = inspector(secured.base_url, alice["api_key"], "--method", "tools/call",
                   "--tool-name", "whoami")  # fmt: skip
    assert me["structuredContent"]["id"] == alice["id"]
