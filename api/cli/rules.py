"""``ocgate rules check|test|schema``: rule files, checked, tested and described."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK, CliError
from engine.rules.backends import DURABLE_AVAILABLE, resolve_backend
from engine.rules.compiler import compile_ruleset
from engine.rules.loader import RuleSetError, load_file
from engine.rules.ruletests import discover, run_file
from engine.rules.schema import ruleset_schema


def add_parser(sub: Any) -> None:
    rules = sub.add_parser("rules", help="check, test and describe rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate rule files (exit 2 if any is malformed)")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(handler=check_files)
    test = rules_sub.add_parser("test", help="run the tests beside each rule file (exit 1 on failure)")
    test.add_argument("paths", nargs="+", type=Path)
    test.add_argument("--backend", choices=["all", "python", "durable"], default="all")
    test.set_defaults(handler=test_files)
    schema = rules_sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema.set_defaults(handler=print_schema)


def check_files(args: argparse.Namespace) -> int:
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
