"""rate_cap and expense_cap schedules with effective dates, the standard-rate forms of rate_cap, rate freezes,
stated precedence, travel against the standard rate, and the lines ``describe`` gives a reviewer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.model import Entry
from engine.rules.compiler import compile_ruleset, split_for_durable
from engine.rules.loader import RuleSetError
from engine.rules.types import type_of
from tests.conftest import decisive, flagged, load_rules, locate, make_entry, make_expense, only, rules_yaml, run

SCHEDULE = """
- id: RATE
  title: Rate above the approved rate
  type: rate_cap
  params:
    schedule:
      - from: 2025-07-01
        by_classification: {PARTNR: 900, ASSOC: 550}
        by_timekeeper: {TK1: 1000}
      - from: 2026-01-01
        to: 2026-06-30
        by_classification: {PARTNR: 950, ASSOC: 600}
        by_timekeeper: {TK1: 1050}
        matter_overrides:
          - {matter: M1, by_timekeeper: {TK1: 980}, by_classification: {PARTNR: 925}}
      - from: 2026-07-01
        standard_rate_discount: 10%
    action: adjust
"""


def hour(source_id: str, rate: str, day: str, **fields: object) -> Entry:
    base: dict[str, object] = {"source_id": source_id, "rate": rate, "work_date": day, "hours_billed": "2",
                               "timekeeper_classification": "PARTNR", "timekeeper_ledes_id": "TK9"}
    base.update(fields)
    return make_entry(**base)


def test_each_entry_is_judged_by_the_caps_in_force_on_its_work_date(backend: str) -> None:
    ruleset = load_rules(SCHEDULE, header="currency: USD\n")
    entries = [
        hour("before-schedule", "5000", "2025-06-30"),  # no period covers it: not checked
        hour("h2-2025-over", "910", "2025-12-31"),
        hour("h2-2025-under", "900", "2025-07-01"),
        hour("h1-2026-ok", "940", "2026-01-01"),  # 940 was above the 2025 cap, within 2026's
        hour("h1-2026-over", "951", "2026-06-30"),
        hour("tk1-2025-over", "1010", "2025-09-01", timekeeper_ledes_id="TK1"),
        hour("tk1-2026-ok", "1010", "2026-03-01", timekeeper_ledes_id="TK1"),
        hour("tk1-m1-over", "990", "2026-03-01", timekeeper_ledes_id="TK1", law_firm_matter_id="M1"),
        hour("m1-partner-over", "930", "2026-03-01", law_firm_matter_id="M1"),
        hour("m1-2025-ok", "899", "2025-09-01", law_firm_matter_id="M1"),  # the override is 2026's only
        hour("h2-2026-over-standard", "950", "2026-07-01", standard_rate="1000.00"),
        hour("h2-2026-at-standard", "900.00", "2026-08-01", standard_rate="1000.00"),
        hour("h2-2026-no-standard", "5000", "2026-08-01"),  # the period caps by standard rate only
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"h2-2025-over", "h1-2026-over", "tk1-2025-over", "tk1-m1-over",
                                   "m1-partner-over", "h2-2026-over-standard"}
    caps = {sid: decisive(only(violations, sid))["expected"] for sid in flagged(violations)}
    assert caps == {"h2-2025-over": "900", "h1-2026-over": "950", "tk1-2025-over": "1000", "tk1-m1-over": "980",
                    "m1-partner-over": "925", "h2-2026-over-standard": "900.00"}
    # The evidence names the cap that applied, its period, and the order that chose it.
    assert decisive(only(violations, "tk1-m1-over"))["basis"] == (
        "matter override for M1, timekeeper TK1, in force 2026-01-01 to 2026-06-30 (first that applies of: "
        "matter_timekeeper, matter_classification, timekeeper, classification, matter_standard_rate, standard_rate)")
    assert decisive(only(violations, "h2-2025-over"))["basis"].startswith(
        "classification PARTNR, in force 2025-07-01 to 2025-12-31 (")
    standard = decisive(only(violations, "h2-2026-over-standard"))
    assert standard["basis"].startswith("0.9 x standard_rate 1000.00; standard rate less 10%, in force from 2026-07-01")
    adjustment = only(violations, "h2-2026-over-standard").adjustment
    assert adjustment is not None and (adjustment.proposed, adjustment.amount) == (Decimal("900.00"),
                                                                                  Decimal("-100.00"))


def test_cap_source_in_messages(backend: str) -> None:
    ruleset = load_rules(SCHEDULE.replace("    action: adjust", "    action: adjust\n  message: \"{actual} > "
                                          "{expected}: {cap_source}\""))
    (violation,) = run([hour("x", "910", "2025-12-31")], ruleset, backend)
    assert violation.message.startswith("910 > 900: classification PARTNR, in force 2025-07-01 to 2025-12-31")


@pytest.mark.parametrize(("order", "expected"), [
    # Default: a matter's override beats a named timekeeper's own cap.
    (None, {"tk-on-m1": "900", "partner-on-m1": "900", "tk-elsewhere": "1100", "partner-elsewhere": "950"}),
    # A named timekeeper's cap above everything.
    ("[timekeeper, matter_timekeeper, matter_classification, classification]",
     {"tk-on-m1": "1100", "partner-on-m1": "900", "tk-elsewhere": "1100", "partner-elsewhere": "950"}),
    # Classification caps before timekeeper caps.
    ("[classification, matter_classification, matter_timekeeper, timekeeper]",
     {"tk-on-m1": "950", "partner-on-m1": "950", "tk-elsewhere": "950", "partner-elsewhere": "950"}),
])
def test_precedence_the_author_states(backend: str, order: str | None, expected: dict[str, str]) -> None:
    rules = f"""
    - id: RATE
      title: rate
      type: rate_cap
      params:
        by_classification: {{PARTNR: 950}}
        by_timekeeper: {{TK1: 1100}}
        matter_overrides: [{{matter: M1, by_classification: {{PARTNR: 900}}}}]
        {'precedence: ' + order if order else ''}
    """
    ruleset = load_rules(rules)
    entries = [hour("tk-on-m1", "5000", "2026-03-02", timekeeper_ledes_id="TK1", law_firm_matter_id="M1"),
               hour("partner-on-m1", "5000", "2026-03-02", law_firm_matter_id="M1"),
               hour("tk-elsewhere", "5000", "2026-03-02", timekeeper_ledes_id="TK1"),
               hour("partner-elsewhere", "5000", "2026-03-02")]
    violations = run(entries, ruleset, backend)
    assert {sid: decisive(only(violations, sid))["expected"] for sid in flagged(violations)} == expected


def test_standard_rate_forms(backend: str) -> None:
    ruleset = load_rules("""
    - id: STD
      title: No rate above the standard rate
      type: rate_cap
      params: {at_most_standard_rate: true}
    - id: DISC
      title: Partners at 950; everyone else at the standard rate less 12.5%
      type: rate_cap
      params:
        by_classification: {PARTNR: 950}
        standard_rate_discount: "12.5%"
    - id: FIRST
      title: Standard rate less 10% first, the table only without a standard rate
      type: rate_cap
      params:
        by_classification: {PARTNR: 950}
        standard_rate_discount: 0.1
        precedence: [standard_rate, matter_timekeeper, matter_classification, timekeeper, classification]
    """)
    entries = [
        hour("partner", "960", "2026-03-02", standard_rate="1000"),
        hour("assoc", "880", "2026-03-02", standard_rate="1000", timekeeper_classification="ASSOC"),
        hour("assoc-ok", "875", "2026-03-02", standard_rate="1000", timekeeper_classification="ASSOC"),
        hour("partner-no-standard", "960", "2026-03-02"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "STD") == set()
    assert flagged(violations, "DISC") == {"partner", "assoc", "partner-no-standard"}
    assert decisive(only(violations, "assoc", "DISC"))["expected"] == "875"
    assert decisive(only(violations, "partner", "DISC"))["expected"] == "950"
    assert flagged(violations, "FIRST") == {"partner", "partner-no-standard"}  # associates: 900 after 10% off
    assert decisive(only(violations, "partner", "FIRST"))["expected"] == "900"
    assert decisive(only(violations, "partner-no-standard", "FIRST"))["expected"] == "950"
    above = run([hour("above", "1000.01", "2026-03-02", standard_rate="1000.00")], ruleset, backend)
    assert flagged(above, "STD") == {"above"}
    assert decisive(only(above, "above", "STD"))["basis"].startswith("standard_rate 1000.00; standard rate (")


def test_rate_freeze_per_matter(backend: str) -> None:
    ruleset = load_rules("""
    - id: FREEZE
      title: Rates frozen when the matter opened
      type: rate_cap
      params:
        matter_overrides:
          - matter: M1
            rate_freeze: {as_of: 2025-03-01, by_timekeeper: {TK1: 875, TK2: 500}}
        at_most_standard_rate: true
    """)
    entries = [hour("frozen-over", "925", "2026-03-02", timekeeper_ledes_id="TK1", law_firm_matter_id="M1",
                    standard_rate="925"),
               hour("frozen-ok", "875", "2026-03-02", timekeeper_ledes_id="TK1", law_firm_matter_id="M1"),
               hour("other-matter", "925", "2026-03-02", timekeeper_ledes_id="TK1", standard_rate="925"),
               hour("new-joiner", "930", "2026-03-02", timekeeper_ledes_id="TK3", law_firm_matter_id="M1",
                    standard_rate="925")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"frozen-over", "new-joiner"}
    assert decisive(only(violations, "frozen-over"))["basis"].startswith(
        "matter override for M1, timekeeper TK1, rate frozen as of 2025-03-01 (")


def test_every_case_stays_a_short_conjunction() -> None:
    periods = "\n".join(f"""
        - from: 20{25 + i // 2}-{'01' if i % 2 == 0 else '07'}-01
          by_classification: {{PARTNR: {900 + i}, ASSOC: {500 + i}, PARALG: {200 + i}, OFCOUN: {800 + i}}}
          by_timekeeper: {{TK1: {1000 + i}, TK2: {1001 + i}, TK3: {1002 + i}}}
          standard_rate_discount: 5%
          matter_overrides:
            - {{matter: M1, by_classification: {{PARTNR: {850 + i}}}, by_timekeeper: {{TK1: {950 + i}}}}}
            - {{matter: M2, standard_rate_discount: 15%}}""" for i in range(6))
    ruleset = load_rules(f"""
    - id: BIG
      title: big
      type: rate_cap
      params:
        schedule:{periods}
    """, header="currency: USD\n")
    compiled = compile_ruleset(ruleset)
    assert compiled.durable_problem is None
    branches = split_for_durable(compiled.rules[0].condition)
    assert branches is not None and len(branches) > 6


@pytest.mark.parametrize(("schedule", "token", "message"), [
    ("[{from: 2026-01-01, to: 2026-06-30, by_timekeeper: {TK1: 1}}, {from: 2026-07-02, by_timekeeper: {TK1: 2}}]",
     "2026-07-02", "a gap in the schedule: 2026-07-01 to 2026-07-01 is in no period"),
    ("[{from: 2026-01-01, to: 2026-07-31, by_timekeeper: {TK1: 1}}, {from: 2026-07-01, by_timekeeper: {TK1: 2}}]",
     "2026-07-01", "this period overlaps the previous one, in force to 2026-07-31"),
    ("[{from: 2026-07-01, by_timekeeper: {TK1: 1}}, {from: 2026-01-01, by_timekeeper: {TK1: 2}}]",
     "2026-01-01", "periods must be in date order"),
    ("[{from: 2026-07-01, to: 2026-01-01, by_timekeeper: {TK1: 1}}]", "2026-01-01",
     "the end date is before the start date"),
    ("[{from: 2026-01-01, by_classification: {PARTNER: 1}}]", "PARTNER",
     "unknown"),
])
def test_schedule_problems_are_positioned(schedule: str, token: str, message: str) -> None:
    rules = f"""
    - id: RATE
      title: rate
      type: rate_cap
      params:
        schedule: {schedule}
    """
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    (problem,) = caught.value.problems
    assert problem.message.startswith(message), problem.message
    assert (problem.line, problem.column) == locate(rules_yaml(rules), token)
    if token == "PARTNER":
        assert "'PARTNER'" in problem.message and "PARTNR" in problem.message  # the nearest code is suggested


@pytest.mark.parametrize(("params", "token", "message"), [
    ("{by_classification: {PARTNR: 1}, precedence: [timekeeper, classification]}", "precedence",
     "precedence orders all of matter_timekeeper, matter_classification, timekeeper, classification"),
    ("{by_classification: {PARTNR: 1}, precedence: [timekeeper, timekeeper, matter_timekeeper, "
     "matter_classification, classification]}", "timekeeper, matter_timekeeper", "timekeeper is named twice"),
    ("{by_classification: {PARTNR: 1}, precedence: [timekeeper, boss]}", "boss", "'boss' is not one of"),
    ("{by_classification: {PARTNR: 1}, schedule: [{from: 2026-01-01, by_timekeeper: {TK1: 1}}]}",
     "by_classification", "by_classification belongs inside the schedule's periods"),
    ("{standard_rate_discount: 10 percent}", "10 percent", "'10 percent' is not"),
    ("{standard_rate_discount: 100%}", "100%", "a discount of 100% or more leaves no rate"),
    ("{by_timekeeper: {TK1: 900}, rate_freeze: {as_of: 2025-01-01, by_timekeeper: {TK1: 850}}}", "TK1: 850",
     "TK1 has a cap under by_timekeeper and a frozen rate here"),
    ("{by_classification: {PARTNR: 1, partnr: 2}}", "partnr", "'partnr' is PARTNR, which this table already caps"),
])
def test_rate_cap_parameter_problems(params: str, token: str, message: str) -> None:
    rules = f"""
    - id: RATE
      title: rate
      type: rate_cap
      params: {params}
    """
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    problem = caught.value.problems[0]
    assert problem.message.startswith(message), problem.message
    assert problem.line == locate(rules_yaml(rules), token)[0]


def test_classification_aliases_in_caps(backend: str) -> None:
    ruleset = load_rules("""
    - id: RATE
      title: rate
      type: rate_cap
      params: {by_classification: {Partner: 950, Senior Associate: 700}}
    """, header="classifications: {Partner: PARTNR, Senior Associate: ASSOC}\n")
    entries = [hour("p", "960", "2026-03-02"), hour("a", "710", "2026-03-02", timekeeper_classification="ASSOC")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"p", "a"}
    assert "classification Senior Associate (ASSOC)" in decisive(only(violations, "a"))["basis"]


def test_expense_cap_schedule(backend: str) -> None:
    ruleset = load_rules("""
    - id: EXP
      title: Expense limits
      type: expense_cap
      params:
        schedule:
          - from: 2025-01-01
            caps: [{expense_codes: [E101], per: unit, max: 0.10, label: copies per page}]
          - from: 2026-01-01
            caps: [{expense_codes: [E101], per: unit, max: 0.15, label: copies per page},
                   {expense_codes: [E111], per: entry, max: 75}]
    """)
    entries = [make_expense(source_id="old-copies", work_date="2025-12-31", utbms_expense_code="E101",
                            quantity="100", rate="0.12"),
               make_expense(source_id="new-copies", work_date="2026-01-01", utbms_expense_code="E101",
                            quantity="100", rate="0.12"),
               make_expense(source_id="old-meal", work_date="2025-06-01", utbms_expense_code="E111",
                            quantity="1", rate="90", amount="90"),
               make_expense(source_id="new-meal", work_date="2026-06-01", utbms_expense_code="E111",
                            quantity="1", rate="90", amount="90")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"old-copies", "new-meal"}
    assert only(violations, "old-copies").message == "E101 expense of 0.12 is above the 0.10 limit (copies per page)"
    assert decisive(only(violations, "old-copies"))["basis"] == "copies per page, in force 2025-01-01 to 2025-12-31"
    assert only(violations, "new-meal").message == "E111 expense of 90 is above the 75 limit (per entry)"


def test_expense_cap_schedule_gap_is_positioned() -> None:
    rules = """
    - id: EXP
      title: Expense limits
      type: expense_cap
      params:
        schedule:
          - {from: 2025-01-01, to: 2025-11-30, caps: [{expense_codes: [E101], per: unit, max: 0.10}]}
          - {from: 2026-01-01, caps: [{expense_codes: [E101], per: unit, max: 0.15}]}
    """
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    (problem,) = caught.value.problems
    assert problem.message.startswith("a gap in the schedule: 2025-12-01 to 2025-12-31 is in no period")
    assert (problem.line, problem.column) == locate(rules_yaml(rules), "2026-01-01")


def test_travel_against_the_standard_rate(backend: str) -> None:
    ruleset = load_rules("""
    - id: TRAVEL
      title: Travel at half the standard rate
      type: travel
      params: {share: 50%, rate_basis: standard_rate, action: adjust}
    - id: TRAVEL-OWN
      title: Travel at half the entry's own rate
      type: travel
      params: {share: "50%"}
    """)
    trip = {"narrative": "Travel to Chicago for the deposition", "hours_worked": "3", "hours_billed": "3"}
    entries = [make_entry(source_id="full", rate="900", standard_rate="900", **trip),
               make_entry(source_id="half", rate="450.00", standard_rate="900.00", **trip),
               make_entry(source_id="half-by-amount", rate="900", standard_rate="900", amount="1350",
                          **trip),
               make_entry(source_id="no-standard", rate="900", **trip)]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "TRAVEL") == {"full", "half-by-amount"}
    # Judged against its own rate, an entry billed at a reduced rate looks like full-rate travel.
    assert flagged(violations, "TRAVEL-OWN") == {"full", "half", "no-standard"}
    full = only(violations, "full", "TRAVEL")
    assert decisive(full) == {"field": "rate", "operator": "gt", "expected": "450", "actual": "900",
                              "basis": "0.5 x standard_rate 900; travel at 50% of the standard rate"}
    assert full.message == "Travel time billed at 100% of the full rate; the guideline allows 50%"
    assert full.adjustment is not None and full.adjustment.as_dict() == {
        "field": "rate", "current": "900", "proposed": "450.0", "amount": "-1350.00"}


def test_describe_gives_the_reviewer_the_schedule_and_precedence() -> None:
    ruleset = load_rules(SCHEDULE, header="currency: USD\n")
    lines = type_of(ruleset.rules[0]).describe(ruleset.rules[0], ruleset)
    text = "\n".join(lines)
    assert "Which cap applies (the default): the first that exists of matter_timekeeper > " in text
    assert "Period 2025-07-01 to 2025-12-31:" in text
    assert "Period 2026-07-01 to open-ended:" in text
    assert "  matter M1 timekeeper caps: TK1 980" in text
    assert "  firm-wide: at most the standard rate less 10%" in text
    assert "Entries dated before 2025-07-01 are not checked." in text
    assert lines[-1] == "Action: propose a write-down of the rate to the cap."
    expenses = load_rules("""
    - id: EXP
      title: Expense limits
      type: expense_cap
      params: {caps: [{expense_codes: [e101], per: unit, max: 0.10, label: copies per page}]}
    - id: TRAVEL
      title: travel
      type: travel
      params: {share: 0.5, rate_basis: standard_rate}
    """)
    assert type_of(expenses.rules[0]).describe(expenses.rules[0], expenses)[1] == (
        "E101: the rate (price per unit) at most 0.10 (copies per page)")
    assert "above 50% of the timekeeper's standard rate" in type_of(expenses.rules[1]).describe(
        expenses.rules[1], expenses)[1]
