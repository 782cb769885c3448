"""Where invoices go. The interface every destination implements (a directory drop, an e-billing portal),
as the billing workflow needs it, and the configured destinations (the ``destinations`` table).

The workflow talks to destinations only through :class:`Destination`; it never knows whether a file lands in
a folder or goes to a portal over HTTP. The implementations live in ``connectors/destinations``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.ledes import LedesInvoice
from engine.store.models import DestinationRow
from engine.workflows.billing.errors import InvalidInvoice, InvoiceNotFound


class PortalState(StrEnum):
    """An invoice's state at the destination, mapped from whatever words the portal uses."""

    DELIVERED = "delivered"  # handed over (a file dropped); nothing more will be known
    SUBMITTED = "submitted"  # received by the portal, not yet looked at
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"  # approved as submitted
    ADJUSTED = "adjusted"  # approved with some lines cut or rejected
    REJECTED = "rejected"  # the whole invoice refused
    PAID = "paid"


FINAL_STATES = frozenset({PortalState.DELIVERED, PortalState.APPROVED, PortalState.ADJUSTED,
                          PortalState.REJECTED, PortalState.PAID})


class DestinationError(Exception):
    """A submission or status call that failed. ``retryable`` says whether trying again later may work
    (a timeout, a 5xx, a 429) or not (a 4xx refusal, a bad configuration)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Package:
    """What a destination is sent: one invoice's LEDES file."""

    invoice_number: str
    file_name: str
    content: bytes
    format: str  # engine.ledes.FORMATS
    sha256: str
    invoice: LedesInvoice


@dataclass(frozen=True)
class Receipt:
    """The destination's acknowledgement of a submission."""

    reference: str  # the portal's invoice id, or the path of the dropped file
    state: PortalState
    already_there: bool = False  # a retry found the first attempt had landed: nothing was sent twice
    at: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """One thing the portal refused: a line (``line_number`` set) or the whole invoice (``None``)."""

    id: str  # stable at the portal, so the same rejection is applied once however often we poll
    line_number: int | None
    reason: str  # the portal's text, verbatim
    reason_code: str | None = None  # the portal's code when it has one
    comment: str | None = None
    amount: Decimal | None = None  # the cut (negative), when the portal reduced rather than refused
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    reference: str
    state: PortalState
    rejections: tuple[Rejection, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


class Destination(Protocol):
    """Implemented by every destination in ``connectors/destinations``."""

    name: str  # e.g. "directory" or "legaltracker"
    format: str  # the LEDES format it takes by default

    def build(self, invoice: LedesInvoice, fmt: str | None = None) -> Package:
        """Render the invoice as the file this destination takes (no side effects)."""
        ...

    def submit(self, package: Package) -> Receipt:
        """Deliver the package exactly once: a retry after a timeout or crash finds the first attempt instead
        of sending the invoice again."""
        ...

    def status(self, reference: str) -> Status:
        """The invoice's current state at the destination, with every rejection or cut so far."""
        ...

    def rejections(self, reference: str) -> list[Rejection]:
        """The rejections and line cuts only (the same as ``status(reference).rejections``)."""
        ...


# Configured destinations ---------------------------------------------------------------------------------

def save(session: Session, *, name: str, kind: str, settings: dict[str, Any], clients: list[str]) -> DestinationRow:
    """Configure a destination, or replace the one of the same name. The settings must have been checked by
    the destination's connector (``connectors.destinations.registry.configure`` does both)."""
    row = session.scalar(select(DestinationRow).where(DestinationRow.name == name))
    if row is None:
        row = DestinationRow(name=name, kind=kind, settings=settings, clients=clients,
                             created_at=dt.datetime.now(dt.UTC))
        session.add(row)
    else:
        row.kind, row.settings, row.clients = kind, settings, clients
    session.flush()
    return row


def configured(session: Session) -> list[DestinationRow]:
    return list(session.scalars(select(DestinationRow).order_by(DestinationRow.name)))


def destination_for(session: Session, client_id: str, name: str | None = None) -> DestinationRow:
    """The named destination, else the one configured for the client, else the only one there is."""
    if name:
        row = session.scalar(select(DestinationRow).where(DestinationRow.name == name))
        if row is None:
            raise InvoiceNotFound(f"no destination named {name!r}")
        return row
    rows = list(session.scalars(select(DestinationRow).order_by(DestinationRow.id)))
    serving = [r for r in rows if client_id in (r.clients or [])] or [r for r in rows if not r.clients]
    if len(serving) != 1:
        known = ", ".join(r.name for r in rows) or "none configured"
        raise InvalidInvoice(f"say which destination to submit to (destinations: {known})")
    return serving[0]
