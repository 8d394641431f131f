"""The form of an API key, `qf_<key_id>_<secret>`, shared by the key directories (PostgreSQL
and in memory) and admit's door, which refuses a malformed key without a lookup."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

_API_KEY = re.compile(r"qf_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})")


def api_key_parts(api_key: str) -> tuple[str, str] | None:
    """`(key_id, secret)` of a well-formed API key, else None."""
    found = _API_KEY.fullmatch(api_key)
    return (found[1], found[2]) if found else None


def new_key_parts() -> tuple[str, str]:
    """A fresh `(key_id, secret)`; `qf_<key_id>_<secret>` is then a well-formed key."""
    return secrets.token_hex(6), secrets.token_urlsafe(24)


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as `quotaflow key list` shows it, never with its secret."""

    key_id: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_min: int | None = None  # the key's own; None: its tenant's applies
