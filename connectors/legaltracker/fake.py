"""A fake Thomson Reuters Legal Tracker on loopback: enough of the token endpoint, the eFiles upload and the Billing
API for ``LegalTrackerClient`` to be exercised end to end, with an in-memory store.

Start it::

    with running_fake_portal(FakeRules(max_units_per_line=Decimal("6.0"))) as portal:
        client = LegalTrackerClient(**portal.client_settings(), matter_ids={"0528": "9001"})
        receipt = client.submit(client.build(invoice))
        portal.state.advance()           # received -> pending (under review)
        portal.state.advance()           # pending -> approved / rejected, with the guideline adjustments
        client.status(receipt.reference)

or from a shell, for a demo: ``python -m connectors.legaltracker.fake --port 8765``.

What it checks, like the real portal would: the bearer token on every API call, the ``Company-ID`` header, the
firm and office ids, that the ``invoiceFileKey`` was uploaded, that the file is LEDES 1998B or 98BI (read by this
module's *own* small reader, independent of ``engine.ledes``, so tests of our writer are not circular), that the
invoice number is not already taken by the firm (409). After posting, an invoice moves ``received`` ->
``pending`` -> ``approved`` or ``rejected`` on each ``advance()`` (or on each poll with ``auto_advance=True``):

* a file whose arithmetic does not add up (line total = units x unit cost + adjustment [+ tax in 98BI], invoice
  total = sum of the line totals, to the cent) is rejected as a whole, with ``rejectionReason``;
* otherwise the configured ``FakeRules`` (the client's billing guidelines) cut or zero individual lines, as
  adjustments shaped like Legal Tracker's ``$expand=adjustments`` answer.

Fault injection (``state.fail_next``, ``state.delay_next_post``, ``state.drop_next_post``, ``state.revoke_tokens``)
lets tests produce 503/429 answers, a POST that is stored but answered only after the client gave up, a POST that
is stored but whose connection is dropped before the answer, and expired tokens.

Shapes not shown in the public documentation are our assumptions, marked below: the eFiles request/response, the
error body ``{"error": {"code", "message"}}``, the status words, ``rejectionReason``/``rejectionComment``,
adjustment ``id``s, the reason texts other than "Fee - Excessive time" (the documented example), and adjustment
type ``"eia"`` for expenses (only ``"fia"`` is documented).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

BILLING_PREFIX = "/legal-tracker/billing-api/v1"
EFILES_PREFIX = "/legal-tracker/efiles-api/v1"
TOKEN_PATH = "/oauth/token"
CENT = Decimal("0.01")

# -- the fake's own LEDES reader ---------------------------------------------------------------------------------

_FORMAT_LINES = {"LEDES1998B": "1998b", "LEDES98BI V2": "98bi", "LEDES98BI": "98bi"}
_REQUIRED_COLUMNS = (
    "INVOICE_NUMBER", "INVOICE_TOTAL", "LINE_ITEM_NUMBER", "EXP/FEE/INV_ADJ_TYPE", "LINE_ITEM_NUMBER_OF_UNITS",
    "LINE_ITEM_ADJUSTMENT_AMOUNT", "LINE_ITEM_TOTAL", "LINE_ITEM_UNIT_COST", "LAW_FIRM_MATTER_ID",
)


class LedesReadError(ValueError):
    """The uploaded file is not a LEDES file this fake portal can read."""


def read_ledes(text: str) -> tuple[str, list[dict[str, str]]]:
    """Split a LEDES 1998B / 98BI file into its format and one dict per record, keyed by the header's names.

    Deliberately minimal and independent of ``engine.ledes``: records end with ``[]``; the first is the format
    line, the second the header; every following record must have as many fields as the header.
    """
    chunks = text.lstrip("\ufeff").split("[]")
    if len(chunks) < 3:
        raise LedesReadError("not a LEDES file: expected a format line and a header line, each ending in []")
    fmt = _FORMAT_LINES.get(chunks[0].strip())
    if fmt is None:
        raise LedesReadError(f"unknown LEDES format line {chunks[0].strip()[:40]!r}")
    header = [name.strip() for name in chunks[1].strip("\r\n").split("|")]
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        raise LedesReadError(f"header lacks {', '.join(missing)}")
    rows: list[dict[str, str]] = []
    for number, chunk in enumerate(chunks[2:], start=1):
        body = chunk.strip("\r\n")
        if not body.strip():
            continue
        fields = body.split("|")
        if len(fields) != len(header):
            raise LedesReadError(f"record {number} has {len(fields)} fields; the header has {len(header)}")
        rows.append(dict(zip(header, fields, strict=True)))
    if not rows:
        raise LedesReadError("no line items")
    return fmt, rows


def _number(row: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    raw = row.get(name, "").strip()
    if not raw:
        if required:
            raise LedesReadError(f"line {row.get('LINE_ITEM_NUMBER', '?')}: {name} is empty")
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise LedesReadError(f"line {row.get('LINE_ITEM_NUMBER', '?')}: {name} {raw!r} is not a number") from None
    if not value.is_finite():
        raise LedesReadError(f"line {row.get('LINE_ITEM_NUMBER', '?')}: {name} {raw!r} is not a number")
    return value


def check_arithmetic(fmt: str, rows: list[dict[str, str]]) -> list[str]:
    """What a receiving portal recomputes: each line's total and the invoice total, to the cent."""
    problems: list[str] = []
    if len({row["INVOICE_TOTAL"].strip() for row in rows}) > 1:
        problems.append("INVOICE_TOTAL differs between the invoice's lines")
    line_sum = Decimal(0)
    for row in rows:
        number = row["LINE_ITEM_NUMBER"].strip()
        total = _number(row, "LINE_ITEM_TOTAL")
        adjustment = _number(row, "LINE_ITEM_ADJUSTMENT_AMOUNT", required=False) or Decimal(0)
        units = _number(row, "LINE_ITEM_NUMBER_OF_UNITS", required=False)
        cost = _number(row, "LINE_ITEM_UNIT_COST", required=False)
        tax = (_number(row, "LINE_ITEM_TAX_TOTAL", required=False) or Decimal(0)) if fmt == "98bi" else Decimal(0)
        kind = row["EXP/FEE/INV_ADJ_TYPE"].strip()
        if units is None or cost is None:
            if kind not in ("IF", "IE"):
                problems.append(f"line {number}: units and unit cost are required on {kind or 'a'} line")
                continue
            expected = adjustment + tax
        else:
            expected = units * cost + adjustment + tax
        assert total is not None
        if abs(expected - total) > CENT:
            problems.append(f"line {number}: LINE_ITEM_TOTAL {total} but units x unit cost + adjustment = "
                            f"{expected.quantize(CENT, ROUND_HALF_UP)}")
        line_sum += total
    invoice_total = _number(rows[0], "INVOICE_TOTAL")
    assert invoice_total is not None
    if abs(line_sum - invoice_total) > CENT:
        problems.append(f"INVOICE_TOTAL {invoice_total} but the line totals add up to {line_sum}")
    return problems


# -- the client's guidelines -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRules:
    """Billing guidelines the fake client applies when it reviews an invoice. ``None`` / empty turns a rule off.

    Fee lines (F): a blocked task code or a description shorter than ``min_description_chars`` zeroes the line;
    hours above ``max_units_per_line`` and a rate above ``max_rate`` are cut. Expense lines (E): a blocked expense
    code zeroes the line. Reason texts imitate Legal Tracker's "Category - reason" style.
    """

    max_units_per_line: Decimal | None = None
    max_rate: Decimal | None = None
    blocked_task_codes: frozenset[str] = frozenset()
    blocked_expense_codes: frozenset[str] = frozenset()
    min_description_chars: int | None = None

    def adjustments(self, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The cuts for an invoice's lines: ``{"lineItemNumber", "type", "amount" (negative), "reason", "comment"}``."""
        out: list[dict[str, Any]] = []
        for row in rows:
            kind = row["EXP/FEE/INV_ADJ_TYPE"].strip()
            line = row["LINE_ITEM_NUMBER"].strip()
            total = _number(row, "LINE_ITEM_TOTAL") or Decimal(0)

            def cut(amount: Decimal, reason: str, comment: str, *, kind: str = kind, line: str = line) -> None:
                out.append({"lineItemNumber": line, "type": "fia" if kind == "F" else "eia",
                            "amount": -amount.quantize(CENT, ROUND_HALF_UP), "reason": reason, "comment": comment})

            if kind == "F":
                task = row.get("LINE_ITEM_TASK_CODE", "").strip()
                description = row.get("LINE_ITEM_DESCRIPTION", "").strip()
                if task and task in self.blocked_task_codes:
                    cut(total, "Fee - Task not permitted", f"Task code {task} is not billable under the guidelines")
                    continue
                if self.min_description_chars is not None and len(description) < self.min_description_chars:
                    cut(total, "Fee - Inadequate description",
                        f"Description has {len(description)} characters; the guidelines ask for at least "
                        f"{self.min_description_chars}")
                    continue
                units = _number(row, "LINE_ITEM_NUMBER_OF_UNITS", required=False) or Decimal(0)
                rate = _number(row, "LINE_ITEM_UNIT_COST", required=False) or Decimal(0)
                billable_units = units
                if self.max_units_per_line is not None and units > self.max_units_per_line:
                    billable_units = self.max_units_per_line
                    cut((units - self.max_units_per_line) * rate, "Fee - Excessive time",
                        f"{units} hours billed; at most {self.max_units_per_line} per entry")
                if self.max_rate is not None and rate > self.max_rate:
                    cut((rate - self.max_rate) * billable_units, "Fee - Rate above approved rate",
                        f"Rate {rate} above the approved {self.max_rate}")
            elif kind == "E":
                code = row.get("LINE_ITEM_EXPENSE_CODE", "").strip()
                if code and code in self.blocked_expense_codes:
                    cut(total, "Expense - Non-reimbursable expense",
                        f"Expense code {code} is not reimbursable under the guidelines")
        return out


# -- the store ---------------------------------------------------------------------------------------------------


@dataclass
class FakeInvoice:
    """One posted invoice as the fake portal holds it."""

    id: int
    invoice_number: str
    firm_id: str
    firm_office_id: str
    company_id: str
    matter_id: str
    currency: str
    type_id: Any
    invoice_date: str
    total: Decimal
    ledes_format: str
    file_key: str
    file_name: str
    content: bytes
    lines: list[dict[str, str]]
    posted_at: dt.datetime
    problems: list[str]  # arithmetic: the whole invoice is rejected for these
    planned_adjustments: list[dict[str, Any]]  # applied when the review finishes
    status: str = "received"
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    rejection_reason: str | None = None
    rejection_comment: str | None = None

    def to_json(self, expand: Iterable[str] = ()) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "companyId": _maybe_int(self.company_id),
            "firmId": _maybe_int(self.firm_id),
            "firmOfficeId": _maybe_int(self.firm_office_id),
            "matterId": _maybe_int(self.matter_id),
            "invoiceNumber": self.invoice_number,
            "invoiceDate": self.invoice_date,
            "currency": self.currency,
            "isLedes": True,
            "typeId": self.type_id,
            "status": self.status,
            "totalAmount": self.total,
            "postedDateTime": self.posted_at.isoformat(timespec="seconds"),
        }
        if self.status == "rejected":
            data["rejectionReason"] = self.rejection_reason
            data["rejectionComment"] = self.rejection_comment
        wanted = {name.strip().lower() for name in expand}
        if "adjustments" in wanted:
            data["adjustments"] = [dict(adj) for adj in self.adjustments]
        if "invoicefileinfo" in wanted:
            data["invoiceFileInfo"] = {
                "fileName": self.file_name,
                "size": len(self.content),
                "uploadedDateTime": self.posted_at.isoformat(timespec="seconds"),
                "md5Hash": hashlib.md5(self.content).hexdigest().upper(),
                "downloadLink": f"/blob/{self.file_key}",
            }
        return data


@dataclass
class _Fault:
    kind: str  # "status", "delay" or "drop"
    remaining: int
    status: int = 503
    retry_after: str | None = None
    method: str | None = None
    path: str | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int | None  # None: the connection was dropped before an answer
    fault: str | None = None


class FakePortalState:
    """The fake portal's configuration, store and test controls; safe to use from the test thread while the
    server thread serves requests."""

    def __init__(
        self,
        rules: FakeRules | None = None,
        *,
        client_id: str = "ocgate-fake-client",
        client_secret: str = "fake-secret",
        firm_id: str | int = "5001",
        firm_office_id: str | int = "5002",
        company_id: str | int = "7001",
        matters: Iterable[str | int] | None = None,
        token_ttl: float = 3600.0,
        auto_advance: bool = False,
    ):
        self.rules = rules or FakeRules()
        self.client_id = client_id
        self.client_secret = client_secret
        self.firm_id = str(firm_id)
        self.firm_office_id = str(firm_office_id)
        self.company_id = str(company_id)
        self.matters = None if matters is None else {str(m) for m in matters}
        self.token_ttl = token_ttl
        self.auto_advance = auto_advance
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._uploads: dict[str, str] = {}  # file key -> signature of its upload URL
        self._files: dict[str, tuple[str, bytes]] = {}  # file key -> (file name, bytes)
        self._invoices: dict[int, FakeInvoice] = {}
        self._faults: list[_Fault] = []
        self._next_invoice_id = 81218
        self._next_adjustment_id = 53000
        self.tokens_issued = 0
        self.log: list[LoggedRequest] = []

    def reset(self, rules: FakeRules | None = None, *, auto_advance: bool = False,
              matters: Iterable[str | int] | None = None) -> None:
        """Forget every invoice, upload, token, fault and logged request, and set the review options afresh
        (lets one running server serve many tests; invoice ids keep counting up)."""
        with self._lock:
            self.rules = rules or FakeRules()
            self.auto_advance = auto_advance
            self.matters = None if matters is None else {str(m) for m in matters}
            self._tokens.clear()
            self._uploads.clear()
            self._files.clear()
            self._invoices.clear()
            self._faults.clear()
            self.tokens_issued = 0
            self.log.clear()

    # -- inspection ------------------------------------------------------------------------------------------

    @property
    def invoices(self) -> list[FakeInvoice]:
        with self._lock:
            return list(self._invoices.values())

    def invoice(self, invoice_id: int | str) -> FakeInvoice:
        with self._lock:
            return self._invoices[int(invoice_id)]

    def by_number(self, invoice_number: str) -> list[FakeInvoice]:
        with self._lock:
            return [inv for inv in self._invoices.values() if inv.invoice_number == invoice_number]

    def count(self, method: str, path_suffix: str) -> int:
        """How many requests with this method and a path ending in ``path_suffix`` reached the portal."""
        with self._lock:
            return sum(1 for r in self.log if r.method == method and r.path.endswith(path_suffix))

    # -- review workflow -------------------------------------------------------------------------------------

    def advance(self, invoice_id: int | str | None = None) -> None:
        """Move one invoice (or every invoice) one step: received -> pending -> approved / rejected."""
        with self._lock:
            targets = [self._invoices[int(invoice_id)]] if invoice_id is not None else list(self._invoices.values())
            for invoice in targets:
                self._advance(invoice)

    def pay(self, invoice_id: int | str) -> None:
        """Mark an approved invoice paid."""
        with self._lock:
            invoice = self._invoices[int(invoice_id)]
            if invoice.status != "approved":
                raise ValueError(f"invoice {invoice_id} is {invoice.status}, not approved")
            invoice.status = "paid"

    def _advance(self, invoice: FakeInvoice) -> None:
        if invoice.status == "received":
            invoice.status = "pending"
        elif invoice.status == "pending":
            if invoice.problems:
                invoice.status = "rejected"
                invoice.rejection_reason = "Invoice - Totals do not add up"
                invoice.rejection_comment = "; ".join(invoice.problems)
            else:
                invoice.status = "approved"
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
                invoice.adjustments = [
                    {"id": adj["id"], "type": adj["type"], "amount": adj["amount"], "adjusterID": "fake-guidelines",
                     "adjusterName": "Billing guidelines (fake portal)", "dateTime": now, "reason": adj["reason"],
                     "comment": adj["comment"], "lineItemNumber": adj["lineItemNumber"]}
                    for adj in invoice.planned_adjustments
                ]

    # -- fault injection -------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, retry_after: float | str | None = None,
                  method: str | None = None, path: str | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status`` (and ``Retry-After`` when given) without
        handling them. ``path`` matches the end of (or a part of) the request path, e.g. ``"/invoices"``."""
        with self._lock:
            self._faults.append(_Fault("status", n, status=status,
                                       retry_after=None if retry_after is None else str(retry_after),
                                       method=method, path=path))

    def delay_next_post(self, seconds: float, *, path: str = "/invoices") -> None:
        """Handle (store) the next ``POST`` to ``path`` but send the answer only after ``seconds``."""
        with self._lock:
            self._faults.append(_Fault("delay", 1, method="POST", path=path, seconds=seconds))

    def drop_next_post(self, *, path: str = "/invoices") -> None:
        """Handle (store) the next ``POST`` to ``path``, send the status line, then close the connection."""
        with self._lock:
            self._faults.append(_Fault("drop", 1, method="POST", path=path))

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the next API call gets 401)."""
        with self._lock:
            self._tokens.clear()

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _log(self, method: str, path: str, status: int | None, fault: str | None = None) -> None:
        with self._lock:
            self.log.append(LoggedRequest(method, path, status, fault))

    # -- used by the app -------------------------------------------------------------------------------------

    def _issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
            self.tokens_issued += 1
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and time.monotonic() < expiry

    def _new_upload(self) -> tuple[str, str]:
        key = f"{secrets.token_hex(16)}.txt"
        sig = secrets.token_urlsafe(16)
        with self._lock:
            self._uploads[key] = sig
        return key, sig

    def _store_upload(self, key: str, sig: str, content: bytes) -> bool:
        with self._lock:
            if self._uploads.get(key) != sig:
                return False
            self._files[key] = (key, content)
            return True

    def _file(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._files.get(key)
            return None if entry is None else entry[1]

    def _create_invoice(self, **fields: Any) -> FakeInvoice:
        with self._lock:
            invoice_id = self._next_invoice_id
            self._next_invoice_id += 1
            planned = []
            for adj in fields.pop("planned_adjustments"):
                planned.append({"id": self._next_adjustment_id, **adj})
                self._next_adjustment_id += 1
            invoice = FakeInvoice(id=invoice_id, planned_adjustments=planned, **fields)
            self._invoices[invoice_id] = invoice
            return invoice


# -- the app -----------------------------------------------------------------------------------------------------

_DECIMAL_MARK = "\u0000dec:"


def _dumps(data: Any) -> bytes:
    """JSON with Decimal amounts written as exact JSON numbers (not via float)."""

    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            return _DECIMAL_MARK + format(value, "f")
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(data, default=mark)
    text = re.sub(r'"\\u0000dec:(-?[0-9.]+)"', r"\1", text)
    return text.encode()


def _respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # Error body shape is our assumption: {"error": {"code", "message"}}.
    return _respond({"error": {"code": code, "message": message}}, status, headers)


def _maybe_int(value: str) -> int | str:
    return int(value) if value.isdigit() else value


_FILTER = re.compile(r"^\s*invoiceNumber\s+eq\s+'((?:[^']|'')*)'\s*$")


def create_app(state: FakePortalState) -> Callable[..., Awaitable[None]]:
    """The fake portal as an ASGI app (FastAPI behind the fault-injection layer)."""
    app = FastAPI(title="Fake Legal Tracker", openapi_url=None, docs_url=None, redoc_url=None)

    def authorize(request: Request, *, company: bool = True) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not state._token_valid(token.strip()):
            return _error(401, "Unauthorized", "missing, invalid or expired bearer token",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if company:
            company_id = request.headers.get("company-id")
            if not company_id:
                return _error(400, "MissingCompanyId", "the Company-ID header is required")
            if company_id.strip() != state.company_id:
                return _error(403, "Forbidden", f"company {company_id} is not available to this firm")
        return None

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in json.loads(raw or b"{}").items()}
            except (ValueError, AttributeError):
                return _respond({"error": "invalid_request", "error_description": "body is not JSON"}, 400)
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _respond({"error": "unsupported_grant_type",
                             "error_description": "only client_credentials is supported"}, 400)
        if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
            return _respond({"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
        return _respond({"access_token": state._issue_token(), "token_type": "Bearer",
                         "expires_in": int(state.token_ttl), "scope": "legal-tracker.billing"})

    @app.post(EFILES_PREFIX + "/files")
    async def new_file(request: Request) -> Response:
        refused = authorize(request)
        if refused:
            return refused
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "InvalidRequest", "body is not JSON")
        if not isinstance(body, dict) or not body.get("fileName"):
            return _error(400, "InvalidRequest", "fileName is required")
        key, sig = state._new_upload()
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15)
        return _respond({"fileKey": key, "uploadUrl": f"/blob/{key}?sig={sig}",
                         "expiresDateTime": expires.isoformat(timespec="seconds")}, 201)

    @app.put("/blob/{key}")
    async def put_blob(key: str, request: Request) -> Response:
        content = await request.body()
        if not state._store_upload(key, request.query_params.get("sig", ""), content):
            return Response(status_code=403, content=b"signature does not match")
        return Response(status_code=201)

    @app.get(BILLING_PREFIX + "/invoices")
    async def list_invoices(request: Request) -> Response:
        refused = authorize(request)
        if refused:
            return refused
        params = request.query_params
        items = [inv for inv in state.invoices if inv.firm_id == state.firm_id]
        flt = params.get("$filter")
        if flt:
            match = _FILTER.match(flt)
            if not match:
                return _error(400, "InvalidFilter", "the fake portal understands only $filter=invoiceNumber eq '...'")
            wanted = match.group(1).replace("''", "'")
            items = [inv for inv in items if inv.invoice_number == wanted]
        try:
            skip = int(params.get("$skip", "0"))
            top = int(params.get("$top", "100"))
        except ValueError:
            return _error(400, "InvalidRequest", "$skip and $top must be whole numbers")
        items = sorted(items, key=lambda inv: inv.id)[skip: skip + top]
        expand = (params.get("$expand") or "").split(",")
        return _respond({"value": [_select(inv.to_json(expand), params.get("$select")) for inv in items]})

    @app.get(BILLING_PREFIX + "/invoices/{invoice_id}")
    async def get_invoice(invoice_id: str, request: Request) -> Response:
        refused = authorize(request)
        if refused:
            return refused
        if not invoice_id.isdigit():
            return _error(400, "InvalidRequest", f"invoice id {invoice_id!r} is not a number")
        try:
            invoice = state.invoice(invoice_id)
        except KeyError:
            return _error(404, "NotFound", f"invoice {invoice_id} not found")
        if invoice.firm_id != state.firm_id:
            return _error(404, "NotFound", f"invoice {invoice_id} not found")
        if state.auto_advance:
            state.advance(invoice.id)
        expand = (request.query_params.get("$expand") or "").split(",")
        return _respond(_select(invoice.to_json(expand), request.query_params.get("$select")))

    @app.post(BILLING_PREFIX + "/invoices")
    async def post_invoice(request: Request) -> Response:
        refused = authorize(request)
        if refused:
            return refused
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _error(400, "InvalidRequest", "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "InvalidRequest", "body must be a JSON object")
        missing = [name for name in ("firmId", "firmOfficeId", "matterId", "invoiceFileKey")
                   if body.get(name) in (None, "")]
        if missing:
            return _error(400, "InvalidRequest", f"required: {', '.join(missing)}")
        if body.get("isLedes") is not True:
            return _error(400, "InvalidRequest", "the fake portal takes LEDES invoices only (isLedes: true)")
        if str(body["firmId"]) != state.firm_id or str(body["firmOfficeId"]) != state.firm_office_id:
            return _error(403, "Forbidden", "firmId/firmOfficeId do not belong to this client application")
        matter_id = str(body["matterId"])
        if state.matters is not None and matter_id not in state.matters:
            return _error(400, "MatterNotFound", f"matter {matter_id} is not assigned to this firm office")
        content = state._file(str(body["invoiceFileKey"]))
        if content is None:
            return _error(400, "InvalidFileKey", "invoiceFileKey not found: upload the file with the eFiles API first")
        try:
            fmt, rows = read_ledes(content.decode("utf-8"))
            numbers = sorted({row["INVOICE_NUMBER"].strip() for row in rows})
            if len(numbers) != 1:
                raise LedesReadError(f"the file holds {len(numbers)} invoices; post one invoice per file")
            problems = check_arithmetic(fmt, rows)
            planned = [] if problems else state.rules.adjustments(rows)
            total = _number(rows[0], "INVOICE_TOTAL")
        except UnicodeDecodeError:
            return _error(400, "InvalidLedesFile", "the invoice file is neither ASCII nor UTF-8")
        except LedesReadError as exc:
            return _error(400, "InvalidLedesFile", str(exc))
        number = numbers[0]
        if body.get("invoiceNumber") not in (None, "") and str(body["invoiceNumber"]) != number:
            return _error(400, "InvoiceNumberMismatch",
                          f"invoiceNumber {body['invoiceNumber']} does not match the file's {number}")
        with state._lock:
            taken = [inv for inv in state.by_number(number) if inv.firm_id == state.firm_id]
            if taken:
                return _error(409, "DuplicateInvoiceNumber",
                              f"invoice number {number} already exists for this firm (invoice {taken[0].id})")
            raw_date = rows[0].get("INVOICE_DATE", "").strip()
            invoice = state._create_invoice(
                invoice_number=number, firm_id=state.firm_id, firm_office_id=state.firm_office_id,
                company_id=state.company_id, matter_id=matter_id, currency=str(body.get("currency") or ""),
                type_id=body.get("typeId"),
                invoice_date=f"{raw_date[:4]}-{raw_date[4:6]}-{raw_date[6:8]}" if len(raw_date) == 8 else raw_date,
                total=total or Decimal(0), ledes_format=fmt, file_key=str(body["invoiceFileKey"]),
                file_name=f"{number}.txt", content=content, lines=rows, posted_at=dt.datetime.now(dt.UTC),
                problems=problems, planned_adjustments=planned,
            )
        return _respond(invoice.to_json(), 201)

    return _FaultLayer(app, state)


def _select(data: dict[str, Any], select: str | None) -> dict[str, Any]:
    if not select or select.strip() == "*":
        return data
    wanted = {name.strip() for name in select.split(",")} | {"id"}
    return {k: v for k, v in data.items() if k in wanted or isinstance(v, (list, dict))}


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _FaultLayer:
    """ASGI wrapper: logs every request and plays the injected faults."""

    def __init__(self, app: Any, state: FakePortalState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        fault = self.state._take_fault(method, path)
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            response = _error(fault.status, "InjectedFault", f"injected HTTP {fault.status}", headers)
            self.state._log(method, path, fault.status, "status")
            await response(scope, receive, send)
            return

        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        status = next((m.get("status") for m in messages if m["type"] == "http.response.start"), None)
        if fault is not None and fault.kind == "drop":
            self.state._log(method, path, None, "drop")
            if messages:
                await send(messages[0])  # the status line and headers, then the connection closes: no body
            return
        if fault is not None and fault.kind == "delay":
            self.state._log(method, path, status, "delay")
            await asyncio.sleep(fault.seconds)
        else:
            self.state._log(method, path, status)
        for message in messages:
            await send(message)


# -- running it --------------------------------------------------------------------------------------------------


@dataclass
class FakePortal:
    """A running fake portal: its URLs, its state, and the settings a client needs to talk to it."""

    root_url: str
    state: FakePortalState

    @property
    def base_url(self) -> str:
        return self.root_url + BILLING_PREFIX

    @property
    def token_url(self) -> str:
        return self.root_url + TOKEN_PATH

    @property
    def efiles_url(self) -> str:
        return self.root_url + EFILES_PREFIX

    def client_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``LegalTrackerClient`` (add ``matter_ids`` and any test timings)."""
        return {
            "base_url": self.base_url,
            "client_id": self.state.client_id,
            "client_secret": self.state.client_secret,
            "firm_id": self.state.firm_id,
            "firm_office_id": self.state.firm_office_id,
            "company_id": self.state.company_id,
            "token_url": self.token_url,
            "efiles_url": self.efiles_url,
        }

    def __iter__(self) -> Iterator[Any]:  # ``with running_fake_portal() as (base_url, state):``
        yield self.base_url
        yield self.state


@contextlib.contextmanager
def running_fake_portal(
    rules: FakeRules | None = None,
    *,
    state: FakePortalState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    **state_options: Any,
) -> Iterator[FakePortal]:
    """Serve the fake portal from a background thread on ``host:port`` (``port=0``: a free port) until the block
    ends. ``state_options`` go to ``FakePortalState`` (``auto_advance=True``, ``matters=[...]``, credentials)."""
    if state is None:
        state = FakePortalState(rules, **state_options)
    elif rules is not None or state_options:
        raise ValueError("pass either a state or rules/state options, not both")
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; with
    # proto 0 every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(state), log_config=None, log_level="critical", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-legaltracker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake Legal Tracker portal did not start on {host}:{bound_port}")
            time.sleep(0.01)
        yield FakePortal(f"http://{host}:{bound_port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Legal Tracker portal on loopback (for demos).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-units-per-line", type=Decimal, default=None)
    parser.add_argument("--auto-advance", action="store_true", help="move invoices one step on each status poll")
    args = parser.parse_args(argv)
    rules = FakeRules(max_units_per_line=args.max_units_per_line)
    with running_fake_portal(rules, port=args.port, auto_advance=args.auto_advance) as portal:
        print(json.dumps(portal.client_settings(), indent=2))
        print("Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
