"""Conditions and values in words, for ``ocgate rules explain`` and the rule types' own ``describe``
(kept apart from :mod:`engine.rules.explain`, which reads the types, so that the types can use it too)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

from engine.codes import classification_meaning
from engine.rules.conditions import And, Leaf, Node, Not, Or

INDENT = "  "

_OPS = {
    "eq": "is", "ne": "is given and is not", "lt": "is less than", "le": "is at most", "gt": "is more than",
    "ge": "is at least", "in": "is one of", "not_in": "is given and is none of",
}


def condition_lines(node: Node, depth: int = 0) -> list[str]:
    """A condition as a nested list a reviewer can read: "all of:", "any of:", "not:", and comparisons."""
    pad = INDENT * depth
    if isinstance(node, And | Or):
        lines = [f"{pad}{'all' if isinstance(node, And) else 'any'} of:"]
        for child in node.children:
            sub = condition_lines(child, depth + 1)
            lines.append(f"{INDENT * (depth + 1)}- {sub[0].strip()}")
            lines.extend(sub[1:])
        return lines
    if isinstance(node, Not):
        sub = condition_lines(node.child, depth + 1)
        if len(sub) == 1:
            return [f"{pad}not: {sub[0].strip()}"]
        return [f"{pad}not:", *sub]
    return [f"{pad}{leaf_text(node)}"]


def leaf_text(leaf: Leaf) -> str:
    feature, op, value = leaf.feature, leaf.op, leaf.value
    field = feature.field
    if feature.kind == "match":
        matches = (value is True) == (op == "eq")
        return f"{field} {'matches' if matches else 'does not match'} /{feature.arg.pattern}/"
    if feature.kind == "member":
        inside = (value is True) == (op == "eq")
        listed = value_text(sorted(feature.arg, key=str))
        return f"{field} {'is one of' if inside else 'is given and is none of'} {listed}"
    if feature.kind == "versus":
        return f"{field} {_OPS.get(op, op)} {feature.arg.describe()}"
    subject = {
        "length": f"the number of characters in {field} (leading and trailing spaces not counted)",
        "words": f"the number of words in {field}",
        "segments": feature.label or f"the number of pieces of {field}",
        "remainder": f"{field} modulo {value_text(feature.arg)}",
    }.get(feature.kind, field)
    if op == "present":
        return f"{subject} is given"
    if op == "missing":
        return f"{subject} is missing"
    shown = value_text(value)
    if field == "timekeeper_classification" and feature.kind == "field":
        shown = (", ".join(class_name(v) for v in value) if isinstance(value, tuple | list)
                 else class_name(str(value)))
    return f"{subject} {_OPS.get(op, op)} {shown}"


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple | list | frozenset | set):
        return ", ".join(value_text(v) for v in value)
    return str(value)


def class_name(code: str) -> str:
    """``PARTNR (partner)``; a code without plain words shows alone."""
    meaning = classification_meaning(code)
    return f"{code} ({meaning})" if meaning else code
