"""The programs the shipping checks run (the `ship` group's tools, Debian's) and how to run them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent  # the project venv's bin: hadolint, kubectl, shellcheck
STRICT = os.environ.get("MAILROOM_SHIP_STRICT") == "1"


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
