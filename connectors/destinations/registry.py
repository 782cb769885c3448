"""Configured destinations (the ``destinations`` table) turned into ``Destination`` objects.

Settings are plain JSON; secrets never are: a Legal Tracker destination names the environment variable that
holds its client secret (``client_secret_env``, default ``OCGATE_LEGALTRACKER_SECRET``).
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from engine.errors import OcgateError
from engine.ledes import FORMATS
from engine.store.models import InvoiceRow
from engine.workflows.billing import destinations, invoices, submission
from engine.workflows.billing.destinations import Destination, DestinationError
from engine.workflows.billing.errors import InvalidInvoice, InvoiceStateError

KINDS = ("directory", "legaltracker")
LEGALTRACKER_REQUIRED = ("base_url", "client_id", "firm_id", "firm_office_id", "company_id")
LEGALTRACKER_OPTIONAL = ("client_secret_env", "matter_ids", "format", "currency", "type_id", "token_url",
                         "audience", "efiles_url", "timeout", "max_attempts")


def check_settings(kind: str, settings: dict[str, Any]) -> list[str]:
    """What is missing or unknown in a destination's settings (empty when they are usable)."""
    if kind not in KINDS:
        return [f"unknown destination kind {kind!r} (one of: {', '.join(KINDS)})"]
    problems = []
    fmt = settings.get("format", "1998b")
    if fmt not in FORMATS:
        problems.append(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if kind == "directory":
        if not settings.get("path"):
            problems.append("a directory drop needs path")
        unknown = set(settings) - {"path", "format"}
    else:
        problems += [f"Legal Tracker needs {key}" for key in LEGALTRACKER_REQUIRED if not settings.get(key)]
        if "client_secret" in settings:
            problems.append("never store the client secret: put it in an environment variable and name it in "
                            "client_secret_env")
        matter_ids = settings.get("matter_ids", {})
        if not isinstance(matter_ids, dict):
            problems.append("matter_ids maps our matter ids to the portal's: an object")
        unknown = set(settings) - set(LEGALTRACKER_REQUIRED) - set(LEGALTRACKER_OPTIONAL) - {"client_secret"}
    problems += [f"unknown setting {key!r}" for key in sorted(unknown)]
    return problems


def open_destination(kind: str, settings: dict[str, Any], *, name: str | None = None,
                     environ: dict[str, str] | None = None, **overrides: Any) -> Destination:
    """A ready destination for a stored configuration, called ``name`` (the configured destination's name);
    ``overrides`` reach the constructor (tests, transports)."""
    destination = _open(kind, settings, environ, overrides)
    if name:
        destination.name = name
    return destination


def _open(kind: str, settings: dict[str, Any], environ: dict[str, str] | None, overrides: dict[str, Any]) -> Any:
    problems = check_settings(kind, settings)
    if problems:
        raise DestinationError("; ".join(problems), retryable=False)
    if kind == "directory":
        from connectors.destinations.directory import DirectoryDrop

        return DirectoryDrop(settings["path"], fmt=settings.get("format", "1998b"))
    from connectors.destinations.legaltracker import LegalTrackerClient

    env = os.environ if environ is None else environ
    secret_env = settings.get("client_secret_env", "OCGATE_LEGALTRACKER_SECRET")
    secret = env.get(secret_env)
    if not secret:
        raise DestinationError(f"Legal Tracker: the client secret is not set: export {secret_env}", retryable=False)
    options = {key: settings[key] for key in ("currency", "type_id", "token_url", "audience", "efiles_url",
                                              "timeout", "max_attempts") if key in settings}
    return LegalTrackerClient(
        settings["base_url"], settings["client_id"], secret, settings["firm_id"], settings["firm_office_id"],
        settings["company_id"], matter_ids=settings.get("matter_ids") or {}, fmt=settings.get("format", "1998b"),
        **{**options, **overrides})


def configure(session: Session, name: str, *, kind: str, settings: dict[str, Any], clients: list[str]) -> None:
    """Check a destination's settings and store it (replacing one of the same name)."""
    problems = check_settings(kind, settings)
    if problems:
        raise InvalidInvoice(f"destination {name}: " + "; ".join(problems))
    destinations.save(session, name=name, kind=kind, settings=settings, clients=clients)


def for_client(session: Session, client_id: str, name: str | None = None) -> Destination:
    """A client's destination, opened: the named one, else the one configured for the client."""
    configured = destinations.destination_for(session, client_id, name)
    try:
        return open_destination(configured.kind, configured.settings, name=configured.name)
    except DestinationError as exc:
        raise DestinationMisconfigured(f"destination {configured.name}: {exc}") from None


class DestinationMisconfigured(InvalidInvoice):
    code = "destination_misconfigured"


# Sending and polling: a stored invoice, its configured destination opened, the billing workflow called.

def submit(sessions: sessionmaker[Session], ref: int | str, *, destination: str | None = None,
           actor: str) -> InvoiceRow:
    """Submit invoice ``ref`` (id or number) to the named destination, else the one it went to, else the
    client's."""
    with sessions() as session:
        invoice = invoices.get(session, ref)
        target = for_client(session, invoice.client_id, destination or invoice.destination)
        invoice_id = invoice.id
    return submission.submit(sessions, invoice_id, target, actor=actor)


def poll(sessions: sessionmaker[Session], ref: int | str, *, actor: str) -> submission.PollResult:
    """Ask the destination an invoice went to how it stands; rejected lines go back to the review queue."""
    with sessions() as session:
        invoice = invoices.get(session, ref)
        if not invoice.destination:
            raise InvoiceStateError(f"invoice {invoice.number} has not been submitted")
        target = for_client(session, invoice.client_id, invoice.destination)
        invoice_id = invoice.id
    return submission.poll(sessions, invoice_id, target, actor=actor)


def poll_waiting(sessions: sessionmaker[Session], *, client_id: str | None = None,
                 actor: str) -> list[tuple[str, submission.PollResult | OcgateError]]:
    """Poll every submitted invoice whose outcome is not known yet; one destination's failure stops no other.
    Per invoice number: the result, or the error."""
    with sessions() as session:
        waiting = submission.awaiting_outcome(session, client_id)
    results: list[tuple[str, submission.PollResult | OcgateError]] = []
    for invoice_id, number in waiting:
        try:
            results.append((number, poll(sessions, invoice_id, actor=actor)))
        except OcgateError as exc:
            results.append((number, exc))
    return results
