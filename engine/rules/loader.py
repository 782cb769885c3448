"""Loading rule files: one client's Outside Counsel Guidelines, read and validated in stages.

1. YAML syntax (with the position of the error);
2. the JSON Schema (``rules/ocg-ruleset.schema.json``, generated from the rule types' parameter
   schemas by :mod:`engine.rules.schema`);
3. semantics: named lists exist, regexes compile, UTBMS codes and classifications exist (a LEDES code, or
   one of the rule set's own ``classifications:`` aliases), rule ids are unique, message templates only name
   known values.

Every problem is reported as ``file:line:col: where: what``; nothing here raises a traceback at a user.
"""


from __future__ import annotations

import datetime as dt
import hashlib
import json
import string
from decimal import Decimal
from pathlib import Path as FsPath
from typing import Any

import jsonschema

from engine.codes import (
    LEGACY_CLASSIFICATIONS,
    classification_meaning,
    closest,
    is_known_classification,
    timekeeper_classifications,
)
from engine.errors import Invalid
from engine.rules.conditions import Node, constant_fits, leaves
from engine.rules.features import DECIMAL, FIELD_TYPES
from engine.rules.ruleset import Rule, RuleSet, classification_key
from engine.rules.schema import ruleset_schema
from engine.rules.types import RuleProblem, type_of
from engine.rules.types.condition import parse_condition
from engine.rules.yamlpos import Document, Path, Problem, YamlError, describe_path, parse

COMMON_MESSAGE_VARIABLES = {"expected", "actual", "field", "rule_id", "title", "severity", "entry_uid"}


class RuleSetError(Invalid):
    """A rule file that cannot be used; ``problems`` lists everything found wrong with it, each with its
    position. ``str()`` is every problem, one per line; ``message`` the first few, for an API answer."""

    code = "invalid_ruleset"

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(f"{p.line}:{p.column}: {p.message}" for p in problems[:5]), problems)
        self.problems: list[Problem] = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def details(self) -> list[dict[str, Any]]:
        return [{"line": p.line, "column": p.column, "where": p.where, "message": p.message} for p in self.problems]



def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value.normalize())}
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def revision_of(data: Any) -> str:
    """Content hash of the parsed document: comments and layout do not change the revision."""
    text = json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_file(path: str | FsPath) -> RuleSet:
    path = FsPath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleSetError([Problem(str(path), 1, 1, "", f"cannot read file: {exc}")]) from None
    return load_text(text, str(path))


def load_text(text: str, file: str = "<text>") -> RuleSet:
    try:
        doc = parse(text, file)
    except YamlError as exc:
        raise RuleSetError([exc.problem]) from None
    try:
        found = _schema_problems(doc)
        # Rules whose shape is wrong are skipped in the semantic stage, so one run reports everything else too.
        broken = {path[1] for path, _ in found if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int)}
        if any(not (len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int)) for path, _ in found):
            raise RuleSetError([problem for _, problem in found])
        ruleset, problems = _build(doc, text, skip=broken)
    except RecursionError:  # conditions nested within the YAML limit but beyond what validation can walk
        raise RuleSetError([Problem(file, 1, 1, "", "conditions nest too deeply to check")]) from None
    problems = sorted([problem for _, problem in found] + problems, key=lambda p: (p.line, p.column, p.message))
    if problems:
        raise RuleSetError(problems)
    return ruleset


# Stage 2: the JSON Schema --------------------------------------------------------------------------

def _schema_problems(doc: Document) -> list[tuple[Path, Problem]]:
    if not isinstance(doc.data, dict):
        return [((), doc.problem((), "a rule set must be a mapping with id, version, rules, ..."))]
    validator = jsonschema.Draft202012Validator(ruleset_schema())
    found: dict[tuple[Path, str], tuple[Path, Problem]] = {}
    for error in validator.iter_errors(doc.data):
        for leaf_error in _leaf_errors(error):
            path = tuple(leaf_error.absolute_path)
            message = _friendly(leaf_error)
            at_key = False
            if leaf_error.validator == "additionalProperties" and isinstance(leaf_error.instance, dict):
                extra = [k for k in leaf_error.instance if k not in leaf_error.schema.get("properties", {})]
                if extra:
                    path, at_key = (*path, extra[0]), True
            elif leaf_error.schema is False:
                keys = _forbidden_keys(leaf_error, _get(doc.data, path))
                path, at_key = (*path, *keys[:1]), True
                message = (FORBIDDEN_CONDITION if keys[:1] == ["condition"]
                           else f"{keys[0] if keys else 'this'!r} is not allowed here")
            found.setdefault((path, message), (path, doc.problem(path, message, _where(doc, path), key=at_key)))
    return sorted(found.values(), key=lambda item: (item[1].line, item[1].column, item[1].message))


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For oneOf/anyOf failures, report the errors of the branch the author meant."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        if all(set(branch) == {"required"} for branch in error.validator_value):
            return [error]  # "needs one of ..." reads better than any single branch
        meant = _meant_branch(error)
        context = [e for e in error.context if meant is None or e.schema_path[0] == meant]
        best = jsonschema.exceptions.best_match(context)
        return _leaf_errors(best) if best is not None else [error]
    return [error]


_JSON_TYPES = {"object": dict, "array": list, "string": str}


def _meant_branch(error: jsonschema.ValidationError) -> int | None:
    """The alternative whose shape (type, required keys) matches what was written; failing that, the
    one naming most of the keys written (``{feild: rate, op: gt}`` was meant as a comparison)."""
    instance = error.instance
    best, best_overlap = None, 0
    for index, branch in enumerate(error.validator_value):
        if not isinstance(branch, dict):
            continue
        expected = _JSON_TYPES.get(branch.get("type"))
        if expected is not None and not isinstance(instance, expected):
            continue
        if not isinstance(instance, dict):
            return index
        required = branch.get("required", [])
        if not required or set(required) <= set(instance):
            return index
        overlap = len(set(branch.get("properties", {})) & set(instance))
        if overlap > best_overlap:
            best, best_overlap = index, overlap
    return best


FORBIDDEN_CONDITION = "a condition is only for rules of type condition; a named type takes params"


def _forbidden_keys(error: jsonschema.ValidationError, instance: Any) -> list[str]:
    """Keys of ``instance`` that a ``false`` schema forbids (jsonschema's path stops at their parent)."""
    node: Any = ruleset_schema()
    for step in error.schema_path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return []
    if not isinstance(node, dict) or not isinstance(instance, dict):
        return []
    return [key for key, sub in node.items() if sub is False and key in instance]


def _friendly(error: jsonschema.ValidationError) -> str:
    if error.validator == "anyOf" and all(set(b) == {"required"} for b in error.validator_value):
        names = [name for branch in error.validator_value for name in branch["required"]]
        return f"needs at least one of: {', '.join(names)}"
    if error.validator == "minItems" and error.validator_value == 1:
        return "the list is empty"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, extra))} (expected one of: {known})"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type" and isinstance(error.instance, Decimal | int | str | bool):
        shown = str(error.instance) if isinstance(error.instance, Decimal) else repr(error.instance)
        return f"{shown} is not of type {error.validator_value!r}"
    return error.message


def _where(doc: Document, path: Path) -> str:
    text = describe_path(path)
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rules = doc.data.get("rules") if isinstance(doc.data, dict) else None
        if isinstance(rules, list) and path[1] < len(rules) and isinstance(rules[path[1]], dict):
            rule_id = rules[path[1]].get("id")
            if isinstance(rule_id, str):
                text = f"rules/{path[1]} ({rule_id})" + text[len(f"rules/{path[1]}"):]
    return text


# Stage 3: semantics and building the objects -------------------------------------------------------

def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _build(doc: Document, text: str, skip: set[int] | frozenset[int] = frozenset()) -> tuple[RuleSet, list[Problem]]:
    data = doc.data
    problems: list[Problem] = []

    def report(path: Path, message: str, key: bool = False) -> None:
        problems.append(doc.problem(path, message, _where(doc, path), key=key))

    lists: dict[str, list[Any]] = data.get("lists") or {}
    applies = data.get("applies_to") or {}
    effective = data.get("effective") or {}
    dates: dict[str, dt.date | None] = {}
    for key in ("from", "to"):
        try:
            dates[key] = _date(effective.get(key))
        except ValueError:
            report(("effective", key), f"{effective.get(key)!r} is not a date (YYYY-MM-DD)")
            dates[key] = None
    ruleset = RuleSet(
        id=data["id"], version=str(data["version"]), title=data.get("title") or data["id"],
        description=data.get("description"), currency=data.get("currency"),
        clients=list(applies.get("clients") or []), matters=list(applies.get("matters") or []),
        effective_from=dates["from"], effective_to=dates["to"], lists=lists, rules=[],
        revision=revision_of(data), source=doc.file, text=text, guideline=data.get("guideline") or {},
    )
    if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
        report(("effective", "to"), "the end date is before the start date")
    ruleset.classifications = _classifications(doc, data.get("classifications") or {}, report)
    from engine.ledes.profile import profile_problems

    ruleset.invoicing = data.get("invoicing") or {}
    for problem in profile_problems(ruleset.invoicing):
        report(("invoicing", *problem.path), problem.message)

    seen_ids: dict[str, int] = {}
    for index, raw in enumerate(data.get("rules") or []):
        if index in skip:
            continue
        base: Path = ("rules", index)
        if raw["id"] in seen_ids:
            report((*base, "id"), f"duplicate rule id {raw['id']!r} (first used by rules/{seen_ids[raw['id']]})")
            continue
        seen_ids[raw["id"]] = index
        try:
            params = _resolve_lists(raw.get("params") or {}, lists, ("params",))
            rule_dates = raw.get("effective") or {}
            rule = Rule(
                id=raw["id"], title=raw["title"], type=raw["type"], severity=raw.get("severity", "error"),
                status=raw.get("status", "active"), references=list(raw.get("references") or []),
                message=raw.get("message"), params=params, description=raw.get("description"),
                effective_from=_rule_date(rule_dates, "from"),
                effective_to=_rule_date(rule_dates, "to"), index=index,
            )
            for key in ("condition", "when"):
                if key in raw:
                    node = parse_condition(_resolve_lists(raw[key], lists, (key,)), (key,), ruleset)
                    setattr(rule, key, node)
            found = _params_problems(rule, raw.get("params") or {})
            if not found:
                found.extend(type_of(rule).check(rule, ruleset))
            found.extend(_message_problems(rule))
            if rule.effective_from and rule.effective_to and rule.effective_from > rule.effective_to:
                found.append(RuleProblem(("effective", "to"), "the end date is before the start date"))
            # Compile now so every error surfaces at load time, not at first evaluation.
            if not found and not type_of(rule).aggregate:
                found.extend(_constant_problems(type_of(rule).compile(rule, ruleset)))
        except RuleProblem as problem:
            found = [problem]
        for problem in found:
            report((*base, *problem.path), problem.message, key=problem.at_key)
        if found:
            continue
        ruleset.rules.append(rule)
    return ruleset, problems


def _classifications(doc: Document, written: dict[str, str], report: Any) -> dict[str, str]:
    """The ``classifications:`` block: the client's (or firm's) names for timekeeper classes, each standing
    for one LEDES code. An alias may not name an unknown code or another alias, may not give a LEDES code
    another meaning, and may be declared once (names match without regard to case or spacing)."""
    aliases: dict[str, str] = {}
    first: dict[str, str] = {}  # matching key -> alias as first written
    for alias, target in written.items():
        path: Path = ("classifications", alias)
        key = classification_key(alias)
        if not key:
            report(path, "an alias needs a name", key=True)
            continue
        if key in first:
            line, _ = doc.position(("classifications", first[key]), key=True)
            report(path, f"duplicate alias {alias!r} (already declared as {first[key]!r} on line {line})", key=True)
            continue
        first[key] = alias
        code = classification_key(target).upper()
        if not is_known_classification(code):
            if classification_key(target) in {classification_key(a) for a in written} - {key}:
                report(path, f"{target!r} is an alias: an alias names a LEDES classification code, not another alias")
            else:
                hint = closest(code, [*timekeeper_classifications(), *LEGACY_CLASSIFICATIONS])
                report(path, f"unknown LEDES timekeeper classification {target!r}"
                             + (f" (did you mean {hint}?)" if hint else ""))
            continue
        own = key.upper()
        if is_known_classification(own) and own != code:
            meaning = classification_meaning(own)
            report(path, f"{alias!r} is itself a LEDES classification code{f' ({meaning})' if meaning else ''}: "
                         f"it cannot also stand for {code}", key=True)
            continue
        aliases[alias] = code
    return aliases


def _rule_date(dates: dict[str, Any], key: str) -> dt.date | None:
    try:
        return _date(dates.get(key))
    except ValueError:
        raise RuleProblem(("effective", key), f"{dates.get(key)!r} is not a date (YYYY-MM-DD)") from None


def _resolve_lists(value: Any, lists: dict[str, list[Any]], path: Path) -> Any:
    """Replace ``{list: name}`` with the named list's items."""
    if isinstance(value, dict):
        if set(value) == {"list"} and isinstance(value["list"], str):
            if value["list"] not in lists:
                known = ", ".join(sorted(lists)) or "none defined"
                raise RuleProblem((*path, "list"), f"unknown list {value['list']!r} (lists: {known})")
            return list(lists[value["list"]])
        return {k: _resolve_lists(v, lists, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_lists(v, lists, (*path, i)) for i, v in enumerate(value)]
    return value


def _params_problems(rule: Rule, written: dict[str, Any]) -> list[RuleProblem]:
    """Parameters checked again once ``{list: name}`` references are filled in."""
    if rule.params == written:
        return []
    validator = jsonschema.Draft202012Validator(type_of(rule).params_schema)
    problems = []
    for error in validator.iter_errors(rule.params):
        for leaf_error in _leaf_errors(error):
            path = tuple(leaf_error.absolute_path)
            # Point at the list reference the bad value came from.
            while path and _get(written, path) is None:
                path = path[:-1]
            problems.append(RuleProblem(("params", *path), f"from the named list: {_friendly(leaf_error)}"))
    return problems


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _constant_problems(node: Node) -> list[RuleProblem]:
    problems = []
    for leaf in leaves(node):
        values = leaf.value if leaf.op in ("in", "not_in") else (leaf.value,)
        for value in values:
            if isinstance(value, Decimal) and not constant_fits(DECIMAL, value):
                problems.append(RuleProblem(("params",), f"{value} has more than six decimal places"))
    return problems


def _message_problems(rule: Rule) -> list[RuleProblem]:
    if not rule.message:
        return []
    allowed = set(FIELD_TYPES) | COMMON_MESSAGE_VARIABLES | set(type_of(rule).message_variables)
    try:
        parts = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(rule.message)
                 if name is not None]
    except ValueError as exc:
        return [RuleProblem(("message",), f"invalid message template: {exc}")]
    problems = []
    for name, spec, conversion in parts:
        if name not in allowed:
            problems.append(RuleProblem(("message",), f"message template names unknown value {{{name}}}"))
        elif spec or conversion:
            problems.append(RuleProblem(("message",), f"write {{{name}}} without a format: values are shown "
                                        "as the entry has them"))
    return problems
