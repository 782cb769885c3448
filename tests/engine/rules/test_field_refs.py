"""Comparisons of one field with another (optionally times a factor), in conditions and in the types' own
conditions: what fires on each backend, the evidence with the computed value, missing values, and the checks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.model import Entry
from engine.rules.conditions import FieldRef, Leaf, explain, holds, to_nnf
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError
from engine.rules.types.base import leaf
from tests.conftest import decisive, flagged, load_rules, locate, make_entry, only, rules_yaml, run

ABOVE_90 = """
- id: R90
  title: Rate above 90% of the standard rate
  type: condition
  condition: {field: rate, op: gt, value: {field: standard_rate, times: "0.9"}}
- id: NOT90
  title: Rate not above 90% of the standard rate
  type: condition
  condition: {not: {field: rate, op: gt, value: {field: standard_rate, times: 0.9}}}
"""


def tk(source_id: str, rate: str | None, standard: str | None, **fields: object) -> Entry:
    return make_entry(**{"source_id": source_id, "rate": rate, "standard_rate": standard, "hours_billed": "1",
                         **fields})


def test_rate_against_a_share_of_the_standard_rate(backend: str) -> None:
    ruleset = load_rules(ABOVE_90)
    entries = [tk("over", "1000.00", "1050.00"), tk("at", "945.00", "1050.00"), tk("cent-over", "945.01", "1050.00"),
               tk("no-standard", "2000.00", None), tk("no-rate", None, "1050.00")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "R90") == {"over", "cent-over"}
    # The negation holds where the comparison fails, including where either side is missing.
    assert flagged(violations, "NOT90") == {"at", "no-standard", "no-rate"}
    ev = decisive(only(violations, "over", "R90"))
    assert ev == {"field": "rate", "operator": "gt", "expected": "945.00", "actual": "1000.00",
                  "basis": "0.9 x standard_rate 1050.00"}
    missing = decisive(only(violations, "no-standard", "NOT90"))
    assert (missing["field"], missing["operator"], missing["actual"]) == ("standard_rate", "exists", None)
    assert missing["basis"] == "rate is compared with 0.9 x standard_rate"


def test_the_computed_value_keeps_every_digit_it_needs(backend: str) -> None:
    ruleset = load_rules("""
    - id: R
      title: Rate above a third of the standard rate
      type: condition
      condition: {field: rate, op: gt, value: {field: standard_rate, times: 0.333333}}
    """)
    violations = run([tk("a", "350.003", "1050.01"), tk("b", "350.00", "1050.00"), tk("c", "350.00", "1050.01")],
                     ruleset, backend)
    assert flagged(violations) == {"a", "b"}
    # 0.333333 x 1050.01 = 350.00298333, shown in full: rounding it to the cent would misstate the limit.
    assert decisive(only(violations, "a"))["expected"] == "350.00298333"
    assert decisive(only(violations, "b"))["expected"] == "349.99965"


def test_without_a_factor_and_with_every_operator(backend: str) -> None:
    rules = "\n".join(f"""
- id: {op.upper()}
  title: rate {op} standard rate
  type: condition
  condition: {{field: rate, op: {op}, value: {{field: standard_rate}}}}"""
                      for op in ("eq", "ne", "lt", "le", "gt", "ge"))
    ruleset = load_rules(rules)
    entries = [tk("below", "900", "950"), tk("equal", "950.00", "950"), tk("above", "951", "950")]
    violations = run(entries, ruleset, backend)
    by_rule = {op: flagged(violations, op.upper()) for op in ("eq", "ne", "lt", "le", "gt", "ge")}
    assert by_rule == {"eq": {"equal"}, "ne": {"below", "above"}, "lt": {"below"}, "le": {"below", "equal"},
                       "gt": {"above"}, "ge": {"equal", "above"}}
    assert decisive(only(violations, "equal", "EQ"))["basis"] == "standard_rate 950"


def test_derived_fields_and_dates_compare_too(backend: str) -> None:
    ruleset = load_rules("""
    - id: NET
      title: Net amount above the amount
      type: condition
      condition: {field: net_amount, op: gt, value: {field: billed_amount}}
    - id: HOURS
      title: More hours billed than worked, by a tenth
      type: condition
      condition: {field: hours_billed, op: gt, value: {field: hours_worked, times: "1.1"}}
    """)
    entries = [make_entry(source_id="up", rate="100", hours_billed="2", hours_worked="1.5", amount="200",
                          adjustment_amount="5"),
               make_entry(source_id="down", rate="100", hours_billed="1.1", hours_worked="1", amount="200",
                          adjustment_amount="-5")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "NET") == {"up"}
    assert flagged(violations, "HOURS") == {"up"}
    assert decisive(only(violations, "up", "HOURS"))["expected"] == "1.65"


def test_python_api_and_the_reference_interpreter_agree() -> None:
    node = leaf("rate", "gt", FieldRef("standard_rate", Decimal("0.9")))
    assert isinstance(node, Leaf) and node.feature.kind == "versus"
    entry = tk("a", "1000.00", "1050.00")
    values = {node.feature.key: node.feature.compute(entry, EvaluationContext())}
    assert values[node.feature.key] == Decimal("55.000")
    assert holds(node, values)
    negated = to_nnf(node, negate=True)
    assert not holds(negated, values)
    features = {"rate": Decimal("1000.00"), "standard_rate": Decimal("1050.00"), **values}
    (ev,) = explain(node, features, entry)
    assert (ev.expected, ev.actual, ev.basis) == (Decimal("945.00"), Decimal("1000.00"), "0.9 x standard_rate 1050.00")


@pytest.mark.parametrize(("value", "message"), [
    ("{field: standard_rat}", "unknown field 'standard_rat' to compare with"),
    ("{field: narrative}", "rate (decimal) cannot be compared with narrative (string)"),
    ("{field: work_date}", "rate (decimal) cannot be compared with work_date (date)"),
    ("{field: standard_rate, times: 0}", "the factor 0 must be above 0"),
    ("{field: standard_rate, times: abc}", "'abc' is not a number"),
    ("{field: standard_rate, times: 0.1234567}", "0.1234567 has more than six decimal places"),
    ("{field: standard_rate, factor: 2}", "unknown key 'factor' in a field reference"),
])
def test_bad_references_are_positioned_errors(value: str, message: str) -> None:
    text = rules_yaml(f"""
    - id: BAD
      title: bad reference
      type: condition
      condition: {{field: rate, op: gt, value: {value}}}
    """)
    with pytest.raises(RuleSetError) as caught:
        load_rules(f"""
    - id: BAD
      title: bad reference
      type: condition
      condition: {{field: rate, op: gt, value: {value}}}
    """)
    (problem,) = caught.value.problems
    assert problem.message.startswith(message), problem.message
    assert problem.line == locate(text, "value:")[0]
    assert problem.where.startswith("rules/0 (BAD)/condition/value")


def test_operators_that_cannot_compare_two_fields() -> None:
    with pytest.raises(RuleSetError) as caught:
        load_rules("""
        - id: BAD
          title: bad
          type: condition
          condition: {field: work_date, op: ge, value: {field: work_date, times: 2}}
        """)
    assert caught.value.problems[0].message == "dates cannot be multiplied: leave out times"
    with pytest.raises(RuleSetError) as caught:
        load_rules("""
        - id: BAD
          title: bad
          type: condition
          condition: {field: rate, op: matches, value: {field: standard_rate}}
        """)
    assert "matches" in caught.value.problems[0].message


def test_a_field_reference_in_a_when_scope(backend: str) -> None:
    ruleset = load_rules("""
    - id: LONG
      title: More than 8 hours, when billed above the standard rate
      type: max_hours_per_entry
      when: {field: rate, op: gt, value: {field: standard_rate}}
      params: {max_hours: 8}
    """)
    entries = [tk("above", "1000", "900", hours_billed="9"), tk("below", "800", "900", hours_billed="9")]
    assert flagged(run(entries, ruleset, backend)) == {"above"}


def test_entry_files_carry_the_standard_rate(tmp_path: Path, backend: str) -> None:
    """A standard rate given in a canonical file (JSON lines or CSV) reaches the rules, exactly."""
    from engine.entry_io import read_entries

    jsonl = tmp_path / "entries.jsonl"
    jsonl.write_text('{"source_system": "f", "source_id": "j", "entry_kind": "time", "work_date": "2026-03-10", '
                     '"hours_billed": "1", "rate": "1000.00", "standard_rate": 1050.00}\n', encoding="utf-8")
    csv = tmp_path / "entries.csv"
    csv.write_text("source_system,source_id,entry_kind,work_date,hours_billed,rate,standard_rate\n"
                   "f,c,time,2026-03-10,1,940.00,1050.00\n", encoding="utf-8")
    entries = read_entries(jsonl) + read_entries(csv)
    assert [e.standard_rate for e in entries] == [Decimal("1050.00"), Decimal("1050.00")]
    violations = run(entries, load_rules(ABOVE_90), backend)
    assert flagged(violations, "R90") == {"j"}
