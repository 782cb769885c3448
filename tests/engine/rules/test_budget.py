"""``budget``: running totals per matter, phase and period in work-date order, exact decimals, a warning band and
the entries that cross each line; what the store carries in gives the same findings as every entry given."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import Entry
from engine.rules.evaluate import evaluate
from engine.rules.loader import RuleSetError
from engine.rules.types import REGISTRY
from engine.rules.types.staffing import BudgetRule, Carried, charged
from tests.conftest import CONTEXT, flagged, load_rules, make_entry, run

RULES = """
- id: BUD
  title: Matter budget
  type: budget
  params:
    warn_at: 0.8
    budgets:
      - {matter: M-1, amount: 1000}
"""


def fee(source_id: str, value: str, day: int = 10, **fields: object) -> Entry:
    return make_entry(**{"source_id": source_id, "law_firm_matter_id": "M-1", "work_date": f"2026-03-{day:02d}",
                         "hours_billed": "1.0", "rate": value, "amount": value, "utbms_task_code": "L310",
                         **fields})


def test_warned_from_the_share_over_from_the_budget_in_work_date_order(backend: str) -> None:
    ruleset = load_rules(RULES)
    batch = [fee("c", "300", day=12), fee("a", "500", day=10), fee("b", "300", day=11), fee("d", "100", day=13)]
    by_id = {v.entry_uid.split(":")[2]: v for v in run(batch, ruleset, backend)}
    assert set(by_id) == {"b", "c", "d"}  # a: 500; b: 800 (80%, warned); c: 1100 (over); d: 1200
    assert by_id["b"].severity == "warning" and by_id["c"].severity == "error"
    assert by_id["b"].evidence[-1].as_dict() == {
        "field": "fees charged to matter M-1, running total", "operator": "ge", "expected": "800.0",
        "actual": "800", "basis": "80% of the budget of 1000"}
    assert by_id["c"].evidence[-1].as_dict() == {
        "field": "fees charged to matter M-1, running total", "operator": "gt", "expected": "1000",
        "actual": "1100", "basis": "the budget of 1000"}
    assert by_id["c"].message == "matter M-1: 1100 charged against a budget of 1000 (110%)"
    assert by_id["c"].contributing == [by_id["c"].entry_uid]


def test_one_date_goes_in_the_order_given_and_decimals_are_exact() -> None:
    ruleset = load_rules(RULES)
    batch = [fee(str(i), "99.99") for i in range(10)] + [fee("x", "0.1"), fee("y", "0.0000001")]
    by_id = {v.entry_uid.split(":")[2]: v for v in run(batch, ruleset, "python")}
    assert set(by_id) == {"8", "9", "x", "y"}  # 8 x 99.99 = 799.92 is under 80%; the 9th makes 899.91
    assert by_id["x"].severity == "warning"  # 1000.0 exactly: at the budget, not over it
    assert by_id["x"].evidence[-1].actual == Decimal("1000.00")
    assert by_id["y"].severity == "error" and by_id["y"].evidence[-1].actual == Decimal("1000.0000001")


def test_what_counts_net_of_adjustments_billable_charged_fees_of_the_matter(backend: str) -> None:
    ruleset = load_rules(RULES)
    base = [fee("a", "790")]
    assert run([*base, fee("b", "100", adjustment_amount="-95")], ruleset, backend) == []  # 795
    for other in (fee("b", "20", billable=False), fee("b", "20", no_charge=True),
                  fee("b", "20", law_firm_matter_id="M-2"),
                  fee("b", "20", entry_kind="expense", fee_basis="unit", hours_billed=None)):
        assert run([*base, other], ruleset, backend) == []
    assert flagged(run([*base, fee("b", "20")], ruleset, backend)) == {"b"}
    with_expenses = load_rules(RULES.replace("warn_at: 0.8", "warn_at: 0.8\n    include_expenses: true"))
    assert flagged(run([*base, fee("b", "20", entry_kind="expense", fee_basis="unit", hours_billed=None)],
                       with_expenses, backend)) == {"b"}
    assert charged(fee("q", "10", amount=None, rate="12.5", quantity="2"), False) == Decimal("25.0")


def test_phases_windows_and_periods_keep_their_own_totals(backend: str) -> None:
    ruleset = load_rules("""
- id: BUD
  title: Budgets
  type: budget
  params:
    budgets:
      - {matter: M-1, phase: L300, amount: 500}
      - {matter: M-1, per: month, amount: 700}
      - {matter: M-1, from: 2026-04-01, to: 2026-04-30, amount: 100, label: April}
      - {per: year, amount: 600}
""")
    batch = [fee("a", "400", day=1, utbms_task_code="L320"), fee("b", "200", day=2, utbms_task_code="L210"),
             fee("c", "200", day=3, utbms_task_code="L330"), fee("d", "150", work_date="2026-04-01"),
             fee("e", "599", law_firm_matter_id="M-2")]
    by_id: dict[str, set[str]] = {}
    for v in run(batch, ruleset, backend):
        by_id.setdefault(v.entry_uid.split(":")[2], set()).update(ev.field for ev in v.evidence)
    total = "fees charged to {}, running total".format
    assert by_id == {  # b: 600 in the month and in the year: within both; e: another matter's year, 599
        "c": {total("matter M-1, phase L300"), total("matter M-1, 2026-03"), total("matter M-1, 2026")},
        "d": {total("matter M-1, phase L300"), total("April"), total("matter M-1, 2026")},
    }


@pytest.mark.parametrize("seed", range(6))
def test_carried_totals_give_what_every_entry_gives(seed: int) -> None:
    """The store passes only the entries from a date on, with the totals before it: the same findings."""
    ruleset = load_rules("""
- id: BUD
  title: Budgets
  type: budget
  effective: {from: 2026-03-03}
  params:
    warn_at: 0.5
    include_expenses: true
    budgets:
      - {matter: M-1, amount: 2000}
      - {phase: L300, per: month, amount: 900}
""")
    rng = random.Random(seed)
    batch = [fee(f"e{i}", str(rng.choice([50, 120, 333, 410])), day=rng.randint(1, 28),
                 law_firm_matter_id=rng.choice(["M-1", "M-1", "M-2"]), utbms_task_code=rng.choice(["L310", "L210"]))
             for i in range(30)]
    whole = {(v.entry_uid, v.severity, v.message) for v in run(batch, ruleset, "python")}
    since = {"M-1": dt.date(2026, 3, rng.randint(2, 20)), "M-2": dt.date(2026, 3, rng.randint(2, 20))}
    rule = ruleset.rules[0]

    class Row:
        def __init__(self, e: Entry):
            self.__dict__.update(e.__dict__)
            self.entry_kind = e.entry_kind.value
            self.charged = charged(e, True)

    before = [Row(e) for e in batch if e.work_date < since[e.law_firm_matter_id]]  # type: ignore[index]
    carried = Carried(since, BudgetRule().carried_sums(rule, ruleset, before))
    rng.shuffle(batch)  # a stored entry before its matter's date may still be given (for its day): not counted twice
    batch.sort(key=lambda e: int(e.source_id[1:]))
    given_ = {(v.entry_uid, v.severity, v.message) for v in evaluate(batch, ruleset, context=CONTEXT,
                                                                      backend="python", carried={"BUD": carried})}
    later = {uid for uid, _, _ in whole if next(e for e in batch if e.entry_uid == uid).work_date
             >= since[next(e for e in batch if e.entry_uid == uid).law_firm_matter_id]}  # type: ignore[index]
    assert {f for f in given_ if f[0] in later} == {f for f in whole if f[0] in later}


@pytest.mark.parametrize(("rule", "message", "line", "column"), [
    ("  when: {field: rate, op: gt, value: 1}\n  params: {budgets: [{amount: 1}]}", "narrow it with each budget",
     7, 5),
    ("  params: {budgets: [{amount: 1, phase: L999}]}", "unknown UTBMS code 'L999'", 7, 43),
    ("  params: {budgets: [{amount: 1, phase: A101}]}", "A101 is a UTBMS activity code, not a task or phase", 7, 43),
    ("  params: {budgets: [{amount: 1, from: 2026-05-01, to: 2026-04-01}]}", "the end date is before", 7, 58),
    ("  params: {budgets: [{amount: 1, matter: M}, {matter: M, amount: 2}]}", "the same matter, phase and dates as "
     "budget 0", 7, 48),
    ("  params: {budgets: [{amount: 0}]}", "0 is less than or equal to the minimum of 0", 7, 33),
    ("  params: {warn_at: 1, budgets: [{amount: 1}]}", "1 is greater than or equal to the maximum of 1", 7, 23),
])
def test_rules_check_reports_mistakes_at_their_position(rule: str, message: str, line: int, column: int) -> None:
    with pytest.raises(RuleSetError) as caught:
        load_rules(f"- id: BUD\n  title: t\n  type: budget\n{rule}\n", file="bud.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(message in p and p.startswith(f"bud.yaml:{line}:{column}:") for p in problems), problems


def test_describe_lists_each_budget_and_the_severities() -> None:
    second = "\n      - {phase: L100, per: quarter, amount: 50}"
    ruleset = load_rules(RULES.replace("- {matter: M-1, amount: 1000}", "- {matter: M-1, amount: 1000}" + second))
    lines = REGISTRY["budget"].describe(ruleset.rules[0], ruleset)  # type: ignore[attr-defined]
    assert "  - matter M-1: 1000" in lines
    assert "  - matter (each matter), phase L100, each quarter: 50" in lines
    assert any("reaches 80% of its budget" in line for line in lines)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amounts=st.lists(st.decimals(min_value=Decimal("-50"), max_value=Decimal("700"), places=4), min_size=1,
                        max_size=12))
def test_the_running_total_is_the_exact_sum_so_far(amounts: list[Decimal]) -> None:
    ruleset = load_rules(RULES)
    batch = [fee(f"e{i}", str(a), day=1 + i) for i, a in enumerate(amounts)]
    found = {v.entry_uid: v for v in run(batch, ruleset, "python")}
    total = Decimal(0)
    for e, a in zip(batch, amounts, strict=True):
        total += a
        if total > 1000:
            assert found[e.entry_uid].severity == "error" and found[e.entry_uid].evidence[-1].actual == total
        elif total >= 800:
            assert found[e.entry_uid].severity == "warning" and found[e.entry_uid].evidence[-1].actual == total
        else:
            assert e.entry_uid not in found
