"""Throughput and memory of ``engine.workflows.intake.ingest`` (upsert + evaluate + record) into SQLite and PostgreSQL.

Run with ``.venv/bin/python -m bench.store_bench [--count N] [--pg-url URL]``. It prints figures only:
nothing here passes or fails. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from bench.engine_bench import cpu_count, current_rss_mb, fmt_mb, load_average, max_rss_mb
from engine.model import Entry
from engine.rules.backends import resolve_backend
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.samples import firm, generate
from engine.store.db import current_revision, database_url, make_engine, session_factory, transaction, upgrade
from engine.store.models import EntryRow, Evaluation, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows.intake import CircuitBreaker, IngestResult, ingest
from engine.workflows.rulesets import add_ruleset_version

RULES = Path(__file__).resolve().parent.parent / "rules" / "acme-corp.yaml"
SEED = 11
CONTEXT = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1),
                            period_end=dt.date(2026, 3, 31))
TARGET_SQLITE = 5_000  # first ingest of 100k entries into SQLite, entries per second (issue target)
NEVER_TRIPS = CircuitBreaker(share=1.0, minimum=1 << 62)  # the bench measures the store, not the breaker
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MB = 1024 * 1024


@dataclass
class Run:
    """One ``ingest`` call in its own transaction: seconds in ``ingest`` and in the commit."""

    label: str
    count: int
    ingest_seconds: float
    commit_seconds: float
    result: IngestResult
    full_gcs: int
    peak_mb: float | None = None  # tracemalloc peak, only for the traced run

    @property
    def seconds(self) -> float:
        return self.ingest_seconds + self.commit_seconds

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else float("inf")


@dataclass
class Database:
    name: str
    runs: list[Run] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    max_rss_mb: float = 0.0
    skipped: str | None = None


# Databases ---------------------------------------------------------------------------------------

@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    path = folder / f"ocgate_bench_{uuid.uuid4().hex[:8]}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database ``ocgate_bench_<random>`` on the server of ``admin_url``, dropped afterwards."""
    name = f"ocgate_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(database_url(admin_url)).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


APPROVED_LINE = ("  approved_timekeepers: [TK1001, TK1002, TK1003, TK1004, TK1005, TK1006, TK1007, TK1008, TK1009, "
                 "TK1010]")


def rules_text(timekeepers: int) -> str:
    """The Acme rule set with the whole generated firm on its approved staffing list (a firm billing this
    volume has that many approved timekeepers; without it nearly every entry would be an unknown one)."""
    text = RULES.read_text(encoding="utf-8")
    if APPROVED_LINE not in text:
        raise SystemExit("rules/acme-corp.yaml changed: update APPROVED_LINE in bench/store_bench.py")
    staff = [tk for tk, _, _, _ in firm(timekeepers)[:10]] + [tk for tk, _, _, _ in firm(timekeepers)[12:]]
    return text.replace(APPROVED_LINE, f"  approved_timekeepers: [{', '.join(staff)}]")


RULES_TEXT = ""  # set in main(): rules_text() for this run's firm


@contextmanager
def prepared(url: str) -> Iterator[sessionmaker[Session]]:
    """The schema and the Acme rule set (active) in the database at ``url``; its sessions."""
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            add_ruleset_version(session, RULES_TEXT, source=str(RULES), created_by="bench",
                                status=RuleSetStatus.ACTIVE)
        yield sessions
    finally:
        engine.dispose()


# Measuring ---------------------------------------------------------------------------------------

@contextmanager
def full_gc_counter() -> Iterator[list[int]]:
    """After a full collection: counts the full (generation-2) collections run inside the block."""
    gc.collect()
    passes = [0]

    def count_full(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            passes[0] += 1

    gc.callbacks.append(count_full)
    try:
        yield passes
    finally:
        gc.callbacks.remove(count_full)


def ingest_once(sessions: sessionmaker[Session], entries: Sequence[Entry], label: str, backend: str,
                traced: bool = False) -> Run:
    """``ingest`` in one transaction, timed with its commit (the garbage collector stays on, as in production)."""
    with full_gc_counter() as passes:
        if traced:
            tracemalloc.start()
        try:
            with sessions() as session:
                transaction = session.begin()
                start = time.perf_counter()
                result = ingest(session, entries, source="bench", context=CONTEXT, backend=backend,
                                breaker=NEVER_TRIPS)
                middle = time.perf_counter()
                transaction.commit()
                end = time.perf_counter()
            peak = tracemalloc.get_traced_memory()[1] / MB if traced else None
        finally:
            if traced:
                tracemalloc.stop()
    return Run(label, len(entries), middle - start, end - middle, result, passes[0], peak)


def row_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {name: session.scalar(select(func.count()).select_from(model)) or 0
                for name, model in (("entries", EntryRow), ("evaluations", Evaluation),
                                    ("violations", ViolationRow), ("review actions", ReviewAction))}


def describe(result: IngestResult) -> str:
    text = (f"created {result.created:,}, updated {result.updated:,}, unchanged {result.unchanged:,}, "
            f"evaluated {result.evaluated:,}: ready {result.ready:,}, in review {result.in_review:,}, "
            f"held {result.held:,}")
    if result.held_rulesets:
        text += "; CIRCUIT BREAKER TRIPPED: " + ", ".join(f"{h['ruleset_id']} {h['flagged']}/{h['checked']}"
                                                          for h in result.held_rulesets)
    return text


def bench_database(name: str, databases: Callable[[], AbstractContextManager[str]], entries: Sequence[Entry],
                   backend: str, memory: bool, evaluate_seconds: float) -> Database:
    """First ingest (all new) and second ingest (all unchanged) into a fresh database; then, in another
    fresh database, the first ingest again under tracemalloc (which slows it down: not timed)."""
    out = Database(name)
    with databases() as url, prepared(url) as sessions:
        print(f"[{name}] fresh database at schema revision {current_revision(url)}")
        first = ingest_once(sessions, entries, "first ingest (all new)", backend)
        print(f"[{name}] {first.label}: {first.seconds:.2f} s (ingest {first.ingest_seconds:.2f} + commit "
              f"{first.commit_seconds:.2f}) = {first.rate:,.0f} entries/s, of which evaluate() alone takes "
              f"~{evaluate_seconds:.2f} s; {describe(first.result)}; full GC passes {first.full_gcs}; RSS now "
              f"{fmt_mb(current_rss_mb())}, max RSS {fmt_mb(max_rss_mb())}")
        out.runs.append(first)
        second = ingest_once(sessions, entries, "second ingest (all unchanged)", backend)
        print(f"[{name}] {second.label}: {second.seconds:.2f} s (ingest {second.ingest_seconds:.2f} + commit "
              f"{second.commit_seconds:.2f}) = {second.rate:,.0f} entries/s; {describe(second.result)}")
        out.runs.append(second)
        out.rows = row_counts(sessions)
        print(f"[{name}] rows: " + ", ".join(f"{k} {v:,}" for k, v in out.rows.items()))
    out.max_rss_mb = max_rss_mb()
    if memory:
        with databases() as url, prepared(url) as sessions:
            traced = ingest_once(sessions, entries, "first ingest under tracemalloc", backend, traced=True)
        print(f"[{name}] {traced.label}: Python-heap peak {traced.peak_mb:,.1f} MB ({traced.seconds:.2f} s, "
              f"slowed by tracing); max RSS now {fmt_mb(max_rss_mb())}")
        out.runs.append(traced)
    return out


def print_table(results: Sequence[Database], evaluate_seconds: float, count: int) -> None:
    header = ("database", "phase", "seconds", "entries/s", "target", "heap peak", "max RSS")
    table: list[tuple[str, ...]] = [("-", "evaluate() alone, no store", f"{evaluate_seconds:.2f}",
                                     f"{count / evaluate_seconds:,.0f}", "", "", "")]
    for db in results:
        if db.skipped:
            table.append((db.name, f"skipped ({db.skipped})", "", "", "", "", ""))
            continue
        for run in db.runs:
            if run.peak_mb is not None:
                table.append((db.name, "first ingest, traced", "", "", "", f"{run.peak_mb:,.1f} MB", ""))
                continue
            first = run is db.runs[0]
            target = f">= {TARGET_SQLITE:,}" if db.name == "sqlite" and first else ""
            table.append((db.name, run.label, f"{run.seconds:.2f}", f"{run.rate:,.0f}", target, "",
                          fmt_mb(db.max_rss_mb) if first else ""))
    widths = [max(len(header[i]), *(len(r[i]) for r in table)) for i in range(len(header))]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


# The benchmark -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="entries to generate (default 100000)")
    parser.add_argument("--pg-url", default=os.environ.get("OCGATE_BENCH_PG_URL", DEFAULT_PG_URL),
                        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE of a scratch database "
                             f"ocgate_bench_<random> (default $OCGATE_BENCH_PG_URL, else {DEFAULT_PG_URL})")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs (the slowest part)")
    parser.add_argument("--backend", default="auto", help="evaluation backend passed to ingest (default auto)")
    parser.add_argument("--sqlite-dir", type=Path, default=None,
                        help="folder for the scratch SQLite files (default: a temporary folder)")
    args = parser.parse_args(argv)
    backend = resolve_backend(args.backend)
    # Killed: leave through the finally blocks, which delete the scratch databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timekeepers = max(12, args.count // 120)  # ~4 entries per timekeeper-day: few daily-cap findings
    global RULES_TEXT
    RULES_TEXT = rules_text(timekeepers)

    print(f"ocgate store benchmark: {args.count:,} entries (seed {SEED}, {timekeepers} timekeepers), rules "
          f"{RULES.name}, evaluation backend {backend}")
    print(f"Python {platform.python_version()} on {platform.platform()}; CPUs: {cpu_count()}; load average "
          f"(1, 5, 15 min): {load_average()}; max RSS at start: {fmt_mb(max_rss_mb())}")

    start = time.perf_counter()
    entries = list(generate(args.count, seed=SEED, timekeepers=timekeepers))
    seconds = time.perf_counter() - start
    print(f"[generate] {len(entries):,} entries in {seconds:.2f} s (not part of any figure); RSS now "
          f"{fmt_mb(current_rss_mb())}")
    with full_gc_counter():
        start = time.perf_counter()
        violations = evaluate(entries, load_text(RULES_TEXT, str(RULES)), context=CONTEXT, backend=backend)
        evaluate_seconds = time.perf_counter() - start
    print(f"[evaluate] evaluate() alone, same entries and backend, no store: {evaluate_seconds:.2f} s = "
          f"{len(entries) / evaluate_seconds:,.0f} entries/s; {len(violations):,} violations")
    del violations
    print()

    results: list[Database] = []
    with tempfile.TemporaryDirectory(prefix="ocgate_bench_", dir=args.sqlite_dir) as folder:
        results.append(bench_database("sqlite", lambda: sqlite_database(Path(folder)), entries, backend,
                                      not args.no_memory, evaluate_seconds))
    print()
    if args.no_pg:
        results.append(Database("postgresql", skipped="--no-pg"))
    else:
        shown = make_url(database_url(args.pg_url)).render_as_string()  # without the password
        probe = create_engine(database_url(args.pg_url))
        try:
            with probe.connect() as connection:
                server = connection.execute(text("SHOW server_version")).scalar()
        except Exception as exc:  # not running, refused, bad URL
            results.append(Database("postgresql", skipped=f"not reachable: {str(exc).splitlines()[0]}"))
            print(f"[postgresql] {shown}: skipped, {results[-1].skipped}")
        else:
            print(f"[postgresql] server {server} at {shown}")
            results.append(bench_database("postgresql", lambda: postgres_database(args.pg_url), entries, backend,
                                          not args.no_memory, evaluate_seconds))
        finally:
            probe.dispose()
    print()

    print(f"Summary: {len(entries):,} entries, backend {backend}, Python {platform.python_version()}, "
          f"CPUs {cpu_count()}, load average now {load_average()}")
    print_table(results, evaluate_seconds, len(entries))
    tripped = sorted({db.name for db in results for run in db.runs if run.result.held_rulesets})
    print("circuit breaker: " + (f"TRIPPED in {', '.join(tripped)}" if tripped else "did not trip")
          + "; max RSS is the process peak (ru_maxrss) after the untraced runs, the generated entries included")


if __name__ == "__main__":
    main()
