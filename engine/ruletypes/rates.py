"""``rate_cap``: the most a timekeeper may bill per hour, by classification, by timekeeper, per matter."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.codes import is_known_classification
from engine.conditions import Evidence, Leaf, Node, Not, all_of, any_of
from engine.model import Entry, FeeBasis
from engine.ruletypes.base import (
    ACTION,
    POSITIVE,
    Adjustment,
    RuleProblem,
    RuleType,
    is_time,
    leaf,
    list_of,
    one_of,
    register,
)

if TYPE_CHECKING:
    from engine.ruleset import Rule, RuleSet

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
            "exempt_fee_bases": {**list_of({"enum": [b.value for b in FeeBasis]}),
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
                    yield RuleProblem((*path, code), f"unknown LEDES timekeeper classification {code!r}")
        matters = [o["matter"] for o in p.get("matter_overrides") or []]
        for i, matter in enumerate(matters):
            if matter in matters[:i]:
                yield RuleProblem(("params", "matter_overrides", i, "matter"),
                                  f"matter {matter!r} has two overrides")

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        p = rule.params
        tk_field = p.get("timekeeper_field", "timekeeper_ledes_id")
        exempt = p.get("exempt_fee_bases", ["flat", "fixed_template", "contingency"])
        classes: dict[str, Decimal] = p.get("by_classification") or {}
        timekeepers: dict[str, Decimal] = p.get("by_timekeeper") or {}
        overrides: list[dict[str, Any]] = p.get("matter_overrides") or []

        def over(cap: Decimal) -> Leaf:
            return leaf("rate", "gt", cap)

        def excluded(node: Node | None) -> Node | None:
            return Not(node) if node is not None else None

        cases: list[Node] = []
        # 1. a matter override naming the timekeeper, 2. a matter override by classification
        for o in overrides:
            matter = leaf("law_firm_matter_id", "eq", o["matter"])
            o_tks: dict[str, Decimal] = o.get("by_timekeeper") or {}
            for tk, cap in o_tks.items():
                cases.append(all_of(matter, leaf(tk_field, "eq", tk), over(cap)))
            for cls, cap in (o.get("by_classification") or {}).items():
                cases.append(all_of(matter, leaf("timekeeper_classification", "eq", cls),
                                    excluded(one_of(tk_field, list(o_tks)) if o_tks else None), over(cap)))

        def overridden(tk: str | None, cls: str | None) -> list[Node]:
            """Conditions under which a matter override takes precedence over a firm-wide cap."""
            result: list[Node] = []
            for o in overrides:
                o_tks, o_cls = o.get("by_timekeeper") or {}, o.get("by_classification") or {}
                matter = leaf("law_firm_matter_id", "eq", o["matter"])
                if (tk is not None and tk in o_tks) or (cls is not None and cls in o_cls):
                    result.append(Not(matter))
                    continue
                alternatives: list[Node] = []
                if o_tks and tk is None:
                    alternatives.append(one_of(tk_field, list(o_tks)))
                if o_cls and cls is None:
                    alternatives.append(one_of("timekeeper_classification", list(o_cls)))
                if alternatives:
                    result.append(Not(all_of(matter, any_of(*alternatives))))
            return result

        # 3. the timekeeper's own cap
        for tk, cap in timekeepers.items():
            cases.append(all_of(leaf(tk_field, "eq", tk), *overridden(tk, None), over(cap)))
        # 4. the classification's cap, unless the timekeeper has one of their own
        for cls, cap in classes.items():
            cases.append(all_of(leaf("timekeeper_classification", "eq", cls),
                                excluded(one_of(tk_field, list(timekeepers)) if timekeepers else None),
                                *overridden(None, cls), over(cap)))
        currency = [leaf("currency", "eq", ruleset.currency)] if ruleset.currency else []
        guards = [is_time(), leaf("fee_basis", "not_in", exempt) if exempt else None]
        if currency:
            # Caps are in the rule set's currency; an entry without a currency is still checked.
            guards.append(any_of(leaf("currency", "missing"), *currency))
        return all_of(*guards, any_of(*cases))

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
