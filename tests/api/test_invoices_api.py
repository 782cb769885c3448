"""Invoice routes end to end on SQLite and PostgreSQL, with a fake Legal Tracker on loopback."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from connectors.legaltracker.fake import FakePortal, FakeRules, running_fake_portal
from engine import ledes
from engine.store.db import transaction
from engine.store.models import DestinationRow, EntryRow, InvoiceRow, RuleSetStatus
from engine.workflows.intake import ingest
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version
from tests.api.conftest import ACME_TEXT, BASE, NOW, day, recent

START, END = BASE.isoformat(), (BASE + dt.timedelta(days=40)).isoformat()
BUILD = {"client_id": "ACME01", "period_start": START, "period_end": END, "matters": ["2026-0017"]}


@dataclass
class Billing:
    client: TestClient
    sessions: sessionmaker[Session]
    keys: dict[str, str]
    portal: FakePortal

    def call(self, method: str, url: str, who: str = "biller", headers: dict[str, str] | None = None,
             **kwargs: Any) -> Any:
        sent = {"Authorization": f"Bearer {self.keys[who]}", **(headers or {})}
        return self.client.request(method, url, headers=sent, **kwargs)

    def state(self, source_id: str) -> str:
        with self.sessions() as session:
            return session.scalar(select(EntryRow.state).where(EntryRow.source_id == source_id))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def billing(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> Iterator[Billing]:
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME_TEXT, status=RuleSetStatus.ACTIVE)
        ingest(session, [recent("1"), recent("2", work_date=day(1)), recent("3", work_date=day(2),
                                                                           utbms_task_code="L120"),
                         recent("other", law_firm_matter_id="2025-0311")], context=NOW)
        keys = {name: create_key(session, name=name, role=role)[1] for name, role in (
            ("biller", Role.BILLER), ("viewer", Role.VIEWER), ("reviewer", Role.REVIEWER))}
    with running_fake_portal(FakeRules(blocked_task_codes=frozenset({"L120"}))) as portal:
        settings = {k: v for k, v in portal.client_settings().items() if k != "client_secret"}
        settings.update(client_secret_env="OCGATE_TEST_PORTAL_SECRET", max_attempts=2, timeout=5,
                        matter_ids={"2026-0017": "90017", "2025-0311": "90311"})
        monkeypatch.setenv("OCGATE_TEST_PORTAL_SECRET", portal.state.client_secret)
        with transaction(sessions) as session:
            session.add(DestinationRow(name="acme-lt", kind="legaltracker", settings=settings, clients=["ACME01"]))
        with TestClient(create_app(sessions=sessions)) as client:
            yield Billing(client, sessions, keys, portal)


def test_billers_build_and_anyone_reads(billing: Billing) -> None:
    refused = billing.call("POST", "/v1/invoices", "viewer", json=BUILD)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    preview = billing.call("POST", "/v1/invoices/preview", "viewer", json=BUILD)
    assert preview.status_code == 200, preview.text
    assert preview.json()["total"] == "4162.50" and len(preview.json()["lines"]) == 3
    assert billing.state("1") == "ready"  # a preview locks nothing
    built = billing.call("POST", "/v1/invoices", json=BUILD)
    assert built.status_code == 201, built.text
    body = built.json()
    assert (body["status"], body["total"], body["line_count"], body["matters"]) == ("draft", "4162.50", 3,
                                                                                    ["2026-0017"])
    assert [e["action"] for e in body["events"]] == ["built"]
    assert billing.state("1") == billing.state("3") == "invoiced" and billing.state("other") == "ready"
    listed = billing.call("GET", "/v1/invoices", "viewer", params={"client": "ACME01"}).json()
    assert [i["number"] for i in listed] == [body["number"]]
    by_number = billing.call("GET", f"/v1/invoices/{body['number']}", "viewer").json()
    assert by_number["id"] == body["id"] and by_number["lines"][0]["description"].startswith("Drafted answer")
    download = billing.call("GET", f"/v1/invoices/{body['id']}/ledes", "viewer")
    assert download.headers["content-disposition"] == f'attachment; filename="{body["number"]}.txt"'
    assert str(ledes.parse(download.text).invoices[0].total) == body["total"]
    with billing.sessions() as session:
        assert download.content == session.get(InvoiceRow, body["id"]).content.encode()


def test_a_one_off_discount_is_an_if_line(billing: Billing) -> None:
    refused = billing.call("POST", "/v1/invoices/preview", json={
        **BUILD, "discounts": [{"kind": "fees", "description": "x", "percent": "5", "amount": "3"}]})
    assert refused.status_code == 422 and "either percent or amount" in refused.json()["error"]["message"]
    built = billing.call("POST", "/v1/invoices", json={
        **BUILD, "discounts": [{"kind": "fees", "description": "Courtesy discount 5%", "percent": "5"}]})
    assert built.status_code == 201, built.text
    last = built.json()["lines"][-1]
    assert (last["kind"], last["total"], last["units"]) == ("IF", "-208.13", None)
    assert built.json()["total"] == "3954.37"


def test_invoice_errors_are_json_with_stable_codes(billing: Billing) -> None:
    assert billing.call("GET", "/v1/invoices/NOPE1").json()["error"]["code"] == "not_found"
    everything = billing.call("POST", "/v1/invoices", json={**BUILD, "matters": []})
    assert everything.status_code == 422 and "one matter per invoice" in everything.json()["error"]["message"]
    bad_number = billing.call("POST", "/v1/invoices", json={**BUILD, "number": "INV-1"})
    assert (bad_number.status_code, bad_number.json()["error"]["code"]) == (422, "invalid_invoice")
    assert billing.call("POST", "/v1/invoices", json={**BUILD, "number": "INV1"}).status_code == 201
    nothing = billing.call("POST", "/v1/invoices", json=BUILD)
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (422, "nothing_to_bill")
    with transaction(billing.sessions) as session:  # release, then try to reuse the number
        invoice = session.scalar(select(InvoiceRow))
        from engine.workflows.billing import invoices

        invoices.void(session, invoice.id, actor="t", reason="test")
    taken = billing.call("POST", "/v1/invoices", json={**BUILD, "number": "INV1"})
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "number_taken")
    void_again = billing.call("POST", "/v1/invoices/INV1/void", json={"reason": "again"})
    assert (void_again.status_code, void_again.json()["error"]["code"]) == (409, "invoice_state")


def test_submit_poll_and_the_rejected_line_back_in_the_queue(billing: Billing) -> None:
    number = billing.call("POST", "/v1/invoices", json=BUILD).json()["number"]
    sent = billing.call("POST", f"/v1/invoices/{number}/submit", json={})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["status"], sent.json()["destination"], sent.json()["portal_state"]) == (
        "submitted", "acme-lt", "submitted")
    assert billing.call("POST", f"/v1/invoices/{number}/submit", json={}).status_code == 200
    assert len(billing.portal.state.by_number(number)) == 1  # submitted once
    refused = billing.call("POST", f"/v1/invoices/{number}/void", json={"reason": "changed my mind"})
    assert refused.status_code == 409  # the portal has it
    billing.portal.state.advance()
    billing.portal.state.advance()
    polled = billing.call("POST", f"/v1/invoices/{number}/poll")
    assert polled.status_code == 200, polled.text
    result = polled.json()
    assert result["state"] == "adjusted" and len(result["applied"]) == 1
    rejection = result["applied"][0]
    assert (rejection["line_number"], rejection["reason"], rejection["kind"]) == (3, "Fee - Task not permitted",
                                                                                  "rejected")
    assert rejection["proposal"]["kind"] == "tighten" and rejection["proposal"]["rule_id"] == "ACME-CODE-001"
    assert rejection["proposal"]["verified"] is True
    assert billing.state("3") == "in_review" and billing.state("1") == "invoiced"
    assert billing.call("POST", f"/v1/invoices/{number}/poll").json()["applied"] == []  # applied once
    queue = billing.call("GET", "/v1/review-items", "reviewer").json()["items"]
    [item] = [i for i in queue if i["portal_reasons"]]
    assert item["portal_reasons"] == ["Fee - Task not permitted"] and item["rule_ids"] == []
    detail = billing.call("GET", f"/v1/entries/{item['id']}", "reviewer")
    assert detail.json()["portal_rejections"][0]["reason"] == "Fee - Task not permitted"
    assert detail.json()["history"][-1]["action"] == "portal_rejected"
    rejected = billing.call("POST", f"/v1/entries/{item['id']}/reject", "reviewer", json={"reason": "write off"},
                            headers={"If-Match": detail.headers["ETag"]})
    assert rejected.status_code == 200, rejected.text
    assert billing.call("GET", f"/v1/entries/{item['id']}/portal-rejections", "viewer",
                        params={"open_only": True}).json() == []
    invoice = billing.call("GET", f"/v1/invoices/{number}", "viewer").json()
    assert [ln["state"] for ln in invoice["lines"]] == ["billed", "billed", "rejected"]
    assert [e["action"] for e in invoice["events"]] == ["built", "submit_started", "submitted", "status",
                                                        "portal_rejection"]


def test_an_unreachable_portal_is_a_503_and_submitting_again_resumes(billing: Billing) -> None:
    number = billing.call("POST", "/v1/invoices", json=BUILD).json()["number"]
    with transaction(billing.sessions) as session:
        row = session.scalar(select(DestinationRow))
        good = dict(row.settings)
        row.settings = {**good, "base_url": f"http://127.0.0.1:{_free_port()}/legal-tracker/billing-api/v1",
                        "token_url": f"http://127.0.0.1:{_free_port()}/oauth/token", "max_attempts": 1,
                        "timeout": 0.5}
    down = billing.call("POST", f"/v1/invoices/{number}/submit", json={})
    assert (down.status_code, down.json()["error"]["code"]) == (503, "destination_unavailable"), down.text
    invoice = billing.call("GET", f"/v1/invoices/{number}").json()
    assert invoice["status"] == "submitting" and invoice["last_error"]
    with transaction(billing.sessions) as session:
        session.scalar(select(DestinationRow)).settings = good
    again = billing.call("POST", f"/v1/invoices/{number}/submit", json={})
    assert again.status_code == 200 and again.json()["status"] == "submitted", again.text
    assert len(billing.portal.state.by_number(number)) == 1
    assert "submit_resumed" in [e["action"] for e in again.json()["events"]]
