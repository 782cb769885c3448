"""The one condition form every per-entry rule compiles to, and its two evaluators' inputs.

Rules are written as ``all`` / ``any`` / ``not`` trees over comparisons. Before evaluation a tree is
put in negation normal form (:func:`to_nnf`): ``not`` is pushed down to the comparisons, so both
backends see only ``and``, ``or`` and leaves. A comparison on a missing value is false, and
``not (rate > 500)`` holds when the rate is missing *or* at most 500: negation is exact.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from engine.rules.features import BOOL, DATE, DECIMAL, INT, STRING, Feature

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
ORDERED = ("lt", "le", "gt", "ge")
NEGATED = {
    "eq": "ne", "ne": "eq", "lt": "ge", "ge": "lt", "gt": "le", "le": "gt",
    "in": "not_in", "not_in": "in", "present": "missing", "missing": "present",
}
SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass(frozen=True, slots=True)
class Leaf:
    """``feature op value``; ``present``/``missing`` take no value; ``in``/``not_in`` take a tuple."""

    feature: Feature
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node = Leaf | And | Or | Not


def all_of(*children: Node | None) -> Node:
    kept = tuple(c for c in children if c is not None)
    return kept[0] if len(kept) == 1 else And(kept)


def any_of(*children: Node | None) -> Node:
    kept = tuple(c for c in children if c is not None)
    return kept[0] if len(kept) == 1 else Or(kept)


def to_nnf(node: Node, negate: bool = False) -> Node:
    """Push negations down to the leaves, flattening nested and/or on the way."""
    if isinstance(node, Not):
        return to_nnf(node.child, not negate)
    if isinstance(node, And | Or):
        children = [to_nnf(c, negate) for c in node.children]
        as_and = isinstance(node, And) != negate
        kind = And if as_and else Or
        flat: list[Node] = []
        for child in children:
            flat.extend(child.children if isinstance(child, kind) else (child,))
        return flat[0] if len(flat) == 1 else kind(tuple(flat))
    if not negate:
        return node
    negated = Leaf(node.feature, NEGATED[node.op], node.value)
    if node.op in ("present", "missing"):
        return negated
    # Not(x op v) holds when x is missing, or when x is there and the opposite comparison holds.
    return Or((Leaf(node.feature, "missing"), negated))


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, Not):
        return leaves(node.child)
    return [leaf for child in node.children for leaf in leaves(child)]


def features_of(node: Node) -> dict[str, Feature]:
    return {leaf.feature.key: leaf.feature for leaf in leaves(node)}


def holds(node: Node, values: dict[str, Any]) -> bool:
    """Interpret an NNF tree over computed feature values (used to explain; not the hot path)."""
    if isinstance(node, And):
        return all(holds(c, values) for c in node.children)
    if isinstance(node, Or):
        return any(holds(c, values) for c in node.children)
    if isinstance(node, Not):
        return not holds(node.child, values)
    value = values.get(node.feature.key)
    if node.op == "present":
        return value is not None
    if node.op == "missing":
        return value is None
    if value is None:
        return False
    if node.op == "in":
        return value in node.value
    if node.op == "not_in":
        return value not in node.value
    return _COMPARE[node.op](value, node.value)


_COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One comparison that made a rule fire: the value the rule expected and the one it found."""

    field: str
    operator: str
    expected: Any
    actual: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "operator": self.operator,
            "expected": render_value(self.expected),
            "actual": render_value(self.actual),
        }


def explain(node: Node, values: dict[str, Any], entry: Any) -> list[Evidence]:
    """The leaves that make an NNF tree true: every child of an ``and``, the first true ``or`` branch."""
    if isinstance(node, And):
        return [ev for c in node.children for ev in explain(c, values, entry)]
    if isinstance(node, Or):
        for child in node.children:
            if holds(child, values):
                return explain(child, values, entry)
        return []
    if isinstance(node, Not):
        return []
    value = values.get(node.feature.key)
    feature = node.feature
    if feature.kind == "match" and node.op in ("eq", "ne"):
        # Show what matched (or the text searched), not the boolean.
        text = getattr(entry, feature.field)
        found = feature.arg.search(text) if text is not None else None
        matched = (node.value is True) == (node.op == "eq")
        return [Evidence(feature.field, "matches" if matched else "not_matches", feature.arg.pattern,
                         found.group(0) if found is not None else text)]
    if feature.kind == "member":
        inside = (node.value is True) == (node.op == "eq")
        return [Evidence(feature.field, "in" if inside else "not_in", sorted(feature.arg, key=str),
                         getattr(entry, feature.field))]
    if node.op in ("present", "missing"):
        return [Evidence(feature.describe(), "exists", node.op == "present", value)]
    expected = list(node.value) if node.op in ("in", "not_in") else node.value
    return [Evidence(feature.describe(), node.op, expected, value)]


def render_value(value: Any) -> Any:
    """A JSON-friendly rendering that keeps decimals exact (as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple | frozenset | set):
        return [render_value(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Encoding for durable-rules: its facts are JSON, so decimals and dates become integers that order
# exactly as the originals do.

DECIMAL_SCALE = Decimal(10) ** 6


def encode_fact_value(kind: str, value: Any) -> Any:
    """Fact side: a value read from an entry.

    A decimal becomes ``2*floor(v*10^6)``, plus 1 when digits remain below 10^-6, so it orders
    exactly against constants (which have at most six decimal places and encode as even numbers).
    """
    if kind in (DECIMAL, INT):
        scaled = Decimal(value) * DECIMAL_SCALE
        whole = int(scaled.to_integral_value(rounding="ROUND_FLOOR"))
        return 2 * whole + (1 if scaled != whole else 0)
    if kind == DATE:
        return value.toordinal()
    if kind == BOOL:
        return 1 if value else 0
    return str(value)


def encode_constant(kind: str, value: Any) -> Any:
    if kind in (DECIMAL, INT):
        scaled = Decimal(value) * DECIMAL_SCALE
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than six decimal places")
        return 2 * int(scaled)
    return encode_fact_value(kind, value)


def constant_fits(kind: str, value: Any) -> bool:
    if kind in (DECIMAL, INT):
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            return False
        scaled = Decimal(value) * DECIMAL_SCALE
        return scaled == scaled.to_integral_value()
    if kind == DATE:
        return isinstance(value, dt.date)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == STRING:
        return isinstance(value, str)
    return False
