"""Budgets and attendance limits over the store: entries arriving in any batches and any order end with the findings
judging them all at once would give; the stored entries whose running totals or events they change are judged
again; a reviewer's reject re-judges what it affects; and an entry keeps the evaluation context it was judged with."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.store.db import transaction
from engine.store.models import EntryRow, EntryState, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows import review
from engine.workflows.intake import IngestResult, ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry

STAFFING = """\
id: staffing-test
version: "1"
applies_to: {clients: [ACME01]}
rules:
  - id: ATT-001
    title: At most two timekeepers at a deposition
    type: attendance_limit
    params: {max_timekeepers: 2, task_codes: [L330], events: [deposition, hearing]}
  - id: BUD-001
    title: Matter budget
    type: budget
    params:
      warn_at: 0.8
      include_expenses: true
      budgets:
        - {matter: "2026-0017", amount: 6000}
        - {matter: "2026-0017", phase: L300, per: month, amount: 2500}
"""
RULESET = load_text(STAFFING, "staffing.yaml")


@pytest.fixture
def staffing(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, STAFFING, status=RuleSetStatus.ACTIVE)


def send(sessions: sessionmaker[Session], *entries: Entry, **options: Any) -> IngestResult:
    with transaction(sessions) as session:
        return ingest(session, list(entries), **{"context": CTX, **options})


def stored(sessions: sessionmaker[Session]) -> tuple[list[Entry], dict[str, set[tuple[str, str, str]]]]:
    """The counted entries in the order they were first stored, and each one's current findings."""
    with sessions() as session:
        rows = list(session.scalars(select(EntryRow).where(EntryRow.state.in_(
            [EntryState.READY, EntryState.IN_REVIEW])).order_by(EntryRow.id)))
        found: dict[str, set[tuple[str, str, str]]] = {row.entry_uid: set() for row in rows}
        for uid, rule_id, severity, message in session.execute(
                select(EntryRow.entry_uid, ViolationRow.rule_id, ViolationRow.severity, ViolationRow.message)
                .join(ViolationRow, ViolationRow.entry_id == EntryRow.id).where(ViolationRow.current.is_(True))):
            if uid in found:
                found[uid].add((rule_id, severity, message))
        return [Entry.model_validate(row.record) for row in rows], found


def expected(entries: list[Entry]) -> dict[str, set[tuple[str, str, str]]]:
    out: dict[str, set[tuple[str, str, str]]] = {e.entry_uid: set() for e in entries}
    for v in evaluate(entries, RULESET, context=CTX, backend="python"):
        out[v.entry_uid].add((v.rule_id, v.severity, v.message))
    return out


def fees(n: int, day: int, hours: str = "1.0", task: str = "L310", **changes: object) -> Entry:
    return entry(f"f{n}", work_date=f"2026-03-{day:02d}", hours_billed=hours, hours_worked=hours, rate="500.00",
                 utbms_task_code=task, utbms_activity_code="A103", narrative=f"Drafted discovery requests ({n})",
                 **changes)


def batch_of_fees() -> list[Entry]:
    entries = [fees(n, 2 + (n * 7) % 27, hours=str(Decimal(n % 4 + 1) / 2), task=("L310", "L210", "L330")[n % 3])
               for n in range(24)]
    entries.append(entry("x1", entry_kind="expense", fee_basis="unit", work_date="2026-03-20", quantity="1",
                         rate="800.00", amount="800.00", utbms_expense_code="E110", hours_billed=None,
                         hours_worked=None, utbms_task_code=None, utbms_activity_code=None, narrative="Hotel"))
    return entries


@pytest.mark.parametrize("seed", [1, 2])
def test_budget_findings_do_not_depend_on_batching_or_order(sessions: sessionmaker[Session], staffing: None,
                                                            seed: int) -> None:
    entries = batch_of_fees()
    random.Random(seed).shuffle(entries)
    rejudged = 0
    for start in range(0, len(entries), 3):  # backdated arrivals move the totals of stored later entries
        rejudged += send(sessions, *entries[start:start + 3]).rejudged
    order, found = stored(sessions)
    assert [e.entry_uid for e in order] == [e.entry_uid for e in entries]
    want = expected(order)
    assert found == want
    assert rejudged > 0
    assert any(rule == "BUD-001" and severity == "warning" for f in want.values() for rule, severity, _ in f)
    assert any(rule == "BUD-001" and severity == "error" for f in want.values() for rule, severity, _ in f)


def test_a_backdated_entry_moves_the_running_totals_of_later_ones(sessions: sessionmaker[Session],
                                                                   staffing: None) -> None:
    later = [fees(n, 10 + n, hours="2.0", task="L210") for n in range(6)]  # 1,000 each: 6,000 is within budget
    send(sessions, *later)
    _, found = stored(sessions)
    assert {uid for uid, f in found.items() if any(r == "BUD-001" and s == "error" for r, s, _ in f)} == set()
    send(sessions, fees(99, 2, hours="0.2", task="L210"))  # 100 more, before all of them: the last one is now over
    order, found = stored(sessions)
    assert found == expected(order)
    over = {uid for uid, f in found.items() if any(r == "BUD-001" and s == "error" for r, s, _ in f)}
    assert over == {later[-1].entry_uid}
    with sessions() as session:
        last = session.scalar(select(EntryRow).where(EntryRow.entry_uid == later[-1].entry_uid))
        assert last is not None and last.state == EntryState.IN_REVIEW
        action = session.scalars(select(ReviewAction).where(ReviewAction.entry_id == last.id)
                                 .order_by(ReviewAction.id.desc())).first()
        assert action is not None and action.action == "rejudged"
        assert "BUD-001" in (action.reason or "") and fees(99, 2).entry_uid in (action.reason or "")


def test_rejecting_the_entry_that_crossed_the_budget_clears_the_later_ones(sessions: sessionmaker[Session],
                                                                           staffing: None) -> None:
    send(sessions, *[fees(n, 10 + n, hours="2.5", task="L210") for n in range(3)])  # 1,250 each; 3,750 of 6,000
    send(sessions, fees(9, 20, hours="5.0", task="L210"))  # 2,500 more: 6,250, over
    send(sessions, fees(10, 21, hours="0.2", task="L210"))  # 100: still over
    order, found = stored(sessions)
    assert found == expected(order)
    assert any(r == "BUD-001" and s == "error" for r, s, _ in found[fees(10, 21).entry_uid])
    with transaction(sessions) as session:
        crossing = session.scalar(select(EntryRow).where(EntryRow.entry_uid == fees(9, 20).entry_uid))
        assert crossing is not None
        review.reject(session, crossing.id, expected_version=crossing.version, actor="test", reason="over budget")
    order, found = stored(sessions)
    assert found == expected(order)
    assert not any(r == "BUD-001" and s == "error" for r, s, _ in found[fees(10, 21).entry_uid])


def deposition(n: int, rate: str, **changes: object) -> Entry:
    return entry(f"d{n}", rate=rate, utbms_task_code="L330", utbms_activity_code="A101",
                 narrative=f"Attended deposition of the Borealis dispatcher ({n})", **changes)


def test_the_lowest_rate_attendee_is_the_extra_one_whatever_the_arrival_order(sessions: sessionmaker[Session],
                                                                             staffing: None) -> None:
    send(sessions, deposition(1, "500.00"))
    send(sessions, deposition(2, "400.00"))
    send(sessions, deposition(3, "450.00"))  # three at the deposition: the 400 one is extra
    order, found = stored(sessions)
    assert found == expected(order)
    flagged = {uid for uid, f in found.items() if any(r == "ATT-001" for r, _, _ in f)}
    assert flagged == {deposition(2, "0").entry_uid}
    result = send(sessions, deposition(4, "900.00"))  # a partner joins: now 400 and 450 are extra
    assert result.rejudged >= 1
    order, found = stored(sessions)
    assert found == expected(order)
    flagged = {uid for uid, f in found.items() if any(r == "ATT-001" for r, _, _ in f)}
    assert flagged == {deposition(2, "0").entry_uid, deposition(3, "0").entry_uid}
    with transaction(sessions) as session:  # rejecting an attendee re-judges the event: one extra left
        partner = session.scalar(select(EntryRow).where(EntryRow.entry_uid == deposition(4, "0").entry_uid))
        assert partner is not None and partner.state == EntryState.IN_REVIEW  # (over the L300 budget too)
        review.reject(session, partner.id, expected_version=partner.version, actor="test", reason="not needed")
    order, found = stored(sessions)
    assert found == expected(order)
    flagged = {uid for uid, f in found.items() if any(r == "ATT-001" for r, _, _ in f)}
    assert flagged == {deposition(2, "0").entry_uid}


def test_an_adjusted_entry_is_judged_as_of_the_date_it_was_judged_with(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
    context = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1),
                                period_end=dt.date(2026, 3, 31))
    send(sessions, entry("late?", rate="990.00"), context=context)  # over the rate cap, not late on 6 April
    with transaction(sessions) as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == "late?"))
        assert row is not None
        assert (row.as_of, row.period_start, row.period_end) == (dt.date(2026, 4, 6), dt.date(2026, 3, 1),
                                                                 dt.date(2026, 3, 31))
        review.adjust(session, row.id, expected_version=row.version, actor="test", reason="to the cap",
                      changes={"rate": Decimal("925.00")})
    with sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == "late?"))
        assert row is not None and row.state == EntryState.READY  # months later, still not late
        assert row.as_of == dt.date(2026, 4, 6)
    send(sessions, entry("later", rate="990.00"), context=context)
    with transaction(sessions) as session:  # a context given with the action wins, and is kept
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == "later"))
        assert row is not None
        review.adjust(session, row.id, expected_version=row.version, actor="test", reason="to the cap",
                      changes={"rate": Decimal("925.00")}, context=EvaluationContext(as_of=dt.date(2026, 9, 1)))
    with sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == "later"))
        assert row is not None and row.state == EntryState.IN_REVIEW and row.as_of == dt.date(2026, 9, 1)
        rules = set(session.scalars(select(ViolationRow.rule_id).where(ViolationRow.entry_id == row.id,
                                                                        ViolationRow.current.is_(True))))
        assert rules == {"ACME-LATE-001"}


def test_a_changed_source_version_keeps_the_billing_period_it_was_judged_in(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
    send(sessions, entry("p1"))  # CTX: the March period
    with transaction(sessions) as session:
        ingest(session, [entry("p1", source_version='"v2"', hours_billed="1.6", hours_worked="1.6")])
    with sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == "p1"))
        assert row is not None and (row.period_start, row.period_end) == (CTX.period_start, CTX.period_end)
        assert row.as_of == dt.date.today()
