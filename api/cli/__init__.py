"""The ``ocgate`` command line: one module per command group, each with ``add_parser`` (which sets the
group's handler) and the handler itself. Commands call workflow functions; none holds business logic.

Exit codes: 0 fine; 1 the check found what it looks for (error-severity violations, failing rule tests);
2 the input could not be used (a malformed rule or entry file, a bad option, an invoice that cannot be
built); 75 a remote system could not be reached (try again later: nothing is sent twice or lost).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from api import logs
from api.cli import (
    database,
    demo,
    destinations,
    entries,
    firm,
    ingest,
    invoice,
    keys,
    queue,
    report,
    rules,
    rulesets,
    sample,
    serve,
    sources,
    sync,
    timekeepers,
    validate,
    worker,
)
from api.cli.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_TEMPFAIL
from engine.errors import OcgateError
from engine.rules.backends import BackendUnavailable

GROUPS = (rules, validate, demo, database, rulesets, ingest, sources, sync, timekeepers, entries, keys, serve, worker,
          queue, firm, destinations, invoice, sample, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocgate", description="Check billing entries against Outside Counsel "
                                     "Guidelines before the invoice leaves the firm.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    parser.add_argument("--log-format", choices=logs.FORMATS, default=None,
                        help=f"log lines as plain text (the default) or one JSON object each (env {logs.FORMAT_ENV})")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.configure(args.log_format, logging.INFO if args.verbose else logging.WARNING)
    except ValueError as exc:  # OCGATE_LOG_FORMAT set to something else
        parser.error(str(exc))
    try:
        return args.handler(args)
    except BackendUnavailable as exc:
        print(f"ocgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OcgateError as exc:
        print(f"ocgate: {exc.message}", file=sys.stderr)
        for problem in exc.problems[1:20]:
            print(f"ocgate:   {problem}", file=sys.stderr)
        # A remote system that could not be reached: try again later (sysexits EX_TEMPFAIL).
        return EXIT_TEMPFAIL if exc.retryable else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (ocgate ... | head): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
