"""``GET /v1/reports/findings`` and ``ocgate report findings`` over the seeded store (SQLite and PostgreSQL): what
the database adds up equals what Python adds up from the same rows, as JSON and as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.cli import main
from engine.store.db import transaction
from engine.store.models import EntryRow, EntryState, InvoiceRow, PortalRejection, ReviewAction, ViolationRow
from tests.api.conftest import World, day
from tests.engine.workflows.test_reports import breakdowns

REPORT = "/v1/reports/findings"


def bill_and_refuse(world: World) -> None:
    """A reviewer's write-down on ``rate``; ``clean1`` and ``vague`` billed; two portal refusals of ``vague``."""
    response = world.post(f"/v1/entries/{world.ids['rate']}/adjust", "reviewer", if_match='"1"',
                          json={"reason": "cap", "changes": {"rate": "950.00"}})
    assert response.status_code == 200, response.text
    with transaction(world.sessions) as session:
        now = dt.datetime.now(dt.UTC)
        invoice = InvoiceRow(number="T000001", client_id="ACME01", matters=["2026-0017"], format="1998b",
                             currency="USD", invoice_date=dt.date.fromisoformat(day(20)),
                             period_start=dt.date.fromisoformat(day(0)), period_end=dt.date.fromisoformat(day(20)),
                             total=Decimal(0), fees_total=Decimal(0), expenses_total=Decimal(0),
                             adjustments_total=Decimal(0), line_count=0, content="", sha256="0" * 64, profile={},
                             created_by="test")
        session.add(invoice)
        session.flush()
        for source_id in ("clean1", "vague"):
            session.get(EntryRow, world.ids[source_id]).state = EntryState.INVOICED
        for n, (code, amount) in enumerate([("VAGUE", "120.50"), ("VAGUE", "0.25"), (None, None)]):
            session.add(PortalRejection(invoice_id=invoice.id, rejection_id=f"r{n}", entry_id=world.ids["vague"],
                                        kind="rejected", reason="Description too vague" if code else "Other",
                                        reason_code=code, amount=Decimal(amount) if amount else None,
                                        received_at=now))


def expected(session: Session, start: dt.date | None = None, end: dt.date | None = None) -> dict[str, Any]:
    """The report worked out in Python from the rows."""
    entries = {e.id: e for e in session.scalars(select(EntryRow)) if e.state != EntryState.WITHDRAWN
               and (start is None or e.work_date >= start) and (end is None or e.work_date <= end)}
    current = [v for v in session.scalars(select(ViolationRow).where(ViolationRow.current.is_(True)))
               if v.rule_status == "active" and v.entry_id in entries]
    ever = {v.entry_id for v in session.scalars(select(ViolationRow)) if v.rule_status == "active"}
    by_rule = Counter(v.rule_id for v in current)
    proposed: dict[str, Decimal] = {}
    for v in current:
        if v.adjustment:
            currency = entries[v.entry_id].record.get("currency") or "none"
            proposed[currency] = proposed.get(currency, Decimal(0)) + Decimal(v.adjustment["amount"])
    reviewed = sum((Decimal(a.after["write_down"]) for a in session.scalars(select(ReviewAction))
                    if a.action == "adjust" and a.entry_id in entries), Decimal(0))
    billed = [e for e in entries.values() if e.state == EntryState.INVOICED]
    return {"groups": breakdowns(entries, current),
            "entries": len(entries), "findings": len(current), "flagged": len({v.entry_id for v in current}),
            "by_rule": dict(by_rule), "by_month": dict(Counter(entries[v.entry_id].work_date.isoformat()[:7]
                                                                for v in current)),
            "by_matter": dict(Counter(entries[v.entry_id].law_firm_matter_id for v in current)),
            "proposed": {k: str(v) for k, v in proposed.items()}, "reviewed": reviewed,
            "billed": len(billed), "clean": sum(1 for e in billed if e.id not in ever)}


def test_the_report_adds_up_what_is_stored(world: World) -> None:
    bill_and_refuse(world)
    response = world.get(REPORT, "viewer")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    with world.sessions() as session:
        want = expected(session)
    assert (report["entries"], report["findings"], report["flagged_entries"]) == (
        want["entries"], want["findings"], want["flagged"])
    assert {g["key"]: g["findings"] for g in report["by"]["rule"]} == want["by_rule"]
    assert {g["key"]: g["findings"] for g in report["by"]["month"]} == want["by_month"]
    assert {g["key"]: g["findings"] for g in report["by"]["matter"]} == want["by_matter"]
    assert [g["key"] for g in report["by"]["month"]] == sorted(want["by_month"])
    for dim, groups in want["groups"].items():  # findings and distinct entries, every breakdown
        assert {g["key"]: (g["findings"], g["entries"]) for g in report["by"][dim]} == groups, dim
    assert len(want["groups"]["severity"]) >= 2 and len(want["groups"]["rule"]) >= 2
    assert report["write_downs"]["proposed"]["amount"] == want["proposed"] and want["proposed"]
    assert report["write_downs"]["reviewed"] == {"actions": 1, "amount": {"USD": str(want["reviewed"])}}
    assert want["reviewed"] == Decimal("-60.00")  # 1.5 h at 990 written down to 950
    assert report["billed"] == {"entries": want["billed"], "clean": want["clean"],
                                "clean_share": str((Decimal(want["clean"]) / want["billed"]).quantize(
                                    Decimal("0.0001")))}
    assert (want["billed"], want["clean"]) == (2, 1)  # clean1 went out clean; vague had a finding
    assert report["portal_rejections"] == [
        {"reason_code": "VAGUE", "reason": "Description too vague", "kind": "rejected", "count": 2,
         "amount": {"USD": "120.75"}},
        {"reason_code": None, "reason": "Other", "kind": "rejected", "count": 1, "amount": {}}]
    rate_group = next(g for g in report["by"]["rule"] if g["key"] == "ACME-RATE-001")
    assert rate_group["write_down"] and all(Decimal(a) < 0 for a in rate_group["write_down"].values())


def test_the_window_the_clients_and_top(world: World) -> None:
    start, end = dt.date.fromisoformat(day(5)), dt.date.fromisoformat(day(8))
    report = world.get(REPORT, params={"from": start.isoformat(), "to": end.isoformat()}).json()
    with world.sessions() as session:
        want = expected(session, start, end)
    assert report["window"] == {"from": start.isoformat(), "to": end.isoformat(), "clients": []}
    assert (report["entries"], report["findings"]) == (want["entries"], want["findings"]) and want["findings"]
    assert {g["key"]: g["findings"] for g in report["by"]["rule"]} == want["by_rule"]
    globex = world.get(REPORT, params={"client": "GLOBEX1"}).json()
    assert (globex["entries"], globex["findings"], globex["portal_rejections"]) == (1, 0, [])
    top = world.get(REPORT, params={"top": 1}).json()
    assert all(len(groups) <= 1 for groups in top["by"].values())
    body = world.get(REPORT, params={"from": day(9), "to": day(1)})
    assert body.status_code == 422 and body.json()["error"]["code"] == "invalid_report"
    assert world.client.get(REPORT).status_code == 401


def test_csv_by_parameter_or_accept(world: World) -> None:
    bill_and_refuse(world)
    as_json = world.get(REPORT).json()
    by_param = world.get(REPORT, params={"format": "csv"})
    by_accept = world.client.get(REPORT, headers=world.auth("viewer", Accept="text/csv, application/json;q=0.5"))
    for response in (by_param, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
    assert by_param.text == by_accept.text
    rows = list(csv.DictReader(io.StringIO(by_param.text)))
    summary = {r["key"]: r for r in rows if r["section"] == "summary"}
    assert int(summary["findings"]["entries"]) == as_json["findings"]
    assert summary["clean_share"]["amount"] == as_json["billed"]["clean_share"]
    rules = {r["key"]: int(r["findings"]) for r in rows if r["section"] == "by_rule"}
    assert rules == {g["key"]: g["findings"] for g in as_json["by"]["rule"]}
    proposed = {r["currency"]: r["amount"] for r in rows if r["section"] == "write_down_proposed" and r["key"] == "*"}
    assert proposed == as_json["write_downs"]["proposed"]["amount"]
    refused = [r for r in rows if r["section"] == "portal_rejection"]
    assert [(r["key"], r["entries"], r["amount"]) for r in refused] == [("VAGUE", "2", "120.75"), ("Other", "1", "")]
    json_again = world.client.get(REPORT, headers=world.auth("viewer", Accept="application/json, text/csv"))
    assert json_again.headers["content-type"].startswith("application/json")


def test_the_openapi_document_declares_both_forms(world: World) -> None:
    operation = world.client.get("/openapi.json").json()["paths"][REPORT]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {"401", "403", "422", "429"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {"from", "to", "client", "top", "format"}


def test_the_command_line(world: World, db_url: str, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    bill_and_refuse(world)
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    assert main(["report", "findings", "--format", "json"]) == 0
    printed = capsys.readouterr().out
    assert '"findings"' in printed and '"portal_rejections"' in printed
    assert main(["report", "findings", "--format", "csv", "--from", day(0)]) == 0
    assert capsys.readouterr().out.startswith("section,key,currency,findings,entries,amount\n")
    assert main(["report", "findings"]) == 0
    table = capsys.readouterr().out
    assert "by rule:" in table and "ACME-RATE-001" in table and "portal rejections:" in table
    assert main(["report", "findings", "--from", day(9), "--to", day(1)]) == 2
    assert "starts" in capsys.readouterr().err
