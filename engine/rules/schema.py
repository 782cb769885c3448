"""The JSON Schema of a rule set, generated from the rule types' own parameter schemas.

``rules/ocg-ruleset.schema.json`` is this schema written out (``ocgate rules schema``) for editors;
a test keeps the two identical.
"""

from __future__ import annotations

from functools import cache
from typing import Any

DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
PERIOD = {
    "type": "object",
    "properties": {"from": {"oneOf": [DATE, {"type": "null"}]}, "to": {"oneOf": [DATE, {"type": "null"}]}},
    "additionalProperties": False,
}
RULE_ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "maxLength": 80}


def condition_schema() -> dict[str, Any]:
    comparison = {
        "type": "object",
        "properties": {
            "field": {"type": "string"},
            "op": {"enum": ["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "matches", "length",
                            "words", "exists"]},
            "value": {},
            "label": {"type": "string"},
        },
        "required": ["field", "op"],
        "additionalProperties": False,
    }
    ref = {"$ref": "#/$defs/condition"}
    return {
        "oneOf": [
            {"type": "object", "properties": {"all": {"type": "array", "items": ref, "minItems": 1}},
             "required": ["all"], "additionalProperties": False},
            {"type": "object", "properties": {"any": {"type": "array", "items": ref, "minItems": 1}},
             "required": ["any"], "additionalProperties": False},
            {"type": "object", "properties": {"not": ref}, "required": ["not"], "additionalProperties": False},
            comparison,
        ]
    }


def invoicing_schema() -> dict[str, Any]:
    """How the client wants its invoices: LEDES format, timekeeper codes, tax, discounts."""
    text = {"type": "string"}
    number = {"type": ["string", "number"]}
    party = {"type": "object", "additionalProperties": False,
             "properties": {k: text for k in ("name", "address_1", "address_2", "city", "state_or_region",
                                              "postcode", "country")}}
    discount = {
        "type": "object",
        "properties": {"kind": {"enum": ["fees", "expenses"]}, "percent": number, "amount": number,
                       "description": {"type": "string", "minLength": 1}, "expense_code": text},
        "required": ["kind", "description"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "format": {"enum": ["1998b", "98bi"]},
            "timekeeper_codes": {"enum": ["2014", "legacy"]},
            "multiple_matters": {"type": "boolean"},
            "reviewer_adjustments": {"enum": ["line_adjustment", "restate"]},
            "max_description": {"type": "integer", "minimum": 20},
            "require_client_matter_id": {"type": "boolean"},
            "tax": {"type": "object", "properties": {"rate": number, "type": text},
                    "required": ["rate"], "additionalProperties": False},
            "client_tax_id": text,
            "po_number": text,
            "client": party,
            "discounts": {"type": "array", "items": discount},
        },
        "additionalProperties": False,
    }


@cache
def ruleset_schema() -> dict[str, Any]:
    from engine.rules.types import REGISTRY

    per_type = []
    for name, rule_type in sorted(REGISTRY.items()):
        params = rule_type.params_schema
        then: dict[str, Any] = {"properties": {"params": params}}
        if name == "condition":
            then["required"] = ["condition"]
        else:
            then["properties"]["condition"] = False
            if params.get("required") or params.get("anyOf") or params.get("minProperties"):
                then["required"] = ["params"]
        per_type.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then})

    rule = {
        "type": "object",
        "properties": {
            "id": RULE_ID,
            "title": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "type": {"enum": sorted(REGISTRY)},
            "severity": {"enum": ["error", "warning", "info"]},
            "status": {"enum": ["active", "shadow", "draft"]},
            "references": {"type": "array", "items": {"type": "string"}},
            "message": {"type": "string", "minLength": 1},
            "params": {"type": "object"},
            "condition": {"$ref": "#/$defs/condition"},
            "when": {"$ref": "#/$defs/condition"},
            "effective": PERIOD,
        },
        "required": ["id", "title", "type"],
        "additionalProperties": False,
        "allOf": per_type,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ocgate.dev/schemas/ocg-ruleset.schema.json",
        "title": "ocgate rule set (one client's Outside Counsel Guidelines)",
        "type": "object",
        "properties": {
            "id": RULE_ID,
            "version": {"type": ["string", "number"]},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "guideline": {
                "type": "object",
                "properties": {"document": {"type": "string"}, "version": {"type": ["string", "number"]},
                               "url": {"type": "string"}},
                "additionalProperties": False,
            },
            "applies_to": {
                "type": "object",
                "properties": {
                    "clients": {"type": "array", "items": {"type": "string"}},
                    "matters": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
            "effective": PERIOD,
            "lists": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": ["string", "number"]}},
            },
            "classifications": {  # the client's names for timekeeper classes -> LEDES codes
                "type": "object",
                "additionalProperties": {"type": "string", "minLength": 1},
            },
            "rules": {"type": "array", "items": rule},
            "invoicing": invoicing_schema(),
        },
        "required": ["id", "version", "rules"],
        "additionalProperties": False,
        "$defs": {"condition": condition_schema()},
    }
