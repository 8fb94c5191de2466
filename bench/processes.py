"""What the push and restart proofs share: a throwaway PostgreSQL cluster and service replicas.

The cluster is the embedded server's binaries (pgserver) in a temporary
directory, so a proof can restart it without touching any shared server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedded import start_embedded  # noqa: E402
from settings import ENVIRONMENT  # noqa: E402


class Cluster:
    """A pgserver cluster in `data_dir`, restarted with its own pg_ctl; stopped at exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = start_embedded(data_dir)
        self.socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        # pgserver loses track of a server restarted behind its back: stop it ourselves.
        atexit.register(self.stop)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("stop", "-m", "fast", "-w")

    def pg_ctl(self, *args: str) -> None:
        from pgserver import _commands

        user = "pgserver" if os.geteuid() == 0 else None
        _commands.pg_ctl(list(args), pgdata=self.data_dir, user=user, timeout=120)

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast", "-w")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    """A uvicorn process serving service:app on its own port, with uvloop and httptools;
    `root` is the checkout it serves (another ref's files, for an A/B run)."""

    def __init__(
        self, database_url: str, log_path: Path, root: Path = ROOT, **variables: str
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        # The proofs exercise the open contract of API.md: no API keys.
        env.update({"DATABASE_URL": database_url, "MAILROOM_AUTH": "off", **variables})
        argv = [sys.executable, "-m", "uvicorn", "service:app", "--port", str(self.port)]
        argv += ["--host", "127.0.0.1", "--no-access-log", "--loop", "uvloop"]
        argv += ["--http", "httptools"]
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            argv, cwd=root, env=env, stdout=self.log, stderr=self.log
        )

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.base_url} not ready within {seconds} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
