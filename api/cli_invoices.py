"""``ocgate firm``, ``ocgate destinations`` and ``ocgate invoice build|preview|show|submit|status|void``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from engine.ledes import FORMATS


class CliError(Exception):
    """A usage or state problem: printed as ``ocgate: ...`` and exit 2."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write key=value")
    try:
        return key, json.loads(value)  # numbers, objects (matter_ids={"2026-0017": 4711}), ...
    except json.JSONDecodeError:
        return key, value


def _discount(text: str) -> Any:
    from decimal import Decimal, InvalidOperation

    from engine.ledes.profile import Discount

    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[0] not in ("fees", "expenses") or not parts[2].strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write fees:5%:Text, or expenses:100:Text:E101")
    value = parts[1].strip()
    try:
        number = Decimal(value.rstrip("%"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or a percent") from None
    percent, amount = (number, None) if value.endswith("%") else (None, number)
    return Discount(kind=parts[0], description=parts[2].strip(), percent=percent, amount=amount,
                    expense_code=parts[3].strip().upper() if len(parts) == 4 else None)


def add_parsers(sub: Any) -> None:
    firm = sub.add_parser("firm", help="the firm's identity on invoices (LEDES law firm id, name, number prefix)")
    firm_sub = firm.add_subparsers(dest="firm_command", required=True)
    firm_sub.add_parser("show", help="print the firm settings")
    fset = firm_sub.add_parser("set", help="change firm settings")
    fset.add_argument("--law-firm-id", help="the firm's US federal tax id, as LEDES LAW_FIRM_ID")
    fset.add_argument("--invoice-prefix", help="letters and digits that start every invoice number")
    for field in ("name", "address-1", "address-2", "city", "state-or-region", "postcode", "country"):
        fset.add_argument(f"--{field}", help=f"the firm's {field.replace('-', ' ')} (LEDES 98BI)")

    dest = sub.add_parser("destinations", help="where invoices go: directory drops and e-billing portals")
    dest_sub = dest.add_subparsers(dest="destinations_command", required=True)
    add = dest_sub.add_parser("add", help="configure a destination (or replace one of the same name)")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=["directory", "legaltracker"])
    add.add_argument("--path", help="directory drop: the folder")
    add.add_argument("--format", choices=FORMATS, help="LEDES format it takes (default 1998b)")
    add.add_argument("--client", action="append", default=[], help="a LEDES client id it serves (repeat)")
    add.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                     help="other settings, e.g. base_url=..., firm_id=..., client_secret_env=...")
    dest_sub.add_parser("list", help="list destinations")

    invoice = sub.add_parser("invoice", help="build LEDES invoices, submit them, follow their status")
    inv_sub = invoice.add_subparsers(dest="invoice_command", required=True)
    for name, text in (("build", "build an invoice from the entries ready to bill and lock them"),
                       ("preview", "show what build would produce; nothing is stored")):
        p = inv_sub.add_parser(name, help=text)
        p.add_argument("--client", required=True, help="LEDES client id")
        p.add_argument("--from", dest="start", type=_date, required=True, help="billing period start")
        p.add_argument("--to", dest="end", type=_date, required=True, help="billing period end")
        p.add_argument("--matter", action="append", default=[], help="law firm matter id (repeat)")
        p.add_argument("--date", type=_date, help="invoice date (default today)")
        p.add_argument("--number", help="invoice number (letters and digits; default: prefix and sequence)")
        p.add_argument("--format", choices=FORMATS, help="override the client's LEDES format")
        p.add_argument("--description", help="INVOICE_DESCRIPTION")
        p.add_argument("--discount", type=_discount, action="append", default=[], metavar="KIND:VALUE:TEXT[:CODE]",
                       help="a one-off discount line, e.g. fees:5%%:Courtesy discount or "
                            "expenses:100:Credit on copies:E101 (repeat)")
        p.add_argument("--output", "-o", type=Path, help="also write the LEDES file here")
        p.add_argument("--actor", default="cli")
    show = inv_sub.add_parser("show", help="an invoice's lines, events and rejections")
    show.add_argument("invoice", help="id or number")
    show.add_argument("--ledes", action="store_true", help="print the LEDES file instead")
    submit = inv_sub.add_parser("submit", help="send an invoice to its destination (exactly once)")
    submit.add_argument("invoice", help="id or number")
    submit.add_argument("--to", dest="destination", help="destination name (default: the client's)")
    submit.add_argument("--actor", default="cli")
    status = inv_sub.add_parser("status", help="list invoices, or poll one's destination")
    status.add_argument("invoice", nargs="?", help="id or number; without it, list recent invoices")
    status.add_argument("--no-poll", action="store_true", help="show what is stored without asking the destination")
    status.add_argument("--client")
    status.add_argument("--all", action="store_true", help="poll every submitted invoice whose outcome is not known "
                                                          "yet (run it from cron)")
    status.add_argument("--actor", default="cli")
    void = inv_sub.add_parser("void", help="void a draft or rejected invoice and release its entries")
    void.add_argument("invoice")
    void.add_argument("--reason", required=True)
    void.add_argument("--actor", default="cli")


def _sessions() -> Any:
    from engine.store.db import make_engine, session_factory

    return session_factory(make_engine())


def cmd_firm(args: argparse.Namespace) -> int:
    from engine.ledes import Party
    from engine.ledes.profile import FirmSettings, check_prefix
    from engine.store.db import transaction
    from engine.workflows.billing.invoices import firm_settings, save_firm_settings

    with transaction(_sessions()) as session:
        current = firm_settings(session)
        if args.firm_command == "set":
            firm = dict(current.firm.__dict__)
            for field in ("name", "address_1", "address_2", "city", "state_or_region", "postcode", "country"):
                value = getattr(args, field)
                if value is not None:
                    firm[field] = value
            prefix = current.invoice_prefix
            if args.invoice_prefix is not None:
                try:
                    prefix = check_prefix(args.invoice_prefix)
                except ValueError as exc:
                    raise CliError(str(exc)) from None
            current = FirmSettings(law_firm_id=args.law_firm_id or current.law_firm_id, invoice_prefix=prefix,
                                   firm=Party(**firm))
            save_firm_settings(session, current)
    print(json.dumps(current.as_dict(), indent=2))
    return 0


def cmd_destinations(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from connectors.destinations.registry import check_settings
    from engine.store.db import transaction
    from engine.store.models import DestinationRow

    with transaction(_sessions()) as session:
        if args.destinations_command == "add":
            settings = dict(args.set)
            if args.path:
                settings["path"] = str(Path(args.path).resolve())
            if args.format:
                settings["format"] = args.format
            problems = check_settings(args.kind, settings)
            if problems:
                raise CliError("; ".join(problems))
            row = session.scalar(select(DestinationRow).where(DestinationRow.name == args.name))
            if row is None:
                row = DestinationRow(name=args.name, kind=args.kind, settings=settings, clients=args.client,
                                     created_at=dt.datetime.now(dt.UTC))
                session.add(row)
            else:
                row.kind, row.settings, row.clients = args.kind, settings, args.client
            print(f"destination {args.name} ({args.kind}) saved")
            return 0
        for row in session.scalars(select(DestinationRow).order_by(DestinationRow.name)):
            clients = ", ".join(row.clients) if row.clients else "any client"
            print(f"{row.name:<20} {row.kind:<13} {clients:<24} {json.dumps(row.settings, sort_keys=True)}")
    return 0


def _request(args: argparse.Namespace) -> Any:
    from engine.workflows.billing.invoices import BuildRequest

    return BuildRequest(client_id=args.client, period_start=args.start, period_end=args.end,
                        matters=tuple(args.matter), invoice_date=args.date, number=args.number,
                        description=args.description, format=args.format, discounts=tuple(args.discount))


def _money(value: Any) -> str:
    return "" if value is None else f"{value:,.2f}"


def _print_lines(lines: list[Any], metas: list[Any] | None = None, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"{'#':>4} {'type':<4} {'date':<10} {'matter':<12} {'units':>7} {'unit cost':>10} {'adjust':>10} "
          f"{'total':>11}  description", file=out)
    for i, line in enumerate(lines):
        note = ""
        if metas and metas[i].notes:
            note = f"  [{'; '.join(metas[i].notes)}]"
        units = "" if line.units is None else f"{line.units}"
        print(f"{line.line_number:>4} {line.kind:<4} {line.date:%Y-%m-%d} {line.law_firm_matter_id[:12]:<12} "
              f"{units:>7} {_money(line.unit_cost):>10} {_money(line.adjustment):>10} {_money(line.total):>11}  "
              f"{line.description[:50]}{note}", file=out)


def cmd_invoice(args: argparse.Namespace) -> int:
    from engine.store.db import transaction
    from engine.workflows.billing import invoices

    sessions = _sessions()
    command = args.invoice_command
    if command in ("build", "preview"):
        with transaction(sessions) as session:
            if command == "preview":
                draft = invoices.prepare(session, _request(args))
                content, total, count = draft.content, draft.invoice.total, len(draft.invoice.lines)
                _print_lines(list(draft.invoice.lines), draft.metas)
                print(f"preview: {count} lines, total {_money(total)} ({draft.format}); nothing stored")
            else:
                row = invoices.build(session, _request(args), actor=args.actor)
                content = row.content
                print(f"invoice {row.number} built: {row.line_count} lines, total {_money(row.total)} "
                      f"({row.format}, sha256 {row.sha256[:12]}); {row.line_count} entries locked")
                for note in row.notes:
                    print(f"  note: {note}")
        if args.output:
            args.output.write_bytes(content.encode("utf-8"))
            print(f"LEDES file written to {args.output}")
        return 0
    if command == "show":
        from engine import ledes

        with sessions() as session:
            row = invoices.get(session, args.invoice)
            if args.ledes:
                sys.stdout.write(row.content + "\n")
                return 0
            _summary(row)
            _print_lines(list(ledes.parse(row.content).invoices[0].lines))
            for event in invoices.events(session, row.id):
                print(f"  {event.at:%Y-%m-%d %H:%M:%S} {event.action:<16} {event.actor:<14} "
                      f"{json.dumps(event.detail, default=str)[:120]}")
        return 0
    if command == "submit":
        with sessions() as session:
            row = invoices.get(session, args.invoice)
            target = _open(session, row, args.destination)
        row = invoices.submit(sessions, row.id, target, actor=args.actor)
        print(f"invoice {row.number} submitted to {row.destination}: {row.portal_state} (reference "
              f"{row.destination_ref})")
        return 0
    if command == "void":
        with transaction(sessions) as session:
            row = invoices.void(session, args.invoice, actor=args.actor, reason=args.reason)
            print(f"invoice {row.number} void; its entries are ready to bill again")
        return 0
    # status
    if args.all:
        return _poll_all(sessions, args)
    if not args.invoice:
        from sqlalchemy import select

        from engine.store.models import InvoiceRow

        with sessions() as session:
            query = select(InvoiceRow).order_by(InvoiceRow.id.desc()).limit(50)
            if args.client:
                query = query.where(InvoiceRow.client_id == args.client)
            for row in session.scalars(query):
                print(f"{row.number:<14} {row.client_id:<10} {row.period_start}..{row.period_end} "
                      f"{_money(row.total):>12} {row.status:<10} {row.destination or '':<16} "
                      f"{row.portal_state or ''}")
        return 0
    with sessions() as session:
        row = invoices.get(session, args.invoice)
        target = None if args.no_poll or not row.destination_ref else _open(session, row, row.destination)
    if target is not None:
        result = invoices.poll(sessions, row.id, target, actor=args.actor)
        row = result.invoice
        for rejection in result.applied:
            where = f"line {rejection.line_number}" if rejection.line_number else "the invoice"
            print(f"  {rejection.kind}: {where}: {rejection.reason}"
                  + (f" -> entry {rejection.entry_id} back in the review queue" if rejection.kind == "rejected"
                     and rejection.entry_id else ""))
            proposal = rejection.proposal or {}
            if proposal.get("why"):
                print(f"    proposal ({proposal['kind']}): {proposal['why']}")
    _summary(row)
    return 0


def _poll_all(sessions: Any, args: argparse.Namespace) -> int:
    """Poll each submitted invoice still waiting for an outcome; one destination's failure stops no other."""
    from sqlalchemy import select

    from engine.store.models import InvoiceRow, InvoiceStatus
    from engine.workflows.billing import invoices

    final = ("delivered", "approved", "adjusted", "rejected", "paid")
    with sessions() as session:
        query = select(InvoiceRow.id, InvoiceRow.number).where(
            InvoiceRow.status == InvoiceStatus.SUBMITTED, InvoiceRow.portal_state.not_in(final)).order_by(InvoiceRow.id)
        if args.client:
            query = query.where(InvoiceRow.client_id == args.client)
        waiting = list(session.execute(query))
    failed = 0
    for invoice_id, number in waiting:
        try:
            with sessions() as session:
                row = invoices.get(session, invoice_id)
                target = _open(session, row, row.destination)
            result = invoices.poll(sessions, invoice_id, target, actor=args.actor)
            sent_back = sum(1 for r in result.applied if r.kind == "rejected" and r.entry_id)
            print(f"{number}: {result.state}" + (f"; {sent_back} entries back in the review queue" if sent_back
                                                  else ""))
        except (invoices.InvoiceError, CliError) as exc:
            failed += 1
            print(f"{number}: not polled: {getattr(exc, 'message', exc)}", file=sys.stderr)
    print(f"{len(waiting)} invoices polled, {failed} failed")
    return 75 if failed else 0


def _summary(row: Any) -> None:
    print(f"invoice {row.number}: client {row.client_id}, matters {', '.join(row.matters)}, "
          f"{row.period_start}..{row.period_end}, {row.line_count} lines, total {_money(row.total)}; "
          f"{row.status}" + (f" at {row.destination} ({row.portal_state})" if row.destination else "")
          + (f"; last error: {row.last_error}" if row.last_error else ""))


def _open(session: Any, row: Any, name: str | None) -> Any:
    from connectors.destinations.base import DestinationError
    from connectors.destinations.registry import open_destination
    from engine.workflows.billing import invoices

    configured = invoices.destination_for(session, row.client_id, name)
    try:
        return open_destination(configured.kind, configured.settings, name=configured.name)
    except DestinationError as exc:
        raise CliError(f"destination {configured.name}: {exc}") from None


COMMANDS = {"firm": cmd_firm, "destinations": cmd_destinations, "invoice": cmd_invoice}
