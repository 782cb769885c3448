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
from engine.rules.conditions import Evidence, Leaf, Node, all_of, any_of
from engine.rules.features import DECIMAL, FIELD_TYPES, INT, Feature, field_feature
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
    carrying the same evidence and the whole group as contributing entries."""

    indexes: list[int]
    evidence: list[Evidence]
    variables: dict[str, Any] = field(default_factory=dict)


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

    def propose(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> Adjustment | None:
        return None

    def message_values(self, rule: Rule, entry: Entry, evidence: list[Evidence]) -> dict[str, Any]:
        """Extra values for message templates (named in ``message_variables``)."""
        return {}


REGISTRY: dict[str, RuleType] = {}


def register(cls: type[RuleType]) -> type[RuleType]:
    REGISTRY[cls.name] = cls()
    return cls


def type_of(rule: Rule) -> RuleType:
    """The type that compiles, checks and explains ``rule``."""
    return REGISTRY[rule.type]


# Helpers for building conditions ------------------------------------------------------------------

def leaf(field_name: str, op: str, value: Any = None) -> Leaf:
    """A comparison on a field; numbers become the field's type (Decimal for money and hours)."""
    kind = FIELD_TYPES[field_name]
    if op in ("in", "not_in"):
        value = tuple(value)
    elif kind == DECIMAL and isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    elif kind == INT and isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    return Leaf(field_feature(field_name), op, value)


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
    "ACTION", "CODE_LIST", "LIST_REF", "NON_NEGATIVE", "NUMBER", "POSITIVE", "REGISTRY", "STRINGS",
    "Adjustment", "AggregateHit", "RuleProblem", "RuleType", "all_of", "any_of", "compile_regex",
    "is_expense", "is_time", "leaf", "list_of", "match", "no_match", "one_of", "phrase_pattern", "register",
]
