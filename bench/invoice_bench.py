"""Invoice benchmark: one invoice of N lines built from the store, and a portal rejection of 1% of its lines.

    python -m bench.invoice_bench                      # 100,000 lines, SQLite and PostgreSQL
    python -m bench.invoice_bench --count 10000 --no-pg

The entries come from ``engine.samples.generate`` and are stored with no active rule set (so every entry is
ready; ingest and evaluation have their own benchmark). The client's profile takes several matters per
invoice, so all N entries land on one invoice. Timed, each on a fresh database:

* ``build``: ``invoices.build`` end to end: reading and validating the N entries, computing each line,
  checking and writing the LEDES file, locking the entries (guarded UPDATEs), storing the lines and the audit
  trail, commit included;
* ``apply 1% rejections``: ``rejections.apply_rejections`` for N/100 rejected lines, with a proposal per
  entry (each evaluates the client's rule set on the entry), commit included.

Figures only; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import resource
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from engine.samples import generate
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus
from engine.workflows.billing import invoices
from engine.workflows.billing.destinations import Rejection
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version

RULES = Path(__file__).resolve().parents[1] / "rules" / "acme-corp.yaml"
PROFILE = "\ninvoicing:\n  multiple_matters: true\n"


def _ruleset_text() -> str:
    import re

    body = re.sub(r"\ninvoicing:\n(  .*\n)+", "\n", RULES.read_text())
    return body + PROFILE


def run(url: str, count: int, label: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    entries = list(generate(count, seed=11, timekeepers=max(12, count // 120)))
    with transaction(sessions) as session:
        ingest(session, entries, actor="bench", source="bench")  # nothing active yet: every entry is ready
        version = add_ruleset_version(session, _ruleset_text(), status=RuleSetStatus.DRAFT)
        version.status = RuleSetStatus.ACTIVE  # active for the invoice profile, after ingest
    del entries
    gc.collect()
    request = invoices.BuildRequest(client_id="ACME01", period_start=dt.date(2026, 1, 1),
                                    period_end=dt.date(2026, 12, 31), invoice_date=dt.date(2026, 4, 6))
    started = time.perf_counter()
    with transaction(sessions) as session:
        invoice = invoices.build(session, request, actor="bench")
        lines, total, size = invoice.line_count, invoice.total, len(invoice.content)
        invoice_id = invoice.id
    build_s = time.perf_counter() - started
    rejections = [Rejection(id=f"r{n}", line_number=n, reason="Fee - Excessive time")
                  for n in range(1, lines + 1, 100)]
    started = time.perf_counter()
    with transaction(sessions) as session:
        applied = rejections.apply_rejections(session, invoices.get(session, invoice_id), rejections, actor="bench")
        sent_back = len(applied)
    reject_s = time.perf_counter() - started
    print(f"{label:<10} build    {build_s:8.3f} s  {lines / build_s:>9,.0f} lines/s  ({lines:,} lines, total "
          f"{total:,}, file {size / 1e6:.1f} MB)")
    print(f"{label:<10} reject   {reject_s:8.3f} s  {sent_back / reject_s:>9,.0f} rejections/s  ({sent_back:,} "
          "entries back in the queue, one proposal each)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg-url", default=os.environ.get("OCGATE_TEST_PG_URL",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    print(f"Invoice benchmark: {args.count:,} entries on one invoice, Python {platform.python_version()}, "
          f"CPUs {os.cpu_count()}")
    folder = Path("bench/out")
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / f"invoice-{uuid.uuid4().hex[:8]}.db"
    try:
        run(f"sqlite:///{database}", args.count, "sqlite")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    if not args.no_pg:
        name = f"ocgate_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(args.pg_url.rsplit("/", 1)[0] + f"/{name}", args.count, "postgresql")
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
