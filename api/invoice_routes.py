"""Invoice routes: build, preview, list, read, download the LEDES file, submit, poll, void.

Building, submitting, polling and voiding need the ``biller`` role (or ``admin``); reading needs any key.
Submitting and polling talk to the destination outside the request's transaction: the attempt is recorded
before anything leaves, so a dropped request never loses track of an invoice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.app import ApiError, Reader, SessionDep, allow, errors
from api.auth import BILL, Caller
from connectors.destinations.base import DestinationError
from connectors.destinations.registry import open_destination
from engine.ledes.profile import Discount
from engine.store.models import EntryRow, InvoiceRow, InvoiceStatus, PortalRejection
from engine.workflows.billing import invoices

Biller = Annotated[Caller, allow(BILL)]


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


class RejectionOut(BaseModel):
    id: int
    rejection_id: str
    entry_id: int | None
    line_number: int | None
    kind: str
    reason: str
    reason_code: str | None
    comment: str | None
    amount: Decimal | None
    proposal: dict[str, Any] | None
    received_at: dt.datetime
    resolved_at: dt.datetime | None


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


def _rejection(r: PortalRejection) -> RejectionOut:
    return RejectionOut.model_validate(r, from_attributes=True)


def register_invoice_routes(app: FastAPI) -> None:
    failures = errors(404, 409)
    failures[502] = {"model": failures[401]["model"], "description": "the destination refused the invoice"}
    failures[503] = {"model": failures[401]["model"], "description": "the destination could not be reached; "
                                                                     "submit again later (nothing is sent twice)"}

    def detail(session: Any, row: InvoiceRow) -> InvoiceOut:
        written = {ln.line_number: ln for ln in _parsed_lines(row.content)}
        lines = [LineOut(line_number=ln.line_number, kind=ln.kind, entry_id=ln.entry_id,
                         law_firm_matter_id=ln.law_firm_matter_id, date=written[ln.line_number].date
                         if ln.line_number in written else None, units=ln.units, unit_cost=ln.unit_cost,
                         adjustment=ln.adjustment, review_adjustment=ln.review_adjustment, tax_total=ln.tax_total,
                         total=ln.total, state=ln.state, notes=ln.notes,
                         description=written[ln.line_number].description if ln.line_number in written else None)
                 for ln in invoices.lines(session, row.id)]
        rejections = session.scalars(select(PortalRejection).where(PortalRejection.invoice_id == row.id)
                                     .order_by(PortalRejection.id))
        return InvoiceOut(**_summary(row).model_dump(), notes=row.notes, lines=lines,
                          events=[EventOut.model_validate(e, from_attributes=True)
                                  for e in invoices.events(session, row.id)],
                          rejections=[_rejection(r) for r in rejections])

    def destination(session: Any, row: InvoiceRow, name: str | None) -> Any:
        configured = invoices.destination_for(session, row.client_id, name or row.destination)
        try:
            return open_destination(configured.kind, configured.settings, name=configured.name)
        except DestinationError as exc:
            raise ApiError(422, "destination_misconfigured", str(exc)) from None

    @app.post("/v1/invoices", response_model=InvoiceOut, status_code=201, responses=errors(404, 409),
              tags=["invoices"])
    def build_invoice(body: BuildIn, session: SessionDep, key: Biller) -> InvoiceOut:
        """Build an invoice from the client's entries that are ready to bill; they are locked to it."""
        row = invoices.build(session, body.request(), actor=f"key:{key.name}")
        return detail(session, row)

    @app.post("/v1/invoices/preview", response_model=PreviewOut, responses=errors(), tags=["invoices"])
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

    @app.get("/v1/invoices", response_model=list[InvoiceSummary], responses=errors(), tags=["invoices"])
    def list_invoices(session: SessionDep, key: Reader, client: str | None = None,
                      status: InvoiceStatus | None = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[InvoiceSummary]:
        query = select(InvoiceRow).order_by(InvoiceRow.id.desc()).limit(limit)
        if client:
            query = query.where(InvoiceRow.client_id == client)
        if status:
            query = query.where(InvoiceRow.status == status)
        return [_summary(r) for r in session.scalars(query)]

    @app.get("/v1/invoices/{ref}", response_model=InvoiceOut, responses=errors(404), tags=["invoices"])
    def get_invoice(ref: str, session: SessionDep, key: Reader) -> InvoiceOut:
        """By id or by invoice number."""
        return detail(session, invoices.get(session, ref))

    @app.get("/v1/invoices/{ref}/ledes", responses={**errors(404), 200: {"content": {"text/plain": {}}}},
             response_class=Response, tags=["invoices"])
    def get_ledes(ref: str, session: SessionDep, key: Reader) -> Response:
        """The LEDES file exactly as built (and as submitted)."""
        row = invoices.get(session, ref)
        return Response(row.content.encode("utf-8"), media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{row.number}.txt"',
                                 "ETag": f'"{row.sha256}"'})

    @app.post("/v1/invoices/{ref}/submit", response_model=InvoiceOut, responses=failures, tags=["invoices"])
    async def submit_invoice(ref: str, body: SubmitIn, request: Request, key: Biller) -> InvoiceOut:
        """Send the invoice to its destination exactly once; calling again after a failure resumes."""
        sessions = request.app.state.sessions

        def work() -> InvoiceOut:
            with sessions() as session:
                row = invoices.get(session, ref)
                target = destination(session, row, body.destination)
            invoices.submit(sessions, row.id, target, actor=f"key:{key.name}")
            with sessions() as session:
                return detail(session, invoices.get(session, row.id))

        return await run_in_threadpool(work)

    @app.post("/v1/invoices/{ref}/poll", response_model=PollOut, responses=failures, tags=["invoices"])
    async def poll_invoice(ref: str, request: Request, key: Biller) -> PollOut:
        """Ask the destination how the invoice stands; rejected lines go back to the review queue."""
        sessions = request.app.state.sessions

        def work() -> PollOut:
            with sessions() as session:
                row = invoices.get(session, ref)
                if not row.destination:
                    raise invoices.InvoiceStateError(f"invoice {row.number} has not been submitted")
                target = destination(session, row, row.destination)
            result = invoices.poll(sessions, row.id, target, actor=f"key:{key.name}")
            return PollOut(invoice=_summary(result.invoice), state=result.state, changed=result.changed,
                           applied=[_rejection(r) for r in result.applied])

        return await run_in_threadpool(work)

    @app.post("/v1/invoices/{ref}/void", response_model=InvoiceOut, responses=errors(404, 409), tags=["invoices"])
    def void_invoice(ref: str, body: VoidIn, session: SessionDep, key: Biller) -> InvoiceOut:
        """Withdraw a draft (or an invoice its portal rejected) and release its entries."""
        row = invoices.void(session, ref, actor=f"key:{key.name}", reason=body.reason)
        return detail(session, row)

    @app.get("/v1/entries/{entry_id}/portal-rejections", response_model=list[RejectionOut],
             responses=errors(404), tags=["review"])
    def entry_rejections(entry_id: int, session: SessionDep, key: Reader,
                         open_only: bool = False) -> list[RejectionOut]:
        """What clients' portals refused of this entry, with the proposed rule; ``open_only``: not yet answered."""
        if session.get(EntryRow, entry_id) is None:
            raise ApiError(404, "not_found", f"entry {entry_id} does not exist")
        query = select(PortalRejection).where(PortalRejection.entry_id == entry_id).order_by(PortalRejection.id)
        if open_only:
            query = query.where(PortalRejection.resolved_at.is_(None))
        return [_rejection(r) for r in session.scalars(query)]


def _parsed_lines(content: str) -> list[Any]:
    from engine import ledes

    return list(ledes.parse(content).invoices[0].lines) if content else []

