"""``/v1/entries/{id}``: an entry with its findings and history, a reviewer's approve, reject and adjust (each
guarded by the entry's ETag), and what clients' portals rejected of it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field

from api.deps import EntryId, Reader, Reviewer, SessionDep, actor, etag, expected_version
from api.errors import responses
from api.schemas import ContextIn, RejectionOut
from engine.workflows import review
from engine.workflows.billing import rejections

router = APIRouter()


class ViolationOut(BaseModel):
    rule_id: str
    ruleset_id: str
    ruleset_revision: str
    severity: str
    rule_status: str
    title: str
    message: str
    evidence: list[dict[str, Any]]
    adjustment: dict[str, Any] | None
    contributing: list[str]
    references: list[str]


class HistoryItem(BaseModel):
    id: int
    action: str
    actor: str
    at: dt.datetime
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class EntryDetail(BaseModel):
    id: int
    entry_uid: str
    state: str
    version: int
    worst_severity: str | None
    entry: dict[str, Any]
    pending_record: dict[str, Any] | None
    data_quality_flags: list[str] = Field(default_factory=list, description="what could not be mapped from the "
                                          "source (approving the entry then needs a reason)")
    violations: list[ViolationOut]
    portal_rejections: list[dict[str, Any]] = Field(default_factory=list, description="open rejections by a "
                                                    "client's portal, with the proposed rule")
    history: list[HistoryItem]


class ActionIn(BaseModel):
    reason: str | None = Field(default=None, description="required when approving error-severity findings")


class JudgeIn(ActionIn, ContextIn):
    """An action that judges entries again (reject: its neighbours; adjust: the entry and its neighbours). Without
    a context, each entry is judged with the one it was judged with before."""


class AdjustIn(JudgeIn):
    changes: dict[str, Any] = Field(description="rate, hours_billed, narrative or UTBMS codes")


class AdjustPreviewOut(BaseModel):
    """What saving the adjustment would do; nothing of it is stored."""

    id: int
    version: int = Field(description="the entry's version the preview was worked out from (its ETag)")
    state: str = Field(description="the state the entry would be in")
    worst_severity: str | None
    amount_before: Decimal | None = Field(description="the billed amount now")
    amount_after: Decimal | None = Field(description="the billed amount after the change")
    write_down: Decimal | None = Field(description="amount_after less amount_before, as /adjust would record it")
    proposed_write_down: Decimal | None = Field(description="the sum of the remaining active findings' proposed "
                                                            "adjustments (null when none proposes one)")
    findings: list[ViolationOut] = Field(description="every finding the entry would have, with its evidence and "
                                                     "proposed adjustment; shadow ones by rule_status")
    cleared: list[str] = Field(description="active rules that flag the entry now and would not")
    remaining: list[str] = Field(description="active rules that flag it now and still would")
    new: list[str] = Field(description="active rules that would newly flag it")


class ActionOut(BaseModel):
    id: int
    action: str
    state: str
    version: int
    write_down: Decimal | None = None


def _history(actions: list[Any]) -> list[HistoryItem]:
    return [HistoryItem.model_validate(a, from_attributes=True) for a in actions]


@router.get("/v1/entries/{entry_id}", response_model=EntryDetail, responses=responses(404), tags=["review"])
def get_entry(entry_id: EntryId, session: SessionDep, response: Response, key: Reader) -> EntryDetail:
    view = review.entry(session, entry_id)
    row = view.row
    response.headers["ETag"] = etag(row.version)
    return EntryDetail(
        id=row.id, entry_uid=row.entry_uid, state=row.state, version=row.version,
        worst_severity=row.worst_severity, entry=row.record, pending_record=row.pending_record,
        data_quality_flags=row.data_quality_flags or [],
        violations=[ViolationOut.model_validate(v, from_attributes=True) for v in view.violations],
        portal_rejections=[{"invoice_id": r.invoice_id, "line_number": r.line_number, "reason": r.reason,
                            "reason_code": r.reason_code, "comment": r.comment, "proposal": r.proposal}
                           for r in view.portal_rejections],
        history=_history(view.history))


@router.get("/v1/entries/{entry_id}/history", response_model=list[HistoryItem], responses=responses(404),
            tags=["review"])
def get_history(entry_id: EntryId, session: SessionDep, key: Reader) -> list[HistoryItem]:
    return _history(review.history(session, entry_id))


def _respond(outcome: review.Outcome, response: Response) -> ActionOut:
    response.headers["ETag"] = etag(outcome.version)
    return ActionOut(id=outcome.entry_id, action=outcome.action, state=outcome.state, version=outcome.version,
                     write_down=outcome.write_down)


ACTION_ERRORS = responses(404, 409, 412, 428)


@router.post("/v1/entries/{entry_id}/approve", response_model=ActionOut, responses=ACTION_ERRORS, tags=["review"])
def approve(entry_id: EntryId, body: ActionIn, session: SessionDep, response: Response, key: Reviewer,
            if_match: Annotated[str | None, Header()] = None) -> ActionOut:
    return _respond(review.approve(session, entry_id, expected_version=expected_version(if_match), actor=actor(key),
                                   reason=body.reason), response)


@router.post("/v1/entries/{entry_id}/reject", response_model=ActionOut, responses=ACTION_ERRORS, tags=["review"])
def reject(entry_id: EntryId, body: JudgeIn, session: SessionDep, response: Response, key: Reviewer,
           if_match: Annotated[str | None, Header()] = None) -> ActionOut:
    return _respond(review.reject(session, entry_id, expected_version=expected_version(if_match), actor=actor(key),
                                  reason=body.reason, context=body.context()), response)


@router.post("/v1/entries/{entry_id}/adjust", response_model=ActionOut, responses=ACTION_ERRORS, tags=["review"])
def adjust(entry_id: EntryId, body: AdjustIn, session: SessionDep, response: Response, key: Reviewer,
           if_match: Annotated[str | None, Header()] = None) -> ActionOut:
    return _respond(review.adjust(session, entry_id, expected_version=expected_version(if_match), actor=actor(key),
                                  reason=body.reason, changes=body.changes, context=body.context()), response)


@router.post("/v1/entries/{entry_id}/adjust/preview", response_model=AdjustPreviewOut, responses=responses(404, 409),
             tags=["review"])
def preview_adjust(entry_id: EntryId, body: AdjustIn, session: SessionDep, key: Reviewer) -> AdjustPreviewOut:
    """A dry run of ``/adjust`` with the same body: the entry judged again with the change, as the rule sets in force
    would judge it, and the write-down the change makes. Nothing is stored and no If-Match is needed; the answer
    names the version it was worked out from, and saving with that ETag stores exactly these findings."""
    p = review.preview_adjust(session, entry_id, changes=body.changes, actor=actor(key), context=body.context())
    return AdjustPreviewOut(
        id=p.entry_id, version=p.version, state=p.state, worst_severity=p.worst_severity,
        amount_before=p.amount_before, amount_after=p.amount_after, write_down=p.write_down,
        proposed_write_down=p.proposed_write_down, findings=[ViolationOut(**f) for f in p.findings],
        cleared=p.cleared, remaining=p.remaining, new=p.new)


@router.get("/v1/entries/{entry_id}/portal-rejections", response_model=list[RejectionOut],
            responses=responses(404), tags=["review"])
def entry_rejections(entry_id: EntryId, session: SessionDep, key: Reader,
                     open_only: bool = False) -> list[RejectionOut]:
    """What clients' portals refused of this entry, with the proposed rule; ``open_only``: not yet answered."""
    return [RejectionOut.model_validate(r, from_attributes=True)
            for r in rejections.of_entry(session, entry_id, open_only=open_only)]
