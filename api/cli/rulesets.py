"""``ocgate rulesets add|list``: rule set versions in the database."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_BAD_INPUT, EXIT_OK, CliError, sessions
from engine.rules.loader import RuleSetError
from engine.store.db import transaction
from engine.store.models import RuleSetStatus
from engine.workflows import rulesets


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("rulesets", help="rule set versions in the database")
    rulesets_sub = parser.add_subparsers(dest="rulesets_command", required=True)
    add = rulesets_sub.add_parser("add", help="store a rule file as a new version")
    add.add_argument("file", type=Path)
    add.add_argument("--status", choices=["draft", "active", "shadow"], default="draft")
    rulesets_sub.add_parser("list", help="list the stored versions")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    factory = sessions()
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
