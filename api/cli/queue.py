"""``ocgate queue``: what waits for review, by state and rule."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import EXIT_OK, sessions
from engine.store.models import EntryState
from engine.workflows import review


def add_parser(sub: Any) -> None:
    queue = sub.add_parser("queue", help="what waits for review, by state and rule")
    queue.add_argument("--state", choices=[s.value for s in EntryState], default=None)
    queue.add_argument("--limit", type=int, default=20)
    queue.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with sessions()() as session:
        found = review.summary(session, state=args.state, limit=args.limit)
    print("  ".join(f"{state}: {found.by_state.get(state, 0)}" for state in EntryState))
    if found.by_rule:
        print("\nRULE               SEVERITY  ENTRIES")
        for rule_id, severity, n in found.by_rule:
            print(f"{rule_id:<18} {severity:<9} {n:>7}")
    if found.first:
        print(f"\n{'ID':>6}  {'SOURCE ID':<12} {'STATE':<10} {'WORST':<8} {'DATE':<10}  TIMEKEEPER")
        for row_id, source_id, state, worst, work_date, name in found.first:
            print(f"{row_id:>6}  {source_id:<12} {state:<10} {worst or '-':<8} {work_date}  {name or '-'}")
    return EXIT_OK
