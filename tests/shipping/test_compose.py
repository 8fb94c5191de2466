"""compose.yml against the Compose specification, and compose/Caddyfile in front of the service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

import service
from settings import load_settings
from tests.servers import ROOT, free_port
from tests.shipping.containerfile import CMD, HEALTHCHECK, HEALTHCHECK_CMD, cmd_option
from tests.shipping.image_command import ADMIN_HEADERS, ImageServer
from tests.shipping.manifests import find
from tests.shipping.programs import end, run, system_tool, venv_tool, wait_for_port

COMPOSE = yaml.safe_load((ROOT / "compose.yml").read_text())
SERVICES = COMPOSE["services"]


def compose_schema() -> dict[str, Any]:
    import check_jsonschema.builtin_schemas.vendor as vendored

    return json.loads((Path(vendored.__file__).parent / "compose-spec.json").read_text())


def test_compose_file_validates_against_the_compose_specification():
    result = run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yml"],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema is strict: a misspelt key fails.
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["app"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_compose_database_is_official_postgres_with_volume_healthcheck_and_env_file():
    db = SERVICES["db"]
    assert db["image"].startswith("docker.io/library/postgres:")
    volume = db["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"], "a named volume"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["env_file"] == ".env" and "environment" not in db
    assert db["restart"] in ("unless-stopped", "always")


def test_compose_app_builds_the_containerfile_waits_for_the_database_and_sits_behind_proxy():
    app, proxy = SERVICES["app"], SERVICES["proxy"]
    assert app["build"] == {"context": ".", "dockerfile": "Containerfile"}
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["restart"] in ("unless-stopped", "always", "on-failure")
    assert app["healthcheck"]["test"] == ["CMD", *HEALTHCHECK_CMD], "the image's own check"
    for option in ("interval", "timeout", "retries"):
        expected = HEALTHCHECK.flags[option]
        assert str(app["healthcheck"][option]) == expected, option
    assert "ports" not in app, "replicas publish no host port: --scale app=3 must not collide"
    assert app["expose"] == [cmd_option(CMD, "--port")]
    graceful = int(cmd_option(CMD, "--timeout-graceful-shutdown"))
    assert int(app["stop_grace_period"].removesuffix("s")) > graceful
    assert proxy["ports"] == ["8000:8000"]
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    published = [s for s, spec in SERVICES.items() if "ports" in spec]
    assert published == ["proxy"], published
    mount = proxy["volumes"][0].split(":")
    assert (ROOT / mount[0]).is_file() and mount[1] == "/etc/caddy/Caddyfile"


def test_compose_writes_no_credential_inline():
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    text = (ROOT / "compose.yml").read_text()
    for name in re.findall(r"\$\{(\w+)", text):
        assert name in example, f"${{{name}}} is not in .env.example"
    assert example["POSTGRES_PASSWORD"] not in text
    for service_name, spec in SERVICES.items():
        for name, value in (spec.get("environment") or {}).items():
            if re.search(r"USER|PASS|SECRET|TOKEN|KEY", name):
                assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", str(value)), (service_name, name)
            if name == "DATABASE_URL":
                parts = urlsplit(re.sub(r"\$\{[^}]*\}", "x", value))
                assert parts.username is None and parts.password is None, value
    ignored = run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env (the real credentials) must be git-ignored"


def test_caddyfile_is_valid():
    caddy = system_tool("caddy", "caddy")
    result = run(
        [caddy, "validate", "--config", "compose/Caddyfile", "--adapter", "caddyfile"],
        cwd=ROOT,
        env=dict(os.environ, XDG_DATA_HOME=tempfile.gettempdir()),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_proxy_forwards_to_the_app(image: Path, serving: ImageServer, tmp_path: Path):
    """compose/Caddyfile in front of the image command, as compose.yml runs it."""
    caddy = system_tool("caddy", "caddy")
    port = free_port()
    env = dict(
        os.environ,
        PROXY_PORT=str(port),
        UPSTREAM_HOST="127.0.0.1",
        UPSTREAM_PORT=str(serving.port),
        XDG_DATA_HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
    )
    log = tmp_path / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [caddy, "run", "--config", str(ROOT / "compose/Caddyfile"), "--adapter", "caddyfile"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process)
        proxy = f"http://127.0.0.1:{port}"
        assert httpx.get(proxy + "/health", timeout=10).json() == {"status": "healthy"}
        agent = httpx.post(
            proxy + "/agents", json={"agent_name": "proxied"}, headers=ADMIN_HEADERS, timeout=10
        )
        assert agent.status_code == 201, agent.text
        for _ in range(2):
            httpx.post(
                proxy + "/messages",
                json={"sender_id": agent.json()["id"], "content": "x"},
                headers=ADMIN_HEADERS,
                timeout=10,
            ).raise_for_status()
        page = httpx.get(
            proxy + f"/agents/{agent.json()['id']}/messages?limit=1",
            headers=ADMIN_HEADERS,
            timeout=10,
        )
        # Links point at the proxy, the address the client used, not at a replica.
        assert page.headers["link"].startswith(f"<http://127.0.0.1:{port}/"), page.headers
    finally:
        end(process)


REQUEST_BOUNDS = (
    "MAILROOM_MAX_HEADER_BYTES",
    "MAILROOM_MAX_HEADERS",
    "MAILROOM_HEADER_TIMEOUT",
    "MAILROOM_BODY_TIMEOUT",
)


def test_request_bounds_are_carried_by_the_image_compose_the_manifests_and_caddy(base):
    """The protocol that applies them runs; compose and the ConfigMap set them (the
    service's defaults); the Caddyfile in front applies the same ones."""
    assert cmd_option(CMD, "--http") == service.HTTP_PROTOCOL
    defaults = load_settings({})
    compose = {k: str(v) for k, v in SERVICES["app"]["environment"].items() if k in REQUEST_BOUNDS}
    configmap = find(base, "ConfigMap")["data"]
    manifests = {k: v for k, v in configmap.items() if k in REQUEST_BOUNDS}
    for carried in (compose, manifests):
        assert set(carried) == set(REQUEST_BOUNDS), carried
        assert load_settings(carried) == defaults, carried
    caddyfile = (ROOT / "compose/Caddyfile").read_text()
    header_kib = re.search(r"max_header_size (\d+)KB", caddyfile)
    assert header_kib and int(header_kib[1]) * 1024 == defaults.max_header_bytes
    for option, seconds in (("read_header", defaults.header_timeout),
                            ("read_body", defaults.body_timeout)):  # fmt: skip
        assert re.search(rf"\b{option} {seconds:g}s\b", caddyfile), option
