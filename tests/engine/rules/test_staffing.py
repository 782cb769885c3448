"""``attendance_limit``: at most N timekeepers billing one event (matter, day, codes, the event its narratives name),
the extra ones flagged by a stated order; checked at load with positions; the same on both backends."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE
from engine.rules.evaluate import evaluate
from engine.rules.loader import RuleSetError, load_file
from engine.rules.types import REGISTRY
from engine.rules.types.staffing import significant_words
from tests.conftest import CONTEXT, REPO, flagged, load_rules, make_entry, run

RULES = """
- id: ATT
  title: At most two at a deposition or hearing
  type: attendance_limit
  params: {max_timekeepers: 2, task_codes: [L330], activity_codes: [A109], events: [deposition, hearing]}
"""


def attend(source_id: str, who: str, rate: str | None = "500", **fields: object) -> Entry:
    return make_entry(**{"source_id": source_id, "timekeeper_source_id": who, "timekeeper_name": f"Name {who}",
                         "rate": rate, "hours_billed": "2.0", "law_firm_matter_id": "M-1", "utbms_task_code": "L330",
                         "utbms_activity_code": "A101", "narrative": "Attended deposition of R. Ortiz", **fields})


def test_within_the_limit_nothing_is_flagged(backend: str) -> None:
    ruleset = load_rules(RULES)
    assert run([attend("1", "a"), attend("2", "b")], ruleset, backend) == []


def test_the_lowest_rates_beyond_the_limit_are_flagged_with_the_whole_event(backend: str) -> None:
    ruleset = load_rules(RULES)
    batch = [attend("1", "a", "300"), attend("2", "b", "900"), attend("3", "c", "600"), attend("4", "a", "300")]
    violations = run(batch, ruleset, backend)
    assert flagged(violations) == {"1", "4"}  # both of a's entries; a counts once
    v = violations[0]
    assert sorted(v.contributing) == sorted(e.entry_uid for e in batch)
    assert v.evidence[-1].as_dict() == {
        "field": "timekeepers billing the deposition on matter M-1, 2026-03-10", "operator": "gt", "expected": 2,
        "actual": 3, "basis": "distinct timekeepers with the event's codes and phrase that day"}
    assert v.evidence[0].actual == ["Name b", "Name c"]
    assert v.message == "3 timekeepers billed the deposition on 2026-03-10 (limit 2); Name a is beyond the limit"


def test_ties_and_missing_rates_go_by_who_billed_first(backend: str) -> None:
    ruleset = load_rules(RULES)
    batch = [attend("1", "a", None), attend("2", "b", "500"), attend("3", "c", "500")]
    assert flagged(run(batch, ruleset, backend)) == {"1"}  # no rate ranks last
    batch = [attend("1", "a", "500"), attend("2", "b", "500"), attend("3", "c", "500")]
    assert flagged(run(batch, ruleset, backend)) == {"3"}


def test_keep_first_billed_flags_the_later_ones(backend: str) -> None:
    ruleset = load_rules(RULES.replace("events: [deposition, hearing]}", "events: [deposition], keep: first_billed}"))
    batch = [attend("1", "a", "300"), attend("2", "b", "900"), attend("3", "c", "600")]
    assert flagged(run(batch, ruleset, backend)) == {"3"}


def test_the_extra_ones_do_not_depend_on_the_order_of_the_batch() -> None:
    ruleset = load_rules(RULES)
    batch = [attend("1", "a", "300"), attend("2", "b", "900"), attend("3", "c", "600"), attend("4", "d", "450")]
    for order in itertools.permutations(batch):
        assert flagged(run(list(order), ruleset, "python")) == {"1", "4"}


def test_an_event_is_one_matter_one_day_the_listed_codes_and_the_same_phrase(backend: str) -> None:
    ruleset = load_rules(RULES)
    three = [attend("1", "a"), attend("2", "b")]
    assert run([*three, attend("3", "c", law_firm_matter_id="M-2")], ruleset, backend) == []
    assert run([*three, attend("3", "c", work_date="2026-03-11")], ruleset, backend) == []
    assert run([*three, attend("3", "c", utbms_task_code="L320")], ruleset, backend) == []
    assert run([*three, attend("3", "c", narrative="Attended hearing on the motion")], ruleset, backend) == []
    assert run([*three, attend("3", "c", billable=False)], ruleset, backend) == []
    # A listed activity code is enough, and the phrase is matched in any case and spacing, as whole words.
    assert flagged(run([*three, attend("3", "c", "100", utbms_task_code="L120", utbms_activity_code="A109",
                                       narrative="DEFENDED  Deposition")], ruleset, backend)) == {"3"}
    assert run([*three, attend("3", "c", narrative="Attended depositions")], ruleset, backend) == []


def test_the_first_listed_phrase_names_the_event() -> None:
    ruleset = load_rules(RULES)
    batch = [attend("1", "a", "900"), attend("2", "b", "800"),
             attend("3", "c", "100", narrative="Hearing prep: attended deposition of R. Ortiz")]
    violations = run(batch, ruleset, "python")
    assert flagged(violations) == {"3"}
    assert violations[0].message.startswith("3 timekeepers billed the deposition")


def test_shared_words_split_two_events_of_one_day(backend: str) -> None:
    ruleset = load_rules(RULES.replace("events: [deposition, hearing]}", "min_shared_words: 1}"))
    batch = [attend("1", "a"), attend("2", "b"), attend("3", "c", narrative="Defended deposition of K. Lee"),
             attend("4", "d", narrative="Attended the Lee deposition")]
    assert run(batch, ruleset, backend) == []  # Ortiz: a, b; Lee: c, d
    batch.append(attend("5", "e", "100", narrative="Second chair, Lee deposition"))
    assert flagged(run(batch, ruleset, backend)) == {"5"}
    assert significant_words("Attended the deposition of R. Ortiz re exhibits", "deposition") == {"ortiz",
                                                                                                   "exhibits"}


@pytest.mark.parametrize(("params", "message", "token"), [
    ("{max_timekeepers: 2, task_codes: [L999]}", "unknown UTBMS code 'L999'", "L999"),
    ("{max_timekeepers: 2, activity_codes: [L330]}", "L330 is a UTBMS task code, not an activity code", "L330"),
    ("{max_timekeepers: 2, task_codes: [L330], events: [call, Call]}", "'Call' is listed twice", "Call"),
    ("{max_timekeepers: 0, task_codes: [L330]}", "0 is less than the minimum of 1", "0"),
    ("{max_timekeepers: 2}", "needs at least one of: activity_codes, task_codes", None),
])
def test_rules_check_reports_mistakes_at_their_position(params: str, message: str, token: str | None) -> None:
    text = f"- id: ATT\n  title: t\n  type: attendance_limit\n  params: {params}\n"
    with pytest.raises(RuleSetError) as caught:
        load_rules(text, file="att.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(message in p for p in problems), problems
    line = 4 + 3  # the rules block starts after the three header lines
    column = 5 if token is None else params.index(token) + len("  params: ") + 3  # (None: the params key)
    assert any(p.startswith(f"att.yaml:{line}:{column}:") for p in problems), problems


def test_describe_says_what_is_checked() -> None:
    ruleset = load_rules(RULES)
    lines = REGISTRY["attendance_limit"].describe(ruleset.rules[0], ruleset)  # type: ignore[attr-defined]
    assert lines[0].startswith("At most 2 timekeeper(s) may bill one event") and "A109, L330" in lines[0]
    assert "deposition, hearing" in lines[1] and "lower rates" in lines[-1]


# Both backends, over generated staffing and budgets -------------------------------------------------------

BOTH = load_rules("""
- id: ATT
  title: attendance
  type: attendance_limit
  params: {max_timekeepers: 2, task_codes: [L330], activity_codes: [A105], min_shared_words: 1}
- id: ATT-FIRST
  title: attendance, first billed
  type: attendance_limit
  severity: warning
  params: {max_timekeepers: 1, activity_codes: [A105], events: [call], keep: first_billed}
- id: BUD
  title: budget
  type: budget
  params:
    warn_at: 0.75
    include_expenses: true
    budgets:
      - {matter: M-1, amount: 3000}
      - {matter: M-1, phase: L300, per: month, amount: 1200}
      - {per: quarter, amount: 2500}
- id: PER-ENTRY
  title: long entry
  type: max_hours_per_entry
  params: {max_hours: 3}
""")


@st.composite
def batches(draw: st.DrawFn) -> list[Entry]:
    size = draw(st.integers(1, 18))
    out = []
    for i in range(size):
        kind = draw(st.sampled_from(["time", "time", "time", "expense"]))
        rate = draw(st.sampled_from([None, Decimal("250"), Decimal("500"), Decimal("500.005"), Decimal("900")]))
        hours = draw(st.sampled_from([Decimal("0.5"), Decimal("1.0"), Decimal("2.5"), Decimal("4")]))
        out.append(make_entry(
            source_id=f"g{i}", entry_kind=kind, timekeeper_source_id=draw(st.sampled_from(["a", "b", "c", "d"])),
            law_firm_matter_id=draw(st.sampled_from(["M-1", "M-1", "M-2", None])),
            work_date=draw(st.sampled_from(["2026-03-10", "2026-03-10", "2026-03-11", "2026-04-02"])),
            rate=rate, hours_billed=hours if kind == "time" else None, quantity=hours,
            adjustment_amount=draw(st.sampled_from([None, Decimal("-100.00")])),
            utbms_task_code=draw(st.sampled_from([None, "L330", "L310", "L120"])),
            utbms_activity_code=draw(st.sampled_from([None, "A105", "A101"])),
            utbms_expense_code="E115" if kind == "expense" else None,
            fee_basis="unit" if kind == "expense" else "hourly",
            billable=draw(st.sampled_from([True, True, False])), no_charge=draw(st.sampled_from([False, False, True])),
            narrative=draw(st.sampled_from(["Attended deposition of Ortiz", "Deposition of Lee", "Internal call",
                                            "Call with Ortiz", "Drafted brief", "attended the Ortiz deposition"]))))
    return out


@pytest.mark.skipif(not DURABLE_AVAILABLE, reason="durable-rules does not import here")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_backends_find_the_same_staffing_and_budget_violations(batch: list[Entry]) -> None:
    by_python = [v.as_dict() for v in evaluate(batch, BOTH, context=CONTEXT, backend="python")]
    by_durable = [v.as_dict() for v in evaluate(batch, BOTH, context=CONTEXT, backend="durable")]
    assert by_durable == by_python


# rules/initech.yaml: generated Initech staffing and fees, both backends, every rule reached -------------------

INITECH = load_file(REPO / "rules" / "initech.yaml")
WORK = [  # narrative, task, activity: alternately attendance, internal calls and other work
    ("Attended deposition of Milton Waddams", "L330", "A109"), ("Internal call on deposition strategy", "L120", "A105"),
    ("Second chair, Waddams deposition", "L330", "A101"), ("Internal call on deposition strategy", "L310", "A105"),
    ("Defended deposition of P. Gibbons", "L330", "A109"), ("Attended hearing on TPS motion", "L450", "A109"),
    ("Drafted document requests", "L310", "A103"),
]
PEOPLE = [("TK4001", "Lumbergh, Bill", "800"), ("TK4002", "Bolton, Michael", "450"),
          ("TK4003", "Nagheenanajar, Samir", "500"), ("TK4004", "Waddams, Milton", "450")]


@st.composite
def initech_batches(draw: st.DrawFn) -> list[Entry]:
    out = []
    team = draw(st.permutations(PEOPLE))
    for i in range(draw(st.integers(4, 20))):
        ledes_id, name, rate = team[(i + draw(st.integers(0, 3))) % len(team)]  # (simplest draws vary people too)
        expense = draw(st.integers(0, 5)) == 5
        work = WORK[(i // 3 + draw(st.integers(0, len(WORK) - 1))) % len(WORK)]
        hours = draw(st.sampled_from([Decimal("0.5"), Decimal("2.0"), Decimal("6.5"), Decimal("9.9")]))
        out.append(make_entry(
            source_id=f"i{i}", ledes_client_id=draw(st.sampled_from(["INITECH", "INITECH", "INITECH", "ACME01"])),
            law_firm_matter_id=draw(st.sampled_from(["2026-0301", "2026-0301", "2026-0302"])),
            work_date=draw(st.sampled_from(["2026-03-12", "2026-03-12", "2026-03-12", "2026-04-01", "2025-12-31"])),
            timekeeper_ledes_id=ledes_id, timekeeper_name=name,
            rate=Decimal(draw(st.sampled_from([rate, "1250.005"]))) if not expense else Decimal("900"),
            entry_kind="expense" if expense else "time", fee_basis="unit" if expense else "hourly",
            hours_billed=None if expense else hours, quantity=Decimal(1) if expense else hours,
            utbms_expense_code="E115" if expense else None,
            utbms_task_code=None if expense else work[1], utbms_activity_code=None if expense else work[2],
            adjustment_amount=draw(st.sampled_from([None, Decimal("-250.00")])),
            no_charge=draw(st.sampled_from([False, False, False, True])),
            narrative="Court reporter" if expense else work[0]))
    return out


@pytest.mark.skipif(not DURABLE_AVAILABLE, reason="durable-rules does not import here")
def test_backends_agree_on_the_initech_rules_and_reach_each_of_them() -> None:
    reached: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(batch=initech_batches())
    def check(batch: list[Entry]) -> None:
        by_python = [v.as_dict() for v in evaluate(batch, INITECH, context=CONTEXT, backend="python")]
        by_durable = [v.as_dict() for v in evaluate(batch, INITECH, context=CONTEXT, backend="durable")]
        assert by_durable == by_python
        reached.update(v["rule_id"] for v in by_python)

    check()
    assert reached == {rule.id for rule in INITECH.rules}
