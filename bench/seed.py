"""Seed a server through its HTTP API for the benchmark scenarios.

Usage: seed.py BASE_URL OUT_DIR

Works against mailroom and against the original design's reference (whose ids
are `agent_id`, `message_id`, `conversation_id` and which has no
`recipient_ids`: there each recipient is one POST /message_recipients).
Writes OUT_DIR/seed.json with the ids the scenarios use:

- `agents`: 20 agents that send and receive in the write scenarios;
- `inbox100`: an agent that received exactly 100 messages (all unread);
- `inbox5000`: an agent that received exactly 5,000 messages;
- `conversation`: a conversation of 200 messages, 3 recipients each, metadata
  on every tenth.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# bench/run.sh's admin key (both sides get it; the reference ignores it).
AUTH = (
    {"Authorization": os.environ["BENCH_AUTHORIZATION"]}
    if "BENCH_AUTHORIZATION" in os.environ
    else {}
)
CONCURRENCY = 32


class Api:
    """The few writes the seed needs, in either server's dialect."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.limit = asyncio.Semaphore(CONCURRENCY)
        self.recipient_ids: bool | None = None  # does POST /messages take them?

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.limit:
            for attempt in range(3):
                try:
                    response = await self.client.post(path, json=body)
                    break
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A kept-alive connection the server closed as we reused it:
                    # the request was not processed, so sending it again is safe.
                    if attempt == 2:
                        raise
        if response.status_code != 201:
            raise SystemExit(f"POST {path} -> {response.status_code}: {response.text[:300]}")
        return response.json()

    @staticmethod
    def id_of(body: dict[str, Any], kind: str) -> str:
        return body.get("id") or body[f"{kind}_id"]

    async def agent(self, name: str) -> str:
        return self.id_of(await self.post("/agents", {"agent_name": name}), "agent")

    async def conversation(self, title: str) -> str:
        body = {"title": title, "description": "benchmark", "metadata": {"seed": True}}
        return self.id_of(await self.post("/conversations", body), "conversation")

    async def message(self, sender: str, recipients: list[str], **fields: Any) -> str:
        body = {"content": f"benchmark message from {sender[:8]}", "sender_id": sender, **fields}
        if self.recipient_ids:
            return self.id_of(
                await self.post("/messages", {**body, "recipient_ids": recipients}), "message"
            )
        message_id = self.id_of(await self.post("/messages", body), "message")
        await asyncio.gather(
            *(
                self.post("/message_recipients", {"message_id": message_id, "recipient_id": r})
                for r in recipients
            )
        )
        return message_id

    async def detect(self) -> None:
        """mailroom answers GET / with a docs link; the reference does not know recipient_ids."""
        root = (await self.client.get("/")).json()
        self.recipient_ids = root.get("docs") == "/docs" and "mailroom" in root.get("message", "")


async def seed(base_url: str) -> dict[str, Any]:
    # Shorter than uvicorn's 5 s keep-alive, so idle connections are not reused
    # just as the server closes them.
    limits = httpx.Limits(max_connections=CONCURRENCY, keepalive_expiry=2)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers=AUTH
    ) as client:
        api = Api(client)
        await api.detect()
        agents = await asyncio.gather(*(api.agent(f"bench agent {n}") for n in range(20)))
        inbox100, inbox5000 = await api.agent("inbox 100"), await api.agent("inbox 5000")
        senders = agents[:10]
        await asyncio.gather(
            *(api.message(senders[n % 10], [inbox100]) for n in range(100)),
            *(api.message(senders[n % 10], [inbox5000]) for n in range(5000)),
        )
        conversation = await api.conversation("benchmark conversation")
        members = agents[10:14]
        for n in range(200):  # in order, so the thread reads oldest first
            sender = members[n % 4]
            others = [m for m in members if m != sender]
            message_id = await api.message(
                sender, others, conversation_id=conversation, message_type="text", importance=5
            )
            if n % 10 == 0:
                await api.post(
                    "/agent_message_metadata",
                    {"message_id": message_id, "key": "topic", "value": f"part {n}"},
                )
    return {
        "agents": agents,
        "inbox100": inbox100,
        "inbox5000": inbox5000,
        "conversation": conversation,
        "recipient_ids": api.recipient_ids,
    }


def main() -> None:
    base_url, out_dir = sys.argv[1], Path(sys.argv[2])
    started = time.monotonic()
    ids = asyncio.run(seed(base_url.rstrip("/")))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seed.json").write_text(json.dumps(ids, indent=1))
    (out_dir / "agents.txt").write_text("\n".join(ids["agents"]) + "\n")
    print(f"seeded {base_url} in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
