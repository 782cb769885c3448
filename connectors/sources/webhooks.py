"""Webhooks from sources: received, verified and stored before they are acknowledged; processed by a job,
which re-fetches the record (the body is only a hint) and judges it with the stored entries of its
timekeeper and day; swept when no job finished them; subscriptions registered and renewed.

A crash loses nothing: an event is committed before the source hears 2xx, and an event no job finished is
processed again by the sweep. Processing is idempotent (ingest skips a version it has).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from connectors.sources import registry
from connectors.sources.base import UNCHANGED, SourceError, Subscription
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.workflows import intake, sources, timekeepers

log = logging.getLogger("ocgate.webhooks")

RENEW_WITHIN = dt.timedelta(days=7)  # renew subscriptions this long before they expire (Clio: 31 days at most)
SWEEP_AFTER = dt.timedelta(seconds=60)  # an event no job finished within this is processed by the sweep
HANDSHAKE_WAIT = 5.0  # seconds ``register`` waits for the source's handshake
PATH_TOKEN = "path_token"  # the query key a callback path's token is handed to ``verify_webhook`` under


@dataclass(frozen=True)
class Received:
    event_id: int | None = None  # None for a handshake
    headers: dict[str, str] = field(default_factory=dict)  # to send back (a handshake's echo)


def receive(sessions: sessionmaker[Session], name: str, headers: Mapping[str, str], body: bytes,
            options: registry.Options | None = None, query: Mapping[str, str] | None = None,
            path_token: str | None = None) -> Received:
    """Verify a delivery and store it; raises WebhookRejected (bad or missing signature or token) or
    ReplayedDelivery. ``path_token``: the last segment of a callback path (``/v1/webhooks/NAME/TOKEN``), for sources
    that sign nothing; the source finds it in the query under :data:`PATH_TOKEN`, where only the path can put it."""
    query = {key: value for key, value in (query or {}).items() if key != PATH_TOKEN}
    if path_token is not None:
        query[PATH_TOKEN] = path_token
    with transaction(sessions) as session:
        connection = sources.get(session, name)
        secrets = sources.subscription_secrets(session, connection.id)
        source = registry.open_source(sessions, connection, options or registry.Options())
        try:
            delivery = source.verify_webhook(headers, body, secrets, query)
        finally:
            source.close()
        if delivery.handshake:
            return Received(headers=delivery.answer_headers)
        row = sources.store_event(session, connection_id=connection.id, delivery_key=delivery.key,
                                  event=delivery.event or "", model=delivery.model, record_id=delivery.record_id,
                                  payload=delivery.payload)
        return Received(event_id=row.id)


def process(sessions: sessionmaker[Session], event_id: int, options: registry.Options | None = None,
            context: EvaluationContext | None = None) -> str:
    """Re-fetch the record an event is about and ingest it (or withdraw it when the source no longer has it),
    judged as of ``context`` (default: today). Returns what happened; a source failure is recorded on the event
    and raised (the job retries)."""
    with sessions() as session:
        event = sources.event(session, event_id)
        if event.processed_at is not None:
            return event.outcome or "processed"
        connection = sources.get_by_id(session, event.connection_id)
        record_id = event.record_id
        known = None if not record_id else sources.stored_version(
            session, source_system=connection.source_system, source_tenant=connection.source_tenant,
            source_id=record_id)
    source = registry.open_source(sessions, connection, options or registry.Options())
    try:
        entries = source.fetch(record_id, known) if record_id else None
    except SourceError as exc:
        with transaction(sessions) as session:
            sources.event_failed(session, event_id, exc.message)
        raise
    finally:
        source.close()
    actor = f"webhook:{connection.name}"
    with transaction(sessions) as session:
        if not record_id:
            outcome = "ignored: no record id"
        elif entries is UNCHANGED:
            outcome = "unchanged"
        elif entries is None:
            result = sources.withdraw(session, source_system=connection.source_system,
                                      source_tenant=connection.source_tenant, source_ids=[record_id], actor=actor)
            outcome = f"withdrawn ({result.withdrawn if result else 0} entries)"
        else:
            assert isinstance(entries, list)
            directory = timekeepers.Directory.load(session, connection.source_system)
            result = intake.ingest(session, [directory.enrich(e) for e in entries], actor=actor,
                                   source=f"{connection.name} webhook {event_id}", context=context)
            outcome = (f"{result.created} new, {result.updated} changed, {result.unchanged} unchanged, "
                       f"{result.in_review} to review")
        sources.event_processed(session, event_id, outcome)
    return outcome


def sweep(sessions: sessionmaker[Session], options: registry.Options | None = None,
          older_than: dt.timedelta = SWEEP_AFTER, context: EvaluationContext | None = None) -> list[tuple[int, str]]:
    """Process again the events no job finished (the worker died, the source was down)."""
    with sessions() as session:
        waiting = [row.id for row in sources.pending_events(
            session, received_before=dt.datetime.now(dt.UTC) - older_than)]
    done = []
    for event_id in waiting:
        try:
            done.append((event_id, process(sessions, event_id, options, context)))
        except SourceError as exc:
            done.append((event_id, f"failed: {exc.message}"))
    return done


def register(sessions: sessionmaker[Session], name: str, public_url: str, options: registry.Options | None = None,
             handshake_wait: float = HANDSHAKE_WAIT) -> list[Subscription]:
    """Create the source's subscriptions pointing at ``public_url`` and keep them (secrets encrypted). Waits a
    few seconds for the source's handshake to reach ocgate, so the status said is the one that counts."""
    connection, source = registry.open_named(sessions, name, options or registry.Options())
    try:
        created = source.register_webhooks(public_url)
        deadline = time.monotonic() + handshake_wait
        while any(sub.status == "pending" for sub in created) and time.monotonic() < deadline:
            time.sleep(0.2)
            created = [source.webhook_state(sub) if sub.status == "pending" else sub for sub in created]
    finally:
        source.close()
    with transaction(sessions) as session:
        for sub in created:
            sources.save_subscription(session, connection_id=connection.id, remote_id=sub.remote_id, model=sub.model,
                                      url=sub.url, events=sub.events, secret=sub.secret, status=sub.status,
                                      expires_at=sub.expires_at)
        row = sources.get(session, name)
        row.settings = {**row.settings, "webhook_public_url": public_url}
    return created


def renew(sessions: sessionmaker[Session], options: registry.Options | None = None,
          within: dt.timedelta = RENEW_WITHIN) -> list[Subscription]:
    """Extend every subscription that expires within ``within``."""
    with sessions() as session:
        due = [(row.connection_id, Subscription(remote_id=row.remote_id, model=row.model, url=row.url,
                                                events=list(row.events), secret=None, status=row.status,
                                                expires_at=row.expires_at))
               for row in sources.subscriptions_to_renew(session, within=within)]
    renewed = []
    for connection_id, sub in due:
        with sessions() as session:
            connection = sources.get_by_id(session, connection_id)
        source = registry.open_source(sessions, connection, options or registry.Options())
        try:
            fresh = source.renew_webhook(sub)
        except SourceError as exc:
            log.warning("could not renew webhook %s of %s: %s", sub.remote_id, connection.name, exc.message)
            continue
        finally:
            source.close()
        with transaction(sessions) as session:
            sources.save_subscription(session, connection_id=connection_id, remote_id=fresh.remote_id,
                                      model=fresh.model, url=fresh.url, events=fresh.events, secret=fresh.secret,
                                      status=fresh.status, expires_at=fresh.expires_at)
        renewed.append(fresh)
    return renewed
