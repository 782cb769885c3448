"""Reading and writing canonical entries: JSON lines, a JSON array, or CSV with a header row."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from engine.errors import Invalid
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


def _build(record: Any, file: str, line: int, problems: list[str]) -> Entry | None:
    if not isinstance(record, dict):
        problems.append(f"{file}:{line}: expected an object with the entry's fields")
        return None
    try:
        return Entry.model_validate(record)
    except ValidationError as exc:
        problems.extend(_problems(file, line, exc))
        return None


def read_entries(path: str | Path, max_problems: int = 50) -> list[Entry]:
    """All entries of a file; every bad record is reported (up to ``max_problems``), none is dropped silently."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EntryFileError([f"{file}: cannot read: {exc}"]) from None
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
        try:
            yield from _json_array_records(text)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
    else:
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}:{exc.colno}: invalid JSON: {exc.msg}")


_DECODER = json.JSONDecoder(parse_float=Decimal)
_SPACE = re.compile(r"[\s,]*")


def _json_array_records(text: str) -> Iterator[tuple[int, Any]]:
    """The records of a JSON array (or one object), each with the line it starts on."""
    start = _SPACE.match(text).end()
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
