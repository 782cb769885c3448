"""The entry's columns each violation keeps for the findings report (``ViolationRow.entry_*``), and each entry's
``entry_facts`` row (what backtests read), stay equal to the entry's after an ingest, a new source version (with a
new date, matter and source client id), a reviewer's adjust, a neighbour judged again by the daily cap, and a
withdrawal, as does the adjustment's amount each keeps beside its JSON; and the report over them counts what is
stored."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.store.db import transaction
from engine.store.models import EntryFacts, EntryRow, EntryState, RuleSetStatus, ViolationRow
from engine.workflows import reports, review
from engine.workflows.intake import facts, ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry


def of_entry(row: EntryRow) -> dict[str, Any]:
    timekeeper = row.timekeeper_name if row.timekeeper_name is not None else row.timekeeper_key
    return {"work_date": row.work_date, "ledes_client_id": row.ledes_client_id,
            "client_source_id": row.client_source_id, "matter": row.law_firm_matter_id, "timekeeper": timekeeper,
            "currency": row.record.get("currency")}


def amount(v: ViolationRow) -> Decimal | None:
    return Decimal(v.adjustment["amount"]) if v.adjustment else None


def of_violation(v: ViolationRow) -> dict[str, Any]:
    return {"work_date": v.entry_work_date, "ledes_client_id": v.entry_ledes_client_id,
            "client_source_id": v.entry_client_source_id, "matter": v.entry_matter_id,
            "timekeeper": v.entry_timekeeper, "currency": v.entry_currency}


def check(sessions: sessionmaker[Session]) -> dict[str, set[str]]:
    """Every current violation carries its entry's columns, every violation has them filled in, and no withdrawn
    entry has a current one (the report leans on that). The current rule ids by source id."""
    found: dict[str, set[str]] = {}
    with sessions() as session:
        entries = {row.id: row for row in session.scalars(select(EntryRow))}
        for v in session.scalars(select(ViolationRow).order_by(ViolationRow.id)):
            assert v.entry_work_date is not None, v.rule_id
            assert v.adjustment_amount == amount(v) and isinstance(v.adjustment_amount, Decimal | None)
            if not v.current:
                continue
            row = entries[v.entry_id]
            assert row.state != EntryState.WITHDRAWN
            assert of_violation(v) == of_entry(row), (row.source_id, v.rule_id)
            found.setdefault(row.source_id, set()).add(v.rule_id)
    return found


def check_facts(sessions: sessionmaker[Session]) -> int:
    """Every stored entry has its ``entry_facts`` row, equal to what its record and state give (the backtest's
    database reads these instead of the records). The number of entries."""
    with sessions() as session:
        rows = {row.id: row for row in session.scalars(select(EntryRow))}
        stored = {f.entry_id: f for f in session.scalars(select(EntryFacts))}
        assert set(stored) == set(rows)
        for entry_id, row in rows.items():
            wanted = facts(Entry.model_validate(row.record), entry_id, row.state)
            got = {name: getattr(stored[entry_id], name) for name in wanted}
            assert got == wanted, (row.source_id, {k: (got[k], v) for k, v in wanted.items() if got[k] != v})
            assert all(not isinstance(v, float) for v in got.values())
    return len(rows)


def report_counts(sessions: sessionmaker[Session]) -> tuple[int, int, dict[str | None, int]]:
    with sessions() as session, session.begin():
        report = reports.findings_report(session, start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 31))
    return report.findings, report.flagged_entries, {g.key: g.findings for g in report.by["matter"]}


def test_the_report_columns_follow_the_entry(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [
            entry("1", rate="990.00"),
            entry("2", narrative="Review file and attention to matter"),
            entry("3", rate="990.00", timekeeper_name=None, client_source_id="acme-src"),
            # one timekeeper's day over the cap: "4" and "5" are each other's neighbours
            entry("4", timekeeper_source_id="user-day", hours_worked="6.0", hours_billed="6.0"),
        ], context=CTX)
    found = check(sessions)
    assert check_facts(sessions) > 0
    assert found["1"] == {"ACME-RATE-001"} and "ACME-RATE-001" in found["3"] and found["2"]
    with sessions() as session:
        three = session.scalar(select(ViolationRow).join(EntryRow, EntryRow.id == ViolationRow.entry_id)
                               .where(EntryRow.source_id == "3", ViolationRow.current.is_(True)).limit(1))
        assert (three.entry_ledes_client_id, three.entry_client_source_id) == ("ACME01", "acme-src")
        assert three.entry_timekeeper == "user-3"  # no name: the timekeeper's key

    # A new source version moves "1" to another day, matter and source client; a neighbour joins "4"'s day.
    with transaction(sessions) as session:
        ingest(session, [entry("1", rate="995.00", work_date="2026-03-12", law_firm_matter_id="2026-0042",
                               client_source_id="acme-7", source_version='"v2"'),
                         entry("5", timekeeper_source_id="user-day", hours_worked="5.0", hours_billed="5.0")],
               context=CTX)
    found = check(sessions)
    assert check_facts(sessions) > 0
    assert "ACME-RATE-001" in found["1"]
    assert "4" in found and "5" in found  # the day's cap flags both: "4" was judged again as a neighbour
    with sessions() as session:
        one = session.scalar(select(ViolationRow).join(EntryRow, EntryRow.id == ViolationRow.entry_id)
                             .where(EntryRow.source_id == "1", ViolationRow.current.is_(True)).limit(1))
        assert (one.entry_work_date, one.entry_matter_id, one.entry_client_source_id) == (
            dt.date(2026, 3, 12), "2026-0042", "acme-7")

    # A reviewer's adjust judges "2" again from its stored row: its findings are written again.
    with sessions() as session:
        two = session.scalar(select(EntryRow).where(EntryRow.source_id == "2"))
    with transaction(sessions) as session:
        review.adjust(session, two.id, expected_version=two.version, actor="rita", reason="over the cap too",
                      changes={"rate": "990.00"})
    found = check(sessions)
    assert check_facts(sessions) > 0
    assert "ACME-RATE-001" in found["2"]
    with sessions() as session:
        proposed = [v.adjustment_amount for v in session.scalars(select(ViolationRow).where(
            ViolationRow.current.is_(True), ViolationRow.adjustment_amount.is_not(None)))]
    assert proposed and all(a < 0 for a in proposed)  # the rate cap's write-downs, as Decimal

    before = report_counts(sessions)
    with transaction(sessions) as session:
        ingest(session, [entry("3", rate="990.00", timekeeper_name=None, client_source_id="acme-src",
                               status="deleted", source_version='"v2"')], context=CTX)
    found = check(sessions)
    assert check_facts(sessions) > 0
    assert "3" not in found
    after = report_counts(sessions)
    assert after[1] == before[1] - 1 and after[0] < before[0]
    with sessions() as session:
        current = [v for v in session.scalars(select(ViolationRow).where(ViolationRow.current.is_(True)))
                   if v.rule_status == "active"]
    assert after[0] == len(current) and after[1] == len({v.entry_id for v in current})


def test_migration_0007_fills_the_columns_of_stored_findings(db_url: str, sessions: sessionmaker[Session]) -> None:
    """Down to 0006 (the columns go) and up again: the stored findings are filled in from their entries."""
    from alembic import command

    from engine.store.db import alembic_config, current_revision, upgrade

    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [entry("1", rate="990.00"), entry("2", narrative="Review file and attention to matter"),
                         entry("3", rate="990.00", timekeeper_name=None, client_source_id="acme-src",
                               work_date="2026-03-11")], context=CTX)
        ingest(session, [entry("1", rate="995.00", law_firm_matter_id="2026-0042", source_version='"v2"')],
               context=CTX)

    def stored() -> list[tuple[Any, ...]]:
        with sessions() as session:
            return [(v.id, v.current, v.adjustment_amount, *of_violation(v).values())
                    for v in session.scalars(select(ViolationRow).order_by(ViolationRow.id))]

    written = stored()
    assert len(written) > 3 and any(row[2] is not None for row in written)
    sessions.kw["bind"].dispose()  # type: ignore[union-attr]
    command.downgrade(alembic_config(db_url), "0006")
    assert current_revision(db_url) == "0006"
    upgrade(db_url)
    assert current_revision(db_url) == "0010"
    assert check_facts(sessions) == 3  # migration 0008 copies every entry's facts, as intake writes them
    filled = stored()
    # A current finding gets back exactly what intake wrote; a superseded one gets its entry's present values
    # (what the entry was when it was recorded is not kept; the report reads current findings only).
    assert [row for row in filled if row[1]] == [row for row in written if row[1]]
    assert [row[:3] for row in filled] == [row[:3] for row in written]
    assert all(row[3] is not None for row in filled)
