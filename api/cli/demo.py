"""``ocgate demo``: the bundled sample month checked against the bundled Acme rule set, then the review
queue on a fresh SQLite database driven through the API: an entry cleared, invoices built, submitted to a
fake e-billing portal on loopback, and the line it rejects back in the queue."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections import Counter
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
from api.worker import Worker
from connectors.clio.fake import FakeClio, running_fake_clio, serving
from connectors.destinations import registry as destinations
from connectors.efimis.fake import load_demo as load_efimis_demo
from connectors.efimis.fake import running_fake_efimis
from connectors.legaltracker.fake import FakeRules, running_fake_portal
from connectors.mattero.fake import running_fake_mattero
from connectors.sources import registry, webhooks
from connectors.sources.clio import code_from
from connectors.sources.registry import Options
from connectors.sources.sync import sync
from connectors.trackops.fake import running_fake_trackops
from engine.entry_io import read_entries
from engine.ledes import Party
from engine.ledes.profile import FirmSettings
from engine.model import Entry
from engine.rules.backends import resolve_backend
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_file
from engine.rules.ruleset import RuleSet
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import EntryRow, EntryState, RuleSetStatus, ViolationRow
from engine.workflows import entries, review, sources, timekeepers
from engine.workflows.billing import invoices
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


def bundled_mattero_export_path() -> Path:
    return Path(str(resources.files("engine") / "data" / "samples" / "mattero-all-costs.csv"))


def bundled_timekeepers_path() -> Path:
    return Path(str(resources.files("engine") / "data" / "samples" / "timekeepers.csv"))


def run(args: argparse.Namespace) -> int:
    ruleset = load_file(bundled_ruleset_path())
    month = read_entries(bundled_sample_path())
    backend = resolve_backend(args.backend)
    context = EvaluationContext(as_of=DEMO_AS_OF, period_start=DEMO_PERIOD[0], period_end=DEMO_PERIOD[1])
    database: Path = args.database
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), _queue_file(database)):
        path.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with running_fake_clio() as clio:
        clio.state.load_entries(month)  # the bundled month, served by Clio
        options = _connect(sessions, clio, ruleset)
        report = sync(sessions, "clio", options=options, context=context)
        with sessions() as session:
            synced = [Entry.model_validate(item["entry"]) for item in entries.export(session)]
        print(f"ocgate demo: {len(synced)} time and expense entries for Acme Corporation, March 2026, synced from a "
              f"fake Clio on loopback and checked against {ruleset.title} (revision {ruleset.revision}) with the "
              f"{backend} backend\n")
        violations = evaluate(synced, ruleset, context=context, backend=backend)
        print_summary(synced, [ruleset], violations, sys.stdout)
        print("\nOne finding of each rule:")
        seen: set[str] = set()
        first = []
        for v in violations:
            if v.rule_id not in seen and v.rule_status == "active":
                seen.add(v.rule_id)
                first.append(v)
        print_table(synced, first, sys.stdout, footer=False)
        print(f"\nReview queue in {database}: rule set {ruleset.id} revision {ruleset.revision} active; the firm's "
              "timekeeper table gives each entry its LEDES timekeeper id, classification and standard rate")
        print(f"ocgate sync clio: {report.pulled} activities pulled in {report.batches} batch(es), each committed "
              f"with the cursor; {report.new} new: {report.new - report.flagged} ready to bill, {report.flagged} "
              f"waiting for review, {report.quality} with data-quality problems")
        again = sync(sessions, "clio", options=options, context=context)
        print(f"Syncing again: {again.pulled} pulled (the overlap window), {again.new} new, {again.changed} changed, "
              f"{again.unchanged} unchanged (idempotent)")
        _by_webhook(sessions, clio, options, database)
    _other_sources(sessions, context, database, sys.stdout)
    with transaction(sessions) as session:
        _, reviewer_key = create_key(session, name="demo reviewer", role=Role.REVIEWER)
    asyncio.run(_through_the_api(create_app(sessions=sessions), reviewer_key, sys.stdout))
    _invoices(sessions, context, database.parent / f"{database.stem}-invoices", sys.stdout)
    engine.dispose()
    return EXIT_OK


CENT = Decimal("0.01")
VAGUE = "Attention to file"


def _queue_file(database: Path) -> Path:
    return database.with_name(database.stem + "-queue.db")


def _connect(sessions: sessionmaker[Session], clio: FakeClio, ruleset: RuleSet) -> Options:
    """The firm's set-up: the timekeeper table, the client's rule set, and Clio connected (the fake approves at
    once: the authorization-code flow without a browser)."""
    os.environ.setdefault("OCGATE_SECRET_KEY", sources.new_secret_key())
    environ = {"OCGATE_DEMO_CLIO_SECRET": clio.client_secret}
    with transaction(sessions) as session:
        timekeepers.import_csv(session, bundled_timekeepers_path().read_text(encoding="utf-8"),
                               source=str(bundled_timekeepers_path()))
        add_ruleset_version(session, ruleset.text, source=ruleset.source, created_by="demo",
                            status=RuleSetStatus.ACTIVE)
        registry.configure(session, "clio", kind="clio", settings={
            "base_url": clio.base_url, "client_id": clio.client_id, "client_secret_env": "OCGATE_DEMO_CLIO_SECRET",
            "redirect_uri": "https://ocgate.example/oauth/clio"})
    options = Options(environ=environ, fetcher=False)  # 300 entries, and a fake Clio in this process: no fork
    url, state = registry.authorize_url(sessions, "clio")
    redirect = httpx.get(url, follow_redirects=False).headers["location"]
    registry.connect(sessions, "clio", code=code_from(redirect, state), options=options)
    return options


def _by_webhook(sessions: sessionmaker[Session], clio: FakeClio, options: Options, database: Path) -> None:
    """A timekeeper edits a clean entry in Clio; Clio's webhook brings it back, judged again, within a second."""
    worker = Worker(queue=f"sqlite:///{_queue_file(database)}", sessions=sessions, options=options, as_of=DEMO_AS_OF)
    consumer = worker.consumer(workers=1)
    consumer.start()
    try:
        with serving(create_app(sessions=sessions, worker=worker, source_options=options)) as (url, _server):
            [subscription] = webhooks.register(sessions, "clio", f"{url}/v1/webhooks/clio", options)
            with sessions() as session:
                row = session.scalar(select(EntryRow).where(EntryRow.state == EntryState.READY,
                                                            EntryRow.entry_kind == "time").order_by(EntryRow.id))
            before = row.state
            edited = clio.state.edit(int(row.source_id), note=VAGUE)
            started = time.monotonic()
            clio.state.deliver("updated", edited.id)
            answer = clio.state.deliveries[-1].status
            while time.monotonic() - started < 10:
                with sessions() as session:
                    row = session.get(EntryRow, row.id)
                if row.source_version == edited.etag:
                    break
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            with sessions() as session:
                found = session.scalars(select(ViolationRow).where(ViolationRow.entry_id == row.id,
                                                                   ViolationRow.current.is_(True))).all()
    finally:
        consumer.stop(graceful=True)
    print(f"\nWebhooks: subscription {subscription.remote_id} is {subscription.status} (Clio's handshake reached the "
          "API); a worker runs beside it")
    print(f"  In Clio, {row.timekeeper_name} edits activity {edited.id} ({row.work_date}) to read \"{VAGUE}\"")
    print(f"  Clio posts the signed event -> {answer}; the worker re-fetches the activity and judges it: "
          f"{before} -> {row.state} in {elapsed:.2f} s")
    for violation in found:
        print(f"    {violation.rule_id} ({violation.severity}): {violation.message}")


def _other_sources(sessions: sessionmaker[Session], context: EvaluationContext, database: Path, out: TextIO) -> None:
    """The firm's other systems, each a fake on loopback: Efimis (the London office's fee earners, on Acme's and
    Globex's matters), Trackops (the investigators' time and expenses on Acme's cases), and mattero's All Costs
    export (the Sydney office) dropped in a folder. Then the one review queue they all feed, by source."""
    reports = []
    with running_fake_efimis() as efimis:
        load_efimis_demo(efimis.state, DEMO_PERIOD[0])
        options = Options(environ={"OCGATE_DEMO_EFIMIS_SECRET": efimis.client_secret}, fetcher=False)
        with transaction(sessions) as session:
            registry.configure(session, "efimis", kind="efimis",
                               settings=efimis.settings("OCGATE_DEMO_EFIMIS_SECRET", currency="USD"))
        registry.connect(sessions, "efimis", options=options)  # client credentials: no browser
        reports.append(("Efimis", "work items", sync(sessions, "efimis", options=options, context=context)))
    with running_fake_trackops() as trackops:
        trackops.state.seed_demo_month(DEMO_PERIOD[0])  # the investigators' expenses on Acme's cases
        options = Options(environ={"OCGATE_DEMO_TRACKOPS_TOKEN": trackops.api_token}, fetcher=False)
        with transaction(sessions) as session:
            registry.configure(session, "trackops", kind="trackops",
                               settings=trackops.source_settings("OCGATE_DEMO_TRACKOPS_TOKEN"))
        registry.connect(sessions, "trackops", options=options)  # checks the API token
        reports.append(("Trackops", "expense entries (an entry per detail line)",
                        sync(sessions, "trackops", options=options, context=context)))
    exports = database.with_name(f"{database.stem}-mattero-exports")
    shutil.rmtree(exports, ignore_errors=True)
    exports.mkdir(parents=True)
    shutil.copy(bundled_mattero_export_path(), exports / "all-costs-2026-03.csv")
    with running_fake_mattero() as mattero:
        mattero.state.load_export(bundled_mattero_export_path())  # the same costs, readable one by one
        options = Options(environ={"OCGATE_DEMO_MATTERO_KEY": mattero.api_key}, fetcher=False)
        with transaction(sessions) as session:
            registry.configure(session, "mattero", kind="mattero", settings={
                "base_url": mattero.api_url, "api_key_env": "OCGATE_DEMO_MATTERO_KEY", "export_dir": str(exports)})
        registry.connect(sessions, "mattero", options=options)  # checks the API key
        reports.append(("mattero", f"costs from the All Costs export in {exports}",
                        sync(sessions, "mattero", options=options, context=context)))
    print("\nThe firm's other systems, each a fake on loopback:", file=out)
    for label, what, report in reports:
        flags = ", ".join(f"{flag} {n}" for flag, n in sorted(report.quality_flags.items()))
        print(f"  ocgate sync {report.source}: {report.pulled} {what} pulled from {label}; {report.new} new, "
              f"{report.flagged} to review, {report.quality} with data-quality flags"
              + (f" ({flags})" if flags else ""), file=out)
    _queue_by_source(sessions, out)


def _queue_by_source(sessions: sessionmaker[Session], out: TextIO) -> None:
    """One review queue across every source: what waits, from where, and why."""
    with sessions() as session:
        rows = session.execute(select(EntryRow.source_system, EntryRow.state, func.count())
                               .group_by(EntryRow.source_system, EntryRow.state)).all()
        why = session.execute(select(EntryRow.source_system, ViolationRow.rule_id, func.count())
                              .join(ViolationRow, ViolationRow.entry_id == EntryRow.id)
                              .where(ViolationRow.current.is_(True), ViolationRow.rule_status == "active",
                                     EntryRow.state == EntryState.IN_REVIEW)
                              .group_by(EntryRow.source_system, ViolationRow.rule_id)).all()
        flagged = session.execute(select(EntryRow.source_system, EntryRow.data_quality_flags)
                                  .where(EntryRow.state == EntryState.IN_REVIEW)).all()
    counts: dict[str, Counter[str]] = {}
    for source, state, n in rows:
        counts.setdefault(source, Counter())[str(state)] += n
    rules: dict[str, Counter[str]] = {}
    for source, rule_id, n in why:
        rules.setdefault(source, Counter())[rule_id] += n
    for source, flags in flagged:
        for flag in flags or ():
            rules.setdefault(source, Counter())[flag] += 1
    print("\nOne review queue across the sources (GET /v1/review-items?source=...):", file=out)
    print(f"  {'source':<10} {'entries':>7} {'ready':>6} {'to review':>9}  most frequent findings and flags", file=out)
    for source in sorted(counts):
        c = counts[source]
        top = ", ".join(f"{name} {n}" for name, n in rules.get(source, Counter()).most_common(4))
        print(f"  {source:<10} {sum(c.values()):>7} {c['ready']:>6} {c['in_review']:>9}  {top}", file=out)


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
            destinations.configure(session, "acme-legaltracker", kind="legaltracker", settings=settings,
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
