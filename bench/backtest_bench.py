"""Backtests over a million stored entries, on SQLite and PostgreSQL: time and peak memory.

Run with ``.venv/bin/python -m bench.backtest_bench [--count 1000000] [--no-pg] [--no-sqlite] [--keep DIR]``. It
prints figures and asserts nothing. For each database it:

1. seeds a fresh database in bulk (not what is measured): ``count`` generated entries over two years with the
   Acme rule set active, each entry's evaluation and findings as intake records them (evaluated with the engine
   in chunks of 20,000, so a day split between two chunks has its daily aggregates judged per part), older
   entries invoiced (clean, or approved), some adjusted by a reviewer, some refused by a portal (the findings
   report reads these);
2. in a child process each (so each peak RSS is the backtest's own), times:
   (a) a draft that lowers one rate cap and adds one narrative rule, against the active version, over every
       entry; (b) a brand-new rule set (another id: nothing stored to reuse), over every entry; (c) a draft that
       adds a monthly budget per matter and an attendance limit (read in full, a matter at a time);
   (naive) the backtest as it was before: every record read as an Entry, both versions evaluated whole,
       on the first ``--naive`` entries and extrapolated to ``count``.

``--keep DIR`` leaves the SQLite file in DIR and the PostgreSQL database in place and prints their URLs, so that
``bench.report_bench --database URL`` can reuse them; ``--database URL`` measures an already seeded database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.engine_bench import cpu_count, load_average, max_rss_mb
from bench.store_bench import rules_text
from engine.entry_io import entry_record
from engine.model import Entry
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.samples import generate
from engine.store.db import database_url, make_engine, session_factory, transaction, upgrade
from engine.store.models import RuleSetStatus
from engine.workflows.intake import _columns as intake_columns
from engine.workflows.intake import facts as intake_facts
from engine.workflows.intake import source_version
from engine.workflows.rulesets import add_ruleset_version

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = os.environ.get("OCGATE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START, DAYS = dt.date(2025, 7, 1), 730
AS_OF = START + dt.timedelta(days=DAYS + 5)
CONTEXT = EvaluationContext(as_of=AS_OF)
CHUNK = 20_000
REASONS = [("RATE", "Rate exceeds approved rate"), ("VAGUE", "Vague description"), ("BLOCK", "Block billing"),
           ("DUP", "Duplicate charge")]


# Seeding --------------------------------------------------------------------------------------------------------

def timekeepers(count: int) -> int:
    """About four entries per timekeeper and working day over the two years."""
    return max(12, count // (DAYS * 4))


@contextmanager
def databases(args: argparse.Namespace) -> Iterator[list[tuple[str, str]]]:
    """Fresh databases (name, URL), dropped afterwards unless ``--keep``."""
    made: list[tuple[str, str]] = []
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ocgate_backtest_"))
    admin = None
    try:
        if not args.no_sqlite:
            made.append(("SQLite", f"sqlite:///{folder / f'ocgate_backtest_{uuid.uuid4().hex[:8]}.db'}"))
        if not args.no_pg:
            name = f"ocgate_bench_{uuid.uuid4().hex[:12]}"
            admin = create_engine(database_url(args.pg_url), isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as connection:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                made.append(("PostgreSQL", make_url(database_url(args.pg_url)).set(database=name)
                             .render_as_string(hide_password=False)))
            except Exception as exc:  # no server
                print(f"PostgreSQL: not reachable ({type(exc).__name__}); skipped")
        yield made
    finally:
        if not args.keep:
            for label, url in made:
                if label == "SQLite":
                    path = make_url(url).database or ""
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
                elif admin is not None:
                    with admin.connect() as connection:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        if admin is not None:
            admin.dispose()


def seed(urls: Sequence[str], count: int) -> float:
    """Fill every database at ``urls`` with the same entries, evaluations, findings and review history."""
    started = time.perf_counter()
    rules = rules_text(timekeepers(count))
    ruleset = load_text(rules, "acme-corp.yaml")
    writers = []
    for url in urls:
        upgrade(url)
        engine = make_engine(url)
        with transaction(session_factory(engine)) as session:
            version = add_ruleset_version(session, rules, created_by="bench", status=RuleSetStatus.ACTIVE)
            version_id, revision = version.id, version.revision
        engine.dispose()
        writers.append(_Writer(url, version_id))
    rng = random.Random(3)
    now = dt.datetime.now(dt.UTC)
    billed_before = START + dt.timedelta(days=DAYS - 60)
    stream = generate(count, seed=11, start=START, days=DAYS, timekeepers=timekeepers(count))
    next_id = 1
    while True:
        chunk = [e for _, e in zip(range(CHUNK), stream, strict=False)]
        if not chunk:
            break
        found: dict[int, list[Any]] = {}
        for v in evaluate(chunk, ruleset, context=CONTEXT, backend="python"):
            found.setdefault(v.entry_index, []).append(v)
        entries, evaluations, violations, actions, rejections = [], [], [], [], []
        for k, entry in enumerate(chunk):
            entry_id = next_id + k
            record = entry_record(entry)
            vs = found.get(k, [])
            flagged = any(v.rule_status == "active" for v in vs)
            # Billed: older entries, clean or (most of the flagged ones) approved by a reviewer.
            billed = entry.work_date < billed_before and (not flagged or rng.random() < 0.7)
            state = "invoiced" if billed else "in_review" if flagged else "ready"
            entries.append((entry_id, entry, record, state, flagged))
            evaluations.append((entry_id, entry_id, source_version(entry, record), flagged))
            for v in vs:
                violations.append((entry_id, entry_id, ruleset.id, revision, v.rule_id, v.rule_type, v.severity,
                                   v.rule_status, v.title, v.message,
                                   orjson.dumps([ev.as_dict() for ev in v.evidence]).decode(),
                                   orjson.dumps(v.adjustment.as_dict() if v.adjustment else None).decode(),
                                   orjson.dumps(v.contributing).decode(), orjson.dumps(v.references).decode()))
            if flagged and rng.random() < 0.05:
                amount = -Decimal(rng.randint(100, 50_000)) / 100
                actions.append((entry_id, "adjust", "key:reviewer", now,
                                orjson.dumps({"write_down": str(amount)}).decode()))
            if state == "invoiced" and rng.random() < 0.004:
                code, reason = rng.choice(REASONS)
                rejections.append((f"R{entry_id}", entry_id, "rejected", reason, code,
                                   Decimal(rng.randint(1000, 200_000)) / 100, now))
        for writer in writers:
            writer.write(entries, evaluations, violations, actions, rejections, now)
        next_id += len(chunk)
        print(f"  seeded {next_id - 1:,} entries ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)
    for writer in writers:
        writer.close(next_id - 1)
    return time.perf_counter() - started


# The entries' columns are the ones intake writes (engine.workflows.intake._columns), in this order.
ENTRY_HEAD = ("id", "entry_uid")
ENTRY_TAIL = ("state", "worst_severity", "version", "created_at", "updated_at")
JSON_COLUMNS = frozenset({"record", "data_quality_flags"})
EVALUATION_COLUMNS = ("id, entry_id, entry_version, source_version, ruleset_version_id, evaluated_at, flagged, held, "
                      "current")
VIOLATION_COLUMNS = ("evaluation_id, entry_id, ruleset_id, ruleset_revision, rule_id, rule_type, severity, "
                     "rule_status, title, message, evidence, adjustment, contributing, \"references\", current")
ACTION_COLUMNS = "entry_id, action, actor, at, after"
REJECTION_COLUMNS = "invoice_id, rejection_id, entry_id, kind, reason, reason_code, amount, received_at"


def _sqlite_time(value: dt.datetime) -> str:
    """A UTC timestamp as SQLAlchemy keeps it in SQLite."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class _Writer:
    """Bulk rows into one database: executemany on SQLite, COPY on PostgreSQL."""

    def __init__(self, url: str, version_id: int) -> None:
        self.url, self.version_id = url, version_id
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        else:
            self.conn = sqlite3.connect(make_url(url).database or "")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")
        now = dt.datetime.now(dt.UTC)
        invoice = ("INSERT INTO invoices (id, number, client_id, matters, format, currency, invoice_date, "
                   "period_start, period_end, status, total, fees_total, expenses_total, adjustments_total, "
                   "line_count, content, sha256, profile, notes, created_by, created_at) VALUES ")
        values = (1, "BENCH000001", "ACME01", "[]", "1998b", "USD", START, START, START, "submitted", "0", "0", "0",
                  "0", 0, "", "0" * 64, "{}", "[]", "bench", now)
        if self.postgres:
            self.conn.execute(invoice + "(" + ", ".join(["%s"] * len(values)) + ")", values)
        else:
            self.conn.execute(invoice + "(" + ", ".join(["?"] * len(values)) + ")",
                                tuple(_sqlite_time(v) if isinstance(v, dt.datetime) else v.isoformat()
                                    if isinstance(v, dt.date) else v for v in values))

    def write(self, entries: list[Any], evaluations: list[Any], violations: list[Any], actions: list[Any],
              rejections: list[Any], now: dt.datetime) -> None:
        entry_rows = []
        names: tuple[str, ...] = ()
        for entry_id, e, record, state, flagged in entries:
            columns = intake_columns(e, record, source_version(e, record))
            names = (*ENTRY_HEAD, *columns, *ENTRY_TAIL)
            values = [entry_id, e.entry_uid, *[self._value(k, v) for k, v in columns.items()], state,
                      "error" if flagged else None, 1, self._value("", now), self._value("", now)]
            entry_rows.append(tuple(values))
        entry_columns = ", ".join(names)
        fact_rows = []
        fact_names: tuple[str, ...] = ()
        for entry_id, e, _, state, _ in entries:
            row = intake_facts(e, entry_id, state)
            fact_names = tuple(row)
            fact_rows.append(tuple(self._value(k, v) for k, v in row.items()))
        evaluation_rows = [(i, entry_id, 1, version, self.version_id, now if self.postgres else _sqlite_time(now),
                            flagged, False, True) for i, entry_id, version, flagged in evaluations]
        violation_rows = [(*v, True) for v in violations]
        action_rows = [(entry_id, action, actor, at if self.postgres else _sqlite_time(at), after)
                       for entry_id, action, actor, at, after in actions]
        rejection_rows = [(1, rid, entry_id, kind, reason, code, amount if self.postgres else str(amount),
                           at if self.postgres else _sqlite_time(at))
                          for rid, entry_id, kind, reason, code, amount, at in rejections]
        tables = (("entries", entry_columns, entry_rows), ("entry_facts", ", ".join(fact_names), fact_rows),
                  ("evaluations", EVALUATION_COLUMNS, evaluation_rows),
                  ("violations", VIOLATION_COLUMNS, violation_rows), ("review_actions", ACTION_COLUMNS, action_rows),
                  ("portal_rejections", REJECTION_COLUMNS, rejection_rows))
        for table, columns, rows in tables:
            if not rows:
                continue
            if self.postgres:
                with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" * len(rows[0]))
                self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        self.conn.commit()

    def _value(self, name: str, value: Any) -> Any:
        """A column's value as the database takes it in bulk (SQLite: decimals, dates and times as SQLAlchemy
        keeps them there)."""
        if name in JSON_COLUMNS:
            return None if value is None else orjson.dumps(value).decode()
        if self.postgres or value is None:
            return value
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dt.datetime):
            return _sqlite_time(value)
        if isinstance(value, dt.date):
            return value.isoformat()
        return value

    def close(self, last_id: int) -> None:
        if self.postgres:
            for table in ("entries", "evaluations"):
                self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (last_id,))
            self.conn.commit()
            self.conn.autocommit = True
            self.conn.execute("VACUUM ANALYZE")
        else:
            self.conn.execute("ANALYZE")
            self.conn.commit()
        self.conn.close()


# Drafts -------------------------------------------------------------------------------------------------------

def draft_one_cap_one_narrative(active_text: str) -> str:
    """The active rules with the partner cap of the current rate schedule lowered by 50 and one narrative rule
    added."""
    doc = yaml.safe_load(active_text)
    rate = next(r for r in doc["rules"] if r["type"] == "rate_cap")
    params = rate["params"]
    caps = params["schedule"][-1]["by_classification"] if "schedule" in params else params["by_classification"]
    caps["PARTNR"] = caps["PARTNR"] - 50
    doc["rules"].append({"id": "ACME-NARR-900", "title": "Internal conference billed", "type": "narrative",
                         "severity": "warning", "params": {"forbidden_phrases": ["conference", "call with"]}})
    return yaml.safe_dump(doc, sort_keys=False)


def staffing_and_budgets(active_text: str) -> str:
    """The active rules plus a monthly fee budget per matter and an attendance limit: rules over a matter's
    history, which the backtest reads in full, a matter at a time."""
    doc = yaml.safe_load(active_text)
    doc["rules"] += [
        {"id": "ACME-BUDGET-900", "title": "Monthly fees per matter", "type": "budget", "severity": "warning",
         "params": {"warn_at": 0.9, "budgets": [{"per": "month", "amount": 40000}]}},
        {"id": "ACME-STAFF-900", "title": "Two timekeepers per event", "type": "attendance_limit",
         "severity": "warning", "params": {"max_timekeepers": 2, "activity_codes": ["A103", "A105", "A109"],
                                           "events": ["conference", "deposition", "hearing", "trial"]}}]
    return yaml.safe_dump(doc, sort_keys=False)


def brand_new(active_text: str) -> str:
    doc = yaml.safe_load(active_text)
    doc["id"] = "acme-corp-ocg-next"
    return yaml.safe_dump(doc, sort_keys=False)


# Measuring, in a child process -----------------------------------------------------------------------------------

def measure(url: str, mode: str, limit: int) -> dict[str, Any]:
    """One backtest in this (fresh) process: seconds, peak RSS, and what it found."""
    from sqlalchemy import select

    from engine.store.models import EntryRow, EntryState, RuleSetVersion
    from engine.workflows import backtest as backtests
    from engine.workflows.rulesets import load_version

    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        active = session.scalar(select(RuleSetVersion).where(RuleSetVersion.status == RuleSetStatus.ACTIVE))
        assert active is not None
        drafts = {"new": brand_new, "staffing": staffing_and_budgets}
        text_ = drafts.get(mode, draft_one_cap_one_narrative)(active.yaml_text)
        draft_id = add_ruleset_version(session, text_, created_by="bench").id
    before = max_rss_mb()
    started = time.perf_counter()
    with sessions() as session, session.begin():
        if mode == "naive":
            draft = session.get(RuleSetVersion, draft_id)
            stored = [Entry.model_validate(r) for r in session.scalars(
                select(EntryRow.record).where(EntryRow.state != EntryState.WITHDRAWN).order_by(EntryRow.id)
                .limit(limit))]
            flags = []
            for version in (draft, active):
                flags.append({(v.entry_uid, v.rule_id) for v in evaluate(stored, load_version(version),
                                                                         context=CONTEXT, backend="python")
                              if v.rule_status == "active"})
            found = {"entries": len(stored), "newly_flagged": len(flags[0] - flags[1]),
                     "no_longer_flagged": len(flags[1] - flags[0])}
        else:
            result = backtests.backtest(session, draft_id, context=CONTEXT)
            found = {"entries": result.entries_checked, "newly_flagged": sum(result.newly_flagged.values()),
                     "no_longer_flagged": sum(result.no_longer_flagged.values()),
                     "rules_evaluated": len(result.rules), "findings_reused": result.findings_reused,
                     "read_in_full": result.entries_read_in_full}
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "max_rss_mb": max_rss_mb(), "rss_before_mb": before, **found}


def child(url: str, mode: str, limit: int = 0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.backtest_bench", "--measure", url, "--mode", mode,
                          "--naive", str(limit)], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(label: str, url: str, count: int, naive: int) -> None:
    print(f"{label}: load average {load_average()}")
    rows = [("(a) one rate cap + one narrative rule", child(url, "draft")),
            ("(b) brand-new rule set, nothing stored", child(url, "new")),
            ("(c) a budget and an attendance limit added", child(url, "staffing")),
            (f"naive, first {naive:,} entries", child(url, "naive", naive))]
    for name, r in rows:
        if "error" in r:
            print(f"  {name:<42} failed: {r['error']}")
            continue
        line = (f"  {name:<42} {r['seconds']:7.1f} s   peak RSS {r['max_rss_mb']:6.0f} MB   entries {r['entries']:,}, "
                f"newly flagged {r['newly_flagged']:,}, no longer {r['no_longer_flagged']:,}")
        if "findings_reused" in r:
            line += (f"; {r['rules_evaluated']} rules evaluated, findings reused for {r['findings_reused']:,}, "
                     f"read in full {r['read_in_full']:,}")
        print(line)
        if name.startswith("naive") and r["entries"]:
            print(f"  {'naive, extrapolated to ' + format(count, ',') + ' entries':<42} "
                  f"{r['seconds'] * count / r['entries']:7.1f} s   (linear in entries; its memory grows with them too)")
    print(f"  load average after: {load_average()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backtest_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--naive", type=int, default=100_000, help="entries the naive backtest is measured on")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="keep the seeded databases (the SQLite file in DIR)")
    parser.add_argument("--database", metavar="URL", action="append", default=[],
                        help="measure this already seeded database (repeatable) instead of seeding")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="draft", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode, args.naive)))
        return
    print(f"backtest bench: {args.count:,} entries, {cpu_count()} CPUs, load average {load_average()}")
    if args.database:
        for url in args.database:
            report(make_url(url).get_backend_name(), url, args.count, args.naive)
        return
    with databases(args) as made:
        seconds = seed([url for _, url in made], args.count)
        print(f"seeded {', '.join(label for label, _ in made)} with {args.count:,} entries in {seconds:.0f} s "
              "(bulk, not measured)")
        for label, url in made:
            report(label, url, args.count, args.naive)
            if args.keep:
                print(f"  kept: {url}")


if __name__ == "__main__":
    main()
