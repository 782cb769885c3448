"""``ocgate invoice build|preview|show|submit|status|void``: LEDES invoices built from the entries ready to
bill, submitted exactly once, and followed at the client's portal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.cli.common import EXIT_OK, EXIT_TEMPFAIL, date, sessions
from connectors.destinations import registry
from engine.ledes import FORMATS
from engine.ledes.profile import Discount
from engine.store.db import transaction
from engine.workflows.billing import invoices


def add_parser(sub: Any) -> None:
    invoice = sub.add_parser("invoice", help="build LEDES invoices, submit them, follow their status")
    inv_sub = invoice.add_subparsers(dest="invoice_command", required=True)
    for name, text in (("build", "build an invoice from the entries ready to bill and lock them"),
                       ("preview", "show what build would produce; nothing is stored")):
        p = inv_sub.add_parser(name, help=text)
        p.add_argument("--client", required=True, help="LEDES client id")
        p.add_argument("--from", dest="start", type=date, required=True, help="billing period start")
        p.add_argument("--to", dest="end", type=date, required=True, help="billing period end")
        p.add_argument("--matter", action="append", default=[], help="law firm matter id (repeat)")
        p.add_argument("--date", type=date, help="invoice date (default today)")
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
    invoice.set_defaults(handler=run)


def _discount(text: str) -> Any:
    from decimal import Decimal, InvalidOperation

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


def _summary(row: Any) -> None:
    print(f"invoice {row.number}: client {row.client_id}, matters {', '.join(row.matters)}, "
          f"{row.period_start}..{row.period_end}, {row.line_count} lines, total {_money(row.total)}; "
          f"{row.status}" + (f" at {row.destination} ({row.portal_state})" if row.destination else "")
          + (f"; last error: {row.last_error}" if row.last_error else ""))


def _request(args: argparse.Namespace) -> invoices.BuildRequest:
    return invoices.BuildRequest(client_id=args.client, period_start=args.start, period_end=args.end,
                                 matters=tuple(args.matter), invoice_date=args.date, number=args.number,
                                 description=args.description, format=args.format, discounts=tuple(args.discount))


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.invoice_command](args)


def build(args: argparse.Namespace) -> int:
    with transaction(sessions()) as session:
        if args.invoice_command == "preview":
            draft = invoices.prepare(session, _request(args))
            content = draft.content
            _print_lines(list(draft.invoice.lines), draft.metas)
            print(f"preview: {len(draft.invoice.lines)} lines, total {_money(draft.invoice.total)} ({draft.format}); "
                  "nothing stored")
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
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    with sessions()() as session:
        row = invoices.get(session, args.invoice)
        if args.ledes:
            sys.stdout.write(row.content + "\n")
            return EXIT_OK
        _summary(row)
        _print_lines(list(invoices.written_lines(row).values()))
        for event in invoices.events(session, row.id):
            print(f"  {event.at:%Y-%m-%d %H:%M:%S} {event.action:<16} {event.actor:<14} "
                  f"{json.dumps(event.detail, default=str)[:120]}")
    return EXIT_OK


def submit(args: argparse.Namespace) -> int:
    row = registry.submit(sessions(), args.invoice, destination=args.destination, actor=args.actor)
    print(f"invoice {row.number} submitted to {row.destination}: {row.portal_state} (reference "
          f"{row.destination_ref})")
    return EXIT_OK


def void(args: argparse.Namespace) -> int:
    with transaction(sessions()) as session:
        row = invoices.void(session, args.invoice, actor=args.actor, reason=args.reason)
        print(f"invoice {row.number} void; its entries are ready to bill again")
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    factory = sessions()
    if args.all:
        return _poll_all(factory, args)
    if not args.invoice:
        with factory() as session:
            for row in invoices.invoices(session, client_id=args.client, limit=50):
                print(f"{row.number:<14} {row.client_id:<10} {row.period_start}..{row.period_end} "
                      f"{_money(row.total):>12} {row.status:<10} {row.destination or '':<16} "
                      f"{row.portal_state or ''}")
        return EXIT_OK
    with factory() as session:
        row = invoices.get(session, args.invoice)
    if not args.no_poll and row.destination_ref:
        result = registry.poll(factory, row.id, actor=args.actor)
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
    return EXIT_OK


def _poll_all(factory: Any, args: argparse.Namespace) -> int:
    """Poll each submitted invoice still waiting for an outcome; one destination's failure stops no other."""
    results = registry.poll_waiting(factory, client_id=args.client, actor=args.actor)
    failed = 0
    for number, result in results:
        if isinstance(result, Exception):
            failed += 1
            print(f"{number}: not polled: {result.message}", file=sys.stderr)
            continue
        sent_back = sum(1 for r in result.applied if r.kind == "rejected" and r.entry_id)
        print(f"{number}: {result.state}" + (f"; {sent_back} entries back in the review queue" if sent_back else ""))
    print(f"{len(results)} invoices polled, {failed} failed")
    return EXIT_TEMPFAIL if failed else EXIT_OK


COMMANDS = {"build": build, "preview": build, "show": show, "submit": submit, "status": status, "void": void}
