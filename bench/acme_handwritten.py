"""A hand-written checker for the per-entry rules of ``rules/acme-corp.yaml``: the benchmark's baseline.

This is what an engineer would write for one client without a rules engine: one function over an
:class:`~engine.model.Entry` returning the ids of the rules it breaks, with the guideline's values
written in as constants. It reads nothing from the engine but the UTBMS litigation code list (data),
so it doubles as an independent reference for what the engine's compiled rules should flag.

It is written for one revision of the rule file (``WRITTEN_FOR``); the benchmark says so when the
file has changed since, because the two can then disagree for that reason alone.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import engine
from engine.model import Entry

UTBMS_LITIGATION = Path(engine.__file__).resolve().parent / "data" / "utbms" / "litigation.csv"


def _litigation_tasks() -> frozenset[str]:
    with UTBMS_LITIGATION.open(encoding="utf-8", newline="") as fh:
        return frozenset(row["code"] for row in csv.DictReader(fh) if row["set"] == "litigation"
                         and row["kind"] == "task")


WRITTEN_FOR = "09ae91290a7d67e6"  # RuleSet.revision of rules/acme-corp.yaml this function implements
CURRENCY = "USD"  # rate and expense caps apply to entries in USD or without a currency

# ACME-RATE-001: a matter override by classification first, then the timekeeper's cap, then the class cap.
RATE_EXEMPT_BASES = frozenset({"flat", "fixed_template", "contingency"})
RATE_MATTER_OVERRIDES = {"2026-0042": {"PARTNR": Decimal(925), "ASSOC": Decimal(600)}}
RATE_BY_TIMEKEEPER = {"TK1001": Decimal(1050)}
RATE_BY_CLASSIFICATION = {"PARTNR": Decimal(950), "OFCOUN": Decimal(850), "ASSOC": Decimal(625),
                          "PARALG": Decimal(275), "LGLAST": Decimal(225)}
# ACME-STAFF-001
APPROVED_TIMEKEEPERS = frozenset(f"TK{n}" for n in range(1001, 1011))
# ACME-CODE-001 (any kind of entry; the rule file blocks no activity code)
BLOCKED_TASKS = frozenset({"L140"})
BLOCKED_EXPENSES = frozenset({"E103", "E104", "E114"})
# ACME-CODE-002 (billable entries only)
LITIGATION_TASKS = _litigation_tasks()
# ACME-NARR-001 / 002 (time entries)
MIN_NARRATIVE = 25
VAGUE = re.compile(
    r"(?<!\w)(?:review\s+file|attention\s+to|work\s+on|handle\s+matter|various\s+matters|follow\s+up"
    r"|various\s+issues|miscellaneous)(?!\w)",
    re.IGNORECASE,
)
# ACME-BLOCK-001: the default separators of the block_billing rule type (a full stop ends a task unless it
# follows an initial or Mr/Mrs/Ms/Dr/No)
TASK_SEPARATORS = re.compile(r";|\s+/\s+|\n|\.(?<!\b[A-Z]\.)(?<!\bMrs\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bNo\.)"
                             r"\s+(?=[A-Z])")
BLOCK_MIN_TASKS = 2
BLOCK_MIN_HOURS = Decimal("0.5")
# ACME-INCR-001 / ACME-HOURS-001
INCREMENT = Decimal("0.1")
MAX_HOURS = Decimal(8)
ZERO = Decimal(0)
# ACME-EXP-001
EXPENSE_CAP_PER_ENTRY = {"E111": Decimal(75), "E110": Decimal(350)}
EXPENSE_CAP_PER_UNIT = {"E101": Decimal("0.10"), "E109": Decimal("0.70")}
# ACME-TRAVEL-001: travel is found by the narrative only (no activity code is given in the rule file)
TRAVEL_SHARE = Decimal("0.5")
TRAVEL_TEXT = re.compile(r"(?i)\btravel(l?ed|l?ing)?\b")
# ACME-LATE-001
MAX_AGE_DAYS = 90
# ACME-PARA-001
PARALEGALS = frozenset({"PARALG", "LGLAST"})
ATTORNEY_TASKS = frozenset({"L210", "L250"})
ATTORNEY_ACTIVITY = "A102"
# ACME-INTERN-001 (shadow)
INTERNS = frozenset({"LGLINT", "TRANEE"})
INTERN_TEXT = re.compile(r"(?i)summer associate")


def check_entry(e: Entry, as_of: dt.date | None, period_start: dt.date | None,
                period_end: dt.date | None) -> list[str]:
    """The ids of the Acme per-entry rules ``e`` breaks (aggregate rules are not per-entry)."""
    broken: list[str] = []
    kind = e.entry_kind
    tk = e.timekeeper_ledes_id
    cls = e.timekeeper_classification
    task = e.utbms_task_code
    activity = e.utbms_activity_code
    expense_code = e.utbms_expense_code
    rate = e.rate
    text = e.narrative

    if kind == "time":
        hours = e.hours_billed
        basis = e.fee_basis
        currency = e.currency
        if rate is not None and basis not in RATE_EXEMPT_BASES and (currency is None or currency == CURRENCY):
            cap = None
            override = RATE_MATTER_OVERRIDES.get(e.law_firm_matter_id)
            if override is not None:
                cap = override.get(cls)
            if cap is None:
                cap = RATE_BY_TIMEKEEPER.get(tk)
            if cap is None:
                cap = RATE_BY_CLASSIFICATION.get(cls)
            if cap is not None and rate > cap:
                broken.append("ACME-RATE-001")
        if tk not in APPROVED_TIMEKEEPERS:
            broken.append("ACME-STAFF-001")
        if e.billable and (task not in LITIGATION_TASKS or activity is None):
            broken.append("ACME-CODE-002")
        if len(text) < MIN_NARRATIVE:
            broken.append("ACME-NARR-001")
        if VAGUE.search(text):
            broken.append("ACME-NARR-002")
        if hours is not None:
            if hours > BLOCK_MIN_HOURS and sum(1 for piece in TASK_SEPARATORS.split(text)
                                               if piece.strip()) >= BLOCK_MIN_TASKS:
                broken.append("ACME-BLOCK-001")
            if basis == "hourly" and hours % INCREMENT != ZERO:
                broken.append("ACME-INCR-001")
            if hours > MAX_HOURS:
                broken.append("ACME-HOURS-001")
        if TRAVEL_TEXT.search(text):
            units = e.hours_worked if e.hours_worked is not None else e.quantity
            billed = e.amount
            if billed is None and e.quantity is not None and rate is not None:
                billed = e.quantity * rate
            if units is not None and rate is not None and billed is not None:
                full = units * rate
                if full != ZERO:
                    net = billed + e.adjustment_amount if e.adjustment_amount is not None else billed
                    if net / full > TRAVEL_SHARE:
                        broken.append("ACME-TRAVEL-001")
    elif kind == "expense":
        if e.billable and expense_code is None:
            broken.append("ACME-CODE-002")
        if e.currency is None or e.currency == CURRENCY:
            cap = EXPENSE_CAP_PER_ENTRY.get(expense_code)
            if cap is not None:
                billed = e.amount
                if billed is None and e.quantity is not None and rate is not None:
                    billed = e.quantity * rate
                if billed is not None and billed > cap:
                    broken.append("ACME-EXP-001")
            cap = EXPENSE_CAP_PER_UNIT.get(expense_code)
            if cap is not None and rate is not None and rate > cap:
                broken.append("ACME-EXP-001")

    if task in BLOCKED_TASKS or expense_code in BLOCKED_EXPENSES:
        broken.append("ACME-CODE-001")
    work_date = e.work_date
    if as_of is not None and (as_of - work_date).days > MAX_AGE_DAYS:
        broken.append("ACME-LATE-001")
    if (period_start is not None and work_date < period_start) or (period_end is not None and work_date > period_end):
        broken.append("ACME-PERIOD-001")
    if cls in PARALEGALS and (task in ATTORNEY_TASKS or activity == ATTORNEY_ACTIVITY):
        broken.append("ACME-PARA-001")
    if cls in INTERNS or INTERN_TEXT.search(text):
        broken.append("ACME-INTERN-001")
    return broken


def run(entries: list[Entry], as_of: dt.date | None, period_start: dt.date | None,
        period_end: dt.date | None) -> list[tuple[int, str]]:
    """(entry index, rule id) for every rule broken, like the engine's backends return positions."""
    hits: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        for rule_id in check_entry(e, as_of, period_start, period_end):
            hits.append((i, rule_id))
    return hits
