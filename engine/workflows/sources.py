"""Configured sources and what syncing them needs to remember: their settings, their credentials (encrypted),
where each sync stopped, one sync at a time, the sync runs, and the webhook events and subscriptions.

Nothing here knows a source's API: the connectors (``connectors/sources``) check settings, talk to the remote
system and call these functions. Settings never hold secrets, only the names of environment variables;
credentials a source issues (OAuth tokens, webhook secrets) are encrypted with Fernet under a key from
``OCGATE_SECRET_KEY`` that never enters the database, and never appear in a log, an error or the API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import Conflict, Invalid, NotFound, OcgateError
from engine.model import Entry, EntryStatus
from engine.store.db import transaction
from engine.store.models import (
    Connection,
    EntryRow,
    EntryState,
    SyncCursor,
    SyncRun,
    WebhookEvent,
    WebhookSubscription,
)
from engine.workflows import intake

SECRET_KEY_ENV = "OCGATE_SECRET_KEY"


class SourceNotFound(NotFound):
    code = "source_not_found"


class SecretKeyMissing(Invalid):
    code = "secret_key_missing"


class SyncRunning(Conflict):
    code = "sync_running"


class ReplayedDelivery(OcgateError):
    """A webhook delivery already received: refused, nothing changes."""

    code, status = "replayed", 401


# Configured sources ------------------------------------------------------------------------------------

def add(session: Session, *, name: str, kind: str, settings: dict[str, Any]) -> Connection:
    """Configure a source, or replace the settings of the one of that name (its credentials, cursor and
    history stay unless the kind changes). The connector has checked the settings."""
    row = session.scalar(select(Connection).where(Connection.name == name))
    if row is None:
        row = Connection(name=name, source_system=kind, source_tenant="", settings=settings,
                         created_at=dt.datetime.now(dt.UTC))
        session.add(row)
    else:
        if row.source_system != kind:
            row.credentials, row.credentials_expire_at, row.source_tenant = None, None, ""
            session.execute(SyncCursor.__table__.delete().where(SyncCursor.connection_id == row.id))
        row.source_system, row.settings = kind, settings
    session.flush()
    return row


def get(session: Session, name: str) -> Connection:
    row = session.scalar(select(Connection).where(Connection.name == name))
    if row is None:
        known = ", ".join(session.scalars(select(Connection.name).order_by(Connection.name))) or "none configured"
        raise SourceNotFound(f"no source named {name!r} (sources: {known})")
    return row


def get_by_id(session: Session, connection_id: int) -> Connection:
    row = session.get(Connection, connection_id)
    if row is None:
        raise SourceNotFound(f"source {connection_id} does not exist")
    return row


def connections(session: Session) -> list[Connection]:
    return list(session.scalars(select(Connection).order_by(Connection.name)))


def set_tenant(session: Session, connection_id: int, tenant: str) -> None:
    """The tenant a source's entries are keyed by (Clio: region and account), known once connected."""
    session.execute(update(Connection).where(Connection.id == connection_id).values(source_tenant=tenant))


# Secrets -----------------------------------------------------------------------------------------------

def secret_box(environ: dict[str, str] | None = None) -> MultiFernet:
    """The Fernet keys from ``OCGATE_SECRET_KEY`` (several, comma-separated, to rotate: the first encrypts,
    every one decrypts)."""
    text = (os.environ if environ is None else environ).get(SECRET_KEY_ENV, "")
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise SecretKeyMissing(f"set {SECRET_KEY_ENV} to a Fernet key to keep source credentials (make one with "
                               "`ocgate sources keygen`)")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise SecretKeyMissing(f"{SECRET_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes; make one "
                               "with `ocgate sources keygen`)") from None


def new_secret_key() -> str:
    return Fernet.generate_key().decode("ascii")


def seal(value: dict[str, Any] | str) -> str:
    return secret_box().encrypt(json.dumps(value).encode("utf-8")).decode("ascii")


def unseal(token: str) -> Any:
    try:
        return json.loads(secret_box().decrypt(token.encode("ascii")))
    except InvalidToken:
        raise SecretKeyMissing(f"stored credentials cannot be read with {SECRET_KEY_ENV}: was the key changed? "
                               "Add the old key after the new one, comma-separated, or connect again") from None


@dataclass
class CredentialStore:
    """A source's credentials, read and written each in its own short transaction, so that a token refreshed
    in the middle of a long sync is kept even if the sync then fails."""

    sessions: sessionmaker[Session]
    connection_id: int

    def load(self) -> dict[str, Any] | None:
        with self.sessions() as session:
            sealed = session.scalar(select(Connection.credentials).where(Connection.id == self.connection_id))
        return unseal(sealed) if sealed else None

    def save(self, credentials: dict[str, Any], expires_at: dt.datetime | None = None) -> None:
        sealed = seal(credentials)
        with transaction(self.sessions) as session:
            session.execute(update(Connection).where(Connection.id == self.connection_id)
                            .values(credentials=sealed, credentials_expire_at=expires_at))


# Cursors, runs and the sync lease --------------------------------------------------------------------

def cursor(session: Session, connection_id: int, stream: str = "entries") -> str | None:
    return session.scalar(select(SyncCursor.value).where(SyncCursor.connection_id == connection_id,
                                                         SyncCursor.stream == stream))


def save_cursor(session: Session, connection_id: int, value: str | None, stream: str = "entries") -> None:
    row = session.scalar(select(SyncCursor).where(SyncCursor.connection_id == connection_id,
                                                  SyncCursor.stream == stream))
    if value is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(SyncCursor(connection_id=connection_id, stream=stream, value=value,
                               updated_at=dt.datetime.now(dt.UTC)))
    else:
        row.value, row.updated_at = value, dt.datetime.now(dt.UTC)
    session.flush()


def claim_sync(session: Session, connection_id: int, *, owner: str, lease: dt.timedelta) -> None:
    """Take the source's sync lease, or raise :class:`SyncRunning`. A lease left by a killed worker expires."""
    now = dt.datetime.now(dt.UTC)
    claimed = session.execute(
        update(Connection).where(Connection.id == connection_id, or_(
            Connection.sync_lease_until.is_(None), Connection.sync_lease_until < now,
            Connection.sync_lease_owner == owner))
        .values(sync_lease_until=now + lease, sync_lease_owner=owner)
        .execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        row = session.get(Connection, connection_id)
        until = row.sync_lease_until if row is not None else None
        raise SyncRunning(f"a sync of this source is already running ({row.sync_lease_owner if row else '?'}, "
                          f"lease until {until:%Y-%m-%d %H:%M:%S} UTC)" if until else "a sync is already running")


def release_sync(session: Session, connection_id: int, *, owner: str, finished: bool) -> None:
    values: dict[str, Any] = {"sync_lease_until": None, "sync_lease_owner": None}
    if finished:
        values["last_sync_at"] = dt.datetime.now(dt.UTC)
    session.execute(update(Connection).where(Connection.id == connection_id, Connection.sync_lease_owner == owner)
                    .values(**values).execution_options(synchronize_session=False))


def start_run(session: Session, connection_id: int, *, full: bool) -> SyncRun:
    run = SyncRun(connection_id=connection_id, full=full, started_at=dt.datetime.now(dt.UTC), status="running",
                  counts={})
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run_id: int, *, status: str, counts: dict[str, Any], error: str | None = None) -> None:
    run = session.get(SyncRun, run_id)
    if run is not None:
        run.status, run.counts, run.error, run.finished_at = status, counts, error, dt.datetime.now(dt.UTC)
        session.flush()


def runs(session: Session, connection_id: int, limit: int = 20) -> list[SyncRun]:
    return list(session.scalars(select(SyncRun).where(SyncRun.connection_id == connection_id)
                                .order_by(SyncRun.id.desc()).limit(limit)))


def due_for_sync(session: Session, now: dt.datetime | None = None) -> list[Connection]:
    """Sources whose settings ask for a sync every ``sync_interval_minutes`` and whose last one is that old."""
    now = now or dt.datetime.now(dt.UTC)
    due = []
    for row in connections(session):
        minutes = row.settings.get("sync_interval_minutes")
        if not minutes:
            continue
        if row.last_sync_at is None or row.last_sync_at + dt.timedelta(minutes=float(minutes)) <= now:
            due.append(row)
    return due


# Stored entries of a source -------------------------------------------------------------------------

def stored_ids(session: Session, *, source_system: str, source_tenant: str) -> Iterator[str]:
    """The source ids of a source's entries that are not withdrawn (for a full sync's deletion sweep)."""
    yield from session.scalars(select(EntryRow.source_id).where(
        EntryRow.source_system == source_system, EntryRow.source_tenant == source_tenant,
        EntryRow.state != EntryState.WITHDRAWN).execution_options(yield_per=5000))


def stored_version(session: Session, *, source_system: str, source_tenant: str, source_id: str) -> str | None:
    """The source version of a stored, not withdrawn entry (for a conditional re-fetch)."""
    return session.scalar(select(EntryRow.source_version).where(
        EntryRow.source_system == source_system, EntryRow.source_tenant == source_tenant,
        EntryRow.source_id == source_id, EntryRow.source_line_id.is_(None), EntryRow.state != EntryState.WITHDRAWN))


def withdraw(session: Session, *, source_system: str, source_tenant: str, source_ids: Iterable[str], actor: str,
             reason: str = "deleted at the source") -> intake.IngestResult | None:
    """Withdraw stored entries the source no longer has (deleted, voided). Each goes through ingest as a new
    source version with status ``deleted``, so an invoiced entry becomes a conflict for a reviewer rather than
    silently disappearing from a bill."""
    ids = list(dict.fromkeys(source_ids))
    if not ids:
        return None
    rows = []
    for start in range(0, len(ids), 2000):
        rows += session.execute(select(EntryRow.record, EntryRow.source_version, EntryRow.state).where(
            EntryRow.source_system == source_system, EntryRow.source_tenant == source_tenant,
            EntryRow.source_id.in_(ids[start:start + 2000]), EntryRow.state != EntryState.WITHDRAWN)).all()
    gone = [Entry.model_validate({**record, "status": EntryStatus.DELETED.value, "source_status": reason,
                                  "source_version": f"withdrawn:{version}"[:200]})
            for record, version, _state in rows]
    return intake.ingest(session, gone, actor=actor, source=f"{source_system}:{source_tenant}") if gone else None


# Webhook events and subscriptions -------------------------------------------------------------------

def store_event(session: Session, *, connection_id: int, delivery_key: str, event: str, model: str | None,
                record_id: str | None, payload: dict[str, Any]) -> WebhookEvent:
    """Keep a verified delivery before it is acknowledged. A delivery seen before is a replay:
    :class:`ReplayedDelivery`, and nothing is stored."""
    row = WebhookEvent(connection_id=connection_id, delivery_key=delivery_key, event=event, model=model,
                       record_id=record_id, payload=payload, received_at=dt.datetime.now(dt.UTC), attempts=0)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise ReplayedDelivery("this delivery was received before (a replay): refused") from None
    return row


def pending_events(session: Session, *, received_before: dt.datetime | None = None,
                   limit: int = 500) -> list[WebhookEvent]:
    """Events no job has finished, oldest first (the sweep re-runs them)."""
    query = select(WebhookEvent).where(WebhookEvent.processed_at.is_(None)).order_by(WebhookEvent.id).limit(limit)
    if received_before is not None:
        query = query.where(WebhookEvent.received_at < received_before)
    return list(session.scalars(query))


def event(session: Session, event_id: int) -> WebhookEvent:
    row = session.get(WebhookEvent, event_id)
    if row is None:
        raise NotFound(f"webhook event {event_id} does not exist")
    return row


def event_processed(session: Session, event_id: int, outcome: str) -> None:
    row = event(session, event_id)
    row.attempts += 1
    row.processed_at, row.outcome, row.last_error = dt.datetime.now(dt.UTC), outcome, None
    session.flush()


def event_failed(session: Session, event_id: int, error: str) -> None:
    row = event(session, event_id)
    row.attempts += 1
    row.last_error = error
    session.flush()


def subscriptions(session: Session, connection_id: int | None = None) -> list[WebhookSubscription]:
    query = select(WebhookSubscription).order_by(WebhookSubscription.id)
    if connection_id is not None:
        query = query.where(WebhookSubscription.connection_id == connection_id)
    return list(session.scalars(query))


def save_subscription(session: Session, *, connection_id: int, remote_id: str, model: str, url: str,
                      events: list[str], secret: str | None, status: str,
                      expires_at: dt.datetime | None) -> WebhookSubscription:
    """Record (or update) a subscription registered at the source; its shared secret is kept encrypted."""
    row = session.scalar(select(WebhookSubscription).where(WebhookSubscription.connection_id == connection_id,
                                                           WebhookSubscription.remote_id == remote_id))
    now = dt.datetime.now(dt.UTC)
    if row is None:
        row = WebhookSubscription(connection_id=connection_id, remote_id=remote_id, model=model, url=url,
                                  events=events, created_at=now)
        session.add(row)
    else:
        row.renewed_at = now
    row.url, row.events, row.status, row.expires_at = url, events, status, expires_at
    if secret is not None:
        row.secret = seal(secret)
    session.flush()
    return row


def subscription_secrets(session: Session, connection_id: int) -> dict[str, str]:
    """Remote subscription id -> shared secret, for verifying deliveries."""
    return {row.remote_id: unseal(row.secret) for row in subscriptions(session, connection_id) if row.secret}


def subscriptions_to_renew(session: Session, *, within: dt.timedelta) -> list[WebhookSubscription]:
    limit = dt.datetime.now(dt.UTC) + within
    return list(session.scalars(select(WebhookSubscription).where(
        WebhookSubscription.expires_at.is_not(None), WebhookSubscription.expires_at < limit)
        .order_by(WebhookSubscription.expires_at)))
