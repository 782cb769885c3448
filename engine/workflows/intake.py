"""Ingest: entries in, decisions recorded, flagged entries queued for review.

``ingest`` upserts a batch by (source system, tenant, source id[, line]) and evaluates what changed
against the active rule set versions that apply. It never commits: the caller's transaction holds the
whole batch, so all of it lands or none of it does.

Aggregate rules (a daily cap, duplicates) judge an entry together with the stored entries of its timekeeper
and day, so connectors may deliver entries one at a time or page by page: a file ingested in one batch or in
many ends with the same findings on every entry. A stored entry whose findings change because an entry
arrives on its day, changes or leaves it is judged again, and its trail gets a ``rejudged`` action naming the
rules and the entries that changed them, with its findings and state before and after.

- **Counted** (``COUNTED``): ready, in-review and held entries, and invoiced entries and conflicts with the
  record that was billed (the client counts those hours). Rejected and withdrawn entries are not billed and
  do not count.
- **Judged again** (``REJUDGED``): ready, in-review and held entries only. Invoiced entries and conflicts
  are locked; rejected and withdrawn ones are out of billing.
- **Where it goes:** to review with an active finding, else to ready, except:
  - A ready entry a reviewer approved stays ready only if every active finding is one it already had.
    The approval covers the findings the reviewer saw: ``review.approve`` records them as overridden, and
    they stay the entry's current findings until it is judged again. A new group or a changed total (the
    day now 12.5 h, not 11 h) sends the entry back to review. A per-entry finding counts as the same when
    its rule is the same, because its evidence depends only on the unchanged entry and the judging date.
  - A held entry stays held while a version that held it still flags it.
  - An entry in review with an open portal rejection stays in review.

The aggregate rules see a day's entries in the order they were first stored: stored entries by id, then
new ones in batch order. So the batching cannot change a group's order, or the hours its evidence quotes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Row,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, object_session
from sqlalchemy.types import TypeDecorator

from engine.entry_io import entry_record
from engine.model import Entry, EntryKind, EntryStatus
from engine.rules.conditions import Evidence
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.ruleset import RuleSet
from engine.rules.types import REGISTRY
from engine.rules.types.staffing import BudgetRule, Carried, budget_matters, charged
from engine.store.models import (
    FACT_FIELDS,
    EntryFacts,
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    PortalRejection,
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
DAY_TERMS = 250  # (date AND keys) terms ORed in one SELECT: SQLite refuses an expression over 1,000 deep
DAY_LOCKS = 1024  # PostgreSQL advisory locks the timekeeper-days hash into (see lock_days)
_LOCK_SPACE = 0x6F636764  # the first key of ocgate's two-key advisory locks ("ocgd")
WRITE_CHUNK = 1000  # rows per bulk INSERT or UPDATE
COUNTED = (EntryState.READY, EntryState.IN_REVIEW, EntryState.HELD, EntryState.INVOICED, EntryState.CONFLICT)
REJUDGED = (EntryState.READY, EntryState.IN_REVIEW, EntryState.HELD)
AGGREGATE_TYPES = sorted(name for name, rule_type in REGISTRY.items() if rule_type.aggregate)

Day = tuple[str, dt.date]  # a group the aggregate rules judge together: a timekeeper (keyed as the rules key
# them) and a work date; or, with the prefixes below, a matter and a work date, or a matter's budget totals
Change = tuple[Day, str, str]  # a day, an entry uid, and what happened to the entry there (for the audit)
MATTER_DAY = "\x1dmatter\x1f"  # key prefix: a matter's time on one day (attendance limits)
BUDGET = "\x1dbudget\x1f"  # key prefix: a matter's budget totals, all dates (the date is the entry's: see _whole)


@dataclass(frozen=True)
class CircuitBreaker:
    """Hold a rule set version's flags when it flags more than ``share`` of a batch of at least ``minimum``."""

    share: float = 0.5
    minimum: int = 100

    def trips(self, checked: int, flagged: int) -> bool:
        return checked >= self.minimum and flagged > self.share * checked


NEVER_TRIPS = CircuitBreaker(share=1.0, minimum=1 << 62)  # judging stored entries again: no batch to hold


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
    rejudged: int = 0  # stored entries judged again because the batch changed their day

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def source_version(entry: Entry, record: dict[str, Any]) -> str:
    """The source's own version (Clio's etag), else a hash of the canonical record."""
    if entry.source_version:
        return entry.source_version
    text = json.dumps({k: v for k, v in record.items() if k != "ingested_at"}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _timekeeper_key(entry: Entry) -> str | None:
    """The timekeeper as the aggregate rules group entries (``timekeeper_days``) and the store keys them."""
    return entry.timekeeper_source_id or entry.timekeeper_ledes_id or entry.timekeeper_name


@dataclass(frozen=True, slots=True)
class _Kinds:
    """Which groups the rule set versions in force judge together besides timekeeper-days: a matter's day (an
    attendance limit) and a matter's budget totals (a budget rule; ``budget_matters`` None: every matter)."""

    matter_days: bool = False
    budget: bool = False
    budget_matters: frozenset[str] | None = None

    def budgeted(self, matter: str | None) -> bool:
        return self.budget and matter is not None and (self.budget_matters is None or matter in self.budget_matters)

    @property
    def several(self) -> bool:
        """Whether an entry may be in more than one group (then judging a group reads its entries' other groups)."""
        return self.matter_days or self.budget


TIMEKEEPER_DAYS = _Kinds()


def _kinds(versions: Sequence[tuple[RuleSetVersion, RuleSet]]) -> _Kinds:
    matter_days, budget, matters = False, False, set()
    every = False
    for _, ruleset in versions:
        for rule in ruleset.rules:
            if rule.status == "draft":
                continue
            if rule.type == "attendance_limit":
                matter_days = True
            elif rule.type == "budget":
                budget = True
                named = budget_matters(rule)
                if named is None:
                    every = True
                else:
                    matters.update(named)
    return _Kinds(matter_days, budget, None if every else frozenset(matters))


def _groups(kinds: _Kinds, entry_kind: str, key: str | None, matter: str | None, work_date: dt.date) -> list[Day]:
    """The groups an entry (or a stored row's columns) takes part in."""
    groups: list[Day] = []
    time = entry_kind == EntryKind.TIME.value
    if time and key is not None:
        groups.append((key, work_date))
    if time and kinds.matter_days and matter is not None:
        groups.append((MATTER_DAY + matter, work_date))
    if kinds.budgeted(matter):
        groups.append((BUDGET + matter, work_date))  # type: ignore[operator]
    return groups


def _entry_groups(kinds: _Kinds, entry: Entry) -> list[Day]:
    return _groups(kinds, entry.entry_kind.value, _timekeeper_key(entry), entry.law_firm_matter_id, entry.work_date)


def _whole(group: Day) -> Day:
    """A group as a whole: a budget is one group per matter, whatever the date that named it."""
    return (group[0], dt.date.min) if group[0].startswith(BUDGET) else group


def _bucket(day: Day) -> int:
    return zlib.crc32(f"{day[0]}\x1f{day[1].isoformat()}".encode()) % DAY_LOCKS


def lock_days(session: Session, days: Iterable[Day | None]) -> None:
    """Hold, until the transaction ends, the timekeeper-days that it is about to judge (PostgreSQL).

    Judging a day reads its stored entries and may write them all (their findings, state and version). Two
    transactions doing that for the same day at once would each write what it read before the other committed:
    a reviewer's approval undone by a neighbour's re-judging, or a deadlock. Every path that judges days (ingest,
    and each review action) takes the days' locks first, in one order, so such transactions run one after the
    other. Days hash into DAY_LOCKS buckets: a batch over years of days holds at most that many locks. SQLite
    needs none: it lets one transaction write at a time, and each takes its write lock before it reads."""
    if session.get_bind().dialect.name != "postgresql":
        return
    buckets = sorted({_bucket(_whole(day)) for day in days if day})
    if buckets:  # taken in the array's (sorted) order, one row of the function scan at a time: no deadlocks
        session.execute(text("SELECT count(pg_advisory_xact_lock(:space, b)) FROM unnest(CAST(:buckets AS integer[]))"
                             " AS b"), {"space": _LOCK_SPACE, "buckets": buckets})


_GROUP_COLUMNS = (EntryRow.entry_kind, EntryRow.timekeeper_key, EntryRow.law_firm_matter_id, EntryRow.work_date)


def _row_groups(kinds: _Kinds, row: Any) -> list[Day]:
    """A stored row's groups, from its columns: those a changed or withdrawn entry leaves."""
    return _groups(kinds, row.entry_kind, row.timekeeper_key, row.law_firm_matter_id, row.work_date)


def lock_groups(session: Session, kinds: _Kinds, groups: Iterable[Day]) -> None:
    """Hold ``groups`` (lock_days) and, when an entry can be in several groups, the other groups of the stored
    entries in them: judging a group may judge those entries again, and whoever writes an entry holds all its
    groups. Those are read before the locks are taken, so all are taken in one order (no deadlocks); an entry
    that joins meanwhile brings its groups in a second round."""
    if session.get_bind().dialect.name != "postgresql":
        return
    groups = list(groups)
    wanted = {_whole(g) for g in groups}
    if kinds.several:
        rows, _ = _ring_one(session, kinds, groups, (), _LOCK_COLUMNS)
        wanted.update(_whole(g) for row in rows.values() for g in _row_groups(kinds, row))
    lock_days(session, wanted)


def lock_entries(session: Session, entry_ids: Sequence[int]) -> None:
    """Hold the groups of these stored entries and of their neighbours (review actions, invoice building)."""
    ids = [entry_id for entry_id in entry_ids if 0 < entry_id < 2**31]
    if not ids or session.get_bind().dialect.name != "postgresql":
        return
    kinds = _kinds(_versions(session))
    groups: list[Day] = []
    for chunk in _chunks(ids, LOOKUP_CHUNK):
        for row in session.execute(select(*_GROUP_COLUMNS).where(EntryRow.id.in_(chunk))):
            groups += _row_groups(kinds, row)
    lock_groups(session, kinds, groups)


def _columns(entry: Entry, record: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "source_system": entry.source_system, "source_tenant": entry.source_tenant, "source_id": entry.source_id,
        "source_line_id": entry.source_line_id, "source_version": version, "entry_kind": entry.entry_kind.value,
        "ledes_client_id": entry.ledes_client_id, "client_source_id": entry.client_source_id,
        "law_firm_matter_id": entry.law_firm_matter_id, "client_matter_id": entry.client_matter_id,
        "timekeeper_key": _timekeeper_key(entry),
        "timekeeper_name": entry.timekeeper_name, "work_date": entry.work_date, "hours_billed": entry.hours_billed,
        "rate": entry.rate, "amount": entry.amount, "record": record,
        "data_quality_flags": entry.data_quality_flags or None, "matter_source_id": entry.matter_source_id,
        "utbms_task_code": entry.utbms_task_code, "charged_amount": charged(entry, True),
    }


def facts(entry: Entry, entry_id: int, state: str) -> dict[str, Any]:
    """The entry's row of ``entry_facts`` (what rules compare most, as the record has it)."""
    values: dict[str, Any] = {"entry_id": entry_id, "entry_uid": entry.entry_uid,
                              "withdrawn": state == EntryState.WITHDRAWN, "timekeeper_key": _timekeeper_key(entry)}
    for name in FACT_FIELDS:
        value = getattr(entry, name)
        values[name] = value.value if isinstance(value, Enum) else value
    return values


def write_facts(session: Session, rows: list[dict[str, Any]], *, new: bool) -> None:
    """Insert the facts of new entries, or update those of changed ones (by entry id)."""
    if rows:
        session.execute(insert(_FACTS) if new else update(EntryFacts), rows)


def _context_columns(ctx: EvaluationContext) -> dict[str, Any]:
    return {"as_of": ctx.as_of, "period_start": ctx.period_start, "period_end": ctx.period_end}


def stored_context(row: Any) -> EvaluationContext | None:
    """The evaluation context a stored entry was last judged with (None if it was stored before they were kept)."""
    if row.as_of is None and row.period_start is None and row.period_end is None:
        return None
    return EvaluationContext(as_of=row.as_of, period_start=row.period_start, period_end=row.period_end)


def replace_record(row: EntryRow, record: dict[str, Any]) -> None:
    """Put a new source version's canonical record on a stored row, with the columns that come from it (the
    queue, invoices and the neighbour lookup read those)."""
    entry = Entry.model_validate(record)
    for key, value in _columns(entry, record, source_version(entry, record)).items():
        setattr(row, key, value)
    write_facts(object_session(row), [facts(entry, row.id, row.state)], new=False)  # type: ignore[arg-type]


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
    """Upsert ``entries`` and evaluate what changed, with the stored entries of their days; judge those
    again whose findings the batch changes. Runs inside the caller's transaction.

    ``context`` (as-of date, billing period) judges every entry of the batch. Without one, an entry is judged as
    of today, in the billing period it was stored with if it is already stored (none for a new one); each entry
    keeps the context it was judged with, and is judged with it again when a neighbour or a reviewer changes it.
    """
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

    # What deciding needs of the stored rows (the records of those that changed are read further down), read
    # once the groups the batch touches are held: those entries arrive in, and those stored rows leave.
    uids = list(incoming)
    versions = _versions(session)
    kinds = _kinds(versions)
    if session.get_bind().dialect.name == "postgresql":
        days: set[Day] = {g for entry in incoming.values() for g in _entry_groups(kinds, entry)}
        for start in range(0, len(uids), LOOKUP_CHUNK):
            for row in session.execute(select(*_GROUP_COLUMNS).where(
                    EntryRow.entry_uid.in_(uids[start:start + LOOKUP_CHUNK]))):
                days.update(_row_groups(kinds, row))
        lock_groups(session, kinds, days)
    existing: dict[str, Row[Any]] = {}
    for start in range(0, len(uids), LOOKUP_CHUNK):
        existing.update((row.entry_uid, row) for row in session.execute(
            select(EntryRow.entry_uid, EntryRow.id, EntryRow.source_version, EntryRow.state, EntryRow.version,
                   EntryRow.period_start, EntryRow.period_end)
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
            pending = _Pending(entry, "ingested", None, 1, version, record, None, EntryState.READY, context=ctx)
            result.created += 1
        else:
            pending = _Pending(entry, "updated", row.id, row.version + 1, version, record or entry_record(entry),
                               {"source_version": row.source_version, "state": row.state, "record": None},
                               row.state, context=ctx if context is not None else EvaluationContext(
                                   as_of=ctx.as_of, period_start=row.period_start, period_end=row.period_end))
            result.updated += 1
        if entry.status in WITHDRAWN_STATUSES:  # counted as withdrawn, not also as new or changed
            pending.withdrawn = True
            pending.state = EntryState.WITHDRAWN
            pending.worst_severity = None
            result.withdrawn += 1
            if row is None:
                result.created -= 1
            else:
                result.updated -= 1
        touched.append(pending)
    existing.clear()
    updated = {p.id: p for p in touched if p.action == "updated"}
    ids = list(updated)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        for row in session.execute(select(EntryRow.id, EntryRow.record, *_GROUP_COLUMNS)
                                   .where(EntryRow.id.in_(ids[start:start + LOOKUP_CHUNK]))):
            updated[row.id].before["record"] = row.record  # type: ignore[index]
            updated[row.id].stored_groups = _row_groups(kinds, row)

    # Judge before writing anything, so that each entry row is written once, with its state.
    changed = [p for p in touched if p.action != "conflict" and not p.withdrawn]
    days = _days(session, [(p.id, p.entry) for p in changed], lambda: _changes(touched, kinds),
                 skip={p.id for p in touched if p.action != "conflict" and p.id is not None}, kinds=kinds,
                 versions=versions)
    judgements, flags, found = _judge(versions, days.entries, days.judged, ctx, backend, breaker, result,
                                      contexts=[p.context for p in changed], carried=days.carried)
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
                           version=1, now=write.now, **_context_columns(pending.context or ctx))
            # (pending_record left out: NULL)
            rows.append(columns)
            pending.record = None  # not needed any more
        for pending, entry_id in zip(chunk, write.insert(_ENTRIES, rows), strict=True):
            pending.id = entry_id
        write_facts(session, [facts(p.entry, p.id, p.state) for p in chunk], new=True)  # type: ignore[arg-type]
    updates = list(updated.values())
    for start in range(0, len(updates), WRITE_CHUNK):
        rows = []
        for pending in updates[start:start + WRITE_CHUNK]:
            columns = _columns(pending.entry, pending.record, pending.source_version)  # type: ignore[arg-type]
            # A new source version replaces whatever a reviewer adjusted: the adjusted-from record goes too.
            columns.update(id=pending.id, state=pending.state, worst_severity=pending.worst_severity,
                           version=pending.version, updated_at=now, source_record=None,
                           **_context_columns(pending.context or ctx))
            rows.append(columns)
        session.execute(update(EntryRow), rows)  # by primary key; synchronises rows loaded in the session
        write_facts(session, [facts(p.entry, p.id, p.state) for p in updates[start:start + WRITE_CHUNK]],  # type: ignore[arg-type]
                    new=False)
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
    _rejudge(session, versions, days, found, ctx, backend, batch.id, write, actor, now, result)
    for key in ("created", "updated", "unchanged", "withdrawn", "conflicts"):
        setattr(batch, key, getattr(result, key))
    batch.held_rulesets = result.held_rulesets
    session.flush()
    restore_plans()
    return result


def _changes(touched: Iterable[_Pending], kinds: _Kinds) -> Iterator[Change]:
    """The groups a batch changes and how: an entry joins its groups, and a changed or withdrawn one leaves its
    stored groups. A conflict keeps the record that was billed, so its groups do not change."""
    for p in touched:
        if p.action != "conflict":
            for day in p.stored_groups:
                yield day, p.entry.entry_uid, "withdrawn" if p.withdrawn else p.action
            if not p.withdrawn:
                for day in _entry_groups(kinds, p.entry):
                    yield day, p.entry.entry_uid, p.action


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
    stored_groups: list[Day] = field(default_factory=list)  # the stored row's (a changed or withdrawn entry leaves)
    context: EvaluationContext | None = None  # what it is judged with

    @property
    def data_quality_flags(self) -> list[str]:
        return self.entry.data_quality_flags


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
        key.append((ev.field, ev.operator, expected, actual, ev.basis))
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
_FACTS: Table = EntryFacts.__table__  # type: ignore[assignment]
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


def _settle(rows: Sequence[Any], flags: Sequence[tuple[bool, bool, str | None]], result: IngestResult) -> None:
    """Set each row's state and worst severity from its flags (position by position), and count them. An entry
    with data-quality flags (what its source could not give: a redacted quantity, an unknown timekeeper) is
    reviewed whatever the rules say, as an error: it is never billed on a silent default."""
    for row, (flagged, held, worst) in zip(rows, flags, strict=True):
        unmapped = bool(row.data_quality_flags)
        row.state = EntryState.HELD if held else EntryState.IN_REVIEW if flagged or unmapped else EntryState.READY
        row.worst_severity = "error" if unmapped else worst
        if row.state is EntryState.READY:
            result.ready += 1
        elif row.state is EntryState.HELD:
            result.held += 1
        else:
            result.in_review += 1
    result.evaluated += len(rows)


def reevaluate(session: Session, rows: Sequence[EntryRow], *, context: EvaluationContext | None = None,
               backend: str | None = "auto", actor: str = "system:rejudge") -> IngestResult:
    """Judge stored entries again (after a reviewer's edit, or a new rule set version); no circuit breaker.
    Like arriving entries, they are judged with the stored entries of their groups, and the stored entries
    whose findings they change are judged again too. Each is judged with ``context`` if given, else with the
    context it was judged with before (as of today if it has none), and keeps it. The caller holds the rows'
    groups (``lock_entries``)."""
    now = dt.datetime.now(dt.UTC)
    result = IngestResult(batch_id=0, received=len(rows))
    versions = _versions(session)
    kinds = _kinds(versions)
    entries = [Entry.model_validate(row.record) for row in rows]
    contexts = [context or stored_context(row) or EvaluationContext(as_of=now.date()) for row in rows]
    ctx = contexts[0] if contexts else context or EvaluationContext(as_of=now.date())
    changes: list[Change] = []
    for row, entry in zip(rows, entries, strict=True):
        groups = {*_row_groups(kinds, row), *_entry_groups(kinds, entry)}
        changes += [(day, row.entry_uid, "changed") for day in sorted(groups)]
    for row, entry, used in zip(rows, entries, contexts, strict=True):  # the columns that come from the record
        row.utbms_task_code, row.charged_amount = entry.utbms_task_code, charged(entry, True)
        row.as_of, row.period_start, row.period_end = used.as_of, used.period_start, used.period_end
    days = _days(session, [(row.id, entry) for row, entry in zip(rows, entries, strict=True)], lambda: changes,
                 skip={row.id for row in rows}, kinds=kinds, versions=versions)
    judgements, flags, found = _judge(versions, days.entries, days.judged, ctx, backend, NEVER_TRIPS, result,
                                      contexts=contexts, carried=days.carried)
    write = _Writer(session, now)
    supersede(session, [row.id for row in rows])
    _record(session, rows, judgements, None, write)
    _settle(rows, flags, result)
    _rejudge(session, versions, days, found, ctx, backend, None, write, actor, now, result)
    session.flush()
    return result


def rejudge_days(session: Session, rows: Sequence[EntryRow], *, actor: str,
                 context: EvaluationContext | None = None, backend: str | None = "auto") -> IngestResult:
    """Judge again, where their findings change, the stored entries of the groups of ``rows``: entries whose
    state changed but not their content (a reviewer rejected them, so their hours stop counting). Each neighbour
    is judged with its own context; ``context`` is for those that have none."""
    now = dt.datetime.now(dt.UTC)
    ctx = context or EvaluationContext(as_of=now.date())
    result = IngestResult(batch_id=0, received=len(rows))
    versions = _versions(session)
    kinds = _kinds(versions)
    changes: list[Change] = [(day, row.entry_uid, str(row.state)) for row in rows for day in _row_groups(kinds, row)]
    days = _days(session, [], lambda: changes, skip=(), kinds=kinds, versions=versions)
    _, _, found = _judge(versions, days.entries, [], ctx, backend, NEVER_TRIPS, result, carried=days.carried)
    _rejudge(session, versions, days, found, ctx, backend, None, _Writer(session, now), actor, now, result)
    session.flush()
    return result


def _versions(session: Session) -> list[tuple[RuleSetVersion, RuleSet]]:
    """The active and shadow versions with their rule sets."""
    return [(version, load_version(version)) for version in active_versions(session)]


# Judging --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Finding:
    """A current violation of an entry, as two judgements of it are compared and as its trail shows it.

    An aggregate finding is the same only with the same message, evidence and group (as a set), which change
    with the day's entries. A per-entry finding is the same when its rule is: its evidence depends only on
    the entry, which has not changed, and on the date of judging.
    """

    ruleset_id: str
    rule_id: str
    status: str  # as recorded: active, or shadow (a shadow rule, or any rule of a shadow version)
    severity: str
    group: str | None  # aggregate rules: the message, the evidence and the contributing entries, as JSON
    message: str = field(compare=False)

    @staticmethod
    def of(v: Violation, enforcing: bool) -> _Finding:
        group = _group_text(v.message, [ev.as_dict() for ev in v.evidence], v.contributing) if v.contributing else None
        return _Finding(v.ruleset_id, v.rule_id, v.rule_status if enforcing else "shadow", v.severity, group,
                        v.message)

    @staticmethod
    def stored(row: Row[Any]) -> _Finding:
        group = _group_text(row.message, row.evidence, row.contributing) if row.contributing else None
        return _Finding(row.ruleset_id, row.rule_id, row.rule_status, row.severity, group, row.message)

    def shown(self) -> dict[str, str]:
        """As ``review.approve`` lists the findings it overrides."""
        return {"rule_id": self.rule_id, "severity": self.severity, "message": self.message}


def _group_text(message: str, evidence: list[dict[str, Any]], contributing: list[str]) -> str:
    return json.dumps([message, evidence, sorted(contributing)], sort_keys=True)


def _active(findings: Iterable[_Finding]) -> set[_Finding]:
    return {f for f in findings if f.status == "active"}


@dataclass(slots=True, eq=False)
class _Neighbour:
    """A stored entry in a group being judged, in a state whose hours count. Judging it again reads and sets
    what it would of an EntryRow: id, version, source_version, state and worst_severity."""

    id: int
    entry: Entry
    state: EntryState
    version: int
    source_version: str
    worst_severity: str | None
    groups: list[Day]  # as wholes (_whole)
    aggregates: set[_Finding] | None  # its current aggregate findings; None if never judged again (billed, or
    # read only for the groups of another neighbour)
    context: EvaluationContext | None = None  # what it was judged with
    position: int = -1  # in the groups' entries (``_Days.entries``)


@dataclass(slots=True)
class _Days:
    """The groups a batch changes: their entries in the order the aggregate rules see them, the position of each
    entry being judged among them (in batch order), their stored neighbours, what changed in each group, and,
    per rule set version and budget rule, the budget totals of the stored entries before those given."""

    entries: list[Entry]
    judged: Sequence[int]
    neighbours: list[_Neighbour]
    changes: list[Change]  # in the neighbours' groups
    carried: dict[int, dict[str, Carried]] = field(default_factory=dict)
    kinds: _Kinds = TIMEKEEPER_DAYS


def _days(session: Session, arrivals: Sequence[tuple[int | None, Entry]],
          changes: Callable[[], Iterable[Change]], skip: Container[int], *, kinds: _Kinds = TIMEKEEPER_DAYS,
          versions: Sequence[tuple[RuleSetVersion, RuleSet]] = ()) -> _Days:
    """The entries of the groups ``changes()`` names: ``arrivals`` (the entries being judged, with their ids if
    stored) and the stored neighbours (but the ids in ``skip``: being judged or withdrawn). Stored entries
    come first, by id (the order they were first stored in), then new ones in batch order. ``changes`` is a
    function, so that a first load never holds them all: only those in the neighbours' groups are kept."""
    neighbours, since = _neighbours(session, kinds, {day for day, _, _ in changes()}, skip)
    if kinds.several:  # one that joined a group after lock_groups read it: its other groups are held now too
        lock_days(session, [day for n in neighbours if n.aggregates is not None for day in n.groups])
    carried = _carried(session, versions, since) if since else {}
    if not neighbours and all(entry_id is None for entry_id, _ in arrivals):  # a first load: nothing to order
        return _Days([entry for _, entry in arrivals], range(len(arrivals)), [], [], carried, kinds)
    visited = {day for n in neighbours for day in n.groups}
    kept = [change for change in changes() if _whole(change[0]) in visited]  # what a neighbour's trail may name
    members: list[tuple[tuple[int, int], _Neighbour | int]] = [((0, n.id), n) for n in neighbours]
    members += [((1, k) if entry_id is None else (0, entry_id), k) for k, (entry_id, _) in enumerate(arrivals)]
    members.sort(key=itemgetter(0))
    entries: list[Entry] = []
    judged = [0] * len(arrivals)
    for position, (_, member) in enumerate(members):
        if isinstance(member, _Neighbour):
            member.position = position
            entries.append(member.entry)
        else:
            judged[member] = position
            entries.append(arrivals[member][1])
    return _Days(entries, judged, neighbours, kept, carried, kinds)


_LOCK_COLUMNS = (EntryRow.id, EntryRow.state, *_GROUP_COLUMNS)
_ROW_COLUMNS = (EntryRow.id, EntryRow.state, EntryRow.version, EntryRow.source_version, EntryRow.worst_severity,
                EntryRow.as_of, EntryRow.period_start, EntryRow.period_end, *_GROUP_COLUMNS)


def _cutoffs(groups: Iterable[Day]) -> dict[str, dt.date]:
    """Per budgeted matter among ``groups``, the earliest date named: its totals change from there on."""
    since: dict[str, dt.date] = {}
    for key, day in groups:
        if key.startswith(BUDGET):
            matter = key[len(BUDGET):]
            if matter not in since or day < since[matter]:
                since[matter] = day
    return since


def _group_rows(session: Session, groups: Collection[Day], since: dict[str, dt.date], skip: Container[int],
                columns: Sequence[Any], until: dict[str, dt.date] | None = None) -> Iterator[list[Row[Any]]]:
    """The stored entries whose hours or fees count (COUNTED), but the ids in ``skip``, of the timekeeper-days and
    matter-days among ``groups`` (time entries) and of each budgeted matter from its date in ``since`` (to its
    date in ``until``, if there), in chunks of rows."""
    timekeeper_days = [g for g in groups if not g[0].startswith("\x1d")]
    matter_days = [(g[0][len(MATTER_DAY):], g[1]) for g in groups if g[0].startswith(MATTER_DAY)]
    for column, days in ((EntryRow.timekeeper_key, timekeeper_days), (EntryRow.law_firm_matter_id, matter_days)):
        for on_days in _on_days(days, column):
            yield [row for row in session.execute(select(*columns).where(on_days))
                   if row.entry_kind == EntryKind.TIME.value and row.state in COUNTED and row.id not in skip]
    terms = []
    for matter, first in sorted(since.items()):
        term = and_(EntryRow.law_firm_matter_id == matter, EntryRow.work_date >= first)
        if until is not None and matter in until:
            term = and_(term, EntryRow.work_date <= until[matter])
        terms.append(term)
    for chunk in _chunks(terms, DAY_TERMS):
        yield [row for row in session.execute(select(*columns).where(or_(*chunk)))
               if row.state in COUNTED and row.id not in skip]


def _ring_one(session: Session, kinds: _Kinds, groups: Collection[Day], skip: Container[int],
              columns: Sequence[Any]) -> tuple[dict[int, Row[Any]], dict[str, dt.date]]:
    """The stored entries of ``groups`` (those whose findings the change may change), and from which date each
    budgeted matter is read: the earliest change in it, or the earliest of its entries read for their day."""
    since = _cutoffs(groups)
    days = {_whole(g) for g in groups if not g[0].startswith(BUDGET)}
    rows: dict[int, Row[Any]] = {}
    for chunk in _group_rows(session, days, {}, skip, columns):
        rows.update((row.id, row) for row in chunk)
    for row in rows.values():
        matter = row.law_firm_matter_id
        if matter in since and row.work_date < since[matter]:
            since[matter] = row.work_date
    if since:
        for chunk in _group_rows(session, (), since, skip, columns):
            rows.update((row.id, row) for row in chunk)
    return rows, since


def _neighbours(session: Session, kinds: _Kinds, groups: Collection[Day],
                skip: Container[int]) -> tuple[list[_Neighbour], dict[str, dt.date]]:
    """The stored entries of ``groups`` whose hours count, but the ids in ``skip``, by id, with their records
    and, for those that may be judged again, their current aggregate findings; and the date from which each
    budgeted matter is read (what comes before is carried in as totals).

    When an entry can be in several groups, each of those entries' other groups is read too (``_ring_one`` reads
    the first ring), so that their findings are judged over whole groups; the entries read only for that are
    never judged again (nothing of theirs changed). A few queries per batch."""
    rows, since = _ring_one(session, kinds, groups, skip, _ROW_COLUMNS)
    outer: dict[int, Row[Any]] = {}
    if kinds.several and rows:
        wanted = {_whole(g) for g in groups}
        more: set[Day] = set()
        since_more: dict[str, dt.date] = {}
        until_more: dict[str, dt.date] = {}
        for row in rows.values():
            for group in _row_groups(kinds, row):
                if _whole(group) in wanted:
                    continue
                if group[0].startswith(BUDGET):
                    matter = group[0][len(BUDGET):]
                    since_more[matter] = min(since_more.get(matter, group[1]), group[1])
                    until_more[matter] = max(until_more.get(matter, group[1]), group[1])
                else:
                    more.add(group)
        for chunk in _group_rows(session, more, since_more, skip, _ROW_COLUMNS, until_more):
            outer.update((row.id, row) for row in chunk if row.id not in rows)
        since.update(since_more)
    if not rows:
        return [], since
    ids = sorted({*rows, *outer})
    records: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(ids, LOOKUP_CHUNK):
        for entry_id, record in session.execute(select(EntryRow.id, EntryRow.record).where(EntryRow.id.in_(chunk))):
            records[entry_id] = record
    neighbours = []
    for entry_id in ids:
        row = rows.get(entry_id) or outer[entry_id]
        judgeable = entry_id in rows and row.state in REJUDGED
        neighbours.append(_Neighbour(entry_id, Entry.model_validate(records.pop(entry_id)), EntryState(row.state),
                                     row.version, row.source_version, row.worst_severity,
                                     [_whole(g) for g in _row_groups(kinds, row)], set() if judgeable else None,
                                     stored_context(row)))
    judgeable = {n.id: n.aggregates for n in neighbours if n.aggregates is not None}
    for entry_id, findings in _findings(session, list(judgeable), aggregates_only=True).items():
        judgeable[entry_id].update(findings)  # type: ignore[union-attr]
    return neighbours, since


_CARRIED_KEYS = (EntryRow.entry_kind, EntryRow.ledes_client_id, EntryRow.client_source_id, EntryRow.law_firm_matter_id,
                 EntryRow.client_matter_id, EntryRow.matter_source_id, EntryRow.utbms_task_code, EntryRow.work_date)


def _carried(session: Session, versions: Sequence[tuple[RuleSetVersion, RuleSet]],
             since: dict[str, dt.date]) -> dict[int, dict[str, Carried]]:
    """Per version and budget rule, the totals of each budgeted matter's stored entries before its date in
    ``since``, from the columns alone: summed by PostgreSQL (exact NUMERIC) per day and code, and here in Python
    on SQLite (whose SUM of decimal text would be a float)."""
    rules = [(version, ruleset, rule) for version, ruleset in versions for rule in ruleset.rules
             if rule.type == "budget" and rule.status != "draft"]
    if not rules:
        return {}
    counted = [state.value for state in COUNTED]
    terms = [and_(EntryRow.law_firm_matter_id == matter, EntryRow.work_date < first)
             for matter, first in sorted(since.items())]
    rows: list[Any] = []
    grouped = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(terms, DAY_TERMS):
        where = and_(or_(*chunk), EntryRow.state.in_(counted), EntryRow.charged_amount.is_not(None))
        if grouped:
            query = (select(*_CARRIED_KEYS, func.sum(EntryRow.charged_amount).label("charged"))
                     .where(where).group_by(*_CARRIED_KEYS))
        else:
            query = select(*_CARRIED_KEYS, EntryRow.charged_amount.label("charged")).where(where)
        rows += session.execute(query).all()
    carried: dict[int, dict[str, Carried]] = {}
    frozen = dict(since)
    for version, ruleset, rule in rules:
        sums = BudgetRule().carried_sums(rule, ruleset, rows)
        carried.setdefault(version.id, {})[rule.id] = Carried(frozen, sums)
    return carried


def _findings(session: Session, ids: Sequence[int], *, aggregates_only: bool = False) -> dict[int, list[_Finding]]:
    """The current findings of the entries ``ids`` (of the aggregate rules only, if so asked)."""
    query = select(ViolationRow.entry_id, ViolationRow.ruleset_id, ViolationRow.rule_id, ViolationRow.rule_status,
                   ViolationRow.severity, ViolationRow.message, ViolationRow.evidence, ViolationRow.contributing
                   ).where(ViolationRow.current.is_(True))
    if aggregates_only:
        query = query.where(ViolationRow.rule_type.in_(AGGREGATE_TYPES))
    found: dict[int, list[_Finding]] = {}
    for chunk in _chunks(ids, LOOKUP_CHUNK):
        for row in session.execute(query.where(ViolationRow.entry_id.in_(chunk))):
            found.setdefault(row.entry_id, []).append(_Finding.stored(row))
    return found


def _on_days(days: Collection[Day], column: Any = EntryRow.timekeeper_key) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses for the entries on ``days``, at most LOOKUP_CHUNK keys and DAY_TERMS dates each, in the form
    ``(work_date = d AND timekeeper_key IN (...)) OR ...``: both databases search ix_entries_timekeeper_date
    with it, while SQLite scans the whole index for a row-value ``(timekeeper_key, work_date) IN (...)``. With
    ``column`` law_firm_matter_id, the same for matter-days (ix_entries_matter_date)."""
    by_date: dict[dt.date, list[str]] = {}
    for key, work_date in days:
        by_date.setdefault(work_date, []).append(key)
    terms: list[ColumnElement[bool]] = []
    size = 0
    for work_date, keys in sorted(by_date.items()):
        while keys:
            part, keys = keys[:LOOKUP_CHUNK - size], keys[LOOKUP_CHUNK - size:]
            terms.append(and_(EntryRow.work_date == work_date, column.in_(part)))
            size += len(part)
            if size == LOOKUP_CHUNK or len(terms) == DAY_TERMS:
                yield or_(*terms)
                terms, size = [], 0
    if terms:
        yield or_(*terms)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(slots=True)
class _Judgement:
    """What one rule set version found among the entries judged together. Positions index those entries."""

    version: RuleSetVersion
    enforcing: bool
    subset: list[int]  # positions of the entries the version applies to
    flagged: set[int]
    held: set[int]  # flagged, and held back for a rule author
    found: dict[int, list[Violation]]  # position -> the entry's violations


def _judge(versions: Sequence[tuple[RuleSetVersion, RuleSet]], entries: Sequence[Entry], judged: Sequence[int],
           ctx: EvaluationContext, backend: str | None, breaker: CircuitBreaker, result: IngestResult,
           held_by: Sequence[Collection[int]] | None = None,
           contexts: Sequence[EvaluationContext | None] | None = None,
           carried: dict[int, dict[str, Carried]] | None = None,
           ) -> tuple[list[_Judgement], list[tuple[bool, bool, str | None]], dict[int, set[_Finding]]]:
    """Evaluate the entries at positions ``judged`` with every applicable version, writing nothing; the others
    (stored neighbours) count in the aggregate rules only.

    Returns the judgements, whose positions index ``judged``; per judged entry, (flagged, held, worst
    severity); and the others' aggregate findings, by position in ``entries``. A judged entry is held when the
    circuit breaker trips on a version that flags it or, given ``held_by`` (per judged entry, the ids of the
    versions that held it before), when such a version still flags it. ``contexts`` gives, per judged entry, the
    evaluation context it is judged with (None: ``ctx``); ``carried``, per version, the budget totals the
    entries do not show (``_carried``).
    """
    flags: list[tuple[bool, bool, str | None]] = [(False, False, None)] * len(judged)
    judgements: list[_Judgement] = []
    others: dict[int, set[_Finding]] = {}
    everyone = len(judged) == len(entries)  # no neighbours (the arrivals may still be in another order)
    at = None if judged == range(len(entries)) else {position: k for k, position in enumerate(judged)}
    by_context: dict[EvaluationContext, list[int]] = {ctx: []}  # judged entries by context: usually one
    for k in range(len(judged)):
        by_context.setdefault((contexts[k] if contexts is not None else None) or ctx, []).append(k)
    if len(by_context) > 1 and not by_context[ctx]:
        del by_context[ctx]
    judged_at = set(judged) if len(by_context) > 1 else set()
    for version, ruleset in versions:
        subset = [k for k, position in enumerate(judged) if ruleset.applies_to(entries[position])]
        if not subset and (everyone or not any(map(ruleset.applies_to, entries))):
            continue
        totals = (carried or {}).get(version.id)
        if len(by_context) == 1:
            violations = evaluate(entries, ruleset, context=next(iter(by_context)), backend=backend,
                                  judge=None if everyone else judged, carried=totals)
        else:  # each judged entry with its own context; the neighbours' aggregate findings from the first
            violations = []
            for n, (context, ks) in enumerate(by_context.items()):
                mine = {judged[k] for k in ks}
                violations += [v for v in evaluate(entries, ruleset, context=context, backend=backend,
                                                   judge=sorted(mine), carried=totals)
                               if v.entry_index in mine or (n == 0 and v.entry_index not in judged_at)]
        enforcing = version.status == RuleSetStatus.ACTIVE
        found: dict[int, list[Violation]] = {}
        for v in violations:
            k = v.entry_index if at is None else at.get(v.entry_index)
            if k is None:
                others.setdefault(v.entry_index, set()).add(_Finding.of(v, enforcing))
            else:
                found.setdefault(k, []).append(v)
        flagged = {k for k, vs in found.items() if enforcing and any(v.rule_status == "active" for v in vs)}
        if held_by is not None:
            held = {k for k in flagged if version.id in held_by[k]}
        elif enforcing and breaker.trips(len(subset), len(flagged)):
            held = flagged
            result.held_rulesets.append({"ruleset_id": version.ruleset_id, "revision": version.revision,
                                         "checked": len(subset), "flagged": len(flagged)})
        else:
            held = set()
        for k, vs in found.items():  # an entry without violations keeps its flags
            flagged_before, held_before, worst = flags[k]
            if enforcing:
                for v in vs:
                    if v.rule_status == "active" and (
                            worst is None or SEVERITY_ORDER[v.severity] > SEVERITY_ORDER[worst]):
                        worst = v.severity
            flags[k] = (flagged_before or k in flagged, held_before or k in held, worst)
        judgements.append(_Judgement(version, enforcing, subset, flagged, held, found))
    return judgements, flags, others


def _rejudge(session: Session, versions: Sequence[tuple[RuleSetVersion, RuleSet]], days: _Days,
             found: dict[int, set[_Finding]], ctx: EvaluationContext, backend: str | None, batch_id: int | None,
             write: _Writer, actor: str, now: dt.datetime, result: IngestResult) -> None:
    """Judge again the neighbours whose aggregate findings with the batch (``found``, by position) differ from
    their current ones, and write it: decisions, state, version, and a ``rejudged`` action saying why."""
    changed = [n for n in days.neighbours if n.aggregates is not None and n.aggregates != found.get(n.position, set())]
    if not changed:
        return
    current = _findings(session, [n.id for n in changed])
    # With every entry of their groups and no others, in the same order (and the same budget totals carried in):
    # the same groups, fully judged; each with the context it was judged with before.
    wanted = {day for n in changed for day in n.groups}
    positions = sorted({position for position, entry in enumerate(days.entries)
                        if any(_whole(day) in wanted for day in _entry_groups(days.kinds, entry))}
                       | {n.position for n in changed})  # (a row's columns normally agree with its record)
    at = {position: k for k, position in enumerate(positions)}
    held_by = _held_by(session, [n.id for n in changed if n.state is EntryState.HELD])
    judgements, flags, _ = _judge(versions, [days.entries[position] for position in positions],
                                  [at[n.position] for n in changed], ctx, backend, NEVER_TRIPS, result,
                                  [held_by.get(n.id, ()) for n in changed], contexts=[n.context for n in changed],
                                  carried=days.carried)
    findings: list[list[_Finding]] = [[] for _ in changed]
    for judgement in judgements:
        for k, vs in judgement.found.items():
            findings[k].extend(_Finding.of(v, judgement.enforcing) for v in vs)
    refused = _refused(session, [n.id for n, (flagged, _, _) in zip(changed, flags, strict=True)
                                 if n.state is EntryState.IN_REVIEW and not flagged])
    causes: dict[Day, dict[str, str]] = {}
    for day, uid, what in days.changes:
        if _whole(day) in wanted:
            causes.setdefault(_whole(day), {})[uid] = what
    rows, actions = [], []
    for n, (flagged, held, worst), after in zip(changed, flags, findings, strict=True):
        had = _active(current.get(n.id, ()))
        before = {"state": str(n.state), "version": n.version, "worst_severity": n.worst_severity,
                  "findings": [f.shown() for f in _sorted(had)]}
        rules = sorted({f.rule_id for f in n.aggregates ^ found.get(n.position, set())})  # type: ignore[operator]
        cause = {uid: what for day in n.groups for uid, what in causes.get(day, {}).items()}
        happened = ", ".join(f"{uid} was {what}" for uid, what in cause.items())
        unmapped = bool(n.entry.data_quality_flags)
        n.state = _next_state(n.state, flagged, held, _active(after) <= had, n.id in refused or unmapped)
        n.version += 1
        worst = "error" if unmapped else worst
        n.worst_severity = worst
        rows.append({"id": n.id, "state": n.state, "worst_severity": worst, "version": n.version, "updated_at": now})
        actions.append({
            "entry_id": n.id, "action": "rejudged", "actor": actor, "now": write.now,
            "reason": f"{', '.join(rules)} changed when {happened}",
            "before_json": write(before),
            "after_json": write({"state": str(n.state), "version": n.version, "worst_severity": worst,
                                 "findings": [f.shown() for f in _sorted(_active(after))], "rules": rules,
                                 "cause": [{"entry_uid": uid, "action": what} for uid, what in cause.items()]})})
    supersede(session, [n.id for n in changed])
    _record(session, changed, judgements, batch_id, write)
    for chunk in _chunks(rows, WRITE_CHUNK):
        session.execute(update(EntryRow), chunk)  # by primary key; synchronises rows loaded in the session
    for chunk in _chunks(actions, WRITE_CHUNK):
        session.execute(_INSERT_ACTIONS, chunk)
    result.rejudged += len(changed)


def _next_state(state: EntryState, flagged: bool, held: bool, seen: bool, refused: bool) -> EntryState:
    """Where a neighbour judged again goes from ``state`` (the rules are in the module's docstring). ``seen``:
    each of its active findings is one it had (a ready entry's approval covers those)."""
    if held:
        return EntryState.HELD
    if flagged:
        return EntryState.READY if state is EntryState.READY and seen else EntryState.IN_REVIEW
    return EntryState.IN_REVIEW if refused else EntryState.READY


def _sorted(findings: Iterable[_Finding]) -> list[_Finding]:
    return sorted(findings, key=lambda f: (f.ruleset_id, f.rule_id, f.message))


def _held_by(session: Session, ids: Sequence[int]) -> dict[int, set[int]]:
    """Per held entry, the versions that hold it (its current evaluations marked held)."""
    held: dict[int, set[int]] = {}
    for chunk in _chunks(ids, LOOKUP_CHUNK):
        for entry_id, version_id in session.execute(
                select(Evaluation.entry_id, Evaluation.ruleset_version_id)
                .where(Evaluation.entry_id.in_(chunk), Evaluation.current.is_(True), Evaluation.held.is_(True))):
            held.setdefault(entry_id, set()).add(version_id)
    return held


def _refused(session: Session, ids: Sequence[int]) -> set[int]:
    """Those of ``ids`` with a portal rejection no reviewer has resolved yet."""
    refused: set[int] = set()
    for chunk in _chunks(ids, LOOKUP_CHUNK):
        refused.update(session.scalars(select(PortalRejection.entry_id).where(
            PortalRejection.entry_id.in_(chunk), PortalRejection.resolved_at.is_(None))))
    return refused


def _report_columns(row: Any) -> dict[str, Any]:
    """The entry's columns a violation keeps for the findings report (``ViolationRow.entry_*``), from the entry
    being judged (arrivals and neighbours carry it) or else from its stored row (re-judged by a reviewer). They
    equal the entry row's: the work date, client, matter and timekeeper columns are written from the same entry."""
    entry: Entry | None = getattr(row, "entry", None)
    if entry is not None:
        timekeeper = entry.timekeeper_name if entry.timekeeper_name is not None else _timekeeper_key(entry)
        return {"entry_work_date": entry.work_date, "entry_ledes_client_id": entry.ledes_client_id,
                "entry_client_source_id": entry.client_source_id, "entry_matter_id": entry.law_firm_matter_id,
                "entry_timekeeper": timekeeper, "entry_currency": entry.currency}
    timekeeper = row.timekeeper_name if row.timekeeper_name is not None else row.timekeeper_key
    return {"entry_work_date": row.work_date, "entry_ledes_client_id": row.ledes_client_id,
            "entry_client_source_id": row.client_source_id, "entry_matter_id": row.law_firm_matter_id,
            "entry_timekeeper": timekeeper, "entry_currency": (row.record or {}).get("currency")}


def _record(session: Session, rows: Sequence[Any], judgements: Sequence[_Judgement], batch_id: int | None,
            write: _Writer) -> None:
    """Write the decision log: one evaluation per entry and version, one row per violation. ``rows`` are the
    entries judged, at the judgements' positions."""
    for judgement in judgements:
        version_id, enforcing = judgement.version.id, judgement.enforcing
        flagged, held, found = judgement.flagged, judgement.held, judgement.found
        for chunk in _chunks(judgement.subset, WRITE_CHUNK):
            evaluations = []
            for k in chunk:
                row = rows[k]
                evaluations.append({"entry_id": row.id, "entry_version": row.version,
                                    "source_version": row.source_version, "ruleset_version_id": version_id,
                                    "now": write.now, "batch_id": batch_id, "flagged": k in flagged,
                                    "held": k in held, "current": True})
            if not any(k in found for k in chunk):
                session.execute(_INSERT_EVALUATIONS, evaluations)
                continue
            evaluation_ids = {row["entry_id"]: evaluation_id for row, evaluation_id in
                              zip(evaluations, write.insert(_EVALUATIONS, evaluations), strict=True)}
            violations = []
            for k in chunk:
                entry_id = rows[k].id
                of_entry = _report_columns(rows[k]) if k in found else {}
                for v in found.get(k, ()):
                    violations.append({
                        **of_entry,
                        "evaluation_id": evaluation_ids[entry_id], "entry_id": entry_id, "ruleset_id": v.ruleset_id,
                        "ruleset_revision": v.ruleset_revision, "rule_id": v.rule_id, "rule_type": v.rule_type,
                        "severity": v.severity, "rule_status": v.rule_status if enforcing else "shadow",
                        "title": v.title, "message": v.message,
                        "evidence_json": write.evidence(v),
                        "adjustment_json": write(v.adjustment.as_dict()) if v.adjustment else write.null,
                        "adjustment_amount": v.adjustment.amount if v.adjustment else None,
                        "contributing_json": write.shared(v.contributing),
                        "references_json": write.shared(v.references), "current": True})
            session.execute(_INSERT_VIOLATIONS, violations)
