"""A fake Clio Manage API v4 on loopback, for tests, benchmarks and the demo: OAuth 2.0, activities (time and
expense entries) and what they refer to, webhooks, rate limits and API minor versions, as Clio's public
documentation and OpenAPI document describe them, with an in-memory firm and fault injection.

Start it::

    with running_fake_clio(activities=500) as clio:
        tokens = clio.state.issue_tokens()              # or the code flow: clio.authorize_url, clio.token_url
        httpx.get(clio.api_url + "/activities.json", params={"fields": "id,etag,note"},
                  headers={"Authorization": f"Bearer {tokens['access_token']}", "X-API-VERSION": "4.0.9"})

or from a shell, for a demo: ``python -m connectors.clio.fake --port 8766 --activities 500``.

The Python API (``clio.state`` is a :class:`FakeClioState`; everything is safe to call from the test thread while
the server thread answers):

* data: ``seed_activities(n, seed=, start=, days=)`` builds the firm (Acme, Globex and Initech as clients with
  LEDES ids, their matters, one of them flat-fee, the timekeepers of ``engine.samples``, the UTBMS codes the
  project ships) and ``n`` activities; ``activities``, ``activity(id)``, ``users``, ``matters``, ``contacts``,
  ``utbms_codes``, ``me`` read it; ``add_activity``, ``edit``, ``delete`` change it as Clio would (a new etag and
  ``updated_at``); ``redact`` hides hours and totals as 4.0.8 does for a user without hours visibility.
* faults: ``fail_next`` (5xx or 429 answers), ``slow_next`` (late answers), ``drop_next`` (the connection closes
  with no answer), ``expire_tokens``, ``between_pages`` (change records between two pages of a pull),
  ``force_version`` (answer as another API version than asked for); ``log`` holds every request.
* webhooks: ``deliver``, ``replay_last``, ``signed_delivery``; ``webhooks``, ``webhook(id)``, ``deliveries``.
* ``issue_tokens`` (a token pair without the code flow), ``reset`` (back to as constructed).

Behaviour worth knowing:

* ``fields``: only ``id,etag`` by default, on every endpoint (creating a webhook too: ask for ``shared_secret``);
  ``name{a,b}`` chooses a nested resource's fields, and without braces it gives its defaults. A nested record has
  the fields of Clio's ``_base`` schema: an activity's ``matter`` has ``client_id`` but no ``client``; a resource
  nested two levels deep (``matter{currency}``) gives its defaults and its fields cannot be chosen. An unknown
  field is a 400 ``ArgumentError``; so is a real Clio field this fake does not serve, and a query parameter it does
  not implement (an ``order`` other than ``id(asc)``, most filters): it fails loudly, never silently ignores.
* Lists page by cursor: a ``page_token`` holds the last id served, so a record edited after its page was served is
  not served again in this pass (it has a newer ``updated_at`` for the next ``updated_since`` pull), and a record
  deleted before its page is simply absent. ``meta.records`` counts all matching records.
* Versions: ``X-API-VERSION`` 4.0.3 to 4.0.10 (omitted: 4.0.9), anything else 410; up to 4.0.3 a TimeEntry's
  ``quantity``/``rounded_quantity`` are hours, from 4.0.4 seconds.
* Rate limits (``rate_limit`` requests per ``rate_window`` seconds, per access token; ``None``: no limit and no
  ``X-RateLimit-*`` headers): every authenticated API request counts except those refused with 429.
* Money and hours are ``Decimal`` inside and exact JSON numbers outside (``450.0``, ``1.5``): answers are written
  as text from the Decimal values, never through floats. Timestamps are kept as Clio renders them
  (``2026-03-14T21:07:33Z``; fixed-width UTC, so the strings compare in time order), and the fake's "now" is never
  earlier than a timestamp it holds, so an edit always shows up in the next ``updated_since`` pull.
* Time entries last whole hundredths of an hour (``quantity_in_hours`` is exact); ``rounded_quantity`` rounds up to
  the firm's 6-minute increment, and ``total`` is rounded hours x ``price`` (flat-rate entries: ``price``).

Shapes Clio's documentation leaves open, and what this fake assumes: an ExpenseEntry's ``quantity`` is a unit
count in every version; ``meta.records``; the error ``type`` words other than ``ArgumentError``; the 410, 404
and 422 texts; ``currency`` objects default to ``id,etag,code,sign`` (the OpenAPI types them as plain objects);
the handshake body ``{"meta": {"webhook_id": ...}}``; the handshake's ``X-Hook-Secret`` is the webhook's
``shared_secret``; ``X-Hook-Signature`` is lowercase hex; the activation path is served with and without
``.json`` and answers 204 (403 for a wrong secret); ``/oauth/deauthorize`` answers 200 with no body.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bisect
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from itertools import islice
from json.encoder import encode_basestring_ascii as _quote
from operator import attrgetter
from types import CodeType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import samples
from engine.codes import utbms_codes

API_PREFIX = "/api/v4"
DEFAULT_VERSION = "4.0.9"
SUPPORTED_VERSIONS = ("4.0.3", "4.0.4", "4.0.5", "4.0.6", "4.0.7", "4.0.8", "4.0.9", "4.0.10")
_SECONDS_SINCE = (4, 0, 4)  # TimeEntry quantity is in seconds from this version on, in hours before
TOKEN_TTL = 2_592_000  # Clio Manage access tokens last 30 days
_WEBHOOK_DEFAULT = dt.timedelta(days=3)
_WEBHOOK_MAX = dt.timedelta(days=31)
_WEBHOOK_MODELS = ("matter", "activity", "bill", "calendar_entry", "communication", "contact", "task", "document",
                   "folder", "clio_payments_payment")  # in the order of Clio's model ids, 1 to 10
INVALID_TOKEN = {"error": "invalid_token",
                 "error_description": "The access token provided is expired, revoked, malformed or invalid for "
                                      "other reasons."}
_ROUNDING_MINUTES = 6  # the firm's billing increment (settings/billing.json "rounding")
_STEP = Decimal(_ROUNDING_MINUTES * 60)
_HOUR = Decimal(3600)
_CENT = Decimal("0.01")

# -- JSON fragments ----------------------------------------------------------------------------------------------
# Answers are written as text from each record's attributes, not through dicts and json.dumps: exact for Decimal, and
# several times faster, which matters when a benchmark pulls 100,000 activities.

_Render = Callable[[Any], str]


def _int(value: int | None) -> str:
    return "null" if value is None else str(value)


def _str(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _num(value: Decimal | None) -> str:
    """A Decimal as the JSON number Clio (which sends doubles) would write: ``450.0``, ``1.5``, exactly."""
    if value is None:
        return "null"
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def _date(value: dt.date | None) -> str:
    return "null" if value is None else f'"{value.isoformat()}"'


def _strings(value: Iterable[str]) -> str:
    return json.dumps(list(value))


_ENCODERS = {encode.__name__: encode for encode in (_int, _str, _bool, _num, _date, _strings)}


def _attributes(**encoders: Callable[[Any], str]) -> dict[str, str]:
    """Field expressions (Python source over the record ``r``): the attribute of the field's name, encoded."""
    return {name: f"{encode.__name__}(r.{name})" for name, encode in encoders.items()}


class _ApiError(Exception):
    """An answer in Clio's error envelope ``{"error": {"type", "message"}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def _bad(message: str) -> _ApiError:
    return _ApiError(400, "ArgumentError", message)


_Selection = list[tuple[str, "_Selection | None"]]
_TOKENS = re.compile(r"[{},]|[^{},]+")


def _parse_fields(text: str) -> _Selection:
    """``a,b{c,d}`` as ``[("a", None), ("b", [("c", None), ("d", None)])]``; malformed text is a 400."""
    tokens = _TOKENS.findall(text)
    position = 0

    def items(depth: int) -> _Selection:
        nonlocal position
        found: _Selection = []
        while True:
            if position == len(tokens) or tokens[position] in ("{", "}", ","):
                raise _bad(f"fields: a field name is missing in {text!r}")
            name, sub = tokens[position].strip(), None
            position += 1
            if position < len(tokens) and tokens[position] == "{":
                position += 1
                sub = items(depth + 1)
            found.append((name, sub))
            if position == len(tokens):
                if depth:
                    raise _bad(f"fields: a closing brace is missing in {text!r}")
                return found
            separator = tokens[position]
            position += 1
            if separator == "}" and depth:
                return found
            if separator != ",":
                raise _bad(f"fields: unexpected {separator!r} in {text!r}")

    return items(0)


@dataclass(frozen=True, eq=False)
class _Resource:
    """How one kind of Clio record is rendered: its fields (as expressions, see ``_attributes``), its nested
    resources (read from the record's attribute of the same name), the fields it gives when none are chosen, and
    which of its nested resources it still shows when it is itself nested (Clio's OpenAPI types nested records by
    their ``_base`` schema, which keeps only plain objects such as ``currency``)."""

    name: str
    fields: dict[str, str]
    nested: dict[str, _Resource] = field(default_factory=dict)
    defaults: tuple[str, ...] = ("id", "etag")
    nested_when_nested: frozenset[str] = frozenset()

    def renderer(self, selection: str | None) -> _Render:
        """A function writing one record as a JSON object with the ``fields`` selection (a 400 when invalid)."""
        return _plan(self, selection).renderer()


@dataclass(frozen=True)
class _Plan:
    """A compiled ``fields`` selection: a generated function returning one f-string of the chosen fields (a page of
    200 activities costs one call per record, not one per field), and the plans of the nested resources it calls."""

    code: CodeType
    children: tuple[tuple[str, str, _Plan], ...]  # (name in the generated code, attribute, plan)

    def renderer(self) -> _Render:
        """A fresh renderer: its memo of nested records lasts as long as it does (one request)."""
        namespace: dict[str, Any] = dict(_ENCODERS)
        for alias, attribute, plan in self.children:
            namespace[alias] = _child(attribute, plan.renderer())
        exec(self.code, namespace)
        return namespace["render"]


@functools.lru_cache(maxsize=256)
def _plan(resource: _Resource, selection: str | None) -> _Plan:
    return _compile(resource, _parse_fields(selection) if selection else None, depth=0)


def _compile(resource: _Resource, chosen: _Selection | None, depth: int) -> _Plan:
    """The plan of a selection; only the names of known fields reach the generated source."""
    nested = {name: kind for name, kind in resource.nested.items()
              if not depth or name in resource.nested_when_nested}
    parts: list[str] = []
    children: list[tuple[str, str, _Plan]] = []
    seen: set[str] = set()
    for name, sub in chosen or [(name, None) for name in resource.defaults]:
        if name in seen:
            continue
        seen.add(name)
        if name in resource.fields:
            if sub is not None:
                raise _bad(f"{resource.name}.{name} is not a nested resource")
            expression = resource.fields[name]
        elif name in nested:
            if sub is not None and depth:
                raise _bad(f"{resource.name}.{name} is nested two levels deep: its fields cannot be chosen")
            alias = f"_nested_{name}"
            children.append((alias, name, _compile(nested[name], sub, depth + 1)))
            expression = f"{alias}(r)"
        else:
            raise _bad(f"{name!r} is not a field of {resource.name}{' (nested)' if depth else ''} served by the "
                       f"fake Clio (it has {', '.join(sorted([*resource.fields, *nested]))})")
        parts.append(f"{_quote(name)}:{{{expression}}}")
    source = "def render(r):\n    return f'{{" + ",".join(parts) + "}}'"
    return _Plan(compile(source, f"<fake Clio {resource.name}>", "exec"), tuple(children))


def _child(attribute: str, render: _Render) -> _Render:
    """Render a nested resource, once per distinct record (matters and users repeat across a page)."""
    get = attrgetter(attribute)
    memo: dict[Any, str] = {}

    def render_child(record: Any) -> str:
        child = get(record)
        if child is None:
            return "null"
        text = memo.get(child)
        if text is None:
            text = memo[child] = render(child)
        return text

    return render_child


# -- records -----------------------------------------------------------------------------------------------------
# eq=False: records hash by identity, which the nested-resource memo relies on.


def _etag(kind: str, record_id: int, revision: int = 1) -> str:
    """A Clio-style ETag: a quoted hex digest, as it appears both in JSON and in the ``ETag`` header."""
    return '"' + hashlib.md5(f"{kind}:{record_id}:{revision}".encode()).hexdigest() + '"'


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(slots=True, eq=False)
class Currency:
    id: int
    etag: str
    code: str
    sign: str
    created_at: str
    updated_at: str


@dataclass(slots=True, eq=False)
class Contact:
    """A client company, with the LEDES client id e-billing needs."""

    id: int
    etag: str
    name: str
    ledes_client_id: str | None
    currency: Currency
    created_at: str
    updated_at: str
    type: str = "Company"
    is_client: bool = True


@dataclass(slots=True, eq=False)
class Matter:
    id: int
    etag: str
    number: int
    display_number: str  # LEDES LAW_FIRM_MATTER_ID
    description: str
    client: Contact
    client_reference: str | None  # LEDES CLIENT_MATTER_ID
    billing_method: str  # hourly, flat or contingency
    currency: Currency
    open_date: dt.date
    created_at: str
    updated_at: str
    status: str = "Open"
    billable: bool = True

    @property
    def client_id(self) -> int:
        return self.client.id

    @property
    def currency_id(self) -> int:
        return self.currency.id


@dataclass(slots=True, eq=False)
class Account:
    id: int
    etag: str
    name: str


@dataclass(slots=True, eq=False)
class JobTitle:
    id: int
    etag: str
    name: str
    initials: str


@dataclass(slots=True, eq=False)
class User:
    """A timekeeper."""

    id: int
    etag: str
    first_name: str
    last_name: str
    email: str
    rate: Decimal
    subscription_type: str  # Attorney or NonAttorney
    job_title: JobTitle | None
    account: Account
    created_at: str
    updated_at: str
    enabled: bool = True
    account_owner: bool = False

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def initials(self) -> str:
        return self.first_name[0] + self.last_name[0]


@dataclass(slots=True, eq=False)
class UtbmsCode:
    id: int
    etag: str
    code: str
    name: str
    type: str  # UtbmsTask, UtbmsActivity or UtbmsExpense
    utbms_set_id: int
    created_at: str
    updated_at: str

    @property
    def description(self) -> str:
        return self.name


@dataclass(slots=True, eq=False)
class ActivityDescription:
    """What a time entry was for: a UTBMS task and activity pair, or a firm-defined (``clio``) description."""

    id: int
    etag: str
    name: str
    type: str  # utbms or clio
    category_type: str  # hourly or flat fee
    task: UtbmsCode | None
    activity: UtbmsCode | None

    @property
    def utbms_task_id(self) -> int | None:
        return self.task.id if self.task else None

    @property
    def utbms_activity_id(self) -> int | None:
        return self.activity.id if self.activity else None

    @property
    def utbms_task_name(self) -> str | None:
        return self.task.name if self.task else None


@dataclass(slots=True, eq=False)
class ExpenseCategory:
    id: int
    etag: str
    name: str
    entry_type: str = "unassociated"


@dataclass(slots=True, eq=False)
class BillingSettings:
    id: int
    etag: str
    currency: str
    currency_sign: str
    created_at: str
    updated_at: str
    rounding: int = _ROUNDING_MINUTES
    use_decimal_rounding: bool = False
    use_utbms_codes: bool = True
    time_on_flat_rate_contingency_matters_is_non_billable: bool = False


@dataclass(slots=True, eq=False)
class Activity:
    """A time or expense entry. ``quantity`` is what Clio 4.0.4+ shows: seconds worked (TimeEntry) or units
    (ExpenseEntry); the hours, the rounding and ``total`` follow from it and ``price``."""

    id: int
    etag: str
    type: str  # TimeEntry or ExpenseEntry
    date: dt.date
    quantity: Decimal
    price: Decimal  # hourly rate, flat fee (flat_rate), or expense unit price
    note: str
    matter: Matter
    user: User
    created_at: str
    updated_at: str
    activity_description: ActivityDescription | None = None  # time entries
    utbms_expense: UtbmsCode | None = None  # expense entries
    expense_category: ExpenseCategory | None = None  # expense entries
    flat_rate: bool = False
    redacted: bool = False  # hours and totals hidden, as for a user without hours visibility (4.0.8)
    revision: int = 1  # counts edits; part of the etag
    billed: bool = False
    on_bill: bool = False
    non_billable: bool = False
    no_charge: bool = False
    contingency_fee: bool = False
    tax_setting: str = "no_tax"
    reference: str | None = None
    bill: None = None  # never on a bill in this fake
    vendor: None = None  # only hard-cost entries have one

    @property
    def is_time(self) -> bool:
        return self.type == "TimeEntry"

    @property
    def quantity_in_hours(self) -> Decimal | None:
        return self.quantity / _HOUR if self.is_time else None

    @property
    def rounded_quantity(self) -> Decimal | None:
        return (self.quantity / _STEP).to_integral_value(ROUND_CEILING) * _STEP if self.is_time else None

    @property
    def rounded_quantity_in_hours(self) -> Decimal | None:
        return self.rounded_quantity / _HOUR if self.is_time else None

    @property
    def total(self) -> Decimal:
        if not self.is_time:
            amount = self.quantity * self.price
        elif self.flat_rate:
            amount = self.price
        else:
            amount = self.rounded_quantity_in_hours * self.price
        return amount.quantize(_CENT, ROUND_HALF_UP)

    @property
    def non_billable_total(self) -> Decimal:
        return Decimal(0)

    @property
    def quantity_redacted(self) -> bool:
        return self.redacted

    @property
    def currency(self) -> Currency:
        return self.matter.currency


@dataclass(slots=True, eq=False)
class Webhook:
    id: int
    etag: str
    url: str
    fields: str
    shared_secret: str
    model: str
    events: tuple[str, ...]
    expires_at: str
    user: User
    created_at: str
    updated_at: str
    status: str = "pending"  # pending until the handshake, then enabled
    revision: int = 1


# -- how each record is rendered ---------------------------------------------------------------------------------

_CURRENCY = _Resource("Currency", _attributes(id=_int, etag=_str, code=_str, sign=_str, created_at=_str,
                                             updated_at=_str), defaults=("id", "etag", "code", "sign"))
_CONTACT = _Resource("Contact", _attributes(id=_int, etag=_str, name=_str, type=_str, is_client=_bool,
                                           ledes_client_id=_str, created_at=_str, updated_at=_str),
                    {"currency": _CURRENCY}, nested_when_nested=frozenset({"currency"}))
_MATTER = _Resource("Matter", _attributes(
    id=_int, etag=_str, number=_int, display_number=_str, description=_str, status=_str, client_id=_int,
    client_reference=_str, billable=_bool, billing_method=_str, currency_id=_int, open_date=_date, created_at=_str,
    updated_at=_str), {"client": _CONTACT, "currency": _CURRENCY}, nested_when_nested=frozenset({"currency"}))
_ACCOUNT = _Resource("Account", _attributes(id=_int, etag=_str, name=_str))
_JOB_TITLE = _Resource("JobTitle", _attributes(id=_int, etag=_str, name=_str, initials=_str))
_USER = _Resource("User", _attributes(
    id=_int, etag=_str, name=_str, first_name=_str, last_name=_str, initials=_str, email=_str, rate=_num,
    subscription_type=_str, enabled=_bool, account_owner=_bool, created_at=_str, updated_at=_str),
    {"job_title": _JOB_TITLE, "account": _ACCOUNT})
_UTBMS_CODE = _Resource("UtbmsCode", _attributes(id=_int, etag=_str, code=_str, name=_str, description=_str,
                                                type=_str, utbms_set_id=_int, created_at=_str, updated_at=_str))
_ACTIVITY_DESCRIPTION = _Resource("ActivityDescription", _attributes(
    id=_int, etag=_str, name=_str, type=_str, category_type=_str, utbms_task_id=_int, utbms_activity_id=_int,
    utbms_task_name=_str))
_EXPENSE_CATEGORY = _Resource("ExpenseCategory", _attributes(id=_int, etag=_str, name=_str, entry_type=_str))
_BILL = _Resource("Bill", _attributes(id=_int, etag=_str, number=_str, state=_str))  # activities are never billed
_BILLING_SETTINGS = _Resource("BillingSetting", _attributes(
    id=_int, etag=_str, rounding=_int, use_decimal_rounding=_bool, currency=_str, currency_sign=_str,
    use_utbms_codes=_bool, time_on_flat_rate_contingency_matters_is_non_billable=_bool))
_WEBHOOK = _Resource("Webhook", _attributes(
    id=_int, etag=_str, url=_str, fields=_str, shared_secret=_str, model=_str, status=_str, events=_strings,
    expires_at=_str, created_at=_str, updated_at=_str), {"user": _USER})

_REDACTABLE = ("quantity", "rounded_quantity", "quantity_in_hours", "rounded_quantity_in_hours", "total",
               "non_billable_total")


def _unless_redacted(expression: str) -> str:
    return f'("null" if r.redacted else {expression})'


def _activity_shape(*, hours: bool) -> _Resource:
    """Activities as one API version shows them: ``hours`` for 4.0.3 and earlier (TimeEntry quantity in hours)."""
    shown = _attributes(id=_int, etag=_str, type=_str, date=_date, quantity_redacted=_bool, price=_num, note=_str,
                        flat_rate=_bool, billed=_bool, on_bill=_bool, non_billable=_bool, no_charge=_bool,
                        contingency_fee=_bool, tax_setting=_str, reference=_str, created_at=_str, updated_at=_str)
    amounts = _attributes(quantity=_num, rounded_quantity=_num, quantity_in_hours=_num,
                          rounded_quantity_in_hours=_num, total=_num, non_billable_total=_num)
    if hours:
        amounts["quantity"] = "_num(r.quantity_in_hours if r.is_time else r.quantity)"
        amounts["rounded_quantity"] = "_num(r.rounded_quantity_in_hours)"
    shown.update({name: _unless_redacted(amounts[name]) for name in _REDACTABLE})
    return _Resource("Activity", shown, {
        "activity_description": _ACTIVITY_DESCRIPTION, "utbms_expense": _UTBMS_CODE,
        "expense_category": _EXPENSE_CATEGORY, "matter": _MATTER, "user": _USER, "bill": _BILL,
        "vendor": _CONTACT, "currency": _CURRENCY})


_ACTIVITY = _activity_shape(hours=False)
_ACTIVITY_IN_HOURS = _activity_shape(hours=True)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _activity_resource(version: str) -> _Resource:
    """How activities look to a client of API ``version``."""
    return _ACTIVITY if _version_key(version) >= _SECONDS_SINCE else _ACTIVITY_IN_HOURS


# -- tables ------------------------------------------------------------------------------------------------------


class _Table:
    """Records of one kind in id order: lookups and id-cursor pages by bisection."""

    def __init__(self, rows: Iterable[Any] = ()):
        self.rows = sorted(rows, key=attrgetter("id"))
        self.ids = [row.id for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, record_id: int) -> Any | None:
        at = bisect.bisect_left(self.ids, record_id)
        return self.rows[at] if at < len(self.ids) and self.ids[at] == record_id else None

    def add(self, row: Any) -> None:
        at = bisect.bisect_left(self.ids, row.id)
        self.ids.insert(at, row.id)
        self.rows.insert(at, row)

    def remove(self, record_id: int) -> Any | None:
        at = bisect.bisect_left(self.ids, record_id)
        if at == len(self.ids) or self.ids[at] != record_id:
            return None
        del self.ids[at]
        return self.rows.pop(at)

    def subset(self, ids: Iterable[int]) -> _Table:
        return _Table(row for row in map(self.get, set(ids)) if row is not None)

    def page(self, keep: Callable[[Any], bool] | None, after_id: int, limit: int) -> tuple[list[Any], bool]:
        """Up to ``limit`` records with ids above ``after_id`` that ``keep`` accepts, and whether more follow."""
        start = bisect.bisect_right(self.ids, after_id)
        tail = map(self.rows.__getitem__, range(start, len(self.rows)))
        found = list(islice(tail if keep is None else filter(keep, tail), limit + 1))
        return found[:limit], len(found) > limit

    def count(self, keep: Callable[[Any], bool] | None) -> int:
        return len(self.rows) if keep is None else sum(1 for row in self.rows if keep(row))


# -- the firm ----------------------------------------------------------------------------------------------------

_CLIENTS = (  # name, LEDES client id, currency code
    ("Acme Corporation", "ACME01", "USD"), ("Globex plc", "GLOBEX", "GBP"), ("Initech LLC", "INITECH", "USD"))
_MATTERS = (  # client, display number, client reference, description, billing method
    *(("ACME01", number, reference, name, "hourly") for number, reference, name in samples.MATTERS),
    ("GLOBEX", "2026-0101", "GLX-LIT-0101", "Globex v. Hooli (High Court)", "hourly"),
    ("GLOBEX", "2026-0102", None, "Globex regulatory investigation: document review", "hourly"),
    ("INITECH", "2026-0150", None, "Initech trademark portfolio (flat fee)", "flat"),
)
_CURRENCIES = (("USD", "$"), ("CAD", "$"), ("GBP", "£"), ("EUR", "€"), ("AUD", "$"))
_JOB_TITLES = {"PARTNR": ("Partner", "PT"), "OFCOUN": ("Of Counsel", "OC"), "ASSOC": ("Associate", "AS"),
               "PARALG": ("Paralegal", "PL"), "LGLAST": ("Legal Assistant", "LA")}
_ATTORNEYS = {"PARTNR", "OFCOUN", "ASSOC"}
_FLAT_FEES = (Decimal(750), Decimal(1500), Decimal(2500))
_FLAT_NOTE = "Prepared and filed trademark application (flat fee)"
_UNCODED_NOTE = "Telephone call with client regarding case status"
_CODE_TYPES = {"task": "UtbmsTask", "phase": "UtbmsTask", "activity": "UtbmsActivity", "expense": "UtbmsExpense"}
_SECONDS = [Decimal(36 * hundredths) for hundredths in range(451)]  # up to 4.5 h in hundredths of an hour
_FIRST_ACTIVITY_ID = 1_580_932_000


@dataclass
class _Firm:
    """The firm's master data: everything activities refer to."""

    account: Account
    settings: BillingSettings
    currencies: _Table
    contacts: _Table
    matters: _Table
    users: _Table
    codes: _Table
    descriptions: dict[tuple[str | None, str | None], ActivityDescription]  # (task, activity) -> description
    flat_fee: ActivityDescription  # for flat-rate time entries: no UTBMS codes, as in Clio's own flat-fee items
    categories: dict[str, ExpenseCategory]  # expense code -> category
    by_code: dict[str, UtbmsCode]

    def description(self, task: str | None, activity: str | None) -> ActivityDescription:
        """The description for a task and activity pair (``None, None``: an uncoded, firm-defined one)."""
        found = self.descriptions.get((task, activity))
        if found is None:
            number = 70_001 + len(self.descriptions)
            task_code, activity_code = self.by_code.get(task or ""), self.by_code.get(activity or "")
            name = f"{activity} {activity_code.name}" if activity_code else "General"
            found = ActivityDescription(number, _etag("description", number), name,
                                        "utbms" if activity_code else "clio", "hourly", task_code, activity_code)
            self.descriptions[(task, activity)] = found
        return found


def _build_firm(origin: str) -> _Firm:
    def stamped(kind: str, number: int) -> dict[str, Any]:
        return {"id": number, "etag": _etag(kind, number), "created_at": origin, "updated_at": origin}

    account = Account(1_000_001, _etag("account", 1_000_001), "Hale & Moss LLP")
    currencies = {code: Currency(**stamped("currency", n), code=code, sign=sign)
                  for n, (code, sign) in enumerate(_CURRENCIES, start=1)}
    contacts = {ledes: Contact(**stamped("contact", 998_877 + n), name=name, ledes_client_id=ledes,
                               currency=currencies[currency])
                for n, (name, ledes, currency) in enumerate(_CLIENTS)}
    matters = [Matter(**stamped("matter", 1_122_334_455 + n), number=int(number.split("-")[1]),
                      display_number=number, description=description, client=contacts[client],
                      client_reference=reference, billing_method=method, currency=contacts[client].currency,
                      open_date=dt.date.fromisoformat(origin[:10]))
               for n, (client, number, reference, description, method) in enumerate(_MATTERS)]
    titles = {cls: JobTitle(901 + n, _etag("job_title", 901 + n), name, initials)
              for n, (cls, (name, initials)) in enumerate(_JOB_TITLES.items())}
    users = []
    for n, (_, full_name, cls, rate) in enumerate(samples.TIMEKEEPERS):
        last, first = (part.strip() for part in full_name.split(","))
        users.append(User(**stamped("user", 345_678 + n), first_name=first, last_name=last,
                          email=f"{first}.{last}@halemoss.example".lower(), rate=Decimal(rate),
                          subscription_type="Attorney" if cls in _ATTORNEYS else "NonAttorney",
                          job_title=titles.get(cls), account=account, account_owner=n == 0))
    # Not a typical timekeeper, for data-quality flags: the summer associate has left (disabled) and has no job
    # title to derive a LEDES classification from.
    users[-1].enabled = False
    set_ids = {name: n for n, name in enumerate(sorted({c.code_set for c in utbms_codes().values()}), start=1)}
    codes = [UtbmsCode(**stamped("utbms_code", 10_001 + n), code=c.code, name=c.name, type=_CODE_TYPES[c.kind],
                       utbms_set_id=set_ids[c.code_set])
             for n, c in enumerate(sorted(utbms_codes().values(), key=attrgetter("code")))]
    by_code = {code.code: code for code in codes}
    categories = {code: ExpenseCategory(5_501 + n, _etag("category", 5_501 + n), by_code[code].name)
                  for n, (code, *_) in enumerate(samples.EXPENSES)}
    flat_fee = ActivityDescription(70_000, _etag("description", 70_000), "Trademark filing (flat fee)", "clio",
                                   "flat fee", None, None)
    settings = BillingSettings(**stamped("billing_setting", 1), currency="USD", currency_sign="$")
    return _Firm(account, settings, _Table(currencies.values()), _Table(contacts.values()), _Table(matters),
                 _Table(users), _Table(codes), {}, flat_fee, categories, by_code)


def _seed_activities(firm: _Firm, n: int, rng: random.Random, start: dt.date, days: int) -> list[Activity]:
    """``n`` activities dated from ``start`` over ``days``, in id order (ids rise with ``created_at``)."""
    matters = firm.matters.rows
    hourly = [m for m in matters if m.billing_method == "hourly"]
    acme = [m for m in hourly if m.client.ledes_client_id == "ACME01"]
    others = [m for m in hourly if m not in acme]
    flat_matter = next(m for m in matters if m.billing_method == "flat")
    regulars, occasional = firm.users.rows[:11], firm.users.rows[11:]  # the disabled summer associate, rarely
    coded = [(firm.description(task, activity), note) for task, activity, note in samples.TASKS]
    expenses = [(firm.by_code[code], firm.categories[code], note, int(Decimal(low) * 100), int(Decimal(high) * 100),
                 units) for code, note, (low, high), units, _ in samples.EXPENSES]
    day_seconds = [_midnight(start + dt.timedelta(days=d)) for d in range(days)]
    dates = [start + dt.timedelta(days=d) for d in range(days)]
    made: list[tuple[int, Activity]] = []
    for i in range(n):
        day = rng.randrange(days)
        created = day_seconds[day] + 9 * 3600 + rng.randrange(12 * 3600) + 86400 * rng.choice((0, 0, 0, 1, 2))
        stamp = _stamp(created)
        updated = _stamp(created + rng.randrange(3600, 5 * 86400)) if rng.random() < 0.2 else stamp
        user = rng.choice(occasional if rng.random() < 0.02 else regulars)
        common = {"id": 0, "etag": "", "date": dates[day], "user": user, "created_at": stamp, "updated_at": updated}
        draw = rng.random()
        if i == n // 3:  # an hourly entry with no UTBMS code (pitfall 7)
            entry = Activity(type="TimeEntry", quantity=_SECONDS[rng.randint(1, 60)], price=user.rate,
                             note=_UNCODED_NOTE, matter=acme[0], activity_description=firm.description(None, None),
                             **common)
        elif i == 2 * n // 3 or draw < 0.16:  # the one at 2n // 3 has no UTBMS code
            code, category, note, low, high, (fewest, most) = rng.choice(expenses)
            entry = Activity(type="ExpenseEntry", quantity=Decimal(rng.randint(fewest, most)),
                             price=Decimal(rng.randint(low, high)) / 100, note=note, matter=rng.choice(hourly),
                             utbms_expense=None if i == 2 * n // 3 else code, expense_category=category, **common)
        elif draw < 0.18:
            entry = Activity(type="TimeEntry", quantity=_SECONDS[rng.randint(10, 200)], price=rng.choice(_FLAT_FEES),
                             note=_FLAT_NOTE, matter=flat_matter, activity_description=firm.flat_fee, flat_rate=True,
                             **common)
        else:
            description, note = rng.choice(coded)
            if rng.random() < 0.04:
                note = rng.choice(samples.VAGUE)
            price = user.rate + rng.choice((25, 50, 75, 100)) if rng.random() < 0.05 else user.rate
            entry = Activity(type="TimeEntry", quantity=_SECONDS[rng.randint(1, 450)], price=price, note=note,
                             matter=rng.choice(acme if rng.random() < 0.8 else others),
                             activity_description=description, **common)
        made.append((created, entry))
    made.sort(key=lambda pair: pair[0])
    number = _FIRST_ACTIVITY_ID
    for _, entry in made:
        number += rng.randint(1, 5)
        entry.id, entry.etag = number, _etag("activity", number)
    return [entry for _, entry in made]


# -- the state ---------------------------------------------------------------------------------------------------


@dataclass
class LoggedRequest:
    """One request as the fake saw it. ``status`` is None when the connection was dropped; ``fault`` names the
    injected fault that answered it (``status``, ``slow`` or ``drop``); ``headers`` have lower-case names."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One webhook event the fake POSTed (``status`` None: the receiver could not be reached)."""

    webhook_id: int
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None


@dataclass
class _Fault:
    kind: str  # status, slow or drop
    remaining: int
    path: str | None
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class _PageHook:
    pages: int  # activities list pages still to be served before the action runs
    action: Callable[[FakeClioState], Any]


@dataclass
class _Window:
    ends_at: float
    used: int = 0


_FAULT_TYPES = {429: "RateLimited", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
                504: "GatewayTimeout"}
_EVENTS = ("created", "updated", "deleted")
_FIXED = {"id", "etag", "created_at", "updated_at", "revision"}
_EDITABLE = {f.name for f in fields(Activity)} - _FIXED


class FakeClioState:
    """The fake Clio's configuration, data and test controls; safe to use from the test thread while the server
    thread answers.

    Configuration (plain attributes, may be changed at any time): ``client_id``, ``client_secret``, ``token_ttl``
    (the ``expires_in`` of access tokens, seconds), ``rate_limit`` (requests per window and access token; None:
    unlimited), ``rate_window`` (seconds), ``allow_http_hooks`` (accept ``http://`` webhook URLs on loopback),
    ``hook_timeout`` (seconds the fake waits for a webhook receiver), ``clock`` (unix time; tests can pass a
    controllable one to expire tokens, windows and webhooks without sleeping).
    """

    def __init__(self, *, activities: int = 0, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31,
                 client_id: str = "ocgate-fake-clio", client_secret: str = "fake-clio-secret",
                 token_ttl: float = TOKEN_TTL, rate_limit: int | None = None, rate_window: float = 60.0,
                 allow_http_hooks: bool = True, hook_timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self.client_id, self.client_secret, self.token_ttl = client_id, client_secret, token_ttl
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.allow_http_hooks, self.hook_timeout, self.clock = allow_http_hooks, hook_timeout, clock
        self._seeding = {"n": activities, "seed": seed, "start": start, "days": days}
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Seed the data as constructed and forget tokens, faults, the log, webhooks and deliveries (lets one
        running server serve many tests; configuration attributes keep their current values)."""
        with self._lock:
            self._access: dict[str, tuple[float, str]] = {}  # access token -> (expires at, its refresh token)
            self._refresh_tokens: set[str] = set()
            self._codes: dict[str, tuple[str, float]] = {}  # authorization code -> (redirect URI, expires at)
            self._windows: dict[str, _Window] = {}
            self._faults: list[_Fault] = []
            self._page_hooks: list[_PageHook] = []
            self._webhooks = _Table()
            self._forced_version: str | None = None
            self.log: list[LoggedRequest] = []
            self.deliveries: list[Delivery] = []
            self.seed_activities(**self._seeding)

    # -- data ----------------------------------------------------------------------------------------------------

    def seed_activities(self, n: int, *, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31) -> None:
        """Replace the firm's data with a deterministic one: the master data and ``n`` activities dated from
        ``start`` over ``days`` (about 82% hourly time with UTBMS codes, 2% flat-rate time on the flat-fee matter,
        16% coded expenses; the activity at n // 3 is hourly time with no UTBMS code and the one at 2n // 3 an
        expense with no UTBMS code). Every timestamp falls before ``start + days + 7``."""
        firm = _build_firm(_stamp(_midnight(start) - 30 * 86400))
        made = _seed_activities(firm, n, random.Random(seed), start, days)
        with self._lock:
            self._firm = firm
            self._activities = _Table(made)
            self._last_id = made[-1].id if made else _FIRST_ACTIVITY_ID
            self._deleted: dict[int, Activity] = {}
            self._newest = max([firm.settings.updated_at, *(a.updated_at for a in made)])
            self._counts: dict[Any, int] = {}

    @property
    def activities(self) -> list[Activity]:
        """Every activity, in id order (deleted ones are gone)."""
        with self._lock:
            return list(self._activities.rows)

    def activity(self, activity_id: int) -> Activity:
        with self._lock:
            found = self._activities.get(activity_id)
        if found is None:
            raise KeyError(f"no activity {activity_id}")
        return found

    @property
    def users(self) -> list[User]:
        return list(self._firm.users.rows)

    @property
    def matters(self) -> list[Matter]:
        return list(self._firm.matters.rows)

    @property
    def contacts(self) -> list[Contact]:
        return list(self._firm.contacts.rows)

    @property
    def utbms_codes(self) -> list[UtbmsCode]:
        return list(self._firm.codes.rows)

    @property
    def me(self) -> User:
        """The user every token belongs to: the account owner."""
        return self._firm.users.rows[0]

    def add_activity(self, *, type: str = "TimeEntry", quantity: Decimal | int = 3600, price: Decimal | None = None,
                     note: str = "Reviewed and analyzed deposition transcript", date: dt.date | None = None,
                     matter_id: int | None = None, user_id: int | None = None, task: str | None = "L120",
                     activity: str | None = "A104", expense: str | None = "E101", flat_rate: bool = False) -> Activity:
        """Create an activity as a Clio user would (new id, ``created_at`` now). ``quantity`` is seconds for a
        TimeEntry and units for an ExpenseEntry; ``price`` defaults to the user's rate; the codes are UTBMS code
        strings (``None``: uncoded)."""
        with self._lock:
            firm = self._firm
            user = firm.users.get(user_id) if user_id is not None else self.me
            matter = firm.matters.get(matter_id) if matter_id is not None else firm.matters.rows[0]
            if user is None or matter is None:
                raise KeyError(f"no user {user_id}" if user is None else f"no matter {matter_id}")
            if type == "TimeEntry":
                coded = {"activity_description": firm.flat_fee if flat_rate else firm.description(task, activity)}
            else:
                coded = {"utbms_expense": firm.by_code[expense] if expense else None,
                         "expense_category": firm.categories.get(expense or "")}
            now = self._now()
            self._last_id += 1  # Clio never reuses an id, not even a deleted one's
            made = Activity(id=self._last_id, etag=_etag("activity", self._last_id), type=type,
                            date=date or dt.date.fromisoformat(now[:10]), quantity=Decimal(quantity),
                            price=user.rate if price is None else price, note=note, matter=matter, user=user,
                            created_at=now, updated_at=now, flat_rate=flat_rate, **coded)
            self._activities.add(made)
            self._changed()
        return made

    def load_entries(self, entries: Iterable[Any]) -> list[Activity]:
        """Serve canonical entries (``engine.model.Entry``, such as the bundled sample month) as Clio activities:
        each becomes an activity of the user with the entry's timekeeper name and of the matter with its law firm
        matter id, with its hours (as seconds), rate, codes and narrative. For demos: the same month, through
        Clio."""
        users = {user.name: user.id for user in self.users}
        users.update({f"{user.last_name}, {user.first_name}": user.id for user in self.users})
        matters = {matter.display_number: matter.id for matter in self.matters}
        made = []
        for entry in entries:
            common = {"note": entry.narrative, "date": entry.work_date, "matter_id": matters[entry.law_firm_matter_id],
                      "user_id": users[entry.timekeeper_name]}
            if entry.entry_kind == "time":
                flat = entry.fee_basis == "flat"
                hours = entry.hours_billed or entry.quantity or Decimal(0)
                made.append(self.add_activity(type="TimeEntry", quantity=int(hours * _HOUR), flat_rate=flat,
                                              price=entry.amount if flat else entry.rate, task=entry.utbms_task_code,
                                              activity=entry.utbms_activity_code, **common))
            else:
                made.append(self.add_activity(type="ExpenseEntry", quantity=entry.quantity or Decimal(1),
                                              price=entry.rate, expense=entry.utbms_expense_code, **common))
        return made

    def edit(self, activity_id: int, **changes: Any) -> Activity:
        """Change an activity's fields (``note=``, ``quantity=``, ``price=``, ``date=``, ...) as a Clio user would:
        it gets a new etag and ``updated_at``."""
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise TypeError(f"cannot edit {', '.join(sorted(unknown))} (editable: {', '.join(sorted(_EDITABLE))})")
        with self._lock:
            found = self.activity(activity_id)
            for name, value in changes.items():
                setattr(found, name, value)
            found.revision += 1
            found.etag = _etag("activity", found.id, found.revision)
            found.updated_at = self._now()
            self._changed()
        return found

    def delete(self, activity_id: int) -> Activity:
        """Delete an activity: a 404 by id from now on, and absent from lists (a ``deleted`` webhook can still
        name it)."""
        with self._lock:
            found = self._activities.remove(activity_id)
            if found is None:
                raise KeyError(f"no activity {activity_id}")
            self._deleted[activity_id] = found
            self._changed()
        return found

    def redact(self, activity_ids: Iterable[int] | None = None, *, redacted: bool = True) -> int:
        """Hide (or show again) the hours and totals of these activities (default: every time entry), as 4.0.8
        does for a user without hours visibility: those fields are null and ``quantity_redacted`` is true. A view
        setting, not an edit: etags do not change. Returns how many activities it applied to."""
        with self._lock:
            chosen = ([a for a in self._activities.rows if a.is_time] if activity_ids is None
                      else [self.activity(i) for i in activity_ids])
            for found in chosen:
                found.redacted = redacted
            self._changed()
        return len(chosen)

    def _now(self) -> str:
        """The current time as Clio writes it; never earlier than a timestamp the fake holds."""
        self._newest = max(self._newest, _stamp(self.clock()))
        return self._newest

    def _changed(self) -> None:
        self._counts.clear()

    def _count(self, key: Any, rows: _Table, keep: Callable[[Any], bool] | None) -> int:
        """How many records match a query (remembered until the data changes: every page of a pull asks)."""
        found = self._counts.get(key)
        if found is None:
            found = self._counts[key] = rows.count(keep)
        return found

    # -- tokens --------------------------------------------------------------------------------------------------

    def issue_tokens(self, refresh_token: str | None = None) -> dict[str, Any]:
        """A new access token, and a new refresh token unless one is given: the ``/oauth/token`` answer, without
        the code flow."""
        access = secrets.token_urlsafe(30)
        with self._lock:
            refresh = refresh_token or secrets.token_urlsafe(30)
            self._refresh_tokens.add(refresh)
            self._access[access] = (self.clock() + self.token_ttl, refresh)
        return {"token_type": "bearer", "access_token": access, "expires_in": int(self.token_ttl),
                "refresh_token": refresh}

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (401 ``invalid_token``); refresh tokens still work."""
        with self._lock:
            self._access.clear()

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            issued = self._access.get(token)
            return issued is not None and self.clock() < issued[0]

    def _new_code(self, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = (redirect_uri, self.clock() + 600)
        return code

    def _redeem_code(self, code: str, redirect_uri: str) -> bool:
        """Whether a code is valid for this redirect URI; a code works once."""
        with self._lock:
            issued = self._codes.pop(code, None)
        return issued is not None and issued[0] == redirect_uri and self.clock() < issued[1]

    def _can_refresh(self, refresh_token: str) -> bool:
        with self._lock:
            return refresh_token in self._refresh_tokens

    def _revoke(self, access_token: str) -> bool:
        """Deauthorize: the token's refresh token and every access token issued with it stop working."""
        with self._lock:
            if not self._token_valid(access_token):
                return False
            refresh = self._access[access_token][1]
            self._refresh_tokens.discard(refresh)
            self._access = {token: issued for token, issued in self._access.items() if issued[1] != refresh}
            return True

    # -- rate limits and versions --------------------------------------------------------------------------------

    def _take_request(self, token: str) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Count a request against its token's window: the ``X-RateLimit-*`` headers, and the ``Retry-After``
        seconds when the window is used up (that request is refused and not counted)."""
        if self.rate_limit is None:
            return [], None
        now = self.clock()
        with self._lock:
            window = self._windows.get(token)
            if window is None or now >= window.ends_at:
                window = self._windows[token] = _Window(now + self.rate_window)
            refused = window.used >= self.rate_limit
            if not refused:
                window.used += 1
            remaining = self.rate_limit - window.used
        headers = [(b"x-ratelimit-limit", str(self.rate_limit).encode()),
                   (b"x-ratelimit-remaining", str(remaining).encode()),
                   (b"x-ratelimit-reset", str(math.ceil(window.ends_at)).encode())]
        return headers, max(1, math.ceil(window.ends_at - now)) if refused else None

    def force_version(self, version: str | None) -> None:
        """Answer every request as API ``version`` (echoed, and its quantity units), whatever the client asked
        for; ``None`` goes back to honouring ``X-API-VERSION``."""
        with self._lock:
            self._forced_version = version

    def _version_for(self, requested: str | None) -> str | None:
        """The version a request is served with; None when the requested one does not exist (410)."""
        if self._forced_version is not None:
            return self._forced_version
        if requested is None:
            return DEFAULT_VERSION
        return requested if requested in SUPPORTED_VERSIONS else None

    # -- faults --------------------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, path: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next ``n`` requests (whose path contains ``path``, when given) with ``status`` (429, 500,
        502, 503 or 504) in Clio's error envelope, with ``Retry-After`` when given, without handling them."""
        if status not in _FAULT_TYPES:
            raise ValueError(f"status must be one of {', '.join(map(str, _FAULT_TYPES))}")
        self._add_fault(_Fault("status", n, path, status=status, retry_after=retry_after))

    def slow_next(self, n: int = 1, seconds: float = 5.0, *, path: str | None = None) -> None:
        """Handle the next ``n`` requests but answer only after ``seconds`` (to make clients time out)."""
        self._add_fault(_Fault("slow", n, path, seconds=seconds))

    def drop_next(self, n: int = 1, *, path: str | None = None) -> None:
        """Close the connection of the next ``n`` requests without an answer (nothing is handled)."""
        self._add_fault(_Fault("drop", n, path))

    def between_pages(self, after: int, action: Callable[[FakeClioState], Any]) -> None:
        """Run ``action(state)`` once, right after the ``after``-th activities list page from now has been built
        and before it is sent: to edit, add or delete records between two pages of a pull."""
        with self._lock:
            self._page_hooks.append(_PageHook(after, action))

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or fault.path in path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _activity_page_served(self) -> None:
        with self._lock:
            for hook in self._page_hooks:
                hook.pages -= 1
            due = [hook.action for hook in self._page_hooks if hook.pages <= 0]
            self._page_hooks = [hook for hook in self._page_hooks if hook.pages > 0]
        for action in due:
            action(self)

    def _record(self, method: str, path: str, query: str, headers: dict[str, str]) -> LoggedRequest:
        entry = LoggedRequest(method, path, query, headers)
        with self._lock:
            self.log.append(entry)
        return entry

    # -- webhooks ------------------------------------------------------------------------------------------------

    @property
    def webhooks(self) -> list[Webhook]:
        with self._lock:
            return list(self._webhooks.rows)

    def webhook(self, webhook_id: int) -> Webhook:
        with self._lock:
            found = self._webhooks.get(webhook_id)
        if found is None:
            raise KeyError(f"no webhook {webhook_id}")
        return found

    def _create_webhook(self, data: dict[str, Any]) -> Webhook:
        missing = [name for name in ("url", "model", "fields") if not data.get(name)]
        if missing:
            raise _ApiError(422, "ValidationError", f"required: {', '.join(missing)}")
        model = data["model"]
        if isinstance(model, int) and 1 <= model <= len(_WEBHOOK_MODELS):
            model = _WEBHOOK_MODELS[model - 1]
        if model not in _WEBHOOK_MODELS:
            raise _ApiError(422, "ValidationError", f"model must be one of {', '.join(_WEBHOOK_MODELS)} or their ids")
        events = self._events(model, data.get("events"))
        self._check_hook(data["url"], data["fields"], model)
        expires = self._expiry(data.get("expires_at"))
        with self._lock:
            now = self._now()
            number = (self._webhooks.ids[-1] + 1) if len(self._webhooks) else 4_001
            made = Webhook(number, _etag("webhook", number), data["url"], data["fields"], secrets.token_hex(20),
                           model, events, expires, self.me, now, now)
            self._webhooks.add(made)
            self._changed()
        return made

    def _update_webhook(self, webhook_id: int, data: dict[str, Any]) -> tuple[Webhook, bool]:
        """PATCH: ``expires_at``, ``events``, ``fields`` or ``url`` (a new URL needs a new handshake). Returns the
        webhook and whether its URL changed."""
        found = self._require_webhook(webhook_id)
        unknown = set(data) - {"url", "fields", "events", "expires_at"}
        if unknown:
            raise _ApiError(422, "ValidationError", f"the fake Clio cannot change {', '.join(sorted(unknown))}")
        url, hook_fields = data.get("url", found.url), data.get("fields", found.fields)
        self._check_hook(url, hook_fields, found.model)
        events = self._events(found.model, data["events"]) if "events" in data else found.events
        expires = self._expiry(data["expires_at"]) if "expires_at" in data else found.expires_at
        with self._lock:
            moved = url != found.url
            found.url, found.fields, found.events, found.expires_at = url, hook_fields, events, expires
            if moved:
                found.status = "pending"
            self._touch_webhook(found)
        return found, moved

    def _delete_webhook(self, webhook_id: int) -> None:
        with self._lock:
            if self._webhooks.remove(webhook_id) is None:
                raise _ApiError(404, "NotFound", f"no webhook {webhook_id}")
            self._changed()

    def _activate(self, webhook_id: int, secret: str | None) -> None:
        """The delayed handshake: ``PUT /webhooks/{id}/activate`` with the secret in ``X-Hook-Secret``."""
        found = self._require_webhook(webhook_id)
        if not secret or not hmac.compare_digest(secret, found.shared_secret):
            raise _ApiError(403, "Forbidden", "X-Hook-Secret does not match the webhook's secret")
        with self._lock:
            if found.status != "enabled":
                found.status = "enabled"
                self._touch_webhook(found)

    async def _handshake(self, webhook: Webhook) -> None:
        """POST the secret to a new (or moved) webhook's URL in ``X-Hook-Secret``; a 200 that echoes it in the same
        header enables the webhook. Anything else leaves it pending, to be activated later."""
        url, secret = webhook.url, webhook.shared_secret
        body = json.dumps({"meta": {"webhook_id": webhook.id}}).encode()
        try:
            async with httpx.AsyncClient(timeout=self.hook_timeout) as client:
                answer = await client.post(url, content=body, headers={"X-Hook-Secret": secret,
                                                                       "Content-Type": "application/json"})
        except httpx.HTTPError:
            return
        if answer.status_code == 200 and answer.headers.get("X-Hook-Secret") == secret:
            with self._lock:
                if webhook.url == url and webhook.status == "pending":
                    webhook.status = "enabled"
                    self._touch_webhook(webhook)

    def signed_delivery(self, event: str, activity_id: int, *, webhook_id: int | None = None,
                        forged: bool = False) -> tuple[dict[str, str], bytes]:
        """The headers and raw body of a delivery of ``event`` about an activity to a webhook (``webhook_id``, or
        the only activity webhook, whatever its status), without sending it: for posting through an in-process
        client. The body holds the webhook's ``fields`` of the activity; ``forged`` signs with the wrong key."""
        if event not in _EVENTS:
            raise ValueError(f"event must be one of {', '.join(_EVENTS)}")
        with self._lock:
            if webhook_id is not None:
                target = self.webhook(webhook_id)
            else:
                candidates = [w for w in self._webhooks.rows if w.model == "activity"]
                if len(candidates) != 1:
                    raise LookupError(f"{len(candidates)} activity webhooks: pass webhook_id")
                target = candidates[0]
            found = self._activities.get(activity_id) or self._deleted.get(activity_id)
            if found is None:
                raise KeyError(f"no activity {activity_id}")
            body = ('{"data":' + _ACTIVITY.renderer(target.fields)(found) + ',"meta":{"event":' + _quote(event)
                    + ',"webhook_id":' + str(target.id) + "}}").encode()
        key = ("forged-" + target.shared_secret if forged else target.shared_secret).encode()
        return {"Content-Type": "application/json",
                "X-Hook-Signature": hmac.new(key, body, hashlib.sha256).hexdigest()}, body

    def deliver(self, event: str, activity_id: int, *, webhook_id: int | None = None, forged: bool = False) -> int:
        """POST ``event`` about an activity to every enabled, unexpired activity webhook subscribed to it (or to
        ``webhook_id`` only), signed with ``X-Hook-Signature``. Returns how many deliveries were sent; each is
        kept in ``deliveries``. Changing data does not deliver by itself: tests call this."""
        now = _stamp(self.clock())
        with self._lock:
            targets = [w for w in self._webhooks.rows
                       if w.model == "activity" and w.status == "enabled" and event in w.events
                       and w.expires_at > now and webhook_id in (None, w.id)]
        for target in targets:
            headers, body = self.signed_delivery(event, activity_id, webhook_id=target.id, forged=forged)
            self._send(target.id, target.url, headers, body)
        return len(targets)

    def replay_last(self) -> int | None:
        """Send the last delivery again, byte for byte (a replay, as an attacker or a retry would); its status."""
        with self._lock:
            if not self.deliveries:
                raise LookupError("nothing delivered yet")
            last = self.deliveries[-1]
        return self._send(last.webhook_id, last.url, last.headers, last.body)

    def _send(self, webhook_id: int, url: str, headers: dict[str, str], body: bytes) -> int | None:
        try:
            status: int | None = httpx.post(url, content=body, headers=headers, timeout=self.hook_timeout).status_code
        except httpx.HTTPError:
            status = None
        with self._lock:
            self.deliveries.append(Delivery(webhook_id, url, headers, body, status))
        return status

    def _require_webhook(self, webhook_id: int) -> Webhook:
        with self._lock:
            found = self._webhooks.get(webhook_id)
        if found is None:
            raise _ApiError(404, "NotFound", f"no webhook {webhook_id}")
        return found

    def _touch_webhook(self, webhook: Webhook) -> None:
        webhook.revision += 1
        webhook.etag = _etag("webhook", webhook.id, webhook.revision)
        webhook.updated_at = self._now()
        self._changed()

    def _check_hook(self, url: Any, hook_fields: Any, model: str) -> None:
        if not isinstance(url, str) or not isinstance(hook_fields, str):
            raise _ApiError(422, "ValidationError", "url and fields must be strings")
        parts = urlsplit(url)
        loopback = self.allow_http_hooks and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
        if not (parts.scheme == "https" and parts.hostname) and not loopback:
            raise _ApiError(422, "ValidationError", "url must use https")
        if len(hook_fields) > 1000:
            raise _ApiError(422, "ValidationError", "fields is longer than 1000 characters")
        if model == "activity":
            _ACTIVITY.renderer(hook_fields)

    def _events(self, model: str, events: Any) -> tuple[str, ...]:
        allowed = _EVENTS[:2] if model == "clio_payments_payment" else _EVENTS
        if model == "matter":
            allowed += ("matter_opened", "matter_pended", "matter_closed")
        if events is None:
            return allowed
        if not isinstance(events, list) or not events or not set(events) <= set(allowed):
            raise _ApiError(422, "ValidationError", f"events for {model} must be a list of {', '.join(allowed)}")
        return tuple(dict.fromkeys(events))

    def _expiry(self, requested: Any) -> str:
        """``expires_at`` as asked (at most 31 days from now), or 3 days from now."""
        now = self.clock()
        if requested is None:
            return _stamp(now + _WEBHOOK_DEFAULT.total_seconds())
        try:
            moment = _instant(str(requested))
        except _ApiError:
            raise _ApiError(422, "ValidationError", f"expires_at {requested!r} is not an ISO-8601 timestamp") from None
        if moment <= now:
            raise _ApiError(422, "ValidationError", "expires_at is in the past")
        if moment > now + _WEBHOOK_MAX.total_seconds():
            raise _ApiError(422, "ValidationError", "expires_at is more than 31 days from now")
        return _stamp(moment)


def _midnight(day: dt.date) -> int:
    """Unix time of midnight UTC starting ``day``."""
    return (day - dt.date(1970, 1, 1)).days * 86400


def _instant(text: str) -> float:
    """An ISO-8601 timestamp (``Z``, an offset, or none: UTC) as unix time; a 400 when it is not one."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{text!r} is not an ISO-8601 timestamp") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


# -- the app -----------------------------------------------------------------------------------------------------

_JSON = "application/json; charset=utf-8"


def _respond(body: str | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return Response(text.encode(), status_code=status, media_type=_JSON, headers=headers)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _respond({"error": {"type": kind, "message": message}}, status, headers)


def _bearer(headers: Mapping[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _after(page_token: str | None) -> int:
    """The id a page token continues after (0: the first page)."""
    if not page_token:
        return 0
    try:
        kind, _, last = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode().partition(":")
        if kind == "id":
            return int(last)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise _bad(f"invalid page_token {page_token!r}")


def _limit(text: str | None, most: int) -> int:
    if text is None:
        return min(200, most)
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise _bad(f"limit must be between 1 and {most}")
    return int(text)


def _ids(values: list[str]) -> list[int]:
    if not all(value.isdigit() for value in values):
        raise _bad("ids[] must be whole numbers")
    return [int(value) for value in values]


_Filter = Callable[[str], Callable[[Any], bool]]


def _since(attribute: str) -> _Filter:
    """``updated_since``/``created_since``: strictly after the instant (Clio's timestamps are whole seconds)."""

    def build(text: str) -> Callable[[Any], bool]:
        after, get = _stamp(math.floor(_instant(text))), attrgetter(attribute)
        return lambda record: get(record) > after

    return build


def _day_bound(earliest: bool) -> _Filter:
    """``start_date`` (on or after) and ``end_date`` (on or before), on the activity's work date."""

    def build(text: str) -> Callable[[Any], bool]:
        try:
            day = dt.date.fromisoformat(text[:10])
        except ValueError:
            raise _bad(f"{text!r} is not an ISO-8601 date") from None
        return (lambda record: record.date >= day) if earliest else (lambda record: record.date <= day)

    return build


def _type_is(*allowed: str) -> _Filter:
    def build(text: str) -> Callable[[Any], bool]:
        if text not in allowed:
            raise _bad(f"type must be one of {', '.join(allowed)}")
        return lambda record: record.type == text

    return build


_COMMON_FILTERS: dict[str, _Filter] = {"updated_since": _since("updated_at"), "created_since": _since("created_at")}
_ACTIVITY_FILTERS: dict[str, _Filter] = {
    "type": _type_is("TimeEntry", "ExpenseEntry", "HardCostEntry", "SoftCostEntry"),
    "start_date": _day_bound(earliest=True), "end_date": _day_bound(earliest=False)}
_CODE_FILTERS: dict[str, _Filter] = {"type": _type_is("UtbmsTask", "UtbmsActivity", "UtbmsExpense")}
_PAGING = {"fields", "ids[]", "order", "limit", "page_token"}


def _all_of(tests: list[Callable[[Any], bool]]) -> Callable[[Any], bool] | None:
    if len(tests) < 2:
        return tests[0] if tests else None
    return lambda record: all(test(record) for test in tests)


def _only(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise _bad(f"the fake Clio does not implement {', '.join(unknown)} on {request.url.path} "
                   f"(it takes {', '.join(sorted(allowed)) or 'no parameters'})")


def _list(request: Request, state: FakeClioState, table: Callable[[], _Table], resource: _Resource,
          filters: dict[str, _Filter] | None = None, *, most: int = 200) -> Response:
    """An index endpoint: ``fields``, ``ids[]``, ``updated_since``, ``created_since``, ``order=id(asc)``,
    ``limit``, ``page_token`` and the endpoint's own ``filters``; ``meta.paging.next`` while more records follow."""
    params = request.query_params
    filters = {**_COMMON_FILTERS, **(filters or {})}
    _only(request, _PAGING | set(filters))
    render = resource.renderer(params.get("fields"))
    if params.get("order", "id(asc)") != "id(asc)":
        raise _bad("the fake Clio orders lists by id(asc) only")
    limit, after = _limit(params.get("limit"), most), _after(params.get("page_token"))
    keep = _all_of([build(params[name]) for name, build in filters.items() if name in params])
    ids = _ids(params.getlist("ids[]"))
    query = (request.url.path, tuple(sorted((k, v) for k, v in params.multi_items() if k not in _PAGING - {"ids[]"})))
    with state._lock:
        rows = table().subset(ids) if ids else table()
        page, more = rows.page(keep, after, limit)
        total = state._count(query, rows, keep)
        data = ",".join(map(render, page))
    following = str(request.url.include_query_params(page_token=_page_token(page[-1].id))) if more else None
    paging = '"next":' + _quote(following) if following else ""
    return _respond('{"data":[' + data + '],"meta":{"paging":{' + paging + '},"records":' + str(total) + "}}")


def _show(request: Request, state: FakeClioState, record: Any, resource: _Resource) -> Response:
    """A single record, with ``ETag`` and ``Last-Modified``; 304 when ``If-None-Match`` names its etag."""
    _only(request, {"fields"})
    render = resource.renderer(request.query_params.get("fields"))
    if record is None:
        raise _ApiError(404, "NotFound", f"{resource.name} not found")
    with state._lock:
        etag, data = record.etag, render(record)
    headers = {"ETag": etag}
    updated_at = getattr(record, "updated_at", None)
    if updated_at:
        headers["Last-Modified"] = email.utils.format_datetime(dt.datetime.fromisoformat(updated_at), usegmt=True)
    wanted = request.headers.get("if-none-match")
    if wanted and (wanted.strip() == "*" or etag in (tag.strip() for tag in wanted.split(","))):
        return Response(status_code=304, headers=headers)
    return _respond('{"data":' + data + "}", headers=headers)


async def _data(request: Request) -> dict[str, Any]:
    """The ``data`` object of a JSON request body."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise _bad("the body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise _bad('the body must be {"data": {...}}')
    return body["data"]


def _with_query(url: str, **params: str | None) -> str:
    parts = urlsplit(url)
    extra = urlencode({name: value for name, value in params.items() if value is not None})
    return parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra).geturl()


def create_app(state: FakeClioState) -> _Edge:
    """The fake Clio as an ASGI app: FastAPI routes behind the layer that logs, injects faults and guards the API."""
    app = FastAPI(title="Fake Clio Manage", openapi_url=None, docs_url=None, redoc_url=None)
    handshakes: set[asyncio.Task[None]] = set()

    def handshake(webhook: Webhook) -> None:
        task = asyncio.get_running_loop().create_task(state._handshake(webhook))
        handshakes.add(task)
        task.add_done_callback(handshakes.discard)

    @app.exception_handler(_ApiError)
    async def api_error(request: Request, exc: _ApiError) -> Response:
        return _error(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        return _error(exc.status_code, kind, str(exc.detail))

    # OAuth 2.0, authorization code grant

    @app.get("/oauth/authorize")
    async def authorize(request: Request) -> Response:
        query = request.query_params
        if query.get("client_id") != state.client_id:
            return _respond({"error": "invalid_client", "error_description": "unknown client_id"}, 400)
        if query.get("response_type") != "code" or not query.get("redirect_uri"):
            return _respond({"error": "invalid_request",
                             "error_description": "response_type=code and redirect_uri are required"}, 400)
        code = state._new_code(query["redirect_uri"])  # the fake user approves at once
        return Response(status_code=302, headers={"Location": _with_query(query["redirect_uri"], code=code,
                                                                          state=query.get("state"))})

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}
        if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
            return _respond({"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            if not state._redeem_code(form.get("code", ""), form.get("redirect_uri", "")):
                return _respond({"error": "invalid_grant", "error_description": "the code is invalid, used, "
                                 "expired or was issued for another redirect_uri"}, 400)
            return _respond(state.issue_tokens())
        if grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if not state._can_refresh(refresh):
                return _respond({"error": "invalid_grant", "error_description": "unknown or revoked refresh token"},
                                400)
            return _respond(state.issue_tokens(refresh))
        return _respond({"error": "unsupported_grant_type",
                         "error_description": "authorization_code or refresh_token"}, 400)

    @app.post("/oauth/deauthorize")
    async def deauthorize(request: Request) -> Response:
        if not state._revoke(_bearer(request.headers)):
            return _respond(INVALID_TOKEN, 401)
        return Response(status_code=200)

    # the API

    @app.get(API_PREFIX + "/users/who_am_i.json")
    async def who_am_i(request: Request) -> Response:
        return _show(request, state, state.me, _USER)

    @app.get(API_PREFIX + "/activities.json")
    async def activities(request: Request) -> Response:
        answer = _list(request, state, lambda: state._activities, _activity_resource(request.state.api_version),
                       _ACTIVITY_FILTERS)
        state._activity_page_served()
        return answer

    @app.get(API_PREFIX + "/activities/{activity_id:int}.json")
    async def activity(request: Request, activity_id: int) -> Response:
        return _show(request, state, state._activities.get(activity_id), _activity_resource(request.state.api_version))

    for path, rows, resource, filters, most in (
        ("/utbms/codes", lambda: state._firm.codes, _UTBMS_CODE, _CODE_FILTERS, 200),
        ("/contacts", lambda: state._firm.contacts, _CONTACT, None, 200),
        ("/matters", lambda: state._firm.matters, _MATTER, None, 200),
        ("/users", lambda: state._firm.users, _USER, None, 2000),
        ("/webhooks", lambda: state._webhooks, _WEBHOOK, None, 200),
    ):
        _add_collection(app, state, path, rows, resource, filters, most)

    @app.get(API_PREFIX + "/currencies.json")  # Clio has no route for a single currency
    async def currencies(request: Request) -> Response:
        return _list(request, state, lambda: state._firm.currencies, _CURRENCY)

    @app.get(API_PREFIX + "/settings/billing.json")
    async def billing_settings(request: Request) -> Response:
        return _show(request, state, state._firm.settings, _BILLING_SETTINGS)

    @app.post(API_PREFIX + "/webhooks.json")
    async def create_webhook(request: Request) -> Response:
        _only(request, {"fields"})
        render = _WEBHOOK.renderer(request.query_params.get("fields"))
        made = state._create_webhook(await _data(request))
        handshake(made)
        return _respond('{"data":' + render(made) + "}", 201)

    @app.patch(API_PREFIX + "/webhooks/{webhook_id:int}.json")
    async def update_webhook(request: Request, webhook_id: int) -> Response:
        _only(request, {"fields"})
        render = _WEBHOOK.renderer(request.query_params.get("fields"))
        changed, moved = state._update_webhook(webhook_id, await _data(request))
        if moved:
            handshake(changed)
        return _respond('{"data":' + render(changed) + "}")

    @app.delete(API_PREFIX + "/webhooks/{webhook_id:int}.json")
    async def delete_webhook(webhook_id: int) -> Response:
        state._delete_webhook(webhook_id)
        return Response(status_code=204)

    @app.put(API_PREFIX + "/webhooks/{webhook_id:int}/activate")  # the path Clio's webhook guide gives
    @app.put(API_PREFIX + "/webhooks/{webhook_id:int}/activate.json")  # and in the style of every other path
    async def activate_webhook(request: Request, webhook_id: int) -> Response:
        state._activate(webhook_id, request.headers.get("x-hook-secret"))
        return Response(status_code=204)

    return _Edge(app, state)


def _add_collection(app: FastAPI, state: FakeClioState, path: str, rows: Callable[[], _Table], resource: _Resource,
                    filters: dict[str, _Filter] | None, most: int) -> None:
    """``GET path.json`` (the index) and ``GET path/{id}.json`` (one record)."""

    async def index(request: Request) -> Response:
        return _list(request, state, rows, resource, filters, most=most)

    async def show(request: Request, record_id: int) -> Response:
        return _show(request, state, rows().get(record_id), resource)

    app.add_api_route(f"{API_PREFIX}{path}.json", index, methods=["GET"])
    app.add_api_route(f"{API_PREFIX}{path}/{{record_id:int}}.json", show, methods=["GET"])


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class _Edge:
    """What every request meets before a route: the request log and the injected faults; and for the API the
    bearer token (401), the rate limit (429) and the version (410), with ``X-API-VERSION`` and ``X-RateLimit-*``
    added to the answer."""

    def __init__(self, app: FastAPI, state: FakeClioState):
        self.app, self.state = app, state
        # Set by the server runner: closes the connection of the client at (host, port); True when it did.
        self.close_connection: Callable[[tuple[str, int]], bool] | None = None

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        entry = self.state._record(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers)
        fault = self.state._take_fault(scope["path"])
        if fault is not None and fault.kind == "drop":
            entry.fault = "drop"
            await self._drop(scope, receive)
            return
        added: list[tuple[bytes, bytes]] = []

        async def answer(message: _Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        if fault is not None and fault.kind == "status":
            entry.fault = "status"
            await _fault_answer(fault)(scope, receive, answer)
            return
        if scope["path"].startswith(API_PREFIX + "/"):
            admitted = self._admit(headers, added)
            if isinstance(admitted, Response):
                await admitted(scope, receive, answer)
                return
            scope.setdefault("state", {})["api_version"] = admitted
        if fault is None:
            await self.app(scope, receive, answer)
            return
        entry.fault = "slow"
        held: list[_Message] = []

        async def hold(message: _Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        await asyncio.sleep(fault.seconds)
        for message in held:
            await answer(message)

    def _admit(self, headers: dict[str, str], added: list[tuple[bytes, bytes]]) -> str | Response:
        """The version to serve an API request with, or the refusal."""
        token = _bearer(headers)
        if not self.state._token_valid(token):
            return _respond(INVALID_TOKEN, 401)
        rate_headers, retry_after = self.state._take_request(token)
        added += rate_headers
        if retry_after is not None:
            return _error(429, "RateLimited", "Too Many Requests", {"Retry-After": str(retry_after)})
        requested = headers.get("x-api-version")
        version = self.state._version_for(requested)
        if version is None:
            return _error(410, "Gone", f"API version {requested!r} is not supported "
                                       f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
        added.append((b"x-api-version", version.encode()))
        return version

    async def _drop(self, scope: _Scope, receive: _Receive) -> None:
        """Close the client's connection with nothing sent; in process, with no server to close it, raise as a
        reset connection would."""
        client = scope.get("client")
        if self.close_connection is None or client is None or not self.close_connection((client[0], client[1])):
            raise ConnectionResetError("the fake Clio dropped the connection")
        while (await receive())["type"] != "http.disconnect":
            pass


def _fault_answer(fault: _Fault) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    if fault.status == 429:
        return _error(429, "RateLimited", "Too Many Requests", headers)
    return _error(fault.status, _FAULT_TYPES[fault.status], f"injected HTTP {fault.status}", headers)


# -- running it --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: Any, *, host: str = "127.0.0.1", port: int = 0,
            startup_timeout: float = 10.0) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve an ASGI app from a background thread on ``host:port`` (``port=0``: a free port) until the block ends;
    yields its base URL and the server (e.g. a webhook receiver for tests)."""
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; with
    # proto 0 every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_config=None, log_level="critical", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loopback-asgi", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def _connection_closer(server: uvicorn.Server) -> Callable[[tuple[str, int]], bool]:
    """Close a client's connection with nothing sent. ASGI has no way to do that, so this reaches into uvicorn's
    open connections (each protocol knows its client address and transport)."""

    def close(client: tuple[str, int]) -> bool:
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.close()
                return True
        return False

    return close


@dataclass
class FakeClio:
    """A running fake Clio: its URLs, its state and the application's credentials."""

    base_url: str  # http://127.0.0.1:PORT
    state: FakeClioState

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/oauth/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth/token"

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def client_secret(self) -> str:
        return self.state.client_secret


@contextlib.contextmanager
def running_fake_clio(*, state: FakeClioState | None = None, host: str = "127.0.0.1", port: int = 0,
                      **state_options: Any) -> Iterator[FakeClio]:
    """Serve a fake Clio from a background thread until the block ends. ``state_options`` go to
    :class:`FakeClioState` (``activities=500``, ``rate_limit=50``, ``clock=...``); or pass a ``state``."""
    if state is None:
        state = FakeClioState(**state_options)
    elif state_options:
        raise ValueError("pass either a state or state options, not both")
    app = create_app(state)
    with serving(app, host=host, port=port) as (url, server):
        app.close_connection = _connection_closer(server)
        yield FakeClio(url, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Clio Manage API v4 on loopback (for demos).")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--activities", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 3, 1),
                        help="the first work date (default 2026-03-01)")
    parser.add_argument("--days", type=int, default=31, help="work dates spread over this many days (default 31)")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per window and token (default: none)")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    with running_fake_clio(port=args.port, activities=args.activities, seed=args.seed, start=args.start,
                           days=args.days, rate_limit=args.rate_limit, rate_window=args.rate_window) as clio:
        print(json.dumps({"base_url": clio.base_url, "api_url": clio.api_url, "authorize_url": clio.authorize_url,
                          "token_url": clio.token_url, "client_id": clio.client_id,
                          "client_secret": clio.client_secret, **clio.state.issue_tokens()}, indent=2))
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
