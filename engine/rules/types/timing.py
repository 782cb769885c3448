"""Hours and dates: ``billing_increment``, ``max_hours_per_entry``, ``late_entry``, ``billing_period``."""

from __future__ import annotations

from decimal import Decimal

from engine.rules.conditions import Leaf, Node, all_of
from engine.rules.features import Feature
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import POSITIVE, RuleType, is_time, leaf, register


@register
class BillingIncrement(RuleType):
    name = "billing_increment"
    summary = "Hourly time must be billed in multiples of the increment (0.1 h by default)."
    params_schema = {
        "type": "object",
        "properties": {"increment": {**POSITIVE, "description": "hours; 0.1 when not given"}},
        "additionalProperties": False,
    }
    default_message = "{hours_billed} h is not a multiple of the billing increment"

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        step = Decimal(rule.params.get("increment", Decimal("0.1")))
        return [f"Flags an hourly time entry whose hours billed are not a whole multiple of {step} h, "
                "by exact arithmetic.",
                "Time on other fee bases, expenses and entries without hours billed are not checked."]

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        step = Decimal(rule.params.get("increment", Decimal("0.1")))
        remainder = Feature("remainder", "hours_billed", step, label=f"hours_billed modulo {step}")
        return all_of(is_time(), leaf("fee_basis", "eq", "hourly"), Leaf(remainder, "ne", Decimal(0)))


@register
class MaxHoursPerEntry(RuleType):
    name = "max_hours_per_entry"
    summary = "One time entry may not bill more than this many hours."
    params_schema = {
        "type": "object",
        "properties": {"max_hours": POSITIVE},
        "required": ["max_hours"],
        "additionalProperties": False,
    }
    default_message = "{hours_billed} h in one entry is above the {expected} h limit"

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        limit = rule.params["max_hours"]
        return [f"Flags a time entry billing more than {limit} hours; exactly {limit} hours passes."]

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        return all_of(is_time(), leaf("hours_billed", "gt", rule.params["max_hours"]))


@register
class LateEntry(RuleType):
    name = "late_entry"
    summary = "Work older than this many days when the invoice is checked."
    params_schema = {
        "type": "object",
        "properties": {"max_age_days": {"type": "integer", "minimum": 0}},
        "required": ["max_age_days"],
        "additionalProperties": False,
    }
    default_message = "Work from {work_date} is {actual} days old (limit {expected})"

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        days = int(rule.params["max_age_days"])
        return [f"Flags a time or expense entry whose work date is more than {days} days before the date the "
                "entries are checked (the evaluation's as-of date); a check with no as-of date never flags it."]

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        return leaf("age_days", "gt", int(rule.params["max_age_days"]))


@register
class BillingPeriod(RuleType):
    name = "billing_period"
    summary = "Work dated outside the billing period of the invoice being checked."
    params_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    default_message = "Work date {work_date} is outside the billing period"

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        return ["Flags a time or expense entry dated before the start or after the end of the billing period "
                "being checked (both ends included in the period); a check with no period never flags it."]

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        return leaf("outside_billing_period", "eq", True)


