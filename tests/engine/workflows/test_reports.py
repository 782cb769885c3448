"""``findings_report`` against the same figures added up in Python from the stored rows, on SQLite and PostgreSQL,
over a store where entries have several findings (of one severity and of two), one rule id is found on one entry
by two rule sets (the entries by rule are distinct entries, not findings), a finding carries a severity outside the
schema's three, and an entry is withdrawn: every breakdown's findings and distinct entries, the write-downs, the
billed and clean counts, reviewers' write-downs (one entry without its narrow facts row)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import transaction
from engine.store.models import EntryFacts, EntryRow, EntryState, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows import reports, review, sources
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry

START, END = dt.date(2026, 3, 1), dt.date(2026, 4, 30)


def breakdowns(entries: dict[int, EntryRow], current: list[ViolationRow]) -> dict[str, dict[Any, tuple[int, int]]]:
    """Every breakdown of the findings, worked out in Python: per key, (findings, distinct entries)."""

    def of(v: ViolationRow) -> EntryRow:
        return entries[v.entry_id]

    keys: dict[str, Callable[[ViolationRow], Any]] = {
        "rule": lambda v: v.rule_id, "severity": lambda v: v.severity,
        "client": lambda v: of(v).ledes_client_id or of(v).client_source_id,
        "matter": lambda v: of(v).law_firm_matter_id,
        "timekeeper": lambda v: of(v).timekeeper_name or of(v).timekeeper_key,
        "month": lambda v: of(v).work_date.isoformat()[:7]}
    return {dim: {k: (sum(1 for v in current if key(v) == k), len({v.entry_id for v in current if key(v) == k}))
                  for k in {key(v) for v in current}} for dim, key in keys.items()}


def in_python(session: Session, start: dt.date, end: dt.date, clients: tuple[str, ...] = ()) -> dict[str, Any]:
    entries = {e.id: e for e in session.scalars(select(EntryRow))
               if e.state != EntryState.WITHDRAWN and start <= e.work_date <= end
               and (not clients or e.ledes_client_id in clients or e.client_source_id in clients)}
    current = [v for v in session.scalars(select(ViolationRow))
               if v.current and v.rule_status == "active" and v.entry_id in entries]
    ever = {v.entry_id for v in session.scalars(select(ViolationRow)) if v.rule_status == "active"}

    by = breakdowns(entries, current)
    proposed: dict[str, dict[str, Decimal]] = {}
    for v in current:
        if v.adjustment:
            totals = proposed.setdefault(v.rule_id, {})
            currency = entries[v.entry_id].record["currency"]
            totals[currency] = totals.get(currency, Decimal(0)) + Decimal(v.adjustment["amount"])
    billed = [e for e in entries.values() if e.state == EntryState.INVOICED]
    reviewed = [Decimal(a.after["write_down"]) for a in session.scalars(select(ReviewAction))
                if a.action == "adjust" and a.entry_id in entries]
    return {"reviewed": (len(reviewed), {"USD": sum(reviewed, Decimal(0))} if reviewed else {}),
            "entries": len(entries), "findings": len(current), "flagged": len({v.entry_id for v in current}),
            "by": by, "proposed": proposed, "billed": len(billed), "clean": sum(e.id not in ever for e in billed)}


def test_the_report_equals_python_over_the_rows(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [
            entry("1", rate="990.00"),  # over the partner's cap
            entry("2", rate="990.00", narrative="Review file"),  # the cap, and a short, vague narrative
            entry("3", narrative="Attention to matter", work_date="2026-04-02", timekeeper_name="Ng, Mei"),
            entry("4", client_source_id="ACME01", ledes_client_id=None, rate="990.00", law_firm_matter_id="2026-0042"),
            entry("5", timekeeper_source_id="user-day", hours_worked="6.0", hours_billed="6.0"),
            entry("6", timekeeper_source_id="user-day", hours_worked="5.0", hours_billed="5.0"),
            entry("7"),  # clean
            entry("8", rate="990.00"),  # withdrawn below
            entry("9", rate="990.00", work_date="2026-05-04"),  # outside the window
        ], context=CTX)
    with transaction(sessions) as session:
        rows = {r.source_id: r for r in session.scalars(select(EntryRow))}
        rows["7"].state = EntryState.INVOICED
        rows["1"].state = EntryState.INVOICED
        # Another rule set's current finding of the same rule id on "1" (the entry counts once for the rule),
        # and one with a severity the schema does not name, on "3".
        for source_id, changes in (("1", {"ruleset_id": "firm-wide"}),
                                   ("3", {"rule_id": "FIRM-ODD", "severity": "critical", "adjustment": None,
                                          "adjustment_amount": None})):
            found = session.scalar(select(ViolationRow).where(ViolationRow.entry_id == rows[source_id].id,
                                                              ViolationRow.current.is_(True)).limit(1))
            copied = {c.key: getattr(found, c.key) for c in ViolationRow.__table__.columns if c.key != "id"}
            session.add(ViolationRow(**{**copied, **changes}))
    with transaction(sessions) as session:
        sources.withdraw(session, source_system="clio", source_tenant="us/1", source_ids=["8"], actor="sync")

    # Reviewers write down "2" and "6"; "6" then loses its narrow facts row (the report reads its record instead).
    for source_id, rate in (("2", "950.00"), ("6", "900.00")):
        with sessions() as session:
            row = session.scalar(select(EntryRow).where(EntryRow.source_id == source_id))
        with transaction(sessions) as session:
            review.adjust(session, row.id, expected_version=row.version, actor="rita", reason="cap",
                          changes={"rate": rate})
    with transaction(sessions) as session:
        session.execute(delete(EntryFacts).where(EntryFacts.entry_id == rows["6"].id))

    with sessions() as session, session.begin():
        report = reports.findings_report(session, start=START, end=END)
    with sessions() as session:
        want = in_python(session, START, END)
    assert (report.entries, report.findings, report.flagged_entries, report.billed, report.clean) == (
        want["entries"], want["findings"], want["flagged"], want["billed"], want["clean"])
    for dim, groups in want["by"].items():
        assert {g.key: (g.findings, g.entries) for g in report.by[dim]} == groups, dim
    assert {g.key: g.write_down for g in report.by["rule"] if g.write_down} == want["proposed"]
    assert (report.reviewed_count, report.reviewed) == want["reviewed"]
    assert want["reviewed"] == (2, {"USD": Decimal("-185.00")})  # 1.5 h from 990 to 950, 5 h from 925 to 900
    # What the store holds is what the test means it to: several findings per entry, of one severity and two,
    # one rule twice on an entry, an odd severity, a clean bill and a flagged one, the withdrawn entry left out.
    assert want["findings"] > want["flagged"] and (want["billed"], want["clean"]) == (2, 1)
    cap = want["by"]["rule"]["ACME-RATE-001"]
    assert cap[0] == cap[1] + 1
    assert want["by"]["severity"]["critical"] == (1, 1) and len(want["by"]["severity"]) >= 3
    assert any(f > e for f, e in want["by"]["severity"].values())
    assert len(want["by"]["month"]) == 2 and len(want["by"]["matter"]) == 2 and len(want["by"]["timekeeper"]) == 2
    assert "4" in {r.source_id for r in rows.values() if r.ledes_client_id is None}  # its client: the source's id

    # Windows that cut through a month (SQLite reads its index by month, then by date), and a client.
    for start, end, clients in ((dt.date(2026, 3, 1), dt.date(2026, 4, 1), ()),
                                (dt.date(2026, 3, 11), dt.date(2026, 5, 31), ()),
                                (dt.date(2026, 4, 2), dt.date(2026, 4, 2), ()),
                                (START, END, ("ACME01",)), (START, END, ("NOBODY",))):
        with sessions() as session, session.begin():
            report = reports.findings_report(session, start=start, end=end, clients=clients)
        with sessions() as session:
            want = in_python(session, start, end, clients)
        assert (want["findings"] == 0) == (clients == ("NOBODY",))
        assert (report.entries, report.findings, report.flagged_entries, report.billed, report.clean) == (
            want["entries"], want["findings"], want["flagged"], want["billed"], want["clean"]), (start, end)
        for dim, groups in want["by"].items():
            assert {g.key: (g.findings, g.entries) for g in report.by[dim]} == groups, (dim, start, end)
        assert {g.key: g.write_down for g in report.by["rule"] if g.write_down} == want["proposed"]
