"""What a mapping may name: the canonical fields by kind of value, and the JSON Schema of a mapping file.

The schema checks the shape (which keys, which types); :mod:`engine.mapping.loader` checks the meaning (formats
that read dates, tables that exist, options that fit the field's kind).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from engine.mapping.values import UNITS
from engine.model import EntryKind, EntryStatus, FeeBasis

# Every canonical field a column can fill, by the kind of value it takes. The rest of the model is ocgate's own
# (ingested_at, connector_version, data_quality_flags, redacted_fields, raw_payload): no file sets those.
FIELD_KINDS: dict[str, str] = {
    **dict.fromkeys((
        "source_system", "source_tenant", "source_id", "source_line_id", "source_version", "api_version",
        "entry_subtype", "matter_source_id", "law_firm_matter_id", "client_matter_id", "matter_name",
        "client_source_id", "client_name", "ledes_client_id", "timekeeper_source_id", "timekeeper_name",
        "timekeeper_first_name", "timekeeper_last_name", "timekeeper_ledes_id", "unit_of_measure", "tax_code",
        "source_task_label", "source_activity_label", "narrative", "source_status", "invoice_ref"), "text"),
    **dict.fromkeys(("timekeeper_classification", "currency", "utbms_task_code", "utbms_activity_code",
                     "utbms_expense_code"), "code"),
    **dict.fromkeys(("entry_kind", "fee_basis", "status"), "choice"),
    **dict.fromkeys(("tax_inclusive", "billable", "no_charge", "written_off"), "yes/no"),
    **dict.fromkeys(("rate", "standard_rate", "amount", "adjustment_amount", "tax_amount"), "money"),
    **dict.fromkeys(("hours_worked", "hours_billed", "quantity"), "hours"),
    "duration_seconds_raw": "duration",
    "work_date": "date",
    **dict.fromkeys(("source_created_at", "source_updated_at"), "timestamp"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "entry_kind": tuple(EntryKind), "fee_basis": tuple(FeeBasis), "status": tuple(EntryStatus),
}
REQUIRED = ("source_system", "source_id", "entry_kind", "work_date")  # every entry needs them; no default exists
UTBMS_KINDS = {"utbms_task_code": ("task", "phase"), "utbms_activity_code": ("activity",),
               "utbms_expense_code": ("expense",)}

# Which field options fit which kinds of field.
OPTION_KINDS: dict[str, frozenset[str]] = {
    "columns": frozenset({"text"}),
    "join": frozenset({"text"}),
    "hash": frozenset({"text"}),
    "format": frozenset({"date", "timestamp"}),
    "timezone": frozenset({"timestamp"}),
    "unit": frozenset({"hours", "duration"}),
    "unit_minutes": frozenset({"hours", "duration"}),
    "numbers": frozenset({"money", "hours", "duration"}),
    "translate": frozenset({"text", "code", "choice", "yes/no"}),
    "unlisted": frozenset({"text", "code", "choice", "yes/no"}),
}
SOURCES = ("column", "columns", "value", "hash")


def _text_list(min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": min_items}


def numbers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "decimal": {"enum": [".", ","]},
            "thousands": {"enum": ["", ",", ".", " ", "'", "\u00a0", "\u202f"]},
            "currency_symbols": _text_list(0),
        },
        "additionalProperties": False,
    }


def field_schema() -> dict[str, Any]:
    """One field's rule: a column name, or an object naming its source (one of ``SOURCES``) and options."""
    table = {"type": "object", "additionalProperties": {"type": ["string", "boolean"]}}
    return {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "object",
                "properties": {
                    "column": {"type": "string", "minLength": 1},
                    "columns": _text_list(2),
                    "join": {"type": "string"},
                    "value": {"type": ["string", "number", "boolean"]},
                    "hash": _text_list(),
                    "format": {"oneOf": [{"type": "string", "minLength": 1}, _text_list()]},
                    "timezone": {"type": "string", "minLength": 1},
                    "unit": {"enum": list(UNITS)},
                    "unit_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
                    "numbers": numbers_schema(),
                    "translate": {"oneOf": [{"type": "string", "minLength": 1}, table]},
                    "unlisted": {"enum": ["flag", "keep", "error"]},
                    "only_for": {"enum": list(EntryKind)},
                },
                "additionalProperties": False,
            },
        ]
    }


@cache
def mapping_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a mapping file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ocgate mapping: the columns of a spreadsheet export as canonical entry fields",
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "file": {
                "type": "object",
                "properties": {
                    "encoding": {"type": "string", "minLength": 1},
                    "delimiter": {"enum": ["auto", ",", ";", "\t", "|"]},
                    "sheet": {"type": "string", "minLength": 1},
                    "header_row": {"type": "integer", "minimum": 1},
                    "blank_rows": {"enum": ["skip", "stop", "error"]},
                },
                "additionalProperties": False,
            },
            "numbers": numbers_schema(),
            "tables": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": {"type": ["string", "boolean"]}}},
            "fields": {"type": "object", "properties": {name: field_schema() for name in FIELD_KINDS},
                       "additionalProperties": False, "minProperties": 1},
        },
        "required": ["fields"],
        "additionalProperties": False,
    }
