"""The service behind PgBouncer in transaction mode, as the cloudnative-pg overlay's Pooler runs."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.servers import free_port
from tests.shipping.image_command import (
    ADMIN_TOKEN,
    database_env,
    image_env,
    start_image_command,
    wait_until_serving,
)
from tests.shipping.programs import end, system_tool, wait_for_port


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
