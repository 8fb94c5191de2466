"""The embedded PostgreSQL of `uv run service.py`: start, stop, and the admin token it makes.

Without DATABASE_URL the service runs its own PostgreSQL (pgserver) with its
data in MAILROOM_DATA_DIR. The process that starts it owns it and stops it;
with authentication on and no MAILROOM_ADMIN_TOKEN, the operator's token is
made here on the first start and kept beside the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import time
import warnings
from pathlib import Path

import psycopg

from access.keys import KEY_PREFIX
from queries import sql

log = logging.getLogger("mailroom.database")


def stop_embedded(data_dir: Path, seconds: float = 10.0) -> None:
    """Stop the embedded PostgreSQL of `data_dir`, if it runs: a fast shutdown (SIGINT
    to the postmaster, as `pg_ctl -m fast` sends it; pg_ctl refuses to run as root)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return  # not running
    deadline = time.monotonic() + seconds
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # pgserver's own exit hook finds the server gone and would warn that it failed.
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    log.info("embedded PostgreSQL stopped")


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir`; its mailroom database URL."""
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every initdb line
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver copes with that.
        warnings.simplefilter("ignore", UserWarning)
        try:
            import pgserver  # only needed without DATABASE_URL
        except ImportError:
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not "
                "installed: set DATABASE_URL, or install the 'embedded' dependency group"
            ) from None
        # Only now: without pgserver (the image) nothing is written, so a read-only root
        # file system still shows the sentence above.
        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    log.info("embedded PostgreSQL running with its data in %s", data_dir.resolve())
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute(sql.database_exists.text).fetchone()
        if not (exists and exists[0]):
            # Several workers may start at once; the first one creates it.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.create_database.text)
    return server.get_uri("mailroom")


ADMIN_TOKEN_FILE = "mailroom-admin-token"  # noqa: S105 - a file name


def embedded_admin_token(data_dir: Path) -> str:
    """The admin token of `uv run service.py` without DATABASE_URL or MAILROOM_ADMIN_TOKEN.

    Made on the first start, kept (mode 0600) in the embedded server's data
    directory and printed once on the terminal; later starts read it back.
    Workers starting together agree on one token: the file appears whole, by a
    hard link that only the first of them can make.
    """
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = KEY_PREFIX + "admin_" + secrets.token_urlsafe(32)
    draft = path.with_name(f".{ADMIN_TOKEN_FILE}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        draft.unlink()
    # Printed, not logged: this is the one time the operator sees it.
    print(
        f"mailroom: generated the admin token {token}\n"
        f"mailroom: it is kept in {path} and will not be printed again",
        file=sys.stderr,
        flush=True,
    )
    return token
