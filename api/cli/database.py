"""``ocgate db upgrade|current|backup|restore``: the database schema, and backups of the whole store
(``OCGATE_DATABASE_URL``, default sqlite:///ocgate.db)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, shown_url
from engine.store.db import current_revision, database_url, upgrade


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="the database (OCGATE_DATABASE_URL, default sqlite:///ocgate.db)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="create or migrate the schema to the newest version")
    db_sub.add_parser("current", help="print the schema revision")
    backup = db_sub.add_parser("backup", help="write a backup of the whole store to FILE while it runs (SQLite: "
                                              "its online backup; PostgreSQL: pg_dump's custom format)")
    backup.add_argument("file", type=Path)
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    restore = db_sub.add_parser("restore", help="restore a backup FILE into the configured database, which must be "
                                                "empty (a new SQLite file, or a new PostgreSQL database)")
    restore.add_argument("file", type=Path)
    db.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.store import backup

    shown = shown_url(database_url())
    if args.db_command == "upgrade":
        upgrade()
        print(f"{shown}: schema at revision {current_revision()}")
    elif args.db_command == "backup":
        done = backup.backup(args.file, overwrite=args.force)
        print(f"{shown}: backed up to {done.path} ({done.size} bytes, {done.kind})")
    elif args.db_command == "restore":
        backup.restore(args.file)
        revision = current_revision()
        head = _head()
        print(f"{shown}: restored from {args.file}; schema at revision {revision or 'none'}")
        if revision != head:
            print(f"the backup is from an older version of ocgate: run `ocgate db upgrade` (to revision {head})")
    else:
        print(current_revision() or "empty (run: ocgate db upgrade)")
    return EXIT_OK


def _head() -> str | None:
    from engine.store.health import head_revision

    return head_revision()
