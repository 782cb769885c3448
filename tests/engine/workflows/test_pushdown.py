"""The pushdown filters keep every entry a rule flags: for each per-entry rule of every bundled rule set, over
generated entries and entries made to sit on the edges (a rate a hair above or below a cap, narratives padded with
tabs, non-breaking spaces and letters that fold to ASCII, phrases split by newlines), the entries ``evaluate`` flags
are among those the SQL filter keeps, over ``entries`` (columns and the record) and over ``entry_facts``, on SQLite
and PostgreSQL. And the literals a regular expression's every match contains are found soundly."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.compiler import compile_ruleset
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.rules.types import type_of
from engine.rules.types.base import phrase_pattern
from engine.samples import generate
from engine.store.db import transaction
from engine.store.models import EntryFacts, EntryRow
from engine.workflows.backtest import _subset
from engine.workflows.intake import CircuitBreaker, ingest
from engine.workflows.pushdown import Translator, required_literals
from tests.conftest import REPO, entry

# The bundled rule sets with per-entry rules (Initech's are all aggregates).
BUNDLED = sorted(p for p in (REPO / "rules").glob("*.yaml") if not p.name.endswith(".tests.yaml")
                 and any(not type_of(r).aggregate for r in load_text(p.read_text()).rules))
CTX = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31))
NEVER = CircuitBreaker(share=1.0, minimum=1 << 62)


def edge_entries() -> list[Entry]:
    """Entries on the edges SQL could get wrong."""
    out = []
    narratives = [
        "call with client", "\tcall\nwith client\t", "\u00a0short\u00a0", "Conference", "CONFERENCE call",
        "con\u017ference with the client about the motion",  # long s: folds to s only for a case-blind regex
        "  review file  ", "x" * 24 + "\u2003", "\x1c" + "y" * 24 + "\x1f", "\x0b" * 3 + "short" + "\r\n",
        "various   matters", "Various\nIssues", "", "   ",
        "Travel to Chicago for deposition", "drafted motion; reviewed file; call with client",
    ]
    for k, text in enumerate(narratives):
        out.append(entry(f"N{k}", narrative=text))
    for k, rate in enumerate(["925.00", "925.0000001", "924.9999999", "1000.00", "1000.000001", "1050", "650",
                              "0.01", "99999999.99"]):
        out.append(entry(f"R{k}", rate=rate))
        out.append(entry(f"P{k}", rate=rate, timekeeper_classification="ASSOC", timekeeper_ledes_id="TK2001"))
    out.append(entry("F1", fee_basis="flat", rate="5000"))
    out.append(entry("C1", currency="EUR", rate="5000"))
    out.append(entry("C2", currency=None, rate="5000"))
    out.append(entry("K1", utbms_task_code=None, utbms_activity_code=None))
    out.append(entry("B1", billable=False, utbms_task_code=None))
    out.append(entry("H1", hours_billed="0.15", hours_worked="0.15"))
    out.append(entry("H2", hours_billed="13.5", hours_worked="13.5"))
    return out


@pytest.fixture(scope="module")
def everything() -> list[Entry]:
    return [*generate(400, seed=11), *edge_entries()]


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_the_filters_keep_every_entry_a_rule_flags(sessions: sessionmaker[Session], path: object,
                                                   everything: list[Entry]) -> None:
    ruleset = load_text((REPO / "rules" / path).read_text())  # type: ignore[operator]
    with transaction(sessions) as session:
        ingest(session, everything, context=CTX, breaker=NEVER)
    with sessions() as session:
        dialect = session.get_bind().dialect.name
        stored = {e.entry_uid: e for e in (Entry.model_validate(r) for r in session.scalars(select(EntryRow.record)))}
        uids = sorted(stored)
        entries = [stored[uid] for uid in uids]
        aliased = frozenset({"timekeeper_classification"}) if ruleset.classifications else frozenset()
        checked = kept_fewer = 0
        for rule in ruleset.rules:
            if type_of(rule).aggregate or rule.status != "active":
                continue
            single = _subset(ruleset, [rule.id])
            flagged = {entries[v.entry_index].entry_uid for v in evaluate(entries, single, context=CTX,
                                                                           backend="python", statuses=("active",))}
            condition = compile_ruleset(single).rules[0].condition
            for facts in (False, True):
                translator = Translator(dialect, unreadable=aliased, facts=facts)
                term = translator.maybe(condition)
                if term is None:
                    continue
                table = EntryFacts if facts else EntryRow
                kept = set(session.scalars(select(table.entry_uid).where(term)))
                assert flagged <= kept, (rule.id, facts, sorted(flagged - kept)[:5])
                checked += 1
                kept_fewer += len(kept) < len(stored)
        assert checked > 0 and kept_fewer > 0  # the filters were made, and some of them rule entries out


PATTERNS = [phrase_pattern(["various matters", "attention to", "conference", "call with", "review file"]),
            re.compile(r"(?i)\btravel(l?ed|l?ing)?\b"), re.compile(r"(?i)summer associate"),
            re.compile(r"draft(ed|ing) (motion|brief)"), re.compile(r"(?i)(?:abc)?xyz+")]


def test_the_literals_every_match_contains() -> None:
    assert required_literals(PATTERNS[0]) == {"various", "attention", "conference", "call", "review"}
    assert required_literals(PATTERNS[1]) == {"travel"}
    assert required_literals(PATTERNS[2]) == {"summer associate"}
    assert required_literals(PATTERNS[3]) == {"draft"}
    assert required_literals(re.compile(r"a|bc")) is None  # too short to be worth a LIKE
    assert required_literals(re.compile(r"(?x) travel")) is None  # verbose patterns are not read
    assert required_literals(re.compile(r"[a-z]+")) is None


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(text=st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ACEFGLORSTVW\t\n"
                                                  "\u017f\u212a\u00a0\u0131")), max_size=40),
       index=st.integers(0, len(PATTERNS) - 1))
def test_a_match_contains_one_of_its_literals(text: str, index: int) -> None:
    pattern = PATTERNS[index]
    needles = required_literals(pattern)
    if needles is None or pattern.search(text) is None:
        return
    ascii_ = all(ord(c) < 128 for c in text)
    # In ASCII text a match contains a needle (ignoring case); other text the filter always keeps.
    assert not ascii_ or any(n.lower() in text.lower() for n in needles), (pattern.pattern, text)


def test_decimal_margins_on_sqlite_keep_values_at_the_cap() -> None:
    translator = Translator("sqlite", facts=True)
    from engine.rules.conditions import Leaf
    from engine.rules.features import Feature

    maybe, surely = translator.pair(Leaf(Feature("field", "rate"), "gt", Decimal("925.00")))
    compiled = str(maybe.compile(compile_kwargs={"literal_binds": True}))
    assert "924.99999" in compiled  # kept a hair below the cap: REAL rounding cannot lose an entry
    assert "925.00000" in str(surely.compile(compile_kwargs={"literal_binds": True}))


def test_needles_are_literal_text_whatever_they_hold(sessions: sessionmaker[Session]) -> None:
    """Several needles are one case-blind regular expression on PostgreSQL: the characters a pattern gives a meaning
    (``.``, ``+``, ``(``, ``\\``, ``%``, ``_``) still match only themselves, and case is still ignored."""
    narratives = {"dot": "met re A.B today", "any": "met re aXb today", "plus": "C+D call", "repeat": "CCD call",
                  "paren": "see (note) 4", "slash": "path a\\b", "percent": "50% off", "under": "snake_case",
                  "none": "nothing here"}
    with transaction(sessions) as session:
        ingest(session, [entry(name, narrative=text) for name, text in narratives.items()], context=CTX,
               breaker=NEVER)
    with sessions() as session:
        translator = Translator(session.get_bind().dialect.name, facts=True)
        column = EntryFacts.__table__.c.narrative
        term = translator._contains_any(column, ["a.b", "c+d", "(note)", "a\\b", "50%", "e_c"])
        kept = {uid.rsplit(":", 1)[-1] for uid in session.scalars(select(EntryFacts.entry_uid).where(term))}
    assert kept == {"dot", "plus", "paren", "slash", "percent", "under"}
