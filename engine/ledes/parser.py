"""Reading LEDES 1998B and 98BI V2 files back into the model, with the line and field of every problem."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from operator import itemgetter

from engine.ledes.checks import MAX_ID, check_invoices, label
from engine.ledes.model import (
    FIELDS,
    FIELDS_98BI,
    FIRST_LINE,
    LINE_TYPES,
    RATE_PLACES,
    UNITS_PLACES,
    ZERO,
    LedesFile,
    LedesInvoice,
    LedesLine,
    LedesParseError,
    Party,
)

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
            if not (text_no.isdigit() and text_no.isascii() and len(text_no) <= MAX_ID):
                raise _FieldError(9, f"LINE_ITEM_NUMBER {_shown(text_no)} is not a whole number of at most "
                                     f"{MAX_ID} digits")
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
                adj = ZERO
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
    return (f"invoice {label(f[1])}: file line {lineno} (line {f[8]}) disagrees with the invoice's first record "
            f"on file line {first_line}: " + "; ".join(differing) + "; the first record's values are used")
