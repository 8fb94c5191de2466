"""The real server process: start-up, serving over a socket, graceful stop, start-up failures."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, STOP_SECONDS, Server, clean_env, free_port, run_to_exit


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(database_url, tmp_path)
    try:
        yield running
    finally:
        running.kill()


def test_server_serves_over_a_socket_and_stops_on_sigterm(server: Server) -> None:
    server.wait_healthy()
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/health/live").json() == {"status": "alive"}
        created = http.post("/agents", json={"agent_name": "socket-agent", "port": 8080})
        assert created.status_code == 201, created.text
        agent = created.json()
        assert agent["agent_name"] == "socket-agent"
        assert agent["port"] == 8080
        fetched = http.get(f"/agents/{agent['id']}")
        assert fetched.status_code == 200, fetched.text
        assert fetched.json() == agent
        user = http.get("/users/1")
        assert user.status_code == 200, user.text
        assert user.json()["name"] == "John Doe"

    status = server.terminate()
    # uvicorn (>= 0.29) shuts down gracefully, then re-raises the SIGTERM it caught so
    # that its parent sees "terminated by SIGTERM" (shell status 143); the Containerfile's
    # `tini -e 143` maps that to 0. Either status is a clean stop; anything else is not.
    assert status in (0, -signal.SIGTERM), f"exit status {status}: {server.stderr()}"
    log = server.output()
    assert "Application shutdown complete" in log, log
    assert "mailroom stopped" in log, log  # the lifespan closed the pool
    assert "Traceback" not in log, log


def read_response(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    response = b""
    while chunk := connection.recv(65536):
        response += chunk
    return response


def test_sigterm_answers_a_request_sent_just_after_on_a_connection_made_before(
    database_url: str, tmp_path: Path
) -> None:
    """A client that connected a moment before SIGTERM, its request not yet sent, gets
    an answer (and Connection: close); an idle keep-alive connection is closed; one
    that never sends is closed after the grace, and the server exits."""
    server = Server(database_url, tmp_path, "--http", "service:HttpProtocol")
    try:
        server.wait_healthy()
        port = server.port
        fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: mailroom\r\n\r\n")
        served = b""
        while not served.endswith(b'{"status":"alive"}'):  # the whole first answer
            served += kept.recv(65536)
        assert served.startswith(b"HTTP/1.1 200 "), served
        time.sleep(0.5)  # all three accepted by the server
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is shutting down: no new connections
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        body = b'{"agent_name": "sent after SIGTERM"}'
        fresh.sendall(
            b"POST /agents HTTP/1.1\r\nHost: mailroom\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = read_response(fresh)
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201 "), answer
        assert b"connection: close" in head.lower(), answer
        assert b"sent after SIGTERM" in payload, answer
        assert read_response(kept) == b"", "the idle keep-alive connection was closed"
        started = time.monotonic()
        assert read_response(silent) == b""
        assert time.monotonic() - started < 5, "the silent connection outlived the grace"
        status = server.process.wait(timeout=STOP_SECONDS)
        assert status in (0, -signal.SIGTERM), server.output()
        assert "Traceback" not in server.output()
    finally:
        for connection in (fresh, silent, kept):
            connection.close()
        server.kill()


def test_unreachable_database_fails_start_up(tmp_path: Path) -> None:
    env = clean_env(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/x", MAILROOM_STARTUP_TIMEOUT="2"
    )
    argv = [sys.executable, "-m", "uvicorn", "service:app", "--port", str(free_port())]
    started = time.monotonic()
    result = run_to_exit(argv, env)
    output = result.stdout + result.stderr  # the log is on stdout
    assert result.returncode != 0, output
    assert "cannot reach the database" in output, output
    assert "127.0.0.1" in output, output
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "none"),
        ("WEB_CONCURRENCY", "0"),
        ("LOG_LEVEL", "chatty"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_TOKEN_FILE", "/nonexistent/metrics-token"),
        ("MAILROOM_POOL_TIMEOUT", "soon"),
        ("MAILROOM_POOL_MAX_SIZE", "0"),
        ("MAILROOM_STARTUP_TIMEOUT", "-1"),
        ("MAILROOM_ECHO_TIMEOUT", "0"),
        ("MAILROOM_MAX_BODY_BYTES", "big"),
        ("DATABASE_URL", "mysql://user@localhost/db"),
    ],
)
def test_invalid_setting_stops_start_up_naming_the_variable(
    database_url: str, variable: str, value: str
) -> None:
    env = clean_env(DATABASE_URL=database_url)
    env[variable] = value
    result = run_to_exit([sys.executable, "service.py"], env)
    assert result.returncode != 0
    assert f"invalid {variable}=" in result.stderr, result.stderr
    assert value in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_invalid_setting_stops_uvicorn_too(database_url: str) -> None:
    env = clean_env(DATABASE_URL=database_url, PORT="abc")
    argv = [sys.executable, "-m", "uvicorn", "service:app", "--port", str(free_port())]
    result = run_to_exit(argv, env)
    assert result.returncode != 0
    assert "invalid PORT='abc'" in result.stderr, result.stderr


def test_service_py_owns_its_embedded_server_and_stops_it(tmp_path: Path) -> None:
    """`uv run service.py` without DATABASE_URL, two workers, auth on: the token is
    made and printed once, the API answers it (without a Server header, as the image
    does), and SIGTERM stops PostgreSQL too."""
    data_dir = tmp_path / "pgdata"
    port = free_port()
    env = clean_env(MAILROOM_DATA_DIR=str(data_dir), PORT=str(port), WEB_CONCURRENCY="2")
    env.pop("MAILROOM_AUTH")  # the default: required
    env.pop("DATABASE_URL", None)
    out = (tmp_path / "out.txt").open("wb")
    process = subprocess.Popen(
        [sys.executable, "service.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60  # initdb on a new data directory
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        token = (data_dir / "mailroom-admin-token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        answer = httpx.get(base + "/users/1", headers=admin, timeout=5)
        assert answer.status_code == 200
        assert "server" not in answer.headers, "no server header, as in the image"
        assert httpx.get(base + "/users/1", timeout=5).status_code == 401
        assert (data_dir / "postmaster.pid").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_SECONDS + 10) == 0
    finally:
        if process.poll() is None:  # a failed check above: stop it as a user would, so
            process.terminate()  # that it stops its PostgreSQL too, which a kill would orphan
            try:
                process.wait(timeout=STOP_SECONDS + 10)
            except subprocess.TimeoutExpired:
                process.kill()
        out.close()
    output = (tmp_path / "out.txt").read_text()
    assert output.count(token) == 1, "the token is printed once"
    assert not (data_dir / "postmaster.pid").exists(), "PostgreSQL stopped with the service"
    assert "Traceback" not in output, output
