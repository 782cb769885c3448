"""What the billing workflow refuses, each with a stable code and the HTTP status that means it."""

from __future__ import annotations

from engine.errors import OcgateError


class InvoiceError(OcgateError):
    """An invoice operation that cannot be done."""

    code, status = "invoice_error", 400


class InvoiceNotFound(InvoiceError):
    code, status = "not_found", 404


class NothingToBill(InvoiceError):
    code, status = "nothing_to_bill", 422


class InvalidInvoice(InvoiceError):
    code, status = "invalid_invoice", 422


class InvoiceStateError(InvoiceError):
    code, status = "invoice_state", 409


class NumberTaken(InvoiceError):
    code, status = "number_taken", 409


class EntriesChanged(InvoiceError):
    code, status = "entries_changed", 409


class DestinationFailed(InvoiceError):
    """The destination refused the invoice (a 4xx, a bad configuration): sending it again will not help."""

    code, status = "destination_failed", 502


class DestinationUnavailable(DestinationFailed):
    """The destination could not be reached (a timeout, a 5xx, a 429): submit again later; nothing is sent
    twice."""

    code, status = "destination_unavailable", 503
    retryable = True


def destination_failed(message: str, *, retryable: bool) -> DestinationFailed:
    return DestinationUnavailable(message) if retryable else DestinationFailed(message)
