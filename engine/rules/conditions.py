"""The one condition form every per-entry rule compiles to, and its two evaluators' inputs.

Rules are written as ``all`` / ``any`` / ``not`` trees over comparisons. Before evaluation a tree is
put in negation normal form (:func:`to_nnf`): ``not`` is pushed down to the comparisons, so both
backends see only ``and``, ``or`` and leaves. A comparison on a missing value is false, and
``not (rate > 500)`` holds when the rate is missing *or* at most 500: negation is exact.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from enum import Enum
from typing import Any

from engine.rules.features import BOOL, DATE, DECIMAL, INT, STRING, Feature, field_feature
from engine.rules.features import FieldRef as FieldRef  # re-exported: how a comparison names another field

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
ORDERED = ("lt", "le", "gt", "ge")
NEGATED = {
    "eq": "ne", "ne": "eq", "lt": "ge", "ge": "lt", "gt": "le", "le": "gt",
    "in": "not_in", "not_in": "in", "present": "missing", "missing": "present",
}
SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass(frozen=True, slots=True)
class Leaf:
    """``feature op value``; ``present``/``missing`` take no value; ``in``/``not_in`` take a tuple.

    ``note`` says where the value came from (which cap, which period), for the evidence; it is not part of
    the comparison. A comparison with another field is a leaf on a ``versus`` feature (see
    :class:`~engine.rules.features.FieldRef`): the difference compared with zero.
    """

    feature: Feature
    op: str
    value: Any = None
    note: str = dataclass_field(default="", compare=False)


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
    """The features a condition reads; a comparison of two fields also reads each of them (for the evidence)."""
    found: dict[str, Feature] = {}
    for leaf in leaves(node):
        found[leaf.feature.key] = leaf.feature
        if leaf.feature.kind == "versus":
            for side in (field_feature(leaf.feature.field), field_feature(leaf.feature.arg.field)):
                found.setdefault(side.key, side)
    return found


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
    basis: str | None = None  # how ``expected`` was arrived at, when it is not a constant of the rule

    def as_dict(self) -> dict[str, Any]:
        out = {
            "field": self.field,
            "operator": self.operator,
            "expected": render_value(self.expected),
            "actual": render_value(self.actual),
        }
        if self.basis is not None:
            out["basis"] = self.basis
        return out


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
    if feature.kind == "versus":
        return [_versus_evidence(node, values)]
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
    return [Evidence(feature.describe(), node.op, expected, value, node.note or None)]


def _versus_evidence(node: Leaf, values: dict[str, Any]) -> Evidence:
    """A comparison of two fields, shown as the field against the value worked out from the other one:
    ``rate gt 945.00 (0.9 x standard_rate 1050.00)``."""
    feature, ref = node.feature, node.feature.arg
    actual, other = values.get(feature.field), values.get(ref.field)
    shown = feature.label or feature.field
    note = f"; {node.note}" if node.note else ""
    if node.op in ("present", "missing"):
        # The comparison could not be made (negated rules hold then): say which side is missing.
        side = ref.field if other is None else feature.field
        return Evidence(side, "exists", node.op == "present", values.get(side),
                        f"{shown} is compared with {ref.describe()}{note}")
    return Evidence(shown, node.op, ref.expected(other), actual, f"{ref.describe(other)}{note}")


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
