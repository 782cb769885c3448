"""The firm's timekeeper table: what no practice-management system knows and e-billing portals match exactly.

Per timekeeper: the LEDES timekeeper id, the name, the LEDES classification (or the firm's title mapped to
one), the user id in each source system, and standard hourly rates with effective dates. Firm IT keeps it as
a CSV file (``import_csv``, format in ``docs/timekeepers.md``). Connectors load a :class:`Directory` once per
sync and enrich each canonical entry with it: the timekeeper's LEDES identity and the standard rate in force on
the work date, and a data-quality flag for what the table cannot answer.

Import semantics. Rows are grouped by ``ledes_id``; a timekeeper's rows may each carry a source id, a rate,
or both, and blank identity cells inherit from the timekeeper's other rows. The file is the whole truth about
each timekeeper it lists: their source ids and rates are replaced by the file's (those missing from it are
removed and counted). Timekeepers the file does not list are left alone. One bad row and nothing is imported.

Rate periods. ``effective_from`` is required and ``effective_to`` (inclusive) optional: a rate without one is in
force until the timekeeper's next rate in that currency starts, or indefinitely. Periods of one timekeeper and
currency may leave gaps but never overlap.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from engine.codes import LEGACY_CLASSIFICATIONS, timekeeper_classifications
from engine.errors import Invalid, NotFound
from engine.ledes.checks import MAX_ID
from engine.ledes.profile import MODERN_CODES
from engine.model import Entry, EntryKind
from engine.store.models import Timekeeper, TimekeeperRate, TimekeeperSourceId

COLUMNS = ("ledes_id", "first_name", "last_name", "title", "classification", "source_system", "source_user_id",
           "rate", "currency", "effective_from", "effective_to")
IDENTITY = ("first_name", "last_name", "title", "classification")
RATE_COLUMNS = ("rate", "currency", "effective_from", "effective_to")

# Data-quality flags the enrichment raises (and recomputes each time it runs on an entry).
UNKNOWN_TIMEKEEPER = "UNKNOWN_TIMEKEEPER"  # the source user is not in the table (or a time entry names none)
NO_STANDARD_RATE = "NO_STANDARD_RATE"  # the timekeeper has standard rates, but none in force then, in that currency
AMBIGUOUS_RATE_CURRENCY = "AMBIGUOUS_RATE_CURRENCY"  # no entry currency, and rates in several are in force
FLAGS = frozenset({UNKNOWN_TIMEKEEPER, NO_STANDARD_RATE, AMBIGUOUS_RATE_CURRENCY})

# The firm's own titles, as HR and practice-management systems write them, and the LEDES 2014 classification
# each means. Matched without regard to case or spacing; the ``classification`` column overrides.
TITLE_CLASSIFICATIONS = {
    **dict.fromkeys(("partner", "senior partner", "managing partner", "equity partner", "non-equity partner",
                     "income partner", "salaried partner"), "PARTNR"),
    **dict.fromkeys(("of counsel", "counsel", "senior counsel", "special counsel"), "OFCOUN"),
    **dict.fromkeys(("associate", "junior associate", "senior associate", "associate attorney"), "ASSOC"),
    "staff attorney": "STFATT",
    "contract attorney": "TEMPAT",
    "trainee solicitor": "TRANEE",
    **dict.fromkeys(("paralegal", "senior paralegal"), "PARALG"),
    "legal assistant": "LGLAST",
    **dict.fromkeys(("summer associate", "legal intern"), "LGLINT"),
    "legal project manager": "LGPRMG",
    "librarian": "LIBRRN",
}

_LEDES_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
_SOURCE_SYSTEM = re.compile(r"[a-z0-9][a-z0-9_-]*", re.ASCII)
_RATE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,4})?", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_BAD_TEXT = re.compile(r"[|\x00-\x1f\x7f]|\[\]")  # what no LEDES field may hold


# What the table holds ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, order=True)
class SourceId:
    """A timekeeper's user id in one source system (Clio's user id, mattero's staff contact id, ...)."""

    source_system: str
    source_user_id: str


@dataclass(frozen=True, slots=True, order=True)
class Rate:
    """A standard hourly rate, in force from ``effective_from`` to ``effective_to`` (inclusive; None: until the
    next rate in the currency starts)."""

    currency: str
    effective_from: dt.date
    effective_to: dt.date | None
    rate: Decimal


@dataclass(frozen=True)
class TimekeeperRecord:
    """One timekeeper as the table holds it, with their source ids and rates (sorted)."""

    ledes_id: str
    name: str  # "Last, First", as LEDES 1998B writes TIMEKEEPER_NAME
    first_name: str | None
    last_name: str | None
    classification: str | None  # LEDES 2014 code
    title: str | None  # the firm's own title, as imported
    source_ids: tuple[SourceId, ...] = ()
    rates: tuple[Rate, ...] = ()
    updated_at: dt.datetime | None = None


@dataclass
class ImportResult:
    """What an import changed, by LEDES id."""

    created: list[str] = field(default_factory=list)  # LEDES ids of timekeepers new to the table
    updated: list[str] = field(default_factory=list)  # whose name, classification, source ids or rates changed
    unchanged: int = 0
    rates_removed: int = 0  # rates of listed timekeepers that the file no longer has
    source_ids_removed: int = 0


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a timekeeper file: the line, the column and what."""

    file: str
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.column}: {self.message}"


class TimekeeperFileError(Invalid):
    """A timekeeper file that cannot be imported; nothing of it was. ``problems`` lists every problem found."""

    code = "invalid_timekeepers"

    def __init__(self, problems: list[Problem]):
        count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
        super().__init__(f"{problems[0].file}: {count}; nothing was imported", problems)
        self.problems: list[Problem] = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def details(self) -> list[dict[str, Any]]:
        return [{"line": p.line, "column": p.column, "message": p.message} for p in self.problems[:200]]


# Reading a file ------------------------------------------------------------------------------------------

@dataclass
class _Draft:
    """A timekeeper as the file's rows describe it, with the line each value came from."""

    ledes_id: str
    line: int
    identity: dict[str, tuple[str, int]] = field(default_factory=dict)
    source_ids: dict[SourceId, int] = field(default_factory=dict)
    rates: dict[tuple[str, dt.date], tuple[Rate, int]] = field(default_factory=dict)


class _Reader:
    """Validates rows cell by cell and merges them into drafts, collecting every problem with its position."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []
        self.drafts: dict[str, _Draft] = {}
        self.claimed: dict[SourceId, tuple[str, int]] = {}  # source id -> (ledes id, line)

    def problem(self, line: int, column: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, column, message))

    def rows(self, text_or_rows: str | Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, dict[str, str]]]:
        """The file's rows as ``(line, {column: stripped text})``; blank rows are skipped."""
        if isinstance(text_or_rows, str):
            yield from self._csv_rows(text_or_rows)
            return
        for number, row in enumerate(text_or_rows, 2):  # numbered as in a CSV file under its header
            cells = {str(key).strip().lower(): value for key, value in row.items() if value is not None}
            bad = len(self.problems)
            for column, value in cells.items():
                if column not in COLUMNS:
                    self.problem(number, column, f"unknown column (the columns are {', '.join(COLUMNS)})")
                elif isinstance(value, float):
                    self.problem(number, column, "a float is not exact: pass the value as text or a Decimal")
            if len(self.problems) == bad and any(str(value).strip() for value in cells.values()):
                yield number, {column: str(value).strip() for column, value in cells.items()}

    def _csv_rows(self, text: str) -> Iterator[tuple[int, dict[str, str]]]:
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            for i, name in enumerate(header):
                if name not in COLUMNS:
                    self.problem(1, "header", f"unknown column {name!r} (the columns are {', '.join(COLUMNS)})")
                elif name in header[:i]:
                    self.problem(1, "header", f"column {name!r} appears twice")
            if "ledes_id" not in header:
                self.problem(1, "header", "the header row needs a ledes_id column (the columns are "
                             f"{', '.join(COLUMNS)})")
            if self.problems:
                return
            for values in reader:
                if len(values) > len(header):
                    self.problem(reader.line_num, "row", f"{len(values) - len(header)} more value(s) than the "
                                 "header (quote values that contain commas)")
                    continue
                cells = {name: value.strip() for name, value in zip(header, values, strict=False)}
                if any(cells.values()):
                    yield reader.line_num, cells
        except csv.Error as exc:
            self.problem(reader.line_num, "row", f"cannot read the CSV: {exc}")

    def read(self, line: int, cells: dict[str, str]) -> None:
        """One row into its timekeeper's draft."""
        ledes_id = cells.get("ledes_id", "")
        if not ledes_id:
            self.problem(line, "ledes_id", "missing (every row names its timekeeper's LEDES id)")
            return
        if len(ledes_id) > MAX_ID or not _LEDES_ID.fullmatch(ledes_id):
            self.problem(line, "ledes_id", f"{ledes_id!r} is not a LEDES timekeeper id (letters, digits, '.', '-' "
                         f"and '_', at most {MAX_ID} characters)")
            return
        draft = self.drafts.setdefault(ledes_id, _Draft(ledes_id, line))
        for column in IDENTITY:
            value = cells.get(column, "")
            if not value:
                continue
            if column == "classification":
                value = value.upper()
            elif _BAD_TEXT.search(value) or len(value) > 100:
                self.problem(line, column, "at most 100 characters, without '|', '[]' or control characters")
            known = draft.identity.get(column)
            if known is None:
                draft.identity[column] = (value, line)
            elif known[0] != value:
                self.problem(line, column, f"{value!r} differs from {known[0]!r} on line {known[1]} (a "
                             "timekeeper's rows must agree)")
        self._source_id(draft, line, cells)
        self._rate(draft, line, cells)

    def _source_id(self, draft: _Draft, line: int, cells: dict[str, str]) -> None:
        system, user = cells.get("source_system", "").lower(), cells.get("source_user_id", "")
        if not system and not user:
            return
        if not system or not user:
            missing = "source_system" if not system else "source_user_id"
            self.problem(line, missing, "missing (a source id is a source system and the user id in it)")
            return
        if len(system) > 40 or not _SOURCE_SYSTEM.fullmatch(system):
            self.problem(line, "source_system", f"{system!r} is not a source system name (such as clio, mattero)")
            return
        if len(user) > 120:
            self.problem(line, "source_user_id", "longer than 120 characters")
            return
        source_id = SourceId(system, user)
        owner = self.claimed.setdefault(source_id, (draft.ledes_id, line))
        if owner[0] != draft.ledes_id:
            self.problem(line, "source_user_id", f"{system} user {user} is already {owner[0]}'s (line {owner[1]}); "
                         "a source user is one timekeeper")
            return
        draft.source_ids.setdefault(source_id, line)

    def _rate(self, draft: _Draft, line: int, cells: dict[str, str]) -> None:
        if not any(cells.get(c) for c in RATE_COLUMNS):
            return
        text, currency = cells.get("rate", ""), cells.get("currency", "").upper()
        bad = len(self.problems)
        if not text:
            self.problem(line, "rate", "missing (currency and effective dates belong to a rate)")
        elif not _RATE.fullmatch(text) or Decimal(text) <= 0:
            self.problem(line, "rate", f"{text!r} is not a standard rate: a positive amount such as 1050.00, "
                         "at most 4 decimals, no currency sign or thousands separator")
        if not _CURRENCY.fullmatch(currency):
            self.problem(line, "currency", f"{currency!r} is not an ISO 4217 currency code (such as USD)"
                         if currency else "missing (every rate has a currency; none is assumed)")
        start = self._date(line, "effective_from", cells.get("effective_from", ""), required=True)
        end = self._date(line, "effective_to", cells.get("effective_to", ""), required=False)
        if start and end and end < start:
            self.problem(line, "effective_to", f"{end} is before effective_from {start}")
        if len(self.problems) > bad or start is None:
            return
        rate = Rate(currency, start, end, Decimal(text))
        known = draft.rates.setdefault((currency, start), (rate, line))
        if known[0] != rate:
            until = f"to {known[0].effective_to}" if known[0].effective_to else "open-ended"
            self.problem(line, "effective_from", f"a second {currency} rate from {start} (line {known[1]} has "
                         f"{known[0].rate}, {until})")

    def _date(self, line: int, column: str, text: str, *, required: bool) -> dt.date | None:
        if not text:
            if required:
                self.problem(line, column, "missing (the first day the rate is in force)")
            return None
        try:
            if _DATE.fullmatch(text):
                return dt.date.fromisoformat(text)
        except ValueError:
            pass
        self.problem(line, column, f"{text!r} is not a date: write YYYY-MM-DD")
        return None

    def record(self, draft: _Draft) -> TimekeeperRecord:
        """The draft as a record, checking what only the whole timekeeper shows: names, classification, overlaps."""
        identity = {column: value for column, (value, _line) in draft.identity.items()}
        for column in ("first_name", "last_name"):
            if column not in identity:
                self.problem(draft.line, column, f"missing for {draft.ledes_id} (LEDES invoices carry both names)")
        classification = self._classification(draft)
        rates = sorted(rate for rate, _line in draft.rates.values())
        line = {(rate.currency, rate.effective_from): n for rate, n in draft.rates.values()}
        for i, rate in enumerate(rates):
            for later in rates[i + 1:]:  # sorted: only an explicit end can reach the next start, or further
                if (later.currency != rate.currency or rate.effective_to is None
                        or later.effective_from > rate.effective_to):
                    break
                self.problem(line[rate.currency, rate.effective_from], "effective_to",
                             f"{rate.effective_to} overlaps the {later.currency} rate from {later.effective_from} on "
                             f"line {line[later.currency, later.effective_from]} (periods of one currency may not "
                             "overlap)")
        first, last = identity.get("first_name"), identity.get("last_name")
        return TimekeeperRecord(ledes_id=draft.ledes_id, name=f"{last}, {first}", first_name=first, last_name=last,
                                classification=classification, title=identity.get("title"),
                                source_ids=tuple(sorted(draft.source_ids)), rates=tuple(rates))

    def _classification(self, draft: _Draft) -> str | None:
        given, title = draft.identity.get("classification"), draft.identity.get("title")
        if given is not None:
            code, line = given
            if code in timekeeper_classifications():
                return code
            if code in LEGACY_CLASSIFICATIONS:
                modern = MODERN_CODES.get(code)
                self.problem(line, "classification", f"{code} is a pre-2014 code: write the 2014 code"
                             f"{f' ({modern})' if modern else ''}; clients that want legacy codes get them from "
                             "their invoicing profile")
            else:
                self.problem(line, "classification", f"{code!r} is not a LEDES timekeeper classification")
            return None
        if title is None:
            self.problem(draft.line, "classification", f"missing for {draft.ledes_id}: give a classification or "
                         "a title that maps to one")
            return None
        code = TITLE_CLASSIFICATIONS.get(" ".join(title[0].split()).casefold())
        if code is None:
            self.problem(title[1], "title", f"{title[0]!r} has no default classification: fill in the "
                         "classification column")
        return code


def read_csv(text_or_rows: str | Iterable[Mapping[str, Any]], *, source: str = "<upload>") -> list[TimekeeperRecord]:
    """The timekeepers a file describes, validated; raises :class:`TimekeeperFileError` with every problem.

    ``text_or_rows`` is CSV text with a header row, or rows as mappings from column to value (numbered as the
    lines of such a file, the first row line 2).
    """
    return _read(text_or_rows, source)[0]


def _read(text_or_rows: str | Iterable[Mapping[str, Any]],
          source: str) -> tuple[list[TimekeeperRecord], dict[SourceId, tuple[str, int]]]:
    """The records, and each source id's timekeeper and line."""
    reader = _Reader(source)
    for line, cells in reader.rows(text_or_rows):
        reader.read(line, cells)
    records = [reader.record(draft) for draft in reader.drafts.values()]
    if reader.problems:
        raise TimekeeperFileError(sorted(reader.problems, key=lambda p: p.line))
    return records, reader.claimed


# The store -----------------------------------------------------------------------------------------------

@dataclass
class _Stored:
    row: Timekeeper
    source_ids: list[TimekeeperSourceId] = field(default_factory=list)
    rates: list[TimekeeperRate] = field(default_factory=list)

    def record(self) -> TimekeeperRecord:
        tk = self.row
        return TimekeeperRecord(
            ledes_id=tk.ledes_id, name=tk.name, first_name=tk.first_name, last_name=tk.last_name,
            classification=tk.classification, title=tk.title, updated_at=tk.updated_at,
            source_ids=tuple(sorted(SourceId(s.source_system, s.source_user_id) for s in self.source_ids)),
            rates=tuple(sorted(Rate(r.currency, r.effective_from, r.effective_to, r.rate) for r in self.rates)))


def _stored(session: Session, ledes_id: str | None = None) -> dict[str, _Stored]:
    """Timekeepers with their source ids and rates, by LEDES id: three queries."""
    ids: Select[tuple[int]] = select(Timekeeper.id)
    query = select(Timekeeper).order_by(Timekeeper.ledes_id)
    if ledes_id is not None:
        ids, query = ids.where(Timekeeper.ledes_id == ledes_id), query.where(Timekeeper.ledes_id == ledes_id)
    found = {tk.id: _Stored(tk) for tk in session.scalars(query)}
    for source_id in session.scalars(select(TimekeeperSourceId).where(TimekeeperSourceId.timekeeper_id.in_(ids))):
        if source_id.timekeeper_id in found:  # not of a timekeeper committed since the first query
            found[source_id.timekeeper_id].source_ids.append(source_id)
    for rate in session.scalars(select(TimekeeperRate).where(TimekeeperRate.timekeeper_id.in_(ids))):
        if rate.timekeeper_id in found:
            found[rate.timekeeper_id].rates.append(rate)
    return {stored.row.ledes_id: stored for stored in found.values()}


def timekeepers(session: Session) -> list[TimekeeperRecord]:
    """The whole table, by LEDES id."""
    return [stored.record() for stored in _stored(session).values()]


def get(session: Session, ledes_id: str) -> TimekeeperRecord:
    found = _stored(session, ledes_id).get(ledes_id)
    if found is None:
        raise NotFound(f"no timekeeper with LEDES id {ledes_id}")
    return found.record()


def source_systems(session: Session) -> list[str]:
    """The source systems the table has user ids in (clio, mattero, ...), sorted."""
    return list(session.scalars(select(TimekeeperSourceId.source_system).distinct()
                                .order_by(TimekeeperSourceId.source_system)))


# The rates in force on a day (what a rate freeze names) -------------------------------------------------

@dataclass(frozen=True, slots=True)
class RateOn:
    """One timekeeper's standard rate in force on a day, with the first and last day of its period (``until``
    None: open-ended); or, when there is none to give, why (``missing``)."""

    ledes_id: str
    name: str | None  # None: the LEDES id is not in the table
    rate: Decimal | None = None
    currency: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    missing: str | None = None
    in_force: tuple[str, ...] = ()  # when ``missing``: the currencies they have a rate in force in that day


def rates_on(session: Session, day: dt.date, *, currency: str | None = None, source_system: str | None = None,
             ledes_ids: Iterable[str] | None = None) -> list[RateOn]:
    """Each timekeeper's standard rate in force on ``day``, by LEDES id, as the enrichment of an entry worked
    on that day would find it: in ``currency``, or (None) in the one currency they have a rate in force in.

    ``source_system`` keeps the timekeepers with a user id in that system, ``ledes_ids`` the timekeepers
    named (in the order given). Every timekeeper asked about is answered, with a rate or with why there is
    none: not in the table, no user id in the source system, no standard rate kept, none in force that day,
    one in force only in other currencies, or in several currencies.
    """
    stored = _stored(session)
    system = source_system.lower() if source_system is not None else None
    wanted = list(dict.fromkeys(ledes_ids)) if ledes_ids is not None else None
    out: list[RateOn] = []
    for ledes_id in wanted if wanted is not None else stored:
        found = stored.get(ledes_id)
        if found is None:
            out.append(RateOn(ledes_id, None, missing="not in the timekeeper table"))
            continue
        tk = found.record()
        if system is not None and all(s.source_system != system for s in tk.source_ids):
            if wanted is not None:
                out.append(RateOn(ledes_id, tk.name, missing=f"has no {system} user id in the table"))
            continue
        out.append(_rate_on(tk, day, currency))
    return out


def _rate_on(tk: TimekeeperRecord, day: dt.date, currency: str | None) -> RateOn:
    if not tk.rates:
        return RateOn(tk.ledes_id, tk.name, missing="the table keeps no standard rate for them")
    in_force: dict[str, tuple[Rate, dt.date | None]] = {}
    ended: dict[str, dt.date] = {}  # by currency: the last day of the latest period over before ``day``
    starting: dict[str, dt.date] = {}  # by currency: the first day of the earliest period after ``day``
    for rate, following in zip(tk.rates, (*tk.rates[1:], None), strict=True):  # sorted by currency, then start
        if rate.effective_from > day:
            starting.setdefault(rate.currency, rate.effective_from)
            continue
        until = rate.effective_to
        if until is None and following is not None and following.currency == rate.currency:
            until = following.effective_from - dt.timedelta(days=1)  # an open rate runs until the next starts
        if until is None or day <= until:
            in_force[rate.currency] = (rate, until)
        else:
            ended[rate.currency] = until
    chosen = [currency] if currency is not None else list(in_force)
    if len(chosen) == 1 and chosen[0] in in_force:
        rate, until = in_force[chosen[0]]
        return RateOn(tk.ledes_id, tk.name, rate.rate, rate.currency, rate.effective_from, until)
    listed = ", ".join(f"{c} {rate.rate}" for c, (rate, _until) in in_force.items())
    if currency is None and in_force:
        why = f"rates in force in {len(in_force)} currencies ({listed})"
    elif currency is not None and in_force:
        why = f"no {currency} rate in force on {day}; in force: {listed}"
    elif currency is not None and all(rate.currency != currency for rate in tk.rates):
        why = f"the table keeps no {currency} rate for them"
    else:
        pool = [currency] if currency is not None else list(ended.keys() | starting.keys())
        last = max((ended[c] for c in pool if c in ended), default=None)
        first = min((starting[c] for c in pool if c in starting), default=None)
        hint = "; ".join(([f"the last ended {last}"] if last else []) + ([f"the next starts {first}"] if first else []))
        which = f"{currency} " if currency is not None else ""
        why = f"no {which}rate in force on {day}" + (f" ({hint})" if hint else "")
    return RateOn(tk.ledes_id, tk.name, currency=currency, missing=why, in_force=tuple(in_force))


def import_csv(session: Session, text_or_rows: str | Iterable[Mapping[str, Any]], *,
               source: str = "<upload>") -> ImportResult:
    """Upsert the timekeepers of a file (see the module's docstring for what is replaced). All or nothing: a file
    with any problem raises :class:`TimekeeperFileError` and changes nothing; the same file twice changes nothing
    the second time."""
    records, claimed = _read(text_or_rows, source)
    stored = _stored(session)
    listed = {record.ledes_id for record in records}
    owners = {SourceId(s.source_system, s.source_user_id): (s, ledes_id)
              for ledes_id, found in stored.items() for s in found.source_ids}
    wanted = {source_id: ledes_id for source_id, (ledes_id, _line) in claimed.items()}
    taken = [Problem(source, line, "source_user_id",
                     f"{source_id.source_system} user {source_id.source_user_id} is {owner}'s in the table, and "
                     f"this file does not list {owner}: list {owner} without it to move it to {ledes_id}")
             for source_id, (ledes_id, line) in claimed.items()
             if source_id in owners and (owner := owners[source_id][1]) not in listed]
    if taken:
        raise TimekeeperFileError(taken)

    created = listed - stored.keys()
    touched: set[str] = set()  # LEDES ids of the timekeepers something changed for
    for record in records:
        if record.ledes_id in created:
            stored[record.ledes_id] = _Stored(Timekeeper(ledes_id=record.ledes_id))
            session.add(stored[record.ledes_id].row)
        if _set_identity(stored[record.ledes_id].row, record):
            touched.add(record.ledes_id)
    session.flush()  # new timekeepers get their ids
    result = ImportResult()
    for record in records:
        if _set_rates(session, stored[record.ledes_id], record.rates, result):
            touched.add(record.ledes_id)
    # A source id may move between two listed timekeepers: its row is reassigned, never deleted and added again.
    for source_id, ledes_id in wanted.items():
        row, before = owners.get(source_id, (None, None))
        if row is None:
            session.add(TimekeeperSourceId(timekeeper_id=stored[ledes_id].row.id, source_system=source_id.source_system,
                                           source_user_id=source_id.source_user_id))
            touched.add(ledes_id)
        elif before != ledes_id:
            row.timekeeper_id = stored[ledes_id].row.id
            touched.update((ledes_id, before))
    for source_id, (row, ledes_id) in owners.items():
        if ledes_id in listed and source_id not in wanted:
            session.delete(row)
            result.source_ids_removed += 1
            touched.add(ledes_id)

    now = dt.datetime.now(dt.UTC)
    for record in records:
        if record.ledes_id in created:
            result.created.append(record.ledes_id)
        elif record.ledes_id in touched:
            result.updated.append(record.ledes_id)
        else:
            result.unchanged += 1
        if record.ledes_id in touched:
            stored[record.ledes_id].row.updated_at = now
    session.flush()
    return result


def _set_identity(row: Timekeeper, record: TimekeeperRecord) -> bool:
    changed = False
    for name in ("name", "first_name", "last_name", "classification", "title"):
        if getattr(row, name) != getattr(record, name):
            setattr(row, name, getattr(record, name))
            changed = True
    return changed


def _set_rates(session: Session, found: _Stored, rates: tuple[Rate, ...], result: ImportResult) -> bool:
    """Make the timekeeper's stored rates the file's: matched on currency and start, updated in place."""
    existing = {(r.currency, r.effective_from): r for r in found.rates}
    changed = False
    for rate in rates:
        row = existing.pop((rate.currency, rate.effective_from), None)
        if row is None:
            session.add(TimekeeperRate(timekeeper_id=found.row.id, currency=rate.currency, rate=rate.rate,
                                       effective_from=rate.effective_from, effective_to=rate.effective_to))
            changed = True
        elif str(row.rate) != str(rate.rate) or row.effective_to != rate.effective_to:
            row.rate, row.effective_to = rate.rate, rate.effective_to
            changed = True
    for row in existing.values():
        session.delete(row)
        result.rates_removed += 1
        changed = True
    return changed


# The lookup connectors use -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Match:
    """A source user resolved: who they are in LEDES terms, and their standard rate on a date."""

    ledes_id: str
    name: str
    first_name: str | None
    last_name: str | None
    classification: str | None
    standard_rate: Decimal | None  # in force on the work date, in ``currency``
    currency: str | None
    rate_flag: str | None  # NO_STANDARD_RATE or AMBIGUOUS_RATE_CURRENCY when a kept rate could not be found


_Periods = tuple[list[dt.date], list[tuple[dt.date | None, Decimal]]]  # sorted starts (to bisect); each end and rate


class _Known:
    """One timekeeper in a directory: the first five fields of their :class:`Match`, and their rate periods by
    currency."""

    __slots__ = ("identity", "rates")

    def __init__(self, identity: tuple[str, str, str | None, str | None, str | None]):
        self.identity = identity
        self.rates: dict[str, _Periods] = {}

    def rate_on(self, day: dt.date, currency: str | None) -> tuple[Decimal | None, str | None, str | None]:
        """The rate in force on ``day``, its currency, and the flag when a rate is kept but none answers."""
        if not self.rates:
            return None, None, None  # the firm keeps no standard rate for this timekeeper: nothing to flag
        if currency is not None:
            periods = self.rates.get(currency)
            rate = _in_force(periods, day) if periods else None
            return rate, currency, None if rate is not None else NO_STANDARD_RATE
        in_force = [(c, r) for c, periods in self.rates.items() if (r := _in_force(periods, day)) is not None]
        if len(in_force) == 1:
            return in_force[0][1], in_force[0][0], None
        return None, None, AMBIGUOUS_RATE_CURRENCY if in_force else NO_STANDARD_RATE


def _in_force(periods: _Periods, day: dt.date) -> Decimal | None:
    starts, end_rates = periods
    i = bisect_right(starts, day) - 1
    if i < 0:
        return None
    end, rate = end_rates[i]
    return rate if end is None or day <= end else None


class Directory:
    """The timekeepers of one source system, loaded once per sync or batch, to resolve its user ids."""

    def __init__(self, source_system: str, by_user: dict[str, _Known]):
        self.source_system = source_system
        self._known = by_user
        self._resolved: dict[tuple[str, dt.date, str | None], Match | None] = {}  # a batch repeats these

    def __len__(self) -> int:
        return len(self._known)

    @classmethod
    def load(cls, session: Session, source_system: str) -> Directory:
        """The directory of one source system's users: two queries, whatever the size of the table."""
        source_system = source_system.lower()
        users = select(TimekeeperSourceId.timekeeper_id).where(TimekeeperSourceId.source_system == source_system)
        known: dict[int, _Known] = {}
        by_user: dict[str, _Known] = {}
        for user, tk_id, ledes_id, name, first, last, classification in session.execute(
                select(TimekeeperSourceId.source_user_id, Timekeeper.id, Timekeeper.ledes_id, Timekeeper.name,
                       Timekeeper.first_name, Timekeeper.last_name, Timekeeper.classification)
                .join(Timekeeper, Timekeeper.id == TimekeeperSourceId.timekeeper_id)
                .where(TimekeeperSourceId.source_system == source_system)):
            by_user[user] = known.setdefault(tk_id, _Known((ledes_id, name, first, last, classification)))
        for tk_id, currency, start, end, rate in session.execute(
                select(TimekeeperRate.timekeeper_id, TimekeeperRate.currency, TimekeeperRate.effective_from,
                       TimekeeperRate.effective_to, TimekeeperRate.rate)
                .where(TimekeeperRate.timekeeper_id.in_(users))
                .order_by(TimekeeperRate.timekeeper_id, TimekeeperRate.currency, TimekeeperRate.effective_from)):
            if tk_id in known:  # not of a timekeeper given this source id since the first query
                starts, end_rates = known[tk_id].rates.setdefault(currency, ([], []))
                starts.append(start)
                end_rates.append((end, rate))
        return cls(source_system, by_user)

    def resolve(self, source_user_id: str, work_date: dt.date, currency: str | None) -> Match | None:
        """Who the source user is, and their standard rate on ``work_date`` (in ``currency``; None: the one
        currency they have a rate in force in). None when the table does not know the user."""
        key = (source_user_id, work_date, currency)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        known = self._known.get(source_user_id)
        match = None
        if known is not None:
            rate, used, flag = known.rate_on(work_date, currency)
            match = Match(*known.identity, standard_rate=rate, currency=used, rate_flag=flag)
        self._resolved[key] = match
        return match

    def enrich(self, entry: Entry) -> Entry:
        """Fill in (in place, and return) what the table knows of the entry's timekeeper: the LEDES id and
        classification (the table wins: portals match them exactly), the names where the source gave none, and,
        on a time entry, the standard rate in force on the work date. The flags this raises are recomputed each
        time: ``UNKNOWN_TIMEKEEPER`` for a source user not in the table (or a time entry naming none),
        ``NO_STANDARD_RATE`` and ``AMBIGUOUS_RATE_CURRENCY`` when a kept rate cannot be found."""
        if entry.source_system != self.source_system:
            raise ValueError(f"a {entry.source_system} entry given to the {self.source_system} directory")
        raised: list[str] = []
        user = entry.timekeeper_source_id
        match = self.resolve(user, entry.work_date, entry.currency) if user else None
        is_time = entry.entry_kind is EntryKind.TIME
        if match is None:
            if user or is_time:
                raised.append(UNKNOWN_TIMEKEEPER)
        else:
            entry.timekeeper_ledes_id = match.ledes_id
            entry.timekeeper_classification = match.classification
            if entry.timekeeper_name is None:
                entry.timekeeper_name = match.name
            if entry.timekeeper_first_name is None:
                entry.timekeeper_first_name = match.first_name
            if entry.timekeeper_last_name is None:
                entry.timekeeper_last_name = match.last_name
            if is_time:
                entry.standard_rate = match.standard_rate
                if match.rate_flag:
                    raised.append(match.rate_flag)
        flags = entry.data_quality_flags
        kept = [f for f in flags if f not in FLAGS] if flags else flags
        if raised or len(kept) != len(flags):
            entry.data_quality_flags = kept + raised
        return entry
