"""A database error is not always an outage: a statement too expensive for one request is 422.

A statement that ran out of time (statement_timeout) or memory, or past one of
PostgreSQL's size limits, fails the same way when retried: it is answered 422
(type too_expensive) without Retry-After, logged with the request id, and the
service goes on serving. An unreachable database, a full disk or too many
connections stay 503 with Retry-After (tests/test_outage.py stops a real one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from service import create_app, load_settings
from tests.helpers import LogRecords

STATEMENT_TIMEOUT = 0.3  # seconds: MAILROOM_STATEMENT_TIMEOUT below

# On a marked agent name, an INSERT INTO agents fails with the SQLSTATE the name
# asks for: really (a string past 1 GB, recursion past the stack, a sort past
# temp_file_limit), or raised with that code where the real thing cannot be
# provoked safely on a shared machine (out of memory, a full disk).
FAILING_INSERTS = """
CREATE FUNCTION test_recurse(depth int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN test_recurse(depth + 1);
END $$;
CREATE FUNCTION test_fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CASE NEW.agent_name
    WHEN 'fail 54000' THEN
        PERFORM repeat('x', 1073741824);
    WHEN 'fail 54001' THEN
        PERFORM test_recurse(0);
    WHEN 'fail 53400' THEN
        PERFORM set_config('work_mem', '64kB', true);
        PERFORM set_config('temp_file_limit', '64kB', true);
        PERFORM count(*) FROM (SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC) s;
    ELSE
        RAISE EXCEPTION 'provoked by the test' USING ERRCODE = substr(NEW.agent_name, 6);
    END CASE;
    RETURN NEW;
END $$;
CREATE TRIGGER test_fail_insert BEFORE INSERT ON agents
    FOR EACH ROW WHEN (NEW.agent_name LIKE 'fail %') EXECUTE FUNCTION test_fail_insert();
"""
REMOVE_FAILING_INSERTS = """
DROP TRIGGER test_fail_insert ON agents;
DROP FUNCTION test_fail_insert();
DROP FUNCTION test_recurse(int);
"""


@pytest.fixture(scope="module")
def impatient(database_url: str) -> Iterator[TestClient]:
    """The app with MAILROOM_STATEMENT_TIMEOUT=0.3, as an operator would set it."""
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "MAILROOM_AUTH": "off",
            "MAILROOM_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def failing_inserts(database_url: str) -> Iterator[None]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(FAILING_INSERTS)
    try:
        yield
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(REMOVE_FAILING_INSERTS)


def too_expensive(response: Any, resource: str) -> None:
    """The 422 of a statement that needed more than one request may use."""
    assert response.status_code == 422, response.text
    assert "retry-after" not in response.headers
    (error,) = response.json()["detail"]
    assert error["type"] == "too_expensive"
    assert f"more database {resource}" in error["msg"]
    assert "ask for less" in error["msg"] and "rather than retrying" in error["msg"]


def test_a_statement_past_the_statement_timeout_is_422_and_the_service_goes_on(
    impatient: TestClient, database_url: str
) -> None:
    assert impatient.get("/users/1").status_code == 200
    with psycopg.connect(database_url) as holder, LogRecords("mailroom.errors") as log:
        # A real statement that cannot finish in time: the users table is locked.
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = impatient.get("/users/1")
        waited = time.monotonic() - started
        holder.rollback()
    too_expensive(response, "time")
    assert response.json()["detail"][0]["loc"] == ["query"]
    assert waited < STATEMENT_TIMEOUT + 2, waited
    (record,) = [r for r in log.records if "too expensive" in r.getMessage()]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "57014" in record.getMessage() and "statement timeout" in record.getMessage()
    # Not an outage: the next request is served, the readiness probe is green.
    assert impatient.get("/users/1").status_code == 200
    assert impatient.get("/health/ready").status_code == 200


@pytest.mark.parametrize(
    "sqlstate",
    [
        "54000",  # program_limit_exceeded, really: repeat() past 1 GB
        "54001",  # statement_too_complex, really: past the stack depth
        "53400",  # configuration_limit_exceeded, really: a sort past temp_file_limit
        "53200",  # out_of_memory, raised by the statement
    ],
)
def test_a_statement_out_of_memory_or_past_a_size_limit_is_422(
    client: TestClient, db: Any, failing_inserts: None, sqlstate: str
) -> None:
    name = f"fail {sqlstate}"
    with LogRecords("mailroom.errors") as log:
        response = client.post("/agents", json={"agent_name": name})
    too_expensive(response, "memory or space")
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert any(sqlstate in record.getMessage() for record in log.records)
    stored = db.execute("SELECT count(*) AS n FROM agents WHERE agent_name = %s", (name,))
    assert stored.fetchone()["n"] == 0
    assert client.post("/agents", json={"agent_name": "after"}).status_code == 201


@pytest.mark.parametrize("sqlstate", ["53100", "53300", "53000"])
def test_a_full_disk_or_too_many_connections_stays_503_with_retry_after(
    client: TestClient, failing_inserts: None, sqlstate: str
) -> None:
    response = client.post("/agents", json={"agent_name": f"fail {sqlstate}"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "Database unavailable, try again shortly"}


def test_the_document_says_what_a_too_expensive_422_means(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            responses = operation["responses"]
            if "503" not in responses or path.startswith("/health"):
                continue
            description = responses["422"]["description"]
            assert "too_expensive" in description and "instead of retrying" in description, (
                method,
                path,
            )
            assert "retry-after" not in {h.lower() for h in responses["422"].get("headers", {})}
