"""``ocgate timekeepers import|list|show|rates``: the firm's timekeeper table (LEDES ids, classifications, source
user ids, standard rates); the file format is in docs/timekeepers.md. ``rates --on DATE`` prints the standard
rates in force on a day, as a ``rate_freeze`` block to paste into a rule set."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.cli.common import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK, CliError, date, sessions
from engine.store.db import transaction
from engine.workflows import sources, timekeepers
from engine.workflows.timekeepers import TimekeeperFileError


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("timekeepers", help="the firm's timekeeper table: LEDES ids, classifications, "
                            "source user ids, standard rates")
    tk_sub = parser.add_subparsers(dest="timekeepers_command", required=True)
    load = tk_sub.add_parser("import", help="add or update the timekeepers of a CSV file (all or nothing)")
    load.add_argument("file", type=Path)
    tk_sub.add_parser("list", help="list the table")
    show = tk_sub.add_parser("show", help="one timekeeper with source ids and rates")
    show.add_argument("ledes_id")
    rates = tk_sub.add_parser("rates", help="the standard rates in force on a date, as a rate_freeze block for a "
                              "rule set (docs/rules.md)")
    rates.add_argument("--on", required=True, type=date, metavar="DATE", help="the day (YYYY-MM-DD), such as the "
                       "day the matter opened")
    rates.add_argument("--source", metavar="NAME", help="only timekeepers with a user id in this source: a "
                       "configured source's name, or a source system of the table (clio, mattero, ...)")
    rates.add_argument("--currency", help="the rates in this currency (the rule set's); without it, each "
                       "timekeeper's one currency in force that day")
    rates.add_argument("--timekeepers", metavar="TK1,TK2", help="only these LEDES ids")
    rates.add_argument("--format", choices=["yaml", "table", "json"], default="yaml")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    factory = sessions()
    if args.timekeepers_command == "import":
        try:
            text = args.file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
        try:
            with transaction(factory) as session:
                result = timekeepers.import_csv(session, text, source=str(args.file))
        except TimekeeperFileError as exc:
            for problem in exc.problems:
                print(f"ocgate: {problem}", file=sys.stderr)
            print(f"ocgate: {exc.message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        changed = f" ({', '.join(result.updated)})" if result.updated else ""
        print(f"{args.file}: {len(result.created)} new, {len(result.updated)} changed{changed}, {result.unchanged} "
              f"unchanged; {result.rates_removed} rates and {result.source_ids_removed} source ids no longer in "
              "the file removed")
        return EXIT_OK
    if args.timekeepers_command == "rates":
        return _rates(factory, args)
    with factory() as session:
        if args.timekeepers_command == "show":
            _show(timekeepers.get(session, args.ledes_id))
            return EXIT_OK
        records = timekeepers.timekeepers(session)
    print(f"{'LEDES ID':<20} {'CLASS':<7} {'NAME':<28} {'TITLE':<20} SOURCE IDS")
    for tk in records:
        source_ids = ", ".join(f"{s.source_system}:{s.source_user_id}" for s in tk.source_ids) or "-"
        print(f"{tk.ledes_id:<20} {tk.classification or '-':<7} {tk.name:<28} {tk.title or '-':<20} {source_ids}")
    return EXIT_OK


def _show(tk: timekeepers.TimekeeperRecord) -> None:
    print(f"{tk.ledes_id}  {tk.name}  {tk.classification or '-'}  ({tk.title or 'no title'})")
    for source_id in tk.source_ids:
        print(f"  source id  {source_id.source_system}:{source_id.source_user_id}")
    for rate, following in zip(tk.rates, (*tk.rates[1:], None), strict=True):  # sorted by currency, then start
        if rate.effective_to:
            until = f"to {rate.effective_to}"
        elif following and following.currency == rate.currency:
            until = f"to {following.effective_from - dt.timedelta(days=1)} (the next rate starts)"
        else:
            until = "open-ended"
        print(f"  rate       {rate.currency} {rate.rate:>10}  from {rate.effective_from} {until}")


# rates --on DATE ----------------------------------------------------------------------------------------

_CURRENCY = re.compile(r"[A-Za-z]{3}", re.ASCII)
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._-]*", re.ASCII)
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # plain, these are not text in YAML
WIDTH = 100  # the by_timekeeper line wraps here


def _rates(factory: sessionmaker[Session], args: argparse.Namespace) -> int:
    """The standard rates in force on ``--on``: printed (yaml, table or json) for the timekeepers that have one
    in the currency; the others listed on stderr with why. Exit 0 when a rate was printed, 1 when none."""
    currency = args.currency
    if currency is not None:
        if not _CURRENCY.fullmatch(currency):
            raise CliError(f"--currency {currency!r} is not an ISO 4217 currency code (such as USD)")
        currency = currency.upper()
    ledes_ids = None
    if args.timekeepers is not None:
        ledes_ids = [tk.strip() for tk in args.timekeepers.split(",")]
        if not all(ledes_ids):
            raise CliError(f"--timekeepers {args.timekeepers!r}: write LEDES ids separated by commas (TK1001,TK1002)")
    with factory() as session:
        system, source = _source_system(session, args.source) if args.source else (None, "")
        found = timekeepers.rates_on(session, args.on, currency=currency, source_system=system, ledes_ids=ledes_ids)
    rated = [r for r in found if r.rate is not None]
    currencies = sorted({r.currency for r in rated if r.currency})
    if len(currencies) > 1:  # a freeze is in the rule set's one currency
        raise CliError(f"the rates in force on {args.on} are in {' and '.join(currencies)}: name the rule set's "
                       "currency with --currency")
    for r in found:
        if r.rate is None:
            hint = ": name the rule set's currency with --currency" if currency is None and r.in_force else ""
            who = f"{r.ledes_id} ({r.name})" if r.name else r.ledes_id
            print(f"ocgate: {who}: {r.missing}{hint}; left out", file=sys.stderr)
    used = currency or (currencies[0] if currencies else None)
    comment = (f"{used + ' ' if used else ''}standard rates in force on {args.on}, from the timekeeper table"
               f"{source}")
    if args.format == "json":
        print(json.dumps({"as_of": args.on.isoformat(), "currency": used, "source_system": system,
                          "by_timekeeper": {r.ledes_id: str(r.rate) for r in rated},
                          "left_out": [{"ledes_id": r.ledes_id, "reason": r.missing} for r in found
                                       if r.rate is None]}, indent=2))
    elif rated and args.format == "table":
        print(f"# {comment}")
        print(f"{'LEDES ID':<20} {'NAME':<28} {'CUR':<3} {'RATE':>10}  IN FORCE")
        for r in rated:
            period = f"{r.since} to {r.until}" if r.until else f"{r.since} open-ended"
            print(f"{r.ledes_id:<20} {r.name or '-':<28} {r.currency:<3} {r.rate!s:>10}  {period}")
    elif rated:
        print(f"# {comment}")
        print("rate_freeze:")
        print(f"  as_of: {args.on}")
        print(_flow_lines("  by_timekeeper: ", [f"{_yaml_key(r.ledes_id)}: {r.rate}" for r in rated]))
    if not rated:
        asked = f" with a {system} user id" if system and ledes_ids is None else ""
        print(f"ocgate: no timekeeper{asked} has a {used + ' ' if used else ''}standard rate in force on {args.on}"
              if found else f"ocgate: the timekeeper table has no timekeepers{asked}", file=sys.stderr)
        return EXIT_FOUND
    return EXIT_OK


def _source_system(session: Session, name: str) -> tuple[str, str]:
    """``--source``: a configured source's name, or a source system the table has user ids in; the system, and
    how the comment names it."""
    configured = {c.name: c.source_system for c in sources.connections(session)}
    if name in configured:
        system = configured[name]
        return system, f" (timekeepers with a {system} user id; source {name})"
    systems = timekeepers.source_systems(session)
    if name.lower() in systems:
        return name.lower(), f" (timekeepers with a {name.lower()} user id)"
    raise CliError(f"no source named {name!r} (configured sources: {', '.join(sorted(configured)) or 'none'}; "
                   f"source systems in the timekeeper table: {', '.join(systems) or 'none'})")


def _yaml_key(ledes_id: str) -> str:
    """The LEDES id as a YAML key that reads back as that text: quoted where plain YAML would read a number,
    a date, true/false or null."""
    if _PLAIN_KEY.fullmatch(ledes_id) and ledes_id.lower() not in _YAML_WORDS:
        return ledes_id
    return f'"{ledes_id}"'  # LEDES ids hold no quote or backslash


def _flow_lines(head: str, items: list[str]) -> str:
    """``head{a: 1, b: 2}``, wrapped at WIDTH, continuation lines indented past the key."""
    lines, line = [], head + "{"
    for i, item in enumerate(items):
        text = item + ("}" if i == len(items) - 1 else ",")
        if len(line) + len(text) + 1 > WIDTH and not line.endswith("{"):
            lines.append(line)
            line = "    " + text
        else:
            line += ("" if line.endswith("{") else " ") + text
    return "\n".join([*lines, line])
