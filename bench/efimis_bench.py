"""Syncing from Efimis: the fake Efimis in its own process on loopback, the real connector, the real store.

Run with ``.venv/bin/python -m bench.efimis_bench [--count N]``. It prints figures only: nothing here passes or
fails. See bench/README.md for what each figure means.

1. ``--count`` work items (default 100,000, dated over ``--days``; by default as many days as give the density of
   bench/sync_bench.py, a few items per fee earner and day, about four years for 100,000) synced into a
   fresh SQLite database end to end (token, GetRows slices of 500 rows, lookups, map, enrich from the timekeeper
   table, judge against the Acme rule set, store, commit with the cursor): rows read per second, and entries
   stored per second (only finalised and billed items are entries).
2. The same again as an incremental sync with nothing changed: GraphQL has no "updated since", so this is what
   reading the whole billing-period window costs when there is nothing to map. The overlap window is cut to a
   second for this: the fake's work items were all modified when it was seeded, moments before the first sync
   began, and the default five minutes would map and ingest every one of them again (as unchanged).
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

from cryptography.fernet import Fernet

from bench.engine_bench import cpu_count, load_average, max_rss_mb
from bench.sync_bench import CONTEXT, PER_DAY, TARGET_RATE, TIMEKEEPERS, history_rules
from connectors.efimis.fake import LEDES_CLIENT_IDS, TASK_TYPE_CODES, timekeeper_rows
from connectors.sources import registry
from connectors.sources.sync import sync
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus
from engine.workflows import rulesets, timekeepers

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "OCGATE_BENCH_EFIMIS_SECRET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=None,
                        help="the days the work is dated over, ending at the benchmark's as-of date (default: "
                             f"--count / {PER_DAY}, at least 31)")
    args = parser.parse_args()
    os.environ.setdefault("OCGATE_SECRET_KEY", Fernet.generate_key().decode())
    print(f"Efimis sync benchmark: {cpu_count()} cores, load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="ocgate-efimis-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'efimis.db'}"
        upgrade(url)
        sessions = session_factory(make_engine(url))
        with transaction(sessions) as session:
            rulesets.add_ruleset_version(session, history_rules(), status=RuleSetStatus.ACTIVE)
            table = TIMEKEEPERS.read_text().replace(",2025-01-01,", ",2020-01-01,") + timekeeper_rows()
            timekeepers.import_csv(session, table, source=str(TIMEKEEPERS))
        days = args.days or max(31, args.count // PER_DAY)
        start = CONTEXT.as_of - dt.timedelta(days=days)
        began = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "connectors.efimis.fake", "--port", "0", "--work-items", str(args.count),
             "--seed", "7", "--start", str(start), "--days", str(days)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            lines = []
            while not (line := server.stdout.readline()).startswith("Ctrl-C"):  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError("the fake Efimis did not start")
                lines.append(line)
            fake = json.loads("".join(lines))
            seeded = time.perf_counter() - began
            options = registry.Options(environ={SECRET_ENV: fake["client_secret"]})
            with transaction(sessions) as session:
                registry.configure(session, "efimis", kind="efimis", settings={
                    "base_url": fake["base_url"], "token_url": fake["token_url"], "tenant": fake["tenant"],
                    "client_id": fake["client_id"], "client_secret_env": SECRET_ENV, "currency": "GBP",
                    "period_from": start.isoformat(), "task_type_codes": TASK_TYPE_CODES,
                    "ledes_client_ids": LEDES_CLIENT_IDS, "overlap_minutes": 1 / 60})
            registry.connect(sessions, "efimis", options=options)
            report = sync(sessions, "efimis", options=options, context=CONTEXT)
            again = sync(sessions, "efimis", options=options, context=CONTEXT)
        finally:
            server.terminate()
            server.wait(timeout=10)
    rate = report.pulled / report.seconds
    print(f"1. sync of {args.count:,} work items, no latency, into SQLite: {report.seconds:.1f} s, {rate:,.0f} rows/s "
          f"read, {report.new / report.seconds:,.0f} entries/s stored (Clio's target {TARGET_RATE:,} entries/s)")
    print(f"   over {days:,} days; {report.new:,} entries (finalised or billed), {report.flagged:,} flagged, "
          f"{report.quality:,} with data-quality flags, {report.batches} committed batches; the fake in its own "
          f"process, seeded in {seeded:.1f} s (not counted); max RSS {max_rss_mb():.0f} MB")
    print(f"2. incremental sync with nothing changed: {again.seconds:.1f} s to read {again.pulled:,} rows "
          f"({again.new + again.changed + again.unchanged} mapped)")


if __name__ == "__main__":
    main()
