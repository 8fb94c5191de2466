"""Bounds on one connection's request head and body, on a real server.

The server runs uvicorn with the shipped protocol (`--http service:HttpProtocol`,
given here as UVICORN_HTTP) and short time bounds. A head over
MAILROOM_MAX_HEADER_BYTES or MAILROOM_MAX_HEADERS is 431 at once while other
requests are served and the database stays up; a head or a body sent slowly is
cut off with 408 within its bound; a connection that sends nothing is closed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from service import load_settings
from tests.test_server import Server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLACK = 1.0  # seconds a cut-off may come after its bound on a busy machine
HEAD_LIMIT = 16384  # MAILROOM_MAX_HEADER_BYTES's default


@pytest.fixture(scope="module")
def bounded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        database_url,
        tmp_path_factory.mktemp("bounded"),
        UVICORN_HTTP="service:HttpProtocol",
        MAILROOM_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        MAILROOM_BODY_TIMEOUT=str(BODY_TIMEOUT),
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


class Raw:
    """A raw connection whose answer (or close) is read on a thread as soon as it comes."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.opened = time.monotonic()
        self.answer = b""
        self.after: float | None = None  # seconds from opening to the answer or the close
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        chunks = []
        try:
            while chunk := self.sock.recv(65536):
                if not chunks:
                    self.after = time.monotonic() - self.opened
                chunks.append(chunk)
        except OSError:
            pass
        if self.after is None:
            self.after = time.monotonic() - self.opened
        self.answer = b"".join(chunks)
        self.done.set()

    def send(self, data: bytes) -> bool:
        """False once the server has answered or closed."""
        if self.done.is_set():
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def wait(self, seconds: float) -> bytes:
        done = self.done.wait(seconds)
        self.sock.close()
        assert done, f"still open after {seconds} s"
        return self.answer

    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1])

    def body(self) -> bytes:
        return self.answer.partition(b"\r\n\r\n")[2]


class Probe:
    """GET `path` in a loop on a thread: the longest wait and every status seen."""

    def __init__(self, server: Server, path: str) -> None:
        self.client = httpx.Client(base_url=server.base_url, timeout=30)
        self.path = path
        self.longest = 0.0
        self.statuses: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.statuses.add(self.client.get(self.path).status_code)
            self.longest = max(self.longest, time.monotonic() - started)
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(31)
        self.client.close()


def test_a_huge_header_is_431_at_once_while_others_are_served(bounded: Server) -> None:
    live, ready = Probe(bounded, "/health/live"), Probe(bounded, "/health")
    try:
        time.sleep(0.3)
        raw = Raw(bounded)
        raw.send(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Big: ")
        chunk = b"a" * (1 << 20)
        sent = 0
        while sent < 64 and raw.send(chunk):  # up to 64 MB, until the server answers
            sent += 1
        answer = raw.wait(5)
        time.sleep(0.3)
    finally:
        live.finish()
        ready.finish()
    assert raw.status() == 431, answer[:200]
    assert b"MAILROOM_MAX_HEADER_BYTES" in raw.body()
    assert raw.after is not None and raw.after < 2, raw.after
    assert sent < 64, "the server read the whole 64 MB before refusing"
    assert live.statuses == {200} and live.longest < 1.0, (live.statuses, live.longest)
    # The listener never declared the database down.
    assert ready.statuses == {200}, ready.statuses
    assert "database unreachable" not in bounded.output()


def test_a_head_at_the_limit_is_served_and_one_byte_more_is_431(bounded: Server) -> None:
    with httpx.Client(base_url=bounded.base_url, timeout=10) as http:
        assert http.get("/health/live", headers={"X-Fill": "a" * 15000}).status_code == 200
    # The request line and headers byte for byte: the limit is on what the client sends.
    head = b"GET /health/live HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Fill: "
    end = b"\r\n\r\n"
    for size, status in ((HEAD_LIMIT, 200), (HEAD_LIMIT + 1, 431)):
        raw = Raw(bounded)
        raw.send(head + b"a" * (size - len(head) - len(end)) + end)
        raw.wait(5)
        assert raw.status() == status, (size, raw.answer[:200])


def test_a_pipelined_head_over_the_limit_is_431_after_the_first_is_served(
    bounded: Server,
) -> None:
    raw = Raw(bounded)
    first = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    second = b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Fill: " + b"a" * HEAD_LIMIT
    raw.send(first + second + b"\r\n\r\n")  # one write: most likely one read
    answer = raw.wait(5)
    statuses = [int(status) for status in re.findall(rb"HTTP/1.1 (\d{3}) ", answer)]
    assert statuses == [200, 431], answer[:400]


def test_too_many_header_fields_are_431(bounded: Server) -> None:
    with httpx.Client(base_url=bounded.base_url, timeout=10) as http:
        # httpx adds Host, Accept, Accept-Encoding, Connection and User-Agent.
        fields = {f"X-{n}": "1" for n in range(95)}
        assert http.get("/health/live", headers=fields).status_code == 200
        fields = {f"X-{n}": "1" for n in range(96)}
        refused = http.get("/health/live", headers=fields)
    assert refused.status_code == 431
    assert "MAILROOM_MAX_HEADERS" in refused.json()["detail"]


def test_a_slow_header_is_cut_off_within_the_bound(bounded: Server) -> None:
    raw = Raw(bounded)
    raw.send(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
    line = 0
    while raw.send(b"X-Slow-%d: 1\r\n" % line) and line < 100:
        line += 1
        time.sleep(0.2)
    raw.wait(HEADER_TIMEOUT + SLACK)
    assert raw.status() == 408
    assert b"MAILROOM_HEADER_TIMEOUT" in raw.body()
    assert raw.after is not None and HEADER_TIMEOUT - 0.1 < raw.after < HEADER_TIMEOUT + SLACK


def test_a_slow_body_is_cut_off_within_the_bound(bounded: Server) -> None:
    raw = Raw(bounded)
    raw.send(
        b"POST /agents HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n{"
    )
    sent = 0
    while raw.send(b" ") and sent < 199:
        sent += 1
        time.sleep(0.2)
    raw.wait(BODY_TIMEOUT + SLACK)
    assert raw.status() == 408
    assert b"MAILROOM_BODY_TIMEOUT" in raw.body()
    assert raw.after is not None and BODY_TIMEOUT - 0.1 < raw.after < BODY_TIMEOUT + SLACK
    time.sleep(0.3)  # the handler, waiting for the body, sees the connection gone
    assert "Traceback" not in bounded.output()


def test_a_connection_that_sends_nothing_is_closed(bounded: Server) -> None:
    raw = Raw(bounded)
    assert raw.wait(HEADER_TIMEOUT + SLACK) == b""
    assert raw.after is not None and raw.after > HEADER_TIMEOUT - 0.1


def test_requests_within_the_bounds_are_served_as_before(bounded: Server) -> None:
    with httpx.Client(base_url=bounded.base_url, timeout=10) as http:
        for n in range(3):  # one kept-alive connection, bodies and all
            created = http.post("/agents", json={"agent_name": f"bounded {n}"})
            assert created.status_code == 201, created.text
            assert http.get(f"/agents/{created.json()['id']}").status_code == 200
        # Idle for less than the keep-alive timeout, then a request on the same connection.
        time.sleep(HEADER_TIMEOUT + 0.2)
        assert http.get("/users/1").status_code == 200
    # A body sent in pieces, within its bound.
    raw = Raw(bounded)
    body = b'{"agent_name": "in pieces"}'
    raw.send(
        b"POST /agents HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    for piece in (body[:10], body[10:20], body[20:]):
        time.sleep(0.2)
        raw.send(piece)
    raw.wait(5)
    assert raw.status() == 201, raw.answer


def test_the_bounds_are_settings_checked_at_start_up() -> None:
    settings = load_settings({})
    assert (settings.max_header_bytes, settings.max_headers) == (16384, 100)
    assert (settings.header_timeout, settings.body_timeout) == (10.0, 30.0)
    for variable, value in (
        ("MAILROOM_MAX_HEADER_BYTES", "100"),
        ("MAILROOM_MAX_HEADERS", "0"),
        ("MAILROOM_HEADER_TIMEOUT", "0"),
        ("MAILROOM_BODY_TIMEOUT", "soon"),
    ):
        with pytest.raises(SystemExit, match=variable):
            load_settings({variable: value})
