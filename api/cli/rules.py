"""``ocgate rules check|test|explain|schema``: rule files, checked, tested and described."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK, CliError
from engine.codes import closest
from engine.rules.backends import DURABLE_AVAILABLE, resolve_backend
from engine.rules.compiler import compile_ruleset
from engine.rules.explain import check_notes, explain_ruleset
from engine.rules.loader import RuleSetError, load_file
from engine.rules.ruletests import discover, run_file
from engine.rules.schema import ruleset_schema


def add_parser(sub: Any) -> None:
    rules = sub.add_parser("rules", help="check, test and describe rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate rule files, or every rule file in a folder (exit 2 if "
                                 "any is malformed)")
    check.add_argument("files", nargs="+", type=Path, metavar="PATH",
                       help="a rule file, or a folder: its *.yaml / *.yml files and sub-folders', "
                            "without the *.tests.yaml files beside them")
    check.set_defaults(handler=check_files)
    test = rules_sub.add_parser("test", help="run the tests beside each rule file (exit 1 on failure)")
    test.add_argument("paths", nargs="+", type=Path)
    test.add_argument("--backend", choices=["all", "python", "durable"], default="all")
    test.set_defaults(handler=test_files)
    explain = rules_sub.add_parser("explain", help="say in words what rules check, for the reviewer who signs "
                                   "off a guideline's translation")
    explain.add_argument("file", type=Path)
    explain.add_argument("rule_ids", nargs="*", metavar="RULE_ID", help="the rules to explain (default: all)")
    explain.add_argument("--all", action="store_true", help="every rule (the default when no RULE_ID is given)")
    explain.set_defaults(handler=explain_rules)
    schema = rules_sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema.set_defaults(handler=print_schema)


def rule_files(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """The rule files to check: each file as given (a missing one is reported by the loader, positioned), and
    a folder's ``*.yaml`` / ``*.yml`` files under it, sorted, skipping the ``.tests.yaml`` files beside them and
    any ``*.schema.*``. A folder with none is reported in the second item."""
    found: list[tuple[Path, str | None]] = []
    for path in paths:
        if not path.is_dir():
            found.append((path, None))
            continue
        inside = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in (".yaml", ".yml")
                  and not p.name.endswith((".tests.yaml", ".tests.yml")) and ".schema." not in p.name]
        if not inside:
            found.append((path, "no rule files (*.yaml, *.yml) in this folder"))
        found.extend((p, None) for p in inside)
    return found


def check_files(args: argparse.Namespace) -> int:
    files = rule_files(args.files)
    bad = 0
    for file, problem in files:
        if problem is not None:
            print(f"{file}: {problem}")
            bad += 1
            continue
        try:
            ruleset = load_file(file)
        except RuleSetError as exc:
            for found in exc.problems:
                print(found)
            bad += 1
            continue
        counts = Counter(rule.status for rule in ruleset.rules)
        shown = f" ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})" if counts else ""
        print(f"{file}: ok: {ruleset.id} version {ruleset.version}, {len(ruleset.rules)} rules{shown}, "
              f"revision {ruleset.revision}")
        for note in check_notes(ruleset):
            print(f"{file}: {note}")
        durable = compile_ruleset(ruleset, ("active", "shadow", "draft")).durable_problem
        if durable and DURABLE_AVAILABLE:
            print(f"{file}: note: {durable}; it will be evaluated with the Python backend")
    if len(files) > 1:
        print(f"{len(files) - bad} ok, {bad} with problems")
    return EXIT_BAD_INPUT if bad else EXIT_OK


def explain_rules(args: argparse.Namespace) -> int:
    try:
        ruleset = load_file(args.file)
    except RuleSetError as exc:
        for problem in exc.problems:
            print(problem)
        return EXIT_BAD_INPUT
    known = [rule.id for rule in ruleset.rules]
    wanted = None if args.all or not args.rule_ids else list(dict.fromkeys(args.rule_ids))
    for rule_id in wanted or ():
        if rule_id not in known:
            hint = closest(rule_id, known)
            raise CliError(f"{args.file}: no rule {rule_id!r}" + (f" (did you mean {hint}?)" if hint else "")
                           + f"; its rules are {', '.join(known) or 'none'}")
    print("\n".join(explain_ruleset(ruleset, wanted)))
    return EXIT_OK


def test_files(args: argparse.Namespace) -> int:
    try:
        files = discover(args.paths)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if not files:
        raise CliError(f"no rule files under {', '.join(map(str, args.paths))}")
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


def print_schema(args: argparse.Namespace) -> int:
    print(json.dumps(ruleset_schema(), indent=2))
    return EXIT_OK
