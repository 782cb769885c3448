"""A fake Efimis API on loopback, for tests, benchmarks and the demo: client-credentials tokens, the REST lists a
work item refers to, single work items, the GraphQL reporting query ``GetRows``, webhooks, fault injection and an
in-memory firm. Efimis publishes little; this fake follows connectors.md 2B where Efimis documents the API and
its section 9.1 where it does not, exactly as the connector does (``connectors/sources/efimis.py``).

Start it::

    with running_fake_efimis(work_items=500) as efimis:
        token = efimis.state.issue_token()["access_token"]
        httpx.post(efimis.api_url + "/graphql", headers={"Authorization": f"Bearer {token}"}, json={...})

or from a shell, for a demo: ``python -m connectors.efimis.fake --port 8767 --work-items 500``.

The Python API (``efimis.state`` is a :class:`FakeEfimisState`; safe to call from the test thread while the server
thread answers):

* data: ``seed_work_items(n, seed=, start=, days=)`` builds the firm (the timekeepers of ``engine.samples`` as fee
  earners with the ids in :data:`ENTITY_IDS`, Acme, Globex and Initech as clients, their matters, the firm's task
  types) and ``n`` work items; ``work_items``, ``work_item(id)``, ``entities``, ``matters``, ``clients``,
  ``task_types`` read it; ``add_work_item``, ``edit``, ``finalise``, ``unfinalise``, ``write_off``, ``delete``
  (state ``Deleted``, still listed with ``includeDeleted``) and ``purge`` (gone entirely) change it as Efimis
  would: a new ``version`` and ``modifiedOn``.
* faults: ``fail_next`` (429 with ``Retry-After``, 500 from the API, 502/503/504 HTML pages from the gateway),
  ``timeout_next`` (GraphQL ``EXECUTION_TIMEOUT``), ``slow_next``, ``drop_next`` (the connection closes with no
  answer), ``expire_tokens`` (a key rollover: every token answers 401 ``invalid_token``), ``enabled`` (False: the
  tenant has not enabled the application, 403), ``between_pages`` (change data between two GetRows slices),
  ``clear_faults``;
  ``log`` holds every request (a GetRows request with its ``variables``).
* webhooks: ``deliver(event, work_item_id, forged=, stale=)``, ``replay_last``, ``signed_delivery``,
  ``webhooks``, ``disable_webhook``, ``deliveries``.
* ``issue_token`` (a token without the HTTP exchange), ``reset`` (back to as constructed).
* the demo's month: ``load_demo(state, month_start)`` (a module function) replaces the work items with 32 of one
  month, for four fee earners, a few of them what a reviewer should catch.

What it assumes where Efimis's documentation is silent (connectors.md 9.1): the token request and its errors;
RFC 7807 problem details; REST lists ``?page=&pageSize=`` (1..200) answering ``{items, page, pageSize,
totalCount}`` in id order; ids are GUIDs; the record fields (:data:`connectors.sources.efimis.FIELDS`); ``GET
/v1/workitems/{id}`` answers the work item with the GetRows column names (404 once deleted); GetRows answers
``{"data": {"getRows": {"rowData", "lastRow"}}}``, errors with HTTP 200, at most 500 rows a slice, ties on the sort
columns in no fixed order (this fake shuffles them); ``noMatter: true`` selects work items without a matter;
decimal values are JSON numbers, whole ones written as integers; the webhook ``PUT`` answers the subscription
without its secret, and a sixth subscription is a 409; a receiver that does not answer 2xx is sent the same
``requestId`` up to three more times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from json.encoder import encode_basestring_ascii as _quote
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from connectors.clio.fake import _connection_closer, serving
from engine import samples

TOKEN_TTL = 43_200  # Efimis tokens last 12 hours
TOKEN_PATH = "/efimis-id/b2c_1a_idp_aad_multi/oauth2/v2.0/token"
SCOPE = "https://id.efimis.com/efimis-api/.default"
TENANT = "whitfield-okafor"
SLICE_MOST = 500
PAGE_MOST = 200
WEBHOOKS_MOST = 5
DELIVERY_RETRIES = 3
EVENTS = ("WorkItemCreated", "WorkItemUpdated", "WorkItemFinalised", "WorkItemUnfinalised", "WorkItemWrittenOff",
          "WorkItemDeleted", "MatterCreated", "MatterUpdated", "InvoiceIssued")
_WEBHOOK_ID = re.compile(r"^webhook_[0-9a-f]{32}$")
_CENT = Decimal("0.01")
_TICKS = 10_000_000

# The fee earners' ids, for the firm's timekeeper table (source system ``efimis``): one per sample timekeeper.
ENTITY_IDS: dict[str, str] = {ledes_id: f"e0000000-0000-4000-8000-00000000{ledes_id[2:]:0>4}"
                              for ledes_id, *_ in samples.TIMEKEEPERS}
# The firm's task types: code, name, (task, activity) the firm maps it to (None: left unmapped), itemised price.
TASK_TYPES = (
    ("PLAN", "Planning and strategy", ("L120", "A101"), None),
    ("RSRCH", "Research", ("L120", "A102"), None),
    ("DRAFT", "Drafting", ("L250", "A103"), None),
    ("PERUSE", "Perusal and review", ("L320", "A104"), None),
    ("CONF", "Conference", ("L230", "A105"), None),
    ("CLIENT", "Client conference", ("L160", "A106"), None),
    ("TRAVEL", "Travel", ("L330", "A111"), None),
    ("LETTER", "Letter (itemised)", ("L120", "A103"), Decimal("45.00")),
    ("FILING", "Filing and photocopying", None, None),
)
# ``task_type_codes`` and ``ledes_client_ids`` settings matching this firm (Initech is left out on purpose).
TASK_TYPE_CODES = {code: {"task": codes[0], "activity": codes[1]} for code, _, codes, _ in TASK_TYPES if codes}
LEDES_CLIENT_IDS = {"ACME": "ACME01", "GLOBEX": "GLOBEX"}
_BY_ACTIVITY = {"A101": "PLAN", "A102": "RSRCH", "A103": "DRAFT", "A104": "PERUSE", "A105": "CONF",
                "A106": "CLIENT", "A111": "TRAVEL"}
_CLIENTS = (("ACME", "Acme Corporation"), ("GLOBEX", "Globex plc"), ("INITECH", "Initech LLC"))
_MATTERS = (  # client code, number, client's reference, name
    *(("ACME", number, reference, name) for number, reference, name in samples.MATTERS),
    ("GLOBEX", "2026-0101", "GLX-LIT-0101", "Globex v. Hooli (High Court)"),
    ("INITECH", "2026-0150", None, "Initech trademark portfolio"),
)
STATES = ("Pending", "Finalised", "Billed", "WrittenOff", "Deleted")
_FIXED = {"id", "version", "modified_on", "rendered"}


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(slots=True)
class Entity:
    id: str
    first_name: str
    last_name: str
    ledes_id: str
    rate: Decimal

    @property
    def sort_name(self) -> str:
        return f"{self.last_name}, {self.first_name}"


@dataclass(slots=True)
class Client:
    id: str
    code: str
    name: str


@dataclass(slots=True)
class Matter:
    id: str
    number: str
    name: str
    client: Client
    client_reference: str | None


@dataclass(slots=True)
class TaskType:
    id: str
    code: str
    name: str
    itemised_rate: Decimal | None


@dataclass(slots=True)
class WorkItem:
    id: str
    version: int
    modified_on: str  # 2026-03-14T21:07:33.123Z: fixed width, so the strings compare in time order
    entry_date: dt.date
    matter: Matter | None
    employee: Entity
    state: str
    item_type: str
    task_type: TaskType | None
    title: str
    rate: Decimal
    units: Decimal
    unit_duration: Decimal | None
    total_base: Decimal
    duration_ticks: int
    billable: bool
    write_off_date: dt.date | None = None
    rendered: tuple[tuple[str, ...], int, str] | None = None  # (columns, version, JSON): a slice's row, cached


# -- JSON -------------------------------------------------------------------------------------------------------

def _num(value: Decimal | None) -> str:
    """A decimal as Efimis writes it: ``450`` for a whole value, ``45.5``, exactly (never through a float)."""
    return "null" if value is None else format(value.normalize(), "f")


def _str(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _day(value: dt.date | None) -> str:
    return "null" if value is None else f'"{value.isoformat()}T00:00:00"'


# Each column: how it is written, and its value for sorting and totals.
_COLUMNS: dict[str, tuple[Callable[[WorkItem], str], Callable[[WorkItem], Any]]] = {
    "id": (lambda w: _quote(w.id), lambda w: w.id),
    "version": (lambda w: str(w.version), lambda w: w.version),
    "modifiedOn": (lambda w: _quote(w.modified_on), lambda w: w.modified_on),
    "entryDate": (lambda w: _day(w.entry_date), lambda w: w.entry_date),
    "matterId": (lambda w: _str(w.matter and w.matter.id), lambda w: w.matter and w.matter.id),
    "matterNumber": (lambda w: _str(w.matter and w.matter.number), lambda w: w.matter and w.matter.number),
    "matterName": (lambda w: _str(w.matter and w.matter.name), lambda w: w.matter and w.matter.name),
    "clientId": (lambda w: _str(w.matter and w.matter.client.id), lambda w: w.matter and w.matter.client.id),
    "employeeId": (lambda w: _quote(w.employee.id), lambda w: w.employee.id),
    "employeeSortName": (lambda w: _quote(w.employee.sort_name), lambda w: w.employee.sort_name),
    "state": (lambda w: _quote(w.state), lambda w: w.state),
    "itemType": (lambda w: _quote(w.item_type), lambda w: w.item_type),
    "taskTypeId": (lambda w: _str(w.task_type and w.task_type.id), lambda w: w.task_type and w.task_type.id),
    "taskTypeName": (lambda w: _str(w.task_type and w.task_type.name), lambda w: w.task_type and w.task_type.name),
    "title": (lambda w: _quote(w.title), lambda w: w.title),
    "rate": (lambda w: _num(w.rate), lambda w: w.rate),
    "units": (lambda w: _num(w.units), lambda w: w.units),
    "unitDuration": (lambda w: _num(w.unit_duration), lambda w: w.unit_duration),
    "totalBase": (lambda w: _num(w.total_base), lambda w: w.total_base),
    "durationTicks": (lambda w: str(w.duration_ticks), lambda w: w.duration_ticks),
    "billable": (lambda w: "true" if w.billable else "false", lambda w: w.billable),
    "writeOffDate": (lambda w: _day(w.write_off_date), lambda w: w.write_off_date),
}


_EDITABLE = {f.name for f in dataclasses.fields(WorkItem)} - _FIXED


def _render(item: WorkItem, columns: tuple[str, ...]) -> str:
    cached = item.rendered
    if cached is not None and cached[0] == columns and cached[1] == item.version:
        return cached[2]
    text = "{" + ",".join(f'"{name}":{_COLUMNS[name][0](item)}' for name in columns) + "}"
    item.rendered = (columns, item.version, text)
    return text


def _record(kind: str, record: Any) -> dict[str, Any]:
    """A REST record in the names connectors.md 9.1 leaves to us [assumed]."""
    if kind == "entities":
        return {"id": record.id, "firstName": record.first_name, "lastName": record.last_name,
                "sortName": record.sort_name}
    if kind == "clients":
        return {"id": record.id, "code": record.code, "name": record.name}
    if kind == "matters":
        return {"id": record.id, "number": record.number, "name": record.name, "clientId": record.client.id,
                "clientReference": record.client_reference}
    return {"id": record.id, "code": record.code, "name": record.name,
            "itemised": record.itemised_rate is not None}


def _problem(status: int, title: str, detail: str | None = None) -> Response:
    body = {"type": f"https://httpstatuses.io/{status}", "title": title, "status": status, "detail": detail,
            "traceId": uuid.uuid4().hex}
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/problem+json")


def _answer(body: str | dict[str, Any] | list[Any], status: int = 200) -> Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return Response(text.encode(), status_code=status, media_type="application/json; charset=utf-8")


def _graphql_error(code: str, message: str) -> Response:
    return _answer({"errors": [{"message": message, "extensions": {"code": code}}], "data": None})


# The work item's fields in a work-item event's data (connectors.md 9.1): name in the event, GetRows column.
_EVENT_FIELDS = (("matterId", "matterId"), ("state", "state"), ("billable", "billable"), ("entryDate", "entryDate"),
                 ("units", "units"), ("unitDuration", "unitDuration"), ("rate", "rate"), ("totalBase", "totalBase"),
                 ("title", "title"))
_GATEWAY_PAGE = ("<html><head><title>{status} {title}</title></head><body><center><h1>{status} {title}</h1></center>"
                 "<hr><center>Microsoft-Azure-Application-Gateway/v2</center></body></html>")
_GATEWAY_TITLES = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


# -- the firm -----------------------------------------------------------------------------------------------------

@dataclass
class _Firm:
    entities: dict[str, Entity]
    clients: dict[str, Client]
    matters: dict[str, Matter]
    task_types: dict[str, TaskType]

    def by_code(self, code: str) -> TaskType:
        return next(t for t in self.task_types.values() if t.code == code)


def _build_firm() -> _Firm:
    rng = random.Random("efimis-firm")
    entities = {}
    for ledes_id, name, _, rate in samples.TIMEKEEPERS:
        last, first = (part.strip() for part in name.split(","))
        entity = Entity(ENTITY_IDS[ledes_id], first, last, ledes_id, Decimal(rate))
        entities[entity.id] = entity
    clients = {c.code: c for c in (Client(_guid(rng), code, name) for code, name in _CLIENTS)}
    matters = {m.id: m for m in (Matter(_guid(rng), number, name, clients[code], reference)
                                 for code, number, reference, name in _MATTERS)}
    task_types = {t.id: t for t in (TaskType(_guid(rng), code, name, price) for code, name, _, price in TASK_TYPES)}
    return _Firm(entities, {c.id: c for c in clients.values()}, matters, task_types)


def _seed(firm: _Firm, n: int, rng: random.Random, start: dt.date, days: int, stamp: str) -> list[WorkItem]:
    """``n`` work items: mostly finalised timed fees in six-minute units, with pending, billed, written-off and
    deleted ones, itemised letters, unmapped and missing task types, discounts and timers."""
    people = list(firm.entities.values())
    regulars = people[:10]
    matters = list(firm.matters.values())
    letter, filing = firm.by_code("LETTER"), firm.by_code("FILING")
    six = Decimal(6)
    items = []
    for _ in range(n):
        person = rng.choice(regulars) if rng.random() > 0.03 else rng.choice(people)
        day = start + dt.timedelta(days=rng.randrange(days))
        roll = rng.random()
        if roll < 0.06:
            task_type, title = letter, "Letter to opposing solicitors regarding disclosure timetable"
            units, minutes = Decimal(rng.randint(1, 3)), None
            rate = letter.itemised_rate or Decimal(0)
            total = units * rate
            kind = "ItemisedFee"
        else:
            _, activity, title = rng.choice(samples.TASKS)
            task_type = filing if roll < 0.08 else None if roll < 0.09 else firm.by_code(_BY_ACTIVITY[activity])
            if task_type is filing:
                title = "Filing and indexing of correspondence"
            units, minutes = Decimal(rng.randint(1, 45)), six
            rate = person.rate + (Decimal(rng.choice((25, 50))) if rng.random() < 0.05 else 0)
            total = (units * minutes / 60 * rate).quantize(_CENT, ROUND_HALF_UP)
            if rng.random() < 0.01:
                total = (total * Decimal("0.9")).quantize(_CENT, ROUND_HALF_UP)  # a discount: totalBase rules
            kind = "TimedFee"
        ticks = 0
        if minutes is not None and rng.random() < 0.6:
            ticks = (int(units * minutes) * 60 - rng.randint(0, 300)) * _TICKS
        state = rng.choices(STATES, (15, 75, 5, 3, 2))[0]
        items.append(WorkItem(
            id=_guid(rng), version=1, modified_on=stamp, entry_date=day, matter=rng.choice(matters), employee=person,
            state=state, item_type=kind, task_type=task_type, title=title, rate=rate, units=units,
            unit_duration=minutes, total_base=total, duration_ticks=max(ticks, 0), billable=rng.random() > 0.03,
            write_off_date=day + dt.timedelta(days=30) if state == "WrittenOff" else None))
    return items


# -- the state ----------------------------------------------------------------------------------------------------

@dataclass
class LoggedRequest:
    """One request as the fake saw it. ``status`` is None when the connection was dropped; ``fault`` names the
    injected fault that answered it; ``variables`` are a GraphQL request's; ``headers`` have lower-case names."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None
    variables: dict[str, Any] | None = None


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the fake made (``status`` None: the receiver could not be reached)."""

    webhook_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None


@dataclass
class Webhook:
    id: str
    url: str
    secret: str
    events: tuple[str, ...]
    enabled: bool = True

    def shown(self) -> dict[str, Any]:
        return {"id": self.id, "enabled": self.enabled, "url": self.url, "events": list(self.events)}


@dataclass
class _Fault:
    kind: str  # status, timeout, slow or drop
    remaining: int
    path: str | None
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class _SliceHook:
    slices: int  # GetRows slices still to be built before the action runs
    action: Callable[[FakeEfimisState], Any]


class FakeEfimisState:
    """The fake Efimis's configuration, data and test controls.

    Configuration (plain attributes, may be changed at any time): ``tenant`` (the alias in every API path),
    ``client_id``, ``client_secret``, ``token_ttl`` (seconds), ``enabled`` (False: the tenant has not enabled the
    application), ``rate_limit`` (requests per ``rate_window`` seconds and client id; None: unlimited),
    ``allow_http_hooks`` (accept ``http://`` webhook URLs), ``hook_timeout`` (seconds), ``clock`` (unix time).
    """

    def __init__(self, *, work_items: int = 0, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31,
                 tenant: str = TENANT, client_id: str = "ocgate-fake-efimis", client_secret: str = "fake-efimis-secret",
                 token_ttl: float = TOKEN_TTL, rate_limit: int | None = None, rate_window: float = 60.0,
                 allow_http_hooks: bool = True, hook_timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self.tenant, self.client_id, self.client_secret, self.token_ttl = tenant, client_id, client_secret, token_ttl
        self.enabled, self.rate_limit, self.rate_window = True, rate_limit, rate_window
        self.allow_http_hooks, self.hook_timeout, self.clock = allow_http_hooks, hook_timeout, clock
        self._seeding = {"n": work_items, "seed": seed, "start": start, "days": days}
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Seed the data as constructed and forget tokens, faults, the log, webhooks and deliveries."""
        with self._lock:
            self._tokens: dict[str, float] = {}  # access token -> expires at
            self._window: tuple[float, int] = (0.0, 0)  # (ends at, requests used)
            self._faults: list[_Fault] = []
            self._slice_hooks: list[_SliceHook] = []
            self._webhooks: dict[str, Webhook] = {}
            self._last_stamp = ""
            self.log: list[LoggedRequest] = []
            self.deliveries: list[Delivery] = []
            self.seed_work_items(**self._seeding)

    # -- data ----------------------------------------------------------------------------------------------------

    def seed_work_items(self, n: int, *, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31) -> None:
        """Replace the firm's work items with ``n`` generated ones dated from ``start`` over ``days`` (the same
        for the same arguments: ids included)."""
        with self._lock:
            self._firm = _build_firm()
            items = _seed(self._firm, n, random.Random(seed), start, days, self._now())
            self._items: dict[str, WorkItem] = {item.id: item for item in items}
            self._changed()

    @property
    def work_items(self) -> list[WorkItem]:
        """Every work item, deleted ones included, in id order."""
        with self._lock:
            return [self._items[key] for key in self._ordered()]

    def work_item(self, work_item_id: str) -> WorkItem:
        with self._lock:
            return self._items[work_item_id]

    @property
    def entities(self) -> list[Entity]:
        return list(self._firm.entities.values())

    @property
    def clients(self) -> list[Client]:
        return list(self._firm.clients.values())

    @property
    def matters(self) -> list[Matter]:
        return list(self._firm.matters.values())

    @property
    def task_types(self) -> list[TaskType]:
        return list(self._firm.task_types.values())

    def task_type(self, code: str) -> TaskType:
        return self._firm.by_code(code)

    def add_work_item(self, *, title: str = "Drafted letter of advice to client on limitation issues",
                      units: Decimal | int = 10, state: str = "Finalised", task_type: str | None = "DRAFT",
                      employee: str = "TK1002", entry_date: dt.date = dt.date(2026, 3, 16),
                      matter_number: str | None = "2026-0017", **changes: Any) -> WorkItem:
        """A new timed work item (six-minute units at the fee earner's rate) unless ``changes`` say otherwise."""
        with self._lock:
            person = self._firm.entities[ENTITY_IDS[employee]]
            matter = next((m for m in self._firm.matters.values() if m.number == matter_number), None)
            units = Decimal(units)
            item = WorkItem(id=str(uuid.uuid4()), version=1, modified_on=self._now(), entry_date=entry_date,
                            matter=matter, employee=person, state=state, item_type="TimedFee",
                            task_type=self._firm.by_code(task_type) if task_type else None, title=title,
                            rate=person.rate, units=units, unit_duration=Decimal(6),
                            total_base=(units * 6 / 60 * person.rate).quantize(_CENT, ROUND_HALF_UP), duration_ticks=0,
                            billable=True)
            self._items[item.id] = item
            if changes:
                self.edit(item.id, **changes)
            self._changed()
            return item

    def edit(self, work_item_id: str, **changes: Any) -> WorkItem:
        """Change fields of a work item (``WorkItem`` attribute names), as a user of Efimis would."""
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise ValueError(f"cannot edit {', '.join(sorted(unknown))}")
        with self._lock:
            item = self._items[work_item_id]
            for name, value in changes.items():
                setattr(item, name, value)
            item.version += 1
            item.modified_on = self._now()
            self._changed()
            return item

    def finalise(self, work_item_id: str) -> WorkItem:
        return self.edit(work_item_id, state="Finalised")

    def unfinalise(self, work_item_id: str) -> WorkItem:
        return self.edit(work_item_id, state="Pending")

    def write_off(self, work_item_id: str, on: dt.date = dt.date(2026, 4, 30)) -> WorkItem:
        return self.edit(work_item_id, state="WrittenOff", write_off_date=on)

    def delete(self, work_item_id: str) -> WorkItem:
        """Delete a work item as Efimis does: GET answers 404, GetRows shows it only with ``includeDeleted``."""
        return self.edit(work_item_id, state="Deleted")

    def purge(self, work_item_id: str) -> None:
        """Remove a work item entirely (as an archive purge would): no query shows it any more."""
        with self._lock:
            del self._items[work_item_id]
            self._changed()

    def _now(self) -> str:
        """The fake's "now" as Efimis writes instants; never earlier than one it wrote before."""
        moment = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        with self._lock:
            self._last_stamp = max(stamp, self._last_stamp)
            return self._last_stamp

    def _changed(self) -> None:
        self._order: list[str] | None = None
        self._results: dict[Any, list[WorkItem]] = {}

    def _ordered(self) -> list[str]:
        if self._order is None:
            self._order = sorted(self._items)
        return self._order

    # -- tokens and the rate limit -------------------------------------------------------------------------------

    def issue_token(self) -> dict[str, Any]:
        """A client-credentials token answer, as the token endpoint gives it."""
        now = self.clock()
        token = base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=")
        with self._lock:
            self._tokens[token] = now + self.token_ttl
        return {"access_token": token, "token_type": "Bearer", "not_before": int(now),
                "expires_in": int(self.token_ttl), "expires_on": int(now + self.token_ttl), "resource": "efimis-api"}

    def expire_tokens(self) -> None:
        """A signing-key rollover: every token issued so far answers 401 ``invalid_token`` from now on."""
        with self._lock:
            self._tokens.clear()

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and expires > self.clock()

    def _take_request(self) -> int | None:
        """Count a request against the client id's window; the seconds to wait when it is used up."""
        if self.rate_limit is None:
            return None
        now = self.clock()
        with self._lock:
            ends, used = self._window
            if now >= ends:
                ends, used = now + self.rate_window, 0
            if used >= self.rate_limit:
                return max(1, int(ends - now + 0.999))
            self._window = (ends, used + 1)
        return None

    # -- faults --------------------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, path: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next ``n`` requests (whose path contains ``path``) with ``status``: 429 (with ``Retry-After``
        when given), 500 from the API, 502, 503 or 504 as the gateway's HTML page."""
        if status not in (429, 500, *_GATEWAY_TITLES):
            raise ValueError("status must be 429, 500, 502, 503 or 504")
        self._add_fault(_Fault("status", n, path, status=status, retry_after=retry_after))

    def timeout_next(self, n: int = 1) -> None:
        """Answer the next ``n`` GraphQL requests with the transient ``EXECUTION_TIMEOUT`` error (HTTP 200)."""
        self._add_fault(_Fault("timeout", n, "/graphql"))

    def slow_next(self, n: int = 1, seconds: float = 5.0, *, path: str | None = None) -> None:
        """Handle the next ``n`` requests but answer only after ``seconds`` (to make clients time out)."""
        self._add_fault(_Fault("slow", n, path, seconds=seconds))

    def drop_next(self, n: int = 1, *, path: str | None = None) -> None:
        """Close the connection of the next ``n`` requests without an answer (nothing is handled)."""
        self._add_fault(_Fault("drop", n, path))

    def between_pages(self, after: int, action: Callable[[FakeEfimisState], Any]) -> None:
        """Run ``action(state)`` once, right after the ``after``-th GetRows slice from now has been built and before
        it is sent: to change work items between two slices of a pull."""
        with self._lock:
            self._slice_hooks.append(_SliceHook(after, action))

    def clear_faults(self) -> None:
        """Forget the faults not injected yet (the data and the log stay)."""
        with self._lock:
            self._faults.clear()

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

    def _slice_served(self) -> None:
        with self._lock:
            for hook in self._slice_hooks:
                hook.slices -= 1
            due = [hook.action for hook in self._slice_hooks if hook.slices <= 0]
            self._slice_hooks = [hook for hook in self._slice_hooks if hook.slices > 0]
        for action in due:
            action(self)

    def _record(self, method: str, path: str, query: str, headers: dict[str, str]) -> LoggedRequest:
        entry = LoggedRequest(method, path, query, headers)
        with self._lock:
            self.log.append(entry)
        return entry

    # -- GetRows -------------------------------------------------------------------------------------------------

    def _get_rows(self, variables: Any) -> Response:
        """The reporting query over work items: criteria, a slice of at most 500 rows, sorting, totals."""
        try:
            criteria, slice_ = variables["criteria"], variables["slice"]
            period = criteria["entryPeriod"]["fixedPeriod"]
            first, last = dt.date.fromisoformat(period["min"][:10]), dt.date.fromisoformat(period["max"][:10])
            columns = tuple(col["colId"] for col in slice_["cols"])
            sort_by = [(s["colId"], bool(s.get("desc"))) for s in slice_.get("sortBy") or []]
            start, end = int(slice_.get("startRow") or 0), int(slice_["endRow"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return _graphql_error("BAD_USER_INPUT", f"criteria.entryPeriod.fixedPeriod and slice.cols, startRow and "
                                                    f"endRow are required ({type(exc).__name__}: {exc})")
        unknown = [name for name in (*columns, *(name for name, _ in sort_by)) if name not in _COLUMNS]
        if unknown:
            return _graphql_error("BAD_USER_INPUT", f"unknown column(s): {', '.join(unknown)}")
        if slice_.get("rowGroups") or slice_.get("pivots"):
            return _graphql_error("BAD_USER_INPUT", "this fake does not group or pivot rows")
        if start < 0 or end < start:
            return _graphql_error("BAD_USER_INPUT", "startRow and endRow must satisfy 0 <= startRow <= endRow")
        if end - start > SLICE_MOST:
            return _graphql_error("SLICE_TOO_LARGE", f"a slice covers at most {SLICE_MOST} rows")
        states = tuple(criteria.get("states") or ())
        types = tuple(criteria.get("workItemTypes") or ())
        key = (first, last, bool(criteria.get("includeDeleted")), bool(criteria.get("noMatter")), states, types)
        with self._lock:
            matching = self._matching(key)
            if slice_.get("totalsOnly"):
                totals = {col["colId"]: _num(sum((_COLUMNS[col["colId"]][1](w) or Decimal(0) for w in matching),
                                                 Decimal(0))) if col.get("aggFunc") == "sum" else "null"
                          for col in slice_["cols"]}
                row = "{" + ",".join(f'"{name}":{value}' for name, value in totals.items()) + "}"
                return _answer('{"data":{"getRows":{"rowData":[' + row + '],"lastRow":' + str(len(matching)) + "}}}")
            ordered = self._sorted(key, sort_by)
            text = ",".join(_render(item, columns) for item in ordered[start:end])
            count = len(matching)
        self._slice_served()
        return _answer('{"data":{"getRows":{"rowData":[' + text + '],"lastRow":' + str(count) + "}}}")

    def _matching(self, key: tuple[Any, ...]) -> list[WorkItem]:
        """The work items the criteria select, in id order (kept until the data changes)."""
        found = self._results.get(key)
        if found is None:
            first, last, deleted, no_matter, states, types = key
            found = [item for item in map(self._items.__getitem__, self._ordered())
                     if first <= item.entry_date <= last and (deleted or item.state != "Deleted")
                     and (not no_matter or item.matter is None) and (not states or item.state in states)
                     and (not types or item.item_type in types)]
            self._results[key] = found
        return found

    def _sorted(self, key: tuple[Any, ...], sort_by: list[tuple[str, bool]]) -> list[WorkItem]:
        """The selected work items sorted as asked. Rows that tie on every sort column come in no fixed order, as
        from SQL paging without a unique ORDER BY (shuffled here, so that a client relying on any order sees it
        break); a sort ending on ``id`` is unique, and kept until the data changes."""
        unique = bool(sort_by) and sort_by[-1][0] == "id"
        cached = self._results.get((key, tuple(sort_by))) if unique else None
        if cached is not None:
            return cached
        result = list(self._matching(key))
        if sort_by != [("id", False)]:
            if not unique:
                random.shuffle(result)
            for name, desc in reversed(sort_by):
                value = _COLUMNS[name][1]
                result.sort(key=lambda w, value=value: (value(w) is not None, value(w)), reverse=desc)
        if unique:
            self._results[(key, tuple(sort_by))] = result
        return result

    # -- webhooks ------------------------------------------------------------------------------------------------

    @property
    def webhooks(self) -> list[Webhook]:
        with self._lock:
            return list(self._webhooks.values())

    def webhook(self, webhook_id: str) -> Webhook:
        with self._lock:
            return self._webhooks[webhook_id]

    def disable_webhook(self, webhook_id: str) -> None:
        """Disable a subscription, as Efimis may after failed deliveries."""
        with self._lock:
            self._webhooks[webhook_id].enabled = False

    def _put_webhook(self, data: Any) -> Response:
        if not isinstance(data, dict):
            return _problem(400, "Bad Request", "the body must be a JSON object")
        hook_id, url, secret, events = data.get("id"), data.get("url"), data.get("secret"), data.get("events")
        if not isinstance(hook_id, str) or not _WEBHOOK_ID.match(hook_id):
            return _problem(400, "Bad Request", "id must match ^webhook_[0-9a-f]{32}$")
        if not isinstance(url, str) or not (url.startswith("https://") or
                                            (self.allow_http_hooks and url.startswith("http://"))):
            return _problem(400, "Bad Request", "url must be an https URL")
        if not isinstance(secret, str) or not secret:
            return _problem(400, "Bad Request", "secret is required")
        if not isinstance(events, list) or not events or any(event not in EVENTS for event in events):
            return _problem(400, "Bad Request", f"events must be a non-empty list of {', '.join(EVENTS)}")
        with self._lock:
            if hook_id not in self._webhooks and len(self._webhooks) >= WEBHOOKS_MOST:
                return _problem(409, "Conflict", f"a tenant has at most {WEBHOOKS_MOST} webhook subscriptions")
            hook = self._webhooks[hook_id] = Webhook(hook_id, url, secret, tuple(events),
                                                     data.get("enabled") is not False)
            return _answer(hook.shown())

    def signed_delivery(self, event: str, work_item_id: str, *, webhook_id: str | None = None, forged: bool = False,
                        stale: bool = False, request_id: str | None = None) -> tuple[dict[str, str], bytes]:
        """The headers and body of a delivery of ``event`` about a work item to a subscription (``webhook_id``, or
        the only one), without sending it. ``forged`` signs with the wrong secret; ``stale`` dates it ten
        minutes back."""
        if event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}")
        with self._lock:
            if webhook_id is None:
                if len(self._webhooks) != 1:
                    raise LookupError(f"{len(self._webhooks)} subscriptions: pass webhook_id")
                webhook_id = next(iter(self._webhooks))
            hook = self._webhooks[webhook_id]
            item = self._items.get(work_item_id)
            data = '{"tenant":' + _quote(self.tenant) + ',"workItemId":' + _quote(work_item_id)
            if item is not None:
                data += "".join(f',"{name}":{_COLUMNS[column][0](item)}' for name, column in _EVENT_FIELDS)
            data += "}"
        request_id = request_id or str(uuid.uuid4())
        moment = dt.datetime.fromtimestamp(self.clock() - (600 if stale else 0), dt.UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 10:07d}Z"  # .NET's seven digits
        key = ("forged-" + hook.secret if forged else hook.secret).encode()
        signature = base64.b64encode(hmac.new(key, f"{request_id}|{stamp}".encode(), hashlib.sha256).digest()).decode()
        body = json.dumps({"type": event, "data": data, "requestId": request_id}).encode()
        return {"Content-Type": "application/json", "X-PE2-REQUEST-ID": request_id, "X-PE2-TIMESTAMP": stamp,
                "X-PE2-WEBHOOK-SIGNATURE": signature}, body

    def deliver(self, event: str, work_item_id: str, *, forged: bool = False, stale: bool = False) -> int:
        """POST ``event`` about a work item to every enabled subscription to it; a delivery not answered 2xx is
        sent again (newly timestamped and signed, the same ``requestId``) up to three times. Returns how many
        subscriptions it was sent to; every POST is kept in ``deliveries``. Changing data delivers nothing: tests
        call this."""
        with self._lock:
            targets = [hook for hook in self._webhooks.values() if hook.enabled and event in hook.events]
        for hook in targets:
            request_id = str(uuid.uuid4())
            for _ in range(1 + DELIVERY_RETRIES):
                headers, body = self.signed_delivery(event, work_item_id, webhook_id=hook.id, forged=forged,
                                                     stale=stale, request_id=request_id)
                status = self._send(hook.id, hook.url, headers, body)
                if status is not None and 200 <= status < 300:
                    break
        return len(targets)

    def replay_last(self) -> int | None:
        """Send the last delivery again, byte for byte (a replay, as an attacker would); its status."""
        with self._lock:
            if not self.deliveries:
                raise LookupError("nothing delivered yet")
            last = self.deliveries[-1]
        return self._send(last.webhook_id, last.url, last.headers, last.body)

    def _send(self, webhook_id: str, url: str, headers: dict[str, str], body: bytes) -> int | None:
        try:
            status: int | None = httpx.post(url, content=body, headers=headers, timeout=self.hook_timeout).status_code
        except httpx.HTTPError:
            status = None
        with self._lock:
            self.deliveries.append(Delivery(webhook_id, url, headers, body, status))
        return status


# -- the app ------------------------------------------------------------------------------------------------------

def _page(request: Request, records: list[dict[str, Any]]) -> Response:
    """A REST list page: ``page`` from 1, ``pageSize`` 1..200 (else 400), in id order."""
    try:
        page = int(request.query_params.get("page", "1"))
        size = int(request.query_params.get("pageSize", "50"))
    except ValueError:
        return _problem(400, "Bad Request", "page and pageSize must be whole numbers")
    if page < 1 or not 1 <= size <= PAGE_MOST:
        return _problem(400, "Bad Request", f"page must be 1 or more and pageSize between 1 and {PAGE_MOST}")
    ordered = sorted(records, key=lambda record: record["id"])
    return _answer({"items": ordered[(page - 1) * size:page * size], "page": page, "pageSize": size,
                    "totalCount": len(ordered)})


def create_app(state: FakeEfimisState) -> _Edge:
    """The fake Efimis as an ASGI app: routes behind the layer that logs, injects faults and guards the API."""
    app = FastAPI(title="Fake Efimis", openapi_url=None, docs_url=None, redoc_url=None)
    tables: dict[str, Callable[[], Iterable[Any]]] = {
        "entities": lambda: state.entities, "clients": lambda: state.clients, "matters": lambda: state.matters,
        "tasktypes": lambda: state.task_types}

    @app.post("/{policy:path}/oauth2/v2.0/token")
    async def token(request: Request) -> Response:
        form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return _answer({"error": "unsupported_grant_type", "error_description": "client_credentials only"}, 400)
        if not form.get("scope"):
            return _answer({"error": "invalid_request", "error_description": "scope is required"}, 400)
        if client_id != state.client_id or secret != state.client_secret:
            return _answer({"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
        if form["scope"] != SCOPE:
            return _answer({"error": "invalid_scope", "error_description": f"scope must be {SCOPE}"}, 400)
        return _answer(state.issue_token())

    @app.get("/{tenant}/v1/{kind}")
    async def index(request: Request, kind: str) -> Response:
        if kind == "webhooks":
            return _page(request, [hook.shown() for hook in state.webhooks])
        if kind not in tables:
            return _problem(404, "Not Found", f"no resource {kind}")
        return _page(request, [_record(kind, record) for record in tables[kind]()])

    @app.get("/{tenant}/v1/{kind}/{record_id}")
    async def show(kind: str, record_id: str) -> Response:
        if kind == "workitems":
            with state._lock:
                item = state._items.get(record_id)
                if item is None or item.state == "Deleted":
                    return _problem(404, "Not Found", f"no work item {record_id}")
                return _answer(_render(item, tuple(_COLUMNS)))
        found = next((r for r in tables[kind]() if r.id == record_id), None) if kind in tables else None
        if found is None:
            return _problem(404, "Not Found", f"no {kind} record {record_id}")
        return _answer(_record(kind, found))

    @app.post("/{tenant}/graphql")
    async def graphql(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _problem(400, "Bad Request", "the body is not JSON")
        if not isinstance(body, dict) or body.get("operationName") != "GetRows":
            return _graphql_error("BAD_USER_INPUT", "this fake answers the GetRows operation only")
        request.scope["state"]["log"].variables = body.get("variables")
        return state._get_rows(body.get("variables"))

    @app.put("/{tenant}/v1/webhooks")
    async def put_webhook(request: Request) -> Response:
        try:
            data = json.loads(await request.body())
        except ValueError:
            return _problem(400, "Bad Request", "the body is not JSON")
        return state._put_webhook(data)

    @app.delete("/{tenant}/v1/webhooks/{webhook_id}")
    async def delete_webhook(webhook_id: str) -> Response:
        with state._lock:
            if state._webhooks.pop(webhook_id, None) is None:
                return _problem(404, "Not Found", f"no webhook {webhook_id}")
        return Response(status_code=204)

    return _Edge(app, state)


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]


class _Edge:
    """What every request meets before a route: the log and the injected faults; for the API the tenant (404),
    the bearer token (401 ``invalid_token``), the tenant's consent (403) and the rate limit (429)."""

    def __init__(self, app: FastAPI, state: FakeEfimisState):
        self.app, self.state = app, state
        # Set by the server runner: closes the connection of the client at (host, port); True when it did.
        self.close_connection: Callable[[tuple[str, int]], bool] | None = None

    async def __call__(self, scope: _Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        entry = self.state._record(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers)
        scope.setdefault("state", {})["log"] = entry
        fault = self.state._take_fault(scope["path"])
        if fault is not None and fault.kind == "drop":
            entry.fault = "drop"
            client = scope.get("client")
            if self.close_connection is None or client is None or not self.close_connection((client[0], client[1])):
                raise ConnectionResetError("the fake Efimis dropped the connection")
            while (await receive())["type"] != "http.disconnect":
                pass
            return

        async def answer(message: _Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        refusal = _fault_answer(fault) if fault is not None and fault.kind in ("status", "timeout") else None
        if refusal is None and not scope["path"].endswith("/oauth2/v2.0/token"):
            refusal = self._admit(scope["path"], headers)
        if refusal is not None:
            entry.fault = fault.kind if fault is not None and fault.kind != "slow" else None
            await refusal(scope, receive, answer)
            return
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

    def _admit(self, path: str, headers: Mapping[str, str]) -> Response | None:
        """The refusal of an API request, or None to serve it."""
        tenant = path.strip("/").split("/", 1)[0]
        if tenant != self.state.tenant:
            return _problem(404, "Not Found", f"no tenant {tenant}")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.state._token_valid(token.strip()):
            refused = _problem(401, "Unauthorized", "the access token is expired, revoked or invalid")
            refused.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return refused
        if not self.state.enabled:
            return _problem(403, "Forbidden", "the application is not enabled for this tenant")
        wait = self.state._take_request()
        if wait is not None:
            limited = _answer({"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {wait} seconds."},
                              429)
            limited.headers["Retry-After"] = str(wait)
            return limited
        return None


def _fault_answer(fault: _Fault) -> Response:
    if fault.kind == "timeout":
        return _graphql_error("EXECUTION_TIMEOUT", "The query took too long to execute. Try a smaller slice.")
    if fault.status == 429:
        refused = _answer({"statusCode": 429, "message": "Rate limit is exceeded."}, 429)
    elif fault.status == 500:
        refused = _problem(500, "Internal Server Error", "injected")
    else:
        page = _GATEWAY_PAGE.format(status=fault.status, title=_GATEWAY_TITLES[fault.status])
        refused = Response(page.encode(), status_code=fault.status, media_type="text/html")
    if fault.retry_after is not None:
        refused.headers["Retry-After"] = str(fault.retry_after)
    return refused


# -- running it ---------------------------------------------------------------------------------------------------

@dataclass
class FakeEfimis:
    """A running fake Efimis: its URLs, its state and the application's credentials."""

    base_url: str  # http://127.0.0.1:PORT, the API host (``base_url`` setting)
    state: FakeEfimisState

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/{self.state.tenant}"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def client_secret(self) -> str:
        return self.state.client_secret

    def settings(self, secret_env: str, **more: Any) -> dict[str, Any]:
        """Source settings that reach this fake, its task types and clients mapped (``more`` overrides)."""
        return {"base_url": self.base_url, "token_url": self.token_url, "tenant": self.state.tenant,
                "client_id": self.client_id, "client_secret_env": secret_env, "currency": "GBP",
                "period_from": "2026-01-01", "task_type_codes": TASK_TYPE_CODES, "ledes_client_ids": LEDES_CLIENT_IDS,
                **more}


@contextlib.contextmanager
def running_fake_efimis(*, state: FakeEfimisState | None = None, host: str = "127.0.0.1", port: int = 0,
                        **state_options: Any) -> Iterator[FakeEfimis]:
    """Serve a fake Efimis from a background thread until the block ends. ``state_options`` go to
    :class:`FakeEfimisState` (``work_items=500``, ``rate_limit=...``); or pass a ``state``."""
    if state is None:
        state = FakeEfimisState(**state_options)
    elif state_options:
        raise ValueError("pass either a state or state options, not both")
    app = create_app(state)
    with serving(app, host=host, port=port) as (url, server):
        app.close_connection = _connection_closer(server)
        yield FakeEfimis(url, state)


# A small month of work for the demo: (working day of the month from 0, fee earner, matter, task type code, hours,
# narrative, what else is true of it). Most of it is clean; the exceptions are what a reviewer should see.
_DEMO: tuple[tuple[int, str, str, str | None, str, str, dict[str, Any]], ...] = (
    (0, "TK1002", "2026-0042", "PLAN", "1.2", "Planned strategy for motion practice and prepared outline of key "
     "arguments", {}),
    (0, "TK1004", "2026-0042", "RSRCH", "2.5", "Researched authority on the economic loss doctrine for the "
     "opposition brief", {}),
    (1, "TK1007", "2026-0017", "PERUSE", "3.0", "Reviewed the third production for privilege and responsiveness "
     "and updated the log", {}),
    (1, "TK1004", "2026-0017", "DRAFT", "1.8", "Drafted first set of requests for production directed to the "
     "distributor", {}),
    (2, "TK1002", "2026-0017", "CLIENT", "0.8", "Conferred with client general counsel on settlement range and "
     "authority", {}),
    (3, "TK1005", "2026-0042", "CONF", "1.5", "Telephone conference with damages expert regarding lost profits "
     "methodology", {}),
    (4, "TK1004", "2026-0042", "DRAFT", "3.6", "Reviewed deposition transcript; drafted summary for client; "
     "telephone conference with counsel regarding next steps", {}),  # block-billed
    (5, "TK1007", "2026-0042", "PERUSE", "0.4", "Review file", {}),  # too short, and vague
    (6, "TK1002", "2026-0042", "DRAFT", "2.1", "Revised opposition to motion to dismiss and incorporated new case "
     "law", {}),
    (7, "TK1005", "2026-0017", "RSRCH", "2.2", "Researched recall notice requirements under the consumer product "
     "safety rules", {}),
    (8, "TK1004", "2026-0017", "DRAFT", "6.0", "Drafted motion to compel production of dispatch logs and supporting "
     "declaration", {}),  # with the next two: 11.5 hours in one day
    (8, "TK1004", "2026-0017", "PERUSE", "3.5", "Reviewed dispatch log excerpts and prepared exhibits for the motion "
     "to compel", {}),
    (8, "TK1004", "2026-0042", "CONF", "2.0", "Met and conferred with opposing counsel about deficiencies in "
     "interrogatory answers", {}),
    (9, "TK1002", "2026-0101", "CLIENT", "1.0", "Conferred with the client's in-house team on the disclosure "
     "timetable", {}),
    (9, "TK1005", "2026-0101", "DRAFT", "2.4", "Drafted witness statement of the operations director for "
     "exchange", {}),
    (10, "TK1007", "2026-0042", "FILING", "1.1", "Filing and indexing of correspondence and pleadings", {}),
    (10, "TK1004", "2026-0042", "TRAVEL", "2.5", "Travel to Chicago for deposition of the operations manager", {}),
    (11, "TK1004", "2026-0042", "PERUSE", "8.5", "Prepared for and defended deposition of the operations manager",
     {}),
    (12, "TK1005", "2026-0017", None, "1.3", "Prepared chronology of recall complaints received by the client",
     {}),  # no task type
    (12, "TK1002", "2026-0017", "LETTER", "2", "Letter to opposing solicitors regarding disclosure timetable",
     {"itemised": True}),
    (13, "TK1007", "2026-0017", "PERUSE", "2.7", "Indexed and reviewed supplemental production for key documents",
     {}),
    (14, "TK1004", "2026-0042", "RSRCH", "1.6", "Researched admissibility of the expert's lost profits model", {}),
    (14, "TK1005", "2026-0042", "DRAFT", "0.9", "Drafted notice of deposition for the Borealis records custodian",
     {"state": "Pending"}),  # not finalised yet: not ingested
    (15, "TK1002", "2026-0042", "CONF", "1.4", "Attended case management conference and reported to client", {}),
    (15, "TK1007", "2026-0101", "PERUSE", "1.9", "Reviewed the claimant's list of documents and flagged gaps",
     {"billable": False}),
    (16, "TK1004", "2026-0101", "DRAFT", "2.8", "Drafted response to the request for further information", {}),
    (17, "TK1005", "2026-0017", "CLIENT", "0.6", "Telephone call with client about recall notice wording",
     {"state": "WrittenOff"}),  # written off: not billed
    (18, "TK1002", "2026-0101", "DRAFT", "1.7", "Settled the defence and counterclaim for service", {}),
    (18, "TK1004", "2026-0017", "PERUSE", "2.3", "Reviewed expert report on product failure rates", {}),
    (19, "TK1007", "2026-0042", "PLAN", "1.0", "Prepared trial bundle index and checked pagination", {}),
    (19, "TK1005", "2026-0042", "CONF", "0.5", "Call with expert", {}),  # too short
    (20, "TK1002", "2026-0042", "CLIENT", "1.1", "Reported to client on the deposition and next steps", {}),
)
DEMO_FEE_EARNERS = ("TK1002", "TK1004", "TK1005", "TK1007")


def _working_day(month_start: dt.date, n: int) -> dt.date:
    """The ``n``-th Monday-to-Friday day from ``month_start`` (0: the first)."""
    day = month_start
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    for _ in range(n):
        day += dt.timedelta(days=1)
        while day.weekday() >= 5:
            day += dt.timedelta(days=1)
    return day


def load_demo(state: FakeEfimisState, month_start: dt.date) -> list[WorkItem]:
    """Replace the fake's work items with a small month of work from ``month_start`` (32 items, four fee earners
    of :data:`DEMO_FEE_EARNERS`, three matters of Acme and Globex), and return them. Most are finalised, clean
    timed fees; among them a block-billed narrative, two short ones, a day of 11.5 hours, an 8-hour-plus
    deposition day with travel, an itemised letter, an item without a task type, one whose task type the firm
    has not mapped (FILING), a non-billable one, a pending one and a written-off one. The same month gives the
    same ids."""
    rng = random.Random(f"efimis-demo-{month_start.isoformat()}")
    with state._lock:
        firm = state._firm
        stamp = state._now()
        matters = {m.number: m for m in firm.matters.values()}
        items = []
        for n, ledes_id, number, task_code, quantity, title, extra in _DEMO:
            person = firm.entities[ENTITY_IDS[ledes_id]]
            task_type = firm.by_code(task_code) if task_code else None
            if extra.get("itemised"):
                units, minutes = Decimal(quantity), None
                rate = (task_type.itemised_rate if task_type else None) or Decimal(0)
                kind, total, ticks = "ItemisedFee", Decimal(quantity) * rate, 0
            else:
                units, minutes, rate, kind = Decimal(quantity) * 10, Decimal(6), person.rate, "TimedFee"
                total = (Decimal(quantity) * rate).quantize(_CENT, ROUND_HALF_UP)
                ticks = (int(units * minutes) * 60 - rng.randint(0, 240)) * _TICKS
            day = _working_day(month_start, n)
            item_state = extra.get("state", "Finalised")
            items.append(WorkItem(
                id=_guid(rng), version=1, modified_on=stamp, entry_date=day, matter=matters[number], employee=person,
                state=item_state, item_type=kind, task_type=task_type, title=title, rate=rate, units=units,
                unit_duration=minutes, total_base=total, duration_ticks=ticks, billable=extra.get("billable", True),
                write_off_date=day + dt.timedelta(days=14) if item_state == "WrittenOff" else None))
        state._items = {item.id: item for item in items}
        state._changed()
        return items


def timekeeper_rows() -> str:
    """CSV rows giving each sample timekeeper its Efimis fee earner id (append to the firm's timekeeper table)."""
    return "".join(f"{ledes_id},,,,,efimis,{entity_id},,,,\n" for ledes_id, entity_id in ENTITY_IDS.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Efimis API on loopback (for demos and benchmarks).")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--work-items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 3, 1),
                        help="the first work date (default 2026-03-01)")
    parser.add_argument("--days", type=int, default=31, help="work dates spread over this many days (default 31)")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per window (default: none)")
    args = parser.parse_args(argv)
    with running_fake_efimis(port=args.port, work_items=args.work_items, seed=args.seed, start=args.start,
                             days=args.days, rate_limit=args.rate_limit) as efimis:
        print(json.dumps({"base_url": efimis.base_url, "api_url": efimis.api_url, "token_url": efimis.token_url,
                          "tenant": efimis.state.tenant, "client_id": efimis.client_id,
                          "client_secret": efimis.client_secret, "entity_ids": ENTITY_IDS,
                          "task_type_codes": TASK_TYPE_CODES, "ledes_client_ids": LEDES_CLIENT_IDS}, indent=2))
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
