"""The review queue API over a real store (SQLite and PostgreSQL): API keys per role and a seeded queue."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from engine.entry_io import entry_record
from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import EntryRow, EntryState, RuleSetStatus
from engine.workflows import review
from engine.workflows.intake import CircuitBreaker, ingest
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import REPO, entry

RULES = REPO / "rules"
ACME_TEXT = (RULES / "acme-corp.yaml").read_text()

# The seed is judged as of today and each entry keeps that context, which a review action judges it again with;
# the seeded work is recent, so no entry is late (ACME-LATE-001, 90 days). tests/api/test_context.py covers the
# context the API takes.
TODAY = dt.datetime.now(dt.UTC).date()
NOW = EvaluationContext(as_of=TODAY)
BASE = TODAY - dt.timedelta(days=30)


def day(n: int) -> str:
    return (BASE + dt.timedelta(days=n)).isoformat()


def recent(source_id: str, **changes: object) -> Entry:
    """The store tests' clean Acme entry, dated within the last month."""
    return entry(source_id, **{"work_date": day(0), **changes})


def as_json(entries: list[Entry]) -> list[dict[str, Any]]:
    return [entry_record(e) for e in entries]


# What the seed puts where: source id -> state. p00..p19 share dates three by three (ties for the cursor).
PAGED = [f"p{i:02d}" for i in range(20)]
WAITING = ["rate", "vague", "m1", *PAGED, "held", "inv"]  # in_review, held or conflict: the default queue
READY = ["clean1", "clean2", "globex"]
ROLES = {"admin": Role.ADMIN, "reviewer": Role.REVIEWER, "viewer": Role.VIEWER, "connector": Role.CONNECTOR,
         "author": Role.RULE_AUTHOR}


@dataclass
class World:
    client: TestClient
    sessions: sessionmaker[Session]
    keys: dict[str, str]  # key name (admin, reviewer, viewer, connector, author, revoked) -> full key text
    ids: dict[str, int] = field(default_factory=dict)  # source id -> entry id
    acme_id: int = 0

    def auth(self, who: str = "admin", **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **{k.replace("_", "-"): v for k, v in headers.items()}}

    def get(self, url: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        return self.client.get(url, headers=self.auth(who), **kwargs)

    def post(self, url: str, who: str = "admin", if_match: str | None = None, headers: dict[str, str] | None = None,
             **kwargs: Any) -> httpx.Response:
        sent = {**self.auth(who, **({"If_Match": if_match} if if_match is not None else {})), **(headers or {})}
        return self.client.post(url, headers=sent, **kwargs)

    def row(self, source_id: str) -> EntryRow:
        with self.sessions() as session:
            found = session.scalar(select(EntryRow).where(EntryRow.source_id == source_id))
            assert found is not None, source_id
            return found


def seed(session: Session) -> None:
    flagged = dict(rate="990.00")
    batch = [
        recent("clean1"), recent("clean2", work_date=day(1)),
        recent("globex", ledes_client_id="GLOBEX1", work_date=day(1)),  # no rule set applies: ready
        recent("rate", work_date=day(2), **flagged),  # 1.5 h at 990 over the 950 partner cap: an error
        recent("vague", work_date=day(3), law_firm_matter_id="2026-0099",
               narrative="Review file and attention to matter"),  # a warning only
        recent("m1", work_date=day(4), source_system="mattero", **flagged),
        *[recent(p, work_date=day(5 + i // 3), **flagged) for i, p in enumerate(PAGED)],
        recent("inv", work_date=day(13)), recent("rej", work_date=day(14), **flagged),
        recent("gone", work_date=day(15), **flagged),
    ]
    ingest(session, batch, context=NOW)
    # A one-entry batch the circuit breaker holds back.
    ingest(session, [recent("held", work_date=day(12), **flagged)], context=NOW,
           breaker=CircuitBreaker(share=0.5, minimum=1))
    # Invoiced, then changed at the source: a conflict. Deleted at the source: withdrawn. Rejected by a reviewer.
    session.scalar(select(EntryRow).where(EntryRow.source_id == "inv")).state = EntryState.INVOICED
    session.flush()
    ingest(session, [recent("inv", work_date=day(13), hours_billed="3.0", hours_worked="3.0", source_version='"v2"'),
                     recent("gone", work_date=day(15), status="deleted", source_version='"v2"', **flagged)],
           context=NOW)
    rej = session.scalar(select(EntryRow).where(EntryRow.source_id == "rej"))
    review.reject(session, rej.id, expected_version=1, actor="seed", reason="not our work")


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> Iterator[World]:
    with transaction(sessions) as session:
        acme = add_ruleset_version(session, ACME_TEXT, status=RuleSetStatus.ACTIVE, created_by="seed")
        keys = {name: create_key(session, name=name, role=role)[1] for name, role in ROLES.items()}
        revoked, keys["revoked"] = create_key(session, name="revoked", role=Role.ADMIN)
        revoked.revoked_at = dt.datetime.now(dt.UTC)
        seed(session)
        ids = dict(session.execute(select(EntryRow.source_id, EntryRow.id)).all())
        acme_id = acme.id
    with TestClient(create_app(sessions=sessions), raise_server_exceptions=False) as client:
        yield World(client=client, sessions=sessions, keys=keys, ids=ids, acme_id=acme_id)
