"""Loading a mapping: which column of a spreadsheet export is which canonical field, checked like a rule file.

1. YAML syntax (with the position of the error); 2. the JSON Schema (:func:`engine.mapping.schema.mapping_schema`);
3. meaning: the required fields are there, date formats read dates, tables exist and translate to values the
field takes, options fit the field. Every problem reads ``file:line:col: where: what``; nothing here raises a
traceback at a user. A mapping is named by its path, or by the name of one shipped with ocgate
(:func:`builtin_mappings`).
"""

from __future__ import annotations

import codecs
import datetime as dt
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path as FsPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

from engine.codes import utbms_codes
from engine.errors import Invalid
from engine.mapping.schema import (
    CHOICES,
    FIELD_KINDS,
    OPTION_KINDS,
    REQUIRED,
    SOURCES,
    UTBMS_KINDS,
    mapping_schema,
)
from engine.mapping.values import (
    DateFormats,
    Duration,
    NumberFormat,
    cell_text,
    format_problem,
    parse_bool,
    shown,
)
from engine.model import EntryKind
from engine.rules.yamlpos import Document, Path, Problem, YamlError, parse

DEFAULT_NUMBERS = NumberFormat(".", ",", ("$", "€", "£"))
DEFAULT_UNIT = {"hours": "hours", "duration": "seconds"}
_CACHE_LIMIT = 100_000  # distinct cell values remembered per field (dates, amounts and codes repeat)


class MappingError(Invalid):
    """A mapping that cannot be used; ``problems`` lists everything wrong with it, each with its position."""

    code = "invalid_mapping"

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(f"{p.line}:{p.column}: {p.message}" for p in problems[:5]), problems)
        self.problems: list[Problem] = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def details(self) -> list[dict[str, Any]]:
        return [{"line": p.line, "column": p.column, "where": p.where, "message": p.message} for p in self.problems]


class Unlisted(Exception):
    """A cell value that the field's translation table does not list (``unlisted: flag``)."""


@dataclass(frozen=True, eq=False)
class FieldRule:
    """How one canonical field gets its value from a row: a constant, one column, several joined, or a hash."""

    field: str
    kind: str
    columns: tuple[str, ...] = ()
    constant: Any = None
    hashed: bool = False
    join: str = " "
    only_for: EntryKind | None = None
    where: str = ""  # the field's position in the mapping, for problems found while reading a file
    convert: Callable[[object], Any] | None = None  # one cell to the value (None for a constant)

    @property
    def flag(self) -> str:
        """The data-quality flag of a value the field's table does not list."""
        return f"UNMAPPED_{self.field.upper()}"


@dataclass(frozen=True)
class Mapping:
    """A checked mapping: how to open the file and how each canonical field is filled from a row."""

    name: str
    title: str
    rules: tuple[FieldRule, ...]
    encoding: str = "auto"
    delimiter: str = "auto"
    sheet: str | None = None
    header_row: int = 1
    blank_rows: str = "skip"


def builtin_mappings() -> dict[str, str]:
    """The mappings shipped with ocgate: name -> title."""
    folder = resources.files("engine") / "data" / "mappings"
    return {item.name.removesuffix(".yaml"): str(yaml.safe_load(item.read_text(encoding="utf-8")).get("title", ""))
            for item in sorted(folder.iterdir(), key=lambda p: p.name) if item.name.endswith(".yaml")}


def load_mapping(name_or_path: str | FsPath) -> Mapping:
    """The mapping in a file, or the built-in of that name; :class:`MappingError` lists every problem."""
    path = FsPath(name_or_path)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise MappingError([Problem(str(path), 1, 1, "", f"cannot read the mapping: {exc}")]) from None
        return load_mapping_text(text, str(path))
    builtins = builtin_mappings()
    if str(name_or_path) in builtins:
        item = resources.files("engine") / "data" / "mappings" / f"{name_or_path}.yaml"
        return load_mapping_text(item.read_text(encoding="utf-8"), str(name_or_path))
    raise MappingError([Problem(str(path), 1, 1, "", f"no mapping file {str(path)!r} and no built-in mapping of "
                                                     f"that name (built-in: {', '.join(builtins)})")])


def load_mapping_text(text: str, file: str = "<mapping>") -> Mapping:
    try:
        doc = parse(text, file)
    except YamlError as exc:
        raise MappingError([exc.problem]) from None
    problems = _schema_problems(doc)
    if problems:
        raise MappingError(problems)
    mapping, problems = _Builder(doc).build()
    if problems:
        raise MappingError(sorted(set(problems), key=lambda p: (p.line, p.column, p.message)))
    return mapping


# Stage 2: the JSON Schema -----------------------------------------------------------------------------------

def _schema_problems(doc: Document) -> list[Problem]:
    if not isinstance(doc.data, dict):
        return [doc.problem((), "a mapping is a YAML mapping with fields: (and optionally file:, numbers:, "
                                "tables:)")]
    found: dict[tuple[Path, str], Problem] = {}
    for error in jsonschema.Draft202012Validator(mapping_schema()).iter_errors(doc.data):
        if error.validator == "oneOf" and error.context:
            meant = [e for e in error.context if _fits_type(error.validator_value[e.schema_path[0]], error.instance)]
            error = jsonschema.exceptions.best_match(meant or error.context) or error
        path, at_key, message = tuple(error.absolute_path), False, _friendly(error)
        if error.validator == "additionalProperties":
            extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
            path, at_key = (*path, extra[0]), True
        found.setdefault((path, message), doc.problem(path, message, key=at_key))
    return sorted(found.values(), key=lambda p: (p.line, p.column, p.message))


def _fits_type(branch: Any, instance: Any) -> bool:
    """Whether a oneOf branch is the one whose type matches what was written (a string, an object, a list)."""
    types = {"string": str, "object": dict, "array": list}
    expected = branch.get("type") if isinstance(branch, dict) else None
    return expected in types and isinstance(instance, types[expected])


def _friendly(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        known = list(error.schema.get("properties", {}))
        if tuple(error.absolute_path) == ("fields",):
            close = difflib.get_close_matches(extra[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (engine/model.py lists the fields)"
            return f"unknown canonical field {extra[0]!r}{hint}"
        return f"unknown key {extra[0]!r} (expected one of: {', '.join(known)})"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "enum":
        return f"{shown(error.instance)} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "minItems":
        return f"needs at least {error.validator_value} item(s)"
    if error.validator == "minProperties":
        return "is empty"
    if error.validator == "type":
        hint = " (YAML reads yes, no, on and off as true and false: quote it)" if isinstance(error.instance, bool) \
            else ""
        return f"{shown(error.instance)} is not of type {error.validator_value!r}{hint}"
    return error.message


# Stage 3: meaning ------------------------------------------------------------------------------------------

class _Builder:
    """Checks and compiles one parsed mapping, collecting every problem."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.problems: list[Problem] = []

    def report(self, path: Path, message: str, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key=key))

    def build(self) -> tuple[Mapping, list[Problem]]:
        options = self.data.get("file") or {}
        encoding = options.get("encoding", "auto")
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except LookupError:
                self.report(("file", "encoding"), f"unknown encoding {encoding!r} (for example utf-8, cp1252, "
                                                  "utf-16, or auto)")
        numbers = self.numbers(self.data.get("numbers"), ("numbers",), DEFAULT_NUMBERS)
        fields: dict[str, Any] = self.data["fields"]
        for name in REQUIRED:
            if name not in fields:
                self.report(("fields",), f"missing required field {name!r}: every entry needs one "
                                         "(a column, or a constant value)", key=True)
        rules = tuple(rule for name, spec in fields.items()
                      if (rule := self.rule(name, spec, numbers)) is not None)
        # entry_kind first: which fields apply to a row (only_for) depends on it.
        rules = tuple(sorted(rules, key=lambda rule: rule.field != "entry_kind"))
        mapping = Mapping(name=self.doc.file, title=self.data.get("title") or self.doc.file, rules=rules,
                          encoding=encoding, delimiter=options.get("delimiter", "auto"), sheet=options.get("sheet"),
                          header_row=options.get("header_row", 1), blank_rows=options.get("blank_rows", "skip"))
        return mapping, self.problems

    def numbers(self, spec: dict[str, Any] | None, path: Path, base: NumberFormat) -> NumberFormat:
        if not spec:
            return base
        decimal = spec.get("decimal", base.decimal)
        thousands = spec.get("thousands", "" if decimal == base.thousands else base.thousands)
        symbols = tuple(spec.get("currency_symbols", base.currency_symbols))
        if decimal == thousands:
            self.report((*path, "thousands"), f"the thousands separator cannot also be the decimal separator "
                                              f"{decimal!r}")
            thousands = ""
        for index, symbol in enumerate(symbols):
            if any(c.isdigit() or c in (decimal, thousands, "-", "(", ")") for c in symbol):
                self.report((*path, "currency_symbols", index), f"{symbol!r} cannot be a currency symbol: it has a "
                                                                 "digit, a sign or a separator")
        return NumberFormat(decimal, thousands, symbols)

    def rule(self, name: str, spec: str | dict[str, Any], numbers: NumberFormat) -> FieldRule | None:
        kind, path = FIELD_KINDS[name], ("fields", name)
        if isinstance(spec, str):
            spec = {"column": spec}
        sources = [key for key in SOURCES if key in spec]
        if len(sources) != 1:
            which = "give it one of" if not sources else "give only one of"
            self.report(path, f"{which}: {', '.join(SOURCES)}", key=True)
            return None
        for option in spec:
            if option in OPTION_KINDS and kind not in OPTION_KINDS[option]:
                self.report((*path, option), f"{option!r} does not apply to {name} (a {kind} field)", key=True)
                return None
        if name == "entry_kind" and "only_for" in spec:
            self.report((*path, "only_for"), "entry_kind decides only_for: it cannot depend on it", key=True)
        if "join" in spec and "columns" not in spec:
            self.report((*path, "join"), "join joins columns: list them under columns", key=True)
        if "unlisted" in spec and "translate" not in spec:
            self.report((*path, "unlisted"), "unlisted says what to do with values a translate table lacks: add "
                                             "translate", key=True)
        columns = [spec["column"]] if "column" in spec else list(spec.get("columns") or spec.get("hash") or ())
        for index, column in enumerate(columns):
            if column in columns[:index]:
                self.report((*path, sources[0], index), f"column {column!r} is listed twice")
        convert = self.converter(name, kind, spec, path, numbers)
        line, col = self.doc.position(path, key=True)
        where = f"{self.doc.file}:{line}:{col}"
        only_for = EntryKind(spec["only_for"]) if "only_for" in spec else None
        if "value" in spec:
            value = spec["value"]
            try:
                constant = convert(str(value) if kind in ("text", "code") and not isinstance(value, bool) else value)
            except Unlisted:
                self.report((*path, "value"), f"{shown(value)} is not in the translate table")
                return None
            except ValueError as exc:
                self.report((*path, "value"), str(exc))
                return None
            return FieldRule(name, kind, constant=constant, only_for=only_for, where=where)
        return FieldRule(name, kind, tuple(columns), hashed="hash" in spec, join=spec.get("join", " "),
                         only_for=only_for, where=where, convert=_cached(convert) if kind != "text" else convert)

    def converter(self, name: str, kind: str, spec: dict[str, Any], path: Path,
                  numbers: NumberFormat) -> Callable[[object], Any]:
        """The function from one cell to the field's value (raises ValueError, or Unlisted)."""
        numbers = self.numbers(spec.get("numbers"), (*path, "numbers"), numbers)
        if kind in ("date", "timestamp"):
            formats = spec.get("format", "%Y-%m-%d")
            formats = (formats,) if isinstance(formats, str) else tuple(formats)
            for index, fmt in enumerate(formats):
                problem = format_problem(fmt)
                if problem:
                    self.report((*path, "format", *((index,) if isinstance(spec.get("format"), list) else ())),
                                problem)
            dates = DateFormats(formats)
            if kind == "date":
                return dates.parse
            return _timestamp(dates, self.zone(spec.get("timezone"), (*path, "timezone")))
        if kind in ("hours", "duration"):
            unit = spec.get("unit", DEFAULT_UNIT[kind])
            if (unit == "units") != ("unit_minutes" in spec):
                self.report((*path, "unit"), "unit: units needs unit_minutes (the length of one unit, 6 in AU "
                                             "practice), and unit_minutes needs unit: units")
            duration = Duration(unit, spec.get("unit_minutes"), numbers)
            return duration.hours if kind == "hours" else duration.seconds
        if kind == "money":
            return numbers.parse
        plain = _choice(name) if kind == "choice" else parse_bool if kind == "yes/no" else _text
        if "translate" not in spec:
            return plain
        table = self.table(name, kind, spec["translate"], (*path, "translate"))
        return _translated(table, spec.get("unlisted", "flag"), plain)

    def table(self, name: str, kind: str, spec: str | dict[str, Any], path: Path) -> dict[str, Any]:
        if isinstance(spec, str):
            tables = self.data.get("tables") or {}
            if spec not in tables:
                known = ", ".join(tables) or "none defined"
                self.report(path, f"unknown table {spec!r} (tables: {known})")
                return {}
            spec, path = tables[spec], ("tables", spec)
        table: dict[str, Any] = {}
        for key, value in spec.items():
            if key in ("True", "False"):  # YAML turned an unquoted Yes, No, On or Off into a boolean
                self.report((*path, key), "YAML reads an unquoted yes, no, on or off as true or false: quote the "
                                          "key ('Yes': true)", key=True)
            folded = key.strip().casefold()
            if folded in table:
                self.report((*path, key), f"{key!r} is listed twice (keys match whatever their case)", key=True)
            problem = self.target_problem(name, kind, value)
            if problem:
                self.report((*path, key), problem)
            table[folded] = value
        return table

    def target_problem(self, name: str, kind: str, value: Any) -> str | None:
        """Why a translation target is not a value of the field (None when it is)."""
        if kind == "yes/no":
            return None if isinstance(value, bool) else f"{shown(value)} is not true or false"
        if isinstance(value, bool):
            return f"{value} is not a value of {name}"
        if kind == "choice" and value not in CHOICES[name]:
            return f"{value!r} is not one of {', '.join(CHOICES[name])}"
        if name in UTBMS_KINDS:
            known = utbms_codes().get(value.upper())
            wanted = UTBMS_KINDS[name]
            if known is not None and known.kind not in wanted:
                return f"{value} is a UTBMS {known.kind} code, not a{'n' if wanted[0][0] in 'ae' else ''} " \
                       f"{wanted[0]} code"
            if known is None and "task" not in wanted:
                return f"{value!r} is not a UTBMS {wanted[0]} code"
        return None

    def zone(self, name: str | None, path: Path) -> ZoneInfo | None:
        if name is None:
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.report(path, f"unknown time zone {name!r} (an IANA name such as Australia/Sydney)")
            return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else cell_text(value)
    return text or None


def _choice(name: str) -> Callable[[object], str | None]:
    choices = {choice.casefold(): choice for choice in CHOICES[name]}

    def choose(value: object) -> str | None:
        text = _text(value)
        if text is None:
            return None
        found = choices.get(text.casefold())
        if found is None:
            raise ValueError(f"{shown(text)} is not one of {', '.join(CHOICES[name])} (translate it)")
        return found

    return choose


def _translated(table: dict[str, Any], unlisted: str, plain: Callable[[object], Any]) -> Callable[[object], Any]:
    def translate(value: object) -> Any:
        text = _text(value)
        if text is None:
            return None
        found = table.get(text.casefold(), table)
        if found is not table:
            return found
        if unlisted == "keep":
            return plain(value)
        if unlisted == "flag":
            raise Unlisted(text)
        raise ValueError(f"{shown(text)} is not in the translate table")

    return translate


def _timestamp(dates: DateFormats, zone: ZoneInfo | None) -> Callable[[object], dt.datetime | None]:
    def moment(value: object) -> dt.datetime | None:
        parsed = dates.parse_moment(value)
        if parsed is None:
            return None
        if not isinstance(parsed, dt.datetime):
            parsed = dt.datetime.combine(parsed, dt.time())
        if parsed.tzinfo is None:
            if zone is None:
                raise ValueError(f"{shown(value)} has no UTC offset: give the field a timezone")
            parsed = parsed.replace(tzinfo=zone)
        return parsed.astimezone(dt.UTC)

    return moment


def _cached(convert: Callable[[object], Any]) -> Callable[[object], Any]:
    """``convert`` remembering each distinct cell's value, or the message of its problem."""
    seen: dict[str, tuple[Any, str | None, bool]] = {}

    def read(value: object) -> Any:
        if type(value) is not str:  # typed .xlsx cells: cheap to convert, and 1 == 1.0 == True as keys
            return convert(value)
        try:
            result, problem, unlisted = seen[value]
        except KeyError:
            result, problem, unlisted = None, None, False
            try:
                result = convert(value)
            except Unlisted:
                unlisted = True
            except ValueError as exc:
                problem = str(exc)
            if len(seen) >= _CACHE_LIMIT:
                seen.clear()
            seen[value] = (result, problem, unlisted)
        if unlisted:
            raise Unlisted(value)
        if problem is not None:
            raise ValueError(problem)
        return result

    return read
