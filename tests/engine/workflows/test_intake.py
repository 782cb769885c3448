"""Ingest into the store: idempotent upserts, decisions recorded, review work created, nothing lost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.loader import RuleSetError
from engine.store.db import transaction
from engine.store.models import (
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    ReviewAction,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)
from engine.workflows import intake
from engine.workflows.intake import CircuitBreaker, ingest
from engine.workflows.rulesets import add_ruleset_version, set_status
from tests.conftest import CTX, REPO, entry

RULES = REPO / "rules"




@pytest.fixture
def acme(sessions: sessionmaker[Session]) -> RuleSetVersion:
    with transaction(sessions) as session:
        return add_ruleset_version(session, (RULES / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_clean_entries_are_ready_and_flagged_ones_wait_for_review(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    with transaction(sessions) as session:
        result = ingest(session, [entry("1"), entry("2", rate="990.00"), entry("3", narrative="Review file")],
                        context=CTX)
    assert (result.created, result.ready, result.in_review) == (3, 1, 2)
    with sessions() as session:
        states = dict(session.execute(select(EntryRow.source_id, EntryRow.state)).all())
        assert states == {"1": EntryState.READY, "2": EntryState.IN_REVIEW, "3": EntryState.IN_REVIEW}
        over_cap = session.scalars(select(ViolationRow).join(EntryRow, ViolationRow.entry_id == EntryRow.id)
                                   .where(EntryRow.source_id == "2")).all()
        assert [v.rule_id for v in over_cap] == ["ACME-RATE-001"]
        v = over_cap[0]
        assert v.ruleset_revision == acme.revision and v.severity == "error" and v.current
        assert {k: x for k, x in v.evidence[-1].items() if k != "basis"} == {
            "field": "rate", "operator": "gt", "expected": "950", "actual": "990.00"}
        assert v.evidence[-1]["basis"].startswith("classification PARTNR, in force from 2026-01-01")  # which cap, why
        assert v.adjustment == {"field": "rate", "current": "990.00", "proposed": "950", "amount": "-60.00"}
        # The decision log: one evaluation per entry by the active version.
        evaluations = session.scalars(select(Evaluation).order_by(Evaluation.id)).all()
        assert [(e.ruleset_version_id, e.flagged) for e in evaluations] == [(acme.id, False), (acme.id, True),
                                                                           (acme.id, True)]
        worst = dict(session.execute(select(EntryRow.source_id, EntryRow.worst_severity)).all())
        assert worst == {"1": None, "2": "error", "3": "warning"}


def test_money_and_hours_come_back_exact(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    with transaction(sessions) as session:
        ingest(session, [entry("1", hours_billed="0.1", hours_worked="0.1", rate="925.123456", amount="92.51")],
               context=CTX)
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert (row.hours_billed, row.rate, row.amount) == (Decimal("0.1"), Decimal("925.123456"), Decimal("92.51"))
        assert isinstance(row.hours_billed, Decimal)
        assert Entry.model_validate(row.record).rate == Decimal("925.123456")


def test_ingesting_the_same_batch_again_changes_nothing(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    batch = [entry("1"), entry("2", rate="990.00")]
    with transaction(sessions) as session:
        ingest(session, batch, context=CTX)
    with transaction(sessions) as session:
        again = ingest(session, batch, context=CTX)
    assert (again.created, again.updated, again.unchanged, again.evaluated) == (0, 0, 2, 0)
    with sessions() as session:
        assert count(session, EntryRow) == 2
        assert count(session, Evaluation) == 2
        assert count(session, ViolationRow) == 1
        assert session.scalar(select(func.max(EntryRow.version))) == 1


def test_a_new_source_version_is_evaluated_again_and_audited(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    with transaction(sessions) as session:
        ingest(session, [entry("1", rate="990.00")], context=CTX)
    with transaction(sessions) as session:
        result = ingest(session, [entry("1", rate="900.00", source_version='"v2"')], context=CTX, actor="clio-sync")
    assert (result.updated, result.ready) == (1, 1)
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert (row.state, row.version, row.rate, row.source_version) == (EntryState.READY, 2, Decimal("900.00"),
                                                                          '"v2"')
        violations = session.scalars(select(ViolationRow)).all()
        assert [(v.rule_id, v.current) for v in violations] == [("ACME-RATE-001", False)]
        assert [e.current for e in session.scalars(select(Evaluation).order_by(Evaluation.id))] == [False, True]
        trail = session.scalars(select(ReviewAction).order_by(ReviewAction.id)).all()
        assert [(a.action, a.actor) for a in trail] == [("ingested", "system:ingest"), ("updated", "clio-sync")]
        assert trail[1].before["record"]["rate"] == "990.00" and trail[1].after["record"]["rate"] == "900.00"


def test_an_invoiced_entry_is_not_changed_silently(sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    with transaction(sessions) as session:
        ingest(session, [entry("1")], context=CTX)
        session.scalar(select(EntryRow)).state = EntryState.INVOICED
    with transaction(sessions) as session:
        result = ingest(session, [entry("1", hours_billed="3.0", source_version='"v2"')], context=CTX)
    assert result.conflicts == 1
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert row.state == EntryState.CONFLICT
        assert row.hours_billed == Decimal("1.5")  # what was billed stays as billed
        assert row.pending_record["hours_billed"] == "3.0"
        assert session.scalar(select(ReviewAction.action).order_by(ReviewAction.id.desc()).limit(1)) == "conflict"
    # The next sync of a newer version keeps the conflict: only the pending record changes.
    with transaction(sessions) as session:
        again = ingest(session, [entry("1", hours_billed="4.0", source_version='"v3"')], context=CTX)
    assert (again.conflicts, again.updated) == (1, 0)
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert row.state == EntryState.CONFLICT and row.hours_billed == Decimal("1.5")
        assert row.pending_record["hours_billed"] == "4.0"


def test_deleted_at_the_source_is_withdrawn_from_the_queue(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    with transaction(sessions) as session:
        ingest(session, [entry("1", rate="990.00")], context=CTX)
    with transaction(sessions) as session:
        result = ingest(session, [entry("1", rate="990.00", status="deleted", source_version='"v2"')], context=CTX)
    assert result.withdrawn == 1
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert row.state == EntryState.WITHDRAWN
        assert session.scalar(select(func.count()).select_from(ViolationRow).where(ViolationRow.current)) == 0


def test_shadow_versions_record_findings_but_create_no_review_work(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, (RULES / "acme-corp.yaml").read_text(), status=RuleSetStatus.SHADOW)
        result = ingest(session, [entry("1", rate="990.00")], context=CTX)
    assert (result.ready, result.in_review) == (1, 0)
    with sessions() as session:
        assert [(v.rule_id, v.rule_status) for v in session.scalars(select(ViolationRow))] == [
            ("ACME-RATE-001", "shadow")]


def test_the_circuit_breaker_holds_a_rule_set_that_flags_most_of_a_batch(
        sessions: sessionmaker[Session], acme: RuleSetVersion) -> None:
    batch = [entry(str(i), rate="990.00") for i in range(60)] + [entry(str(i)) for i in range(60, 100)]
    with transaction(sessions) as session:
        result = ingest(session, batch, context=CTX, breaker=CircuitBreaker(share=0.5, minimum=100))
    assert (result.held, result.in_review, result.ready) == (60, 0, 40)
    assert result.held_rulesets == [{"ruleset_id": "acme-corp-ocg", "revision": acme.revision, "checked": 100,
                                     "flagged": 60}]
    with sessions() as session:
        assert session.scalar(select(IngestBatch.held_rulesets)) == result.held_rulesets
    # Below the minimum batch size the same share goes to reviewers.
    with transaction(sessions) as session:
        small = ingest(session, [entry(f"s{i}", rate="990.00") for i in range(10)], context=CTX)
    assert (small.held, small.in_review) == (0, 10)


def test_a_failed_batch_leaves_nothing_behind(sessions: sessionmaker[Session], acme: RuleSetVersion,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("evaluation failed half way")

    monkeypatch.setattr(intake, "evaluate", broken)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        ingest(session, [entry("1"), entry("2")], context=CTX)
    with sessions() as session:
        assert count(session, EntryRow) == 0
        assert count(session, IngestBatch) == 0
        assert count(session, ReviewAction) == 0


def test_rule_set_versions_are_stored_once_and_activation_retires_the_previous(
        sessions: sessionmaker[Session]) -> None:
    text = (RULES / "acme-corp.yaml").read_text()
    changed = text.replace("PARTNR: 950", "PARTNR: 975")
    with transaction(sessions) as session:
        first = add_ruleset_version(session, text, status=RuleSetStatus.ACTIVE)
        same = add_ruleset_version(session, text + "\n# a comment changes nothing\n")
        assert same.id == first.id
        second = add_ruleset_version(session, changed)
        assert second.status == RuleSetStatus.DRAFT
        set_status(session, second, RuleSetStatus.ACTIVE)
    with sessions() as session:
        statuses = dict(session.execute(select(RuleSetVersion.id, RuleSetVersion.status)).all())
        assert statuses == {first.id: RuleSetStatus.RETIRED, second.id: RuleSetStatus.ACTIVE}
    with pytest.raises(RuleSetError), transaction(sessions) as session:
        add_ruleset_version(session, "id: x\nversion: 1\nrules: [{id: R, title: t, type: nope}]\n", source="bad.yaml")
