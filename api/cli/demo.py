"""``ocgate demo``: the bundled sample month checked against the bundled Acme rule set, then the review
queue on a fresh SQLite database driven through the API: an entry cleared, invoices built, submitted to a
fake e-billing portal on loopback, and the line it rejects back in the queue."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.cli.common import EXIT_OK
from api.cli.validate import print_summary, print_table
from connectors.destinations import registry
from connectors.legaltracker.fake import FakeRules, running_fake_portal
from engine.entry_io import read_entries
from engine.ledes import Party
from engine.ledes.profile import FirmSettings
from engine.rules.backends import resolve_backend
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_file
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import EntryRow, RuleSetStatus, ViolationRow
from engine.workflows import review
from engine.workflows.billing import invoices
from engine.workflows.intake import ingest
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version


def add_parser(sub: Any) -> None:
    demo = sub.add_parser("demo", help="check the bundled sample month against the bundled Acme rule set")
    demo.add_argument("--backend", choices=["auto", "python", "durable"], default="auto")
    demo.add_argument("--database", type=Path, default=Path("ocgate-demo.db"),
                      help="SQLite file for the review-queue part (recreated; default ocgate-demo.db)")
    demo.set_defaults(handler=run)


DEMO_PERIOD = (dt.date(2026, 3, 1), dt.date(2026, 3, 31))


DEMO_AS_OF = dt.date(2026, 4, 6)


def bundled_ruleset_path() -> Path:
    return Path(str(resources.files("rules") / "acme-corp.yaml"))


def bundled_sample_path() -> Path:
    return Path(str(resources.files("engine") / "data" / "samples" / "acme-2026-03.jsonl"))


def run(args: argparse.Namespace) -> int:
    ruleset = load_file(bundled_ruleset_path())
    entries = read_entries(bundled_sample_path())
    backend = resolve_backend(args.backend)
    context = EvaluationContext(as_of=DEMO_AS_OF, period_start=DEMO_PERIOD[0], period_end=DEMO_PERIOD[1])
    print(f"ocgate demo: {len(entries)} sample entries for Acme Corporation, March 2026, checked against "
          f"{ruleset.title} (revision {ruleset.revision}) with the {backend} backend\n")
    violations = evaluate(entries, ruleset, context=context, backend=backend)
    print_summary(entries, [ruleset], violations, sys.stdout)
    print("\nOne finding of each rule:")
    seen: set[str] = set()
    sample = []
    for v in violations:
        if v.rule_id not in seen and v.rule_status == "active":
            seen.add(v.rule_id)
            sample.append(v)
    print_table(entries, sample, sys.stdout, footer=False)

    run_queue_demo(bundled_ruleset_path(), bundled_sample_path(), context, args.database)
    return EXIT_OK


CENT = Decimal("0.01")


def run_queue_demo(ruleset_file: Path, sample_file: Path, context: EvaluationContext, database: Path,
                   out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        version = add_ruleset_version(session, ruleset_file.read_text(encoding="utf-8"), source=str(ruleset_file),
                                      created_by="demo", status=RuleSetStatus.ACTIVE)
        result = ingest(session, read_entries(sample_file), actor="demo:ingest", source=str(sample_file),
                        context=context)
        _, reviewer_key = create_key(session, name="demo reviewer", role=Role.REVIEWER)
    print(f"\nReview queue in {database}: rule set {version.ruleset_id} revision {version.revision} active; "
          f"ingested {result.received} entries: {result.ready} ready to bill, {result.in_review} waiting for "
          f"review, {result.held} held", file=out)
    again = None
    with transaction(sessions) as session:
        again = ingest(session, read_entries(sample_file), actor="demo:ingest", source=str(sample_file),
                       context=context)
    print(f"Ingesting the same file again: {again.unchanged} unchanged, {again.created} new, "
          f"{again.updated} changed (idempotent)", file=out)
    asyncio.run(_through_the_api(create_app(sessions=sessions), reviewer_key, out))
    _invoices(sessions, context, database.parent / f"{database.stem}-invoices", out)
    engine.dispose()


def _invoices(sessions: sessionmaker[Session], context: EvaluationContext, folder: Path, out: TextIO) -> None:
    """Invoices for what is ready, a submission to a fake Legal Tracker on loopback, and its rejection back in
    the queue."""
    with transaction(sessions) as session:
        # A reviewer writes one over-cap rate down to the cap: the invoice shows it as a line adjustment.
        only_rate = (select(ViolationRow.entry_id).where(ViolationRow.current.is_(True),
                                                          ViolationRow.rule_status == "active")
                     .group_by(ViolationRow.entry_id).having(func.count() == 1,
                                                             func.max(ViolationRow.rule_id) == "ACME-RATE-001"))
        flagged = session.scalars(only_rate.join(EntryRow, EntryRow.id == ViolationRow.entry_id)
                                  .where(EntryRow.state == "in_review").order_by(ViolationRow.entry_id)).first()
        row = session.get(EntryRow, flagged)
        cap = Decimal(str(row.record["rate"])) + Decimal((session.scalars(select(ViolationRow.adjustment).where(
            ViolationRow.entry_id == flagged, ViolationRow.rule_id == "ACME-RATE-001",
            ViolationRow.current.is_(True))).first() or {}).get("amount", "0")) / Decimal(row.record["hours_billed"])
        review.adjust(session, row.id, expected_version=row.version, actor="demo:reviewer",
                      reason="written down to the approved rate (OCG 4.1)", changes={"rate": cap.quantize(CENT)},
                      context=context)
        invoices.save_firm_settings(session, FirmSettings(law_firm_id="24-6437381", invoice_prefix="HM",
                                                          firm=Party(name="Hale & Moss LLP", city="Chicago",
                                                                     country="US")))
        _, biller_key = create_key(session, name="demo biller", role=Role.BILLER)
    print(f"\nEntry {row.id}: a reviewer wrote the rate down to {cap.quantize(CENT)} (the cap); it is now {row.state}",
          file=out)
    # The client's portal: its guidelines refuse photocopying (E101), which Acme's rule set does not block.
    with running_fake_portal(FakeRules(blocked_expense_codes=frozenset({"E101"})),
                             matters=["90311", "90017", "90042"]) as portal:
        settings = {k: v for k, v in portal.client_settings().items() if k != "client_secret"}
        settings.update(client_secret_env="OCGATE_DEMO_PORTAL_SECRET", max_attempts=2,
                        matter_ids={"2025-0311": "90311", "2026-0017": "90017", "2026-0042": "90042"})
        os.environ["OCGATE_DEMO_PORTAL_SECRET"] = portal.state.client_secret
        with transaction(sessions) as session:
            registry.configure(session, "acme-legaltracker", kind="legaltracker", settings=settings,
                               clients=["ACME01"])
        asyncio.run(_bill(create_app(sessions=sessions), biller_key, context, folder, portal.state, out))


async def _bill(app: Any, key: str, context: EvaluationContext, folder: Path, portal: Any, out: TextIO) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    folder.mkdir(parents=True, exist_ok=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ocgate.demo", headers=headers) as api:
        print(f"\nInvoices for March 2026 (one per matter, as Acme's guidelines ask), LEDES files in {folder}:",
              file=out)
        numbers = []
        for matter in ("2025-0311", "2026-0017", "2026-0042"):
            built = await api.post("/v1/invoices", json={
                "client_id": "ACME01", "period_start": str(context.period_start),
                "period_end": str(context.period_end), "matters": [matter], "invoice_date": str(context.as_of)})
            body = built.json()
            if built.status_code != 201:
                print(f"  {matter}: {built.status_code} {body['error']['message']}", file=out)
                continue
            numbers.append(body["number"])
            adjusted = [ln for ln in body["lines"] if ln["review_adjustment"]]
            ledes_file = await api.get(f"/v1/invoices/{body['number']}/ledes")
            (folder / f"{body['number']}.txt").write_bytes(ledes_file.content)
            print(f"  POST /v1/invoices -> {built.status_code}: {body['number']} matter {matter}, "
                  f"{body['line_count']} lines, total {body['total']} USD"
                  + (f"; line {adjusted[0]['line_number']} carries the reviewer's write-down "
                     f"{adjusted[0]['review_adjustment']} as its LEDES adjustment" if adjusted else ""), file=out)
        print("\nSubmitting to the client's e-billing portal (a fake Legal Tracker on loopback):", file=out)
        for number in numbers:
            sent = (await api.post(f"/v1/invoices/{number}/submit", json={})).json()
            print(f"  POST /v1/invoices/{number}/submit -> {sent['portal_state']} (portal invoice "
                  f"{sent['destination_ref']})", file=out)
        again = await api.post(f"/v1/invoices/{numbers[0]}/submit", json={})
        print(f"  submitting {numbers[0]} again -> {again.status_code}, still one invoice at the portal "
              f"({len(portal.by_number(numbers[0]))})", file=out)
        portal.advance()  # the client's reviewers pick the invoices up
        portal.advance()  # and decide
        print("\nPolling the portal:", file=out)
        rejected: list[tuple[str, dict[str, Any]]] = []
        for number in numbers:
            polled = (await api.post(f"/v1/invoices/{number}/poll")).json()
            print(f"  {number}: {polled['state']}", file=out)
            rejected += [(number, r) for r in polled["applied"]]
        for number, rejection in rejected:
            print(f"  line {rejection['line_number']} of {number} rejected: \"{rejection['reason']}\" "
                  f"({rejection['comment']}); entry {rejection['entry_id']} is back in the review queue", file=out)
            proposal = rejection["proposal"] or {}
            print(f"  proposal ({proposal.get('kind')}, verified: {proposal.get('verified')}): {proposal.get('why')}",
                  file=out)
            for line in (proposal.get("yaml") or "").splitlines():
                print(f"      {line}", file=out)
        queue = (await api.get("/v1/review-items", params={"limit": 500})).json()["items"]
        back = [item for item in queue if item["portal_reasons"]]
        for item in back:
            print(f"\nGET /v1/review-items: entry {item['id']} ({item['work_date']}, {item['amount']} USD) waits "
                  f"for a reviewer with the portal's reason: {'; '.join(item['portal_reasons'])}", file=out)


async def _through_the_api(app: Any, key: str, out: TextIO) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ocgate.demo", headers=headers) as api:
        page = (await api.get("/v1/review-items", params={"severity": "error", "limit": 1,
                                                          "rule_id": "ACME-RATE-001"})).json()
        item = page["items"][0]
        detail = await api.get(f"/v1/entries/{item['id']}")
        etag = detail.headers["ETag"]
        body = detail.json()
        print(f"\nGET /v1/entries/{item['id']} (ETag {etag}): {body['entry']['timekeeper_name']} on "
              f"{body['entry']['work_date']}, state {body['state']}", file=out)
        for v in body["violations"]:
            print(f"  {v['rule_id']} ({v['severity']}): {v['message']}", file=out)
        refused = await api.post(f"/v1/entries/{item['id']}/approve", json={}, headers={"If-Match": etag})
        print(f"POST .../approve without a reason -> {refused.status_code} {refused.json()['error']['code']}",
              file=out)
        approved = await api.post(f"/v1/entries/{item['id']}/approve", headers={"If-Match": etag},
                                  json={"reason": "Client approved the 2026 rate increase by email on 2026-02-14"})
        print(f"POST .../approve with a reason -> {approved.status_code}, state {approved.json()['state']}, "
              f"ETag {approved.headers['ETag']}", file=out)
        stale = await api.post(f"/v1/entries/{item['id']}/reject", json={"reason": "late"},
                               headers={"If-Match": etag})
        print(f"POST .../reject with the old ETag -> {stale.status_code} {stale.json()['error']['code']}", file=out)
        trail = (await api.get(f"/v1/entries/{item['id']}/history")).json()
        print("\nAudit trail:", file=out)
        for action in trail:
            when = dt.datetime.fromisoformat(action["at"]).strftime("%Y-%m-%d %H:%M:%S")
            reason = f" reason: {action['reason']}" if action["reason"] else ""
            change = ""
            if action["before"] and action["after"] and "state" in action["before"]:
                change = f" {action['before']['state']} -> {action['after']['state']}"
            print(f"  {when} {action['action']:<9} by {action['actor']}{change}{reason}", file=out)
        if trail and trail[-1]["before"] and trail[-1]["before"].get("overridden"):
            print("  overridden findings: " + json.dumps([o["rule_id"] for o in trail[-1]["before"]["overridden"]]),
                  file=out)
