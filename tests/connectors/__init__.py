"""Tests of the destinations (directory drop, Legal Tracker client) and the fake Legal Tracker portal."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

from engine.ledes import LedesInvoice, LedesLine
from engine.workflows.billing.destinations import Package

MATTER = "2026-0042"


def make_invoice(number: str = "INV1001", *, first_hours: str = "7.5", rate: str = "400",
                 description: str = "Research and draft motion to dismiss; review case law on personal jurisdiction",
                 matter: str = MATTER) -> LedesInvoice:
    """A consistent invoice: two fee lines and one expense line, totals to the cent."""
    hours = Decimal(first_hours)
    cost = Decimal(rate)
    first = (hours * cost).quantize(Decimal("0.01"))
    second = (Decimal("2.0") * cost).quantize(Decimal("0.01"))
    meal = Decimal("24.95")
    lines = (
        LedesLine(1, "F", dt.date(2026, 3, 3), matter, hours, cost, Decimal("0"), first, description=description,
                  task_code="L120", activity_code="A102", timekeeper_id="TK1", timekeeper_name="Arnsley, Robert",
                  timekeeper_classification="PARTNR", client_matter_id="ACME-7"),
        LedesLine(2, "F", dt.date(2026, 3, 4), matter, Decimal("2.0"), cost, Decimal("0"), second,
                  description="Telephone conference with client regarding discovery schedule", task_code="L110",
                  activity_code="A106", timekeeper_id="TK1", timekeeper_name="Arnsley, Robert",
                  timekeeper_classification="PARTNR", client_matter_id="ACME-7"),
        LedesLine(3, "E", dt.date(2026, 3, 4), matter, Decimal("1"), meal, Decimal("0"), meal,
                  description="Working lunch", expense_code="E111", client_matter_id="ACME-7"),
    )
    return LedesInvoice(
        invoice_date=dt.date(2026, 3, 31), invoice_number=number, client_id="ACME", law_firm_id="24-6437381",
        total=first + second + meal, billing_start=dt.date(2026, 3, 1), billing_end=dt.date(2026, 3, 31),
        description="Legal services March 2026", lines=lines,
    )


def package_of(invoice: LedesInvoice, text: str, fmt: str = "1998b") -> Package:
    """A package around hand-written LEDES text (for files our writer would refuse to produce)."""
    content = text.encode("ascii")
    return Package(invoice_number=invoice.invoice_number, file_name=f"{invoice.invoice_number}.txt",
                   content=content, format=fmt, sha256=hashlib.sha256(content).hexdigest(), invoice=invoice)


HEADER_1998B = (
    "INVOICE_DATE|INVOICE_NUMBER|CLIENT_ID|LAW_FIRM_MATTER_ID|INVOICE_TOTAL|BILLING_START_DATE|BILLING_END_DATE|"
    "INVOICE_DESCRIPTION|LINE_ITEM_NUMBER|EXP/FEE/INV_ADJ_TYPE|LINE_ITEM_NUMBER_OF_UNITS|LINE_ITEM_ADJUSTMENT_AMOUNT|"
    "LINE_ITEM_TOTAL|LINE_ITEM_DATE|LINE_ITEM_TASK_CODE|LINE_ITEM_EXPENSE_CODE|LINE_ITEM_ACTIVITY_CODE|TIMEKEEPER_ID|"
    "LINE_ITEM_DESCRIPTION|LAW_FIRM_ID|LINE_ITEM_UNIT_COST|TIMEKEEPER_NAME|TIMEKEEPER_CLASSIFICATION|CLIENT_MATTER_ID[]"
)

# Hand-written 1998B for invoice BAD77: line 1 says 1000.00 although 2 x 400 - 0 = 800.00, and the invoice total
# (1024.95) is the sum of the stated line totals, so only the line arithmetic is wrong.
BAD_LINE_TOTAL_1998B = "\n".join([
    "LEDES1998B[]",
    HEADER_1998B,
    "20260331|BAD77|ACME|2026-0042|1024.95|20260301|20260331|March|1|F|2.00|0.00|1000.00|20260303|L120||A102|TK1|"
    "Draft and revise motion to compel production|24-6437381|400.00|Arnsley, Robert|PARTNR|ACME-7[]",
    "20260331|BAD77|ACME|2026-0042|1024.95|20260301|20260331|March|2|E|1|0|24.95|20260304||E111|||Working lunch|"
    "24-6437381|24.95|||ACME-7[]",
    "",
])
