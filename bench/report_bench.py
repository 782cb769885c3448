"""The findings report over a year of a million stored entries, on SQLite and PostgreSQL.

Run with ``.venv/bin/python -m bench.report_bench [--count 1000000] [--no-pg] [--no-sqlite]``, or on databases that
``bench.backtest_bench --keep DIR`` seeded: ``--database URL`` (repeatable). It prints figures and asserts nothing:

- ``report, a year``: ``engine.workflows.reports.findings_report`` over the last 365 days of the data (target
  under 2 s), best and median of ``--repeat`` runs, and the JSON and CSV renderings of it;
- ``report, everything``: the same with no window;
- ``in Python``: the same breakdowns (by rule, client, matter, timekeeper, month) added up in Python from the
  findings' rows streamed out of the database, for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench.backtest_bench import DAYS, DEFAULT_PG_URL, START, databases, seed
from bench.engine_bench import cpu_count, load_average
from engine.store import migrations
from engine.store.db import make_engine, session_factory
from engine.store.models import EntryRow, EntryState, ViolationRow
from engine.workflows import reports

YEAR_END = START + dt.timedelta(days=DAYS - 1)
YEAR_START = YEAR_END - dt.timedelta(days=364)


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds), result


def in_python(sessions: Any, start: dt.date, end: dt.date) -> int:
    """The breakdowns added up in Python from streamed rows (what the report does in the database)."""
    counters: dict[str, Counter[Any]] = {dim: Counter() for dim in ("rule", "client", "matter", "timekeeper", "month")}
    rows = 0
    with sessions() as session:
        query = (select(ViolationRow.rule_id, EntryRow.ledes_client_id, EntryRow.law_firm_matter_id,
                        EntryRow.timekeeper_name, EntryRow.work_date)
                 .join(EntryRow, EntryRow.id == ViolationRow.entry_id)
                 .where(ViolationRow.current.is_(True), ViolationRow.rule_status == "active",
                        EntryRow.state != EntryState.WITHDRAWN, EntryRow.work_date >= start, EntryRow.work_date <= end)
                 .execution_options(yield_per=10_000))
        for rule_id, client, matter, timekeeper, work_date in session.execute(query):
            rows += 1
            counters["rule"][rule_id] += 1
            counters["client"][client] += 1
            counters["matter"][matter] += 1
            counters["timekeeper"][timekeeper] += 1
            counters["month"][work_date.isoformat()[:7]] += 1
    return rows


def fill_report_columns(url: str) -> float:
    """Copy the entries' columns onto the seeded violations (``bench.backtest_bench`` writes the rows in bulk,
    without them), as migration 0007 does for an existing store; the seconds it took."""
    path = Path(migrations.__file__).parent / "versions" / "0007_violation_report_columns.py"
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    engine = make_engine(url)
    with engine.begin() as connection:
        module.fill(connection)
    engine.dispose()
    return time.perf_counter() - started


def measure(label: str, url: str, repeat: int) -> None:
    engine = make_engine(url)
    sessions = session_factory(engine)
    print(f"{label}: load average {load_average()}")

    def year() -> reports.FindingsReport:
        with sessions() as session, session.begin():
            return reports.findings_report(session, start=YEAR_START, end=YEAR_END)

    def everything() -> reports.FindingsReport:
        with sessions() as session, session.begin():
            return reports.findings_report(session)

    best, median, report = timed(year, repeat)
    print(f"  report, a year ({YEAR_START} to {YEAR_END})  best {best:6.2f} s  median {median:6.2f} s   "
          f"{report.entries:,} entries, {report.findings:,} findings, {report.billed:,} billed "
          f"({report.clean:,} clean), {len(report.rejections)} rejection reasons   (target < 2 s)")
    started = time.perf_counter()
    reports.as_json(report)
    text = reports.as_csv(report)
    print(f"  rendering JSON and CSV              {time.perf_counter() - started:6.3f} s   "
          f"({len(text.splitlines()):,} CSV rows)")
    best, median, report = timed(everything, max(1, repeat // 2))
    print(f"  report, everything                  best {best:6.2f} s  median {median:6.2f} s   "
          f"{report.entries:,} entries, {report.findings:,} findings")
    started = time.perf_counter()
    rows = in_python(sessions, YEAR_START, YEAR_END)
    print(f"  in Python, a year (5 breakdowns)    {time.perf_counter() - started:6.2f} s   {rows:,} finding rows "
          "streamed and counted")
    print(f"  load average after: {load_average()}")
    engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="keep the seeded databases")
    parser.add_argument("--database", metavar="URL", action="append", default=[],
                        help="an already seeded database (bench.backtest_bench --keep); repeatable")
    args = parser.parse_args(argv)
    print(f"report bench: {cpu_count()} CPUs, load average {load_average()}")
    if args.database:
        for url in args.database:
            measure(make_url(url).get_backend_name(), url, args.repeat)
        return
    with databases(args) as made:
        seconds = seed([url for _, url in made], args.count)
        print(f"seeded {args.count:,} entries in {seconds:.0f} s (bulk, not measured)")
        for label, url in made:
            print(f"  {label}: the findings' entry columns filled in {fill_report_columns(url):.0f} s")
        for label, url in made:
            measure(label, url, args.repeat)


if __name__ == "__main__":
    main()
