"""``ocgate ingest``: entries from a file (canonical, LEDES, or an export through a mapping) upserted into the
database, judged, and queued where flagged. Rows of an export that cannot be read are listed and left out."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_OK, CliError, date, sessions
from api.cli.validate import ENTRIES_HELP, add_mapping_argument, entries_and_context, print_read
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.workflows import intake


def add_parser(sub: Any) -> None:
    ingest = sub.add_parser("ingest", help="upsert entries into the database and queue what the rules flag")
    ingest.add_argument("entries", type=Path, help=ENTRIES_HELP)
    add_mapping_argument(ingest)
    ingest.add_argument("--as-of", type=date, help="date the entries are judged as of, for late_entry (default: "
                                                   "today); each entry keeps it for later re-judging")
    ingest.add_argument("--period-start", type=date, help="first day of the billing period, for billing_period "
                                                          "(default: none; a changed entry keeps its stored period)")
    ingest.add_argument("--period-end", type=date, help="last day of the billing period")
    ingest.add_argument("--actor", default="cli:ingest")
    ingest.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = entries_and_context(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    read, _ = loaded
    context = given_context(args)
    with transaction(sessions()) as session:
        result = intake.ingest(session, read.entries, actor=args.actor, source=str(args.entries), context=context)
    print(f"batch {result.batch_id}: {result.received} received, {result.created} new, {result.updated} changed, "
          f"{result.unchanged} unchanged, {result.withdrawn} withdrawn, {result.conflicts} conflicts; "
          f"{result.ready} ready to bill, {result.in_review} to review, {result.held} held"
          + (f"; {result.rejudged} stored entries of the same days judged again" if result.rejudged else ""))
    for held in result.held_rulesets:
        print(f"held: {held['ruleset_id']} revision {held['revision']} flagged {held['flagged']} of "
              f"{held['checked']} entries; its findings wait for a rule author")
    print_read(read, args.entries, sys.stdout)
    return EXIT_OK


def given_context(args: argparse.Namespace) -> EvaluationContext | None:
    """The evaluation context the options give (``--as-of``, ``--period-start``, ``--period-end``), or None when
    they give none, so that intake defaults it per entry (today; a changed entry keeps its billing period)."""
    start, end = getattr(args, "period_start", None), getattr(args, "period_end", None)
    if start is not None and end is not None and end < start:
        raise CliError(f"--period-end {end} is before --period-start {start}")
    if args.as_of is None and start is None and end is None:
        return None
    return EvaluationContext(as_of=args.as_of or dt.date.today(), period_start=start, period_end=end)
