"""The second half of ``ocgate demo``: the review queue on a fresh SQLite database, driven through the API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx

from api.app import create_app
from api.auth import Role, create_key
from engine.entry_io import read_entries
from engine.features import EvaluationContext
from engine.pipeline import add_ruleset_version, ingest
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus


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
    engine.dispose()


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
