"""Backtests are exact: the fast path (only the rules that differ, light entries streamed in chunks, the compared
version's findings from the decision log, daily aggregates by whole days) gives what evaluating both versions
entry by entry with the engine over every stored entry gives, on SQLite and PostgreSQL, on generated entries
and drafts made from every bundled rule set.

The reference here is written independently of ``engine.workflows.backtest``: every stored record read as an
Entry, ``evaluate`` with each whole version, the (entry, rule) pairs of active-status rules compared.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError, load_text
from engine.samples import generate
from engine.store.db import transaction
from engine.store.models import (
    EntryFacts,
    EntryRow,
    EntryState,
    Evaluation,
    IngestBatch,
    ReviewAction,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)
from engine.workflows import backtest as backtests
from engine.workflows.intake import CircuitBreaker, ingest
from engine.workflows.rulesets import add_ruleset_version, load_version, set_status
from tests.conftest import REPO

BUNDLED = sorted(p for p in (REPO / "rules").glob("*.yaml") if not p.name.endswith(".tests.yaml"))
INGESTED = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1),
                             period_end=dt.date(2026, 3, 31))
NEVER = CircuitBreaker(share=1.0, minimum=1 << 62)
EXAMPLES = int(os.environ.get("OCGATE_BACKTEST_EXAMPLES", "12"))
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))


# Data ------------------------------------------------------------------------------------------------------

def entries_for(seed: int, count: int, crowded: bool) -> list[Entry]:
    """Sample entries, some moved to Globex (its clients, matters, approved timekeepers and class names), and with
    few timekeepers when ``crowded`` (long days and duplicates)."""
    rng = random.Random(seed)
    out = []
    for e in generate(count, seed=seed, days=20, problem_rate=3.0, start=dt.date(2026, 2, 20)):
        changes: dict[str, Any] = {}
        if crowded:
            tk = rng.choice(["TK1001", "TK1002", "TK1003"])
            changes.update(timekeeper_source_id=tk, timekeeper_ledes_id=tk)
        if rng.random() < 0.3:
            tk = rng.choice(["TK2001", "TK2002", "TK2009"])
            changes.update(ledes_client_id="GLOBEX", client_source_id="C-0002",
                           law_firm_matter_id=rng.choice(["2026-0101", "2026-0102", "2026-0999"]),
                           timekeeper_source_id=tk, timekeeper_ledes_id=tk,
                           timekeeper_classification=rng.choice(["Partner", "PL", "ASSOC", None]))
        if rng.random() < 0.05:
            changes["currency"] = rng.choice(["EUR", None])
        out.append(Entry.model_validate({**e.model_dump(), **changes}) if changes else e)
    return out


def numbers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to the numbers in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, (*path, i))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path


def mutate(text: str, rng: random.Random, steps: int) -> str:
    """A draft: the rule file with ``steps`` random changes a rule author makes (a number in a rule's params,
    a rule removed or added, status, severity, a rule's dates, the rule set's clients or currency)."""
    doc = yaml.safe_load(text)
    for _ in range(steps):
        rules = doc["rules"]
        kind = rng.choice(["number", "number", "number", "remove", "add", "status", "severity", "dates",
                           "clients", "currency"])
        rule = rng.choice(rules)
        if kind == "number":
            paths = list(numbers(rule.get("params", {})))
            if not paths:
                continue
            *parent_path, last = rng.choice(paths)
            parent = rule["params"]
            for step in parent_path:
                parent = parent[step]
            value = parent[last]
            factor = rng.choice([0.5, 0.9, 0.97, 1.1, 2])
            parent[last] = round(value * factor) if isinstance(value, int) else round(value * factor, 2)
        elif kind == "remove" and len(rules) > 1:
            rules.remove(rule)
        elif kind == "add":
            copy = yaml.safe_load(yaml.safe_dump(rule))
            copy["id"] = f"{rule['id']}-COPY{rng.randrange(100)}"
            if copy["id"] not in {r["id"] for r in rules}:
                rules.append(copy)
        elif kind == "status":
            rule["status"] = "shadow" if rule.get("status", "active") == "active" else "active"
        elif kind == "severity":
            rule["severity"] = rng.choice(["error", "warning", "info"])
        elif kind == "dates":
            rule["effective"] = {"from": dt.date(2026, 3, rng.randint(1, 20))}
        elif kind == "clients":
            applies = doc.setdefault("applies_to", {})
            applies["clients"] = rng.choice([["ACME01"], ["GLOBEX"], ["ACME01", "GLOBEX"]])
        elif kind == "currency":
            doc["currency"] = rng.choice(["USD", "EUR"])
    return yaml.safe_dump(doc, sort_keys=False)


# The reference ----------------------------------------------------------------------------------------------

def reference(session: Session, draft: RuleSetVersion, other: RuleSetVersion | None, window: backtests.Window,
              ctx: EvaluationContext) -> dict[str, Any]:
    query = select(EntryRow.record).where(EntryRow.state != EntryState.WITHDRAWN).order_by(EntryRow.id)
    if window.start:
        query = query.where(EntryRow.work_date >= window.start)
    if window.end:
        query = query.where(EntryRow.work_date <= window.end)
    stored = [Entry.model_validate(r) for r in session.scalars(query)]
    if window.clients:
        stored = [e for e in stored if e.ledes_client_id in window.clients or e.client_source_id in window.clients]
    currency = {e.entry_uid: e.currency for e in stored}

    def findings(version: RuleSetVersion | None) -> dict[tuple[str, str], Violation]:
        if version is None:
            return {}
        return {(v.entry_uid, v.rule_id): v for v in evaluate(stored, load_version(version), context=ctx,
                                                               backend="python") if v.rule_status == "active"}

    new, old = findings(draft), findings(other)
    rules: dict[str, dict[str, Any]] = {}
    for pairs, side in ((old, "before"), (new, "after")):
        for (uid, rule_id), v in pairs.items():
            r = rules.setdefault(rule_id, {"flagged_before": 0, "flagged_after": 0, "write_down_before": Counter(),
                                           "write_down_after": Counter()})
            r[f"flagged_{side}"] += 1
            if v.adjustment is not None:
                r[f"write_down_{side}"][currency[uid] or "none"] += v.adjustment.amount
    return {"new": new, "old": old, "rules": rules,
            "checked": sum(1 for e in stored if load_version(draft).applies_to(e))}


def check_exact(result: backtests.Backtest, ref: dict[str, Any], examples: int) -> None:
    new, old = ref["new"], ref["old"]
    gained, lost = set(new) - set(old), set(old) - set(new)
    assert result.entries_checked == ref["checked"]
    assert result.newly_flagged == dict(Counter(rule for _, rule in gained))
    assert result.no_longer_flagged == dict(Counter(rule for _, rule in lost))
    differing = {d.rule_id for d in result.rules}
    for rule_id, r in ref["rules"].items():
        if rule_id not in differing:  # an unchanged rule flags the same entries on both sides
            assert r["flagged_before"] == r["flagged_after"] and r["write_down_before"] == r["write_down_after"]
            assert not any(rule == rule_id for _, rule in gained | lost), rule_id
    for d in result.rules:
        r = ref["rules"].get(d.rule_id, {"flagged_before": 0, "flagged_after": 0, "write_down_before": Counter(),
                                         "write_down_after": Counter()})
        assert (d.flagged_before, d.flagged_after) == (r["flagged_before"], r["flagged_after"]), d.rule_id
        assert d.write_down_before == dict(r["write_down_before"]), d.rule_id
        assert d.write_down_after == dict(r["write_down_after"]), d.rule_id
        assert all(type(v) is Decimal for v in (*d.write_down_before.values(), *d.write_down_after.values()))
    wanted = []
    for pairs, change, source in ((gained, backtests.NEWLY, new), (lost, backtests.NO_LONGER, old)):
        by_rule: dict[str, list[str]] = {}
        for uid, rule_id in pairs:
            by_rule.setdefault(rule_id, []).append(uid)
        for rule_id, uids in by_rule.items():
            wanted += [(rule_id, change, uid, source[(uid, rule_id)]) for uid in sorted(uids)[:examples]]
    wanted.sort(key=lambda w: w[:3])
    got = [(e.rule_id, e.change, e.entry_uid) for e in result.examples]
    assert got == [w[:3] for w in wanted]
    for example, (_, _, _, v) in zip(result.examples, wanted, strict=True):
        assert example.message == v.message
        assert example.evidence == [ev.as_dict() for ev in v.evidence]
        assert example.adjustment == (v.adjustment.as_dict() if v.adjustment else None)
        assert sorted(example.contributing) == sorted(v.contributing)


# The store ----------------------------------------------------------------------------------------------------

def clear(session: Session) -> None:
    for table in (ViolationRow, Evaluation, ReviewAction, EntryRow, IngestBatch, RuleSetVersion):
        session.execute(delete(table))


def store(session: Session, entries: list[Entry], older: str, active: str, rng: random.Random) -> RuleSetVersion:
    """Ingest the first part of ``entries`` while ``older`` is active, the rest once ``active`` is (so the
    decision log has findings of the active version for some entries only), and move a few entries to other
    states (withdrawn, rejected, invoiced)."""
    first = add_ruleset_version(session, older, status=RuleSetStatus.ACTIVE)
    cut = rng.randint(0, len(entries))
    if cut:
        ingest(session, entries[:cut], context=INGESTED, backend="python", breaker=NEVER)
    current = add_ruleset_version(session, active)
    if current.id != first.id:
        set_status(session, current, RuleSetStatus.ACTIVE)
    if cut < len(entries):
        ingest(session, entries[cut:], context=INGESTED, backend="python", breaker=NEVER)
    ids = list(session.scalars(select(EntryRow.id)))
    for entry_id in rng.sample(ids, min(len(ids), 4)):
        state = rng.choice([EntryState.WITHDRAWN, EntryState.REJECTED, EntryState.INVOICED])
        session.execute(update(EntryRow).where(EntryRow.id == entry_id).values(state=state))
    session.flush()
    return current


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few entries, so that chunk edges, days across them and the log's merge are exercised."""
    monkeypatch.setattr(backtests, "CHUNK", 7)
    monkeypatch.setattr(backtests, "LOOKUP", 5)


@given(data=st.data())
@BOUNDED
def test_a_backtest_equals_evaluating_both_versions_entry_by_entry(
        sessions: sessionmaker[Session], small_chunks: None, data: st.DataObject) -> None:
    rules = Path(data.draw(st.sampled_from([str(p) for p in BUNDLED]), label="rule set"))
    seed = data.draw(st.integers(0, 10**6), label="seed")
    rng = random.Random(seed)
    text = rules.read_text(encoding="utf-8")
    older, draft_text = mutate(text, rng, rng.randint(1, 3)), mutate(text, rng, rng.randint(1, 3))
    try:
        load_text(older, "older.yaml")
        load_text(draft_text, "draft.yaml")
    except RuleSetError:
        assume(False)
    entries = entries_for(seed, data.draw(st.integers(10, 120), label="entries"), data.draw(st.booleans()))
    window = data.draw(st.sampled_from([
        backtests.Window(), backtests.Window(), backtests.Window(dt.date(2026, 3, 1), dt.date(2026, 3, 9)),
        backtests.Window(clients=("GLOBEX",)), backtests.Window(end=dt.date(2026, 3, 2), clients=("C-0001",))]))
    ctx = data.draw(st.sampled_from([INGESTED, EvaluationContext(as_of=dt.date(2026, 7, 1)),
                                     EvaluationContext(as_of=dt.date(2026, 3, 30), period_start=dt.date(2026, 3, 5),
                                                       period_end=dt.date(2026, 3, 12))]))
    examples = data.draw(st.integers(0, 3))
    with transaction(sessions) as session:
        clear(session)
        active = store(session, entries, older, text if rng.random() < 0.5 else older, rng)
    with transaction(sessions) as session:
        draft = add_ruleset_version(session, draft_text)
        against = data.draw(st.sampled_from([None, None, "older", "self"]))
        other_id = {None: None, "self": draft.id}.get(against, active.id)
        result = backtests.backtest(session, draft.id, against=other_id, window=window, context=ctx,
                                    examples=examples)
        other = session.get(RuleSetVersion, other_id) if other_id else active
        check_exact(result, reference(session, draft, other, window, ctx), examples)
        event(f"changed rules: {min(len(result.rules), 3)}+; types: "
              f"{sorted({d.rule_type for d in result.rules} & set(backtests.DAY_GROUPED)) or 'per-entry'}")
        event(f"findings reused: {bool(result.findings_reused)}; pairs changed: "
              f"{bool(result.newly_flagged or result.no_longer_flagged)}")
        if against == "self":
            assert not result.rules and result.newly_flagged == {} == result.no_longer_flagged


# Chosen cases -------------------------------------------------------------------------------------------------

ACME = (REPO / "rules" / "acme-corp.yaml").read_text(encoding="utf-8")


def stored_acme(sessions: sessionmaker[Session], entries: list[Entry], text: str = ACME) -> RuleSetVersion:
    with transaction(sessions) as session:
        active = add_ruleset_version(session, text, status=RuleSetStatus.ACTIVE)
        ingest(session, entries, context=INGESTED, backend="python", breaker=NEVER)
        return active


def test_a_lower_rate_cap_and_a_new_narrative_rule_reuse_the_stored_findings(
        sessions: sessionmaker[Session], small_chunks: None) -> None:
    entries = list(generate(300, seed=5))
    active = stored_acme(sessions, entries)
    doc = yaml.safe_load(ACME)
    rate = next(r for r in doc["rules"] if r["type"] == "rate_cap")
    _lower_first_cap(rate["params"])
    doc["rules"].append({"id": "ACME-NARR-900", "title": "Narrative names a conference", "type": "narrative",
                         "severity": "warning", "params": {"forbidden_phrases": ["conference", "call with"]}})
    with transaction(sessions) as session:
        draft = add_ruleset_version(session, yaml.safe_dump(doc, sort_keys=False))
        result = backtests.backtest(session, draft.id, context=INGESTED)
        assert result.active is not None and result.active.id == active.id
        assert {d.rule_id: d.change for d in result.rules} == {rate["id"]: "changed", "ACME-NARR-900": "added"}
        assert {d.rule_id: d.source for d in result.rules} == {rate["id"]: "decision log",
                                                              "ACME-NARR-900": "evaluated"}
        assert result.findings_reused == len(entries)  # every entry was judged by the active version
        assert result.newly_flagged[rate["id"]] > 0 and result.newly_flagged["ACME-NARR-900"] > 0
        assert rate["id"] not in result.no_longer_flagged
        changed = next(d for d in result.rules if d.rule_id == rate["id"])
        assert changed.write_down_change["USD"] < 0  # a lower cap writes more down
        assert len(result.unchanged_rules) == len(doc["rules"]) - 2
        check_exact(result, reference(session, draft, active, backtests.Window(), INGESTED), backtests.EXAMPLES)


def _lower_first_cap(params: dict[str, Any]) -> None:
    caps = params["schedule"][-1]["by_classification"] if "schedule" in params else params["by_classification"]
    for cls in caps:
        caps[cls] = caps[cls] - 50


def test_nothing_stored_to_reuse_every_rule_is_new(sessions: sessionmaker[Session], small_chunks: None) -> None:
    entries = list(generate(200, seed=9, problem_rate=4.0))
    with transaction(sessions) as session:
        ingest(session, entries, context=INGESTED, backend="python", breaker=NEVER)  # no rule set yet
        draft = add_ruleset_version(session, ACME)
        result = backtests.backtest(session, draft.id, context=INGESTED)
        assert result.active is None and result.findings_reused == 0
        assert {d.change for d in result.rules} == {"added"} and not result.unchanged_rules
        assert result.no_longer_flagged == {}
        assert sum(result.newly_flagged.values()) > 0
        check_exact(result, reference(session, draft, None, backtests.Window(), INGESTED), backtests.EXAMPLES)


def test_a_lower_daily_cap_is_judged_over_whole_days_across_chunks(sessions: sessionmaker[Session],
                                                                   small_chunks: None) -> None:
    entries = entries_for(3, 150, crowded=True)
    active = stored_acme(sessions, entries)
    doc = yaml.safe_load(ACME)
    day = next(r for r in doc["rules"] if r["type"] == "daily_hours_cap")
    day["params"]["max_hours"] = 6
    with transaction(sessions) as session:
        draft = add_ruleset_version(session, yaml.safe_dump(doc, sort_keys=False))
        result = backtests.backtest(session, draft.id, context=INGESTED, examples=50)
        assert [d.rule_id for d in result.rules] == [day["id"]]
        assert result.newly_flagged[day["id"]] > backtests.CHUNK  # days span chunks
        assert all(e.contributing for e in result.examples)
        check_exact(result, reference(session, draft, active, backtests.Window(), INGESTED), 50)


def test_the_days_the_database_picks_include_every_day_a_daily_rule_flags(sessions: sessionmaker[Session]) -> None:
    """Days at the edges of what SQL adds up: tenths summing exactly to the cap (a float sum falls short of it), a
    credit that brings a day back under the cap, an entry not charged, hours written 1.5 and 1.50."""
    base = next(iter(generate(1, seed=4))).model_dump()
    base.update(timekeeper_source_id="TK1001", timekeeper_ledes_id="TK1001", entry_kind="time", billable=True,
                no_charge=False, utbms_task_code="L120", amount=None, quantity=None)
    days: list[tuple[int, list[dict[str, Any]]]] = [
        (2, [{"hours_billed": "0.1"}] * 10),  # exactly 1: not over a cap of 1
        (3, [{"hours_billed": "0.1"}] * 10 + [{"hours_billed": "0.01"}]),  # over it
        (4, [{"hours_billed": "0.7"}, {"hours_billed": "0.7", "no_charge": True}]),
        (5, [{"hours_billed": "1.5"}, {"hours_billed": "-0.6", "narrative": "Credit for time billed twice"}]),
        (6, [{"hours_billed": "0.5", "narrative": "Drafted  the motion"},
             {"hours_billed": "0.50", "narrative": "drafted the MOTION"}]),
        (9, [{"hours_billed": "0.3"}, {"hours_billed": "0.3", "billable": False}, {"hours_billed": "0.4"}]),
    ]
    entries = []
    for day, items in days:
        for n, item in enumerate(items):
            values = {**base, "source_id": f"d{day}-{n}", "work_date": dt.date(2026, 3, day), "narrative": f"Work {n}",
                      **item}
            values["hours_worked"] = values["hours_billed"]
            entries.append(Entry.model_validate(values))
    active = stored_acme(sessions, entries)
    with transaction(sessions) as session:
        doc = yaml.safe_load(ACME.replace("max_hours: 10", "max_hours: 1"))
        next(r for r in doc["rules"] if r["type"] == "duplicate")["severity"] = "warning"  # judged on both sides
        draft = add_ruleset_version(session, yaml.safe_dump(doc, sort_keys=False))
        result = backtests.backtest(session, draft.id, context=INGESTED, examples=50)
        check_exact(result, reference(session, draft, active, backtests.Window(), INGESTED), 50)
        flagged = {e.entry_uid.split(":")[-1].split("-")[0] for e in result.examples}
        assert flagged == {"d3"}, flagged
        duplicates = next(d for d in result.rules if d.rule_type == "duplicate")
        assert duplicates.flagged_before == duplicates.flagged_after == 2


def test_attendance_and_budgets_are_judged_matter_by_matter_with_totals_carried_across_chunks(
        sessions: sessionmaker[Session], small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets' running totals and events' attendees over a matter's history, read a few entries at a time: the
    matters span many chunks, and no chunk is larger than the chunk size plus one matter-day."""
    entries = list(generate(400, seed=11, days=30))
    matter, count = Counter(e.law_firm_matter_id for e in entries).most_common(1)[0]
    assert count > 5 * backtests.CHUNK
    doc = yaml.safe_load((REPO / "rules" / "initech.yaml").read_text(encoding="utf-8"))
    doc["applies_to"]["clients"] = ["ACME01"]
    rules = {r["id"]: r for r in doc["rules"]}
    rules["INI-BUDGET-001"]["params"]["budgets"] = [{"matter": matter, "amount": 150000},
                                                    {"matter": matter, "phase": "L300", "amount": 8000}]
    rules["INI-BUDGET-002"]["params"]["budgets"] = [{"per": "month", "amount": 40000}]
    rules["INI-STAFF-002"]["params"]["events"] = ["conference", "deposition", "trial"]
    rules["INI-STAFF-002"]["params"]["activity_codes"] = ["A105", "A103", "A101"]
    active = stored_acme(sessions, entries, yaml.safe_dump(doc, sort_keys=False))
    rules["INI-BUDGET-001"]["params"]["budgets"][0]["amount"] = 60000
    rules["INI-BUDGET-001"]["params"]["warn_at"] = 0.5
    rules["INI-BUDGET-002"]["params"]["budgets"] = [{"per": "quarter", "amount": 120000}]
    rules["INI-STAFF-002"]["params"]["max_timekeepers"] = 2
    read: list[int] = []
    chunks = backtests._light_matter_chunks

    def counted(*args: Any) -> Iterator[list[Any]]:
        for chunk in chunks(*args):
            read.append(len(chunk))
            yield chunk
    monkeypatch.setattr(backtests, "_light_matter_chunks", counted)
    day_sizes = Counter((e.law_firm_matter_id, e.work_date) for e in entries)
    with transaction(sessions) as session:
        draft = add_ruleset_version(session, yaml.safe_dump(doc, sort_keys=False))
        result = backtests.backtest(session, draft.id, context=INGESTED, examples=50)
        assert {d.rule_id for d in result.rules} == {"INI-BUDGET-001", "INI-BUDGET-002", "INI-STAFF-002"}
        assert result.newly_flagged.get("INI-BUDGET-001", 0) > backtests.CHUNK
        assert result.no_longer_flagged.get("INI-BUDGET-002", 0) > backtests.CHUNK
        assert result.no_longer_flagged.get("INI-STAFF-002", 0) > 0
        check_exact(result, reference(session, draft, active, backtests.Window(), INGESTED), 50)
        window = backtests.Window(dt.date(2026, 3, 3), dt.date(2026, 3, 20))
        check_exact(backtests.backtest(session, draft.id, context=INGESTED, window=window, examples=3),
                    reference(session, draft, active, window, INGESTED), 3)
        streamed = len(read)
        # An entry without its narrow copy: the entries themselves are read (columns and records), same answer.
        session.execute(delete(EntryFacts).where(EntryFacts.entry_id == session.scalar(select(func.min(EntryRow.id)))))
        check_exact(backtests.backtest(session, draft.id, context=INGESTED, examples=3),
                    reference(session, draft, active, backtests.Window(), INGESTED), 3)
        assert len(read) > streamed
        # A type neither by day nor by matter would be judged over the whole window at once: the same answer.
        monkeypatch.setattr(backtests, "MATTER_GROUPED", frozenset())
        whole = backtests.backtest(session, draft.id, context=INGESTED, examples=3)
        check_exact(whole, reference(session, draft, active, backtests.Window(), INGESTED), 3)
        assert whole.entries_read_in_full == whole.entries_checked > 0  # every entry, read in full
    assert len(read) > 20 and max(read) < backtests.CHUNK + max(day_sizes.values())


def test_a_budget_total_on_its_line_is_judged_as_the_engine_judges_it(sessions: sessionmaker[Session]) -> None:
    """The database's running totals (PostgreSQL's numeric, SQLite's Decimal aggregate) against budgets set to a
    total the engine reaches exactly: at the budget is not over it, at the warning line is a warning; a cent less
    flags one entry more."""
    entries = list(generate(160, seed=23, start=dt.date(2026, 2, 1), days=120))  # across quarters and months
    matter = Counter(e.law_firm_matter_id for e in entries if e.ledes_client_id == "ACME01").most_common(1)[0][0]
    # Late in the matter, when its totals are over any line: a time entry with no amount (none given, no rate)
    # charges nothing and is flagged by no budget.
    last = max((e for e in entries if e.law_firm_matter_id == matter and e.entry_kind == "time"),
               key=lambda e: e.work_date)
    entries.append(last.model_copy(update={"source_id": "no-amount", "amount": None, "rate": None}))
    stored_acme(sessions, entries)

    def draft(session: Session, *budgets: dict[str, Any], warn_at: float | None = None) -> RuleSetVersion:
        doc = yaml.safe_load(ACME)
        params: dict[str, Any] = {"budgets": list(budgets)}
        if warn_at is not None:
            params["warn_at"] = warn_at
        doc["rules"].append({"id": "ACME-BUDGET-900", "title": "Matter budget", "type": "budget",
                             "severity": "error", "params": params})
        return add_ruleset_version(session, yaml.safe_dump(doc, sort_keys=False))

    with transaction(sessions) as session:
        active = session.scalar(select(RuleSetVersion).where(RuleSetVersion.status == RuleSetStatus.ACTIVE))
        # Every counted entry goes over a budget of a cent: the evidence gives each running total.
        everything = reference(session, draft(session, {"matter": matter, "amount": 0.01}), active,
                               backtests.Window(), INGESTED)
        totals = sorted(v.evidence[0].actual for (_, rule), v in everything["new"].items()
                        if rule == "ACME-BUDGET-900")
        # A budget's amount is the YAML number as the engine reads it (a float's exact value): a total that a
        # float holds exactly can be met exactly.
        exact = [t for t in totals if Decimal(float(t)) == t]
        assert len(totals) > 10 and exact
        line = exact[len(exact) // 2]
        flagged = {}
        for name, budgets, warn in (("at", {"matter": matter, "amount": float(line)}, None),
                                    ("a cent under", {"matter": matter, "amount": float(line - Decimal("0.01"))}, None),
                                    ("warned at", {"matter": matter, "amount": float(line * 2)}, 0.5),
                                    ("per month", {"per": "month", "amount": float(line)}, 0.25),
                                    ("per quarter", {"per": "quarter", "amount": float(line)}, None),
                                    ("per year", {"per": "year", "amount": float(line)}, None),
                                    ("month and year", [{"per": "month", "amount": float(line) / 4},
                                                        {"per": "year", "amount": float(line)}], None)):
            version = draft(session, *(budgets if isinstance(budgets, list) else [budgets]), warn_at=warn)
            ref = reference(session, version, active, backtests.Window(), INGESTED)
            check_exact(backtests.backtest(session, version.id, context=INGESTED, examples=3), ref, 3)
            flagged[name] = ref["rules"].get("ACME-BUDGET-900", {}).get("flagged_after", 0)
    # The line is exact: a cent under it flags the entry that reaches it; half of twice it warns there.
    assert flagged["a cent under"] == flagged["at"] + 1
    assert flagged["warned at"] == flagged["at"] + 1
    assert flagged["per month"] > 0 and flagged["per quarter"] > 0 and flagged["month and year"] > 0


def test_the_window_and_errors(sessions: sessionmaker[Session]) -> None:
    entries = list(generate(40, seed=2))
    active = stored_acme(sessions, entries)
    globex = (REPO / "rules" / "globex-plc.yaml").read_text(encoding="utf-8")
    with transaction(sessions) as session:
        other = add_ruleset_version(session, globex)
        draft = add_ruleset_version(session, ACME.replace("PARTNR: 950", "PARTNR: 900"))
        with pytest.raises(backtests.BacktestError, match="starts"):
            backtests.backtest(session, draft.id, window=backtests.Window(dt.date(2026, 3, 5), dt.date(2026, 3, 1)))
        with pytest.raises(backtests.BacktestError, match="one rule set"):
            backtests.backtest(session, draft.id, against=other.id)
        with pytest.raises(backtests.BacktestError, match="examples"):
            backtests.backtest(session, draft.id, examples=51)
        empty = backtests.backtest(session, draft.id, window=backtests.Window(dt.date(2030, 1, 1)),
                                   context=INGESTED)
        assert empty.entries_checked == 0 and empty.newly_flagged == {} and empty.rules
        assert backtests.backtest(session, active.id, context=INGESTED).rules == []
        summary = backtests.summary(empty)
        assert summary["window"] == {"from": "2030-01-01", "to": None, "clients": []}


def test_light_entries_hold_what_entries_hold() -> None:
    """Every field read from a stored record's JSON as a light entry has the value and type an Entry has."""
    import json

    from engine.entry_io import entry_record

    for e in entries_for(4, 60, crowded=False):
        values = json.loads(json.dumps(entry_record(e)), parse_float=Decimal)
        light = backtests._Light({name: (convert(values[name]) if name in values and convert else
                                         values.get(name, default))
                                  for name, (convert, default, _) in backtests._CONVERTERS.items()})
        for name in backtests.ALL_FIELDS:
            assert getattr(light, name) == getattr(e, name), name
            assert type(getattr(light, name)) is type(getattr(e, name)), name
    with pytest.raises(backtests._Unloaded):
        _ = backtests._Light({}).narrative


def test_rows_stream_whole_as_the_driver_gives_them_when_nothing_needs_converting(
        sessions: sessionmaker[Session]) -> None:
    """Untyped columns come as the driver's tuples, the row SQLAlchemy buffered first included; a column that
    needs converting (a date, on SQLite) comes through SQLAlchemy's rows. Every row, in order, either way."""
    from sqlalchemy import type_coerce
    from sqlalchemy.types import NullType

    entries = list(generate(2 * backtests.CHUNK + 7, seed=5))
    with transaction(sessions) as session:
        ingest(session, entries, context=INGESTED, breaker=CircuitBreaker(share=1.0, minimum=1 << 62))
    t = EntryFacts.__table__
    with sessions() as session, session.begin():
        untyped = select(t.c.entry_id, type_coerce(t.c.rate, NullType())).order_by(t.c.entry_id)
        chunks = list(backtests._stream(session, untyped))
        typed = list(backtests._stream(session, select(EntryRow.id, EntryRow.work_date).order_by(EntryRow.id)))
        ids = list(session.scalars(select(EntryRow.id).order_by(EntryRow.id)))
    assert [row[0] for chunk in chunks for row in chunk] == ids and len(ids) == len(entries)
    assert all(type(row) is tuple for chunk in chunks for row in chunk)
    assert len(chunks) >= 3 and max(len(chunk) for chunk in chunks) <= backtests.CHUNK
    assert [row[0] for chunk in typed for row in chunk] == ids
    assert all(isinstance(row[1], dt.date) for chunk in typed for row in chunk)
    if sessions.kw["bind"].dialect.name == "sqlite":  # type: ignore[union-attr]  # SQLite keeps dates as text
        assert all(type(row) is not tuple for chunk in typed for row in chunk)
