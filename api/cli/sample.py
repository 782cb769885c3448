"""``ocgate sample``: generated sample entries to try things on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, CliError, date
from engine.entry_io import write_jsonl
from engine.samples import SAMPLE_DAYS, SAMPLE_START, generate, suggested_context


def add_parser(sub: Any) -> None:
    sample = sub.add_parser("sample", help="write generated sample entries as JSON lines")
    sample.add_argument("--count", type=int, default=300)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    sample.add_argument("--start", type=date, default=SAMPLE_START,
                        help=f"first work date (default: {SAMPLE_START}; a few entries are dated months earlier, "
                             "as late time)")
    sample.add_argument("--days", type=int, default=SAMPLE_DAYS, help=f"days the entries spread over (default: "
                                                                       f"{SAMPLE_DAYS})")
    sample.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CliError("--count must be zero or more")
    if args.days < 1:
        raise CliError("--days must be one or more")
    entries = generate(args.count, seed=args.seed, start=args.start, days=args.days)
    if args.output:
        with args.output.open("w", encoding="utf-8") as out:
            write_jsonl(entries, out)
    else:
        write_jsonl(entries, sys.stdout)
    ctx = suggested_context(args.start, args.days)
    # Judged as of today, entries dated months ago would all be late: say which context fits them.
    print(f"{args.count} entries dated {ctx.period_start} to {ctx.period_end}; check them as the invoice for that "
          f"period would be: --as-of {ctx.as_of} --period-start {ctx.period_start} --period-end {ctx.period_end}",
          file=sys.stderr)
    return EXIT_OK
