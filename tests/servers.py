"""Real processes for the tests and bench/: the service under uvicorn, and a throwaway PostgreSQL.

tests/ (the `servers` fixture, test_server.py, test_stream.py, test_outage.py,
...) and the proofs in bench/ start them the same way, from this one module.
Nothing here imports pytest: a failure is an exception with a sentence saying
what went wrong, which pytest reports as a failed test and a bench script as a
failed run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from embedded import start_embedded
from settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 30
STOP_SECONDS = 10
EXIT_SECONDS = 30
# How bench/ runs a replica: as bench/run.sh and production do (uvloop, httptools),
# without the access log the proofs do not read.
BENCH_OPTIONS = ("--no-access-log", "--loop", "uvloop", "--http", "httptools")
# What the image runs (the Containerfile's CMD: its HTTP protocol, no uvicorn proxy
# headers or Server header): the proofs about shutdown and the push-scale figures use it.
SHIPPED_OPTIONS = (
    "--no-access-log",
    "--loop",
    "uvloop",
    "--http",
    "service:HttpProtocol",
    "--no-proxy-headers",
    "--no-server-header",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without mailroom's settings, plus `variables`.

    Authentication is off unless `variables` turn it on: these servers prove
    the open contract of API.md (tests/test_access.py covers the keys).
    """
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env["MAILROOM_AUTH"] = "off"
    env.update(variables)
    return env


def run_to_exit(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command that must stop on its own; fail (not hang) when it does not."""
    try:
        return subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=EXIT_SECONDS
        )
    except subprocess.TimeoutExpired as error:
        message = f"{argv} still running after {EXIT_SECONDS} s; stderr: {error.stderr!r}"
        raise AssertionError(message) from None


class Server:
    """A uvicorn process serving service:app on a free port, its output in files under `logs`.

    `options` are further uvicorn command-line options (bench/ adds uvloop,
    httptools and no access log); `variables` are settings in its environment;
    `root` is the checkout it serves (another ref's files, for an A/B run).
    """

    def __init__(
        self, database_url: str, logs: Path, *options: str, root: Path = ROOT, **variables: str
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "uvicorn", "service:app"]
        self.argv += ["--host", "127.0.0.1", "--port", str(self.port), *options]
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs / "stdout.txt"
        self.stderr_path = logs / "stderr.txt"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                self.argv,
                cwd=root,
                env=clean_env(DATABASE_URL=database_url, **variables),
                stdout=out,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """Everything it wrote: the log (stdout) and uvicorn's lines before the app loads."""
        return self.stdout_path.read_text(errors="replace") + self.stderr()

    def wait_healthy(self, seconds: float = START_SECONDS) -> None:
        """Return once /health answers 200; fail when the process exits or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = f"server exited with {self.process.returncode}: {self.stderr()}"
                raise AssertionError(message)
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/health did not answer 200 within {seconds} s: {self.stderr()}")

    def terminate(self, seconds: float = STOP_SECONDS) -> int:
        """SIGTERM, as a supervisor sends it; its exit status, or a failure (and a kill)
        when it is still running `seconds` later."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"no exit within {seconds} s of SIGTERM: {self.stderr()}"
            ) from None

    def stop(self) -> None:
        """Clean up: SIGTERM, then SIGKILL if it has not stopped within STOP_SECONDS."""
        if self.process.poll() is None:
            with contextlib.suppress(AssertionError):
                self.terminate()

    def kill(self) -> None:
        """Clean up at once: SIGKILL, when it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Cluster:
    """A throwaway PostgreSQL cluster (pgserver's binaries) in `data_dir`, never a shared
    server: stopped, started and restarted with its own pg_ctl, and stopped at exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = start_embedded(data_dir)
        self.socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        # pgserver loses track of a server restarted behind its back: stop it ourselves.
        atexit.register(self.close)

    def pg_ctl(self, *args: str) -> None:
        from pgserver import _commands

        user = "pgserver" if os.geteuid() == 0 else None
        _commands.pg_ctl(list(args), pgdata=self.data_dir, user=user, timeout=120)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        options = f'-h "" -k {self.socket_dir}'
        self.pg_ctl("start", "-w", "-o", options, "-l", str(self.data_dir / "log"))

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast", "-w")

    def close(self) -> None:
        """Stop it if it still runs (at exit, or at the end of a test module)."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop()
        # pgserver's own exit hook then finds it stopped: no failure report from it.
        logging.getLogger("pgserver").setLevel(logging.CRITICAL)
