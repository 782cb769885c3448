"""The review queue API end to end, on SQLite and PostgreSQL: keys and roles, the queue and its cursor, entry
detail with ETags, version-guarded review actions, bulk, ingest, rule set versions, and the OpenAPI document."""

from __future__ import annotations

import base64
import json
import threading
from decimal import Decimal
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from engine.store.models import EntryRow, EntryState, ReviewAction
from tests.api.conftest import ACME_TEXT, PAGED, READY, WAITING, World, as_json, day, recent
from tests.conftest import locate

UNKNOWN = 999_999


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the JSON error shape and return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def source_ids(world: World, items: list[dict[str, Any]]) -> list[str]:
    by_id = {v: k for k, v in world.ids.items()}
    return [by_id[item["id"]] for item in items]


def queue(world: World, who: str = "viewer", **params: Any) -> list[str]:
    response = world.get("/v1/review-items", who, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return source_ids(world, response.json()["items"])


def trail(world: World, source_id: str) -> list[tuple[str, str]]:
    with world.sessions() as session:
        return [(a.action, a.actor) for a in session.scalars(
            select(ReviewAction).join(EntryRow, ReviewAction.entry_id == EntryRow.id)
            .where(EntryRow.source_id == source_id).order_by(ReviewAction.id))]


def url(world: World, source_id: str, action: str) -> str:
    return f"/v1/entries/{world.ids[source_id]}/{action}"


# Keys and roles ---------------------------------------------------------------------------------------

def test_every_route_needs_a_known_unrevoked_key(world: World) -> None:
    entry_id = world.ids["rate"]
    routes = [("GET", "/v1/review-items"), ("GET", f"/v1/entries/{entry_id}"),
              ("GET", f"/v1/entries/{entry_id}/history"), ("POST", f"/v1/entries/{entry_id}/approve"),
              ("POST", "/v1/review-items/bulk"), ("POST", "/v1/entries"),
              ("POST", "/v1/rulesets"), ("GET", "/v1/rulesets"), ("POST", f"/v1/rulesets/{world.acme_id}/activate")]
    prefix = world.keys["admin"].split("_")[1]
    bad = {"none": None, "not bearer": f"Basic {world.keys['admin']}", "not ours": "Bearer sk_live_123",
           "unknown prefix": "Bearer ocg_00000000_secret", "wrong secret": f"Bearer ocg_{prefix}_wrong",
           "empty": "Bearer ", "revoked": f"Bearer {world.keys['revoked']}"}
    for method, path in routes:
        for label, value in bad.items():
            headers = {"If-Match": '"1"'} | ({"Authorization": value} if value is not None else {})
            response = world.client.request(method, path, headers=headers, json={"reason": "x"})
            assert response.status_code == 401, (method, path, label, response.text)
            error_of(response, 401, "unauthorized")
    assert world.row("rate").version == 1
    # A key is enough to read; the revoked one is an admin key, so only revocation refused it.
    assert world.get("/v1/review-items", "viewer").status_code == 200
    # Routes and methods that do not exist answer in the same JSON shape.
    error_of(world.get("/v1/nothing-here"), 404, "not_found")
    error_of(world.client.delete("/v1/review-items", headers=world.auth()), 405, "method_not_allowed")


def test_each_role_may_do_only_its_own_work(world: World) -> None:
    approve, reason = url(world, "vague", "approve"), {"reason": "fine"}
    for who in ("viewer", "connector", "author"):
        error = error_of(world.post(approve, who, if_match='"1"', json=reason), 403, "forbidden")
        assert "admin" in error["message"] and "reviewer" in error["message"]
        error_of(world.post("/v1/review-items/bulk", who, json={"action": "approve", "items": [
            {"id": world.ids["vague"], "version": 1}]}), 403, "forbidden")
    assert world.row("vague").version == 1 and trail(world, "vague") == [("ingested", "system:ingest")]
    for who in ("viewer", "reviewer", "author"):
        error_of(world.post("/v1/entries", who, json=as_json([recent("x")])), 403, "forbidden")
    for who in ("viewer", "reviewer", "connector"):
        error_of(world.post("/v1/rulesets", who, content=ACME_TEXT), 403, "forbidden")
        error_of(world.post(f"/v1/rulesets/{world.acme_id}/activate", who), 403, "forbidden")
    with world.sessions() as session:
        assert session.scalar(select(EntryRow).where(EntryRow.source_id == "x")) is None
    # Everyone may read.
    for who in ("viewer", "reviewer", "connector", "author", "admin"):
        assert world.get(f"/v1/entries/{world.ids['rate']}", who).status_code == 200
        assert world.get("/v1/rulesets", who).status_code == 200
    # Each role's own work, and admin does all of it.
    for who in ("connector", "admin"):
        assert world.post("/v1/entries", who, json=as_json([recent(f"new-{who}")])).json()["created"] == 1
    for who, text in (("author", ACME_TEXT.replace("PARTNR: 950", "PARTNR: 940")),
                      ("admin", ACME_TEXT.replace("PARTNR: 950", "PARTNR: 930"))):
        assert world.post("/v1/rulesets", who, content=text).status_code == 201
    assert world.post(approve, "reviewer", if_match='"1"', json={}).status_code == 200
    assert world.post(url(world, "m1", "reject"), "admin", if_match='"1"', json=reason).status_code == 200
    assert trail(world, "vague")[-1] == ("approve", "key:reviewer")
    assert trail(world, "m1")[-1] == ("reject", "key:admin")


# The queue --------------------------------------------------------------------------------------------

def test_a_text_longer_than_its_column_is_a_422_naming_the_field(world: World) -> None:
    """Every text an entry brings fits the column that keeps it: a longer one is refused at the edge, by name,
    and the batch writes nothing (before this, an 11-character task code was a 500 on PostgreSQL)."""
    with world.sessions() as session:
        before = session.scalar(select(func.count()).select_from(EntryRow))
    for field, value in (("utbms_task_code", "L" * 11), ("ledes_client_id", "C" * 61), ("source_system", "s" * 41),
                         ("timekeeper_name", "n" * 121), ("currency", "U" * 17)):
        batch = as_json([recent("fits"), recent("too-long")])
        batch[1][field] = value
        error = error_of(world.post("/v1/entries", "connector", json=batch), 422, "invalid_request")
        assert [d["where"] for d in error["details"]] == [f"body.1.{field}"], error
        assert "at most" in error["details"][0]["message"]
    with world.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EntryRow)) == before


def test_the_queue_holds_every_state_waiting_for_review_by_default(world: World) -> None:
    assert sorted(queue(world)) == sorted(WAITING)
    assert sorted(queue(world, state=["in_review", "held", "conflict"])) == sorted(WAITING)
    states = {world.row(s).state for s in ("held", "inv", "rate")}
    assert states == {EntryState.HELD, EntryState.CONFLICT, EntryState.IN_REVIEW}
    response = world.get("/v1/review-items", params={"matter": "2026-0099"})
    [item] = response.json()["items"]
    rate, hours = item.pop("rate"), item.pop("hours_billed")
    assert (Decimal(rate), Decimal(hours), item.pop("amount")) == (Decimal("925.00"), Decimal("1.5"), None)
    assert item == {"id": world.ids["vague"], "entry_uid": "clio:us/1:vague", "source_system": "clio",
                    "source_id": "vague", "state": "in_review", "worst_severity": "warning", "version": 1,
                    "work_date": day(3), "ledes_client_id": "ACME01", "law_firm_matter_id": "2026-0099",
                    "timekeeper": "user-vague", "timekeeper_name": "Okafor, Daniel", "rule_ids": ["ACME-NARR-002"],
                    "portal_reasons": [], "data_quality_flags": []}


def test_the_queue_filters(world: World) -> None:
    errors = sorted(set(WAITING) - {"vague", "inv"})  # inv is a conflict with no findings of its own
    assert sorted(queue(world, client="ACME01")) == sorted(WAITING)
    assert queue(world, client="GLOBEX1") == []
    assert queue(world, client="GLOBEX1", state="ready") == ["globex"]
    assert queue(world, matter="2026-0099") == ["vague"]
    assert queue(world, matter="2026-0017", timekeeper="user-rate") == ["rate"]
    assert queue(world, timekeeper="user-vague") == ["vague"]
    assert queue(world, rule_id="ACME-NARR-002") == ["vague"]
    assert sorted(queue(world, rule_id="ACME-RATE-001")) == errors
    assert queue(world, rule_id="ACME-NOPE-001") == []
    assert queue(world, severity="warning") == ["vague"]
    assert sorted(queue(world, severity="error")) == errors
    assert queue(world, severity="info") == []
    assert queue(world, date_from=day(5), date_to=day(6)) == PAGED[:6]
    assert queue(world, date_from=day(12)) == ["held", "inv"]
    assert queue(world, date_to=day(2)) == ["rate"]
    assert queue(world, source="mattero") == ["m1"]
    assert sorted(queue(world, source="clio")) == sorted(set(WAITING) - {"m1"})
    assert sorted(queue(world, state="ready")) == sorted(READY)
    assert sorted(queue(world, state=["ready", "rejected", "withdrawn"])) == sorted([*READY, "rej", "gone"])
    assert queue(world, state="rejected", rule_id="ACME-RATE-001") == ["rej"]
    for params in ({"severity": "fatal"}, {"state": "lost"}, {"date_from": "yesterday"}, {"sort": "amount"}):
        error = error_of(world.get("/v1/review-items", params=params), 422, "invalid_request")
        assert error["details"] and error["details"][0]["where"].startswith("query.")
    # Sorted by work date (then id) either way.
    with world.sessions() as session:
        expected = list(session.scalars(select(EntryRow.source_id).where(EntryRow.state.in_(
            ["in_review", "held", "conflict"])).order_by(EntryRow.work_date, EntryRow.id)))
    assert queue(world) == expected == queue(world, sort="work_date")
    assert queue(world, sort="-work_date") == expected[::-1]
    dates = [item["work_date"] for item in world.get("/v1/review-items", params={"sort": "-work_date"}).json()["items"]]
    assert dates == sorted(dates, reverse=True)
    # Data-quality flags: an entry with none may be stored as SQL NULL, JSON null or [] (PostgreSQL refuses the
    # length of a JSON null); only the flagged entry is listed, and every other one without.
    posted = world.post("/v1/entries", who="connector", json=as_json([recent(
        "dq", work_date=day(16), data_quality_flags=["NO_MATTER"])]))
    assert posted.status_code in (200, 201), posted.text
    with world.sessions() as session:
        session.execute(EntryRow.__table__.update().where(EntryRow.source_id == "clean1").values(
            data_quality_flags=None))
        session.commit()
        world.ids.update(dict(session.execute(select(EntryRow.source_id, EntryRow.id)).all()))
    assert queue(world, data_quality="true", state=["in_review", "ready"]) == ["dq"]
    assert "dq" not in queue(world, data_quality="false", state=["in_review", "ready"])
    assert "clean1" in queue(world, data_quality="false", state=["in_review", "ready"])


def walk(world: World, limit: int, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        response = world.get("/v1/review-items", params={"limit": limit, **params,
                                                         **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen += source_ids(world, page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert len(page["items"]) == limit  # only a full page has a next one
    raise AssertionError("the cursor never ended")


def test_cursor_pagination_walks_every_page_without_duplicates_or_gaps(world: World) -> None:
    for sort in ("work_date", "-work_date", "updated_at", "-updated_at"):
        everything = queue(world, sort=sort)
        assert len(everything) == len(WAITING)
        for limit in (1, 4, 7, 25, 26):
            paged = walk(world, limit, sort=sort)
            assert paged == everything, (sort, limit)
    assert walk(world, 5, rule_id="ACME-RATE-001", date_from=day(4)) == queue(world, rule_id="ACME-RATE-001",
                                                                                date_from=day(4))
    # Page sizes from 1 to 500.
    for bad in (0, -1, 501, "many"):
        error = error_of(world.get("/v1/review-items", params={"limit": bad}), 422, "invalid_request")
        assert error["details"][0]["where"] == "query.limit"
    assert len(world.get("/v1/review-items", params={"limit": 1}).json()["items"]) == 1
    assert len(world.get("/v1/review-items", params={"limit": 500}).json()["items"]) == len(WAITING)
    assert len(world.get("/v1/review-items").json()["items"]) == len(WAITING)  # default 50
    # Keyset pagination: work done on an earlier page shifts nothing on the later ones.
    before = queue(world)
    first = world.get("/v1/review-items", params={"limit": 5}).json()
    for item in first["items"][:3]:
        assert world.post(f"/v1/entries/{item['id']}/reject", "reviewer", if_match='"1"', json={}).status_code == 200
    rest = world.get("/v1/review-items", params={"limit": 500, "cursor": first["next_cursor"]}).json()
    assert source_ids(world, first["items"]) + source_ids(world, rest["items"]) == before


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_cursor_the_list_did_not_issue_is_a_400(world: World) -> None:
    page = world.get("/v1/review-items", params={"limit": 2}).json()
    assert page["next_cursor"]
    garbage = {
        "not base64": "@@@not a cursor@@@",
        "not json": base64.urlsafe_b64encode(b"hello").decode(),
        "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        "a list": b64([1, 2]),
        "a number": b64(42),
        "missing id": b64({"s": "work_date", "v": day(1)}),
        "bad date": b64({"s": "work_date", "v": "2026-13-45", "i": 1}),
        "null value": b64({"s": "work_date", "v": None, "i": 1}),
        "id not a number": b64({"s": "work_date", "v": day(1), "i": "x"}),
        "id too large": b64({"s": "work_date", "v": day(1), "i": 10**20}),
        "naive timestamp": b64({"s": "updated_at", "v": "2026-11-01T00:00:00", "i": 1}),
    }
    failures = {}
    for label, cursor in garbage.items():
        sort = "updated_at" if label == "naive timestamp" else "work_date"
        response = world.get("/v1/review-items", params={"cursor": cursor, "sort": sort})
        if response.status_code != 400 or response.json()["error"]["code"] != "invalid_cursor":
            failures[label] = (response.status_code, response.text[:200])
    # The same cursor with another sort is refused too.
    error_of(world.get("/v1/review-items", params={"cursor": page["next_cursor"], "sort": "-work_date"}),
             400, "invalid_cursor")
    assert failures == {}


def test_money_and_hours_read_the_same_on_every_database(world: World) -> None:
    """The queue shows rate, hours and amount as the entry has them (as the detail does), whatever the database."""
    batch = as_json([recent("money", hours_billed="0.1", hours_worked="0.1", rate="925.123456", amount="92.51")])
    assert world.post("/v1/entries", "connector", json=batch).status_code == 200
    [item] = world.get("/v1/review-items", params={"state": "ready", "timekeeper": "user-money"}).json()["items"]
    record = world.get(f"/v1/entries/{item['id']}").json()["entry"]
    assert (record["rate"], record["hours_billed"], record["amount"]) == ("925.123456", "0.1", "92.51")
    assert (item["rate"], item["hours_billed"], item["amount"]) == ("925.123456", "0.1", "92.51")
    [item] = world.get("/v1/review-items", params={"matter": "2026-0099"}).json()["items"]
    assert (item["rate"], item["hours_billed"]) == ("925.00", "1.5")


# Entry detail -----------------------------------------------------------------------------------------

def test_entry_detail_has_an_etag_the_findings_with_evidence_and_the_history(world: World) -> None:
    response = world.get(f"/v1/entries/{world.ids['rate']}", "viewer")
    assert response.status_code == 200
    detail = response.json()
    assert response.headers["ETag"] == '"1"' and detail["version"] == 1
    assert (detail["id"], detail["entry_uid"], detail["state"], detail["worst_severity"]) == (
        world.ids["rate"], "clio:us/1:rate", "in_review", "error")
    assert detail["entry"]["rate"] == "990.00" and detail["entry"]["work_date"] == day(2)
    assert detail["pending_record"] is None
    revision = world.get("/v1/rulesets").json()[0]["revision"]
    [violation] = detail["violations"]
    assert violation["rule_id"] == "ACME-RATE-001" and violation["ruleset_id"] == "acme-corp-ocg"
    assert (violation["ruleset_revision"], violation["severity"], violation["rule_status"]) == (
        revision, "error", "active")
    assert {k: x for k, x in violation["evidence"][-1].items() if k != "basis"} == {
        "field": "rate", "operator": "gt", "expected": "950", "actual": "990.00"}
    assert violation["evidence"][-1]["basis"].startswith("classification PARTNR, in force from 2026-01-01")
    assert violation["adjustment"] == {"field": "rate", "current": "990.00", "proposed": "950", "amount": "-60.00"}
    assert violation["references"] == ["OCG 4.1 Approved rates"] and "990.00" in violation["message"]
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [("ingested", "system:ingest")]
    history = world.get(f"/v1/entries/{world.ids['rate']}/history").json()
    assert history == detail["history"]
    # A conflict shows what the source sent since the invoice.
    conflict = world.get(f"/v1/entries/{world.ids['inv']}")
    assert conflict.headers["ETag"] == '"2"' and conflict.json()["state"] == "conflict"
    assert conflict.json()["entry"]["hours_billed"] == "1.5"
    assert conflict.json()["pending_record"]["hours_billed"] == "3.0"
    assert [h["action"] for h in conflict.json()["history"]] == ["ingested", "conflict"]
    # Unknown entries.
    error_of(world.get(f"/v1/entries/{UNKNOWN}"), 404, "not_found")
    error_of(world.get(f"/v1/entries/{UNKNOWN}/history"), 404, "not_found")
    error_of(world.post(f"/v1/entries/{UNKNOWN}/approve", "reviewer", if_match='"1"', json={"reason": "x"}),
             404, "not_found")
    error_of(world.get("/v1/entries/abc"), 422, "invalid_request")


# Review actions ---------------------------------------------------------------------------------------

def test_actions_need_if_match_and_a_stale_one_changes_nothing(world: World) -> None:
    for action in ("approve", "reject", "adjust"):
        body = {"reason": "ok", **({"changes": {"rate": "950.00"}} if action == "adjust" else {})}
        error_of(world.post(url(world, "rate", action), "reviewer", json=body), 428, "precondition_required")
        for stale in ('"2"', '"0"', "abc", "*"):
            error_of(world.post(url(world, "rate", action), "reviewer", if_match=stale, json=body),
                     412, "version_mismatch")
    row = world.row("rate")
    assert (row.state, row.version, row.rate) == (EntryState.IN_REVIEW, 1, Decimal("990.00"))
    assert trail(world, "rate") == [("ingested", "system:ingest")]
    assert world.get(f"/v1/entries/{world.ids['rate']}").headers["ETag"] == '"1"'


def test_approving_an_error_needs_a_reason_and_returns_the_new_etag(world: World) -> None:
    approve = url(world, "rate", "approve")
    for body in ({}, {"reason": None}, {"reason": "   "}):
        error_of(world.post(approve, "reviewer", if_match='"1"', json=body), 422, "reason_required")
    assert world.row("rate").version == 1 and trail(world, "rate") == [("ingested", "system:ingest")]
    response = world.post(approve, "reviewer", if_match='"1"', json={"reason": "Client agreed the rate in writing"})
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert response.json() == {"id": world.ids["rate"], "action": "approve", "state": "ready", "version": 2,
                               "write_down": None}
    detail = world.get(f"/v1/entries/{world.ids['rate']}")
    assert detail.headers["ETag"] == '"2"' and detail.json()["state"] == "ready"
    last = detail.json()["history"][-1]
    assert (last["action"], last["actor"], last["reason"]) == ("approve", "key:reviewer",
                                                               "Client agreed the rate in writing")
    assert last["before"]["overridden"][0]["rule_id"] == "ACME-RATE-001"
    # A warning needs no reason; a weak ETag is accepted.
    response = world.post(url(world, "vague", "approve"), "reviewer", if_match='W/"1"', json={})
    assert (response.status_code, response.json()["state"], response.headers["ETag"]) == (200, "ready", '"2"')
    # Approving a conflict keeps what was invoiced.
    response = world.post(url(world, "inv", "approve"), "reviewer", if_match='"2"', json={})
    assert response.status_code == 200 and response.json()["state"] == "invoiced"
    assert world.row("inv").pending_record is None
    assert "rate" not in queue(world) and "vague" not in queue(world) and "inv" not in queue(world)


def test_adjusting_the_rate_to_the_cap_judges_again_and_records_the_write_down(world: World) -> None:
    # Only rate, hours, narrative and codes can be adjusted; a refused change leaves the entry as it was.
    adjust = url(world, "rate", "adjust")
    for changes in ({"currency": "EUR"}, {"rate": "950.00", "amount": "1.00"}, {}, {"hours_billed": "lots"}):
        error_of(world.post(adjust, "reviewer", if_match='"1"', json={"changes": changes}), 422, "invalid_change")
    error_of(world.post(adjust, "reviewer", if_match='"1"', json={"reason": "no changes"}), 422, "invalid_request")
    row = world.row("rate")
    assert (row.version, row.rate, row.record["rate"]) == (1, Decimal("990.00"), "990.00")
    assert trail(world, "rate") == [("ingested", "system:ingest")]
    response = world.post(url(world, "rate", "adjust"), "reviewer", if_match='"1"',
                          json={"reason": "cap per OCG 4.1", "changes": {"rate": "950.00"}})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": world.ids["rate"], "action": "adjust", "state": "ready", "version": 2,
                               "write_down": "-60.00"}
    assert response.headers["ETag"] == '"2"'
    detail = world.get(f"/v1/entries/{world.ids['rate']}").json()
    assert (detail["state"], detail["worst_severity"], detail["violations"]) == ("ready", None, [])
    assert detail["entry"]["rate"] == "950.00"
    last = detail["history"][-1]
    assert last["after"]["write_down"] == "-60.00" and last["before"]["values"] == {"rate": "990.00"}
    assert world.row("rate").rate == Decimal("950.00")
    assert "rate" not in queue(world)
    # Still over the cap: the entry stays in review, with a fresh finding.
    response = world.post(url(world, "m1", "adjust"), "reviewer", if_match='"1"', json={"changes": {"rate": 960}})
    assert (response.status_code, response.json()["state"], response.json()["write_down"]) == (200, "in_review",
                                                                                               "-45.00")
    [violation] = world.get(f"/v1/entries/{world.ids['m1']}").json()["violations"]
    assert violation["evidence"][-1]["actual"] == "960"


def test_a_rejected_entry_can_no_longer_be_acted_on(world: World) -> None:
    response = world.post(url(world, "rate", "reject"), "reviewer", if_match='"1"', json={"reason": "not our work"})
    assert (response.status_code, response.json()["state"], response.headers["ETag"]) == (200, "rejected", '"2"')
    for action, body in (("approve", {"reason": "changed my mind"}), ("reject", {}),
                         ("adjust", {"changes": {"rate": "950.00"}})):
        error_of(world.post(url(world, "rate", action), "reviewer", if_match='"2"', json=body), 409, "not_reviewable")
    assert world.row("rate").version == 2 and trail(world, "rate")[-1] == ("reject", "key:reviewer")
    error_of(world.post(url(world, "clean1", "approve"), "reviewer", if_match='"1"', json={}), 409, "not_reviewable")
    # A conflict can be approved or rejected, not adjusted: what was invoiced stays as it was.
    error_of(world.post(url(world, "inv", "adjust"), "reviewer", if_match='"2"', json={"changes": {"rate": "900"}}),
             409, "not_reviewable")
    assert world.row("inv").version == 2


def test_of_two_requests_with_the_same_if_match_exactly_one_wins(world: World) -> None:
    first = world.post(url(world, "rate", "reject"), "reviewer", if_match='"1"', json={"reason": "dup"})
    second = world.post(url(world, "rate", "approve"), "admin", if_match='"1"', json={"reason": "fine"})
    assert (first.status_code, second.status_code) == (200, 412)
    assert second.json()["error"]["code"] == "version_mismatch"
    assert world.row("rate").state == EntryState.REJECTED
    assert trail(world, "rate") == [("ingested", "system:ingest"), ("reject", "key:reviewer")]
    # The same, at once (two threads).
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def act(who: str) -> None:
        barrier.wait(timeout=10)
        statuses.append(world.post(url(world, "vague", "reject"), who, if_match='"1"', json={}).status_code)

    threads = [threading.Thread(target=act, args=(who,)) for who in ("reviewer", "admin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200, 412]
    assert world.row("vague").version == 2
    assert [a for a, _ in trail(world, "vague")].count("reject") == 1


# Bulk -------------------------------------------------------------------------------------------------

def test_bulk_applies_each_item_on_its_own(world: World) -> None:
    items = [{"id": world.ids["rate"], "version": 7}, {"id": world.ids["vague"], "version": 1},
             {"id": UNKNOWN, "version": 1}, {"id": world.ids["rej"], "version": 2}]
    response = world.post("/v1/review-items/bulk", "reviewer", json={"action": "approve", "reason": "ok",
                                                                      "items": items})
    assert response.status_code == 200, response.text
    results = response.json()
    assert [(r["id"], r["ok"]) for r in results] == [(i["id"], i["id"] == world.ids["vague"]) for i in items]
    assert [r["error"]["code"] if r["error"] else None for r in results] == [
        "version_mismatch", None, "not_found", "not_reviewable"]
    assert (results[1]["state"], results[1]["version"]) == ("ready", 2)
    assert world.row("vague").state == EntryState.READY
    assert world.row("rate").version == 1 and trail(world, "rate") == [("ingested", "system:ingest")]
    assert world.row("rej").state == EntryState.REJECTED and world.row("rej").version == 2
    # An item refused after its version was claimed (an error approved without a reason) is rolled back alone.
    items = [{"id": world.ids["p00"], "version": 1}, {"id": world.ids["p01"], "version": 1}]
    results = world.post("/v1/review-items/bulk", "reviewer", json={"action": "adjust", "items": items,
                                                                     "changes": {"rate": "950.00"}}).json()
    assert [(r["ok"], r["state"]) for r in results] == [(True, "ready"), (True, "ready")]
    items = [{"id": world.ids["p02"], "version": 1}, {"id": world.ids["p01"], "version": 2},
             {"id": world.ids["p03"], "version": 1}]
    results = world.post("/v1/review-items/bulk", "reviewer", json={"action": "approve", "items": items}).json()
    assert [(r["ok"], r["error"]["code"] if r["error"] else None) for r in results] == [
        (False, "reason_required"), (False, "not_reviewable"), (False, "reason_required")]
    assert [world.row(s).version for s in ("p00", "p01", "p02", "p03")] == [2, 2, 1, 1]
    assert trail(world, "p02") == [("ingested", "system:ingest")]
    error_of(world.post("/v1/review-items/bulk", "reviewer", json={"action": "approve", "items": []}),
             422, "invalid_request")
    error_of(world.post("/v1/review-items/bulk", "reviewer", json={"action": "delete", "items": items}),
             422, "invalid_request")


# Ingest -----------------------------------------------------------------------------------------------

def test_a_connector_posts_entries_and_posting_them_again_changes_nothing(world: World) -> None:
    batch = as_json([recent("n1"), recent("n2", rate="990.00"), recent("n3", narrative="Work on various issues")])
    response = world.post("/v1/entries", "connector", json=batch)
    assert response.status_code == 200, response.text
    first = response.json()
    assert {k: first[k] for k in ("received", "created", "updated", "unchanged", "withdrawn", "conflicts", "ready",
                                  "in_review", "held")} == {
        "received": 3, "created": 3, "updated": 0, "unchanged": 0, "withdrawn": 0, "conflicts": 0, "ready": 1,
        "in_review": 2, "held": 0}
    assert first["held_rulesets"] == []
    again = world.post("/v1/entries", "connector", json=batch).json()
    assert (again["received"], again["created"], again["updated"], again["unchanged"], again["in_review"]) == (
        3, 0, 0, 3, 0)
    assert again["batch_id"] != first["batch_id"]
    with world.sessions() as session:
        rows = {r.source_id: r for r in session.scalars(
            select(EntryRow).where(EntryRow.source_id.in_(["n1", "n2", "n3"])))}
        assert {s: (r.state, r.version) for s, r in rows.items()} == {
            "n1": (EntryState.READY, 1), "n2": (EntryState.IN_REVIEW, 1), "n3": (EntryState.IN_REVIEW, 1)}
    assert trail(world, "n2") == [("ingested", "key:connector")]
    changed = world.post("/v1/entries", "connector", json=as_json([recent("n2", rate="950.00",
                                                                          source_version='"v2"')])).json()
    assert (changed["updated"], changed["ready"]) == (1, 1)
    assert world.row("n2").state == EntryState.READY and world.row("n2").version == 2
    # Not an entry at all: refused as a whole, nothing stored.
    error = error_of(world.post("/v1/entries", "connector", json=[{"source_id": "n9"}]), 422, "invalid_request")
    assert error["details"]
    with world.sessions() as session:
        assert session.scalar(select(EntryRow).where(EntryRow.source_id == "n9")) is None


# Rule sets --------------------------------------------------------------------------------------------

def test_a_bad_rule_file_is_refused_with_positions_in_the_file(world: World) -> None:
    bad = ACME_TEXT.replace("type: rate_cap", "type: rate_capp").replace("min_length: 25", "min_length: -5")
    response = world.post("/v1/rulesets", "author", content=bad, headers={"Content-Type": "application/yaml"})
    error = error_of(response, 422, "invalid_ruleset")
    line, column = locate(bad, "min_length: -5")
    assert [(d["line"], d["column"]) for d in error["details"]] == [locate(bad, "rate_capp"),
                                                                    (line, column + len("min_length: "))]
    assert "rate_capp" in error["details"][0]["message"] and "ACME-RATE-001" in error["details"][0]["where"]
    assert f"{line}:{column + len('min_length: ')}:" in error["message"]
    duplicate = "id: x\nversion: 1\nid: y\nrules: []\n"
    error = error_of(world.post("/v1/rulesets", "author", content=duplicate), 422, "invalid_ruleset")
    assert (error["details"][0]["line"], error["details"][0]["column"]) == locate(duplicate, "id: y")
    tabbed = "id: x\nversion: 1\nrules:\n  - id: R\n\ttitle: t\n"
    error = error_of(world.post("/v1/rulesets", "author", content=tabbed), 422, "invalid_ruleset")
    assert (error["details"][0]["line"], error["details"][0]["column"]) == locate(tabbed, "\t")
    error_of(world.post("/v1/rulesets", "author", content=b"id: \xff\xfe"), 422, "invalid_ruleset")
    assert [v["id"] for v in world.get("/v1/rulesets").json()] == [world.acme_id]


def test_rule_set_versions_upload_list_activate_and_shadow(world: World) -> None:
    lower = ACME_TEXT.replace("PARTNR: 950", "PARTNR: 900")
    response = world.post("/v1/rulesets", "author", content=lower, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    draft = response.json()
    assert (draft["ruleset_id"], draft["version_label"], draft["status"], draft["created_by"]) == (
        "acme-corp-ocg", "2026.1", "draft", "key:author")
    again = world.post("/v1/rulesets", "author", content=lower + "\n# only a comment\n")
    assert again.json()["id"] == draft["id"] and again.json()["status"] == "draft"
    listed = world.get("/v1/rulesets", "viewer").json()
    assert [(v["id"], v["status"]) for v in listed] == [(world.acme_id, "active"), (draft["id"], "draft")]
    assert listed[0]["revision"] != listed[1]["revision"]
    assert world.get("/v1/rulesets", params={"ruleset_id": "globex"}).json() == []
    assert len(world.get("/v1/rulesets", params={"ruleset_id": "acme-corp-ocg"}).json()) == 2

    response = world.post(f"/v1/rulesets/{draft['id']}/activate", "author")
    assert (response.status_code, response.json()["status"]) == (200, "active")
    statuses = {v["id"]: v["status"] for v in world.get("/v1/rulesets").json()}
    assert statuses == {world.acme_id: "retired", draft["id"]: "active"}

    third = world.post("/v1/rulesets", "admin", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 875")).json()
    fourth = world.post("/v1/rulesets", "admin", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 850")).json()
    assert world.post(f"/v1/rulesets/{third['id']}/shadow", "author").json()["status"] == "shadow"
    assert world.post(f"/v1/rulesets/{fourth['id']}/shadow", "author").json()["status"] == "shadow"
    statuses = {v["id"]: v["status"] for v in world.get("/v1/rulesets").json()}
    assert statuses == {world.acme_id: "retired", draft["id"]: "active", third["id"]: "retired",
                        fourth["id"]: "shadow"}
    for action in ("activate", "shadow", "backtest"):
        error_of(world.post(f"/v1/rulesets/{UNKNOWN}/{action}", "author"), 404, "not_found")


def test_backtesting_a_draft_that_lowers_a_cap_counts_the_newly_flagged(world: World) -> None:
    draft = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 900")).json()
    response = world.post(f"/v1/rulesets/{draft['id']}/backtest", "author")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["draft"]["id"] == draft["id"] and result["active"]["id"] == world.acme_id
    # Every stored Acme entry but the withdrawn one; the Globex entry is not governed by Acme's rules.
    assert result["entries_checked"] == len(world.ids) - 2
    # The partners billed at 925 (clean1, clean2, vague, and the invoiced record of inv) are over 900 now.
    assert result["newly_flagged"] == {"ACME-RATE-001": 4}
    assert result["no_longer_flagged"] == {}
    assert sorted(e["entry_uid"] for e in result["examples"]) == [f"clio:us/1:{s}" for s in
                                                                   ("clean1", "clean2", "inv", "vague")]
    assert {(e["rule_id"], e["change"]) for e in result["examples"]} == {("ACME-RATE-001", "newly flagged")}
    # Raising the cap instead clears the 990 entries that are still stored (rejected ones included).
    higher = world.post("/v1/rulesets", "author", content=ACME_TEXT.replace("PARTNR: 950", "PARTNR: 1000")).json()
    result = world.post(f"/v1/rulesets/{higher['id']}/backtest", "author", json={"as_of": day(30)}).json()
    assert result["newly_flagged"] == {}
    assert result["no_longer_flagged"] == {"ACME-RATE-001": len(PAGED) + 4}  # rate, m1, held, rej
    # Backtesting changes nothing stored.
    assert {v["id"]: v["status"] for v in world.get("/v1/rulesets").json()} == {
        world.acme_id: "active", draft["id"]: "draft", higher["id"]: "draft"}
    assert sorted(queue(world)) == sorted(WAITING)


# Commit before answering ------------------------------------------------------------------------------

def test_a_change_is_committed_before_success_is_reported(world: World, sessions: sessionmaker[Session]) -> None:
    """If the transaction cannot commit, the client must not be told the action succeeded (nor get a new ETag)."""
    engine = sessions.kw["bind"]
    failing = {"armed": True}

    def refuse_commit(connection: Any) -> None:
        if failing["armed"]:
            failing["armed"] = False
            raise RuntimeError("commit failed (injected)")

    event.listen(engine, "commit", refuse_commit)
    try:
        with TestClient(create_app(sessions=sessions), raise_server_exceptions=False) as client:
            response = client.post(url(world, "rate", "reject"), json={"reason": "dup"},
                                   headers=world.auth("reviewer", If_Match='"1"'))
    finally:
        event.remove(engine, "commit", refuse_commit)
    assert not failing["armed"]  # the commit was attempted and failed
    assert world.row("rate").version == 1  # nothing was stored, so the answer must say so
    assert response.status_code >= 500, (response.status_code, response.text, response.headers.get("ETag"))


# OpenAPI ----------------------------------------------------------------------------------------------

ROUTES = {("get", "/v1/review-items"), ("post", "/v1/review-items/bulk"), ("get", "/v1/entries/{entry_id}"),
          ("get", "/v1/entries/{entry_id}/history"), ("post", "/v1/entries/{entry_id}/approve"),
          ("post", "/v1/entries/{entry_id}/reject"), ("post", "/v1/entries/{entry_id}/adjust"),
          ("post", "/v1/entries/{entry_id}/adjust/preview"),
          ("post", "/v1/entries"), ("post", "/v1/rulesets"), ("get", "/v1/rulesets"),
          ("post", "/v1/rulesets/{version_id}/activate"), ("post", "/v1/rulesets/{version_id}/shadow"),
          ("post", "/v1/rulesets/{version_id}/backtest"), ("post", "/v1/invoices"), ("get", "/v1/invoices"),
          ("post", "/v1/invoices/preview"), ("get", "/v1/invoices/{ref}"), ("get", "/v1/invoices/{ref}/ledes"),
          ("post", "/v1/invoices/{ref}/submit"), ("post", "/v1/invoices/{ref}/poll"),
          ("post", "/v1/invoices/{ref}/void"), ("get", "/v1/entries/{entry_id}/portal-rejections"),
          ("get", "/v1/timekeepers"), ("get", "/v1/timekeepers/{ledes_id}"), ("post", "/v1/timekeepers/import"),
          ("get", "/v1/reports/findings"), ("get", "/v1/me")}
SIGNED = {("post", "/v1/webhooks/{source}"),  # authenticated by the source's signature, not an API key
          ("post", "/v1/webhooks/{source}/{token}")}  # or by a token in the path (mattero signs nothing)
PROBES = {("get", "/healthz"), ("get", "/readyz")}  # no key: a load balancer asks (tests/api/test_health.py)


def test_the_openapi_document_lists_every_route_and_its_errors(world: World) -> None:
    response = world.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    documented = {(method, path) for path, operations in spec["paths"].items() for method in operations}
    served = {(method.lower(), context.path)  # every route, the routers' included
              for context in iter_route_contexts(world.client.app.routes)  # type: ignore[attr-defined]
              if isinstance(context.original_route, APIRoute) for method in context.methods or ()}
    assert documented == served == ROUTES | SIGNED | PROBES
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    assert all("security" not in spec["paths"][path][method] for method, path in PROBES)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for method, path in SIGNED:
        responses = spec["paths"][path][method]["responses"]
        assert responses["401"]["content"]["application/json"]["schema"] == error_ref
        assert "signature" in responses["401"]["description"]
    for method, path in sorted(ROUTES):
        responses = spec["paths"][path][method]["responses"]
        for status in ("401", "403", "422"):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref, (method, path, status)
        assert "API key" in responses["401"]["description"], (method, path)
        assert "200" in responses or "201" in responses
        if "{entry_id}" in path or "{version_id}" in path or "{ref}" in path:
            assert responses["404"]["content"]["application/json"]["schema"] == error_ref, (method, path)
    for action in ("approve", "reject", "adjust"):
        responses = spec["paths"][f"/v1/entries/{{entry_id}}/{action}"]["post"]["responses"]
        assert {"404", "409", "412", "428"} <= set(responses)
        assert all(responses[s]["content"]["application/json"]["schema"] == error_ref for s in ("409", "412", "428"))
    assert "400" in spec["paths"]["/v1/review-items"]["get"]["responses"]
    # Every operation that takes a body declares the 413 of a body over the limit, webhooks included.
    with_body = [(method, path) for path, operations in spec["paths"].items()
                 for method, operation in operations.items() if "requestBody" in operation]
    assert ("post", "/v1/entries") in with_body and ("post", "/v1/webhooks/{source}") in with_body
    for method, path in with_body:
        too_large = spec["paths"][path][method]["responses"]["413"]
        assert too_large["content"]["application/json"]["schema"] == error_ref and "bytes" in too_large["description"]
    assert "201" in spec["paths"]["/v1/rulesets"]["post"]["responses"]
    assert set(spec["paths"]["/v1/rulesets"]["post"]["requestBody"]["content"]) == {"application/yaml", "text/plain"}
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in json.dumps(spec["paths"])  # 422s are ours, not FastAPI's default shape


def test_the_openapi_document_declares_the_bearer_key(world: World) -> None:
    """OpenAPI ignores a header parameter named Authorization: the key must be a security scheme, required by
    every /v1 operation, or generated clients and the docs page never send it."""
    spec = world.client.get("/openapi.json").json()
    schemes = spec.get("components", {}).get("securitySchemes", {})
    bearer = {name for name, scheme in schemes.items()
              if (scheme.get("type"), scheme.get("scheme", "").lower()) == ("http", "bearer")
              or (scheme.get("type"), scheme.get("in"), scheme.get("name", "").lower()) == (
                  "apiKey", "header", "authorization")}
    assert bearer, schemes
    for method, path in sorted(ROUTES):
        security = spec["paths"][path][method].get("security", spec.get("security", []))
        assert any(set(requirement) & bearer for requirement in security), (method, path, security)


def test_an_error_quoting_a_lone_surrogate_is_a_422_not_a_500(world: World) -> None:
    response = world.post("/v1/rulesets", who="author", content=b'"\\ud800": 1\n',
                          headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_ruleset" and "\\ud800" in response.text
