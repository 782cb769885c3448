"""The destination interface: build the file a destination takes, submit it once, poll its status and
fetch what the client's e-billing portal rejected.

The engine's invoice workflow talks to destinations only through this interface; it never knows whether a
file lands in a folder or goes to a portal over HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from engine.ledes import LedesInvoice


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
