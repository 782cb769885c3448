"""LEDES 1998B and LEDES 98BI V2: the invoice file model (``model``), free-text cleaning (``sanitize``), the
writer's contract (``checks``), the writers (``writer``) and a positioned parser (``parser``).

The writers implement the exporter's contract strict receivers enforce (first line, header, 24 or 52
fields, ``[]`` terminators, ``YYYYMMDD`` dates, money with two decimals, no ``|``, newline or ``[]`` inside a
field, line totals = units x unit cost + adjustment (+ tax in 98BI), invoice total = sum of its line totals,
identical on every row). They refuse, with :class:`LedesError`, an invoice that breaks the contract rather
than write a file a portal would reject. The parser reads what the writers produce (and the public sample
files) back into the same model.

The package's interface (import these from ``engine.ledes``):

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

from engine.ledes.checks import check_invoice, check_invoices
from engine.ledes.model import (
    FIELDS,
    FIELDS_98BI,
    FIELDS_1998B,
    FIRST_LINE,
    FORMATS,
    HEADER,
    LINE_TYPES,
    LedesError,
    LedesFile,
    LedesInvoice,
    LedesLine,
    LedesParseError,
    Party,
)
from engine.ledes.parser import parse
from engine.ledes.sanitize import sanitize
from engine.ledes.writer import write, write_98bi, write_1998b

__all__ = [
    "FIELDS",
    "FIELDS_98BI",
    "FIELDS_1998B",
    "FIRST_LINE",
    "FORMATS",
    "HEADER",
    "LINE_TYPES",
    "LedesError",
    "LedesFile",
    "LedesInvoice",
    "LedesLine",
    "LedesParseError",
    "Party",
    "check_invoice",
    "check_invoices",
    "parse",
    "sanitize",
    "write",
    "write_98bi",
    "write_1998b",
]
