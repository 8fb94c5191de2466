"""The edge: links behind a trusted proxy, Caddy that does not break streams, and the
Kubernetes ingress and gateway components.

- Behind a proxy: absolute URLs (the Link header, trailing-slash redirects) follow
  X-Forwarded-Proto/-Host only from a peer FORWARDED_ALLOW_IPS names, in the app and
  in a real `python service.py` process (whose uvicorn must not rewrite the peer).
- compose/Caddyfile with the real Caddy binary in front of a real service process: an
  event sent 70 s into an idle stream arrives within a second and a 60 s long-poll is
  answered (the one slow test, about 75 s, both halves in parallel threads); and
  compose/Caddyfile.tls serves HTTPS from Caddy's internal CA.
- manifests/components/ingress and manifests/components/gateway, rendered into an
  overlay as a platform engineer would (the one docs/deployment-edge.md shows),
  validated against the Kubernetes schemas and tests/shipping's Gateway API subset,
  and checked for what streaming needs.

Caddy is a Debian package: .ci/run installs it and sets MAILROOM_SHIP_STRICT=1, under
which its absence fails; elsewhere those tests are skipped with the install command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from starlette.testclient import TestClient

import service
from operations import forwarded
from settings import ENVIRONMENT, Settings, load_settings
from tests.servers import free_port
from tests.shipping.manifests import GATEWAY_SCHEMA, overlay, render
from tests.shipping.programs import end, system_tool
from validation.query_params import MAX_WAIT

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECTL = Path(sys.executable).parent / "kubectl"  # the `ship` dependency group's kubectl
STRICT = os.environ.get("MAILROOM_SHIP_STRICT") == "1"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
DOCS = ROOT / "docs" / "deployment-edge.md"
API_LABELS = {"app.kubernetes.io/name": "mailroom", "app.kubernetes.io/component": "api"}


def caddy_binary() -> str:
    return system_tool("caddy", "caddy")


def page_link(http: httpx.Client, **headers: str) -> str:
    """The Link header of a first page of one item, of a new agent with two messages
    (a TestClient is an httpx.Client too)."""
    agent = http.post("/agents", json={"agent_name": "linked"}).json()
    for n in range(2):
        sent = http.post(
            "/messages",
            json={"sender_id": agent["id"], "content": f"{n}", "recipient_ids": [agent["id"]]},
        )
        assert sent.status_code == 201, sent.text
    page = http.get(f"/agents/{agent['id']}/messages?limit=1", headers=headers)
    assert page.status_code == 200, page.text
    return page.headers["link"]


def client_of(base_url: str, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=10, **options)


# Behind a proxy ------------------------------------------------------------------

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mail.example.org"}


def app_client(database_url: str, trusted: tuple[str, ...], peer: str) -> TestClient:
    settings = Settings(database_url=database_url, auth_required=False, forwarded_allow_ips=trusted)
    return TestClient(service.create_app(settings), client=(peer, 40000))


def link_and_redirect(client: TestClient, **headers: str) -> tuple[str, str]:
    """The Link header of a page, and where a trailing-slash URL redirects to."""
    link = page_link(client, **headers)
    slash = client.get("/agents/x/", headers=headers, follow_redirects=False)
    assert slash.status_code == 307, slash.text
    return link, slash.headers["location"]


def test_absolute_urls_follow_forwarded_headers_from_a_trusted_proxy(database_url: str):
    with app_client(database_url, ("10.0.0.0/8",), "10.1.2.3") as client:
        link, location = link_and_redirect(client, **FORWARDED)
    assert link.startswith("<https://mail.example.org/agents/"), link
    assert location.startswith("https://mail.example.org/agents/"), location
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: still the same peer.
    with app_client(database_url, ("10.0.0.0/8",), "::ffff:10.1.2.3") as client:
        link, _ = link_and_redirect(client, **FORWARDED)
    assert link.startswith("<https://mail.example.org/"), link
    with app_client(database_url, ("*",), "198.51.100.7") as client:
        link, _ = link_and_redirect(client, **{"X-Forwarded-Proto": "https"})
    assert link.startswith("<https://testserver/"), "the request's own Host, https"


def test_forwarded_headers_from_anyone_else_are_ignored(database_url: str):
    # Not in FORWARDED_ALLOW_IPS: the URL is the request's own (http, its Host).
    with app_client(database_url, ("10.0.0.0/8",), "203.0.113.9") as client:
        link, location = link_and_redirect(client, **FORWARDED)
    assert link.startswith("<http://testserver/agents/"), link
    assert location.startswith("http://testserver/agents/"), location
    # The default trusts a proxy on the same host only.
    assert Settings().forwarded_allow_ips == ("127.0.0.1", "::1")
    with app_client(database_url, forwarded.LOCAL, "192.0.2.10") as client:
        link, _ = link_and_redirect(client, **FORWARDED)
    assert link.startswith("<http://testserver/"), link
    # From a trusted proxy, a value that is not one clean scheme or host is ignored.
    with app_client(database_url, ("10.0.0.0/8",), "10.1.2.3") as client:
        for headers in (
            {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "a.example, b.example"},
            {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example/path"},
            {"X-Forwarded-Host": "user@evil.example"},
        ):
            link, _ = link_and_redirect(client, **headers)
            assert link.startswith("<http://testserver/"), (headers, link)


def test_forwarded_allow_ips_is_read_and_checked_at_start_up():
    load = load_settings
    assert load({}).forwarded_allow_ips == ("127.0.0.1", "::1")
    assert load({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)
    assert load({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, fd00::/8,192.0.2.1"}).forwarded_allow_ips == (
        "10.0.0.0/8",
        "fd00::/8",
        "192.0.2.1",
    )
    assert load({"FORWARDED_ALLOW_IPS": ""}).forwarded_allow_ips == ()  # no one
    for text, says in (
        ("10.0.0.0/8,proxy.internal", "'proxy.internal' is not an IP address or network"),
        ("*,10.0.0.1", "write it alone"),
    ):
        with pytest.raises(SystemExit) as stopped:
            load({"FORWARDED_ALLOW_IPS": text})
        assert "invalid FORWARDED_ALLOW_IPS" in str(stopped.value), stopped.value
        assert says in str(stopped.value), stopped.value


class Service:
    """`python service.py` (main(): how the service runs outside the image) on a free port."""

    def __init__(self, database_url: str, logs: Path, **variables: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env.update(
            DATABASE_URL=database_url,
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            MAILROOM_AUTH="off",
            **variables,
        )
        self.log = logs / f"service-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "service.py"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"service.py exited with {self.process.returncode}: {self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        pytest.fail("service.py did not answer /health within 30 s: " + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_service(database_url: str, logs: Path, **variables: str) -> Iterator[Service]:
    server = Service(database_url, logs, **variables)
    try:
        yield server
    finally:
        server.stop()


def test_service_process_applies_forwarded_headers_only_from_its_trusted_peer(
    database_url: str, tmp_path: Path
):
    """The loopback network is all 127/8: the same process sees a trusted and an untrusted peer.

    A proxy also sends X-Forwarded-For; were uvicorn's own proxy handling on, it would
    swap the peer for that address before the app's check, and the host would be lost.
    """
    headers = {**FORWARDED, "X-Forwarded-For": "203.0.113.9"}
    with running_service(database_url, tmp_path, FORWARDED_ALLOW_IPS="127.0.0.2") as server:
        trusted = httpx.HTTPTransport(local_address="127.0.0.2")
        with client_of(server.url, transport=trusted) as http:
            assert page_link(http, **headers).startswith("<https://mail.example.org/")
        with client_of(server.url) as http:  # from 127.0.0.1
            untrusted = page_link(http, **headers)
        assert untrusted.startswith(f"<http://127.0.0.1:{server.port}/"), untrusted


# compose: the Caddy proxy ---------------------------------------------------------


@contextlib.contextmanager
def caddy(config: str, tmp_path: Path, port: int, **variables: str) -> Iterator[None]:
    """The real Caddy running compose/<config> until it listens on `port`; its state
    (the internal CA) in tmp_path."""
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path), **variables)
    log = tmp_path / "caddy.log"
    argv = [caddy_binary(), "run", "--config", str(ROOT / "compose" / config)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--adapter", "caddyfile"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"caddy exited with {process.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "caddy did not listen: " + log.read_text()
            time.sleep(0.1)
        yield
    finally:
        end(process)


def read_event(lines: Iterator[str]) -> tuple[str, str]:
    """The next event's (name, data) from an SSE line iterator; comments are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "" and fields:
            return fields.get("event", "message"), fields.get("data", "")
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    raise EOFError("the stream ended")


IDLE_SECONDS = 70  # longer than nginx's and many proxies' 60 s default read timeout


@pytest.mark.slow
def test_caddy_neither_buffers_nor_cuts_an_idle_stream_and_answers_a_60s_long_poll(
    database_url: str, tmp_path: Path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A heartbeat every 5 minutes: the stream sends nothing at all while it waits.
    with (
        running_service(database_url, tmp_path, MAILROOM_STREAM_HEARTBEAT="300") as server,
        caddy(
            "Caddyfile",
            tmp_path,
            port,
            PROXY_PORT=str(port),
            UPSTREAM_HOST="127.0.0.1",
            UPSTREAM_PORT=str(server.port),
        ),
        client_of(base) as http,
    ):
        streamed = http.post("/agents", json={"agent_name": "streamed"}).json()["id"]
        polled = http.post("/agents", json={"agent_name": "polled"}).json()["id"]
        opened: list[float] = []

        def stream() -> tuple[float, str, str]:
            url = f"{base}/agents/{streamed}/messages/stream"
            timeout = httpx.Timeout(10, read=IDLE_SECONDS + 20)
            with httpx.stream("GET", url, timeout=timeout) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.iter_lines()
                assert next(lines) == ": connected", "the opening comes through at once"
                opened.append(time.monotonic())
                kind, data = read_event(lines)
                return time.monotonic(), kind, data

        def long_poll() -> tuple[float, httpx.Response]:
            started = time.monotonic()
            response = http.get(
                f"/agents/{polled}/messages/unread",
                params={"wait": MAX_WAIT},
                timeout=httpx.Timeout(10, read=MAX_WAIT + 20),
            )
            return time.monotonic() - started, response

        with ThreadPoolExecutor(max_workers=2) as threads:
            streaming, polling = threads.submit(stream), threads.submit(long_poll)
            deadline = time.monotonic() + 10
            while not opened and not streaming.done() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert opened, "the stream did not open through the proxy"
            time.sleep(max(0.0, opened[0] + IDLE_SECONDS - time.monotonic()))
            sent = http.post(
                "/messages", json={"content": "after the silence", "recipient_ids": [streamed]}
            )
            sent_at = time.monotonic()
            assert sent.status_code == 201, sent.text
            arrived, kind, data = streaming.result(timeout=30)
            waited, answer = polling.result(timeout=MAX_WAIT + 30)
    assert kind == "message" and json.loads(data)["id"] == sent.json()["id"], (kind, data)
    assert arrived - sent_at < 1.0, f"the event took {arrived - sent_at:.2f} s through Caddy"
    assert arrived - opened[0] >= IDLE_SECONDS
    assert answer.status_code == 200 and answer.json() == [], answer.text
    assert MAX_WAIT <= waited < MAX_WAIT + 5, f"the long-poll answered after {waited:.1f} s"


def test_caddy_serves_https_from_its_internal_ca(database_url: str, tmp_path: Path):
    """compose/Caddyfile.tls (compose.tls.yml): a certificate the internal CA issued,
    trusted through its root alone, and https links (Caddy sends X-Forwarded-Proto;
    the service trusts a proxy on its own host by default)."""
    http_port, https_port = free_port(), free_port()
    with (
        running_service(database_url, tmp_path) as server,
        caddy(
            "Caddyfile.tls",
            tmp_path,
            https_port,
            PROXY_PORT=str(http_port),
            TLS_PORT=str(https_port),
            TLS_HOSTNAME="localhost",
            UPSTREAM_HOST="127.0.0.1",
            UPSTREAM_PORT=str(server.port),
        ),
    ):
        root = tmp_path / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        base = f"https://localhost:{https_port}"
        # Caddy listens first and has its CA issue the certificate a moment later.
        deadline = time.monotonic() + 20
        while True:
            try:
                trusted = ssl.create_default_context(cafile=str(root))
                health = httpx.get(base + "/health", verify=trusted, timeout=10)
                break
            except (FileNotFoundError, httpx.ConnectError):
                assert time.monotonic() < deadline, "no certificate from the internal CA"
                time.sleep(0.2)
        assert health.json() == {"status": "healthy"}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(base + "/health", verify=ssl.create_default_context(), timeout=10)
        with client_of(base, verify=trusted) as https:
            assert page_link(https).startswith(f"<{base}/agents/")
        # The plain HTTP site of compose.yml is still there, with http links.
        plain = f"http://127.0.0.1:{http_port}"
        with client_of(plain) as http:
            assert page_link(http).startswith(f"<{plain}/agents/")


COMPOSE_TLS = yaml.safe_load((ROOT / "compose.tls.yml").read_text())


def test_compose_tls_override_is_valid_and_runs_caddy_with_the_tls_file():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            "compose.tls.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    proxy = COMPOSE_TLS["services"]["proxy"]
    assert list(COMPOSE_TLS["services"]) == ["proxy"], "only the proxy changes"
    config = proxy["command"][proxy["command"].index("--config") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert (ROOT / mounts[config]).resolve() == (ROOT / "compose" / "Caddyfile.tls").resolve()
    assert "import Caddyfile" in (ROOT / "compose" / "Caddyfile.tls").read_text()
    assert mounts["/data"] in COMPOSE_TLS["volumes"], "the CA survives a restart"
    assert proxy["ports"] == ["8443:8443"]
    app = yaml.safe_load((ROOT / "compose.yml").read_text())["services"]["app"]
    assert app["environment"]["FORWARDED_ALLOW_IPS"] == "*", "the replicas trust their proxy"
    assert "ports" not in app, "which is safe only while the proxy is their one client"


# Kubernetes: the ingress and gateway components ------------------------------------

INGRESS = "manifests/components/ingress"
GATEWAY = "manifests/components/gateway"


def validate(doc: dict[str, Any]) -> None:
    """Kubernetes kinds against the strict Kubernetes schemas, HTTPRoute against the
    Gateway API subset (tests/shipping/gateway-api-v1-subset.schema.json)."""
    if doc["apiVersion"].startswith("gateway.networking.k8s.io/"):
        schema = dict(GATEWAY_SCHEMA, **{"$ref": f"#/$defs/{doc['kind']}"})
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        return
    if doc["apiVersion"].startswith(("postgresql.cnpg.io/", "monitoring.coreos.com/")):
        return  # tests/shipping/ validates those against their own subsets
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name or ''}: found {len(found)}"
    return found[0]


def app_config(docs: list[dict[str, Any]]) -> Settings:
    """The Settings the Deployment's ConfigMap gives (its admin token file aside)."""
    container = find(docs, "Deployment", "mailroom")["spec"]["template"]["spec"]["containers"][0]
    (source,) = container["envFrom"]
    data = dict(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    data.pop("MAILROOM_ADMIN_TOKEN_FILE")
    return load_settings({**data, "MAILROOM_ADMIN_TOKEN": "k8s-admin-token-0123456789abcdefghij"})


def nginx_bytes(size: str) -> int:
    """An nginx size (client_max_body_size): bytes, or k/m/g suffixed, powers of 1024."""
    found = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert found, size
    return int(found[1]) * 1024 ** " kmg".index(found[2].lower() or " ")


def served_by(prefixes: list[str], route: str) -> bool:
    """Whether an Ingress/HTTPRoute path prefix (element-wise, as both APIs match) covers
    the route template."""
    return any(route == p or route.startswith(p.rstrip("/") + "/") for p in prefixes)


# The routes that hold a response open; the tests check each one service.ROUTES has
# (/mcp is being added) against the edge's path prefixes.
LONG_LIVED = {"/agents/{agent_id}/messages/stream", "/agents/{agent_id}/messages/unread", "/mcp"}


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return overlay(tmp_path_factory.mktemp("ingress"), "manifests", INGRESS)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return overlay(tmp_path_factory.mktemp("gateway"), "manifests", GATEWAY)


def test_components_render_into_both_setups_and_validate(
    ingress, gateway, tmp_path_factory: pytest.TempPathFactory
):
    cloudnative = overlay(
        tmp_path_factory.mktemp("cnpg"), "manifests/overlays/cloudnative-pg", INGRESS
    )
    monitored = overlay(
        tmp_path_factory.mktemp("monitored"),
        "manifests",
        GATEWAY,
        "manifests/components/monitoring",
    )
    for docs in (ingress, gateway, cloudnative, monitored):
        for doc in docs:
            validate(doc)
        assert find(docs, "Service", "mailroom")["spec"]["type"] == "ClusterIP"
        assert app_config(docs).forwarded_allow_ips == ("*",)
    assert [d["metadata"]["name"] for d in ingress if d["kind"] == "Ingress"] == [
        "mailroom",
        "mailroom-streams",
    ]
    assert find(gateway, "HTTPRoute", "mailroom")


def test_validators_reject_a_broken_ingress_or_route(ingress, gateway):
    route = json.loads(json.dumps(find(gateway, "HTTPRoute")))
    for path, value in (
        (("spec", "rules", 0, "timeouts", "request"), "75"),  # no unit
        (("spec", "rules", 0, "timeout"), {"request": "75s"}),  # misspelt
        (("spec", "rules", 0, "matches", 0, "path", "value"), "agents"),  # not absolute
    ):
        broken = json.loads(json.dumps(route))
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
    portless = json.loads(json.dumps(route))
    del portless["spec"]["rules"][0]["backendRefs"][0]["port"]  # a Service needs its port
    with pytest.raises(jsonschema.ValidationError):
        validate(portless)
    broken_ingress = json.loads(json.dumps(find(ingress, "Ingress", "mailroom")))
    broken_ingress["spec"]["ingressClass"] = "nginx"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken_ingress)


def test_ingress_serves_one_host_over_tls_and_streams_unbuffered(ingress):
    main, streams = (
        find(ingress, "Ingress", "mailroom"),
        find(ingress, "Ingress", "mailroom-streams"),
    )
    service_ = find(ingress, "Service", "mailroom")
    port_names = {p["name"] for p in service_["spec"]["ports"]}
    settings = app_config(ingress)
    prefixes = {}
    for doc in (main, streams):
        spec = doc["spec"]
        assert spec["ingressClassName"] == "nginx"
        (tls,) = spec["tls"]
        (rule,) = spec["rules"]
        assert tls["hosts"] == [rule["host"]] and tls["secretName"] == "mailroom-tls"
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            assert path["backend"]["service"]["name"] == service_["metadata"]["name"]
            assert path["backend"]["service"]["port"]["name"] in port_names
        prefixes[doc["metadata"]["name"]] = [p["path"] for p in rule["http"]["paths"]]
        annotations = doc["metadata"]["annotations"]
        body = nginx_bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
        assert body == settings.max_body_bytes, "nginx passes exactly what the app accepts"
    assert main["spec"]["rules"][0]["host"] == streams["spec"]["rules"][0]["host"]
    routes = {route.path for route in service.ROUTES}
    for route in LONG_LIVED & routes:
        assert served_by(prefixes["mailroom-streams"], route), route
    assert served_by(prefixes["mailroom-streams"], "/mcp"), "the MCP endpoint, when it lands"
    assert prefixes["mailroom"] == ["/"]
    annotations = streams["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    read_timeout = int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    assert read_timeout > MAX_WAIT and read_timeout > settings.stream_heartbeat
    assert not any(
        key.startswith("cert-manager.io/")
        for d in (main, streams)
        for key in d["metadata"]["annotations"]
    )
    # cert-manager is documented, on the Ingress that would own the Certificate.
    text = (ROOT / INGRESS / "ingress.yaml").read_text()
    assert "# cert-manager.io/cluster-issuer:" in text


def test_gateway_route_has_no_request_timeout_on_streams_and_a_bound_elsewhere(gateway):
    route = find(gateway, "HTTPRoute", "mailroom")
    service_ = find(gateway, "Service", "mailroom")
    streams, rest = route["spec"]["rules"]
    stream_prefixes = [m["path"]["value"] for m in streams["matches"]]
    for route_path in LONG_LIVED & {r.path for r in service.ROUTES}:
        assert served_by(stream_prefixes, route_path), route_path
    assert served_by(stream_prefixes, "/mcp")
    assert streams["timeouts"] == {"request": "0s"}, "0s: no timeout (Gateway API)"
    assert [m["path"] for m in rest["matches"]] == [{"type": "PathPrefix", "value": "/"}]
    bound = int(rest["timeouts"]["request"].removesuffix("s"))
    settings = app_config(gateway)
    assert bound > settings.statement_timeout + settings.pool_timeout
    for rule in (streams, rest):
        (backend,) = rule["backendRefs"]
        assert backend["name"] == service_["metadata"]["name"]
        assert backend["port"] in {p["port"] for p in service_["spec"]["ports"]}
    (parent,) = route["spec"]["parentRefs"]
    assert parent["sectionName"] == "https", "the Gateway's TLS listener"


@pytest.mark.parametrize("component", ["ingress", "gateway"])
def test_network_policy_admits_the_edge_proxy_and_nothing_else(component, ingress, gateway):
    docs = {"ingress": ingress, "gateway": gateway}[component]
    deployment = find(docs, "Deployment", "mailroom")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    selecting = [
        p for p in docs
        if p["kind"] == "NetworkPolicy"
        and all(pod_labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
    ]  # fmt: skip
    (policy,) = selecting
    assert policy["spec"]["podSelector"]["matchLabels"] == API_LABELS
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (port,) = rule["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["protocol"] == "TCP" and named[port["port"]] == 8000
    namespace = peer["namespaceSelector"]["matchLabels"]
    if component == "ingress":
        assert namespace == {"kubernetes.io/metadata.name": "ingress-nginx"}
        assert peer["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller",
        }
    else:
        (parent,) = find(docs, "HTTPRoute", "mailroom")["spec"]["parentRefs"]
        assert namespace == {"kubernetes.io/metadata.name": parent["namespace"]}
        assert set(peer) == {"namespaceSelector"}
    # No ipBlock, no empty selector: nothing outside that namespace is let in.
    assert all(peer_ for peer_ in peer.values())


def docs_overlay(title: str) -> str:
    """The kustomization.yaml that docs/deployment-edge.md shows under `title`."""
    text = DOCS.read_text()
    found = re.search(
        re.escape(title) + r".*?```yaml\n(# my-overlay/kustomization\.yaml\n.*?)```", text, re.S
    )
    assert found, f"no my-overlay/kustomization.yaml block after {title!r} in {DOCS.name}"
    return found[1]


@pytest.mark.parametrize("component", ["ingress", "gateway"])
def test_the_overlay_the_docs_show_renders_with_its_host_class_and_certificate(
    component: str, tmp_path: Path
):
    """A platform engineer copies the documented overlay next to a checkout of mailroom."""
    (tmp_path / "mailroom").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "my-overlay").mkdir()
    (tmp_path / "my-overlay" / "kustomization.yaml").write_text(
        docs_overlay(f"<!-- overlay: {component} -->")
    )
    docs = render(str(tmp_path / "my-overlay"))
    for doc in docs:
        validate(doc)
    if component == "ingress":
        ingresses = [d for d in docs if d["kind"] == "Ingress"]
        assert len(ingresses) == 2
        for doc in ingresses:
            assert doc["spec"]["ingressClassName"] == "nginx-public"
            assert doc["spec"]["rules"][0]["host"] == "mailroom.acme.dev"
            assert doc["spec"]["tls"][0]["hosts"] == ["mailroom.acme.dev"]
        issuers = [
            d["metadata"]["name"]
            for d in ingresses
            if "cert-manager.io/cluster-issuer" in d["metadata"]["annotations"]
        ]
        assert issuers == ["mailroom"], "one Certificate for the Secret"
        found = re.search(r"<!-- policy: prometheus -->\n```yaml\n(.*?)```", DOCS.read_text(), re.S)
        assert found, "the Prometheus policy for components/monitoring"
        prometheus = yaml.safe_load(found[1])
        validate(prometheus)
        assert (
            prometheus["spec"]["podSelector"]
            == find(docs, "NetworkPolicy", "mailroom-api")["spec"]["podSelector"]
        )
    else:
        route = find(docs, "HTTPRoute", "mailroom")
        assert route["spec"]["hostnames"] == ["mailroom.acme.dev"]
        (parent,) = route["spec"]["parentRefs"]
        assert (parent["name"], parent["namespace"]) == ("edge", "gateways")
        (policy,) = [
            d
            for d in docs
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mailroom-api"
        ]
        (rule,) = policy["spec"]["ingress"]
        assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "gateways"
        }
