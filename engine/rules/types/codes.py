"""Who may bill and with which UTBMS codes: ``approved_timekeepers``, ``blocked_codes``, ``required_codes``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.codes import utbms_codes
from engine.model import Entry
from engine.rules.conditions import Evidence, Node, all_of, any_of
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.base import (
    CODE_LIST,
    STRINGS,
    RuleProblem,
    RuleType,
    is_expense,
    is_time,
    leaf,
    one_of,
    register,
)
from engine.rules.types.rates import TIMEKEEPER_FIELDS

CODE_FIELDS = {"task_codes": "utbms_task_code", "activity_codes": "utbms_activity_code",
               "expense_codes": "utbms_expense_code"}
KIND_OF = {"task_codes": ("task", "phase"), "activity_codes": ("activity",), "expense_codes": ("expense",)}


def check_codes(params: dict, keys: tuple[str, ...]) -> Iterator[RuleProblem]:
    """Each code under ``keys`` exists and is of the right kind; paths are relative to ``params``."""
    known = utbms_codes()
    for key in keys:
        kind = KIND_OF["task_codes" if key in ("task_codes", "allowed_task_codes") else key]
        for i, code in enumerate(params.get(key) or []):
            found = known.get(code.upper())
            if found is None:
                yield RuleProblem((key, i), f"unknown UTBMS code {code!r}")
            elif found.kind not in kind:
                article = "an" if kind[0][0] in "aeiou" else "a"
                yield RuleProblem((key, i), f"{code} is a UTBMS {found.kind} code, not {article} {kind[0]} code")


def expand_phases(codes: list[str]) -> list[str]:
    """A phase code (``L100``) stands for itself and every task under it."""
    known = utbms_codes()
    out: list[str] = []
    for code in codes:
        code = code.upper()
        out.append(code)
        if known.get(code) is not None and known[code].kind == "phase":
            out.extend(c.code for c in known.values() if c.parent == code and c.code != code)
    return list(dict.fromkeys(out))


@register
class ApprovedTimekeepers(RuleType):
    name = "approved_timekeepers"
    summary = "Only the listed timekeepers may bill time."
    params_schema = {
        "type": "object",
        "properties": {"timekeepers": STRINGS,
                       "timekeeper_field": {"enum": TIMEKEEPER_FIELDS, "default": "timekeeper_ledes_id"}},
        "required": ["timekeepers"],
        "additionalProperties": False,
    }
    message_variables = ("timekeeper",)
    default_message = "Timekeeper {timekeeper} is not on the client's approved staffing list"

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        field = rule.params.get("timekeeper_field", "timekeeper_ledes_id")
        value = getattr(entry, field)
        name = entry.timekeeper_name or entry.timekeeper_source_id or "(unnamed)"
        return {"timekeeper": f"{name} ({value})" if value else f"{name} (no {field})"}

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        if not rule.params["timekeepers"]:
            yield RuleProblem(("params", "timekeepers"), "the approved list is empty: nobody could bill")

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        field = rule.params.get("timekeeper_field", "timekeeper_ledes_id")
        return all_of(is_time(), any_of(leaf(field, "missing"), leaf(field, "not_in", rule.params["timekeepers"])))

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        field = rule.params.get("timekeeper_field", "timekeeper_ledes_id")
        approved = rule.params["timekeepers"]
        return [f"Flags a time entry whose {field} is missing or is not one of the {len(approved)} approved "
                f"(compared exactly): {', '.join(approved)}.", "Expenses are not checked."]


@register
class BlockedCodes(RuleType):
    name = "blocked_codes"
    summary = "UTBMS task, activity or expense codes the client refuses to pay for (a phase blocks its tasks)."
    params_schema = {
        "type": "object",
        "properties": {key: CODE_LIST for key in CODE_FIELDS},
        "additionalProperties": False,
        "minProperties": 1,
    }
    default_message = "Code {actual} is not billable under these guidelines"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        for problem in check_codes(rule.params, tuple(CODE_FIELDS)):
            yield RuleProblem(("params", *problem.path), problem.message)

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        parts = [one_of(field, expand_phases(rule.params[key]))
                 for key, field in CODE_FIELDS.items() if rule.params.get(key)]
        return any_of(*parts)

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        lines = ["Flags any entry (time or expense, billable or not) coded with any of:"]
        for key in CODE_FIELDS:
            codes = rule.params.get(key)
            if codes:
                kind = key.replace("_", " ")
                lines.append(f"  - {kind if len(codes) > 1 else kind.removesuffix('s')} {codes_in_words(codes)}")
        return lines


@register
class RequiredCodes(RuleType):
    name = "required_codes"
    summary = ("Time entries need a task (and activity) code, expenses an expense code; optionally only "
               "codes from the listed code sets.")
    params_schema = {
        "type": "object",
        "properties": {
            "task": {"type": "boolean", "default": True},
            "activity": {"type": "boolean", "default": True},
            "expense": {"type": "boolean", "default": True},
            "task_code_sets": STRINGS,
            "allowed_task_codes": CODE_LIST,
        },
        "additionalProperties": False,
    }
    default_message = "A required UTBMS code is missing or not allowed"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        sets = {c.code_set for c in utbms_codes().values() if c.kind == "task"}
        for i, name in enumerate(rule.params.get("task_code_sets") or []):
            if name not in sets:
                yield RuleProblem(("params", "task_code_sets", i),
                                  f"unknown UTBMS code set {name!r} (known: {', '.join(sorted(sets))})")
        for problem in check_codes(rule.params, ("allowed_task_codes",)):
            yield RuleProblem(("params", *problem.path), problem.message)

    def _allowed_tasks(self, rule: Rule) -> list[str]:
        sets = set(rule.params.get("task_code_sets") or [])
        allowed = [c.code for c in utbms_codes().values() if c.code_set in sets and c.kind == "task"]
        allowed.extend(expand_phases(rule.params.get("allowed_task_codes") or []))
        return list(dict.fromkeys(allowed))

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        p = rule.params
        parts: list[Node] = []
        allowed = self._allowed_tasks(rule)
        billable = leaf("billable", "eq", True)
        if p.get("task", True):
            parts.append(all_of(is_time(), leaf("utbms_task_code", "missing")))
        if allowed:
            parts.append(all_of(is_time(), leaf("utbms_task_code", "not_in", allowed)))
        if p.get("activity", True):
            parts.append(all_of(is_time(), leaf("utbms_activity_code", "missing")))
        if p.get("expense", True):
            parts.append(all_of(is_expense(), leaf("utbms_expense_code", "missing")))
        if not parts:
            raise RuleProblem(("params",), "this rule requires nothing: set task, activity or expense")
        return all_of(billable, any_of(*parts))

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        p = rule.params
        lines = ["Looks at billable entries only, and flags:"]
        if p.get("task", True):
            lines.append("  - a time entry without a task code;")
        allowed = []
        for name in p.get("task_code_sets") or []:
            tasks = [c.code for c in utbms_codes().values() if c.code_set == name and c.kind == "task"]
            allowed.append(f"the task codes of the {name} code set ({tasks[0]} to {tasks[-1]}, {len(tasks)} codes)"
                           if tasks else f"the {name} code set")
        if p.get("allowed_task_codes"):
            allowed.append(codes_in_words(p["allowed_task_codes"]))
        if allowed:
            lines.append(f"  - a time entry whose task code is not among {' and '.join(allowed)};")
        if p.get("activity", True):
            lines.append("  - a time entry without an activity code;")
        if p.get("expense", True):
            lines.append("  - an expense entry without an expense code.")
        return lines


def codes_in_words(codes: list[str]) -> str:
    """``L140, A110`` or, for a phase, ``L100 (a phase, with its tasks L110, L120, ...)``."""
    known = utbms_codes()
    parts = []
    for code in dict.fromkeys(c.upper() for c in codes):
        found = known.get(code)
        if found is not None and found.kind == "phase":
            tasks = [c for c in expand_phases([code]) if c != code]
            parts.append(f"{code} (a phase, with its tasks {', '.join(tasks)})" if tasks else code)
        else:
            parts.append(code)
    return ", ".join(parts)
