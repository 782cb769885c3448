"""Speed and memory of the LEDES writers and parser (``engine/ledes/``) on a generated month of invoices.

Run with ``.venv/bin/python -m bench.ledes_bench [--lines N] [--repeat R]``. It prints figures only:
nothing here passes or fails. The file is about 50 invoices of 2,000 line items each (85% fees, 15%
expenses, a line discount on one fee in ten, narratives of 60 to 200 characters), built as LedesInvoice
objects with consistent Decimal totals; the 98BI variant adds 20% VAT on every line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import platform
import random
import threading
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bench.engine_bench import cpu_count, current_rss_mb, fmt_mb, load_average, max_rss_mb
from engine.ledes import LedesInvoice, LedesLine, Party, check_invoices, parse, write
from engine.samples import EXPENSES, MATTERS, TASKS, TIMEKEEPERS

SEED = 11
LINES_PER_INVOICE = 2_000
TARGET_WRITE_SECONDS = 2.0  # 100,000-line 1998B file
CENT = Decimal("0.01")
MB = 1024 * 1024
DETAILS = ["in preparation for the hearing on the motion to compel", "as requested by the client's general counsel",
           "and circulated a summary of the open issues to the team", "including follow-up on the points raised by "
           "opposing counsel in their letter of the previous week", "for the damages section of the expert report"]


def build_invoices(lines: int, seed: int = SEED, tax_rate: Decimal | None = None) -> list[LedesInvoice]:
    """``lines`` line items in invoices of LINES_PER_INVOICE; 98BI fields filled when ``tax_rate`` is given."""
    rng = random.Random(seed)
    invoices: list[LedesInvoice] = []
    start, end = dt.date(2026, 3, 1), dt.date(2026, 3, 31)
    line_number = 0
    count = max(1, -(-lines // LINES_PER_INVOICE))
    for index in range(count):
        items: list[LedesLine] = []
        matters = rng.sample(MATTERS, k=rng.randint(1, len(MATTERS)))
        for _ in range(min(LINES_PER_INVOICE, lines - line_number)):
            line_number += 1
            matter_id, client_matter_id, matter_name = rng.choice(matters)
            day = start + dt.timedelta(days=rng.randrange(31))
            if rng.random() < 0.85:
                tk_id, tk_name, classification, rate = rng.choice(TIMEKEEPERS)
                task, activity, narrative = rng.choice(TASKS)
                units = Decimal(rng.randint(1, 80)) / 10
                cost = Decimal(rate)
                adjustment = -(units * cost / 10).quantize(CENT) if rng.random() < 0.1 else Decimal("0.00")
                fields: dict[str, Any] = dict(kind="F", task_code=task, activity_code=activity, timekeeper_id=tk_id,
                                              timekeeper_name=tk_name, timekeeper_classification=classification)
                if tax_rate is not None:  # 98BI only
                    last, _, first = tk_name.partition(", ")
                    fields.update(timekeeper_last_name=last, timekeeper_first_name=first)
            else:
                code, narrative, (low, high), (fewest, most), _ = rng.choice(EXPENSES)
                units = Decimal(rng.randint(fewest, most))
                cost = rng.choice((Decimal(low), Decimal(high)))
                adjustment = Decimal("0.00")
                fields = dict(kind="E", expense_code=code)
            description = narrative
            while len(description) < 60 or (len(description) < 200 and rng.random() < 0.5):
                description = f"{description} {rng.choice(DETAILS)}"
            net = (units * cost + adjustment).quantize(CENT, ROUND_HALF_UP)
            tax = None if tax_rate is None else (units * cost + adjustment) * tax_rate
            tax = None if tax is None else tax.quantize(CENT, ROUND_HALF_UP)
            extra: dict[str, Any] = {} if tax is None else dict(matter_name=matter_name, tax_rate=tax_rate,
                                                               tax_total=tax, tax_type="VAT")
            items.append(LedesLine(line_number=line_number, date=day, law_firm_matter_id=matter_id, units=units,
                                   unit_cost=cost, adjustment=adjustment, total=net + (tax or 0),
                                   description=description[:200].rstrip(), client_matter_id=client_matter_id,
                                   **fields, **extra))
        total = sum((item.total for item in items), Decimal("0.00"))
        invoice = LedesInvoice(invoice_date=dt.date(2026, 4, 2), invoice_number=f"2026{index + 1:04d}",
                               client_id="ACME01", law_firm_id="24-6437381", total=total, billing_start=start,
                               billing_end=end, description="Legal services, March 2026", lines=tuple(items))
        if tax_rate is not None:
            tax_total = sum((item.tax_total for item in items), Decimal("0.00"))
            invoice = dataclasses.replace(
                invoice, currency="GBP", tax_currency="GBP", tax_total=tax_total, net_total=total - tax_total,
                client_tax_id="GB123456789", account_type="O",
                law_firm=Party("Whitfield Okafor LLP", "1 Fleet Street", "", "London", "", "EC4Y 1AA", "GB"),
                client=Party("Acme Corporation", "100 Main Street", "", "Springfield", "IL", "62701", "US"))
        invoices.append(invoice)
    return invoices


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """Best wall-clock seconds of ``repeat`` runs (a full collection before each), all runs, the last result."""
    seconds: list[float] = []
    result: Any = None
    for _ in range(repeat):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds), seconds, result


def rss_growth(fn: Callable[[], Any]) -> tuple[float | None, float | None]:
    """RSS before ``fn`` and its peak growth while ``fn`` runs, in MB (sampled every 2 ms; None off Linux).

    The result of ``fn`` is dropped afterwards. tracemalloc is not used: tracing every allocation makes
    writing a 100k-line file some 40 times slower.
    """
    gc.collect()
    before = current_rss_mb()
    if before is None:
        fn()
        return None, None
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = current_rss_mb()
            if rss is not None and rss > peak[0]:
                peak[0] = rss
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        rss = current_rss_mb()  # the result is still held here
        if rss is not None and rss > peak[0]:
            peak[0] = rss
    finally:
        done.set()
        sampler.join()
    del result
    return before, peak[0] - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledes_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="line items in the file (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing; the best is reported (default 3)")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)
    lines = max(1, args.lines)
    print(f"ocgate LEDES benchmark: {lines:,} line items in invoices of {LINES_PER_INVOICE:,} (seed {SEED}), "
          f"best of {repeat} runs")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}; "
          f"CPUs: {cpu_count()}; load average (1, 5, 15 min): {load_average()}")
    print()

    rows: list[tuple[str, str, str, str, str]] = []  # format, step, seconds, lines/s, note
    for fmt, rate in (("1998b", None), ("98bi", Decimal("0.2"))):
        start = time.perf_counter()
        invoices = build_invoices(lines, tax_rate=rate)
        built = time.perf_counter() - start
        print(f"[{fmt}] built {len(invoices)} invoices, {lines:,} lines in {built:.2f} s (not a LEDES figure)")

        check_s, check_runs, problems = best_of(lambda invoices=invoices, fmt=fmt: check_invoices(invoices, fmt),
                                                repeat)
        write_s, write_runs, text = best_of(lambda invoices=invoices, fmt=fmt: write(invoices, fmt), repeat)
        parse_s, parse_runs, parsed = best_of(lambda text=text: parse(text), repeat)
        strict_s, strict_runs, strict = best_of(lambda text=text: parse(text, strict=True), 1)
        same = parsed.invoices == tuple(invoices)
        equal_s, _, _ = best_of(lambda parsed=parsed, invoices=invoices: parsed.invoices == tuple(invoices), 1)
        size = len(text.encode("ascii"))
        rss_before, write_growth = rss_growth(lambda invoices=invoices, fmt=fmt: write(invoices, fmt))
        _, parse_growth = rss_growth(lambda text=text: parse(text))
        print(f"[{fmt}] file: {size / MB:,.1f} MB, {text.count(chr(10)) + 1:,} lines; problems found: {len(problems)}")
        steps = (("check_invoices", check_s, check_runs), ("write (check included)", write_s, write_runs),
                 ("parse", parse_s, parse_runs), ("parse strict=True", strict_s, strict_runs))
        for step, best, runs in steps:
            print(f"[{fmt}] {step}: best {best:.3f} s = {lines / best:,.0f} lines/s "
                  f"(runs: {', '.join(f'{s:.3f}' for s in runs)} s)")
        print(f"[{fmt}] round trip parse(write(x)).invoices == x: {same} (comparison {equal_s:.3f} s); "
              f"strict problems: {len(strict.problems)}")
        print(f"[{fmt}] memory: RSS {fmt_mb(rss_before)} with the invoices and one file text held; peak growth "
              f"while writing {fmt_mb(write_growth)}, while parsing {fmt_mb(parse_growth)} (the result included)")
        target = f"target < {TARGET_WRITE_SECONDS:.0f} s at 100k" if fmt == "1998b" else ""
        rows += [(fmt, "write", f"{write_s:.3f}", f"{lines / write_s:,.0f}", target),
                 (fmt, "  of which check_invoices", f"{check_s:.3f}", f"{lines / check_s:,.0f}", ""),
                 (fmt, "parse", f"{parse_s:.3f}", f"{lines / parse_s:,.0f}", ""),
                 (fmt, "parse strict=True", f"{strict_s:.3f}", f"{lines / strict_s:,.0f}", ""),
                 (fmt, "round trip equal", str(same), "", "True"),
                 (fmt, "file size", f"{size / MB:,.1f} MB", "", ""),
                 (fmt, "RSS growth write", fmt_mb(write_growth), "", ""),
                 (fmt, "RSS growth parse", fmt_mb(parse_growth), "", "")]
        del invoices, text, parsed, strict
        print()

    print(f"Summary: {lines:,} line items, Python {platform.python_version()}, CPUs {cpu_count()}, best of {repeat} "
          f"runs, load average now {load_average()}, process max RSS {fmt_mb(max_rss_mb())}")
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"{'format':<{widths[0]}}  {'step':<{widths[1]}}  {'seconds':>{widths[2]}}  {'lines/s':>{widths[3]}}  note")
    for fmt, step, seconds, rate_text, note in rows:
        print(f"{fmt:<{widths[0]}}  {step:<{widths[1]}}  {seconds:>{widths[2]}}  {rate_text:>{widths[3]}}  {note}")


if __name__ == "__main__":
    main()
