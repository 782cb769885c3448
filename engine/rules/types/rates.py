"""``rate_cap``: the most a timekeeper may bill per hour, by classification, by timekeeper, per matter, against the
standard rate, and in periods of a schedule (each entry judged by the caps in force on its work date)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.model import Entry, FeeBasis
from engine.rules.conditions import Evidence, FieldRef, Node, Not, all_of, any_of
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    ACTION,
    DATE_TEXT,
    LIST_REF,
    POSITIVE,
    SHARE,
    Adjustment,
    Path,
    RuleProblem,
    RuleType,
    is_time,
    leaf,
    one_of,
    parse_share,
    percent,
    register,
)
from engine.rules.types.condition import canonical_class

CAPS = {"type": "object", "additionalProperties": POSITIVE, "minProperties": 1}
TIMEKEEPER_FIELDS = ["timekeeper_ledes_id", "timekeeper_source_id", "timekeeper_name"]
FREEZE = {
    "type": "object",
    "properties": {"as_of": DATE_TEXT, "by_timekeeper": CAPS},
    "required": ["as_of", "by_timekeeper"],
    "additionalProperties": False,
}
# What a table of caps may hold: the firm-wide one, a matter override's, a schedule period's.
STANDARD_FORMS = {"at_most_standard_rate": {"type": "boolean"}, "standard_rate_discount": SHARE}
TABLE = {"by_classification": CAPS, "by_timekeeper": CAPS, "rate_freeze": FREEZE, **STANDARD_FORMS}
OVERRIDE = {
    "type": "object",
    "properties": {"matter": {"type": "string"}, **TABLE},
    "required": ["matter"],
    "additionalProperties": False,
}
OVERRIDES = {"type": "array", "items": OVERRIDE}
PERIOD_KEYS = [*TABLE, "matter_overrides"]
PERIOD = {
    "type": "object",
    "properties": {"from": DATE_TEXT, "to": DATE_TEXT, **TABLE, "matter_overrides": OVERRIDES},
    "required": ["from"],
    "additionalProperties": False,
    "anyOf": [{"required": [key]} for key in PERIOD_KEYS],
}

LEVELS = ("matter_timekeeper", "matter_classification", "timekeeper", "classification")
STANDARD_LEVELS = ("matter_standard_rate", "standard_rate")
DEFAULT_PRECEDENCE = (*LEVELS, *STANDARD_LEVELS)


@dataclass
class Table:
    """The caps of one scope (firm-wide or one matter's override) in one period; each cap with a note saying
    where it comes from, for the evidence."""

    timekeepers: dict[str, tuple[Decimal, str]] = field(default_factory=dict)
    classes: dict[str, tuple[Decimal, str]] = field(default_factory=dict)
    standard: tuple[Decimal, str] | None = None  # the factor of the standard rate (0.9: 10% off)


@dataclass
class Period:
    start: dt.date | None
    end: dt.date | None  # inclusive; None: open-ended
    firm: Table
    overrides: list[tuple[str, Table]]
    path: Path

    def describe(self) -> str:
        if self.start is None:
            return ""
        return f"in force {self.start} to {self.end}" if self.end else f"in force from {self.start}"


@register
class RateCap(RuleType):
    name = "rate_cap"
    summary = ("Hourly rate above the cap for the timekeeper: matter overrides first, then the timekeeper's "
               "own cap, then the classification's, then the standard rate (the order can be stated), each "
               "table in force for the period of a schedule. Flat and fixed fees are exempt.")
    params_schema = {
        "type": "object",
        "properties": {
            **TABLE,
            "matter_overrides": OVERRIDES,
            "schedule": {"type": "array", "items": PERIOD, "minItems": 1},
            "precedence": {"type": "array", "items": {"enum": list(DEFAULT_PRECEDENCE)}, "minItems": 1},
            "timekeeper_field": {"enum": TIMEKEEPER_FIELDS, "default": "timekeeper_ledes_id"},
            "exempt_fee_bases": {"oneOf": [{"type": "array", "items": {"enum": [b.value for b in FeeBasis]}},
                                           LIST_REF],
                                 "default": ["flat", "fixed_template", "contingency"]},
            "action": ACTION,
        },
        "additionalProperties": False,
        "anyOf": [{"required": [key]} for key in [*PERIOD_KEYS, "schedule"]],
    }
    message_variables = ("cap_source",)
    default_message = "Rate {actual} is above the {expected} cap"
    proposal_fields = frozenset({"rate", "quantity", "hours_billed"})

    # Checks --------------------------------------------------------------------------------------------

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        p = rule.params
        if "schedule" in p:
            for key in PERIOD_KEYS:
                if key in p:
                    yield RuleProblem(("params", key), f"{key} belongs inside the schedule's periods: a rule with "
                                      "a schedule holds all its caps there", at_key=True)
        yield from _precedence_problems(p)
        try:
            _periods(rule, ruleset)
        except RuleProblem as problem:
            yield problem
            return
        if "schedule" in p:
            yield from schedule_problems(p["schedule"], ("params", "schedule"))

    # Compilation ---------------------------------------------------------------------------------------

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        """One case per (period, scope, cap): at most one case can hold for an entry, so the cap it names applies.

        In an overridden matter the levels come in the stated ``precedence`` (by default: the override's
        timekeeper caps, its classification caps, the firm-wide timekeeper caps, the firm-wide classification
        caps, then the override's and the firm's standard-rate forms). Elsewhere the firm-wide levels in the
        same order. A case excludes the entries an earlier level already covers, which keeps every case a
        short conjunction (durable-rules allows 32 expressions per condition).
        """
        p = rule.params
        tk_field = p.get("timekeeper_field", "timekeeper_ledes_id")
        exempt = p.get("exempt_fee_bases", ["flat", "fixed_template", "contingency"])
        order = precedence(p)
        why = f"first that applies of: {', '.join(order)}"
        cases: list[Node] = []
        for period in _periods(rule, ruleset):
            dates = [leaf("work_date", "ge", period.start) if period.start else None,
                     leaf("work_date", "le", period.end) if period.end else None]
            when = period.describe()
            for matter, table in period.overrides:
                levels = [_level(name, table if name.startswith("matter_") else period.firm) for name in order]
                scope = all_of(*dates, leaf("law_firm_matter_id", "eq", matter))
                cases.extend(_cases(levels, scope, tk_field, when, why))
            levels = [_level(name, period.firm) for name in order if not name.startswith("matter_")]
            matters = [m for m, _ in period.overrides]
            elsewhere = Not(one_of("law_firm_matter_id", matters)) if matters else None
            cases.extend(_cases(levels, all_of(*dates, elsewhere) if any(dates) or elsewhere else None,
                                tk_field, when, why))
        guards: list[Node | None] = [is_time(), leaf("fee_basis", "not_in", exempt) if exempt else None]
        if ruleset.currency:
            # Caps are in the rule set's currency; an entry without a currency is still checked.
            guards.append(any_of(leaf("currency", "missing"), leaf("currency", "eq", ruleset.currency)))
        if not cases:
            return all_of(*guards, leaf("entry_kind", "missing"))  # nothing capped: never holds
        return all_of(*guards, any_of(*cases))

    # Explanation ---------------------------------------------------------------------------------------

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        decisive = next((ev for ev in reversed(evidence) if ev.field == "rate"), None)
        return {"cap_source": decisive.basis if decisive is not None and decisive.basis else "-"}

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        if rule.action != "adjust" or entry.rate is None:
            return None
        cap = next((ev.expected for ev in evidence if ev.field == "rate" and ev.operator == "gt"), None)
        if cap is None:
            return None
        units = entry.quantity if entry.quantity is not None else entry.hours_billed
        if units is None:
            return None
        return Adjustment("rate", entry.rate, cap, ((cap - entry.rate) * units).quantize(Decimal("0.01")))

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        p = rule.params
        tk_field = p.get("timekeeper_field", "timekeeper_ledes_id")
        exempt = p.get("exempt_fee_bases", ["flat", "fixed_template", "contingency"])
        currency = f" {ruleset.currency}" if ruleset.currency else ""
        lines = [f"Flags time entries whose hourly rate is above the{currency} cap that applies to them."]
        lines.append(f"Timekeepers are named by {tk_field}; fee bases not checked: "
                     f"{', '.join(exempt) if exempt else 'none'}.")
        if ruleset.currency:
            lines.append(f"Caps are in {ruleset.currency}; entries in another currency are not checked, entries "
                         "without a currency are.")
        order = precedence(p)
        stated = "as stated" if "precedence" in p else "the default"
        lines.append(f"Which cap applies ({stated}): the first that exists of " + " > ".join(order) + ".")
        periods = _periods(rule, ruleset)
        for period in periods:
            if period.start is not None:
                lines.append(f"Period {period.start} to {period.end or 'open-ended'}:")
            lines.extend(_describe_table("  firm-wide", period.firm))
            for matter, table in period.overrides:
                lines.extend(_describe_table(f"  matter {matter}", table))
        if periods and periods[0].start is not None:
            lines.append(f"Entries dated before {periods[0].start} are not checked"
                         + (f", nor after {periods[-1].end}." if periods[-1].end else "."))
        if _uses_standard_rate(periods):
            lines.append("A standard-rate cap uses the entry's standard_rate (the timekeeper table's rate on the "
                         "work date); an entry without one is not held to it.")
        lines.append("Action: " + ("propose a write-down of the rate to the cap." if rule.action == "adjust"
                                   else "flag only."))
        return lines


# Levels and cases -------------------------------------------------------------------------------------------

def precedence(params: dict[str, Any]) -> tuple[str, ...]:
    """The order in force: as stated (the standard-rate levels last when not named), else the default."""
    stated = params.get("precedence")
    if not stated:
        return DEFAULT_PRECEDENCE
    return (*stated, *[level for level in DEFAULT_PRECEDENCE if level not in stated])


def _precedence_problems(params: dict[str, Any]) -> Iterator[RuleProblem]:
    stated = params.get("precedence")
    if stated is None:
        return
    for i, level in enumerate(stated):
        if level in stated[:i]:
            yield RuleProblem(("params", "precedence", i), f"{level} is named twice")
    missing = [level for level in LEVELS if level not in stated]
    if missing:
        yield RuleProblem(("params", "precedence"), "precedence orders all of " + ", ".join(LEVELS)
                          + f" (and optionally {', '.join(STANDARD_LEVELS)}); missing: {', '.join(missing)}")


def _level(name: str, table: Table) -> tuple[str, Any]:
    if name.endswith("timekeeper"):
        return "tk", table.timekeepers
    if name.endswith("classification"):
        return "class", table.classes
    return "std", table.standard


def _cases(levels: list[tuple[str, Any]], scope: Node | None, tk_field: str, when: str, why: str) -> list[Node]:
    cases: list[Node] = []
    covered: dict[str, list[str]] = {"tk": [], "class": []}
    standard_covered = False
    field_of = {"tk": tk_field, "class": "timekeeper_classification"}

    def note(source: str) -> str:
        return f"{source}{', ' + when if when else ''} ({why})"

    for kind, table in levels:
        if kind == "std":
            if table is None or standard_covered:
                continue
            factor, source = table
            cases.append(all_of(
                scope,
                *[Not(one_of(field_of[k], covered[k])) for k in ("tk", "class") if covered[k]],
                leaf("rate", "gt", FieldRef("standard_rate", factor if factor != 1 else None), note(source))))
            standard_covered = True
            continue
        other = "class" if kind == "tk" else "tk"
        for key, (cap, source) in table.items():
            if key in covered[kind]:
                continue  # an earlier level already caps this timekeeper or class here
            earlier = covered[other]
            cases.append(all_of(scope, leaf(field_of[kind], "eq", key),
                                Not(one_of(field_of[other], earlier)) if earlier else None,
                                leaf("standard_rate", "missing") if standard_covered else None,
                                leaf("rate", "gt", cap, note(source))))
        covered[kind] = list(dict.fromkeys([*covered[kind], *table]))
    return cases


# Reading the parameters into periods --------------------------------------------------------------------------

def _date(value: Any, path: Path) -> dt.date:
    try:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        raise RuleProblem(path, f"{value!r} is not a date (YYYY-MM-DD)") from None


def _periods(rule: Rule, ruleset: RuleSet) -> list[Period]:
    """The rule's tables by period (one open period for the flat form), checked: classifications known
    (directly or as the rule set's aliases), no timekeeper capped twice in one table, one override per matter."""
    p = rule.params
    if "schedule" not in p:
        return [_period(p, None, None, ruleset, ("params",))]
    out: list[Period] = []
    raw = p["schedule"]
    for i, item in enumerate(raw):
        path: Path = ("params", "schedule", i)
        start = _date(item["from"], (*path, "from"))
        end = _date(item["to"], (*path, "to")) if item.get("to") else None
        if end is None and i + 1 < len(raw):
            try:  # an open period runs until the next one starts, as the timekeeper table's rates do
                end = _date(raw[i + 1]["from"], (*path, "from")) - dt.timedelta(days=1)
            except RuleProblem:
                end = None
        out.append(_period(item, start, end, ruleset, path))
    return out


def _period(data: dict[str, Any], start: dt.date | None, end: dt.date | None, ruleset: RuleSet,
            path: Path) -> Period:
    firm = _table(data, ruleset, path, "")
    overrides: list[tuple[str, Table]] = []
    seen: list[str] = []
    for i, o in enumerate(data.get("matter_overrides") or []):
        where: Path = (*path, "matter_overrides", i)
        if o["matter"] in seen:
            raise RuleProblem((*where, "matter"), f"matter {o['matter']!r} has two overrides")
        seen.append(o["matter"])
        overrides.append((o["matter"], _table(o, ruleset, where, f"matter override for {o['matter']}, ")))
    return Period(start, end, firm, overrides, path)


def _table(data: dict[str, Any], ruleset: RuleSet, path: Path, prefix: str) -> Table:
    table = Table()
    for written, cap in (data.get("by_timekeeper") or {}).items():
        table.timekeepers[written] = (Decimal(cap), f"{prefix}timekeeper {written}")
    freeze = data.get("rate_freeze")
    if freeze:
        as_of = _date(freeze["as_of"], (*path, "rate_freeze", "as_of"))
        for written, rate in freeze["by_timekeeper"].items():
            if written in table.timekeepers:
                raise RuleProblem((*path, "rate_freeze", "by_timekeeper", written),
                                  f"{written} has a cap under by_timekeeper and a frozen rate here: keep one",
                                  at_key=True)
            table.timekeepers[written] = (Decimal(rate), f"{prefix}timekeeper {written}, rate frozen as of {as_of}")
    for written, cap in (data.get("by_classification") or {}).items():
        where = (*path, "by_classification", written)
        try:
            code = canonical_class(written, where, ruleset)  # a LEDES code, or the rule set's alias of one
        except RuleProblem as problem:
            raise RuleProblem(where, problem.message, at_key=True) from None
        if code in table.classes:
            raise RuleProblem(where, f"{written!r} is {code}, which this table already caps", at_key=True)
        shown = code if code == written else f"{written} ({code})"
        table.classes[code] = (Decimal(cap), f"{prefix}classification {shown}")
    at_most = data.get("at_most_standard_rate")
    discount = data.get("standard_rate_discount")
    if at_most is False and discount is not None:
        raise RuleProblem((*path, "at_most_standard_rate"), "a standard_rate_discount caps at the standard rate "
                          "less the discount: remove at_most_standard_rate: false")
    if discount is not None:
        share = parse_share(discount, (*path, "standard_rate_discount"))
        if share >= 1:
            raise RuleProblem((*path, "standard_rate_discount"), "a discount of 100% or more leaves no rate")
        table.standard = (1 - share, f"{prefix}standard rate less {percent(share)}")
    elif at_most:
        table.standard = (Decimal(1), f"{prefix}standard rate")
    return table


def schedule_problems(schedule: list[dict[str, Any]], path: Path) -> Iterator[RuleProblem]:
    """The dates of a schedule's periods (``from``, optional ``to``): in order, no overlap, no gap. A period
    without ``to`` runs until the next period starts (the last one: open-ended)."""
    previous: tuple[dt.date, dt.date | None] | None = None
    for i, item in enumerate(schedule):
        here: Path = (*path, i)
        try:
            start = _date(item["from"], (*here, "from"))
            end = _date(item["to"], (*here, "to")) if item.get("to") else None
        except RuleProblem as problem:
            yield problem
            return
        if end is not None and end < start:
            yield RuleProblem((*here, "to"), "the end date is before the start date")
            return
        if previous is not None:
            last_start, last_end = previous
            if start <= last_start:
                yield RuleProblem((*here, "from"), f"periods must be in date order: {start} does not come after "
                                  f"the previous period's start {last_start}")
                return
            if last_end is not None and start <= last_end:
                yield RuleProblem((*here, "from"), f"this period overlaps the previous one, in force to {last_end}: "
                                  f"start on {last_end + dt.timedelta(days=1)} or end the previous one sooner")
                return
            if last_end is not None and start > last_end + dt.timedelta(days=1):
                yield RuleProblem((*here, "from"), f"a gap in the schedule: {last_end + dt.timedelta(days=1)} to "
                                  f"{start - dt.timedelta(days=1)} is in no period (start this period on "
                                  f"{last_end + dt.timedelta(days=1)}, or leave out the previous period's to)")
                return
        previous = (start, end)


def _uses_standard_rate(periods: list[Period]) -> bool:
    return any(t.standard is not None for p in periods for t in [p.firm, *[o for _, o in p.overrides]])


def _describe_table(scope: str, table: Table) -> list[str]:
    lines = []
    if table.timekeepers:
        lines.append(f"{scope} timekeeper caps: "
                     + ", ".join(f"{k} {cap}" + (" (frozen rate)" if "frozen" in note else "")
                                 for k, (cap, note) in table.timekeepers.items()))
    if table.classes:
        lines.append(f"{scope} classification caps: "
                     + ", ".join(f"{k} {cap}" for k, (cap, _) in table.classes.items()))
    if table.standard is not None:
        factor, _ = table.standard
        lines.append(f"{scope}: at most the standard rate"
                     + (f" less {percent(1 - factor)}" if factor != 1 else ""))
    return lines
