"""The review workflow: the queue of flagged entries, an entry with its findings and history, and a
reviewer's approve, reject or adjust, each audited, each guarded by the entry's version so that of two
reviewers acting at once exactly one wins.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, exists, func, or_, select, text, union_all, update
from sqlalchemy.orm import Session

from engine.entry_io import entry_record
from engine.errors import OcgateError
from engine.model import Entry, EntryKind, FeeBasis
from engine.rules.features import EvaluationContext
from engine.store.models import (
    FLAGGED_SQL,
    REVIEW_STATES,
    UNFLAGGED_SQL,
    WAITING_FLAGGED_SQL,
    WAITING_SQL,
    WAITING_UNFLAGGED_SQL,
    EntryRow,
    EntryState,
    PortalRejection,
    ReviewAction,
    ViolationRow,
)
from engine.workflows.billing.rejections import open_portal_rejections, resolve_portal_rejections
from engine.workflows.intake import facts, lock_entries, reevaluate, rejudge_days, write_facts

ADJUSTABLE = ("rate", "hours_billed", "narrative", "utbms_task_code", "utbms_activity_code", "utbms_expense_code")
CENT = Decimal("0.01")


class ReviewError(OcgateError):
    """A review action that cannot be done."""

    code, status = "review_error", 400


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
    amount_before: Decimal | None = None  # adjust: the billed amount before and after the change
    amount_after: Decimal | None = None


def _claim(session: Session, entry_id: int, expected_version: int) -> EntryRow:
    """Bump the entry's version if it is still ``expected_version``; the loser of a race gets StaleVersion."""
    if not 0 < entry_id < 2**63:
        raise NotFound(f"entry {entry_id} does not exist")
    if not 0 <= expected_version < 2**62:
        raise StaleVersion(f"entry {entry_id} was never at version {expected_version}")
    _lock_days(session, [entry_id])  # before the claim: actions on one day run one after the other
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


def _lock_days(session: Session, entry_ids: Sequence[int]) -> None:
    """Hold the groups of these entries and of their neighbours (intake.lock_entries: timekeeper-days, and
    matter-days and budget totals where rules judge those): an action re-judges its entry's groups, and a
    neighbour's action may re-judge this entry."""
    lock_entries(session, entry_ids)


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
    if row.data_quality_flags and not (reason and reason.strip()):
        raise ReasonRequired(f"approving an entry whose source data could not be mapped "
                             f"({', '.join(row.data_quality_flags)}) needs a reason")
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


def reject(session: Session, entry_id: int, *, expected_version: int, actor: str, reason: str | None,
           context: EvaluationContext | None = None) -> Outcome:
    """Exclude the entry from billing. Its neighbours whose findings change are judged again, each with the context
    it was judged with (``context`` only for those stored before contexts were kept)."""
    row = _claim(session, entry_id, expected_version)
    if row.state not in REVIEW_STATES:
        raise NotReviewable(f"entry {entry_id} is {row.state}: only entries waiting for review can be rejected")
    before = {**_snapshot(row), "version": expected_version}
    resolve_portal_rejections(session, entry_id)
    row.state = EntryState.REJECTED
    row.updated_at = dt.datetime.now(dt.UTC)
    _audit(session, row, "reject", actor, reason, before, _snapshot(row))
    session.flush()
    rejudge_days(session, [row], actor=actor, context=context)  # its hours stop counting toward its day
    return Outcome(row.id, "reject", str(row.state), row.version)


def adjust(session: Session, entry_id: int, *, expected_version: int, actor: str, reason: str | None,
           changes: dict[str, Any], context: EvaluationContext | None = None) -> Outcome:
    """Edit rate, hours, narrative or codes; the entry is judged again at once and the write-down recorded. It is
    judged with ``context`` if given, else with the context (as-of date, billing period) it was judged with before:
    an edit does not make an entry late."""
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
    before = {**_snapshot(row), "version": expected_version,
              "values": {k: _plain(getattr(old, k)) for k in changes}, "amount": _plain(before_amount)}
    if row.source_record is None:
        row.source_record = row.record  # what the source sent: the invoice shows the change as an adjustment
    row.record = entry_record(new)
    row.rate, row.hours_billed, row.amount = new.rate, new.hours_billed, new.amount
    write_facts(session, [facts(new, row.id, row.state)], new=False)
    row.updated_at = dt.datetime.now(dt.UTC)
    reevaluate(session, [row], context=context, actor=actor)
    resolve_portal_rejections(session, entry_id)
    after = {**_snapshot(row), "values": {k: _plain(getattr(new, k)) for k in changes},
             "amount": _plain(after_amount), "write_down": _plain(write_down)}
    _audit(session, row, "adjust", actor, reason, before, after)
    session.flush()
    return Outcome(row.id, "adjust", str(row.state), row.version, write_down, before_amount, after_amount)


FINDING_FIELDS = ("rule_id", "ruleset_id", "ruleset_revision", "severity", "rule_status", "title", "message",
                  "evidence", "adjustment", "contributing", "references")


@dataclass
class AdjustPreview:
    """What an adjustment would do, worked out by the adjustment itself and then undone: the entry's findings
    afterwards (with evidence and each rule's proposed write-down), which active rules it would clear, keep or
    newly hit, and the write-down the change itself makes."""

    entry_id: int
    version: int  # the entry's version the preview was worked out from (its ETag)
    state: str  # the state the entry would be in
    worst_severity: str | None
    amount_before: Decimal | None
    amount_after: Decimal | None
    write_down: Decimal | None  # amount after less amount before, as /adjust records it
    findings: list[dict[str, Any]]  # every current finding afterwards, shadow ones too (see rule_status)
    cleared: list[str]  # active rules that flag the entry now and would not afterwards
    remaining: list[str]  # active rules that flag it now and would still
    new: list[str]  # active rules that would flag it and do not now
    proposed_write_down: Decimal | None  # the sum of the active findings' proposed adjustments afterwards


def preview_adjust(session: Session, entry_id: int, *, changes: dict[str, Any], actor: str,
                   context: EvaluationContext | None = None) -> AdjustPreview:
    """What :func:`adjust` would make of the entry, without keeping any of it: the adjustment runs as it would
    (the same checks, the same judging of the entry and of its neighbours) inside a savepoint that is then rolled
    back, so a preview and the save that follows it cannot disagree. Nothing is written (no version bump, no
    audit row, no findings), though a database sequence may skip the ids the undone rows took. It refuses what
    adjust refuses: an unknown field or invalid value (InvalidChange), an entry not waiting for review
    (NotReviewable), an unknown entry (NotFound). No version is expected: it works from the current one."""
    if not 0 < entry_id < 2**63:
        raise NotFound(f"entry {entry_id} does not exist")
    _lock_days(session, [entry_id])  # as adjust does (the locks are re-entrant): no action slips in meanwhile
    for attempt in range(3):
        version = session.scalar(select(EntryRow.version).where(EntryRow.id == entry_id))
        if version is None:
            raise NotFound(f"entry {entry_id} does not exist")
        before = {v.rule_id for v in _open_violations(session, entry_id)}
        savepoint = session.begin_nested()
        try:
            try:
                outcome = adjust(session, entry_id, expected_version=version, actor=actor, reason=None,
                                 changes=changes, context=context)
            except StaleVersion:  # another action landed between the read and the claim: read it again
                if attempt == 2:
                    raise
                continue
            row = session.get(EntryRow, entry_id)
            assert row is not None
            found = list(session.scalars(select(ViolationRow).where(
                ViolationRow.entry_id == entry_id, ViolationRow.current.is_(True)).order_by(ViolationRow.id)
                .execution_options(populate_existing=True)))
            findings = [{name: getattr(v, name) for name in FINDING_FIELDS} for v in found]
            active = [v for v in found if v.rule_status == "active"]
            after = {v.rule_id for v in active}
            amounts = [v.adjustment_amount for v in active if v.adjustment_amount is not None]
            return AdjustPreview(
                entry_id=entry_id, version=version, state=str(row.state), worst_severity=row.worst_severity,
                amount_before=outcome.amount_before, amount_after=outcome.amount_after,
                write_down=outcome.write_down, findings=findings, cleared=sorted(before - after),
                remaining=sorted(before & after), new=sorted(after - before),
                proposed_write_down=sum(amounts, Decimal(0)) if amounts else None)
        finally:
            savepoint.rollback()
    raise AssertionError("unreachable")  # pragma: no cover


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value"):
        return value.value
    return value


def history(session: Session, entry_id: int) -> list[ReviewAction]:
    if not 0 < entry_id < 2**63 or session.get(EntryRow, entry_id) is None:
        raise NotFound(f"entry {entry_id} does not exist")
    return list(session.scalars(select(ReviewAction).where(ReviewAction.entry_id == entry_id)
                                .order_by(ReviewAction.id)))


def act(session: Session, action: str, entry_id: int, *, expected_version: int, actor: str, reason: str | None,
        changes: dict[str, Any] | None = None, context: EvaluationContext | None = None) -> Outcome:
    """``approve``, ``reject`` or ``adjust`` by name (the bulk action and the API's routes)."""
    if action == "approve":
        return approve(session, entry_id, expected_version=expected_version, actor=actor, reason=reason)
    if action == "reject":
        return reject(session, entry_id, expected_version=expected_version, actor=actor, reason=reason,
                      context=context)
    if action == "adjust":
        return adjust(session, entry_id, expected_version=expected_version, actor=actor, reason=reason,
                      changes=changes or {}, context=context)
    raise InvalidChange(f"unknown review action {action!r} (approve, reject or adjust)")


@dataclass
class BulkResult:
    entry_id: int
    outcome: Outcome | None = None
    error: ReviewError | None = None


def bulk(session: Session, action: str, items: list[tuple[int, int]], *, actor: str, reason: str | None,
         changes: dict[str, Any] | None = None, context: EvaluationContext | None = None) -> list[BulkResult]:
    """One action on many (entry id, expected version) pairs. Each item is its own all-or-nothing step: one
    stale or refused item does not stop the others."""
    results = []
    _lock_days(session, [entry_id for entry_id, _ in items])  # all at once, in order: no two bulks deadlock
    for entry_id, version in items:
        try:
            with session.begin_nested():
                outcome = act(session, action, entry_id, expected_version=version, actor=actor, reason=reason,
                              changes=changes, context=context)
            results.append(BulkResult(entry_id, outcome=outcome))
        except ReviewError as exc:
            results.append(BulkResult(entry_id, error=exc))
    return results


# The queue -----------------------------------------------------------------------------------------------

class InvalidCursor(ReviewError):
    code, status = "invalid_cursor", 400


QUEUE_COLUMNS = (EntryRow.id, EntryRow.entry_uid, EntryRow.source_system, EntryRow.source_id, EntryRow.state,
                 EntryRow.worst_severity, EntryRow.version, EntryRow.work_date, EntryRow.updated_at,
                 EntryRow.ledes_client_id, EntryRow.law_firm_matter_id, EntryRow.timekeeper_key,
                 EntryRow.timekeeper_name, EntryRow.hours_billed, EntryRow.rate, EntryRow.amount,
                 EntryRow.data_quality_flags)
PORTAL_SEPARATOR = "\x1e"  # between a list item's portal reasons (a reason may hold commas)
RULE_SEPARATOR = "\x1f"  # between a rule id and its severity in the list of an item's rules
EXCERPT_CHARS = 120  # the narrative's first characters, as the list shows them
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}
SORTS = {"work_date": (EntryRow.work_date, False), "-work_date": (EntryRow.work_date, True),
         "updated_at": (EntryRow.updated_at, False), "-updated_at": (EntryRow.updated_at, True)}


@dataclass(frozen=True)
class QueueFilter:
    states: tuple[str, ...] = ()  # default: every state waiting for review
    client: str | None = None  # LEDES client id or the source's client id
    matter: str | None = None  # law firm matter id or the client's matter id
    timekeeper: str | None = None
    rule_id: str | None = None
    severity: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    source: str | None = None
    data_quality: bool | None = None  # only entries with (True) or without (False) data-quality flags


@dataclass
class QueuePage:
    items: list[dict[str, Any]]  # the list columns, plus rule_ids and portal_reasons (and what include asks)
    next_cursor: str | None


def _encode_cursor(sort: str, value: Any, last_id: int) -> str:
    raw = json.dumps({"s": sort, "v": value.isoformat() if hasattr(value, "isoformat") else value, "i": last_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != sort:
            raise ValueError("sort changed")
        value = data["v"]
        if sort.endswith("work_date"):
            value = dt.date.fromisoformat(value)
        else:
            value = dt.datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError("timestamp without a timezone")
        last_id = int(data["i"])
        if not 0 < last_id < 2**63:
            raise ValueError("id out of range")
        return value, last_id
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise InvalidCursor("cursor is not one this list returned (or the sort changed)") from None


def _either(first: Any, second: Any, value: str | None) -> list[list[ColumnElement[bool]]]:
    """The entries whose ``first`` or ``second`` column holds ``value``, as two disjoint conditions."""
    if not value:
        return []
    return [[first == value], [second == value, or_(first.is_(None), first != value)]]


QUEUE_EXTRAS = ("rules", "narrative")


def queue(session: Session, filters: QueueFilter = QueueFilter(), *, sort: str = "work_date",
          cursor: str | None = None, limit: int = 50, include: Sequence[str] = ()) -> QueuePage:
    """One page of the queue, in a stable order (keyset paging: a page never repeats or skips an entry).
    ``include`` asks for more of each item (QUEUE_EXTRAS): ``rules``, each rule with its severity on the entry;
    ``narrative``, the start of the narrative (read from the record, so only when asked)."""
    unknown = sorted(set(include) - set(QUEUE_EXTRAS))
    if unknown:
        raise ReviewError(f"include only {', '.join(QUEUE_EXTRAS)}; not {', '.join(unknown)}")
    if sort not in SORTS:
        raise InvalidCursor(f"sort by one of: {', '.join(SORTS)}")
    states = filters.states or tuple(REVIEW_STATES)
    # Only the listed columns: the full record (JSON) is for the entry's own page. The waiting states are
    # written literally so that the planner can use the partial indexes (a bound parameter cannot prove the
    # index's predicate). The rules of each entry come in the same query.
    waiting = set(states) == set(REVIEW_STATES)
    rule_ids = (select(func.aggregate_strings(ViolationRow.rule_id, ","))
                .where(ViolationRow.entry_id == EntryRow.id, ViolationRow.current.is_(True),
                       ViolationRow.rule_status == "active").scalar_subquery().label("rule_list"))
    severities = (select(func.aggregate_strings(ViolationRow.rule_id + RULE_SEPARATOR + ViolationRow.severity, ","))
                  .where(ViolationRow.entry_id == EntryRow.id, ViolationRow.current.is_(True),
                         ViolationRow.rule_status == "active").scalar_subquery().label("severity_list"))
    narrative = func.substr(EntryRow.record["narrative"].as_string(), 1, EXCERPT_CHARS + 1).label("narrative_head")
    portal = (select(func.aggregate_strings(PortalRejection.reason, PORTAL_SEPARATOR))
              .where(PortalRejection.entry_id == EntryRow.id, PortalRejection.resolved_at.is_(None))
              .scalar_subquery().label("portal_list"))
    where: list[ColumnElement[bool]] = []
    if filters.data_quality is not None and waiting:
        where.append(text(WAITING_FLAGGED_SQL if filters.data_quality else WAITING_UNFLAGGED_SQL))
    else:
        where.append(text(WAITING_SQL) if waiting else EntryRow.state.in_(states))
        if filters.data_quality is not None:
            where.append(text(FLAGGED_SQL if filters.data_quality else UNFLAGGED_SQL))
    if filters.timekeeper:
        where.append(EntryRow.timekeeper_key == filters.timekeeper)
    if filters.date_from:
        where.append(EntryRow.work_date >= filters.date_from)
    if filters.date_to:
        where.append(EntryRow.work_date <= filters.date_to)
    if filters.source:
        where.append(EntryRow.source_system == filters.source)
    if filters.rule_id or filters.severity:
        conditions = [ViolationRow.entry_id == EntryRow.id, ViolationRow.current.is_(True),
                      ViolationRow.rule_status == "active"]
        if filters.rule_id:
            conditions.append(ViolationRow.rule_id == filters.rule_id)
        if filters.severity:
            conditions.append(ViolationRow.severity == filters.severity)
        where.append(exists().where(and_(*conditions)))
    column, descending = SORTS[sort]
    if cursor:
        value, last_id = _decode_cursor(cursor, sort)
        if descending:
            where.append(or_(column < value, and_(column == value, EntryRow.id < last_id)))
        else:
            where.append(or_(column > value, and_(column == value, EntryRow.id > last_id)))
    order = (column.desc(), EntryRow.id.desc()) if descending else (column.asc(), EntryRow.id.asc())
    # A client (or matter) is matched by either of two ids. One OR over two columns would make the database
    # read every waiting entry and sort them; instead each id is one walk of its own index in page order, the
    # walks made disjoint, and the page is the first rows of their merge.
    either = [_either(EntryRow.ledes_client_id, EntryRow.client_source_id, filters.client),
              _either(EntryRow.law_firm_matter_id, EntryRow.client_matter_id, filters.matter)]
    branches = [[c for part in combo for c in part] for combo in itertools.product(*(alt for alt in either if alt))]
    extras = [column for name, column in (("rules", severities), ("narrative", narrative)) if name in include]
    query = select(*QUEUE_COLUMNS, rule_ids, portal, *extras)
    if len(branches) == 1:
        query = query.where(*where, *branches[0])
    else:
        walks = [select(EntryRow.id).where(*where, *branch).order_by(*order).limit(limit + 1).subquery()
                 for branch in branches]
        merged = union_all(*(select(walk.c.id) for walk in walks)).subquery()
        query = query.join(merged, merged.c.id == EntryRow.id)
    rows = list(session.execute(query.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        item = dict(r._mapping)
        item["rule_ids"] = sorted(set(item.pop("rule_list").split(","))) if r.rule_list else []
        item["portal_reasons"] = item.pop("portal_list").split(PORTAL_SEPARATOR) if r.portal_list else []
        item["data_quality_flags"] = item["data_quality_flags"] or []
        if "rules" in include:
            item["rules"] = _rules(item.pop("severity_list"))
        if "narrative" in include:
            item["narrative_excerpt"] = _excerpt(item.pop("narrative_head"))
        items.append(item)
    last = rows[-1] if rows else None
    next_cursor = _encode_cursor(sort, getattr(last, column.key), last.id) if more and last else None
    return QueuePage(items=items, next_cursor=next_cursor)


def _rules(listed: str | None) -> list[dict[str, str]]:
    """An item's active rules, each with its worst severity on the entry, by rule id."""
    worst: dict[str, str] = {}
    for part in (listed or "").split(","):
        rule_id, _, severity = part.partition(RULE_SEPARATOR)
        if rule_id and SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(worst.get(rule_id, ""), 0):
            worst[rule_id] = severity
    return [{"rule_id": rule_id, "severity": worst[rule_id]} for rule_id in sorted(worst)]


def _excerpt(head: str | None) -> str | None:
    """The narrative's start, cut at a word with an ellipsis when there is more."""
    if not head:
        return None
    text = " ".join(head.split())
    if len(head) <= EXCERPT_CHARS:
        return text
    cut = text[:EXCERPT_CHARS]
    if len(text) > EXCERPT_CHARS and text[EXCERPT_CHARS] != " " and " " in cut[EXCERPT_CHARS // 2:]:
        cut = cut.rsplit(" ", 1)[0]  # not in the middle of a word (unless one word is most of it)
    return cut.rstrip(" ,;.") + "\u2026"


@dataclass
class EntryView:
    """An entry as a reviewer sees it: the row, its current findings, open portal rejections and history."""

    row: EntryRow
    violations: list[ViolationRow]
    portal_rejections: list[Any]
    history: list[ReviewAction]


def entry(session: Session, entry_id: int) -> EntryView:
    row = session.get(EntryRow, entry_id) if 0 < entry_id < 2**63 else None
    if row is None:
        raise NotFound(f"entry {entry_id} does not exist")
    violations = list(session.scalars(select(ViolationRow).where(
        ViolationRow.entry_id == entry_id, ViolationRow.current.is_(True)).order_by(ViolationRow.id)))
    return EntryView(row=row, violations=violations, portal_rejections=open_portal_rejections(session, entry_id),
                     history=history(session, entry_id))


@dataclass
class QueueSummary:
    by_state: dict[str, int]
    by_rule: list[tuple[str, str, int]]  # (rule id, severity, entries), most first
    first: list[Any]  # the first entries in the states asked for, by work date


def summary(session: Session, *, state: str | None = None, limit: int = 20) -> QueueSummary:
    """What waits for review: entries by state, the rules that flag them, and the first few."""
    by_state = {str(s): n for s, n in session.execute(select(EntryRow.state, func.count()).group_by(EntryRow.state))}
    states = (EntryState(state),) if state else (EntryState.IN_REVIEW, EntryState.HELD, EntryState.CONFLICT)
    by_rule = [(rule_id, severity, n) for rule_id, severity, n in session.execute(
        select(ViolationRow.rule_id, ViolationRow.severity, func.count())
        .join(EntryRow, EntryRow.id == ViolationRow.entry_id)
        .where(ViolationRow.current.is_(True), ViolationRow.rule_status == "active", EntryRow.state.in_(states))
        .group_by(ViolationRow.rule_id, ViolationRow.severity).order_by(func.count().desc()))]
    first = list(session.execute(
        select(EntryRow.id, EntryRow.source_id, EntryRow.state, EntryRow.worst_severity, EntryRow.work_date,
               EntryRow.timekeeper_name).where(EntryRow.state.in_(states))
        .order_by(EntryRow.work_date, EntryRow.id).limit(limit)))
    return QueueSummary(by_state=by_state, by_rule=by_rule, first=first)
