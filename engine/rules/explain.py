"""A rule set in words, for the legal-ops reviewer who signs off a translation of a guideline
(``ocgate rules explain``).

For each rule: what it is (type, severity, status, action, references), which entries it looks at (the
rule set's clients, matters and dates, the rule's own dates and ``when``), and what it checks. A rule type
that defines ``describe(rule, ruleset) -> list[str]`` says the last part itself (rate caps give their
schedule and the precedence in force); for the others it is the type's summary with the parameters, and
for a per-entry type the compiled condition spelt out as a nested list.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types import type_of
from engine.rules.words import INDENT, class_name, condition_lines, value_text

_STATUS = {
    "active": "active (its findings go to review)",
    "shadow": "shadow (checked, but its findings are hidden and create no review work)",
    "draft": "draft (run by `rules check` and `rules test` only, never on real entries)",
}


def explain_ruleset(ruleset: RuleSet, rule_ids: list[str] | None = None) -> list[str]:
    """The rule set's header and each rule (those named, in file order; all when ``rule_ids`` is None)."""
    lines = ruleset_lines(ruleset)
    wanted = None if rule_ids is None else set(rule_ids)
    for rule in ruleset.rules:
        if wanted is None or rule.id in wanted:
            lines.append("")
            lines.extend(explain_rule(rule, ruleset))
    return lines


def check_notes(ruleset: RuleSet) -> list[str]:
    """What ``rules check`` adds to a good file's summary: for each rate cap, the order in which its caps apply."""
    from engine.rules.types.rates import precedence

    notes = []
    for rule in ruleset.rules:
        if rule.type == "rate_cap":
            stated = "as stated" if rule.params.get("precedence") else "the default"
            notes.append(f"{rule.id}: which cap applies ({stated}): the first that exists of "
                         + " > ".join(precedence(rule.params)))
    return notes


def ruleset_lines(ruleset: RuleSet) -> list[str]:
    lines = [f"{ruleset.title} ({ruleset.id}, version {ruleset.version}, revision {ruleset.revision})"]
    guideline = ruleset.guideline
    if guideline:
        source = " ".join(str(guideline[k]) for k in ("document", "version") if guideline.get(k))
        url = f" <{guideline['url']}>" if guideline.get("url") else ""
        lines.append(f"Translates: {source}{url}")
    lines.append(f"Governs: {governs(ruleset)}.")
    if ruleset.currency:
        lines.append(f"Amounts and caps are in {ruleset.currency}; entries in another currency are not compared "
                     "with them.")
    if ruleset.classifications:
        names = ", ".join(f"{alias} = {class_name(code)}" for alias, code in ruleset.classifications.items())
        lines.append(f"The client's names for timekeeper classes: {names}. Entries with these titles are judged "
                     "as the code.")
    return lines


def governs(ruleset: RuleSet) -> str:
    parts = []
    parts.append(f"entries of client {_either(ruleset.clients)}" if ruleset.clients else "entries of any client")
    if ruleset.matters:
        parts.append(f"on matter {_either(ruleset.matters)}")
    parts.append(_dates(ruleset.effective_from, ruleset.effective_to, "dated"))
    return ", ".join(p for p in parts if p)


def explain_rule(rule: Rule, ruleset: RuleSet) -> list[str]:
    rule_type = type_of(rule)
    lines = [f"{rule.id}: {rule.title}"]
    status = _STATUS.get(rule.status, rule.status)
    lines.append(f"{INDENT}Type: {rule.type}. Severity: {rule.severity}. Status: {status}.")
    if "action" in rule_type.params_schema.get("properties", {}):
        action = ("flag the entry and propose a write-down (adjust)" if rule.action == "adjust"
                  else "flag the entry, no write-down proposed")
        lines.append(f"{INDENT}Action: {action}.")
    if rule.references:
        lines.append(f"{INDENT}Guideline: {'; '.join(rule.references)}.")
    if rule.description:
        lines.append(f"{INDENT}Note: {' '.join(rule.description.split())}")
    scope = []
    dates = _dates(rule.effective_from, rule.effective_to, "with work dates")
    if dates:
        scope.append(f"{INDENT}Only entries {dates} (this rule's own dates, within the rule set's).")
    if rule.when is not None:
        scope.append(f"{INDENT}Only entries for which:")
        scope.extend(condition_lines(rule.when, 2))
    lines.extend(scope)
    lines.append(f"{INDENT}What it checks:")
    describe = getattr(rule_type, "describe", None)
    body = describe(rule, ruleset) if callable(describe) else generic_description(rule, ruleset)
    lines.extend(f"{INDENT * 2}{line}" for line in body)
    message = rule.message or rule_type.default_message
    lines.append(f"{INDENT}Message: {message}" + ("" if rule.message else " (default)"))
    return lines


def generic_description(rule: Rule, ruleset: RuleSet) -> list[str]:
    """For a type without ``describe``: its summary, its parameters, and (per-entry types) its condition."""
    rule_type = type_of(rule)
    lines = [rule_type.summary]
    if rule.params:
        lines.append("Parameters:")
        lines.extend(f"{INDENT}{key}: {param_text(value)}" for key, value in rule.params.items())
    if not rule_type.aggregate:
        lines.append("It flags an entry when:")
        lines.extend(condition_lines(rule_type.compile(rule, ruleset), 1))
    return lines


def param_text(value: Any) -> str:
    """A parameter's value as a reviewer reads it: lists joined, mappings as ``key value``."""
    if isinstance(value, dict):
        return "; ".join(f"{k} {param_text(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            return " | ".join(param_text(item) for item in value)
        return ", ".join(param_text(item) for item in value) or "(none)"
    return value_text(value)


def _either(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _dates(start: dt.date | None, end: dt.date | None, what: str) -> str:
    if start and end:
        return f"{what} {start.isoformat()} to {end.isoformat()} (both included)"
    if start:
        return f"{what} from {start.isoformat()}"
    if end:
        return f"{what} up to {end.isoformat()}"
    return ""
