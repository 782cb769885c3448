"""What a client's portal rejected, back in the review queue: each rejected line's entry (or every entry
of a rejected invoice) returns to ``in_review`` with the portal's reason and a proposal for the rule that
would have caught it. A reviewer's action on the entry answers its rejections."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from engine.model import Entry
from engine.store.models import EntryRow, EntryState, InvoiceRow, PortalRejection, ReviewAction
from engine.workflows.billing.errors import InvoiceNotFound
from engine.workflows.billing.invoices import event, lines
from engine.workflows.billing.proposals import propose
from engine.workflows.rulesets import client_rulesets


def apply_rejections(session: Session, invoice: InvoiceRow, rejections: Sequence[Any], *,
                     actor: str) -> list[PortalRejection]:
    """Put the entries of rejected lines (or of a rejected invoice) back in the review queue with the
    portal's reason and a proposal for the rule that would have caught them. Idempotent per rejection id."""
    seen = set(session.scalars(select(PortalRejection.rejection_id).where(PortalRejection.invoice_id == invoice.id)))
    by_number = {ln.line_number: ln for ln in lines(session, invoice.id)}
    rulesets = client_rulesets(session, invoice.client_id)
    now = dt.datetime.now(dt.UTC)
    applied: list[PortalRejection] = []
    for rejection in rejections:
        if rejection.id in seen:
            continue
        seen.add(rejection.id)
        if rejection.line_number is None:
            affected = [ln for ln in by_number.values() if ln.state == "billed"]
        else:
            line = by_number.get(rejection.line_number)
            affected = [line] if line is not None else []
        if not affected:
            record = PortalRejection(invoice_id=invoice.id, rejection_id=rejection.id, entry_id=None,
                                     line_number=rejection.line_number, kind="rejected", reason=rejection.reason,
                                     reason_code=rejection.reason_code, comment=rejection.comment,
                                     amount=rejection.amount, received_at=now,
                                     proposal={"kind": "none", "why": "the portal named a line this invoice does "
                                                                      "not have"})
            session.add(record)
            applied.append(record)
            continue
        for line in affected:
            cut = (rejection.line_number is not None and rejection.amount is not None
                   and abs(rejection.amount) < line.total)
            line.state = "cut" if cut else "rejected"
            entry_row = session.get(EntryRow, line.entry_id) if line.entry_id else None
            entry = Entry.model_validate(entry_row.record) if entry_row is not None else None
            proposal = propose(entry, rejection.reason, rejection.reason_code, rulesets) if entry else None
            record = PortalRejection(
                invoice_id=invoice.id, rejection_id=rejection.id, entry_id=line.entry_id,
                line_number=line.line_number, kind="cut" if cut else "rejected", reason=rejection.reason,
                reason_code=rejection.reason_code, comment=rejection.comment, amount=rejection.amount,
                proposal=proposal, received_at=now, resolved_at=now if cut or entry_row is None else None)
            session.add(record)
            applied.append(record)
            if entry_row is None:
                continue
            before = {"state": str(entry_row.state), "version": entry_row.version, "invoice": invoice.number}
            if cut:
                # The rest of the line was accepted and will be paid: billing it again would bill it twice.
                action, after_state = "portal_cut", entry_row.state
            else:
                action, after_state = "portal_rejected", EntryState.IN_REVIEW
                if entry_row.state == EntryState.INVOICED and entry_row.invoice_id == invoice.id:
                    entry_row.state, entry_row.invoice_id = EntryState.IN_REVIEW, None
                entry_row.version += 1
                entry_row.updated_at = now
            session.add(ReviewAction(
                entry_id=entry_row.id, action=action, actor=actor, reason=rejection.reason, at=now, before=before,
                after={"state": str(after_state), "version": entry_row.version, "invoice": invoice.number,
                       "line": line.line_number, "reason_code": rejection.reason_code,
                       "comment": rejection.comment, "amount": str(rejection.amount) if rejection.amount else None,
                       "proposal": proposal}))
        event(session, invoice, "portal_rejection", actor, rejection=rejection.id, line=rejection.line_number,
               reason=rejection.reason, entries=[ln.entry_id for ln in affected if ln.entry_id])
    session.flush()
    return applied


def open_portal_rejections(session: Session, entry_id: int) -> list[PortalRejection]:
    return list(session.scalars(select(PortalRejection).where(
        PortalRejection.entry_id == entry_id, PortalRejection.resolved_at.is_(None)).order_by(PortalRejection.id)))


def resolve_portal_rejections(session: Session, entry_id: int) -> int:
    """A reviewer acted on the entry: its portal rejections are answered."""
    return session.execute(update(PortalRejection).where(and_(
        PortalRejection.entry_id == entry_id, PortalRejection.resolved_at.is_(None)))
        .values(resolved_at=dt.datetime.now(dt.UTC)).execution_options(synchronize_session=False)).rowcount


def of_invoice(session: Session, invoice_id: int) -> list[PortalRejection]:
    return list(session.scalars(select(PortalRejection).where(PortalRejection.invoice_id == invoice_id)
                                .order_by(PortalRejection.id)))


def of_entry(session: Session, entry_id: int, *, open_only: bool = False) -> list[PortalRejection]:
    """What clients' portals refused of an entry; ``open_only``: not yet answered by a reviewer."""
    if not 0 < entry_id < 2**63 or session.get(EntryRow, entry_id) is None:
        raise InvoiceNotFound(f"entry {entry_id} does not exist")
    query = select(PortalRejection).where(PortalRejection.entry_id == entry_id).order_by(PortalRejection.id)
    if open_only:
        query = query.where(PortalRejection.resolved_at.is_(None))
    return list(session.scalars(query))
