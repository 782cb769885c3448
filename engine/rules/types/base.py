"""What a rule type is: a parameter schema, semantic checks, and either a condition or a batch check.

Adding a rule type is one class in one module of this package, registered with :func:`register`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from engine.model import Entry
from engine.rules.conditions import Evidence, FieldRef, Leaf, Node, all_of, any_of
from engine.rules.features import DATE, DECIMAL, FIELD_TYPES, INT, ORDERED_TYPES, Feature, field_feature
from engine.rules.ruleset import Rule, RuleSet

Path = tuple[str | int, ...]


class RuleProblem(Exception):
    """A semantic error inside a rule, at ``path`` relative to the rule."""

    def __init__(self, path: Path, message: str, at_key: bool = False):
        super().__init__(message)
        self.path = path
        self.message = message
        self.at_key = at_key  # point at the mapping key itself (a misspelt name), not its value


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A proposed write-down: the field changed, its old and new value, and the money effect."""

    field: str
    current: Decimal
    proposed: Decimal
    amount: Decimal  # change to the line total, negative for a write-down

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "current": str(self.current), "proposed": str(self.proposed),
                "amount": str(self.amount)}


@dataclass(slots=True)
class AggregateHit:
    """A group of entries flagged together by a batch rule: each of ``indexes`` gets a violation
    carrying the same evidence and the whole group as contributing entries. ``members``, when given, is the
    group when it is more than the entries flagged (the attendees an attendance limit keeps); ``severity``, when
    given, replaces the rule's (a budget's warning band)."""

    indexes: list[int]
    evidence: list[Evidence]
    variables: dict[str, Any] = field(default_factory=dict)
    members: list[int] | None = None
    severity: str | None = None


# Reusable schema pieces ---------------------------------------------------------------------------

NUMBER = {"type": "number"}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
NON_NEGATIVE = {"type": "number", "minimum": 0}
LIST_REF = {
    "type": "object",
    "properties": {"list": {"type": "string", "minLength": 1}},
    "required": ["list"],
    "additionalProperties": False,
}


def list_of(items: dict[str, Any]) -> dict[str, Any]:
    """A non-empty inline list, or ``{list: name}`` naming one of the rule set's lists."""
    return {"oneOf": [{"type": "array", "items": items, "minItems": 1}, LIST_REF]}


STRINGS = list_of({"type": "string", "minLength": 1})
CODE_LIST = list_of({"type": "string", "pattern": "^[A-Za-z]{1,2}[0-9]{2,3}$"})
ACTION = {"enum": ["flag", "adjust"], "default": "flag"}
DATE_TEXT = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}  # as engine.rules.schema.DATE


class RuleType:
    name: ClassVar[str]
    summary: ClassVar[str]
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}
    aggregate: ClassVar[bool] = False
    # Names a message template may use beyond the entry's fields, expected and actual.
    message_variables: ClassVar[tuple[str, ...]] = ()
    default_message: ClassVar[str] = "{title}"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        """Semantic checks beyond the schema (codes exist, regexes compile, ...)."""
        return iter(())

    def compile(self, rule: Rule, ruleset: RuleSet) -> Node:
        raise TypeError(f"{self.name} is a batch rule and has no per-entry condition")

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Any,
                       cache: dict[object, object] | None = None) -> Iterator[AggregateHit]:
        """Hits over the whole batch; ``cache`` lets batch rules share indexes built over the same entries."""
        raise TypeError(f"{self.name} is a per-entry rule")

    # The entry fields ``propose`` reads besides the finding's evidence, when the type states them (None: any).
    # A backtest judges entries alike in these and in the condition's features once.
    proposal_fields: frozenset[str] | None = None

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        return None

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        """Extra values for message templates (named in ``message_variables``)."""
        return {}

    # A type may also define ``describe(self, rule, ruleset) -> list[str]``: the lines a legal-ops reviewer
    # reads to sign off the rule (``ocgate rules explain``).


REGISTRY: dict[str, RuleType] = {}


def register(cls: type[RuleType]) -> type[RuleType]:
    REGISTRY[cls.name] = cls()
    return cls


def type_of(rule: Rule) -> RuleType:
    """The type that compiles, checks and explains ``rule``."""
    return REGISTRY[rule.type]


# Helpers for building conditions ------------------------------------------------------------------

def leaf(field_name: str, op: str, value: Any = None, note: str = "") -> Leaf:
    """A comparison on a field; numbers become the field's type (Decimal for money and hours).

    ``value`` may be a :class:`FieldRef`: ``leaf("rate", "gt", FieldRef("standard_rate", Decimal("0.9")))``
    compares the rate with 0.9 x the entry's standard rate (false when either is missing).
    """
    kind = FIELD_TYPES[field_name]
    if isinstance(value, FieldRef):
        return versus(field_name, op, value, note)
    if op in ("in", "not_in"):
        value = tuple(value)
    elif kind == DECIMAL and isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    elif kind == INT and isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    return Leaf(field_feature(field_name), op, value, note)


def versus(field_name: str, op: str, ref: FieldRef, note: str = "", label: str = "") -> Leaf:
    """``field op ref``: the difference of the two fields (times the factor) compared with zero."""
    kind = FIELD_TYPES[field_name]
    if op not in ("eq", "ne", "lt", "le", "gt", "ge"):
        raise ValueError(f"{op} cannot compare two fields")
    if kind not in ORDERED_TYPES or FIELD_TYPES.get(ref.field) not in ORDERED_TYPES:
        raise ValueError(f"{field_name} and {ref.field} are not both numbers or both dates")
    if (kind == DATE) != (FIELD_TYPES[ref.field] == DATE) or (kind == DATE and ref.times is not None):
        raise ValueError(f"{field_name} and {ref.field} are not both numbers or both dates")
    zero: Any = 0 if kind == DATE else Decimal(0)
    return Leaf(Feature("versus", field_name, ref, label), op, zero, note)


def field_ref(data: dict[str, Any], name: str, op: str, path: Path, label: str = "") -> Leaf:
    """The YAML form ``value: {field: standard_rate, times: 0.9}`` of a comparison with another field,
    checked: a known field of a comparable type, an ordering or equality operator, a positive factor."""
    extra = sorted(set(data) - {"field", "times"})
    if extra:
        raise RuleProblem((*path, extra[0]), f"unknown key {extra[0]!r} in a field reference "
                          "(expected field and times)", at_key=True)
    other = data.get("field")
    if not isinstance(other, str) or other not in FIELD_TYPES:
        raise RuleProblem((*path, "field"), f"unknown field {other!r} to compare with; see docs/rules.md "
                          "for the field list")
    if op not in ("eq", "ne", "lt", "le", "gt", "ge"):
        raise RuleProblem((*path[:-1], "op"), f"{op} cannot compare two fields (use eq, ne, lt, le, gt or ge)")
    mine, theirs = FIELD_TYPES[name], FIELD_TYPES[other]
    numeric = (DECIMAL, INT)
    if not ((mine in numeric and theirs in numeric) or (mine == theirs == DATE)):
        raise RuleProblem((*path, "field"), f"{name} ({mine}) cannot be compared with {other} ({theirs})")
    times = data.get("times")
    if times is not None:
        if mine == DATE:
            raise RuleProblem((*path, "times"), "dates cannot be multiplied: leave out times")
        times = parse_factor(times, (*path, "times"))
    return versus(name, op, FieldRef(other, times), label=label)


_PERCENT = re.compile(r"^\s*(\d{1,3}(?:\.\d{1,4})?)\s*%\s*$")
SHARE = {"oneOf": [{"type": "number", "minimum": 0, "maximum": 1},
                   {"type": "string", "pattern": r"^\s*\d{1,3}(\.\d{1,4})?\s*%\s*$"}]}


def parse_share(value: Any, path: Path) -> Decimal:
    """A share between 0 and 1, written as a number (``0.5``) or a percentage (``"50%"``)."""
    if isinstance(value, str):
        found = _PERCENT.match(value)
        if found is None:
            raise RuleProblem(path, f"{value!r} is not a percentage such as \"10%\"")
        share = Decimal(found.group(1)) / 100
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        share = Decimal(value)
    else:
        raise RuleProblem(path, f"{value!r} is not a share: write 0.5 or \"50%\"")
    if not 0 <= share <= 1:
        raise RuleProblem(path, f"{value} is not between 0 and 100%")
    return share


def parse_factor(value: Any, path: Path) -> Decimal:
    """A positive factor, written as a number (``0.9``, ``"0.9"``) or a percentage (``"90%"``)."""
    if isinstance(value, str) and "%" in value:
        found = _PERCENT.match(value)
        if found is None:
            raise RuleProblem(path, f"{value!r} is not a percentage such as \"90%\"")
        factor = Decimal(found.group(1)) / 100
    else:
        try:
            factor = Decimal(value.strip() if isinstance(value, str) else value)
        except (ArithmeticError, TypeError, ValueError):
            raise RuleProblem(path, f"{value!r} is not a number") from None
        if isinstance(value, bool) or not factor.is_finite():
            raise RuleProblem(path, f"{value!r} is not a number")
    if factor <= 0 or factor > 1000:
        raise RuleProblem(path, f"the factor {value} must be above 0 (and at most 1000)")
    if factor.as_tuple().exponent < -6:  # type: ignore[operator]
        raise RuleProblem(path, f"{value} has more than six decimal places")
    return factor


def percent(share: Decimal) -> str:
    """``0.5`` as ``50%``, ``0.125`` as ``12.5%``."""
    return f"{(share * 100).normalize():f}%"


def is_time() -> Leaf:
    return leaf("entry_kind", "eq", "time")


def is_expense() -> Leaf:
    return leaf("entry_kind", "eq", "expense")


def one_of(field_name: str, values: Sequence[Any]) -> Node:
    values = list(dict.fromkeys(values))
    return leaf(field_name, "eq", values[0]) if len(values) == 1 else leaf(field_name, "in", values)


def compile_regex(pattern: str, path: Path, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise RuleProblem(path, f"invalid regular expression {pattern!r}: {exc}") from None


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive match of any phrase; spaces inside a phrase match any whitespace."""
    parts = sorted({r"\s+".join(re.escape(w) for w in p.split()) for p in phrases}, key=lambda p: (-len(p), p))
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def match(field_name: str, pattern: re.Pattern[str], label: str = "") -> Leaf:
    return Leaf(Feature("match", field_name, pattern, label), "eq", True)


def no_match(field_name: str, pattern: re.Pattern[str]) -> Leaf:
    return Leaf(Feature("match", field_name, pattern), "eq", False)


__all__ = [
    "ACTION", "CODE_LIST", "DATE_TEXT", "LIST_REF", "NON_NEGATIVE", "NUMBER", "POSITIVE", "REGISTRY", "SHARE",
    "STRINGS", "Adjustment", "AggregateHit", "FieldRef", "RuleProblem", "RuleType", "all_of", "any_of",
    "compile_regex", "field_ref", "is_expense", "is_time", "leaf", "list_of", "match", "no_match", "one_of",
    "parse_factor", "parse_share", "percent", "phrase_pattern", "register", "versus",
]
