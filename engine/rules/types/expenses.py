"""Money limits beyond hourly rates: ``expense_cap`` (per entry or per unit) and ``travel`` (billed share)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from engine.model import Entry
from engine.rules.conditions import Evidence, Node, all_of, any_of
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    ACTION,
    CODE_LIST,
    POSITIVE,
    Adjustment,
    RuleProblem,
    RuleType,
    compile_regex,
    is_expense,
    is_time,
    leaf,
    match,
    one_of,
    register,
)
from engine.rules.types.codes import check_codes

CENT = Decimal("0.01")
# UTBMS has no travel activity code (A109 is "Appear for/attend"): find travel by what the narrative says.
DEFAULT_TRAVEL_PATTERN = r"(?i)\btravel(?:l?ed|l?ing|s)?\b"


def _percent(share: Decimal | None) -> str:
    if share is None:
        return "-"
    return f"{(share * 100).quantize(Decimal('0.1')).normalize():f}%"


@register
class ExpenseCap(RuleType):
    name = "expense_cap"
    summary = ("Expense above the limit for its UTBMS expense code: per entry (a meal, a night's hotel) or "
               "per unit (per copied page, per mile).")
    params_schema = {
        "type": "object",
        "properties": {
            "caps": {
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
            },
            "action": ACTION,
        },
        "required": ["caps"],
        "additionalProperties": False,
    }
    message_variables = ("label",)
    default_message = "{utbms_expense_code} expense of {actual} is above the {expected} limit ({label})"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        for i, cap in enumerate(rule.params["caps"]):
            for problem in check_codes(cap, ("expense_codes",)):
                yield RuleProblem(("params", "caps", i, *problem.path), problem.message)

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        cases = []
        for cap in rule.params["caps"]:
            value_field = "rate" if cap["per"] == "unit" else "billed_amount"
            cases.append(all_of(one_of("utbms_expense_code", [c.upper() for c in cap["expense_codes"]]),
                                leaf(value_field, "gt", cap["max"])))
        guards: list[Node] = [is_expense()]
        if ruleset.currency:
            guards.append(any_of(leaf("currency", "missing"), leaf("currency", "eq", ruleset.currency)))
        return all_of(*guards, any_of(*cases))

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        decisive = evidence[-1] if evidence else None
        for cap in rule.params["caps"]:
            per = "unit" if decisive is not None and decisive.field == "rate" else "entry"
            if (entry.utbms_expense_code in [c.upper() for c in cap["expense_codes"]] and cap["per"] == per
                    and decisive is not None and decisive.expected == cap["max"]):
                return {"label": cap.get("label") or f"per {per}"}
        return {"label": entry.utbms_expense_code or "-"}

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
    summary = ("Travel time billed above the agreed share of the full rate (for example 50%), found by a "
               "narrative pattern (by default any mention of travel) or by the listed task or activity codes.")
    params_schema = {
        "type": "object",
        "properties": {
            "share": {"type": "number", "minimum": 0, "maximum": 1},
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

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        share = next((ev.actual for ev in evidence if ev.field == "billed_share"), None)
        return {"billed_percent": _percent(share), "allowed_percent": _percent(Decimal(rule.params["share"]))}

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
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
        return all_of(is_time(), any_of(*is_travel), leaf("billed_share", "gt", p["share"]))

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        if rule.action != "adjust" or entry.rate is None:
            return None
        units = entry.hours_worked if entry.hours_worked is not None else entry.quantity
        billed = entry.billed_amount
        if units is None or billed is None:
            return None
        target = (units * entry.rate * Decimal(rule.params["share"])).quantize(CENT)
        current = billed + (entry.adjustment_amount or 0)
        return Adjustment("amount", current, target, target - current)
