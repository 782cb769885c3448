"""Aggregate rules across batches: an arriving entry is judged with the stored entries of its timekeeper's day,
and the stored entries whose findings it changes are judged again, audited, and moved between ready and review."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import (
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    InvoiceRow,
    PortalRejection,
    ReviewAction,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)
from engine.workflows import intake, review
from engine.workflows.intake import NEVER_TRIPS, CircuitBreaker, IngestResult, ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry, rules_yaml

ACME = (REPO / "rules" / "acme-corp.yaml").read_text()
SAME = "Drafted answer to the amended counterclaim"  # a narrative two entries share: duplicates
UID = "clio:us/1:"


def work(source_id: str, hours: str, **changes: object) -> Entry:
    """Okafor's time on 2026-03-10, clean on its own (the Acme cap is 10 h a day)."""
    return entry(source_id, hours_billed=hours, hours_worked=hours, **{"timekeeper_source_id": "user-okafor",
                                                                         **changes})


@pytest.fixture
def acme(sessions: sessionmaker[Session]) -> RuleSetVersion:
    with transaction(sessions) as session:
        return add_ruleset_version(session, ACME, status=RuleSetStatus.ACTIVE)


def send(sessions: sessionmaker[Session], *entries: Entry, **options: Any) -> IngestResult:
    """One batch in its own transaction, as a webhook or one page of a sync delivers it."""
    with transaction(sessions) as session:
        return ingest(session, list(entries), **{"context": CTX, **options})


def row(session: Session, source_id: str) -> EntryRow:
    found = session.scalar(select(EntryRow).where(EntryRow.source_id == source_id))
    assert found is not None
    return found


def current(session: Session, source_id: str) -> list[ViolationRow]:
    return list(session.scalars(select(ViolationRow).where(ViolationRow.entry_id == row(session, source_id).id,
                                                           ViolationRow.current.is_(True))
                                .order_by(ViolationRow.rule_id)))


def trail(session: Session, source_id: str) -> list[ReviewAction]:
    return review.history(session, row(session, source_id).id)


def set_state(sessions: sessionmaker[Session], state: EntryState, *source_ids: str) -> None:
    with transaction(sessions) as session:
        for source_id in source_ids:
            row(session, source_id).state = state


def test_an_entry_arriving_alone_is_judged_with_the_stored_entries_of_its_day(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    first = send(sessions, work("1", "6.0"))
    second = send(sessions, work("2", "5.0"))
    assert (second.in_review, second.rejudged) == (1, 1)
    with sessions() as session:
        assert (row(session, "1").state, row(session, "1").version) == (EntryState.IN_REVIEW, 2)  # a new ETag
        assert (row(session, "2").state, row(session, "2").version) == (EntryState.IN_REVIEW, 1)
        message = "Okafor, Daniel billed 11.0 h on 2026-03-10 in 2 entries (cap 10 h)"
        for source_id in ("1", "2"):
            assert [(v.rule_id, v.message, v.contributing) for v in current(session, source_id)] == [
                ("ACME-DAY-001", message, [f"{UID}1", f"{UID}2"])]
        rejudged = trail(session, "1")[-1]
        assert (rejudged.action, rejudged.actor) == ("rejudged", "system:ingest")
        assert rejudged.reason == f"ACME-DAY-001 changed when {UID}2 was ingested"
        assert rejudged.before == {"state": "ready", "version": 1, "worst_severity": None, "findings": []}
        assert rejudged.after == {
            "state": "in_review", "version": 2, "worst_severity": "warning",
            "findings": [{"rule_id": "ACME-DAY-001", "severity": "warning", "message": message}],
            "rules": ["ACME-DAY-001"], "cause": [{"entry_uid": f"{UID}2", "action": "ingested"}]}
        # The decision log: the first decision is no longer current; the new one belongs to the second batch.
        evaluations = session.scalars(select(Evaluation).where(Evaluation.entry_id == row(session, "1").id)
                                      .order_by(Evaluation.id)).all()
        assert [(e.current, e.flagged, e.entry_version, e.batch_id) for e in evaluations] == [
            (False, False, 1, first.batch_id), (True, True, 2, second.batch_id)]


def test_a_duplicate_of_a_stored_entry_is_found(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "1.5", narrative=SAME))
    send(sessions, work("2", "1.50", narrative=SAME.upper()))
    with sessions() as session:
        for source_id in ("1", "2"):
            [v] = current(session, source_id)
            assert (v.rule_id, v.contributing) == ("ACME-DUP-001", [f"{UID}1", f"{UID}2"])
            assert v.evidence[-1]["expected"] == "user-okafor, 2026-03-10, L210, 1.5"  # as the first one wrote it
            assert row(session, source_id).state == EntryState.IN_REVIEW
        assert trail(session, "1")[-1].reason == f"ACME-DUP-001 changed when {UID}2 was ingested"


def test_billed_entries_count_but_are_never_judged_again(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("dup", "1.5", narrative=SAME, work_date="2026-03-11"))
    set_state(sessions, EntryState.INVOICED, "1")
    set_state(sessions, EntryState.CONFLICT, "dup")  # a billed entry the source changed since: still billed
    result = send(sessions, work("2", "5.0"), work("dup-again", "1.5", narrative=SAME, work_date="2026-03-11"))
    assert (result.in_review, result.rejudged) == (2, 0)
    with sessions() as session:
        assert [(v.rule_id, v.contributing) for v in current(session, "2")] == [
            ("ACME-DAY-001", [f"{UID}1", f"{UID}2"])]
        assert [(v.rule_id, v.contributing) for v in current(session, "dup-again")] == [
            ("ACME-DUP-001", [f"{UID}dup", f"{UID}dup-again"])]
        for billed, state in (("1", EntryState.INVOICED), ("dup", EntryState.CONFLICT)):
            assert (row(session, billed).state, row(session, billed).version) == (state, 1)
            assert current(session, billed) == []
            assert [a.action for a in trail(session, billed)] == ["ingested"]


def test_rejected_and_withdrawn_entries_do_not_count(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("rejected", "6.0"), work("withdrawn", "6.0", status="deleted"))
    set_state(sessions, EntryState.REJECTED, "rejected")
    result = send(sessions, work("2", "5.0"))
    assert (result.ready, result.rejudged) == (1, 0)
    with sessions() as session:
        assert current(session, "2") == []
        assert row(session, "rejected").state == EntryState.REJECTED


def test_a_withdrawn_entry_brings_its_day_back_under_the_cap(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"))
    result = send(sessions, work("2", "5.0", status="deleted", source_version='"v2"'))
    assert (result.withdrawn, result.rejudged) == (1, 1)
    with sessions() as session:
        assert (row(session, "1").state, row(session, "1").version, row(session, "1").worst_severity) == (
            EntryState.READY, 2, None)
        assert current(session, "1") == []
        rejudged = trail(session, "1")[-1]
        assert rejudged.reason == f"ACME-DAY-001 changed when {UID}2 was withdrawn"
        assert (rejudged.before["state"], rejudged.after["state"], rejudged.after["findings"]) == (
            "in_review", "ready", [])


def test_an_entry_moved_to_another_day_leaves_one_and_joins_the_other(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"), work("3", "6.0", work_date="2026-03-11"))
    result = send(sessions, work("2", "5.0", work_date="2026-03-11", source_version='"v2"'))
    assert (result.updated, result.in_review, result.rejudged) == (1, 1, 2)
    with sessions() as session:
        assert row(session, "1").state == EntryState.READY and current(session, "1") == []
        for source_id in ("2", "3"):
            assert [v.message for v in current(session, source_id)] == [
                "Okafor, Daniel billed 11.0 h on 2026-03-11 in 2 entries (cap 10 h)"]
        assert trail(session, "1")[-1].reason == f"ACME-DAY-001 changed when {UID}2 was updated"
        assert trail(session, "3")[-1].reason == f"ACME-DAY-001 changed when {UID}2 was updated"


def test_an_approval_covers_the_findings_the_reviewer_saw_not_a_longer_day(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"))
    with transaction(sessions) as session:
        review.approve(session, row(session, "1").id, expected_version=1, actor="rita", reason="trial day")
    send(sessions, work("3", "1.0"))
    with sessions() as session:
        first = row(session, "1")
        assert (first.state, first.version) == (EntryState.IN_REVIEW, 3)
        approve, rejudged = trail(session, "1")[-2:]
        assert approve.before["overridden"] == rejudged.before["findings"] == [{
            "rule_id": "ACME-DAY-001", "severity": "warning",
            "message": "Okafor, Daniel billed 11.0 h on 2026-03-10 in 2 entries (cap 10 h)"}]
        assert rejudged.after["findings"][0]["message"] == (
            "Okafor, Daniel billed 12.0 h on 2026-03-10 in 3 entries (cap 10 h)")
        assert (rejudged.before["state"], rejudged.after["state"]) == ("ready", "in_review")
    # A reviewer still looking at the approved version cannot act on findings that are no longer current.
    with pytest.raises(review.StaleVersion), transaction(sessions) as session:
        review.reject(session, first.id, expected_version=2, actor="rita", reason="too long")


def test_an_approval_stands_when_a_finding_goes_away(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "1.5", narrative=SAME, rate="990.00"), work("2", "1.5", narrative=SAME))
    with transaction(sessions) as session:
        assert [v.rule_id for v in current(session, "1")] == ["ACME-DUP-001", "ACME-RATE-001"]
        review.approve(session, row(session, "1").id, expected_version=1, actor="rita",
                       reason="two calls that day; the 2026 rate is agreed")
    send(sessions, work("2", "1.5", narrative=SAME, status="deleted", source_version='"v2"'))
    with sessions() as session:
        first = row(session, "1")
        assert (first.state, first.version, first.worst_severity) == (EntryState.READY, 3, "error")
        assert [v.rule_id for v in current(session, "1")] == ["ACME-RATE-001"]
        rejudged = trail(session, "1")[-1]
        assert [f["rule_id"] for f in rejudged.before["findings"]] == ["ACME-DUP-001", "ACME-RATE-001"]
        assert [f["rule_id"] for f in rejudged.after["findings"]] == ["ACME-RATE-001"]


def test_a_held_entry_stays_held_while_the_version_that_held_it_flags_it(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    flags_everything = CircuitBreaker(share=0.5, minimum=2)
    held = send(sessions, work("1", "6.0", rate="990.00"), work("x", "1.0", rate="990.00"), breaker=flags_everything)
    assert held.held == 2
    send(sessions, work("2", "5.0"))
    with sessions() as session:
        first = row(session, "1")
        assert (first.state, first.version) == (EntryState.HELD, 2)
        assert [v.rule_id for v in current(session, "1")] == ["ACME-DAY-001", "ACME-RATE-001"]
        assert session.scalar(select(Evaluation.held).where(Evaluation.entry_id == first.id, Evaluation.current))
        assert row(session, "2").state == EntryState.IN_REVIEW  # no breaker tripped on its batch


def test_an_entry_the_portal_rejected_stays_in_review(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"))
    with transaction(sessions) as session:
        invoice = InvoiceRow(
            number="HM000001", client_id="ACME01", matters=["2026-0017"], format="1998B",
            invoice_date=dt.date(2026, 4, 1), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31),
            total=Decimal("0"), fees_total=Decimal("0"), expenses_total=Decimal("0"), adjustments_total=Decimal("0"),
            line_count=1, content="", sha256="0" * 64, profile={}, created_by="test")
        session.add(invoice)
        session.flush()
        session.add(PortalRejection(invoice_id=invoice.id, rejection_id="r1", entry_id=row(session, "1").id,
                                    kind="rejected", reason="Task code not allowed on this matter"))
    send(sessions, work("2", "5.0", status="deleted", source_version='"v2"'))
    with sessions() as session:
        assert row(session, "1").state == EntryState.IN_REVIEW and current(session, "1") == []


def test_a_reviewers_adjustment_judges_the_day_again(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"))
    with transaction(sessions) as session:
        # Still over the cap: the adjusted entry is judged with the rest of its day, not alone.
        review.adjust(session, row(session, "2").id, expected_version=1, actor="rita", reason="per the diary",
                      changes={"hours_billed": Decimal("4.5")}, context=CTX)
        assert [v.message for v in current(session, "2")] == [
            "Okafor, Daniel billed 10.5 h on 2026-03-10 in 2 entries (cap 10 h)"]
        assert row(session, "2").state == EntryState.IN_REVIEW
        review.adjust(session, row(session, "2").id, expected_version=2, actor="rita", reason="written down",
                      changes={"hours_billed": Decimal("4.0")}, context=CTX)
    with sessions() as session:
        for source_id in ("1", "2"):
            assert (row(session, source_id).state, current(session, source_id)) == (EntryState.READY, [])
        assert [(a.action, a.reason) for a in trail(session, "1")[-2:]] == [
            ("rejudged", f"ACME-DAY-001 changed when {UID}2 was changed")] * 2


def test_a_rejected_entry_leaves_its_day(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    send(sessions, work("1", "6.0"), work("2", "5.0"))
    with transaction(sessions) as session:
        review.reject(session, row(session, "2").id, expected_version=1, actor="rita", reason="not billable",
                      context=CTX)  # judges the rest of its day again
        assert intake.rejudge_days(session, [row(session, "2")], actor="rita", context=CTX).rejudged == 0  # done
    with sessions() as session:
        assert (row(session, "1").state, current(session, "1")) == (EntryState.READY, [])
        assert (row(session, "2").state, row(session, "2").version) == (EntryState.REJECTED, 2)  # not judged
        rejudged = trail(session, "1")[-1]
        assert (rejudged.actor, rejudged.reason) == ("rita", f"ACME-DAY-001 changed when {UID}2 was rejected")


def test_a_shadow_version_records_its_findings_on_the_stored_entries_without_moving_them(
        sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME, status=RuleSetStatus.SHADOW)
    send(sessions, work("1", "6.0"))
    assert send(sessions, work("2", "5.0")).rejudged == 1
    with sessions() as session:
        assert row(session, "1").state == EntryState.READY
        assert [(v.rule_id, v.rule_status) for v in current(session, "1")] == [("ACME-DAY-001", "shadow")]


def test_the_stored_neighbours_cost_a_few_queries_per_batch(sessions: sessionmaker[Session],
                                                           acme: RuleSetVersion) -> None:
    def spread(prefix: str, count: int) -> list[Entry]:  # one hour each for 40 timekeepers over 28 days
        return [work(f"{prefix}{i}", "1.0", timekeeper_source_id=f"user-{i % 40}",
                     work_date=f"2026-03-{1 + i % 28:02d}") for i in range(count)]

    def statements(batch: list[Entry]) -> int:
        seen: list[str] = []
        engine = sessions.kw["bind"]
        listener = lambda *args: seen.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
        event.listen(engine, "before_cursor_execute", listener)
        try:
            send(sessions, *batch)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    send(sessions, *spread("a", 600))
    few, many = statements(spread("b", 6)), statements(spread("c", 600))
    assert few == many  # the same statements for 6 entries and their 24 neighbours as for 600 and 1,800


# One batch or many -------------------------------------------------------------------------------------

HOURS = st.sampled_from(["0.5", "1.5", "1.50", "2.0", "3.0", "4.5", "6.0"])


@st.composite
def files(draw: st.DrawFn) -> list[Entry]:
    """A source's export: a few timekeepers and days, so that days go over the cap and entries repeat; some
    records repeat an earlier one's id with a newer version (last one wins), some delete it."""
    records = []
    for position in range(draw(st.integers(min_value=1, max_value=16))):
        hours = draw(HOURS)
        records.append(entry(
            str(draw(st.integers(min_value=0, max_value=11))), source_version=f'"v{position}"',
            timekeeper_source_id=draw(st.sampled_from(["user-okafor", "user-chen"])),
            work_date=draw(st.sampled_from(["2026-03-10", "2026-03-11"])), hours_billed=hours, hours_worked=hours,
            utbms_task_code=draw(st.sampled_from(["L210", "L120"])),
            narrative=draw(st.sampled_from([SAME, SAME.upper(), "Reviewed the production set"])),
            status=draw(st.sampled_from(["approved"] * 9 + ["deleted"])),
            entry_kind=draw(st.sampled_from(["time"] * 9 + ["expense"])),
        ))
    return records


def outcome(session: Session) -> dict[str, Any]:
    """Every entry's state and current findings, as a reviewer sees them, and its current decisions."""
    seen: dict[str, Any] = {}
    for found in session.scalars(select(EntryRow).order_by(EntryRow.id)):
        violations = session.scalars(select(ViolationRow).where(ViolationRow.entry_id == found.id, ViolationRow.current)
                                     .order_by(ViolationRow.rule_id)).all()
        decisions = session.execute(select(Evaluation.ruleset_version_id, Evaluation.flagged, Evaluation.held)
                                    .where(Evaluation.entry_id == found.id, Evaluation.current)).all()
        seen[found.entry_uid] = (found.state, found.worst_severity, found.record, sorted(map(tuple, decisions)), [
            (v.ruleset_id, v.rule_id, v.severity, v.rule_status, v.message, v.evidence, v.contributing, v.adjustment)
            for v in violations])
    return seen


def forget(session: Session) -> None:
    """Empty the store but for the rule set versions."""
    for model in (ViolationRow, Evaluation, ReviewAction, EntryRow, IngestBatch):
        session.execute(delete(model))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(records=files(), data=st.data())
def test_one_batch_or_many_end_with_the_same_findings(sessions: sessionmaker[Session], acme: RuleSetVersion,
                                                     records: list[Entry], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=len(records)), max_size=5)))
    batches = [records[start:end] for start, end in zip([0, *cuts], [*cuts, len(records)], strict=True)
               if start < end]
    results = []
    for split in ([records], batches):
        with transaction(sessions) as session:
            forget(session)
            for batch in split:
                ingest(session, batch, context=CTX, backend="python", breaker=NEVER_TRIPS)
            results.append(outcome(session))
    assert results[1] == results[0]



def test_a_batch_over_years_of_days_finds_its_neighbours(sessions: sessionmaker[Session]) -> None:
    """A batch spanning 1,200 days (a backfill) looks its neighbours up in several queries: SQLite refuses one
    WHERE clause of more than 1,000 ORed terms. The day that goes over the cap is still found across batches."""
    with transaction(sessions) as session:
        add_ruleset_version(session, rules_yaml("""
            - id: DAY
              title: More than 10 hours in a day
              type: daily_hours_cap
              severity: warning
              params: {max_hours: 10}
            """), status=RuleSetStatus.ACTIVE)
    context = EvaluationContext(as_of=dt.date(2026, 12, 1))
    days = [dt.date(2023, 1, 2) + dt.timedelta(days=n) for n in range(1200)]
    send(sessions, *[work(f"a{n}", "6.0", work_date=day.isoformat()) for n, day in enumerate(days)], context=context)
    result = send(sessions, *[work(f"b{n}", "1.0" if n != 1100 else "5.0", work_date=day.isoformat())
                              for n, day in enumerate(days)], context=context)
    assert result.received == 1200
    with sessions() as session:
        over = session.scalars(select(EntryRow.source_id).where(EntryRow.state == EntryState.IN_REVIEW)).all()
    assert set(over) == {"a1100", "b1100"}  # 11 h on one day: both entries of that day flagged, no other


def test_a_day_held_by_one_transaction_waits_for_it_in_another(sessions: sessionmaker[Session]) -> None:
    """lock_days on PostgreSQL: a second transaction wanting a held day waits until the first one ends; a day in
    another bucket does not wait. (SQLite lets one transaction write at a time, so there it does nothing.)"""
    if sessions.kw["bind"].dialect.name != "postgresql":
        with sessions() as session:
            intake.lock_days(session, [("user-okafor", dt.date(2026, 3, 10))])  # nothing to hold, nothing raised
        return
    day = ("user-okafor", dt.date(2026, 3, 10))
    other = next(("user-okafor", dt.date(2026, 3, 10) + dt.timedelta(days=n)) for n in range(1, 400)
                 if intake._bucket(("user-okafor", dt.date(2026, 3, 10) + dt.timedelta(days=n))) != intake._bucket(day))
    holder = sessions()
    holder.begin()
    intake.lock_days(holder, [day])
    got: list[str] = []

    def want(which: tuple[str, dt.date], name: str) -> None:
        with sessions() as session, session.begin():
            intake.lock_days(session, [which])
            got.append(name)

    waiting = threading.Thread(target=want, args=(day, "same day"))
    free = threading.Thread(target=want, args=(other, "other day"))
    waiting.start()
    free.start()
    free.join(timeout=10)
    waiting.join(timeout=1.0)
    assert got == ["other day"] and waiting.is_alive()  # the held day waits, another day does not
    holder.commit()
    holder.close()
    waiting.join(timeout=10)
    assert got == ["other day", "same day"]
