"""The stored entries as a whole: what a firm hands to an auditor, and what a test of a sync compares with the
source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.store.models import EntryRow


def export(session: Session, *, source_system: str | None = None, source_tenant: str | None = None,
           state: str | None = None) -> Iterator[dict[str, Any]]:
    """Each stored entry, in id order, streamed: its review state and versions, and the canonical record."""
    query = select(EntryRow.id, EntryRow.entry_uid, EntryRow.state, EntryRow.version, EntryRow.worst_severity,
                   EntryRow.source_version, EntryRow.data_quality_flags, EntryRow.invoice_id, EntryRow.record)
    if source_system:
        query = query.where(EntryRow.source_system == source_system)
    if source_tenant:
        query = query.where(EntryRow.source_tenant == source_tenant)
    if state:
        query = query.where(EntryRow.state == state)
    for row in session.execute(query.order_by(EntryRow.id).execution_options(yield_per=2000)):
        yield {"id": row.id, "entry_uid": row.entry_uid, "state": str(row.state), "version": row.version,
               "worst_severity": row.worst_severity, "source_version": row.source_version,
               "data_quality_flags": row.data_quality_flags or [], "invoice_id": row.invoice_id,
               "entry": row.record}
