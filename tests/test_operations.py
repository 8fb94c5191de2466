"""Operating the service: /metrics, request ids and the request log, as operators see them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import handlers.echo
import handlers.health
import service
from operations import forwarded, logs
from operations.forwarded import TrustedProxies
from operations.middleware import RequestLayer
from service import Settings, create_app
from settings import load_settings
from tests.servers import Server

HEX_ID = re.compile(r"[0-9a-f]{32}")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    """Every sample of GET /metrics, parsed by prometheus-client's own parser."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# /metrics ------------------------------------------------------------------------


def test_metrics_parse_and_request_counters_move_by_route_template(client, agent):
    agent_id = agent()["id"]
    labels = {"method": "GET", "route": "/agents/{agent_id}", "status": "2xx"}
    before = scrape(client)

    for _ in range(3):
        assert client.get(f"/agents/{agent_id}").status_code == 200
    assert client.get(f"/agents/{uuid.uuid4()}").status_code == 404

    after = scrape(client)
    assert value(after, "mailroom_http_requests_total", **labels) == (
        value(before, "mailroom_http_requests_total", **labels) + 3
    )
    missing = {**labels, "status": "4xx"}
    assert value(after, "mailroom_http_requests_total", **missing) == (
        value(before, "mailroom_http_requests_total", **missing) + 1
    )
    count = "mailroom_http_request_duration_seconds_count"
    assert value(after, count, **labels) == value(before, count, **labels) + 3
    assert value(after, "mailroom_http_request_duration_seconds_bucket", **labels, le="+Inf") == (
        value(after, count, **labels)
    )
    # The label is the template: no id ever becomes a label value.
    routes = {dict(labels)["route"] for (_, labels) in after if "route" in dict(labels)}
    assert "/agents/{agent_id}" in routes
    assert not any(agent_id in route for route in routes), routes


def test_unmatched_paths_share_one_label(client):
    before = scrape(client)
    for _ in range(2):
        assert client.get(f"/no/such/{uuid.uuid4()}").status_code == 404
    after = scrape(client)
    labels = {"method": "GET", "route": "unmatched", "status": "4xx"}
    assert value(after, "mailroom_http_requests_total", **labels) == (
        value(before, "mailroom_http_requests_total", **labels) + 2
    )
    assert not any("/no/such" in str(key) for key in after)


def test_message_counters_move_when_messages_are_sent_and_read(client, agent):
    sender, first, second = agent()["id"], agent()["id"], agent()["id"]
    before = scrape(client)
    body = {"sender_id": sender, "content": "counted", "recipient_ids": [first, second]}
    key = {"Idempotency-Key": f"ops-{secrets.token_hex(4)}"}
    assert client.post("/messages", json=body, headers=key).status_code == 201
    replay = client.post("/messages", json=body, headers=key)  # stores nothing more
    assert replay.headers.get("idempotent-replayed") == "true"
    message = client.post("/messages", json={"sender_id": sender, "content": "alone"}).json()
    added = {"message_id": message["id"], "recipient_id": first}
    assert client.post("/message_recipients", json=added).status_code == 201
    marked = client.put(
        f"/agents/{first}/messages/mark-read", json={"read_up_to_date": "2100-01-01T00:00:00Z"}
    )
    assert marked.json()["updated_count"] == 2

    after = scrape(client)
    assert value(after, "mailroom_messages_sent_total") == (
        value(before, "mailroom_messages_sent_total") + 2
    )
    assert value(after, "mailroom_message_recipients_total") == (
        value(before, "mailroom_message_recipients_total") + 3
    )
    assert value(after, "mailroom_messages_marked_read_total") == (
        value(before, "mailroom_messages_marked_read_total") + 2
    )


def test_echo_runs_and_failures_are_counted(client, monkeypatch):
    before = scrape(client)
    assert client.post("/cli/echo", json={"message": "counted"}).json()["success"] is True
    monkeypatch.setattr(handlers.echo, "ECHO", "/bin/false")
    assert client.post("/cli/echo", json={"message": "fails"}).json()["success"] is False
    after = scrape(client)
    assert value(after, "mailroom_echo_runs_total") == value(before, "mailroom_echo_runs_total") + 2
    assert value(after, "mailroom_echo_failures_total") == (
        value(before, "mailroom_echo_failures_total") + 1
    )


def test_pool_figures_come_from_the_pool(client, settings):
    samples = scrape(client)
    assert value(samples, "mailroom_db_pool_max") == settings.pool_max_size
    size = value(samples, "mailroom_db_pool_size")
    assert settings.pool_min_size <= size <= settings.pool_max_size
    assert 0 <= value(samples, "mailroom_db_pool_idle") <= size
    assert value(samples, "mailroom_db_pool_waiting") == 0
    requested = value(samples, "mailroom_db_pool_requests_total")
    client.get("/users/1")
    assert value(scrape(client), "mailroom_db_pool_requests_total") > requested
    assert ("mailroom_db_pool_timeouts_total", ()) in samples


def test_metrics_is_not_part_of_the_api_document(client):
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def gated(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    """The app with METRICS_TOKEN set."""
    token = "mt_" + secrets.token_urlsafe(32)
    gated_settings = msgspec.structs.replace(settings, metrics_token=token)
    with TestClient(create_app(gated_settings)) as gated_client:
        yield gated_client, token


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic bWV0cmljczp0b2tlbg==", "Bearer", "Bearer {token}x"],
)
def test_metrics_token_gates_metrics(gated, authorization):
    gated_client, token = gated
    headers = {} if authorization is None else {"Authorization": authorization.format(token=token)}
    response = gated_client.get("/metrics", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "metrics token" in response.json()["detail"]
    assert "mailroom_http_requests_total" not in response.text


def test_metrics_token_opens_metrics(gated):
    gated_client, token = gated
    samples = scrape(gated_client, Authorization=f"Bearer {token}")
    assert ("mailroom_db_pool_max", ()) in samples
    assert scrape(gated_client, Authorization=f"bearer {token}")  # the scheme is case-blind
    # Only /metrics is gated: the API is not (authentication is its own feature).
    assert gated_client.get("/health").status_code == 200


def test_metrics_token_is_read_from_a_file(tmp_path):
    path = tmp_path / "token"
    from_file, direct = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    path.write_text(f"{from_file}\n")
    assert load_settings({"METRICS_TOKEN_FILE": str(path)}).metrics_token == from_file
    both = {"METRICS_TOKEN_FILE": str(path), "METRICS_TOKEN": direct}
    assert load_settings(both).metrics_token == direct
    assert load_settings({"METRICS_TOKEN": ""}).metrics_token is None


# Request ids -----------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc", "trace-1.2_3", "A" * 128, str(uuid.uuid4())])
def test_a_well_formed_request_id_round_trips(client, request_id):
    response = client.get("/health", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize("request_id", ["", "has space", "A" * 129, "semi;colon", "é", "a/b"])
def test_a_malformed_request_id_is_replaced(client, request_id):
    response = client.get("/health", headers={"X-Request-ID": request_id.encode()})
    assert HEX_ID.fullmatch(response.headers["x-request-id"]), response.headers


def test_every_response_carries_a_request_id(client):
    responses = [
        client.get("/health"),
        client.get(f"/agents/{uuid.uuid4()}"),  # 404 from a handler
        client.get("/nowhere"),  # 404 from the router
        client.delete("/agents"),  # 405
        client.post("/agents", json={"port": "x"}),  # 422
        client.get("/static/nothing.js"),
    ]
    ids = [response.headers.get("x-request-id") for response in responses]
    assert all(ids) and all(HEX_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_500_names_its_request_id_in_the_body_the_header_and_the_log(
    client, monkeypatch, caplog, capsys
):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(handlers.health, "json_response", broken)
    plain = TestClient(client.app, raise_server_exceptions=False)
    plain.app_state.update(client.app_state)
    with caplog.at_level(logging.INFO):
        response = plain.get("/", headers={"X-Request-ID": "bug-report-7"})
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["bug-report-7"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "bug-report-7" in response.json()["detail"]
    assert "bug" not in response.json()["detail"].replace("bug-report-7", "")
    errors = [r for r in caplog.records if r.name == "mailroom.errors"]
    assert [getattr(r, "request_id", None) for r in errors] == ["bug-report-7"]
    logs.REQUEST_LINES.flush()  # the request line goes around logging, to stdout
    out = capsys.readouterr().out  # the test app logs text (LOG_FORMAT's default)
    (line,) = [text for text in out.splitlines() if text.endswith("request_id=bug-report-7")]
    assert " INFO mailroom.access: GET / 500 " in line


def test_a_failing_error_handler_is_answered_as_a_500_with_its_request_id(
    client, monkeypatch, caplog
):
    """A handler of the exception map that itself fails falls back to the 500 of a bug,
    never to the server's plain-text answer."""

    async def failing_handler(request: Any, exc: Exception) -> Any:
        raise RuntimeError("the 404 handler broke")

    monkeypatch.setitem(service.EXCEPTION_HANDLERS, service.HTTPError, failing_handler)
    plain = TestClient(client.app, raise_server_exceptions=False)
    plain.app_state.update(client.app_state)
    with caplog.at_level(logging.INFO):
        response = plain.get(
            f"/agents/{uuid.uuid4()}", headers={**client.headers, "X-Request-ID": "handler-9"}
        )
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["handler-9"]
    assert response.json() == {"detail": "Internal server error (request id handler-9)"}
    errors = [r for r in caplog.records if r.name == "mailroom.errors"]
    assert [getattr(r, "request_id", None) for r in errors] == ["handler-9"]


def test_an_error_after_a_response_began_is_logged_with_its_request_id(client, caplog):
    """A stream that fails half-way cannot be answered again: the connection ends and
    the error is logged with the request's id for the operator."""

    async def half_a_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise RuntimeError("the stream broke")

    layer = RequestLayer(half_a_stream, service.EXCEPTION_HANDLERS, TrustedProxies(()))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/agents/x/messages/stream",
        "headers": [(b"x-request-id", b"stream-3")],
        "client": ("192.0.2.1", 5000),
    }
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="the stream broke"):
        asyncio.run(layer(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (record,) = [r for r in caplog.records if r.name == "mailroom.errors"]
    assert record.request_id == "stream-3" and record.exc_info is not None


def test_the_remembered_proxy_verdicts_are_bounded_and_stay_right():
    proxies = TrustedProxies(("10.0.0.0/8",))
    for n in range(forwarded.KNOWN_PEERS * 2 + 10):
        assert proxies.trusts((f"192.0.{n // 256 % 256}.{n % 256}", 1)) is False
        assert len(proxies._peers) <= forwarded.KNOWN_PEERS
    assert proxies.trusts(("10.9.8.7", 1)) is True
    assert proxies.trusts(("10.9.8.7", 2)) is True  # remembered
    assert proxies.trusts(("192.0.2.1", 1)) is False


# The request log ---------------------------------------------------------------


def test_json_log_has_one_line_per_request_and_no_key_or_content(database_url, tmp_path):
    secret = "mr_secret_" + secrets.token_hex(12)
    content = "CONTENT-" + secrets.token_hex(12)
    metrics_token = "mt_" + secrets.token_hex(16)
    server = Server(database_url, tmp_path, LOG_FORMAT="json", METRICS_TOKEN=metrics_token)
    try:
        server.wait_healthy()
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.base_url, timeout=10, headers=auth) as http:
            sender = http.post("/agents", json={"agent_name": f"log-{content[-6:]}"}).json()
            sent = http.post(
                "/messages",
                json={
                    "sender_id": sender["id"],
                    "content": content,
                    "recipient_ids": [sender["id"]],
                },
                headers={"X-Request-ID": "send-1"},
            )
            assert sent.status_code == 201, sent.text
            fetched = http.get(f"/agents/{sender['id']}", headers={"X-Request-ID": "get-1"})
            unread = http.get(f"/agents/{sender['id']}/messages/unread")
            assert content in unread.text
            assert http.get("/metrics").status_code == 401  # the API key is not the metrics token
            echoed = http.post("/cli/echo", json={"message": content})
            assert echoed.json()["output"] == content
        server.terminate()
    finally:
        server.kill()

    stdout = server.stdout_path.read_text()
    output = server.output()
    assert secret not in output and content not in output and metrics_token not in output
    records = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    access = [record for record in records if record["logger"] == "mailroom.access"]
    answered = [sent, fetched, unread, echoed]
    for response in answered:
        (line,) = [r for r in access if r["request_id"] == response.headers["x-request-id"]]
    (line,) = [r for r in access if r["request_id"] == "get-1"]
    assert line["method"] == "GET" and line["route"] == "/agents/{agent_id}"
    assert line["status"] == 200 and line["level"] == "INFO"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["principal"] is None  # no authentication yet
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    (send_line,) = [r for r in access if r["request_id"] == "send-1"]
    assert (send_line["method"], send_line["route"], send_line["status"]) == (
        "POST",
        "/messages",
        201,
    )
    # One line per request: the health checks, the six requests above, nothing from uvicorn.
    assert len(access) == len({r["request_id"] for r in access})
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    events = [r.get("event") for r in records]
    assert "startup" in events and "shutdown" in events


def test_request_lines_are_json_objects_for_every_principal() -> None:
    """The request line is assembled as text, not encoded (operations/logs.py): for each
    principal it can name (none, the admin, an agent) and a client's well-formed id, it
    parses as one JSON object with the values it was given; the text form says the same."""
    agent_id = str(uuid.uuid4())
    lines = logs.RequestLines()

    async def write() -> list[str]:
        for principal in (None, "admin", agent_id):
            lines.add("client.id-7_A", ("PUT", "/agents/{agent_id}", 404), 0.0123456, principal)
        lines.json = False
        lines.add("client.id-7_A", ("PUT", "/agents/{agent_id}", 404), 0.0123456, None)
        written, lines.pending = lines.pending, []
        return written

    *json_lines, text_line = asyncio.run(write())
    parsed = [json.loads(line) for line in json_lines]
    assert [line["principal"] for line in parsed] == [None, "admin", agent_id]
    for line in parsed:
        assert line["request_id"] == "client.id-7_A" and line["duration_ms"] == 12.35
        assert (line["method"], line["route"], line["status"]) == ("PUT", "/agents/{agent_id}", 404)
        assert line["message"] == "PUT /agents/{agent_id} 404 12.35 ms"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert text_line.endswith(
        " INFO mailroom.access: PUT /agents/{agent_id} 404 12.35 ms request_id=client.id-7_A\n"
    )


def test_text_log_is_the_default_for_local_runs(database_url, tmp_path):
    server = Server(database_url, tmp_path)
    try:
        server.wait_healthy()
        httpx.get(server.base_url + "/users/1", headers={"X-Request-ID": "text-1"}, timeout=10)
        # The line is written after the response, at the end of the event loop's turn:
        # wait for it before the process is killed (a busy machine can take a moment).
        deadline = time.monotonic() + 10
        while "text-1" not in server.stdout_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.kill()
    lines = [line for line in server.stdout_path.read_text().splitlines() if "text-1" in line]
    assert len(lines) == 1, server.output()
    assert " INFO mailroom.access: GET /users/{user_id} 200 " in lines[0]
    assert lines[0].endswith(" request_id=text-1")


def test_log_format_factory_follows_log_format(monkeypatch):
    from operations import logs

    monkeypatch.setenv("LOG_FORMAT", "json")
    assert isinstance(logs.formatter(), logs.JsonFormatter)
    monkeypatch.setenv("LOG_FORMAT", "text")
    assert isinstance(logs.formatter(), logs.TextFormatter)
    # uvicorn loads this file before the app; it must name that factory.
    config = json.loads((Path(service.HERE) / "operations" / "logging.json").read_text())
    assert config["formatters"]["mailroom"]["()"] == "operations.logs.formatter"
