"""API keys: hashed at rest, verified in constant time, remembered briefly."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import transaction
from engine.store.models import ApiKey
from engine.workflows.keys import KeyCache, Role, create_key, verify


def test_only_a_hash_is_stored_and_a_wrong_secret_fails(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        _, text = create_key(session, name="rita", role=Role.REVIEWER)
    _, prefix, secret = text.split("_", 2)
    with sessions() as session:
        stored = session.scalar(select(ApiKey))
        assert stored.prefix == prefix and secret not in stored.secret_hash and len(secret) >= 40
        assert verify(session, text).role == "reviewer"
        assert verify(session, f"ocg_{prefix}_{secret[:-1]}x") is None
        assert verify(session, "ocg_nothere_secret") is None
        assert verify(session, "not-a-key") is None


def test_revocation_reaches_cached_keys_when_the_cache_expires(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        key, text = create_key(session, name="sam", role=Role.VIEWER)
    long_cache, no_cache = KeyCache(ttl=3600), KeyCache(ttl=0)
    with sessions() as session:
        assert verify(session, text, long_cache) is not None
        assert verify(session, text, no_cache) is not None
    with transaction(sessions) as session:
        session.get(ApiKey, key.id).revoked_at = dt.datetime.now(dt.UTC)
    with sessions() as session:
        assert verify(session, text, no_cache) is None
        assert verify(session, text, long_cache) is not None  # remembered until the cache forgets it
        long_cache.forget(key.prefix)
        assert verify(session, text, long_cache) is None
