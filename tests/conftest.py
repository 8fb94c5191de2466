"""Test fixtures: a fresh PostgreSQL database per run, the app, and helpers.

With DATABASE_URL set, each run creates its own database on that server and
drops it afterwards; without it, the embedded PostgreSQL (pgserver) in
.mailroom/test-pgdata serves the same purpose. A database that cannot be
reached fails the run; nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from embedded import start_embedded
from queries.database import normalise_url
from service import create_app
from settings import Settings
from tests.helpers import SMALL_PAGE_BYTES, Db, temporary_database
from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a database created for this test run, dropped at its end."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        server_url = normalise_url(configured)
    else:
        server_url = start_embedded(ROOT / ".mailroom" / "test-pgdata")
    with temporary_database(server_url, "mailroom_test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """The open mode (MAILROOM_AUTH=off) of API.md; tests/test_access.py runs with keys."""
    return Settings(database_url=database_url, echo_timeout=5.0, auth_required=False)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running, shared by the whole run."""
    with TestClient(create_app(settings), raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def small_pages(settings: Settings) -> Iterator[TestClient]:
    """The app with a byte budget of SMALL_PAGE_BYTES: a page stops after two 8,000-byte items."""
    small = msgspec.structs.replace(settings, max_response_bytes=SMALL_PAGE_BYTES)
    with TestClient(create_app(small)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two service processes (replicas) on the run's database, with a 0.5 s heartbeat."""
    running = []
    try:
        for name in ("a", "b"):
            logs = tmp_path_factory.mktemp(f"server-{name}")
            running.append(Server(database_url, logs, MAILROOM_STREAM_HEARTBEAT="0.5"))
        for server in running:
            server.wait_healthy()
        yield running
    finally:
        for server in running:
            server.kill()


@pytest.fixture
def db(database_url: str, client: TestClient) -> Iterator[Db]:
    """A direct connection, to check what the service stored."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def agent(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Create an agent through the API: `agent(agent_name="x")`."""

    def make(**fields: Any) -> dict[str, Any]:
        fields.setdefault("agent_name", f"agent-{secrets.token_hex(4)}")
        response = client.post("/agents", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    return make


@pytest.fixture
def message(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Send a message through the API: `message(sender_id=..., recipient_ids=[...])`."""

    def make(**fields: Any) -> dict[str, Any]:
        fields.setdefault("content", f"hello {secrets.token_hex(4)}")
        response = client.post("/messages", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    return make


@pytest.fixture
def conversation(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Start a conversation through the API."""

    def make(**fields: Any) -> dict[str, Any]:
        response = client.post("/conversations", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    return make
