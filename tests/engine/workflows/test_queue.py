"""The review queue's filters and paging: every filter, each sort, pages that never repeat or skip an entry, and
a client or matter matched by either of its two ids (the queue reads those as two ordered walks, merged)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import transaction
from engine.store.models import EntryRow, RuleSetStatus
from engine.workflows import review
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO, entry

CLIENTS = ["ACME01", "ACME02", "GLOBEX1"]


@pytest.fixture
def waiting(sessions: sessionmaker[Session]) -> list[dict[str, object]]:
    """60 entries waiting for review, with a mix of the LEDES and the source's
    own client and matter ids, sources, dates and data-quality flags; returns what each one holds."""
    rng = random.Random(11)
    entries = []
    for n in range(60):
        client = rng.choice(CLIENTS)
        entries.append(entry(
            f"q{n}", rate="990.00", work_date=f"2026-03-{1 + n % 28:02d}",
            ledes_client_id=client if n % 4 else None,  # a quarter known only by the source's client id
            client_source_id=rng.choice([client, None, f"src-{client}"]),
            law_firm_matter_id=f"M-{n % 3}", client_matter_id=rng.choice([f"M-{n % 3}", f"CM-{n % 3}", None]),
            timekeeper_source_id=f"user-{n % 5}"))
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, entries, context=CTX)
        # Entries the rule set does not govern (no LEDES client id) are ready: the queue is about states, so all
        # are put in review here.
        session.execute(update(EntryRow).values(state="in_review"))
        flagged_ids = [f"q{n}" for n in range(0, 60, 7)]
        session.execute(update(EntryRow).where(EntryRow.source_id.in_(flagged_ids))
                        .values(data_quality_flags=["UNKNOWN_TIMEKEEPER"]))
        session.execute(update(EntryRow).where(EntryRow.source_id.in_([f"q{n}" for n in range(0, 60, 10)]))
                        .values(source_system="efimis"))
        rows = session.execute(select(EntryRow.source_id, EntryRow.state, EntryRow.ledes_client_id,
                                      EntryRow.client_source_id, EntryRow.law_firm_matter_id,
                                      EntryRow.client_matter_id, EntryRow.source_system, EntryRow.work_date,
                                      EntryRow.data_quality_flags, EntryRow.timekeeper_key)).all()
    assert all(r.state == "in_review" for r in rows)
    return [dict(r._mapping) for r in rows]


def every_page(sessions: sessionmaker[Session], filters: review.QueueFilter, sort: str) -> list[str]:
    seen: list[str] = []
    cursor = None
    with sessions() as session:
        while True:
            page = review.queue(session, filters, sort=sort, cursor=cursor, limit=4)
            seen.extend(item["source_id"] for item in page.items)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor


@pytest.mark.parametrize("sort", ["work_date", "-work_date"])
@pytest.mark.parametrize("name", ["client", "client by source id", "matter", "client and matter", "flagged",
                                  "not flagged", "source", "timekeeper"])
def test_every_filter_pages_through_exactly_its_entries_in_order(
        sessions: sessionmaker[Session], waiting: list[dict[str, object]], name: str, sort: str) -> None:
    timekeeper = waiting[3]["timekeeper_key"]
    filters, wanted = {
        "client": (review.QueueFilter(client="ACME01"),
                   lambda r: "ACME01" in (r["ledes_client_id"], r["client_source_id"])),
        "client by source id": (review.QueueFilter(client="src-ACME02"),
                                lambda r: "src-ACME02" in (r["ledes_client_id"], r["client_source_id"])),
        "matter": (review.QueueFilter(matter="M-1"),
                   lambda r: "M-1" in (r["law_firm_matter_id"], r["client_matter_id"])),
        "client and matter": (review.QueueFilter(client="GLOBEX1", matter="M-2"),
                              lambda r: "GLOBEX1" in (r["ledes_client_id"], r["client_source_id"])
                              and "M-2" in (r["law_firm_matter_id"], r["client_matter_id"])),
        "flagged": (review.QueueFilter(data_quality=True), lambda r: bool(r["data_quality_flags"])),
        "not flagged": (review.QueueFilter(data_quality=False), lambda r: not r["data_quality_flags"]),
        "source": (review.QueueFilter(source="efimis"), lambda r: r["source_system"] == "efimis"),
        "timekeeper": (review.QueueFilter(timekeeper=timekeeper), lambda r: r["timekeeper_key"] == timekeeper),
    }[name]
    got = every_page(sessions, filters, sort)
    assert len(got) == len(set(got)), "a page repeated an entry"
    expected = {r["source_id"] for r in waiting if wanted(r)}
    assert set(got) == expected and expected, name
    by_id = {r["source_id"]: r for r in waiting}
    keys = [(by_id[s]["work_date"], s) for s in got]
    dates = [k[0] for k in keys]
    assert dates == sorted(dates, reverse=sort.startswith("-"))


def test_an_entry_holding_the_id_in_both_columns_is_listed_once(
        sessions: sessionmaker[Session], waiting: list[dict[str, object]]) -> None:
    both = [r["source_id"] for r in waiting if r["ledes_client_id"] == r["client_source_id"] == "ACME01"]
    assert both, "the data should hold entries with the same id in both columns"
    got = every_page(sessions, review.QueueFilter(client="ACME01"), "work_date")
    assert all(got.count(s) == 1 for s in both)
