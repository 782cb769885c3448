"""Property: durable-rules and the Python backend find exactly the same violations.

Entries are generated around the values the bundled rule sets care about (caps and one cent either
side, tenths and quarter hours, vague phrases, separators, codes of every kind, missing values, dates
at the period's edges), so most examples break or nearly break some rule.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_file, load_text
from engine.rules.ruleset import RuleSet
from tests.conftest import REPO

RULES_DIR = REPO / "rules"
# rules/initech.yaml (attendance limits, budgets) has its own generator of Initech staffing and fees, with this
# property and the reach test, in test_staffing.py: the entries below never name its client.
RULESETS = sorted(p for p in RULES_DIR.glob("*.yaml") if not p.name.endswith(".tests.yaml") and p.stem != "initech")

pytestmark = pytest.mark.skipif(not DURABLE_AVAILABLE, reason="durable-rules does not import here")

_LOADED: dict[Path, RuleSet] = {}


def _load(path: Path) -> RuleSet:
    """Each rule file is loaded once: the property runs hundreds of examples."""
    if path not in _LOADED:
        _LOADED[path] = load_file(path)
    return _LOADED[path]


CAPS = [Decimal(v) for v in ("150", "225", "275", "600", "625", "850", "875", "925", "950", "1050", "0.10", "0.70",
                             "75", "350", "350", "400")]
CENT = Decimal("0.01")


def _near_caps() -> st.SearchStrategy[Decimal]:
    return st.one_of(
        st.sampled_from(CAPS).flatmap(lambda c: st.sampled_from([c - CENT, c, c + CENT, c + Decimal("0.0000001")])),
        st.decimals(min_value=0, max_value=2000, places=2, allow_nan=False, allow_infinity=False),
    )


HOURS = st.one_of(
    st.integers(min_value=0, max_value=140).map(lambda n: Decimal(n) / 10),
    st.sampled_from([Decimal(v) for v in ("0.25", "0.75", "2.33", "0.05", "8.0", "8.01", "10", "12")]),
)
FRAGMENTS = [
    "Drafted answer and affirmative defenses", "review file", "Review   File", "attention to matter",
    "follow up", "followup", "work on brief", "various matters", "miscellaneous", "Reviewed filed answer",
    "travel to Chicago", "Travelled to court", "summer associate research", "conferred with client",
    "prepared deposition outline", "x", "", "Met with counsel. Then drafted the memo", "Internal conference",
    "Letter to J. Smith re deposition", "for expert", "office conference with team",
]
NARRATIVE = st.lists(st.sampled_from(FRAGMENTS), min_size=0, max_size=3).flatmap(
    lambda parts: st.sampled_from(["; ", " / ", "\n", ". ", " "]).map(lambda sep: sep.join(parts))
)
TASKS = st.sampled_from([None, "L110", "L120", "L140", "L100", "L210", "L250", "L300", "L310", "L320", "L330", "B110",
                         "C100", "P210"])
ACTIVITIES = st.sampled_from([None, "A101", "A102", "A103", "A104", "A105", "A109", "A110", "A111"])
EXPENSES = st.sampled_from([None, "E101", "E103", "E104", "E109", "E110", "E111", "E112", "E114", "E115"])
CLASSES = st.sampled_from([None, "PARTNR", "ASSOC", "OFCOUN", "PARALG", "LGLAST", "LGLINT", "TRANEE", "PT"])
TIMEKEEPERS = st.sampled_from([None, "TK1001", "TK1002", "TK1004", "TK1007", "TK1011", "TK1012", "TK9999",
                               "TK2001", "TK2002", "TK2003"])
MATTERS = st.sampled_from([None, "2026-0042", "2026-0017", "2025-0311", "OTHER", "2026-0101", "2026-0102"])
CLIENT_MATTERS = {"ACME01": ["2026-0042", "2026-0017"], "GLOBEX": ["2026-0101", "2026-0102"]}
CLIENTS = st.sampled_from(["ACME01", "ACME01", "GLOBEX", "GLOBEX", None, "OTHER"])
DATES = st.sampled_from([dt.date(2025, 11, 20), dt.date(2026, 1, 5), dt.date(2026, 2, 28), dt.date(2026, 3, 1),
                         dt.date(2026, 3, 15), dt.date(2026, 3, 31), dt.date(2026, 4, 1), dt.date(2026, 4, 14),
                         dt.date(2026, 4, 30), dt.date(2026, 5, 2)])


CLASS_CAPS = {"PARTNR": ["950", "925", "1050", "900", "850", "1000"], "ASSOC": ["625", "600", "550"],
              "OFCOUN": ["850"], "PARALG": ["275", "250"], "LGLAST": ["225"], "LGLINT": ["150"], "TRANEE": ["150"],
              "PT": ["950"]}
EXPENSE_CAPS = {"E111": "75", "E110": "350", "E101": "0.10", "E109": "0.70"}
EXPENSE_CAPS_2 = {"E111": "60", "E101": "0.15"}


def _near(cap: str) -> st.SearchStrategy[Decimal]:
    c = Decimal(cap)
    return st.sampled_from([c - CENT, c, c + CENT, c + Decimal("0.0000001"), c - Decimal("0.0000001")])


@st.composite
def entries(draw: st.DrawFn, index: int) -> Entry:
    kind = draw(st.sampled_from(["time", "time", "expense"]))
    hours = draw(st.none() | HOURS)
    classification = draw(CLASSES)
    expense_code = draw(EXPENSES)
    if kind == "time" and classification is not None and draw(st.booleans()):
        rate = draw(st.sampled_from(CLASS_CAPS[classification]).flatmap(_near))
    elif kind == "expense" and expense_code in EXPENSE_CAPS and draw(st.booleans()):
        rate = draw(_near(draw(st.sampled_from([EXPENSE_CAPS, EXPENSE_CAPS_2])).get(expense_code, "1")))
    else:
        rate = draw(st.none() | _near_caps())
    quantity = hours if kind == "time" else draw(st.none() | st.integers(1, 900).map(Decimal))
    amount = None
    if draw(st.booleans()) and rate is not None and quantity is not None:
        amount = rate * quantity if draw(st.booleans()) else (rate * quantity).quantize(CENT)
    adjustment = None
    if amount is not None and draw(st.booleans()):
        adjustment = -(amount * draw(st.sampled_from([Decimal("0.5"), Decimal("0.4"), Decimal("0.6")]))).quantize(CENT)
    standard = None
    if kind == "time" and draw(st.booleans()):  # the standard rate: at, just around, or a share away from the rate
        base = rate if rate is not None and draw(st.booleans()) else draw(_near_caps())
        standard = draw(st.sampled_from([base, base + CENT, base - CENT, base / Decimal("0.9"),
                                         base * Decimal("0.9"), base * 2, base / 2]))
        standard = standard.quantize(Decimal("0.0001")) if standard > 0 else None
    client = draw(CLIENTS)
    matters = CLIENT_MATTERS.get(client)
    matter = draw(st.sampled_from(matters)) if matters and draw(st.booleans()) else draw(MATTERS)
    return Entry(
        source_system="prop", source_id=f"p{index}", entry_kind=kind,
        fee_basis=draw(st.sampled_from(["hourly", "hourly", "hourly", "flat", "unit", "contingency"])),
        ledes_client_id=client,
        client_source_id=draw(st.sampled_from([None, "C-0001"])),
        law_firm_matter_id=matter, timekeeper_ledes_id=draw(TIMEKEEPERS),
        timekeeper_source_id=draw(st.sampled_from([None, "u1", "u2"])),
        timekeeper_name=draw(st.sampled_from([None, "Okafor, Daniel"])),
        timekeeper_classification=classification, work_date=draw(DATES),
        hours_worked=draw(st.sampled_from([hours, None, Decimal("4.0")])), hours_billed=hours, quantity=quantity,
        rate=rate, standard_rate=standard, amount=amount, adjustment_amount=adjustment,
        currency=draw(st.sampled_from(["USD", "USD", None, "EUR", "GBP"])),
        utbms_task_code=draw(TASKS), utbms_activity_code=draw(ACTIVITIES), utbms_expense_code=expense_code,
        narrative=draw(NARRATIVE), billable=draw(st.sampled_from([True, True, True, False])),
        no_charge=draw(st.sampled_from([False, False, True])),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[Entry]:
    size = draw(st.integers(min_value=1, max_value=25))
    batch = [draw(entries(i)) for i in range(size)]
    # Duplicates and long days need repeats: copy some entries under new ids.
    for i, original in enumerate(draw(st.lists(st.sampled_from(batch), max_size=4))):
        batch.append(original.model_copy(update={"source_id": f"copy{i}"}))
    return batch


CONTEXTS = st.sampled_from([
    EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31)),
    EvaluationContext(as_of=dt.date(2026, 5, 5), period_start=dt.date(2026, 4, 1), period_end=dt.date(2026, 4, 30)),
    EvaluationContext(as_of=dt.date(2026, 6, 30)),
    EvaluationContext(),
])


@pytest.mark.parametrize("ruleset_file", RULESETS, ids=[p.stem for p in RULESETS])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), context=CONTEXTS)
def test_backends_find_the_same_violations(ruleset_file: Path, batch: list[Entry], context: EvaluationContext) -> None:
    ruleset = _load(ruleset_file)
    statuses = ("active", "shadow", "draft")
    by_python = [v.as_dict() for v in evaluate(batch, ruleset, context=context, backend="python", statuses=statuses)]
    by_durable = [v.as_dict() for v in evaluate(batch, ruleset, context=context, backend="durable", statuses=statuses)]
    assert by_durable == by_python


# Comparisons of two fields, standard-rate caps, schedules and stated precedence, beside the bundled rule sets.
FIELD_REF_RULES = load_text("""
id: field-refs
version: 1
currency: USD
rules:
  - id: REF-90
    title: rate above 90% of the standard rate
    type: condition
    condition: {field: rate, op: gt, value: {field: standard_rate, times: "0.9"}}
  - id: REF-NOT
    title: rate not at least the standard rate
    type: condition
    condition: {not: {field: rate, op: ge, value: {field: standard_rate}}}
  - id: REF-NET
    title: net amount at most a third of hours worked x 1000
    type: condition
    condition:
      all:
        - {field: net_amount, op: le, value: {field: billed_amount, times: 0.333333}}
        - {field: hours_billed, op: ne, value: {field: hours_worked}}
  - id: REF-RATE
    title: scheduled caps with standard-rate forms and a stated precedence
    type: rate_cap
    params:
      precedence: [timekeeper, standard_rate, matter_timekeeper, matter_classification, classification]
      schedule:
        - from: 2025-07-01
          by_classification: {PARTNR: 925, ASSOC: 600}
          by_timekeeper: {TK1001: 1000}
          standard_rate_discount: 10%
          matter_overrides:
            - {matter: "2026-0042", rate_freeze: {as_of: 2025-01-01, by_timekeeper: {TK1002: 875}}}
        - from: 2026-03-01
          to: 2026-03-31
          by_classification: {PARTNR: 950, ASSOC: 625, PARALG: 275}
          at_most_standard_rate: true
          matter_overrides:
            - {matter: "2026-0017", by_classification: {PARTNR: 900}, standard_rate_discount: "5%"}
        - from: 2026-04-01
          by_timekeeper: {TK1001: 1050, TK1004: 600}
          matter_overrides:
            - {matter: "2026-0042", at_most_standard_rate: true}
      action: adjust
  - id: REF-TRAVEL
    title: travel at half the standard rate
    type: travel
    params: {share: 50%, rate_basis: standard_rate, action: adjust}
  - id: REF-EXP
    title: dated expense limits
    type: expense_cap
    params:
      schedule:
        - {from: 2025-01-01, caps: [{expense_codes: [E101], per: unit, max: 0.10}]}
        - from: 2026-03-15
          caps: [{expense_codes: [E101], per: unit, max: 0.15}, {expense_codes: [E111], per: entry, max: 75}]
""", "field-refs.yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), context=CONTEXTS)
def test_backends_agree_on_field_comparisons_and_schedules(batch: list[Entry], context: EvaluationContext) -> None:
    by_python = [v.as_dict() for v in evaluate(batch, FIELD_REF_RULES, context=context, backend="python")]
    by_durable = [v.as_dict() for v in evaluate(batch, FIELD_REF_RULES, context=context, backend="durable")]
    assert by_durable == by_python


def test_the_generator_reaches_the_field_comparison_rules() -> None:
    reached: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(batch=batches(), context=CONTEXTS)
    def collect(batch: list[Entry], context: EvaluationContext) -> None:
        reached.update(v.rule_id for v in evaluate(batch, FIELD_REF_RULES, context=context, backend="python"))

    collect()
    assert {r.id for r in FIELD_REF_RULES.rules} == reached


@pytest.mark.parametrize("ruleset_file", RULESETS, ids=[p.stem for p in RULESETS])
def test_the_generator_reaches_most_rules(ruleset_file: Path) -> None:
    """The property above is only worth something if the generated entries break the rules it compares."""
    ruleset = _load(ruleset_file)
    reached: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(batch=batches(), context=CONTEXTS)
    def collect(batch: list[Entry], context: EvaluationContext) -> None:
        found = evaluate(batch, ruleset, context=context, backend="python", statuses=("active", "shadow", "draft"))
        reached.update(v.rule_id for v in found)

    collect()
    missed = {r.id for r in ruleset.rules} - reached
    assert not missed, sorted(missed)
