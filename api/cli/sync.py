"""``ocgate sync NAME [--full]``: pull a source's new and changed entries into the store and judge them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from api.cli.common import EXIT_OK, date, sessions
from api.cli.ingest import given_context
from connectors.sources.sync import BATCH_ENTRIES, SyncReport, sync

PLAIN_EVERY = 5.0  # seconds between progress lines when standard error is not a terminal


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("sync", help="pull a source's new and changed entries (exit 75 if it cannot be reached; "
                                         "the next sync resumes)")
    parser.add_argument("name")
    parser.add_argument("--full", action="store_true", help="pull everything, and withdraw what the source no "
                                                            "longer has")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    parser.add_argument("--as-of", type=date, help="date the entries are judged as of, for late_entry (default: "
                                                   "today)")
    parser.add_argument("--period-start", type=date, help="first day of the billing period, for billing_period "
                                                          "(default: none; a changed entry keeps its stored period)")
    parser.add_argument("--period-end", type=date, help="last day of the billing period")
    parser.add_argument("--batch-entries", type=int, default=BATCH_ENTRIES, metavar="N",
                        help=f"entries committed at a time, with the position in the source (default {BATCH_ENTRIES})")
    parser.set_defaults(handler=run)


class _Progress:
    """A progress bar on a terminal (tqdm), a plain line every few seconds otherwise."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.last = quiet, None, 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, report: SyncReport, total: int | None) -> None:
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=" records", desc=f"sync {report.source}", file=sys.stderr)
            self.bar.update(report.pulled - self.bar.n)
            self.bar.set_postfix(new=report.new, changed=report.changed, flagged=report.flagged, refresh=False)
        elif time.monotonic() - self.last >= PLAIN_EVERY:
            self.last = time.monotonic()
            of = f" of {total}" if total else ""
            print(f"sync {report.source}: {report.pulled}{of} pulled, {report.new} new, {report.changed} changed",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    progress = _Progress(args.quiet)
    try:
        report = sync(sessions(), args.name, full=args.full, progress=progress,
                      batch_entries=max(1, args.batch_entries),
                      context=given_context(args))
    finally:
        progress.close()
    rate = f", {report.pulled / report.seconds:,.0f} records/s" if report.seconds > 0 and report.pulled else ""
    print(f"sync {report.source} (run {report.run_id}{', full' if report.full else ''}): {report.pulled} pulled, "
          f"{report.new} new, {report.changed} changed, {report.unchanged} unchanged, {report.withdrawn} withdrawn, "
          f"{report.conflicts} conflicts; {report.flagged} flagged for review, {report.quality} with data-quality "
          f"problems; {report.seconds:.1f} s{rate}")
    for flag, count in sorted(report.quality_flags.items()):
        print(f"  {flag}: {count}")
    return EXIT_OK
