"""LEDES 1998B and LEDES 98BI V2: the invoice file model, writers and a parser.

The writers implement the exporter's contract strict receivers enforce (first line, header, 24 or 52
fields, ``[]`` terminators, ``YYYYMMDD`` dates, money with two decimals, no ``|``, newline or ``[]`` inside a
field, line totals = units x unit cost + adjustment (+ tax in 98BI), invoice total = sum of its line totals,
identical on every row). They refuse, with :class:`LedesError`, an invoice that breaks the contract rather
than write a file a portal would reject. The parser reads what the writers produce (and the public sample
files) back into the same model.

INTERFACE (filled in by the implementation below; keep the names):

* ``LedesLine``, ``LedesInvoice``, ``Party`` - frozen dataclasses, all money and units ``Decimal``.
* ``sanitize(text) -> tuple[str, list[str]]`` - make free text safe for a field; returns the text and a list
  of human-readable changes made (empty when nothing changed).
* ``write_1998b(invoices, *, newline="\\n") -> str`` and ``write_98bi(invoices, *, newline="\\n") -> str``.
* ``write(invoices, fmt)`` with ``fmt`` in ``FORMATS``.
* ``parse(text) -> LedesFile`` - detects the format from the first line; raises ``LedesParseError`` with
  line/column for malformed input.
* ``check_invoice(invoice, fmt) -> list[str]`` - the contract problems of an invoice (empty when fine).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

FORMATS = ("1998b", "98bi")
FIRST_LINE = {"1998b": "LEDES1998B[]", "98bi": "LEDES98BI V2[]"}

LINE_TYPES = ("F", "E", "IF", "IE")


class LedesError(ValueError):
    """An invoice that would break the LEDES contract; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class LedesParseError(ValueError):
    """A malformed LEDES file: ``line`` and ``column`` are 1-based; ``column`` counts fields."""

    def __init__(self, message: str, line: int, column: int | None = None):
        where = f"line {line}" + (f", field {column}" if column else "")
        super().__init__(f"{where}: {message}")
        self.line, self.column, self.reason = line, column, message


@dataclass(frozen=True)
class Party:
    """A law firm or client's name and address (98BI only)."""

    name: str = ""
    address_1: str = ""
    address_2: str = ""
    city: str = ""
    state_or_region: str = ""
    postcode: str = ""
    country: str = ""  # ISO 3166 alpha-2


@dataclass(frozen=True)
class LedesLine:
    """One record: a fee (F), expense (E) or invoice-level adjustment on fees (IF) or expenses (IE)."""

    line_number: int
    kind: str  # one of LINE_TYPES
    date: dt.date
    law_firm_matter_id: str
    units: Decimal | None  # hours for F, item count for E; None (empty) allowed only on IF/IE
    unit_cost: Decimal | None  # rate; None (empty) allowed only on IF/IE
    adjustment: Decimal  # line-level discount (negative) or premium; for IF/IE the adjustment value
    total: Decimal  # units x unit_cost + adjustment (+ tax_total in 98BI), to the cent
    description: str = ""
    task_code: str = ""
    expense_code: str = ""
    activity_code: str = ""
    timekeeper_id: str = ""
    timekeeper_name: str = ""  # "Last, First"
    timekeeper_classification: str = ""
    client_matter_id: str = ""
    # 98BI only
    timekeeper_last_name: str = ""
    timekeeper_first_name: str = ""
    matter_name: str = ""
    tax_rate: Decimal | None = None  # a fraction in [0, 1)
    tax_total: Decimal | None = None
    tax_type: str = ""


@dataclass(frozen=True)
class LedesInvoice:
    """One invoice: the invoice-level fields repeated on each of its records."""

    invoice_date: dt.date
    invoice_number: str  # letters and digits only
    client_id: str
    law_firm_id: str
    total: Decimal  # sum of line totals
    billing_start: dt.date
    billing_end: dt.date
    description: str = ""
    lines: tuple[LedesLine, ...] = ()
    # 98BI only
    currency: str = ""
    tax_currency: str = ""
    tax_total: Decimal | None = None  # sum of line tax totals
    net_total: Decimal | None = None  # total - tax_total
    reported_tax_total: Decimal | None = None
    po_number: str = ""
    client_tax_id: str = ""
    account_type: str = "O"  # O or T
    law_firm: Party = field(default_factory=Party)
    client: Party = field(default_factory=Party)


@dataclass(frozen=True)
class LedesFile:
    format: str  # one of FORMATS
    invoices: tuple[LedesInvoice, ...]
    newline: str = "\n"
