"""``/v1/review-items``: the queue of entries waiting for a reviewer, and one action on many of them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import MAX_ID, STORED_MAX, Reader, Reviewer, SessionDep, actor
from api.errors import ErrorBody, responses
from api.schemas import ContextIn
from engine.store.models import EntryState
from engine.workflows import review

router = APIRouter(tags=["review"])


class RuleHit(BaseModel):
    rule_id: str
    severity: str = Field(description="the worst severity of the rule's findings on the entry")


class ReviewItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    entry_uid: str
    source_system: str
    source_id: str
    state: str
    worst_severity: str | None
    version: int
    work_date: dt.date
    ledes_client_id: str | None
    law_firm_matter_id: str | None
    timekeeper: str | None
    timekeeper_name: str | None
    hours_billed: Decimal | None
    rate: Decimal | None
    amount: Decimal | None
    rule_ids: list[str]
    portal_reasons: list[str] = Field(default_factory=list, description="what a client's portal rejected, not yet "
                                                                       "answered by a reviewer")
    data_quality_flags: list[str] = Field(default_factory=list, description="what could not be mapped from the "
                                          "source (REDACTED_SOURCE, UNKNOWN_TIMEKEEPER, MISSING_UTBMS_TASK, ...)")
    # Only with include=...: left out of the answer otherwise (the route drops the fields it was not given).
    rules: list[RuleHit] = Field(default_factory=list, description="with include=rules: the active rules that flag "
                                 "the entry, each with its severity (the same rules as rule_ids)")
    narrative_excerpt: str | None = Field(default=None, description="with include=narrative: the narrative's first "
                                          "120 characters or so, cut at a word, with an ellipsis when there is more")


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = Field(description="pass as cursor= for the next page; null on the last page")


class BulkItem(BaseModel):
    id: int = Field(ge=1, le=MAX_ID)
    version: int = Field(ge=0, le=MAX_ID)


class BulkIn(ContextIn):
    """One action on many entries; the context (optional) is for reject and adjust, as on their own routes."""

    action: Literal["approve", "reject", "adjust"]
    reason: str | None = None
    changes: dict[str, Any] | None = None
    items: list[BulkItem] = Field(min_length=1, max_length=1000)


class BulkResult(BaseModel):
    id: int
    ok: bool
    state: str | None = None
    version: int | None = None
    error: ErrorBody | None = None


# exclude_unset: an item carries rules and narrative_excerpt only when asked to (include=), so the answer to a
# client that does not ask is as it always was. Every other field of an item is always given.
@router.get("/v1/review-items", response_model=ReviewPage, response_model_exclude_unset=True,
            responses=responses(400))
def list_review_items(
    session: SessionDep, key: Reader,
    state: Annotated[list[EntryState] | None, Query(description="default: every state waiting for review")] = None,
    client: str | None = None, matter: str | None = None, timekeeper: str | None = None,
    rule_id: str | None = None, severity: Literal["error", "warning", "info"] | None = None,
    date_from: dt.date | None = None, date_to: dt.date | None = None, source: str | None = None,
    data_quality: Annotated[bool | None, Query(description="only entries with (true) or without (false) "
                                                           "data-quality flags")] = None,
    sort: Literal["work_date", "-work_date", "updated_at", "-updated_at"] = "work_date",
    cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
    include: Annotated[list[Literal["rules", "narrative"]] | None, Query(
        description="more of each item: rules (each rule with its severity), narrative (an excerpt)")] = None,
) -> ReviewPage:
    filters = review.QueueFilter(states=tuple(state or ()), client=client, matter=matter, timekeeper=timekeeper,
                                 rule_id=rule_id, severity=severity, date_from=date_from, date_to=date_to,
                                 source=source, data_quality=data_quality)
    page = review.queue(session, filters, sort=sort, cursor=cursor, limit=limit, include=tuple(include or ()))
    return ReviewPage(items=[ReviewItem(**item, timekeeper=item["timekeeper_key"]) for item in page.items],
                      next_cursor=page.next_cursor)


@router.post("/v1/review-items/bulk", response_model=list[BulkResult], responses=responses())
def bulk(body: BulkIn, session: SessionDep, key: Reviewer) -> list[BulkResult]:
    """Each item is its own all-or-nothing step: one stale or refused item does not stop the others."""
    stored = [item for item in body.items if item.id <= STORED_MAX and item.version <= STORED_MAX]
    results = iter(review.bulk(session, body.action, [(item.id, item.version) for item in stored], actor=actor(key),
                               reason=body.reason, changes=body.changes, context=body.context()))
    out = []
    for item in body.items:  # an id or version beyond the store's columns names nothing: answered here
        if item.id > STORED_MAX:
            out.append(BulkResult(id=item.id, ok=False, error=ErrorBody(code="not_found",
                                                                        message=f"entry {item.id} does not exist")))
            continue
        if item.version > STORED_MAX:
            out.append(BulkResult(id=item.id, ok=False, error=ErrorBody(
                code="version_mismatch", message=f"entry {item.id} is not at version {item.version}")))
            continue
        r = next(results)
        out.append(BulkResult(id=r.entry_id, ok=True, state=r.outcome.state, version=r.outcome.version) if r.outcome
                   else BulkResult(id=r.entry_id, ok=False, error=ErrorBody(code=r.error.code,
                                                                            message=r.error.message)))
    return out
