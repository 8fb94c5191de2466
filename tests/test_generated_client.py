"""A client that openapi-python-client generates from the whole document, run against a real server.

The generator is the tool a new user of the API reaches for first: its client
must import, call every kind of operation, reach the Link header of a list,
and read the event stream as text (never parse it as one JSON document, never
wait for it forever).
"""

from __future__ import annotations

import importlib
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import service
from tests.servers import Server

PACKAGE = "mailroom_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
GENERATE_SECONDS = 120
STREAM_SECONDS = 20
ADMIN = "generated-client-admin-" + secrets.token_hex(8)
# The generator runs in a network namespace of its own (loopback only, down): it needs no
# network. Where unshare cannot make one, it runs as it is and one test says so.
OFFLINE = ["unshare", "--map-root-user", "--net"]


def can_run_offline() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*OFFLINE, "true"], capture_output=True, check=False).returncode == 0


class Generated:
    """The generated package, imported, and whether it was generated without a network."""

    def __init__(self, root: Path, offline: bool) -> None:
        self.root, self.offline = root, offline

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    work = tmp_path_factory.mktemp("generated-client")
    document = work / "openapi.json"
    document.write_bytes(service.OPENAPI_DOCUMENT)
    offline = can_run_offline()
    argv = [str(GENERATOR), "generate", "--path", str(document), "--meta", "none"]
    argv += ["--output-path", str(work / PACKAGE)]
    # The generator's post-hooks run ruff, which sits next to it in the environment.
    env = {"PATH": f"{GENERATOR.parent}:/usr/bin:/bin", "HOME": str(work)}
    done = subprocess.run(
        [*OFFLINE, *argv] if offline else argv,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATE_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A part of the document it could not use is a warning, and a missing operation.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        yield Generated(work / PACKAGE, offline)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        database_url,
        tmp_path_factory.mktemp("generated-client-server"),
        MAILROOM_AUTH="required",
        MAILROOM_ADMIN_TOKEN=ADMIN,
        MAILROOM_STREAM_HEARTBEAT="0.2",
    )
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


def events(text: str) -> list[dict[str, str]]:
    """The events of a text/event-stream body: comment lines ignored, one dict per event."""
    found = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            found.append(fields)
    return found


def test_the_generator_needs_no_network(generated: Generated) -> None:
    if not generated.offline:
        pytest.skip("needs unshare with user namespaces (util-linux: apt-get install util-linux)")
    assert (generated.root / "api" / "mailbox").is_dir()


def test_the_generated_client_works_against_a_live_server(
    generated: Generated, server: Server
) -> None:
    with ExitStack() as clients:
        use_the_client(generated, server, clients)


def use_the_client(generated: Generated, server: Server, clients: ExitStack) -> None:
    """Create agents, send messages, page through a mailbox and read the stream."""
    client_module = generated.module("client")
    models = generated.module("models")
    post_agents = generated.module("api.agents.post_agents")
    get_agent = generated.module("api.agents.get_agents_agent_id")
    post_messages = generated.module("api.messages.post_messages")
    list_messages = generated.module("api.mailbox.get_agents_agent_id_messages")
    stream = generated.module("api.mailbox.get_agents_agent_id_messages_stream")
    rotate = generated.module("api.agents.post_agents_agent_id_api_key")

    def as_caller(token: str, **httpx_args: Any) -> Any:
        caller = client_module.AuthenticatedClient(
            base_url=server.base_url,
            token=token,
            timeout=httpx.Timeout(10),
            raise_on_unexpected_status=True,
            httpx_args=httpx_args,
        )
        return clients.enter_context(caller)

    admin = as_caller(ADMIN)
    created = {}
    for name in ("sender", "reader"):
        body = models.AgentCreate(agent_name=name, ip_address="2001:DB8::1", port=8080)
        answer = post_agents.sync_detailed(client=admin, body=body)
        assert answer.status_code == 201, answer.content
        assert isinstance(answer.parsed, models.AgentCreated), answer.parsed
        created[name] = answer.parsed
    sender, reader = created["sender"], created["reader"]
    assert reader.ip_address == "2001:db8::1" and reader.port == 8080
    as_sender, as_reader = as_caller(sender.api_key), as_caller(reader.api_key)
    assert get_agent.sync(reader.id, client=as_reader).agent_name == "reader"

    sent = []
    for n in range(3):
        body = models.MessageCreate(
            content=f"generated {n}",
            sender_id=sender.id,
            recipient_ids=[reader.id],
            importance=n,
            msg_metadata=models.MessageCreateMsgMetadataType0.from_dict({"n": n}),
        )
        answer = post_messages.sync_detailed(client=as_sender, body=body)
        assert answer.status_code == 201, answer.content
        sent.append(answer.parsed)
    assert sent[2].msg_metadata.to_dict() == {"n": 2}

    # The mailbox, newest first, two to a page: the Link header leads to the rest.
    first = list_messages.sync_detailed(reader.id, client=as_reader, limit=2)
    assert first.status_code == 200, first.content
    link = first.headers["link"]
    url, _, relation = link.partition(">; ")
    assert relation == 'rel="next"', link
    (cursor,) = parse_qs(urlsplit(url.removeprefix("<")).query)["cursor"]
    rest = list_messages.sync_detailed(reader.id, client=as_reader, limit=2, cursor=cursor)
    assert rest.status_code == 200, rest.content
    assert "link" not in rest.headers
    pages = first.parsed + rest.parsed
    assert all(isinstance(item, models.MailboxItem) for item in pages)
    assert [item.id for item in pages] == [message.id for message in reversed(sent)]
    assert {item.direction for item in pages} == {models.MailboxItemDirection.RECEIVED}

    # The stream, read to its end: the reader's key is replaced as soon as the stream
    # has answered, which ends it with `event: revoked` when the change is notified.
    def replace_key(response: httpx.Response) -> None:
        if response.url.path.endswith("/stream"):
            replaced = rotate.sync_detailed(reader.id, client=admin)
            assert replaced.status_code == 200, replaced.content

    streaming = as_caller(reader.api_key, event_hooks={"response": [replace_key]})
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(stream.sync_detailed, reader.id, client=streaming)
        try:
            answer = call.result(timeout=STREAM_SECONDS)
        except StillRunning:
            server.stop()  # ends the call, so that the pool can shut down
            pytest.fail(f"the generated stream call did not return in {STREAM_SECONDS} s")
    assert answer.status_code == 200, answer.content
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert isinstance(answer.parsed, str)
    received = events(answer.parsed)
    *messages, last = received
    assert [e["event"] for e in messages] == ["message"] * 3, received
    items = [models.MailboxItem.from_dict(json.loads(e["data"])) for e in messages]
    assert [item.id for item in items] == [message.id for message in sent]  # oldest first
    assert all(e["id"] for e in messages)
    assert messages[0]["retry"] == "1000"
    assert last["event"] == "revoked" and json.loads(last["data"])["detail"]
