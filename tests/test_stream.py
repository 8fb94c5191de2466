"""Push delivery: the live inbox stream (SSE) and the long-poll, across two real server processes.

Two uvicorn processes serve the same test database on their own ports: a
message posted to one must reach a stream or a long-poll held on the other,
through PostgreSQL's LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse
from starlette.testclient import TestClient

from handlers.pagination import OLDEST
from handlers.stream import HEARTBEAT as HEARTBEAT_LINE
from handlers.stream import OPENING, _events
from queries.database import make_pool
from queries.listener import Listener
from queries.wakeups import WakeupReads
from tests.helpers import (
    EVENT_SECONDS,
    UNKNOWN,
    Event,
    Item,
    Stream,
    assert_invalid,
    assert_not_found,
)
from tests.servers import Server

HEARTBEAT = "0.5"  # the servers fixture's MAILROOM_STREAM_HEARTBEAT


def new_agent(base_url: str) -> str:
    response = httpx.post(base_url + "/agents", json={"agent_name": "stream-test"}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def send(http: httpx.Client, recipient: str, content: str, **fields: Any) -> Item:
    response = http.post(
        "/messages", json={"content": content, "recipient_ids": [recipient], **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()


def unread(base_url: str, agent_id: str, **params: Any) -> list[Item]:
    response = httpx.get(
        f"{base_url}/agents/{agent_id}/messages/unread",
        params={"order": "asc", **params},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_message_posted_to_one_process_reaches_a_stream_on_the_other(
    servers: list[Server],
) -> None:
    a, b = servers
    agent = new_agent(a.base_url)
    stream = Stream(b.base_url, agent)
    try:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        with httpx.Client(base_url=a.base_url, timeout=10) as http:
            sent = [send(http, agent, f"live {n}") for n in range(20)]
        events = stream.messages(20)
    finally:
        stream.close()
    assert [event.json()["id"] for event in events] == [message["id"] for message in sent]
    # data: the same item as the unread list (oldest first); id: the same cursor.
    assert [event.json() for event in events] == unread(b.base_url, agent)
    after_fifth = unread(b.base_url, agent, cursor=events[4].id)
    assert [item["id"] for item in after_fifth] == [m["id"] for m in sent[5:]]


def test_stream_replays_unread_then_goes_live_and_resumes_after_last_event_id(
    servers: list[Server],
) -> None:
    a, b = servers
    agent = new_agent(a.base_url)
    with httpx.Client(base_url=a.base_url, timeout=10) as http:
        before = [send(http, agent, f"before {n}") for n in range(5)]
        stream = Stream(b.base_url, agent)
        try:
            first = stream.messages(5)
            during = [send(http, agent, f"during {n}") for n in range(3)]
            second = stream.messages(2)
        finally:
            stream.close()
        after = [send(http, agent, f"after {n}") for n in range(2)]
    resumed = Stream(a.base_url, agent, **{"Last-Event-ID": second[-1].id})
    try:
        rest = resumed.messages(3)
    finally:
        resumed.close()
    got = [e.json()["id"] for e in first + second + rest]
    assert got == [m["id"] for m in before + during + after]


def test_after_parameter_resumes_like_last_event_id(servers: list[Server]) -> None:
    a, b = servers
    agent = new_agent(a.base_url)
    with httpx.Client(base_url=a.base_url, timeout=10) as http:
        sent = [send(http, agent, f"m {n}") for n in range(4)]
    first = Stream(b.base_url, agent)
    try:
        cursor = first.messages(2)[-1].id
    finally:
        first.close()
    # ?after= is the resume point for clients that cannot set headers.
    second = Stream(b.base_url, agent, params={"after": cursor})
    try:
        rest = second.messages(2)
    finally:
        second.close()
    assert [e.json()["id"] for e in rest] == [m["id"] for m in sent[2:]]


def test_a_stream_resumed_at_random_points_gets_every_message_once_in_order(
    servers: list[Server],
) -> None:
    """Clients killed mid-stream while four senders post through both processes."""
    a, b = servers
    agent = new_agent(a.base_url)
    total, senders = 200, 4
    sent_ids: list[str] = []
    failures: list[str] = []

    def post(index: int) -> None:
        base = (a, b)[index % 2].base_url
        with httpx.Client(base_url=base, timeout=10) as http:
            for n in range(total // senders):
                response = http.post(
                    "/messages", json={"content": f"s{index} {n}", "recipient_ids": [agent]}
                )
                if response.status_code != 201:
                    failures.append(response.text)
                else:
                    sent_ids.append(response.json()["id"])
                time.sleep(random.random() * 0.004)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    received: list[Event] = []
    rng = random.Random(6)
    reconnects = 0
    while len(received) < total:
        headers = {"Last-Event-ID": received[-1].id} if received else {}
        stream = Stream(rng.choice((a, b)).base_url, agent, **headers)
        try:
            for _ in range(rng.randint(1, 30)):
                if len(received) == total:
                    break
                received.append(stream.messages(1)[0])
        finally:
            stream.close()  # mid-stream, events may be in flight
        reconnects += 1
    for thread in threads:
        thread.join()
    assert not failures
    got = [event.json()["id"] for event in received]
    assert len(got) == len(set(got)) == total
    assert set(got) == set(sent_ids)
    # In the inbox's own order: the unread list, oldest first.
    assert got == [item["id"] for item in unread(a.base_url, agent, limit=1000)]
    assert reconnects > 5


def test_a_recipient_added_later_is_pushed_too(servers: list[Server]) -> None:
    a, b = servers
    agent = new_agent(a.base_url)
    with httpx.Client(base_url=a.base_url, timeout=10) as http:
        old = http.post("/messages", json={"content": "older"}).json()
        newer = send(http, agent, "newer")
        stream = Stream(b.base_url, agent)
        try:
            assert stream.messages(1)[0].json()["id"] == newer["id"]
            added = http.post(
                "/message_recipients", json={"message_id": old["id"], "recipient_id": agent}
            )
            assert added.status_code == 201, added.text
            late = stream.messages(1)[0]
        finally:
            stream.close()
    assert late.json()["id"] == old["id"]
    # Its id is the stream's position, so resuming from it repeats nothing.
    assert unread(a.base_url, agent, cursor=late.id) == []


def test_messages_sent_while_the_listener_reconnects_are_replayed_from_the_table(
    servers: list[Server], database_url: str
) -> None:
    """B's listening connection is killed; what A stores meanwhile still reaches B's stream."""
    a, b = servers
    agent = new_agent(a.base_url)
    stream = Stream(b.base_url, agent)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"mailroom listener {b.process.pid}",),
            ).fetchall()
        assert killed == [(True,)]
        with httpx.Client(base_url=a.base_url, timeout=10) as http:
            sent = [send(http, agent, f"during the gap {n}") for n in range(3)]
        events = stream.messages(3)
    finally:
        stream.close()
    assert [e.json()["id"] for e in events] == [m["id"] for m in sent]


def test_an_idle_stream_gets_heartbeats(servers: list[Server]) -> None:
    a, _ = servers
    agent = new_agent(a.base_url)
    stream = Stream(a.base_url, agent)
    try:
        opening = stream.next(include_comments=True)
        assert opening.kind == "comment" and opening.data == "connected"
        started = time.monotonic()
        event = stream.next(include_comments=True)
        assert event.kind == "comment" and event.data == "heartbeat"
        assert time.monotonic() - started < float(HEARTBEAT) * 4
    finally:
        stream.close()


def test_a_message_notified_while_a_heartbeat_is_written_is_sent_next(
    database_url: str, agent: Any, message: Any
) -> None:
    """The wake-up that arrives while the stream is suspended at its heartbeat (writing it,
    or not yet resumed after its timer) is not lost: the stream's next event is the
    message, not another heartbeat. (It was lost until the next message woke the
    stream: 2 of 1,000 streams in a bench/push_scale.py run at 10,000 streams.) The
    stream's own generator, on a real pool and listener, is held at the heartbeat."""
    recipient = agent()

    async def scenario() -> bytes:
        async def nothing() -> None:
            pass

        pool = make_pool(database_url, 1, 2, 10, None)
        await pool.open()
        listener = Listener(database_url, 5, 1, on_reconnect=nothing)
        await listener.start(10)
        subscription = listener.subscribe(UUID(recipient["id"]))
        events = _events(pool, WakeupReads(pool, 1_000_000), listener, b"k" * 32, 0.05,
                         1_000_000, UUID(recipient["id"]), OLDEST, None, subscription)  # fmt: skip
        try:
            assert await anext(events) == OPENING
            assert await anext(events) == HEARTBEAT_LINE  # held here: the write's await
            waiter = subscription.waiter
            await asyncio.to_thread(message, recipient_ids=[recipient["id"]], content="mid-beat")
            async with asyncio.timeout(10):
                while not waiter.woken:  # noqa: ASYNC110 - the listener's wake-up reached the held stream
                    await asyncio.sleep(0.01)
            async with asyncio.timeout(10):
                return await anext(events)
        finally:
            await events.aclose()
            await listener.close()
            await pool.close()

    following = asyncio.run(scenario())
    assert b"event: message" in following and b"mid-beat" in following, following


def test_httpx_sse_gets_json_data_in_every_message_event(servers: list[Server]) -> None:
    """httpx-sse hands over any block with a field or after an id as an event: neither the
    opening, the reconnection time nor a heartbeat may come as a `message` without data."""
    a, b = servers
    agent = new_agent(a.base_url)
    timeout = httpx.Timeout(10, read=EVENT_SECONDS)
    with (
        httpx.Client(base_url=a.base_url, timeout=10) as http,
        httpx.Client(base_url=b.base_url, timeout=timeout) as reader,
    ):
        first = send(http, agent, "before the stream")
        with connect_sse(reader, "GET", f"/agents/{agent}/messages/stream") as source:
            events = source.iter_sse()
            replayed = next(events)
            time.sleep(float(HEARTBEAT) * 3)  # heartbeats after an event with an id
            second = send(http, agent, "live")
            live = next(events)
    assert (replayed.event, replayed.retry, replayed.json()["id"]) == ("message", 1000, first["id"])
    assert (live.event, live.retry, live.json()["id"]) == ("message", None, second["id"])
    assert live.id and live.id != replayed.id


def test_stream_errors_follow_the_pull_endpoints(servers: list[Server]) -> None:
    a, _ = servers
    with httpx.Client(base_url=a.base_url, timeout=10) as http:
        assert_not_found(http.get(f"/agents/{UNKNOWN}/messages/stream"), "Agent not found")
        assert_invalid(http.get("/agents/not-a-uuid/messages/stream"), "path", "agent_id")
        agent = new_agent(a.base_url)
        forged = http.get(f"/agents/{agent}/messages/stream", headers={"Last-Event-ID": "AAAA"})
        assert_invalid(forged, "header", "last-event-id")
        bad_after = http.get(f"/agents/{agent}/messages/stream", params={"after": "x"})
        assert_invalid(bad_after, "query", "after")


def test_long_poll_across_processes_returns_as_soon_as_a_message_arrives(
    servers: list[Server],
) -> None:
    a, b = servers
    agent = new_agent(a.base_url)

    def later() -> None:
        time.sleep(0.5)
        with httpx.Client(base_url=a.base_url, timeout=10) as http:
            send(http, agent, "wake up")

    sender = threading.Thread(target=later)
    started = time.monotonic()
    sender.start()
    response = httpx.get(
        f"{b.base_url}/agents/{agent}/messages/unread", params={"wait": 20}, timeout=30
    )
    elapsed = time.monotonic() - started
    sender.join()
    assert response.status_code == 200, response.text
    assert [item["content"] for item in response.json()] == ["wake up"]
    assert 0.4 < elapsed < 5


def test_long_polls_woken_together_each_get_their_own_page(servers: list[Server]) -> None:
    """One message to six waiting long-polls (both orders, two page sizes) wakes them in
    the same turn; their pages are read together and each gets exactly the message."""
    a, b = servers
    params = [{"order": order, "limit": limit} for order in ("asc", "desc") for limit in (1, 1, 50)]
    agents = [new_agent(a.base_url) for _ in params]
    answers: dict[int, httpx.Response] = {}

    def poll(index: int) -> None:
        answers[index] = httpx.get(
            f"{b.base_url}/agents/{agents[index]}/messages/unread",
            params={"wait": 20, **params[index]},
            timeout=30,
        )

    pollers = [threading.Thread(target=poll, args=(n,)) for n in range(len(agents))]
    for poller in pollers:
        poller.start()
    time.sleep(1.0)  # all of them waiting
    with httpx.Client(base_url=a.base_url, timeout=10) as http:
        response = http.post("/messages", json={"content": "all at once", "recipient_ids": agents})
        assert response.status_code == 201, response.text
    for poller in pollers:
        poller.join(30)
    for index, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert [item["id"] for item in answer.json()] == [response.json()["id"]], params[index]
        assert "link" not in answer.headers
    assert len(answers) == len(agents)


def test_a_send_to_many_wakes_each_recipient_past_one_notification(
    servers: list[Server],
) -> None:
    """A notification names up to 200 recipients (migration 0034): a send to 450 is three
    of them, and the first, the 200th, the 201st and the last recipient, long-polling on
    the other process, are each answered with the message."""
    a, b = servers
    with httpx.Client(base_url=a.base_url, timeout=30) as http:
        agents = [agent["id"] for agent in (
            http.post("/agents", json={"agent_name": f"many-{n}"}).json() for n in range(450)
        )]  # fmt: skip
        waiting = [agents[0], agents[199], agents[200], agents[-1]]
        answers: dict[str, httpx.Response] = {}

        def poll(agent_id: str) -> None:
            answers[agent_id] = httpx.get(
                f"{b.base_url}/agents/{agent_id}/messages/unread",
                params={"wait": 20},
                timeout=30,
            )

        pollers = [threading.Thread(target=poll, args=(agent_id,)) for agent_id in waiting]
        for poller in pollers:
            poller.start()
        time.sleep(1.0)  # all of them waiting
        started = time.monotonic()
        sent = http.post("/messages", json={"content": "to 450", "recipient_ids": agents})
        assert sent.status_code == 201, sent.text
        for poller in pollers:
            poller.join(30)
    assert time.monotonic() - started < 10, "woken, not timed out"
    assert sorted(answers) == sorted(waiting)
    for answer in answers.values():
        assert answer.status_code == 200, answer.text
        assert [item["id"] for item in answer.json()] == [sent.json()["id"]]


def test_a_replica_of_the_earlier_version_still_wakes_long_polls(
    servers: list[Server], database_url: str
) -> None:
    """During a rolling update, replicas of the version before migration 0034 still notify
    one recipient row at a time (notify_inbox()): the listener reads that payload too.
    The rows are stored without a notification, then notified the old way."""
    a, b = servers
    agent = new_agent(a.base_url)
    answer: list[httpx.Response] = []

    def poll() -> None:
        url = f"{b.base_url}/agents/{agent}/messages/unread"
        answer.append(httpx.get(url, params={"wait": 20}, timeout=30))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.0)  # waiting
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        message_id, sent_at = conn.execute(
            "INSERT INTO messages (content) VALUES ('the old way') RETURNING id, sent_at"
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO message_recipients (message_id, recipient_id, sent_at)"
            " VALUES (%s, %s, %s)",
            (message_id, agent, sent_at),
        )
        conn.execute("SELECT notify_inbox(%s, %s, %s)", (agent, sent_at, message_id))
    poller.join(30)
    assert time.monotonic() - started < 10, "woken, not timed out"
    assert answer[0].status_code == 200, answer[0].text
    assert [item["id"] for item in answer[0].json()] == [str(message_id)]


def test_long_poll_times_out_with_an_empty_list(client: TestClient) -> None:
    agent = client.post("/agents", json={"agent_name": "poller"}).json()["id"]
    started = time.monotonic()
    response = client.get(f"/agents/{agent}/messages/unread", params={"wait": 1})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json() == []
    assert 0.9 < elapsed < 3


def test_long_poll_answers_at_once_when_messages_are_waiting(client: TestClient) -> None:
    agent = client.post("/agents", json={"agent_name": "poller"}).json()["id"]
    client.post("/messages", json={"content": "already here", "recipient_ids": [agent]})
    started = time.monotonic()
    response = client.get(f"/agents/{agent}/messages/unread", params={"wait": 30})
    assert time.monotonic() - started < 1
    assert [item["content"] for item in response.json()] == ["already here"]


@pytest.mark.parametrize("wait", ["61", "-1", "1.5", "soon", ""])
def test_long_poll_wait_out_of_range_is_422(client: TestClient, wait: str) -> None:
    response = client.get(f"/agents/{UNKNOWN}/messages/unread", params={"wait": wait})
    assert_invalid(response, "query", "wait")


def test_long_poll_for_an_unknown_agent_is_404_at_once(client: TestClient) -> None:
    started = time.monotonic()
    response = client.get(f"/agents/{UNKNOWN}/messages/unread", params={"wait": 30})
    assert_not_found(response, "Agent not found")
    assert time.monotonic() - started < 1


def test_sigterm_ends_streams_with_a_final_event(database_url: str, tmp_path: Path) -> None:
    server = Server(database_url, tmp_path, MAILROOM_STREAM_HEARTBEAT="30")
    try:
        server.wait_healthy()
        agent = new_agent(server.base_url)
        stream = Stream(server.base_url, agent)
        poll: list[httpx.Response] = []
        poller = threading.Thread(
            target=lambda: poll.append(
                httpx.get(
                    f"{server.base_url}/agents/{agent}/messages/unread",
                    params={"wait": 30},
                    timeout=40,
                )
            )
        )
        poller.start()
        time.sleep(0.5)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            final = stream.next()
            with pytest.raises(EOFError):
                stream.next()
        finally:
            stream.close()
        poller.join()
        try:
            code = server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within 10 s of SIGTERM: {server.stderr()}")
        assert time.monotonic() - started < 5
    finally:
        server.kill()
    assert final.kind == "shutdown"
    assert poll[0].status_code == 200 and poll[0].json() == []
    # uvicorn re-raises SIGTERM once it has shut down cleanly (tini -e 143 maps it to 0).
    assert code in (0, -signal.SIGTERM), server.stderr()
    assert "Application shutdown complete" in server.output()
