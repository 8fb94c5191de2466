"""API keys: how they are made, recognised and stored (as a SHA-256 digest, never the key)."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "mr_"
# "mr_" and 32 random bytes in URL-safe base64 (43 characters).
KEY_FORMAT = re.compile(r"mr_[A-Za-z0-9_-]{43}")


def new_api_key() -> str:
    """A fresh key: a recognisable prefix (for secret scanners) and 32 random bytes."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    """What the database keeps of a key: its SHA-256 digest, never the key."""
    return hashlib.sha256(key.encode()).digest()
