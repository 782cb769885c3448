"""The writer's contract: every way an invoice would be refused by a strict receiver, as messages that name
the invoice, the line and the LEDES field."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal, localcontext

from engine.ledes.model import (
    CENT,
    COST_PLACES,
    EXACT,
    FORMATS,
    INVOICE_LIMIT,
    LINE_LIMIT,
    LINE_TYPES,
    MONEY_PLACES,
    RATE_PLACES,
    UNITS_PLACES,
    ZERO,
    LedesError,
    LedesInvoice,
    LedesLine,
    Party,
    date_str,
    is_date,
    number_problem,
)

_ALNUM = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_BAD_TEXT = re.compile(r"[|\x00-\x1f\x7f]|\[\]")
MAX_ID = 20


def _text_problem(value: object) -> str | None:
    """Why ``value`` cannot be one field of a record (None when it can)."""
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__}"
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    bad = found.group()
    if bad == "|":
        what = "'|'"
    elif bad == "[]":
        what = "'[]'"
    elif bad in "\r\n":
        what = "a line break"
    else:
        what = f"the control character {bad!r}"
    return f"contains {what} (run sanitize() on free text)"


def label(number: object) -> str:
    return number if isinstance(number, str) and number.isprintable() and number else repr(number)


def _join_fields(values: tuple) -> str | None:
    try:
        return " ".join(values)
    except TypeError:
        return None


def check_invoice(invoice: LedesInvoice, fmt: str) -> list[str]:
    """Every way ``invoice`` breaks the writer's contract for ``fmt`` (an empty list when it is fine).

    Each message starts with the invoice number and, for a line, its LINE_ITEM_NUMBER, and names the
    LEDES field, e.g. ``invoice 2026031: line 4: LINE_ITEM_TOTAL 630.01 != 2 x 350.00 + -70.00 = 630.00``.
    """
    if fmt not in FORMATS:
        raise LedesError([f"unknown LEDES format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    if not isinstance(invoice, LedesInvoice):
        return [f"expected a LedesInvoice, not {type(invoice).__name__}"]
    with localcontext(EXACT):
        return _check_invoice(invoice, fmt == "98bi")


def _check_invoice(inv: LedesInvoice, bi: bool) -> list[str]:
    problems: list[str] = []
    add = problems.append
    where = f"invoice {label(inv.invoice_number)}: "

    # Invoice-level fields.
    number = inv.invoice_number
    if not isinstance(number, str) or not number:
        add(f"{where}INVOICE_NUMBER is required")
    elif not _ALNUM.fullmatch(number) or len(number) > MAX_ID:
        add(f"{where}INVOICE_NUMBER must be 1 to {MAX_ID} letters and digits only (no '-', '/', '_' or spaces)")
    for name, value in (("CLIENT_ID", inv.client_id), ("LAW_FIRM_ID", inv.law_firm_id)):
        if isinstance(value, str) and not value:
            add(f"{where}{name} is required")
        elif isinstance(value, str) and name == "LAW_FIRM_ID" and bi:
            ids = value.split("~")
            if len(ids) > 3 or not all(0 < len(part) <= MAX_ID for part in ids):
                add(f"{where}LAW_FIRM_ID must be up to three ids of 1 to {MAX_ID} characters separated by '~'")
        elif isinstance(value, str) and len(value) > MAX_ID:
            add(f"{where}{name} is longer than {MAX_ID} characters")
    dates_ok = True
    for name, value in (("INVOICE_DATE", inv.invoice_date), ("BILLING_START_DATE", inv.billing_start),
                        ("BILLING_END_DATE", inv.billing_end)):
        if not is_date(value):
            add(f"{where}{name} must be a date, not {type(value).__name__} {value!r}")
            dates_ok = False
    if dates_ok and inv.billing_start > inv.billing_end:
        add(f"{where}BILLING_START_DATE {date_str(inv.billing_start)} is after BILLING_END_DATE "
            f"{date_str(inv.billing_end)}")
    total_problem = number_problem(inv.total, MONEY_PLACES, INVOICE_LIMIT, True)
    if total_problem:
        add(f"{where}INVOICE_TOTAL {total_problem}")
    texts = [("CLIENT_ID", inv.client_id), ("LAW_FIRM_ID", inv.law_firm_id),
             ("INVOICE_DESCRIPTION", inv.description)]
    tax_problem = net_problem = None
    if bi:
        for name, value in (("INVOICE_CURRENCY", inv.currency), ("INVOICE_TAX_CURRENCY", inv.tax_currency)):
            if not isinstance(value, str):
                add(f"{where}{name} must be a three-letter ISO 4217 code, not {type(value).__name__}")
            elif not value and name == "INVOICE_CURRENCY":
                add(f"{where}{name} is required (an ISO 4217 code such as USD)")
            elif value and not _CURRENCY.fullmatch(value):
                add(f"{where}{name} {value!r} is not a three-letter ISO 4217 code in capitals")
        tax_problem = number_problem(inv.tax_total, MONEY_PLACES, INVOICE_LIMIT, True)
        net_problem = number_problem(inv.net_total, MONEY_PLACES, INVOICE_LIMIT, True)
        reported_problem = number_problem(inv.reported_tax_total, MONEY_PLACES, INVOICE_LIMIT, False)
        for name, problem in (("INVOICE_TAX_TOTAL", tax_problem), ("INVOICE_NET_TOTAL", net_problem),
                              ("INVOICE_REPORTED_TAX_TOTAL", reported_problem)):
            if problem:
                add(f"{where}{name} {problem}")
        if isinstance(inv.client_tax_id, str) and not inv.client_tax_id:
            add(f"{where}CLIENT_TAX_ID is required in 98BI")
        elif isinstance(inv.client_tax_id, str) and len(inv.client_tax_id) > MAX_ID:
            add(f"{where}CLIENT_TAX_ID is longer than {MAX_ID} characters")
        if inv.account_type not in ("O", "T"):
            add(f"{where}ACCOUNT_TYPE must be O or T, not {inv.account_type!r}")
        texts += [("PO_NUMBER", inv.po_number), ("CLIENT_TAX_ID", inv.client_tax_id)]
        for prefix, party in (("LAW_FIRM", inv.law_firm), ("CLIENT", inv.client)):
            if not isinstance(party, Party):
                add(f"{where}{prefix.lower()} must be a Party, not {type(party).__name__}")
                continue
            texts += [(f"{prefix}_NAME", party.name), (f"{prefix}_ADDRESS_1", party.address_1),
                      (f"{prefix}_ADDRESS_2", party.address_2), (f"{prefix}_CITY", party.city),
                      (f"{prefix}_STATEorREGION", party.state_or_region), (f"{prefix}_POSTCODE", party.postcode),
                      (f"{prefix}_COUNTRY", party.country)]
    for name, value in texts:
        problem = _text_problem(value)
        if problem:
            add(f"{where}{name} {problem}")

    # Lines. Most values repeat (hours, rates, zero adjustments), so each value found fine is remembered.
    lines = inv.lines
    if not isinstance(lines, (tuple, list)) or not lines:
        add(f"{where}has no line items")
        return problems
    seen: set[object] = set()
    reported_duplicates: set[object] = set()
    good_money: set[Decimal] = set()
    good_cost: set[Decimal] = set()
    good_units: set[Decimal] = set()
    good_rates: set[Decimal] = set()
    line_sum = ZERO
    tax_sum = ZERO
    sums_ok = True
    for ln in lines:
        if not isinstance(ln, LedesLine):
            add(f"{where}expected a LedesLine, not {type(ln).__name__}")
            sums_ok = False
            continue
        n = ln.line_number
        kind = ln.kind
        at = None  # the message prefix, built on the first problem only
        if type(n) is not int or n <= 0:
            at = f"{where}line {n!r}: "
            add(f"{at}LINE_ITEM_NUMBER must be a positive whole number, not {n!r}")
        elif n in seen:
            if n not in reported_duplicates:
                add(f"{where}line {n}: LINE_ITEM_NUMBER {n} is used more than once in the invoice")
                reported_duplicates.add(n)
        else:
            seen.add(n)
        if kind not in LINE_TYPES:
            at = at or f"{where}line {n}: "
            add(f"{at}EXP/FEE/INV_ADJ_TYPE must be one of {', '.join(LINE_TYPES)}, not {kind!r}")
        if type(ln.date) is not dt.date and not is_date(ln.date):
            at = at or f"{where}line {n}: "
            add(f"{at}LINE_ITEM_DATE must be a date, not {type(ln.date).__name__} {ln.date!r}")

        # Text fields: one pass over them all; field by field only when something is wrong.
        matter = ln.law_firm_matter_id
        values = (matter, ln.description, ln.task_code, ln.expense_code, ln.activity_code, ln.timekeeper_id,
                  ln.timekeeper_name, ln.timekeeper_classification, ln.client_matter_id)
        if bi:
            values += (ln.timekeeper_last_name, ln.timekeeper_first_name, ln.matter_name, ln.tax_type)
        joined = _join_fields(values)
        if joined is None or "|" in joined or "[]" in joined or not joined.isprintable():
            for name, value in zip(_LINE_TEXT_FIELDS_98BI if bi else _LINE_TEXT_FIELDS, values, strict=False):
                problem = _text_problem(value)
                if problem:
                    at = at or f"{where}line {n}: "
                    add(f"{at}{name} {problem}")
        if joined is not None:
            if not matter:
                at = at or f"{where}line {n}: "
                add(f"{at}LAW_FIRM_MATTER_ID is required")
            if (len(matter) > MAX_ID or len(ln.client_matter_id) > MAX_ID or len(ln.task_code) > MAX_ID
                    or len(ln.expense_code) > MAX_ID or len(ln.activity_code) > MAX_ID
                    or len(ln.timekeeper_id) > MAX_ID):
                at = at or f"{where}line {n}: "
                for name, value in (("LAW_FIRM_MATTER_ID", matter), ("CLIENT_MATTER_ID", ln.client_matter_id),
                                    ("LINE_ITEM_TASK_CODE", ln.task_code), ("LINE_ITEM_EXPENSE_CODE", ln.expense_code),
                                    ("LINE_ITEM_ACTIVITY_CODE", ln.activity_code),
                                    ("TIMEKEEPER_ID", ln.timekeeper_id)):
                    if len(value) > MAX_ID:
                        add(f"{at}{name} is longer than {MAX_ID} characters")
            if (kind == "E" or kind == "IE") and not ln.expense_code:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_EXPENSE_CODE is required on {kind} lines")

        # Numbers.
        units, cost, adj, total = ln.units, ln.unit_cost, ln.adjustment, ln.total
        numbers_ok = True
        for name, value, good, places, required in (
                ("LINE_ITEM_NUMBER_OF_UNITS", units, good_units, UNITS_PLACES, False),
                ("LINE_ITEM_UNIT_COST", cost, good_cost, COST_PLACES, False),
                ("LINE_ITEM_ADJUSTMENT_AMOUNT", adj, good_money, MONEY_PLACES, True),
                ("LINE_ITEM_TOTAL", total, good_money, MONEY_PLACES, True)):
            try:
                if type(value) is Decimal and value in good:
                    continue
            except TypeError:  # a signaling NaN cannot be hashed: reported below
                pass
            problem = number_problem(value, places, LINE_LIMIT, required)
            if problem:
                at = at or f"{where}line {n}: "
                add(f"{at}{name} {problem}")
                numbers_ok = False
            elif value is not None:
                good.add(value)  # type: ignore[arg-type]
        if kind == "F" or kind == "E":
            if units is None:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_NUMBER_OF_UNITS is required on {kind} lines")
                numbers_ok = False
            elif numbers_ok and units < 0:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_NUMBER_OF_UNITS {units} is negative (a credit belongs in the adjustment "
                    f"or an IF/IE line)")
            if cost is None:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_UNIT_COST is required on {kind} lines")
                numbers_ok = False
            elif numbers_ok and cost < 0:
                at = at or f"{where}line {n}: "
                add(f"{at}LINE_ITEM_UNIT_COST {cost} is negative (a credit belongs in the adjustment "
                    f"or an IF/IE line)")
        tax = ln.tax_total
        if bi:
            at = at or f"{where}line {n}: "
            numbers_ok = _check_line_tax(ln, at, add, good_money, good_rates, numbers_ok)
        if not numbers_ok:
            sums_ok = False
            continue
        if units is not None and cost is not None:
            expected = (units * cost + adj).quantize(CENT, ROUND_HALF_UP)
        else:
            expected = adj.quantize(CENT, ROUND_HALF_UP)
        if bi:
            expected += tax
            tax_sum += tax
        if total != expected:
            formula = f"{units} x {cost} + {adj}" if units is not None and cost is not None else \
                f"LINE_ITEM_ADJUSTMENT_AMOUNT {adj}"
            if bi:
                formula += f" + LINE_ITEM_TAX_TOTAL {tax}"
            add(f"{at or f'{where}line {n}: '}LINE_ITEM_TOTAL {total} != {formula} = {expected}")
        line_sum += total

    # Invoice sums.
    if sums_ok and not total_problem:
        if inv.total != line_sum:
            add(f"{where}INVOICE_TOTAL {inv.total} != sum of LINE_ITEM_TOTAL {line_sum}")
        if bi and not tax_problem and inv.tax_total != tax_sum:
            add(f"{where}INVOICE_TAX_TOTAL {inv.tax_total} != sum of LINE_ITEM_TAX_TOTAL {tax_sum}")
    if bi and not (total_problem or tax_problem or net_problem) and inv.net_total != inv.total - inv.tax_total:
        add(f"{where}INVOICE_NET_TOTAL {inv.net_total} != INVOICE_TOTAL {inv.total} - INVOICE_TAX_TOTAL "
            f"{inv.tax_total} = {inv.total - inv.tax_total}")
    return problems


def _check_line_tax(ln: LedesLine, at: str, add: Callable[[str], None], good_money: set[Decimal],
                    good_rates: set[Decimal], numbers_ok: bool) -> bool:
    """The 98BI line fields. ``numbers_ok`` says units, unit cost and adjustment are usable; returns whether
    the tax total is usable too (the line total is checked only then)."""
    if not ln.matter_name:
        add(f"{at}MATTER_NAME is required in 98BI")
    if (ln.kind == "F" or ln.timekeeper_name) and (not ln.timekeeper_last_name or not ln.timekeeper_first_name):
        add(f"{at}TIMEKEEPER_LAST_NAME and TIMEKEEPER_FIRST_NAME are required in 98BI on fee lines and lines "
            f"with a timekeeper")
    rate, tax = ln.tax_rate, ln.tax_total
    rate_ok = rate is None or (type(rate) is Decimal and rate.is_finite() and rate in good_rates)
    if not rate_ok:
        problem = number_problem(rate, RATE_PLACES, Decimal(1), False)
        if problem is None and rate < 0:  # type: ignore[operator]
            problem = f"{rate} is negative"
        if problem:
            add(f"{at}LINE_ITEM_TAX_RATE {problem} (a fraction in [0, 1), e.g. 0.2 for 20%)")
        else:
            good_rates.add(rate)  # type: ignore[arg-type]
            rate_ok = True
    if not (type(tax) is Decimal and tax.is_finite() and tax in good_money):
        problem = number_problem(tax, MONEY_PLACES, LINE_LIMIT, True)
        if problem:
            add(f"{at}LINE_ITEM_TAX_TOTAL {problem}")
            return False
        good_money.add(tax)  # type: ignore[arg-type]
    if numbers_ok and rate is not None and rate_ok:
        units, cost, adj = ln.units, ln.unit_cost, ln.adjustment
        both = units is not None and cost is not None
        net = units * cost + adj if both else adj  # type: ignore[operator]
        expected = (net * rate).quantize(CENT, ROUND_HALF_UP)
        if tax != expected:
            base = f"{units} x {cost} + {adj}" if both else f"LINE_ITEM_ADJUSTMENT_AMOUNT {adj}"
            add(f"{at}LINE_ITEM_TAX_TOTAL {tax} != ({base}) x {rate} = {expected}")
    return numbers_ok


_LINE_TEXT_FIELDS = ("LAW_FIRM_MATTER_ID", "LINE_ITEM_DESCRIPTION", "LINE_ITEM_TASK_CODE", "LINE_ITEM_EXPENSE_CODE",
                     "LINE_ITEM_ACTIVITY_CODE", "TIMEKEEPER_ID", "TIMEKEEPER_NAME", "TIMEKEEPER_CLASSIFICATION",
                     "CLIENT_MATTER_ID")
_LINE_TEXT_FIELDS_98BI = _LINE_TEXT_FIELDS + ("TIMEKEEPER_LAST_NAME", "TIMEKEEPER_FIRST_NAME", "MATTER_NAME",
                                              "LINE_ITEM_TAX_TYPE")


def check_invoices(invoices: Iterable[LedesInvoice], fmt: str) -> list[str]:
    """The problems of every invoice of one file, plus the file-wide rules: at least one invoice, invoice
    numbers unique, and LINE_ITEM_NUMBER unique across the whole file (strict receivers check file-wide)."""
    if fmt not in FORMATS:
        raise LedesError([f"unknown LEDES format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    invoices = list(invoices)
    if not invoices:
        return ["the file has no invoices"]
    problems: list[str] = []
    numbers: dict[object, int] = {}
    line_owner: dict[object, object] = {}
    shared: dict[object, list[object]] = {}
    for inv in invoices:
        problems += check_invoice(inv, fmt)
        if not isinstance(inv, LedesInvoice):
            continue
        number = inv.invoice_number
        try:
            numbers[number] = numbers.get(number, 0) + 1
        except TypeError:
            continue
        if numbers[number] > 1 or not isinstance(inv.lines, (tuple, list)):
            continue
        for ln in inv.lines:
            n = getattr(ln, "line_number", None)
            if type(n) is not int:
                continue
            owner = line_owner.setdefault(n, number)
            if owner != number:
                owners = shared.setdefault(n, [owner])
                if number not in owners:
                    owners.append(number)
    for number, count in numbers.items():
        if count > 1:
            problems.append(f"invoice {label(number)}: INVOICE_NUMBER appears {count} times in the file")
    for n, owners in shared.items():
        problems.append(f"LINE_ITEM_NUMBER {n} is used in more than one invoice "
                        f"({', '.join(label(o) for o in owners)}); line numbers must be unique across the file")
    return problems

