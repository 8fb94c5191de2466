"""Webhooks (issue 14) against real receivers in separate processes.

Each receiver (tests/webhook_receiver.py) verifies every signature with the
`standardwebhooks` package and records what it got; the service runs as real
server processes on a database of this module's own (so the in-process app of
the other tests, whose webhooks may not reach 127.0.0.1, never claims these
deliveries), with a compressed retry schedule. The address rules are checked
with the in-process app, which runs without MAILROOM_WEBHOOK_ALLOW_PRIVATE.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from tests.helpers import assert_invalid, assert_not_found, temporary_database
from tests.servers import ROOT, Cluster, Server, free_port

SCHEDULE = "0,0.5,1,1,1,1,1,1"  # eight attempts within about 6.5 s
ATTEMPTS = len(SCHEDULE.split(","))
WEBHOOK_ENV = {
    "MAILROOM_WEBHOOK_ALLOW_PRIVATE": "on",
    "MAILROOM_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
    "MAILROOM_WEBHOOK_TIMEOUT": "1",
    "MAILROOM_WEBHOOK_POLL_INTERVAL": "0.5",
}
WAIT = 20.0  # seconds any one expectation may take


class Receiver:
    """tests/webhook_receiver.py in its own process, on a port of its own."""

    def __init__(self, directory: Path, start: bool = True, **plan: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.process: subprocess.Popen[bytes] | None = None
        self.plan(**plan)
        if start:
            self.start()

    def plan(self, **plan: Any) -> None:
        (self.directory / "plan.json").write_text(json.dumps(plan))

    def secret(self, secret: str) -> None:
        (self.directory / "secret").write_text(secret)

    def start(self) -> None:
        (self.directory / "ready").unlink(missing_ok=True)
        script = str(ROOT / "tests" / "webhook_receiver.py")
        self.process = subprocess.Popen(
            [sys.executable, script, str(self.port), str(self.directory)]
        )
        deadline = time.monotonic() + 10
        while not (self.directory / "ready").exists():
            assert self.process.poll() is None, "the receiver exited"
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def received(self) -> list[dict[str, Any]]:
        path = self.directory / "received.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_for(self, count: int, seconds: float = WAIT) -> list[dict[str, Any]]:
        """At least `count` requests received, or fail."""
        deadline = time.monotonic() + seconds
        while len(got := self.received()) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} requests arrived"
            time.sleep(0.05)
        return got


@pytest.fixture(scope="module")
def webhook_database(database_url: str) -> Iterator[str]:
    with temporary_database(database_url, "mailroom_webhooks") as url:
        yield url


@pytest.fixture(scope="module")
def replica(webhook_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(webhook_database, tmp_path_factory.mktemp("replica"), **WEBHOOK_ENV)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(replica: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replica.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(start: bool = True, **plan: Any) -> Receiver:
        receiver = Receiver(tmp_path / f"receiver-{len(made)}", start, **plan)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


def register(http: httpx.Client, receiver: Receiver) -> dict[str, Any]:
    """An agent whose webhook is the receiver, which is told the secret."""
    response = http.post("/agents", json={"agent_name": "hooked", "webhook_url": receiver.url})
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["webhook_url"] == receiver.url
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", agent["webhook_secret"])
    receiver.secret(agent["webhook_secret"])
    return agent


def send(http: httpx.Client, agent: dict[str, Any], content: str = "wake up") -> dict[str, Any]:
    response = http.post("/messages", json={"content": content, "recipient_ids": [agent["id"]]})
    assert response.status_code == 201, response.text
    return response.json()


def deliveries(http: httpx.Client, agent: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    response = http.get(f"/agents/{agent['id']}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(check: Callable[[], Any], seconds: float = WAIT) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "the expected state never came"
        time.sleep(0.05)
    return found


def all_delivered(http: httpx.Client, agent: dict[str, Any], count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        found = deliveries(http, agent)
        done = len(found) == count and all(d["status"] == "delivered" for d in found)
        return found if done else None

    return wait_until(check)


# Delivery --------------------------------------------------------------------------


def test_a_message_is_delivered_once_signed_with_the_unread_item(http, receivers) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    message = send(http, agent, "hello hook")

    (got,) = receiver.wait_for(1)
    time.sleep(1.0)  # nothing more arrives
    assert len(receiver.received()) == 1
    assert got["valid"] is True, got["valid"]
    (unread,) = http.get(f"/agents/{agent['id']}/messages/unread").json()
    assert got["body"]["type"] == "message.received"
    assert got["body"]["data"] == unread
    assert got["body"]["data"]["id"] == message["id"]
    assert got["body"]["timestamp"] == message["sent_at"]
    assert abs(int(got["timestamp"]) - time.time()) < 30
    (delivery,) = all_delivered(http, agent, 1)
    assert delivery["id"] == got["id"]  # the webhook-id is the delivery's id
    assert (delivery["attempts"], delivery["last_status_code"]) == (1, 200)
    assert delivery["message_id"] == message["id"]
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is not None


def test_the_secret_is_shown_once_and_never_again(http, receivers) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    shown = http.get(f"/agents/{agent['id']}").json()
    assert "webhook_secret" not in shown
    assert shown["webhook_url"] == receiver.url and shown["webhook_disabled_at"] is None
    renamed = http.put(f"/agents/{agent['id']}", json={"agent_name": "renamed"}).json()
    assert "webhook_secret" not in renamed
    assert agent["webhook_secret"] not in json.dumps(http.get(f"/agents/{agent['id']}").json())


def test_receiver_down_then_up_gets_everything_with_the_same_webhook_id(http, receivers) -> None:
    receiver = receivers(start=False)
    agent = register(http, receiver)
    sent = [send(http, agent, f"while down {n}")["id"] for n in range(3)]
    # Each has failed at least twice before the receiver comes up.
    wait_until(lambda: all(d["attempts"] >= 2 for d in deliveries(http, agent)))
    failed = deliveries(http, agent)
    assert all(d["status"] == "pending" and d["last_status_code"] is None for d in failed)
    assert all(d["last_error"].startswith("Could not reach the endpoint") for d in failed)
    receiver.start()

    done = all_delivered(http, agent, 3)
    got = receiver.received()
    assert sorted(r["body"]["data"]["id"] for r in got) == sorted(sent)
    assert all(r["valid"] is True for r in got)
    assert {r["id"] for r in got} == {d["id"] for d in done}
    assert all(d["attempts"] >= 3 for d in done)


def test_a_500_is_retried_with_the_same_webhook_id(http, receivers) -> None:
    receiver = receivers(statuses=[500, 200])
    agent = register(http, receiver)
    send(http, agent)

    first, second = receiver.wait_for(2)
    assert first["id"] == second["id"]
    assert first["valid"] is True and second["valid"] is True
    assert second["at"] - first["at"] >= 0.4  # the schedule's 0.5 s, with jitter
    (delivery,) = all_delivered(http, agent, 1)
    assert (delivery["attempts"], delivery["last_status_code"]) == (2, 200)


def test_a_slow_receiver_times_out_and_does_not_hold_up_others(http, receivers) -> None:
    slow = receivers(delay=5)
    agent = register(http, slow)
    send(http, agent, "to the slow one")
    slow.wait_for(1)
    quick = receivers()
    other = register(http, quick)
    started = time.monotonic()
    send(http, other, "to the quick one")
    quick.wait_for(1)
    assert time.monotonic() - started < 1.0, "a slow endpoint delayed another agent's delivery"

    def timed_out() -> dict[str, Any] | None:
        (delivery,) = deliveries(http, agent)
        return delivery if delivery["last_error"] else None

    delivery = wait_until(timed_out)
    assert delivery["last_error"] == "No response within 1 s (MAILROOM_WEBHOOK_TIMEOUT)"
    slow.plan(delay=0)
    all_delivered(http, agent, 1)


def test_a_410_disables_the_webhook_until_it_is_set_again(http, receivers) -> None:
    receiver = receivers(statuses=[410])
    agent = register(http, receiver)
    send(http, agent)

    (dead,) = wait_until(lambda: deliveries(http, agent, status="dead"))
    assert dead["last_status_code"] == 410
    assert "disabled" in dead["last_error"]
    shown = http.get(f"/agents/{agent['id']}").json()
    assert shown["webhook_disabled_at"] is not None
    send(http, agent, "not delivered")
    time.sleep(1.0)
    assert len(receiver.received()) == 1
    assert len(deliveries(http, agent)) == 1  # no delivery is made while disabled

    receiver.plan(statuses=[200])
    again = http.put(f"/agents/{agent['id']}", json={"webhook_url": receiver.url})
    assert again.status_code == 200, again.text
    assert again.json()["webhook_disabled_at"] is None
    receiver.secret(again.json()["webhook_secret"])
    send(http, agent, "delivered again")
    last = receiver.wait_for(2)[-1]
    assert last["valid"] is True and last["body"]["data"]["content"] == "delivered again"


def test_429_with_retry_after_is_waited_for(http, receivers) -> None:
    receiver = receivers(statuses=[429, 200], headers={"Retry-After": "2"})
    agent = register(http, receiver)
    send(http, agent)

    first, second = receiver.wait_for(2)
    assert first["id"] == second["id"]
    assert second["at"] - first["at"] >= 1.9  # not the schedule's 0.5 s


def test_after_the_last_attempt_it_is_dead_and_can_be_retried(http, receivers) -> None:
    receiver = receivers(statuses=[500])
    agent = register(http, receiver)
    send(http, agent)

    (dead,) = wait_until(lambda: deliveries(http, agent, status="dead"))
    assert dead["attempts"] == ATTEMPTS
    assert dead["last_status_code"] == 500
    assert dead["last_error"] == "The endpoint answered 500"
    assert len(receiver.received()) == ATTEMPTS
    assert deliveries(http, agent, status="pending") == []

    receiver.plan(statuses=[200])
    retried = http.post(f"/agents/{agent['id']}/deliveries/{dead['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    (done,) = all_delivered(http, agent, 1)
    assert done["id"] == dead["id"] == receiver.received()[-1]["id"]
    assert done["attempts"] == 1


def test_retry_refuses_pending_and_unknown_deliveries(http, receivers) -> None:
    receiver = receivers(start=False)
    agent = register(http, receiver)
    send(http, agent)
    (pending,) = deliveries(http, agent)
    response = http.post(f"/agents/{agent['id']}/deliveries/{pending['id']}/retry")
    assert response.status_code == 409, response.text
    assert "pending" in response.json()["detail"]
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_not_found(
        http.post(f"/agents/{agent['id']}/deliveries/{unknown}/retry"), "Delivery not found"
    )
    assert_not_found(http.post(f"/agents/{unknown}/deliveries/{unknown}/retry"), "Agent not found")
    assert_not_found(http.get(f"/agents/{unknown}/deliveries"), "Agent not found")
    assert_invalid(http.get(f"/agents/{agent['id']}/deliveries?status=lost"), "query", "status")


def test_deliveries_are_paginated_newest_first(http, receivers) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    sent = [send(http, agent, f"page {n}")["id"] for n in range(5)]
    all_delivered(http, agent, 5)
    seen, url = [], f"/agents/{agent['id']}/deliveries?limit=2&status=delivered"
    while url:
        response = http.get(url)
        assert response.status_code == 200, response.text
        seen += [d["message_id"] for d in response.json()]
        link = response.headers.get("link")
        url = link[link.index("<") + 1 : link.index(">")] if link else None
    assert seen == sent[::-1]


def test_rotation_signs_with_both_secrets_for_a_while(http, receivers) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    rotated = http.post(f"/agents/{agent['id']}/webhook-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhook_secret"]
    assert new != agent["webhook_secret"] and new.startswith("whsec_")
    assert rotated.json()["previous_valid_until"]
    receiver.secret(new)
    send(http, agent, "rotated")

    (got,) = receiver.wait_for(1)
    assert got["valid"] is True
    assert len(got["signature"].split(" ")) == 2
    headers = {k: got[k] for k in ("timestamp", "signature")}
    headers = {
        "webhook-id": got["id"],
        "webhook-timestamp": headers["timestamp"],
        "webhook-signature": headers["signature"],
    }
    body = json.dumps(got["body"], separators=(",", ":")).encode()
    # A receiver still holding the old secret verifies too.
    Webhook(agent["webhook_secret"]).verify(body, headers)
    no_hook = http.post("/agents", json={"agent_name": "plain"}).json()
    refused = http.post(f"/agents/{no_hook['id']}/webhook-secret")
    assert refused.status_code == 409 and "has no webhook" in refused.json()["detail"]


def test_removing_the_webhook_makes_pending_deliveries_dead(http, receivers) -> None:
    receiver = receivers(start=False)
    agent = register(http, receiver)
    send(http, agent)
    removed = http.put(f"/agents/{agent['id']}", json={"webhook_url": None})
    assert removed.status_code == 200, removed.text
    assert removed.json()["webhook_url"] is None and "webhook_secret" not in removed.json()
    (dead,) = deliveries(http, agent)
    assert (dead["status"], dead["last_error"]) == ("dead", "The agent removed its webhook")


def test_metrics_and_log_lines_tell_each_attempt(http, receivers, replica) -> None:
    receiver = receivers(statuses=[500, 200])
    agent = register(http, receiver)
    send(http, agent, "secret content in the body")
    (delivery,) = all_delivered(http, agent, 1)

    text = http.get("/metrics").text
    assert re.search(
        r'mailroom_webhook_attempts_total\{outcome="delivered",status_class="2xx"\} [1-9]', text
    )
    assert re.search(
        r'mailroom_webhook_attempts_total\{outcome="retry",status_class="5xx"\} [1-9]', text
    )
    assert "mailroom_webhook_delivery_latency_seconds_bucket" in text
    for gauge in ("deliveries_pending", "deliveries_dead", "oldest_pending_seconds"):
        assert f"mailroom_webhook_{gauge} " in text
    lines = [line for line in replica.output().splitlines() if delivery["id"] in line]
    assert len(lines) == 2, lines
    assert "retry (500)" in lines[0] and "delivered (200)" in lines[1]
    assert agent["id"] in lines[0]
    output = replica.output()
    assert "secret content in the body" not in output
    assert agent["webhook_secret"] not in output


# Replicas, crashes and outages -------------------------------------------------------------


def test_two_replicas_never_deliver_a_message_twice(
    http, receivers, webhook_database, tmp_path, replica
) -> None:
    second = Server(webhook_database, tmp_path / "second", **WEBHOOK_ENV)
    try:
        second.wait_healthy()
        receiver = receivers()
        agent = register(http, receiver)
        with httpx.Client(base_url=second.base_url, timeout=30) as other:
            for n in range(40):
                send(http if n % 2 else other, agent, f"message {n}")
        all_delivered(http, agent, 40)
        time.sleep(1.0)
        got = receiver.received()
        assert len(got) == 40
        assert len({r["id"] for r in got}) == 40
        assert all(r["valid"] is True for r in got)
        # Each delivery was attempted once, by one replica or the other.
        logged = [
            line
            for server in (replica, second)
            for line in server.output().splitlines()
            if "webhook delivery" in line and agent["id"] in line
        ]
        assert len(logged) == 40, logged
        assert all(": delivered (200)" in line for line in logged)
    finally:
        second.stop()


def test_a_replica_killed_mid_delivery_delivers_at_least_once(
    database_url, receivers, tmp_path
) -> None:
    with temporary_database(database_url, "mailroom_webhook_kill") as url:
        env = WEBHOOK_ENV | {"MAILROOM_WEBHOOK_TIMEOUT": "3"}
        first = Server(url, tmp_path / "first", **env)
        try:
            first.wait_healthy()
            receiver = receivers(delay=2)
            with httpx.Client(base_url=first.base_url, timeout=30) as http:
                agent = register(http, receiver)
                send(http, agent, "in flight")
            receiver.wait_for(1)  # the attempt is in flight: killed before it ends
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
        finally:
            first.stop()
        receiver.plan(delay=0)
        second = Server(url, tmp_path / "second", **env)
        try:
            second.wait_healthy()
            with httpx.Client(base_url=second.base_url, timeout=30) as http:
                (done,) = all_delivered(http, agent, 1)
        finally:
            second.stop()
        got = receiver.received()
        assert len(got) == 2
        assert got[0]["id"] == got[1]["id"] == done["id"]
        assert all(r["valid"] is True for r in got)


def test_a_database_restart_mid_flight_loses_nothing(receivers, tmp_path) -> None:
    cluster = Cluster(tmp_path / "pgdata")
    server = Server(cluster.url, tmp_path / "server", **WEBHOOK_ENV)
    try:
        server.wait_healthy()
        receiver = receivers(delay=0.3)
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            agent = register(http, receiver)
            sent = [send(http, agent, f"before {n}")["id"] for n in range(5)]
            receiver.wait_for(1)
            cluster.restart()
            deadline = time.monotonic() + WAIT
            while len(sent) < 10:
                response = http.post(
                    "/messages", json={"content": "after", "recipient_ids": [agent["id"]]}
                )
                if response.status_code == 201:
                    sent.append(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            all_delivered(http, agent, 10)
        got = receiver.received()
        assert {r["body"]["data"]["id"] for r in got} == set(sent)
        assert all(r["valid"] is True for r in got)
    finally:
        server.stop()
        cluster.close()


# Hostile receivers -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["huge", "endless"])
def test_a_body_that_never_ends_is_never_read(http, receivers, mode) -> None:
    receiver = receivers(mode=mode)
    agent = register(http, receiver)
    started = time.monotonic()
    send(http, agent)
    (delivery,) = all_delivered(http, agent, 1)
    assert time.monotonic() - started < 2.0
    assert delivery["attempts"] == 1
    quick = receivers()
    other = register(http, quick)
    send(http, other)
    all_delivered(http, other, 1)


def test_a_redirect_is_not_followed(http, receivers) -> None:
    target = receivers()
    receiver = receivers(mode="redirect", location=target.url)
    agent = register(http, receiver)
    send(http, agent)

    def redirected() -> dict[str, Any] | None:
        (delivery,) = deliveries(http, agent)
        return delivery if delivery["attempts"] >= 2 else None

    delivery = wait_until(redirected)
    assert delivery["last_status_code"] == 307
    assert delivery["status"] in ("pending", "dead")
    assert target.received() == []


# Where a webhook may go (the in-process app: no MAILROOM_WEBHOOK_ALLOW_PRIVATE) -----------------


REFUSED = [
    ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
    ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[::1]:9000/hook", "::1 is a loopback address"),
    ("http://localhost:9000/hook", "localhost (127.0.0.1) is a loopback address"),
    ("http://[fd00::1]/hook", "fd00::1 is a unique-local IPv6 address"),
    ("http://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
    ("http://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
    ("http://[::ffff:192.168.1.1]/hook", "a private address"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_internal_addresses_are_refused_when_saved(client, agent, url, why) -> None:
    response = client.post("/agents", json={"agent_name": "ssrf", "webhook_url": url})
    assert_invalid(response, "body", "webhook_url")
    (error,) = response.json()["detail"]
    assert why in error["msg"], error["msg"]
    assert error["msg"].startswith("Refused: ")
    existing = agent()
    response = client.put(f"/agents/{existing['id']}", json={"webhook_url": url})
    assert_invalid(response, "body", "webhook_url")
    assert client.get(f"/agents/{existing['id']}").json()["webhook_url"] is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:pass@example.com/hook", "may not carry a user name or password"),
        ("http://token@example.com/hook", "may not carry a user name or password"),
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("/relative/path", "must start with http:// or https://"),
        ("http:///no-host", "must name a host"),
        ("http://example.com:99999/", "Not a valid URL"),
        ("http://exa mple.com/", "pattern"),
        ("https://example.com/" + "a" * 2030, "at most 2048"),
    ],
)
def test_malformed_webhook_urls_are_refused(client, url, why) -> None:
    response = client.post("/agents", json={"agent_name": "bad", "webhook_url": url})
    assert_invalid(response, "body", "webhook_url")
    (error,) = response.json()["detail"]
    assert why in error["msg"], error["msg"]


def test_the_address_is_checked_again_when_connecting(client, agent, db, receivers) -> None:
    """A URL that got past the check when saved (here: written straight into the table, as
    a name re-pointed by DNS would be) is still refused when the dispatcher connects."""
    receiver = receivers()
    target = agent()
    for host in ("127.0.0.1", "localhost"):
        url = f"http://{host}:{receiver.port}/hook"
        db.execute(
            "UPDATE agents SET webhook_url = %s, webhook_secret = %s WHERE id = %s",
            (url, "whsec_" + "A" * 43 + "=", target["id"]),
        )
        sent = client.post("/messages", json={"content": "x", "recipient_ids": [target["id"]]})
        assert sent.status_code == 201, sent.text

        def refused(message_id: str = sent.json()["id"]) -> list[dict[str, Any]]:
            found = client.get(f"/agents/{target['id']}/deliveries").json()
            return [d for d in found if d["message_id"] == message_id and d["last_error"]]

        (delivery,) = wait_until(refused)
        assert delivery["last_error"].startswith("Refused: ")
        assert "is a loopback address" in delivery["last_error"]
    assert receiver.received() == []
    db.execute("UPDATE webhook_deliveries SET status = 'dead' WHERE agent_id = %s", (target["id"],))


def test_a_delivery_is_written_with_its_message_or_not_at_all(client, agent, db) -> None:
    hooked, plain = agent(), agent()
    db.execute(
        "UPDATE agents SET webhook_url = 'https://example.com/', webhook_secret = 'whsec_x',"
        " webhook_disabled_at = now() WHERE id = %s",
        (hooked["id"],),
    )
    # Disabled: no delivery. The rows are made but never sent from this test's app.
    sent = client.post(
        "/messages", json={"content": "x", "recipient_ids": [hooked["id"], plain["id"]]}
    )
    assert sent.status_code == 201
    count = "SELECT count(*) AS n FROM webhook_deliveries WHERE agent_id = ANY(%s::uuid[])"
    assert db.execute(count, ([hooked["id"], plain["id"]],)).fetchone()["n"] == 0
    # A failed send (an unknown recipient) leaves no delivery behind.
    db.execute("UPDATE agents SET webhook_disabled_at = NULL WHERE id = %s", (hooked["id"],))
    unknown = "00000000-0000-4000-8000-000000000000"
    failed = client.post(
        "/messages", json={"content": "x", "recipient_ids": [hooked["id"], unknown]}
    )
    assert failed.status_code == 409, failed.text
    assert db.execute(count, ([hooked["id"]],)).fetchone()["n"] == 0
    # Stop before the in-process dispatcher would try example.com.
    db.execute("UPDATE agents SET webhook_url = NULL WHERE id = %s", (hooked["id"],))


def test_webhook_urls_are_not_shown_to_others(client, agent, db) -> None:
    hooked = agent()
    db.execute(
        "UPDATE agents SET webhook_url = 'https://example.com/private' WHERE id = %s",
        (hooked["id"],),
    )
    conversation = client.post("/conversations", json={}).json()
    client.post(
        "/messages",
        json={"content": "x", "sender_id": hooked["id"], "conversation_id": conversation["id"]},
    )
    details = client.get(f"/conversations/{conversation['id']}/details").json()
    assert "example.com/private" not in json.dumps(details)
    (listed,) = details["unique_agents"]
    assert "webhook_url" not in listed
    assert (
        client.get(f"/agents/{hooked['id']}").json()["webhook_url"] == "https://example.com/private"
    )


def test_a_recipient_added_later_is_delivered_too(http, receivers) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    sent = http.post("/messages", json={"content": "added later"}).json()
    added = http.post(
        "/message_recipients", json={"message_id": sent["id"], "recipient_id": agent["id"]}
    )
    assert added.status_code == 201, added.text
    (got,) = receiver.wait_for(1)
    assert got["valid"] is True and got["body"]["data"]["id"] == sent["id"]


def test_delivered_rows_are_purged_after_the_retention_period(
    webhook_database, http, receivers, tmp_path
) -> None:
    receiver = receivers()
    agent = register(http, receiver)
    old, recent, dead = (send(http, agent, f"retention {n}") for n in range(3))
    done = {d["message_id"]: d["id"] for d in all_delivered(http, agent, 3)}
    with psycopg.connect(webhook_database, autocommit=True) as db:
        db.execute(
            "UPDATE webhook_deliveries SET delivered_at = now() - interval '2 hours' WHERE id = %s",
            (done[old["id"]],),
        )
        db.execute(
            "UPDATE webhook_deliveries SET status = 'dead', created_at = now() - interval"
            " '2 hours' WHERE id = %s",
            (done[dead["id"]],),
        )
    # A replica purges at start-up and every hour after.
    purging = Server(
        webhook_database, tmp_path / "purging", **WEBHOOK_ENV, MAILROOM_WEBHOOK_RETENTION="3600"
    )
    try:
        purging.wait_healthy()
        wait_until(lambda: len(deliveries(http, agent)) == 2)
    finally:
        purging.stop()
    left = {d["message_id"]: d["status"] for d in deliveries(http, agent)}
    assert left == {recent["id"]: "delivered", dead["id"]: "dead"}


def test_allowing_private_addresses_is_warned_about_at_start_up(replica) -> None:
    assert "MAILROOM_WEBHOOK_ALLOW_PRIVATE=on" in replica.output()


def test_a_url_that_cannot_be_sent_to_fails_the_attempt(client, agent, db) -> None:
    """A stored URL that the HTTP client refuses (here written straight into the table)
    fails its attempts like an unreachable one; the delivery is never stuck in flight."""
    target = agent()
    db.execute(
        "UPDATE agents SET webhook_url = 'http://[zz]/', webhook_secret = %s WHERE id = %s",
        ("whsec_" + "A" * 43 + "=", target["id"]),
    )
    sent = client.post("/messages", json={"content": "x", "recipient_ids": [target["id"]]})
    assert sent.status_code == 201, sent.text

    def failed() -> list[dict[str, Any]]:
        found = client.get(f"/agents/{target['id']}/deliveries").json()
        return [d for d in found if d["last_error"]]

    (delivery,) = wait_until(failed)
    assert delivery["last_error"].startswith("Could not send the request"), delivery
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    db.execute("UPDATE agents SET webhook_url = NULL WHERE id = %s", (target["id"],))
    db.execute("UPDATE webhook_deliveries SET status = 'dead' WHERE agent_id = %s", (target["id"],))


def test_retiring_an_agent_ends_its_pending_deliveries(http, receivers, webhook_database) -> None:
    receiver = receivers(start=False)
    agent = register(http, receiver)
    send(http, agent, "never delivered")
    wait_until(lambda: deliveries(http, agent)[0]["attempts"] >= 1)
    retired = http.delete(f"/agents/{agent['id']}")
    assert retired.status_code == 204, retired.text
    with psycopg.connect(webhook_database, autocommit=True) as db:
        rows = db.execute(
            "SELECT status, last_error FROM webhook_deliveries WHERE agent_id = %s",
            (agent["id"],),
        ).fetchall()
    assert rows == [("dead", "The agent was retired")]
    receiver.start()
    time.sleep(1.5)  # past the next retry the schedule would have made
    assert receiver.received() == []
