"""Importing a spreadsheet export through a mapping: a CSV and an ``.xlsx`` of mattero's "All Costs" layout.

Run with ``.venv/bin/python -m bench.mapping_bench [--rows N]``. It prints figures only: nothing here passes or
fails. For each file (``--rows`` rows, default 100,000, in the built-in ``mattero-all-costs`` mapping's layout,
AU conventions: ``$1,234.50``, ``dd/mm/yyyy``, minutes and 6-minute units):

The workbook is measured twice: as openpyxl writes it (every text cell an inline string, slow to parse) and
with its text in a shared string table, as Excel saves a workbook.

1. reading and mapping alone (``engine.mapping.read_mapped``: decode, split, convert every cell, build and
   validate each canonical entry), best of ``--repeat`` runs: rows per second;
2. ``ocgate ingest FILE --mapping mattero-all-costs`` end to end, as a subprocess, into a fresh SQLite database
   with a small active rule set (hours per entry, hours per day, duplicates): read, map, judge, store, commit.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from decimal import Decimal
from pathlib import Path

from bench.engine_bench import cpu_count, load_average, max_rss_mb
from engine.mapping import load_mapping, read_mapped

HEADER = ["Date", "Matter Number", "Matter Title", "Staff", "Cost Type", "Cost Code", "Description", "Minutes",
          "Units", "Rate", "Amount (ex GST)", "GST", "Costing Method", "Written Off", "Record ID"]
STAFF = [(f"Staff Member {n:02d}", Decimal(rate)) for n, rate in enumerate(
    ["650.00", "540.00", "480.00", "420.00", "380.00", "320.00", "240.00", "195.00"] * 5)]
CODES = ["Attendance", "Perusal", "Drafting", "Correspondence", "Telephone", "Conference", "Research"]
EXPENSES = [("Photocopying", "Photocopying of court book"), ("Courier", "Courier to registry"),
            ("Search Fee", "ASIC company search"), ("Archive Retrieval", "Retrieval of archived deeds")]
RULES = """\
id: bench-hours
version: 1
rules:
  - {id: LONG, title: Long entry, type: max_hours_per_entry, severity: warning, params: {max_hours: 8}}
  - {id: DAY, title: Long day, type: daily_hours_cap, severity: warning, params: {max_hours: 10}}
  - {id: DUP, title: Duplicate entry, type: duplicate, severity: error}
"""


def money(value: Decimal) -> str:
    return f"${value:,.2f}"


def rows(count: int, seed: int = 5) -> list[list[str]]:
    """``count`` cost records: nine in ten time, 40 staff over 250 matters and two years."""
    rng = random.Random(seed)
    start = dt.date(2024, 7, 1)
    out = []
    for n in range(count):
        day = (start + dt.timedelta(days=rng.randrange(730))).strftime("%d/%m/%Y")
        matter = rng.randrange(250)
        name, rate = rng.choice(STAFF)
        if rng.random() < 0.9:
            minutes = rng.randrange(3, 240)
            units = -(-minutes // 6)
            amount = units * rate / 10
            code = rng.choice(CODES)
            record = [code, f"{code} re matter {matter}, item {n}", str(minutes), str(units), money(rate),
                      money(amount), money(amount / 10), "Time", "Time"]
        else:
            code, text = rng.choice(EXPENSES)
            amount = Decimal(rng.randrange(500, 50000)) / 100
            record = [code, text, "", "", "", money(amount), money((amount / 10).quantize(Decimal("0.01"))),
                      "Expense", "Time"]
        code, text, minutes, units, shown_rate, shown_amount, gst, kind, method = record
        out.append([day, f"M{matter:04d}", f"Matter {matter}", name, kind, code, text, minutes, units, shown_rate,
                    shown_amount, gst, method, "No", f"{n + 1000}-A"])
    return out


def write_csv(path: Path, data: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(data)


def write_xlsx(path: Path, data: list[list[str]]) -> None:
    """The same rows as a workbook, as Excel keeps them: dates as dates, whole numbers as numbers."""
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("All Costs")
    sheet.append(HEADER)
    for row in data:
        day = dt.datetime.strptime(row[0], "%d/%m/%Y")
        sheet.append([day, *row[1:7], int(row[7]) if row[7] else None, int(row[8]) if row[8] else None, *row[9:]])
    book.save(path)


_INLINE = re.compile(rb'<c r="([A-Z]+[0-9]+)"((?: s="[0-9]+")?) t="inlineStr"><is><t(?: xml:space="preserve")?>(.*?)'
                     rb'</t></is></c>')
_MAIN = b"http://schemas.openxmlformats.org/"


def share_strings(path: Path) -> None:
    """Rewrite an openpyxl workbook's inline strings as a shared string table, as Excel saves a workbook."""
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    table: dict[bytes, int] = {}

    def shared(match: re.Match[bytes]) -> bytes:
        index = table.setdefault(match[3], len(table))
        return b'<c r="%s"%s t="s"><v>%d</v></c>' % (match[1], match[2], index)

    parts["xl/worksheets/sheet1.xml"] = _INLINE.sub(shared, parts["xl/worksheets/sheet1.xml"])
    parts["xl/sharedStrings.xml"] = (b'<sst xmlns="%sspreadsheetml/2006/main" uniqueCount="%d">' % (_MAIN, len(table))
                                     + b"".join(b'<si><t xml:space="preserve">%s</t></si>' % text for text in table)
                                     + b"</sst>")
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(b"</Types>", (
        b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        b'spreadsheetml.sharedStrings+xml" /></Types>'))
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(b"</Relationships>", (
        b'<Relationship Type="%sofficeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml" '
        b'Id="rIdShared" /></Relationships>' % _MAIN))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, data in parts.items():
            book.writestr(name, data)


def write_excel_like(path: Path, data: list[list[str]]) -> None:
    write_xlsx(path, data)
    share_strings(path)


def best_read(path: Path, repeat: int) -> tuple[float, int, int]:
    mapping = load_mapping("mattero-all-costs")
    times, read = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        read = read_mapped(path, mapping)
        times.append(time.perf_counter() - started)
    assert read is not None
    return min(times), len(read.entries), read.skipped


def ingest(path: Path, folder: Path) -> tuple[float, str]:
    database = folder / f"{path.name}.db"
    environ = {**os.environ, "OCGATE_DATABASE_URL": f"sqlite:///{database}"}
    rules = folder / "bench-hours.yaml"
    rules.write_text(RULES, encoding="utf-8")
    ocgate = [sys.executable, "-m", "api.cli"]
    for setup in (["db", "upgrade"], ["rulesets", "add", str(rules), "--status", "active"]):
        subprocess.run([*ocgate, *setup], env=environ, check=True, capture_output=True)
    started = time.perf_counter()
    done = subprocess.run([*ocgate, "ingest", str(path), "--mapping", "mattero-all-costs", "--as-of", "2026-07-01"],
                          env=environ, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout.splitlines()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mapping_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in each file (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each read; the best is reported (default 3)")
    args = parser.parse_args(argv)
    print(f"mapping bench: {args.rows:,} rows, {cpu_count()} cores, load {load_average()}, Python "
          f"{sys.version.split()[0]}")
    data = rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="ocgate-mapping-bench-") as tmp:
        folder = Path(tmp)
        files = (("all-costs.csv", write_csv), ("all-costs-inline.xlsx", write_xlsx),
                 ("all-costs-shared.xlsx", write_excel_like))
        for name, write in files:
            path = folder / name
            started = time.perf_counter()
            write(path, data)
            written = time.perf_counter() - started
            print(f"\n{path.name}: {path.stat().st_size / 1e6:.1f} MB, written in {written:.1f} s")
            seconds, entries, skipped = best_read(path, args.repeat)
            print(f"  read and map:   {seconds:6.2f} s  {args.rows / seconds:8,.0f} rows/s  ({entries:,} entries, "
                  f"{skipped} rows left out; best of {args.repeat})")
            seconds, summary = ingest(path, folder)
            print(f"  ocgate ingest:  {seconds:6.2f} s  {args.rows / seconds:8,.0f} rows/s  (end to end into SQLite, "
                  "a fresh process)")
            print(f"    {summary}")
    print(f"\nmax RSS of this process: {max_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
