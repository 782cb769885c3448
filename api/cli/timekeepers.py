"""``ocgate timekeepers import|list|show``: the firm's timekeeper table (LEDES ids, classifications, source user
ids, standard rates); the file format is in docs/timekeepers.md."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_OK, CliError, sessions
from engine.store.db import transaction
from engine.workflows import timekeepers
from engine.workflows.timekeepers import TimekeeperFileError


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("timekeepers", help="the firm's timekeeper table: LEDES ids, classifications, "
                            "source user ids, standard rates")
    tk_sub = parser.add_subparsers(dest="timekeepers_command", required=True)
    load = tk_sub.add_parser("import", help="add or update the timekeepers of a CSV file (all or nothing)")
    load.add_argument("file", type=Path)
    tk_sub.add_parser("list", help="list the table")
    show = tk_sub.add_parser("show", help="one timekeeper with source ids and rates")
    show.add_argument("ledes_id")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    factory = sessions()
    if args.timekeepers_command == "import":
        try:
            text = args.file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
        try:
            with transaction(factory) as session:
                result = timekeepers.import_csv(session, text, source=str(args.file))
        except TimekeeperFileError as exc:
            for problem in exc.problems:
                print(f"ocgate: {problem}", file=sys.stderr)
            print(f"ocgate: {exc.message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        changed = f" ({', '.join(result.updated)})" if result.updated else ""
        print(f"{args.file}: {len(result.created)} new, {len(result.updated)} changed{changed}, {result.unchanged} "
              f"unchanged; {result.rates_removed} rates and {result.source_ids_removed} source ids no longer in "
              "the file removed")
        return EXIT_OK
    with factory() as session:
        if args.timekeepers_command == "show":
            _show(timekeepers.get(session, args.ledes_id))
            return EXIT_OK
        records = timekeepers.timekeepers(session)
    print(f"{'LEDES ID':<20} {'CLASS':<7} {'NAME':<28} {'TITLE':<20} SOURCE IDS")
    for tk in records:
        source_ids = ", ".join(f"{s.source_system}:{s.source_user_id}" for s in tk.source_ids) or "-"
        print(f"{tk.ledes_id:<20} {tk.classification or '-':<7} {tk.name:<28} {tk.title or '-':<20} {source_ids}")
    return EXIT_OK


def _show(tk: timekeepers.TimekeeperRecord) -> None:
    print(f"{tk.ledes_id}  {tk.name}  {tk.classification or '-'}  ({tk.title or 'no title'})")
    for source_id in tk.source_ids:
        print(f"  source id  {source_id.source_system}:{source_id.source_user_id}")
    for rate, following in zip(tk.rates, (*tk.rates[1:], None), strict=True):  # sorted by currency, then start
        if rate.effective_to:
            until = f"to {rate.effective_to}"
        elif following and following.currency == rate.currency:
            until = f"to {following.effective_from - dt.timedelta(days=1)} (the next rate starts)"
        else:
            until = "open-ended"
        print(f"  rate       {rate.currency} {rate.rate:>10}  from {rate.effective_from} {until}")
