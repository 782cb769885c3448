"""``POST /v1/rulesets/{id}/backtest`` with the window, the version compared with, the evaluation context and the
examples; the old body (``{"as_of": ...}``, or none) still works."""

from __future__ import annotations

from decimal import Decimal

from tests.api.conftest import ACME_TEXT, RULES, World, day

GLOBEX_TEXT = (RULES / "globex-plc.yaml").read_text(encoding="utf-8")


def backtest(world: World, version_id: int, who: str = "author", **body: object) -> dict[str, object]:
    response = world.post(f"/v1/rulesets/{version_id}/backtest", who, json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


def test_rules_write_downs_and_examples_with_evidence(world: World) -> None:
    draft = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 900")).json()
    result = backtest(world, draft["id"])
    assert result["active"]["id"] == world.acme_id
    [rule] = result["rules"]
    # The active version's findings come from the decision log, but for the conflict (its record changed after
    # billing, so its findings were superseded): that one is evaluated.
    assert (rule["rule_id"], rule["change"], rule["differs"], rule["compared_findings"]) == (
        "ACME-RATE-001", "changed", ["params"], "both")
    assert rule["newly_flagged"] == 4 and rule["flagged_after"] == rule["flagged_before"] + 4
    change = Decimal(rule["write_down_change"]["USD"])
    assert change < 0 and result["write_down_change"] == rule["write_down_change"]
    assert Decimal(rule["write_down_after"]["USD"]) - Decimal(rule["write_down_before"]["USD"]) == change
    example = result["examples"][0]
    assert example["change"] == "newly flagged" and example["severity"] == "error"
    assert example["evidence"][-1]["actual"] == "925.00" and example["adjustment"]["proposed"] == "900"
    assert "ACME-RATE-001" not in result["unchanged_rules"] and len(result["unchanged_rules"]) > 10
    assert result["work"]["findings_reused"] > 0 and result["context"]["period_start"] is None


def test_the_window_the_version_compared_with_and_the_context(world: World) -> None:
    lower = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 900")).json()
    lowest = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 800")).json()
    # Against the 900 draft, the 800 one flags the same 925 partners: nothing new among them.
    result = backtest(world, lowest["id"], against=lower["id"], examples=1)
    assert result["active"]["id"] == lower["id"] and result["newly_flagged"] == {}
    assert result["rules"][0]["compared_findings"] == "evaluated"  # a draft has no stored findings
    windowed = backtest(world, lower["id"], **{"from": day(1), "to": day(1)})
    assert windowed["window"] == {"from": day(1), "to": day(1), "clients": []}
    assert windowed["newly_flagged"] == {"ACME-RATE-001": 1}  # clean2 only
    assert backtest(world, lower["id"], clients=["GLOBEX1"])["entries_checked"] == 0
    dated = backtest(world, lower["id"], as_of=day(40), period_start=day(0), period_end=day(20), examples=0)
    assert dated["context"] == {"as_of": day(40), "period_start": day(0), "period_end": day(20)}
    assert dated["examples"] == [] and dated["newly_flagged"] == {"ACME-RATE-001": 4}
    assert backtest(world, lower["id"], against="active")["active"]["id"] == world.acme_id


def test_refusals(world: World) -> None:
    draft = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 900")).json()
    globex = world.post("/v1/rulesets", "author", content=GLOBEX_TEXT).json()
    url = f"/v1/rulesets/{draft['id']}/backtest"
    for body, status, code in (({"against": globex["id"]}, 422, "invalid_backtest"),
                               ({"against": 2**40}, 404, "not_found"), ({"against": 999_999}, 404, "not_found"),
                               ({"against": "latest"}, 422, "invalid_request"),
                               ({"from": day(5), "to": day(1)}, 422, "invalid_backtest"),
                               ({"period_start": day(5), "period_end": day(1)}, 422, "invalid_backtest"),
                               ({"examples": 51}, 422, "invalid_request")):
        response = world.post(url, "author", json=body)
        assert response.status_code == status and response.json()["error"]["code"] == code, (body, response.text)
    assert world.post(url, "viewer").status_code == 403


def test_the_openapi_document_declares_the_body_and_the_statuses(world: World) -> None:
    operation = world.client.get("/openapi.json").json()["paths"]["/v1/rulesets/{version_id}/backtest"]["post"]
    assert {"200", "401", "403", "404", "413", "422", "429"} <= set(operation["responses"])
    assert operation.get("requestBody", {}).get("required") is not True
