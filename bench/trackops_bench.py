"""Syncing from Trackops: the fake Trackops in its own process, the real connector, the real store.

Run with ``.venv/bin/python -m bench.trackops_bench [--lines N]``. It prints figures only: nothing
here passes or fails.

1. ``--lines`` expense detail lines (default 100,000, on about 62,000 Trackops entries of which 88% are billable)
   synced into a fresh SQLite database end to end: the entries list read page by page, each billable entry's lines
   mapped (finance items, cases, clients and staff looked up), enriched from the investigators' timekeeper table,
   judged against the Acme rule set, stored and committed with the cursor. Figures: canonical entries (lines)
   stored per second, and Trackops entries read per second.
2. The incremental sync right after it, with nothing changed: what a scheduled sync costs when the firm is
   quiet (the entries list filtered by ``updated_from``, the overlap window read again and skipped as unchanged).
3. The connector alone: the same lines pulled and mapped (in this process, no fetcher), nothing judged or stored.
   Set beside figure 1, it shows which side of the sync limits it: reading Trackops or storing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from bench.engine_bench import cpu_count, load_average, max_rss_mb
from bench.sync_bench import history_rules
from connectors.sources import registry
from connectors.sources.sync import SyncReport, sync
from connectors.trackops.fake import FakeTrackopsState, timekeepers_csv
from engine.rules.features import EvaluationContext
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus
from engine.workflows import rulesets, timekeepers

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = EvaluationContext(as_of=dt.date(2026, 4, 6))
TOKEN_ENV = "OCGATE_BENCH_TRACKOPS_TOKEN"
PER_DAY = 60  # lines per calendar day across the six investigators: a realistic density for the daily rules


def start_fake(lines: int, days: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The fake Trackops in its own process, as the real one would be: its work is not counted against the sync's."""
    server = subprocess.Popen(
        [sys.executable, "-m", "connectors.trackops.fake", "--port", "0", "--lines", str(lines), "--seed", "7",
         "--start", str(CONTEXT.as_of - dt.timedelta(days=days)), "--days", str(days)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
    printed = []
    while not (line := server.stdout.readline()).startswith("Ctrl-C"):  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the fake Trackops did not start")
        printed.append(line)
    return server, json.loads("".join(printed))


def store(folder: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{folder / 'trackops.db'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with transaction(sessions) as session:
        rulesets.add_ruleset_version(session, history_rules(), status=RuleSetStatus.ACTIVE)
        timekeepers.import_csv(session, timekeepers_csv(), source="investigators")
    return sessions


def configure(sessions: sessionmaker[Session], fake: dict[str, Any]) -> registry.Options:
    settings = {key: fake[key] for key in ("currency", "finance_items", "item_codes", "ledes_client_ids")}
    with transaction(sessions) as session:
        registry.configure(session, "trackops", kind="trackops", settings={
            "subdomain": fake["subdomain"], "base_url": fake["base_url"], "username": fake["username"],
            "api_token_env": TOKEN_ENV, **settings})
    options = registry.Options(environ={TOKEN_ENV: fake["api_token"]})
    registry.connect(sessions, "trackops", options=options)
    return options


def pull_only(sessions: sessionmaker[Session], options: registry.Options) -> tuple[float, int]:
    """A full pull through the connector, its pages counted and dropped: seconds and lines mapped."""
    _, source = registry.open_named(sessions, "trackops", options)
    started, lines = time.perf_counter(), 0
    try:
        for page in source.pull(None, full=True):
            lines += len(page.entries)
    finally:
        source.close()
    return time.perf_counter() - started, lines


def summary(report: SyncReport) -> str:
    return (f"{report.new:,} new, {report.changed:,} changed, {report.unchanged:,} unchanged, "
            f"{report.withdrawn:,} withdrawn, {report.flagged:,} flagged, {report.quality:,} with data-quality "
            f"flags, {report.batches} committed batches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("OCGATE_SECRET_KEY", Fernet.generate_key().decode())
    print(f"trackops sync benchmark: {cpu_count()} cores, load {load_average()}")
    days = max(31, args.lines // PER_DAY)
    seeding = time.perf_counter()
    FakeTrackopsState(lines=args.lines, start=CONTEXT.as_of - dt.timedelta(days=days), days=days)
    seeded = time.perf_counter() - seeding
    with tempfile.TemporaryDirectory(prefix="ocgate-trackops-bench-") as tmp:
        sessions = store(Path(tmp))
        server, fake = start_fake(args.lines, days)
        try:
            options = configure(sessions, fake)
            report = sync(sessions, "trackops", options=options, context=CONTEXT)
            again = sync(sessions, "trackops", options=options, context=CONTEXT)
            alone, lines_alone = pull_only(sessions, options)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"1. sync of {args.lines:,} Trackops lines ({report.pulled:,} entries), no latency, into SQLite: "
          f"{report.seconds:.1f} s, {report.new / report.seconds:,.0f} lines stored/s, "
          f"{report.pulled / report.seconds:,.0f} entries read/s")
    print(f"   over {days:,} days; {summary(report)}; the fake in its own process (seeding {args.lines:,} lines "
          f"takes {seeded:.1f} s, not counted); max RSS {max_rss_mb():.0f} MB")
    print(f"2. the incremental sync right after, nothing changed: {again.seconds:.2f} s, {again.pulled:,} entries "
          f"read; {summary(again)}")
    print(f"3. the connector alone (pull and map, nothing stored): {lines_alone:,} lines in {alone:.1f} s, "
          f"{lines_alone / alone:,.0f} lines/s")


if __name__ == "__main__":
    main()
