"""``ocgate db upgrade|current``: the database schema (``OCGATE_DATABASE_URL``, default sqlite:///ocgate.db)."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import EXIT_OK, shown_url
from engine.store.db import current_revision, database_url, upgrade


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="the database (OCGATE_DATABASE_URL, default sqlite:///ocgate.db)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="create or migrate the schema to the newest version")
    db_sub.add_parser("current", help="print the schema revision")
    db.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.db_command == "upgrade":
        upgrade()
        print(f"{shown_url(database_url())}: schema at revision {current_revision()}")
    else:
        print(current_revision() or "empty (run: ocgate db upgrade)")
    return EXIT_OK
