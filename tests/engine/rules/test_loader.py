"""Loading rule files: every stage reports ``file:line:col: where: what`` and raises only RuleSetError."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from engine.rules.loader import RuleSetError, load_file, load_text, revision_of
from engine.rules.ruleset import RuleSet
from engine.rules.schema import ruleset_schema
from engine.rules.yamlpos import parse
from tests.conftest import BUNDLED_RULES, REPO, locate

SCHEMA_FILE = REPO / "rules" / "ocg-ruleset.schema.json"

HEADER = """\
id: test-rules
version: 1
currency: USD
lists:
  approved: [TK1, TK2]
  codes: [L110]
rules:
"""


def doc(rules: str) -> str:
    """A rule file: the fixed header, then the rules block (written at column 1, indented here)."""
    return HEADER + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n"


def problems_of(tmp_path: Path, text: str, name: str = "ocg.yaml") -> tuple[str, list]:
    """Write ``text`` to a file, load it and return (file name, problems); it must fail with RuleSetError."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleSetError) as info:
        load_file(path)
    problems = info.value.problems
    assert problems, "a RuleSetError must carry at least one problem"
    assert str(info.value) == "\n".join(str(p) for p in problems)
    return str(path), problems


def single(tmp_path: Path, text: str) -> tuple[str, object]:
    file, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, [str(p) for p in problems]
    return file, problems[0]


def assert_at(problem, file: str, text: str, token: str, occurrence: int = 1) -> None:
    line, column = locate(text, token, occurrence)
    assert (problem.file, problem.line, problem.column) == (file, line, column), str(problem)
    assert str(problem).startswith(f"{file}:{line}:{column}: "), str(problem)


# The bundled rule set ------------------------------------------------------------------------------

def test_bundled_rule_file_loads() -> None:
    ruleset = load_file(BUNDLED_RULES)
    assert isinstance(ruleset, RuleSet)
    assert ruleset.id == "acme-corp-ocg"
    assert len({r.id for r in ruleset.rules}) == len(ruleset.rules) == 17
    assert ruleset.rule("ACME-INTERN-001").status == "shadow"


def test_missing_file_is_a_rule_set_error(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError) as info:
        load_file(tmp_path / "nope.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (1, 1)
    assert "cannot read file" in problem.message


# Stage 1: YAML syntax ------------------------------------------------------------------------------

def test_yaml_bad_indentation(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
         type: duplicate
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "type: duplicate")  # the key written one column left of "title"
    assert problem.message.startswith("YAML syntax:")


def test_yaml_unclosed_flow_mapping(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: max_hours_per_entry
          params: {max_hours: 8
        - id: R2
        """)
    file, problem = single(tmp_path, text)
    # The parser notices on the next line, where "- id: R2" cannot continue the unclosed "{".
    assert_at(problem, file, text, ": R2")
    assert problem.message == "YAML syntax: expected ',' or '}', but got ':'"


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          title: Again
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "title", occurrence=2)
    assert problem.message == "duplicate key 'title'"
    assert "rules/0" in problem.where


def test_yaml_non_finite_number(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: max_hours_per_entry
          params: {max_hours: .inf}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, ".inf")
    assert "not a finite number" in problem.message


def test_yaml_floats_are_exact_decimals() -> None:
    from decimal import Decimal

    parsed = parse("a: 0.1\nb: 1_000.25\nc: 3\nd: 2026-03-01\n", "x.yaml")
    assert parsed.data == {"a": Decimal("0.1"), "b": Decimal("1000.25"), "c": 3, "d": "2026-03-01"}
    assert isinstance(parsed.data["a"], Decimal)


# Stage 2: JSON Schema ------------------------------------------------------------------------------

def test_schema_unknown_key_in_rule_lists_expected_keys(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          severty: error
        """)
    file, problem = single(tmp_path, text)
    assert "unknown key 'severty'" in problem.message
    expected = ("condition, description, effective, id, message, params, references, severity, status, "
                "title, type, when")
    assert f"(expected one of: {expected})" in problem.message
    assert problem.where.startswith("rules/0 (R1)")
    # The problem is the misspelt key: point at it, not at the start of the rule.
    assert_at(problem, file, text, "severty")


def test_schema_unknown_param_key_points_at_the_key(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: max_hours_per_entry
          params:
            max_hours: 8
            max_hour: 9
        """)
    file, problem = single(tmp_path, text)
    assert "unknown key 'max_hour' (expected one of: max_hours)" in problem.message
    assert_at(problem, file, text, "max_hour:")


def test_schema_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Rates
          type: rate_cap
          params:
            by_classification: {PARTNR: 950x}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "950x")
    assert problem.where == "rules/0 (R1)/params/by_classification/PARTNR"
    assert problem.message == "'950x' is not of type 'number'"


def test_schema_bad_severity(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          severity: fatal
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "fatal")
    assert problem.message == "'fatal' is not one of 'error', 'warning', 'info'"


def test_schema_missing_title(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          type: duplicate
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "id: R1")  # the rule that lacks it
    assert problem.message == "'title' is required"


def test_schema_unknown_rule_type(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Rates
          type: rate_capp
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "rate_capp")
    assert problem.message.startswith("'rate_capp' is not one of ")
    assert "'rate_cap'" in problem.message and "'duplicate'" in problem.message


def test_schema_params_of_another_type(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: max_hours_per_entry
          params:
            min_length: 3
        """)
    file, problems = problems_of(tmp_path, text)
    messages = {p.message for p in problems}
    assert "'max_hours' is required" in messages
    assert "unknown key 'min_length' (expected one of: max_hours)" in messages
    line, _ = locate(text, "params:")
    assert all(p.file == file and p.where.startswith("rules/0 (R1)/params") for p in problems)
    assert next(p for p in problems if "required" in p.message).line == line


def test_schema_condition_on_a_named_type_is_rejected_clearly(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          condition: {field: rate, op: gt, value: 1}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "condition:")
    assert "condition" in problem.message
    assert "False schema" not in problem.message


def test_schema_unknown_operator_is_named(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Rate
          type: condition
          condition: {field: rate, op: greater, value: 1}
        """)
    file, problem = single(tmp_path, text)
    assert problem.file == file
    assert "greater" in problem.message, str(problem)


def test_schema_wrong_item_type_in_inline_list_is_named(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Staff
          type: approved_timekeepers
          params:
            timekeepers: [TK1, 1001]
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "1001")
    assert "1001" in problem.message and "string" in problem.message, str(problem)


def test_schema_root_must_be_a_mapping(tmp_path: Path) -> None:
    file, problem = single(tmp_path, "- just\n- a list\n")
    assert (problem.file, problem.line, problem.column) == (file, 1, 1)
    assert "must be a mapping" in problem.message


def test_schema_several_errors_all_reported_in_file_order(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          severity: fatal
        - id: R2
          type: duplicate
        - id: R3
          title: Hours
          type: max_hours_per_entry
          params: {max_hours: -1}
        """)
    file, problems = problems_of(tmp_path, text)
    assert all(p.file == file for p in problems)
    assert [(p.line, p.column) for p in problems] == [
        locate(text, "fatal"), locate(text, "id: R2"), locate(text, "-1"),
    ]
    assert [p.where for p in problems] == ["rules/0 (R1)/severity", "rules/1 (R2)", "rules/2 (R3)/params/max_hours"]


# Stage 3: semantics --------------------------------------------------------------------------------

def test_semantic_unknown_list(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Staff
          type: approved_timekeepers
          params:
            timekeepers: {list: staff}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "staff}")
    assert problem.message == "unknown list 'staff' (lists: approved, codes)"
    assert problem.where == "rules/0 (R1)/params/timekeepers/list"


def test_semantic_invalid_regex_in_required_pattern(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Matter number
          type: narrative
          params:
            required_pattern: "[A-Z"
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, '"[A-Z"')
    assert problem.message.startswith("invalid regular expression '[A-Z':")
    assert problem.where == "rules/0 (R1)/params/required_pattern"


def test_semantic_invalid_regex_in_condition_matches(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Intern
          type: condition
          condition:
            any:
              - {field: timekeeper_classification, op: eq, value: LGLINT}
              - {field: narrative, op: matches, value: "(?i)summer (associate"}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, '"(?i)summer')
    assert problem.message.startswith("invalid regular expression '(?i)summer (associate':")
    assert problem.where == "rules/0 (R1)/condition/any/1/value"


def test_semantic_unknown_utbms_code(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Blocked
          type: blocked_codes
          params:
            task_codes: [L110, L999]
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "L999")
    assert problem.message == "unknown UTBMS code 'L999'"
    assert problem.where == "rules/0 (R1)/params/task_codes/1"


def test_semantic_activity_code_given_as_task_code(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Blocked
          type: blocked_codes
          params:
            task_codes: [A101]
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "A101")
    assert problem.message == "A101 is a UTBMS activity code, not a task code"


def test_semantic_unknown_classification_in_rate_cap(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Rates
          type: rate_cap
          params:
            by_classification: {PARTNR: 950, PARTNER: 900}
        """)
    file, problem = single(tmp_path, text)
    assert problem.message == "unknown LEDES timekeeper classification 'PARTNER': did you mean PARTNR?"
    assert problem.where == "rules/0 (R1)/params/by_classification/PARTNER"
    # The wrong thing is the classification, not the (valid) cap next to it.
    assert_at(problem, file, text, "PARTNER:")


def test_semantic_duplicate_rule_ids(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
        - id: R1
          title: Period
          type: billing_period
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "R1", occurrence=2)
    assert problem.message == "duplicate rule id 'R1' (first used by rules/0)"


def test_semantic_unknown_field_in_condition(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: condition
          condition:
            all:
              - {field: entry_kind, op: eq, value: time}
              - {field: hourz_billed, op: gt, value: 8}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "hourz_billed")
    assert problem.message.startswith("unknown field 'hourz_billed'")
    assert problem.where == "rules/0 (R1)/condition/all/1/field"


def test_semantic_unknown_field_in_when(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Duplicate
          type: duplicate
          when: {field: matter, op: eq, value: M1}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "matter,")
    assert problem.where == "rules/0 (R1)/when/field"


def test_semantic_ordering_operator_on_text_field(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Narrative
          type: condition
          condition: {field: narrative, op: lt, value: abc}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "lt,")
    assert problem.message == "lt compares numbers and dates; narrative is string"


def test_semantic_message_names_unknown_value(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Hours
          type: max_hours_per_entry
          message: "{timekeeper_name} billed {hourz} hours"
          params: {max_hours: 8}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, '"{timekeeper_name}')
    assert problem.message == "message template names unknown value {hourz}"


def test_semantic_message_variables_of_the_rule_type_are_allowed() -> None:
    text = doc("""
        - id: R1
          title: Day
          type: daily_hours_cap
          message: "{timekeeper_name}: {total} h in {count} entries, cap {max_hours}"
          params: {max_hours: 10}
        """)
    assert load_text(text).rule("R1").message.startswith("{timekeeper_name}")
    bad = text.replace("{count} entries", "{billed_percent} entries")
    with pytest.raises(RuleSetError, match=r"unknown value \{billed_percent\}"):
        load_text(bad)


def test_semantic_constant_with_more_than_six_decimals(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Tiny rate
          type: condition
          condition: {field: rate, op: lt, value: 0.0000001}
        """)
    file, problem = single(tmp_path, text)
    assert_at(problem, file, text, "0.0000001")
    assert "six decimal places" in problem.message
    # The value as the user wrote it, not a Python repr such as Decimal('1E-7').
    assert "Decimal(" not in problem.message, problem.message


def test_semantic_six_decimals_is_fine() -> None:
    text = doc("""
        - id: R1
          title: Tiny rate
          type: condition
          condition: {field: rate, op: lt, value: 0.000001}
        """)
    assert load_text(text).rule("R1").condition is not None


def test_semantic_several_errors_all_reported(tmp_path: Path) -> None:
    text = doc("""
        - id: R1
          title: Intern
          type: condition
          condition: {field: hourz, op: gt, value: 3}
        - id: R2
          title: Pattern
          type: narrative
          params: {required_pattern: "(x"}
        - id: R3
          title: Blocked
          type: blocked_codes
          params: {task_codes: [L999, A101]}
        - id: R4
          title: Fine
          type: duplicate
        - id: R4
          title: Duplicate id
          type: billing_period
        """)
    file, problems = problems_of(tmp_path, text)
    got = [(p.line, p.column, p.where) for p in problems]
    assert got == [
        (*locate(text, "hourz"), "rules/0 (R1)/condition/field"),
        (*locate(text, '"(x"'), "rules/1 (R2)/params/required_pattern"),
        (*locate(text, "L999"), "rules/2 (R3)/params/task_codes/0"),
        (*locate(text, "A101"), "rules/2 (R3)/params/task_codes/1"),
        (*locate(text, "R4", occurrence=2), "rules/4 (R4)/id"),
    ]
    assert all(p.file == file for p in problems)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty file", ""),
        ("rules is null", "id: x\nversion: 1\nrules:\n"),
        ("rule is a string", "id: x\nversion: 1\nrules:\n  - just a string\n"),
        ("params is a list", "id: x\nversion: 1\nrules:\n  - {id: R1, title: t, type: duplicate, params: [1]}\n"),
        ("impossible date", "id: x\nversion: 1\nrules:\n"
                            "  - {id: R1, title: t, type: duplicate, effective: {from: 2026-13-01}}\n"),
        ("end before start", "id: x\nversion: 1\neffective: {from: 2026-02-03, to: 2026-01-01}\nrules: []\n"),
        ("mapping key", "id: x\nversion: 1\nrules:\n  - {[a]: 1}\n"),
        ("bad template", "id: x\nversion: 1\nrules:\n  - {id: R1, title: t, type: duplicate, message: 'a {'}\n"),
        ("length bound", "id: x\nversion: 1\nrules:\n  - {id: R1, title: t, type: condition,"
                         " condition: {field: narrative, op: length, value: {lt: 2.5}}}\n"),
        ("number list as codes", "id: x\nversion: 1\nlists: {codes: [110]}\nrules:\n"
                                 "  - {id: R1, title: t, type: blocked_codes, params: {task_codes: {list: codes}}}\n"),
        ("number list as phrases", "id: x\nversion: 1\nlists: {p: [7]}\nrules:\n"
                                   "  - {id: R1, title: t, type: narrative, params: {forbidden_phrases: {list: p}}}\n"),
        ("number list as timekeepers", "id: x\nversion: 1\nlists: {tks: [1001]}\nrules:\n"
                                       "  - {id: R1, title: t, type: approved_timekeepers,"
                                       " params: {timekeepers: {list: tks}}}\n"),
    ],
)
def test_malformed_files_raise_rule_set_error_only(tmp_path: Path, name: str, text: str) -> None:
    """Whatever is wrong, the loader answers with positioned problems, never another exception."""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_file(path)
    except RuleSetError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith(f"{path}:{problem.line}:{problem.column}: ")
            assert problem.line >= 1 and problem.column >= 1
    except Exception as exc:  # pragma: no cover - this is the failure being tested for
        pytest.fail(f"{name}: load raised {type(exc).__name__}: {exc}")
    else:
        pytest.fail(f"{name}: a malformed rule file loaded")


def test_named_list_items_are_checked_like_inline_items(tmp_path: Path) -> None:
    """A code in a named list is checked as if written inline, and its problem is still reported."""
    text = doc("""
        - id: R1
          title: Blocked
          type: blocked_codes
          params:
            task_codes: {list: codes}
        """).replace("codes: [L110]", "codes: [L110, L998]")
    _, problem = single(tmp_path, text)
    assert problem.message == "unknown UTBMS code 'L998'"
    assert problem.where == "rules/0 (R1)/params/task_codes/1"


# Revision ------------------------------------------------------------------------------------------

REVISION_BASE = """\
id: rev
version: "1"
rules:
  - id: R1
    title: Hours
    type: max_hours_per_entry
    params: {max_hours: 8}
"""


def test_revision_ignores_comments_whitespace_and_layout() -> None:
    base = load_text(REVISION_BASE).revision
    relaid = """\
# Guidelines, reformatted
id:   rev        # the id
version: '1'

rules:
  -   id: R1
      title: "Hours"
      type: max_hours_per_entry
      params:
        max_hours: 8    # per entry
"""
    assert len(base) == 16 and int(base, 16) >= 0
    assert load_text(relaid).revision == base


def test_revision_changes_when_a_value_changes() -> None:
    base = load_text(REVISION_BASE).revision
    assert load_text(REVISION_BASE.replace("max_hours: 8", "max_hours: 9")).revision != base
    assert load_text(REVISION_BASE.replace("title: Hours", "title: Hours per entry")).revision != base
    assert load_text(REVISION_BASE.replace('version: "1"', 'version: "2"')).revision != base


def test_revision_of_is_a_content_hash() -> None:
    assert revision_of({"a": 1, "b": [1, 2]}) == revision_of({"b": [1, 2], "a": 1})
    assert revision_of({"a": 1}) != revision_of({"a": 2})


# The JSON Schema file --------------------------------------------------------------------------------

def test_schema_file_matches_generated_schema() -> None:
    generated = json.dumps(ruleset_schema(), indent=2) + "\n"
    assert SCHEMA_FILE.exists(), f"generate it: ocgate rules schema > {SCHEMA_FILE.relative_to(REPO)}"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == generated, (
        "rules/ocg-ruleset.schema.json is stale: regenerate it with "
        "`ocgate rules schema > rules/ocg-ruleset.schema.json`"
    )


def test_schema_accepts_the_bundled_rule_file() -> None:
    import jsonschema

    data = parse(BUNDLED_RULES.read_text(encoding="utf-8"), str(BUNDLED_RULES)).data
    errors = list(jsonschema.Draft202012Validator(ruleset_schema()).iter_errors(data))
    assert errors == []
