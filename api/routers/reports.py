"""``/v1/reports``: what the findings add up to over a window of work dates, as JSON or CSV. Any key reads it,
as any key reads the queue and the rule sets (``Reader``): it holds counts and sums, never an entry's text."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import Reader, SessionDep
from api.errors import responses
from engine.workflows import reports

router = APIRouter(tags=["reports"])
Money = dict[str, str]  # currency -> a decimal amount as text
CSV = "text/csv"


class WindowOut(BaseModel):
    from_: dt.date | None = Field(alias="from")
    to: dt.date | None
    clients: list[str]


class GroupOut(BaseModel):
    key: str | None
    findings: int = Field(description="(entry, rule) findings")
    entries: int = Field(description="distinct entries among them")
    write_down: Money | None = Field(None, description="by rule only: the write-downs its findings propose")


class ProposedOut(BaseModel):
    findings: int
    amount: Money = Field(description="the proposed adjustments added up (negative: the line total goes down)")


class ReviewedOut(BaseModel):
    actions: int
    amount: Money = Field(description="reviewers' write-downs (adjust actions) added up")


class WriteDownsOut(BaseModel):
    proposed: ProposedOut
    reviewed: ReviewedOut


class BilledOut(BaseModel):
    entries: int = Field(description="entries in the window that went out on an invoice")
    clean: int = Field(description="of them, never flagged by an active-status rule")
    clean_share: str | None = Field(description="clean / entries, four decimal places; null when none was billed")


class RejectionOut(BaseModel):
    reason_code: str | None
    reason: str
    kind: str
    count: int
    amount: Money


class FindingsReportOut(BaseModel):
    window: WindowOut
    entries: int
    flagged_entries: int
    findings: int
    by: dict[Literal["rule", "client", "matter", "timekeeper", "month", "severity"], list[GroupOut]]
    write_downs: WriteDownsOut
    billed: BilledOut
    portal_rejections: list[RejectionOut]


ClientId = Annotated[str, Field(min_length=1, max_length=120)]


@router.get("/v1/reports/findings", response_model=FindingsReportOut, response_model_exclude_none=False,
            responses={**responses(), 200: {"description": "the report, as JSON or (format=csv, or Accept: text/csv) "
                                                           "as one CSV table in long form",
                                            "content": {CSV: {"schema": {"type": "string"}}}}})
def findings(request: Request, session: SessionDep, key: Reader,
             start: Annotated[dt.date | None, Query(alias="from", description="first work date")] = None,
             end: Annotated[dt.date | None, Query(alias="to", description="last work date")] = None,
             client: Annotated[list[ClientId] | None, Query(max_length=100, description="only these clients")] = None,
             top: Annotated[int | None, Query(ge=1, le=10_000, description="groups per breakdown")] = None,
             format: Annotated[Literal["json", "csv"] | None, Query(description="default: by Accept")] = None,
             ) -> FindingsReportOut | Response:
    """Findings by rule, client, matter, timekeeper, month and severity; write-downs proposed and made by
    reviewers; portal rejections by reason; the share of billed entries that went out clean."""
    report = reports.findings_report(session, start=start, end=end, clients=client or (), top=top)
    wanted = format or ("csv" if _prefers_csv(request.headers.get("accept", "")) else "json")
    if wanted == "csv":
        return Response(reports.as_csv(report), media_type=CSV,
                        headers={"Content-Disposition": 'attachment; filename="findings-report.csv"'})
    return FindingsReportOut.model_validate(reports.as_json(report))


def _prefers_csv(accept: str) -> bool:
    """Whether Accept names text/csv before (or without) JSON."""
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    if CSV not in kinds:
        return False
    return "application/json" not in kinds or kinds.index(CSV) < kinds.index("application/json")
