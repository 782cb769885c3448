"""Ingest: entries in, decisions recorded, flagged entries queued for review.

``ingest`` upserts a batch by (source system, tenant, source id[, line]) and evaluates what changed
against the active rule set versions that apply. It never commits: the caller's transaction holds the
whole batch, so all of it lands or none of it does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.entry_io import entry_record
from engine.evaluate import Violation, evaluate
from engine.features import EvaluationContext
from engine.model import Entry, EntryStatus
from engine.ruleset import RuleSet, load_text
from engine.store.models import (
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    ReviewAction,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)

SEVERITY_ORDER = {"error": 3, "warning": 2, "info": 1}
WITHDRAWN_STATUSES = {EntryStatus.VOID, EntryStatus.DELETED}
CHUNK = 500


@dataclass(frozen=True)
class CircuitBreaker:
    """Hold a rule set version's flags when it flags more than ``share`` of a batch of at least ``minimum``."""

    share: float = 0.5
    minimum: int = 100

    def trips(self, checked: int, flagged: int) -> bool:
        return checked >= self.minimum and flagged > self.share * checked


@dataclass
class IngestResult:
    batch_id: int
    received: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    conflicts: int = 0
    evaluated: int = 0
    ready: int = 0
    in_review: int = 0
    held: int = 0
    held_rulesets: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def source_version(entry: Entry, record: dict[str, Any]) -> str:
    """The source's own version (Clio's etag), else a hash of the canonical record."""
    if entry.source_version:
        return entry.source_version
    text = json.dumps({k: v for k, v in record.items() if k != "ingested_at"}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


_RULESETS: dict[str, RuleSet] = {}


def load_version(version: RuleSetVersion) -> RuleSet:
    """The parsed rule set of a stored version (cached by content hash)."""
    cached = _RULESETS.get(version.revision)
    if cached is None:
        cached = _RULESETS[version.revision] = load_text(version.yaml_text, f"{version.ruleset_id}@{version.revision}")
    return cached


def active_versions(session: Session) -> list[RuleSetVersion]:
    statuses = (RuleSetStatus.ACTIVE, RuleSetStatus.SHADOW)
    return list(session.scalars(select(RuleSetVersion).where(RuleSetVersion.status.in_(statuses))
                                .order_by(RuleSetVersion.ruleset_id, RuleSetVersion.id)))


def _columns(entry: Entry, record: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "source_system": entry.source_system, "source_tenant": entry.source_tenant, "source_id": entry.source_id,
        "source_line_id": entry.source_line_id, "source_version": version, "entry_kind": entry.entry_kind.value,
        "ledes_client_id": entry.ledes_client_id, "client_source_id": entry.client_source_id,
        "law_firm_matter_id": entry.law_firm_matter_id, "client_matter_id": entry.client_matter_id,
        "timekeeper_key": entry.timekeeper_source_id or entry.timekeeper_ledes_id or entry.timekeeper_name,
        "timekeeper_name": entry.timekeeper_name, "work_date": entry.work_date, "hours_billed": entry.hours_billed,
        "rate": entry.rate, "amount": entry.amount, "record": record,
    }


def ingest(
    session: Session,
    entries: Iterable[Entry],
    *,
    actor: str = "system:ingest",
    source: str | None = None,
    context: EvaluationContext | None = None,
    backend: str | None = "auto",
    breaker: CircuitBreaker | None = None,
) -> IngestResult:
    """Upsert ``entries`` and evaluate what changed. Runs inside the caller's transaction."""
    now = dt.datetime.now(dt.UTC)
    ctx = context or EvaluationContext(as_of=now.date())
    breaker = breaker or CircuitBreaker()
    incoming: dict[str, Entry] = {}
    for entry in entries:
        incoming[entry.entry_uid] = entry  # a record repeated in one batch: the last one wins
    batch = IngestBatch(source=source, received=len(incoming), started_at=now)
    session.add(batch)
    session.flush()
    result = IngestResult(batch_id=batch.id, received=len(incoming))

    existing: dict[str, EntryRow] = {}
    uids = list(incoming)
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start:start + CHUNK]
        existing.update((row.entry_uid, row) for row in session.scalars(
            select(EntryRow).where(EntryRow.entry_uid.in_(chunk))))

    changed: list[tuple[EntryRow, Entry]] = []
    actions: list[ReviewAction] = []
    pending_actions: list[tuple[EntryRow, str, dict[str, Any] | None, dict[str, Any] | None]] = []
    for uid, entry in incoming.items():
        record = entry_record(entry)
        version = source_version(entry, record)
        row = existing.get(uid)
        withdrawn = entry.status in WITHDRAWN_STATUSES
        if row is not None and row.source_version == version:
            result.unchanged += 1
            continue
        if row is not None and row.state == EntryState.INVOICED:
            # Already billed: never changed silently; a reviewer decides what to do with the new version.
            row.pending_record = record
            row.state = EntryState.CONFLICT
            row.version += 1
            row.updated_at = now
            result.conflicts += 1
            pending_actions.append((row, "conflict", {"source_version": row.source_version},
                                    {"source_version": version, "record": record}))
            continue
        if row is None:
            row = EntryRow(entry_uid=uid, state=EntryState.READY, created_at=now, updated_at=now,
                           **_columns(entry, record, version))
            session.add(row)
            result.created += 1
            pending_actions.append((row, "ingested", None, {"source_version": version}))
        else:
            before = {"source_version": row.source_version, "state": row.state, "record": row.record}
            for key, value in _columns(entry, record, version).items():
                setattr(row, key, value)
            row.version += 1
            row.updated_at = now
            result.updated += 1
            pending_actions.append((row, "updated", before, {"source_version": version, "record": record}))
        if withdrawn:
            row.state = EntryState.WITHDRAWN
            row.worst_severity = None
            result.withdrawn += 1
            pending_actions.append((row, "withdrawn", None, {"source_status": entry.status.value}))
            continue
        changed.append((row, entry))
    session.flush()
    for row, action, before, after in pending_actions:
        actions.append(ReviewAction(entry_id=row.id, action=action, actor=actor, at=now, before=before, after=after))

    # Earlier decisions about entries that changed (or were withdrawn) are no longer current.
    supersede(session, [row.id for row, _, _, _ in pending_actions])
    _decide(session, changed, batch, ctx, backend, breaker, result, now)
    session.add_all(actions)
    for key in ("created", "updated", "unchanged", "withdrawn", "conflicts"):
        setattr(batch, key, getattr(result, key))
    batch.held_rulesets = result.held_rulesets
    session.flush()
    return result


def supersede(session: Session, entry_ids: Sequence[int]) -> None:
    """Mark the entries' evaluations and violations as no longer current (a newer decision follows)."""
    for start in range(0, len(entry_ids), CHUNK):
        chunk = entry_ids[start:start + CHUNK]
        session.execute(update(Evaluation).where(Evaluation.entry_id.in_(chunk), Evaluation.current.is_(True))
                        .values(current=False))
        session.execute(update(ViolationRow).where(ViolationRow.entry_id.in_(chunk), ViolationRow.current.is_(True))
                        .values(current=False))


def _decide(session: Session, changed: Sequence[tuple[EntryRow, Entry]], batch: IngestBatch | None,
            ctx: EvaluationContext, backend: str | None, breaker: CircuitBreaker, result: IngestResult,
            now: dt.datetime) -> None:
    """Evaluate, record, and move each entry to ready, in review or held."""
    flags = _evaluate_changed(session, changed, batch, ctx, backend, breaker, result, now)
    for row, _entry in changed:
        flagged, held, worst = flags.get(row.id, (False, False, None))
        row.state = EntryState.HELD if held else EntryState.IN_REVIEW if flagged else EntryState.READY
        row.worst_severity = worst
        if row.state is EntryState.READY:
            result.ready += 1
        elif row.state is EntryState.HELD:
            result.held += 1
        else:
            result.in_review += 1
    result.evaluated += len(changed)


def reevaluate(session: Session, rows: Sequence[EntryRow], *, context: EvaluationContext | None = None,
               backend: str | None = "auto") -> IngestResult:
    """Judge stored entries again (after a reviewer's edit, or a new rule set version); no circuit breaker."""
    now = dt.datetime.now(dt.UTC)
    ctx = context or EvaluationContext(as_of=now.date())
    result = IngestResult(batch_id=0, received=len(rows))
    supersede(session, [row.id for row in rows])
    pairs = [(row, Entry.model_validate(row.record)) for row in rows]
    _decide(session, pairs, None, ctx, backend, CircuitBreaker(share=1.0, minimum=1 << 62), result, now)
    session.flush()
    return result


def _evaluate_changed(session: Session, changed: Sequence[tuple[EntryRow, Entry]], batch: IngestBatch | None,
                      ctx: EvaluationContext, backend: str | None, breaker: CircuitBreaker,
                      result: IngestResult, now: dt.datetime) -> dict[int, tuple[bool, bool, str | None]]:
    """Evaluate changed entries with every applicable version; per entry: (flagged, held, worst severity)."""
    flags: dict[int, tuple[bool, bool, str | None]] = {}
    if not changed:
        return flags
    for version in active_versions(session):
        ruleset = load_version(version)
        subset = [(row, entry) for row, entry in changed if ruleset.applies_to(entry)]
        if not subset:
            continue
        violations = evaluate([entry for _, entry in subset], ruleset, context=ctx, backend=backend)
        enforcing = version.status == RuleSetStatus.ACTIVE
        by_index: dict[int, list[Violation]] = {}
        for v in violations:
            by_index.setdefault(v.entry_index, []).append(v)
        flagged_indexes = {i for i, vs in by_index.items()
                           if enforcing and any(v.rule_status == "active" for v in vs)}
        held = enforcing and breaker.trips(len(subset), len(flagged_indexes))
        if held:
            result.held_rulesets.append({"ruleset_id": version.ruleset_id, "revision": version.revision,
                                         "checked": len(subset), "flagged": len(flagged_indexes)})
        evaluations = []
        for i, (row, _entry) in enumerate(subset):
            is_flagged = i in flagged_indexes
            evaluations.append(Evaluation(entry_id=row.id, entry_version=row.version, source_version=row.source_version,
                                          ruleset_version_id=version.id, evaluated_at=now,
                                          batch_id=batch.id if batch is not None else None,
                                          flagged=is_flagged, held=held and is_flagged, current=True))
        session.add_all(evaluations)
        session.flush()
        rows = []
        for i, (row, _entry) in enumerate(subset):
            found = by_index.get(i, [])
            for v in found:
                status = v.rule_status if enforcing else "shadow"
                rows.append(ViolationRow(
                    evaluation_id=evaluations[i].id, entry_id=row.id, ruleset_id=v.ruleset_id,
                    ruleset_revision=v.ruleset_revision, rule_id=v.rule_id, rule_type=v.rule_type,
                    severity=v.severity, rule_status=status, title=v.title, message=v.message,
                    evidence=[ev.as_dict() for ev in v.evidence],
                    adjustment=v.adjustment.as_dict() if v.adjustment else None,
                    contributing=v.contributing, references=v.references, current=True))
            flagged_before, held_before, worst = flags.get(row.id, (False, False, None))
            for v in found:
                if enforcing and v.rule_status == "active" and (
                        worst is None or SEVERITY_ORDER[v.severity] > SEVERITY_ORDER[worst]):
                    worst = v.severity
            is_flagged = i in flagged_indexes
            flags[row.id] = (flagged_before or is_flagged, held_before or (held and is_flagged), worst)
        session.add_all(rows)
    return flags


def add_ruleset_version(session: Session, yaml_text: str, *, source: str = "<upload>", created_by: str | None = None,
                        status: RuleSetStatus | None = None) -> RuleSetVersion:
    """Store a rule file (validated first; a bad one raises RuleSetError). The same content is stored once;
    a new version starts as a draft unless ``status`` says otherwise, a known one keeps its status."""
    ruleset = load_text(yaml_text, source)
    found = session.scalar(select(RuleSetVersion).where(RuleSetVersion.ruleset_id == ruleset.id,
                                                        RuleSetVersion.revision == ruleset.revision))
    if found is None:
        found = RuleSetVersion(ruleset_id=ruleset.id, revision=ruleset.revision, version_label=ruleset.version,
                               yaml_text=yaml_text, status=RuleSetStatus.DRAFT, created_by=created_by)
        session.add(found)
        session.flush()
    if status is not None and status != found.status:
        set_status(session, found, status)
    return found


def set_status(session: Session, version: RuleSetVersion, status: RuleSetStatus) -> None:
    """Activating (or shadowing) a version retires the rule set's other version in that role."""
    if status in (RuleSetStatus.ACTIVE, RuleSetStatus.SHADOW):
        for other in session.scalars(select(RuleSetVersion).where(
                RuleSetVersion.ruleset_id == version.ruleset_id, RuleSetVersion.status == status,
                RuleSetVersion.id != version.id)):
            other.status = RuleSetStatus.RETIRED
            other.status_changed_at = dt.datetime.now(dt.UTC)
    version.status = status
    version.status_changed_at = dt.datetime.now(dt.UTC)
    session.flush()
