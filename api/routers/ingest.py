"""``POST /v1/entries``: entries sent in by a connector or a script, judged and queued like a file ingest."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field

from api.deps import Ingester, SessionDep, actor
from api.errors import responses
from api.schemas import AS_OF, PERIOD_END, PERIOD_START, evaluation_context
from engine.model import Entry
from engine.workflows import intake

router = APIRouter(tags=["ingest"])
MAX_BATCH = 1000  # entries per request; a connector with more sends several batches


class IngestOut(BaseModel):
    batch_id: int
    received: int
    created: int
    updated: int
    unchanged: int
    withdrawn: int
    conflicts: int
    ready: int
    in_review: int
    held: int
    held_rulesets: list[dict[str, Any]]
    rejudged: int = Field(description="stored entries of the same timekeepers and days judged again")


@router.post("/v1/entries", response_model=IngestOut, responses=responses())
def post_entries(entries: Annotated[list[Entry], Body(max_length=MAX_BATCH, description=f"at most {MAX_BATCH} "
                                                       "entries; more is a 422")],
                 session: SessionDep, key: Ingester,
                 as_of: Annotated[dt.date | None, Query(description=AS_OF)] = None,
                 period_start: Annotated[dt.date | None, Query(description=PERIOD_START)] = None,
                 period_end: Annotated[dt.date | None, Query(description=PERIOD_END)] = None) -> IngestOut:
    """Upsert the entries and judge what changed. The evaluation context (as-of date, billing period) judges the
    whole batch; without one, entries are judged as of today, a changed entry in the billing period it was judged
    in; each entry keeps its context for later re-judging. A period ending before it starts is a 422."""
    result = intake.ingest(session, entries, actor=actor(key), source="api",
                           context=evaluation_context(as_of, period_start, period_end))
    return IngestOut(**{k: v for k, v in result.as_dict().items() if k in IngestOut.model_fields})
