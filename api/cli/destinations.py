"""``ocgate destinations add|list``: where invoices go, directory drops and e-billing portals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, sessions, setting
from connectors.destinations import registry
from engine.ledes import FORMATS
from engine.store.db import transaction
from engine.workflows.billing import destinations


def add_parser(sub: Any) -> None:
    dest = sub.add_parser("destinations", help="where invoices go: directory drops and e-billing portals")
    dest_sub = dest.add_subparsers(dest="destinations_command", required=True)
    add = dest_sub.add_parser("add", help="configure a destination (or replace one of the same name)")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=registry.KINDS)
    add.add_argument("--path", help="directory drop: the folder")
    add.add_argument("--format", choices=FORMATS, help="LEDES format it takes (default 1998b)")
    add.add_argument("--client", action="append", default=[], help="a LEDES client id it serves (repeat)")
    add.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                     help="other settings, e.g. base_url=..., firm_id=..., client_secret_env=...")
    dest_sub.add_parser("list", help="list destinations")
    dest.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with transaction(sessions()) as session:
        if args.destinations_command == "add":
            settings = dict(args.set)
            if args.path:
                settings["path"] = str(Path(args.path).resolve())
            if args.format:
                settings["format"] = args.format
            registry.configure(session, args.name, kind=args.kind, settings=settings, clients=args.client)
            print(f"destination {args.name} ({args.kind}) saved")
            return EXIT_OK
        for row in destinations.configured(session):
            clients = ", ".join(row.clients) if row.clients else "any client"
            print(f"{row.name:<20} {row.kind:<13} {clients:<24} {json.dumps(row.settings, sort_keys=True)}")
    return EXIT_OK
