"""Money limits beyond hourly rates: ``expense_cap`` (per entry or per unit) and ``travel`` (billed share)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from engine.model import Entry
from engine.rules.conditions import Evidence, FieldRef, Node, all_of, any_of
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    ACTION,
    CODE_LIST,
    DATE_TEXT,
    POSITIVE,
    SHARE,
    Adjustment,
    RuleProblem,
    RuleType,
    compile_regex,
    is_expense,
    is_time,
    leaf,
    match,
    one_of,
    parse_share,
    percent,
    register,
)
from engine.rules.types.codes import check_codes
from engine.rules.types.rates import schedule_problems

CENT = Decimal("0.01")
# UTBMS has no travel activity code (A109 is "Appear for/attend"): find travel by what the narrative says.
DEFAULT_TRAVEL_PATTERN = r"(?i)\btravel(?:l?ed|l?ing|s)?\b"


def _percent(share: Decimal | None) -> str:
    if share is None:
        return "-"
    return f"{(share * 100).quantize(Decimal('0.1')).normalize():f}%"


EXPENSE_CAPS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {
            "expense_codes": CODE_LIST,
            "per": {"enum": ["entry", "unit"]},
            "max": POSITIVE,
            "label": {"type": "string"},
        },
        "required": ["expense_codes", "per", "max"],
        "additionalProperties": False,
    },
}

def _caps_in_force(params: dict[str, Any]) -> list[tuple[dt.date | None, dt.date | None, list[dict[str, Any]]]]:
    """The caps of each period (one open period for the flat form); a period without ``to`` runs until the
    next one starts. Dates were checked by :func:`schedule_problems`."""
    if "schedule" not in params:
        return [(None, None, params["caps"])]
    periods = params["schedule"]
    out = []
    for i, period in enumerate(periods):
        start = dt.date.fromisoformat(str(period["from"]))
        end = dt.date.fromisoformat(str(period["to"])) if period.get("to") else None
        if end is None and i + 1 < len(periods):
            end = dt.date.fromisoformat(str(periods[i + 1]["from"])) - dt.timedelta(days=1)
        out.append((start, end, period["caps"]))
    return out


def _in_force(start: dt.date | None, end: dt.date | None) -> str:
    if start is None:
        return ""
    return f"in force {start} to {end}" if end else f"in force from {start}"


@register
class ExpenseCap(RuleType):
    name = "expense_cap"
    proposal_fields = frozenset({"rate", "quantity"})  # and the evidence's billed amount
    summary = ("Expense above the limit for its UTBMS expense code: per entry (a meal, a night's hotel) or "
               "per unit (per copied page, per mile), optionally in the periods of a dated schedule.")
    params_schema = {
        "type": "object",
        "properties": {
            "caps": EXPENSE_CAPS,
            "schedule": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"from": DATE_TEXT, "to": DATE_TEXT, "caps": EXPENSE_CAPS},
                    "required": ["from", "caps"],
                    "additionalProperties": False,
                },
            },
            "action": ACTION,
        },
        "anyOf": [{"required": ["caps"]}, {"required": ["schedule"]}],
        "additionalProperties": False,
    }
    message_variables = ("label",)
    default_message = "{utbms_expense_code} expense of {actual} is above the {expected} limit ({label})"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        p = rule.params
        if "schedule" in p:
            if "caps" in p:
                yield RuleProblem(("params", "caps"), "caps belong inside the schedule's periods: a rule with a "
                                  "schedule holds all its caps there", at_key=True)
                return
            dates = list(schedule_problems(p["schedule"], ("params", "schedule")))
            yield from dates
            tables = [(("params", "schedule", i, "caps"), period["caps"]) for i, period in enumerate(p["schedule"])]
        else:
            tables = [(("params", "caps"), p["caps"])]
        for path, caps in tables:
            for i, cap in enumerate(caps):
                for problem in check_codes(cap, ("expense_codes",)):
                    yield RuleProblem((*path, i, *problem.path), problem.message)

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        cases = []
        for start, end, caps in _caps_in_force(rule.params):
            when = _in_force(start, end)
            dates = [leaf("work_date", "ge", start) if start else None, leaf("work_date", "le", end) if end else None]
            for cap in caps:
                value_field = "rate" if cap["per"] == "unit" else "billed_amount"
                note = f"{cap.get('label') or 'per ' + cap['per']}, {when}" if when else ""
                cases.append(all_of(*dates, one_of("utbms_expense_code", [c.upper() for c in cap["expense_codes"]]),
                                    leaf(value_field, "gt", cap["max"], note)))
        guards: list[Node] = [is_expense()]
        if ruleset.currency:
            guards.append(any_of(leaf("currency", "missing"), leaf("currency", "eq", ruleset.currency)))
        return all_of(*guards, any_of(*cases))

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        decisive = evidence[-1] if evidence else None
        per = "unit" if decisive is not None and decisive.field == "rate" else "entry"
        for start, end, caps in _caps_in_force(rule.params):
            if (start is not None and entry.work_date < start) or (end is not None and entry.work_date > end):
                continue
            for cap in caps:
                if (entry.utbms_expense_code in [c.upper() for c in cap["expense_codes"]] and cap["per"] == per
                        and decisive is not None and decisive.expected == cap["max"]):
                    return {"label": cap.get("label") or f"per {per}"}
        return {"label": entry.utbms_expense_code or "-"}

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        currency = f" {ruleset.currency}" if ruleset.currency else ""
        lines = [f"Flags expenses above the{currency} limit for their UTBMS expense code."]
        periods = _caps_in_force(rule.params)
        for start, end, caps in periods:
            indent = ""
            if start is not None:
                lines.append(f"Period {start} to {end or 'open-ended'}:")
                indent = "  "
            for cap in caps:
                what = "the rate (price per unit)" if cap["per"] == "unit" else "the billed amount of the entry"
                label = f" ({cap['label']})" if cap.get("label") else ""
                lines.append(f"{indent}{', '.join(c.upper() for c in cap['expense_codes'])}: {what} at most "
                             f"{cap['max']}{label}")
        if periods[0][0] is not None:
            lines.append(f"Expenses dated before {periods[0][0]} are not checked"
                         + (f", nor after {periods[-1][1]}." if periods[-1][1] else "."))
        if ruleset.currency:
            lines.append(f"Expenses in a currency other than {ruleset.currency} are not checked; those without "
                         "a currency are.")
        lines.append("Action: " + ("propose a write-down to the limit." if rule.action == "adjust" else "flag only."))
        return lines

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        if rule.action != "adjust":
            return None
        for ev in evidence:
            if ev.operator != "gt":
                continue
            if ev.field == "rate" and entry.rate is not None and entry.quantity is not None:
                return Adjustment("rate", entry.rate, ev.expected,
                                  ((ev.expected - entry.rate) * entry.quantity).quantize(CENT))
            if ev.field == "billed_amount":
                return Adjustment("amount", ev.actual, ev.expected, (ev.expected - ev.actual).quantize(CENT))
        return None


@register
class Travel(RuleType):
    name = "travel"
    summary = ("Travel time billed above the agreed share: of the entry's own full rate (the billed amount after "
               "adjustments against hours x rate), or of the timekeeper's standard rate (the billed rate against "
               "share x standard rate). Travel is found by a narrative pattern (by default any mention of travel) "
               "or by the listed task or activity codes.")
    params_schema = {
        "type": "object",
        "properties": {
            "share": SHARE,
            "rate_basis": {"enum": ["entry_rate", "standard_rate"], "default": "entry_rate"},
            "activity_codes": CODE_LIST,
            "task_codes": CODE_LIST,
            "narrative_pattern": {"type": "string", "minLength": 1, "default": DEFAULT_TRAVEL_PATTERN},
            "action": ACTION,
        },
        "required": ["share"],
        "additionalProperties": False,
    }
    message_variables = ("billed_percent", "allowed_percent")
    default_message = "Travel time billed at {billed_percent} of the full rate; the guideline allows {allowed_percent}"

    @staticmethod
    def _standard(rule: Rule) -> bool:
        return rule.params.get("rate_basis", "entry_rate") == "standard_rate"

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        if self._standard(rule):
            billed = (entry.rate / entry.standard_rate if entry.rate is not None and entry.standard_rate
                      else None)
        else:
            billed = next((ev.actual for ev in evidence if ev.field == "billed_share"), None)
        return {"billed_percent": _percent(billed),
                "allowed_percent": _percent(parse_share(rule.params["share"], ("params", "share")))}

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        try:
            parse_share(rule.params["share"], ("params", "share"))
        except RuleProblem as problem:
            yield problem
        for problem in check_codes(rule.params, ("activity_codes", "task_codes")):
            yield RuleProblem(("params", *problem.path), problem.message)
        if "narrative_pattern" in rule.params:
            try:
                compile_regex(rule.params["narrative_pattern"], ("params", "narrative_pattern"))
            except RuleProblem as problem:
                yield problem

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        p = rule.params
        pattern = p.get("narrative_pattern", DEFAULT_TRAVEL_PATTERN)
        is_travel: list[Node] = [match("narrative", compile_regex(pattern, ("params", "narrative_pattern")))]
        if p.get("activity_codes"):
            is_travel.append(one_of("utbms_activity_code", [c.upper() for c in p["activity_codes"]]))
        if p.get("task_codes"):
            is_travel.append(one_of("utbms_task_code", [c.upper() for c in p["task_codes"]]))
        share = parse_share(p["share"], ("params", "share"))
        if self._standard(rule):
            # The billed rate against share x the timekeeper's standard rate on the work date.
            judged = leaf("rate", "gt", FieldRef("standard_rate", share),
                          f"travel at {percent(share)} of the standard rate")
        else:
            judged = leaf("billed_share", "gt", share)
        return all_of(is_time(), any_of(*is_travel), judged)

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        if rule.action != "adjust" or entry.rate is None:
            return None
        share = parse_share(rule.params["share"], ("params", "share"))
        if self._standard(rule):
            units = entry.quantity if entry.quantity is not None else entry.hours_billed
            if units is None or entry.standard_rate is None:
                return None
            target_rate = entry.standard_rate * share
            return Adjustment("rate", entry.rate, target_rate, ((target_rate - entry.rate) * units).quantize(CENT))
        units = entry.hours_worked if entry.hours_worked is not None else entry.quantity
        billed = entry.billed_amount
        if units is None or billed is None:
            return None
        target = (units * entry.rate * share).quantize(CENT)
        current = billed + (entry.adjustment_amount or 0)
        return Adjustment("amount", current, target, target - current)

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        p = rule.params
        share = percent(parse_share(p["share"], ("params", "share")))
        found = [f"a narrative matching {p.get('narrative_pattern', DEFAULT_TRAVEL_PATTERN)!r}"]
        if p.get("activity_codes"):
            found.append(f"activity code {', '.join(c.upper() for c in p['activity_codes'])}")
        if p.get("task_codes"):
            found.append(f"task code {', '.join(c.upper() for c in p['task_codes'])}")
        lines = ["Time entries are travel when they have " + " or ".join(found) + "."]
        if self._standard(rule):
            lines.append(f"Flags travel whose billed rate is above {share} of the timekeeper's standard rate on "
                         "the work date (standard_rate); travel without a standard rate is not judged.")
        else:
            lines.append(f"Flags travel billed above {share} of its full value: (billed amount + adjustment) / "
                         "(hours worked x rate).")
        lines.append("Action: " + ("propose a write-down to the allowed share." if rule.action == "adjust"
                                   else "flag only."))
        return lines
