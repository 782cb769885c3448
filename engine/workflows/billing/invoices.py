"""Invoices: build one from the entries that are ready to bill, preview it, read it, void it; the firm's
settings and the client's invoicing profile they are built with. Submission is in
:mod:`engine.workflows.billing.submission`, the portal's rejections in :mod:`engine.workflows.billing.rejections`.

An invoice is built from entries that are clean or cleared by review (state ``ready``) for one client, one
billing period and one matter (several where the client's profile allows). Building locks the entries
(state ``invoiced``); voiding releases them. The LEDES file is written once, kept verbatim with its hash,
and what is submitted is exactly that file.

Errors are :class:`engine.workflows.billing.errors.InvoiceError` subclasses, each with its code and status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from engine import ledes
from engine.ledes.profile import (
    ALNUM,
    Discount,
    FirmSettings,
    InvoicingProfile,
    check_prefix,
    classification,
    parse_profile,
)
from engine.model import Entry, EntryKind, FeeBasis
from engine.store.models import (
    EntryRow,
    EntryState,
    InvoiceEvent,
    InvoiceLine,
    InvoiceRow,
    InvoiceStatus,
    ReviewAction,
    RuleSetStatus,
    Setting,
)
from engine.workflows.billing.errors import (
    EntriesChanged,
    InvalidInvoice,
    InvoiceNotFound,
    InvoiceStateError,
    NothingToBill,
    NumberTaken,
)
from engine.workflows.intake import lock_entries, reevaluate, replace_record
from engine.workflows.rulesets import client_rulesets

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
CHUNK = 1000


# Firm settings ------------------------------------------------------------------------------------------

def firm_settings(session: Session) -> FirmSettings:
    row = session.get(Setting, "firm")
    return FirmSettings.from_dict(row.value if row else None)


def save_firm_settings(session: Session, settings: FirmSettings) -> None:
    row = session.get(Setting, "firm")
    if row is None:
        session.add(Setting(key="firm", value=settings.as_dict(), updated_at=dt.datetime.now(dt.UTC)))
    else:
        row.value, row.updated_at = settings.as_dict(), dt.datetime.now(dt.UTC)
    session.flush()


def update_firm(session: Session, *, law_firm_id: str | None = None, invoice_prefix: str | None = None,
                **firm: str | None) -> FirmSettings:
    """Change the given firm settings (None: keep); ``firm`` holds the firm's address fields (LEDES 98BI)."""
    current = firm_settings(session)
    party = dict(current.firm.__dict__)
    unknown = sorted(set(firm) - set(party))
    if unknown:
        raise InvalidInvoice(f"unknown firm fields: {', '.join(unknown)}")
    party.update({key: value for key, value in firm.items() if value is not None})
    prefix = current.invoice_prefix
    if invoice_prefix is not None:
        try:
            prefix = check_prefix(invoice_prefix)
        except ValueError as exc:
            raise InvalidInvoice(str(exc)) from None
    updated = FirmSettings(law_firm_id=law_firm_id or current.law_firm_id, invoice_prefix=prefix,
                           firm=ledes.Party(**party))
    save_firm_settings(session, updated)
    return updated


# The client's profile -----------------------------------------------------------------------------------

def client_profile(session: Session, client_id: str) -> InvoicingProfile:
    """The ``invoicing`` block of the client's active rule set; the defaults when it has none."""
    for ruleset, status in client_rulesets(session, client_id):
        if status == RuleSetStatus.ACTIVE and ruleset.invoicing:
            return parse_profile(ruleset.invoicing)
    return InvoicingProfile()


# Building -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildRequest:
    client_id: str
    period_start: dt.date
    period_end: dt.date
    matters: tuple[str, ...] = ()
    invoice_date: dt.date | None = None
    number: str | None = None
    description: str | None = None
    format: str | None = None  # overrides the client's profile
    discounts: tuple[Discount, ...] = ()  # one-off invoice-level discounts, after the profile's own


@dataclass
class LineMeta:
    entry_id: int | None
    entry_version: int | None
    review_adjustment: Decimal | None
    notes: list[str]


@dataclass
class Draft:
    """A computed invoice, not yet stored: what preview shows and build stores."""

    invoice: ledes.LedesInvoice
    format: str
    content: str
    sha256: str
    profile: InvoicingProfile
    metas: list[LineMeta]
    notes: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def fees_total(self) -> Decimal:
        return sum((ln.total for ln in self.invoice.lines if ln.kind == "F"), ZERO)

    @property
    def expenses_total(self) -> Decimal:
        return sum((ln.total for ln in self.invoice.lines if ln.kind == "E"), ZERO)

    @property
    def adjustments_total(self) -> Decimal:
        return sum((ln.adjustment for ln in self.invoice.lines), ZERO)


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _fit_adjustment(base: Decimal, target: Decimal) -> Decimal:
    """A two-decimal adjustment with round(base + adjustment) == target, base being units x unit cost."""
    first = _round(target - base)
    for candidate in (first, first - CENT, first + CENT):
        if _round(base + candidate) == target:
            return candidate
    raise AssertionError(f"no cent adjustment takes {base} to {target}")  # unreachable: |base+first-target|<=0.005


def _units_and_cost(entry: Entry) -> tuple[Decimal | None, Decimal | None]:
    units = entry.quantity
    if units is None and entry.entry_kind is EntryKind.TIME:
        units = Decimal(1) if entry.fee_basis is FeeBasis.FLAT else entry.hours_billed
    if units is None and entry.entry_kind is EntryKind.EXPENSE:
        units = Decimal(1)
    cost = entry.rate
    if cost is None and entry.amount is not None and units:
        cost = entry.amount / units if units != 1 else entry.amount
    return units, cost


def _text(value: str | None, label: str, notes: list[str], max_length: int | None = None) -> str:
    if not value:
        return ""
    if (value.isascii() and value.isprintable() and "|" not in value and "[]" not in value and "  " not in value
            and value[0] != " " and value[-1] != " " and (max_length is None or len(value) <= max_length)):
        return value  # nothing to change (the common case): skip sanitize()
    clean, changes = ledes.sanitize(value, max_length=max_length)
    notes.extend(f"{label}: {change}" for change in changes)
    return clean


def _timekeeper_name(entry: Entry) -> str:
    if entry.timekeeper_last_name and entry.timekeeper_first_name:
        return f"{entry.timekeeper_last_name}, {entry.timekeeper_first_name}"
    return entry.timekeeper_name or ""


def _entry_line(number: int, row: Any, profile: InvoicingProfile, fmt: str,
                problems: list[str]) -> tuple[ledes.LedesLine, LineMeta] | None:
    entry = Entry.model_validate(row.record)
    source = Entry.model_validate(row.source_record) if row.source_record else None
    basis = source if source is not None and profile.reviewer_adjustments == "line_adjustment" else entry
    notes: list[str] = []
    units, cost = _units_and_cost(basis)
    where = f"entry {row.id} ({row.entry_uid})"
    if units is None or cost is None:
        redacted = f" (redacted at the source: {', '.join(entry.redacted_fields)})" if entry.redacted_fields else ""
        problems.append(f"{where}: no units or rate to bill{redacted}")
        return None
    if units < 0:
        problems.append(f"{where}: negative units {units}; bill a credit as an invoice-level adjustment")
        return None
    base = units * cost
    current = entry.billed_amount if entry.billed_amount is not None else base
    target = _round(current) + (entry.adjustment_amount or ZERO)
    review_adjustment = None
    if basis is source and source is not None:
        before = source.billed_amount if source.billed_amount is not None else base
        review_adjustment = _round(current) - _round(before)
        if review_adjustment:
            notes.append(f"reviewer adjustment {review_adjustment} shown as a line adjustment")
    elif basis.amount is not None and abs(basis.amount - base) >= CENT:
        notes.append(f"the source's total {basis.amount} differs from {units} x {cost}; the difference is a "
                     "line adjustment")
    if entry.no_charge:
        target = ZERO
        notes.append("no charge: shown at zero")
    adjustment = _fit_adjustment(base, target)
    tax_rate = tax_total = None
    if fmt == "98bi" and profile.tax_rate is not None:
        tax_rate = profile.tax_rate
        tax_total = _round((base + adjustment) * tax_rate)
    total = _round(base + adjustment + (tax_total or ZERO))
    fee = entry.entry_kind is EntryKind.TIME
    name = _text(_timekeeper_name(entry), "timekeeper name", notes) if fee else ""
    line = ledes.LedesLine(
        line_number=number, kind="F" if fee else "E", date=entry.work_date,
        law_firm_matter_id=_text(entry.law_firm_matter_id, "matter id", notes),
        units=units, unit_cost=cost, adjustment=adjustment, total=total,
        description=_text(entry.narrative, "narrative", notes, profile.max_description),
        task_code=(entry.utbms_task_code or "") if fee else "",
        expense_code="" if fee else (entry.utbms_expense_code or ""),
        activity_code=(entry.utbms_activity_code or "") if fee else "",
        timekeeper_id=_text(entry.timekeeper_ledes_id or entry.timekeeper_source_id, "timekeeper id", notes)
        if fee else "",
        timekeeper_name=name,
        timekeeper_classification=classification(entry.timekeeper_classification, profile.timekeeper_codes)
        if fee else "",
        client_matter_id=_text(entry.client_matter_id, "client matter id", notes),
        timekeeper_last_name=_text(entry.timekeeper_last_name, "timekeeper last name", notes) if fee else "",
        timekeeper_first_name=_text(entry.timekeeper_first_name, "timekeeper first name", notes) if fee else "",
        matter_name=_text(entry.matter_name, "matter name", notes),
        tax_rate=tax_rate, tax_total=tax_total, tax_type=profile.tax_type if tax_rate is not None else "",
    )
    return line, LineMeta(row.id, row.version, review_adjustment, notes)


def _discount_lines(start: int, lines: list[ledes.LedesLine], profile: InvoicingProfile, fmt: str,
                    end: dt.date, extra: Sequence[Discount] = ()) -> list[tuple[ledes.LedesLine, LineMeta]]:
    out = []
    first = lines[0]
    for discount in (*profile.discounts, *extra):
        kind = "F" if discount.kind == "fees" else "E"
        subtotal = sum((ln.units * ln.unit_cost + ln.adjustment for ln in lines  # type: ignore[operator]
                        if ln.kind == kind), ZERO)
        amount = -_round(subtotal * discount.percent / 100) if discount.percent is not None else -discount.amount  # type: ignore[operator]
        if not amount:
            continue
        if -amount > subtotal:
            amount = -subtotal  # a fixed credit never takes the fees (or expenses) below zero
        tax_rate = tax_total = None
        if fmt == "98bi" and profile.tax_rate is not None:
            tax_rate, tax_total = profile.tax_rate, _round(amount * profile.tax_rate)
        notes: list[str] = []
        line = ledes.LedesLine(
            line_number=start + len(out), kind="IF" if kind == "F" else "IE", date=end,
            law_firm_matter_id=first.law_firm_matter_id, units=None, unit_cost=None, adjustment=amount,
            total=_round(amount + (tax_total or ZERO)), description=_text(discount.description, "discount", notes),
            expense_code=discount.expense_code or "", client_matter_id=first.client_matter_id,
            matter_name=first.matter_name, tax_rate=tax_rate, tax_total=tax_total,
            tax_type=profile.tax_type if tax_rate is not None else "")
        out.append((line, LineMeta(None, None, None, notes)))
    return out


def discount_problems(discount: Discount) -> list[str]:
    """What is wrong with a one-off discount (the profile's are checked with the rule set)."""
    from engine.ledes.profile import profile_problems

    data: dict[str, Any] = {"kind": discount.kind, "description": discount.description}
    if discount.kind not in ("fees", "expenses"):
        return [f"a discount is on fees or expenses, not {discount.kind!r}"]
    for key in ("percent", "amount", "expense_code"):
        if getattr(discount, key) is not None:
            data[key] = getattr(discount, key)
    return [f"discount: {p.message}" for p in profile_problems({"discounts": [data]})]


def _candidates(session: Session, request: BuildRequest) -> list[Any]:
    """The ready entries of the request (only the columns building needs, not ORM objects)."""
    query = select(EntryRow.id, EntryRow.version, EntryRow.entry_uid, EntryRow.record, EntryRow.source_record,
                   EntryRow.law_firm_matter_id, EntryRow.client_matter_id).where(
        EntryRow.state == EntryState.READY,
        or_(EntryRow.ledes_client_id == request.client_id, EntryRow.client_source_id == request.client_id),
        EntryRow.work_date >= request.period_start, EntryRow.work_date <= request.period_end)
    if request.matters:
        query = query.where(or_(EntryRow.law_firm_matter_id.in_(request.matters),
                                EntryRow.client_matter_id.in_(request.matters)))
    return list(session.execute(query.order_by(EntryRow.law_firm_matter_id, EntryRow.entry_kind.desc(),
                                               EntryRow.work_date, EntryRow.id)))


def prepare(session: Session, request: BuildRequest) -> Draft:
    """Compute the invoice for ``request`` without storing anything (what preview shows)."""
    if request.period_start > request.period_end:
        raise InvalidInvoice("the billing period starts after it ends")
    profile = client_profile(session, request.client_id)
    fmt = request.format or profile.format
    if fmt not in ledes.FORMATS:
        raise InvalidInvoice(f"unknown format {fmt!r} (one of: {', '.join(ledes.FORMATS)})")
    firm = firm_settings(session)
    rows = _candidates(session, request)
    left_out: dict[str, int] = {}
    billable = []
    for row in rows:
        record = row.record
        if record.get("billable") is False or record.get("written_off"):
            key = "not billable" if record.get("billable") is False else "written off"
            left_out[key] = left_out.get(key, 0) + 1
            continue
        billable.append(row)
    if not billable:
        raise NothingToBill(f"no entries ready to bill for client {request.client_id} between "
                            f"{request.period_start} and {request.period_end}"
                            + (f" on matters {', '.join(request.matters)}" if request.matters else ""))
    matters = sorted({row.law_firm_matter_id or "" for row in billable})
    if len(matters) > 1 and not profile.multiple_matters:
        raise InvalidInvoice(f"client {request.client_id} takes one matter per invoice; choose one of: "
                             f"{', '.join(matters)}")
    if "" in matters:
        raise InvalidInvoice("entries without a law firm matter id cannot be billed in LEDES: "
                             + ", ".join(r.entry_uid for r in billable if not r.law_firm_matter_id)[:500])
    currencies = {row.record.get("currency") for row in billable} - {None}
    if len(currencies) > 1:
        raise InvalidInvoice(f"the entries are in several currencies ({', '.join(sorted(currencies))}): "
                             "bill each currency on its own invoice")
    if profile.require_client_matter_id:
        missing = [r.entry_uid for r in billable if not r.client_matter_id]
        if missing:
            raise InvalidInvoice(f"client {request.client_id} requires its own matter number on every line; "
                                 f"{len(missing)} entries have none (first: {missing[0]})")
    problems: list[str] = []
    built: list[tuple[ledes.LedesLine, LineMeta]] = []
    for row in billable:
        made = _entry_line(len(built) + 1, row, profile, fmt, problems)
        if made:
            built.append(made)
    if problems:
        raise InvalidInvoice(f"{len(problems)} entries cannot be billed: {problems[0]}", problems)
    problems = [p for d in request.discounts for p in discount_problems(d)]
    if problems:
        raise InvalidInvoice(problems[0], problems)
    built += _discount_lines(len(built) + 1, [ln for ln, _ in built], profile, fmt, request.period_end,
                             request.discounts)
    lines = tuple(ln for ln, _ in built)
    total = sum((ln.total for ln in lines), ZERO)
    notes: list[str] = []
    invoice_date = request.invoice_date or dt.date.today()
    number = request.number or "PREVIEW"
    tax_total = net_total = None
    currency = (next(iter(currencies)) if currencies else None) or ""
    if fmt == "98bi":
        tax_total = sum((ln.tax_total or ZERO for ln in lines), ZERO)
        net_total = total - tax_total
        if not currency:
            raise InvalidInvoice("LEDES 98BI needs a currency: the entries carry none")
    invoice = ledes.LedesInvoice(
        invoice_date=invoice_date, invoice_number=number, client_id=request.client_id, law_firm_id=firm.law_firm_id,
        total=total, billing_start=request.period_start, billing_end=request.period_end,
        description=_text(request.description or f"Legal services {request.period_start:%Y-%m-%d} to "
                          f"{request.period_end:%Y-%m-%d}", "invoice description", notes),
        lines=lines, currency=currency if fmt == "98bi" else "", tax_currency=currency if fmt == "98bi" else "",
        tax_total=tax_total, net_total=net_total, reported_tax_total=tax_total, po_number=profile.po_number,
        client_tax_id=profile.client_tax_id, law_firm=firm.firm, client=profile.client)
    try:
        content = ledes.write([invoice], fmt)
    except ledes.LedesError as exc:
        raise InvalidInvoice(f"the invoice would break the LEDES contract: {exc.problems[0]}", exc.problems) from None
    for key, count in left_out.items():
        notes.append(f"{count} entries {key} were left out")
    return Draft(invoice=invoice, format=fmt, content=content, sha256=sha256_of(content), profile=profile,
                 metas=[m for _, m in built], notes=notes, left_out=left_out)


def sha256_of(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _next_number(session: Session, prefix: str, invoice_id: int) -> str:
    number = f"{prefix}{invoice_id:06d}"
    suffix = 0
    while session.scalar(select(InvoiceRow.id).where(InvoiceRow.number == number)) is not None:
        suffix += 1
        number = f"{prefix}{invoice_id:06d}R{suffix}"
    return number


def event(session: Session, invoice: InvoiceRow, action: str, actor: str, **detail: Any) -> None:
    session.add(InvoiceEvent(invoice_id=invoice.id, action=action, actor=actor, detail=detail,
                             at=dt.datetime.now(dt.UTC)))


def build(session: Session, request: BuildRequest, *, actor: str) -> InvoiceRow:
    """Store the invoice and lock its entries. Raises if any entry changed since it was read."""
    if request.number is not None and (not ALNUM.match(request.number) or len(request.number) > 20):
        raise InvalidInvoice(f"invoice number {request.number!r}: letters and digits only, at most 20")
    if request.number and session.scalar(select(InvoiceRow.id).where(InvoiceRow.number == request.number)):
        raise NumberTaken(f"invoice number {request.number} is already used (numbers are never reused, "
                          "not even after a void)")
    draft = prepare(session, request)
    now = dt.datetime.now(dt.UTC)
    invoice = InvoiceRow(
        number=request.number or f"TMP{hashlib.sha256(f'{now}{id(draft)}'.encode()).hexdigest()[:16]}",
        client_id=request.client_id, matters=sorted({ln.law_firm_matter_id for ln in draft.invoice.lines}),
        format=draft.format, currency=draft.invoice.currency or None, invoice_date=draft.invoice.invoice_date,
        period_start=request.period_start, period_end=request.period_end, status=InvoiceStatus.DRAFT,
        total=draft.invoice.total, fees_total=draft.fees_total, expenses_total=draft.expenses_total,
        adjustments_total=draft.adjustments_total, tax_total=draft.invoice.tax_total,
        line_count=len(draft.invoice.lines), content="", sha256="", profile=draft.profile.as_dict(),
        notes=draft.notes, created_by=actor, created_at=now)
    session.add(invoice)
    session.flush()
    if not request.number:
        invoice.number = _next_number(session, firm_settings(session).invoice_prefix, invoice.id)
    final = ledes.LedesInvoice(**{**draft.invoice.__dict__, "invoice_number": invoice.number})
    invoice.content = ledes.write([final], draft.format)
    invoice.sha256 = sha256_of(invoice.content)
    _lock(session, invoice, draft, actor, now)
    rows = [dict(invoice_id=invoice.id, line_number=ln.line_number, kind=ln.kind, entry_id=meta.entry_id,
                 entry_version=meta.entry_version, law_firm_matter_id=ln.law_firm_matter_id, units=ln.units,
                 unit_cost=ln.unit_cost, adjustment=ln.adjustment, review_adjustment=meta.review_adjustment,
                 tax_total=ln.tax_total, total=ln.total, state="billed", notes=meta.notes)
            for ln, meta in zip(draft.invoice.lines, draft.metas, strict=True)]
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(InvoiceLine), rows[start:start + CHUNK])
    event(session, invoice, "built", actor, total=str(invoice.total), lines=invoice.line_count,
           sha256=invoice.sha256, notes=draft.notes)
    session.flush()
    return invoice


def _lock(session: Session, invoice: InvoiceRow, draft: Draft, actor: str, now: dt.datetime) -> None:
    """Move the entries to ``invoiced`` if each is still ready at the version that was read. Their days are held
    first (intake.lock_entries: their timekeeper-days, and matter-days and budget totals where rules judge those),
    so that a review re-judging one of those days cannot write over an invoiced entry:
    one that ran first has changed the entry's version (and the build is refused), one that runs after sees it
    invoiced and leaves it alone."""
    metas = [m for m in draft.metas if m.entry_id is not None]
    lock_entries(session, [m.entry_id for m in metas])  # type: ignore[misc]
    for start in range(0, len(metas), CHUNK):
        chunk = metas[start:start + CHUNK]
        by_version: dict[int, list[int]] = {}
        for meta in chunk:
            by_version.setdefault(meta.entry_version, []).append(meta.entry_id)  # type: ignore[arg-type]
        locked = 0
        for version, ids in by_version.items():
            locked += session.execute(
                update(EntryRow).where(EntryRow.id.in_(ids), EntryRow.version == version,
                                       EntryRow.state == EntryState.READY)
                .values(state=EntryState.INVOICED, invoice_id=invoice.id, version=version + 1, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount
        if locked != len(chunk):
            raise EntriesChanged("some entries changed or were billed by someone else while the invoice was "
                                 "built; build it again")
    session.execute(ReviewAction.__table__.insert(), [
        {"entry_id": m.entry_id, "action": "invoiced", "actor": actor, "at": now, "reason": None,
         "before": {"state": "ready", "version": m.entry_version},
         "after": {"state": "invoiced", "version": m.entry_version + 1,  # type: ignore[operator]
                   "invoice": invoice.number}} for m in metas])
    session.expire_all()


def get(session: Session, invoice_id: int | str) -> InvoiceRow:
    """By id, or by invoice number."""
    text = str(invoice_id)
    if isinstance(invoice_id, int) or (text.isascii() and text.isdigit()):
        number = int(invoice_id)
        found = session.get(InvoiceRow, number) if 0 < number < 2**31 else None  # ids are 32-bit on PostgreSQL
        if found is None:
            found = session.scalar(select(InvoiceRow).where(InvoiceRow.number == str(invoice_id)))
    else:
        found = session.scalar(select(InvoiceRow).where(InvoiceRow.number == str(invoice_id)))
    if found is None:
        raise InvoiceNotFound(f"invoice {invoice_id} does not exist")
    return found


def invoices(session: Session, *, client_id: str | None = None, status: str | None = None,
             limit: int = 100) -> list[InvoiceRow]:
    """The newest invoices first."""
    query = select(InvoiceRow).order_by(InvoiceRow.id.desc()).limit(limit)
    if client_id:
        query = query.where(InvoiceRow.client_id == client_id)
    if status:
        query = query.where(InvoiceRow.status == status)
    return list(session.scalars(query))


def written_lines(invoice: InvoiceRow) -> dict[int, ledes.LedesLine]:
    """The invoice's lines as its stored LEDES file has them (dates and descriptions), by line number."""
    if not invoice.content:
        return {}
    return {ln.line_number: ln for ln in ledes.parse(invoice.content).invoices[0].lines}


def lines(session: Session, invoice_id: int) -> list[InvoiceLine]:
    return list(session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)
                                .order_by(InvoiceLine.line_number)))


def events(session: Session, invoice_id: int) -> list[InvoiceEvent]:
    return list(session.scalars(select(InvoiceEvent).where(InvoiceEvent.invoice_id == invoice_id)
                                .order_by(InvoiceEvent.id)))


# Voiding ------------------------------------------------------------------------------------------------

def void(session: Session, invoice_id: int | str, *, actor: str, reason: str | None) -> InvoiceRow:
    """Withdraw an invoice that the client does not hold (a draft, or one its portal rejected) and release
    its entries. Entries changed at the source meanwhile take their new version and are judged again."""
    invoice = get(session, invoice_id)
    if invoice.status == InvoiceStatus.VOID:
        raise InvoiceStateError(f"invoice {invoice.number} is already void")
    if invoice.status == InvoiceStatus.SUBMITTING:
        raise InvoiceStateError(f"invoice {invoice.number} may have reached {invoice.destination}: submit it again "
                                "to learn whether it did, then void it if the portal rejects it")
    if invoice.status == InvoiceStatus.SUBMITTED and invoice.portal_state not in ("rejected",):
        raise InvoiceStateError(f"invoice {invoice.number} is with {invoice.destination} ({invoice.portal_state}): "
                                "withdraw it there first; only drafts and rejected invoices can be voided here")
    if not (reason and reason.strip()):
        raise InvalidInvoice("voiding an invoice needs a reason")
    now = dt.datetime.now(dt.UTC)
    held = list(session.scalars(select(EntryRow).where(EntryRow.invoice_id == invoice.id)))
    released, refreshed = [], []
    for row in held:
        before = {"state": str(row.state), "version": row.version, "invoice": invoice.number}
        row.invoice_id = None
        row.version += 1
        row.updated_at = now
        if row.state == EntryState.CONFLICT and row.pending_record is not None:
            replace_record(row, row.pending_record)
            row.pending_record, row.source_record = None, None
            refreshed.append(row)
        elif row.state == EntryState.INVOICED:
            row.state = EntryState.READY
        released.append(row)
        session.add(ReviewAction(entry_id=row.id, action="released", actor=actor, reason=reason, at=now,
                                 before=before, after={"state": str(row.state), "version": row.version}))
    if refreshed:
        session.flush()
        reevaluate(session, refreshed)
    invoice.status, invoice.voided_at, invoice.void_reason = InvoiceStatus.VOID, now, reason
    event(session, invoice, "voided", actor, reason=reason, released=len(released))
    session.flush()
    return invoice
