"""``ocgate firm show|set``: the firm's identity on invoices (LEDES law firm id, name, number prefix)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from api.cli.common import EXIT_OK, sessions
from engine.store.db import transaction
from engine.workflows.billing import invoices

ADDRESS = ("name", "address_1", "address_2", "city", "state_or_region", "postcode", "country")


def add_parser(sub: Any) -> None:
    firm = sub.add_parser("firm", help="the firm's identity on invoices (LEDES law firm id, name, number prefix)")
    firm_sub = firm.add_subparsers(dest="firm_command", required=True)
    firm_sub.add_parser("show", help="print the firm settings")
    fset = firm_sub.add_parser("set", help="change firm settings")
    fset.add_argument("--law-firm-id", help="the firm's US federal tax id, as LEDES LAW_FIRM_ID")
    fset.add_argument("--invoice-prefix", help="letters and digits that start every invoice number")
    for field in ADDRESS:
        option = field.replace("_", "-")
        fset.add_argument(f"--{option}", help=f"the firm's {field.replace('_', ' ')} (LEDES 98BI)")
    firm.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with transaction(sessions()) as session:
        if args.firm_command == "set":
            current = invoices.update_firm(session, law_firm_id=args.law_firm_id, invoice_prefix=args.invoice_prefix,
                                           **{field: getattr(args, field) for field in ADDRESS})
        else:
            current = invoices.firm_settings(session)
    print(json.dumps(current.as_dict(), indent=2))
    return EXIT_OK
