"""Review actions: audited, version-guarded, and judged again after an adjustment."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import EntryRow, EntryState, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows import review
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry

RULES = REPO / "rules"


@pytest.fixture
def flagged(sessions: sessionmaker[Session]) -> EntryRow:
    """One entry over the partner rate cap (an error), waiting for review at version 1."""
    with transaction(sessions) as session:
        add_ruleset_version(session, (RULES / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [entry("1", rate="990.00"), entry("2", narrative="Review file and attention to matter")],
               context=CTX)
        return session.scalar(select(EntryRow).where(EntryRow.source_id == "1"))


def test_approving_an_error_needs_a_reason_and_is_audited(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with pytest.raises(review.ReasonRequired), transaction(sessions) as session:
        review.approve(session, flagged.id, expected_version=1, actor="rita", reason="  ")
    with sessions() as session:
        assert session.get(EntryRow, flagged.id).version == 1  # the failed attempt changed nothing
    with transaction(sessions) as session:
        outcome = review.approve(session, flagged.id, expected_version=1, actor="rita",
                                 reason="Client agreed the 2026 rate in writing")
    assert (outcome.state, outcome.version) == ("ready", 2)
    with sessions() as session:
        trail = review.history(session, flagged.id)
        assert [(a.action, a.actor) for a in trail] == [("ingested", "system:ingest"), ("approve", "rita")]
        assert trail[-1].reason == "Client agreed the 2026 rate in writing"
        assert trail[-1].before["overridden"][0]["rule_id"] == "ACME-RATE-001"
        assert (trail[-1].before["state"], trail[-1].after["state"]) == ("in_review", "ready")


def test_warnings_can_be_approved_without_a_reason(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with sessions() as session:
        vague = session.scalar(select(EntryRow).where(EntryRow.source_id == "2"))
    with transaction(sessions) as session:
        assert review.approve(session, vague.id, expected_version=1, actor="rita", reason=None).state == "ready"


def test_a_stale_version_changes_nothing(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with pytest.raises(review.StaleVersion), transaction(sessions) as session:
        review.reject(session, flagged.id, expected_version=7, actor="rita", reason="no")
    with pytest.raises(review.NotFound), transaction(sessions) as session:
        review.reject(session, 999_999, expected_version=1, actor="rita", reason="no")
    with sessions() as session:
        row = session.get(EntryRow, flagged.id)
        assert (row.state, row.version) == (EntryState.IN_REVIEW, 1)
        assert session.scalar(select(ReviewAction.action).where(ReviewAction.action == "reject")) is None


def test_of_two_reviewers_at_once_exactly_one_wins(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(actor: str) -> None:
        try:
            with transaction(sessions) as session:
                barrier.wait(timeout=10)
                review.reject(session, flagged.id, expected_version=1, actor=actor, reason="duplicate of 88")
            outcomes.append("won")
        except review.StaleVersion:
            outcomes.append("stale")
        except Exception as exc:  # SQLite: the second writer may see the database locked
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=act, args=(name,)) for name in ("rita", "sam")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1, outcomes
    with sessions() as session:
        assert session.get(EntryRow, flagged.id).version == 2
        assert len([a for a in review.history(session, flagged.id) if a.action == "reject"]) == 1


def test_adjusting_the_rate_records_the_write_down_and_judges_again(
        sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with transaction(sessions) as session:
        outcome = review.adjust(session, flagged.id, expected_version=1, actor="rita", reason="cap per OCG 4.1",
                                changes={"rate": Decimal("950.00")}, context=CTX)
    assert (outcome.state, outcome.write_down) == ("ready", Decimal("-60.00"))
    with sessions() as session:
        row = session.get(EntryRow, flagged.id)
        assert (row.rate, row.state) == (Decimal("950.00"), EntryState.READY)
        assert Entry.model_validate(row.record).billed_amount == Decimal("1425.0000")
        assert session.scalars(select(ViolationRow.current).where(ViolationRow.entry_id == row.id)).all() == [False]
        last = review.history(session, row.id)[-1]
        assert last.after["write_down"] == "-60.00" and last.before["values"] == {"rate": "990.00"}


def test_an_adjustment_that_still_breaks_a_rule_stays_in_review(
        sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with transaction(sessions) as session:
        outcome = review.adjust(session, flagged.id, expected_version=1, actor="rita", reason=None,
                                changes={"rate": Decimal("960.00")}, context=CTX)
    assert outcome.state == "in_review"
    with pytest.raises(review.InvalidChange), transaction(sessions) as session:
        review.adjust(session, flagged.id, expected_version=2, actor="rita", reason=None, changes={"currency": "EUR"})
    with pytest.raises(review.InvalidChange), transaction(sessions) as session:
        review.adjust(session, flagged.id, expected_version=2, actor="rita", reason=None,
                      changes={"hours_billed": "lots"})


def test_only_waiting_entries_can_be_acted_on(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    with transaction(sessions) as session:
        review.reject(session, flagged.id, expected_version=1, actor="rita", reason="not our work")
    with pytest.raises(review.NotReviewable), transaction(sessions) as session:
        review.approve(session, flagged.id, expected_version=2, actor="rita", reason="changed my mind")


def test_context_dates_are_used_for_re_evaluation(sessions: sessionmaker[Session], flagged: EntryRow) -> None:
    late = EvaluationContext(as_of=dt.date(2026, 9, 1))
    with transaction(sessions) as session:
        outcome = review.adjust(session, flagged.id, expected_version=1, actor="rita", reason=None,
                                changes={"rate": Decimal("950.00")}, context=late)
    assert outcome.state == "in_review"  # now more than 90 days old
