"""What the description says: ``narrative`` (length, vague phrases, required pattern) and ``block_billing``."""

from __future__ import annotations

import re
from collections.abc import Iterator

from engine.rules.conditions import Leaf, Node, all_of, any_of
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
    default_message = "Narrative fails the guideline ({field} {actual})"

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
        counted = Feature("words" if p.get("unit") == "words" else "length", "narrative",
                          label=f"narrative {p.get('unit', 'characters')}")
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
