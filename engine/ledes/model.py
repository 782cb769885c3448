"""The LEDES invoice model: formats and their fields, the frozen dataclasses every writer and reader
shares, and how numbers and dates are written. All money and units are ``Decimal``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Context, Decimal

FORMATS = ("1998b", "98bi")
FIRST_LINE = {"1998b": "LEDES1998B[]", "98bi": "LEDES98BI V2[]"}

LINE_TYPES = ("F", "E", "IF", "IE")

FIELDS_1998B = (
    "INVOICE_DATE", "INVOICE_NUMBER", "CLIENT_ID", "LAW_FIRM_MATTER_ID", "INVOICE_TOTAL", "BILLING_START_DATE",
    "BILLING_END_DATE", "INVOICE_DESCRIPTION", "LINE_ITEM_NUMBER", "EXP/FEE/INV_ADJ_TYPE",
    "LINE_ITEM_NUMBER_OF_UNITS", "LINE_ITEM_ADJUSTMENT_AMOUNT", "LINE_ITEM_TOTAL", "LINE_ITEM_DATE",
    "LINE_ITEM_TASK_CODE", "LINE_ITEM_EXPENSE_CODE", "LINE_ITEM_ACTIVITY_CODE", "TIMEKEEPER_ID",
    "LINE_ITEM_DESCRIPTION", "LAW_FIRM_ID", "LINE_ITEM_UNIT_COST", "TIMEKEEPER_NAME", "TIMEKEEPER_CLASSIFICATION",
    "CLIENT_MATTER_ID",
)
FIELDS_98BI = FIELDS_1998B + (
    "PO_NUMBER", "CLIENT_TAX_ID", "MATTER_NAME", "INVOICE_TAX_TOTAL", "INVOICE_NET_TOTAL", "INVOICE_CURRENCY",
    "TIMEKEEPER_LAST_NAME", "TIMEKEEPER_FIRST_NAME", "ACCOUNT_TYPE", "LAW_FIRM_NAME", "LAW_FIRM_ADDRESS_1",
    "LAW_FIRM_ADDRESS_2", "LAW_FIRM_CITY", "LAW_FIRM_STATEorREGION", "LAW_FIRM_POSTCODE", "LAW_FIRM_COUNTRY",
    "CLIENT_NAME", "CLIENT_ADDRESS_1", "CLIENT_ADDRESS_2", "CLIENT_CITY", "CLIENT_STATEorREGION", "CLIENT_POSTCODE",
    "CLIENT_COUNTRY", "LINE_ITEM_TAX_RATE", "LINE_ITEM_TAX_TOTAL", "LINE_ITEM_TAX_TYPE", "INVOICE_REPORTED_TAX_TOTAL",
    "INVOICE_TAX_CURRENCY",
)
FIELDS = {"1998b": FIELDS_1998B, "98bi": FIELDS_98BI}
HEADER = {fmt: "|".join(names) + "[]" for fmt, names in FIELDS.items()}


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
    problems: tuple[str, ...] = ()  # contract problems found by parse(strict=True)


# Numbers and dates ------------------------------------------------------------------------------------

ZERO = Decimal(0)
STEPS = {places: Decimal(1).scaleb(-places) for places in range(11)}  # 2 -> Decimal("0.01")
CENT = STEPS[2]
MONEY_PLACES = 2
UNITS_PLACES = 4  # at most; at least 2 are written
RATE_PLACES = 10  # at most; at least 2 are written
COST_PLACES = 4  # unit cost: 2 to 4 decimals (a 0.125 per-page copy rate; the validators accept up to 4)
LINE_LIMIT = Decimal(10) ** 10  # line amounts and units: at most 10 digits before the point
INVOICE_LIMIT = Decimal(10) ** 12  # invoice amounts: at most 12
EXACT = Context(prec=60)  # exact products and sums for every value the limits allow


def number_problem(value: object, places: int, limit: Decimal, required: bool) -> str | None:
    """Why ``value`` cannot be written with at most ``places`` decimals (None when it can)."""
    if value is None:
        return "is required" if required else None
    if not isinstance(value, Decimal):
        return f"must be a Decimal, not {type(value).__name__} {value!r}"
    if not value.is_finite():
        return f"{value} is not a finite number"
    if not -limit < value < limit:
        return f"{value} is too large (at most {len(str(limit)) - 1} digits before the decimal point)"
    if value != value.quantize(STEPS[places]):
        return f"{value} has more than {places} decimal places (round it before writing; the writer never rounds)"
    return None


def money_str(value: Decimal) -> str:
    """Exactly two decimals (the value has been checked to need no more)."""
    text = str(value.quantize(CENT))
    return "0.00" if text == "-0.00" else text


def places_str(value: Decimal, most: int) -> str:
    """The fewest decimals from 2 to ``most`` that represent ``value`` exactly."""
    for places in range(2, most + 1):
        step = STEPS[places]
        if value == value.quantize(step):
            break
    text = format(value.quantize(step), "f")
    return text[1:] if text[0] == "-" and not value else text


def date_str(value: dt.date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def is_date(value: object) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)

