"""``ocgate validate``: entries checked against rule sets, without a database (exit 1 on errors), and the
tables of findings that ``validate`` and ``demo`` print."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from api.cli.common import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK, date
from engine.entry_io import EntryFileError, EntryRead, read_file
from engine.mapping import MappingError, builtin_mappings, load_mapping
from engine.model import Entry
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError, load_file
from engine.rules.ruleset import RuleSet


def add_parser(sub: Any) -> None:
    validate = sub.add_parser("validate", help="check entries against rule sets (exit 1 on errors)")
    validate.add_argument("entries", type=Path, help=ENTRIES_HELP)
    validate.add_argument("--rules", "-r", type=Path, action="append", required=True,
                          help="rule file (repeat for several clients)")
    add_mapping_argument(validate)
    validate.add_argument("--format", choices=["table", "json", "summary"], default="table")
    validate.add_argument("--backend", choices=["auto", "python", "durable"], default="auto")
    validate.add_argument("--as-of", type=date, help="date the invoice is checked (default: today)")
    validate.add_argument("--period-start", type=date, help="first day of the billing period")
    validate.add_argument("--period-end", type=date, help="last day of the billing period")
    validate.add_argument("--include-shadow", action="store_true", help="also list shadow-mode rules' findings")
    validate.set_defaults(handler=run)


ENTRIES_HELP = ("entries: canonical .jsonl, .json (array) or .csv; a LEDES 1998B or 98BI invoice; or, with "
                "--mapping, any CSV or .xlsx export")
MAX_SHOWN = 50  # rows left out listed one by one; the rest are counted


def add_mapping_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mapping", "-m", metavar="MAPPING",
                        help="read a CSV or .xlsx export through a mapping: a YAML file (docs/mappings.md) or a "
                             f"built-in ({', '.join(builtin_mappings())})")


def _load_rulesets(files: list[Path]) -> list[RuleSet] | None:
    rulesets, bad = [], False
    for file in files:
        try:
            rulesets.append(load_file(file))
        except RuleSetError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            bad = True
    return None if bad else rulesets


def run_validation(entries: list[Entry], rulesets: list[RuleSet], context: EvaluationContext,
                   backend: str) -> list[Violation]:
    violations: list[Violation] = []
    for ruleset in rulesets:
        violations.extend(evaluate(entries, ruleset, context=context, backend=backend))
    return violations


def entries_and_context(args: argparse.Namespace) -> tuple[EntryRead, EvaluationContext] | None:
    """The entries file (through ``--mapping`` if given) and the evaluation dates of ``validate`` and ``ingest``;
    None (reported) if the mapping or the file cannot be used. Rows left out and notes go to stderr."""
    try:
        mapping = load_mapping(args.mapping) if args.mapping else None
        read = read_file(args.entries, mapping)
    except (MappingError, EntryFileError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    for problem in read.skipped[:MAX_SHOWN]:
        print(problem, file=sys.stderr)
    if len(read.skipped) > MAX_SHOWN:
        print(f"{args.entries}: ... and {len(read.skipped) - MAX_SHOWN} more problems", file=sys.stderr)
    for note in read.notes:
        print(note, file=sys.stderr)
    return read, EvaluationContext(as_of=args.as_of or dt.date.today(), period_start=args.period_start,
                                   period_end=args.period_end)


def print_read(read: EntryRead, file: Path, out: TextIO) -> None:
    """What reading the file left out and flagged: after the findings, so a gate's log shows both."""
    if read.skipped_rows:
        print(f"{file}: {read.skipped_rows} row(s) left out, each listed on stderr with its row and column",
              file=out)
    flags = Counter(flag for entry in read.entries for flag in entry.data_quality_flags)
    if flags:
        flagged = sum(1 for entry in read.entries if entry.data_quality_flags)
        print(f"{file}: {flagged} entries with data-quality flags: "
              + ", ".join(f"{flag} {count}" for flag, count in sorted(flags.items())), file=out)


def run(args: argparse.Namespace) -> int:
    rulesets = _load_rulesets(args.rules)
    if rulesets is None:
        return EXIT_BAD_INPUT
    loaded = entries_and_context(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    read, context = loaded
    entries = read.entries
    violations = run_validation(entries, rulesets, context, args.backend)
    shown = [v for v in violations if args.include_shadow or v.rule_status != "shadow"]
    if args.format == "json":
        json.dump([v.as_dict() for v in shown], sys.stdout, indent=2)
        print()
    elif args.format == "summary":
        print_summary(entries, rulesets, violations, sys.stdout)
    else:
        print_table(entries, shown, sys.stdout)
    if args.format != "json":
        print_read(read, args.entries, sys.stdout)
    return EXIT_FOUND if any(v.severity == "error" and v.rule_status == "active" for v in violations) else EXIT_OK


def print_table(entries: list[Entry], violations: list[Violation], out: TextIO, width: int = 110,
                footer: bool = True) -> None:
    if not violations:
        print(f"{len(entries)} entries checked: no violations", file=out)
        return
    ids = {e.entry_uid: e.source_id + (f":{e.source_line_id}" if e.source_line_id else "") for e in entries}
    rows = [(ids.get(v.entry_uid, v.entry_uid), v.rule_id, v.severity, v.message) for v in violations]
    widths = [max(len(r[i]) for r in [("ENTRY", "RULE", "SEVERITY", "")] + rows) for i in range(3)]
    room = max(30, width - sum(widths) - 6)
    print(f"{'ENTRY':<{widths[0]}}  {'RULE':<{widths[1]}}  {'SEVERITY':<{widths[2]}}  MESSAGE", file=out)
    for entry_id, rule_id, severity, message in rows:
        message = message if len(message) <= room else message[: room - 1] + "…"
        print(f"{entry_id:<{widths[0]}}  {rule_id:<{widths[1]}}  {severity:<{widths[2]}}  {message}", file=out)
    if not footer:
        return
    flagged = len({v.entry_uid for v in violations})
    print(f"\n{len(entries)} entries checked, {flagged} flagged, {len(violations)} violations", file=out)


def print_summary(entries: list[Entry], rulesets: list[RuleSet], violations: list[Violation], out: TextIO) -> None:
    by_rule = Counter((v.ruleset_id, v.rule_id) for v in violations)
    money = {}
    for v in violations:
        if v.adjustment is not None:
            money[(v.ruleset_id, v.rule_id)] = money.get((v.ruleset_id, v.rule_id), 0) + v.adjustment.amount
    print(f"{'RULE':<18} {'SEVERITY':<8} {'STATUS':<7} {'FLAGS':>6} {'WRITE-DOWN':>11}  TITLE", file=out)
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.status == "draft":
                continue
            count = by_rule.get((ruleset.id, rule.id), 0)
            down = money.get((ruleset.id, rule.id))
            shown = f"{down:.2f}" if down is not None else ""
            print(f"{rule.id:<18} {rule.severity:<8} {rule.status:<7} {count:>6} {shown:>11}  {rule.title}", file=out)
    active = [v for v in violations if v.rule_status == "active"]
    flagged = {v.entry_uid for v in active}
    errors = {v.entry_uid for v in active if v.severity == "error"}
    print(f"\n{len(entries)} entries checked: {len(entries) - len(flagged)} clean, {len(flagged)} flagged "
          f"({len(errors)} with errors), {len(active)} violations"
          + (f", {len(violations) - len(active)} more in shadow mode" if len(violations) > len(active) else ""),
          file=out)
