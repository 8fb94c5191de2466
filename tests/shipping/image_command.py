"""The image's ENTRYPOINT and CMD run outside a container, in /app as the image has it."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest

from tests.servers import free_port
from tests.shipping.containerfile import CMD, ENTRYPOINT, FINAL, IMAGE_BASE_ENV, stage_env
from tests.shipping.programs import system_tool

# The operator's key, which the service started from the image is given.
ADMIN_TOKEN = "ship-admin-" + secrets.token_urlsafe(16)
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# Every path under a directory: a file's size and modification time, None for a folder.
Files = dict[str, tuple[int, int] | None]


def files_under(root: Path) -> Files:
    """What a read-only root file system would refuse to change: every path, and each file's
    size and modification time."""
    found: Files = {}
    for path in root.rglob("*"):
        status = path.lstat()
        found[str(path.relative_to(root))] = (
            (status.st_size, status.st_mtime_ns) if path.is_file() else None
        )
    return found


def changed(before: Files, after: Files) -> list[str]:
    """The paths added, removed or modified from one listing to the next."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p, 0) != after.get(p, 0))


@dataclass(frozen=True)
class BuiltImage:
    """/app as the image has it (`app`), and its files as built, before any run (`files`)."""

    app: Path
    files: Files


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
class ImageServer:
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


def start_image_command(image: Path, env: dict[str, str], port: int | None = None) -> ImageServer:
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
    return ImageServer(process, port, log)


def wait_until_serving(server: ImageServer) -> None:
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
