"""``ocgate entries export``: the stored entries as JSON lines, for an auditor or to compare with a source."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, sessions
from engine.store.models import EntryState
from engine.workflows import entries, sources


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("entries", help="the stored entries")
    entries_sub = parser.add_subparsers(dest="entries_command", required=True)
    export = entries_sub.add_parser("export", help="write the stored entries as JSON lines: per entry its review "
                                                   "state, versions and the canonical record")
    export.add_argument("--source", help="only this configured source's entries")
    export.add_argument("--state", choices=[s.value for s in EntryState])
    export.add_argument("--records-only", action="store_true", help="only the canonical records (what `ocgate "
                                                                     "ingest` reads)")
    export.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with sessions()() as session:
        system = tenant = None
        if args.source:
            connection = sources.get(session, args.source)
            system, tenant = connection.source_system, connection.source_tenant
        out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
        try:
            for item in entries.export(session, source_system=system, source_tenant=tenant, state=args.state):
                out.write(json.dumps(item["entry"] if args.records_only else item, ensure_ascii=False,
                                     separators=(",", ":")))
                out.write("\n")
        finally:
            if args.output:
                out.close()
    return EXIT_OK
