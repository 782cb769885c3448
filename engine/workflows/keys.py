"""API keys with roles. Keys look like ``ocg_<prefix>_<secret>``; only the prefix and a hash are stored.

The secret is 32 random bytes, so a plain SHA-256 is enough (a slow password hash protects guessable
secrets, which these are not); comparisons are constant-time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.store.models import ApiKey


class Role(StrEnum):
    ADMIN = "admin"
    RULE_AUTHOR = "rule_author"
    REVIEWER = "reviewer"
    BILLER = "biller"
    CONNECTOR = "connector"
    VIEWER = "viewer"


# What each permission needs; admin may do everything.
READ = frozenset(Role)
REVIEW = frozenset({Role.ADMIN, Role.REVIEWER})
AUTHOR = frozenset({Role.ADMIN, Role.RULE_AUTHOR})
INGEST = frozenset({Role.ADMIN, Role.CONNECTOR})
BILL = frozenset({Role.ADMIN, Role.BILLER})


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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: what the API needs of a verified key."""

    key_id: int
    prefix: str
    name: str
    role: str


class KeyCache:
    """Verified keys, remembered for ``ttl`` seconds so most requests skip the key lookup. A key revoked
    from another process stops working within ``ttl``; one revoked through this process at once."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._known: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Caller | None:
        with self._lock:
            found = self._known.get(digest)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, digest: str, caller: Caller) -> None:
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = (time.monotonic() + self.ttl, caller)

    def forget(self, prefix: str) -> None:
        with self._lock:
            for digest in [d for d, (_, c) in self._known.items() if c.prefix == prefix]:
                del self._known[digest]


def verify(session: Session, presented: str, cache: KeyCache | None = None) -> Caller | None:
    digest = _hash(presented.strip())
    if cache is not None and (known := cache.get(digest)) is not None:
        return known
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "ocg":
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.secret_hash, _hash(parts[2])):
        return None
    caller = Caller(key.id, key.prefix, key.name, key.role)
    if cache is not None:
        cache.put(digest, caller)
    return caller


def keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(session: Session, prefix: str) -> ApiKey:
    """Revoke a key by its prefix (revoking twice keeps the first time)."""
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFound(f"no key with prefix {prefix}")
    key.revoked_at = key.revoked_at or dt.datetime.now(dt.UTC)
    session.flush()
    return key
