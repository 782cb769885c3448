"""The review workflow: approve, reject or adjust a flagged entry, each audited, each guarded by the
entry's version so that of two reviewers acting at once exactly one wins.

No web framework here: the API maps these exceptions to HTTP statuses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.model import Entry, EntryKind, FeeBasis
from engine.rules.features import EvaluationContext
from engine.store.models import REVIEW_STATES, EntryRow, EntryState, ReviewAction, ViolationRow
from engine.workflows.billing.invoices import open_portal_rejections, resolve_portal_rejections
from engine.workflows.intake import reevaluate

ADJUSTABLE = ("rate", "hours_billed", "narrative", "utbms_task_code", "utbms_activity_code", "utbms_expense_code")
CENT = Decimal("0.01")


class ReviewError(Exception):
    """A review action that cannot be done; ``code`` is stable for API clients."""

    code = "review_error"
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ReviewError):
    code, status = "not_found", 404


class StaleVersion(ReviewError):
    code, status = "version_mismatch", 412


class NotReviewable(ReviewError):
    code, status = "not_reviewable", 409


class ReasonRequired(ReviewError):
    code, status = "reason_required", 422


class InvalidChange(ReviewError):
    code, status = "invalid_change", 422


@dataclass
class Outcome:
    entry_id: int
    action: str
    state: str
    version: int
    write_down: Decimal | None = None


def _claim(session: Session, entry_id: int, expected_version: int) -> EntryRow:
    """Bump the entry's version if it is still ``expected_version``; the loser of a race gets StaleVersion."""
    claimed = session.execute(
        update(EntryRow).where(EntryRow.id == entry_id, EntryRow.version == expected_version)
        .values(version=expected_version + 1).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        current = session.scalar(select(EntryRow.version).where(EntryRow.id == entry_id))
        if current is None:
            raise NotFound(f"entry {entry_id} does not exist")
        raise StaleVersion(f"entry {entry_id} is at version {current}, not {expected_version}: reload it and "
                           "decide again")
    row = session.scalar(select(EntryRow).where(EntryRow.id == entry_id).execution_options(populate_existing=True))
    assert row is not None
    return row


def _open_violations(session: Session, entry_id: int) -> list[ViolationRow]:
    return list(session.scalars(select(ViolationRow).where(
        ViolationRow.entry_id == entry_id, ViolationRow.current.is_(True), ViolationRow.rule_status == "active")))


def _audit(session: Session, row: EntryRow, action: str, actor: str, reason: str | None,
           before: dict[str, Any], after: dict[str, Any]) -> None:
    session.add(ReviewAction(entry_id=row.id, action=action, actor=actor, reason=reason, before=before, after=after,
                             at=dt.datetime.now(dt.UTC)))


def _snapshot(row: EntryRow) -> dict[str, Any]:
    return {"state": str(row.state), "version": row.version, "worst_severity": row.worst_severity}


def approve(session: Session, entry_id: int, *, expected_version: int, actor: str, reason: str | None) -> Outcome:
    """Clear a flagged entry for billing (an override of its findings). Errors need a reason."""
    row = _claim(session, entry_id, expected_version)
    if row.state not in REVIEW_STATES:
        raise NotReviewable(f"entry {entry_id} is {row.state}: only entries waiting for review can be approved")
    open_findings = _open_violations(session, entry_id)
    refused = open_portal_rejections(session, entry_id)
    if any(v.severity == "error" for v in open_findings) and not (reason and reason.strip()):
        raise ReasonRequired("approving an entry with error-severity findings needs a reason")
    if refused and not (reason and reason.strip()):
        raise ReasonRequired("approving an entry the client's portal rejected needs a reason")
    before = {**_snapshot(row), "version": expected_version,
              "overridden": [{"rule_id": v.rule_id, "severity": v.severity, "message": v.message}
                             for v in open_findings]}
    if refused:
        before["portal_rejections"] = [{"reason": r.reason, "reason_code": r.reason_code} for r in refused]
        resolve_portal_rejections(session, entry_id)
    if row.state == EntryState.CONFLICT and row.pending_record is not None:
        before["pending_record"] = row.pending_record  # approving a conflict keeps what was invoiced
        row.pending_record = None
        row.state = EntryState.INVOICED
    else:
        row.state = EntryState.READY
    row.updated_at = dt.datetime.now(dt.UTC)
    _audit(session, row, "approve", actor, reason, before, _snapshot(row))
    session.flush()
    return Outcome(row.id, "approve", str(row.state), row.version)


def reject(session: Session, entry_id: int, *, expected_version: int, actor: str, reason: str | None) -> Outcome:
    """Exclude the entry from billing."""
    row = _claim(session, entry_id, expected_version)
    if row.state not in REVIEW_STATES:
        raise NotReviewable(f"entry {entry_id} is {row.state}: only entries waiting for review can be rejected")
    before = {**_snapshot(row), "version": expected_version}
    resolve_portal_rejections(session, entry_id)
    row.state = EntryState.REJECTED
    row.updated_at = dt.datetime.now(dt.UTC)
    _audit(session, row, "reject", actor, reason, before, _snapshot(row))
    session.flush()
    return Outcome(row.id, "reject", str(row.state), row.version)


def adjust(session: Session, entry_id: int, *, expected_version: int, actor: str, reason: str | None,
           changes: dict[str, Any], context: EvaluationContext | None = None) -> Outcome:
    """Edit rate, hours, narrative or codes; the entry is judged again at once and the write-down recorded."""
    unknown = sorted(set(changes) - set(ADJUSTABLE))
    if unknown or not changes:
        raise InvalidChange(f"adjust changes only {', '.join(ADJUSTABLE)}" + (f"; not {', '.join(unknown)}"
                                                                              if unknown else ""))
    row = _claim(session, entry_id, expected_version)
    if row.state not in REVIEW_STATES or row.state == EntryState.CONFLICT:
        raise NotReviewable(f"entry {entry_id} is {row.state}: only entries waiting for review can be adjusted")
    old = Entry.model_validate(row.record)
    record = dict(row.record)
    record.update({k: (str(v) if isinstance(v, Decimal) else v) for k, v in changes.items()})
    if "hours_billed" in changes and old.entry_kind == EntryKind.TIME and old.fee_basis == FeeBasis.HOURLY:
        record["quantity"] = record["hours_billed"]
    try:
        new = Entry.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidChange(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if old.amount is not None and ("rate" in changes or "hours_billed" in changes) and new.quantity is not None \
            and new.rate is not None and new.fee_basis != FeeBasis.FLAT:
        new = new.model_copy(update={"amount": (new.quantity * new.rate).quantize(CENT)})
    before_amount, after_amount = old.billed_amount, new.billed_amount
    write_down = ((after_amount - before_amount).quantize(CENT)
                  if before_amount is not None and after_amount is not None else None)
    from engine.entry_io import entry_record

    before = {**_snapshot(row), "version": expected_version,
              "values": {k: _plain(getattr(old, k)) for k in changes}, "amount": _plain(before_amount)}
    if row.source_record is None:
        row.source_record = row.record  # what the source sent: the invoice shows the change as an adjustment
    row.record = entry_record(new)
    row.rate, row.hours_billed, row.amount = new.rate, new.hours_billed, new.amount
    row.updated_at = dt.datetime.now(dt.UTC)
    reevaluate(session, [row], context=context)
    resolve_portal_rejections(session, entry_id)
    after = {**_snapshot(row), "values": {k: _plain(getattr(new, k)) for k in changes},
             "amount": _plain(after_amount), "write_down": _plain(write_down)}
    _audit(session, row, "adjust", actor, reason, before, after)
    session.flush()
    return Outcome(row.id, "adjust", str(row.state), row.version, write_down)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value"):
        return value.value
    return value


def history(session: Session, entry_id: int) -> list[ReviewAction]:
    if session.get(EntryRow, entry_id) is None:
        raise NotFound(f"entry {entry_id} does not exist")
    return list(session.scalars(select(ReviewAction).where(ReviewAction.entry_id == entry_id)
                                .order_by(ReviewAction.id)))
