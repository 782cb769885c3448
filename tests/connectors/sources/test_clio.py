"""The Clio connector against the fake Clio on loopback: OAuth, mapping, incremental and full syncs, the
faults Clio produces (429, 5xx, timeouts, dropped connections, expiring tokens, changes between pages), rate
limits, versions, redaction and data-quality flags."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.clio.fake import FakeClio, running_fake_clio
from connectors.sources import clio, registry
from connectors.sources.base import SourceUnavailable
from connectors.sources.sync import sync
from engine.store.db import transaction
from engine.store.models import Connection, EntryRow, EntryState
from engine.workflows import entries, sources, timekeepers
from tests.conftest import REPO

TIMEKEEPERS = REPO / "engine" / "data" / "samples" / "timekeepers.csv"
SECRET_ENV = "OCGATE_TEST_CLIO_SECRET"


class Sleeps:
    """Records the pauses the connector asks for instead of sleeping (tests stay fast)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeClio]:
    with running_fake_clio(activities=600, seed=11) as served:
        yield served


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeClio) -> dict[str, str]:
    monkeypatch.setenv(sources.SECRET_KEY_ENV, Fernet.generate_key().decode())
    monkeypatch.setenv(SECRET_ENV, fake.client_secret)
    return {SECRET_ENV: fake.client_secret}


def settings(fake: FakeClio, **more: Any) -> dict[str, Any]:
    return {"base_url": fake.base_url, "client_id": fake.client_id, "client_secret_env": SECRET_ENV,
            "redirect_uri": "https://ocgate.example/oauth/clio", "timeout": 2, **more}


def connected(sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str], *, name: str = "clio",
              table: bool = True, **more: Any) -> registry.Options:
    """A configured, connected Clio source (through the whole authorization-code flow) and the timekeeper table."""
    with transaction(sessions) as session:
        registry.configure(session, name, kind="clio", settings=settings(fake, **more))
        if table:
            timekeepers.import_csv(session, TIMEKEEPERS.read_text(), source=str(TIMEKEEPERS))
    url, state = registry.authorize_url(sessions, name)
    redirect = httpx.get(url, follow_redirects=False).headers["location"]
    registry.connect(sessions, name, code=clio.code_from(redirect, state), options=registry.Options(environ=env))
    return registry.Options(environ=env, sleep=Sleeps(), fetcher=False)  # in this process: its pauses are seen


def stored(sessions: sessionmaker[Session], source: str = "clio") -> dict[str, dict[str, Any]]:
    with sessions() as session:
        connection = sources.get(session, source)
        return {item["entry"]["source_id"]: item for item in entries.export(
            session, source_system="clio", source_tenant=connection.source_tenant)}


def assert_mirrors(sessions: sessionmaker[Session], fake: FakeClio) -> None:
    """Every activity Clio has is stored once, at its latest version; nothing else is live."""
    found = stored(sessions)
    live = {key: item for key, item in found.items() if item["state"] != "withdrawn"}
    assert set(live) == {str(a.id) for a in fake.state.activities}
    for activity in fake.state.activities:
        assert live[str(activity.id)]["source_version"] == activity.etag, activity.id


# OAuth and tokens -------------------------------------------------------------------------------------

def test_connecting_keeps_encrypted_tokens_and_learns_the_account(sessions: sessionmaker[Session], fake: FakeClio,
                                                                   env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    with sessions() as session:
        row = session.scalar(select(Connection))
        assert row.source_tenant == f"127.0.0.1/{fake.state.me.account.id}"
        assert row.credentials and "access_token" not in row.credentials
        assert row.credentials_expire_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    credentials = sources.CredentialStore(sessions, row.id).load()
    assert set(credentials) == {"access_token", "refresh_token", "expires_at"}


def test_a_pasted_redirect_with_the_wrong_state_or_an_error_is_refused() -> None:
    assert clio.code_from("  abc123 \n") == "abc123"
    assert clio.code_from("https://x.example/cb?code=c1&state=s1", "s1") == "c1"
    with pytest.raises(clio.NotConnected, match="state"):
        clio.code_from("https://x.example/cb?code=c1&state=other", "s1")
    with pytest.raises(clio.NotConnected, match="access_denied"):
        clio.code_from("https://x.example/cb?error=access_denied&state=s1", "s1")


def test_settings_never_hold_secrets_and_unknown_ones_are_refused(sessions: sessionmaker[Session]) -> None:
    problems = clio.check_settings({"region": "mars", "client_id": "x", "client_secret": "s", "colour": 1})
    assert any("region 'mars'" in p for p in problems)
    assert any("never store client_secret" in p for p in problems)
    assert any("unknown setting 'colour'" in p for p in problems)
    assert clio.check_settings({"region": "eu", "client_id": "x"}) == []
    assert clio.host({"region": "eu"}) == "https://eu.app.clio.com"
    with pytest.raises(registry.InvalidSourceSettings, match="never store"), transaction(sessions) as session:
        registry.configure(session, "bad", kind="clio", settings={"region": "us", "client_id": "x",
                                                                  "refresh_token": "r"})


def test_an_expired_token_is_refreshed_mid_sync_and_the_new_one_kept(sessions: sessionmaker[Session],
                                                                      fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    with sessions() as session:
        before = sources.CredentialStore(sessions, session.scalar(select(Connection.id))).load()
    fake.state.between_pages(1, lambda state: state.expire_tokens())
    report = sync(sessions, "clio", options=options)
    assert report.complete and report.new == 600
    with sessions() as session:
        after = sources.CredentialStore(sessions, session.scalar(select(Connection.id))).load()
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]  # Clio Manage refresh tokens are reused


def test_a_revoked_grant_stops_the_sync_with_a_clear_error(sessions: sessionmaker[Session], fake: FakeClio,
                                                           env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    fake.state.expire_tokens()
    fake.state.client_secret = "rotated"  # the refresh is refused as well
    with pytest.raises(clio.NotConnected, match="connect again") as refused:
        sync(sessions, "clio", options=options)
    assert fake.client_secret not in str(refused.value) and "rotated" not in str(refused.value)


# Mapping ----------------------------------------------------------------------------------------------

def test_a_full_sync_maps_every_activity_exactly_once(sessions: sessionmaker[Session], fake: FakeClio,
                                                      env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    report = sync(sessions, "clio", options=options, full=True)
    assert (report.pulled, report.new, report.changed, report.complete) == (600, 600, 0, True)
    assert_mirrors(sessions, fake)
    found = stored(sessions)
    hourly = next(a for a in fake.state.activities if a.type == "TimeEntry" and not a.flat_rate
                  and a.activity_description and a.activity_description.utbms_task_id)
    entry = found[str(hourly.id)]["entry"]
    assert Decimal(entry["hours_billed"]) == hourly.rounded_quantity_in_hours
    assert Decimal(entry["hours_worked"]) == hourly.quantity_in_hours
    assert entry["duration_seconds_raw"] == int(hourly.quantity)
    assert Decimal(entry["quantity"]) == hourly.rounded_quantity_in_hours
    assert Decimal(entry["rate"]) == hourly.price and Decimal(entry["amount"]) == hourly.total
    assert entry["law_firm_matter_id"] == hourly.matter.display_number
    assert entry["ledes_client_id"] == hourly.matter.client.ledes_client_id
    assert entry["currency"] == hourly.matter.currency.code
    codes = {c.id: c.code for c in fake.state.utbms_codes}
    assert entry["utbms_task_code"] == codes[hourly.activity_description.utbms_task_id]
    assert entry["utbms_activity_code"] == codes[hourly.activity_description.utbms_activity_id]
    assert entry["source_version"] == hourly.etag and entry["api_version"] == "4.0.9"
    assert entry["timekeeper_ledes_id"] and entry["timekeeper_classification"]  # from the firm's table
    assert Decimal(entry["standard_rate"]) > 0
    flat = next(a for a in fake.state.activities if a.type == "TimeEntry" and a.flat_rate)
    assert (found[str(flat.id)]["entry"]["fee_basis"], Decimal(found[str(flat.id)]["entry"]["quantity"])) == \
        ("flat", Decimal(1))
    expense = next(a for a in fake.state.activities if a.type != "TimeEntry" and a.utbms_expense)
    mapped = found[str(expense.id)]["entry"]
    assert (mapped["entry_kind"], mapped["utbms_expense_code"]) == ("expense", expense.utbms_expense.code)
    assert Decimal(mapped["quantity"]) == expense.quantity and Decimal(mapped["rate"]) == expense.price


def test_what_cannot_be_mapped_is_flagged_and_queued_never_defaulted(sessions: sessionmaker[Session],
                                                                     fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, table=False)  # no timekeeper table yet
    uncoded = next(a for a in fake.state.activities if a.type == "TimeEntry" and not a.flat_rate
                   and (a.activity_description is None or a.activity_description.task is None))
    report = sync(sessions, "clio", options=options)
    assert report.quality == 600 and report.quality_flags["UNKNOWN_TIMEKEEPER"] > 0
    item = stored(sessions)[str(uncoded.id)]
    assert "MISSING_UTBMS_TASK" in item["data_quality_flags"] and "UNKNOWN_TIMEKEEPER" in item["data_quality_flags"]
    assert "utbms_task_code" not in item["entry"]  # never a silent L120
    assert item["state"] == "in_review" and item["worst_severity"] == "error"


def test_redacted_hours_are_never_read_as_zero(sessions: sessionmaker[Session], fake: FakeClio,
                                               env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    redacted = fake.state.redact()
    assert redacted > 0
    sync(sessions, "clio", options=options)
    time_entries = [item for item in stored(sessions).values() if item["entry"]["entry_kind"] == "time"]
    assert len(time_entries) == redacted
    for item in time_entries:
        assert "REDACTED_SOURCE" in item["data_quality_flags"] and item["state"] == "in_review"
        assert "hours_billed" not in item["entry"] and "amount" not in item["entry"]
        assert "quantity" in item["entry"]["redacted_fields"]


def test_the_pre_4_0_4_hours_mode_gives_the_same_hours(sessions: sessionmaker[Session], fake: FakeClio,
                                                       env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, api_version="4.0.3")
    sync(sessions, "clio", options=options)
    hourly = next(a for a in fake.state.activities if a.type == "TimeEntry" and not a.flat_rate)
    entry = stored(sessions)[str(hourly.id)]["entry"]
    assert entry["api_version"] == "4.0.3"
    assert Decimal(entry["hours_billed"]) == hourly.rounded_quantity_in_hours  # not 3600 times too many
    assert entry["duration_seconds_raw"] == int(hourly.quantity)


def test_a_different_echoed_version_is_logged_once(sessions: sessionmaker[Session], fake: FakeClio,
                                                   env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    options = connected(sessions, fake, env)
    fake.state.force_version("4.0.10")
    with caplog.at_level(logging.WARNING, logger="ocgate.clio"):
        sync(sessions, "clio", options=options)
    assert [r.getMessage() for r in caplog.records if "API version" in r.getMessage()] == \
        ["Clio answered with API version 4.0.10, not the 4.0.9 asked for"]
    assert {r.headers.get("x-api-version") for r in fake.state.log if r.path.startswith("/api/v4")} == {"4.0.9"}


# Incremental syncs, changes, deletions -------------------------------------------------------------

def test_an_incremental_sync_takes_edits_and_new_activities_and_skips_the_rest(
        sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "clio", options=options)
    edited = fake.state.activities[5]
    fake.state.edit(edited.id, note="Revised narrative after partner review of the draft brief")
    added = fake.state.add_activity(note="Telephone conference with client regarding settlement terms")
    report = sync(sessions, "clio", options=options)
    assert (report.new, report.changed) == (1, 1)
    assert report.pulled < 600  # only what changed since the last sync (and the overlap window)
    pulls = [r for r in fake.state.log if r.path.endswith("/activities.json")]
    assert "updated_since" in pulls[-1].query
    found = stored(sessions)
    assert found[str(edited.id)]["entry"]["narrative"].startswith("Revised narrative")
    assert str(added.id) in found
    assert_mirrors(sessions, fake)


def test_changes_between_pages_end_in_the_latest_version_after_the_next_sync(
        sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    first, late = fake.state.activities[0], fake.state.activities[-1]
    gone = fake.state.activities[450]

    def meanwhile(state: Any) -> None:
        state.edit(first.id, note="Edited after its page was read")  # passed already: next sync
        state.edit(late.id, note="Edited before its page was read")  # not reached yet: this sync
        state.delete(gone.id)

    fake.state.between_pages(1, meanwhile)
    sync(sessions, "clio", options=options)
    found = stored(sessions)
    assert found[str(late.id)]["entry"]["narrative"] == "Edited before its page was read"
    assert found[str(first.id)]["entry"]["narrative"] != "Edited after its page was read"
    assert str(gone.id) not in found  # deleted before its page: never seen
    sync(sessions, "clio", options=options)
    assert stored(sessions)[str(first.id)]["entry"]["narrative"] == "Edited after its page was read"
    assert_mirrors(sessions, fake)


def test_a_full_sync_withdraws_what_clio_deleted(sessions: sessionmaker[Session], fake: FakeClio,
                                                 env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "clio", options=options)
    deleted = [fake.state.activities[i].id for i in (0, 250, 599)]  # first, middle, last: every range
    for activity_id in deleted:
        fake.state.delete(activity_id)
    assert sync(sessions, "clio", options=options).withdrawn == 0  # an incremental pull cannot see deletions
    report = sync(sessions, "clio", options=options, full=True)
    assert report.withdrawn == 3
    found = stored(sessions)
    assert {found[str(i)]["state"] for i in deleted} == {"withdrawn"}
    assert_mirrors(sessions, fake)


# Faults and rate limits ------------------------------------------------------------------------------

def test_server_errors_timeouts_and_dropped_connections_are_retried(sessions: sessionmaker[Session],
                                                                    fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, timeout=0.5)
    fake.state.fail_next(2, status=503, path="/activities.json")
    fake.state.between_pages(1, lambda state: state.drop_next(1, path="/activities.json"))
    fake.state.between_pages(2, lambda state: state.slow_next(1, 1.5, path="/activities.json"))
    fake.state.between_pages(3, lambda state: state.fail_next(1, status=502))
    report = sync(sessions, "clio", options=options)
    assert report.complete and report.new == 600
    assert len(options.sleep.pauses) >= 5 and all(0 < p <= 30 for p in options.sleep.pauses)
    assert_mirrors(sessions, fake)


def test_a_429_waits_for_retry_after(sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    fake.state.fail_next(1, status=429, path="/activities.json", retry_after=7)
    sync(sessions, "clio", options=options)
    assert 7 in options.sleep.pauses


def test_a_source_that_keeps_failing_stops_the_sync_to_resume_later(sessions: sessionmaker[Session],
                                                                    fake: FakeClio, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, max_attempts=3)
    fake.state.between_pages(1, lambda state: state.fail_next(3, status=500, path="/activities.json"))
    with pytest.raises(SourceUnavailable) as failed:
        sync(sessions, "clio", options=options, batch_entries=200)
    assert failed.value.retryable
    partial = stored(sessions)
    assert 0 < len(partial) < 600  # the first batch was committed with its cursor
    with sessions() as session:
        [run, *_] = sources.runs(session, session.scalar(select(Connection.id)))
        assert run.status == "failed" and "500" in run.error
    report = sync(sessions, "clio", options=options, batch_entries=200)
    assert report.complete and report.new == 600 - len(partial)  # resumed: nothing pulled twice is stored twice
    assert_mirrors(sessions, fake)


def test_a_sync_under_the_rate_limit_gets_no_avoidable_429(sessions: sessionmaker[Session], fake: FakeClio,
                                                          env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    fake.state.rate_limit, fake.state.rate_window = 3, 0.4
    sleeps = options.sleep

    def wait(seconds: float) -> None:  # really wait: the fake's window runs on the clock
        sleeps.pauses.append(seconds)
        import time

        time.sleep(seconds)

    paced = registry.Options(environ=env, sleep=wait, fetcher=False)
    report = sync(sessions, "clio", options=paced)
    assert report.complete
    assert not [r for r in fake.state.log if r.status == 429]
    assert sleeps.pauses  # it waited for windows to reset instead


def test_two_syncs_of_one_source_never_run_at_once(sessions: sessionmaker[Session], fake: FakeClio,
                                                   env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    outcome: dict[str, Any] = {}

    def second(state: Any) -> None:
        try:
            sync(sessions, "clio", options=options, owner="other-worker")
        except sources.SyncRunning as exc:
            outcome["refused"] = exc.message

    fake.state.between_pages(1, second)
    assert sync(sessions, "clio", options=options).complete
    assert "already running" in outcome["refused"]


def test_the_cursor_is_saved_with_each_batch(sessions: sessionmaker[Session], fake: FakeClio,
                                             env: dict[str, str], tmp_path: Path) -> None:
    options = connected(sessions, fake, env)
    cursors: list[str | None] = []

    def remember(state: Any) -> None:
        with sessions() as session:
            cursors.append(sources.cursor(session, session.scalar(select(Connection.id))))

    fake.state.between_pages(3, remember)  # the last page: built once the first is committed (one page ahead)
    sync(sessions, "clio", options=options, batch_entries=200)
    assert cursors and json.loads(cursors[0])["next"]  # mid-pull: where to resume
    with sessions() as session:
        final = json.loads(sources.cursor(session, session.scalar(select(Connection.id))))
    assert set(final) == {"since"}  # complete: the next pull starts where this one began


def test_sync_states_are_judged_like_any_ingest(sessions: sessionmaker[Session], fake: FakeClio,
                                                env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    report = sync(sessions, "clio", options=options)
    with sessions() as session:
        states = {s for (s,) in session.execute(select(EntryRow.state).distinct())}
    assert states <= {EntryState.READY, EntryState.IN_REVIEW}
    assert report.flagged == sum(1 for item in stored(sessions).values() if item["state"] == "in_review")


@pytest.mark.slow
def test_a_sync_reads_the_source_in_a_fetcher_process(sessions: sessionmaker[Session], fake: FakeClio,
                                                      env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    forked = registry.Options(environ=env, fetcher=True)
    first = fake.state.activities[0]
    fake.state.between_pages(2, lambda state: state.edit(first.id, note="Edited while the fetcher read ahead"))
    report = sync(sessions, "clio", options=forked, batch_entries=200)
    assert report.complete and report.new == 600 and report.batches == 3
    sync(sessions, "clio", options=forked)  # the edit made after its page was read
    assert_mirrors(sessions, fake)
    assert stored(sessions)[str(first.id)]["entry"]["narrative"] == "Edited while the fetcher read ahead"
    fake.state.fail_next(10, status=503, path="/activities.json")
    with pytest.raises(SourceUnavailable, match="503"):  # an error in the fetcher reaches the sync as it was
        sync(sessions, "clio", options=forked, full=True)
