"""``ocgate sample``: generated sample entries to try things on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, CliError
from engine.entry_io import write_jsonl
from engine.samples import generate


def add_parser(sub: Any) -> None:
    sample = sub.add_parser("sample", help="write generated sample entries as JSON lines")
    sample.add_argument("--count", type=int, default=300)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    sample.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CliError("--count must be zero or more")
    if args.output:
        with args.output.open("w", encoding="utf-8") as out:
            write_jsonl(generate(args.count, seed=args.seed), out)
    else:
        write_jsonl(generate(args.count, seed=args.seed), sys.stdout)
    return EXIT_OK
