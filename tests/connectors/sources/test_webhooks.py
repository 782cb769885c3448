"""Clio webhooks end to end: the subscription's handshake through ocgate's API on loopback, signed deliveries
stored before the answer and processed by a real worker, forged and replayed deliveries refused, the body
treated as a hint only, the sweep, and renewal."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.worker import Worker
from connectors.clio.fake import FakeClio, serving
from connectors.sources import registry, webhooks
from connectors.sources.sync import sync
from engine.store.db import transaction
from engine.store.models import (
    EntryRow,
    EntryState,
    ReviewAction,
    RuleSetStatus,
    WebhookEvent,
    WebhookSubscription,
)
from engine.workflows import rulesets
from tests.conftest import REPO
from tests.connectors.sources.test_clio import connected, env, fake  # noqa: F401  (fixtures)

ACME = (REPO / "rules" / "acme-corp.yaml").read_text()


@dataclass
class Loop:
    fake: FakeClio
    sessions: sessionmaker[Session]
    options: registry.Options
    url: str  # ocgate's API on loopback
    worker: Worker

    def entry(self, activity_id: int) -> EntryRow | None:
        with self.sessions() as session:
            return session.scalar(select(EntryRow).where(EntryRow.source_id == str(activity_id)))

    def wait_for(self, check: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("timed out")

    def events(self) -> list[WebhookEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@pytest.fixture
def loop(sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str],  # noqa: F811
         tmp_path: Path) -> Iterator[Loop]:
    options = connected(sessions, fake, env)
    with transaction(sessions) as session:
        rulesets.add_ruleset_version(session, ACME, status=RuleSetStatus.ACTIVE)
    sync(sessions, "clio", options=options)
    worker = Worker(queue=f"sqlite:///{tmp_path}/queue.db", sessions=sessions, options=options)
    consumer = worker.consumer(workers=1)
    consumer.start()
    app = create_app(sessions=sessions, worker=worker, source_options=options)
    try:
        with serving(app) as (url, _server):
            registered = webhooks.register(sessions, "clio", f"{url}/v1/webhooks/clio", options)
            assert [sub.status for sub in registered] == ["enabled"]  # the handshake reached our API
            yield Loop(fake, sessions, options, url, worker)
    finally:
        consumer.stop(graceful=True)


def test_subscriptions_are_stored_with_their_secret_encrypted(loop: Loop) -> None:
    with loop.sessions() as session:
        [sub] = session.scalars(select(WebhookSubscription))
    webhook = loop.fake.state.webhook(int(sub.remote_id))
    assert sub.status == "enabled" and webhook.status == "enabled"
    assert webhook.shared_secret not in sub.secret
    assert sub.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    assert list(webhook.events) == ["created", "updated", "deleted"] and webhook.model == "activity"


def test_an_edited_activity_is_judged_again_within_seconds(loop: Loop) -> None:
    activity = next(a for a in loop.fake.state.activities if a.type == "TimeEntry" and not a.flat_rate
                    and a.price < 900 and a.matter.client.ledes_client_id == "ACME01")
    before = loop.entry(activity.id)
    assert before is not None
    edited = loop.fake.state.edit(activity.id, price=activity.price + 2000)  # far over Acme's rate caps
    started = time.monotonic()
    assert loop.fake.state.deliver("updated", activity.id) == 1
    assert loop.fake.state.deliveries[-1].status == 200
    after = loop.wait_for(lambda: (row := loop.entry(activity.id)) and row.source_version == edited.etag and row)
    assert time.monotonic() - started < 5
    assert after.state == EntryState.IN_REVIEW and after.rate == edited.price
    with loop.sessions() as session:
        actions = [a.action for a in session.scalars(select(ReviewAction).where(ReviewAction.entry_id == after.id))]
    assert actions[-1] == "updated" and actions.count("updated") == 1
    [event] = loop.events()
    assert event.processed_at is not None and event.record_id == str(activity.id)


def test_a_created_activity_arrives_and_a_deleted_one_is_withdrawn(loop: Loop) -> None:
    added = loop.fake.state.add_activity(note="Drafted and revised the motion to compel production of documents")
    loop.fake.state.deliver("created", added.id)
    assert loop.wait_for(lambda: loop.entry(added.id))
    gone = loop.fake.state.activities[3]
    loop.fake.state.delete(gone.id)
    loop.fake.state.deliver("deleted", gone.id)
    row = loop.wait_for(lambda: (r := loop.entry(gone.id)) and r.state == EntryState.WITHDRAWN and r)
    assert row.state == EntryState.WITHDRAWN


def test_the_body_is_only_a_hint(loop: Loop) -> None:
    activity = loop.fake.state.activities[7]
    loop.fake.state.deliver("deleted", activity.id)  # but Clio still has it
    loop.wait_for(lambda: all(e.processed_at for e in loop.events()) and loop.events())
    row = loop.entry(activity.id)
    assert row.state != EntryState.WITHDRAWN and row.source_version == activity.etag
    [event] = loop.events()
    assert event.outcome == "unchanged"  # re-fetched conditionally: Clio answered 304


def test_forged_missing_and_replayed_signatures_get_401_and_change_nothing(loop: Loop) -> None:
    activity = loop.fake.state.activities[9]
    assert loop.fake.state.deliver("updated", activity.id, forged=True) == 1
    assert loop.fake.state.deliveries[-1].status == 401
    headers, body = loop.fake.state.signed_delivery("updated", activity.id)
    unsigned = {k: v for k, v in headers.items() if k.lower() != "x-hook-signature"}
    assert httpx.post(f"{loop.url}/v1/webhooks/clio", content=body, headers=unsigned).status_code == 401
    tampered = httpx.post(f"{loop.url}/v1/webhooks/clio", content=body.replace(b"updated", b"deleted"),
                          headers=headers)
    assert tampered.status_code == 401 and tampered.json()["error"]["code"] == "webhook_rejected"
    assert loop.events() == []
    loop.fake.state.deliver("updated", activity.id)
    assert loop.fake.state.deliveries[-1].status == 200
    assert loop.fake.state.replay_last() == 401
    assert len(loop.events()) == 1
    unknown = httpx.post(f"{loop.url}/v1/webhooks/nope", content=body, headers=headers)
    assert unknown.status_code == 404


def test_an_event_stored_while_no_worker_ran_is_processed_by_the_sweep(
        sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str]) -> None:  # noqa: F811
    options = connected(sessions, fake, env)
    sync(sessions, "clio", options=options)

    down = Worker(queue="redis://127.0.0.1:1/0", sessions=sessions, options=options)  # nothing listens there
    app = create_app(sessions=sessions, worker=down, source_options=options)
    with serving(app) as (url, _server):
        webhooks.register(sessions, "clio", f"{url}/v1/webhooks/clio", options)
        activity = fake.state.activities[2]
        edited = fake.state.edit(activity.id, note="Corrected narrative: reviewed the production set")
        headers, body = fake.state.signed_delivery("updated", activity.id)
        answer = httpx.post(f"{url}/v1/webhooks/clio", content=body, headers=headers)
    assert answer.status_code == 200  # stored: acknowledged even though the queue is down
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
    assert webhooks.sweep(sessions, options, older_than=dt.timedelta(seconds=60)) == []  # too recent yet
    [(_event_id, outcome)] = webhooks.sweep(sessions, options, older_than=dt.timedelta(0))
    assert "1 changed" in outcome
    with sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == str(activity.id)))
        assert row.source_version == edited.etag
    assert webhooks.sweep(sessions, options, older_than=dt.timedelta(0)) == []  # processed once


def test_subscriptions_are_renewed_before_they_expire(loop: Loop) -> None:
    with transaction(loop.sessions) as session:
        sub = session.scalar(select(WebhookSubscription))
        sub.expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert webhooks.renew(loop.sessions, loop.options, within=dt.timedelta(days=1)) == []  # not due yet
    [renewed] = webhooks.renew(loop.sessions, loop.options)
    assert renewed.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    with loop.sessions() as session:
        stored = session.scalar(select(WebhookSubscription))
        assert stored.renewed_at is not None and stored.expires_at == renewed.expires_at
    assert loop.fake.state.webhook(int(renewed.remote_id)).expires_at.startswith(
        renewed.expires_at.strftime("%Y-%m-%d"))
