"""Thomson Reuters Legal Tracker, through its Billing API.

What the client does, and which parts are documented by Thomson Reuters and which are our assumption:

* **Token** - OAuth 2.0 client credentials (documented: apps created in the Developer Portal get a client id and
  secret). ``POST token_url`` with ``grant_type=client_credentials``, ``client_id``, ``client_secret`` and, when
  configured, ``audience`` (form-encoded), answering ``access_token`` / ``expires_in`` / ``token_type``, as
  Thomson Reuters' other APIs document it. The token is cached until shortly before it expires and fetched again
  once when the API answers 401. The default ``token_url`` (``https://auth.thomsonreuters.com/oauth/token``) is
  our inference from those pages; set it from the onboarding details.
* **Upload** - documented: the LEDES file is first uploaded with the eFiles API, whose file key (a blob name) goes
  into ``invoiceFileKey``. The eFiles request shapes are not in the public pages we have, so we assume
  ``POST {efiles_url}/files`` with ``{"fileName", "size", "contentType"}`` answering ``{"fileKey", "uploadUrl"}``,
  then ``PUT uploadUrl`` with the bytes (a pre-signed blob URL: no bearer token is sent to it).
* **Submit** - documented: ``POST {base_url}/invoices`` with ``firmId``, ``firmOfficeId``, ``matterId``, ``currency``,
  ``isLedes``, ``typeId`` (sent only when configured) and ``invoiceFileKey``, header ``Company-ID``. We also send
  ``invoiceNumber`` and ``invoiceDate`` (Legal Tracker compares the posted invoice number with the file's).
* **Look-up and status** - documented: ``GET {base_url}/invoices/{id}`` and ``GET {base_url}/invoices`` with OData
  ``$filter``/``$expand``/``$select``/``$top``/``$skip``; ``$expand=adjustments`` gives the line adjustments
  (``type``, ``amount``, ``reason``, ``comment``, ``lineItemNumber``, ...) and ``$expand=invoiceFileInfo`` the
  uploaded file's ``md5Hash``. A list answer may be a JSON array or an OData ``{"value": [...]}``; both are read.

Exactly once: before every POST (the very first one too) the invoice is looked up by its number. Found with the
same file (``invoiceFileInfo.md5Hash``) -> ``Receipt(already_there=True)``; found with a different file -> a
``DestinationError`` that is not retryable (an invoice number must never be reused). Every uncertain failure
(timeout, dropped connection, 5xx, 408, 429) starts the whole sequence again from that look-up, after an
exponential backoff or the ``Retry-After`` the portal asked for, so a retry never posts the invoice twice.

Status words (Legal Tracker's API documentation does not list them; these are the words its screens use -
pending, approved, rejected, disputed, paid - plus a few spellings we accept), compared without case, spaces,
``-`` or ``_``:

============================================  ===========================================================
portal ``status``                             ``PortalState``
============================================  ===========================================================
received, submitted, posted, new              SUBMITTED
pending, inreview, underreview, processing,   UNDER_REVIEW (a disputed or appealed invoice is still being
disputed, appealed, onhold                    worked on between firm and client: not final)
approved                                      APPROVED, or ADJUSTED when the invoice carries adjustments
adjusted, reducedandapproved, reduced         ADJUSTED
rejected, declined                            REJECTED
paid                                          PAID
anything else                                 UNDER_REVIEW (not final, so we keep polling; the word is
                                              kept in ``Status.raw``)
============================================  ===========================================================

Each adjustment becomes a ``Rejection`` (``line_number`` from ``lineItemNumber``, ``None`` for an invoice-level
adjustment; ``reason`` and ``comment`` verbatim; ``amount`` as ``Decimal``). Its ``id`` is the adjustment's ``id``
when the portal gives one; the documented example shows none, so otherwise it is derived from the adjustment's
content (line, type, reason, amount, adjuster, time), which is stable across polls. A rejected invoice also
yields ``Rejection(line_number=None)`` with the portal's ``rejectionReason`` / ``rejectionComment`` (field names
assumed; the public pages do not show where a whole-invoice rejection reason is returned).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urljoin

import httpx

from connectors.destinations.directory import build_package, check_package
from connectors.http import retry_after
from engine.ledes import FORMATS, LedesInvoice
from engine.workflows.billing.destinations import (
    DestinationError,
    Package,
    PortalState,
    Receipt,
    Rejection,
    Status,
)

DEFAULT_TOKEN_URL = "https://auth.thomsonreuters.com/oauth/token"
TOKEN_LEEWAY_SECONDS = 60.0  # fetch a new token this long before the old one expires

_STATUS_WORDS: dict[str, PortalState] = {
    "received": PortalState.SUBMITTED,
    "submitted": PortalState.SUBMITTED,
    "posted": PortalState.SUBMITTED,
    "new": PortalState.SUBMITTED,
    "pending": PortalState.UNDER_REVIEW,
    "inreview": PortalState.UNDER_REVIEW,
    "underreview": PortalState.UNDER_REVIEW,
    "processing": PortalState.UNDER_REVIEW,
    "disputed": PortalState.UNDER_REVIEW,
    "appealed": PortalState.UNDER_REVIEW,
    "onhold": PortalState.UNDER_REVIEW,
    "approved": PortalState.APPROVED,
    "adjusted": PortalState.ADJUSTED,
    "reducedandapproved": PortalState.ADJUSTED,
    "reduced": PortalState.ADJUSTED,
    "rejected": PortalState.REJECTED,
    "declined": PortalState.REJECTED,
    "paid": PortalState.PAID,
}


def map_status(word: Any, *, has_adjustments: bool = False) -> PortalState:
    """The ``PortalState`` for one of Legal Tracker's status words (see the module docstring)."""
    key = "".join(ch for ch in str(word or "").lower() if ch.isalnum())
    state = _STATUS_WORDS.get(key, PortalState.UNDER_REVIEW)
    if state is PortalState.APPROVED and has_adjustments:
        return PortalState.ADJUSTED
    return state


class _Transient(Exception):
    """A failure after which trying again may work; ``retry_after`` is what the portal asked for, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Token:
    value: str
    expires_at: float  # on the client's clock


class LegalTrackerClient:
    """A ``Destination`` for Legal Tracker's Billing API. Thread-compatible, not thread-safe: use one per thread."""

    name = "legaltracker"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        firm_id: str | int,
        firm_office_id: str | int,
        company_id: str | int,
        *,
        matter_ids: Mapping[str, str | int] | Callable[[str], str | int | None],
        fmt: str = "1998b",
        currency: str = "USD",
        type_id: str | int | None = None,
        token_url: str | None = None,
        audience: str | None = None,
        efiles_url: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff: float | Callable[[int], float] = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if fmt not in FORMATS:
            raise DestinationError(
                f"Legal Tracker: unknown LEDES format {fmt!r}; expected one of {', '.join(FORMATS)}", retryable=False
            )
        missing = [n for n, v in (("base_url", base_url), ("client_id", client_id), ("client_secret", client_secret),
                                  ("firm_id", firm_id), ("firm_office_id", firm_office_id),
                                  ("company_id", company_id)) if v in (None, "")]
        if missing:
            raise DestinationError(f"Legal Tracker: missing setting(s): {', '.join(missing)}", retryable=False)
        if max_attempts < 1:
            raise DestinationError("Legal Tracker: max_attempts must be at least 1", retryable=False)
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.firm_id = firm_id
        self.firm_office_id = firm_office_id
        self.company_id = company_id
        self.matter_ids = matter_ids
        self.format = fmt
        self.currency = currency
        self.type_id = type_id
        self.token_url = token_url or DEFAULT_TOKEN_URL
        self.audience = audience
        if efiles_url:
            self.efiles_url = efiles_url.rstrip("/")
        elif "/billing-api/" in self.base_url + "/":
            self.efiles_url = (self.base_url + "/").replace("/billing-api/", "/efiles-api/").rstrip("/")
        else:
            self.efiles_url = self.base_url + "/efiles"
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._clock = clock
        self._sleep = sleep
        self._token: _Token | None = None
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:  # never shows the secret
        return f"LegalTrackerClient({self.base_url!r}, client_id={self.client_id!r}, firm_id={self.firm_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LegalTrackerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Destination ------------------------------------------------------------------------------------------

    def build(self, invoice: LedesInvoice, fmt: str | None = None) -> Package:
        return build_package(invoice, fmt or self.format)

    def submit(self, package: Package) -> Receipt:
        check_package(package)
        matter_id = self._matter_id(package.invoice)
        number = package.invoice_number
        file_key: str | None = None
        last: _Transient | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                existing = self._find(number)
                if existing is not None:
                    return self._receipt_for_existing(existing, package)
                if file_key is None:
                    file_key = self._upload(package)
                response = self._send("POST", f"{self.base_url}/invoices", what=f"posting invoice {number}",
                                      json=self._invoice_body(package, matter_id, file_key), accept=(409,))
                if response.status_code == 409:
                    existing = self._find(number)
                    if existing is not None:
                        return self._receipt_for_existing(existing, package)
                    raise DestinationError(
                        f"Legal Tracker refused invoice {number} as a duplicate: {_portal_message(response)}",
                        retryable=False,
                    )
                data = _json(response, f"posting invoice {number}")
                if not isinstance(data, dict) or data.get("id") in (None, ""):
                    raise DestinationError(
                        f"Legal Tracker accepted invoice {number} but its answer has no invoice id", retryable=False
                    )
                return Receipt(
                    reference=str(data["id"]),
                    state=map_status(data.get("status") or "submitted"),
                    already_there=False,
                    at=dt.datetime.now(dt.UTC),
                    raw=data,
                )
            except _Transient as exc:
                last = exc
                if attempt < self.max_attempts:
                    self._pause(attempt, exc.retry_after)
        raise DestinationError(
            f"submitting invoice {number} to Legal Tracker failed {self.max_attempts} times (last: {last}); "
            "whether the last attempt arrived is unknown, and trying again is safe: it looks the invoice up first",
            retryable=True,
        )

    def status(self, reference: str) -> Status:
        ref = str(reference).strip()
        if not ref or "/" in ref or "?" in ref:
            raise DestinationError(f"{reference!r} is not a Legal Tracker invoice id", retryable=False)
        data = self._with_retries(
            f"reading invoice {ref}",
            lambda: _json(self._send("GET", f"{self.base_url}/invoices/{ref}", what=f"reading invoice {ref}",
                                     params={"$expand": "adjustments"}), f"reading invoice {ref}"),
        )
        if not isinstance(data, dict):
            raise DestinationError(f"Legal Tracker answered invoice {ref} with something other than an object",
                                   retryable=True)
        return self._status_from(ref, data)

    def rejections(self, reference: str) -> list[Rejection]:
        return list(self.status(reference).rejections)

    # -- the steps --------------------------------------------------------------------------------------------

    def _matter_id(self, invoice: LedesInvoice) -> str | int:
        ours = sorted({line.law_firm_matter_id for line in invoice.lines})
        if len(ours) != 1:
            raise DestinationError(
                f"invoice {invoice.invoice_number} covers {len(ours)} matters ({', '.join(ours) or 'none'}); "
                "Legal Tracker takes one matter per invoice",
                retryable=False,
            )
        try:
            portal = self.matter_ids(ours[0]) if callable(self.matter_ids) else self.matter_ids.get(ours[0])
        except DestinationError:
            raise
        except Exception as exc:  # a look-up function of the caller's
            raise DestinationError(f"looking up the Legal Tracker matter for {ours[0]} failed: {exc}",
                                   retryable=True) from exc
        if portal in (None, ""):
            raise DestinationError(
                f"no Legal Tracker matterId configured for our matter {ours[0]} (invoice {invoice.invoice_number})",
                retryable=False,
            )
        return portal

    def _invoice_body(self, package: Package, matter_id: str | int, file_key: str) -> dict[str, Any]:
        invoice = package.invoice
        body: dict[str, Any] = {
            "firmId": self.firm_id,
            "firmOfficeId": self.firm_office_id,
            "matterId": matter_id,
            "currency": invoice.currency or self.currency,
            "isLedes": True,
            "invoiceFileKey": file_key,
            "invoiceNumber": package.invoice_number,
            "invoiceDate": invoice.invoice_date.isoformat(),
        }
        if self.type_id not in (None, ""):
            body["typeId"] = self.type_id
        return body

    def _find(self, number: str) -> dict[str, Any] | None:
        """The firm's invoice with this number at the portal (with its file info), or None. One try: it is a step
        of ``submit``'s sequence, whose loop starts again from here after a transient failure."""
        literal = number.replace("'", "''")
        response = self._send(
            "GET", f"{self.base_url}/invoices", what=f"looking up invoice {number}",
            params={"$filter": f"invoiceNumber eq '{literal}'", "$expand": "invoiceFileInfo", "$top": "50"},
        )
        data = _json(response, f"looking up invoice {number}")
        items = data.get("value") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise _Transient(f"looking up invoice {number}: unexpected answer shape")
        matches = [
            item for item in items
            if isinstance(item, dict) and str(item.get("invoiceNumber")) == number
            and (item.get("firmId") in (None, "") or str(item.get("firmId")) == str(self.firm_id))
        ]
        return matches[0] if matches else None

    def _receipt_for_existing(self, existing: dict[str, Any], package: Package) -> Receipt:
        ref = str(existing.get("id"))
        info = existing.get("invoiceFileInfo") or {}
        their_md5 = str(info.get("md5Hash") or "").lower()
        if their_md5:
            same = their_md5 == hashlib.md5(package.content).hexdigest()  # the portal's own checksum
        else:
            # No file checksum in the answer: fall back to comparing the invoice total when the portal gives one.
            same = _same_total(existing.get("totalAmount"), package.invoice.total)
        if not same:
            raise DestinationError(
                f"invoice number {package.invoice_number} is already at Legal Tracker (invoice id {ref}) with a "
                "different file: an invoice number must not be reused for a different invoice",
                retryable=False,
            )
        return Receipt(
            reference=ref,
            state=map_status(existing.get("status") or "submitted", has_adjustments=bool(existing.get("adjustments"))),
            already_there=True,
            at=dt.datetime.now(dt.UTC),
            raw=existing,
        )

    def _upload(self, package: Package) -> str:
        what = f"uploading the file of invoice {package.invoice_number}"
        response = self._send("POST", f"{self.efiles_url}/files", what=what, json={
            "fileName": package.file_name, "size": len(package.content), "contentType": "text/plain"})
        data = _json(response, what)
        key = data.get("fileKey") if isinstance(data, dict) else None
        url = data.get("uploadUrl") if isinstance(data, dict) else None
        if not key or not url:
            raise DestinationError(f"{what}: the eFiles answer has no fileKey/uploadUrl", retryable=False)
        upload = self._exchange(
            "PUT", urljoin(self.efiles_url + "/", str(url)), what=what, authenticated=False,
            content=package.content, headers={"Content-Type": "text/plain", "x-ms-blob-type": "BlockBlob"},
        )
        self._check(upload, what)
        return str(key)

    def _status_from(self, ref: str, data: dict[str, Any]) -> Status:
        adjustments = data.get("adjustments") or []
        if not isinstance(adjustments, list):
            adjustments = []
        rejections = [self._rejection(ref, adj) for adj in adjustments if isinstance(adj, dict)]
        state = map_status(data.get("status"), has_adjustments=bool(rejections))
        if state is PortalState.REJECTED:
            reason = data.get("rejectionReason") or data.get("statusReason") or "Invoice rejected"
            rejections.append(Rejection(
                id=f"{ref}:invoice-rejected",
                line_number=None,
                reason=str(reason),
                comment=_str_or_none(data.get("rejectionComment")),
                raw={k: data.get(k) for k in ("status", "rejectionReason", "rejectionComment") if k in data},
            ))
        return Status(reference=ref, state=state, rejections=tuple(rejections), raw=data)

    @staticmethod
    def _rejection(ref: str, adj: dict[str, Any]) -> Rejection:
        line = adj.get("lineItemNumber")
        try:
            line_number = int(str(line).strip()) if line not in (None, "") else None
        except ValueError:
            line_number = None
        amount = _decimal_or_none(adj.get("amount"))
        if adj.get("id") not in (None, ""):
            rid = f"{ref}:adj:{adj['id']}"
        else:
            key = json.dumps([line, adj.get("type"), adj.get("reason"), str(amount), adj.get("adjusterID"),
                              adj.get("dateTime")], ensure_ascii=True, default=str)
            rid = f"{ref}:adj:{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        reason = adj.get("reason") or (f"adjustment ({adj['type']})" if adj.get("type") else "adjustment")
        return Rejection(
            id=rid,
            line_number=line_number,
            reason=str(reason),
            reason_code=None,  # Legal Tracker's reasons are free text; ``type`` (e.g. "fia") stays in raw
            comment=_str_or_none(adj.get("comment")),
            amount=amount,
            raw={k: (str(v) if isinstance(v, Decimal) else v) for k, v in adj.items()},
        )

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _with_retries(self, what: str, step: Callable[[], Any]) -> Any:
        last: _Transient | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                return step()
            except _Transient as exc:
                last = exc
                if attempt < self.max_attempts:
                    self._pause(attempt, exc.retry_after)
        raise DestinationError(f"{what} at Legal Tracker failed {self.max_attempts} times (last: {last})",
                               retryable=True)

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                raise DestinationError(
                    f"Legal Tracker asked us to wait {retry_after:.0f} s before trying again; try later",
                    retryable=True,
                )
            delay = retry_after
        elif callable(self.backoff):
            delay = float(self.backoff(attempt))
        else:
            delay = min(self.max_backoff, float(self.backoff) * 2 ** (attempt - 1))
        if delay > 0:
            self._sleep(delay)

    def _send(self, method: str, url: str, *, what: str, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One authenticated call to the Billing or eFiles API: a 401 fetches a new token and tries once more.
        Returns a 2xx (or an ``accept``-ed status); raises ``_Transient`` or a non-retryable ``DestinationError``."""
        for fresh_token in (False, True):
            response = self._exchange(method, url, what=what, authenticated=True, **kwargs)
            if response.status_code == 401 and not fresh_token:
                self._token = None
                continue
            if response.status_code in accept:
                return response
            return self._check(response, what)
        raise AssertionError("unreachable")

    def _exchange(self, method: str, url: str, *, what: str, authenticated: bool, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if authenticated:
            headers["Authorization"] = f"Bearer {self._access_token()}"
            headers["Company-ID"] = str(self.company_id)
            headers.setdefault("Accept", "application/json")
        try:
            return self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise _Transient(f"{what}: no answer within the timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"{what}: connection failed ({type(exc).__name__}: {exc})") from exc

    @staticmethod
    def _check(response: httpx.Response, what: str) -> httpx.Response:
        code = response.status_code
        if 200 <= code < 300:
            return response
        if code in (408, 429) or code >= 500:
            raise _Transient(f"{what}: HTTP {code} {_portal_message(response)}".rstrip(),
                             retry_after=retry_after(response))
        if code == 401:
            raise DestinationError(f"{what}: Legal Tracker refused our token twice (HTTP 401); check the client id, "
                                   "secret and region", retryable=False)
        raise DestinationError(f"{what}: Legal Tracker refused it (HTTP {code}): {_portal_message(response)}",
                               retryable=False)

    def _access_token(self) -> str:
        token = self._token
        if token is not None and self._clock() < token.expires_at:
            return token.value
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._client_secret}
        if self.audience:
            form["audience"] = self.audience
        what = "getting an access token"
        try:
            response = self._http.post(self.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise _Transient(f"{what}: no answer within the timeout") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"{what}: connection failed ({type(exc).__name__})") from exc
        if response.status_code in (400, 401, 403):
            raise DestinationError(
                f"{what}: the token endpoint refused the client credentials (HTTP {response.status_code}: "
                f"{_portal_message(response)}); check LEGALTRACKER client id and secret",
                retryable=False,
            )
        self._check(response, what)
        data = _json(response, what)
        value = data.get("access_token") if isinstance(data, dict) else None
        if not value:
            raise DestinationError(f"{what}: the token endpoint answered without an access_token", retryable=False)
        try:
            lifetime = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        leeway = min(TOKEN_LEEWAY_SECONDS, lifetime / 2)
        self._token = _Token(str(value), self._clock() + lifetime - leeway)
        return self._token.value


# -- small helpers ----------------------------------------------------------------------------------------------


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return json.loads(response.content or b"null", parse_float=Decimal)
    except ValueError as exc:
        raise _Transient(f"{what}: the answer is not JSON (HTTP {response.status_code})") from exc


def _portal_message(response: httpx.Response) -> str:
    """The portal's own error text when the body has one, else a short excerpt of the body."""
    try:
        data = json.loads(response.content or b"null")
    except ValueError:
        return response.text[:200].strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            text = err.get("message") or err.get("code")
            if text:
                return str(text)
        for key in ("message", "error_description", "detail", "title", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return data[key]
    return json.dumps(data)[:200] if data is not None else ""


def _decimal_or_none(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _same_total(theirs: Any, ours: Decimal) -> bool:
    amount = _decimal_or_none(theirs)
    return amount is None or abs(amount - ours) <= Decimal("0.01")


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
