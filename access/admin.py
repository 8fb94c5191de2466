"""The operator's admin token: where it comes from, and the digest requests are checked against."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from access.keys import key_digest
from embedded import embedded_admin_token
from settings import Settings

log = logging.getLogger("mailroom")

ADMIN_KEY_MISSING = (
    "mailroom: MAILROOM_AUTH=required (the default) needs the operator's key: set "
    "MAILROOM_ADMIN_TOKEN or MAILROOM_ADMIN_TOKEN_FILE, or MAILROOM_AUTH=off for a local "
    "experiment (only the embedded database makes one up by itself)"
)


def needs_admin_token(settings: Settings) -> bool:
    """Auth is on, no admin token is configured and none can be made (a database of its own)."""
    return settings.auth_required and not settings.admin_token and bool(settings.database_url)


async def admin_digest(settings: Settings) -> bytes:
    """The digest of the admin token, or b"" (matches no key) when auth is off."""
    if not settings.auth_required:
        log.warning(
            "MAILROOM_AUTH=off: no API keys are checked; every caller may read and change "
            "everything. Use it for local experiments only."
        )
        return b""
    if needs_admin_token(settings):
        log.error(ADMIN_KEY_MISSING)
        raise RuntimeError(ADMIN_KEY_MISSING)
    token = settings.admin_token or await asyncio.to_thread(
        embedded_admin_token, Path(settings.data_dir)
    )
    return key_digest(token)
