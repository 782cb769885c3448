"""``rate_cap``: the most a timekeeper may bill per hour, by classification, by timekeeper, per matter."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from engine.codes import is_known_classification
from engine.model import Entry, FeeBasis
from engine.rules.conditions import Evidence, Node, Not, all_of, any_of
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    ACTION,
    LIST_REF,
    POSITIVE,
    Adjustment,
    RuleProblem,
    RuleType,
    is_time,
    leaf,
    one_of,
    register,
)

CAPS = {"type": "object", "additionalProperties": POSITIVE, "minProperties": 1}
TIMEKEEPER_FIELDS = ["timekeeper_ledes_id", "timekeeper_source_id", "timekeeper_name"]


@register
class RateCap(RuleType):
    name = "rate_cap"
    summary = ("Hourly rate above the cap for the timekeeper: matter overrides first, then the timekeeper's "
               "own cap, then the classification's. Flat and fixed fees are exempt.")
    params_schema = {
        "type": "object",
        "properties": {
            "by_classification": CAPS,
            "by_timekeeper": CAPS,
            "timekeeper_field": {"enum": TIMEKEEPER_FIELDS, "default": "timekeeper_ledes_id"},
            "matter_overrides": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"matter": {"type": "string"}, "by_classification": CAPS,
                                   "by_timekeeper": CAPS},
                    "required": ["matter"],
                    "additionalProperties": False,
                },
            },
            "exempt_fee_bases": {"oneOf": [{"type": "array", "items": {"enum": [b.value for b in FeeBasis]}},
                                           LIST_REF],
                                 "default": ["flat", "fixed_template", "contingency"]},
            "action": ACTION,
        },
        "additionalProperties": False,
        "anyOf": [{"required": ["by_classification"]}, {"required": ["by_timekeeper"]},
                  {"required": ["matter_overrides"]}],
    }
    default_message = "Rate {actual} is above the {expected} cap"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        p = rule.params
        tables = [(("params", "by_classification"), p.get("by_classification") or {})]
        for i, override in enumerate(p.get("matter_overrides") or []):
            tables.append((("params", "matter_overrides", i, "by_classification"),
                           override.get("by_classification") or {}))
        for path, table in tables:
            for code in table:
                if not is_known_classification(code):
                    yield RuleProblem((*path, code), f"unknown LEDES timekeeper classification {code!r}",
                                      at_key=True)
        matters = [o["matter"] for o in p.get("matter_overrides") or []]
        for i, matter in enumerate(matters):
            if matter in matters[:i]:
                yield RuleProblem(("params", "matter_overrides", i, "matter"),
                                  f"matter {matter!r} has two overrides")

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        """One case per (scope, cap): exactly one case can hold for an entry, so the cap it names applies.

        Precedence inside an overridden matter: the override's timekeeper caps, then its classification
        caps, then the firm-wide timekeeper caps, then the firm-wide classification caps. Elsewhere the
        firm-wide timekeeper caps, then classification caps. A case excludes the entries an earlier level
        already covers, which keeps every case a short conjunction (durable-rules allows 32 expressions).
        """
        p = rule.params
        tk_field = p.get("timekeeper_field", "timekeeper_ledes_id")
        exempt = p.get("exempt_fee_bases", ["flat", "fixed_template", "contingency"])
        global_levels = [("tk", p.get("by_timekeeper") or {}), ("class", p.get("by_classification") or {})]
        overrides: list[dict[str, Any]] = p.get("matter_overrides") or []

        cases: list[Node] = []
        for o in overrides:
            levels = [("tk", o.get("by_timekeeper") or {}), ("class", o.get("by_classification") or {}),
                      *global_levels]
            cases.extend(self._cases(levels, leaf("law_firm_matter_id", "eq", o["matter"]), tk_field))
        elsewhere = Not(one_of("law_firm_matter_id", [o["matter"] for o in overrides])) if overrides else None
        cases.extend(self._cases(global_levels, elsewhere, tk_field))

        guards: list[Node | None] = [is_time(), leaf("fee_basis", "not_in", exempt) if exempt else None]
        if ruleset.currency:
            # Caps are in the rule set's currency; an entry without a currency is still checked.
            guards.append(any_of(leaf("currency", "missing"), leaf("currency", "eq", ruleset.currency)))
        return all_of(*guards, any_of(*cases))

    @staticmethod
    def _cases(levels: list[tuple[str, dict[str, Decimal]]], scope: Node | None, tk_field: str) -> list[Node]:
        cases: list[Node] = []
        covered: dict[str, list[str]] = {"tk": [], "class": []}
        field_of = {"tk": tk_field, "class": "timekeeper_classification"}
        for kind, caps in levels:
            other = "class" if kind == "tk" else "tk"
            for key, cap in caps.items():
                if key in covered[kind]:
                    continue  # an earlier level already caps this timekeeper or class here
                earlier = covered[other]
                cases.append(all_of(scope, leaf(field_of[kind], "eq", key),
                                    Not(one_of(field_of[other], earlier)) if earlier else None,
                                    leaf("rate", "gt", cap)))
            covered[kind] = list(dict.fromkeys([*covered[kind], *caps]))
        return cases

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
