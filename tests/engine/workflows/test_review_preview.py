"""The preview of an adjustment: the adjustment itself, worked out and undone. It stores nothing, refuses what the
adjustment refuses, and names exactly the findings the adjustment then stores (SQLite and PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import transaction
from engine.store.models import EntryRow, EntryState, Evaluation, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows import review
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry

ACME = (REPO / "rules" / "acme-corp.yaml").read_text()


@pytest.fixture
def ids(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Over the partner cap (an error); a vague narrative (a warning); two entries of one timekeeper on one day
    (the first over the cap, so waiting for review), which a longer day would push over the daily cap together."""
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME, status=RuleSetStatus.ACTIVE)
        ingest(session, [entry("rate", rate="990.00"),
                         entry("vague", narrative="Review file and attention to matter"),
                         entry("day1", timekeeper_source_id="user-day", hours_worked="5.0", hours_billed="5.0",
                               rate="990.00", narrative="Drafted the motion to compel and the supporting declaration"),
                         entry("day2", timekeeper_source_id="user-day", hours_worked="4.0", hours_billed="4.0",
                               narrative="Deposition preparation of the plaintiff's expert witness",
                               utbms_task_code="L330")],
               context=CTX)
        return dict(session.execute(select(EntryRow.source_id, EntryRow.id)).all())


def stored(session: Session) -> dict[str, Any]:
    """Everything a preview must leave as it was."""
    return {
        "entries": sorted((r.id, r.version, str(r.state), r.worst_severity, str(r.rate), str(r.hours_billed),
                           r.record["narrative"], r.source_record is None, r.updated_at.isoformat())
                          for r in session.scalars(select(EntryRow))),
        "violations": sorted(session.execute(select(ViolationRow.id, ViolationRow.entry_id, ViolationRow.rule_id,
                                                    ViolationRow.current)).all()),
        "actions": session.scalar(select(func.count()).select_from(ReviewAction)),
        "evaluations": session.scalar(select(func.count()).select_from(Evaluation)),
    }


def findings_of(session: Session, entry_id: int) -> list[dict[str, Any]]:
    return [{name: getattr(v, name) for name in review.FINDING_FIELDS} for v in session.scalars(
        select(ViolationRow).where(ViolationRow.entry_id == entry_id, ViolationRow.current.is_(True))
        .order_by(ViolationRow.id))]


def test_a_preview_shows_the_findings_and_the_write_down_and_stores_nothing(
        sessions: sessionmaker[Session], ids: dict[str, int]) -> None:
    with sessions() as session:
        before = stored(session)
    with transaction(sessions) as session:
        preview = review.preview_adjust(session, ids["rate"], changes={"rate": Decimal("950.00")}, actor="rita")
    assert (preview.version, preview.state, preview.worst_severity) == (1, "ready", None)
    assert (preview.amount_before, preview.amount_after, preview.write_down) == (
        Decimal("1485.0000"), Decimal("1425.0000"), Decimal("-60.00"))
    assert (preview.cleared, preview.remaining, preview.new, preview.findings) == (["ACME-RATE-001"], [], [], [])
    assert preview.proposed_write_down is None
    with sessions() as session:
        assert stored(session) == before  # no version bump, no audit row, no findings, no evaluation

    # Still over the cap: the finding remains, with its evidence and the write-down it proposes.
    with transaction(sessions) as session:
        preview = review.preview_adjust(session, ids["rate"], changes={"rate": "960.00"}, actor="rita")
    assert (preview.state, preview.worst_severity, preview.write_down) == ("in_review", "error", Decimal("-45.00"))
    assert (preview.cleared, preview.remaining, preview.new) == ([], ["ACME-RATE-001"], [])
    [finding] = preview.findings
    assert finding["severity"] == "error" and finding["rule_status"] == "active" and "960" in finding["message"]
    assert any(e.get("field") == "rate" and str(e.get("actual")).startswith("960") for e in finding["evidence"])
    assert finding["adjustment"]["amount"] == "-15.00" and preview.proposed_write_down == Decimal("-15.00")
    with sessions() as session:
        assert stored(session) == before


@pytest.mark.parametrize(("source_id", "changes"), [
    ("rate", {"rate": "950.00"}),
    ("rate", {"rate": "970.00", "narrative": "Attention to file"}),
    ("vague", {"narrative": "Drafted the reply brief on the motion to dismiss, sections II and III"}),
    ("vague", {"hours_billed": "1.55"}),
    ("day1", {"hours_billed": "7.0"}),  # with day2's 4.0 over the daily cap of 10: both are judged again
])
def test_the_preview_names_exactly_what_the_adjustment_then_stores(
        sessions: sessionmaker[Session], ids: dict[str, int], source_id: str, changes: dict[str, Any]) -> None:
    entry_id = ids[source_id]
    with transaction(sessions) as session:
        preview = review.preview_adjust(session, entry_id, changes=changes, actor="rita")
    with transaction(sessions) as session:
        outcome = review.adjust(session, entry_id, expected_version=preview.version, actor="rita", reason="checked",
                                changes=changes)
    assert (outcome.state, outcome.write_down) == (preview.state, preview.write_down)
    with sessions() as session:
        assert findings_of(session, entry_id) == preview.findings
        assert session.get(EntryRow, entry_id).worst_severity == preview.worst_severity


def test_a_preview_leaves_the_neighbours_as_they_were(sessions: sessionmaker[Session], ids: dict[str, int]) -> None:
    with sessions() as session:
        neighbour = findings_of(session, ids["day2"])
    assert not any(f["rule_id"] == "ACME-DAY-001" for f in neighbour)
    with transaction(sessions) as session:
        preview = review.preview_adjust(session, ids["day1"], changes={"hours_billed": "7.0"}, actor="rita")
    assert "ACME-DAY-001" in preview.new
    with sessions() as session:
        assert findings_of(session, ids["day2"]) == neighbour
        assert session.get(EntryRow, ids["day2"]).version == 1


def test_a_preview_refuses_what_the_adjustment_refuses(sessions: sessionmaker[Session], ids: dict[str, int]) -> None:
    with transaction(sessions) as session:
        review.reject(session, ids["vague"], expected_version=1, actor="rita", reason="not ours")
    for changes in ({"currency": "EUR"}, {}, {"hours_billed": "lots"}):
        with pytest.raises(review.InvalidChange), transaction(sessions) as session:
            review.preview_adjust(session, ids["rate"], changes=changes, actor="rita")
    with pytest.raises(review.NotReviewable), transaction(sessions) as session:
        review.preview_adjust(session, ids["vague"], changes={"rate": "900"}, actor="rita")
    for missing in (999_999, 0, 2**63):
        with pytest.raises(review.NotFound), transaction(sessions) as session:
            review.preview_adjust(session, missing, changes={"rate": "900"}, actor="rita")
    # A refused preview leaves the session usable: the same transaction goes on to a real action.
    with transaction(sessions) as session:
        with pytest.raises(review.InvalidChange):
            review.preview_adjust(session, ids["rate"], changes={"hours_billed": "lots"}, actor="rita")
        assert review.adjust(session, ids["rate"], expected_version=1, actor="rita", reason=None,
                             changes={"rate": "950.00"}).state == "ready"
    with sessions() as session:
        row = session.get(EntryRow, ids["rate"])
        assert (row.version, row.state) == (2, EntryState.READY)


def test_a_preview_follows_the_current_version(sessions: sessionmaker[Session], ids: dict[str, int]) -> None:
    with transaction(sessions) as session:
        review.adjust(session, ids["rate"], expected_version=1, actor="rita", reason=None, changes={"rate": "970.00"})
    with transaction(sessions) as session:
        preview = review.preview_adjust(session, ids["rate"], changes={"rate": "950.00"}, actor="sam")
    assert (preview.version, preview.amount_before, preview.write_down) == (2, Decimal("1455.0000"),
                                                                           Decimal("-30.00"))
