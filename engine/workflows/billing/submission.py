"""Submitting an invoice to its destination exactly once, and polling how the client's portal judged it.

The attempt is committed as ``submitting``, with a lease, before anything leaves, so a crash or a timeout
leaves a record; submitting again resumes, and the destination finds the first attempt instead of sending
twice. Both functions take a session factory, not a session: they commit around the remote call, never
holding a transaction open while a portal answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from engine import ledes
from engine.store.db import transaction
from engine.store.models import InvoiceRow, InvoiceStatus, PortalRejection
from engine.workflows.billing.destinations import Destination, DestinationError
from engine.workflows.billing.errors import InvalidInvoice, InvoiceStateError, destination_failed
from engine.workflows.billing.invoices import event, get, sha256_of
from engine.workflows.billing.rejections import apply_rejections

SUBMIT_LEASE = dt.timedelta(minutes=30)  # longer than a destination's retries take (Legal Tracker: about 10 min)


@dataclass
class PollResult:
    invoice: InvoiceRow
    state: str
    changed: bool
    applied: list[PortalRejection]


def submit(sessions: sessionmaker[Session], invoice_id: int | str, destination: Destination, *,
           actor: str) -> InvoiceRow:
    """Send the stored file to ``destination`` exactly once.

    The attempt is committed as ``submitting`` before anything leaves, so a crash or timeout leaves a
    record; submitting again resumes, and the destination finds the first attempt instead of sending twice.
    """
    with transaction(sessions) as session:
        invoice = get(session, invoice_id)
        if invoice.status == InvoiceStatus.VOID:
            raise InvoiceStateError(f"invoice {invoice.number} is void")
        if invoice.status == InvoiceStatus.SUBMITTED:
            if invoice.destination != destination.name:
                raise InvoiceStateError(f"invoice {invoice.number} was submitted to {invoice.destination}")
            return invoice  # already there: nothing is sent again
        if invoice.status == InvoiceStatus.SUBMITTING and invoice.destination not in (None, destination.name):
            raise InvoiceStateError(f"invoice {invoice.number} is being submitted to {invoice.destination}")
        resuming = invoice.status == InvoiceStatus.SUBMITTING
        # Claim the submission: of two requests at once, one sends and the other is told to wait. A claim left
        # by a crash expires with its lease.
        now = dt.datetime.now(dt.UTC)
        claimed = session.execute(
            update(InvoiceRow).where(InvoiceRow.id == invoice.id, InvoiceRow.status == invoice.status, or_(
                InvoiceRow.submit_lease_until.is_(None), InvoiceRow.submit_lease_until < now))
            .values(status=InvoiceStatus.SUBMITTING, destination=destination.name,
                    submit_lease_until=now + SUBMIT_LEASE).execution_options(synchronize_session=False)).rowcount
        if claimed != 1:
            raise InvoiceStateError(f"invoice {invoice.number} is being submitted by another request; ask again "
                                    "in a few minutes")
        event(session, invoice, "submit_resumed" if resuming else "submit_started", actor,
               destination=destination.name)
        number, fmt, content, sha = invoice.number, invoice.format, invoice.content, invoice.sha256
    package = destination.build(ledes.parse(content).invoices[0], fmt)
    if package.sha256 != hashlib.sha256(content.encode("utf-8")).hexdigest() or sha256_of(content) != sha:
        message = f"invoice {number}: the file {destination.name} would send differs from the stored one"
        with transaction(sessions) as session:
            invoice = get(session, invoice_id)
            invoice.status, invoice.submit_lease_until, invoice.last_error = InvoiceStatus.DRAFT, None, message
        raise InvalidInvoice(message)
    try:
        receipt = destination.submit(package)
    except DestinationError as exc:
        with transaction(sessions) as session:
            invoice = get(session, invoice_id)
            invoice.last_error, invoice.submit_lease_until = str(exc), None
            if not exc.retryable:
                invoice.status = InvoiceStatus.DRAFT  # refused outright: it is not at the destination
            event(session, invoice, "submit_failed", actor, error=str(exc), retryable=exc.retryable)
        raise destination_failed(f"{destination.name}: {exc}", retryable=exc.retryable) from None
    with transaction(sessions) as session:
        invoice = get(session, invoice_id)
        invoice.status, invoice.destination_ref = InvoiceStatus.SUBMITTED, receipt.reference
        invoice.submit_lease_until = None
        invoice.portal_state, invoice.last_error = str(receipt.state), None
        invoice.submitted_at = receipt.at or dt.datetime.now(dt.UTC)
        event(session, invoice, "submitted", actor, destination=destination.name, reference=receipt.reference,
               state=str(receipt.state), already_there=receipt.already_there)
    return invoice


def poll(sessions: sessionmaker[Session], invoice_id: int | str, destination: Destination, *, actor: str) -> PollResult:
    """Ask the destination how the invoice stands; apply each new rejection once."""
    with transaction(sessions) as session:
        invoice = get(session, invoice_id)
        if invoice.status != InvoiceStatus.SUBMITTED or not invoice.destination_ref:
            raise InvoiceStateError(f"invoice {invoice.number} is {invoice.status}: only submitted invoices "
                                    "have a status at a destination")
        reference = invoice.destination_ref
    try:
        status = destination.status(reference)
    except DestinationError as exc:
        with transaction(sessions) as session:
            get(session, invoice_id).last_error = str(exc)
        raise destination_failed(f"{destination.name}: {exc}", retryable=exc.retryable) from None
    with transaction(sessions) as session:
        invoice = get(session, invoice_id)
        changed = invoice.portal_state != str(status.state)
        if changed:
            event(session, invoice, "status", actor, before=invoice.portal_state, after=str(status.state))
        invoice.portal_state, invoice.polled_at, invoice.last_error = str(status.state), dt.datetime.now(dt.UTC), None
        applied = apply_rejections(session, invoice, status.rejections, actor=actor)
    return PollResult(invoice, str(status.state), changed, applied)


FINAL_PORTAL_STATES = ("delivered", "approved", "adjusted", "rejected", "paid")


def awaiting_outcome(session: Session, client_id: str | None = None) -> list[tuple[int, str]]:
    """(id, number) of each submitted invoice whose outcome at the portal is not known yet."""
    query = select(InvoiceRow.id, InvoiceRow.number).where(
        InvoiceRow.status == InvoiceStatus.SUBMITTED,
        InvoiceRow.portal_state.not_in(FINAL_PORTAL_STATES)).order_by(InvoiceRow.id)
    if client_id:
        query = query.where(InvoiceRow.client_id == client_id)
    return [(row.id, row.number) for row in session.execute(query)]
