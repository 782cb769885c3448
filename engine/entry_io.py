"""Reading and writing entries: canonical files (JSON lines, a JSON array, CSV with a header row), LEDES 1998B and
98BI invoices (known by their first line), and any spreadsheet export through a mapping (:mod:`engine.mapping`).

Canonical files are all or nothing: a bad record stops the read. A LEDES file or a mapped export is read row by
row: a row that cannot be an entry is reported and left out (:attr:`EntryRead.skipped`), the rest is read."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from engine.errors import Invalid
from engine.mapping import MappedRead, Mapping, UnreadableFile, ledes_entries, read_mapped
from engine.model import Entry

LIST_FIELDS = ("redacted_fields", "data_quality_flags")


class EntryFileError(Invalid):
    """Entries that could not be read; ``problems`` holds one ``file:line: what`` text per bad record."""

    code = "invalid_entries"

    def __init__(self, problems: list[str]):
        super().__init__(problems[0] if problems else "the entries could not be read", problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def _problems(file: str, line: int, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "entry"
        out.append(f"{file}:{line}: {where}: {err['msg']}")
    return out


MAX_DEPTH = 32  # of nested objects and arrays in one record (raw_payload is the only field that nests)


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (without recursion: the value may be hostile)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_DEPTH:
            break
    return deepest


def _build(record: Any, file: str, line: int, problems: list[str]) -> Entry | None:
    if not isinstance(record, dict):
        problems.append(f"{file}:{line}: expected an object with the entry's fields")
        return None
    if _depth(record) > MAX_DEPTH:
        problems.append(f"{file}:{line}: objects and arrays nest more than {MAX_DEPTH} levels deep")
        return None
    try:
        return Entry.model_validate(record)
    except ValidationError as exc:
        problems.extend(_problems(file, line, exc))
        return None


@dataclass(frozen=True)
class EntryRead:
    """A file's entries, the rows left out (each ``file:row: column: what``) and notes on what is not an entry."""

    entries: list[Entry]
    skipped: list[str] = field(default_factory=list)
    skipped_rows: int = 0
    notes: list[str] = field(default_factory=list)
    described: str = ""  # how the file was read ("LEDES 1998B", "CSV, UTF-8, delimiter ','"); empty if canonical


def read_file(path: str | Path, mapping: Mapping | None = None, max_problems: int = 50) -> EntryRead:
    """The entries of a file: through ``mapping`` (CSV or ``.xlsx``), else LEDES or canonical by its content.

    Raises :class:`EntryFileError` for a file that cannot be read, a bad record of a canonical file (up to
    ``max_problems``), or a LEDES file or mapped export none of whose rows could be read.
    """
    path = Path(path)
    try:
        if mapping is not None:
            read = read_mapped(path, mapping)
        elif _is_ledes(path):
            read = ledes_entries(path.read_bytes(), str(path))
        elif path.suffix.lower() in (".xlsx", ".xlsm"):
            raise EntryFileError([f"{path}: a workbook is read through a mapping that says which column is which "
                                  "field (--mapping; docs/mappings.md)"])
        else:
            return EntryRead(_canonical_entries(path, max_problems))
    except UnreadableFile as exc:
        raise EntryFileError(exc.problems) from None
    except OSError as exc:
        raise EntryFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return _lenient(read, str(path))


def read_entries(path: str | Path, mapping: Mapping | None = None, max_problems: int = 50) -> list[Entry]:
    """All entries of a file (see :func:`read_file`), or :class:`EntryFileError` if any row had to be left out."""
    read = read_file(path, mapping, max_problems)
    if read.skipped:
        raise EntryFileError(read.skipped)
    return read.entries


def _is_ledes(path: Path) -> bool:
    """Whether the file starts as a LEDES file does (its first line names the format: LEDES1998B[], ...)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(32).removeprefix(b"\xef\xbb\xbf")
    except OSError:
        return False
    return start.startswith(b"LEDES")


def _lenient(read: MappedRead, file: str) -> EntryRead:
    skipped = [str(problem) for problem in read.problems]
    if skipped and not read.entries:
        raise EntryFileError([*skipped[:50], f"{file}: none of its {read.rows} rows could be read"])
    return EntryRead(read.entries, skipped, read.skipped, read.notes, read.described)


def _canonical_entries(path: Path, max_problems: int) -> list[Entry]:
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EntryFileError([f"{file}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise EntryFileError([f"{file}:{line}:{column}: not UTF-8 text (byte {data[exc.start]:#04x})"]) from None
    problems: list[str] = []
    entries: list[Entry] = []
    for line, record in _records(text, path, problems):
        entry = _build(record, file, line, problems)
        if entry is not None:
            entries.append(entry)
        if len(problems) >= max_problems:
            problems.append(f"{file}: stopped after {max_problems} problems")
            break
    if problems:
        raise EntryFileError(problems)
    return entries


def _records(text: str, path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    stripped = text.lstrip()
    if suffix == ".csv":
        yield from _csv_records(text, path, problems)
    elif suffix == ".json" or (suffix not in (".jsonl", ".ndjson") and stripped.startswith("[")):
        yield from _json_array_records(text, path, problems)
    else:
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}:{exc.colno}: invalid JSON: {exc.msg}")
            except (RecursionError, ValueError) as exc:
                problems.append(f"{path}:{number}: {_unreadable(exc)}")


_DECODER = json.JSONDecoder(parse_float=Decimal)
_SPACE = re.compile(r"[\s,]*")


def _unreadable(exc: Exception) -> str:
    """What a JSON parse that failed outside the grammar ran into: nesting beyond the parser's stack, or an
    integer too long to convert."""
    if isinstance(exc, RecursionError):
        return f"invalid JSON: objects and arrays nest too deeply (at most {MAX_DEPTH} levels are read)"
    return "invalid JSON: a number is too long"


def _json_array_records(text: str, path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """The records of a JSON array (or one object), each with the line it starts on; a syntax error is added to
    ``problems`` with its line and column and ends the read."""
    start = _SPACE.match(text).end()
    position = start
    try:
        if not text.startswith("[", start):
            yield text.count("\n", 0, start) + 1, _DECODER.decode(text)
            return
        position = start + 1
        while True:
            position = _SPACE.match(text, position).end()
            if text.startswith("]", position):
                return
            record, end = _DECODER.raw_decode(text, position)
            yield text.count("\n", 0, position) + 1, record
            position = end
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
    except (RecursionError, ValueError) as exc:
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        problems.append(f"{path}:{line}:{column}: {_unreadable(exc)}")


def _csv_records(text: str, path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        line = reader.line_num
        record: dict[str, Any] = {}
        if None in row:
            problems.append(f"{path}:{line}: the row has {len(row[None])} more value(s) than the header "
                            "(quote values that contain commas)")
            continue
        for key, value in row.items():
            if value is None:
                continue
            key = key.strip()
            if key in LIST_FIELDS:
                record[key] = [v for v in value.split(";") if v]
            elif key == "raw_payload":
                try:
                    record[key] = json.loads(value, parse_float=Decimal) if value.strip() else None
                except json.JSONDecodeError as exc:
                    problems.append(f"{path}:{line}: raw_payload: invalid JSON: {exc.msg}")
                    record = {}
                    break
            elif value.strip() == "":
                continue
            else:
                record[key] = value
        if record:
            yield line, record


def entry_record(entry: Entry) -> dict[str, Any]:
    """A JSON-ready dict with decimals as strings (never floats) and unset fields left out."""
    return entry.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def write_jsonl(entries: Iterable[Entry], out: TextIO) -> int:
    count = 0
    for entry in entries:
        out.write(json.dumps(entry_record(entry), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count
