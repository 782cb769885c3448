"""What the database can rule out before Python judges: a rule's condition as a SQL filter that keeps every
stored entry the condition could hold for (and may keep others).

A backtest over a long history reads only the entries some changed rule might flag. The Python engine stays the
judge of those: the filter here only has to be a superset, never exact, so it can use floating point on SQLite's
decimal text, a case-insensitive ``LIKE`` for a phrase pattern, or give up on a comparison it cannot make.

Each node of a condition (negation normal form, :mod:`engine.rules.conditions`) becomes a pair of SQL
predicates, neither ever NULL:

- *maybe*: holds for every entry the node holds for (a superset);
- *surely*: holds only for entries the node holds for (a subset).

``and`` and ``or`` combine the pairs side by side and ``not`` swaps them (not-surely is a superset of the
negation), so the pair stays sound through any nesting. A comparison this module cannot make in SQL is
(TRUE, FALSE): anything may hold, nothing surely does.

What a comparison can read: the entry columns intake keeps beside the record (rate, hours, amount, dates, ids,
kind), and other fields pulled out of the stored record (``json_extract`` on SQLite, ``->>`` on PostgreSQL).
Decimals are exact ``NUMERIC`` on PostgreSQL; on SQLite they are text, compared as REAL within a tolerance far
wider than a double's error. Narrative lengths and phrase patterns are judged in SQL only for ASCII text (an
entry with other characters is kept: Unicode case folding and whitespace are Python's to decide).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, LargeBinary, Numeric, Text, and_, cast, false, func, literal, not_, or_, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from engine.model import Entry
from engine.rules.conditions import And, Leaf, Node, Not, Or
from engine.rules.features import BOOL, DATE, DECIMAL, ENTRY_FIELD_TYPES, INT, STRING
from engine.store.models import FACT_FIELDS, EntryFacts, EntryRow

try:  # the regular expression parser (re._parser since 3.11; sre_parse before)
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

try:
    from re import _constants as sre_constants  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]

Pair = tuple[Any, Any]  # (maybe, surely): SQL predicates, or the Python booleans True / False
ANYTHING: Pair = (True, False)

# Entry columns that hold the record's field as it is (intake and review actions keep them in step).
# The columns of ``entries`` that hold the record's field as it is (intake and review actions keep them in step);
# ``entry_facts`` holds more (FACT_FIELDS).
ENTRY_COLUMNS = ("entry_kind", "ledes_client_id", "client_source_id", "law_firm_matter_id", "client_matter_id",
                 "matter_source_id", "timekeeper_name", "work_date", "hours_billed", "rate", "amount",
                 "source_system")
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
# A double carries 15-16 significant digits: decimals compared as REAL are kept within this relative margin.
MARGIN = 1e-9
# What Python's str.strip() strips from ASCII text (SQL's trim strips only spaces unless told).
ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


class Translator:
    """Conditions to SQL for one database dialect, over the ``entries`` table."""

    def __init__(self, dialect: str, unreadable: frozenset[str] = frozenset(), facts: bool = False) -> None:
        """``unreadable``: fields whose stored value is not what the rules compare (a classification the rule
        set maps from a firm's title, say): comparisons of them are left to Python. ``facts``: over
        ``entry_facts`` (its columns only) rather than ``entries`` (its columns, and the record)."""
        self.postgres = dialect == "postgresql"
        self.unreadable = unreadable
        self.facts = facts
        self.table = EntryFacts.__table__ if facts else EntryRow.__table__
        self.columns = frozenset(FACT_FIELDS if facts else ENTRY_COLUMNS)

    # Combining ---------------------------------------------------------------------------------------------

    def maybe(self, node: Node | None) -> ColumnElement[bool] | None:
        """A SQL filter keeping every entry ``node`` may hold for; None when it would keep every entry."""
        if node is None:
            return None
        found = self.pair(node)[0]
        if found is True:
            return None
        return false() if found is False else found

    def any_maybe(self, nodes: list[Node]) -> ColumnElement[bool] | None:
        """Entries any of ``nodes`` may hold for; None when that is every entry."""
        terms = [self.maybe(n) for n in nodes]
        if not terms or any(t is None for t in terms):
            return None
        return or_(*terms)

    def pair(self, node: Node) -> Pair:
        if isinstance(node, And):
            return _and([self.pair(c) for c in node.children])
        if isinstance(node, Or):
            return _or([self.pair(c) for c in node.children])
        if isinstance(node, Not):
            maybe, surely = self.pair(node.child)
            return _not(surely), _not(maybe)
        return self.leaf(node)

    # Comparisons -------------------------------------------------------------------------------------------

    def leaf(self, leaf: Leaf) -> Pair:
        feature = leaf.feature
        if feature.kind == "field":
            return self._field(leaf)
        if feature.kind == "length" and feature.field in ENTRY_FIELD_TYPES:
            return self._length(leaf)
        if feature.kind == "match" and leaf.op in ("eq", "ne"):
            return self._match(leaf)
        if feature.kind == "member" and leaf.op in ("eq", "ne") and isinstance(leaf.value, bool):
            kind = ENTRY_FIELD_TYPES.get(feature.field)
            if kind != STRING or not all(isinstance(v, str) for v in feature.arg):
                return ANYTHING
            inside = leaf.value == (leaf.op == "eq")
            return self._strings(self._text(feature.field), "in" if inside else "not_in", tuple(feature.arg))
        return ANYTHING

    def _field(self, leaf: Leaf) -> Pair:
        name, op, value = leaf.feature.field, leaf.op, leaf.value
        kind = ENTRY_FIELD_TYPES.get(name)
        if kind is None or not self._readable(name):
            return ANYTHING
        if op in ("present", "missing"):
            column = self._text(name)
            test = column.isnot(None) if op == "present" else column.is_(None)
            return test, test
        if kind == STRING:
            return self._strings(self._text(name), op, value)
        if kind == DATE:
            return self._dates(name, op, value)
        if kind in (DECIMAL, INT):
            return self._numbers(name, op, value)
        if kind == BOOL and self.facts and op in ("eq", "ne") and isinstance(value, bool):
            column = self._text(name)
            exact = and_(column.isnot(None), column == value if op == "eq" else column != value)
            return exact, exact
        return ANYTHING

    def _readable(self, name: str) -> bool:
        """Whether SQL reads the field as the entry has it: a column, or a record's text field (None, or a text
        default, when the record leaves it out)."""
        if name in self.unreadable:
            return False
        if name in self.columns:
            return True
        if self.facts:
            return False
        return name in Entry.model_fields and isinstance(_default(name), str | None)

    def _text(self, name: str) -> Any:
        if name in self.columns:
            return self.table.c[name]
        if self.postgres:
            value = type_coerce(self.table.c.record.op("->>")(literal(name)), Text())
        else:
            value = func.json_extract(self.table.c.record, f"$.{name}")
        default = _default(name)
        return value if default is None else func.coalesce(value, _plain(default))  # a record leaves out None only

    def _strings(self, column: Any, op: str, value: Any) -> Pair:
        if op in ("in", "not_in"):
            values = [_plain(v) for v in value]
            if any(v is None for v in values):
                return ANYTHING
            test = column.in_(values) if op == "in" else column.notin_(values)
            exact = and_(column.isnot(None), test)
            return exact, exact
        plain = _plain(value)
        if plain is None or op not in ("eq", "ne"):
            return ANYTHING  # orderings of text: the database's collation is not Python's
        exact = and_(column.isnot(None), column == plain if op == "eq" else column != plain)
        return exact, exact

    def _dates(self, name: str, op: str, value: Any) -> Pair:
        column = self._text(name) if name in self.columns else None
        if column is None or op not in (*COMPARISONS, "in", "not_in"):
            return ANYTHING  # dates inside the record: text, but only the column is known to be a date
        if op in ("in", "not_in"):
            if not all(isinstance(v, dt.date) for v in value):
                return ANYTHING
            test = column.in_(list(value)) if op == "in" else column.notin_(list(value))
        else:
            if not isinstance(value, dt.date):
                return ANYTHING
            test = _compare(column, op, value)
        exact = and_(column.isnot(None), test)
        return exact, exact

    def _numbers(self, name: str, op: str, value: Any) -> Pair:
        if op not in COMPARISONS or isinstance(value, bool) or not isinstance(value, int | Decimal):
            return ANYTHING
        raw = self._text(name)
        present = raw.isnot(None)
        if self.postgres:
            exact = and_(present, _compare(cast(raw, Numeric()), op, Decimal(value)))
            return exact, exact
        number = cast(raw, Float())
        margin = MARGIN * max(1.0, abs(float(value)))
        low, high = float(value) - margin, float(value) + margin
        if op in ("gt", "ge"):
            return and_(present, number > low), and_(present, number > high)
        if op in ("lt", "le"):
            return and_(present, number < high), and_(present, number < low)
        near = and_(number >= low, number <= high)
        if op == "eq":
            return and_(present, near), false()
        return present, and_(present, not_(near))  # ne

    def _ascii(self, column: Any) -> Any:
        """Whether a text is ASCII: as many bytes as characters in UTF-8 (no scan of the text in a pattern)."""
        if self.postgres:
            return func.octet_length(column) == func.char_length(column)
        return func.length(column) == func.length(cast(column, LargeBinary()))

    def _length(self, leaf: Leaf) -> Pair:
        """``len(text.strip())``: in ASCII text Python strips exactly the characters of ASCII_WHITESPACE, which
        SQL's ``trim`` is told to strip; other text is kept."""
        op, value = leaf.op, leaf.value
        if op not in COMPARISONS or isinstance(value, bool) or not isinstance(value, int):
            return ANYTHING
        if not self._readable(leaf.feature.field):
            return ANYTHING
        column = self._text(leaf.feature.field)
        ascii_ = and_(column.isnot(None), self._ascii(column))
        trimmed = (func.btrim(column, literal(ASCII_WHITESPACE)) if self.postgres
                   else func.trim(column, literal(ASCII_WHITESPACE)))
        test = and_(ascii_, _compare(func.length(trimmed), op, value))
        other = and_(column.isnot(None), not_(self._ascii(column)))
        return or_(test, other), test

    def _match(self, leaf: Leaf) -> Pair:
        """A regular expression: an entry whose text contains none of the literal texts every match must contain
        cannot match (compared without case, in ASCII text only: Unicode case folding turns some other letters into
        ASCII ones)."""
        feature = leaf.feature
        if not self._readable(feature.field):
            return ANYTHING
        column = self._text(feature.field)
        needles = required_literals(feature.arg)
        if needles is None:
            found: Pair = (column.isnot(None), false())
        else:
            found = (and_(column.isnot(None), or_(self._contains_any(column, sorted(needles)),
                                                  not_(self._ascii(column)))), false())
        matched = leaf.value is True
        if (leaf.op == "eq") == matched:
            return found
        # Does not match: only a text is judged (a missing one never holds).
        return column.isnot(None), false()

    def _contains_any(self, column: Any, needles: list[str]) -> Any:
        """Whether an ASCII text contains one of the needles, ignoring case. On PostgreSQL one case-blind regular
        expression of the needles as literals (each ``ILIKE`` lowers the text again: three needles or more are
        several times slower so) when they are ASCII; otherwise a ``LIKE`` per needle."""
        if self.postgres and len(needles) > 1 and all(n.isascii() for n in needles):
            alternatives = "|".join(re.sub(r"([^A-Za-z0-9])", r"\\\1", n) for n in needles)
            return column.op("~*")(literal(alternatives))
        return or_(*(self._contains(column, n) for n in needles))

    def _contains(self, column: Any, needle: str) -> Any:
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        if self.postgres:
            return column.ilike(pattern, escape="\\")
        return column.like(pattern, escape="\\")  # SQLite's LIKE ignores the case of ASCII letters


def _default(name: str) -> Any:
    info = Entry.model_fields[name]
    return None if info.is_required() else info.get_default(call_default_factory=True)


def _compare(column: Any, op: str, value: Any) -> Any:
    return {"eq": column == value, "ne": column != value, "lt": column < value, "le": column <= value,
            "gt": column > value, "ge": column >= value}[op]


def _plain(value: Any) -> str | None:
    """A constant compared with a text column: strings and enum values as they are stored."""
    if isinstance(value, str):
        return str(getattr(value, "value", value))
    return None


def _and(pairs: list[Pair]) -> Pair:
    maybes = [m for m, _ in pairs]
    surelys = [s for _, s in pairs]
    return _conjoin(maybes), _conjoin(surelys)


def _or(pairs: list[Pair]) -> Pair:
    maybes = [m for m, _ in pairs]
    surelys = [s for _, s in pairs]
    return _disjoin(maybes), _disjoin(surelys)


def _conjoin(terms: list[Any]) -> Any:
    if any(t is False for t in terms):
        return False
    kept = [t for t in terms if t is not True]
    return True if not kept else kept[0] if len(kept) == 1 else and_(*kept)


def _disjoin(terms: list[Any]) -> Any:
    if any(t is True for t in terms):
        return True
    kept = [t for t in terms if t is not False]
    return False if not kept else kept[0] if len(kept) == 1 else or_(*kept)


def _not(term: Any) -> Any:
    if term is True or term is False:
        return not term
    return not_(term)


# Regular expressions ---------------------------------------------------------------------------------------------

LITERAL = sre_constants.LITERAL
SUBPATTERN = sre_constants.SUBPATTERN
BRANCH = sre_constants.BRANCH
REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) + (
    (sre_constants.POSSESSIVE_REPEAT,) if hasattr(sre_constants, "POSSESSIVE_REPEAT") else ())
ATOMIC = getattr(sre_constants, "ATOMIC_GROUP", None)
ZERO_WIDTH = (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT)
MIN_NEEDLE = 3  # shorter literals filter too little to be worth a LIKE


def required_literals(pattern: re.Pattern[str] | Any) -> frozenset[str] | None:
    """Printable ASCII texts such that any match of ``pattern`` contains one of them (ignoring case), or None
    when no such set is known. A run of literal characters in sequence is contained in every match; an
    alternation needs one from each branch."""
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
        return None
    if pattern.flags & re.VERBOSE:
        return None
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # anything the parser refuses is simply not filtered
        return None
    return _sequence(list(parsed))


def _sequence(items: list[Any]) -> frozenset[str] | None:
    """The best required set of a sequence: its longest literal run, or a required group's set."""
    best: frozenset[str] | None = None
    run: list[str] = []

    def consider(found: frozenset[str] | None) -> None:
        nonlocal best
        if found and (best is None or min(map(len, found)) > min(map(len, best))):
            best = found

    def flush() -> None:
        if run:
            consider(frozenset({"".join(run)}) if len(run) >= MIN_NEEDLE else None)
            run.clear()

    for op, arg in items:
        if op == LITERAL and 32 <= arg < 127:
            run.append(chr(arg))
            continue
        flush()
        if op == SUBPATTERN:
            consider(_sequence(list(arg[-1])))
        elif ATOMIC is not None and op == ATOMIC:
            consider(_sequence(list(arg)))
        elif op == BRANCH:
            branches = [_sequence(list(b)) for b in arg[1]]
            if all(branches):
                consider(frozenset().union(*branches))  # type: ignore[arg-type]
        elif op in REPEATS and arg[0] >= 1:
            consider(_sequence(list(arg[2])))
    flush()
    return best


__all__ = ["Translator", "required_literals"]
