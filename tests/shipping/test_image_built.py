"""The container image, built from the Containerfile by podman and run from what it built.

The Containerfile's FROM image (python:3.11-slim-bookworm) cannot be pulled here, so a
stand-in is built from Debian's own packages: a bookworm root file system
(debootstrap, minbase) with Debian's Python 3.11 and pip, laid out as the Containerfile
expects it (`python` and `pip` in /usr/local/bin, first on PATH; pip free to install
system-wide, as in the official image). It is tagged as the FROM image in a podman
store of its own (the machine's store never sees the tag) and labelled
`mailroom.test.stand-in`, a label every image built on it inherits. The Containerfile
itself is built unchanged: `podman build --isolation chroot` runs its RUN steps
(apt-get install tini, pip install uv, uv sync from PyPI).

`podman run` fails on these machines (crun cannot set the resource limits it wants),
so the built image is run without an OCI runtime: its file system is mounted
read-only (`podman image mount`), a new mount and PID namespace gets /proc, a minimal
/dev and a tmpfs /tmp (as the Deployment's emptyDir), and the image's ENTRYPOINT and
CMD start there under chroot as the image's USER, with exactly the image's Env, its
WorkingDir, and the test database. The HEALTHCHECK runs inside the same namespaces
(nsenter) as that user. One change, as in test_shipping's image-command tests: the port
8000 of CMD and HEALTHCHECK becomes a free one (the network is the host's).

What this proves and what only a real container runtime would: docs/deployment-edge.md,
"The image, built for real".

Cost: the first run on a machine downloads and unpacks the root file system (about 3
minutes) and builds (about a minute); later runs reuse the root file system (a tar in
~/.cache/mailroom/image-test, keyed by what goes into it) and podman's layer cache.
podman and debootstrap are Debian packages: .ci/run installs them and sets
MAILROOM_SHIP_STRICT=1, under which their absence (or not being root) fails;
elsewhere these tests are skipped with the command that installs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest

from tests.shipping.programs import system_tool

ROOT = Path(__file__).resolve().parent.parent.parent
STRICT = os.environ.get("MAILROOM_SHIP_STRICT") == "1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mailroom" / "image-test"
# podman's run state belongs on a tmpfs; one fixed path, as podman's database records it.
RUNROOT = Path("/run/mailroom-image-test")
TAG = "localhost/mailroom:image-test"
STAND_IN_LABEL = "mailroom.test.stand-in"
# The stand-in for the FROM image: Debian bookworm, as python:3.11-slim-bookworm is.
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "ca-certificates")
# The official image's configuration, as the Containerfile builds on it.
BASE_CONFIG = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
# What the stand-in adds: the machine's own extra CA certificates (a TLS-inspecting
# proxy in front of PyPI here; none on an open network), named for pip and uv.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
STAND_IN_CONFIG = ("ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",)
RECIPE = 1  # one more whenever stand_in_root() changes what it makes
ADMIN_TOKEN = "image-admin-" + secrets.token_urlsafe(16)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = pytest.mark.slow
# RUN steps without an OCI runtime; the docker format keeps HEALTHCHECK; never a pull.
BUILD_OPTIONS = ("--isolation", "chroot", "--format", "docker", "--pull=never", "--layers")
# Namespaces of their own for mounts and processes (the network is the host's); the
# namespace's processes die with unshare.
UNSHARE = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child")


def run(argv: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )


def from_images() -> set[str]:
    """Every FROM image of the Containerfile (stage names aside)."""
    text = (ROOT / "Containerfile").read_text()
    return {m[1] for m in re.finditer(r"^FROM\s+(?:--\S+\s+)*(\S+)", text, re.MULTILINE)}


@dataclass
class Image:
    config: dict[str, Any]  # `podman image inspect`: Config, Healthcheck, Labels...
    root: Path  # the image's file system, mounted read-only


def stand_in_root(key: str) -> Path:
    """The stand-in's root file system as a tar, built once per key."""
    tarball = CACHE / f"python-3.11-bookworm-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        root = Path(scratch) / "root"
        debootstrap = [system_tool("debootstrap", "debootstrap"), "--variant=minbase"]
        built = run(
            [*debootstrap, f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
            timeout=900,
        )
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        # Where python:3.11-slim has them: /usr/local/bin comes first on its PATH.
        local_bin = root / "usr" / "local" / "bin"
        for name, target in (("python", "python3"), ("python3", "python3"), ("pip", "pip3")):
            (local_bin / name).symlink_to(f"/usr/bin/{target}")
        # The official image's Python is not Debian's: pip installs system-wide there.
        (root / "usr" / "lib" / "python3.11" / "EXTERNALLY-MANAGED").unlink()
        for certificate in sorted(LOCAL_CAS.glob("*.crt")):
            shutil.copy(certificate, root / "usr" / "local" / "share" / "ca-certificates")
        updated = run(["chroot", str(root), "update-ca-certificates"])
        assert updated.returncode == 0, updated.stderr
        # No package lists or downloads, as in the official image (the Containerfile
        # runs apt-get update itself).
        for leftovers in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (root / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        packed = run(["tar", "-C", str(root), "-cf", str(partial), "."], timeout=300)
        assert packed.returncode == 0, packed.stderr
        partial.rename(tarball)
    for older in CACHE.glob("python-3.11-bookworm-*.tar"):
        if older != tarball:
            older.unlink()
    return tarball


def stand_in_key() -> str:
    """What the stand-in is made of: a new key rebuilds it."""
    recipe = [RECIPE, SUITE, MIRROR, *PACKAGES, *BASE_CONFIG, *STAND_IN_CONFIG]
    recipe += [p.read_text() for p in sorted(LOCAL_CAS.glob("*.crt"))]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    podman_binary = system_tool("podman", "podman")
    for name, package in (("unshare", "util-linux"), ("nsenter", "util-linux")):
        system_tool(name, package)
    if os.geteuid() != 0:
        message = "podman image mount, unshare and chroot need root: run the tests as root"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    podman = [podman_binary, "--root", str(CACHE / "storage"), "--runroot", str(RUNROOT)]
    (base,) = from_images()  # both stages build on the one image the stand-in replaces
    key = stand_in_key()
    label = f"{{{{index .Labels {json.dumps(STAND_IN_LABEL)}}}}}"
    present = run([*podman, "image", "inspect", "--format", label, base])
    if present.returncode != 0 or key not in present.stdout:
        changes = [*BASE_CONFIG, *STAND_IN_CONFIG]
        changes.append(f"LABEL {STAND_IN_LABEL}=debian-{SUITE}-debootstrap-{key}")
        argv = [*podman, "import"]
        for change in changes:
            argv += ["--change", change]
        imported = run([*argv, str(stand_in_root(key)), base], timeout=300)
        assert imported.returncode == 0, imported.stderr
    log = tmp_path_factory.mktemp("build") / "build.log"
    with log.open("w") as out:
        built = subprocess.run(
            [*podman, "build", *BUILD_OPTIONS, "-t", TAG, "-f", "Containerfile", "."],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    assert built.returncode == 0, log.read_text()[-5000:]
    # Builds leave the intermediate images of earlier contexts behind: keep a week's.
    run([*podman, "image", "prune", "--force", "--filter", "until=168h"])
    inspected = run([*podman, "image", "inspect", TAG])
    assert inspected.returncode == 0, inspected.stderr
    (config,) = json.loads(inspected.stdout)
    mounted = run([*podman, "image", "mount", TAG])
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield Image(config, Path(mounted.stdout.strip()))
    finally:
        run([*podman, "image", "unmount", TAG])


# Running the image without an OCI runtime ---------------------------------------

# In a new mount namespace (gone with its last process): /proc of the new PID
# namespace, a /dev with the usual devices only, a tmpfs /tmp, and the database's
# socket when it has one; then the image's USER, Env and WorkingDir under chroot.
LAUNCH = r"""
set -eu
root=$1; shift
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=755,size=64k tmpfs "$root/dev"
for device in null zero full random urandom; do
    : > "$root/dev/$device"; mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir "$root/dev/shm"; mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
if [ -n "$DATABASE_SOCKET" ]; then
    mkdir "$root/tmp/postgresql"
    : > "$root/tmp/postgresql/${DATABASE_SOCKET##*/}"
    mount --bind "$DATABASE_SOCKET" "$root/tmp/postgresql/${DATABASE_SOCKET##*/}"
fi
exec chroot --userspec="$USERSPEC" "$root" /usr/bin/env -i -C "$WORKDIR" "$@"
"""


def database_settings(url: str) -> tuple[dict[str, str], str]:
    """DATABASE_URL (no credentials) and PGUSER/PGPASSWORD as compose and k8s pass
    them, and the host path of the server's socket when it is reached by one."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.pop("host", parts.hostname or "")
    socket_path = ""
    if host.startswith("/"):  # the embedded server: its socket, bound under /tmp
        socket_path = f"{host}/.s.PGSQL.{parts.port or 5432}"
        query["host"] = "/tmp/postgresql"  # the container's own tmpfs
        if parts.port:
            query["port"] = str(parts.port)
        netloc = ""
    else:
        netloc = quote(host, safe="") + (f":{parts.port}" if parts.port else "")
    env = {"DATABASE_URL": f"postgresql://{netloc}{parts.path}"}
    if query:
        env["DATABASE_URL"] += "?" + urlencode(query)
    if parts.username:
        env["PGUSER"] = parts.username
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return env, socket_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_port(argv: list[str], port: int) -> list[str]:
    """The command with port 8000 replaced (the network is the host's)."""
    changed = [part.replace(":8000/", f":{port}/") for part in argv]
    if "--port" in changed:
        changed[changed.index("--port") + 1] = str(port)
    return changed


class Container:
    """The image's ENTRYPOINT + CMD in its own mount and PID namespaces, under chroot."""

    def __init__(self, image: Image, database_url: str, log: Path) -> None:
        config = image.config["Config"]
        self.image, self.port = image, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.user = config["User"]
        assert re.fullmatch(r"\d+:\d+", self.user), "a numeric USER uid:gid"
        database, socket_path = database_settings(database_url)
        uid = self.user.split(":")[0]
        home = next(
            line.split(":")[5]
            for line in (image.root / "etc" / "passwd").read_text().splitlines()
            if line.split(":")[2] == uid
        )
        # What docker gives the process: the image's Env, HOME from the image's passwd.
        self.env = [*config["Env"], f"HOME={home}"]
        env = [*self.env, f"MAILROOM_ADMIN_TOKEN={ADMIN_TOKEN}"]
        env += [f"{name}={value}" for name, value in database.items()]
        argv = on_port([*config["Entrypoint"], *config["Cmd"]], self.port)
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*UNSHARE, "sh", "-c", LAUNCH, "sh", str(image.root), *env, *argv],
                env={
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "USERSPEC": self.user,
                    "WORKDIR": config["WorkingDir"],
                    "DATABASE_SOCKET": socket_path,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self.pid1 = self._namespace_init()
            self._wait_serving()
        except BaseException:
            self.process.kill()  # --kill-child takes the namespace's processes with it
            self.process.wait()
            raise

    def _namespace_init(self) -> int:
        """The host PID of the namespace's PID 1 (unshare's child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                found = children.read_text().split()
                if found:
                    return int(found[0])
            time.sleep(0.02)
        pytest.fail("unshare started no process: " + self.output())

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the image's command exited with {self.process.returncode}:\n" + self.output()
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health/live", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail("the image's command never answered /health/live:\n" + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def processes(self) -> dict[int, dict[str, str]]:
        """/proc/<pid>/status of every process in the container's PID namespace."""
        namespace = os.readlink(f"/proc/{self.pid1}/ns/pid")
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") == namespace:
                    lines = (entry / "status").read_text().splitlines()
                    found[int(entry.name)] = dict(line.split(":\t", 1) for line in lines)
        return found

    def exec(self, argv: list[str], as_user: bool = True) -> subprocess.CompletedProcess[str]:
        """A command inside the container (its namespaces, root and directory), as the
        image's USER with its Env unless `as_user` is false (root, as `exec -u 0`)."""
        enter = ["nsenter", "--target", str(self.pid1), "--mount", "--pid", "--root", "--wd"]
        if as_user:
            uid, gid = self.user.split(":")
            enter += ["--setuid", uid, "--setgid", gid]
        return run([*enter, "/usr/bin/env", "-i", *self.env, *argv], timeout=30)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK command, as the runtime runs it."""
        test = self.image.config["Healthcheck"]["Test"]
        assert test[0] == "CMD", test
        return self.exec(on_port(test[1:], self.port))

    def stop(self) -> int:
        """SIGTERM to the container's PID 1, as `docker stop` sends it; its exit status."""
        if self.process.poll() is None:
            os.kill(self.pid1, signal.SIGTERM)
        return self.process.wait(timeout=40)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.process.kill()  # --kill-child takes the namespace's processes with it
            self.process.wait()


@pytest.fixture
def container(image: Image, database_url: str, tmp_path: Path) -> Iterator[Container]:
    running = Container(image, database_url, tmp_path / "container.log")
    try:
        yield running
    finally:
        running.close()


# The tests ------------------------------------------------------------------------


def test_image_is_the_containerfiles_built_on_a_labelled_stand_in(image: Image):
    config = image.config["Config"]
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/app"
    assert config["Entrypoint"] == ["tini", "-e", "143", "--"]
    assert config["Cmd"][:2] == ["uvicorn", "service:app"] and "--no-proxy-headers" in config["Cmd"]
    healthcheck = image.config["Healthcheck"]  # kept: built in the docker format
    assert healthcheck["Test"][:2] == ["CMD", "python"] and healthcheck["Interval"] == 30 * 10**9
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mailroom"
    assert labels[STAND_IN_LABEL].startswith("debian-bookworm-"), "it says what it was built on"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/app/.venv/bin:/usr/local/bin:"), env["PATH"]
    root = image.root
    assert (root / "usr" / "bin" / "tini").is_file(), "apt-get install tini ran"
    site = next((root / "app" / ".venv" / "lib").glob("python3.11/site-packages"))
    names = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    # httpx is a runtime dependency since the webhook dispatcher (issue 14) sends with it.
    assert {"uvicorn", "starlette", "psycopg", "msgspec", "httpx"} <= names, names
    assert not names & {"pgserver", "pytest", "ruff", "standardwebhooks"}, "runtime only"
    assert sorted(p.name for p in (root / "app").iterdir()) == [
        ".venv", "access", "embedded.py", "handlers", "operations", "queries", "service.py",
        "settings.py", "static", "tools", "validation", "webhooks",
    ]  # fmt: skip
    passwd = (root / "etc" / "passwd").read_text()
    assert "appuser:x:1000:1000::/app:/usr/sbin/nologin" in passwd
    for path in (root / "app" / "service.py", root / "app" / "handlers"):
        assert path.stat().st_uid == 0 and not path.stat().st_mode & 0o022, path


def test_image_runs_as_uid_1000_on_a_read_only_root_and_passes_its_healthcheck(
    container: Container,
):
    assert httpx.get(container.url + "/health", timeout=5).json() == {"status": "healthy"}
    health = container.healthcheck()
    assert health.returncode == 0, health.stdout + health.stderr
    processes = container.processes()
    init = processes[container.pid1]
    assert init["Name"] == "tini" and init["NSpid"].split()[-1] == "1", "tini is PID 1"
    assert sorted(status["Name"] for status in processes.values()) == ["tini", "uvicorn"]
    for pid, status in processes.items():
        assert status["Uid"].split() == ["1000"] * 4, (pid, status["Name"], status["Uid"])
        assert status["Gid"].split() == ["1000"] * 4, (pid, status["Name"], status["Gid"])
        assert status["CapEff"] == "0000000000000000", (pid, status["Name"], "no capabilities")
    (server,) = [pid for pid, status in processes.items() if status["Name"] == "uvicorn"]
    mounts = Path(f"/proc/{server}/mountinfo").read_text().splitlines()
    (root_mount,) = [line for line in mounts if line.split()[4] == "/"]
    assert "ro" in root_mount.split()[5].split(","), root_mount
    for as_user in (True, False):  # read-only, not merely unwritable by appuser
        written = container.exec(["touch", "/app/written"], as_user=as_user)
        assert written.returncode != 0 and "Read-only file system" in written.stderr, written
    # The CMD leaves forwarded headers to the service, which trusts 127.0.0.1 by default.
    with httpx.Client(base_url=container.url, headers=ADMIN, timeout=10) as http:
        agent = http.post("/agents", json={"agent_name": "in the image"}).json()
        for n in range(2):
            http.post(
                "/messages",
                json={"sender_id": agent["id"], "content": f"{n}", "recipient_ids": [agent["id"]]},
            ).raise_for_status()
        page = http.get(
            f"/agents/{agent['id']}/messages?limit=1",
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "mail.example.org",
                "X-Forwarded-For": "203.0.113.9",
            },
        )
    assert page.headers["link"].startswith("<https://mail.example.org/agents/"), page.headers


def test_sigterm_with_a_stream_open_sends_shutdown_and_exits_0(container: Container):
    with httpx.Client(base_url=container.url, headers=ADMIN, timeout=10) as http:
        agent = http.post("/agents", json={"agent_name": "streaming"}).json()["id"]
        url = f"/agents/{agent}/messages/stream"
        with http.stream("GET", url, timeout=httpx.Timeout(10, read=30)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == ": connected"  # the opening comment: subscribed
            http.post("/messages", json={"content": "before", "recipient_ids": [agent]})
            events = []
            for line in lines:
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    if events == ["message"]:
                        os.kill(container.pid1, signal.SIGTERM)  # docker stop
            # The stream ended (the loop ran out) after the shutdown event.
    assert events == ["message", "shutdown"], events
    assert container.process.wait(timeout=40) == 0, container.output()
    assert "mailroom stopped" in container.output(), "the lifespan closed the pool"
