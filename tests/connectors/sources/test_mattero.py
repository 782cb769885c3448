"""The mattero source against its fake on loopback: settings, the API key, exports pulled through the built-in
mapping and enriched from the API, the data-quality flags, faults (429, 5xx, dropped connections, timeouts, a bad
key, lists changing between pages), re-reading one record, and webhooks through ocgate's API with the callback
path's token."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.worker import Worker
from connectors.clio.fake import serving
from connectors.mattero.fake import STAFF, FakeMattero, running_fake_mattero
from connectors.sources import mattero, registry, webhooks
from connectors.sources.base import NotConnected, SourceError, SourceUnavailable
from connectors.sources.sync import sync
from engine.store.db import transaction
from engine.store.models import Connection, EntryRow, WebhookEvent
from engine.workflows import sources, timekeepers
from tests.connectors.sources.test_clio import Sleeps

KEY_ENV = "OCGATE_TEST_MATTERO_KEY"
SAMPLE = Path(__file__).resolve().parents[3] / "engine" / "data" / "samples" / "mattero-all-costs.csv"


def timekeeper_table() -> str:
    """The firm's table with the fake's staff as mattero users (LEDES ids MT + their number)."""
    lines = ["ledes_id,first_name,last_name,title,classification,source_system,source_user_id,rate,currency,"
             "effective_from,effective_to"]
    for staff_id, first, last, _rate in STAFF:
        lines.append(f"MT{staff_id.split('-')[0]},{first},{last},Associate,,mattero,{staff_id},,,,")
    return "\n".join(lines) + "\n"


@pytest.fixture
def fake() -> Iterator[FakeMattero]:
    with running_fake_mattero(records=400, seed=3) as served:
        yield served


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeMattero) -> dict[str, str]:
    monkeypatch.setenv(sources.SECRET_KEY_ENV, Fernet.generate_key().decode())
    return {KEY_ENV: fake.api_key}


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


def settings(fake: FakeMattero, exports: Path, **more: Any) -> dict[str, Any]:
    return {"base_url": fake.api_url, "api_key_env": KEY_ENV, "export_dir": str(exports), "timeout": 1,
            "max_attempts": 4, **more}


def connected(sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path, *,
              name: str = "mattero", **more: Any) -> registry.Options:
    """A configured and connected mattero source, and the firm's timekeeper table with its staff."""
    with transaction(sessions) as session:
        registry.configure(session, name, kind="mattero", settings=settings(fake, exports, **more))
        timekeepers.import_csv(session, timekeeper_table(), source="mattero-staff.csv")
    registry.connect(sessions, name, options=registry.Options(environ=env))
    return registry.Options(environ=env, sleep=Sleeps(), fetcher=False)


def stored(sessions: sessionmaker[Session]) -> dict[str, EntryRow]:
    with sessions() as session:
        return {row.source_id: row for row in session.scalars(select(EntryRow).where(
            EntryRow.source_system == "mattero"))}


# Settings and the key ----------------------------------------------------------------------------------

def test_settings_are_checked_and_never_hold_the_key(tmp_path: Path) -> None:
    assert registry.check_settings("mattero", {"export_dir": str(tmp_path)}) == []
    problems = registry.check_settings("mattero", {"api_key": "abc", "timeout": -1, "colour": "blue"})
    text = " ".join(problems)
    assert "export_dir" in text and "never store api_key" in text and "timeout must be a positive number" in text
    assert "unknown setting 'colour'" in text
    assert any("mapping 'nope'" in p for p in registry.check_settings("mattero", {"export_dir": "x",
                                                                                  "mapping": "nope"}))


def test_connect_checks_the_key_against_ping_and_keeps_a_webhook_token(
        sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path) -> None:
    connected(sessions, fake, env, exports)
    with sessions() as session:
        row = session.scalar(select(Connection))
        sealed = row.credentials
    token = sources.unseal(sealed)["webhook_token"]
    assert len(token) >= 40 and token not in sealed  # encrypted at rest
    assert any(r.path.endswith("/ping") and r.status == 200 for r in fake.state.log)
    registry.connect(sessions, "mattero", options=registry.Options(environ=env))  # again: the token stays
    with sessions() as session:
        assert sources.unseal(session.scalar(select(Connection.credentials)))["webhook_token"] == token

    with pytest.raises(NotConnected, match="refused the API key"):
        registry.connect(sessions, "mattero", options=registry.Options(environ={KEY_ENV: "wrong"}))
    with pytest.raises(NotConnected, match=f"export {KEY_ENV}"):
        registry.connect(sessions, "mattero", options=registry.Options(environ={}))


# Pulling exports ---------------------------------------------------------------------------------------

def test_an_export_is_pulled_enriched_and_flagged(sessions: sessionmaker[Session], fake: FakeMattero,
                                                  env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "all-costs-march.csv")
    report = sync(sessions, "mattero", options=options)
    records = fake.state.records
    assert report.complete and report.new == len(records) == 400 and report.pulled == 400
    rows = stored(sessions)
    assert set(rows) == {r.id for r in records}
    ordinary = next(r for r in records if r.kind == "Time" and r.matter_id == "1222-A" and r.staff_label is None
                    and r.matter_label is None and r.cost_code == "Drafting")
    record = rows[ordinary.id].record
    assert record["matter_source_id"] == "1222-A" and record["law_firm_matter_id"] == "2026-009"
    assert record["ledes_client_id"] == "KESTREL01" and record["client_matter_id"] == "KL-EMP-2026-03"
    assert record["client_source_id"] == "102-A" and record["timekeeper_source_id"] == ordinary.staff_id
    assert record["timekeeper_ledes_id"] == "MT" + ordinary.staff_id.split("-")[0]
    assert Decimal(record["amount"]) == ordinary.amount and Decimal(record["tax_amount"]) == ordinary.gst
    assert Decimal(record["hours_billed"]) == Decimal(ordinary.units) / 10 and record["currency"] == "AUD"
    assert record["utbms_activity_code"] == "A103" and record["data_quality_flags"] == []
    flags = {source_id: set(row.record["data_quality_flags"]) for source_id, row in rows.items()}
    n = len(records)
    assert "UNMAPPED_UTBMS_ACTIVITY_CODE" in flags[records[n // 5].id]
    assert "UNITS_MISMATCH" in flags[records[2 * n // 5].id]
    assert flags[records[3 * n // 5].id] == {"AMOUNT_MISMATCH"}
    assert {"UNKNOWN_STAFF", "UNKNOWN_TIMEKEEPER"} <= flags[records[4 * n // 5].id]
    assert "UNKNOWN_MATTER" in flags[records[-1].id]
    no_ledes = {r.id for r in records if r.matter_id == "1218-A" and r.matter_label is None}
    assert no_ledes and all("NO_LEDES_CLIENT_ID" in flags[i] for i in no_ledes)
    assert report.quality_flags["UNITS_MISMATCH"] == 1 and report.quality_flags["UNKNOWN_MATTER"] == 1
    # Fixed-fee matter: one unit at the amount; the amount is never recomputed.
    fixed = next(r for r in records if r.matter_id == "1221-A" and r.kind == "Time" and r.matter_label is None)
    entry = rows[fixed.id].record
    assert entry["fee_basis"] == "flat" and Decimal(entry["quantity"]) == 1
    assert Decimal(entry["rate"]) == Decimal(entry["amount"]) == fixed.amount

    again = sync(sessions, "mattero", options=options)  # the same file is not read twice
    assert again.pulled == 0 and again.new == 0


def test_a_later_export_updates_what_changed_and_leaves_the_rest(
        sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "1-march.csv")
    sync(sessions, "mattero", options=options)
    target = fake.state.records[10]
    fake.state.edit_record(target.id, description="Revised: " + target.description)
    added = fake.state.add_record(minutes=47)
    fake.state.write_export(exports / "2-march-again.csv")  # the whole list again, as a firm exports it
    (exports / "notes.txt").write_text("not an export")
    report = sync(sessions, "mattero", options=options)
    assert (report.new, report.changed, report.unchanged) == (1, 1, 399)
    rows = stored(sessions)
    assert rows[target.id].record["narrative"].startswith("Revised: ")
    assert Decimal(rows[added.id].record["hours_billed"]) == Decimal("0.8")  # 47 minutes: 8 six-minute units
    with sessions() as session:
        assert session.scalar(select(func.count(func.distinct(EntryRow.entry_uid)))) == \
            session.scalar(select(func.count(EntryRow.id))) == 401


def test_rows_the_mapping_rejects_are_reported_beside_the_file_not_lost(
        sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    options = connected(sessions, fake, env, exports)
    export = fake.state.write_export(exports / "costs.csv", ids=[r.id for r in fake.state.records[:20]])
    rows = list(csv.reader(io.StringIO(export.read_text(encoding="utf-8-sig"))))
    rows[3][0] = rows[3][0].replace("/03/", "/13/")  # line 4: not a date
    rows[5][4] = "Disbursement"  # line 6: a cost type the mapping does not know
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    export.write_text(buffer.getvalue(), encoding="utf-8")
    report = sync(sessions, "mattero", options=options)
    assert report.new == 18 and report.pulled == 20
    problems = (exports / "costs.csv.problems.txt").read_text()
    assert "2 row(s) of costs.csv left out" in problems and "costs.csv:4: Date" in problems
    assert "costs.csv:6: Cost Type" in problems
    assert sum("export row left out" in r.message for r in caplog.records) == 2


def test_a_full_sync_reads_every_export_again(sessions: sessionmaker[Session], fake: FakeMattero,
                                             env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    sync(sessions, "mattero", options=options)
    fake.state.edit_contact("98-A", ledes_client_id="MACK01")  # the client gets its LEDES id in mattero
    full = sync(sessions, "mattero", options=options, full=True)
    assert full.pulled == 400 and full.changed > 0 and full.new == 0
    mackenzie = [row.record for row in stored(sessions).values() if row.record.get("client_source_id") == "98-A"]
    assert mackenzie and all(r["ledes_client_id"] == "MACK01" and "NO_LEDES_CLIENT_ID" not in r["data_quality_flags"]
                             for r in mackenzie)


def test_a_pull_resumes_inside_a_file_from_its_cursor(sessions: sessionmaker[Session], fake: FakeMattero,
                                                     env: dict[str, str], exports: Path) -> None:
    connected(sessions, fake, env, exports)
    with running_fake_mattero(records=2300, seed=5) as big:
        big.state.write_export(exports / "big.csv")
        source = mattero.open_source("m", settings(big, exports), _NoStore(), environ={KEY_ENV: big.api_key})
        pages = source.pull(None)
        first, second = next(pages), next(pages)
        assert [len(first.entries), len(second.entries)] == [1000, 1000]
        cursor = json.loads(second.cursor)
        assert cursor["row"] == 2000 and cursor["taken"] == []
        rest = list(source.pull(second.cursor))
        assert [len(p.entries) for p in rest] == [300]
        ids = [e.source_id for e in first.entries + second.entries + rest[0].entries]
        assert len(ids) == len(set(ids)) == 2300
        assert json.loads(rest[-1].cursor) == {"taken": [cursor["file"]], "full": False}
        assert list(source.pull(rest[-1].cursor)) == []
        source.close()


class _NoStore:
    def load(self) -> dict[str, Any] | None:
        return {"webhook_token": "t" * 43}

    def save(self, credentials: dict[str, Any], expires_at: Any = None) -> None:
        raise AssertionError("nothing to save")


# Faults ------------------------------------------------------------------------------------------------

def test_429_5xx_dropped_connections_and_timeouts_are_retried(
        sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    fake.state.fail_next(1, status=429, retry_after=7, path="/matters")
    fake.state.fail_next(1, status=502, path="/contacts")
    fake.state.drop_next(1, path="/contacts")
    fake.state.slow_next(1, 1.5, path="/matters")  # longer than the 1 s timeout
    report = sync(sessions, "mattero", options=options)
    assert report.complete and report.new == 400
    assert 7 in options.sleep.pauses  # waited as long as Retry-After said
    faults = [r.fault for r in fake.state.log if r.fault]
    assert sorted(faults) == ["drop", "slow", "status", "status"]


def test_a_source_that_keeps_failing_stops_the_sync_to_resume_later(
        sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    fake.state.fail_next(4, status=503, path="/matters")  # every one of max_attempts
    with pytest.raises(SourceUnavailable, match="503") as failed:
        sync(sessions, "mattero", options=options)
    assert failed.value.retryable and stored(sessions) == {}
    report = sync(sessions, "mattero", options=options)  # mattero is back
    assert report.new == 400


def test_a_revoked_key_is_refused_clearly(sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str],
                                          exports: Path) -> None:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    fake.state.api_key = "rotated-by-the-admin"
    with pytest.raises(NotConnected, match="refused the API key") as refused:
        sync(sessions, "mattero", options=options)
    assert not refused.value.retryable and stored(sessions) == {}


def test_a_missing_export_directory_is_a_clear_error(sessions: sessionmaker[Session], fake: FakeMattero,
                                                     env: dict[str, str], exports: Path) -> None:
    options = connected(sessions, fake, env, exports, export_dir=str(exports / "nowhere"))
    with pytest.raises(SourceError, match=r"export directory .* does not exist"):
        sync(sessions, "mattero", options=options)


def test_lists_changing_between_pages_are_read_again(sessions: sessionmaker[Session], fake: FakeMattero,
                                                     env: dict[str, str], exports: Path) -> None:
    for number in range(600):  # three pages of matters
        fake.state.add_matter(f"2023-{number:03d}", f"Old matter {number}")
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    # A matter opened while the list is paged lands on the first page and shifts every other one a place on.
    fake.state.between_pages(1, lambda state: state.add_matter("2026-099", "Opened during the sync"), path="/matters")
    report = sync(sessions, "mattero", options=options)
    assert report.quality_flags.get("UNKNOWN_MATTER") == 1  # only the one the fake made unknown on purpose
    matter_pages = [r for r in fake.state.log if r.path.endswith("/matters")]
    assert len(matter_pages) >= 6  # walked twice: the totals disagreed


# One record --------------------------------------------------------------------------------------------

def test_fetch_reads_one_time_or_expense_record(sessions: sessionmaker[Session], fake: FakeMattero,
                                                env: dict[str, str], exports: Path) -> None:
    connected(sessions, fake, env, exports)
    _connection, source = registry.open_named(sessions, "mattero", registry.Options(environ=env))
    try:
        time_record = next(r for r in fake.state.records if r.kind == "Time" and r.matter_id == "1219-A"
                           and r.staff_label is None)
        [entry] = source.fetch(time_record.id)
        assert entry.source_id == time_record.id and entry.ledes_client_id == "DIBERN01"
        assert entry.amount == time_record.amount and entry.hours_billed == Decimal(time_record.units) / 10
        assert entry.timekeeper_source_id == time_record.staff_id and entry.tax_amount == time_record.gst
        expense = next(r for r in fake.state.records if r.kind == "Expense")
        [cost] = source.fetch(expense.id)
        assert cost.entry_kind == "expense" and cost.amount == expense.amount and cost.fee_basis == "unit"
        fake.state.delete_record(expense.id)
        assert source.fetch(expense.id) is None
    finally:
        source.close()


# Webhooks ----------------------------------------------------------------------------------------------

@dataclass
class Loop:
    fake: FakeMattero
    sessions: sessionmaker[Session]
    url: str
    token: str

    def events(self) -> list[WebhookEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@pytest.fixture
def loop(sessions: sessionmaker[Session], fake: FakeMattero, env: dict[str, str], exports: Path,
         tmp_path: Path) -> Iterator[Loop]:
    options = connected(sessions, fake, env, exports)
    fake.state.write_export(exports / "costs.csv")
    sync(sessions, "mattero", options=options)
    worker = Worker(queue=f"sqlite:///{tmp_path}/queue.db", sessions=sessions, options=options, immediate=True)
    app = create_app(sessions=sessions, worker=worker, source_options=options)
    with serving(app) as (url, _server):
        public = f"{url}/v1/webhooks/mattero"
        made = webhooks.register(sessions, "mattero", public, options)
        assert len(made) == 4 and {s.status for s in made} == {"enabled"}
        again = webhooks.register(sessions, "mattero", public, options)  # idempotent
        assert len(fake.state.webhooks) == 4 and {s.remote_id for s in again} == {s.remote_id for s in made}
        with sessions() as session:
            token = sources.unseal(session.scalar(select(Connection.credentials)))["webhook_token"]
        assert {w.callback_url for w in fake.state.webhooks} == {f"{public}/{token}"}
        yield Loop(fake, sessions, url, token)


def test_a_matter_event_re_reads_the_matter_and_re_enriches_its_entries(loop: Loop) -> None:
    loop.fake.state.edit_matter("1217-A", client_matter_id="HP-LIT-0099", title="Harbour Property v Coastal")
    assert loop.fake.state.deliver("UpdateMatterEvent", "1217-A") == [200]
    [event] = loop.events()
    assert event.processed_at is not None and event.record_id == "matter:1217-A"
    assert set(event.payload) == {"entityId", "entityType"}  # the body's matter is not kept
    rows = [r for r in stored(loop.sessions).values() if r.record.get("matter_source_id") == "1217-A"]
    assert rows and all(r.record["client_matter_id"] == "HP-LIT-0099" and r.client_matter_id == "HP-LIT-0099"
                        and r.record["matter_name"] == "Harbour Property v Coastal" for r in rows)
    assert f"{len(rows)} changed" in event.outcome
    others = [r for r in stored(loop.sessions).values() if r.record.get("matter_source_id") == "1219-A"]
    assert all(r.record["client_matter_id"] == "DB-CA-7" for r in others)


def test_a_contact_event_fixes_a_missing_ledes_id(loop: Loop) -> None:
    before = [r for r in stored(loop.sessions).values() if r.record.get("client_source_id") == "98-A"]
    assert before and all("NO_LEDES_CLIENT_ID" in r.record["data_quality_flags"] for r in before)
    loop.fake.state.edit_contact("98-A", ledes_client_id="MACK01")
    assert loop.fake.state.deliver("UpdateContactEvent", "98-A") == [200]
    after = [r for r in stored(loop.sessions).values() if r.record.get("client_source_id") == "98-A"]
    assert all(r.ledes_client_id == "MACK01" and "NO_LEDES_CLIENT_ID" not in r.record["data_quality_flags"]
               for r in after)


def test_the_body_is_only_a_hint(loop: Loop) -> None:
    body = json.dumps({"entityId": "1219-A", "entityType": "UpdateMatterEvent",
                       "currentValue": {"id": "1219-A", "number": "2025-077", "title": "Forged title",
                                        "customFields": [{"name": "Client Matter ID", "value": "FORGED"}]}})
    answer = httpx.post(f"{loop.url}/v1/webhooks/mattero/{loop.token}", content=body)
    assert answer.status_code == 200
    rows = [r for r in stored(loop.sessions).values() if r.record.get("matter_source_id") == "1219-A"]
    assert rows and all(r.client_matter_id == "DB-CA-7" and r.record["matter_name"] != "Forged title" for r in rows)


def test_a_forged_or_missing_token_gets_401_and_stores_nothing(loop: Loop) -> None:
    assert loop.fake.state.deliver("UpdateMatterEvent", "1217-A", token="guessed-" + loop.token[8:]) == [401]
    body = json.dumps({"entityId": "1217-A", "entityType": "UpdateMatterEvent"}).encode()
    missing = httpx.post(f"{loop.url}/v1/webhooks/mattero", content=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "webhook_rejected"
    smuggled = httpx.post(f"{loop.url}/v1/webhooks/mattero", params={webhooks.PATH_TOKEN: loop.token}, content=body)
    assert smuggled.status_code == 401  # only the path can carry the token
    empty = httpx.post(f"{loop.url}/v1/webhooks/mattero/", content=body, follow_redirects=True)
    assert empty.status_code == 401  # an empty token: redirected to the path without one
    assert loop.events() == []
    assert loop.fake.state.deliver("UpdateMatterEvent", "1217-A") == [200]
    assert len(loop.events()) == 1
