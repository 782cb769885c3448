"""The Trackops connector against the fake Trackops on loopback: settings and credentials, one canonical entry per
detail line (time or expense by finance item, UTBMS codes, exact amounts, data-quality flags), only approved and
committed entries ingested and withdrawals with their reason, the cursor dated by the server's clock through live
pages, the faults Trackops produces (429 with Retry-After, 5xx, timeouts, dropped connections, refused credentials,
changes between pages), names a firm corrects in its settings, the demo month, and no webhooks. A real
``ocgate sync`` killed at random points is in test_trackops_killed.py."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.sources import registry, trackops, webhooks
from connectors.sources.base import NotConnected, SourceError, SourceUnavailable, WebhookRejected
from connectors.sources.sync import sync
from connectors.trackops.fake import (
    FIRM_SETTINGS,
    UNLISTED_ITEM,
    FakeTrackops,
    FakeTrackopsState,
    running_fake_trackops,
    timekeepers_csv,
)
from engine.model import EntryKind
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import Connection, EntryRow, RuleSetStatus, ViolationRow
from engine.workflows import entries, review, rulesets, sources, timekeepers
from tests.conftest import REPO

TOKEN_ENV = "OCGATE_TEST_TRACKOPS_TOKEN"
LINES = 500
BILLABLE = ("approved", "committed")


class Sleeps:
    """Records the pauses the connector asks for instead of sleeping (tests stay fast)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture(scope="module")
def served() -> Iterator[FakeTrackops]:
    with running_fake_trackops(lines=LINES, seed=11) as trackops:
        yield trackops


@pytest.fixture
def fake(served: FakeTrackops) -> FakeTrackops:
    served.state.reset()
    served.state.rate_limit, served.state.rate_window, served.state.skew = None, 60.0, 0.0
    served.state.api_token = "fake-trackops-token"
    return served


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeTrackops) -> dict[str, str]:
    monkeypatch.setenv(sources.SECRET_KEY_ENV, Fernet.generate_key().decode())
    return {TOKEN_ENV: fake.api_token}


def settings(fake: FakeTrackops, **more: Any) -> dict[str, Any]:
    return {"subdomain": "quinlan", "base_url": fake.base_url, "username": fake.username,
            "api_token_env": TOKEN_ENV, "timeout": 2, **FIRM_SETTINGS, **more}


def connected(sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str], *, table: bool = True,
              **more: Any) -> registry.Options:
    """A configured Trackops source whose credentials were checked, and the investigators in the timekeeper table."""
    with transaction(sessions) as session:
        registry.configure(session, "trackops", kind="trackops", settings=settings(fake, **more))
        if table:
            timekeepers.import_csv(session, timekeepers_csv(), source="investigators.csv")
    assert registry.connect(sessions, "trackops", options=registry.Options(environ=env)) == "quinlan"
    return registry.Options(environ=env, sleep=Sleeps(), fetcher=False)  # in this process: its pauses are seen


def stored(sessions: sessionmaker[Session]) -> dict[tuple[int, int], dict[str, Any]]:
    """(entry id, line id) -> the stored line with its state."""
    with sessions() as session:
        return {(int(item["entry"]["source_id"]), int(item["entry"]["source_line_id"])): item
                for item in entries.export(session, source_system="trackops", source_tenant="quinlan")}


def assert_mirrors(sessions: sessionmaker[Session], fake: FakeTrackops) -> None:
    """Every line of every approved or committed entry is stored once, live, as Trackops has it now; nothing else
    is live."""
    found = stored(sessions)
    live = {key: item for key, item in found.items() if item["state"] != "withdrawn"}
    expected = {(entry.id, line.id): (entry, line) for entry in fake.state.entries if entry.status in BILLABLE
                for line in entry.lines}
    assert set(live) == set(expected)
    for key, (entry, line) in expected.items():
        record = live[key]["entry"]
        assert Decimal(record["amount"]) == line.amount and record["rate"] == line.rate, key
        assert record["source_updated_at"].replace("+00:00", "Z") == entry.updated_at, key


def line_of(fake: FakeTrackops, item: int, status: str = "approved") -> tuple[Any, Any]:
    return next((entry, line) for entry in fake.state.entries if entry.status == status
                for line in entry.lines if line.finance_item_id == item)


# Settings and credentials ---------------------------------------------------------------------------------------

def test_settings_never_hold_secrets_and_codes_are_checked(sessions: sessionmaker[Session]) -> None:
    good = {"subdomain": "quinlan", "username": "api", **FIRM_SETTINGS}
    assert trackops.check_settings(good) == []
    assert trackops.host(good) == "https://quinlan.viewcases.com"
    problems = trackops.check_settings({"subdomain": "not a host", "username": "api/token", "api_token": "t",
                                        "api_token_env": "sk-live-123=", "currency": "dollars", "colour": 1,
                                        "finance_items": {"Mileage": "E109 L110", "Photos": "X999"},
                                        "item_codes": {"SURV": "expense L110"}, "timeout": -1})
    for expected in ("subdomain 'not a host'", "ocgate adds /token", "never store api_token", "currency 'dollars'",
                     "api_token_env must name an environment variable", "unknown setting 'colour'",
                     "finance_items['Mileage']: an expense code with a task", "'X999' is not a UTBMS code",
                     "item_codes['SURV']: expense with time codes", "timeout must be a positive number"):
        assert any(expected in p for p in problems), expected
    assert any("needs subdomain" in p for p in trackops.check_settings({"username": "api"}))
    with pytest.raises(registry.InvalidSourceSettings, match="never store"), transaction(sessions) as session:
        registry.configure(session, "bad", kind="trackops", settings={**good, "password": "p"})
    assert trackops.parse_codes("L110 A111") == trackops.Codes(EntryKind.TIME, "L110", "A111", None)
    assert trackops.parse_codes("e109") == trackops.Codes(EntryKind.EXPENSE, None, None, "E109")
    assert trackops.parse_codes("time") == trackops.Codes(EntryKind.TIME)


def test_connecting_checks_the_credentials_and_keeps_no_secret(sessions: sessionmaker[Session], fake: FakeTrackops,
                                                               env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    with sessions() as session:
        row = session.scalar(select(Connection))
        assert row.source_tenant == "quinlan" and row.credentials
    kept = sources.CredentialStore(sessions, row.id).load()
    assert kept["username"] == fake.username and fake.api_token not in json.dumps(kept)
    with pytest.raises(NotConnected, match="credentials") as refused:
        registry.connect(sessions, "trackops", options=registry.Options(environ={TOKEN_ENV: "wrong-token"}))
    assert "wrong-token" not in str(refused.value)
    with pytest.raises(NotConnected, match=f"export {TOKEN_ENV}"):
        registry.connect(sessions, "trackops", options=registry.Options(environ={}))
    with pytest.raises(NotConnected, match="API token"):
        registry.connect(sessions, "trackops", code="abc", options=registry.Options(environ=env))


# Mapping ----------------------------------------------------------------------------------------------------------

def test_each_billable_line_is_one_canonical_entry_with_exact_amounts(sessions: sessionmaker[Session],
                                                                      fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    report = sync(sessions, "trackops", options=options)
    assert report.complete and report.pulled == len(fake.state.entries)
    billable = [(e, line) for e in fake.state.entries if e.status in BILLABLE for line in e.lines]
    assert report.new == len(billable) < LINES  # pending, declined and voided entries are not ingested
    assert_mirrors(sessions, fake)
    found = stored(sessions)

    entry, line = line_of(fake, 301)  # surveillance hours, carried as an expense detail: time
    record = found[entry.id, line.id]["entry"]
    assert (record["entry_kind"], record["fee_basis"], record["unit_of_measure"]) == ("time", "hourly", "hour")
    assert Decimal(record["hours_billed"]) == Decimal(record["quantity"]) == Decimal(line.quantity)
    assert Decimal(record["amount"]) == Decimal(line.rate) * Decimal(line.quantity)
    assert (record["utbms_task_code"], record["utbms_activity_code"]) == ("L110", "A111")
    assert record["source_task_label"] == "Surveillance Hours" and record["source_activity_label"] == "SURV"
    assert record["narrative"] == f"{entry.notes}: Surveillance Hours"
    assert (record["source_id"], record["source_line_id"]) == (str(entry.id), str(line.id))
    assert record["work_date"] == entry.entry_date.isoformat() and record["status"] == "approved"
    assert record["timekeeper_source_id"] == str(entry.user_id)
    if entry.user_id != 5106:  # the new hire is not in the table
        assert (record["timekeeper_ledes_id"], record["timekeeper_classification"]) == (f"INV{entry.user_id}", "INVSTG")
        assert record["standard_rate"]
    case = next(c for c in fake.state._resources["/cases"][2].values() if c["id"] == entry.casefile_id)
    assert (record["law_firm_matter_id"], record["matter_name"]) == (case["case_number"], case["name"])

    entry, line = line_of(fake, 303)  # mileage at 0.655 a mile: exact to the last digit
    record = found[entry.id, line.id]["entry"]
    assert (record["entry_kind"], record["unit_of_measure"]) == ("expense", "mile")
    assert record["utbms_expense_code"] == "E109"
    assert record["rate"] == "0.655" and Decimal(record["amount"]) == Decimal("0.655") * Decimal(line.quantity)
    entry, line = line_of(fake, 304)  # photographs: coded by their item code, not their finance item
    assert found[entry.id, line.id]["entry"]["utbms_expense_code"] == "E124"
    acme = next(item for item in found.values() if item["entry"].get("client_name") == "Acme Corporation")
    assert acme["entry"]["ledes_client_id"] == "ACME01" and acme["entry"]["currency"] == "USD"
    committed = next(e for e in fake.state.entries if e.status == "committed")
    assert found[committed.id, committed.lines[0].id]["entry"]["source_status"] == "committed"


def test_what_cannot_be_mapped_is_flagged_never_defaulted(sessions: sessionmaker[Session], fake: FakeTrackops,
                                                          env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, currency=None, item_codes={}, finance_items={
        "Surveillance Hours": "L110 A111", "Mileage": "E109", "Database Searches": "E106",
        "304": "time L110 A104"})  # photographs by id, as time: but they count in units, not hours
    fake.state.edit(next(e for e in fake.state.entries if e.status == "approved").id)  # touched, unchanged lines
    broken, bad_line = line_of(fake, 305)
    fake.state.edit_line(broken.id, bad_line.id, rate="n/a")
    report = sync(sessions, "trackops", options=options)
    found = stored(sessions)
    flags = report.quality_flags
    assert flags["NO_CURRENCY"] == report.new  # never assumed
    for flag in ("UNKNOWN_TIMEKEEPER", "NO_LEDES_CLIENT_ID", "MISSING_UTBMS_EXPENSE", "UNIT_NOT_HOURS",
                 "MISSING_UTBMS_TASK", "MISSING_UTBMS_ACTIVITY", "UNKNOWN_FINANCE_ITEM", "INVALID_AMOUNT"):
        assert flags.get(flag), flag
    entry, line = line_of(fake, 302)  # report writing: hours by its unit, but no UTBMS codes mapped
    report_line = found[entry.id, line.id]
    assert report_line["entry"]["entry_kind"] == "time" and "utbms_task_code" not in report_line["entry"]
    assert {"MISSING_UTBMS_TASK", "MISSING_UTBMS_ACTIVITY"} <= set(report_line["data_quality_flags"])
    entry, line = line_of(fake, 304)
    assert found[entry.id, line.id]["entry"]["entry_kind"] == "time"
    assert "UNIT_NOT_HOURS" in found[entry.id, line.id]["data_quality_flags"]
    unlisted = next(item for item in found.values() if item["entry"].get("source_task_label") is None)
    assert "UNKNOWN_FINANCE_ITEM" in unlisted["data_quality_flags"]
    assert int(unlisted["entry"]["source_line_id"]) in {line.id for _, line in fake.state.lines
                                                         if line.finance_item_id == UNLISTED_ITEM}
    invalid = found[broken.id, bad_line.id]
    assert "INVALID_AMOUNT" in invalid["data_quality_flags"] and "amount" not in invalid["entry"]
    assert {item["state"] for item in found.values() if item["data_quality_flags"]} == {"in_review"}


def test_a_firm_corrects_assumed_names_with_field_names(sessions: sessionmaker[Session], fake: FakeTrackops,
                                                        env: dict[str, str]) -> None:
    """A Trackops that spells assumed names otherwise is refused with a clear error, nothing stored and the cursor
    not moved; the field_names setting corrects it without a change of code."""
    fake.state.renamed = {"expense_entries": "entries", "expense_entry": "entry", "updated_at": "modified_at",
                          "expense_details": "details", "quantity": "qty"}
    options = connected(sessions, fake, env)
    with pytest.raises(SourceError, match=r"no 'expense_entries' list.*field_names") as refused:
        sync(sessions, "trackops", options=options)
    assert not refused.value.retryable and not stored(sessions)
    with sessions() as session:
        assert sources.cursor(session, session.scalar(select(Connection.id))) is None
    corrected = {"entries list": "entries", "entry record": "entry"}
    options = connected(sessions, fake, env, field_names=corrected)
    with pytest.raises(SourceError, match="without 'updated_at', 'expense_details'"):  # as assumed: not sent
        sync(sessions, "trackops", options=options)
    corrected |= {"source_updated_at": "modified_at", "lines": "details"}
    options = connected(sessions, fake, env, field_names=corrected)
    report = sync(sessions, "trackops", options=options)
    assert report.quality_flags.get("INVALID_AMOUNT") == report.new  # no quantity: flagged, never taken as zero
    options = connected(sessions, fake, env, field_names={**corrected, "quantity": "qty"})
    report = sync(sessions, "trackops", options=options, full=True)
    assert report.changed == len(stored(sessions)) and "INVALID_AMOUNT" not in report.quality_flags
    assert_mirrors(sessions, fake)  # amounts and updated_at read from the renamed fields
    entry = next(e for e in fake.state.entries if e.status == "approved")
    _, source = registry.open_named(sessions, "trackops", options)
    try:
        assert [int(e.source_line_id) for e in source.fetch(str(entry.id))] == [line.id for line in entry.lines]
    finally:
        source.close()
    problems = trackops.check_settings({"subdomain": "q", "username": "api", "field_names": {"colour": "hue"}})
    assert problems == [f"field_names: 'colour' is not one of ocgate's names ({', '.join(trackops.FIELD)})"]
    assert trackops.check_settings({"subdomain": "q", "username": "api", "field_names": {"lines": ""}}) == [
        'field_names must map ocgate\'s names to Trackops names: {"source_updated_at": "modified_at"}']


def test_lines_without_ids_are_keyed_by_position(sessions: sessionmaker[Session], fake: FakeTrackops,
                                                 env: dict[str, str]) -> None:
    fake.state.renamed = {"id": "ident"}  # the lines' ids (and the entries') under another name
    options = connected(sessions, fake, env, field_names={"source_id": "ident"})
    sync(sessions, "trackops", options=options)
    with sessions() as session:
        lines = session.execute(select(EntryRow.source_id, EntryRow.source_line_id)).all()
    billable = {e.id: len(e.lines) for e in fake.state.entries if e.status in BILLABLE}
    assert sorted(lines) == sorted((str(i), f"@{n}") for i, count in billable.items() for n in range(1, count + 1))


def test_a_record_that_cannot_be_mapped_stops_the_sync_with_a_clear_error(
        sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    broken = next(e for e in fake.state.entries if e.status == "approved")
    fake.state.renamed = {"entry_date": "date"}
    with pytest.raises(SourceError, match=f"expense entry {broken.id} .*work_date.*field_names") as refused:
        sync(sessions, "trackops", options=options)
    assert not refused.value.retryable and not stored(sessions)
    fake.state.renamed = {}
    assert sync(sessions, "trackops", options=options).complete
    assert_mirrors(sessions, fake)


# Statuses and withdrawals -----------------------------------------------------------------------------------------

def test_entries_no_longer_approved_and_removed_lines_are_withdrawn_with_the_reason(
        sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "trackops", options=options)
    approved = [e for e in fake.state.entries if e.status == "approved" and len(e.lines) > 1]
    voided, back, declined, trimmed = approved[:4]
    pending = next(e for e in fake.state.entries if e.status == "pending")
    fake.state.set_status(voided.id, "voided")
    fake.state.set_status(back.id, "pending")
    fake.state.set_status(declined.id, "declined")
    removed = trimmed.lines[-1]
    fake.state.remove_line(trimmed.id, removed.id)
    fake.state.set_status(pending.id, "approved")
    report = sync(sessions, "trackops", options=options)
    gone = len(voided.lines) + len(back.lines) + len(declined.lines) + 1
    assert report.withdrawn == gone and report.new == len(pending.lines)
    assert_mirrors(sessions, fake)
    found = stored(sessions)
    reasons = {found[voided.id, voided.lines[0].id]["entry"]["source_status"],
               found[back.id, back.lines[0].id]["entry"]["source_status"],
               found[declined.id, declined.lines[0].id]["entry"]["source_status"],
               found[trimmed.id, removed.id]["entry"]["source_status"]}
    assert reasons == {"voided at Trackops", "pending at Trackops", "declined at Trackops",
                       "line removed from the entry at Trackops"}
    assert found[trimmed.id, trimmed.lines[0].id]["state"] != "withdrawn"  # its other lines stay
    with sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.entry_uid == f"trackops:quinlan:{voided.id}:"
                                                                            f"{voided.lines[0].id}"))
        trail = review.history(session, row.id)
    assert [action.action for action in trail] == ["ingested", "updated", "withdrawn"]
    assert trail[1].after["record"]["source_status"] == "voided at Trackops" and trail[1].actor == "sync:trackops"
    # Approved again: the lines come back to be judged; a second sync changes nothing.
    fake.state.set_status(back.id, "approved")
    report = sync(sessions, "trackops", options=options)
    assert report.changed == len(back.lines) and report.withdrawn == 0
    assert {stored(sessions)[back.id, line.id]["state"] for line in back.lines} <= {"ready", "in_review"}
    again = sync(sessions, "trackops", options=options)
    assert (again.new, again.changed, again.withdrawn) == (0, 0, 0)
    assert_mirrors(sessions, fake)


def test_fetch_maps_one_entry_and_withdraws_a_held_one_no_longer_billable(
        sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "trackops", options=options)
    entry = next(e for e in fake.state.entries if e.status == "approved")
    _, source = registry.open_named(sessions, "trackops", options)
    try:
        lines = source.fetch(str(entry.id))
        assert [int(e.source_line_id) for e in lines] == [line.id for line in entry.lines]
        fake.state.set_status(entry.id, "voided")
        withdrawn = source.fetch(str(entry.id))
        assert {(e.status.value, e.source_status) for e in withdrawn} == {("void", "voided at Trackops")}
        assert source.fetch("1") is None
    finally:
        source.close()


# The demo month -----------------------------------------------------------------------------------------------------

def test_the_demo_month_syncs_clean_and_the_meal_over_the_cap_is_flagged(sessions: sessionmaker[Session],
                                                                        fake: FakeTrackops,
                                                                        env: dict[str, str]) -> None:
    named = fake.state.seed_demo_month()
    with transaction(sessions) as session:
        rulesets.add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(),
                                     status=RuleSetStatus.ACTIVE)
        registry.configure(session, "trackops", kind="trackops",
                           settings=fake.source_settings(TOKEN_ENV, subdomain="quinlan"))
        timekeepers.import_csv(session, timekeepers_csv(), source="investigators.csv")
    registry.connect(sessions, "trackops", options=registry.Options(environ=env))
    options = registry.Options(environ=env, fetcher=False)
    report = sync(sessions, "trackops", options=options, context=EvaluationContext(as_of=dt.date(2026, 4, 6)))
    billable = [(e, line) for e in fake.state.entries if e.status in BILLABLE for line in e.lines]
    assert (report.pulled, report.new, report.quality) == (12, len(billable), 0) and len(billable) == 19
    assert_mirrors(sessions, fake)  # the voided and the pending entries are not there
    found = stored(sessions)
    meal = named["meal_over_cap"]
    dinner = next(line for line in meal.lines if line.finance_item_id == 307)
    record = found[meal.id, dinner.id]
    assert (record["entry"]["utbms_expense_code"], Decimal(record["entry"]["amount"])) == ("E111", Decimal("96.40"))
    with sessions() as session:
        rules = set(session.scalars(select(ViolationRow.rule_id).where(ViolationRow.entry_id == record["id"],
                                                                       ViolationRow.current.is_(True))))
    assert record["state"] == "in_review" and "ACME-EXP-001" in rules
    surveillance = found[named["surveillance"].id, named["surveillance"].lines[0].id]["entry"]
    assert (surveillance["entry_kind"], Decimal(surveillance["hours_billed"])) == ("time", Decimal("6.5"))
    assert surveillance["timekeeper_ledes_id"] == "INV5101"
    # Voiding an approved entry withdraws its lines, in the audit trail.
    fake.state.set_status(named["report"].id, "voided")
    assert sync(sessions, "trackops", options=options).withdrawn == 1


# The cursor -------------------------------------------------------------------------------------------------------

def entry_pulls(fake: FakeTrackops) -> list[dict[str, str]]:
    return [dict(pair.split("=", 1) for pair in r.query.split("&") if pair) for r in fake.state.log
            if r.path.endswith("/expense/entries")]


def test_an_incremental_sync_starts_at_the_servers_time_less_the_overlap(
        sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str]) -> None:
    fake.state.skew = -7200.0  # the server's clock is two hours behind ours: its Date header dates the pull
    options = connected(sessions, fake, env, overlap_minutes=1)
    sync(sessions, "trackops", options=options)
    server_start = dt.datetime.fromisoformat(fake.state.now())
    edited = next(e for e in fake.state.entries if e.status == "approved")
    fake.state.edit_line(edited.id, edited.lines[0].id, quantity="1.25")
    added = fake.state.add_entry(user_id=5101, casefile_id=6001, entry_date=dt.date(2026, 3, 30),
                                 lines=[(301, "95.00", "6.5"), (303, "0.655", "42.0")], notes="Surveillance")
    report = sync(sessions, "trackops", options=options)
    assert report.pulled == 2 and (report.new, report.changed) == (2, 1)
    since = dt.datetime.fromisoformat(entry_pulls(fake)[-1]["updated_from"].replace("%3A", ":"))
    assert dt.timedelta(seconds=55) <= server_start - since <= dt.timedelta(seconds=65)  # not our clock's time
    assert stored(sessions)[added.id, added.lines[1].id]["entry"]["utbms_expense_code"] == "E109"
    assert_mirrors(sessions, fake)


def test_entries_changing_while_the_list_is_paged_are_never_skipped(sessions: sessionmaker[Session],
                                                                    fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    sync(sessions, "trackops", options=options)
    entries_now = [e for e in fake.state.entries if e.status == "approved"]
    window = entries_now[::2]  # changed since the last sync: two pages of the incremental pull
    assert 100 < len(window) < 200
    for entry in window:
        fake.state.edit(entry.id, notes=entry.notes + " (reviewed)")
    passed, ahead, joins = window[5], window[-3], entries_now[1]  # joins: unchanged so far, ahead of page 2

    def meanwhile(state: FakeTrackopsState) -> None:
        state.edit(passed.id, notes="Edited after its page was read")  # stays in the list: next sync
        state.edit(ahead.id, notes="Edited before its page was read")  # this sync
        state.edit(joins.id, notes="Joins the list ahead of the reader")  # shifts a record onto page 2 again

    fake.state.between_pages(1, meanwhile)
    report = sync(sessions, "trackops", options=options)
    assert report.pulled == len(window) + 1  # one record read twice (the shift), skipped the second time
    found = stored(sessions)
    assert all("(reviewed)" in found[e.id, e.lines[0].id]["entry"]["narrative"] for e in window
               if e not in (ahead, passed))
    assert found[ahead.id, ahead.lines[0].id]["entry"]["narrative"].startswith("Edited before")
    assert not found[passed.id, passed.lines[0].id]["entry"]["narrative"].startswith("Edited after")
    sync(sessions, "trackops", options=options)
    assert stored(sessions)[passed.id, passed.lines[0].id]["entry"]["narrative"].startswith("Edited after")
    assert stored(sessions)[joins.id, joins.lines[0].id]["entry"]["narrative"].startswith("Joins")
    assert_mirrors(sessions, fake)


def test_the_cursor_is_saved_with_each_batch_and_a_full_sync_starts_over(sessions: sessionmaker[Session],
                                                                         fake: FakeTrackops,
                                                                         env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    cursors: list[str | None] = []

    def remember(state: FakeTrackopsState) -> None:
        with sessions() as session:
            cursors.append(sources.cursor(session, session.scalar(select(Connection.id))))

    fake.state.between_pages(3, remember)
    sync(sessions, "trackops", options=options, batch_entries=100)
    assert cursors and json.loads(cursors[0])["page"] >= 2  # mid-pull: the next page to read
    with sessions() as session:
        final = json.loads(sources.cursor(session, session.scalar(select(Connection.id))))
    assert set(final) == {"since"}
    report = sync(sessions, "trackops", options=options, full=True)
    assert report.pulled == len(fake.state.entries) and "updated_from" not in entry_pulls(fake)[-1]
    assert (report.new, report.changed, report.unchanged) == (0, 0, len(stored(sessions)))


# Faults and the rate limit ----------------------------------------------------------------------------------------

def test_server_errors_timeouts_and_dropped_connections_are_retried(sessions: sessionmaker[Session],
                                                                    fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, timeout=0.5)
    fake.state.fail_next(1, status=500, path="/expense/entries")
    fake.state.fail_next(1, status=502, path="/finance/items")
    fake.state.between_pages(1, lambda state: state.drop_next(1, path="/expense/entries"))
    fake.state.between_pages(2, lambda state: state.slow_next(1, 1.5, path="/expense/entries"))
    fake.state.between_pages(3, lambda state: state.fail_next(1, status=503))
    report = sync(sessions, "trackops", options=options)
    assert report.complete
    assert len(options.sleep.pauses) >= 5 and all(0 < p <= 30 for p in options.sleep.pauses)
    assert_mirrors(sessions, fake)


def test_a_429_is_waited_out_as_told_before_anything_else_is_sent(sessions: sessionmaker[Session],
                                                                  fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    fake.state.between_pages(1, lambda state: state.fail_next(1, status=429, path="/expense/entries",
                                                              retry_after=7))
    sync(sessions, "trackops", options=options)
    waits = [pause for pause in options.sleep.pauses if pause]
    assert waits == [pytest.approx(7.25, abs=0.05)]  # once, as long as told, and no backoff on top
    assert sum(1 for r in fake.state.log if r.status == 429) == 1


def test_under_a_real_sliding_window_no_request_is_refused_twice(sessions: sessionmaker[Session],
                                                                 fake: FakeTrackops, env: dict[str, str]) -> None:
    connected(sessions, fake, env)
    fake.state.rate_limit, fake.state.rate_window = 6, 1.0
    fake.state.log.clear()
    report = sync(sessions, "trackops", options=registry.Options(environ=env, fetcher=False))
    assert report.complete
    statuses = [r.status for r in fake.state.log]
    assert 429 in statuses  # the window was hit ...
    assert all(not (a == b == 429) for a, b in itertools.pairwise(statuses))  # ... and waited out


def test_pacing_keeps_under_a_known_limit() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pacer = trackops._Pacer(3, sleep, clock=lambda: now[0])
    for _ in range(7):
        pacer.take()
        now[0] += 1.0
    assert sleeps == [57.0, 57.0]  # the 4th request waits for the 1st to leave the window, the 7th for the 4th
    pacer.refused(5)
    pacer.take()
    assert sleeps[-1] == pytest.approx(5.25)


def test_a_source_that_keeps_failing_stops_the_sync_to_resume_later(sessions: sessionmaker[Session],
                                                                    fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env, max_attempts=3)
    fake.state.between_pages(2, lambda state: state.fail_next(3, status=500, path="/expense/entries"))
    with pytest.raises(SourceUnavailable) as failed:
        sync(sessions, "trackops", options=options, batch_entries=100)
    assert failed.value.retryable and "500" in failed.value.message
    partial = stored(sessions)
    assert partial
    report = sync(sessions, "trackops", options=options, batch_entries=100)
    assert report.complete and report.new + len(partial) == len(stored(sessions))
    assert_mirrors(sessions, fake)
    fake.state.fail_next(1, status=429, retry_after=3600)
    with pytest.raises(SourceUnavailable, match="3600 s"):  # not waited for an hour: the next sync resumes
        sync(sessions, "trackops", options=options)


def test_refused_credentials_stop_the_sync_without_showing_the_token(sessions: sessionmaker[Session],
                                                                      fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    fake.state.api_token = "rotated-by-an-admin"
    with pytest.raises(NotConnected, match="refused the API user's credentials") as refused:
        sync(sessions, "trackops", options=options)
    assert fake.api_token not in str(refused.value) and env[TOKEN_ENV] not in str(refused.value)


def test_a_sync_reads_trackops_in_a_fetcher_process(sessions: sessionmaker[Session], fake: FakeTrackops,
                                                    env: dict[str, str]) -> None:
    connected(sessions, fake, env, max_attempts=2)
    forked = registry.Options(environ=env, fetcher=True)
    first = next(e for e in fake.state.entries if e.status == "approved")
    fake.state.between_pages(2, lambda state: state.set_status(first.id, "voided"))
    assert sync(sessions, "trackops", options=forked, batch_entries=100).complete
    sync(sessions, "trackops", options=forked)
    assert_mirrors(sessions, fake)
    fake.state.fail_next(10, status=503, path="/expense/entries")
    with pytest.raises(SourceUnavailable, match="503"):
        sync(sessions, "trackops", options=forked, full=True)


# No webhooks ------------------------------------------------------------------------------------------------------

def test_trackops_has_no_webhooks(sessions: sessionmaker[Session], fake: FakeTrackops, env: dict[str, str]) -> None:
    options = connected(sessions, fake, env)
    with pytest.raises(SourceError, match="no webhooks") as refused:
        webhooks.register(sessions, "trackops", "https://ocgate.example/v1/webhooks/trackops", options)
    assert not refused.value.retryable
    with pytest.raises(WebhookRejected, match="sends no webhooks"):
        webhooks.receive(sessions, "trackops", {"Content-Type": "application/json"}, b"{}", options)
