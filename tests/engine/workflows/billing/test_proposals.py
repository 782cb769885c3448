"""Proposals: which rule would have caught what the client's portal rejected."""

from __future__ import annotations

import yaml

from engine.model import Entry
from engine.rules.loader import load_text
from engine.workflows.billing.proposals import propose, reason_types
from tests.conftest import REPO

ACME = (REPO / "rules" / "acme-corp.yaml").read_text()


def entry(**changes: object) -> Entry:
    base: dict[str, object] = dict(
        source_system="clio", source_id="1", entry_kind="time", ledes_client_id="ACME01",
        law_firm_matter_id="2026-0017", timekeeper_ledes_id="TK1002", timekeeper_name="Okafor, Daniel",
        timekeeper_classification="PARTNR", work_date="2026-03-10", hours_billed="1.5", rate="925.00",
        currency="USD", utbms_task_code="L210", utbms_activity_code="A103",
        narrative="Drafted answer and affirmative defenses to the amended counterclaim")
    base.update(changes)
    return Entry.model_validate(base)


def test_portal_words_map_to_rule_types() -> None:
    assert reason_types("Fee - Excessive time") == ["max_hours_per_entry"]
    assert reason_types("Fee - Rate above approved rate") == ["rate_cap"]
    assert reason_types("Block billing not permitted")[0] == "block_billing"
    assert reason_types("Expense - Non-reimbursable expense")[0] == "blocked_codes"
    assert reason_types("Fee - Inadequate description") == ["narrative"]
    assert reason_types("Something nobody foresaw") == []


def test_an_override_is_named_when_an_active_rule_had_flagged_the_line() -> None:
    acme = load_text(ACME)
    proposal = propose(entry(rate="990.00"), "Fee - Rate above approved rate", None, [(acme, "active")])
    assert (proposal["kind"], proposal["rule_id"]) == ("override", "ACME-RATE-001")


def test_a_shadow_rule_that_flags_the_line_is_proposed_for_activation() -> None:
    shadowed = ACME.replace("    type: max_hours_per_entry\n", "    type: max_hours_per_entry\n    status: shadow\n")
    acme = load_text(shadowed)
    proposal = propose(entry(hours_billed="9.0"), "Fee - Excessive time", None, [(acme, "active")])
    assert (proposal["kind"], proposal["rule_id"]) == ("activate", "ACME-HOURS-001")
    assert "shadow" in proposal["why"]


def test_tightening_keeps_the_rule_and_is_verified() -> None:
    acme = load_text(ACME)
    proposal = propose(entry(hours_billed="6.5"), "Fee - Excessive time", None, [(acme, "active")])
    assert (proposal["kind"], proposal["rule_id"], proposal["verified"]) == ("tighten", "ACME-HOURS-001", True)
    rule = yaml.safe_load(proposal["yaml"])["rules"][0]
    assert rule["params"] == {"max_hours": 6.4} and rule["id"] == "ACME-HOURS-001"


def test_a_new_rule_when_the_client_has_none_of_that_type() -> None:
    bare = load_text("id: bare\nversion: 1\napplies_to: {clients: [ACME01]}\nrules: []\n")
    proposal = propose(entry(narrative="Call"), "Fee - Inadequate description", None, [(bare, "active")])
    assert (proposal["kind"], proposal["rule_type"], proposal["verified"]) == ("new", "narrative", True)
    assert yaml.safe_load(proposal["yaml"])["rules"][0]["params"]["min_length"] == 5


def test_the_fallback_is_a_condition_on_the_code() -> None:
    bare = load_text("id: bare\nversion: 1\nrules: []\n")
    proposal = propose(entry(utbms_task_code="L450"), "Client declined this phase", "X17", [(bare, "active")])
    assert (proposal["kind"], proposal["rule_type"], proposal["verified"]) == ("new", "condition", True)
    assert yaml.safe_load(proposal["yaml"])["rules"][0]["condition"] == {"field": "utbms_task_code", "op": "eq",
                                                                        "value": "L450"}
    nothing = propose(entry(utbms_task_code=None, utbms_activity_code=None), "Client declined", None,
                      [(bare, "active")])
    assert nothing["kind"] == "none"
