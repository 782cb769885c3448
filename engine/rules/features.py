"""What a condition can look at: entry fields and values derived from them.

A :class:`Feature` is one value computed from an entry (and the evaluation context): a field such as
``rate``, or a derived value such as the narrative's length or whether it matches a pattern. Both
backends read features computed by the same Python code, so they differ only in how the comparisons
over them are decided.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.model import Entry

# Field types a condition can compare. "decimal" covers money, hours and quantities.
DECIMAL, INT, STRING, DATE, BOOL = "decimal", "int", "string", "date", "bool"

ENTRY_FIELD_TYPES: dict[str, str] = {
    "source_system": STRING,
    "source_tenant": STRING,
    "source_id": STRING,
    "source_line_id": STRING,
    "entry_kind": STRING,
    "entry_subtype": STRING,
    "fee_basis": STRING,
    "matter_source_id": STRING,
    "law_firm_matter_id": STRING,
    "client_matter_id": STRING,
    "matter_name": STRING,
    "client_source_id": STRING,
    "client_name": STRING,
    "ledes_client_id": STRING,
    "timekeeper_source_id": STRING,
    "timekeeper_name": STRING,
    "timekeeper_ledes_id": STRING,
    "timekeeper_classification": STRING,
    "work_date": DATE,
    "duration_seconds_raw": INT,
    "hours_worked": DECIMAL,
    "hours_billed": DECIMAL,
    "quantity": DECIMAL,
    "unit_of_measure": STRING,
    "rate": DECIMAL,
    "standard_rate": DECIMAL,
    "amount": DECIMAL,
    "adjustment_amount": DECIMAL,
    "tax_amount": DECIMAL,
    "tax_code": STRING,
    "currency": STRING,
    "utbms_task_code": STRING,
    "utbms_activity_code": STRING,
    "utbms_expense_code": STRING,
    "source_task_label": STRING,
    "source_activity_label": STRING,
    "narrative": STRING,
    "billable": BOOL,
    "no_charge": BOOL,
    "written_off": BOOL,
    "tax_inclusive": BOOL,
    "status": STRING,
    "source_status": STRING,
    "invoice_ref": STRING,
}

# Values computed from several fields or from the evaluation context, usable like fields.
DERIVED_FIELD_TYPES: dict[str, str] = {
    "billed_amount": DECIMAL,  # amount, else quantity x rate
    "net_amount": DECIMAL,  # billed amount plus any adjustment
    "age_days": INT,  # days between the work date and the evaluation date
    "outside_billing_period": BOOL,  # work date outside the invoice period being checked
    "billed_share": DECIMAL,  # net amount / (hours worked or quantity x rate)
}

FIELD_TYPES: dict[str, str] = {**ENTRY_FIELD_TYPES, **DERIVED_FIELD_TYPES}


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """What the checks need to know beyond the entries: when, and for which billing period."""

    as_of: dt.date | None = None
    period_start: dt.date | None = None
    period_end: dt.date | None = None


def _billed_amount(e: Entry) -> Decimal | None:
    if e.amount is not None:
        return e.amount
    if e.quantity is None or e.rate is None:
        return None
    return e.quantity * e.rate


def _net_amount(e: Entry) -> Decimal | None:
    billed = _billed_amount(e)
    if billed is None:
        return None
    return billed + e.adjustment_amount if e.adjustment_amount is not None else billed


def _age_days(e: Entry, ctx: EvaluationContext) -> int | None:
    return (ctx.as_of - e.work_date).days if ctx.as_of is not None else None


def _outside_period(e: Entry, ctx: EvaluationContext) -> bool | None:
    if ctx.period_start is None and ctx.period_end is None:
        return None
    if ctx.period_start is not None and e.work_date < ctx.period_start:
        return True
    return ctx.period_end is not None and e.work_date > ctx.period_end


def _billed_share(e: Entry) -> Decimal | None:
    net = _net_amount(e)
    units = e.hours_worked if e.hours_worked is not None else e.quantity
    if net is None or units is None or e.rate is None:
        return None
    full = units * e.rate
    if full == 0:
        return None
    return net / full


DERIVED_FUNCTIONS: dict[str, tuple[Any, bool]] = {
    # name: (function, needs the context)
    "billed_amount": (_billed_amount, False),
    "net_amount": (_net_amount, False),
    "age_days": (_age_days, True),
    "outside_billing_period": (_outside_period, True),
    "billed_share": (_billed_share, False),
}


def count_segments(text: str, separator: re.Pattern[str]) -> int:
    """Number of non-empty pieces of ``text`` between separators (tasks in a block-billed entry).

    Cut at match positions rather than with ``re.split``, which would return captured groups as pieces.
    """
    count, start = 0, 0
    for found in separator.finditer(text):
        if found.end() == found.start():
            continue
        if text[start:found.start()].strip():
            count += 1
        start = found.end()
    return count + (1 if text[start:].strip() else 0)


ORDERED_TYPES = (DECIMAL, INT, DATE)


def _shown_decimal(value: Decimal, like: Decimal) -> Decimal:
    """``value`` with the places of ``like`` when that loses nothing (0.9 x 1050.00 = 945.00, not 945.000),
    else with every digit it has and no trailing zeros (0.333333 x 1050.00 = 349.99965)."""
    if not isinstance(like.as_tuple().exponent, int) or not value.is_finite():
        return value
    try:
        quantized = value.quantize(like)
    except InvalidOperation:
        return value
    return quantized if quantized == value else value.normalize()


@dataclass(frozen=True, slots=True)
class FieldRef:
    """The other side of a comparison between two fields of one entry: ``field``, optionally ``times`` a factor.

    ``leaf("rate", "gt", FieldRef("standard_rate", Decimal("0.9")))`` holds when the rate is above 0.9 x the
    standard rate. When either field is missing the comparison is false (its negation true), as for a
    constant. Both backends compare the exact difference ``rate - 0.9 x standard_rate`` with zero: it is
    worked out in Python beside the fact, because durable-rules' own arithmetic is floating point.
    """

    field: str
    times: Decimal | None = None

    def expected(self, value: Any) -> Any:
        """The value the other field is compared with, for the evidence (None when ``value`` is missing)."""
        if value is None or self.times is None or isinstance(value, dt.date):
            return value
        product = value * self.times
        return _shown_decimal(product, value) if isinstance(value, Decimal) else product

    def describe(self, value: Any = None) -> str:
        """``0.9 x standard_rate 1050.00`` (with the value), or ``0.9 x standard_rate``."""
        factor = f"{self.times} x " if self.times is not None else ""
        shown = "" if value is None else f" {value.isoformat() if isinstance(value, dt.date) else value}"
        return f"{factor}{self.field}{shown}"


def difference(left: Any, right: Any, times: Decimal | None) -> Any:
    """``left - times x right`` (days between two dates); None when either is missing."""
    if left is None or right is None:
        return None
    if isinstance(left, dt.date):
        return (left - right).days
    return left - (right * times if times is not None else right)


@dataclass(frozen=True, slots=True)
class Feature:
    """One value read from an entry.

    ``kind`` is field, derived, length, words, match, remainder, segments, member (whether the
    field's value is in a set: how long ``in`` lists reach durable-rules, which allows only 32
    expressions per condition), or versus (``field`` minus the :class:`FieldRef` in ``arg``, compared with
    zero: a comparison of two fields).
    """

    kind: str
    field: str
    arg: Any = None
    label: str = field(default="", compare=False)

    @property
    def type(self) -> str:
        if self.kind in ("field", "derived"):
            return FIELD_TYPES[self.field]
        if self.kind in ("length", "words", "segments"):
            return INT
        if self.kind in ("match", "member"):
            return BOOL
        if self.kind == "versus":
            return INT if FIELD_TYPES[self.field] == DATE else DECIMAL
        return DECIMAL  # remainder

    @property
    def key(self) -> str:
        """A stable text key; identical features share one computed value."""
        if self.kind in ("field", "derived"):
            return self.field
        if self.kind == "versus":
            return f"versus({self.field},{self.arg.field},{self.arg.times})"
        arg = self.arg.pattern if isinstance(self.arg, re.Pattern) else self.arg
        if isinstance(arg, frozenset):
            arg = sorted(arg, key=str)
        return f"{self.kind}({self.field},{arg!r})"

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.kind in ("field", "derived"):
            return self.field
        if self.kind == "match":
            return f"{self.field} matches /{self.arg.pattern}/"
        if self.kind == "remainder":
            return f"{self.field} modulo {self.arg}"
        if self.kind == "versus":
            return f"{self.field} against {self.arg.describe()}"
        return f"{self.field} {self.kind}"

    def compute(self, e: Entry, ctx: EvaluationContext) -> Any:
        """Reference computation; the generated backends produce the same value."""
        if self.kind == "derived":
            fn, needs_ctx = DERIVED_FUNCTIONS[self.field]
            return fn(e, ctx) if needs_ctx else fn(e)
        if self.kind == "versus":
            return difference(field_feature(self.field).compute(e, ctx),
                              field_feature(self.arg.field).compute(e, ctx), self.arg.times)
        value = getattr(e, self.field)
        if self.kind == "field" or value is None:
            return value
        if self.kind == "length":
            return len(value.strip())  # padding neither meets a minimum nor breaks a maximum
        if self.kind == "words":
            return len(value.split())
        if self.kind == "match":
            return self.arg.search(value) is not None
        if self.kind == "segments":
            return count_segments(value, self.arg)
        if self.kind == "remainder":
            return value % self.arg
        if self.kind == "member":
            return value in self.arg
        raise ValueError(f"unknown feature kind {self.kind}")


def field_feature(name: str) -> Feature:
    kind = "derived" if name in DERIVED_FIELD_TYPES else "field"
    return Feature(kind, name)
