"""Writing LEDES 1998B and 98BI V2 files: checked first, refused with every problem rather than written
wrong; values formatted once per file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from engine.ledes.checks import check_invoices
from engine.ledes.model import (
    COST_PLACES,
    FIRST_LINE,
    FORMATS,
    HEADER,
    RATE_PLACES,
    UNITS_PLACES,
    LedesError,
    LedesInvoice,
    LedesLine,
    Party,
    date_str,
    money_str,
    places_str,
)


def write(invoices: Iterable[LedesInvoice], fmt: str, *, newline: str = "\n") -> str:
    """The LEDES file of ``invoices`` in ``fmt`` (``"1998b"`` or ``"98bi"``).

    Raises :class:`LedesError` listing every problem (see :func:`check_invoices`) instead of writing a file
    a strict receiver would reject. ``newline`` is ``"\\n"`` or ``"\\r\\n"``; no newline follows the last record.
    """
    if fmt not in FORMATS:
        raise LedesError([f"unknown LEDES format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    if newline not in ("\n", "\r\n"):
        raise LedesError([f"newline must be '\\n' or '\\r\\n', not {newline!r}"])
    invoices = list(invoices)
    problems = check_invoices(invoices, fmt)
    if problems:
        raise LedesError(problems)
    records = [FIRST_LINE[fmt], HEADER[fmt]]
    if fmt == "1998b":
        _records_1998b(invoices, records)
    else:
        _records_98bi(invoices, records)
    return newline.join(records)


def write_1998b(invoices: Iterable[LedesInvoice], *, newline: str = "\n") -> str:
    """``write(invoices, "1998b")``."""
    return write(invoices, "1998b", newline=newline)


def write_98bi(invoices: Iterable[LedesInvoice], *, newline: str = "\n") -> str:
    """``write(invoices, "98bi")``."""
    return write(invoices, "98bi", newline=newline)


class _Formats:
    """Per-file caches of formatted values: most amounts, hours and dates repeat many times."""

    def __init__(self) -> None:
        self.money: dict[object, str] = {None: ""}
        self.units: dict[object, str] = {None: ""}
        self.rates: dict[object, str] = {None: ""}
        self.costs: dict[object, str] = {None: ""}
        self.dates: dict[dt.date, str] = {}

    def money_str(self, value: Decimal | None) -> str:
        text = self.money.get(value)
        if text is None:
            text = self.money[value] = money_str(value)
        return text

    def date_str(self, value: dt.date) -> str:
        text = self.dates.get(value)
        if text is None:
            text = self.dates[value] = date_str(value)
        return text


def _invoice_parts(fm: _Formats, inv: LedesInvoice) -> tuple[str, str, str]:
    """The invoice-level fields around each record's matter id and line fields (formatted once per invoice)."""
    head = f"{fm.date_str(inv.invoice_date)}|{inv.invoice_number}|{inv.client_id}|"
    middle = (f"|{fm.money_str(inv.total)}|{fm.date_str(inv.billing_start)}|{fm.date_str(inv.billing_end)}|"
              f"{inv.description}|")
    return head, middle, f"|{inv.law_firm_id}|"


def _record_1998b(fm: _Formats, head: str, middle: str, firm: str, ln: LedesLine) -> str:
    """The 24 fields of a line, without the terminator (98BI records start with the same 24)."""
    u = fm.units.get(ln.units)
    if u is None:
        u = fm.units[ln.units] = places_str(ln.units, UNITS_PLACES)  # type: ignore[arg-type]
    money = fm.money
    a = money.get(ln.adjustment)
    if a is None:
        a = money[ln.adjustment] = money_str(ln.adjustment)
    t = money.get(ln.total)
    if t is None:
        t = money[ln.total] = money_str(ln.total)
    c = fm.costs.get(ln.unit_cost)
    if c is None:
        c = fm.costs[ln.unit_cost] = places_str(ln.unit_cost, COST_PLACES)  # type: ignore[arg-type]
    d = fm.dates.get(ln.date)
    if d is None:
        d = fm.dates[ln.date] = date_str(ln.date)
    return (f"{head}{ln.law_firm_matter_id}{middle}{ln.line_number}|{ln.kind}|{u}|{a}|{t}|{d}|{ln.task_code}|"
            f"{ln.expense_code}|{ln.activity_code}|{ln.timekeeper_id}|{ln.description}{firm}{c}|"
            f"{ln.timekeeper_name}|{ln.timekeeper_classification}|{ln.client_matter_id}")


def _records_1998b(invoices: list[LedesInvoice], out: list[str]) -> None:
    fm = _Formats()
    append = out.append
    for inv in invoices:
        head, middle, firm = _invoice_parts(fm, inv)
        for ln in inv.lines:
            append(_record_1998b(fm, head, middle, firm, ln) + "[]")


def _party_fields(party: Party) -> str:
    return (f"{party.name}|{party.address_1}|{party.address_2}|{party.city}|{party.state_or_region}|"
            f"{party.postcode}|{party.country}")


def _records_98bi(invoices: list[LedesInvoice], out: list[str]) -> None:
    fm = _Formats()
    money, rates = fm.money, fm.rates
    append = out.append
    for inv in invoices:
        head, middle, firm = _invoice_parts(fm, inv)
        po = f"|{inv.po_number}|{inv.client_tax_id}|"
        totals = f"|{fm.money_str(inv.tax_total)}|{fm.money_str(inv.net_total)}|{inv.currency}|"
        parties = f"|{inv.account_type}|{_party_fields(inv.law_firm)}|{_party_fields(inv.client)}|"
        tail = f"|{fm.money_str(inv.reported_tax_total)}|{inv.tax_currency}[]"
        for ln in inv.lines:
            r = rates.get(ln.tax_rate)
            if r is None:
                r = rates[ln.tax_rate] = places_str(ln.tax_rate, RATE_PLACES)  # type: ignore[arg-type]
            x = money.get(ln.tax_total)
            if x is None:
                x = money[ln.tax_total] = money_str(ln.tax_total)  # type: ignore[arg-type]
            append(f"{_record_1998b(fm, head, middle, firm, ln)}{po}{ln.matter_name}{totals}"
                   f"{ln.timekeeper_last_name}|{ln.timekeeper_first_name}{parties}{r}|{x}|{ln.tax_type}{tail}")

