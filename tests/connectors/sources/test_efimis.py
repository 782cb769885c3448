"""The Efimis connector against the fake Efimis on loopback: client-credentials tokens, mapping and its flags,
incremental and full syncs over the billing-period window, the faults Efimis produces (429, gateway 5xx,
EXECUTION_TIMEOUT, timeouts, dropped connections, key rollover, changes and re-dating between slices) and
webhooks through the API route. A real ``ocgate sync`` SIGKILLed at random points is in test_efimis_killed.py."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.worker import Worker
from connectors.clio.fake import serving
from connectors.efimis.fake import (
    DEMO_FEE_EARNERS,
    FakeEfimis,
    WorkItem,
    load_demo,
    running_fake_efimis,
    timekeeper_rows,
)
from connectors.sources import efimis, registry, webhooks
from connectors.sources.base import NotConnected, SourceError, SourceUnavailable, WebhookRejected
from connectors.sources.sync import sync
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import (
    Connection,
    EntryRow,
    RuleSetStatus,
    ViolationRow,
    WebhookEvent,
    WebhookSubscription,
)
from engine.workflows import entries, rulesets, sources, timekeepers
from tests.conftest import REPO

TIMEKEEPERS = REPO / "engine" / "data" / "samples" / "timekeepers.csv"
SECRET_ENV = "OCGATE_TEST_EFIMIS_SECRET"
ITEMS = 600


class Sleeps:
    """Records the pauses the connector asks for instead of sleeping (tests stay fast)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeEfimis]:
    with running_fake_efimis(work_items=ITEMS, seed=11) as served:
        yield served


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeEfimis) -> dict[str, str]:
    monkeypatch.setenv(sources.SECRET_KEY_ENV, Fernet.generate_key().decode())
    monkeypatch.setenv(SECRET_ENV, fake.client_secret)
    return {SECRET_ENV: fake.client_secret}


def connected(sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str], *, table: bool = True,
              **more: Any) -> registry.Options:
    """A configured, connected Efimis source and the firm's timekeeper table with the fee earners' ids."""
    with transaction(sessions) as session:
        registry.configure(session, "efimis", kind="efimis",
                           settings={key: value for key, value in fake.settings(
                               SECRET_ENV, **{"timeout": 2, "overlap_minutes": 0.0001, **more}).items()
                               if value is not None})
        if table:
            timekeepers.import_csv(session, TIMEKEEPERS.read_text() + timekeeper_rows(), source="table")
    registry.connect(sessions, "efimis", options=registry.Options(environ=env))
    return registry.Options(environ=env, sleep=Sleeps(), fetcher=False)  # in this process: its pauses are seen


def stored(sessions: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    with sessions() as session:
        tenant = sources.get(session, "efimis").source_tenant
        return {item["entry"]["source_id"]: item for item in entries.export(
            session, source_system="efimis", source_tenant=tenant)}


def live(item: WorkItem) -> bool:
    return item.state in ("Finalised", "Billed") and item.write_off_date is None


def assert_mirrors(sessions: sessionmaker[Session], fake: FakeEfimis) -> None:
    """Every live work item is stored once, at its latest version; nothing else is live."""
    found = {key: item for key, item in stored(sessions).items() if item["state"] != "withdrawn"}
    expected = {item.id: item.version for item in fake.state.work_items if live(item)}
    assert set(found) == set(expected)
    assert {key: int(item["source_version"]) for key, item in found.items()} == expected


def credentials(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as session:
        return sources.CredentialStore(sessions, session.scalar(select(Connection.id))).load() or {}


# Settings and tokens ------------------------------------------------------------------------------

def test_settings_never_hold_secrets_and_are_checked() -> None:
    problems = efimis.check_settings({"region": "us", "client_id": "x", "tenant": "bad alias!",
                                      "client_secret": "s", "colour": 1, "period_from": "1/1/2026",
                                      "task_type_codes": {"DRAFT": {"task": "A103"}, "PLAN": "L120"},
                                      "field_names": {"matter_title": "matterTitle"}})
    for expected in ("region 'us'", "tenant 'bad alias!'", "never store client_secret", "unknown setting 'colour'",
                     "period_from '1/1/2026'", "'A103' is not a UTBMS task code", "task_type_codes['PLAN']",
                     "field_names: 'matter_title'"):
        assert any(expected in p for p in problems), expected
    assert efimis.check_settings({"base_url": "http://x", "client_id": "x", "tenant": "t"}) == [
        "without region, Efimis needs currency (the tenant's billing currency, e.g. AUD)"]
    assert efimis.check_settings({"region": "uk", "client_id": "x", "tenant": "firm-1"}) == []
    assert efimis.host({"region": "uk"}) == "https://api.uk.efimis.com"


def test_connecting_keeps_an_encrypted_token_and_names_the_tenant(sessions: sessionmaker[Session], fake: FakeEfimis,
                                                                  env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    with sessions() as session:
        row = session.scalar(select(Connection))
        assert row.source_tenant == f"127.0.0.1/{fake.state.tenant}"
        assert row.credentials and "access_token" not in row.credentials
        assert dt.timedelta(hours=11) < row.credentials_expire_at - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=12)
    assert set(credentials(sessions)) == {"access_token", "expires_at"}
    [request] = [r for r in fake.state.log if r.path.endswith("/token")]
    assert request.method == "POST" and request.status == 200


def test_a_tenant_without_consent_a_wrong_or_rotated_secret_are_refused_without_showing_it(
        sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str]) -> None:
    fake.state.enabled = False
    with pytest.raises(NotConnected, match="has not enabled the application"):
        connected(sessions, fake, env)
    fake.state.enabled = True
    wrong = {SECRET_ENV: "not-the-secret"}
    with pytest.raises(NotConnected, match="invalid_client") as refused:
        registry.connect(sessions, "efimis", options=registry.Options(environ=wrong))
    assert "not-the-secret" not in str(refused.value)
    with pytest.raises(NotConnected, match="client credentials"):
        registry.connect(sessions, "efimis", code="abc", options=registry.Options(environ=env))
    registry.connect(sessions, "efimis", options=registry.Options(environ=env))
    fake.state.expire_tokens()
    fake.state.client_secret = "rotated"
    with pytest.raises(NotConnected, match="refused the client credentials") as revoked:
        sync(sessions, "efimis", options=registry.Options(environ=env, sleep=Sleeps(), fetcher=False))
    assert env[SECRET_ENV] not in str(revoked.value)


def test_a_token_is_renewed_before_it_expires_and_after_a_key_rollover(sessions: sessionmaker[Session],
                                                                       fake: FakeEfimis, env: dict[str, str]) -> None:
    fake.state.token_ttl = 120  # inside the five-minute margin: renewed before the sync's first call
    options = connected(sessions, fake, env)
    fake.state.token_ttl = 43_200
    before = credentials(sessions)["access_token"]
    fake.state.between_pages(1, lambda state: state.expire_tokens())  # any call may then answer 401
    report = sync(sessions, "efimis", options=options)
    assert report.complete
    assert credentials(sessions)["access_token"] != before
    assert [r.status for r in fake.state.log if r.status == 401] == [401]
    assert len([r for r in fake.state.log if r.path.endswith("/token")]) == 3  # connect, margin, rollover
    assert_mirrors(sessions, fake)


# Mapping ----------------------------------------------------------------------------------------------

def test_a_full_sync_maps_every_live_work_item_exactly_once(sessions: sessionmaker[Session], fake: FakeEfimis,
                                                            env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    report = sync(sessions, "efimis", options=options, full=True)
    assert report.complete and report.pulled == ITEMS
    assert report.new == sum(1 for item in fake.state.work_items if live(item))
    assert_mirrors(sessions, fake)
    found = stored(sessions)
    timed = next(w for w in fake.state.work_items if live(w) and w.item_type == "TimedFee" and w.duration_ticks
                 and w.task_type and w.task_type.code == "DRAFT" and w.matter.client.code == "ACME" and w.billable)
    entry = found[timed.id]["entry"]
    assert Decimal(entry["hours_billed"]) == Decimal(entry["quantity"]) == timed.units * 6 / 60
    assert Decimal(entry["rate"]) == timed.rate and Decimal(entry["amount"]) == timed.total_base
    assert entry["duration_seconds_raw"] == timed.duration_ticks // 10_000_000
    assert (entry["fee_basis"], entry["entry_subtype"], entry["unit_of_measure"]) == ("hourly", "TimedFee", "hour")
    assert (entry["utbms_task_code"], entry["utbms_activity_code"]) == ("L250", "A103")
    assert (entry["ledes_client_id"], entry["client_name"]) == ("ACME01", "Acme Corporation")
    assert (entry["law_firm_matter_id"], entry["client_matter_id"]) == (timed.matter.number,
                                                                        timed.matter.client_reference)
    assert entry["timekeeper_ledes_id"] == timed.employee.ledes_id and entry["timekeeper_classification"]
    assert entry["timekeeper_first_name"] == timed.employee.first_name and entry["currency"] == "GBP"
    assert Decimal(entry["standard_rate"]) > 0  # the table's GBP rate
    assert entry["work_date"] == timed.entry_date.isoformat() and entry["source_version"] == str(timed.version)
    letter = next(w for w in fake.state.work_items if live(w) and w.item_type == "ItemisedFee")
    mapped = found[letter.id]["entry"]
    assert (mapped["fee_basis"], Decimal(mapped["quantity"]), Decimal(mapped["rate"])) == \
        ("fixed_template", letter.units, letter.rate)
    assert "hours_billed" not in mapped
    billed = next(w for w in fake.state.work_items if w.state == "Billed")
    assert found[billed.id]["entry"]["status"] == "billed"
    assert not {w.id for w in fake.state.work_items if not live(w)} & set(found)  # pending, written off, deleted


def test_what_cannot_be_mapped_is_flagged_never_defaulted(sessions: sessionmaker[Session], fake: FakeEfimis,
                                                          env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, table=False)
    state = fake.state
    items = [w for w in state.work_items if live(w) and w.billable and w.item_type == "TimedFee"]
    filing = next(w for w in items if w.task_type and w.task_type.code == "FILING")
    uncoded = next(w for w in items if w.task_type is None)
    initech = next(w for w in items if w.matter.client.code == "INITECH")
    discounted = next(w for w in items if w.total_base != (w.units * w.unit_duration / 60 * w.rate).quantize(
        Decimal("0.01")))
    no_unit = state.edit(next(w for w in items if w not in (filing, uncoded, initech, discounted)).id,
                         unit_duration=None)
    report = sync(sessions, "efimis", options=options)
    assert report.quality == report.new and report.quality_flags["UNKNOWN_TIMEKEEPER"] == report.new
    found = stored(sessions)
    for item, flag in ((filing, "UNMAPPED_TASK_TYPE"), (uncoded, "MISSING_UTBMS_TASK"),
                       (initech, "NO_LEDES_CLIENT_ID"), (discounted, "AMOUNT_MISMATCH"),
                       (no_unit, "MISSING_UNIT_DURATION")):
        assert flag in found[item.id]["data_quality_flags"], (flag, item)
        assert found[item.id]["state"] == "in_review" and found[item.id]["worst_severity"] == "error"
    assert "utbms_task_code" not in found[filing.id]["entry"]  # never a silent L120
    assert Decimal(found[discounted.id]["entry"]["amount"]) == discounted.total_base  # totalBase, not corrected
    assert "hours_billed" not in found[no_unit.id]["entry"]


# Pulls: slices, incremental syncs, changes between slices ------------------------------------------

def test_every_slice_is_sorted_on_work_date_then_id_within_the_window_deleted_included(
        sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, period_from=None, period_months=2)
    sync(sessions, "efimis", options=options)
    slices = [r.variables for r in fake.state.log if r.variables]
    # Ending on id, the order is unique (ties would come back shuffled); led by the work date, a batch holds a few
    # days rather than a few entries of every day.
    assert slices and all(v["slice"]["sortBy"] == [{"colId": "entryDate", "desc": False},
                                                   {"colId": "id", "desc": False}] for v in slices)
    assert all(v["slice"]["endRow"] - v["slice"]["startRow"] <= 500 and v["criteria"]["includeDeleted"]
               for v in slices)
    window = slices[0]["criteria"]["entryPeriod"]["fixedPeriod"]
    today = dt.date.today()
    assert window["min"] == (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1).isoformat()
    assert dt.date.fromisoformat(window["max"]) > today + dt.timedelta(days=360)
    with transaction(sessions) as session:  # a column name this tenant does not have fails loudly
        registry.configure(session, "efimis", kind="efimis", settings={
            **fake.settings(SECRET_ENV), "field_names": {"matter_name": "matterTitle"}})
    with pytest.raises(SourceError, match="matterTitle") as refused:
        sync(sessions, "efimis", options=options)
    assert not refused.value.retryable


def test_an_incremental_sync_takes_what_changed_and_withdraws_what_left(sessions: sessionmaker[Session],
                                                                        fake: FakeEfimis, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "efimis", options=options)
    state = fake.state
    finalised = [w for w in state.work_items if w.state == "Finalised"]
    pending = next(w for w in state.work_items if w.state == "Pending")
    edited = state.edit(finalised[0].id, title="Revised narrative after partner review of the draft advice")
    unfinalised, written_off, deleted = (state.unfinalise(finalised[1].id), state.write_off(finalised[2].id),
                                         state.delete(finalised[3].id))
    added = state.add_work_item()
    state.finalise(pending.id)
    report = sync(sessions, "efimis", options=options)
    assert (report.new, report.changed, report.withdrawn, report.unchanged) == (2, 1, 3, 0)
    assert report.pulled == ITEMS + 1  # the whole window is read; only what changed is mapped
    found = stored(sessions)
    assert found[edited.id]["entry"]["narrative"].startswith("Revised narrative")
    assert {found[w.id]["state"] for w in (unfinalised, written_off, deleted)} == {"withdrawn"}
    assert added.id in found and pending.id in found
    assert_mirrors(sessions, fake)
    refinalised = state.finalise(unfinalised.id)
    sync(sessions, "efimis", options=options)
    assert stored(sessions)[refinalised.id]["state"] != "withdrawn"  # finalised again: back in the queue
    for item in finalised[4:6]:
        state.delete(item.id)
    report = sync(sessions, "efimis", options=options, full=True)  # maps every row, withdraws what is not live
    assert (report.pulled, report.withdrawn, report.new, report.changed) == (ITEMS + 1, 2, 0, 0)
    assert_mirrors(sessions, fake)


def test_rows_removed_and_added_ahead_of_the_position_between_slices_lose_nothing(
        sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    before = [w.id for w in fake.state.work_items]
    removed = before[100:140]  # read by the first slice: gone before the second, which shifts every row up by 40
    late = next(w.id for w in reversed(fake.state.work_items) if live(w))

    def meanwhile(state: Any) -> None:
        for item_id in removed:
            state.edit(item_id, entry_date=dt.date(2025, 6, 1))  # re-dated out of the window
        for _ in range(30):
            state.add_work_item()  # at random places in id order
        state.edit(late, title="Edited before its slice was read")

    fake.state.between_pages(1, meanwhile)
    report = sync(sessions, "efimis", options=options)
    found = stored(sessions)
    kept = {w.id for w in fake.state.work_items if live(w) and w.id in set(before) and w.id not in removed}
    assert kept <= set(found)  # an offset pager would have skipped 40 of them
    assert found[late]["entry"]["narrative"] == "Edited before its slice was read"
    assert (report.changed, report.unchanged) == (0, 0)  # none read twice
    sync(sessions, "efimis", options=options)  # the items added behind the position arrive with the next sync
    assert {w.id for w in fake.state.work_items if live(w) and w.entry_date.year == 2026} <= set(stored(sessions))


SORT_VALUES = {"id": lambda w: w.id, "entryDate": lambda w: w.entry_date}


@pytest.mark.parametrize("redated", [5, efimis.ANCHORS])
def test_re_dating_the_rows_a_slice_ended_on_loses_nothing(sessions: sessionmaker[Session], fake: FakeEfimis,
                                                           env: dict[str, str], redated: int) -> None:
    """Efimis lets a fee earner re-date a work item at any time. The last rows the first slice ended on (the
    anchors the next slice looks for; some, or all of them) are moved three weeks later while the pull pages: no
    row the pull has not read yet may be passed over."""
    options = connected(sessions, fake, env)
    moved: list[str] = []

    def meanwhile(state: Any) -> None:
        asked = next(r.variables for r in reversed(state.log) if r.variables)
        period, order = asked["criteria"]["entryPeriod"]["fixedPeriod"], asked["slice"]["sortBy"]
        rows = [w for w in state.work_items
                if period["min"] <= w.entry_date.isoformat() <= period["max"]]
        for column in reversed(order):
            rows.sort(key=SORT_VALUES[column["colId"]], reverse=column["desc"])
        for item in rows[asked["slice"]["startRow"]:asked["slice"]["endRow"]][-redated:]:
            moved.append(state.edit(item.id, entry_date=item.entry_date + dt.timedelta(days=21)).id)

    fake.state.between_pages(1, meanwhile)
    report = sync(sessions, "efimis", options=options)
    assert len(moved) == redated
    untouched = {w.id for w in fake.state.work_items if live(w) and w.id not in moved}
    assert untouched <= set(stored(sessions))  # none passed over by the second slice
    # A few moved: the slice goes on after the last anchor still in its place, and meets the moved rows again at
    # their new dates. All moved: nothing marks the place, and the window is read again from its start.
    assert report.pulled == (ITEMS + redated if redated < efimis.ANCHORS else ITEMS + 500)
    sync(sessions, "efimis", options=options)  # the re-dated ones changed after the pull began: taken next time
    assert_mirrors(sessions, fake)


# Faults ------------------------------------------------------------------------------------------------

def test_429s_gateway_errors_timeouts_dropped_connections_and_execution_timeouts_are_retried(
        sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str]) -> None:
    # The client waits 1.5 s and the slow answer takes 4: on a loaded machine (the fake answers from a thread of
    # this process) a normal answer can take more than half a second, which a tighter timeout would count too.
    options = connected(sessions, fake, env, timeout=1.5)
    state = fake.state
    state.fail_next(1, status=429, path="/v1/tasktypes", retry_after=7)
    state.fail_next(1, status=503, path="/graphql")
    state.fail_next(1, status=500, path="/v1/entities")
    state.between_pages(1, lambda s: s.drop_next(1, path="/graphql"))
    state.between_pages(1, lambda s: s.timeout_next(2))
    state.between_pages(1, lambda s: s.slow_next(1, 4.0, path="/graphql"))
    report = sync(sessions, "efimis", options=options)
    assert report.complete
    faults = [r.fault for r in state.log if r.fault]
    assert sorted(faults) == ["drop", "slow", "status", "status", "status", "timeout", "timeout"]
    assert len(options.sleep.pauses) == 7 and all(0 < p <= 30 for p in options.sleep.pauses)
    assert 7 in options.sleep.pauses  # the 429's Retry-After
    assert_mirrors(sessions, fake)


def test_a_source_that_keeps_failing_stops_the_sync_which_resumes_later(sessions: sessionmaker[Session],
                                                                        fake: FakeEfimis, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, max_attempts=3)
    fake.state.between_pages(1, lambda state: state.fail_next(3, status=502, path="/graphql"))
    with pytest.raises(SourceUnavailable, match="502") as failed:
        sync(sessions, "efimis", options=options, batch_entries=100)
    assert failed.value.retryable
    partial = stored(sessions)
    with sessions() as session:
        cursor = json.loads(sources.cursor(session, session.scalar(select(Connection.id))))
    assert 0 < len(partial) < ITEMS and cursor["row"] == 500 and len(cursor["anchors"]) == 20
    fake.state.log.clear()
    report = sync(sessions, "efimis", options=options, batch_entries=100)
    assert report.complete and report.pulled == ITEMS - 500 and report.unchanged == 0
    first = next(r.variables for r in fake.state.log if r.variables)
    assert first["slice"]["startRow"] == 480  # resumed where it stopped, the anchors re-read
    assert_mirrors(sessions, fake)


@pytest.mark.slow
def test_a_sync_reads_the_source_in_a_fetcher_process(sessions: sessionmaker[Session], fake: FakeEfimis,
                                                      env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    report = sync(sessions, "efimis", options=registry.Options(environ=env, fetcher=True), batch_entries=100)
    assert report.complete and report.batches == 2
    assert_mirrors(sessions, fake)


# Webhooks ----------------------------------------------------------------------------------------------

def signed(secret: str, request_id: str, stamp: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), f"{request_id}|{stamp}".encode(), hashlib.sha256)
                            .digest()).decode()


def test_a_delivery_is_checked_before_anything_is_read_from_it() -> None:
    source = efimis.EfimisSource("e", {"region": "au", "tenant": "firm", "client_id": "x"}, None,  # type: ignore[arg-type]
                                 environ={})
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = json.dumps({"type": "WorkItemUpdated", "requestId": "r-1",
                       "data": json.dumps({"tenant": "firm", "workItemId": "w-1"})}).encode()
    good = {"X-PE2-REQUEST-ID": "r-1", "X-PE2-TIMESTAMP": now, "X-PE2-WEBHOOK-SIGNATURE": signed("s3", "r-1", now)}
    delivery = source.verify_webhook(good, body, {"other": "s1", "mine": "s3"})
    assert (delivery.key, delivery.event, delivery.model, delivery.record_id) == ("r-1", "WorkItemUpdated",
                                                                                  "workitem", "w-1")
    stale = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)).isoformat()
    for headers, reason in (({**good, "X-PE2-WEBHOOK-SIGNATURE": signed("s2", "r-1", now)}, "does not match"),
                            ({k: v for k, v in good.items() if k != "X-PE2-TIMESTAMP"}, "no X-PE2"),
                            ({**good, "X-PE2-WEBHOOK-SIGNATURE": "%%%"}, "not base64"),
                            ({**good, "X-PE2-TIMESTAMP": stale,
                              "X-PE2-WEBHOOK-SIGNATURE": signed("s3", "r-1", stale)}, "tolerance"),
                            ({**good, "X-PE2-REQUEST-ID": "r-2", "X-PE2-WEBHOOK-SIGNATURE": signed("s3", "r-2", now)},
                             "not the signed one")):
        with pytest.raises(WebhookRejected, match=reason):
            source.verify_webhook(headers, body, {"mine": "s3"})
    invoice = json.dumps({"type": "InvoiceIssued", "requestId": "r-1", "data": "{}"}).encode()
    assert source.verify_webhook(good, invoice, {"mine": "s3"}).record_id is None  # stored, then ignored


@pytest.fixture
def hooked(sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str]) -> Iterator[tuple[str,
                                                                                                    registry.Options]]:
    """ocgate's API on loopback with the source synced and its webhook registered (no worker: tests process)."""
    options = connected(sessions, fake, env)
    sync(sessions, "efimis", options=options)
    down = Worker(queue="redis://127.0.0.1:1/0", sessions=sessions, options=options)  # nothing listens there
    with serving(create_app(sessions=sessions, worker=down, source_options=options)) as (url, _server):
        webhooks.register(sessions, "efimis", f"{url}/v1/webhooks/efimis", options)
        yield url, options


def events(sessions: sessionmaker[Session]) -> list[WebhookEvent]:
    with sessions() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def process_all(sessions: sessionmaker[Session], options: registry.Options) -> list[str]:
    return [outcome for _, outcome in webhooks.sweep(sessions, options, older_than=dt.timedelta(0))]


def test_the_subscription_has_a_fixed_id_and_an_encrypted_secret_of_ours(
        sessions: sessionmaker[Session], fake: FakeEfimis, hooked: tuple[str, registry.Options]) -> None:
    url, options = hooked
    [hook] = fake.state.webhooks
    with sessions() as session:
        [sub] = session.scalars(select(WebhookSubscription))
    assert sub.remote_id == hook.id and sub.status == "enabled" and sub.expires_at is None
    assert hook.secret not in sub.secret and len(hook.secret) >= 40
    assert set(hook.events) == set(efimis.WORK_ITEM_EVENTS) and hook.url == f"{url}/v1/webhooks/efimis"
    again = webhooks.register(sessions, "efimis", f"{url}/v1/webhooks/efimis", options)
    assert [s.remote_id for s in again] == [hook.id] and len(fake.state.webhooks) == 1  # replaced, not added
    connection, source = registry.open_named(sessions, "efimis", options)
    try:
        fake.state.disable_webhook(hook.id)
        assert source.webhook_state(again[0]).status == "disabled"
        renewed = source.renew_webhook(again[0])
        assert renewed.remote_id == hook.id and fake.state.webhook(hook.id).enabled and renewed.secret != hook.secret
        assert fake.state.webhook(hook.id).secret == renewed.secret
    finally:
        source.close()
    for n in range(4):  # other integrations' subscriptions fill the tenant's five
        fake.state._put_webhook({"id": f"webhook_{n:032x}", "url": "https://x.example", "secret": "s",
                                 "events": ["MatterCreated"]})
    other = efimis.open_source("other", connection.settings, sources.CredentialStore(sessions, connection.id),
                               environ=options.environ or {})
    try:
        with pytest.raises(SourceError, match="at most 5"):
            other.register_webhooks(f"{url}/v1/webhooks/efimis")
    finally:
        other.close()


def test_deliveries_are_stored_once_and_the_work_item_is_fetched_again(
        sessions: sessionmaker[Session], fake: FakeEfimis, hooked: tuple[str, registry.Options]) -> None:
    _, options = hooked
    state = fake.state
    finalised = [w for w in state.work_items if w.state == "Finalised" and w.billable]
    edited = state.edit(finalised[0].id, rate=finalised[0].rate + 100)
    assert state.deliver("WorkItemUpdated", edited.id) == 1 and state.deliveries[-1].status == 200
    assert state.replay_last() == 401  # the same request id again: refused
    gone = state.delete(finalised[1].id)
    state.deliver("WorkItemDeleted", gone.id)
    back = state.unfinalise(finalised[2].id)
    state.deliver("WorkItemUnfinalised", back.id)
    assert process_all(sessions, options)[0].startswith("0 new, 1 changed")
    found = stored(sessions)
    assert Decimal(found[edited.id]["entry"]["rate"]) == edited.rate
    assert found[edited.id]["source_version"] == str(edited.version)
    assert found[gone.id]["state"] == found[back.id]["state"] == "withdrawn"
    assert len(events(sessions)) == 3


def test_forged_stale_and_tampered_deliveries_are_refused_or_not_trusted(
        sessions: sessionmaker[Session], fake: FakeEfimis, hooked: tuple[str, registry.Options]) -> None:
    url, options = hooked
    state = fake.state
    item = next(w for w in state.work_items if w.state == "Finalised")
    state.deliver("WorkItemUpdated", item.id, forged=True)
    state.deliver("WorkItemUpdated", item.id, stale=True)
    assert [d.status for d in state.deliveries] == [401] * 8  # each sent again three times, refused each time
    assert events(sessions) == []
    headers, body = state.signed_delivery("WorkItemWrittenOff", item.id)
    tampered = body.replace(b'\\"state\\":\\"Finalised\\"', b'\\"state\\":\\"WrittenOff\\"')
    assert tampered != body
    assert httpx.post(f"{url}/v1/webhooks/efimis", content=tampered, headers=headers).status_code == 200
    assert process_all(sessions, options) == ["unchanged"]  # Efimis says it is still finalised, at that version
    assert stored(sessions)[item.id]["state"] != "withdrawn"


def test_an_edited_work_item_is_judged_again_within_seconds_by_the_worker(
        sessions: sessionmaker[Session], fake: FakeEfimis, env: dict[str, str], tmp_path: Any) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "efimis", options=options)
    worker = Worker(queue=f"sqlite:///{tmp_path}/queue.db", sessions=sessions, options=options)
    consumer = worker.consumer(workers=1)
    consumer.start()
    try:
        with serving(create_app(sessions=sessions, worker=worker, source_options=options)) as (url, _server):
            webhooks.register(sessions, "efimis", f"{url}/v1/webhooks/efimis", options)
            item = next(w for w in fake.state.work_items if w.state == "Finalised")
            edited = fake.state.edit(item.id, title="Attended conference with counsel on the expert evidence")
            started = time.monotonic()
            fake.state.deliver("WorkItemUpdated", edited.id)
            while time.monotonic() - started < 10:
                with sessions() as session:
                    version = session.scalar(select(EntryRow.source_version).where(EntryRow.source_id == item.id))
                if version == str(edited.version):
                    break
                time.sleep(0.05)
            # Seconds, not a poll interval: under CI (three Pythons at once on two cores) it once took 5.3 s.
            assert version == str(edited.version) and time.monotonic() - started < 10
    finally:
        consumer.stop(graceful=True)


# The demo's month ------------------------------------------------------------------------------------

def test_the_demo_month_syncs_with_the_problems_a_reviewer_should_see(sessions: sessionmaker[Session],
                                                                      fake: FakeEfimis, env: dict[str, str]) -> None:
    month = dt.date(2026, 3, 1)
    items = load_demo(fake.state, month)
    assert [w.id for w in items] == [w.id for w in load_demo(fake.state, month)]  # the same month, the same ids
    assert 20 <= len(items) <= 40 and {w.employee.ledes_id for w in items} == set(DEMO_FEE_EARNERS)
    assert all(w.entry_date.month == 3 and w.entry_date.weekday() < 5 for w in items)
    with transaction(sessions) as session:
        rulesets.add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), source="acme-corp.yaml",
                                     status=RuleSetStatus.ACTIVE)
    options = connected(sessions, fake, env)
    context = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=month, period_end=dt.date(2026, 3, 31))
    report = sync(sessions, "efimis", options=options, context=context)
    assert report.pulled == len(items) and report.new == sum(1 for w in items if live(w)) == len(items) - 2
    with sessions() as session:
        found: dict[str, set[str]] = {}
        query = select(EntryRow.source_id, ViolationRow.rule_id).join(
            ViolationRow, ViolationRow.entry_id == EntryRow.id).where(ViolationRow.current.is_(True))
        for source_id, rule_id in session.execute(query):
            found.setdefault(source_id, set()).add(rule_id)
    by_title = {w.title: w for w in items}
    block = next(w for w in items if w.title.count(";") >= 2)
    assert "ACME-BLOCK-001" in found[block.id]
    assert all("ACME-NARR-001" in found[by_title[short].id] for short in ("Review file", "Call with expert"))
    heavy_day = [w for w in items if w.employee.ledes_id == "TK1004" and w.entry_date == _nth_working_day(month, 8)]
    assert sum(w.units * w.unit_duration / 60 for w in heavy_day) > 10
    assert all("ACME-DAY-001" in found[w.id] for w in heavy_day)
    clean = by_title["Planned strategy for motion practice and prepared outline of key arguments"]
    assert clean.id not in found
    flags = stored(sessions)
    assert "UNMAPPED_TASK_TYPE" in flags[next(w.id for w in items if w.task_type and w.task_type.code == "FILING")][
        "data_quality_flags"]
    assert not {w.id for w in items if w.state in ("Pending", "WrittenOff")} & set(flags)


def _nth_working_day(month: dt.date, n: int) -> dt.date:
    days = [month + dt.timedelta(days=d) for d in range(31) if (month + dt.timedelta(days=d)).weekday() < 5]
    return days[n]
