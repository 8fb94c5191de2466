"""Shipping: Containerfile, compose.yml, the Caddy proxy and manifests/, checked without
a container engine or a cluster; this conftest holds the fixtures the modules share.

Each artefact is checked by the tool a platform team would run on it (hadolint, the
Compose specification's JSON schema, kustomize and the Kubernetes JSON schemas,
shellcheck, caddy validate), by assertions on what matters in it, and by running
the same command lines outside a container. One module per concern:

- test_image.py: the Containerfile and its build context; the service started exactly
  as the Containerfile's ENTRYPOINT (tini) and CMD (uvicorn) say, with its ENV, from a
  fresh virtual environment built by the Containerfile's own `uv sync` command and the
  files its COPY lines take from the build context (the only change: a free port
  instead of 8000); it answers /health, its HEALTHCHECK passes, and on SIGTERM it
  answers the request in flight, closes the pool and exits 0;
- test_pgbouncer.py: the same command behind PgBouncer in transaction mode
  (MAILROOM_PREPARE_THRESHOLD=off), as in manifests/overlays/cloudnative-pg;
- test_compose.py: compose.yml, and the same command behind compose/Caddyfile;
- test_kubernetes.py: manifests/ (base and cloudnative-pg overlay), deploy.sh and
  cleanup.sh, and the README's Deployment section;
- test_monitoring.py: the monitoring component (ServiceMonitor, Grafana dashboard).

The Python tools come from the `ship` dependency group (part of `dev`), so a missing
one fails. PgBouncer, Caddy and tini are Debian packages: .ci/run installs them and
sets MAILROOM_SHIP_STRICT=1, under which their absence fails too; on a laptop
without them those tests are skipped with the command that installs them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT
from tests.shipping.containerfile import (
    BUILD,
    CONTAINERFILE,
    FINAL,
    build_context,
    stage_env,
    uv_sync_command,
)
from tests.shipping.image_command import (
    BuiltImage,
    ImageServer,
    database_env,
    files_under,
    image_env,
    start_image_command,
    wait_until_serving,
)
from tests.shipping.manifests import render, render_with_monitoring
from tests.shipping.programs import run


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """/app as the image has it: a fresh venv from the Containerfile's `uv sync`, and the
    files the final stage copies from the build context; listed before anything runs."""
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
    return BuiltImage(app, files_under(app))


@pytest.fixture(scope="session")
def image(built_image: BuiltImage) -> Path:
    """/app as the image has it."""
    return built_image.app


@pytest.fixture
def serving(image: Path, database_url: str) -> Iterator[ImageServer]:
    server = start_image_command(image, image_env(image, **database_env(database_url)))
    try:
        wait_until_serving(server)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def base() -> list[dict[str, Any]]:
    return render("manifests/")


@pytest.fixture(scope="session")
def overlay() -> list[dict[str, Any]]:
    return render("manifests/overlays/cloudnative-pg/")


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_monitoring("manifests", tmp_path_factory.mktemp("monitored"))


@pytest.fixture(scope="session")
def monitored_overlay(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_monitoring(
        "manifests/overlays/cloudnative-pg", tmp_path_factory.mktemp("monitored-cnpg")
    )
