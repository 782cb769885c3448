"""The generic ``condition`` rule: ``all`` / ``any`` / ``not`` over field comparisons."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from engine.codes import LEGACY_CLASSIFICATIONS, closest, is_known_classification, timekeeper_classifications
from engine.rules.conditions import And, Leaf, Node, Not, Or, all_of, constant_fits
from engine.rules.features import BOOL, DATE, DECIMAL, FIELD_TYPES, INT, STRING, Feature, field_feature
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import RuleProblem, RuleType, compile_regex, field_ref, register
from engine.rules.words import condition_lines

Path = tuple[str | int, ...]
_ORDERED_TYPES = (DECIMAL, INT, DATE)


def parse_condition(data: Any, path: Path, ruleset: RuleSet | None = None) -> Node:
    """Turn the YAML form of a condition into a tree, checking fields, operators and value types.

    Classifications compared with ``timekeeper_classification`` may be LEDES codes or the ``ruleset``'s own
    aliases (``classifications:``); either becomes the LEDES code, and an unknown name is an error."""
    if not isinstance(data, dict):
        raise RuleProblem(path, "a condition is a mapping: all, any, not, or {field, op, value}")
    if "all" in data:
        return And(tuple(parse_condition(c, (*path, "all", i), ruleset) for i, c in enumerate(data["all"])))
    if "any" in data:
        return Or(tuple(parse_condition(c, (*path, "any", i), ruleset) for i, c in enumerate(data["any"])))
    if "not" in data:
        return Not(parse_condition(data["not"], (*path, "not"), ruleset))
    return _comparison(data, path, ruleset)


def canonical_class(value: Any, path: Path, ruleset: RuleSet | None) -> Any:
    """A classification named in a rule, as its LEDES code; an unknown name is a :class:`RuleProblem` that
    suggests the nearest known code or alias. Non-text values are left for the type check to report."""
    if not isinstance(value, str):
        return value
    if ruleset is None:
        code = value.strip().upper()
        return code if is_known_classification(code) else _unknown_class(value, path, None)
    found = ruleset.canonical_classification(value)
    return found if found is not None else _unknown_class(value, path, ruleset)


def _unknown_class(value: str, path: Path, ruleset: RuleSet | None) -> Any:
    hint = (ruleset.classification_suggestion(value) if ruleset is not None
            else closest(value, [*timekeeper_classifications(), *LEGACY_CLASSIFICATIONS]))
    declared = " (nor one of the rule set's classifications)" if ruleset is not None and ruleset.classifications else ""
    raise RuleProblem(path, f"unknown LEDES timekeeper classification {value!r}{declared}"
                      + (f": did you mean {hint}?" if hint else ""))


def _comparison(data: dict[str, Any], path: Path, ruleset: RuleSet | None = None) -> Node:
    name, op, value = data.get("field"), data.get("op"), data.get("value")
    if name not in FIELD_TYPES:
        raise RuleProblem((*path, "field"), f"unknown field {name!r}; see docs/rules.md for the field list")
    kind = FIELD_TYPES[name]
    feature = field_feature(name)
    label = data.get("label", "")
    if op == "exists":
        present = True if value is None else value
        if not isinstance(present, bool):
            raise RuleProblem((*path, "value"), "exists takes true or false")
        return Leaf(feature, "present" if present else "missing")
    if "value" not in data:
        raise RuleProblem(path, f"operator {op!r} needs a value")
    if op == "matches":
        if kind != STRING:
            raise RuleProblem((*path, "op"), f"matches applies to text fields; {name} is {kind}")
        if not isinstance(value, str):
            raise RuleProblem((*path, "value"), "matches takes a regular expression")
        return Leaf(Feature("match", name, compile_regex(value, (*path, "value")), label), "eq", True)
    if op in ("length", "words"):
        if kind != STRING:
            raise RuleProblem((*path, "op"), f"{op} applies to text fields; {name} is {kind}")
        if not isinstance(value, dict) or not value:
            raise RuleProblem((*path, "value"), f"{op} takes comparisons, e.g. {{lt: 20}}")
        # Lengths count the text without leading and trailing whitespace (see features.Feature.compute).
        counted = Feature(op, name, None, label or (f"{name} characters after trimming" if op == "length" else ""))
        parts = []
        for cmp, bound in value.items():
            if cmp not in ("eq", "ne", "lt", "le", "gt", "ge"):
                raise RuleProblem((*path, "value", cmp), f"unknown comparison {cmp!r}")
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
                raise RuleProblem((*path, "value", cmp), f"{op} bounds are whole numbers, got {_shown(bound)}")
            parts.append(Leaf(counted, cmp, bound))
        return all_of(*parts)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise RuleProblem((*path, "value"), f"{op} takes a non-empty list")
        values = tuple(_typed(v, kind, (*path, "value", i), name, ruleset) for i, v in enumerate(value))
        return Leaf(Feature(feature.kind, name, None, label), op, tuple(dict.fromkeys(values)))
    if isinstance(value, dict) and "field" in value:  # another field of the entry, optionally times a factor
        return field_ref(value, name, op, (*path, "value"), label)
    if op in ("lt", "le", "gt", "ge") and kind not in _ORDERED_TYPES:
        raise RuleProblem((*path, "op"), f"{op} compares numbers and dates; {name} is {kind}")
    if op not in ("eq", "ne", "lt", "le", "gt", "ge"):
        raise RuleProblem((*path, "op"), f"unknown operator {op!r}")
    return Leaf(Feature(feature.kind, name, None, label), op, _typed(value, kind, (*path, "value"), name, ruleset))


# Fields the canonical model stores in upper case: compare constants in upper case too.
UPPER_CASE_FIELDS = frozenset({"utbms_task_code", "utbms_activity_code", "utbms_expense_code",
                               "timekeeper_classification", "currency"})


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, Decimal) else repr(value)


def _typed(value: Any, kind: str, path: Path, name: str = "", ruleset: RuleSet | None = None) -> Any:
    """Check and convert a constant to the field's type (dates from ISO text, numbers as decimals)."""
    if name == "timekeeper_classification":
        value = canonical_class(value, path, ruleset)
    if name in UPPER_CASE_FIELDS and isinstance(value, str):
        value = value.upper()
    if kind == DATE and isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            raise RuleProblem(path, f"{value!r} is not a date (YYYY-MM-DD)") from None
    if kind in (DECIMAL, INT) and isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if kind == BOOL and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not constant_fits(kind, value):
        hint = " with at most six decimal places" if kind in (DECIMAL, INT) else ""
        raise RuleProblem(path, f"{_shown(value)} is not a {kind}{hint}")
    return value


@register
class ConditionRule(RuleType):
    name = "condition"
    summary = "Any test the named types don't cover: all/any/not over field comparisons."
    params_schema = {"type": "object", "additionalProperties": False, "properties": {}}
    default_message = "{title}"

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        if rule.condition is None:
            raise RuleProblem(("condition",), "a condition rule needs a condition")
        return rule.condition

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        if rule.condition is None:
            return ["(no condition)"]
        return ["Flags an entry when:", *condition_lines(rule.condition, 1)]
