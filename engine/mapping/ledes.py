"""A LEDES 1998B or 98BI V2 invoice file as canonical entries, so a firm can gate an invoice before it uploads it.

Each fee (``F``) line is a time entry and each expense (``E``) line an expense entry; :data:`LEDES_FIELDS` is
the whole mapping, one line per canonical field. Invoice-level adjustments (``IF``, ``IE``) are not work
anyone did: they are not entries, and each is listed in the read's notes with its amount. The parser's
contract findings (totals that do not add up, line numbers used twice) are notes too: a portal would refuse
the file, so the firm hears of them before it uploads.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from engine.ledes import LedesInvoice, LedesLine, LedesParseError, parse
from engine.ledes.model import FIELDS_98BI
from engine.mapping.reader import CENT, MappedRead, RowProblem, UnreadableFile
from engine.model import Entry, FeeBasis

SOURCE_SYSTEM = "ledes"
ZERO = Decimal(0)
Getter = Callable[[LedesInvoice, LedesLine], Any]


def _amount(invoice: LedesInvoice, line: LedesLine) -> Decimal:
    """The line's total before its adjustment and tax, as the file states it (never units x cost)."""
    return line.total - line.adjustment - (line.tax_total or ZERO)


# The whole mapping: canonical field, the LEDES field(s) it comes from, and how. 98BI-only fields are empty
# (so unset) in a 1998B file, which has no currency: rules then use their rule set's.
LEDES_FIELDS: tuple[tuple[str, str, Getter], ...] = (
    ("source_system", "(ledes)", lambda i, ln: SOURCE_SYSTEM),
    ("source_tenant", "LAW_FIRM_ID", lambda i, ln: i.law_firm_id or "default"),
    ("source_id", "INVOICE_NUMBER", lambda i, ln: i.invoice_number),
    ("invoice_ref", "INVOICE_NUMBER", lambda i, ln: i.invoice_number),
    ("source_line_id", "LINE_ITEM_NUMBER", lambda i, ln: str(ln.line_number)),
    ("entry_kind", "EXP/FEE/INV_ADJ_TYPE: F time, E expense", lambda i, ln: "time" if ln.kind == "F" else "expense"),
    ("fee_basis", "(hourly for F, unit for E: a line does not say a fee was flat)",
     lambda i, ln: FeeBasis.HOURLY if ln.kind == "F" else FeeBasis.UNIT),
    ("work_date", "LINE_ITEM_DATE", lambda i, ln: ln.date),
    ("ledes_client_id", "CLIENT_ID", lambda i, ln: i.client_id),
    ("client_source_id", "CLIENT_ID", lambda i, ln: i.client_id),
    ("client_name", "CLIENT_NAME (98BI)", lambda i, ln: i.client.name),
    ("law_firm_matter_id", "LAW_FIRM_MATTER_ID", lambda i, ln: ln.law_firm_matter_id),
    ("matter_source_id", "LAW_FIRM_MATTER_ID", lambda i, ln: ln.law_firm_matter_id),
    ("client_matter_id", "CLIENT_MATTER_ID", lambda i, ln: ln.client_matter_id),
    ("matter_name", "MATTER_NAME (98BI)", lambda i, ln: ln.matter_name),
    ("timekeeper_ledes_id", "TIMEKEEPER_ID", lambda i, ln: ln.timekeeper_id),
    ("timekeeper_source_id", "TIMEKEEPER_ID", lambda i, ln: ln.timekeeper_id),
    ("timekeeper_name", "TIMEKEEPER_NAME", lambda i, ln: ln.timekeeper_name),
    ("timekeeper_first_name", "TIMEKEEPER_FIRST_NAME (98BI)", lambda i, ln: ln.timekeeper_first_name),
    ("timekeeper_last_name", "TIMEKEEPER_LAST_NAME (98BI)", lambda i, ln: ln.timekeeper_last_name),
    ("timekeeper_classification", "TIMEKEEPER_CLASSIFICATION", lambda i, ln: ln.timekeeper_classification),
    ("quantity", "LINE_ITEM_NUMBER_OF_UNITS", lambda i, ln: ln.units),
    ("hours_billed", "LINE_ITEM_NUMBER_OF_UNITS (F)", lambda i, ln: ln.units if ln.kind == "F" else None),
    ("unit_of_measure", "(hour for F)", lambda i, ln: "hour" if ln.kind == "F" else None),
    ("rate", "LINE_ITEM_UNIT_COST", lambda i, ln: ln.unit_cost),
    ("adjustment_amount", "LINE_ITEM_ADJUSTMENT_AMOUNT", lambda i, ln: ln.adjustment or None),
    ("amount", "LINE_ITEM_TOTAL - LINE_ITEM_ADJUSTMENT_AMOUNT - LINE_ITEM_TAX_TOTAL", _amount),
    ("tax_amount", "LINE_ITEM_TAX_TOTAL (98BI)", lambda i, ln: ln.tax_total),
    ("tax_code", "LINE_ITEM_TAX_TYPE (98BI)", lambda i, ln: ln.tax_type),
    ("currency", "INVOICE_CURRENCY (98BI)", lambda i, ln: i.currency),
    ("utbms_task_code", "LINE_ITEM_TASK_CODE", lambda i, ln: ln.task_code),
    ("utbms_activity_code", "LINE_ITEM_ACTIVITY_CODE", lambda i, ln: ln.activity_code),
    ("utbms_expense_code", "LINE_ITEM_EXPENSE_CODE", lambda i, ln: ln.expense_code),
    ("narrative", "LINE_ITEM_DESCRIPTION", lambda i, ln: ln.description),
)
_LEDES_NAME = {name: source.split(" (")[0] for name, source, _ in LEDES_FIELDS}


def ledes_entries(data: bytes | str, file: str) -> MappedRead:
    """The entries of a LEDES file; :class:`UnreadableFile` names the line and field of a malformed one."""
    try:
        parsed = parse(data, strict=True)
    except LedesParseError as exc:
        field = f" field {exc.column} ({FIELDS_98BI[exc.column - 1]}):" if exc.column and exc.line > 2 else ""
        raise UnreadableFile([f"{file}:{exc.line}:{field} {exc.reason}"]) from None
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    lines = _record_lines(text)
    entries: list[Entry] = []
    problems: list[RowProblem] = []
    notes = [f"{file}: LEDES: {problem}" for problem in parsed.problems]
    seen: dict[str, int] = {}
    for invoice in parsed.invoices:
        for item, number in zip(invoice.lines, lines[invoice.invoice_number], strict=True):
            if item.kind in ("IF", "IE"):
                what = "fees" if item.kind == "IF" else "expenses"
                notes.append(f"{file}:{number}: invoice {invoice.invoice_number} line {item.line_number}: an "
                             f"invoice-level adjustment on {what} ({item.kind}, {item.total}"
                             f"{', ' + repr(item.description) if item.description else ''}) is not an entry: "
                             f"it is not judged or stored")
                continue
            try:
                entry = Entry.model_validate(_record(invoice, item))
            except ValidationError as exc:
                problems.extend(RowProblem(file, number, _LEDES_NAME.get(str(e["loc"][0]), "line") if e["loc"]
                                           else "line", e["msg"]) for e in exc.errors())
                continue
            first = seen.setdefault(entry.entry_uid, number)
            if first != number:
                problems.append(RowProblem(file, number, "LINE_ITEM_NUMBER", f"invoice {invoice.invoice_number} "
                                           f"has line {item.line_number} on line {first} too; this line is left out"))
                continue
            entries.append(entry)
    label = "LEDES 1998B" if parsed.format == "1998b" else "LEDES 98BI V2"
    return MappedRead(entries, problems, sum(len(i.lines) for i in parsed.invoices), label, notes)


def _record_lines(text: str) -> dict[str, list[int]]:
    """The file line of each record, by invoice number in file order (how the parser groups the records)."""
    found: dict[str, list[int]] = {}
    for number, line in enumerate(text.split("\n")[2:], 3):
        if line.strip():
            found.setdefault(line.split("|", 2)[1], []).append(number)
    return found


def _record(invoice: LedesInvoice, line: LedesLine) -> dict[str, Any]:
    """The canonical record of a fee or expense line; ``AMOUNT_MISMATCH`` where units x cost is not its amount."""
    record = {name: get(invoice, line) for name, _, get in LEDES_FIELDS}
    units, cost = line.units, line.unit_cost
    if units is not None and cost is not None and abs(units * cost - record["amount"]) > CENT:
        record["data_quality_flags"] = ["AMOUNT_MISMATCH"]
    return record
