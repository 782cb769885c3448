"""The canonical billable line: one time entry, expense entry or expense-detail line from any source.

Every connector maps its source records into :class:`Entry`; rules, the review queue and the invoice
writers only ever see this model. Money, hours and quantities are ``Decimal``; a float is refused.
Dates are the local work date as the source gives it; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator


class EntryKind(StrEnum):
    TIME = "time"
    EXPENSE = "expense"


class FeeBasis(StrEnum):
    HOURLY = "hourly"
    FLAT = "flat"
    FIXED_TEMPLATE = "fixed_template"
    CONTINGENCY = "contingency"
    UNIT = "unit"


class EntryStatus(StrEnum):
    DRAFT = "draft"
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    ON_BILL = "on_bill"
    BILLED = "billed"
    WRITTEN_OFF = "written_off"
    VOID = "void"
    DELETED = "deleted"


# Bounds on every Decimal field: far beyond any real amount, rate, hours or quantity, and small enough that the
# engine's arithmetic (products, remainders, rounding to cents) stays exact within Decimal's default 28 digits.
MAX_MAGNITUDE = 10**12
MAX_PLACES = 10
MAX_DURATION_SECONDS = 10**12


def _bounded(number: Decimal, shown: Any) -> Decimal:
    if not number.is_finite():
        raise ValueError(f"{shown!r} is not a finite number")
    # Without arithmetic, which itself overflows on an exponent beyond the context's limits.
    if number and number.adjusted() >= 12:
        raise ValueError(f"{shown!r} is out of range (at most 12 digits before the decimal point)")
    _, digits, exponent = number.as_tuple()
    significant = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if number and int(exponent) + significant < -MAX_PLACES:
        raise ValueError(f"{shown!r} has more than {MAX_PLACES} decimal places")
    return number


def _decimal(value: Any) -> Any:
    """Accept Decimal, int or a numeric string; refuse floats, whose binary value is not the amount, and numbers
    that are not finite or outside the bounds above."""
    if value is None:
        return value
    if isinstance(value, Decimal):
        return _bounded(value, value)
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, float):
        raise ValueError("floats are not accepted for money or hours; pass a string such as \"12.50\"")
    if isinstance(value, int):
        if abs(value) >= MAX_MAGNITUDE:
            raise ValueError(f"{value} is out of range (at most 12 digits before the decimal point)")
        return Decimal(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "") if value.strip() else ""
        if text == "":
            return None
        if len(text) > 64:
            raise ValueError(f"{value[:20]!r}... is not a number of a sane length")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        return _bounded(number, value)
    raise ValueError(f"expected a decimal number, got {type(value).__name__}")


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # Clio and Trackops ids are integers; every id is stored as text
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _code(value: Any) -> Any:
    value = _empty_to_none(value)
    return value.upper() if isinstance(value, str) else value


Money = Annotated[Decimal | None, BeforeValidator(_decimal)]
Quantity = Annotated[Decimal | None, BeforeValidator(_decimal)]
OptStr = Annotated[str | None, BeforeValidator(_empty_to_none)]
Code = Annotated[str | None, BeforeValidator(_code)]


# The longest texts the store's columns take (engine.store.models.EntryRow; the entry uid joins the first four):
# a source that sends more gets a clear error for that field, never a failed write.
Id40 = Annotated[str, StringConstraints(max_length=40)]
Id120 = Annotated[str, StringConstraints(max_length=120)]
OptId60 = Annotated[Annotated[str, StringConstraints(max_length=60)] | None, BeforeValidator(_empty_to_none)]
OptId115 = Annotated[Annotated[str, StringConstraints(max_length=115)] | None, BeforeValidator(_empty_to_none)]
OptId120 = Annotated[Annotated[str, StringConstraints(max_length=120)] | None, BeforeValidator(_empty_to_none)]
OptId200 = Annotated[Annotated[str, StringConstraints(max_length=200)] | None, BeforeValidator(_empty_to_none)]
UtbmsCode = Annotated[Annotated[str, StringConstraints(max_length=10)] | None, BeforeValidator(_code)]
CurrencyCode = Annotated[Annotated[str, StringConstraints(max_length=16)] | None, BeforeValidator(_code)]


class Entry(BaseModel):
    """One billable line in the canonical model; connectors map each source's records into it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False)

    # identity and provenance
    source_system: Id40
    source_tenant: Id120 = "default"
    source_id: Id120
    source_line_id: OptId115 = None
    source_version: OptId200 = None
    source_created_at: dt.datetime | None = None
    source_updated_at: dt.datetime | None = None
    api_version: OptStr = None
    connector_version: OptStr = None
    ingested_at: dt.datetime | None = None

    # what kind of line
    entry_kind: EntryKind
    entry_subtype: OptStr = None
    fee_basis: FeeBasis = FeeBasis.HOURLY

    # matter and client
    matter_source_id: OptId120 = None
    law_firm_matter_id: OptId60 = None
    client_matter_id: OptId60 = None
    matter_name: OptStr = None
    client_source_id: OptId120 = None
    client_name: OptStr = None
    ledes_client_id: OptId60 = None

    # timekeeper
    timekeeper_source_id: OptId120 = None
    timekeeper_name: OptId120 = None
    timekeeper_first_name: OptStr = None
    timekeeper_last_name: OptStr = None
    timekeeper_ledes_id: OptId120 = None
    timekeeper_classification: Code = None

    # when and how much
    work_date: dt.date
    duration_seconds_raw: int | None = Field(default=None, ge=-MAX_DURATION_SECONDS, le=MAX_DURATION_SECONDS)
    hours_worked: Quantity = None
    hours_billed: Quantity = None
    quantity: Quantity = None
    unit_of_measure: OptStr = None
    rate: Money = None
    standard_rate: Money = None  # the timekeeper's standard hourly rate on the work date (firm's table)
    amount: Money = None
    adjustment_amount: Money = None
    tax_amount: Money = None
    tax_inclusive: bool = False
    tax_code: OptStr = None
    currency: CurrencyCode = None

    # UTBMS codes and labels
    utbms_task_code: UtbmsCode = None
    utbms_activity_code: UtbmsCode = None
    utbms_expense_code: UtbmsCode = None
    source_task_label: OptStr = None
    source_activity_label: OptStr = None

    narrative: str = ""
    billable: bool = True
    no_charge: bool = False
    written_off: bool = False
    status: EntryStatus = EntryStatus.PENDING
    source_status: OptStr = None
    invoice_ref: OptStr = None
    redacted_fields: list[str] = Field(default_factory=list)
    data_quality_flags: list[str] = Field(default_factory=list)
    raw_payload: dict[str, Any] | None = None

    @field_validator("narrative", mode="before")
    @classmethod
    def _narrative(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("source_id", "source_system", "source_tenant", mode="before")
    @classmethod
    def _ids_are_strings(cls, value: Any) -> Any:
        # Clio ids are integers, mattero ids are strings such as "741-A": store all as strings.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("source_created_at", "source_updated_at", "ingested_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must carry a UTC offset")
        return value.astimezone(dt.UTC) if value is not None else None

    @model_validator(mode="after")
    def _derive(self) -> Entry:
        if self.quantity is None and self.entry_kind is EntryKind.TIME:
            self.quantity = Decimal(1) if self.fee_basis is FeeBasis.FLAT else self.hours_billed
        if self.hours_billed is None and self.entry_kind is EntryKind.TIME and self.fee_basis is FeeBasis.HOURLY:
            self.hours_billed = self.quantity
        return self

    @property
    def entry_uid(self) -> str:
        """Stable key across syncs: ``system:tenant:id[:line]``."""
        uid = f"{self.source_system}:{self.source_tenant}:{self.source_id}"
        return f"{uid}:{self.source_line_id}" if self.source_line_id else uid

    @property
    def amount_recomputed(self) -> Decimal | None:
        """``quantity x rate``, for checking the source total; never used in place of ``amount``."""
        if self.quantity is None or self.rate is None:
            return None
        return self.quantity * self.rate

    @property
    def billed_amount(self) -> Decimal | None:
        """The amount the client is asked to pay: the source amount, else quantity x rate."""
        return self.amount if self.amount is not None else self.amount_recomputed


ENTRY_FIELDS: frozenset[str] = frozenset(Entry.model_fields)
