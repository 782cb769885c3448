"""The client's own names for timekeeper classes (``classifications:``), and narrative lengths after trimming."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.rules.conditions import Leaf, leaves
from engine.rules.evaluate import canonical_classifications, evaluate
from engine.rules.loader import RuleSetError, load_text
from tests.conftest import decisive, flagged, load_rules, locate, make_entry, only, rules_yaml, run

ALIASES = """\
classifications:
  Partner: PARTNR
  Senior Associate: assoc
  PL: PARALG
  Paralegal: PARALG
"""

PARALEGAL_RULE = """
- id: PARA
  title: Paralegals may not bill pleadings
  type: condition
  condition:
    all:
      - {field: timekeeper_classification, op: in, value: [PL, Paralegal]}
      - {field: utbms_task_code, op: eq, value: L210}
"""


# The rule set's names ---------------------------------------------------------------------------------

def test_canonical_classification_codes_and_aliases_ignore_case_and_spacing() -> None:
    ruleset = load_rules(PARALEGAL_RULE, header=ALIASES)
    assert ruleset.classifications == {"Partner": "PARTNR", "Senior Associate": "ASSOC", "PL": "PARALG",
                                       "Paralegal": "PARALG"}
    assert ruleset.canonical_classification("PARTNR") == "PARTNR"
    assert ruleset.canonical_classification("partnr") == "PARTNR"  # a code, in any case
    assert ruleset.canonical_classification("PT") == "PT"  # pre-2014 codes are codes too
    assert ruleset.canonical_classification("Partner") == "PARTNR"
    assert ruleset.canonical_classification("SENIOR ASSOCIATE") == "ASSOC"  # as an entry stores a title
    assert ruleset.canonical_classification("  senior \t associate ") == "ASSOC"
    assert ruleset.canonical_classification("pl") == "PARALG"
    assert ruleset.canonical_classification("Junior Associate") is None
    assert ruleset.canonical_classification("") is None
    assert ruleset.canonical_classification("   ") is None


def test_canonical_classification_without_aliases_knows_only_codes() -> None:
    ruleset = load_rules("- {id: DUP, title: Duplicates, type: duplicate}")
    assert ruleset.classifications == {}
    assert ruleset.canonical_classification("assoc") == "ASSOC"
    assert ruleset.canonical_classification("Partner") is None


def test_classification_suggestion_names_the_nearest_code_or_alias() -> None:
    ruleset = load_rules(PARALEGAL_RULE, header=ALIASES)
    assert ruleset.classification_suggestion("Paralegl") == "Paralegal"  # an alias, as written
    assert ruleset.classification_suggestion("Senior Asociate") == "Senior Associate"
    assert ruleset.classification_suggestion("PARTNER") in ("PARTNR", "Partner")
    assert ruleset.classification_suggestion("PARTNRE") == "PARTNR"
    assert ruleset.classification_suggestion("zzzzzzzzzz") is None
    plain = load_rules("- {id: DUP, title: Duplicates, type: duplicate}")
    assert plain.classification_suggestion("Paralegal") == "PARALG"


# The classifications block, checked ------------------------------------------------------------------

def problems(text: str) -> list[str]:
    with pytest.raises(RuleSetError) as info:
        load_text(text, "ocg.yaml")
    return [str(p) for p in info.value.problems]


BAD_BLOCKS = {
    # name: (the block, the token the problem points at, the message)
    "duplicate, differing in case": (
        "classifications:\n  Partner: PARTNR\n  PARTNER: PARTNR\n", "PARTNER:",
        "classifications/PARTNER: duplicate alias 'PARTNER' (already declared as 'Partner' on line 4)"),
    "duplicate, differing in spacing": (
        "classifications:\n  Senior Associate: ASSOC\n  'senior  associate': OFCOUN\n", "'senior",
        "duplicate alias 'senior  associate' (already declared as 'Senior Associate' on line 4)"),
    "unknown code, with a suggestion": (
        "classifications:\n  Paralegal: PARALEGL\n", "PARALEGL",
        "classifications/Paralegal: unknown LEDES timekeeper classification 'PARALEGL' (did you mean PARALG?)"),
    "unknown code mapped to itself": (
        "classifications:\n  PL: PL\n", "PL\n", "unknown LEDES timekeeper classification 'PL'"),
    "an alias of an alias": (
        "classifications:\n  Partner: PARTNR\n  Equity Partner: Partner\n", "Partner\n",
        "'Partner' is an alias: an alias names a LEDES classification code, not another alias"),
    "an alias that gives a code another meaning": (
        "classifications:\n  AS: PARTNR\n", "AS:",
        "classifications/AS: 'AS' is itself a LEDES classification code (associate, pre-2014 code): it cannot "
        "also stand for PARTNR"),
    "a blank name": ("classifications:\n  ' ': PARTNR\n", "' '", "an alias needs a name"),
}


@pytest.mark.parametrize("kind", list(BAD_BLOCKS))
def test_bad_classifications_are_positioned(kind: str) -> None:
    block, token, message = BAD_BLOCKS[kind]
    text = rules_yaml("- {id: DUP, title: Duplicates, type: duplicate}", header=block)
    found = problems(text)
    assert len(found) == 1, found
    line, column = locate(text, token)
    assert found[0].startswith(f"ocg.yaml:{line}:{column}: "), (found[0], line, column)
    assert found[0].endswith(message), found[0]


def test_bad_classification_target_is_a_schema_error() -> None:
    text = rules_yaml("- {id: DUP, title: Duplicates, type: duplicate}", header="classifications:\n  Partner: 7\n")
    found = problems(text)
    line, column = locate(text, "7\n")
    assert found == [f"ocg.yaml:{line}:{column}: classifications/Partner: 7 is not of type 'string'"]


def test_an_alias_may_repeat_a_code_as_itself() -> None:
    ruleset = load_rules("- {id: DUP, title: Duplicates, type: duplicate}", header="classifications:\n  assoc: ASSOC\n")
    assert ruleset.canonical_classification("Assoc") == "ASSOC"


# Conditions name classes by code or alias ------------------------------------------------------------

def class_values(ruleset, rule_id: str) -> list[object]:
    rule = ruleset.rule(rule_id)
    node = rule.condition if rule.condition is not None else rule.when
    return [leaf.value for leaf in leaves(node) if isinstance(leaf, Leaf)
            and leaf.feature.field == "timekeeper_classification"]


def test_conditions_and_scopes_compile_aliases_to_codes() -> None:
    ruleset = load_rules(PARALEGAL_RULE + """
- id: LONG
  title: Long partner entries
  type: max_hours_per_entry
  when: {field: timekeeper_classification, op: eq, value: partner}
  params: {max_hours: 6}
- id: SENIOR
  title: Senior associates
  type: condition
  condition: {not: {field: timekeeper_classification, op: ne, value: Senior Associate}}
""", header=ALIASES)
    assert class_values(ruleset, "PARA") == [("PARALG",)]  # two names for one code, kept once
    assert class_values(ruleset, "LONG") == ["PARTNR"]
    assert class_values(ruleset, "SENIOR") == ["ASSOC"]


def test_unknown_class_in_a_condition_suggests_the_nearest_name() -> None:
    text = rules_yaml("""
- id: PARA
  title: Paralegals
  type: condition
  condition: {field: timekeeper_classification, op: in, value: [PL, Paralegl]}
""", header=ALIASES)
    found = problems(text)
    line, column = locate(text, "Paralegl]")
    assert found == [f"ocg.yaml:{line}:{column}: rules/0 (PARA)/condition/value/1: unknown LEDES timekeeper "
                     "classification 'Paralegl' (nor one of the rule set's classifications): did you mean Paralegal?"]


def test_unknown_class_in_a_when_without_aliases_suggests_a_code() -> None:
    text = rules_yaml("""
- id: LONG
  title: Long entries
  type: max_hours_per_entry
  when: {field: timekeeper_classification, op: eq, value: Partner}
  params: {max_hours: 6}
""")
    found = problems(text)
    line, column = locate(text, "Partner}")
    assert found == [f"ocg.yaml:{line}:{column}: rules/0 (LONG)/when/value: unknown LEDES timekeeper "
                     "classification 'Partner': did you mean PARTNR?"]


def test_unknown_class_from_a_named_list_points_into_the_rule() -> None:
    text = rules_yaml("""
- id: PARA
  title: Paralegals
  type: condition
  condition: {field: timekeeper_classification, op: in, value: {list: staff}}
""", header=ALIASES + "lists:\n  staff: [PL, Parelegal]\n")
    found = problems(text)
    assert len(found) == 1 and "unknown LEDES timekeeper classification 'Parelegal'" in found[0], found
    assert "did you mean Paralegal?" in found[0]


# Entries with a firm title are judged as the code ----------------------------------------------------

def test_entries_with_an_alias_are_judged_as_its_code(backend: str) -> None:
    ruleset = load_rules(PARALEGAL_RULE + """
- id: RATE
  title: Rate cap
  type: rate_cap
  params: {by_classification: {ASSOC: 600, PARALG: 250}}
""", header=ALIASES)
    entries = [
        make_entry(source_id="title", timekeeper_classification="Senior Associate", rate="610", hours_billed="1"),
        make_entry(source_id="title-under", timekeeper_classification="senior associate", rate="600",
                   hours_billed="1"),
        make_entry(source_id="code", timekeeper_classification="ASSOC", rate="610", hours_billed="1"),
        make_entry(source_id="pl", timekeeper_classification="pl", utbms_task_code="L210", rate="200",
                   hours_billed="1"),
        make_entry(source_id="unknown-title", timekeeper_classification="Junior Associate", rate="9999",
                   hours_billed="1"),
    ]
    before = [e.model_dump() for e in entries]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "RATE") == {"title", "code"}
    assert flagged(violations, "PARA") == {"pl"}
    ev = decisive(only(violations, "title", "RATE"))
    assert (ev["expected"], ev["actual"]) == ("600", "610")
    assert [e.model_dump() for e in entries] == before  # the caller's entries are not changed
    assert entries[0].timekeeper_classification == "SENIOR ASSOCIATE"


def test_backends_agree_on_aliased_entries() -> None:
    from engine.rules.backends import DURABLE_AVAILABLE

    if not DURABLE_AVAILABLE:
        pytest.skip("durable-rules is not importable on this interpreter")
    ruleset = load_rules(PARALEGAL_RULE + """
- id: RATE
  title: Rate cap
  type: rate_cap
  params: {by_classification: {PARTNR: 900, ASSOC: 600, PARALG: 250}}
""", header=ALIASES)
    names = ["Partner", "PARTNR", "senior associate", "ASSOC", "PL", "Paralegal", "PARALG", "Other", None]
    entries = [make_entry(source_id=f"{i}-{j}", timekeeper_classification=name, rate=rate, hours_billed="1",
                          utbms_task_code=code)
               for i, name in enumerate(names) for j, (rate, code) in enumerate(
                   [("199", "L210"), ("251", "L110"), ("601", "L210"), ("901", None)])]
    by_python = [v.as_dict() for v in evaluate(entries, ruleset, backend="python")]
    by_durable = [v.as_dict() for v in evaluate(entries, ruleset, backend="durable")]
    assert by_python == by_durable
    assert len(by_python) > 10


def test_canonical_classifications_copies_only_what_changes() -> None:
    ruleset = load_rules(PARALEGAL_RULE, header=ALIASES)
    entries = [make_entry(source_id="a", timekeeper_classification="ASSOC"),
               make_entry(source_id="b", timekeeper_classification="Paralegal"),
               make_entry(source_id="c")]
    judged = canonical_classifications(entries, ruleset)
    assert judged[0] is entries[0] and judged[2] is entries[2]
    assert judged[1] is not entries[1] and judged[1].timekeeper_classification == "PARALG"
    assert entries[1].timekeeper_classification == "PARALEGAL"
    plain = load_rules("- {id: DUP, title: Duplicates, type: duplicate}")
    assert canonical_classifications(entries, plain) is entries  # no aliases: nothing copied


# Narrative lengths count the text without leading and trailing whitespace ------------------------------

def test_narrative_lengths_are_counted_after_trimming(backend: str) -> None:
    ruleset = load_rules("""
- id: SHORT
  title: Narrative too short
  type: narrative
  params: {min_length: 25}
- id: LONG
  title: Narrative too long
  type: narrative
  params: {max_length: 30}
""")
    text = "Reviewed draft brief today"  # 26 characters
    entries = [
        make_entry(source_id="padded-short", narrative="   Drafted letter to X" + " " * 10),
        make_entry(source_id="exact", narrative="x" * 25),
        make_entry(source_id="padded-ok", narrative=f"\n {text} \t"),
        make_entry(source_id="padded-long", narrative=" " * 20 + text + " " * 20),  # 66 written, 26 counted
        make_entry(source_id="blank", narrative="     "),
    ]
    violations = run(entries, ruleset, backend)
    assert flagged(violations, "SHORT") == {"padded-short", "blank"}
    assert flagged(violations, "LONG") == set()
    short = only(violations, "padded-short", "SHORT")
    assert decisive(short) == {"field": "narrative characters after trimming", "operator": "lt", "expected": 25,
                               "actual": 19}
    assert short.message == "Narrative fails the guideline: 19 characters after trimming, fewer than the 25 required"
    assert decisive(only(violations, "blank", "SHORT"))["actual"] == 0


def test_narrative_findings_in_words(backend: str) -> None:
    ruleset = load_rules("""
- id: WORDS
  title: Too many words
  type: narrative
  params: {max_length: 3, unit: words}
- id: VAGUE
  title: Vague
  type: narrative
  params: {forbidden_phrases: [attention to]}
- id: FOR
  title: Purpose
  type: narrative
  params: {required_pattern: '\\bfor\\b'}
""")
    violations = run([make_entry(source_id="1", narrative="  Attention to the file  ")], ruleset, backend)
    messages = {v.rule_id: v.message for v in violations}
    assert messages == {
        "WORDS": "Narrative fails the guideline: 4 words, more than the 3 allowed",
        "VAGUE": 'Narrative fails the guideline: the vague phrase "Attention to"',
        "FOR": "Narrative fails the guideline: no match for the required pattern /\\bfor\\b/",
    }


def test_condition_length_counts_after_trimming(backend: str) -> None:
    ruleset = load_rules("""
- id: TERSE
  title: Terse
  type: condition
  condition: {field: narrative, op: length, value: {lt: 5}}
""")
    entries = [make_entry(source_id="pad", narrative="  ab   "), make_entry(source_id="ok", narrative=" abcde ")]
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"pad"}
    assert decisive(only(violations, "pad")) == {"field": "narrative characters after trimming", "operator": "lt",
                                                 "expected": 5, "actual": 2}


def test_rate_values_stay_decimal_for_aliased_entries() -> None:
    ruleset = load_rules("- {id: R, title: Rate, type: rate_cap, params: {by_classification: {PARTNR: 900}}}",
                         header=ALIASES)
    [violation] = evaluate([make_entry(source_id="p", timekeeper_classification="Partner", rate="900.01",
                                       hours_billed="1")], ruleset, backend="python")
    assert violation.evidence[-1].actual == Decimal("900.01")
    assert violation.evidence[-1].expected == Decimal("900")
