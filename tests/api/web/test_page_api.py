"""What the page reads from the API beyond the original list columns (SQLite and PostgreSQL): each queue item's
rules with their severity and an excerpt of its narrative (asked for with ``include=``), and an entry's
data-quality flags. All are additions: a client that does not ask gets the items as they always were."""

from __future__ import annotations

from typing import Any

from engine.store.db import transaction
from engine.workflows.intake import ingest
from tests.api.conftest import NOW, World, day, recent

LONG = ("Drafted and revised the opposition to defendant's motion for summary judgment, including the statement "
        "of undisputed facts, the supporting declaration of counsel and the proposed order")


def items(world: World, **params: Any) -> dict[str, dict[str, Any]]:
    response = world.get("/v1/review-items", "viewer", params={"limit": 500, "include": ["rules", "narrative"],
                                                                **params})
    assert response.status_code == 200, response.text
    by_id = {v: k for k, v in world.ids.items()}
    return {by_id.get(item["id"], str(item["id"])): item for item in response.json()["items"]}


def test_queue_items_carry_their_rules_with_severity_and_a_narrative_excerpt(world: World) -> None:
    listed = items(world)
    rate, vague = listed["rate"], listed["vague"]
    assert rate["rules"] == [{"rule_id": "ACME-RATE-001", "severity": "error"}]
    assert rate["rule_ids"] == ["ACME-RATE-001"] and rate["worst_severity"] == "error"  # as before
    assert [r["severity"] for r in vague["rules"]] == ["warning"] * len(vague["rules"]) and vague["rules"]
    assert [r["rule_id"] for r in vague["rules"]] == vague["rule_ids"]
    assert vague["narrative_excerpt"] == "Review file and attention to matter"
    assert rate["narrative_excerpt"].startswith("Drafted answer and affirmative defenses")
    for item in listed.values():
        assert [r["rule_id"] for r in item["rules"]] == item["rule_ids"]


def test_a_long_narrative_is_cut_at_a_word_with_an_ellipsis(world: World) -> None:
    with transaction(world.sessions) as session:
        ingest(session, [recent("long", work_date=day(20), rate="990.00", narrative=LONG),
                         recent("spaced", work_date=day(21), rate="990.00", narrative="Call with\n  client   re: "
                                                                                       "settlement")],
               context=NOW)
    listed = items(world, date_from=day(20)).values()  # the new entries are keyed by their ids
    excerpt = next(i["narrative_excerpt"] for i in listed if i["narrative_excerpt"].startswith("Drafted and revised"))
    assert excerpt.endswith("\u2026") and len(excerpt) <= 121
    cut = excerpt[:-1]
    assert LONG.startswith(cut) and not LONG[len(cut)].isalnum()  # cut between words
    assert any(i["narrative_excerpt"] == "Call with client re: settlement" for i in listed)


def test_data_quality_flags_in_the_queue_and_on_the_entry(world: World) -> None:
    with transaction(world.sessions) as session:
        ingest(session, [recent("unmapped", work_date=day(22), data_quality_flags=["UNKNOWN_TIMEKEEPER"])],
               context=NOW)
    [item] = [i for i in items(world, data_quality=True).values()]
    assert item["data_quality_flags"] == ["UNKNOWN_TIMEKEEPER"]
    detail = world.get(f"/v1/entries/{item['id']}", "viewer").json()
    assert detail["data_quality_flags"] == ["UNKNOWN_TIMEKEEPER"]
    assert world.get(f"/v1/entries/{world.ids['rate']}", "viewer").json()["data_quality_flags"] == []


def test_the_extras_come_only_when_asked_for(world: World) -> None:
    plain = world.get("/v1/review-items", "viewer", params={"limit": 500}).json()["items"]
    assert plain and all("rules" not in i and "narrative_excerpt" not in i for i in plain)
    assert all("rule_ids" in i and "portal_reasons" in i and "data_quality_flags" in i for i in plain)
    rules_only = world.get("/v1/review-items", "viewer", params={"limit": 500, "include": "rules"}).json()["items"]
    assert all("rules" in i and "narrative_excerpt" not in i for i in rules_only)
    both = items(world)
    assert [{k: v for k, v in i.items() if k not in ("rules", "narrative_excerpt")} for i in both.values()] == plain
    response = world.get("/v1/review-items", "viewer", params={"include": "record"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_the_new_fields_are_documented_and_optional(world: World) -> None:
    schemas = world.client.get("/openapi.json").json()["components"]["schemas"]
    item = schemas["ReviewItem"]
    assert {"rules", "narrative_excerpt"} <= set(item["properties"])
    assert not {"rules", "narrative_excerpt"} & set(item.get("required", []))
    assert schemas["RuleHit"]["required"] == ["rule_id", "severity"]
    assert "data_quality_flags" in schemas["EntryDetail"]["properties"]
    assert "data_quality_flags" not in schemas["EntryDetail"].get("required", [])
    parameters = world.client.get("/openapi.json").json()["paths"]["/v1/review-items"]["get"]["parameters"]
    [include] = [p for p in parameters if p["name"] == "include"]
    assert include["required"] is False
