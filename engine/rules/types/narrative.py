"""What the description says: ``narrative`` (length, vague phrases, required pattern) and ``block_billing``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from engine.model import Entry
from engine.rules.conditions import Evidence, Leaf, Node, all_of, any_of
from engine.rules.features import Feature
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    NON_NEGATIVE,
    STRINGS,
    RuleProblem,
    RuleType,
    compile_regex,
    is_time,
    leaf,
    match,
    no_match,
    phrase_pattern,
    register,
)

COUNT = {"type": "integer", "minimum": 0}


@register
class Narrative(RuleType):
    name = "narrative"
    summary = ("Narrative too short or too long (characters or words), using a vague phrase, or not "
               "matching a required pattern.")
    params_schema = {
        "type": "object",
        "properties": {
            "min_length": COUNT,
            "max_length": COUNT,
            "unit": {"enum": ["characters", "words"], "default": "characters"},
            "forbidden_phrases": STRINGS,
            "required_pattern": {"type": "string", "minLength": 1},
            "applies_to": {"enum": ["time", "expense", "all"], "default": "time"},
        },
        "additionalProperties": False,
        "anyOf": [{"required": ["min_length"]}, {"required": ["max_length"]},
                  {"required": ["forbidden_phrases"]}, {"required": ["required_pattern"]}],
    }
    message_variables = ("finding",)
    default_message = "Narrative fails the guideline: {finding}"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        p = rule.params
        if p.get("min_length") is not None and p.get("max_length") is not None and p["min_length"] > p["max_length"]:
            yield RuleProblem(("params", "max_length"), "max_length is below min_length")
        if "required_pattern" in p:
            try:
                compile_regex(p["required_pattern"], ("params", "required_pattern"))
            except RuleProblem as problem:
                yield problem
        if "forbidden_phrases" in p and not p["forbidden_phrases"]:
            yield RuleProblem(("params", "forbidden_phrases"), "the phrase list is empty")

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        p = rule.params
        # Lengths count the narrative without leading and trailing whitespace (padding cannot meet a
        # minimum); words are the pieces between whitespace, which padding never changes.
        words = p.get("unit") == "words"
        counted = Feature("words" if words else "length", "narrative",
                          label="narrative words" if words else "narrative characters after trimming")
        parts: list[Node] = []
        if p.get("min_length") is not None:
            parts.append(Leaf(counted, "lt", p["min_length"]))
        if p.get("max_length") is not None:
            parts.append(Leaf(counted, "gt", p["max_length"]))
        if p.get("forbidden_phrases"):
            parts.append(match("narrative", phrase_pattern(p["forbidden_phrases"])))
        if p.get("required_pattern"):
            parts.append(no_match("narrative", compile_regex(p["required_pattern"], ("params", "required_pattern"))))
        scope = p.get("applies_to", "time")
        kind = None if scope == "all" else leaf("entry_kind", "eq", scope)
        return all_of(kind, any_of(*parts))

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        return {"finding": narrative_finding(rule, evidence[-1]) if evidence else "-"}

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        p = rule.params
        unit = p.get("unit", "characters")
        counted = "words" if unit == "words" else "characters, leading and trailing spaces not counted"
        lines = [f"Looks at the narratives of {_KINDS[p.get('applies_to', 'time')]}; it flags a narrative that:"]
        if p.get("min_length") is not None:
            lines.append(f"  - has fewer than {p['min_length']} {counted};")
        if p.get("max_length") is not None:
            lines.append(f"  - has more than {p['max_length']} {counted};")
        if p.get("forbidden_phrases"):
            shown = ", ".join(f'"{phrase}"' for phrase in p["forbidden_phrases"])
            lines.append(f"  - uses any of these phrases (whole words, any capitals, any spacing): {shown};")
        if p.get("required_pattern"):
            lines.append(f"  - does not contain a match of the regular expression /{p['required_pattern']}/.")
        lines.append("One finding per entry: the first of these tests that fails.")
        return lines


_KINDS = {"time": "time entries", "expense": "expense entries", "all": "time and expense entries"}


def narrative_finding(rule: Rule, decisive: Evidence) -> str:
    """The failed narrative test in words, e.g. "19 characters after trimming, fewer than the 25 required"."""
    if decisive.operator in ("lt", "gt"):
        unit = "words" if rule.params.get("unit") == "words" else "characters after trimming"
        if decisive.operator == "lt":
            return f"{decisive.actual} {unit}, fewer than the {decisive.expected} required"
        return f"{decisive.actual} {unit}, more than the {decisive.expected} allowed"
    if decisive.operator == "matches":
        return f'the vague phrase "{decisive.actual}"'
    return f"no match for the required pattern /{decisive.expected}/"


# Full stops after these do not end a task: initials ("J. Smith") and common abbreviations.
ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "Prof", "No", "St", "Jr", "Sr", "Inc", "Co", "Corp", "Ltd", "v", "vs",
                 "e.g", "i.e", "cf")
# Semicolons, " / ", line breaks, and sentence ends. The full stop comes first so that the look-behinds
# only run where there is one.
DEFAULT_SEPARATORS = (r";|\s+/\s+|\n|\.(?<!\b[A-Z]\.)"
                      + "".join(rf"(?<!\b{re.escape(a)}\.)" for a in ABBREVIATIONS)
                      + r"\s+(?=[A-Z])")


@register
class BlockBilling(RuleType):
    name = "block_billing"
    summary = "Several tasks in one time entry (split by separators) with hours above a threshold."
    params_schema = {
        "type": "object",
        "properties": {
            "separators": {"type": "string", "minLength": 1, "default": DEFAULT_SEPARATORS},
            "min_tasks": {"type": "integer", "minimum": 2, "default": 2},
            "min_hours": {**NON_NEGATIVE, "default": 0},
        },
        "additionalProperties": False,
    }
    default_message = "Block billing: {actual} tasks in one entry of {hours_billed} h"

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        p = rule.params
        separators = ("the default separators (a semicolon, a spaced slash, a line break, or a full stop followed "
                      "by a capital except after an initial or a common abbreviation)"
                      if "separators" not in p else f"matches of /{p['separators']}/")
        return [f"Flags a time entry of more than {p.get('min_hours', 0)} hours billed whose narrative holds "
                f"at least {p.get('min_tasks', 2)} tasks,",
                f"counting the non-blank pieces of the narrative between {separators}."]

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        try:
            compile_regex(rule.params.get("separators", DEFAULT_SEPARATORS), ("params", "separators"))
        except RuleProblem as problem:
            yield problem

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        p = rule.params
        separators = compile_regex(p.get("separators", DEFAULT_SEPARATORS), ("params", "separators"))
        tasks = Feature("segments", "narrative", separators, label="tasks in narrative")
        return all_of(is_time(), leaf("hours_billed", "gt", p.get("min_hours", 0)),
                      Leaf(tasks, "ge", p.get("min_tasks", 2)))
