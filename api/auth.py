"""API keys with roles. Keys look like ``ocg_<prefix>_<secret>``; only the prefix and a hash are stored.

The secret is 32 random bytes, so a plain SHA-256 is enough (a slow password hash protects guessable
secrets, which these are not); comparisons are constant-time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.store.models import ApiKey


class Role(StrEnum):
    ADMIN = "admin"
    RULE_AUTHOR = "rule_author"
    REVIEWER = "reviewer"
    CONNECTOR = "connector"
    VIEWER = "viewer"


# What each permission needs; admin may do everything.
READ = frozenset(Role)
REVIEW = frozenset({Role.ADMIN, Role.REVIEWER})
AUTHOR = frozenset({Role.ADMIN, Role.RULE_AUTHOR})
INGEST = frozenset({Role.ADMIN, Role.CONNECTOR})


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, name: str, role: Role) -> tuple[ApiKey, str]:
    """A new key; the full key text is returned once and never stored."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, role=role.value, prefix=prefix, secret_hash=_hash(secret),
                 created_at=dt.datetime.now(dt.UTC))
    session.add(key)
    session.flush()
    return key, f"ocg_{prefix}_{secret}"


def verify(session: Session, presented: str) -> ApiKey | None:
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "ocg":
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or key.revoked_at is not None:
        return None
    return key if hmac.compare_digest(key.secret_hash, _hash(parts[2])) else None
