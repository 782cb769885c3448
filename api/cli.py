"""The ``ocgate`` command line.

Exit codes: 0 fine; 1 the check found what it looks for (error-severity violations, failing rule
tests); 2 the input could not be used (a malformed rule or entry file, a bad option, an invoice that cannot
be built); 75 a destination could not be reached (submit again later: nothing is sent twice).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from api.cli_invoices import COMMANDS as INVOICE_COMMANDS
from api.cli_invoices import CliError
from engine.entry_io import EntryFileError, read_entries, write_jsonl
from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE, BackendUnavailable, resolve_backend
from engine.rules.compiler import compile_ruleset
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.ruleset import RuleSet, RuleSetError, load_file
from engine.rules.ruletests import discover, run_file
from engine.rules.schema import ruleset_schema
from engine.store.models import EntryState
from engine.workflows.billing.invoices import InvoiceError

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
EXIT_TEMPFAIL = 75


class UsageError(Exception):
    pass


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocgate", description="Check billing entries against Outside Counsel "
                                     "Guidelines before the invoice leaves the firm.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    sub = parser.add_subparsers(dest="command", required=True)

    rules = sub.add_parser("rules", help="check, test and describe rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate rule files (exit 2 if any is malformed)")
    check.add_argument("files", nargs="+", type=Path)
    test = rules_sub.add_parser("test", help="run the tests beside each rule file (exit 1 on failure)")
    test.add_argument("paths", nargs="+", type=Path)
    test.add_argument("--backend", choices=["all", "python", "durable"], default="all")
    rules_sub.add_parser("schema", help="print the JSON Schema of rule files")

    validate = sub.add_parser("validate", help="check entries against rule sets (exit 1 on errors)")
    validate.add_argument("entries", type=Path, help="entries: .jsonl, .json (array) or .csv with a header")
    _evaluation_options(validate)

    demo = sub.add_parser("demo", help="check the bundled sample month against the bundled Acme rule set")
    demo.add_argument("--backend", choices=["auto", "python", "durable"], default="auto")
    demo.add_argument("--database", type=Path, default=Path("ocgate-demo.db"),
                      help="SQLite file for the review-queue part (recreated; default ocgate-demo.db)")

    db = sub.add_parser("db", help="the database (OCGATE_DATABASE_URL, default sqlite:///ocgate.db)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="create or migrate the schema to the newest version")
    db_sub.add_parser("current", help="print the schema revision")

    rulesets = sub.add_parser("rulesets", help="rule set versions in the database")
    rulesets_sub = rulesets.add_subparsers(dest="rulesets_command", required=True)
    add = rulesets_sub.add_parser("add", help="store a rule file as a new version")
    add.add_argument("file", type=Path)
    add.add_argument("--status", choices=["draft", "active", "shadow"], default="draft")
    rulesets_sub.add_parser("list", help="list the stored versions")

    ingest = sub.add_parser("ingest", help="upsert entries into the database and queue what the rules flag")
    ingest.add_argument("entries", type=Path)
    ingest.add_argument("--as-of", type=_date, help="date the entries are checked (default: today)")
    ingest.add_argument("--period-start", type=_date)
    ingest.add_argument("--period-end", type=_date)
    ingest.add_argument("--actor", default="cli:ingest")

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once; only a hash is stored)")
    create.add_argument("--role", required=True,
                        choices=["admin", "rule_author", "reviewer", "biller", "connector", "viewer"])
    create.add_argument("--name", required=True, help="who or what uses it (shown in the audit trail)")
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")

    serve = sub.add_parser("serve", help="run the review queue API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    queue = sub.add_parser("queue", help="what waits for review, by state and rule")
    queue.add_argument("--state", choices=[s.value for s in EntryState], default=None)
    queue.add_argument("--limit", type=int, default=20)

    from api.cli_invoices import add_parsers

    add_parsers(sub)

    sample = sub.add_parser("sample", help="write generated sample entries as JSON lines")
    sample.add_argument("--count", type=int, default=300)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    return parser


def _evaluation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", "-r", type=Path, action="append", required=True,
                   help="rule file (repeat for several clients)")
    p.add_argument("--format", choices=["table", "json", "summary"], default="table")
    p.add_argument("--backend", choices=["auto", "python", "durable"], default="auto")
    p.add_argument("--as-of", type=_date, help="date the invoice is checked (default: today)")
    p.add_argument("--period-start", type=_date, help="first day of the billing period")
    p.add_argument("--period-end", type=_date, help="last day of the billing period")
    p.add_argument("--include-shadow", action="store_true", help="also list shadow-mode rules' findings")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="ocgate: %(message)s", stream=sys.stderr)
    try:
        if args.command == "rules":
            handler = {"check": cmd_rules_check, "test": cmd_rules_test, "schema": cmd_rules_schema}[
                args.rules_command]
        else:
            handler = COMMANDS[args.command]
        return handler(args)
    except (UsageError, BackendUnavailable, CliError) as exc:
        print(f"ocgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvoiceError as exc:
        print(f"ocgate: {exc.message}", file=sys.stderr)
        for problem in exc.problems[1:20]:
            print(f"ocgate:   {problem}", file=sys.stderr)
        # A destination that could not be reached: try again later (sysexits EX_TEMPFAIL); nothing is sent twice.
        return EXIT_TEMPFAIL if getattr(exc, "retryable", False) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (ocgate ... | head): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# rules ---------------------------------------------------------------------------------------------

def cmd_rules_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for file in args.files:
        try:
            ruleset = load_file(file)
        except RuleSetError as exc:
            for problem in exc.problems:
                print(problem)
            status = EXIT_BAD_INPUT
            continue
        counts = Counter(rule.status for rule in ruleset.rules)
        shown = f" ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})" if counts else ""
        print(f"{file}: ok: {ruleset.id} version {ruleset.version}, {len(ruleset.rules)} rules{shown}, "
              f"revision {ruleset.revision}")
        problem = compile_ruleset(ruleset, ("active", "shadow", "draft")).durable_problem
        if problem and DURABLE_AVAILABLE:
            print(f"{file}: note: {problem}; it will be evaluated with the Python backend")
    return status


def cmd_rules_test(args: argparse.Namespace) -> int:
    try:
        files = discover(args.paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not files:
        raise UsageError(f"no rule files under {', '.join(map(str, args.paths))}")
    backends = None if args.backend == "all" else (resolve_backend(args.backend),)
    failed = 0
    for file in files:
        report = run_file(file, backends)
        for failure in report.failures:
            print(failure)
        for note in report.notes:
            print(note)
        mark = "ok" if report.ok else "FAILED"
        print(f"{file}: {mark}: {report.rules} rules, {report.cases} cases, {report.checks} checks")
        failed += 0 if report.ok else 1
    print(f"{len(files) - failed} passed, {failed} failed")
    return EXIT_FOUND if failed else EXIT_OK


def cmd_rules_schema(args: argparse.Namespace) -> int:
    print(json.dumps(ruleset_schema(), indent=2))
    return EXIT_OK


# validate ------------------------------------------------------------------------------------------

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


def _entries_and_context(args: argparse.Namespace) -> tuple[list[Entry], EvaluationContext] | None:
    """The entries file and the evaluation dates of ``validate`` and ``ingest``; None (reported) if unreadable."""
    try:
        entries = read_entries(args.entries)
    except EntryFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    return entries, EvaluationContext(as_of=args.as_of or dt.date.today(), period_start=args.period_start,
                                      period_end=args.period_end)


def cmd_validate(args: argparse.Namespace) -> int:
    rulesets = _load_rulesets(args.rules)
    if rulesets is None:
        return EXIT_BAD_INPUT
    loaded = _entries_and_context(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    entries, context = loaded
    violations = run_validation(entries, rulesets, context, args.backend)
    shown = [v for v in violations if args.include_shadow or v.rule_status != "shadow"]
    if args.format == "json":
        json.dump([v.as_dict() for v in shown], sys.stdout, indent=2)
        print()
    elif args.format == "summary":
        print_summary(entries, rulesets, violations, sys.stdout)
    else:
        print_table(entries, shown, sys.stdout)
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


# demo and samples ----------------------------------------------------------------------------------

DEMO_PERIOD = (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
DEMO_AS_OF = dt.date(2026, 4, 6)


def bundled_ruleset_path() -> Path:
    return Path(str(resources.files("rules") / "acme-corp.yaml"))


def bundled_sample_path() -> Path:
    return Path(str(resources.files("engine") / "data" / "samples" / "acme-2026-03.jsonl"))


def cmd_demo(args: argparse.Namespace) -> int:
    ruleset = load_file(bundled_ruleset_path())
    entries = read_entries(bundled_sample_path())
    backend = resolve_backend(args.backend)
    context = EvaluationContext(as_of=DEMO_AS_OF, period_start=DEMO_PERIOD[0], period_end=DEMO_PERIOD[1])
    print(f"ocgate demo: {len(entries)} sample entries for Acme Corporation, March 2026, checked against "
          f"{ruleset.title} (revision {ruleset.revision}) with the {backend} backend\n")
    violations = evaluate(entries, ruleset, context=context, backend=backend)
    print_summary(entries, [ruleset], violations, sys.stdout)
    print("\nOne finding of each rule:")
    seen: set[str] = set()
    sample = []
    for v in violations:
        if v.rule_id not in seen and v.rule_status == "active":
            seen.add(v.rule_id)
            sample.append(v)
    print_table(entries, sample, sys.stdout, footer=False)

    from api.demo import run_queue_demo

    run_queue_demo(bundled_ruleset_path(), bundled_sample_path(), context, args.database)
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from engine.samples import generate

    if args.count < 0:
        raise UsageError("--count must be zero or more")
    if args.output:
        with args.output.open("w", encoding="utf-8") as out:
            write_jsonl(generate(args.count, seed=args.seed), out)
    else:
        write_jsonl(generate(args.count, seed=args.seed), sys.stdout)
    return EXIT_OK


# database ------------------------------------------------------------------------------------------

def _sessions() -> Any:
    """Sessions on the configured database."""
    from engine.store.db import make_engine, session_factory

    return session_factory(make_engine())


def cmd_db(args: argparse.Namespace) -> int:
    from engine.store.db import current_revision, database_url, upgrade

    if args.db_command == "upgrade":
        upgrade()
        print(f"{_shown_url(database_url())}: schema at revision {current_revision()}")
    else:
        print(current_revision() or "empty (run: ocgate db upgrade)")
    return EXIT_OK


def _shown_url(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_rulesets(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from engine.store.db import transaction
    from engine.store.models import RuleSetStatus, RuleSetVersion
    from engine.workflows.intake import add_ruleset_version

    sessions = _sessions()
    if args.rulesets_command == "add":
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {args.file}: {exc}") from None
        try:
            with transaction(sessions) as session:
                version = add_ruleset_version(session, text, source=str(args.file), created_by="cli",
                                              status=RuleSetStatus(args.status))
        except RuleSetError as exc:
            for problem in exc.problems:
                print(problem)
            return EXIT_BAD_INPUT
        print(f"{version.ruleset_id} version {version.version_label} revision {version.revision}: {version.status}")
        return EXIT_OK
    with sessions() as session:
        for v in session.scalars(select(RuleSetVersion).order_by(RuleSetVersion.ruleset_id, RuleSetVersion.id)):
            print(f"{v.id:>4}  {v.ruleset_id:<24} {v.version_label:<10} {v.revision}  {v.status:<8} "
                  f"{v.created_at:%Y-%m-%d %H:%M}")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from engine.store.db import transaction
    from engine.workflows.intake import ingest

    loaded = _entries_and_context(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    entries, context = loaded
    with transaction(_sessions()) as session:
        result = ingest(session, entries, actor=args.actor, source=str(args.entries), context=context)
    print(f"batch {result.batch_id}: {result.received} received, {result.created} new, {result.updated} changed, "
          f"{result.unchanged} unchanged, {result.withdrawn} withdrawn, {result.conflicts} conflicts; "
          f"{result.ready} ready to bill, {result.in_review} to review, {result.held} held")
    for held in result.held_rulesets:
        print(f"held: {held['ruleset_id']} revision {held['revision']} flagged {held['flagged']} of "
              f"{held['checked']} entries; its findings wait for a rule author")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from api.auth import Role, create_key
    from engine.store.db import transaction
    from engine.store.models import ApiKey

    sessions = _sessions()
    if args.keys_command == "create":
        with transaction(sessions) as session:
            key, text = create_key(session, name=args.name, role=Role(args.role))
        print(text)
        print(f"ocgate: key {key.prefix} for {key.name} ({key.role}) created; it is shown only this once",
              file=sys.stderr)
        return EXIT_OK
    if args.keys_command == "revoke":
        with transaction(sessions) as session:
            key = session.scalar(select(ApiKey).where(ApiKey.prefix == args.prefix))
            if key is None:
                raise UsageError(f"no key with prefix {args.prefix}")
            key.revoked_at = key.revoked_at or dt.datetime.now(dt.UTC)
        print(f"key {args.prefix} revoked; running servers stop accepting it within 30 seconds")
        return EXIT_OK
    with sessions() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            print(f"{key.prefix}  {key.role:<11} {key.name:<24} {key.created_at:%Y-%m-%d}  {state}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port)
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from engine.store.models import EntryRow, ViolationRow

    with _sessions()() as session:
        by_state = dict(session.execute(select(EntryRow.state, func.count()).group_by(EntryRow.state)).all())
        print("  ".join(f"{state}: {by_state.get(state, 0)}" for state in EntryState))
        waiting = (EntryState.IN_REVIEW, EntryState.HELD, EntryState.CONFLICT)
        states = (EntryState(args.state),) if args.state else waiting
        by_rule = session.execute(
            select(ViolationRow.rule_id, ViolationRow.severity, func.count())
            .join(EntryRow, EntryRow.id == ViolationRow.entry_id)
            .where(ViolationRow.current.is_(True), ViolationRow.rule_status == "active", EntryRow.state.in_(states))
            .group_by(ViolationRow.rule_id, ViolationRow.severity).order_by(func.count().desc())).all()
        if by_rule:
            print("\nRULE               SEVERITY  ENTRIES")
            for rule_id, severity, n in by_rule:
                print(f"{rule_id:<18} {severity:<9} {n:>7}")
        rows = session.execute(
            select(EntryRow.id, EntryRow.source_id, EntryRow.state, EntryRow.worst_severity, EntryRow.work_date,
                   EntryRow.timekeeper_name).where(EntryRow.state.in_(states))
            .order_by(EntryRow.work_date, EntryRow.id).limit(args.limit)).all()
        if rows:
            print(f"\n{'ID':>6}  {'SOURCE ID':<12} {'STATE':<10} {'WORST':<8} {'DATE':<10}  TIMEKEEPER")
            for row_id, source_id, state, worst, work_date, name in rows:
                print(f"{row_id:>6}  {source_id:<12} {state:<10} {worst or '-':<8} {work_date}  {name or '-'}")
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate, "demo": cmd_demo, "sample": cmd_sample, "db": cmd_db, "rulesets": cmd_rulesets,
    "ingest": cmd_ingest, "queue": cmd_queue, "keys": cmd_keys, "serve": cmd_serve, **INVOICE_COMMANDS,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
