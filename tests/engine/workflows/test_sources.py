"""Configured sources: credentials encrypted at rest, one sync at a time, cursors, replayed webhook deliveries
refused, and withdrawals that go through ingest."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import transaction
from engine.store.models import Connection, EntryRow, EntryState
from engine.workflows import intake, sources
from tests.conftest import CTX, entry


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv(sources.SECRET_KEY_ENV, value)
    return value


def add(sessions: sessionmaker[Session], name: str = "clio-us") -> int:
    with transaction(sessions) as session:
        return sources.add(session, name=name, kind="clio", settings={"region": "us", "client_id": "abc"}).id


def test_credentials_are_encrypted_at_rest_and_read_back(sessions: sessionmaker[Session], key: str) -> None:
    connection_id = add(sessions)
    store = sources.CredentialStore(sessions, connection_id)
    assert store.load() is None
    expires = dt.datetime(2027, 1, 5, tzinfo=dt.UTC)
    store.save({"access_token": "secret-access-token-123", "refresh_token": "r-456"}, expires)
    with sessions() as session:
        raw = session.scalar(text("SELECT credentials FROM connections WHERE id = :id"), {"id": connection_id})
        row = session.get(Connection, connection_id)
    assert "secret-access-token-123" not in raw and "r-456" not in raw
    assert row.credentials_expire_at == expires
    assert store.load() == {"access_token": "secret-access-token-123", "refresh_token": "r-456"}


def test_a_rotated_key_still_reads_old_credentials_and_a_lost_key_says_so(
        sessions: sessionmaker[Session], key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sources.CredentialStore(sessions, add(sessions))
    store.save({"access_token": "a"})
    new = Fernet.generate_key().decode()
    monkeypatch.setenv(sources.SECRET_KEY_ENV, f"{new},{key}")
    assert store.load() == {"access_token": "a"}
    monkeypatch.setenv(sources.SECRET_KEY_ENV, new)
    with pytest.raises(sources.SecretKeyMissing, match="cannot be read"):
        store.load()
    monkeypatch.delenv(sources.SECRET_KEY_ENV)
    with pytest.raises(sources.SecretKeyMissing, match="OCGATE_SECRET_KEY"):
        store.save({"access_token": "b"})


def test_one_sync_at_a_time_and_a_stale_lease_expires(sessions: sessionmaker[Session]) -> None:
    connection_id = add(sessions)
    with transaction(sessions) as session:
        sources.claim_sync(session, connection_id, owner="worker-1", lease=dt.timedelta(minutes=5))
    with pytest.raises(sources.SyncRunning, match="worker-1"), transaction(sessions) as session:
        sources.claim_sync(session, connection_id, owner="worker-2", lease=dt.timedelta(minutes=5))
    with transaction(sessions) as session:  # the holder renews
        sources.claim_sync(session, connection_id, owner="worker-1", lease=dt.timedelta(seconds=-1))
    with transaction(sessions) as session:  # expired: another may take it
        sources.claim_sync(session, connection_id, owner="worker-2", lease=dt.timedelta(minutes=5))
        sources.release_sync(session, connection_id, owner="worker-2", finished=True)
    with sessions() as session:
        row = session.get(Connection, connection_id)
        assert row.sync_lease_owner is None and row.last_sync_at is not None


def test_cursors_per_stream(sessions: sessionmaker[Session]) -> None:
    connection_id = add(sessions)
    with transaction(sessions) as session:
        sources.save_cursor(session, connection_id, '{"since": "2026-03-01T00:00:00+00:00"}')
        sources.save_cursor(session, connection_id, "x", stream="other")
    with transaction(sessions) as session:
        sources.save_cursor(session, connection_id, '{"since": "2026-03-02T00:00:00+00:00"}')
        assert sources.cursor(session, connection_id) == '{"since": "2026-03-02T00:00:00+00:00"}'
        assert sources.cursor(session, connection_id, "other") == "x"
        sources.save_cursor(session, connection_id, None, stream="other")
        assert sources.cursor(session, connection_id, "other") is None


def test_a_replayed_delivery_is_refused_and_stores_nothing(sessions: sessionmaker[Session]) -> None:
    connection_id = add(sessions)
    with transaction(sessions) as session:
        first = sources.store_event(session, connection_id=connection_id, delivery_key="k1", event="updated",
                                    model="activity", record_id="42", payload={"data": {"id": 42}})
    with pytest.raises(sources.ReplayedDelivery), transaction(sessions) as session:
        sources.store_event(session, connection_id=connection_id, delivery_key="k1", event="updated",
                            model="activity", record_id="42", payload={"data": {"id": 42}})
    with transaction(sessions) as session:
        assert [e.id for e in sources.pending_events(session)] == [first.id]
        sources.event_processed(session, first.id, "done")
        assert sources.pending_events(session) == []


def test_withdrawing_goes_through_ingest(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        intake.ingest(session, [entry("1"), entry("2"), entry("3")], context=CTX)
        session.scalar(select(EntryRow).where(EntryRow.source_id == "3")).state = EntryState.INVOICED
    with transaction(sessions) as session:
        result = sources.withdraw(session, source_system="clio", source_tenant="us/1", source_ids=["1", "3", "9"],
                                  actor="sync:test")
    assert result is not None and result.withdrawn == 1 and result.conflicts == 1
    with sessions() as session:
        states = dict(session.execute(select(EntryRow.source_id, EntryRow.state)).all())
    assert states == {"1": EntryState.WITHDRAWN, "2": EntryState.READY, "3": EntryState.CONFLICT}
    with transaction(sessions) as session:  # withdrawing again changes nothing
        again = sources.withdraw(session, source_system="clio", source_tenant="us/1", source_ids=["1"],
                                 actor="sync:test")
    assert again is None
