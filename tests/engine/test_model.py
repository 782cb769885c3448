"""The canonical Entry: decimals only, ids as strings, normalised codes, aware timestamps, derived quantity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import ValidationError

from engine.model import EntryKind, EntryStatus, FeeBasis
from tests.conftest import make_entry

MONEY_AND_HOURS = ["hours_worked", "hours_billed", "quantity", "rate", "amount", "adjustment_amount", "tax_amount"]


def error_for(field: str, **fields) -> dict:
    with pytest.raises(ValidationError) as info:
        make_entry(**fields)
    errors = [e for e in info.value.errors() if e["loc"] == (field,)]
    assert errors, info.value.errors()
    return errors[0]


@pytest.mark.parametrize("field", MONEY_AND_HOURS)
def test_floats_are_refused_for_money_and_hours(field: str) -> None:
    error = error_for(field, **{field: 0.1})
    assert "floats are not accepted" in error["msg"]


@pytest.mark.parametrize("field", MONEY_AND_HOURS)
def test_ints_and_strings_become_exact_decimals(field: str) -> None:
    assert getattr(make_entry(**{field: 3}), field) == Decimal(3)
    value = getattr(make_entry(**{field: "0.10"}), field)
    assert isinstance(value, Decimal) and str(value) == "0.10"
    assert getattr(make_entry(**{field: Decimal("12.345")}), field) == Decimal("12.345")


def test_decimal_strings_are_cleaned() -> None:
    entry = make_entry(rate=" 1,250.50 ", amount="", hours_billed="  ")
    assert entry.rate == Decimal("1250.50")
    assert entry.amount is None and entry.hours_billed is None
    assert make_entry(hours_billed="0.1").hours_billed + make_entry(hours_billed="0.2").hours_billed == Decimal("0.3")


def test_booleans_lists_and_non_finite_values_are_refused() -> None:
    assert "boolean" in error_for("rate", rate=True)["msg"]
    assert "got list" in error_for("rate", rate=[1])["msg"]
    error_for("rate", rate="NaN")
    error_for("amount", amount="Infinity")


def test_non_numeric_text_is_a_validation_error() -> None:
    """Bad input must be a ValidationError (reported per field), not a bare decimal.InvalidOperation."""
    error_for("rate", rate="abc")
    error_for("hours_billed", hours_billed="1.5h")


@pytest.mark.parametrize("field", ["source_id", "source_system", "source_tenant"])
def test_integer_ids_are_stored_as_strings(field: str) -> None:
    entry = make_entry(**{field: 741})
    assert getattr(entry, field) == "741"


@pytest.mark.parametrize("field", ["source_line_id", "matter_source_id", "client_source_id", "timekeeper_source_id"])
def test_integer_source_ids_of_related_records_are_stored_as_strings(field: str) -> None:
    """Clio's matter, contact, user and line ids are integers too; they are stored as strings like source_id."""
    assert getattr(make_entry(**{field: 741}), field) == "741"


def test_boolean_id_is_refused() -> None:
    error_for("source_id", source_id=True)


def test_entry_uid_format() -> None:
    assert make_entry(source_system="clio", source_id=42).entry_uid == "clio:default:42"
    line = make_entry(source_system="mattero", source_tenant="firm-a", source_id="741-A", source_line_id="3")
    assert line.entry_uid == "mattero:firm-a:741-A:3"
    assert make_entry(source_system="clio", source_id=42, source_line_id="  ").entry_uid == "clio:default:42"


def test_codes_blank_to_none_and_uppercased() -> None:
    entry = make_entry(utbms_task_code="  l110 ", utbms_activity_code="", utbms_expense_code="   ",
                       timekeeper_classification="partnr", currency=" usd ")
    assert entry.utbms_task_code == "L110"
    assert entry.utbms_activity_code is None and entry.utbms_expense_code is None
    assert entry.timekeeper_classification == "PARTNR"
    assert entry.currency == "USD"


def test_blank_optional_text_becomes_none_and_narrative_stays_text() -> None:
    entry = make_entry(matter_name="  ", timekeeper_name=" Chen, Grace ", narrative=None)
    assert entry.matter_name is None
    assert entry.timekeeper_name == "Chen, Grace"
    assert entry.narrative == ""


@pytest.mark.parametrize("field", ["source_created_at", "source_updated_at", "ingested_at"])
def test_naive_timestamps_are_refused(field: str) -> None:
    assert "UTC offset" in error_for(field, **{field: "2026-03-01T10:00:00"})["msg"]
    assert "UTC offset" in error_for(field, **{field: dt.datetime(2026, 3, 1, 10)})["msg"]
    aware = make_entry(**{field: "2026-03-01T10:00:00Z"})
    assert getattr(aware, field) == dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)


def test_quantity_derived_for_hourly_time() -> None:
    entry = make_entry(hours_billed="1.5")
    assert entry.quantity == Decimal("1.5")
    from_quantity = make_entry(quantity="2.5")
    assert from_quantity.hours_billed == Decimal("2.5")
    both = make_entry(hours_billed="1.5", quantity="3")
    assert (both.hours_billed, both.quantity) == (Decimal("1.5"), Decimal("3"))


def test_quantity_derived_for_flat_time() -> None:
    entry = make_entry(fee_basis="flat", hours_billed="3", rate="1500")
    assert entry.quantity == Decimal(1)
    assert entry.hours_billed == Decimal(3)
    assert entry.billed_amount == Decimal("1500")
    assert make_entry(fee_basis="flat").hours_billed is None


def test_expenses_get_no_derived_quantity() -> None:
    entry = make_entry(entry_kind="expense", rate="3")
    assert entry.quantity is None and entry.hours_billed is None
    assert entry.billed_amount is None


def test_amounts() -> None:
    entry = make_entry(hours_billed="1.3", rate="975.50")
    assert entry.amount_recomputed == Decimal("1268.150")
    assert entry.billed_amount == Decimal("1268.150")
    with_amount = make_entry(hours_billed="1.3", rate="975.50", amount="1268.15")
    assert with_amount.billed_amount == Decimal("1268.15")


def test_enums_defaults_and_unknown_fields() -> None:
    entry = make_entry()
    assert (entry.entry_kind, entry.fee_basis, entry.status) == (EntryKind.TIME, FeeBasis.HOURLY,
                                                                  EntryStatus.PENDING)
    assert entry.billable is True and entry.redacted_fields == [] and entry.source_tenant == "default"
    with pytest.raises(ValidationError):
        make_entry(unknown_field=1)
    with pytest.raises(ValidationError):
        make_entry(fee_basis="hourlyish")
