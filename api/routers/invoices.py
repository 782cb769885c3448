"""``/v1/invoices``: build, preview, list, read, download the LEDES file, submit, poll, void.

Building, submitting, polling and voiding need the ``biller`` role (or ``admin``); reading needs any key.
Submitting and polling talk to the destination outside the request's transaction: the attempt is recorded
before anything leaves, so a dropped request never loses track of an invoice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.deps import Biller, Reader, SessionDep, Sessions, actor
from api.errors import responses
from api.schemas import RejectionOut
from connectors.destinations import registry
from engine.ledes.profile import Discount
from engine.store.models import InvoiceRow, InvoiceStatus
from engine.workflows.billing import invoices, rejections

router = APIRouter(tags=["invoices"])


class DiscountIn(BaseModel):
    kind: Literal["fees", "expenses"]
    description: str = Field(min_length=1)
    percent: Decimal | None = Field(default=None, description="of the fee or expense subtotal")
    amount: Decimal | None = Field(default=None, description="a fixed credit, as a positive number")
    expense_code: str | None = Field(default=None, description="required on an expense discount (IE line)")


class BuildIn(BaseModel):
    client_id: str = Field(min_length=1, max_length=60, description="the LEDES client id")
    period_start: dt.date
    period_end: dt.date
    matters: list[str] = Field(default_factory=list, description="law firm matter ids; empty: every matter "
                                                                 "(allowed when the client takes several)")
    invoice_date: dt.date | None = None
    number: str | None = Field(default=None, description="letters and digits; default: the firm's prefix and a "
                                                         "sequence")
    description: str | None = None
    format: str | None = Field(default=None, description="1998b or 98bi; default: the client's profile")
    discounts: list[DiscountIn] = Field(default_factory=list, description="one-off invoice-level discounts (IF/IE "
                                                                          "lines), after the client's own")

    def request(self) -> invoices.BuildRequest:
        return invoices.BuildRequest(client_id=self.client_id, period_start=self.period_start,
                                     period_end=self.period_end, matters=tuple(self.matters),
                                     invoice_date=self.invoice_date, number=self.number,
                                     description=self.description, format=self.format,
                                     discounts=tuple(Discount(kind=d.kind, description=d.description,
                                                              percent=d.percent, amount=d.amount,
                                                              expense_code=d.expense_code) for d in self.discounts))


class LineOut(BaseModel):
    line_number: int
    kind: str
    entry_id: int | None = None
    law_firm_matter_id: str
    date: dt.date | None = None
    units: Decimal | None
    unit_cost: Decimal | None
    adjustment: Decimal
    review_adjustment: Decimal | None = None
    tax_total: Decimal | None = None
    total: Decimal
    state: str = "billed"
    description: str | None = None
    notes: list[str] = Field(default_factory=list)


class EventOut(BaseModel):
    action: str
    actor: str
    at: dt.datetime
    detail: dict[str, Any]


class InvoiceSummary(BaseModel):
    id: int
    number: str
    client_id: str
    matters: list[str]
    format: str
    currency: str | None
    invoice_date: dt.date
    period_start: dt.date
    period_end: dt.date
    status: str
    total: Decimal
    fees_total: Decimal
    expenses_total: Decimal
    adjustments_total: Decimal
    tax_total: Decimal | None
    line_count: int
    sha256: str
    destination: str | None
    destination_ref: str | None
    portal_state: str | None
    submitted_at: dt.datetime | None
    polled_at: dt.datetime | None
    last_error: str | None
    created_by: str
    created_at: dt.datetime
    voided_at: dt.datetime | None
    void_reason: str | None


class InvoiceOut(InvoiceSummary):
    notes: list[str]
    lines: list[LineOut]
    events: list[EventOut]
    rejections: list[RejectionOut]


class PreviewOut(BaseModel):
    format: str
    total: Decimal
    fees_total: Decimal
    expenses_total: Decimal
    adjustments_total: Decimal
    tax_total: Decimal | None
    lines: list[LineOut]
    notes: list[str]
    ledes: str = Field(description="the file as it would be written (the number is a placeholder until built)")


class SubmitIn(BaseModel):
    destination: str | None = Field(default=None, description="a configured destination; default: the client's")


class VoidIn(BaseModel):
    reason: str = Field(min_length=1)


class PollOut(BaseModel):
    invoice: InvoiceSummary
    state: str
    changed: bool
    applied: list[RejectionOut]


def _summary(row: InvoiceRow) -> InvoiceSummary:
    return InvoiceSummary.model_validate(row, from_attributes=True)


def _rejection(r: Any) -> RejectionOut:
    return RejectionOut.model_validate(r, from_attributes=True)


def _detail(session: Session, row: InvoiceRow) -> InvoiceOut:
    written = invoices.written_lines(row)
    lines = []
    for ln in invoices.lines(session, row.id):
        as_written = written.get(ln.line_number)
        lines.append(LineOut(
            line_number=ln.line_number, kind=ln.kind, entry_id=ln.entry_id, law_firm_matter_id=ln.law_firm_matter_id,
            date=as_written.date if as_written else None, units=ln.units, unit_cost=ln.unit_cost,
            adjustment=ln.adjustment, review_adjustment=ln.review_adjustment, tax_total=ln.tax_total, total=ln.total,
            state=ln.state, notes=ln.notes, description=as_written.description if as_written else None))
    return InvoiceOut(**_summary(row).model_dump(), notes=row.notes, lines=lines,
                      events=[EventOut.model_validate(e, from_attributes=True)
                              for e in invoices.events(session, row.id)],
                      rejections=[_rejection(r) for r in rejections.of_invoice(session, row.id)])


REMOTE_ERRORS = responses(404, 409, 502, 503)


@router.post("/v1/invoices", response_model=InvoiceOut, status_code=201, responses=responses(404, 409))
def build_invoice(body: BuildIn, session: SessionDep, key: Biller) -> InvoiceOut:
    """Build an invoice from the client's entries that are ready to bill; they are locked to it."""
    return _detail(session, invoices.build(session, body.request(), actor=actor(key)))


@router.post("/v1/invoices/preview", response_model=PreviewOut, responses=responses())
def preview_invoice(body: BuildIn, session: SessionDep, key: Reader) -> PreviewOut:
    """What building would produce; nothing is stored or locked."""
    draft = invoices.prepare(session, body.request())
    lines = [LineOut(line_number=ln.line_number, kind=ln.kind, entry_id=meta.entry_id,
                     law_firm_matter_id=ln.law_firm_matter_id, date=ln.date, units=ln.units,
                     unit_cost=ln.unit_cost, adjustment=ln.adjustment, review_adjustment=meta.review_adjustment,
                     tax_total=ln.tax_total, total=ln.total, description=ln.description, notes=meta.notes)
             for ln, meta in zip(draft.invoice.lines, draft.metas, strict=True)]
    return PreviewOut(format=draft.format, total=draft.invoice.total, fees_total=draft.fees_total,
                      expenses_total=draft.expenses_total, adjustments_total=draft.adjustments_total,
                      tax_total=draft.invoice.tax_total, lines=lines, notes=draft.notes, ledes=draft.content)


@router.get("/v1/invoices", response_model=list[InvoiceSummary], responses=responses())
def list_invoices(session: SessionDep, key: Reader, client: str | None = None, status: InvoiceStatus | None = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[InvoiceSummary]:
    return [_summary(r) for r in invoices.invoices(session, client_id=client, status=status, limit=limit)]


@router.get("/v1/invoices/{ref}", response_model=InvoiceOut, responses=responses(404))
def get_invoice(ref: str, session: SessionDep, key: Reader) -> InvoiceOut:
    """By id or by invoice number."""
    return _detail(session, invoices.get(session, ref))


@router.get("/v1/invoices/{ref}/ledes", responses={**responses(404), 200: {"content": {"text/plain": {}}}},
            response_class=Response)
def get_ledes(ref: str, session: SessionDep, key: Reader) -> Response:
    """The LEDES file exactly as built (and as submitted)."""
    row = invoices.get(session, ref)
    return Response(row.content.encode("utf-8"), media_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{row.number}.txt"',
                             "ETag": f'"{row.sha256}"'})


@router.post("/v1/invoices/{ref}/submit", response_model=InvoiceOut, responses=REMOTE_ERRORS)
async def submit_invoice(ref: str, body: SubmitIn, sessions: Sessions, key: Biller) -> InvoiceOut:
    """Send the invoice to its destination exactly once; calling again after a failure resumes."""
    def work() -> InvoiceOut:
        row = registry.submit(sessions, ref, destination=body.destination, actor=actor(key))
        with sessions() as session:
            return _detail(session, invoices.get(session, row.id))

    return await run_in_threadpool(work)


@router.post("/v1/invoices/{ref}/poll", response_model=PollOut, responses=REMOTE_ERRORS)
async def poll_invoice(ref: str, sessions: Sessions, key: Biller) -> PollOut:
    """Ask the destination how the invoice stands; rejected lines go back to the review queue."""
    def work() -> PollOut:
        result = registry.poll(sessions, ref, actor=actor(key))
        return PollOut(invoice=_summary(result.invoice), state=result.state, changed=result.changed,
                       applied=[_rejection(r) for r in result.applied])

    return await run_in_threadpool(work)


@router.post("/v1/invoices/{ref}/void", response_model=InvoiceOut, responses=responses(404, 409))
def void_invoice(ref: str, body: VoidIn, session: SessionDep, key: Biller) -> InvoiceOut:
    """Withdraw a draft (or an invoice its portal rejected) and release its entries."""
    return _detail(session, invoices.void(session, ref, actor=actor(key), reason=body.reason))
