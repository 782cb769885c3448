"""Realistic generated entries for the demo, the benchmarks and the tests (deterministic per seed).

A litigation team billing Acme Corporation for a month: partners, associates and paralegals with
UTBMS-coded time, expenses, and the usual share of problems (rates over the cap, vague or block-billed
narratives, quarter-hour increments, duplicates, long days, travel at full rate, late time).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal

from engine.model import Entry
from engine.rules.features import EvaluationContext

TIMEKEEPERS = [
    # ledes id, name, classification, usual rate
    ("TK1001", "Whitfield, Eleanor", "PARTNR", "1050.00"),
    ("TK1002", "Okafor, Daniel", "PARTNR", "925.00"),
    ("TK1003", "Lindqvist, Maja", "OFCOUN", "825.00"),
    ("TK1004", "Reyes, Carlos", "ASSOC", "610.00"),
    ("TK1005", "Chen, Grace", "ASSOC", "575.00"),
    ("TK1006", "Novak, Peter", "ASSOC", "540.00"),
    ("TK1007", "Haddad, Samira", "PARALG", "265.00"),
    ("TK1008", "Brennan, Liam", "PARALG", "240.00"),
    ("TK1009", "Adeyemi, Tola", "LGLAST", "210.00"),
    ("TK1010", "Moreau, Claire", "ASSOC", "495.00"),
    ("TK1011", "Fischer, Jonas", "ASSOC", "600.00"),  # not on the approved list
    ("TK1012", "Patel, Arjun", "LGLINT", "150.00"),  # summer associate
]
MATTERS = [("2026-0042", "ACME-LIT-7781", "Acme v. Borealis Logistics"),
           ("2026-0017", "ACME-LIT-7702", "In re Acme Product Recall"),
           ("2025-0311", "ACME-LIT-7530", "Acme adv. Delmar Holdings")]
TASKS = [  # task, activity, narrative
    ("L110", "A104", "Reviewed and analyzed shipping records produced by Borealis for damages model"),
    ("L120", "A101", "Planned strategy for motion practice and prepared outline of key arguments"),
    ("L130", "A105", "Telephone conference with damages expert regarding lost profits methodology"),
    ("L160", "A106", "Conferred with client general counsel on settlement range and authority"),
    ("L210", "A103", "Drafted answer and affirmative defenses to amended counterclaim"),
    ("L230", "A105", "Prepared for and attended Rule 16 scheduling conference with opposing counsel"),
    ("L250", "A103", "Revised opposition to motion to dismiss and incorporated new case law"),
    ("L310", "A103", "Drafted first set of requests for production directed to Delmar"),
    ("L320", "A104", "Reviewed 240 documents in the third production for privilege and responsiveness"),
    ("L330", "A101", "Prepared outline for deposition of Borealis operations manager"),
    ("L330", "A111", "Travel to Chicago for deposition of Borealis operations manager"),
    ("L340", "A105", "Met and conferred with opposing counsel about deficiencies in interrogatory answers"),
    ("L350", "A103", "Drafted motion to compel production of dispatch logs and supporting declaration"),
    ("L120", "A102", "Researched Seventh Circuit authority on economic loss doctrine for brief"),
    ("L440", "A104", "Reviewed trial exhibits list and flagged authenticity objections"),
]
VAGUE = ["Review file", "Attention to matter", "Work on discovery", "Follow up", "Correspondence re case",
         "Various matters"]
BLOCKED = [("L140", "A104", "Organized and indexed pleadings binder for the file room")]
EXPENSES = [  # code, narrative, unit cost, units range, unit of measure
    ("E101", "Photocopies of deposition exhibits", ("0.10", "0.25"), (50, 900), "page"),
    ("E107", "Courier delivery of hearing binders to chambers", ("45.00", "120.00"), (1, 1), "each"),
    ("E109", "Mileage to Delmar offices for document inspection", ("0.67", "0.70"), (20, 140), "mile"),
    ("E110", "Hotel, Chicago, deposition of Borealis operations manager", ("289.00", "425.00"), (1, 1), "each"),
    ("E111", "Working dinner with expert during deposition preparation", ("38.00", "110.00"), (1, 1), "each"),
    ("E112", "Court filing fee for motion to compel", ("400.00", "400.00"), (1, 1), "each"),
    ("E115", "Court reporter and transcript, deposition of operations manager", ("1250.00", "1900.00"), (1, 1), "each"),
]
SAMPLE_START = dt.date(2026, 3, 1)
SAMPLE_DAYS = 31
INVOICE_AFTER = 5  # days after the period's end the sample invoice is checked
TENTH = Decimal("0.1")
CENT = Decimal("0.01")


def _money(rng: random.Random, low: str, high: str) -> Decimal:
    lo, hi = int(Decimal(low) * 100), int(Decimal(high) * 100)
    return Decimal(rng.randint(lo, hi)) / 100


def firm(timekeepers: int) -> list[tuple[str, str, str, str]]:
    """The sample team, grown to ``timekeepers`` people with extra (unapproved) staff for large volumes."""
    people = list(TIMEKEEPERS)
    for n in range(max(0, timekeepers - len(people))):
        _, _, classification, rate = TIMEKEEPERS[n % 10]
        people.append((f"TK{3000 + n}", f"Staff {3000 + n}, Sample", classification, rate))
    return people


def suggested_context(start: dt.date = SAMPLE_START, days: int = SAMPLE_DAYS) -> EvaluationContext:
    """The context generated entries are meant to be checked in: their dates as the billing period, as of a few
    days after it ends (as a monthly invoice would be). Only the deliberately late entries are then late."""
    end = start + dt.timedelta(days=days - 1)
    return EvaluationContext(as_of=end + dt.timedelta(days=INVOICE_AFTER), period_start=start, period_end=end)


def generate(count: int, *, seed: int = 7, start: dt.date = SAMPLE_START, days: int = SAMPLE_DAYS,
             problem_rate: float = 1.0, timekeepers: int | None = None) -> Iterator[Entry]:
    """``count`` entries dated from ``start`` over ``days``; ``problem_rate`` scales how often problems occur.

    With ``timekeepers`` above the sample team's 12, the firm grows (so a large batch keeps a realistic
    number of entries per timekeeper and day); the added staff are not on Acme's approved list.
    """
    rng = random.Random(seed)
    team = firm(timekeepers or len(TIMEKEEPERS))
    regulars = team[:10] + team[len(TIMEKEEPERS):]
    chance = lambda p: rng.random() < p * problem_rate  # noqa: E731
    previous: Entry | None = None
    for n in range(count):
        if previous is not None and chance(0.01):
            dup = previous.model_copy(update={"source_id": f"E{n:07d}", "source_version": "1"})
            previous = None
            yield dup
            continue
        tk_id, name, cls, usual = rng.choice(regulars if not chance(0.03) else team)
        firm_matter, client_matter, matter_name = rng.choice(MATTERS)
        work_date = start + dt.timedelta(days=rng.randrange(days))
        if chance(0.01):
            work_date -= dt.timedelta(days=rng.randint(92, 150))  # late time
        common = dict(
            source_system="sample", source_tenant="demo-firm", source_id=f"E{n:07d}", source_version="1",
            matter_source_id=firm_matter, law_firm_matter_id=firm_matter, client_matter_id=client_matter,
            matter_name=matter_name, client_source_id="C-0001", client_name="Acme Corporation",
            ledes_client_id="ACME01", timekeeper_source_id=tk_id, timekeeper_ledes_id=tk_id,
            timekeeper_name=name, timekeeper_classification=cls, work_date=work_date, currency="USD",
        )
        if rng.random() < 0.18:
            code, text, (low, high), (umin, umax), unit = rng.choice(EXPENSES)
            units = Decimal(rng.randint(umin, umax))
            cost = _money(rng, low, high)
            entry = Entry(**common, entry_kind="expense", fee_basis="unit", quantity=units, rate=cost,
                          amount=(units * cost).quantize(CENT), unit_of_measure=unit, utbms_expense_code=code,
                          narrative=text)
        else:
            task, activity, text = rng.choice(TASKS)
            hours = Decimal(rng.randint(1, 45)) * TENTH
            if chance(0.04):
                hours = Decimal(rng.choice(["0.25", "0.75", "1.25", "2.33"]))
            if chance(0.02):
                hours = Decimal(rng.randint(85, 120)) * TENTH
            rate = Decimal(usual)
            if chance(0.05):
                rate += Decimal(rng.choice([25, 50, 75, 100]))
            if chance(0.04):
                text = rng.choice(VAGUE)
            elif chance(0.03):
                other = rng.choice(TASKS)[2]
                text = f"{text}; {other[0].lower()}{other[1:]}"
                hours += Decimal(1)
            if chance(0.015):
                task, activity, text = rng.choice(BLOCKED)
            if chance(0.02):
                task = None
            amount = (hours * rate).quantize(CENT)
            adjustment = None
            if text.startswith("Travel") and not chance(0.3):
                adjustment = -(amount / 2).quantize(CENT)  # travel billed at half rate, as agreed
            flat = chance(0.01)
            entry = Entry(**common, entry_kind="time", fee_basis="flat" if flat else "hourly",
                          hours_worked=hours, hours_billed=hours, quantity=Decimal(1) if flat else hours,
                          rate=amount if flat else rate, amount=amount, adjustment_amount=adjustment,
                          utbms_task_code=task, utbms_activity_code=activity, narrative=text,
                          unit_of_measure="hour")
        previous = entry
        yield entry
