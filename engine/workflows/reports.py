"""What the findings add up to over a window of work dates: findings by rule, client, matter, timekeeper, month
and severity; the write-downs the rules proposed and those reviewers made; what clients' portals refused, by
reason; and the share of billed entries that went out clean.

Everything is added up by the database with GROUP BY, on SQLite and PostgreSQL alike:

- **Findings** are the current findings of active-status rules (shadow findings create no work) on entries that
  are not withdrawn, with a work date in the window. ``findings`` counts (entry, rule) findings; ``entries`` the
  distinct entries among them. They read no entry: each violation keeps the entry's work date, client ids, matter,
  timekeeper and currency (``ViolationRow.entry_*``, written with the finding; an entry whose columns change is
  judged again and its findings written again), and a partial index on the current findings of active-status
  rules holds all the statements read (with the adjustment's amount, kept beside its JSON as
  ``adjustment_amount``): they never read the table's rows. A withdrawn entry has no current finding (withdrawing
  supersedes them), so the findings need no test of the entry's state. The index leads with the month and the
  entry's client, matter and timekeeper, then the rule and the entry: the findings stream out of it grouped by
  that finest combination of the entry-level dimensions, each group counting its distinct entries as it goes
  (no sort on SQLite, which has no hash aggregate; on PostgreSQL half the time of hashing a row per entry into
  the groups). A few thousand rows, rolled up here into each of those breakdowns and by severity: an entry falls
  in one combination, so its count adds up. The rules are counted by (combination, rule) the same way and added
  up by rule. The window's months bound the part of the index read.
- **Write-downs proposed**: the adjustments those findings propose (``amount``: the change to the line total,
  negative for a write-down), by rule and by the entry's currency. **Made by reviewers**: the ``write_down`` of
  each ``adjust`` action in the audit trail on entries in the window, by the entry's currency (read from the
  narrow ``entry_facts``; from the record only for an entry without a row there).
- **Billed and clean**: entries in the window that went out on an invoice (``invoiced``), and those of them
  with no finding of an active-status rule ever recorded (current or superseded): they went out as they came in.
- **Portal rejections**: by the portal's reason code (else its words) and kind (rejected or cut), received in the
  window (its dates, as UTC days), with the amounts in the invoice's currency.

Money is exact: PostgreSQL sums ``numeric``; SQLite, which has no decimal type, sums with an aggregate function
this module registers on the connection, in Python ``Decimal`` (never the float SQLite's own SUM would use).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.store.models import REPORT_CLIENT, REPORT_MONTH, REPORT_POSTGRESQL_WHERE, REPORT_SQLITE_WHERE

DIMENSIONS = ("rule", "client", "matter", "timekeeper", "month", "severity")
SEVERITIES = ("error", "warning", "info")  # the rule schema's
DECIMAL_SUM = "ocg_decimal_sum"
CSV_COLUMNS = ("section", "key", "currency", "findings", "entries", "amount")
WORK_MEM = "64MB"  # PostgreSQL's memory per sort or hash for the report's statements


class ReportError(Invalid):
    code = "invalid_report"


@dataclass
class Group:
    """One row of a breakdown: how many findings, on how many entries, and proposed write-downs by currency."""

    key: str | None
    findings: int
    entries: int
    write_down: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class FindingsReport:
    start: dt.date | None
    end: dt.date | None
    clients: tuple[str, ...]
    entries: int  # entries in the window (not withdrawn)
    flagged_entries: int  # of them, with a current finding of an active-status rule
    findings: int
    by: dict[str, list[Group]]  # dimension -> groups, most findings first
    proposed: dict[str, Decimal]  # currency -> the findings' proposed adjustments, added up
    proposed_count: int
    reviewed: dict[str, Decimal]  # currency -> reviewers' write-downs (adjust actions), added up
    reviewed_count: int
    billed: int
    clean: int
    rejections: list[dict[str, Any]]  # reason_code, reason, kind, count, amount by currency

    @property
    def clean_share(self) -> Decimal | None:
        """Billed entries that went out clean, as a share (four places), or None when nothing was billed."""
        if not self.billed:
            return None
        return (Decimal(self.clean) / Decimal(self.billed)).quantize(Decimal("0.0001"))


class _DecimalSum:
    """SQLite aggregate: the exact sum of decimal texts (NULLs skipped), as text; NULL when there were none."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, float):
            raise ValueError("a money value reached the report as a float")
        number = Decimal(value) if not isinstance(value, Decimal) else value
        self.total = number if self.total is None else self.total + number

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def _dialect(session: Session) -> str:
    """The dialect, with the decimal sum registered on SQLite's connection (once per connection)."""
    connection = session.connection()
    name = connection.dialect.name
    if name == "sqlite":
        raw = connection.connection.driver_connection
        if not getattr(raw, "_ocg_decimal_sum", False):
            raw.create_aggregate(DECIMAL_SUM, 1, _DecimalSum)  # type: ignore[union-attr]
            try:
                raw._ocg_decimal_sum = True  # type: ignore[union-attr]
            except AttributeError:
                pass  # sqlite3.Connection takes no attributes: registering again is harmless
    return name


def _money(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError("a money value came back from the database as a float")
    return value if isinstance(value, Decimal) else Decimal(value)


def findings_report(session: Session, *, start: dt.date | None = None, end: dt.date | None = None,
                    clients: Iterable[str] = (), top: int | None = None) -> FindingsReport:
    """The report over entries with a work date from ``start`` to ``end`` (inclusive, either open), of
    ``clients`` (LEDES or source client ids; none: all). ``top`` keeps that many groups per dimension."""
    if start is not None and end is not None and start > end:
        raise ReportError(f"the window starts ({start}) after it ends ({end})")
    if top is not None and top < 1:
        raise ReportError("top must be at least 1")
    clients = tuple(clients)
    name = _dialect(session)
    pg = name == "postgresql"
    params: dict[str, Any] = {"start": start, "end": end}
    params.update({f"client{i}": c for i, c in enumerate(clients)})
    marks = ", ".join(f":client{i}" for i in range(len(clients)))

    def entry_window(alias: str, live: str) -> str:
        """Entries (``alias``: entries or entry_facts) that are not withdrawn (``live``) in the window."""
        where = [live]
        if start is not None:
            where.append(f"{alias}.work_date >= :start")
        if end is not None:
            where.append(f"{alias}.work_date <= :end")
        if clients:
            where.append(f"({alias}.ledes_client_id IN ({marks}) OR {alias}.client_source_id IN ({marks}))")
        return " AND ".join(where)

    window = entry_window("e", "e.state <> 'withdrawn'")
    facts_window = entry_window("f", "NOT f.withdrawn" if pg else "f.withdrawn = 0")
    # The findings' own window, on the entry's columns each violation keeps (see the module's docstring). The
    # current/status test is written out (not bound) so that both databases use the partial index.
    # The report's index leads with the month: the window's months bound the part of it read, then the dates are
    # tested on each finding.
    month = REPORT_MONTH[name]
    found = [REPORT_POSTGRESQL_WHERE if pg else REPORT_SQLITE_WHERE]
    for bound, day, test in (("start", start, ">="), ("end", end, "<=")):
        if day is not None:
            found.append(f"{month} {test} :{bound}_month")
            found.append(f"entry_work_date {test} :{bound}")
            params[f"{bound}_month"] = day.replace(day=1) if pg else day.isoformat()[:7]
    if clients:
        found.append(f"(entry_ledes_client_id IN ({marks}) OR entry_client_source_id IN ({marks}))")
    found_window = " AND ".join(found)
    if pg:
        total = "SUM"
        # Sorts and hashes of many rows (the write-downs by rule, the clean entries' anti-join) in memory, not in
        # files; and short statements over many rows cost more to compile to machine code than they save (this
        # transaction only).
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    else:
        total = DECIMAL_SUM
    by: dict[str, list[Group]] = {dim: [] for dim in DIMENSIONS}
    findings = flagged = 0
    # 1. Findings and distinct entries by the finest combination of the entry-level dimensions (month, client,
    # matter, timekeeper), and by severity within it, as they stream out of the report's index in that order: a
    # few thousand rows, rolled up into each dimension here (an entry is in exactly one combination, so the
    # entries add up as well as the findings). Severity is one of the schema's three (any other value an
    # aggregate type might give counts under its own name, read separately). Row: client, matter, timekeeper,
    # month, entries, findings, then (entries, findings) per severity.
    known = " AND ".join(f"severity <> '{s}'" for s in SEVERITIES)
    combination = f"{month}, {REPORT_CLIENT}, entry_matter_id, entry_timekeeper"
    combined = (f"SELECT {REPORT_CLIENT}, entry_matter_id, entry_timekeeper, "
                + (f"to_char({month}, 'YYYY-MM')" if pg else month) + ", COUNT(DISTINCT entry_id), COUNT(*), "
                + ", ".join(f"COUNT(DISTINCT CASE WHEN severity = '{s}' THEN entry_id END), "
                            f"COUNT(CASE WHEN severity = '{s}' THEN 1 END)" for s in SEVERITIES)
                + f" FROM violations WHERE {found_window} GROUP BY {combination}")
    rollup: dict[str, dict[str | None, list[int]]] = {dim: {} for dim in ("client", "matter", "timekeeper",
                                                                          "month", "severity")}
    for row in session.execute(text(combined), params):
        entries, count = int(row[4]), int(row[5] or 0)
        flagged += entries
        findings += count
        for dim, key in zip(("client", "matter", "timekeeper", "month"), row[:4], strict=True):
            sums = rollup[dim].setdefault(None if key is None else str(key), [0, 0])
            sums[0] += count
            sums[1] += entries
        for k, severity in enumerate(SEVERITIES):
            with_it, of_it = int(row[6 + 2 * k] or 0), int(row[7 + 2 * k] or 0)
            if of_it:
                sums = rollup["severity"].setdefault(severity, [0, 0])
                sums[0] += of_it
                sums[1] += with_it
    if findings > sum(count for count, _ in rollup["severity"].values()):
        others = (f"SELECT severity, COUNT(*), COUNT(DISTINCT entry_id) FROM violations WHERE {found_window} "
                  f"AND {known} GROUP BY severity")
        for severity, count, entries in session.execute(text(others), params):
            rollup["severity"][severity] = [int(count), int(entries)]
    for dim, groups in rollup.items():
        by[dim] = [Group(key, count, entries) for key, (count, entries) in groups.items()]
    # 2. By rule, findings and distinct entries (not COUNT(*): two rule sets can share a rule id on one entry), by
    # (combination, rule) as they stream out of the index, added up by rule here (an entry is in one
    # combination, so its distinct entries add up).
    by_rule = (f"SELECT rule_id, COUNT(*), COUNT(DISTINCT entry_id) FROM violations WHERE {found_window} "
               f"GROUP BY {combination}, rule_id")
    rules: dict[str, list[int]] = {}
    for key, count, entries in session.execute(text(by_rule), params):
        sums = rules.setdefault(key, [0, 0])
        sums[0] += int(count)
        sums[1] += int(entries)
    by["rule"] = [Group(key, count, entries) for key, (count, entries) in rules.items()]
    # 3. The write-downs the findings propose, by rule and currency.
    proposals = (f"SELECT rule_id, entry_currency, COUNT(*), {total}(adjustment_amount) FROM violations WHERE "
                 f"{found_window} AND adjustment_amount IS NOT NULL GROUP BY rule_id, entry_currency")
    proposed_by_rule: dict[str, dict[str, Decimal]] = {}
    proposed: dict[str, Decimal] = {}
    proposed_count = 0
    for key, cur, count, value in session.execute(text(proposals), params):
        money = _money(value) or Decimal(0)
        currency_key = cur or "none"
        rule_totals = proposed_by_rule.setdefault(key, {})
        rule_totals[currency_key] = rule_totals.get(currency_key, Decimal(0)) + money
        proposed[currency_key] = proposed.get(currency_key, Decimal(0)) + money
        proposed_count += int(count)
    for group in by["rule"]:
        group.write_down = dict(sorted(proposed_by_rule.get(group.key or "", {}).items()))
    for dim, groups in by.items():
        groups.sort(key=lambda g: (g.key or "") if dim == "month" else (-g.findings, g.key or ""))
        if top is not None:
            del groups[top:]

    # 4. Entries in the window, billed ones, and billed ones with no finding of an active-status rule ever
    # recorded (an anti-join the database can hash, not a probe per entry).
    count_entries, billed = session.execute(text(
        f"SELECT COUNT(*), COUNT(CASE WHEN e.state = 'invoiced' THEN 1 END) FROM entries e WHERE {window}"),
        params).one()
    clean = session.scalar(text(
        f"SELECT COUNT(*) FROM entries e WHERE {window} AND e.state = 'invoiced' AND NOT EXISTS "
        "(SELECT 1 FROM violations w WHERE w.entry_id = e.id AND w.rule_status = 'active')"), params)
    # 5. Reviewers' write-downs, in the entry's currency: read from the narrow ``entry_facts`` (the wide entries
    # only for an entry that has no row there).
    if pg:
        reviewed_amount = "CAST(a.after ->> 'write_down' AS numeric)"
        record_currency = "e.record ->> 'currency'"
    else:
        reviewed_amount = "json_extract(a.after, '$.write_down')"
        record_currency = "json_extract(e.record, '$.currency')"
    reviewed_sql = (
        f"SELECT currency, COUNT(*), {total}(amount) FROM ("
        f"SELECT f.currency AS currency, {reviewed_amount} AS amount FROM review_actions a "
        f"JOIN entry_facts f ON f.entry_id = a.entry_id WHERE a.action = 'adjust' AND {facts_window} "
        f"UNION ALL SELECT {record_currency}, {reviewed_amount} FROM review_actions a "
        f"JOIN entries e ON e.id = a.entry_id WHERE a.action = 'adjust' AND {window} "
        "AND NOT EXISTS (SELECT 1 FROM entry_facts f WHERE f.entry_id = a.entry_id)"
        ") adjusted WHERE amount IS NOT NULL GROUP BY currency")
    reviewed: dict[str, Decimal] = {}
    reviewed_count = 0
    for cur, count, value in session.execute(text(reviewed_sql), params):
        reviewed[cur or "none"] = reviewed.get(cur or "none", Decimal(0)) + (_money(value) or Decimal(0))
        reviewed_count += int(count)

    received: list[str] = []
    rejection_params: dict[str, Any] = {}
    if start is not None:
        received.append("r.received_at >= :from_time")
        rejection_params["from_time"] = dt.datetime.combine(start, dt.time(), dt.UTC)
    if end is not None:
        received.append("r.received_at < :to_time")
        rejection_params["to_time"] = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    if clients:
        marks = ", ".join(f":client{i}" for i in range(len(clients)))
        received.append(f"i.client_id IN ({marks})")
        rejection_params.update({f"client{i}": c for i, c in enumerate(clients)})
    if not pg:  # SQLite keeps UTC timestamps as naive text: compare like with like
        rejection_params = {k: v.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, dt.datetime)
                            else v for k, v in rejection_params.items()}
    rejections_sql = (
        f"SELECT r.reason_code, MIN(r.reason), r.kind, i.currency, COUNT(*), {total}(r.amount) "
        "FROM portal_rejections r JOIN invoices i ON i.id = r.invoice_id"
        + (f" WHERE {' AND '.join(received)}" if received else "")
        + " GROUP BY r.reason_code, CASE WHEN r.reason_code IS NULL THEN r.reason END, r.kind, i.currency")
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for code, reason, kind, cur, count, value in session.execute(text(rejections_sql), rejection_params):
        row = grouped.setdefault((code, reason if code is None else None, kind), {
            "reason_code": code, "reason": reason, "kind": kind, "count": 0, "amount": {}})
        row["count"] += int(count)
        if value is not None:
            row["amount"][cur or "none"] = row["amount"].get(cur or "none", Decimal(0)) + (_money(value) or 0)
    rejections = sorted(grouped.values(), key=lambda r: (-r["count"], r["reason_code"] or "", r["reason"] or ""))
    return FindingsReport(start=start, end=end, clients=clients, entries=int(count_entries or 0),
                          flagged_entries=flagged, findings=findings, by=by, proposed=dict(sorted(proposed.items())),
                          proposed_count=proposed_count, reviewed=dict(sorted(reviewed.items())),
                          reviewed_count=reviewed_count, billed=int(billed or 0), clean=int(clean or 0),
                          rejections=rejections)


def _amounts(totals: dict[str, Decimal]) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in sorted(totals.items())}


def as_json(report: FindingsReport) -> dict[str, Any]:
    """The report as JSON-ready values (amounts as decimal text)."""
    return {
        "window": {"from": report.start.isoformat() if report.start else None,
                   "to": report.end.isoformat() if report.end else None, "clients": list(report.clients)},
        "entries": report.entries, "flagged_entries": report.flagged_entries, "findings": report.findings,
        "by": {dim: [{"key": g.key, "findings": g.findings, "entries": g.entries,
                      **({"write_down": _amounts(g.write_down)} if dim == "rule" else {})} for g in groups]
               for dim, groups in report.by.items()},
        "write_downs": {"proposed": {"findings": report.proposed_count, "amount": _amounts(report.proposed)},
                        "reviewed": {"actions": report.reviewed_count, "amount": _amounts(report.reviewed)}},
        "billed": {"entries": report.billed, "clean": report.clean,
                   "clean_share": str(report.clean_share) if report.clean_share is not None else None},
        "portal_rejections": [{**r, "amount": _amounts(r["amount"])} for r in report.rejections],
    }


def as_csv(report: FindingsReport) -> str:
    """The report as one CSV table in long form: ``section,key,currency,findings,entries,amount``. Sections:
    ``summary`` (keys entries, flagged_entries, findings, billed, clean, clean_share), one per dimension
    (``by_rule`` ...), ``write_down_proposed`` (by rule, and ``*`` for all), ``write_down_reviewed``, and
    ``portal_rejection`` (key: reason code, else the reason; findings: the kind; entries: how many)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    share = report.clean_share
    for key, value in (("entries", report.entries), ("flagged_entries", report.flagged_entries),
                       ("findings", report.findings), ("billed", report.billed), ("clean", report.clean)):
        writer.writerow(("summary", key, "", "", value, ""))
    writer.writerow(("summary", "clean_share", "", "", "", "" if share is None else str(share)))
    for dim, groups in report.by.items():
        for g in groups:
            writer.writerow((f"by_{dim}", _cell(g.key), "", g.findings, g.entries, ""))
    for g in report.by["rule"]:
        for currency, amount in g.write_down.items():
            writer.writerow(("write_down_proposed", _cell(g.key), currency, "", "", str(amount)))
    for currency, amount in report.proposed.items():
        writer.writerow(("write_down_proposed", "*", currency, report.proposed_count, "", str(amount)))
    for currency, amount in report.reviewed.items():
        writer.writerow(("write_down_reviewed", "*", currency, report.reviewed_count, "", str(amount)))
    for r in report.rejections:
        for currency, amount in (r["amount"] or {"": None}).items():
            writer.writerow(("portal_rejection", _cell(r["reason_code"] or r["reason"]), currency, r["kind"],
                             r["count"], "" if amount is None else str(amount)))
    return out.getvalue()


def _cell(value: str | None) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
