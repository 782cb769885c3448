"""Syncing from mattero: a large All Costs export read through the source into a fresh SQLite database.

Run with ``.venv/bin/python -m bench.mattero_bench [--rows N]``. It prints figures only: nothing here passes or
fails.

1. ``--rows`` costs (default 100,000) written by the fake mattero (on loopback, in a thread of this process) as one
   All Costs CSV export, then ``sync`` of the source end to end: the file hashed and read through the built-in
   mapping, matters and staff read from the fake's API and each entry enriched, the firm's timekeeper table applied,
   judged against the Acme rule set, stored and committed with the cursor, with the source read in a second process
   as ``ocgate sync`` does. Figure: entries stored per second.
2. The sync right after it, with no new export: what a scheduled sync costs when nothing was dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from connectors.mattero.fake import STAFF, running_fake_mattero
from connectors.sources import registry
from connectors.sources.sync import sync
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus
from engine.workflows import rulesets, timekeepers

REPO = Path(__file__).resolve().parent.parent
KEY_ENV = "OCGATE_BENCH_MATTERO_KEY"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-day", type=int, default=36,
                        help="costs a day across the firm's 6 staff (default 36: 6 each, as a busy firm records)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OCGATE_SECRET_KEY", Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory() as folder, running_fake_mattero(records=0) as fake:
        # Spread over as many days as a firm takes to record them: piling 100,000 costs on 28 days would put
        # hundreds on each staff member's day, and the daily-cap rule judges a day's entries together.
        days = max(1, args.rows // args.per_day)
        fake.state.seed_records(args.rows, seed=1, start=dt.date(2026, 11, 30) - dt.timedelta(days=days), days=days)
        exports = Path(folder) / "exports"
        exports.mkdir()
        started = time.perf_counter()
        export = fake.state.write_export(exports / "all-costs.csv")
        print(f"export: {args.rows:,} rows over {days:,} days, {export.stat().st_size / 1e6:.1f} MB, written in "
              f"{time.perf_counter() - started:.1f} s")
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        sessions = session_factory(make_engine(url))
        table = ["ledes_id,first_name,last_name,title,classification,source_system,source_user_id,rate,currency,"
                 "effective_from,effective_to"]
        table += [f"MT{i.split('-')[0]},{first},{last},Associate,,mattero,{i},,,," for i, first, last, _ in STAFF]
        with transaction(sessions) as session:
            registry.configure(session, "mattero", kind="mattero", settings={
                "base_url": fake.api_url, "api_key_env": KEY_ENV, "export_dir": str(exports)})
            timekeepers.import_csv(session, "\n".join(table) + "\n", source="bench")
            rulesets.add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(),
                                         status=RuleSetStatus.ACTIVE)
        options = registry.Options(environ={KEY_ENV: fake.api_key})
        report = sync(sessions, "mattero", options=options)
        print(f"sync: {report.pulled:,} rows, {report.new:,} entries stored in {report.seconds:.1f} s: "
              f"{report.new / report.seconds:,.0f} entries/s ({report.batches} batches, "
              f"{report.quality:,} with data-quality flags, {report.flagged:,} to review)")
        again = sync(sessions, "mattero", options=options)
        print(f"sync with no new export: {again.pulled} rows in {again.seconds * 1000:.0f} ms")
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
