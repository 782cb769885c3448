"""``ocgate rules explain``'s words: every rule of the bundled rule sets, each type's description, conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.rules.explain import check_notes, explain_rule, explain_ruleset, generic_description
from engine.rules.loader import load_file
from engine.rules.types import REGISTRY
from engine.rules.words import condition_lines
from tests.conftest import REPO, load_rules

RULESETS = sorted(p for p in (REPO / "rules").glob("*.yaml") if not p.name.endswith(".tests.yaml"))


@pytest.mark.parametrize("path", RULESETS, ids=[p.stem for p in RULESETS])
def test_every_bundled_rule_is_explained(path: Path) -> None:
    ruleset = load_file(path)
    lines = explain_ruleset(ruleset)
    text = "\n".join(lines)
    assert lines[0].startswith(f"{ruleset.title} ({ruleset.id}, version {ruleset.version}, revision ")
    for rule in ruleset.rules:
        assert f"\n{rule.id}: {rule.title}\n" in text
        own = explain_rule(rule, ruleset)
        assert own[1] == f"  Type: {rule.type}. Severity: {rule.severity}. Status: {own[1].split('Status: ')[1]}"
        assert "  What it checks:" in own
        body = own[own.index("  What it checks:") + 1:]
        assert body and body[0].startswith("    ") and body[0].strip()  # something said, indented under it
        for reference in rule.references:
            assert reference in "\n".join(own)


def test_only_the_named_rules_after_the_header() -> None:
    ruleset = load_file(REPO / "rules" / "globex-plc.yaml")
    lines = explain_ruleset(ruleset, ["GLX-NARR-001", "GLX-DUP-001"])
    headers = [line for line in lines if line and not line.startswith((" ", "Translates", "Governs", "Amounts",
                                                                       "The client", ruleset.title))]
    assert headers == ["GLX-NARR-001: Narrative too short", "GLX-DUP-001: Duplicate entry"]


def test_the_header_says_what_the_rule_set_governs_and_its_names() -> None:
    ruleset = load_file(REPO / "rules" / "globex-plc.yaml")
    header = explain_ruleset(ruleset, [])
    assert header[1] == "Translates: Globex Billing Guidelines for Outside Counsel 2026-02"
    assert header[2] == ("Governs: entries of client GLOBEX, on matter 2026-0101 or 2026-0102, dated 2026-01-01 to "
                         "2026-12-31 (both included).")
    assert header[4].startswith("The client's names for timekeeper classes: Partner = PARTNR (partner), "
                                "Senior Associate = ASSOC (associate),")


SCOPED = """
- id: LONG
  title: Long partner entries
  type: max_hours_per_entry
  severity: warning
  status: shadow
  references: ["OCG 6.5"]
  description: Partners only.
  message: "{hours_billed} h"
  effective: {from: 2026-04-01, to: 2026-06-30}
  when: {field: timekeeper_classification, op: in, value: [Partner, OFCOUN]}
  params: {max_hours: 6}
"""


def test_a_rule_with_its_own_scope_dates_and_message() -> None:
    ruleset = load_rules(SCOPED, header="classifications: {Partner: PARTNR}\n")
    assert explain_rule(ruleset.rule("LONG"), ruleset) == [
        "LONG: Long partner entries",
        "  Type: max_hours_per_entry. Severity: warning. Status: shadow (checked, but its findings are hidden and "
        "create no review work).",
        "  Guideline: OCG 6.5.",
        "  Note: Partners only.",
        "  Only entries with work dates 2026-04-01 to 2026-06-30 (both included) (this rule's own dates, within "
        "the rule set's).",
        "  Only entries for which:",
        "    timekeeper_classification is one of PARTNR (partner), OFCOUN (of counsel)",
        "  What it checks:",
        "    Flags a time entry billing more than 6 hours; exactly 6 hours passes.",
        "  Message: {hours_billed} h",
    ]


def test_a_condition_in_words() -> None:
    ruleset = load_rules("""
- id: C
  title: Mixed
  type: condition
  condition:
    all:
      - {field: entry_kind, op: eq, value: time}
      - any:
          - {field: rate, op: gt, value: 1200}
          - {field: narrative, op: matches, value: '(?i)summer'}
          - {field: narrative, op: length, value: {lt: 20}}
      - not: {field: currency, op: eq, value: USD}
      - not:
          any:
            - {field: billable, op: eq, value: false}
            - {field: utbms_task_code, op: exists, value: false}
""")
    assert type(REGISTRY["condition"]).describe(REGISTRY["condition"], ruleset.rule("C"), ruleset) == [
        "Flags an entry when:",
        "  all of:",
        "    - entry_kind is time",
        "    - any of:",
        "      - rate is more than 1200",
        "      - narrative matches /(?i)summer/",
        "      - the number of characters in narrative (leading and trailing spaces not counted) is less than 20",
        "    - not: currency is USD",
        "    - not:",
        "      any of:",
        "        - billable is false",
        "        - utbms_task_code is missing",
    ]


def test_a_comparison_with_another_field_in_words() -> None:
    ruleset = load_rules("""
- id: STD
  title: Above 90% of standard
  type: condition
  condition: {field: rate, op: gt, value: {field: standard_rate, times: 0.9}}
""")
    assert condition_lines(ruleset.rule("STD").condition) == ["rate is more than 0.9 x standard_rate"]


def test_types_without_describe_list_their_parameters() -> None:
    ruleset = load_rules("- {id: DAY, title: Long day, type: daily_hours_cap, params: {max_hours: 10}}")
    rule = ruleset.rule("DAY")
    assert generic_description(rule, ruleset) == [REGISTRY["daily_hours_cap"].summary, "Parameters:",
                                                  "  max_hours: 10"]


def test_per_entry_types_without_describe_spell_out_their_condition() -> None:
    """A per-entry type that says nothing itself is described by the condition it compiles to."""
    ruleset = load_rules("- {id: P, title: Period, type: billing_period}")
    rule = ruleset.rule("P")
    assert generic_description(rule, ruleset) == [REGISTRY["billing_period"].summary, "It flags an entry when:",
                                                  "  outside_billing_period is true"]


def test_narrative_and_codes_describe_themselves() -> None:
    ruleset = load_rules("""
- id: N
  title: Narrative
  type: narrative
  params: {min_length: 25, max_length: 400, forbidden_phrases: [work on], applies_to: all}
- id: B
  title: Blocked
  type: blocked_codes
  params: {task_codes: [L100], expense_codes: [E103]}
""")
    assert explain_rule(ruleset.rule("N"), ruleset)[3:8] == [
        "    Looks at the narratives of time and expense entries; it flags a narrative that:",
        "      - has fewer than 25 characters, leading and trailing spaces not counted;",
        "      - has more than 400 characters, leading and trailing spaces not counted;",
        '      - uses any of these phrases (whole words, any capitals, any spacing): "work on";',
        "    One finding per entry: the first of these tests that fails.",
    ]
    blocked = explain_rule(ruleset.rule("B"), ruleset)
    assert "      - task code L100 (a phase, with its tasks L110, L120, L130, L140, L150, L160, L190)" in blocked
    assert "      - expense code E103" in blocked


def test_check_notes_give_the_rate_cap_precedence_in_force() -> None:
    ruleset = load_rules("""
- id: DEFAULT
  title: Rates
  type: rate_cap
  params: {by_classification: {PARTNR: 900}}
- id: STATED
  title: Rates, the timekeeper first
  type: rate_cap
  params:
    by_classification: {PARTNR: 900}
    precedence: [timekeeper, matter_timekeeper, matter_classification, classification]
""")
    notes = check_notes(ruleset)
    assert notes[0].startswith("DEFAULT: which cap applies (the default): the first that exists of "
                               "matter_timekeeper > matter_classification > timekeeper > classification")
    assert notes[1].startswith("STATED: which cap applies (as stated): the first that exists of "
                               "timekeeper > matter_timekeeper > matter_classification > classification")
