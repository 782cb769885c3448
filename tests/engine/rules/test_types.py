"""Every rule type, on tiny inline rule sets, with both backends: what fires, the evidence, the messages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Entry
from engine.rules.conditions import render_value
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError
from engine.rules.types import REGISTRY
from tests.conftest import CONTEXT, decisive, flagged, load_rules, make_entry, make_expense, only, run

# rate_cap --------------------------------------------------------------------------------------------

RATE_RULES = """
- id: RATE
  title: Rate above the cap
  type: rate_cap
  params:
    by_classification: {PARTNR: 950, ASSOC: 600}
    by_timekeeper: {TK1: 1050}
    matter_overrides:
      - matter: M1
        by_classification: {PARTNR: 900}
        by_timekeeper: {TK1: 1000}
      - matter: M2
        by_timekeeper: {TK2: 700}
    action: adjust
"""


def partner(source_id: str, rate: str, **fields) -> object:
    return make_entry(source_id=source_id, timekeeper_classification=fields.pop("cls", "PARTNR"),
                      timekeeper_ledes_id=fields.pop("tk", "TK9"), rate=rate, hours_billed=fields.pop("hours", "1"),
                      **fields)


def test_rate_cap_precedence(backend: str) -> None:
    ruleset = load_rules(RATE_RULES, header="currency: USD\n")
    entries = [
        partner("class-over", "960"),
        partner("class-at", "950"),
        partner("tk-under-own-cap", "1040", tk="TK1"),  # above the class cap, below the timekeeper's
        partner("tk-over-own-cap", "1060", tk="TK1"),
        partner("matter-tk-over", "1010", tk="TK1", law_firm_matter_id="M1"),  # the override beats 1050
        partner("matter-tk-under", "990", tk="TK1", law_firm_matter_id="M1"),
        partner("matter-class-over", "920", law_firm_matter_id="M1"),  # override 900 beats class 950
        partner("matter-class-under", "890", law_firm_matter_id="M1"),
        partner("matter-tk2-under", "690", tk="TK2", cls="ASSOC", law_firm_matter_id="M2"),  # 700 beats 600
        partner("matter-tk2-over", "710", tk="TK2", cls="ASSOC", law_firm_matter_id="M2"),
        partner("other-matter-assoc", "610", tk="TK2", cls="ASSOC", law_firm_matter_id="M3"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"class-over", "tk-over-own-cap", "matter-tk-over", "matter-class-over",
                                   "matter-tk2-over", "other-matter-assoc"}
    caps = {sid: Decimal(str(only(violations, sid).evidence[-1].expected)) for sid in flagged(violations)}
    assert caps == {"class-over": 950, "tk-over-own-cap": 1050, "matter-tk-over": 1000,
                    "matter-class-over": 900, "matter-tk2-over": 700, "other-matter-assoc": 600}
    ev = decisive(only(violations, "class-over"))
    assert (ev["field"], ev["operator"], ev["actual"]) == ("rate", "gt", "960")
    assert only(violations, "class-over").message == "Rate 960 is above the 950 cap"


def test_rate_cap_exempt_fee_bases_and_currency(backend: str) -> None:
    ruleset = load_rules(RATE_RULES, header="currency: USD\n")
    entries = [
        partner("flat", "2000", fee_basis="flat"),
        partner("fixed", "2000", fee_basis="fixed_template"),
        partner("usd", "2000", currency="USD"),
        partner("eur", "2000", currency="EUR"),  # a cap in dollars says nothing about euros
        partner("no-currency", "2000"),  # still checked
        make_expense(source_id="expense", timekeeper_classification="PARTNR", rate="2000", quantity="1"),
    ]
    assert flagged(run(entries, ruleset, backend)) == {"usd", "no-currency"}


def test_rate_cap_custom_exempt_fee_bases(backend: str) -> None:
    rules = RATE_RULES.replace("action: adjust", "exempt_fee_bases: [contingency]")
    ruleset = load_rules(rules)
    entries = [partner("flat", "2000", fee_basis="flat"), partner("cont", "2000", fee_basis="contingency")]
    assert flagged(run(entries, ruleset, backend)) == {"flat"}


def test_rate_cap_adjust_proposes_the_write_down(backend: str) -> None:
    ruleset = load_rules(RATE_RULES)
    entries = [partner("a", "975.50", hours="1.3"), partner("b", "960.37", hours="1.3")]
    violations = run(entries, ruleset, backend)
    a = only(violations, "a").adjustment
    assert a is not None and a.field == "rate"
    assert a.current == Decimal("975.50")
    assert a.proposed == Decimal("950")
    assert a.amount == Decimal("-33.15") and a.amount.as_tuple().exponent == -2
    b = only(violations, "b").adjustment
    assert b.amount == Decimal("-13.48")  # (950 - 960.37) x 1.3 = -13.481, to the cent
    assert b.as_dict() == {"field": "rate", "current": "960.37", "proposed": "950", "amount": "-13.48"}


def test_rate_cap_flag_only_proposes_nothing(backend: str) -> None:
    ruleset = load_rules(RATE_RULES.replace("action: adjust", "action: flag"))
    (violation,) = run([partner("a", "975.50")], ruleset, backend)
    assert violation.adjustment is None


def test_rate_cap_evidence_constants_are_decimals(backend: str) -> None:
    """Caps are money: evidence keeps them as decimals, so JSON output shows them as strings."""
    ruleset = load_rules(RATE_RULES)
    (violation,) = run([partner("a", "960")], ruleset, backend)
    assert violation.adjustment is not None
    last = violation.evidence[-1]
    assert isinstance(last.expected, Decimal) and isinstance(last.actual, Decimal)
    assert isinstance(violation.adjustment.proposed, Decimal)
    assert violation.as_dict()["evidence"][-1]["expected"] == "950"


# approved_timekeepers ------------------------------------------------------------------------------

def test_approved_timekeepers(backend: str) -> None:
    ruleset = load_rules("""
        - id: STAFF
          title: Not approved
          type: approved_timekeepers
          params: {timekeepers: {list: staff}}
        """, header="lists:\n  staff: [TK1, TK2]\n")
    entries = [
        make_entry(source_id="ok", timekeeper_ledes_id="TK1"),
        make_entry(source_id="other", timekeeper_ledes_id="TK3"),
        make_entry(source_id="none"),
        make_expense(source_id="expense", timekeeper_ledes_id="TK3"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"other", "none"}
    assert decisive(only(violations, "other")) == {"field": "timekeeper_ledes_id", "operator": "not_in",
                                                   "expected": ["TK1", "TK2"], "actual": "TK3"}
    assert decisive(only(violations, "none")) == {"field": "timekeeper_ledes_id", "operator": "exists",
                                                  "expected": False, "actual": None}
    message = only(violations, "other").message
    assert "TK3" in message and "approved" in message and "{" not in message


def test_approved_timekeepers_by_name(backend: str) -> None:
    ruleset = load_rules("""
        - id: STAFF
          title: Not approved
          type: approved_timekeepers
          params: {timekeepers: ["Chen, Grace"], timekeeper_field: timekeeper_name}
        """)
    entries = [make_entry(source_id="a", timekeeper_name="Chen, Grace", timekeeper_ledes_id="X"),
               make_entry(source_id="b", timekeeper_name="Novak, Peter", timekeeper_ledes_id="TK1")]
    assert flagged(run(entries, ruleset, backend)) == {"b"}


# blocked_codes / required_codes --------------------------------------------------------------------

def test_blocked_codes_phase_blocks_its_tasks(backend: str) -> None:
    ruleset = load_rules("""
        - id: BLOCK
          title: Not billable
          type: blocked_codes
          params: {task_codes: [L100], activity_codes: [A111], expense_codes: [E103]}
        """)
    entries = [
        make_entry(source_id="phase", utbms_task_code="L100"),
        make_entry(source_id="task-in-phase", utbms_task_code="L140"),
        make_entry(source_id="last-task-in-phase", utbms_task_code="L190"),
        make_entry(source_id="other-phase", utbms_task_code="L210"),
        make_entry(source_id="activity", utbms_activity_code="a111"),
        make_expense(source_id="expense", utbms_expense_code="E103"),
        make_expense(source_id="ok-expense", utbms_expense_code="E101"),
        make_entry(source_id="no-codes"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"phase", "task-in-phase", "last-task-in-phase", "activity", "expense"}
    ev = decisive(only(violations, "task-in-phase"))
    assert (ev["field"], ev["operator"], ev["actual"]) == ("utbms_task_code", "in", "L140")
    assert "L100" in ev["expected"] and "L140" in ev["expected"] and "L210" not in ev["expected"]
    assert decisive(only(violations, "activity")) == {"field": "utbms_activity_code", "operator": "eq",
                                                      "expected": "A111", "actual": "A111"}
    assert only(violations, "expense").message == "Code E103 is not billable under these guidelines"


def test_required_codes(backend: str) -> None:
    ruleset = load_rules("""
        - id: REQ
          title: Codes required
          type: required_codes
          params: {task_code_sets: [litigation]}
        """)
    entries = [
        make_entry(source_id="ok", utbms_task_code="L110", utbms_activity_code="A101"),
        make_entry(source_id="no-task", utbms_activity_code="A101"),
        make_entry(source_id="no-activity", utbms_task_code="L110"),
        make_entry(source_id="bankruptcy-task", utbms_task_code="B110", utbms_activity_code="A101"),
        make_entry(source_id="phase-not-task", utbms_task_code="L100", utbms_activity_code="A101"),
        make_entry(source_id="not-billable", billable=False),
        make_expense(source_id="expense-no-code"),
        make_expense(source_id="expense-ok", utbms_expense_code="E101"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"no-task", "no-activity", "bankruptcy-task", "phase-not-task",
                                   "expense-no-code"}
    assert decisive(only(violations, "no-task")) == {"field": "utbms_task_code", "operator": "exists",
                                                     "expected": False, "actual": None}
    ev = decisive(only(violations, "bankruptcy-task"))
    assert (ev["field"], ev["operator"], ev["actual"]) == ("utbms_task_code", "not_in", "B110")


def test_required_codes_switched_off(backend: str) -> None:
    ruleset = load_rules("""
        - id: REQ
          title: Task code required
          type: required_codes
          params: {activity: false, expense: false}
        """)
    entries = [make_entry(source_id="no-activity", utbms_task_code="L110"), make_entry(source_id="no-task"),
               make_expense(source_id="expense")]
    assert flagged(run(entries, ruleset, backend)) == {"no-task"}


# narrative and block_billing -----------------------------------------------------------------------

def test_narrative_length_in_characters(backend: str) -> None:
    ruleset = load_rules("""
        - id: LEN
          title: Narrative length
          type: narrative
          params: {min_length: 10, max_length: 20}
        """)
    entries = [
        make_entry(source_id="9", narrative="x" * 9),
        make_entry(source_id="10", narrative="x" * 10),
        make_entry(source_id="20", narrative="x" * 20),
        make_entry(source_id="21", narrative="x" * 21),
        make_entry(source_id="empty", narrative=""),
        make_expense(source_id="expense", narrative=""),  # time only by default
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"9", "21", "empty"}
    assert decisive(only(violations, "9")) == {"field": "narrative characters after trimming", "operator": "lt",
                                               "expected": 10, "actual": 9}
    assert decisive(only(violations, "21"))["operator"] == "gt"
    assert only(violations, "9").message == ("Narrative fails the guideline: 9 characters after trimming, fewer "
                                             "than the 10 required")


def test_narrative_length_in_words_and_scope(backend: str) -> None:
    ruleset = load_rules("""
        - id: WORDS
          title: Narrative words
          type: narrative
          params: {min_length: 3, max_length: 5, unit: words, applies_to: all}
        """)
    entries = [
        make_entry(source_id="2", narrative="one two"),
        make_entry(source_id="3", narrative="  one   two\tthree "),
        make_entry(source_id="5", narrative="a b c d e"),
        make_entry(source_id="6", narrative="a b c d e f"),
        make_expense(source_id="expense", narrative="taxi"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"2", "6", "expense"}
    assert decisive(only(violations, "2")) == {"field": "narrative words", "operator": "lt", "expected": 3,
                                               "actual": 2}


def test_narrative_forbidden_phrases_whole_word_case_insensitive(backend: str) -> None:
    ruleset = load_rules("""
        - id: VAGUE
          title: Vague narrative
          type: narrative
          message: 'Vague phrase "{actual}"'
          params: {forbidden_phrases: [follow up, review file]}
        """)
    entries = [
        make_entry(source_id="double-space", narrative="Follow  up with client"),
        make_entry(source_id="upper", narrative="Please REVIEW FILE."),
        make_entry(source_id="tab", narrative="follow\tup on motion"),
        make_entry(source_id="joined", narrative="followup with client"),
        make_entry(source_id="longer-words", narrative="reviewer filed the brief"),
        make_entry(source_id="inside-word", narrative="unfollow upgrade"),
        make_entry(source_id="clear", narrative="Drafted reply brief on motion to compel"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"double-space", "upper", "tab"}
    ev = decisive(only(violations, "double-space"))
    assert (ev["field"], ev["operator"], ev["actual"]) == ("narrative", "matches", "Follow  up")
    assert only(violations, "upper").message == 'Vague phrase "REVIEW FILE"'


def test_narrative_required_pattern(backend: str) -> None:
    ruleset = load_rules("""
        - id: PAT
          title: Starts with a verb in the past tense
          type: narrative
          params: {required_pattern: "^[A-Z][a-z]+ed\\\\b"}
        """)
    entries = [make_entry(source_id="ok", narrative="Drafted motion"),
               make_entry(source_id="lower", narrative="drafted motion"),
               make_entry(source_id="noun", narrative="Motion drafted"),
               make_entry(source_id="empty", narrative="")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"lower", "noun", "empty"}
    assert decisive(only(violations, "lower")) == {"field": "narrative", "operator": "not_matches",
                                                   "expected": "^[A-Z][a-z]+ed\\b", "actual": "drafted motion"}


def test_block_billing(backend: str) -> None:
    ruleset = load_rules("""
        - id: BLOCK
          title: Block billing
          type: block_billing
          params: {min_tasks: 2, min_hours: 0.5}
        """)
    entries = [
        make_entry(source_id="semicolon", narrative="Drafted motion; reviewed reply", hours_billed="1"),
        make_entry(source_id="sentences", narrative="Drafted motion. Reviewed reply", hours_billed="3"),
        make_entry(source_id="slash", narrative="Drafted motion / reviewed reply", hours_billed="3"),
        make_entry(source_id="at-threshold", narrative="Drafted motion; reviewed reply", hours_billed="0.5"),
        make_entry(source_id="one-task", narrative="Drafted motion to compel", hours_billed="3"),
        make_entry(source_id="trailing", narrative="Drafted motion;", hours_billed="3"),
        make_entry(source_id="abbrev", narrative="Drafted motion re: e.g. dates", hours_billed="3"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"semicolon", "sentences", "slash"}
    evidence = [ev.as_dict() for ev in only(violations, "semicolon").evidence]
    assert {"field": "tasks in narrative", "operator": "ge", "expected": 2, "actual": 2} in evidence
    assert {"field": "hours_billed", "operator": "gt", "expected": "0.5", "actual": "1"} in evidence
    message = only(violations, "semicolon").message
    assert message.startswith("Block billing: ") and message.endswith(" in one entry of 1 h")


# hours -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("increment", "bad", "good"), [
    ("0.1", {"0.25", "0.05"}, {"1.0", "0.3", "2", "0.1"}),
    ("0.25", {"0.3", "0.1"}, {"0.25", "1.0", "2.75"}),
])
def test_billing_increment(backend: str, increment: str, bad: set[str], good: set[str]) -> None:
    ruleset = load_rules(f"""
        - id: INC
          title: Increment
          type: billing_increment
          params: {{increment: {increment}}}
        """)
    entries = [make_entry(source_id=h, hours_billed=h) for h in sorted(bad | good)]
    entries.append(make_entry(source_id="flat", fee_basis="flat", hours_billed="0.33"))
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == bad
    ev = decisive(only(violations, sorted(bad)[0]))
    assert (ev["field"], ev["operator"], ev["expected"]) == (f"hours_billed modulo {increment}", "ne", "0")


def test_billing_increment_default_is_a_tenth(backend: str) -> None:
    ruleset = load_rules("""
        - id: INC
          title: Increment
          type: billing_increment
        """)
    entries = [make_entry(source_id=h, hours_billed=h) for h in ("0.25", "1.0", "0.3")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"0.25"}
    assert decisive(violations[0])["actual"] == "0.05"
    assert violations[0].message == "0.25 h is not a multiple of the billing increment"


def test_max_hours_per_entry(backend: str) -> None:
    ruleset = load_rules("""
        - id: MAX
          title: Long entry
          type: max_hours_per_entry
          params: {max_hours: 8}
        """)
    entries = [make_entry(source_id=h, hours_billed=h) for h in ("8", "8.0", "8.1", "8.0000001")]
    entries.append(make_expense(source_id="expense", quantity="20"))
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"8.1", "8.0000001"}
    ev = decisive(only(violations, "8.1"))
    assert (ev["field"], ev["operator"], ev["actual"]) == ("hours_billed", "gt", "8.1")
    assert only(violations, "8.1").message == "8.1 h in one entry is above the 8 h limit"


# aggregates ------------------------------------------------------------------------------------------

DAY_RULES = """
- id: DAY
  title: Long day
  type: daily_hours_cap
  params: {max_hours: 10}
"""


def test_daily_hours_cap_lists_contributing_entries(backend: str) -> None:
    ruleset = load_rules(DAY_RULES)
    bob = {"timekeeper_ledes_id": "TK2", "timekeeper_name": "Bob"}
    entries = [
        make_entry(source_id="b1", hours_billed="6", **bob),
        make_entry(source_id="b2", hours_billed="4.1", **bob),
        make_entry(source_id="b-other-day", hours_billed="4.1", work_date="2026-03-11", **bob),
        make_entry(source_id="b-unbillable", hours_billed="4", billable=False, **bob),
        make_entry(source_id="b-no-charge", hours_billed="4", no_charge=True, **bob),
        make_entry(source_id="ann", hours_billed="6", timekeeper_ledes_id="TK1"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"b1", "b2"}
    b1 = only(violations, "b1")
    assert b1.contributing == ["test:default:b1", "test:default:b2"]
    assert decisive(b1) == {"field": "hours billed per timekeeper per day", "operator": "gt", "expected": "10",
                            "actual": "10.1"}
    assert b1.message == "Bob billed 10.1 h on 2026-03-10 in 2 entries (cap 10 h)"


def test_daily_hours_cap_exactly_at_cap_passes(backend: str) -> None:
    ruleset = load_rules(DAY_RULES)
    entries = [make_entry(source_id="a", hours_billed="6.5", timekeeper_ledes_id="TK1"),
               make_entry(source_id="b", hours_billed="3.5", timekeeper_ledes_id="TK1")]
    assert run(entries, ruleset, backend) == []


def test_daily_hours_cap_sums_decimals_exactly(backend: str) -> None:
    ruleset = load_rules(DAY_RULES)
    ten = [make_entry(source_id=f"t{i}", hours_billed="1.0", timekeeper_ledes_id="TK1") for i in range(10)]
    assert run(ten, ruleset, backend) == []
    tenths = load_rules(DAY_RULES.replace("max_hours: 10", "max_hours: 1"))
    small = [make_entry(source_id=f"s{i}", hours_billed="0.1", timekeeper_ledes_id="TK1") for i in range(10)]
    assert run(small, tenths, backend) == []  # ten floats of 0.1 would sum to 0.9999999999999999
    eleven = [*small, make_entry(source_id="s10", hours_billed="0.1", timekeeper_ledes_id="TK1")]
    violations = run(eleven, tenths, backend)
    assert len(violations) == 11 and decisive(violations[0])["actual"] == "1.1"


DUP_RULES = """
- id: DUP
  title: Duplicate
  type: duplicate
"""


def test_duplicate_ignores_case_and_spacing(backend: str) -> None:
    ruleset = load_rules(DUP_RULES)
    same = {"timekeeper_ledes_id": "TK1", "utbms_task_code": "L110"}
    entries = [
        make_entry(source_id="a", hours_billed="1.5", narrative="Drafted  Motion to compel ", **same),
        make_entry(source_id="b", hours_billed="1.50", narrative="drafted motion TO COMPEL", **same),
        make_entry(source_id="other-hours", hours_billed="1.6", narrative="Drafted motion to compel", **same),
        make_entry(source_id="other-text", hours_billed="1.5", narrative="Drafted motion to dismiss", **same),
        make_entry(source_id="other-day", hours_billed="1.5", narrative="Drafted motion to compel",
                   work_date="2026-03-11", **same),
        make_entry(source_id="other-tk", hours_billed="1.5", narrative="Drafted motion to compel",
                   timekeeper_ledes_id="TK2", utbms_task_code="L110"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"a", "b"}
    a = only(violations, "a")
    assert a.contributing == ["test:default:a", "test:default:b"]
    assert a.message == "Billed 2 times: same timekeeper, date, task, hours and narrative"


def test_duplicate_tabs_newlines_same_text_and_what_is_left_out(backend: str) -> None:
    ruleset = load_rules(DUP_RULES)
    same = {"timekeeper_ledes_id": "TK1", "utbms_task_code": "L110", "hours_billed": "0.5"}
    text = "Call with client"
    entries = [
        make_entry(source_id="a", narrative=text, **same),
        make_entry(source_id="b", narrative=text, **same),  # the very same text
        make_entry(source_id="c", narrative="call\twith\nCLIENT ", **same),
        make_entry(source_id="other-task", narrative=text, **{**same, "utbms_task_code": "L120"}),
        make_entry(source_id="no-hours", narrative=text, **{**same, "hours_billed": None}),
        make_entry(source_id="unbillable", narrative=text, billable=False, **same),
        make_entry(source_id="no-charge", narrative=text, no_charge=True, **same),
        make_expense(source_id="expense", narrative=text, **same),
        make_entry(source_id="nobody", narrative=text, utbms_task_code="L110", hours_billed="0.5"),
        make_entry(source_id="nobody-2", narrative=text, utbms_task_code="L110", hours_billed="0.5"),
        make_entry(source_id="by-name", narrative=text, timekeeper_name="Ann", utbms_task_code="L120",
                   hours_billed="0.5"),
        make_entry(source_id="by-name-2", narrative=text.upper(), timekeeper_name="Ann", utbms_task_code="L120",
                   hours_billed="0.50"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"a", "b", "c", "by-name", "by-name-2"}  # no timekeeper: nothing to compare
    assert only(violations, "c").contributing == ["test:default:a", "test:default:b", "test:default:c"]
    assert only(violations, "c").message.startswith("Billed 3 times")
    assert decisive(only(violations, "by-name-2"))["expected"] == "Ann, 2026-03-10, L120, 0.5"


def test_duplicate_evidence_shows_hours_as_the_days_first_entry_wrote_them(backend: str) -> None:
    ruleset = load_rules(DUP_RULES)
    tk = {"timekeeper_ledes_id": "TK1", "utbms_task_code": "L110"}
    entries = [
        make_entry(source_id="first", hours_billed="1.5", narrative="Call with client", **tk),
        make_entry(source_id="a", hours_billed="1.50", narrative="Drafted motion", **tk),
        make_entry(source_id="b", hours_billed="1.500", narrative="drafted motion", **tk),
        make_entry(source_id="next-day-a", hours_billed="1.50", narrative="Drafted motion", work_date="2026-03-11",
                   **tk),
        make_entry(source_id="next-day-b", hours_billed="1.5", narrative="Drafted motion", work_date="2026-03-11",
                   **tk),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"a", "b", "next-day-a", "next-day-b"}
    assert decisive(only(violations, "a")) == {"field": "timekeeper, date, task, hours, narrative", "operator": "eq",
                                               "expected": "TK1, 2026-03-10, L110, 1.5", "actual": 2}
    assert decisive(only(violations, "next-day-b"))["expected"] == "TK1, 2026-03-11, L110, 1.50"


def test_duplicate_and_daily_cap_in_scope_only(backend: str) -> None:
    ruleset = load_rules("""
        - id: DUP
          title: Duplicate on M1
          type: duplicate
          when: {field: law_firm_matter_id, op: eq, value: M1}
        - id: DAY
          title: Long day on M1
          type: daily_hours_cap
          when: {field: law_firm_matter_id, op: eq, value: M1}
          params: {max_hours: 2}
        """)
    same = {"timekeeper_ledes_id": "TK1", "utbms_task_code": "L110", "hours_billed": "1", "narrative": "Review"}
    entries = [
        make_entry(source_id="m1", law_firm_matter_id="M1", **same),
        make_entry(source_id="m2", law_firm_matter_id="M2", **same),
        make_entry(source_id="m1-again", law_firm_matter_id="M1", **same),
        make_entry(source_id="m2-again", law_firm_matter_id="M2", **same),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "DUP") == {"m1", "m1-again"}
    assert flagged(violations, "DAY") == set()  # 2 h on M1: at the cap; M2's hours are out of scope


def _batch_hits(rule_type: str, params: str, entries: list[Entry]) -> list[tuple[list[int], str, Any, Any]]:
    rule = load_rules(f"- id: R\n  title: R\n  type: {rule_type}\n{params}").rules[0]
    return [(hit.indexes, *(render_value(v) for v in (hit.evidence[-1].expected, hit.evidence[-1].actual)),
             hit.variables) for hit in REGISTRY[rule_type].evaluate_batch(rule, entries, None, {})]


def _reference_days(entries: list[Entry]) -> dict[tuple[str, dt.date], list[int]]:
    days: dict[tuple[str, dt.date], list[int]] = {}
    for i, e in enumerate(entries):
        timekeeper = e.timekeeper_source_id or e.timekeeper_ledes_id or e.timekeeper_name
        if (e.entry_kind == "time" and e.hours_billed is not None and e.billable and not e.no_charge
                and timekeeper is not None):
            days.setdefault((timekeeper, e.work_date), []).append(i)
    return days


def _reference_duplicates(entries: list[Entry]) -> list[tuple[list[int], str, Any, Any]]:
    """Day by day; within a day, (task, hours) groups and then narrative groups in order of their first entry."""
    hits = []
    for (timekeeper, work_date), indexes in _reference_days(entries).items():
        groups: dict[tuple[str | None, Decimal], list[int]] = {}
        for i in indexes:
            groups.setdefault((entries[i].utbms_task_code, entries[i].hours_billed), []).append(i)
        for (task, hours), same_key in groups.items():
            by_text: dict[str, list[int]] = {}
            for i in same_key:
                by_text.setdefault(" ".join(entries[i].narrative.casefold().split()), []).append(i)
            hits += [(same, f"{timekeeper}, {work_date}, {task}, {hours}", len(same), {"count": len(same)})
                     for same in by_text.values() if len(same) > 1]
    return hits


def _reference_daily_cap(entries: list[Entry], cap: Decimal) -> list[tuple[list[int], str, Any, Any]]:
    hits = []
    for indexes in _reference_days(entries).values():
        total = entries[indexes[0]].hours_billed
        for i in indexes[1:]:
            total += entries[i].hours_billed
        if total > cap:
            hits.append((indexes, str(cap), str(total), {"total": total, "count": len(indexes), "max_hours": cap}))
    return hits


BATCH_ENTRY = st.fixed_dictionaries({
    "entry_kind": st.sampled_from(["time", "time", "time", "expense"]),
    "timekeeper_source_id": st.sampled_from([None, None, "S1"]),
    "timekeeper_ledes_id": st.sampled_from([None, "TK1", "TK2", "S1"]),
    "timekeeper_name": st.sampled_from([None, "Ann"]),
    "work_date": st.sampled_from(["2026-03-10", "2026-03-11"]),
    "utbms_task_code": st.sampled_from([None, "L110", "L120"]),
    "hours_billed": st.sampled_from([None, "0", "1.5", "1.50", "15E-1", "2", "2.0", "0.25", "7"]),
    "narrative": st.sampled_from(["Drafted motion", "drafted  motion", "DRAFTED\tMOTION\n", "Drafted motion.",
                                  "Straße", "STRASSE", ""]),
    "billable": st.sampled_from([True, True, True, False]),
    "no_charge": st.sampled_from([False, False, False, True]),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(BATCH_ENTRY, max_size=30))
def test_batch_rules_match_a_plain_reference(records: list[dict[str, Any]]) -> None:
    entries = [make_entry(source_id=str(n), **record) for n, record in enumerate(records)]
    assert _batch_hits("duplicate", "", entries) == _reference_duplicates(entries)
    for cap in ("1", "3.5"):
        assert (_batch_hits("daily_hours_cap", f"  params: {{max_hours: {cap}}}\n", entries)
                == _reference_daily_cap(entries, Decimal(cap)))


# expenses ----------------------------------------------------------------------------------------------

EXPENSE_RULES = """
- id: EXP
  title: Expense limit
  type: expense_cap
  params:
    caps:
      - {expense_codes: [E111], per: entry, max: 75, label: meals}
      - {expense_codes: [E101], per: unit, max: 0.10, label: copies per page}
    action: adjust
"""


def test_expense_cap_per_entry_and_per_unit(backend: str) -> None:
    ruleset = load_rules(EXPENSE_RULES)
    entries = [
        make_expense(source_id="meal", utbms_expense_code="E111", quantity="1", rate="82.40", amount="82.40"),
        make_expense(source_id="meal-at-cap", utbms_expense_code="E111", quantity="1", rate="75", amount="75.00"),
        make_expense(source_id="meal-no-amount", utbms_expense_code="E111", quantity="2", rate="40"),
        make_expense(source_id="copies", utbms_expense_code="E101", quantity="300", rate="0.15", amount="45.00"),
        make_expense(source_id="copies-ok", utbms_expense_code="E101", quantity="900", rate="0.10", amount="90.00"),
        make_expense(source_id="other-code", utbms_expense_code="E110", quantity="1", rate="900", amount="900"),
        make_entry(source_id="time", utbms_expense_code="E111", rate="100", hours_billed="1"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"meal", "meal-no-amount", "copies"}

    meal = only(violations, "meal")
    ev = decisive(meal)
    assert (ev["field"], ev["operator"], ev["actual"]) == ("billed_amount", "gt", "82.40")
    assert meal.adjustment.as_dict() == {"field": "amount", "current": "82.40", "proposed": "75",
                                         "amount": "-7.40"}
    assert meal.message.startswith("E111 expense of 82.40 is above the 75 limit")

    assert only(violations, "meal-no-amount").adjustment.amount == Decimal("-5.00")  # 2 x 40 = 80

    copies = only(violations, "copies")
    assert decisive(copies) == {"field": "rate", "operator": "gt", "expected": "0.10", "actual": "0.15"}
    assert copies.adjustment.as_dict() == {"field": "rate", "current": "0.15", "proposed": "0.10",
                                           "amount": "-15.00"}


# travel ---------------------------------------------------------------------------------------------

TRAVEL_RULES = """
- id: TRAVEL
  title: Travel at half rate
  type: travel
  params:
    share: 0.5
    activity_codes: [A109]
    narrative_pattern: "(?i)\\\\btravel"
    action: adjust
"""


def test_travel_share_and_adjustment(backend: str) -> None:
    ruleset = load_rules(TRAVEL_RULES)
    entries = [
        make_entry(source_id="full", utbms_activity_code="A109", hours_worked="2", hours_billed="2", rate="500",
                   amount="1000.00"),
        make_entry(source_id="half", utbms_activity_code="A109", hours_worked="2", hours_billed="2", rate="500",
                   amount="1000.00", adjustment_amount="-500.00"),
        make_entry(source_id="sixty", utbms_activity_code="A109", hours_worked="2", hours_billed="2", rate="500",
                   amount="1000.00", adjustment_amount="-400.00"),
        make_entry(source_id="by-narrative", narrative="Travel to Chicago for deposition", hours_worked="3",
                   hours_billed="3", rate="333.33", amount="999.99"),
        make_entry(source_id="not-travel", narrative="Drafted deposition outline", hours_worked="3",
                   hours_billed="3", rate="333.33", amount="999.99"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"full", "sixty", "by-narrative"}

    full = only(violations, "full")
    ev = decisive(full)
    assert (ev["field"], ev["operator"], ev["expected"]) == ("billed_share", "gt", "0.5")
    assert Decimal(ev["actual"]) == 1
    assert full.adjustment.as_dict() == {"field": "amount", "current": "1000.00", "proposed": "500.00",
                                         "amount": "-500.00"}
    assert full.message == "Travel time billed at 100% of the full rate; the guideline allows 50%"

    sixty = only(violations, "sixty")
    assert sixty.adjustment.amount == Decimal("-100.00")
    assert sixty.message == "Travel time billed at 60% of the full rate; the guideline allows 50%"

    by_narrative = only(violations, "by-narrative").adjustment
    assert by_narrative.proposed == Decimal("500.00")  # 3 x 333.33 x 0.5 = 499.995, to the cent
    assert by_narrative.amount == Decimal("-499.99")


# dates --------------------------------------------------------------------------------------------------

def test_late_entry(backend: str) -> None:
    ruleset = load_rules("""
        - id: LATE
          title: Late time
          type: late_entry
          params: {max_age_days: 90}
        """)
    context = EvaluationContext(as_of=dt.date(2026, 4, 1))
    entries = [make_entry(source_id="91", work_date="2025-12-31"), make_entry(source_id="90", work_date="2026-01-01"),
               make_entry(source_id="0", work_date="2026-04-01")]
    violations = run(entries, ruleset, backend, context=context)
    assert flagged(violations) == {"91"}
    ev = decisive(violations[0])
    assert (ev["field"], ev["operator"], ev["expected"], ev["actual"]) == ("age_days", "gt", 90, 91)
    assert violations[0].message == "Work from 2025-12-31 is 91 days old (limit 90)"
    # Without an evaluation date there is no age, so nothing is late.
    assert run(entries, ruleset, backend, context=EvaluationContext()) == []


def test_billing_period(backend: str) -> None:
    ruleset = load_rules("""
        - id: PERIOD
          title: Outside the period
          type: billing_period
        """)
    context = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1),
                                period_end=dt.date(2026, 3, 31))
    dates = ["2026-02-28", "2026-03-01", "2026-03-31", "2026-04-01"]
    entries = [make_entry(source_id=d, work_date=d) for d in dates]
    violations = run(entries, ruleset, backend, context=context)
    assert flagged(violations) == {"2026-02-28", "2026-04-01"}
    assert violations[0].message == "Work date 2026-02-28 is outside the billing period"
    assert run(entries, ruleset, backend, context=EvaluationContext(as_of=dt.date(2026, 4, 6))) == []
    only_end = EvaluationContext(period_end=dt.date(2026, 3, 31))
    assert flagged(run(entries, ruleset, backend, context=only_end)) == {"2026-04-01"}


# condition -------------------------------------------------------------------------------------------

def condition_rules(condition: str) -> str:
    return f"""
- id: COND
  title: Condition
  type: condition
  condition: {condition}
"""


CONDITION_ENTRIES = [
    make_entry(source_id="bare"),
    make_entry(source_id="b", rate="5", utbms_task_code="L110", narrative="Drafted brief",
               timekeeper_classification="PARALG"),
    make_entry(source_id="c", rate="5.0000001", utbms_task_code="L210", narrative="Researched case law on duty",
               billable=False, timekeeper_classification="ASSOC"),
    make_entry(source_id="d", rate="0.0000005", narrative="x", work_date="2026-03-01"),
]


@pytest.mark.parametrize(("condition", "expected"), [
    ("{field: rate, op: gt, value: 5}", {"c"}),
    ("{field: rate, op: ge, value: 5}", {"b", "c"}),
    ("{field: rate, op: le, value: 0.000001}", {"d"}),
    ("{field: rate, op: ne, value: 5}", {"c", "d"}),
    # negation is exact: not (rate > 5) holds when the rate is missing, or present and at most 5
    ("{not: {field: rate, op: gt, value: 5}}", {"bare", "b", "d"}),
    ("{not: {field: utbms_task_code, op: eq, value: L110}}", {"bare", "c", "d"}),
    ("{field: utbms_task_code, op: in, value: [L110, L120]}", {"b"}),
    ("{field: utbms_task_code, op: not_in, value: [L110]}", {"c"}),
    ("{not: {field: utbms_task_code, op: in, value: [L110]}}", {"bare", "c", "d"}),
    ("{field: utbms_task_code, op: in, value: [L110, L120, L130, L140, L150, L160, L190, L210]}", {"b", "c"}),
    ("{field: utbms_task_code, op: not_in, value: [L110, L120, L130, L140, L150, L160, L190]}", {"c"}),
    ("{field: utbms_task_code, op: exists}", {"b", "c"}),
    ("{field: utbms_task_code, op: exists, value: false}", {"bare", "d"}),
    ("{not: {field: utbms_task_code, op: exists}}", {"bare", "d"}),
    ("{field: narrative, op: matches, value: '(?i)^research'}", {"c"}),
    ("{not: {field: narrative, op: matches, value: '(?i)^research'}}", {"bare", "b", "d"}),
    ("{field: narrative, op: length, value: {ge: 1, lt: 14}}", {"b", "d"}),
    ("{field: narrative, op: words, value: {gt: 2}}", {"c"}),
    ("{field: narrative, op: words, value: {eq: 0}}", {"bare"}),
    ("{field: billable, op: eq, value: false}", {"c"}),
    ("{field: work_date, op: lt, value: 2026-03-10}", {"d"}),
    ("{field: work_date, op: in, value: [2026-03-01, 2026-03-02]}", {"d"}),
    ("{all: [{field: timekeeper_classification, op: in, value: [PARALG, ASSOC]}, "
     "{any: [{field: utbms_task_code, op: eq, value: L210}, {field: narrative, op: matches, value: brief}]}]}",
     {"b", "c"}),
    ("{any: [{field: rate, op: gt, value: 5}, {not: {field: narrative, op: exists}}]}", {"c"}),
    ("{not: {all: [{field: rate, op: exists}, {field: rate, op: lt, value: 1}]}}", {"bare", "b", "c"}),
    ("{not: {any: [{field: rate, op: ge, value: 5}, {field: work_date, op: eq, value: 2026-03-01}]}}", {"bare"}),
])
def test_condition_operators(backend: str, condition: str, expected: set[str]) -> None:
    ruleset = load_rules(condition_rules(condition))
    assert flagged(run(CONDITION_ENTRIES, ruleset, backend)) == expected


def test_condition_evidence(backend: str) -> None:
    ruleset = load_rules(condition_rules(
        "{all: [{field: timekeeper_classification, op: in, value: [PARALG, LGLAST]}, "
        "{field: narrative, op: matches, value: '(?i)draft'}, {field: rate, op: ge, value: 5}]}"))
    (violation,) = run(CONDITION_ENTRIES, ruleset, backend)
    assert [ev.as_dict() for ev in violation.evidence] == [
        {"field": "timekeeper_classification", "operator": "in", "expected": ["PARALG", "LGLAST"],
         "actual": "PARALG"},
        {"field": "narrative", "operator": "matches", "expected": "(?i)draft", "actual": "Draft"},
        {"field": "rate", "operator": "ge", "expected": "5", "actual": "5"},
    ]
    assert violation.message == "Condition"


def test_condition_not_on_missing_value_explains_the_absence(backend: str) -> None:
    ruleset = load_rules(condition_rules("{not: {field: rate, op: gt, value: 5}}"))
    violation = only(run(CONDITION_ENTRIES, ruleset, backend), "bare")
    assert [ev.as_dict() for ev in violation.evidence] == [
        {"field": "rate", "operator": "exists", "expected": False, "actual": None}]
    violation = only(run(CONDITION_ENTRIES, ruleset, backend), "b")
    assert [ev.as_dict() for ev in violation.evidence] == [
        {"field": "rate", "operator": "le", "expected": "5", "actual": "5"}]


def test_when_scope_and_effective_dates(backend: str) -> None:
    ruleset = load_rules("""
        - id: MAX
          title: Long entry on M1
          type: max_hours_per_entry
          when: {field: law_firm_matter_id, op: eq, value: M1}
          effective: {from: 2026-03-01, to: 2026-03-31}
          params: {max_hours: 1}
        - id: DAY
          title: Long day on M1
          type: daily_hours_cap
          when: {field: law_firm_matter_id, op: eq, value: M1}
          params: {max_hours: 3}
        """)
    tk = {"timekeeper_ledes_id": "TK1"}
    entries = [
        make_entry(source_id="m1", hours_billed="2", law_firm_matter_id="M1", **tk),
        make_entry(source_id="m2", hours_billed="2", law_firm_matter_id="M2", **tk),
        make_entry(source_id="m1-early", hours_billed="2", law_firm_matter_id="M1", work_date="2026-02-28", **tk),
        make_entry(source_id="m1-late", hours_billed="2", law_firm_matter_id="M1", work_date="2026-04-01", **tk),
        make_entry(source_id="m1-small", hours_billed="1.5", law_firm_matter_id="M1", **tk),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "MAX") == {"m1", "m1-small"}
    assert flagged(violations, "DAY") == {"m1", "m1-small"}  # 3.5 h on M1 that day; M2 is out of scope


def test_ruleset_applies_to_its_clients_only(backend: str) -> None:
    ruleset = load_rules("""
        - id: MAX
          title: Long entry
          type: max_hours_per_entry
          params: {max_hours: 1}
        """, header="applies_to: {clients: [ACME01]}\neffective: {from: 2026-01-01}\n")
    entries = [
        make_entry(source_id="acme", hours_billed="2", ledes_client_id="ACME01"),
        make_entry(source_id="acme-by-source-id", hours_billed="2", client_source_id="ACME01"),
        make_entry(source_id="other", hours_billed="2", ledes_client_id="OTHER"),
        make_entry(source_id="acme-old", hours_billed="2", ledes_client_id="ACME01", work_date="2025-12-31"),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"acme", "acme-by-source-id"}
    assert [v.entry_index for v in violations] == [0, 1]


# statuses and messages ----------------------------------------------------------------------------

STATUS_RULES = """
- id: SHADOW
  title: Shadow
  type: max_hours_per_entry
  status: shadow
  params: {max_hours: 1}
- id: DRAFT
  title: Draft
  type: max_hours_per_entry
  status: draft
  params: {max_hours: 1}
- id: DRAFT-DUP
  title: Draft duplicate
  type: duplicate
  status: draft
- id: SHADOW-DAY
  title: Shadow day
  type: daily_hours_cap
  status: shadow
  params: {max_hours: 1}
- id: ACTIVE
  title: Active
  type: max_hours_per_entry
  severity: warning
  references: ["OCG 1.2"]
  params: {max_hours: 1}
"""


def test_shadow_rules_are_marked_and_drafts_are_not_evaluated(backend: str) -> None:
    ruleset = load_rules(STATUS_RULES)
    entries = [make_entry(source_id=s, hours_billed="2", timekeeper_ledes_id="TK1") for s in ("a", "b")]
    violations = run(entries, ruleset, backend)
    assert {(v.rule_id, v.rule_status) for v in violations} == {
        ("SHADOW", "shadow"), ("SHADOW-DAY", "shadow"), ("ACTIVE", "active")}
    assert len(violations) == 6
    active = next(v for v in violations if v.rule_id == "ACTIVE")
    assert (active.severity, active.references, active.ruleset_id) == ("warning", ["OCG 1.2"], "test-rules")
    assert active.ruleset_revision == ruleset.revision

    with_drafts = run(entries, ruleset, backend, statuses=("active", "shadow", "draft"))
    assert {v.rule_id for v in with_drafts} == {"SHADOW", "DRAFT", "DRAFT-DUP", "SHADOW-DAY", "ACTIVE"}
    assert {v.rule_status for v in with_drafts if v.rule_id.startswith("DRAFT")} == {"draft"}
    assert {v.rule_id for v in run(entries, ruleset, backend, statuses=("active",))} == {"ACTIVE"}


def test_backends_agree_on_violations_in_order() -> None:
    ruleset = load_rules(STATUS_RULES + RATE_RULES + DUP_RULES)
    entries = [make_entry(source_id=s, hours_billed="2", timekeeper_ledes_id="TK1", rate=r,
                          timekeeper_classification="PARTNR") for s, r in (("a", "990"), ("b", "1100"), ("c", "5"))]
    results = {}
    for name in ("python", "durable"):
        try:
            results[name] = [v.as_dict() for v in evaluate(entries, ruleset, context=CONTEXT, backend=name)]
        except Exception as exc:  # pragma: no cover - durable-rules unavailable
            pytest.skip(f"{name}: {exc}")
    assert results["python"] == results["durable"]
    assert results["python"], "the batch breaks several rules"


def test_message_template_with_format_spec_cannot_break_evaluation(backend: str) -> None:
    """A template that loads must render: e.g. ``{rate:.2f}`` either fails at load time or formats."""
    rules = """
        - id: MAX
          title: Long entry
          type: max_hours_per_entry
          message: "{hours_billed:.2f} h at {rate}/h"
          params: {max_hours: 1}
        """
    try:
        ruleset = load_rules(rules)
    except RuleSetError as exc:
        assert "message" in str(exc)
        return
    (violation,) = run([make_entry(hours_billed="2", rate="10")], ruleset, backend)
    assert violation.message == "2.00 h at 10/h"
