"""``ocgate rulesets add|list|backtest``: rule set versions in the database, and what a version would flag over
the stored entries compared with another."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_OK, CliError, date, sessions
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError
from engine.store.db import transaction
from engine.store.models import RuleSetStatus
from engine.workflows import backtest as backtests
from engine.workflows import rulesets


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("rulesets", help="rule set versions in the database")
    rulesets_sub = parser.add_subparsers(dest="rulesets_command", required=True)
    add = rulesets_sub.add_parser("add", help="store a rule file as a new version")
    add.add_argument("file", type=Path)
    add.add_argument("--status", choices=["draft", "active", "shadow"], default="draft")
    rulesets_sub.add_parser("list", help="list the stored versions")
    test = rulesets_sub.add_parser(
        "backtest", help="what a version would flag over the stored entries, compared with the active version",
        description="Compare what VERSION flags over the stored entries with what its rule set's active version "
                    "(or --against VERSION) flags: per rule that differs, the entries newly flagged and no longer "
                    "flagged, the write-downs, and examples with their evidence. Nothing is written.")
    test.add_argument("version", type=int, metavar="VERSION", help="a version id (see `ocgate rulesets list`)")
    test.add_argument("--against", default="active", metavar="VERSION|active",
                      help="the version to compare with (default: the rule set's active version)")
    test.add_argument("--from", dest="start", type=date, metavar="DATE", help="first work date compared")
    test.add_argument("--to", dest="end", type=date, metavar="DATE", help="last work date compared")
    test.add_argument("--client", action="append", default=[], metavar="ID",
                      help="only this client's entries (LEDES or source client id; repeat for more)")
    test.add_argument("--as-of", type=date, metavar="DATE", help="the date entries are judged on (default: today)")
    test.add_argument("--period-start", type=date, metavar="DATE", help="the billing period entries are judged for")
    test.add_argument("--period-end", type=date, metavar="DATE")
    test.add_argument("--examples", type=int, default=backtests.EXAMPLES, metavar="N",
                      help=f"examples per rule and change (default {backtests.EXAMPLES}, at most "
                           f"{backtests.MAX_EXAMPLES})")
    test.add_argument("--format", choices=["table", "json"], default="table")
    test.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


class _Progress:
    """A tqdm bar per phase on a terminal (standard error); nothing when it is not one, or with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar: Any = None
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or phase != self.phase:
            self.close()
            from tqdm import tqdm

            self.bar, self.phase = tqdm(total=total or None, unit=" entries", desc=phase, file=sys.stderr), phase
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    factory = sessions()
    if args.rulesets_command == "backtest":
        return _backtest(factory, args)
    if args.rulesets_command == "add":
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
        try:
            with transaction(factory) as session:
                version = rulesets.add_ruleset_version(session, text, source=str(args.file), created_by="cli",
                                                       status=RuleSetStatus(args.status))
        except RuleSetError as exc:
            for problem in exc.problems:
                print(problem)
            return EXIT_BAD_INPUT
        print(f"{version.ruleset_id} version {version.version_label} revision {version.revision}: {version.status}")
        return EXIT_OK
    with factory() as session:
        for v in rulesets.versions(session):
            print(f"{v.id:>4}  {v.ruleset_id:<24} {v.version_label:<10} {v.revision}  {v.status:<8} "
                  f"{v.created_at:%Y-%m-%d %H:%M}")
    return EXIT_OK


def _backtest(factory: Any, args: argparse.Namespace) -> int:
    against: int | None = None
    if args.against != "active":
        try:
            against = int(args.against)
        except ValueError:
            raise CliError(f"--against {args.against!r}: give a version id or 'active'") from None
    if args.period_start and args.period_end and args.period_start > args.period_end:
        raise CliError("--period-start is after --period-end")
    ctx = EvaluationContext(as_of=args.as_of or dt.date.today(), period_start=args.period_start,
                            period_end=args.period_end)
    progress = _Progress(args.quiet)
    try:
        with factory() as session, session.begin():
            result = backtests.backtest(session, args.version, against=against, context=ctx, examples=args.examples,
                                        window=backtests.Window(args.start, args.end, tuple(args.client)),
                                        progress=progress)
            draft, other = _label(result.draft), _label(result.active) if result.active else None
    finally:
        progress.close()
    summary = backtests.summary(result)
    if args.format == "json":
        json.dump({"draft": draft, "against": other, **summary}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(_table(result, summary, draft, other))
    return EXIT_OK


def _label(version: Any) -> dict[str, Any]:
    return {"id": version.id, "ruleset_id": version.ruleset_id, "version_label": version.version_label,
            "revision": version.revision, "status": str(version.status)}


def _money(amounts: dict[str, str]) -> str:
    return ", ".join(f"{currency} {amount}" for currency, amount in amounts.items()) or "-"


def _table(result: backtests.Backtest, summary: dict[str, Any], draft: dict[str, Any],
           other: dict[str, Any] | None) -> str:
    def name(v: dict[str, Any]) -> str:
        return f"version {v['id']} ({v['version_label']}, {v['status']}, revision {v['revision']})"

    window, ctx, work = summary["window"], summary["context"], summary["work"]
    span = (f"work dates {window['from'] or 'any'} to {window['to'] or 'any'}"
            if window["from"] or window["to"] else "every work date")
    clients = f", clients {', '.join(window['clients'])}" if window["clients"] else ""
    period = (f", billing period {ctx['period_start'] or '…'} to {ctx['period_end'] or '…'}"
              if ctx["period_start"] or ctx["period_end"] else "")
    lines = [f"{draft['ruleset_id']}: {name(draft)} against {name(other) if other else 'no active version'}",
             f"{span}{clients}; judged as of {ctx['as_of']}{period}",
             f"entries checked: {summary['entries_checked']:,} ({work['entries_read']:,} read, "
             f"{work['entries_read_in_full']:,} in full, {work['findings_reused']:,} with the compared findings from "
             f"the decision log; {work['seconds']:.1f} s)"]
    if not summary["rules"]:
        lines.append("no rule differs: the draft flags exactly what the compared version flags")
    else:
        header = ("rule", "change", "differs", "before", "after", "newly", "no longer", "write-down change")
        rows = [header] + [(r["rule_id"], r["change"], ",".join(r["differs"]), f"{r['flagged_before']:,}",
                            f"{r['flagged_after']:,}", f"{r['newly_flagged']:,}", f"{r['no_longer_flagged']:,}",
                            _money(r["write_down_change"])) for r in summary["rules"]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        lines.append(f"write-down change in total: {_money(summary['write_down_change'])}")
    if summary["unchanged_rules"]:
        lines.append(f"unchanged ({len(summary['unchanged_rules'])}, not evaluated): "
                     f"{', '.join(summary['unchanged_rules'])}")
    if result.examples:
        lines.append("examples:")
        for e in summary["examples"]:
            lines.append(f"  {e['change']:<17} {e['rule_id']}  entry {e['entry_id']} {e['entry_uid']}: {e['message']}")
            for ev in e["evidence"]:
                lines.append(f"      {ev['field']} {ev['operator']} {ev['expected']}: {ev['actual']}")
            if e["adjustment"]:
                a = e["adjustment"]
                lines.append(f"      write-down: {a['field']} {a['current']} -> {a['proposed']} ({a['amount']})")
    return "\n".join(lines)
