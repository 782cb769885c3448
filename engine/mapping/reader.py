"""Reading a spreadsheet export through a mapping: CSV (any delimiter and encoding) or ``.xlsx``, row by row.

A row that cannot be read (a date that is not a date, a required field left blank) is reported with its row
number and column and left out; the other rows are read. A value the mapping cannot translate is kept out of
the entry and flagged on it (``UNMAPPED_<FIELD>``), and a row whose numbers do not reconcile keeps the export's
amount and is flagged ``AMOUNT_MISMATCH``. A file that cannot be read at all (not text in its encoding, a
column the mapping names missing from the header) raises :class:`UnreadableFile` with every reason.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import Invalid
from engine.mapping.loader import FieldRule, Mapping, Unlisted
from engine.mapping.values import cell_text
from engine.model import Entry, EntryKind, FeeBasis

DELIMITERS = (",", ";", "\t", "|")
FLAT_BASES = frozenset({FeeBasis.FLAT, FeeBasis.FIXED_TEMPLATE})
CENT = Decimal("0.01")
_QUOTED = re.compile(r'"[^"]*"')
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class UnreadableFile(Invalid):
    """A file that cannot be read at all; ``problems`` holds one ``file[:line]: what`` text per reason."""

    code = "invalid_entries"

    def __init__(self, problems: list[str]):
        super().__init__(problems[0], problems)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a row was left out: its row number (the file's line, or the sheet's row) and the column at fault."""

    file: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.column}: {self.message}"


@dataclass(frozen=True)
class MappedRead:
    """The entries a file gave, the problems of the rows left out, and notes on what was read but is no entry."""

    entries: list[Entry]
    problems: list[RowProblem]
    rows: int  # data rows read, blank rows aside
    described: str  # how the file was read: "CSV, cp1252, ';'", "sheet 'Costs'", "LEDES 1998B"
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """How many rows were left out."""
        return len({problem.row for problem in self.problems})


def read_mapped(path: str | Path, mapping: Mapping) -> MappedRead:
    """Every row of a CSV or ``.xlsx`` export as a canonical entry, by ``mapping``."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            start = handle.read(4)
    except OSError as exc:
        raise UnreadableFile([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if start == b"PK\x03\x04":
        rows, described = _xlsx_rows(path, mapping), f"sheet {mapping.sheet!r}" if mapping.sheet else "first sheet"
    elif path.suffix.lower() in (".xls", ".xlsb", ".ods"):
        raise UnreadableFile([f"{path}: a {path.suffix} workbook: save it as .xlsx or CSV"])
    else:
        rows, described = _csv_rows(path, mapping)
    return _Rows(str(path), mapping).read(rows, described)


# CSV and XLSX ----------------------------------------------------------------------------------------------

def _csv_rows(path: Path, mapping: Mapping) -> tuple[Iterator[tuple[int, Sequence[Any]]], str]:
    data = path.read_bytes()
    text, encoding = _decode(data, mapping.encoding, str(path))
    delimiter = mapping.delimiter
    if delimiter == "auto":
        lines = text.split("\n", mapping.header_row)
        header = _QUOTED.sub("", lines[min(mapping.header_row, len(lines)) - 1])
        delimiter = max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","

    def rows() -> Iterator[tuple[int, Sequence[Any]]]:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        line = 1
        try:
            for row in reader:
                yield line, row
                line = reader.line_num + 1
        except csv.Error as exc:
            raise UnreadableFile([f"{path}:{line}: not CSV: {exc}"]) from None

    shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
    return rows(), f"CSV, {encoding}, delimiter {shown}"


def _decode(data: bytes, encoding: str, file: str) -> tuple[str, str]:
    """The file's text; ``auto`` is a byte order mark's encoding, else UTF-8, else Windows-1252 (Excel's)."""
    if encoding == "auto":
        for bom, name in _BOMS:
            if data.startswith(bom):
                return _decode(data, name, file)
        try:
            return data.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            encoding = "cp1252"
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile([f"{file}:{line}: not {encoding} text (byte {data[exc.start]:#04x}): set file.encoding "
                              "in the mapping"]) from None


def _xlsx_rows(path: Path, mapping: Mapping) -> Iterator[tuple[int, Sequence[Any]]]:
    import openpyxl  # only for .xlsx files
    from openpyxl.utils.exceptions import InvalidFileException

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it does not read
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise UnreadableFile([f"{path}: not an .xlsx workbook: {exc}"]) from None
    try:
        if mapping.sheet is not None and mapping.sheet not in book.sheetnames:
            raise UnreadableFile([f"{path}: no sheet {mapping.sheet!r} (sheets: {', '.join(book.sheetnames)})"])
        sheet = book[mapping.sheet] if mapping.sheet is not None else book.worksheets[0]
        sheet.reset_dimensions()  # some writers record a wrong used range; read every row there is
        yield from enumerate(sheet.iter_rows(values_only=True), 1)
    finally:
        book.close()


# Rows to entries --------------------------------------------------------------------------------------------

def _label(name: str) -> str:
    return " ".join(name.split()).casefold()


def _blank(row: Sequence[Any]) -> bool:
    return all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in row)


class _Rows:
    """One read of one file: the header bound to the mapping, then each row made an entry or a problem."""

    def __init__(self, file: str, mapping: Mapping):
        self.file, self.mapping = file, mapping
        self.entries: list[Entry] = []
        self.problems: list[RowProblem] = []
        self.seen: dict[str, int] = {}  # entry uid -> row, to refuse an id used twice
        self.hashes: dict[str, int] = {}  # hash -> rows with it so far, to number identical rows

    def read(self, rows: Iterator[tuple[int, Sequence[Any]]], described: str) -> MappedRead:
        header = None
        count = 0
        for number, row in rows:
            if number < self.mapping.header_row:
                continue
            if header is None:
                header = self.bind(row)
                continue
            if _blank(row):
                if self.mapping.blank_rows == "stop":
                    break
                if self.mapping.blank_rows == "error":
                    self.problems.append(RowProblem(self.file, number, "row", "a blank row (blank_rows: error)"))
                continue
            count += 1
            self.row(number, row, header)
        if header is None:
            raise UnreadableFile([f"{self.file}: no header row (row {self.mapping.header_row} of the file)"])
        return MappedRead(self.entries, self.problems, count, described)

    def bind(self, row: Sequence[Any]) -> list[tuple[FieldRule, tuple[int, ...]]]:
        """Each rule with the positions of its columns in the header; every missing or doubled column reported."""
        positions: dict[str, list[int]] = {}
        names = [cell_text(cell) for cell in row]
        for index, name in enumerate(names):
            positions.setdefault(_label(name), []).append(index)
        problems = []
        for rule in self.mapping.rules:
            for column in rule.columns:
                found = positions.get(_label(column), [])
                if not found:
                    close = difflib.get_close_matches(column, [n for n in names if n], n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else f"; its columns: {', '.join(names)}"
                    problems.append(f"{self.file}:{self.mapping.header_row}: {column}: the column of {rule.field} "
                                    f"({rule.where}) is not in the header{hint}")
                elif len(found) > 1:
                    problems.append(f"{self.file}:{self.mapping.header_row}: {column}: the header has this column "
                                    f"{len(found)} times (columns {', '.join(str(i + 1) for i in found)}); "
                                    f"name them apart")
        if problems:
            raise UnreadableFile(list(dict.fromkeys(problems)))
        return [(rule, tuple(positions[_label(column)][0] for column in rule.columns)) for rule in self.mapping.rules]

    def row(self, number: int, row: Sequence[Any], header: list[tuple[FieldRule, tuple[int, ...]]]) -> None:
        record: dict[str, Any] = {}
        flags: list[str] = []
        failed = False
        kind = None
        width = len(row)
        for rule, indexes in header:
            if rule.only_for is not None and kind is not rule.only_for:
                continue
            try:
                if not indexes:
                    value = rule.constant
                elif rule.hashed:
                    value = self.hashed(row, indexes)
                elif len(indexes) > 1:
                    value = rule.join.join(text for i in indexes if i < width and (text := cell_text(row[i])))
                    value = value or None
                else:
                    value = rule.convert(row[indexes[0]] if indexes[0] < width else None)  # type: ignore[misc]
            except Unlisted:
                flags.append(rule.flag)
                continue
            except ValueError as exc:
                self.problems.append(RowProblem(self.file, number, ", ".join(rule.columns), str(exc)))
                failed = True
                continue
            if value is not None:
                record[rule.field] = value
                if rule.field == "entry_kind":
                    kind = EntryKind(value)
        if failed:
            return
        flags.extend(_derive(record, kind))
        if flags:
            record["data_quality_flags"] = sorted(set(flags))
        try:
            entry = Entry.model_validate(record)
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else "entry"
                self.problems.append(RowProblem(self.file, number, self.column_of(name), error["msg"]))
            return
        first = self.seen.setdefault(entry.entry_uid, number)
        if first != number:
            self.problems.append(RowProblem(
                self.file, number, self.column_of("source_id"),
                f"row {first} has the same id {entry.source_id!r}: an id is one row of a file; this row is left out"))
            return
        self.entries.append(entry)

    def hashed(self, row: Sequence[Any], indexes: tuple[int, ...]) -> str:
        """A stable id from the row's cells; identical rows are numbered (``-2``, ``-3``) in file order."""
        width = len(row)
        key = "\x1f".join(cell_text(row[i]) if i < width else "" for i in indexes)
        digest = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
        seen = self.hashes[digest] = self.hashes.get(digest, 0) + 1
        return digest if seen == 1 else f"{digest}-{seen}"

    def column_of(self, name: str) -> str:
        """The column(s) a canonical field comes from, for a problem found on the entry as a whole."""
        for rule in self.mapping.rules:
            if rule.field == name:
                return ", ".join(rule.columns) if rule.columns else f"{name} (constant)"
        return name


def _derive(record: dict[str, Any], kind: EntryKind | None) -> list[str]:
    """What the canonical model means by a row's basis, and whether its numbers reconcile (the flags found).

    An expense the mapping gives no basis is billed per unit. A flat or fixed-template fee is one unit at its
    amount, as LEDES bills it. Otherwise units x rate must give the amount to the cent: when it does not, the
    export's amount stands (it is what the firm's system bills) and the entry is flagged ``AMOUNT_MISMATCH``.
    """
    if kind is EntryKind.EXPENSE and "fee_basis" not in record:
        record["fee_basis"] = FeeBasis.UNIT
    amount, rate = record.get("amount"), record.get("rate")
    if kind is EntryKind.TIME and record.get("fee_basis") in FLAT_BASES:
        record["quantity"] = Decimal(1)
        if amount is not None:
            record["rate"] = amount
        return []
    units = record.get("quantity")
    if units is None and kind is EntryKind.TIME:
        units = record.get("hours_billed")
    if units is None or rate is None or amount is None or record.get("no_charge"):
        return []
    return ["AMOUNT_MISMATCH"] if abs(units * rate - amount) > CENT else []
