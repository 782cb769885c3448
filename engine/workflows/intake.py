"""Ingest: entries in, decisions recorded, flagged entries queued for review.

``ingest`` upserts a batch by (source system, tenant, source id[, line]) and evaluates what changed
against the active rule set versions that apply. It never commits: the caller's transaction holds the
whole batch, so all of it lands or none of it does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, Row, Table, bindparam, insert, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from engine.entry_io import entry_record
from engine.model import Entry, EntryStatus
from engine.rules.conditions import Evidence
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.store.models import (
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    ReviewAction,
    RuleSetStatus,
    RuleSetVersion,
    UtcDateTime,
    ViolationRow,
)
from engine.workflows.rulesets import active_versions, load_version

SEVERITY_ORDER = {"error": 3, "warning": 2, "info": 1}
WITHDRAWN_STATUSES = {EntryStatus.VOID, EntryStatus.DELETED}
CHUNK = 500
LOOKUP_CHUNK = 2000  # entry uids or ids per SELECT ... IN (...)
WRITE_CHUNK = 1000  # rows per bulk INSERT or UPDATE


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
    restore_plans = _custom_plans(session)
    batch = IngestBatch(source=source, received=len(incoming), started_at=now)
    session.add(batch)
    session.flush()
    result = IngestResult(batch_id=batch.id, received=len(incoming))

    # What deciding needs of the stored rows (the records of those that changed are read further down).
    existing: dict[str, Row[Any]] = {}
    uids = list(incoming)
    for start in range(0, len(uids), LOOKUP_CHUNK):
        existing.update((row.entry_uid, row) for row in session.execute(
            select(EntryRow.entry_uid, EntryRow.id, EntryRow.source_version, EntryRow.state, EntryRow.version)
            .where(EntryRow.entry_uid.in_(uids[start:start + LOOKUP_CHUNK]))))

    touched: list[_Pending] = []  # in batch order: each gets its review action(s) in that order
    for uid, entry in incoming.items():
        record = None
        version = entry.source_version  # what source_version() returns when it is set: no record needed yet
        if not version:
            record = entry_record(entry)
            version = source_version(entry, record)
        row = existing.get(uid)
        if row is not None and row.source_version == version:
            result.unchanged += 1
            continue
        if row is not None and row.state in (EntryState.INVOICED, EntryState.CONFLICT):
            # Already billed: never changed silently; a reviewer decides what to do with the new version.
            # A conflict stays one: a later source version only replaces the pending record.
            touched.append(_Pending(entry, "conflict", row.id, row.version + 1, version,
                                    record or entry_record(entry), {"source_version": row.source_version},
                                    EntryState.CONFLICT))
            result.conflicts += 1
            continue
        if row is None:
            pending = _Pending(entry, "ingested", None, 1, version, record, None, EntryState.READY)
            result.created += 1
        else:
            pending = _Pending(entry, "updated", row.id, row.version + 1, version, record or entry_record(entry),
                               {"source_version": row.source_version, "state": row.state, "record": None},
                               row.state)
            result.updated += 1
        if entry.status in WITHDRAWN_STATUSES:
            pending.withdrawn = True
            pending.state = EntryState.WITHDRAWN
            pending.worst_severity = None
            result.withdrawn += 1
        touched.append(pending)
    existing.clear()
    updated = {p.id: p for p in touched if p.action == "updated"}
    ids = list(updated)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        for entry_id, stored in session.execute(select(EntryRow.id, EntryRow.record)
                                                .where(EntryRow.id.in_(ids[start:start + LOOKUP_CHUNK]))):
            updated[entry_id].before["record"] = stored  # type: ignore[index]

    # Judge before writing anything, so that each entry row is written once, with its state.
    changed = [p for p in touched if p.action != "conflict" and not p.withdrawn]
    judgements, flags = _judge(session, [p.entry for p in changed], ctx, backend, breaker, result)
    _settle(changed, flags, result)

    write = _Writer(session, now)
    created = [p for p in touched if p.action == "ingested"]
    for start in range(0, len(created), WRITE_CHUNK):
        chunk = created[start:start + WRITE_CHUNK]
        rows = []
        for pending in chunk:
            entry = pending.entry
            columns = _columns(entry, pending.record or entry_record(entry), pending.source_version)
            columns["record_json"] = write(columns.pop("record"))
            columns.update(entry_uid=entry.entry_uid, state=pending.state, worst_severity=pending.worst_severity,
                           version=1, now=write.now)  # pending_record left out: NULL
            rows.append(columns)
            pending.record = None  # not needed any more
        for pending, entry_id in zip(chunk, write.insert(_ENTRIES, rows), strict=True):
            pending.id = entry_id
    changes = list(updated.values())
    for start in range(0, len(changes), WRITE_CHUNK):
        rows = []
        for pending in changes[start:start + WRITE_CHUNK]:
            columns = _columns(pending.entry, pending.record, pending.source_version)  # type: ignore[arg-type]
            # A new source version replaces whatever a reviewer adjusted: the adjusted-from record goes too.
            columns.update(id=pending.id, state=pending.state, worst_severity=pending.worst_severity,
                           version=pending.version, updated_at=now, source_record=None)
            rows.append(columns)
        session.execute(update(EntryRow), rows)  # by primary key; synchronises rows loaded in the session
    conflicts = [{"id": p.id, "pending_record": p.record, "state": p.state, "version": p.version, "updated_at": now}
                 for p in touched if p.action == "conflict"]
    for start in range(0, len(conflicts), WRITE_CHUNK):
        session.execute(update(EntryRow), conflicts[start:start + WRITE_CHUNK])

    # Earlier decisions about entries that changed (or were withdrawn) are no longer current; entries
    # created by this batch have none.
    supersede(session, [p.id for p in touched if p.action != "ingested"])  # type: ignore[misc]
    _record(session, changed, judgements, batch.id, write)
    actions: list[dict[str, Any]] = []
    for pending in touched:
        if pending.action == "ingested":
            after: dict[str, Any] = {"source_version": pending.source_version}
        else:
            after = {"source_version": pending.source_version, "record": pending.record}
        actions.append({"entry_id": pending.id, "action": pending.action, "actor": actor, "now": write.now,
                        "reason": None, "before_json": write.null if pending.before is None else write(pending.before),
                        "after_json": write(after)})
        if pending.withdrawn:
            actions.append({"entry_id": pending.id, "action": "withdrawn", "actor": actor, "now": write.now,
                            "reason": None, "before_json": write.null,
                            "after_json": write({"source_status": pending.entry.status.value})})
        if len(actions) >= WRITE_CHUNK:
            session.execute(_INSERT_ACTIONS, actions)
            actions = []
    if actions:
        session.execute(_INSERT_ACTIONS, actions)
    for key in ("created", "updated", "unchanged", "withdrawn", "conflicts"):
        setattr(batch, key, getattr(result, key))
    batch.held_rulesets = result.held_rulesets
    session.flush()
    restore_plans()
    return result


def _custom_plans(session: Session) -> Callable[[], None]:
    """PostgreSQL: plan each statement for its own parameters until the function returned is called (or
    the transaction ends). psycopg prepares a statement once it has run five times on a connection, and
    the server may then settle on one generic plan for it. Made while the entries table was empty (the
    first batch of a large first load runs the uid lookup fifty times), that plan is a sequential scan
    testing a 2,000-value IN list row by row: ingesting the same 100k entries again then took 260 s
    instead of one, until autovacuum analysed the table. Planning these few large statements costs
    next to nothing."""
    dialect = session.connection().dialect
    if dialect.name != "postgresql" or (dialect.server_version_info or (0,)) < (12,):  # plan_cache_mode: 12+
        return lambda: None
    previous = session.scalar(text("SELECT current_setting('plan_cache_mode')"))
    session.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
    return lambda: session.execute(text("SELECT set_config('plan_cache_mode', :value, true)"), {"value": previous})


@dataclass(slots=True, eq=False)
class _Pending:
    """An entry of an ingest batch on its way to the store. Evaluating reads and sets what it would of an
    EntryRow: id, version, source_version, state and worst_severity."""

    entry: Entry
    action: str  # ingested, updated or conflict
    id: int | None
    version: int
    source_version: str  # the incoming version
    record: dict[str, Any] | None  # the incoming record (built when written, for a new entry)
    before: dict[str, Any] | None  # the audit's "before"
    state: str | None
    worst_severity: str | None = None
    withdrawn: bool = False


class _AsIs(TypeDecorator[Any]):
    """A value its column's type has processed already (see ``_Writer``), bound as it is. The column's type
    stays, so PostgreSQL still gets its cast."""

    def bind_processor(self, dialect: Dialect) -> None:  # type: ignore[override]
        return None


class _JSONAsIs(_AsIs):
    impl = JSON
    cache_ok = True


class _TimestampAsIs(_AsIs):
    impl = DateTime(timezone=True)
    cache_ok = True


class _Writer:
    """Values for the bulk statements, as SQLAlchemy's column types would write them, with the work done
    once where many rows share a value. JSON text: the dialect's serializer (json.dumps unless the engine
    was given another), None as JSON null; a rule's references, an aggregate group's contributing entries,
    and evidence with the same content (say, one unapproved timekeeper's entries) are serialised once.
    The batch's timestamp is processed once (formatting it for SQLite cost 0.6 s per 100k entries)."""

    EVIDENCE_TEXTS = 50_000  # distinct evidence texts remembered (most evidence repeats; unique values don't)

    def __init__(self, session: Session, now: dt.datetime):
        self.session = session
        dialect = session.connection().dialect
        self.sequences = dialect.name == "postgresql"
        self.dumps: Callable[[Any], str] = dialect._json_serializer or json.dumps
        self.null = self.dumps(None)
        self.empty = self.dumps([])
        process = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
        self.now = process(now) if process is not None else now
        self._shared: dict[int, tuple[object, str]] = {}  # id -> (the object, kept alive so the id stays its; text)
        self._evidence: dict[tuple[Any, ...], str] = {}

    def __call__(self, value: Any) -> str:
        return self.dumps(value)

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` into ``table`` (entries, or evaluations of one version); their new ids, in order.

        PostgreSQL: ids drawn from the table's sequence first, then a plain executemany, which psycopg
        pipelines. RETURNING makes SQLAlchemy send "insertmanyvalues" statements instead, a thousand rows
        each: too large for psycopg's query cache, they are parsed anew each time on both sides (4x slower
        here). SQLite has no sequences, and its RETURNING costs next to nothing."""
        if self.sequences:
            ids = sorted(self.session.scalars(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
                {"table": table.fullname, "count": len(rows)}))
            for row, new_id in zip(rows, ids, strict=True):
                row["id"] = new_id
            self.session.execute(_INSERTS[table][0], rows)
            return ids
        key = _INSERTS[table][1]  # unique among the rows: matches RETURNING's rows to them
        returned = dict(self.session.execute(_INSERTS_RETURNING[table], rows).all())
        return [returned[row[key]] for row in rows]

    def shared(self, value: Any) -> str:
        """The text of ``value``, remembered by identity: for objects nobody changes while this is in use."""
        if value is None:
            return self.null
        if type(value) is list and not value:
            return self.empty
        seen = self._shared.get(id(value))
        if seen is None:
            seen = self._shared[id(value)] = (value, self.dumps(value))
        return seen[1]

    def evidence(self, violation: Violation) -> str:
        evidence = violation.evidence
        if violation.contributing:  # an aggregate group's violations share one evidence list
            seen = self._shared.get(id(evidence))
            if seen is None:
                seen = self._shared[id(evidence)] = (evidence, self.dumps([ev.as_dict() for ev in evidence]))
            return seen[1]
        key = _evidence_key(evidence)
        if key is None:
            return self.dumps([ev.as_dict() for ev in evidence])
        serialised = self._evidence.get(key)
        if serialised is None:
            serialised = self.dumps([ev.as_dict() for ev in evidence])
            if len(self._evidence) < self.EVIDENCE_TEXTS:
                self._evidence[key] = serialised
        return serialised


_NO_KEY = object()
_KEYED_TYPES = {str, int, bool, type(None), dt.date}


def _value_key(value: Any) -> Any:
    """Equal keys only for values that ``render_value`` renders alike (same type, same text); _NO_KEY for
    the rest (floats, sets, datetimes, nested lists, ...), which are rendered each time."""
    kind = type(value)
    if kind is Decimal:
        return (kind, str(value))
    if kind in _KEYED_TYPES or isinstance(value, Enum):
        return (kind, value)
    if kind is list and all(type(item) is str for item in value):
        return (kind, tuple(value))
    return _NO_KEY


def _evidence_key(evidence: list[Any]) -> tuple[Any, ...] | None:
    """A key for a violation's evidence that equals another's only when ``Evidence.as_dict`` gives the same."""
    key = []
    for ev in evidence:
        if type(ev) is not Evidence:
            return None
        expected, actual = _value_key(ev.expected), _value_key(ev.actual)
        if expected is _NO_KEY or actual is _NO_KEY:
            return None
        key.append((ev.field, ev.operator, expected, actual))
    return tuple(key)


def _as_is(json_columns: Sequence[str] = (), timestamps: Sequence[str] = ()) -> dict[str, Any]:
    """``.values()`` for a bulk statement: each JSON column bound from ``<column>_json``, each timestamp
    from ``now`` (all of a batch's rows are stamped alike)."""
    values: dict[str, Any] = {name: bindparam(f"{name}_json", type_=_JSONAsIs()) for name in json_columns}
    now = bindparam("now", type_=_TimestampAsIs())
    values.update((name, now) for name in timestamps)
    return values


# Bulk inserts go to the tables (Core): an executemany of dicts, or "insertmanyvalues" batches where
# RETURNING is needed. The ORM's bulk insert costs a third more per row here, and it leaves a column out
# of a row where the value is None, which splits the rows into many small statements. A JSON column left
# out of every row is NULL.
_ENTRIES: Table = EntryRow.__table__  # type: ignore[assignment]
_EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
_VIOLATIONS: Table = ViolationRow.__table__  # type: ignore[assignment]
_ACTIONS: Table = ReviewAction.__table__  # type: ignore[assignment]
_INSERT_EVALUATIONS = insert(_EVALUATIONS).values(_as_is(timestamps=["evaluated_at"]))
_INSERTS = {  # _Writer.insert: the plain statement, and one returning (key, id) for matching the rows
    _ENTRIES: (insert(_ENTRIES).values(_as_is(["record"], ["created_at", "updated_at"])), "entry_uid"),
    _EVALUATIONS: (_INSERT_EVALUATIONS, "entry_id"),
}
_INSERTS_RETURNING = {table: statement.returning(table.c[key], table.c.id)
                      for table, (statement, key) in _INSERTS.items()}
_INSERT_VIOLATIONS = insert(_VIOLATIONS).values(_as_is(["evidence", "adjustment", "contributing", "references"]))
_INSERT_ACTIONS = insert(_ACTIONS).values(_as_is(["before", "after"], ["at"]))


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
    _settle([row for row, _entry in changed], [flags.get(row.id, (False, False, None)) for row, _entry in changed],
            result)


def _settle(rows: Sequence[Any], flags: Sequence[tuple[bool, bool, str | None]], result: IngestResult) -> None:
    """Set each row's state and worst severity from its flags (position by position), and count them."""
    for row, (flagged, held, worst) in zip(rows, flags, strict=True):
        row.state = EntryState.HELD if held else EntryState.IN_REVIEW if flagged else EntryState.READY
        row.worst_severity = worst
        if row.state is EntryState.READY:
            result.ready += 1
        elif row.state is EntryState.HELD:
            result.held += 1
        else:
            result.in_review += 1
    result.evaluated += len(rows)


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
    rows = [row for row, _entry in changed]
    judgements, flags = _judge(session, [entry for _row, entry in changed], ctx, backend, breaker, result)
    _record(session, rows, judgements, batch.id if batch is not None else None, _Writer(session, now))
    return {row.id: flag for row, flag in zip(rows, flags, strict=True)}


@dataclass(slots=True)
class _Judgement:
    """What one rule set version found in a batch. Positions index the batch's changed entries."""

    version: RuleSetVersion
    enforcing: bool
    held: bool
    subset: list[int]  # positions of the entries the version applies to
    flagged: set[int]  # indexes into ``subset``
    found: dict[int, list[Violation]]  # index into ``subset`` -> the entry's violations


def _judge(session: Session, entries: Sequence[Entry], ctx: EvaluationContext, backend: str | None,
           breaker: CircuitBreaker, result: IngestResult,
           ) -> tuple[list[_Judgement], list[tuple[bool, bool, str | None]]]:
    """Evaluate the entries with every applicable version, writing nothing; per entry, by position:
    (flagged, held, worst severity)."""
    flags: list[tuple[bool, bool, str | None]] = [(False, False, None)] * len(entries)
    judgements: list[_Judgement] = []
    if not entries:
        return judgements, flags
    for version in active_versions(session):
        ruleset = load_version(version)
        subset = [i for i, entry in enumerate(entries) if ruleset.applies_to(entry)]
        if not subset:
            continue
        violations = evaluate([entries[i] for i in subset], ruleset, context=ctx, backend=backend)
        enforcing = version.status == RuleSetStatus.ACTIVE
        found: dict[int, list[Violation]] = {}
        for v in violations:
            found.setdefault(v.entry_index, []).append(v)
        flagged = {i for i, vs in found.items() if enforcing and any(v.rule_status == "active" for v in vs)}
        held = enforcing and breaker.trips(len(subset), len(flagged))
        if held:
            result.held_rulesets.append({"ruleset_id": version.ruleset_id, "revision": version.revision,
                                         "checked": len(subset), "flagged": len(flagged)})
        for i, vs in found.items():  # an entry without violations keeps its flags
            position = subset[i]
            flagged_before, held_before, worst = flags[position]
            if enforcing:
                for v in vs:
                    if v.rule_status == "active" and (
                            worst is None or SEVERITY_ORDER[v.severity] > SEVERITY_ORDER[worst]):
                        worst = v.severity
            is_flagged = i in flagged
            flags[position] = (flagged_before or is_flagged, held_before or (held and is_flagged), worst)
        judgements.append(_Judgement(version, enforcing, held, subset, flagged, found))
    return judgements, flags


def _record(session: Session, rows: Sequence[Any], judgements: Sequence[_Judgement], batch_id: int | None,
            write: _Writer) -> None:
    """Write the decision log: one evaluation per entry and version, one row per violation."""
    for judgement in judgements:
        version_id, enforcing, held = judgement.version.id, judgement.enforcing, judgement.held
        subset, flagged, found = judgement.subset, judgement.flagged, judgement.found
        for start in range(0, len(subset), WRITE_CHUNK):
            indexes = range(start, min(start + WRITE_CHUNK, len(subset)))
            evaluations = []
            for i in indexes:
                row = rows[subset[i]]
                is_flagged = i in flagged
                evaluations.append({"entry_id": row.id, "entry_version": row.version,
                                    "source_version": row.source_version, "ruleset_version_id": version_id,
                                    "now": write.now, "batch_id": batch_id, "flagged": is_flagged,
                                    "held": held and is_flagged, "current": True})
            if not any(i in found for i in indexes):
                session.execute(_INSERT_EVALUATIONS, evaluations)
                continue
            evaluation_ids = {row["entry_id"]: evaluation_id for row, evaluation_id in
                              zip(evaluations, write.insert(_EVALUATIONS, evaluations), strict=True)}
            violations = []
            for i in indexes:
                entry_id = rows[subset[i]].id
                for v in found.get(i, ()):
                    violations.append({
                        "evaluation_id": evaluation_ids[entry_id], "entry_id": entry_id, "ruleset_id": v.ruleset_id,
                        "ruleset_revision": v.ruleset_revision, "rule_id": v.rule_id, "rule_type": v.rule_type,
                        "severity": v.severity, "rule_status": v.rule_status if enforcing else "shadow",
                        "title": v.title, "message": v.message,
                        "evidence_json": write.evidence(v),
                        "adjustment_json": write(v.adjustment.as_dict()) if v.adjustment else write.null,
                        "contributing_json": write.shared(v.contributing),
                        "references_json": write.shared(v.references), "current": True})
            session.execute(_INSERT_VIOLATIONS, violations)
