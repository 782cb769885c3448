"""``ocgate keys create|list|revoke``: API keys and their roles."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from api.cli.common import EXIT_OK, sessions
from engine.store.db import transaction
from engine.workflows import keys
from engine.workflows.keys import Role


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("keys", help="API keys")
    keys_sub = parser.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once; only a hash is stored)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="who or what uses it (shown in the audit trail)")
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    factory = sessions()
    if args.keys_command == "create":
        with transaction(factory) as session:
            key, text = keys.create_key(session, name=args.name, role=Role(args.role))
        print(text)
        print(f"ocgate: key {key.prefix} for {key.name} ({key.role}) created; it is shown only this once",
              file=sys.stderr)
        return EXIT_OK
    if args.keys_command == "revoke":
        with transaction(factory) as session:
            keys.revoke(session, args.prefix)
        print(f"key {args.prefix} revoked; running servers stop accepting it within 30 seconds")
        return EXIT_OK
    with factory() as session:
        for key in keys.keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            print(f"{key.prefix}  {key.role:<11} {key.name:<24} {key.created_at:%Y-%m-%d}  {state}")
    return EXIT_OK
