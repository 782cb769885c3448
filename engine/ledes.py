"""LEDES 1998B and LEDES 98BI V2: the invoice file model, writers and a parser.

The writers implement the exporter's contract strict receivers enforce (first line, header, 24 or 52
fields, ``[]`` terminators, ``YYYYMMDD`` dates, money with two decimals, no ``|``, newline or ``[]`` inside a
field, line totals = units x unit cost + adjustment (+ tax in 98BI), invoice total = sum of its line totals,
identical on every row). They refuse, with :class:`LedesError`, an invoice that breaks the contract rather
than write a file a portal would reject. The parser reads what the writers produce (and the public sample
files) back into the same model.

INTERFACE (keep the names):

* ``LedesLine``, ``LedesInvoice``, ``Party`` - frozen dataclasses, all money and units ``Decimal``.
* ``sanitize(text, max_length=None) -> tuple[str, list[str]]`` - make free text safe for a field; returns the
  text and a list of human-readable changes made (empty when nothing changed).
* ``write_1998b(invoices, *, newline="\\n") -> str`` and ``write_98bi(invoices, *, newline="\\n") -> str``.
* ``write(invoices, fmt, *, newline="\\n")`` with ``fmt`` in ``FORMATS``.
* ``parse(text, *, strict=False) -> LedesFile`` - detects the format from the first line; raises
  ``LedesParseError`` with line/column for malformed input. ``strict=True`` also runs the contract checks
  and returns what they find in ``LedesFile.problems``.
* ``check_invoice(invoice, fmt) -> list[str]`` - the contract problems of an invoice (empty when fine).
* ``check_invoices(invoices, fmt) -> list[str]`` - the same for a whole file, plus the file-wide rules
  (invoice numbers and line numbers unique across the file). The writers refuse when this is not empty.

Formatting decisions: money (totals, adjustments, unit costs, tax totals) always has exactly two decimals;
units have two to four decimals, as many as the value needs; tax rates two to ten. A value that needs more
decimals is refused, never rounded. Negative numbers carry a leading ``-``; empty optional fields are
empty. The file has no newline after the last record (the Lexitree sample files end that way, and no
reader then sees an empty last line). Only the 24 1998B fields are written in 1998B: the 98BI-only fields
of the model are dropped there and come back from the parser as their defaults.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from operator import itemgetter

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

_ZERO = Decimal(0)
_STEPS = {places: Decimal(1).scaleb(-places) for places in range(11)}  # 2 -> Decimal("0.01")
_CENT = _STEPS[2]
MONEY_PLACES = 2
UNITS_PLACES = 4  # at most; at least 2 are written
RATE_PLACES = 10  # at most; at least 2 are written
COST_PLACES = 4  # unit cost: 2 to 4 decimals (a 0.125 per-page copy rate; the validators accept up to 4)
_LINE_LIMIT = Decimal(10) ** 10  # line amounts and units: at most 10 digits before the point
_INVOICE_LIMIT = Decimal(10) ** 12  # invoice amounts: at most 12
_CONTEXT = Context(prec=60)  # exact products and sums for every value the limits allow


def _number_problem(value: object, places: int, limit: Decimal, required: bool) -> str | None:
    """Why ``value`` cannot be written with at most ``places`` decimals (None when it can)."""
    if value is None:
        return "is required" if required else None
    if not isinstance(value, Decimal):
        return f"must be a Decimal, not {type(value).__name__} {value!r}"
    if not value.is_finite():
        return f"{value} is not a finite number"
    if not -limit < value < limit:
        return f"{value} is too large (at most {len(str(limit)) - 1} digits before the decimal point)"
    if value != value.quantize(_STEPS[places]):
        return f"{value} has more than {places} decimal places (round it before writing; the writer never rounds)"
    return None


def _money_str(value: Decimal) -> str:
    """Exactly two decimals (the value has been checked to need no more)."""
    text = str(value.quantize(_CENT))
    return "0.00" if text == "-0.00" else text


def _places_str(value: Decimal, most: int) -> str:
    """The fewest decimals from 2 to ``most`` that represent ``value`` exactly."""
    for places in range(2, most + 1):
        step = _STEPS[places]
        if value == value.quantize(step):
            break
    text = format(value.quantize(step), "f")
    return text[1:] if text[0] == "-" and not value else text


def _date_str(value: dt.date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def _is_date(value: object) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


# Free text ---------------------------------------------------------------------------------------------

_TRANSLIT = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "\u02bc": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...", "\u2022": "*", "\u00b7": ".", "\u2044": "/", "\u00d7": "x", "\u00f7": "/",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O",
    "\u0111": "d", "\u0110": "D", "\u0142": "l", "\u0141": "L", "\u00fe": "th", "\u00de": "Th", "\u00f0": "d",
    "\u00d0": "D", "\u0131": "i",
    "\u20ac": "EUR", "\u00a3": "GBP", "\u00a5": "JPY", "\u00a2": "c", "\u00a9": "(c)", "\u00ae": "(R)",
    "\u00a7": "Sec.", "\u00b6": "para.", "\u00b0": " deg", "\u2116": "No.",
}
_LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACES = re.compile(r" {2,}")


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _examples(chars: list[str]) -> str:
    unique = list(dict.fromkeys(chars))
    shown = " ".join(unique[:5]) + (" ..." if len(unique) > 5 else "")
    return f" ({shown})"


def _to_ascii(text: str, changes: list[str]) -> str:
    out: list[str] = []
    transliterated: list[str] = []
    unknown: list[str] = []
    invisible = marks = 0
    for ch in text:
        if ch < "\x80":
            out.append(ch)
            continue
        if ch in _LINE_BREAKS:
            out.append("\n")  # counted with the other line breaks below
            continue
        replacement = _TRANSLIT.get(ch)
        if replacement is None:
            category = unicodedata.category(ch)
            if category == "Cf":  # zero-width spaces, soft hyphens, byte order marks
                invisible += 1
                continue
            if category in ("Mn", "Mc", "Me"):  # a combining mark with no letter of its own
                marks += 1
                continue
            if category == "Zs":
                replacement = " "
            elif category == "Cc":
                replacement = "\x00"  # a control character: becomes a space below
            else:
                parts = []
                for part in unicodedata.normalize("NFKD", ch):
                    if part < "\x80":
                        parts.append(part)
                    elif unicodedata.combining(part):
                        continue
                    else:
                        parts.append(_TRANSLIT.get(part, "?"))
                replacement = "".join(parts)
                if not replacement or "?" in replacement:
                    unknown.append(ch)
                    out.append("?")
                    continue
        transliterated.append(ch)
        out.append(replacement)
    if transliterated:
        changes.append(f"transliterated {_plural(len(transliterated), 'non-ASCII character')}"
                       f"{_examples(transliterated)}")
    if unknown:
        changes.append(f"replaced {_plural(len(unknown), 'non-ASCII character')} with '?'{_examples(unknown)}")
    if invisible:
        changes.append(f"removed {_plural(invisible, 'invisible formatting character')}")
    if marks:
        changes.append(f"removed {_plural(marks, 'combining mark')}")
    return "".join(out)


def sanitize(text: str, max_length: int | None = None) -> tuple[str, list[str]]:
    """Make free text safe for one LEDES field and say what changed.

    ``|`` becomes ``/``; line breaks, tabs and other control characters become a space; ``[]`` becomes
    ``[ ]``; non-ASCII characters are transliterated (curly quotes, dashes, accented letters) or, failing
    that, replaced by ``?``; runs of spaces are collapsed and the ends stripped; with ``max_length`` the text
    is cut to that many characters. Returns the text and a list of the changes (empty when none).
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 0):
        raise ValueError(f"max_length must be a whole number >= 0, not {max_length!r}")
    changes: list[str] = []
    if text is None:
        return "", changes
    if not isinstance(text, str):
        text = str(text)
    if not text.isascii():
        text = _to_ascii(text, changes)
    pipes = text.count("|")
    if pipes:
        text = text.replace("|", "/")
        changes.append(f"replaced {pipes} '|' with '/'")
    if _CONTROL.search(text):
        text = text.replace("\r\n", "\n")
        breaks = text.count("\n") + text.count("\r")
        others = len(_CONTROL.findall(text)) - breaks
        text = _CONTROL.sub(" ", text)
        if breaks:
            changes.append(f"replaced {_plural(breaks, 'line break')} with a space")
        if others:
            changes.append(f"replaced {_plural(others, 'tab or control character', 'tabs or control characters')}"
                           f" with a space")
    brackets = text.count("[]")
    if brackets:
        text = text.replace("[]", "[ ]")
        changes.append(f"broke {_plural(brackets, 'sequence')} '[]' into '[ ]'")
    runs = len(_SPACES.findall(text))
    if runs:
        text = _SPACES.sub(" ", text)
        changes.append(f"collapsed {_plural(runs, 'run')} of spaces")
    stripped = text.strip()
    if stripped != text:
        text = stripped
        changes.append("removed leading or trailing spaces")
    if max_length is not None and len(text) > max_length:
        before = len(text)
        text = text[:max_length].rstrip()
        changes.append(f"truncated from {before} to {len(text)} characters")
    return text, changes


# The contract ------------------------------------------------------------------------------------------

_ALNUM = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_BAD_TEXT = re.compile(r"[|\x00-\x1f\x7f]|\[\]")
_MAX_ID = 20


def _text_problem(value: object) -> str | None:
    """Why ``value`` cannot be one field of a record (None when it can)."""
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__}"
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    bad = found.group()
    if bad == "|":
        what = "'|'"
    elif bad == "[]":
        what = "'[]'"
    elif bad in "\r\n":
        what = "a line break"
    else:
        what = f"the control character {bad!r}"
    return f"contains {what} (run sanitize() on free text)"


def _label(number: object) -> str:
    return number if isinstance(number, str) and number.isprintable() and number else repr(number)


def _join_fields(values: tuple) -> str | None:
    try:
        return " ".join(values)
    except TypeError:
        return None


def check_invoice(invoice: LedesInvoice, fmt: str) -> list[str]:
    """Every way ``invoice`` breaks the writer's contract for ``fmt`` (an empty list when it is fine).

    Each message starts with the invoice number and, for a line, its LINE_ITEM_NUMBER, and names the
    LEDES field, e.g. ``invoice 2026031: line 4: LINE_ITEM_TOTAL 630.01 != 2 x 350.00 + -70.00 = 630.00``.
    """
    if fmt not in FORMATS:
        raise LedesError([f"unknown LEDES format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    if not isinstance(invoice, LedesInvoice):
        return [f"expected a LedesInvoice, not {type(invoice).__name__}"]
    with localcontext(_CONTEXT):
        return _check_invoice(invoice, fmt == "98bi")


def _check_invoice(inv: LedesInvoice, bi: bool) -> list[str]:
    problems: list[str] = []
    add = problems.append
    where = f"invoice {_label(inv.invoice_number)}: "

    # Invoice-level fields.
    number = inv.invoice_number
    if not isinstance(number, str) or not number:
        add(f"{where}INVOICE_NUMBER is required")
    elif not _ALNUM.fullmatch(number) or len(number) > _MAX_ID:
        add(f"{where}INVOICE_NUMBER must be 1 to {_MAX_ID} letters and digits only (no '-', '/', '_' or spaces)")
    for name, value in (("CLIENT_ID", inv.client_id), ("LAW_FIRM_ID", inv.law_firm_id)):
        if isinstance(value, str) and not value:
            add(f"{where}{name} is required")
        elif isinstance(value, str) and name == "LAW_FIRM_ID" and bi:
            ids = value.split("~")
            if len(ids) > 3 or not all(0 < len(part) <= _MAX_ID for part in ids):
                add(f"{where}LAW_FIRM_ID must be up to three ids of 1 to {_MAX_ID} characters separated by '~'")
        elif isinstance(value, str) and len(value) > _MAX_ID:
            add(f"{where}{name} is longer than {_MAX_ID} characters")
    dates_ok = True
    for name, value in (("INVOICE_DATE", inv.invoice_date), ("BILLING_START_DATE", inv.billing_start),
                        ("BILLING_END_DATE", inv.billing_end)):
        if not _is_date(value):
            add(f"{where}{name} must be a date, not {type(value).__name__} {value!r}")
            dates_ok = False
    if dates_ok and inv.billing_start > inv.billing_end:
        add(f"{where}BILLING_START_DATE {_date_str(inv.billing_start)} is after BILLING_END_DATE "
            f"{_date_str(inv.billing_end)}")
    total_problem = _number_problem(inv.total, MONEY_PLACES, _INVOICE_LIMIT, True)
    if total_problem:
        add(f"{where}INVOICE_TOTAL {total_problem}")
    texts = [("CLIENT_ID", inv.client_id), ("LAW_FIRM_ID", inv.law_firm_id),
             ("INVOICE_DESCRIPTION", inv.description)]
    tax_problem = net_problem = None
    if bi:
        for name, value in (("INVOICE_CURRENCY", inv.currency), ("INVOICE_TAX_CURRENCY", inv.tax_currency)):
            if not isinstance(value, str):
                add(f"{where}{name} must be a three-letter ISO 4217 code, not {type(value).__name__}")
            elif not value and name == "INVOICE_CURRENCY":
                add(f"{where}{name} is required (an ISO 4217 code such as USD)")
            elif value and not _CURRENCY.fullmatch(value):
                add(f"{where}{name} {value!r} is not a three-letter ISO 4217 code in capitals")
        tax_problem = _number_problem(inv.tax_total, MONEY_PLACES, _INVOICE_LIMIT, True)
        net_problem = _number_problem(inv.net_total, MONEY_PLACES, _INVOICE_LIMIT, True)
        reported_problem = _number_problem(inv.reported_tax_total, MONEY_PLACES, _INVOICE_LIMIT, False)
        for name, problem in (("INVOICE_TAX_TOTAL", tax_problem), ("INVOICE_NET_TOTAL", net_problem),
                              ("INVOICE_REPORTED_TAX_TOTAL", reported_problem)):
            if problem:
                add(f"{where}{name} {problem}")
        if isinstance(inv.client_tax_id, str) and not inv.client_tax_id:
            add(f"{where}CLIENT_TAX_ID is required in 98BI")
        elif isinstance(inv.client_tax_id, str) and len(inv.client_tax_id) > _MAX_ID:
            add(f"{where}CLIENT_TAX_ID is longer than {_MAX_ID} characters")
        if inv.account_type not in ("O", "T"):
            add(f"{where}ACCOUNT_TYPE must be O or T, not {inv.account_type!r}")
        texts += [("PO_NUMBER", inv.po_number), ("CLIENT_TAX_ID", inv.client_tax_id)]
        for prefix, party in (("LAW_FIRM", inv.law_firm), ("CLIENT", inv.client)):
            if not isinstance(party, Party):
                add(f"{where}{prefix.lower()} must be a Party, not {type(party).__name__}")
                continue
            texts += [(f"{prefix}_NAME", party.name), (f"{prefix}_ADDRESS_1", party.address_1),
                      (f"{prefix}_ADDRESS_2", party.address_2), (f"{prefix}_CITY", party.city),
                      (f"{prefix}_STATEorREGION", party.state_or_region), (f"{prefix}_POSTCODE", party.postcode),
                      (f"{prefix}_COUNTRY", party.country)]
    for name, value in texts:
        problem = _text_problem(value)
        if problem:
            add(f"{where}{name} {problem}")

    # Lines. Most values repeat (hours, rates, zero adjustments), so each value found fine is remembered.
    lines = inv.lines
    if not isinstance(lines, (tuple, list)) or not lines:
        add(f"{where}has no line items")
        return problems
    seen: set[object] = set()
    reported_duplicates: set[object] = set()
    good_money: set[Decimal] = set()
    good_cost: set[Decimal] = set()
    good_units: set[Decimal] = set()
    good_rates: set[Decimal] = set()
    line_sum = _ZERO
    tax_sum = _ZERO
    sums_ok = True
    for ln in lines:
        if not isinstance(ln, LedesLine):
            add(f"{where}expected a LedesLine, not {type(ln).__name__}")
            sums_ok = False
            continue
        n = ln.line_number
        kind = ln.kind
        at = None  # the message prefix, built on the first problem only
        if type(n) is not int or n <= 0:
            at = f"{where}line {n!r}: "
            add(f"{at}LINE_ITEM_NUMBER must be a positive whole number, not {n!r}")
        elif n in seen:
            if n not in reported_duplicates:
                add(f"{where}line {n}: LINE_ITEM_NUMBER {n} is used more than once in the invoice")
                reported_duplicates.add(n)
        else:
            seen.add(n)
        if kind not in LINE_TYPES:
            at = at or f"{where}line {n}: "
            add(f"{at}EXP/FEE/INV_ADJ_TYPE must be one of {', '.join(LINE_TYPES)}, not {kind!r}")
        if type(ln.date) is not dt.date and not _is_date(ln.date):
            at = at or f"{where}line {n}: "
            add(f"{at}LINE_ITEM_DATE must be a date, not {type(ln.date).__name__} {ln.date!r}")

        # Text fields: one pass over them all; field by field only when something is wrong.
        matter = ln.law_firm_matter_id
        values = (matter, ln.description, ln.task_code, ln.expense_code, ln.activity_code, ln.timekeeper_id,
                  ln.timekeeper_name, ln.timekeeper_classification, ln.client_matter_id)
        if bi:
            values += (ln.timekeeper_last_name, ln.timekeeper_first_name, ln.matter_name, ln.tax_type)
        joined = _join_fields(values)
        if joined is None or "|" in joined or "[]" in joined or not joined.isprintable():
            for name, value in zip(_LINE_TEXT_FIELDS_98BI if bi else _LINE_TEXT_FIELDS, values, strict=False):
                problem = _text_problem(value)
                if problem:
                    at = at or f"{where}line {n}: "
                    add(f"{at}{name} {problem}")
        if joined is not None:
            if not matter:
                at = at or f"{where}line {n}: "
                add(f"{at}LAW_FIRM_MATTER_ID is required")
            if (len(matter) > _MAX_ID or len(ln.client_matter_id) > _MAX_ID or len(ln.task_code) > _MAX_ID
                    or len(ln.expense_code) > _MAX_ID or len(ln.activity_code) > _MAX_ID
                    or len(ln.timekeeper_id) > _MAX_ID):
                at = at or f"{where}line {n}: "
                for name, value in (("LAW_FIRM_MATTER_ID", matter), ("CLIENT_MATTER_ID", ln.client_matter_id),
                                    ("LINE_ITEM_TASK_CODE", ln.task_code), ("LINE_ITEM_EXPENSE_CODE", ln.expense_code),
                                    ("LINE_ITEM_ACTIVITY_CODE", ln.activity_code),
                                    ("TIMEKEEPER_ID", ln.timekeeper_id)):
                    if len(value) > _MAX_ID:
                        add(f"{at}{name} is longer than {_MAX_ID} characters")
            if (kind == "E" or kind == "IE") and not ln.expense_code:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_EXPENSE_CODE is required on {kind} lines")

        # Numbers.
        units, cost, adj, total = ln.units, ln.unit_cost, ln.adjustment, ln.total
        numbers_ok = True
        for name, value, good, places, required in (
                ("LINE_ITEM_NUMBER_OF_UNITS", units, good_units, UNITS_PLACES, False),
                ("LINE_ITEM_UNIT_COST", cost, good_cost, COST_PLACES, False),
                ("LINE_ITEM_ADJUSTMENT_AMOUNT", adj, good_money, MONEY_PLACES, True),
                ("LINE_ITEM_TOTAL", total, good_money, MONEY_PLACES, True)):
            try:
                if type(value) is Decimal and value in good:
                    continue
            except TypeError:  # a signaling NaN cannot be hashed: reported below
                pass
            problem = _number_problem(value, places, _LINE_LIMIT, required)
            if problem:
                at = at or f"{where}line {n}: "
                add(f"{at}{name} {problem}")
                numbers_ok = False
            elif value is not None:
                good.add(value)  # type: ignore[arg-type]
        if kind == "F" or kind == "E":
            if units is None:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_NUMBER_OF_UNITS is required on {kind} lines")
                numbers_ok = False
            elif numbers_ok and units < 0:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_NUMBER_OF_UNITS {units} is negative (a credit belongs in the adjustment "
                    f"or an IF/IE line)")
            if cost is None:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_UNIT_COST is required on {kind} lines")
                numbers_ok = False
            elif numbers_ok and cost < 0:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_UNIT_COST {cost} is negative (a credit belongs in the adjustment "
                    f"or an IF/IE line)")
        tax = ln.tax_total
        if bi:
            at = at or f"{where}line {n}: "
            numbers_ok = _check_line_tax(ln, at, add, good_money, good_rates, numbers_ok)
        if not numbers_ok:
            sums_ok = False
            continue
        if units is not None and cost is not None:
            expected = (units * cost + adj).quantize(_CENT, ROUND_HALF_UP)
        else:
            expected = adj.quantize(_CENT, ROUND_HALF_UP)
        if bi:
            expected += tax
            tax_sum += tax
        if total != expected:
            formula = f"{units} x {cost} + {adj}" if units is not None and cost is not None else \
                f"LINE_ITEM_ADJUSTMENT_AMOUNT {adj}"
            if bi:
                formula += f" + LINE_ITEM_TAX_TOTAL {tax}"
            add(f"{at or f'{where}line {n}: '}LINE_ITEM_TOTAL {total} != {formula} = {expected}")
        line_sum += total

    # Invoice sums.
    if sums_ok and not total_problem:
        if inv.total != line_sum:
            add(f"{where}INVOICE_TOTAL {inv.total} != sum of LINE_ITEM_TOTAL {line_sum}")
        if bi and not tax_problem and inv.tax_total != tax_sum:
            add(f"{where}INVOICE_TAX_TOTAL {inv.tax_total} != sum of LINE_ITEM_TAX_TOTAL {tax_sum}")
    if bi and not (total_problem or tax_problem or net_problem) and inv.net_total != inv.total - inv.tax_total:
        add(f"{where}INVOICE_NET_TOTAL {inv.net_total} != INVOICE_TOTAL {inv.total} - INVOICE_TAX_TOTAL "
            f"{inv.tax_total} = {inv.total - inv.tax_total}")
    return problems


def _check_line_tax(ln: LedesLine, at: str, add: Callable[[str], None], good_money: set[Decimal],
                    good_rates: set[Decimal], numbers_ok: bool) -> bool:
    """The 98BI line fields. ``numbers_ok`` says units, unit cost and adjustment are usable; returns whether
    the tax total is usable too (the line total is checked only then)."""
    if not ln.matter_name:
        add(f"{at}MATTER_NAME is required in 98BI")
    if (ln.kind == "F" or ln.timekeeper_name) and (not ln.timekeeper_last_name or not ln.timekeeper_first_name):
        add(f"{at}TIMEKEEPER_LAST_NAME and TIMEKEEPER_FIRST_NAME are required in 98BI on fee lines and lines "
            f"with a timekeeper")
    rate, tax = ln.tax_rate, ln.tax_total
    rate_ok = rate is None or (type(rate) is Decimal and rate.is_finite() and rate in good_rates)
    if not rate_ok:
        problem = _number_problem(rate, RATE_PLACES, Decimal(1), False)
        if problem is None and rate < 0:  # type: ignore[operator]
            problem = f"{rate} is negative"
        if problem:
            add(f"{at}LINE_ITEM_TAX_RATE {problem} (a fraction in [0, 1), e.g. 0.2 for 20%)")
        else:
            good_rates.add(rate)  # type: ignore[arg-type]
            rate_ok = True
    if not (type(tax) is Decimal and tax.is_finite() and tax in good_money):
        problem = _number_problem(tax, MONEY_PLACES, _LINE_LIMIT, True)
        if problem:
            add(f"{at}LINE_ITEM_TAX_TOTAL {problem}")
            return False
        good_money.add(tax)  # type: ignore[arg-type]
    if numbers_ok and rate is not None and rate_ok:
        units, cost, adj = ln.units, ln.unit_cost, ln.adjustment
        both = units is not None and cost is not None
        net = units * cost + adj if both else adj  # type: ignore[operator]
        expected = (net * rate).quantize(_CENT, ROUND_HALF_UP)
        if tax != expected:
            base = f"{units} x {cost} + {adj}" if both else f"LINE_ITEM_ADJUSTMENT_AMOUNT {adj}"
            add(f"{at}LINE_ITEM_TAX_TOTAL {tax} != ({base}) x {rate} = {expected}")
    return numbers_ok


_LINE_TEXT_FIELDS = ("LAW_FIRM_MATTER_ID", "LINE_ITEM_DESCRIPTION", "LINE_ITEM_TASK_CODE", "LINE_ITEM_EXPENSE_CODE",
                     "LINE_ITEM_ACTIVITY_CODE", "TIMEKEEPER_ID", "TIMEKEEPER_NAME", "TIMEKEEPER_CLASSIFICATION",
                     "CLIENT_MATTER_ID")
_LINE_TEXT_FIELDS_98BI = _LINE_TEXT_FIELDS + ("TIMEKEEPER_LAST_NAME", "TIMEKEEPER_FIRST_NAME", "MATTER_NAME",
                                              "LINE_ITEM_TAX_TYPE")


def check_invoices(invoices: Iterable[LedesInvoice], fmt: str) -> list[str]:
    """The problems of every invoice of one file, plus the file-wide rules: at least one invoice, invoice
    numbers unique, and LINE_ITEM_NUMBER unique across the whole file (strict receivers check file-wide)."""
    if fmt not in FORMATS:
        raise LedesError([f"unknown LEDES format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    invoices = list(invoices)
    if not invoices:
        return ["the file has no invoices"]
    problems: list[str] = []
    numbers: dict[object, int] = {}
    line_owner: dict[object, object] = {}
    shared: dict[object, list[object]] = {}
    for inv in invoices:
        problems += check_invoice(inv, fmt)
        if not isinstance(inv, LedesInvoice):
            continue
        number = inv.invoice_number
        try:
            numbers[number] = numbers.get(number, 0) + 1
        except TypeError:
            continue
        if numbers[number] > 1 or not isinstance(inv.lines, (tuple, list)):
            continue
        for ln in inv.lines:
            n = getattr(ln, "line_number", None)
            if type(n) is not int:
                continue
            owner = line_owner.setdefault(n, number)
            if owner != number:
                owners = shared.setdefault(n, [owner])
                if number not in owners:
                    owners.append(number)
    for number, count in numbers.items():
        if count > 1:
            problems.append(f"invoice {_label(number)}: INVOICE_NUMBER appears {count} times in the file")
    for n, owners in shared.items():
        problems.append(f"LINE_ITEM_NUMBER {n} is used in more than one invoice "
                        f"({', '.join(_label(o) for o in owners)}); line numbers must be unique across the file")
    return problems


# Writing -----------------------------------------------------------------------------------------------

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
            text = self.money[value] = _money_str(value)
        return text

    def date_str(self, value: dt.date) -> str:
        text = self.dates.get(value)
        if text is None:
            text = self.dates[value] = _date_str(value)
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
        u = fm.units[ln.units] = _places_str(ln.units, UNITS_PLACES)  # type: ignore[arg-type]
    money = fm.money
    a = money.get(ln.adjustment)
    if a is None:
        a = money[ln.adjustment] = _money_str(ln.adjustment)
    t = money.get(ln.total)
    if t is None:
        t = money[ln.total] = _money_str(ln.total)
    c = fm.costs.get(ln.unit_cost)
    if c is None:
        c = fm.costs[ln.unit_cost] = _places_str(ln.unit_cost, COST_PLACES)  # type: ignore[arg-type]
    d = fm.dates.get(ln.date)
    if d is None:
        d = fm.dates[ln.date] = _date_str(ln.date)
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
                r = rates[ln.tax_rate] = _places_str(ln.tax_rate, RATE_PLACES)  # type: ignore[arg-type]
            x = money.get(ln.tax_total)
            if x is None:
                x = money[ln.tax_total] = _money_str(ln.tax_total)  # type: ignore[arg-type]
            append(f"{_record_1998b(fm, head, middle, firm, ln)}{po}{ln.matter_name}{totals}"
                   f"{ln.timekeeper_last_name}|{ln.timekeeper_first_name}{parties}{r}|{x}|{ln.tax_type}{tail}")


# Parsing -----------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
_MISSING = object()
_FORMAT_OF_FIRST_LINE = {line: fmt for fmt, line in FIRST_LINE.items()}
_MAX_INTEGER_DIGITS = 12
# Invoice-level fields (0-based positions): repeated on every record; the first record of an invoice wins.
_INVOICE_POSITIONS = {
    "1998b": (0, 1, 2, 4, 5, 6, 7, 19),
    "98bi": (0, 1, 2, 4, 5, 6, 7, 19, 24, 25, 27, 28, 29, *range(32, 47), 50, 51),
}


class _FieldError(Exception):
    def __init__(self, column: int, message: str):
        super().__init__(message)
        self.column, self.message = column, message


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _decimal(text: str, column: int, places: int, cache: dict[str, Decimal | None]) -> Decimal | None:
    """A number field (the slow path behind the caller's cache lookup); None when empty."""
    name = FIELDS_98BI[column - 1]
    if not _NUMBER.fullmatch(text):
        raise _FieldError(column, f"{name} {_shown(text)} is not a number (digits, an optional leading '-' and "
                                  f"decimal point, no thousands separators or currency symbols)")
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(fraction) > places:
        raise _FieldError(column, f"{name} {_shown(text)} has more than {places} decimal places")
    if len(whole) > _MAX_INTEGER_DIGITS:
        raise _FieldError(column, f"{name} {_shown(text)} has more than {_MAX_INTEGER_DIGITS} digits before the "
                                  f"decimal point")
    value = cache[text] = Decimal(text)
    return value


def _date(text: str, column: int, cache: dict[str, dt.date | None]) -> dt.date | None:
    name = FIELDS_98BI[column - 1]
    if len(text) != 8 or not _DIGITS.fullmatch(text):
        raise _FieldError(column, f"{name} {_shown(text)} is not a date in the form YYYYMMDD")
    try:
        value = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise _FieldError(column, f"{name} {_shown(text)} is not a valid date") from None
    cache[text] = value
    return value


def _required(value: object, column: int) -> object:
    if value is None:
        raise _FieldError(column, f"{FIELDS_98BI[column - 1]} is required")
    return value


class _Reader:
    """The per-file caches and the invoice-level part of a record."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.numbers: dict[str, Decimal | None] = {"": None}
        self.rates: dict[str, Decimal | None] = {"": None}
        self.dates: dict[str, dt.date | None] = {"": None}

    def number(self, text: str, column: int, places: int = UNITS_PLACES) -> Decimal | None:
        value = self.numbers.get(text, _MISSING)
        if value is _MISSING:
            value = _decimal(text, column, places, self.numbers)
        return value  # type: ignore[return-value]

    def date(self, text: str, column: int) -> dt.date | None:
        value = self.dates.get(text, _MISSING)
        if value is _MISSING:
            value = _date(text, column, self.dates)
        return value  # type: ignore[return-value]

    def invoice_fields(self, f: list[str]) -> dict[str, object]:
        """The LedesInvoice keyword arguments of a record's invoice-level fields (lines excluded)."""
        if not f[1]:
            raise _FieldError(2, "INVOICE_NUMBER is required")
        values: dict[str, object] = {
            "invoice_date": _required(self.date(f[0], 1), 1),
            "invoice_number": f[1],
            "client_id": f[2],
            "law_firm_id": f[19],
            "total": _required(self.number(f[4], 5), 5),
            "billing_start": _required(self.date(f[5], 6), 6),
            "billing_end": _required(self.date(f[6], 7), 7),
            "description": f[7],
        }
        if self.fmt == "98bi":
            values.update(
                po_number=f[24], client_tax_id=f[25], tax_total=self.number(f[27], 28),
                net_total=self.number(f[28], 29), currency=f[29], account_type=f[32],
                law_firm=Party(*f[33:40]), client=Party(*f[40:47]),
                reported_tax_total=self.number(f[50], 51), tax_currency=f[51],
            )
        return values


def parse(text: str, *, strict: bool = False) -> LedesFile:
    """Read a LEDES 1998B or 98BI V2 file (the format is taken from its first line).

    Accepts LF or CRLF (recorded in ``LedesFile.newline``), a UTF-8 byte order mark, bytes (decoded as
    UTF-8) and trailing lines holding only whitespace. Records are grouped into invoices by INVOICE_NUMBER
    in file order; an invoice's invoice-level fields come from its first record. Malformed input raises
    :class:`LedesParseError` with the file line and the field number. With ``strict=True`` the contract
    checks (:func:`check_invoices`, and records of one invoice that disagree on invoice-level fields) run
    too, and their findings are returned in ``LedesFile.problems``.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LedesParseError(f"not UTF-8 text (byte {exc.start}); decode the file with its encoding first",
                                  raw.count(b"\n", 0, exc.start) + 1) from None
    if not isinstance(text, str):
        raise LedesParseError(f"expected the file's text, not {type(text).__name__}", 1)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise LedesParseError("the file is empty", 1)
    if "\n" not in text and "\r" in text:
        raise LedesParseError("lines end with a bare carriage return; LEDES files use LF or CRLF", 1)
    lines = text.split("\n")
    newline = "\r\n" if lines[0].endswith("\r") else "\n"
    while not lines[-1].strip():  # a trailing newline, or trailing lines of whitespace
        lines.pop()

    first = lines[0].removesuffix("\r").strip()
    fmt = _FORMAT_OF_FIRST_LINE.get(first)
    if fmt is None:
        raise LedesParseError(f"the first line must be {' or '.join(map(repr, FIRST_LINE.values()))}, "
                              f"found {_shown(first)}", 1)
    if len(lines) < 2:
        raise LedesParseError("the header line (the field names) is missing", 2)
    _check_header(lines[1].removesuffix("\r").strip(), fmt)
    if len(lines) < 3:
        raise LedesParseError("the file has no records", 3)

    reader = _Reader(fmt)
    invoices: dict[str, tuple[dict[str, object], list[LedesLine], tuple[str, ...], int]] = {}
    inconsistencies: list[str] = []
    field_count = len(FIELDS[fmt])
    invoice_key = itemgetter(*_INVOICE_POSITIONS[fmt])
    kinds = frozenset(LINE_TYPES)
    numbers, dates = reader.numbers, reader.dates
    bi = fmt == "98bi"
    for index in range(2, len(lines)):
        lineno = index + 1
        line = lines[index]
        if line.endswith("\r"):
            line = line[:-1]
        if not line.endswith("[]"):
            line = line.rstrip()
            if not line:
                raise LedesParseError("empty line between records", lineno)
            if not line.endswith("[]"):
                raise LedesParseError("the record does not end with '[]' (is there a line break inside a field?)",
                                      lineno)
        if "\r" in line:
            raise LedesParseError("carriage return inside a record", lineno)
        f = line[:-2].split("|")
        if len(f) != field_count:
            found = len(f)
            raise LedesParseError(f"expected {field_count} fields, found {found}", lineno,
                                  min(found, field_count) + 1)
        try:
            key = invoice_key(f)
            entry = invoices.get(f[1])
            if entry is None:
                invoices[f[1]] = entry = (reader.invoice_fields(f), [], key, lineno)
            elif key != entry[2]:
                reader.invoice_fields(f)  # malformed values raise, even on a later record
                inconsistencies.append(_inconsistency(f, key, entry[2], entry[3], lineno, fmt))
            # Line-level fields; the caches make repeated values (hours, rates, dates) cheap.
            text_no = f[8]
            if not (text_no.isdigit() and text_no.isascii() and len(text_no) <= _MAX_ID):
                raise _FieldError(9, f"LINE_ITEM_NUMBER {_shown(text_no)} is not a whole number of at most "
                                     f"{_MAX_ID} digits")
            kind = f[9]
            if kind not in kinds:
                kind = kind.upper()
                if kind not in kinds:
                    raise _FieldError(10, f"EXP/FEE/INV_ADJ_TYPE {_shown(f[9])} is not one of "
                                          f"{', '.join(LINE_TYPES)}")
            units = numbers.get(f[10], _MISSING)
            if units is _MISSING:
                units = _decimal(f[10], 11, UNITS_PLACES, numbers)
            adj = numbers.get(f[11], _MISSING)
            if adj is _MISSING:
                adj = _decimal(f[11], 12, UNITS_PLACES, numbers)
            if adj is None:
                adj = _ZERO
            total = numbers.get(f[12], _MISSING)
            if total is _MISSING:
                total = _decimal(f[12], 13, UNITS_PLACES, numbers)
            if total is None:
                raise _FieldError(13, "LINE_ITEM_TOTAL is required")
            date = dates.get(f[13], _MISSING)
            if date is _MISSING:
                date = _date(f[13], 14, dates)
            if date is None:
                raise _FieldError(14, "LINE_ITEM_DATE is required")
            cost = numbers.get(f[20], _MISSING)
            if cost is _MISSING:
                cost = _decimal(f[20], 21, UNITS_PLACES, numbers)
            if bi:
                rate = reader.rates.get(f[47], _MISSING)
                if rate is _MISSING:
                    rate = _decimal(f[47], 48, RATE_PLACES, reader.rates)
                tax = reader.number(f[48], 49)
                line_item = LedesLine(int(text_no), kind, date, f[3], units, cost, adj, total, f[18], f[14], f[15],
                                      f[16], f[17], f[21], f[22], f[23], f[30], f[31], f[26], rate, tax, f[49])
            else:
                line_item = LedesLine(int(text_no), kind, date, f[3], units, cost, adj, total, f[18], f[14], f[15],
                                      f[16], f[17], f[21], f[22], f[23])
        except _FieldError as exc:
            raise LedesParseError(exc.message, lineno, exc.column) from None
        entry[1].append(line_item)

    result = tuple(LedesInvoice(**fields, lines=tuple(items)) for fields, items, _, _ in invoices.values())
    problems: tuple[str, ...] = ()
    if strict:
        problems = tuple(check_invoices(result, fmt) + inconsistencies)
    return LedesFile(fmt, result, newline, problems)


def _check_header(header: str, fmt: str) -> None:
    expected = FIELDS[fmt]
    names = header.removesuffix("[]").split("|")
    for position, (want, got) in enumerate(zip(expected, names, strict=False), start=1):
        if want != got:
            raise LedesParseError(f"header field {position} should be {want!r}, found {_shown(got)}", 2, position)
    if len(names) != len(expected):
        position = min(len(names), len(expected)) + 1
        what = "missing" if len(names) < len(expected) else f"extra field {_shown(names[len(expected)])}"
        raise LedesParseError(f"the header has {len(names)} field names, {fmt} has {len(expected)} "
                              f"({what})", 2, position)
    if not header.endswith("[]"):
        raise LedesParseError("the header line must end with '[]'", 2)


def _inconsistency(f: list[str], key: tuple[str, ...], first: tuple[str, ...], first_line: int, lineno: int,
                   fmt: str) -> str:
    positions = _INVOICE_POSITIONS[fmt]
    differing = [f"{FIELDS_98BI[p]} {_shown(mine)} (first record: {_shown(theirs)})"
                 for p, mine, theirs in zip(positions, key, first, strict=True) if mine != theirs]
    return (f"invoice {_label(f[1])}: file line {lineno} (line {f[8]}) disagrees with the invoice's first record "
            f"on file line {first_line}: " + "; ".join(differing) + "; the first record's values are used")
