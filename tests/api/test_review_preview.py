"""``POST /v1/entries/{id}/adjust/preview``, on SQLite and PostgreSQL: the findings and write-down an adjustment
would make, with nothing stored, exactly what ``/adjust`` then stores; reviewers only; documented errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import World

UNKNOWN = 999_999


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def preview_url(world: World, source_id: str) -> str:
    return f"/v1/entries/{world.ids[source_id]}/adjust/preview"


def unchanged(world: World, source_id: str) -> tuple[Any, ...]:
    detail = world.get(f"/v1/entries/{world.ids[source_id]}")
    body = detail.json()
    return detail.headers["ETag"], body["state"], body["entry"], body["violations"], body["history"]


def test_a_preview_answers_the_findings_and_write_down_and_stores_nothing(world: World) -> None:
    before = unchanged(world, "m1")
    response = world.post(preview_url(world, "m1"), "reviewer", json={"changes": {"rate": "960.00"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("id", "version", "state", "worst_severity", "amount_before", "amount_after",
                                 "write_down", "proposed_write_down", "cleared", "remaining", "new")} == {
        "id": world.ids["m1"], "version": 1, "state": "in_review", "worst_severity": "error",
        "amount_before": "1485.000", "amount_after": "1440.000", "write_down": "-45.00",
        "proposed_write_down": "-15.00", "cleared": [], "remaining": ["ACME-RATE-001"], "new": []}
    [finding] = body["findings"]
    assert (finding["rule_id"], finding["severity"], finding["rule_status"]) == ("ACME-RATE-001", "error", "active")
    assert finding["evidence"][-1]["actual"] == "960.00" and finding["adjustment"]["amount"] == "-15.00"
    assert finding["message"] and finding["references"]
    assert unchanged(world, "m1") == before  # no version, no audit row, no findings

    cleared = world.post(preview_url(world, "m1"), "reviewer", json={"changes": {"rate": "950.00"}}).json()
    assert (cleared["state"], cleared["findings"], cleared["cleared"], cleared["write_down"]) == (
        "ready", [], ["ACME-RATE-001"], "-60.00")
    assert cleared["proposed_write_down"] is None
    assert unchanged(world, "m1") == before


@pytest.mark.parametrize(("source_id", "changes"), [
    ("rate", {"rate": "950.00"}),
    ("m1", {"rate": "975.00", "narrative": "Attention to file"}),
    ("vague", {"narrative": "Drafted the reply brief on the motion to dismiss, sections II and III"}),
    ("p03", {"hours_billed": "2.0"}),
    ("held", {"utbms_task_code": "L999"}),
])
def test_the_preview_names_exactly_the_findings_adjust_then_stores(world: World, source_id: str,
                                                                   changes: dict[str, Any]) -> None:
    preview = world.post(preview_url(world, source_id), "reviewer", json={"changes": changes})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    saved = world.post(f"/v1/entries/{world.ids[source_id]}/adjust", "reviewer", if_match=f'"{body["version"]}"',
                       json={"changes": changes, "reason": "checked against the preview"})
    assert saved.status_code == 200, saved.text
    assert (saved.json()["state"], saved.json()["write_down"]) == (body["state"], body["write_down"])
    detail = world.get(f"/v1/entries/{world.ids[source_id]}").json()
    assert detail["violations"] == body["findings"]
    assert detail["worst_severity"] == body["worst_severity"]
    last = detail["history"][-1]
    assert (last["action"], last["before"]["amount"], last["after"]["amount"]) == (
        "adjust", body["amount_before"], body["amount_after"])


def test_only_reviewers_may_preview_and_no_if_match_is_needed(world: World) -> None:
    body = {"changes": {"rate": "950.00"}}
    for who in ("viewer", "connector", "author"):
        error_of(world.post(preview_url(world, "rate"), who, json=body), 403, "forbidden")
    error_of(world.client.post(preview_url(world, "rate"), json=body), 401, "unauthorized")
    for who in ("reviewer", "admin"):
        assert world.post(preview_url(world, "rate"), who, json=body).status_code == 200
    # An If-Match is not looked at: the preview is of the current version, which it names.
    assert world.post(preview_url(world, "rate"), "reviewer", if_match='"7"', json=body).json()["version"] == 1
    assert world.row("rate").version == 1


def test_a_preview_refuses_what_adjust_refuses(world: World) -> None:
    for changes in ({"currency": "EUR"}, {"rate": "950.00", "amount": "1.00"}, {}, {"hours_billed": "lots"}):
        error_of(world.post(preview_url(world, "rate"), "reviewer", json={"changes": changes}), 422,
                 "invalid_change")
    error_of(world.post(preview_url(world, "rate"), "reviewer", json={"reason": "no changes"}), 422,
             "invalid_request")
    error_of(world.post(f"/v1/entries/{UNKNOWN}/adjust/preview", "reviewer", json={"changes": {"rate": "1"}}),
             404, "not_found")
    error_of(world.post(f"/v1/entries/{2**40}/adjust/preview", "reviewer", json={"changes": {"rate": "1"}}),
             404, "not_found")
    for source_id in ("rej", "inv", "clean1"):  # rejected, a conflict, ready: adjust refuses them too
        error_of(world.post(preview_url(world, source_id), "reviewer", json={"changes": {"rate": "900"}}), 409,
                 "not_reviewable")
    assert world.row("rate").version == 1


def test_the_preview_is_in_the_openapi_document_with_its_errors(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/entries/{entry_id}/adjust/preview"]["post"]
    assert {"200", "401", "403", "404", "409", "413", "422", "429"} <= set(operation["responses"])
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for status in ("401", "403", "404", "409", "422"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == error_ref
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AdjustIn"}  # the same body as /adjust
    assert "review" in operation["tags"] and operation["security"]
