"""Database outages: a throwaway PostgreSQL cluster is stopped and started under a running service.

The cluster is the embedded server's binaries (pgserver) in a temporary
directory, never the machine's shared PostgreSQL. While it is down, requests
fail fast with 503 and Retry-After, /health/ready is 503 and /health/live 200;
once it is back the service serves again within 5 s, without a restart, and a
stream held across the outage goes on with no gap and no duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Stream
from tests.servers import Cluster, Server

RECOVERY_SECONDS = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of this module's own, stopped afterwards (pgserver loses track of it
    once it has been restarted behind its back)."""
    cluster = Cluster(tmp_path_factory.mktemp("outage") / "pgdata")
    yield cluster
    cluster.close()


@pytest.fixture
def service(cluster: Cluster, tmp_path: Path) -> Iterator[Server]:
    server = Server(cluster.url, tmp_path, MAILROOM_STREAM_HEARTBEAT="0.5")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.kill()


def post_message(http: httpx.Client, recipient: str, content: str) -> httpx.Response:
    return http.post("/messages", json={"content": content, "recipient_ids": [recipient]})


def test_outage_fails_fast_with_503_and_recovers_without_restart(
    cluster: Cluster, service: Server
) -> None:
    http = httpx.Client(base_url=service.base_url, timeout=30)
    agent: dict[str, Any] = http.post("/agents", json={"agent_name": "outage"}).json()
    stream = Stream(service.base_url, agent["id"])
    try:
        before = post_message(http, agent["id"], "before")
        assert before.status_code == 201
        assert stream.messages(1)[0].json()["id"] == before.json()["id"]

        cluster.stop()
        time.sleep(0.5)  # the listener notices at once; give the first failures a moment
        for _ in range(5):
            started = time.monotonic()
            refused = post_message(http, agent["id"], "refused")
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"].isdigit()
            assert refused.json() == {"detail": "Database unavailable, try again shortly"}
            assert time.monotonic() - started < 1.0, "a request waited while the database is down"
        ready = http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unhealthy"
        assert http.get("/health/live").status_code == 200

        cluster.start()
        back = time.monotonic()
        while True:
            after = post_message(http, agent["id"], "after")
            if after.status_code == 201:
                break
            assert after.status_code == 503, after.text
            assert time.monotonic() - back < RECOVERY_SECONDS, "no recovery within 5 s"
            time.sleep(0.05)
        recovery = time.monotonic() - back
        assert http.get("/health/ready").status_code == 200
        # The stream held across the outage goes on: the new message, once.
        assert stream.messages(1)[0].json()["id"] == after.json()["id"]
    finally:
        stream.close()
        http.close()
    print(f"recovered {recovery:.2f} s after the database was back")


def test_a_stream_resumed_after_a_restart_replays_what_it_missed(
    cluster: Cluster, service: Server
) -> None:
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        agent = http.post("/agents", json={"agent_name": "resume"}).json()["id"]
        stream = Stream(service.base_url, agent)
        try:
            first = post_message(http, agent, "first").json()
            last_seen = stream.messages(1)[0]
        finally:
            stream.close()
        cluster.restart()
        deadline = time.monotonic() + RECOVERY_SECONDS
        missed = []
        while len(missed) < 3:
            response = post_message(http, agent, f"missed {len(missed)}")
            if response.status_code == 201:
                missed.append(response.json())
            else:
                assert response.status_code == 503, response.text
                assert time.monotonic() < deadline
                time.sleep(0.05)
    resumed = Stream(service.base_url, agent, **{"Last-Event-ID": last_seen.id})
    try:
        replayed = resumed.messages(3)
    finally:
        resumed.close()
    assert last_seen.json()["id"] == first["id"]
    assert [e.json()["id"] for e in replayed] == [m["id"] for m in missed]
