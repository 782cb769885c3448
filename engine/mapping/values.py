"""Cell values to canonical values: numbers, dates, durations and yes/no, exactly (``Decimal``, never a float).

Each converter raises ``ValueError`` with a message for the person who fixes the file; the reader reports it
with the row and the column. Spreadsheet cells arrive as text (CSV) or as the values openpyxl reads from an
``.xlsx`` (``int``, ``float``, ``datetime``, ``bool``): an ``.xlsx`` stores numbers as binary doubles, so a
float cell is taken as Excel shows it, to Excel's 15 significant digits (``0.1`` stays ``0.1``, a formula's
``2.0999999999999996`` is ``2.1``), and goes straight to ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

EXCEL = "excel"  # the date "format" of Excel's serial day numbers
HOURS_PLACES = Decimal("0.0001")  # hours converted from minutes or units: at most LEDES's four decimals
TRUE_WORDS = frozenset({"yes", "y", "true", "t", "1"})
FALSE_WORDS = frozenset({"no", "n", "false", "f", "0"})
_EXCEL_EPOCH = dt.date(1899, 12, 30)  # serial 1 is 1900-01-01 once Lotus's phantom 1900-02-29 (serial 60) is past
_SAMPLE = dt.datetime(2026, 11, 27, 14, 35, 51)  # every component distinct, for checking a format round trip
_HMM = re.compile(r"(\d+):([0-5]\d)")


def shown(value: object) -> str:
    """A cell as quoted in a message (long text cut)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def excel_float(value: float) -> Decimal:
    """An ``.xlsx`` number cell as Excel displays it at full precision (15 significant digits)."""
    return Decimal(format(value, ".15g"))


@dataclass(frozen=True)
class NumberFormat:
    """How a file writes numbers: ``1.234,50``, ``$1,234.50``, ``(120.00)`` for a negative, ..."""

    decimal: str = "."
    thousands: str = ","
    currency_symbols: tuple[str, ...] = ("$",)

    def __post_init__(self) -> None:
        digits, dec, sep = r"\d", re.escape(self.decimal), re.escape(self.thousands)
        grouped = rf"{digits}{{1,3}}(?:{sep}{digits}{{3}})+" if self.thousands else None
        whole = rf"(?:{grouped}|{digits}+)" if grouped else rf"{digits}+"
        object.__setattr__(self, "_pattern", re.compile(rf"{whole}(?:{dec}{digits}*)?|{dec}{digits}+"))
        object.__setattr__(self, "_symbols", tuple(sorted(self.currency_symbols, key=len, reverse=True)))

    def parse(self, value: object) -> Decimal | None:
        """The number in a cell (None when blank); parentheses or a leading minus make it negative."""
        if not isinstance(value, str):
            return _typed_number(value)
        text = value.strip()
        if not text:
            return None
        negative = False
        if text.startswith("(") and text.endswith(")"):
            negative, text = True, text[1:-1].strip()
        for _ in range(2):  # a sign and a currency symbol, in either order: -$12.00, $-12.00
            if text and text[0] in "-+":
                negative, text = negative != (text[0] == "-"), text[1:].strip()
            for symbol in self._symbols:  # type: ignore[attr-defined]
                if text.startswith(symbol):
                    text = text[len(symbol):].strip()
                    break
                if text.endswith(symbol):
                    text = text[:-len(symbol)].strip()
                    break
        if not self._pattern.fullmatch(text):  # type: ignore[attr-defined]
            raise ValueError(f"{shown(value)} is not a number written with {self.describe()}")
        if self.thousands:
            text = text.replace(self.thousands, "")
        number = Decimal(text.replace(self.decimal, ".") if self.decimal != "." else text)
        return -number if negative else number

    def describe(self) -> str:
        sep = f"thousands separator {self.thousands!r}" if self.thousands else "no thousands separator"
        return f"decimal separator {self.decimal!r} and {sep}"


def _typed_number(value: object) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value} is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a finite number")
        return excel_float(value)
    raise ValueError(f"{shown(value)} is not a number")


def cell_text(value: object) -> str:
    """A cell as the text it shows: ``.xlsx`` whole numbers without ``.0``, dates as ISO, blanks empty."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(excel_float(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return "" if value is None else str(value)


def excel_date(serial: Decimal | int | float) -> dt.date:
    """The date of an Excel serial day number (1900 date system; a time of day in the fraction is dropped)."""
    days = int(serial)
    if days < 1 or days == 60 or days > 2958465:  # 60 is 1900-02-29, a day that never was; 2958465 is 9999-12-31
        raise ValueError(f"{serial} is not an Excel date serial number")
    return _EXCEL_EPOCH + dt.timedelta(days=days + (1 if days < 60 else 0))


def format_problem(fmt: str) -> str | None:
    """Why a ``strptime`` date format cannot read dates (None when it can)."""
    if fmt == EXCEL:
        return None
    whole = f"{fmt!r} does not give a whole date: it needs a day, a month and a year (for example %d/%m/%Y)"
    if not any(year in fmt for year in ("%Y", "%y", "%G", "%c", "%x")):
        return whole  # asked without a year, strptime guesses 1900 (and Python 3.13 warns it will stop guessing)
    try:
        back = dt.datetime.strptime(_SAMPLE.strftime(fmt), fmt)
    except ValueError as exc:
        return f"{fmt!r} is not a date format: {exc}"
    if back.date() != _SAMPLE.date():
        return whole
    return None


@dataclass(frozen=True)
class DateFormats:
    """The formats a date column may use, tried in order: ``strptime`` formats and ``excel`` serial numbers."""

    formats: tuple[str, ...] = ("%Y-%m-%d",)

    def parse(self, value: object) -> dt.date | None:
        moment = self.parse_moment(value)
        return moment.date() if isinstance(moment, dt.datetime) else moment

    def parse_moment(self, value: object) -> dt.date | dt.datetime | None:
        """A date, or a datetime where the cell or the format has a time of day."""
        if value is None:
            return None
        if isinstance(value, dt.datetime | dt.date):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if EXCEL in self.formats:
                return excel_date(value)
            raise ValueError(f"{shown(value)} is a number, not a date (add excel to the column's formats if it "
                             "holds Excel serial dates)")
        if not isinstance(value, str):
            raise ValueError(f"{shown(value)} is not a date")
        text = value.strip()
        if not text:
            return None
        for fmt in self.formats:
            try:
                if fmt == EXCEL:
                    return excel_date(Decimal(text))
                return dt.datetime.strptime(text, fmt)
            except (ValueError, InvalidOperation):
                continue
        raise ValueError(f"{shown(value)} is not a date in the form {' or '.join(self.formats)}")


# Durations ------------------------------------------------------------------------------------------------

UNITS = ("hours", "minutes", "seconds", "units", "h:mm")
_SECONDS = {"hours": 3600, "minutes": 60, "seconds": 1}


@dataclass(frozen=True)
class Duration:
    """How a column gives time: hours, minutes, seconds, units of ``unit_minutes`` (AU practice: 6), or ``h:mm``."""

    unit: str = "hours"
    unit_minutes: int | None = None
    numbers: NumberFormat = NumberFormat()

    def exact_seconds(self, value: object) -> Decimal | None:
        """The duration in seconds, exactly (None when blank)."""
        if value is None:
            return None
        if isinstance(value, dt.time):  # an .xlsx cell formatted as a time of day
            return Decimal(value.hour * 3600 + value.minute * 60 + value.second)
        if isinstance(value, dt.timedelta):  # an .xlsx cell formatted as a duration, [h]:mm
            return Decimal(value.days * 86400 + value.seconds)
        if self.unit == "h:mm":
            text = value.strip() if isinstance(value, str) else None
            if text == "":
                return None
            match = _HMM.fullmatch(text) if text is not None else None
            if not match:
                raise ValueError(f"{shown(value)} is not a duration in the form h:mm")
            return Decimal(int(match[1]) * 3600 + int(match[2]) * 60)
        number = self.numbers.parse(value)
        if number is None:
            return None
        if number < 0:
            raise ValueError(f"{shown(value)} is a negative duration")
        factor = self.unit_minutes * 60 if self.unit == "units" else _SECONDS[self.unit]  # type: ignore[operator]
        return number * factor

    def hours(self, value: object) -> Decimal | None:
        """The duration in hours: hours as written; converted ones exact, or at LEDES's four decimals where the
        minutes do not divide (7 minutes are 0.1167 hours)."""
        if self.unit == "hours" and not isinstance(value, dt.time | dt.timedelta):
            hours = self.numbers.parse(value)
            if hours is not None and hours < 0:
                raise ValueError(f"{shown(value)} is a negative duration")
            return hours
        seconds = self.exact_seconds(value)
        if seconds is None:
            return None
        hours = seconds / 3600
        if hours.as_tuple().exponent < -4:  # type: ignore[operator]
            hours = hours.quantize(HOURS_PLACES, rounding=ROUND_HALF_UP)
        return hours

    def seconds(self, value: object) -> int | None:
        seconds = self.exact_seconds(value)
        if seconds is None:
            return None
        if seconds != seconds.to_integral_value():
            raise ValueError(f"{shown(value)} is not a whole number of seconds")
        return int(seconds)


def parse_bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value in (0, 1):
            return bool(value)
    elif isinstance(value, str):
        word = value.strip().lower()
        if not word:
            return None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"{shown(value)} is not yes or no (write yes/no, true/false, y/n or 1/0, or translate it)")
