"""Backtests: what a rule set version would flag over the stored entries, compared with another version (the
rule set's active one by default), rule by rule, with the write-downs it would add or remove and examples.

The answer is defined as evaluating both versions with the engine (``engine.rules.evaluate``) over the stored
entries in the window, all at once, in the order they were first stored, and comparing the (entry, rule) pairs
of active-status rules. Withdrawn entries are left out; an entry invoiced and changed since (a conflict) is
judged as it was billed. It is worked out doing less than that, and never holding the history in memory:

- **Only the rules that differ.** A rule is the same in both versions when its type, parameters (named lists
  resolved), severity, status, ``when`` scope and effective dates are, and the rule sets' own scope
  (``applies_to``, ``effective``), currency and classification aliases are too. The same rule flags the same
  entries on both sides, so it cannot change the answer and is not evaluated. A rule active on neither side
  counts on neither.
- **Through the database, alike entries judged once** (:func:`_grouped_pass`). Each changed per-entry rule gets
  one scan of ``entry_facts`` (the narrow copy of the fields rules compare, written with every entry), filtered
  by its condition turned into SQL (:mod:`engine.workflows.pushdown`: a superset of what the rule may flag, on
  either side) and by what the decision log holds. The rows are grouped as they stream by the values the rule
  reads (and its write-down reads), a work date by where it falls among the dates the rule names; each group is
  judged once with the engine's compiled check, explanation and proposal, and counts for all its entries. The
  few smallest uids of each group are kept for the examples.
- **The fallback** (:func:`_entry_pass`, when some entry has no ``entry_facts`` row or a rule reads a field the
  copy does not keep): entries streamed in chunks (a server-side cursor on PostgreSQL) with just the fields the
  changed rules read, from the entries' columns and, for the rest, pulled out of the stored record by the
  database (``json_extract`` on SQLite, ``json_to_record`` on PostgreSQL), as :class:`_Light` entries typed
  exactly as :class:`Entry` types them, filtered by the same SQL, each rule's answer remembered by the values it
  reads. Entries whose write-down reads a field not fetched are read in full and judged with ``evaluate``.
- **The compared version's stored findings.** Intake records every finding of every active and shadow version
  (the decision log). For an entry whose current evaluation is by the compared version, the findings of its
  changed per-entry rules that do not depend on the evaluation date or period are read from the log instead
  of being evaluated again. Entries it never judged (stored before it was active), and rules that read
  ``age_days`` or ``outside_billing_period``, are evaluated.
- **Aggregates by group.** ``daily_hours_cap`` and ``duplicate`` group a timekeeper's time by day: their
  entries are streamed ordered by (timekeeper, work date, id) from ``entry_facts`` through its index (from the
  entries when the copy is incomplete), and each chunk holds whole days. A changed ``budget`` is judged by the
  database (:func:`_budget_pass`): per budget, a window sum of the charged entries it counts by matter and period
  in (work date, id) order, and only the entries at or over a line come back. ``attendance_limit`` (and a budget
  when the copy is incomplete) groups within a matter: their entries are streamed ordered by (matter, work date,
  id) and read in full a chunk of whole matter-days at a time; a budget's running totals go from one chunk to
  the next as the totals intake carries in from stored history (``Carried``), kept for the one matter that can go
  on. An example of either is judged again with its matter-day and, for a budget, the totals carried into it. An
  aggregate type of neither kind would be evaluated over the whole window at once (none is registered).

Money and hours stay ``Decimal`` in every count and write-down: the stored decimal text (or PostgreSQL's
``numeric``) becomes a ``Decimal``, and the database adds them up only in ``numeric`` (a budget's totals on
PostgreSQL; on SQLite an aggregate registered on the connection adds them as ``Decimal``). SQLite compares
decimals as REAL only to choose which rows to read, with a margin that keeps every row at the boundary.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
import heapq
import json
import operator
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from engine.errors import Invalid
from engine.model import Entry
from engine.rules import evaluate as engine_evaluate
from engine.rules.compiler import compile_ruleset, scope_predicate
from engine.rules.conditions import Node, explain, features_of, leaves
from engine.rules.features import DATE, DERIVED_FUNCTIONS, ENTRY_FIELD_TYPES, EvaluationContext, Feature, field_feature
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types import type_of
from engine.rules.types.base import RuleType
from engine.rules.types.staffing import Budget, BudgetRule, Carried, budgets_of, charged
from engine.store.models import (
    FACT_FIELDS,
    EntryFacts,
    EntryRow,
    EntryState,
    Evaluation,
    ExactDecimal,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)
from engine.workflows.pushdown import ENTRY_COLUMNS, Translator
from engine.workflows.rulesets import get, load_version

CHUNK = 2000  # entries per chunk streamed and judged together
WORK_MEM = "64MB"  # PostgreSQL's memory per sort or hash for a backtest's statements (this transaction only)
LOOKUP = 1000  # ids per SELECT ... IN (...)
EXAMPLES = 5  # per rule and change, unless asked otherwise
MAX_EXAMPLES = 50
MEMO = 50_000  # explained findings remembered (entries with the same feature values share their evidence)
NEWLY, NO_LONGER = "newly flagged", "no longer flagged"
# Aggregate types whose groups are one timekeeper's time entries on one day (``aggregates.timekeeper_days``):
# these are evaluated chunk by chunk over entries ordered by timekeeper and date.
DAY_GROUPED = frozenset({"daily_hours_cap", "duplicate"})
# Aggregate types whose groups stay within one matter (an event is a matter's day; a budget's totals are a
# matter's): these are evaluated chunk by chunk over entries ordered by matter and date, budgets' totals carried.
MATTER_GROUPED = frozenset({"attendance_limit", "budget"})
# What ``timekeeper_days`` reads of an entry (and the grouping key).
DAY_FIELDS = frozenset({"entry_kind", "hours_billed", "billable", "no_charge", "timekeeper_source_id",
                        "timekeeper_ledes_id", "timekeeper_name", "utbms_task_code", "narrative", "work_date"})
# What ``attendance_limit`` and ``budget`` read of an entry (``billed_amount``: amount, else quantity x rate).
MATTER_FIELDS = frozenset({"entry_kind", "billable", "no_charge", "utbms_activity_code", "utbms_task_code",
                           "law_firm_matter_id", "timekeeper_source_id", "timekeeper_ledes_id", "timekeeper_name",
                           "narrative", "work_date", "rate", "amount", "quantity", "adjustment_amount"})
APPLIES_FIELDS = frozenset({"ledes_client_id", "client_source_id", "law_firm_matter_id", "client_matter_id",
                            "matter_source_id", "work_date", "timekeeper_classification"})
# What the write-downs the rule types propose read of an entry (one that reads another is read in full).
WRITE_DOWN_FIELDS = frozenset({"rate", "quantity", "hours_billed", "hours_worked", "amount", "adjustment_amount",
                               "fee_basis", "entry_kind", "unit_of_measure", "standard_rate", "currency"})
# The entry fields each derived value reads (``engine.rules.features``).
DERIVED_INPUTS: dict[str, frozenset[str]] = {
    "billed_amount": frozenset({"amount", "quantity", "rate"}),
    "net_amount": frozenset({"amount", "quantity", "rate", "adjustment_amount"}),
    "age_days": frozenset({"work_date"}),
    "outside_billing_period": frozenset({"work_date"}),
    "billed_share": frozenset({"amount", "quantity", "rate", "adjustment_amount", "hours_worked"}),
}
ALL_FIELDS = frozenset(Entry.model_fields)
_PROPERTIES = {name: value for name, value in vars(Entry).items() if isinstance(value, property)}

Progress = Callable[[str, int, int], None]  # (phase, entries done, entries in the phase: 0 if not known)


class BacktestError(Invalid):
    code = "invalid_backtest"


# What is asked ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Which stored entries: work dates from ``start`` to ``end`` (inclusive; either open), of ``clients``
    (LEDES client ids or the source's client ids; empty: every client)."""

    start: dt.date | None = None
    end: dt.date | None = None
    clients: tuple[str, ...] = ()

    def check(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise BacktestError(f"the window starts ({self.start}) after it ends ({self.end})")

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end, "clients": list(self.clients)}


@dataclass
class Example:
    """One (entry, rule) pair that changes, with the finding as the version that has it explains it."""

    entry_id: int
    entry_uid: str
    rule_id: str
    change: str  # "newly flagged" (the draft's finding) or "no longer flagged" (the compared version's)
    message: str = ""
    severity: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    adjustment: dict[str, str] | None = None
    contributing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RuleDiff:
    """One rule that differs between the versions, and what the difference does to the entries."""

    rule_id: str
    rule_type: str
    change: str  # added, removed or changed
    differs: list[str]  # what differs: params, severity, status, scope, rule set (or the whole rule)
    flagged_before: int = 0  # entries the compared version flags with it (active status only)
    flagged_after: int = 0  # entries the draft flags with it
    newly_flagged: int = 0
    no_longer_flagged: int = 0
    # Proposed write-downs (the engine's adjustments: negative amounts lower the line), by currency.
    write_down_before: dict[str, Decimal] = field(default_factory=dict)
    write_down_after: dict[str, Decimal] = field(default_factory=dict)
    # How the compared version's findings were had: evaluated, from the decision log, or both (the log for the
    # entries that version judged, evaluated for the others).
    source: str = "evaluated"

    @property
    def write_down_change(self) -> dict[str, Decimal]:
        currencies = sorted(set(self.write_down_before) | set(self.write_down_after))
        return {c: self.write_down_after.get(c, Decimal(0)) - self.write_down_before.get(c, Decimal(0))
                for c in currencies}


@dataclass
class Backtest:
    """What a version would flag over the stored entries, compared with another version of its rule set."""

    draft: RuleSetVersion
    active: RuleSetVersion | None  # the version compared with (the rule set's active one unless asked)
    entries_checked: int
    newly_flagged: dict[str, int] = field(default_factory=dict)  # by rule: (entry, rule) pairs gained
    no_longer_flagged: dict[str, int] = field(default_factory=dict)  # by rule: pairs lost
    examples: list[Example] = field(default_factory=list)
    rules: list[RuleDiff] = field(default_factory=list)  # every rule that differs, in rule id order
    unchanged_rules: list[str] = field(default_factory=list)
    window: Window = field(default_factory=Window)
    context: EvaluationContext = field(default_factory=EvaluationContext)
    entries_read: int = 0  # rows streamed (a row read in both passes counts twice)
    entries_read_in_full: int = 0  # records parsed as entries (findings with write-downs, examples)
    findings_reused: int = 0  # entries whose compared findings came from the decision log
    seconds: float = 0.0

    @property
    def write_down_change(self) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for rule in self.rules:
            for currency, amount in rule.write_down_change.items():
                total[currency] = total.get(currency, Decimal(0)) + amount
        return dict(sorted(total.items()))


def _money(totals: dict[str, Decimal]) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in sorted(totals.items())}


def summary(result: Backtest) -> dict[str, Any]:
    """The backtest as JSON-ready values (decimals and dates as text), without the two versions."""
    ctx = result.context
    return {
        "entries_checked": result.entries_checked,
        "newly_flagged": result.newly_flagged,
        "no_longer_flagged": result.no_longer_flagged,
        "write_down_change": _money(result.write_down_change),
        "rules": [{
            "rule_id": d.rule_id, "rule_type": d.rule_type, "change": d.change, "differs": d.differs,
            "flagged_before": d.flagged_before, "flagged_after": d.flagged_after,
            "newly_flagged": d.newly_flagged, "no_longer_flagged": d.no_longer_flagged,
            "write_down_before": _money(d.write_down_before), "write_down_after": _money(d.write_down_after),
            "write_down_change": _money(d.write_down_change), "compared_findings": d.source,
        } for d in result.rules],
        "unchanged_rules": result.unchanged_rules,
        "examples": [e.as_dict() for e in result.examples],
        "window": {"from": _iso(result.window.start), "to": _iso(result.window.end),
                   "clients": list(result.window.clients)},
        "context": {"as_of": _iso(ctx.as_of), "period_start": _iso(ctx.period_start),
                    "period_end": _iso(ctx.period_end)},
        "work": {"entries_read": result.entries_read, "entries_read_in_full": result.entries_read_in_full,
                 "findings_reused": result.findings_reused, "seconds": round(result.seconds, 3)},
    }


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None


# Rule identity -----------------------------------------------------------------------------------------------

def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Decimal):
        return f"decimal:{value.normalize()}"
    if isinstance(value, dt.date):
        return f"date:{value.isoformat()}"
    return value if value is None or isinstance(value, str | int | float | bool) else repr(value)


def _scope_text(rule: Rule) -> str:
    return repr((rule.when, rule.effective_from, rule.effective_to))


def _facets(rule: Rule) -> dict[str, str]:
    """What makes a rule flag what it flags, facet by facet (texts compared between versions)."""
    params = json.dumps([rule.type, _canonical(rule.params), repr(rule.condition)], sort_keys=True)
    return {"params": params, "severity": rule.severity, "status": rule.status, "scope": _scope_text(rule)}


def _ruleset_scope(ruleset: RuleSet) -> str:
    aliases = getattr(ruleset, "classifications", None) or {}
    return repr((sorted(ruleset.clients), sorted(ruleset.matters), ruleset.effective_from, ruleset.effective_to,
                 ruleset.currency, sorted(aliases.items())))


def differences(draft: RuleSet, other: RuleSet | None) -> tuple[list[RuleDiff], list[str]]:
    """The rules that differ between ``draft`` and ``other`` (None: a version with no rules), and the ids of
    those that do not."""
    theirs = {r.id: r for r in other.rules} if other is not None else {}
    ours = {r.id: r for r in draft.rules}
    same_scope = other is not None and _ruleset_scope(draft) == _ruleset_scope(other)
    diffs, unchanged = [], []
    for rule_id in sorted(set(ours) | set(theirs)):
        mine, old = ours.get(rule_id), theirs.get(rule_id)
        if mine is None:
            diffs.append(RuleDiff(rule_id, old.type, "removed", ["rule"]))  # type: ignore[union-attr]
            continue
        if old is None:
            diffs.append(RuleDiff(rule_id, mine.type, "added", ["rule"]))
            continue
        facets, before = _facets(mine), _facets(old)
        differs = [name for name in facets if facets[name] != before[name]]
        if not same_scope:
            differs.append("rule set")
        if differs:
            diffs.append(RuleDiff(rule_id, mine.type, "changed", differs))
        else:
            unchanged.append(rule_id)
    return diffs, unchanged


def _context_free(rule: Rule, ruleset: RuleSet) -> bool:
    """Whether the rule's findings on an entry depend only on the entry (not on the date or period judged)."""
    if type_of(rule).aggregate:
        return False
    compiled = compile_ruleset(_subset(ruleset, [rule.id]))
    return not any(f.kind == "derived" and DERIVED_FUNCTIONS.get(f.field, (None, True))[1]
                   for f in compiled.features.values()) and all(f.kind in _KNOWN_KINDS
                                                                for f in compiled.features.values())


# Sub-rule-sets: the changed rules only ------------------------------------------------------------------------

def _subset(ruleset: RuleSet, rule_ids: Iterable[str]) -> RuleSet:
    """The rule set with only ``rule_ids``: the same scope, currency and lists, its own compile-cache key."""
    wanted = set(rule_ids)
    rules = [r for r in ruleset.rules if r.id in wanted]
    digest = hashlib.sha256("\x1f".join(r.id for r in rules).encode()).hexdigest()[:12]
    return dataclasses.replace(ruleset, rules=rules, revision=f"{ruleset.revision}~{digest}")


_KNOWN_KINDS = frozenset({"field", "derived", "length", "words", "match", "segments", "remainder", "member",
                          "versus"})


def _feature_fields(features: Iterable[Feature]) -> frozenset[str]:
    """The entry fields the features read; every field for a kind of feature this module does not know."""
    fields: set[str] = set()
    for f in features:
        if f.kind not in _KNOWN_KINDS:
            return ALL_FIELDS
        if f.kind == "derived":
            inputs = DERIVED_INPUTS.get(f.field)
            if inputs is None:
                return ALL_FIELDS
            fields |= inputs
            continue
        if f.field in ENTRY_FIELD_TYPES:
            fields.add(f.field)
        elif f.field in DERIVED_INPUTS:
            fields |= DERIVED_INPUTS[f.field]
        else:
            return ALL_FIELDS
        other = getattr(f.arg, "field", None)  # versus: the field compared with
        if f.kind == "versus":
            if not isinstance(other, str):
                return ALL_FIELDS
            fields |= DERIVED_INPUTS.get(other, {other})
    return frozenset(fields)


def _node_fields(node: Node | None) -> frozenset[str]:
    return _feature_fields(features_of(node).values()) if node is not None else frozenset()


@dataclass
class _Side:
    """One version's changed rules, compiled for the light pass, and what they flag."""

    name: str  # draft or before
    ruleset: RuleSet
    entry_rules: RuleSet | None  # the changed per-entry rules (active status)
    day_rules: RuleSet | None  # the changed aggregate rules grouped by timekeeper-day
    whole_rules: RuleSet | None  # other changed aggregate rules
    fresh_rules: RuleSet | None = None  # before: per-entry rules never read from the log (context-dependent)
    reused: frozenset[str] = frozenset()  # before: per-entry rule ids read from the log
    proposing: frozenset[str] = frozenset()  # per-entry rule ids whose type proposes write-downs


def _proposes(rule: Rule) -> bool:
    return type(type_of(rule)).propose is not RuleType.propose


def _side(name: str, ruleset: RuleSet, rule_ids: set[str], reuse: bool) -> _Side:
    active = [r for r in ruleset.rules if r.id in rule_ids and r.status == "active"]
    entry = [r.id for r in active if not type_of(r).aggregate]
    day = [r.id for r in active if type_of(r).aggregate and r.type in DAY_GROUPED]
    whole = [r.id for r in active if type_of(r).aggregate and r.type not in DAY_GROUPED]
    side = _Side(name, ruleset, _subset(ruleset, entry) if entry else None, _subset(ruleset, day) if day else None,
                 _subset(ruleset, whole) if whole else None,
                 proposing=frozenset(r.id for r in active if not type_of(r).aggregate and _proposes(r)))
    if reuse and entry:
        reused = frozenset(rule_id for rule_id in entry if _context_free(ruleset.rule(rule_id), ruleset))
        fresh = [rule_id for rule_id in entry if rule_id not in reused]
        side.reused, side.fresh_rules = reused, _subset(ruleset, fresh) if fresh else None
    return side


# Light entries -----------------------------------------------------------------------------------------------

class _Unloaded(Exception):
    """A field a backtest did not read was asked for: a bug in working out which fields the rules read."""


class _Light:
    """An entry with only some fields, each typed as :class:`Entry` types it; reading any other is an error."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name in ALL_FIELDS:
            raise _Unloaded(f"the backtest did not read the field {name!r}")
        derived = _PROPERTIES.get(name)  # billed_amount and the like, from the fields read
        if derived is not None:
            return derived.fget(self)  # type: ignore[misc]
        raise AttributeError(name)

    def model_copy(self, update: dict[str, Any] | None = None, deep: bool = False) -> _Light:
        copy = _Light(self.__dict__)
        copy.__dict__.update(update or {})
        return copy


def _converter(name: str) -> tuple[Callable[[Any], Any] | None, Any, str]:
    """How a stored record's JSON value becomes the field's value on an Entry, the field's default (a record
    leaves out what is None), and the SQL type ``json_to_record`` reads it as."""
    info = Entry.model_fields[name]
    args = [a for a in (typing.get_args(info.annotation) or (info.annotation,)) if a is not type(None)]
    base = args[0] if len(args) == 1 else None
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if base is Decimal:
        return _decimal, default, "text"
    if base is dt.date:
        return dt.date.fromisoformat, default, "text"
    if base is dt.datetime:
        return dt.datetime.fromisoformat, default, "text"
    if isinstance(base, type) and issubclass(base, Enum):
        return {member.value: member for member in base}.__getitem__, default, "text"  # type: ignore[attr-defined]
    if base is bool:
        return bool, default, "boolean"
    if base is int:
        return int, default, "bigint"
    if base is str:
        return None, default, "text"
    return None, default, "json"  # lists and mappings, as they are


def _decimal(value: Any) -> Decimal:
    if isinstance(value, float):  # records keep decimals as text: a float here is a corrupt record
        raise TypeError(f"a decimal field holds the float {value!r}")
    return Decimal(value)


_CONVERTERS = {name: _converter(name) for name in ALL_FIELDS}


class _Cached(dict[Any, Any]):
    """Text to value, remembered (a history holds few distinct rates, hours and dates); values already typed
    (PostgreSQL's) pass through."""

    def __init__(self, convert: Callable[[Any], Any], kind: type) -> None:
        super().__init__()
        self.convert, self.kind = convert, kind

    def __missing__(self, text: Any) -> Any:
        value = text if isinstance(text, self.kind) else self.convert(text)
        if len(self) < MEMO:
            self[text] = value
        return value


_COLUMN_CONVERTERS: dict[Any, Any] = {
    _decimal: _Cached(_decimal, Decimal).__getitem__,
    dt.date.fromisoformat: _Cached(dt.date.fromisoformat, dt.date).__getitem__,
}


class _Reader:
    """Streams stored entries with some fields of their records, as light entries (the first row values are
    the entry id, its uid, timekeeper key and work date columns, then ``extra``). With ``columns``, the fields
    the entries table keeps as columns are read from them, the others from the record."""

    def __init__(self, session: Session, fields: Iterable[str], extra: Sequence[Any] = (),
                 columns: bool = False, facts: bool = False) -> None:
        """``facts``: read ``entry_facts`` (every field must be one of its columns) instead of ``entries``."""
        self.session = session
        wanted = sorted(fields)
        self.table = EntryFacts.__table__ if facts else EntryRow.__table__
        self.facts = facts
        if facts and not set(wanted) <= set(FACT_FIELDS):
            raise _NotGroupable("fields entry_facts does not keep")
        self.columns = (wanted if facts else
                        [name for name in wanted if name in ENTRY_COLUMNS] if columns else [])
        self.fields = [name for name in wanted if name not in self.columns]
        self.postgres = session.get_bind().dialect.name == "postgresql"
        # Columns are read as the driver gives them (no SQLAlchemy type processing): decimals as text on SQLite and
        # Decimal on PostgreSQL, dates as text or dates, enumerations as their values.
        self.column_plan = [(name, _COLUMN_CONVERTERS.get(_CONVERTERS[name][0], _CONVERTERS[name][0]),
                             _CONVERTERS[name][1]) for name in self.columns]
        self.plan = [(name, *_CONVERTERS[name][:2]) for name in self.fields]
        self.extra = list(extra)  # more columns after the four (row[4], ...)
        self.offset = 4 + len(self.extra)
        self.json_at = self.offset + len(self.columns)

    def select(self) -> Select[Any]:
        t = self.table
        head = [t.c.entry_id if self.facts else t.c.id, t.c.entry_uid, t.c.timekeeper_key,
                type_coerce(t.c.work_date, NullType()) if self.facts else t.c.work_date, *self.extra,
                *[type_coerce(t.c[name], NullType()) for name in self.columns]]
        if not self.fields:
            return select(*head)
        if self.postgres:
            from sqlalchemy import column, types

            kinds = {"boolean": types.Boolean(), "bigint": types.BigInteger(), "json": types.JSON(),
                     "text": types.Text()}
            record = func.json_to_record(t.c.record).table_valued(
                *[column(name, kinds[_CONVERTERS[name][2]]) for name in self.fields]).render_derived(
                name="r", with_types=True)
            return select(*head, *[record.c[name] for name in self.fields]).select_from(t).join(record, true())
        paths = [f"$.{name}" for name in self.fields]
        if len(paths) == 1:
            paths.append(paths[0])  # two paths: json_extract answers a JSON array
        return select(*head, func.json_extract(t.c.record, *paths))

    def light(self, row: Sequence[Any]) -> _Light:
        values = {"entry_id": row[0], "entry_uid": row[1]}
        _typed(values, self.column_plan, row[self.offset:self.json_at])
        if self.fields:
            _typed(values, self.plan, row[self.json_at:] if self.postgres else orjson.loads(row[self.json_at]))
        light = _Light.__new__(_Light)
        light.__dict__ = values
        return light


def _typed(values: dict[str, Any], plan: Sequence[tuple[str, Any, Any]], raw: Iterable[Any]) -> None:
    """Each (field, converter, default) of ``plan`` with its raw value: the default for None, else converted."""
    for (name, convert, default), value in zip(plan, raw, strict=False):
        values[name] = default if value is None else value if convert is None else convert(value)


def _facts_complete(session: Session, window: Window) -> bool:
    """Whether every stored entry in the window has its ``entry_facts`` row, withdrawn as it is (the counts
    agree)."""
    f = EntryFacts.__table__
    entries = session.scalar(select(func.count()).select_from(EntryRow.__table__).where(*_filters(window, [])))
    facts = session.scalar(select(func.count()).select_from(f).where(*_filters(window, [], f)))
    return bool(entries == facts)


def _day_of_row(t: Any) -> Any:
    """The work date to filter on: on ``entry_facts`` wrapped so that SQLite does not walk its timekeeper-day
    index for a date range (with ANALYZE's figures it would, then read every row by id: ten times slower than a
    scan)."""
    return func.date(t.c.work_date) if t is EntryFacts.__table__ else t.c.work_date


def _filters(window: Window, rulesets: Sequence[RuleSet], table: Any = None) -> list[Any]:
    """The WHERE terms: stored, not withdrawn, in the window, and possibly governed by one of ``rulesets``
    (what can be told from columns: their clients and effective dates); over ``entries`` or ``entry_facts``."""
    t = EntryRow.__table__ if table is None else table
    terms: list[Any] = ([t.c.state != EntryState.WITHDRAWN.value] if table is None else
                        [t.c.withdrawn.is_(False)])
    if window.start is not None:
        terms.append(_day_of_row(t) >= window.start)
    if window.end is not None:
        terms.append(_day_of_row(t) <= window.end)
    if window.clients:
        terms.append(or_(t.c.ledes_client_id.in_(window.clients), t.c.client_source_id.in_(window.clients)))
    if rulesets and all(rs.clients for rs in rulesets):
        clients = sorted({c for rs in rulesets for c in rs.clients})
        terms.append(or_(t.c.ledes_client_id.in_(clients), t.c.client_source_id.in_(clients)))
    if rulesets and all(rs.effective_from is not None for rs in rulesets):
        terms.append(_day_of_row(t) >= min(rs.effective_from for rs in rulesets))  # type: ignore[type-var]
    if rulesets and all(rs.effective_to is not None for rs in rulesets):
        terms.append(_day_of_row(t) <= max(rs.effective_to for rs in rulesets))  # type: ignore[type-var]
    return terms


def _stream(session: Session, query: Select[Any]) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows in chunks, as the database gives them (a server-side cursor on PostgreSQL). When no column needs
    SQLAlchemy's result processing (the grouped and daily passes select their columns untyped), the driver's own
    tuples are read from its cursor, after the row SQLAlchemy buffered first: building a Row per row was a tenth
    of a brand-new rule set's backtest. Otherwise Core rows."""
    result = session.connection().execute(query.execution_options(yield_per=CHUNK))
    try:
        buffered = getattr(result.cursor_strategy, "_rowbuffer", None)
        processors = getattr(result._metadata, "_processors", None)
        if buffered is None or processors is None or any(p is not None for p in processors):
            yield from result.partitions()
            return
        if buffered:
            yield list(buffered)
            buffered.clear()
        cursor = result.cursor
        while rows := cursor.fetchmany(CHUNK):
            yield rows
    finally:
        result.close()


def _records(session: Session, ids: Sequence[int]) -> dict[int, Entry]:
    """Stored entries in full, by id."""
    found: dict[int, Entry] = {}
    for start in range(0, len(ids), LOOKUP):
        for entry_id, record in session.execute(select(EntryRow.id, EntryRow.record)
                                                .where(EntryRow.id.in_(ids[start:start + LOOKUP]))):
            found[entry_id] = Entry.model_validate(record)
    return found


# Judging light entries as evaluate() does ---------------------------------------------------------------------

def _canonical_entries(entries: Sequence[Any], ruleset: RuleSet) -> Sequence[Any]:
    """The entries as ``evaluate`` judges them (classification aliases mapped), when the engine does so."""
    mapping = getattr(engine_evaluate, "canonical_classifications", None)
    return mapping(entries, ruleset) if mapping is not None else entries


_FULL = object()  # a write-down that reads a field the backtest did not fetch: the record is read in full


class _Judge:
    """A side's changed per-entry rules judged entry by entry. Each rule remembers its answer (whether it fires,
    and the evidence) by the values it reads: entries alike in those are judged once, and a work date the rule
    compares only with constants counts by where it falls among them. The answer is worked out on a copy holding
    only those values, so a rule that reads any other cannot share an answer it should not (its memory goes off).
    Write-downs are proposed on each entry itself, from the remembered evidence."""

    def __init__(self, rules: RuleSet, ctx: EvaluationContext, proposing: frozenset[str],
                 scoped: bool = True) -> None:
        """``scoped``: judge only the entries the rule set governs (False: the caller has chosen them)."""
        self.rules, self.ctx, self.scoped = rules, ctx, scoped
        self.each = []
        for c in compile_ruleset(rules).rules:
            fields = _feature_fields(c.features.values())
            single = compile_ruleset(_subset(rules, [c.rule.id]))
            memo: dict[tuple[Any, ...], Any] | None = {} if fields != ALL_FIELDS else None
            cuts = _date_cuts([c.condition]) if "work_date" in fields else None
            named = sorted(fields - {"work_date"} if cuts is not None else fields)
            getter = operator.attrgetter(*named) if named else _nothing
            self.each.append([c, single.check, sorted(fields), cuts, memo, c.rule.id in proposing, getter])

    def judge(self, lights: Sequence[_Light]) -> list[tuple[int, str, Any]]:
        """(position, rule id, write-down amount, None, or ``_FULL``) for each rule an entry breaks."""
        out: list[tuple[int, str, Any]] = []
        applies = self.rules.applies_to
        for k, e in enumerate(_canonical_entries(lights, self.rules)):
            if self.scoped and not applies(e):
                continue
            for each in self.each:
                c, check, fields, cuts, memo, proposing, getter = each
                if memo is None:
                    evidence = self._answer(c, check, e)
                else:
                    key = getter(e) if cuts is None else (getter(e), _bucket(e.work_date, cuts))
                    evidence = memo.get(key, _MISSING)
                    if evidence is _MISSING:
                        copy = _Light({name: e.__dict__[name] for name in fields if name in e.__dict__})
                        try:
                            evidence = self._answer(c, check, copy)
                        except _Unloaded:
                            each[4] = None  # this rule reads more than its features say: judge every entry
                            evidence = self._answer(c, check, e)
                        else:
                            if len(memo) > MEMO:
                                memo.clear()
                            memo[key] = evidence
                if evidence is None:
                    continue
                amount = None
                if proposing:
                    try:
                        adjustment = type_of(c.rule).propose(c.rule, e, evidence)
                        amount = adjustment.amount if adjustment is not None else None
                    except _Unloaded:
                        amount = _FULL
                out.append((k, c.rule.id, amount))
        return out

    def _answer(self, c: Any, check: Any, e: Any) -> list[Any] | None:
        """The rule's evidence on the entry, or None when it does not fire."""
        if not check(e, self.ctx):
            return None
        values = {key: feature.compute(e, self.ctx) for key, feature in c.features.items()}
        return explain(c.condition, values, e)


_MISSING = object()


def _nothing(_: Any) -> tuple[()]:
    return ()


def _date_cuts(conditions: Sequence[Node]) -> tuple[dt.date, ...] | None:
    """The dates the conditions compare the work date with, when they compare it only with constants (else None:
    the date itself is the key)."""
    found: set[dt.date] = set()
    for condition in conditions:
        for leaf in leaves(condition):
            feature = leaf.feature
            reads = _feature_fields([feature])
            if "work_date" not in reads:
                continue
            if feature.kind != "field" or feature.field != "work_date":
                return None
            if leaf.op in ("present", "missing"):
                continue
            values = leaf.value if leaf.op in ("in", "not_in") else (leaf.value,)
            if not all(isinstance(v, dt.date) for v in values):
                return None
            found.update(values)
    return tuple(sorted(found))


def _bucket(day: Any, cuts: tuple[dt.date, ...] | None) -> Any:
    if cuts is None or day is None:
        return day
    return bisect.bisect_left(cuts, day), bisect.bisect_right(cuts, day)


class _Aggregates:
    """A side's aggregate rules over chunks of whole groups: their scope predicates are made once."""

    def __init__(self, rules: RuleSet, ctx: EvaluationContext) -> None:
        self.rules = rules
        compiled = compile_ruleset(rules)
        self.scoped = [(rule, scope_predicate(compiled, rule, ctx)) for rule in compiled.aggregates]

    def hits(self, entries: Sequence[Any], carried: dict[str, Any] | None = None) -> Iterator[tuple[int, str]]:
        """(position, rule id) of each entry an aggregate rule flags; ``carried``: budget totals carried in (as
        ``evaluate`` takes them)."""
        mapped = _canonical_entries(entries, self.rules)
        positions = [k for k, e in enumerate(mapped) if self.rules.applies_to(e)]
        applicable = [mapped[k] for k in positions]
        cache: dict[object, object] = {("carried", rule_id): value for rule_id, value in (carried or {}).items()}
        for rule, scope in self.scoped:
            for hit in type_of(rule).evaluate_batch(rule, applicable, scope, cache):
                for i in hit.indexes:
                    yield positions[i], rule.id


# The backtest ----------------------------------------------------------------------------------------------

class _Tally:
    """Per rule: counts, write-downs and the examples kept (the smallest entry uids, so the choice does not
    depend on the order entries are read in)."""

    def __init__(self, diffs: Sequence[RuleDiff], examples: int) -> None:
        self.diffs = {d.rule_id: d for d in diffs}
        self.limit = examples
        self.kept: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (rule, change) -> max-heap of (uid, id)
        self.evidence: dict[tuple[Any, ...], list[Any]] = {}  # explained findings, by what explains them

    def pair(self, rule_id: str, entry_id: int, uid: str, before: bool, after: bool) -> None:
        diff = self.diffs[rule_id]
        diff.flagged_before += before
        diff.flagged_after += after
        if before != after:
            change = NEWLY if after else NO_LONGER
            if after:
                diff.newly_flagged += 1
            else:
                diff.no_longer_flagged += 1
            self._keep(rule_id, change, uid, entry_id)

    def flagged(self, flags: dict[tuple[int, str], list[bool]], ids: Sequence[int], uids: Sequence[str]) -> None:
        """Count what each side flagged of some entries: (position, rule id) -> [by the draft, by the other]."""
        for (k, rule_id), (mine, theirs) in sorted(flags.items()):
            if rule_id in self.diffs:
                self.pair(rule_id, ids[k], uids[k], theirs, mine)

    def pairs(self, rule_id: str, count: int, before: bool, after: bool) -> None:
        """``count`` entries alike (their examples offered one by one with :meth:`offer`)."""
        diff = self.diffs[rule_id]
        diff.flagged_before += count * before
        diff.flagged_after += count * after
        if before != after:
            if after:
                diff.newly_flagged += count
            else:
                diff.no_longer_flagged += count

    def offer(self, rule_id: str, change: str, uid: str, entry_id: int) -> None:
        self._keep(rule_id, change, uid, entry_id)

    def _keep(self, rule_id: str, change: str, uid: str, entry_id: int) -> None:
        if self.limit <= 0:
            return
        heap = self.kept.setdefault((rule_id, change), [])
        item = (_Desc(uid), entry_id)
        if len(heap) < self.limit:
            heapq.heappush(heap, item)  # type: ignore[arg-type]
        elif uid < heap[0][0].uid:  # type: ignore[attr-defined]
            heapq.heapreplace(heap, item)  # type: ignore[arg-type]

    def write_down(self, rule_id: str, before: bool, currency: str | None, amount: Decimal) -> None:
        diff = self.diffs[rule_id]
        totals = diff.write_down_before if before else diff.write_down_after
        key = currency or "none"
        totals[key] = totals.get(key, Decimal(0)) + amount

    def examples(self) -> list[tuple[str, str, str, int]]:
        """(rule id, change, uid, entry id), in rule, change and uid order."""
        out = []
        for (rule_id, change), heap in self.kept.items():
            out.extend((rule_id, change, item.uid, entry_id) for item, entry_id in heap)  # type: ignore[attr-defined]
        return sorted(out)


class _Desc:
    """A uid ordered backwards, so that heapq's min-heap keeps the largest kept uid on top."""

    __slots__ = ("uid",)

    def __init__(self, uid: str) -> None:
        self.uid = uid

    def __lt__(self, other: _Desc) -> bool:
        return self.uid > other.uid


def backtest(session: Session, version_id: int, *, against: int | None = None, window: Window | None = None,
             context: EvaluationContext | None = None, as_of: dt.date | None = None, examples: int = EXAMPLES,
             progress: Progress | None = None) -> Backtest:
    """Compare what version ``version_id`` flags over the stored entries in ``window`` with what version
    ``against`` flags (default: its rule set's active version; none active: every finding is new). Writes
    nothing. ``context`` is the evaluation date and billing period (``as_of`` alone, or today, by default)."""
    started = time.perf_counter()
    if session.get_bind().dialect.name == "postgresql":
        # The groupings hash many rows: in memory, not files. And every row a cursor yields is read: plan for all
        # of them (the default plans a cursor for its first tenth, with nested loops where a hash join would do).
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        session.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    window = window or Window()
    window.check()
    if not 0 <= examples <= MAX_EXAMPLES:
        raise BacktestError(f"examples must be between 0 and {MAX_EXAMPLES}")
    ctx = context or EvaluationContext(as_of=as_of or dt.date.today())
    draft = get(session, version_id)
    if against is None:
        other = session.scalar(select(RuleSetVersion).where(
            RuleSetVersion.ruleset_id == draft.ruleset_id, RuleSetVersion.status == RuleSetStatus.ACTIVE))
    else:
        other = get(session, against)
        if other.ruleset_id != draft.ruleset_id:
            raise BacktestError(f"version {other.id} is of rule set {other.ruleset_id}, not {draft.ruleset_id}: "
                                "a backtest compares two versions of one rule set")
    mine = load_version(draft)
    theirs = load_version(other) if other is not None else None
    diffs, unchanged = differences(mine, theirs)
    changed = {d.rule_id for d in diffs}
    after = _side("draft", mine, changed, reuse=False)
    before = _side("before", theirs, changed, reuse=True) if theirs is not None else None
    result = Backtest(draft=draft, active=other, entries_checked=0, rules=diffs, unchanged_rules=unchanged,
                      window=window, context=ctx)
    tally = _Tally(diffs, examples)
    sides = [s for s in (after, before) if s is not None]
    scopes = [s.ruleset for s in sides]
    counted = False
    if any(s.entry_rules is not None for s in sides):
        counted = True
        try:
            unjudged = _grouped_pass(session, result, tally, after, before, other, window, scopes, ctx, examples,
                                     progress)
        except _NotGroupable:
            unjudged = _entry_pass(session, result, tally, after, before, other, window, scopes, ctx, progress)
        for diff in diffs:
            if before is not None and diff.rule_id in before.reused and result.findings_reused:
                diff.source = "both" if unjudged else "decision log"
    if any(s.day_rules is not None for s in sides):
        _day_pass(session, result, tally, after, before, window, scopes, ctx, progress)
    if any(s.whole_rules is not None for s in sides):
        _whole_pass(session, result, tally, after, before, window, scopes, ctx, progress)
    if not counted:
        result.entries_checked = _count_checked(session, mine, window)
    result.examples = _examples(session, tally, after, before, window, ctx)
    result.newly_flagged = {d.rule_id: d.newly_flagged for d in diffs if d.newly_flagged}
    result.no_longer_flagged = {d.rule_id: d.no_longer_flagged for d in diffs if d.no_longer_flagged}
    result.seconds = time.perf_counter() - started
    return result


def _count(session: Session, query: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _count_checked(session: Session, ruleset: RuleSet, window: Window, table: Any = None) -> int:
    """Entries in the window the rule set governs (``RuleSet.applies_to``: clients, matters and work dates,
    all of them columns), counted by the database (in ``entries``, or ``entry_facts`` when given)."""
    t = EntryRow.__table__ if table is None else table
    return int(session.scalar(select(func.count()).select_from(t)
                              .where(*_filters(window, [], table), _governed(ruleset, t))) or 0)


def _entry_pass(session: Session, result: Backtest, tally: _Tally, after: _Side, before: _Side | None,
                other: RuleSetVersion | None, window: Window, scopes: list[RuleSet], ctx: EvaluationContext,
                progress: Progress | None) -> int:
    """The changed per-entry rules of both sides over every entry in the window, in id order. The compared
    version's findings of the reused rules come from the decision log for the entries it judged; returns how
    many entries it had not judged (their findings were evaluated)."""
    fields = set(APPLIES_FIELDS) | {"currency"}
    for side in (after, before):
        if side is not None and side.entry_rules is not None:
            fields |= _feature_fields(compile_ruleset(side.entry_rules).features.values())
            if side.proposing:
                fields |= WRITE_DOWN_FIELDS
    log = None
    judged_column = None
    if before is not None and before.entry_rules is not None and before.reused:
        assert other is not None
        log = _DecisionLog(session, other, before, window)
        judged_column = _judged(other)
    reader = _Reader(session, fields, [judged_column] if judged_column is not None else [], columns=True)
    query = reader.select().where(*_filters(window, scopes))
    keep = _candidates(session, after, before, other if log is not None else None)
    if keep is not None:
        query = query.where(keep)
    query = query.order_by(EntryRow.id)
    total = _count(session, query) if progress is not None else 0
    result.entries_checked = _count_checked(session, after.ruleset, window)
    done = unjudged_count = 0
    mine = _Judge(after.entry_rules, ctx, after.proposing) if after.entry_rules is not None else None
    theirs = fresh = None
    if before is not None and before.entry_rules is not None:
        theirs = _Judge(before.entry_rules, ctx, before.proposing)
        if before.fresh_rules is not None:
            fresh = _Judge(before.fresh_rules, ctx, before.proposing)
    try:
        for rows in _stream(session, query):
            lights = [reader.light(row) for row in rows]
            result.entries_read += len(lights)
            new: dict[int, set[str]] = {}
            found_new = mine.judge(lights) if mine is not None else []
            _add(new, ((k, rule_id) for k, rule_id, _ in found_new))
            old: dict[int, set[str]] = {}  # the compared version's findings, however had
            found_old: list[tuple[int, str, Any]] = []  # those of them evaluated here, with their write-downs
            stored: list[tuple[int, str, Decimal | None]] = []  # those read from the log, with their write-downs
            if theirs is not None:
                if log is None:
                    found_old = theirs.judge(lights)
                else:
                    findings = log.upto(lights[-1].entry_id)
                    judged = [k for k, row in enumerate(rows) if row[4]]
                    unjudged = [k for k, row in enumerate(rows) if not row[4]]
                    result.findings_reused += len(judged)
                    unjudged_count += len(unjudged)
                    for k in judged:
                        stored.extend((k, rule_id, amount) for rule_id, amount in findings.get(lights[k].entry_id, ()))
                    if fresh is not None and judged:
                        found_old += [(judged[j], rule_id, amount) for j, rule_id, amount in
                                      fresh.judge([lights[k] for k in judged])]
                    if unjudged:
                        found_old += [(unjudged[j], rule_id, amount) for j, rule_id, amount in
                                      theirs.judge([lights[k] for k in unjudged])]
                _add(old, ((k, rule_id) for k, rule_id, _ in found_old))
                for k, rule_id, _ in stored:
                    old.setdefault(k, set()).add(rule_id)
            for k in sorted(new.keys() | old.keys()):
                e, ours, their = lights[k], new.get(k, set()), old.get(k, set())
                for rule_id in sorted(ours | their):
                    tally.pair(rule_id, e.entry_id, e.entry_uid, rule_id in their, rule_id in ours)
            _add_write_downs(session, result, tally, after, lights, found_new, ctx, before=False)
            if before is not None:
                _add_write_downs(session, result, tally, before, lights, found_old, ctx, before=True)
                for k, rule_id, amount in stored:
                    if amount is not None:
                        tally.write_down(rule_id, True, lights[k].currency, amount)
            done += len(lights)
            if progress is not None:
                progress("per-entry rules", done, total)
    finally:
        if log is not None:
            log.close()
    return unjudged_count


def _add_write_downs(session: Session, result: Backtest, tally: _Tally, side: _Side, lights: Sequence[_Light],
                     found: list[tuple[int, str, Any]], ctx: EvaluationContext, *, before: bool) -> None:
    """Add up the write-downs the judge proposed; those it could not work out from the fields read are worked
    out from the records in full (:func:`_write_downs`)."""
    full: dict[int, set[str]] = {}
    for k, rule_id, amount in found:
        if amount is _FULL:
            full.setdefault(k, set()).add(rule_id)
        elif amount is not None:
            tally.write_down(rule_id, before, lights[k].currency, amount)
    if full:
        _write_downs(session, result, tally, side, lights, full, ctx, before=before)


def _add(found: dict[int, set[str]], hits: Iterable[tuple[int, str]]) -> None:
    for k, rule_id in hits:
        found.setdefault(k, set()).add(rule_id)


def _write_downs(session: Session, result: Backtest, tally: _Tally, side: _Side, lights: Sequence[_Light],
                 hits: dict[int, set[str]], ctx: EvaluationContext, *, before: bool) -> None:
    """Add up the write-downs that the rules proposing them propose on the entries they flag. Each finding is
    explained on the light entry as ``evaluate`` explains it (features, evidence, proposal); an entry whose
    proposal reads a field the backtest did not fetch is read in full and judged with ``evaluate`` itself."""
    if not side.proposing:
        return
    wanted = {k: rules & side.proposing for k, rules in hits.items() if rules & side.proposing}
    if not wanted:
        return
    rules = _subset(side.ruleset, sorted(side.proposing))
    compiled = {c.rule.id: c for c in compile_ruleset(rules).rules}
    positions = sorted(wanted)
    mapped = _canonical_entries([lights[k] for k in positions], rules)
    in_full: list[int] = []
    memo = tally.evidence
    if len(memo) > MEMO:
        memo.clear()
    keys = {rule_id: _memo_keys(c) for rule_id, c in compiled.items()}
    for j, k in enumerate(positions):
        e = mapped[j]
        try:
            amounts = []
            for rule_id in sorted(wanted[k]):
                c = compiled[rule_id]
                values = tuple(feature.compute(e, ctx) for feature in c.features.values())
                # The evidence depends on the feature values (a date only on where it falls among the dates the
                # rule compares it with), and on the text of a match or a member's field.
                texts = tuple(getattr(e, f.field) for f in c.features.values() if f.kind in ("match", "member"))
                key = (side.name, rule_id, tuple(v if cut is None or v is None else
                                                 (bisect.bisect_left(cut, v), bisect.bisect_right(cut, v))
                                                 for v, cut in zip(values, keys[rule_id], strict=True)), texts)
                evidence = memo.get(key)
                if evidence is None:
                    evidence = memo[key] = explain(c.condition, dict(zip(c.features, values, strict=True)), e)
                adjustment = type_of(c.rule).propose(c.rule, e, evidence)
                amounts.append((rule_id, adjustment.amount if adjustment is not None else None))
        except _Unloaded:
            in_full.append(k)
            continue
        for rule_id, amount in amounts:
            if amount is not None:
                tally.write_down(rule_id, before, e.currency, amount)
    if not in_full:
        return
    full = _records(session, [lights[k].entry_id for k in in_full])
    result.entries_read_in_full += len(full)
    entries = [full[lights[k].entry_id] for k in in_full]
    found: dict[tuple[int, str], Decimal | None] = {}
    for v in engine_evaluate.evaluate(entries, rules, context=ctx, backend="python", statuses=("active",)):
        found[(v.entry_index, v.rule_id)] = v.adjustment.amount if v.adjustment is not None else None
    expected = {(j, rule_id) for j, k in enumerate(in_full) for rule_id in wanted[k]}
    if set(found) != expected:
        raise RuntimeError(f"backtest: the light judgement of {side.ruleset.id} differs from evaluate() on "
                           f"{sorted(set(found) ^ expected)[:5]}")
    for (j, rule_id), amount in found.items():
        if amount is not None:
            tally.write_down(rule_id, before, entries[j].currency, amount)


def _memo_keys(compiled: Any) -> list[tuple[Any, ...] | None]:
    """For each feature a rule reads: the sorted constants a date is compared with, when the rule compares it with
    constants only (two dates between the same constants give the same evidence but for the date itself, which
    no write-down reads), else None (the value itself is the key)."""
    constants: dict[str, set[Any]] = {}
    unfit: set[str] = set()
    for leaf in leaves(compiled.condition):
        feature = leaf.feature
        if feature.kind == "versus":
            unfit.update({feature.key, field_feature(feature.field).key, field_feature(feature.arg.field).key})
            continue
        if feature.type != DATE or feature.kind not in ("field", "derived"):
            continue
        if leaf.op in ("present", "missing"):
            continue
        values = leaf.value if leaf.op in ("in", "not_in") else (leaf.value,)
        if not all(isinstance(v, dt.date) for v in values):
            unfit.add(feature.key)
            continue
        constants.setdefault(feature.key, set()).update(values)
    return [tuple(sorted(constants[key])) if key in constants and key not in unfit else None
            for key in compiled.features]


class _DecisionLog:
    """The compared version's stored judgements, read alongside the entries (both in entry id order): which
    entries it judged as they are now (a current evaluation), and their findings of the reused rules."""

    def __init__(self, session: Session, version: RuleSetVersion | None, side: _Side, window: Window) -> None:
        assert version is not None
        v = ViolationRow.__table__
        scope = _window_ids(window)
        stored = _stored(version, side.reused)
        if scope is not None:
            stored = stored.where(v.c.entry_id.in_(scope))
        self._stored = _rows(session, stored.order_by(v.c.entry_id, v.c.rule_id))
        self._next_stored: Any = next(self._stored, None)

    def upto(self, last_id: int) -> dict[int, list[tuple[str, Decimal | None]]]:
        """The stored findings (rule, write-down amount) of the entries up to ``last_id``. Which entries the
        version judged is a column of the entries read (:func:`_judged`)."""
        stored: dict[int, list[tuple[str, Decimal | None]]] = {}
        while self._next_stored is not None and self._next_stored[0] <= last_id:
            entry_id, rule_id, adjustment = self._next_stored
            amount = Decimal(adjustment["amount"]) if adjustment and adjustment.get("amount") is not None else None
            stored.setdefault(entry_id, []).append((rule_id, amount))
            self._next_stored = next(self._stored, None)
        return stored

    def close(self) -> None:
        self._stored.close()  # type: ignore[attr-defined]


def _stored(version: RuleSetVersion, rule_ids: Iterable[str]) -> Select[Any]:
    """The version's current findings of some rules, with their write-downs."""
    v = ViolationRow.__table__
    return select(v.c.entry_id, v.c.rule_id, v.c.adjustment).where(
        v.c.current.is_(True), v.c.ruleset_id == version.ruleset_id, v.c.ruleset_revision == version.revision,
        v.c.rule_id.in_(sorted(rule_ids)))


def _judged(version: RuleSetVersion) -> Any:
    """Per entry: whether its current evaluation by ``version`` exists (the decision log judged it as it is)."""
    ev, t = Evaluation.__table__, EntryRow.__table__
    return exists().where(ev.c.entry_id == t.c.id, ev.c.ruleset_version_id == version.id,
                          ev.c.current.is_(True)).correlate(t).label("judged")


def _judged_join(session: Session, version: RuleSetVersion, source: Any, t: Any) -> tuple[Any, Any]:
    """``source`` (entry_facts ``t``, maybe joined) with whether the entry's current evaluation is by
    ``version``, and that predicate. SQLite answers ``IN`` from an index it builds once; PostgreSQL gets a
    join it can hash (``IN`` inside an expression would be a subplan that rescans the ids once they outgrow
    work_mem). An entry has at most one current evaluation by a version (a unique index says so), so the join
    repeats no row and the ids need no ``DISTINCT`` (which cost PostgreSQL a hash of a million ids per statement)."""
    ev = Evaluation.__table__
    ids = select(ev.c.entry_id).where(ev.c.ruleset_version_id == version.id, ev.c.current.is_(True))
    if session.get_bind().dialect.name != "postgresql":
        return source, t.c.entry_id.in_(ids)
    judged = ids.subquery()
    return source.outerjoin(judged, judged.c.entry_id == t.c.entry_id), judged.c.entry_id.isnot(None)


def _candidates(session: Session, after: _Side, before: _Side | None,
                logged: RuleSetVersion | None) -> Any:
    """A SQL filter keeping every entry a changed per-entry rule of either side may flag (None: every entry).
    The draft's rules, and the compared version's when they are evaluated, go through the pushdown translation;
    with the decision log, the compared side keeps the entries it has a stored finding of, those it never
    judged, and those its context-dependent rules may flag."""
    terms: list[Any] = []
    for side, rules in ((after, after.entry_rules), (before, before.entry_rules if before else None)):
        if side is None or rules is None:
            continue
        if side is before and logged is not None:
            t, v = EntryRow.__table__, ViolationRow.__table__
            stored = _stored(logged, side.reused).where(v.c.entry_id == t.c.id)
            terms.append(exists(stored.with_only_columns(v.c.entry_id).correlate(t)))
            terms.append(~_judged(logged).element)
            rules = side.fresh_rules
            if rules is None:
                continue
        term = _maybe(session, rules)
        if term is None:
            return None
        terms.append(term)
    return or_(*terms) if terms else None


def _maybe(session: Session, rules: RuleSet, facts: bool = False) -> Any:
    """Entries any per-entry rule of ``rules`` may flag, as far as SQL can tell (None: any entry), over
    ``entries`` or ``entry_facts``."""
    aliased = frozenset({"timekeeper_classification"}) if getattr(rules, "classifications", None) else frozenset()
    translator = Translator(session.get_bind().dialect.name, unreadable=aliased, facts=facts)
    return translator.any_maybe([c.condition for c in compile_ruleset(rules).rules])


def _rows(session: Session, query: Select[Any]) -> Iterator[Any]:
    def generate() -> Iterator[Any]:
        for rows in _stream(session, query):
            yield from rows
    return generate()


def _window_ids(window: Window) -> Any:
    """A subquery of the ids of the entries in the window, or None when the window is everything."""
    if window.start is None and window.end is None and not window.clients:
        return None
    return select(EntryRow.id).where(*_filters(window, []))


def _day_pass(session: Session, result: Backtest, tally: _Tally, after: _Side, before: _Side | None,
              window: Window, scopes: list[RuleSet], ctx: EvaluationContext, progress: Progress | None) -> None:
    """The changed timekeeper-day aggregates of both sides: time entries ordered by timekeeper, date and id,
    in chunks of whole days."""
    fields = set(APPLIES_FIELDS) | DAY_FIELDS
    runners = []
    for side in (after, before):
        if side is not None and side.day_rules is not None:
            compiled = compile_ruleset(side.day_rules)
            for scope in compiled.scopes.values():
                fields |= _node_fields(scope)
            runners.append((side, _Aggregates(side.day_rules, ctx)))
    days = None
    try:  # the narrow copy when it has every entry and every field the rules read
        if not _facts_complete(session, window):
            raise _NotGroupable("entries without their facts")
        reader = _Reader(session, fields, facts=True)
        t = reader.table
        query = (reader.select().where(*_filters(window, scopes, t), t.c.entry_kind == "time",
                                       t.c.timekeeper_key.isnot(None))
                 .order_by(t.c.timekeeper_key, t.c.work_date, t.c.entry_id))
        days = _suspect_days(session, [side.day_rules for side, _ in runners], window, scopes)
        if days is not None:
            query = query.join_from(t, days, and_(days.c.timekeeper_key == t.c.timekeeper_key,
                                                  days.c.work_date == t.c.work_date))
    except _NotGroupable:
        reader = _Reader(session, fields)
        t = EntryRow.__table__
        query = (reader.select().where(*_filters(window, scopes), t.c.entry_kind == "time",
                                       t.c.timekeeper_key.isnot(None))
                 .order_by(t.c.timekeeper_key, t.c.work_date, t.c.id))
    day = _COLUMN_CONVERTERS[dt.date.fromisoformat]
    # How many rows the days the database picks hold is not known before they are read (counting them would find
    # the days twice): the progress then counts up without a total.
    total = _count(session, query) if progress is not None and days is None else 0
    pending: list[_Light] = []
    done = 0

    def judge(chunk: list[_Light]) -> None:
        flags: dict[tuple[int, str], list[bool]] = {}
        for side, aggregates in runners:
            for k, rule_id in aggregates.hits(chunk):
                flags.setdefault((k, rule_id), [False, False])[0 if side is after else 1] = True
        tally.flagged(flags, [e.entry_id for e in chunk], [e.entry_uid for e in chunk])

    for rows in _stream(session, query):
        for row in rows:
            light = reader.light(row)
            key = light.timekeeper_source_id or light.timekeeper_ledes_id or light.timekeeper_name
            if key != row[2] or light.work_date != day(row[3]):
                raise RuntimeError(f"entry {row[0]}: its timekeeper_key and work_date columns do not match its record")
            if pending and len(pending) >= CHUNK and (key, light.work_date) != _day_of(pending[-1]):
                judge(pending)
                done += len(pending)
                pending = []
                if progress is not None:
                    progress("daily aggregates", done, total)
            pending.append(light)
        result.entries_read += len(rows)
    if pending:
        judge(pending)
        done += len(pending)
        if progress is not None:
            progress("daily aggregates", done, total)


def _suspect_days(session: Session, rulesets: Sequence[RuleSet], window: Window,
                  scopes: Sequence[RuleSet]) -> Any:
    """The timekeeper-days where a changed daily aggregate may flag something on either side, found by the
    database (``GROUP BY ... HAVING`` over ``entry_facts``), as a subquery of (timekeeper_key, work_date); None
    when some rule cannot be told so (every day is read). A superset, so the Python judges decide:
    - ``daily_hours_cap``: days whose billable time (charged, with hours) adds up to more than the lowest cap, each
      entry's hours counted if positive, every scope and status ignored (a scoped total can only be smaller);
    - ``duplicate``: days with two such entries of the same task code and hours (narratives not compared).
    On SQLite decimals are summed and compared as REAL, within a margin far wider than a double's error."""
    t = EntryFacts.__table__
    pg = session.get_bind().dialect.name == "postgresql"
    caps: list[Decimal] = []
    duplicates = False
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.type == "daily_hours_cap":
                caps.append(Decimal(str(rule.params["max_hours"])))
            elif rule.type == "duplicate":
                duplicates = True
            else:
                return None
    counted = and_(*_filters(window, scopes, t), t.c.entry_kind == "time", t.c.timekeeper_key.isnot(None),
                   t.c.hours_billed.isnot(None), t.c.billable.is_(True),
                   or_(t.c.no_charge.is_(None), t.c.no_charge.is_(False)))
    hours = t.c.hours_billed if pg else cast(t.c.hours_billed, Float)
    tests = []
    if caps:
        cap = min(caps)
        total = func.sum(case((hours > (Decimal(0) if pg else 0.0), hours), else_=None))
        tests.append(total > (cap if pg else float(cap) - 1e-6 * max(1.0, float(cap))))
    if duplicates:  # some (task code, hours) twice: fewer distinct pairs than entries (equal hours, equal text)
        pair = func.coalesce(t.c.utbms_task_code, "") + "|" + cast(cast(t.c.hours_billed, Float), String)
        tests.append(func.count() > func.count(pair.distinct()))
    if not tests:
        return None
    # One pass over the window, sorted by the database: on SQLite grouping by the key as is would walk the
    # timekeeper-day index and read every row through it (twice as slow as a scan and a sort).
    key = t.c.timekeeper_key if pg else t.c.timekeeper_key + ""
    return (select(key.label("timekeeper_key"), t.c.work_date).where(counted).group_by(key, t.c.work_date)
            .having(or_(*tests)).subquery("suspect_days"))


def _day_of(e: _Light) -> tuple[str | None, dt.date]:
    return (e.timekeeper_source_id or e.timekeeper_ledes_id or e.timekeeper_name, e.work_date)


def _whole_pass(session: Session, result: Backtest, tally: _Tally, after: _Side, before: _Side | None,
                window: Window, scopes: list[RuleSet], ctx: EvaluationContext, progress: Progress | None) -> None:
    """The other changed aggregates. Those whose groups stay within a matter (``MATTER_GROUPED``) are judged
    chunk by chunk over light entries ordered by matter, work date and id (:func:`_light_matter_chunks`: memory
    bounded by the chunk, budgets' totals carried from chunk to chunk); any other type over the whole window at
    once, in full (no such type is registered today)."""
    sides = [side for side in (after, before) if side is not None and side.whole_rules is not None]
    by_sql = _budgets_by_sql(session, sides, window)
    for rule_id in by_sql:
        _budget_pass(session, result, tally, rule_id, after, before, window, scopes, progress)
    if by_sql:  # the rest of the whole rules, if any, as before
        rest = [(side, [r.id for r in side.whole_rules.rules if r.id not in by_sql])  # type: ignore[union-attr]
                for side in sides]
        sides = [dataclasses.replace(side, whole_rules=_subset(side.ruleset, ids)) for side, ids in rest if ids]
        after = next((side for side in sides if side.name == after.name), after)
        before = next((side for side in sides if before is not None and side.name == before.name), before)
        if not sides:
            return
    if all(rule.type in MATTER_GROUPED for side in sides for rule in side.whole_rules.rules):  # type: ignore[union-attr]
        runners = [(side, _Aggregates(side.whole_rules, ctx), _Carry(side.ruleset, side.whole_rules))  # type: ignore[arg-type]
                   for side in sides]
        fields = _matter_fields([side.whole_rules for side in sides])  # type: ignore[misc]
        query, reader = _matter_light_query(session, fields, window, scopes)
        total = _count(session, query) if progress is not None else 0
        done = 0
        for chunk in _light_matter_chunks(session, query, reader):
            flags: dict[tuple[int, str], list[bool]] = {}
            for side, aggregates, carry in runners:
                for k, rule_id in aggregates.hits(chunk, carry.before(chunk)):
                    flags.setdefault((k, rule_id), [False, False])[0 if side is after else 1] = True
                carry.after(chunk)
            tally.flagged(flags, [e.entry_id for e in chunk], [e.entry_uid for e in chunk])
            result.entries_read += len(chunk)
            done += len(chunk)
            if progress is not None:
                progress("matter aggregates", done, total)
        return
    ids: list[int] = []
    for rows in _stream(session, select(EntryRow.id).where(*_filters(window, scopes)).order_by(EntryRow.id)):
        ids.extend(r[0] for r in rows)
    full = _records(session, ids)
    everything = [full[i] for i in ids]
    result.entries_read += len(everything)
    result.entries_read_in_full += len(everything)
    found: dict[tuple[int, str], list[bool]] = {}
    for side in sides:
        for v in engine_evaluate.evaluate(everything, side.whole_rules, context=ctx,  # type: ignore[arg-type]
                                          backend="python", statuses=("active",)):
            found.setdefault((v.entry_index, v.rule_id), [False, False])[0 if side is after else 1] = True
    tally.flagged(found, ids, [e.entry_uid for e in everything])
    if progress is not None:
        progress("other aggregates", len(everything), len(everything))


def _matter_fields(rulesets: Iterable[RuleSet]) -> set[str]:
    """What the ``MATTER_GROUPED`` rules of ``rulesets`` read of an entry: their types' fields, their scopes' and
    what tells which rule set governs it."""
    fields = set(APPLIES_FIELDS) | MATTER_FIELDS
    for rules in rulesets:
        for scope in compile_ruleset(rules).scopes.values():
            fields |= _node_fields(scope)
    return fields


def _budgets_by_sql(session: Session, sides: Sequence[_Side], window: Window) -> list[str]:
    """The changed budget rules whose running totals the database can keep (a window sum per budget): those
    that are budgets on every side that judges them, when every entry in the window has its ``entry_facts``
    row. (A budget has no ``when``: its rule set refuses one.)"""
    ids: dict[str, bool] = {}
    for side in sides:
        for rule in side.whole_rules.rules:  # type: ignore[union-attr]
            ids[rule.id] = ids.get(rule.id, True) and rule.type == "budget" and rule.when is None
    wanted = sorted(rule_id for rule_id, ok in ids.items() if ok)
    return wanted if wanted and _facts_complete(session, window) else []


def _period(session: Session, budget: Budget, day: Any) -> Any:
    """The start of the budget period a work date counts in, as the database can compute it (a constant when
    the budget has no periods: its own dates bound it)."""
    if budget.per is None:
        return None
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(budget.per, cast(day, DateTime))
    text_day = type_coerce(day, String)
    if budget.per == "month":
        return func.substr(text_day, 1, 7, type_=String)
    if budget.per == "year":
        return func.substr(text_day, 1, 4, type_=String)
    quarter = (cast(func.substr(text_day, 6, 2, type_=String), Integer) + 2) // 3
    return func.substr(text_day, 1, 4, type_=String) + "Q" + cast(quarter, String)


class _BudgetSum:
    """SQLite window aggregate: a budget's running total, in ``Decimal`` (SQLite has no exact decimal), over the
    rows it counts; its value says whether the current row counts and is at or over the line."""

    def __init__(self) -> None:
        self.total = Decimal(0)
        self.flag = 0

    def step(self, counts: Any, amount: Any, quantity: Any, rate: Any, adjustment: Any, limit: Any,
             threshold: Any) -> None:
        self.flag = 0
        net = _net(counts, amount, quantity, rate, adjustment)
        if net is None:
            return
        self.total += net
        over = self.total > _exact(limit)
        self.flag = int(over or (threshold is not None and self.total >= _exact(threshold)))

    def inverse(self, counts: Any, amount: Any, quantity: Any, rate: Any, adjustment: Any, *_: Any) -> None:
        """A row leaving the frame (the budget's frame only grows, so SQLite does not call this)."""
        net = _net(counts, amount, quantity, rate, adjustment)
        if net is not None:
            self.total -= net

    def value(self) -> int:
        return self.flag

    def finalize(self) -> int:
        return self.flag


def _net(counts: Any, amount: Any, quantity: Any, rate: Any, adjustment: Any) -> Decimal | None:
    """What a row adds to a budget's total: its amount (else quantity x rate) plus its adjustment; None when the
    budget does not count it or it has no amount."""
    if not counts:
        return None
    if amount is not None:
        billed = _exact(amount)
    elif quantity is not None and rate is not None:
        billed = _exact(quantity) * _exact(rate)
    else:
        return None
    return billed + _exact(adjustment) if adjustment is not None else billed


def _exact(value: Any) -> Decimal:
    if isinstance(value, float):
        raise TypeError("a money value reached the budget's total as a float")
    return value if isinstance(value, Decimal) else Decimal(value)


BUDGET_SUM = "ocg_budget_sum"


def _budget_pass(session: Session, result: Backtest, tally: _Tally, rule_id: str, after: _Side,
                 before: _Side | None, window: Window, scopes: list[RuleSet], progress: Progress | None) -> None:
    """A changed budget rule judged by the database: per side and budget, the running total of the charged
    entries it counts, by matter and period in work-date order (on one date, in the order the entries were
    first stored), as a window sum; an entry is flagged where it counts and the total including it is at or over
    the warning line, or over the budget. PostgreSQL sums ``numeric``; SQLite a ``Decimal`` aggregate registered
    on the connection. Only the flagged entries come back, in entry order."""
    f = EntryFacts.__table__
    pg = session.get_bind().dialect.name == "postgresql"
    if not pg:
        raw = session.connection().connection.driver_connection
        raw.create_window_function(BUDGET_SUM, 7, _BudgetSum)  # type: ignore[union-attr]
    order = (f.c.work_date, f.c.entry_id)
    flags: list[Any] = []
    for side in (after, before):
        if side is None or side.whole_rules is None or rule_id not in {r.id for r in side.whole_rules.rules}:
            flags.append(literal(0))
            continue
        rule = side.ruleset.rule(rule_id)
        kinds = ["time", "expense"] if rule.params.get("include_expenses") else ["time"]
        counted = [_governed(side.ruleset, f), f.c.entry_kind.in_(kinds), f.c.billable.is_(True),
                   or_(f.c.no_charge.is_(None), f.c.no_charge.is_(False)), f.c.law_firm_matter_id.isnot(None)]
        if rule.effective_from is not None:
            counted.append(f.c.work_date >= rule.effective_from)
        if rule.effective_to is not None:
            counted.append(f.c.work_date <= rule.effective_to)
        warn = rule.params.get("warn_at")
        crossed: list[Any] = []
        for budget in budgets_of(rule):
            covers = list(counted)
            if budget.matter is not None:
                covers.append(f.c.law_firm_matter_id == budget.matter)
            if budget.tasks is not None:
                covers.append(f.c.utbms_task_code.in_(sorted(budget.tasks)))
            if budget.start is not None:
                covers.append(f.c.work_date >= budget.start)
            if budget.end is not None:
                covers.append(f.c.work_date <= budget.end)
            threshold = budget.amount * Decimal(warn) if warn is not None else None
            period = _period(session, budget, f.c.work_date)
            within: dict[str, Any] = dict(
                partition_by=(f.c.law_firm_matter_id,) if period is None else (f.c.law_firm_matter_id, period),
                order_by=order, rows=(None, 0))
            if pg:
                net = (func.coalesce(f.c.amount, f.c.quantity * f.c.rate)
                       + func.coalesce(f.c.adjustment_amount, literal(Decimal(0), ExactDecimal())))
                covers.append(net.isnot(None))  # an entry with no amount charges nothing, and is not flagged
                total = func.sum(case((and_(*covers), net), else_=None)).over(**within)
                line = total > literal(budget.amount, ExactDecimal())
                if threshold is not None:
                    line = or_(line, total >= literal(threshold, ExactDecimal()))
                crossed.append(and_(*covers, line))
            else:
                total = getattr(func, BUDGET_SUM)(
                    _flag(session, and_(*covers)), type_coerce(f.c.amount, String), type_coerce(f.c.quantity, String),
                    type_coerce(f.c.rate, String), type_coerce(f.c.adjustment_amount, String), str(budget.amount),
                    None if threshold is None else str(threshold)).over(**within)
                crossed.append(total == 1)
        flags.append(_flag(session, or_(*crossed)))
    judged = (select(f.c.entry_id, f.c.entry_uid, flags[0].label("mine"), flags[1].label("theirs"))
              .where(*_filters(window, scopes, f)).subquery("budget_totals"))
    query = (select(judged.c.entry_id, judged.c.entry_uid, judged.c.mine, judged.c.theirs)
             .where(or_(judged.c.mine == 1, judged.c.theirs == 1)).order_by(judged.c.entry_id))
    read = 0
    for rows in _stream(session, query):
        for entry_id, uid, mine, theirs in rows:
            if rule_id in tally.diffs:
                tally.pair(rule_id, entry_id, uid, bool(theirs), bool(mine))
        read += len(rows)
        if progress is not None:
            progress(f"budget {rule_id}", read, 0)
    result.entries_read += read


def _matter_light_query(session: Session, fields: Iterable[str], window: Window, scopes: Sequence[RuleSet],
                        matter: str | None = None) -> tuple[Select[Any], _Reader]:
    """The light entries of the window that have a matter, ordered by matter, work date and id: from
    ``entry_facts`` when it has every entry, else from the entries (columns and records). With ``matter``, that
    matter's only, from the entries (through their matter index)."""
    if matter is None and _facts_complete(session, window):
        reader = _Reader(session, fields, facts=True)
        t = reader.table
        terms = _filters(window, scopes, t)
        order = t.c.entry_id
    else:
        reader = _Reader(session, fields, columns=True)
        t = reader.table
        terms = _filters(window, scopes)
        order = t.c.id
    terms.append(t.c.law_firm_matter_id.isnot(None) if matter is None else t.c.law_firm_matter_id == matter)
    return reader.select().where(*terms).order_by(t.c.law_firm_matter_id, t.c.work_date, order), reader


def _light_matter_chunks(session: Session, query: Select[Any], reader: _Reader) -> Iterator[list[_Light]]:
    """Chunks of about ``CHUNK`` light entries, each holding whole matter-days."""
    pending: list[_Light] = []
    for rows in _stream(session, query):
        for row in rows:
            light = reader.light(row)
            if (len(pending) >= CHUNK and (light.law_firm_matter_id, light.work_date)
                    != (pending[-1].law_firm_matter_id, pending[-1].work_date)):
                yield pending
                pending = []
            pending.append(light)
    if pending:
        yield pending


@dataclass(frozen=True, slots=True)
class _Counted:
    """What ``BudgetRule.carried_sums`` reads of an entry."""

    entry_kind: str
    ledes_client_id: str | None
    client_source_id: str | None
    law_firm_matter_id: str | None
    client_matter_id: str | None
    matter_source_id: str | None
    utbms_task_code: str | None
    work_date: dt.date
    charged: Decimal | None


class _Carry:
    """One side's budget totals from chunk to chunk of :func:`_light_matter_chunks`: only the last matter of a chunk
    can go on in the next, so only its totals are kept (memory bounded by one matter's budget periods)."""

    def __init__(self, ruleset: RuleSet, judged: RuleSet) -> None:
        self.ruleset = ruleset
        self.rules = [r for r in judged.rules if r.type == "budget"]
        self.matter: str | None = None
        self.sums: dict[str, dict[Any, Decimal]] = {r.id: {} for r in self.rules}

    def before(self, chunk: Sequence[Any]) -> dict[str, Carried] | None:
        """What the chunk's budgets start from: the totals of its first matter's earlier entries, if any (the
        chunk's entries, full or light, in order)."""
        if not self.rules or not chunk or chunk[0].law_firm_matter_id != self.matter:
            return None
        assert self.matter is not None
        since = {self.matter: chunk[0].work_date}
        return {rule_id: Carried(since, dict(sums)) for rule_id, sums in self.sums.items()}

    def after(self, chunk: Sequence[Any]) -> None:
        if not self.rules or not chunk:
            return
        matter = chunk[-1].law_firm_matter_id
        going_on = matter == self.matter
        rows = [_Counted(e.entry_kind.value, e.ledes_client_id, e.client_source_id, e.law_firm_matter_id,
                         e.client_matter_id, e.matter_source_id, e.utbms_task_code, e.work_date, charged(e, True))
                for e in chunk if e.law_firm_matter_id == matter]
        for rule in self.rules:
            sums = self.sums[rule.id] if going_on else {}
            for key, amount in BudgetRule().carried_sums(rule, self.ruleset, rows).items():
                sums[key] = sums.get(key, Decimal(0)) + amount
            self.sums[rule.id] = sums
        self.matter = matter


def _examples(session: Session, tally: _Tally, after: _Side, before: _Side | None, window: Window,
              ctx: EvaluationContext) -> list[Example]:
    """The examples kept, each explained by the version that flags it: evaluated again, in full, with the
    entries it is judged with (the other entries of its day for a daily aggregate; its chunk of its matter, with
    the totals carried into it, for attendance and budgets)."""
    kept = tally.examples()
    if not kept:
        return []
    out = []
    full = _records(session, sorted({entry_id for _, _, _, entry_id in kept}))
    for rule_id, change, uid, entry_id in kept:
        side = after if change == NEWLY else before
        assert side is not None
        rule = side.ruleset.rule(rule_id)
        entry = full[entry_id]
        carried = None
        if not type_of(rule).aggregate:
            group = [entry]
        elif rule.type in DAY_GROUPED:
            group = _day_entries(session, entry_id, window)
        elif rule.type in MATTER_GROUPED:
            group, carried = _matter_day_of(session, side.ruleset, rule, entry, window)
        else:
            group = _window_entries(session, window)
        found = None
        for v in engine_evaluate.evaluate(group, _subset(side.ruleset, [rule_id]), context=ctx, backend="python",
                                          statuses=("active",), carried=carried):
            if v.entry_uid == uid:
                found = v
                break
        if found is None:
            if side is after:
                raise RuntimeError(f"backtest: {rule_id} does not flag {uid} when judged in full")
            # A finding from the decision log that the engine no longer makes of this record.
            out.append(Example(entry_id, uid, rule_id, change, "stored finding; not made when judged again now"))
            continue
        example = Example(entry_id, uid, rule_id, change, found.message, found.severity,
                          [ev.as_dict() for ev in found.evidence],
                          found.adjustment.as_dict() if found.adjustment is not None else None,
                          list(found.contributing))
        out.append(example)
    return out


def _day_entries(session: Session, entry_id: int, window: Window) -> list[Entry]:
    t = EntryRow.__table__
    key, day = session.execute(select(t.c.timekeeper_key, t.c.work_date).where(t.c.id == entry_id)).one()
    rows = session.execute(select(t.c.record).where(*_filters(window, []), t.c.timekeeper_key == key,
                                                    t.c.work_date == day, t.c.entry_kind == "time")
                           .order_by(t.c.id))
    return [Entry.model_validate(record) for (record,) in rows]


def _matter_day_of(session: Session, ruleset: RuleSet, rule: Rule, entry: Entry,
                   window: Window) -> tuple[list[Entry], dict[str, Carried] | None]:
    """What an example of a matter-grouped rule is judged with, as :func:`_whole_pass` judges it: the entries of its
    matter-day, in full, and for a budget the totals carried into that day. Those totals come from the matter's
    earlier entries in the window, light and through the matter's index, from the earliest start of the periods the
    day counts in (from the matter's first entry when a budget has neither period nor start date)."""
    matter, day = entry.law_firm_matter_id, entry.work_date
    t = EntryRow.__table__
    ids = session.scalars(select(t.c.id).where(*_filters(window, [ruleset]), t.c.law_firm_matter_id == matter,
                                               t.c.work_date == day).order_by(t.c.id)).all()
    records = _records(session, ids)
    group = [records[i] for i in ids]
    if rule.type != "budget":
        return group, None
    rules = _subset(ruleset, [rule.id])
    carry = _Carry(ruleset, rules)
    starts = [budget.period_start(day) for budget in budgets_of(rule)]
    query, reader = _matter_light_query(session, _matter_fields([rules]), window, [ruleset], matter)
    earlier = reader.table.c.work_date
    query = query.where(earlier < day)
    if all(start is not None for start in starts):
        query = query.where(earlier >= min(starts))  # type: ignore[type-var]
    for chunk in _light_matter_chunks(session, query, reader):
        carry.after(chunk)
    return group, carry.before(group)


def _window_entries(session: Session, window: Window) -> list[Entry]:
    rows = session.execute(select(EntryRow.record).where(*_filters(window, [])).order_by(EntryRow.id))
    return [Entry.model_validate(record) for (record,) in rows]


# Per-entry rules by groups of alike entries ----------------------------------------------------------------------

class _NotGroupable(Exception):
    """The grouped pass cannot judge these rules (a field they read is not a column, or rows lack the columns)."""


def _grouped_fields(rule: Rule | None, ruleset: RuleSet | None, proposing: bool) -> frozenset[str]:
    if rule is None or ruleset is None:
        return frozenset()
    compiled = compile_ruleset(_subset(ruleset, [rule.id]))
    fields = set(_feature_fields(compiled.features.values()))
    if proposing:  # what the proposal reads, and the currency its write-down is added up in
        fields |= (type_of(rule).proposal_fields or WRITE_DOWN_FIELDS) | {"currency"}
    if ruleset.classifications:
        fields.add("timekeeper_classification")  # a firm's title the rule set maps is judged as its code
    if not fields <= set(FACT_FIELDS):
        raise _NotGroupable(rule.id)
    return frozenset(fields)


def _governed(ruleset: RuleSet, t: Any) -> Any:
    """``RuleSet.applies_to`` in SQL (clients, matters and work dates are columns)."""
    terms: list[Any] = []
    if ruleset.clients:
        clients = sorted(ruleset.clients)
        terms.append(or_(t.c.ledes_client_id.in_(clients), t.c.client_source_id.in_(clients)))
    if ruleset.matters:
        matters = sorted(ruleset.matters)
        terms.append(or_(t.c.law_firm_matter_id.in_(matters), t.c.client_matter_id.in_(matters),
                         t.c.matter_source_id.in_(matters)))
    if ruleset.effective_from is not None:
        terms.append(t.c.work_date >= ruleset.effective_from)
    if ruleset.effective_to is not None:
        terms.append(t.c.work_date <= ruleset.effective_to)
    return and_(*terms) if terms else true()


def _flag(session: Session, term: Any) -> Any:
    """A predicate as a value to select and group by (0 or 1 on both databases)."""
    return case((term, 1), else_=0)


def _grouped_pass(session: Session, result: Backtest, tally: _Tally, after: _Side, before: _Side | None,
                  other: RuleSetVersion | None, window: Window, scopes: list[RuleSet], ctx: EvaluationContext,
                  examples: int, progress: Progress | None) -> int:
    """The changed per-entry rules, one at a time, over groups of alike entries: the database keeps the entries
    the rule may flag on either side (the pushdown filters, the stored findings, the entries never judged) and
    groups them by the values the rule reads (a work date by where it falls among the dates the rule names),
    whether each version's scope governs them, and what the decision log holds of them; each group is judged once
    in Python with the engine's own code, and counts for all its entries. The smallest entry uids of each group
    come along for the examples. Raises :class:`_NotGroupable` before changing anything when it cannot."""
    if not _facts_complete(session, window):
        raise _NotGroupable("entries without their facts")
    rule_ids = sorted({r for s in (after, before) if s is not None and s.entry_rules is not None
                       for r in (c.rule.id for c in compile_ruleset(s.entry_rules).rules)})
    plans = []
    for rule_id in rule_ids:
        mine = _rule_of(after.entry_rules, rule_id)
        theirs = _rule_of(before.entry_rules, rule_id) if before is not None else None
        fields = (_grouped_fields(mine, after.ruleset, rule_id in after.proposing)
                  | _grouped_fields(theirs, before.ruleset if before else None,
                                    before is not None and rule_id in before.proposing))
        plans.append((rule_id, mine, theirs, fields))
    t, v = EntryFacts.__table__, ViolationRow.__table__
    logged = before is not None and before.entry_rules is not None and bool(before.reused) and other is not None
    # In one scan of the window: the entries the draft's rule set governs, and of those the rule sets may govern,
    # how many the compared version judged as they are (their findings come from the log) and how many not.
    scoped = and_(*_filters(window, scopes, t)[len(_filters(window, [], t)):]) if scopes else true()
    source, judged = _judged_join(session, other, t, t) if logged else (t, false())  # type: ignore[arg-type]
    counts = session.execute(select(func.count(case((_governed(after.ruleset, t), 1))),
                                    func.count(case((scoped, 1))), func.count(case((and_(scoped, judged), 1))))
                             .select_from(source).where(*_filters(window, [], t))).one()
    result.entries_checked = int(counts[0])
    unjudged_total = 0
    if logged:
        result.findings_reused, unjudged_total = int(counts[2]), int(counts[1]) - int(counts[2])
    for step, (rule_id, mine, theirs, fields) in enumerate(plans):
        conditions = [c for c in (_condition(after.ruleset, mine), _condition(before.ruleset if before else None,
                                                                                   theirs)) if c is not None]
        cuts = _date_cuts(conditions) if "work_date" in fields else None
        named = sorted(fields - {"work_date"} if cuts is not None else fields)
        columns = [type_coerce(t.c[name], NullType()).label(f"f_{name}") for name in named]
        if cuts is not None:
            columns.append(sum((_flag(session, t.c.work_date > c) + _flag(session, t.c.work_date >= c)
                                for c in cuts), literal(0)).label("f_bucket"))
        gov_a = _flag(session, _governed(after.ruleset, t)).label("gov_a")
        gov_b = (_flag(session, _governed(before.ruleset, t)) if before is not None else literal(0)).label("gov_b")
        stored_mode = logged and theirs is not None and rule_id in before.reused  # type: ignore[union-attr]
        flags = [gov_a, gov_b]
        keep: list[Any] = []
        source: Any = t
        if mine is not None:
            keep.append(_or_true(_maybe(session, _subset(after.ruleset, [rule_id]), facts=True)))
        if theirs is not None and before is not None:
            maybe_b = _or_true(_maybe(session, _subset(before.ruleset, [rule_id]), facts=True))
            if stored_mode:
                # The version's stored findings of the rule joined on (one per entry), the entries it judged as a
                # set: each read once, not looked up row by row.
                assert other is not None
                amount = (v.c.adjustment.op("->>")(literal("amount")) if session.get_bind().dialect.name ==
                          "postgresql" else func.json_extract(v.c.adjustment, "$.amount"))
                # Materialised first (through the rule's index), then joined: probing every entry's findings
                # would read the wide violations table row by row.
                found = (_stored(other, [rule_id]).with_only_columns(v.c.entry_id, amount.label("amount"))
                         .cte(f"stored_{step}").prefix_with("MATERIALIZED"))
                source, judged = _judged_join(session, other, t.outerjoin(found, found.c.entry_id == t.c.entry_id), t)
                flags += [_flag(session, judged).label("judged"),
                          _flag(session, found.c.entry_id.isnot(None)).label("stored"),
                          found.c.amount.label("stored_amount")]
                keep += [found.c.entry_id.isnot(None), and_(~judged, maybe_b)]
            else:
                keep.append(maybe_b)
        query = (select(*columns, *flags, t.c.entry_uid.label("entry_uid"), t.c.entry_id.label("entry_id"),
                        type_coerce(t.c.work_date, NullType()).label("day"))
                 .select_from(source).where(*_filters(window, scopes, t), or_(*keep)))
        judge_a = _Judge(_subset(after.ruleset, [rule_id]), ctx, after.proposing, scoped=False) if mine else None
        judge_b = (_Judge(_subset(before.ruleset, [rule_id]), ctx, before.proposing, scoped=False)
                   if theirs is not None and before is not None else None)
        convert = [(k, name, _COLUMN_CONVERTERS.get(_CONVERTERS[name][0], _CONVERTERS[name][0]),
                    _CONVERTERS[name][1]) for k, name in enumerate(named)]
        width = len(columns) + len(flags)  # the group's key: the values read, then the flags
        place = {c.name: k for k, c in enumerate((*columns, *flags))}
        keep_uids = max(examples, 1)
        plan = _GroupPlan(rule_id, convert, cuts, place, judge_a, judge_b, stored_mode)

        # Grouped as the rows stream by, in a table of at most MEMO groups: when it fills, its groups are judged
        # and it starts again (a group split so is judged twice; its counts still add up, and each part offers
        # its own smallest uids, so the examples are still the smallest overall).
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for rows in _stream(session, query):
            for row in rows:
                key = tuple(row[:width])
                found = groups.get(key)
                uid = row[width]
                if found is None:
                    if len(groups) >= MEMO:
                        plan.settle(groups, tally, result)
                        groups = {}
                    groups[key] = [1, row[width + 2], [(uid, row[width + 1])]]
                    continue
                found[0] += 1
                kept = found[2]
                if len(kept) < keep_uids:
                    kept.append((uid, row[width + 1]))
                    kept.sort()
                elif uid < kept[-1][0]:
                    kept[-1] = (uid, row[width + 1])
                    kept.sort()
        plan.settle(groups, tally, result)
        if progress is not None:
            progress("per-entry rules", step + 1, len(plans))
    return unjudged_total


@dataclass
class _GroupPlan:
    """How the grouped pass judges one rule's groups: the key's values as typed fields, the work date's cuts,
    where the flags sit in the key, each side's judge, and whether the compared side reads the decision log."""

    rule_id: str
    convert: list[tuple[int, str, Any, Any]]  # (position in the key, field, converter, default)
    cuts: tuple[dt.date, ...] | None
    place: dict[str, int]
    judge_a: _Judge | None
    judge_b: _Judge | None
    stored_mode: bool

    def settle(self, groups: dict[tuple[Any, ...], list[Any]], tally: _Tally, result: Backtest) -> None:
        """Judge each group once and count it for all its entries."""
        place, rule_id, day = self.place, self.rule_id, _COLUMN_CONVERTERS[dt.date.fromisoformat]
        for key, (n, first_day, kept) in groups.items():
            values: dict[str, Any] = {"entry_id": kept[0][1], "entry_uid": kept[0][0]}
            for k, name, fn, default in self.convert:
                raw = key[k]
                values[name] = default if raw is None else fn(raw) if fn is not None else raw
            if self.cuts is not None:
                values["work_date"] = day(first_day)
            e = _Light(values)
            a_hit, a_amount = (_one(self.judge_a, e) if self.judge_a is not None and key[place["gov_a"]]
                               else (False, None))
            if self.stored_mode and key[place["judged"]]:
                b_hit = bool(key[place["stored"]])
                raw_amount = key[place["stored_amount"]]
                b_amount = Decimal(raw_amount) if b_hit and raw_amount is not None else None
            else:
                b_hit, b_amount = (_one(self.judge_b, e) if self.judge_b is not None and key[place["gov_b"]]
                                   else (False, None))
            result.entries_read += n
            tally.pairs(rule_id, n, b_hit, a_hit)
            currency = values.get("currency")
            if a_hit and a_amount is not None:
                tally.write_down(rule_id, False, currency, a_amount * n)
            if b_hit and b_amount is not None:
                tally.write_down(rule_id, True, currency, b_amount * n)
            if a_hit != b_hit:
                change = NEWLY if a_hit else NO_LONGER
                for uid, entry_id in kept:
                    tally.offer(rule_id, change, uid, entry_id)


def _or_true(term: Any) -> Any:
    return true() if term is None else term


def _rule_of(rules: RuleSet | None, rule_id: str) -> Rule | None:
    if rules is None:
        return None
    return next((r for r in rules.rules if r.id == rule_id), None)


def _condition(ruleset: RuleSet | None, rule: Rule | None) -> Node | None:
    if ruleset is None or rule is None:
        return None
    return compile_ruleset(_subset(ruleset, [rule.id])).rules[0].condition


def _one(judge: _Judge, e: _Light) -> tuple[bool, Decimal | None]:
    """Whether the judge's one rule flags the entry, and the write-down it proposes."""
    found = judge.judge([e])
    if not found:
        return False, None
    _, _, amount = found[0]
    if amount is _FULL:
        raise RuntimeError(f"backtest: the write-down of {found[0][1]} reads a field that is not a column")
    return True, amount


__all__ = ["Backtest", "BacktestError", "Example", "RuleDiff", "Window", "backtest", "differences", "summary"]
