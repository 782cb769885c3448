"""``ocgate report findings``: what the findings add up to over a window of work dates (by rule, client, matter,
timekeeper, month and severity; write-downs proposed and made; portal rejections; the share billed clean)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from api.cli.common import EXIT_OK, date, sessions
from engine.workflows import reports


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("report", help="what the findings add up to")
    report_sub = parser.add_subparsers(dest="report_command", required=True)
    found = report_sub.add_parser(
        "findings", help="findings by rule, client, matter, timekeeper and month; write-downs; portal rejections",
        description="Added up by the database over the entries with a work date in the window.")
    found.add_argument("--from", dest="start", type=date, metavar="DATE", help="first work date")
    found.add_argument("--to", dest="end", type=date, metavar="DATE", help="last work date")
    found.add_argument("--client", action="append", default=[], metavar="ID",
                       help="only this client's entries (LEDES or source client id; repeat for more)")
    found.add_argument("--top", type=int, metavar="N", help="groups per breakdown (default: all; table: 10)")
    found.add_argument("--format", choices=["table", "json", "csv"], default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    top = args.top if args.top is not None or args.format != "table" else 10
    with sessions()() as session, session.begin():
        report = reports.findings_report(session, start=args.start, end=args.end, clients=args.client, top=top)
    if args.format == "json":
        json.dump(reports.as_json(report), sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        sys.stdout.write(reports.as_csv(report))
    else:
        print(_table(report))
    return EXIT_OK


def _money(amounts: dict[str, Any]) -> str:
    return ", ".join(f"{currency} {amount}" for currency, amount in sorted(amounts.items())) or "-"


def _table(report: reports.FindingsReport) -> str:
    span = (f"work dates {report.start or 'any'} to {report.end or 'any'}" if report.start or report.end
            else "every work date")
    clients = f", clients {', '.join(report.clients)}" if report.clients else ""
    share = f"{report.clean_share * 100:.1f}%" if report.clean_share is not None else "-"
    lines = [f"findings report: {span}{clients}",
             f"entries {report.entries:,}; flagged {report.flagged_entries:,} ({report.findings:,} findings); "
             f"billed {report.billed:,}, of which clean {report.clean:,} ({share})",
             f"write-downs proposed: {_money(report.proposed)} ({report.proposed_count:,} findings); "
             f"made by reviewers: {_money(report.reviewed)} ({report.reviewed_count:,} adjustments)"]
    for dim, groups in report.by.items():
        if not groups:
            continue
        lines.append(f"by {dim}:")
        width = max(len(g.key or "-") for g in groups)
        for g in groups:
            extra = f"  write-down {_money(g.write_down)}" if g.write_down else ""
            lines.append(f"  {(g.key or '-').ljust(width)}  {g.findings:>9,} findings  {g.entries:>9,} entries{extra}")
    if report.rejections:
        lines.append("portal rejections:")
        for r in report.rejections:
            lines.append(f"  {r['reason_code'] or '-'}  {r['reason']} ({r['kind']}): {r['count']:,}, "
                         f"{_money(r['amount'])}")
    return "\n".join(lines)
