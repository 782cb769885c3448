"""A fake mattero public API on loopback, for tests, benchmarks and the demo: the organisation API key, matters,
contacts (clients and staff), single time and expense records, webhooks, and the "All Costs" export a firm downloads,
with an in-memory firm and fault injection. It follows connectors.md 2A where mattero documents its API and the
names :data:`connectors.sources.mattero.NAMES` assumes where it does not, exactly as the connector does.

Start it::

    with running_fake_mattero(records=500) as mattero:
        mattero.state.write_export(folder / "all-costs.csv")      # what the firm would export
        httpx.get(mattero.api_url + "/matters", params={"pageIndex": 0, "pageSize": 250},
                  headers={"Authorization": f"Bearer {mattero.api_key}"})

or from a shell, for a demo: ``python -m connectors.mattero.fake --port 8768 --records 500 --export costs.csv``.

The Python API (``mattero.state`` is a :class:`FakeMatteroState`; safe to call from the test thread while the server
thread answers):

* data: ``seed_records(n, seed=)`` builds the firm (the matters, clients and staff of the sample export
  ``engine/data/samples/mattero-all-costs.csv``, with the ids in :data:`STAFF_IDS`) and ``n`` costs;
  ``load_export(path)`` serves the costs of an All Costs export instead (the bundled sample, for the demo);
  ``records``, ``record(id)``, ``matters``, ``contacts``, ``staff`` read it; ``add_record``, ``edit_record``,
  ``delete_record``, ``add_matter``, ``edit_matter``, ``edit_contact`` change it; ``write_export(path, ids=None)``
  writes the All Costs export of the costs (all, or those ids), in the layout of the built-in mapping.
* faults: ``fail_next`` (429 with ``Retry-After``, 500, 502, 503, 504), ``slow_next`` (late answers, to make clients
  time out), ``drop_next`` (the connection closes with no answer), ``api_key`` (change it: the old key answers 401),
  ``rate_limit`` (requests per ``rate_window`` seconds, then 429), ``between_pages`` (change data between two pages
  of a list); ``log`` holds every request.
* webhooks: ``deliver(event_name, entity_id, token=None)`` posts an event to every subscribed callback (``token``
  replaces the callback path's last segment: a forgery); ``webhooks``, ``deliveries``.

What it assumes where mattero is silent: ``GET /matters/{id}`` and ``/contacts/{id}`` answer the record as the list
does; contacts have ``firstName``, ``lastName`` and ``customFields``; the client's LEDES id and matter id are custom
fields (``LEDES Client ID`` on the contact, ``Client Matter ID`` on the matter); records carry their ``id`` and a
``date`` (YYYY-MM-DD), and time records a ``gstAmount``; errors are ``{"message": ...}``; 429 carries
``Retry-After``; ``DELETE /webhooks/{id}`` answers 204; lists are in id order, offset-paged and live.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from connectors.clio.fake import _connection_closer, serving
from engine.mapping import load_mapping, read_mapped

API_PREFIX = "/public/api/v1"
EXPORT_HEADER = ("Date", "Matter Number", "Matter Title", "Staff", "Cost Type", "Cost Code", "Description", "Minutes",
                 "Units", "Rate", "Amount (ex GST)", "GST", "Costing Method", "Written Off", "Record ID")
GST = Decimal("0.10")
CENT = Decimal("0.01")
_FAULT_STATUSES = (429, 500, 502, 503, 504)

# The firm of the sample export: staff (id, first, last, hourly rate), clients (id, name, LEDES id) and matters
# (id, number, title, client id, costing method, client matter id).
STAFF = (("88-A", "Margaret", "Whitlam", Decimal(650)), ("741-A", "Priya", "Raman", Decimal(380)),
         ("742-A", "Daniel", "Nguyen", Decimal(420)), ("743-A", "Hannah", "Lee", Decimal(195)),
         ("744-A", "Tom", "Kowalski", Decimal(240)), ("745-A", "Siobhán", "O'Neill", Decimal(310)))
STAFF_IDS = {f"{first} {last}": staff_id for staff_id, first, last, _ in STAFF}
CLIENTS = (("97-A", "Harbour Property Pty Ltd", "HARBOUR01"), ("98-A", "Executors of the late E. Mackenzie", None),
           ("99-A", "Di'Bernardo Group Members", "DIBERN01"), ("100-A", "Nguyễn Family Trust", "NGUYEN01"),
           ("101-A", "Wattle Street Holdings", "WATTLE01"), ("102-A", "Kestrel Logistics Pty Ltd", "KESTREL01"),
           ("103-A", "Ocean Parade Investments", "OCEANP01"))
MATTERS = (("1217-A", "2024-118", "Harbour Property Pty Ltd v Coastal Builders", "97-A", "Time", "HP-LIT-0042"),
           ("1218-A", "2025-031", "Estate of Eileen Mackenzie", "98-A", "Time", None),
           ("1219-A", "2025-077", "Di'Bernardo Class Action", "99-A", "Time", "DB-CA-7"),
           ("1220-A", "2025-102", "Nguyễn Family Trust \u2013 restructure", "100-A", "Time", None),
           ("1221-A", "2026-004", "Sale of 14 Wattle Street, Balmain", "101-A", "Fixed", "WS-2026-1"),
           ("1222-A", "2026-009", "Kestrel Logistics \u2013 employment dispute", "102-A", "Time", "KL-EMP-2026-03"),
           ("1223-A", "2026-012", "Purchase of 3/22 Ocean Parade, Coogee", "103-A", "CostTemplate", None))
TIME_CODES = ("Attendance", "Perusal", "Drafting", "Correspondence", "Telephone", "Conference", "Research")
EXPENSE_CODES = (("Photocopying", Decimal("0.50")), ("Courier", Decimal("30.48")), ("Postage", Decimal("2.20")),
                 ("Court Filing Fee", Decimal("1085.00")), ("Search Fee", Decimal("24.10")))
NARRATIVES = {"Attendance": "Attendance on client re settlement offer",
              "Perusal": "Perusal of subpoenaed documents", "Drafting": "Drafting letter of advice on prospects",
              "Correspondence": "Letter to other side re discovery",
              "Telephone": "Telephone call with other side's solicitor", "Conference": "Conference with counsel",
              "Research": "Research on limitation periods, NSW"}


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Contact:
    id: str
    name: str  # "Raman, Priya" for a person, the company name otherwise
    first_name: str | None = None
    last_name: str | None = None
    staff: bool = False
    ledes_client_id: str | None = None
    rate: Decimal | None = None

    def render(self) -> dict[str, Any]:
        custom = [{"id": "CF_301-A", "name": "LEDES Client ID", "value": self.ledes_client_id}] \
            if self.ledes_client_id else []
        found: dict[str, Any] = {"id": self.id, "name": self.name, "isStaff": self.staff, "customFields": custom,
                                 "contactType": "Person" if self.first_name else "Company"}
        if self.first_name:
            found.update(firstName=self.first_name, lastName=self.last_name)
        return found


@dataclass
class Matter:
    id: str
    number: str
    title: str
    client_id: str
    costing_method: str = "Time"
    client_matter_id: str | None = None
    currency: str | None = None
    status: str = "Open"


@dataclass
class Record:
    """A time or expense record. ``staff_label`` is how the export names the staff member when it differs."""

    id: str
    kind: str  # Time | Expense
    date: dt.date
    matter_id: str
    staff_id: str
    cost_code: str
    description: str
    amount: Decimal
    gst: Decimal
    minutes: int | None = None
    units: int | None = None
    rate: Decimal | None = None
    costing_method: str = "Time"
    written_off: bool = False
    staff_label: str | None = None
    matter_label: str | None = None  # the export's matter number when it is one mattero does not have


@dataclass
class Webhook:
    id: str
    event_name: str
    callback_url: str


@dataclass
class _Fault:
    kind: str  # status, slow or drop
    remaining: int
    path: str | None
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class _Hook:
    pages: int
    path: str | None
    action: Callable[[FakeMatteroState], Any]


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int | None = None
    fault: str | None = None


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    status: int | None


class FakeMatteroState:
    """The fake mattero's data, configuration and test controls. ``api_key`` is the organisation key that works;
    ``rate_limit`` (None: unlimited) requests per ``rate_window`` seconds across the organisation."""

    def __init__(self, *, records: int = 0, seed: int = 7, api_key: str = "fake-mattero-key",
                 rate_limit: int | None = None, rate_window: float = 60.0, start: dt.date = dt.date(2026, 3, 2)):
        self.api_key, self.rate_limit, self.rate_window = api_key, rate_limit, rate_window
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._window: tuple[float, int] = (0.0, 0)
        self.log: list[LoggedRequest] = []
        self.deliveries: list[Delivery] = []
        self._webhooks: dict[str, Webhook] = {}
        self._webhook_serial = 500
        self.seed_records(records, seed=seed, start=start)

    # -- data ----------------------------------------------------------------------------------------------------

    def _firm(self) -> None:
        self._contacts: dict[str, Contact] = {}
        for staff_id, first, last, rate in STAFF:
            self._contacts[staff_id] = Contact(staff_id, f"{last}, {first}", first, last, staff=True, rate=rate)
        for client_id, name, ledes in CLIENTS:
            self._contacts[client_id] = Contact(client_id, name, ledes_client_id=ledes)
        self._matters = {m[0]: Matter(*m) for m in MATTERS}
        self._records: dict[str, Record] = {}
        self._next = 2000

    def seed_records(self, n: int, *, seed: int = 7, start: dt.date = dt.date(2026, 3, 2), days: int = 28) -> None:
        """Replace the data: the sample firm and ``n`` costs from ``start`` over ``days`` (about 85% time). Some
        are wrong on purpose, as a firm's data is: at n // 5 a cost code the mapping does not list, at 2n // 5
        units that are not the minutes, at 3n // 5 an amount that is not units x rate, at 4n // 5 a staff member
        mattero does not have, and the last one a matter number mattero does not have (each when n > 10)."""
        rng = random.Random(seed)
        with self._lock:
            self._firm()
            matters = list(self._matters.values())
            for _ in range(n):
                matter = rng.choice(matters)
                staff_id, _, _, rate = rng.choice(STAFF)
                day = start + dt.timedelta(days=rng.randrange(days))
                if rng.random() < 0.85:
                    code = rng.choice(TIME_CODES)
                    minutes = rng.randint(3, 240)
                    record = self._time(day, matter, staff_id, code, minutes, rate)
                else:
                    code, price = rng.choice(EXPENSE_CODES)
                    amount = _money(price * rng.randint(1, 4))
                    record = self._new(kind="Expense", date=day, matter_id=matter.id, staff_id=staff_id,
                                       cost_code=code, description=f"{code}: {matter.title}"[:120], amount=amount,
                                       gst=_money(amount * GST), costing_method=matter.costing_method)
                self._records[record.id] = record
            if n > 10:
                ids = list(self._records)
                first = self._records[ids[n // 5]]
                first.kind, first.cost_code = "Time", "Mediation Prep"
                first.minutes = first.minutes or 30
                first.units, first.rate = math.ceil(first.minutes / 6), first.rate or Decimal(240)
                first.costing_method = "Time"
                first.amount = _money(first.units * 6 * first.rate / 60)
                self._make_time(ids[2 * n // 5], units_extra=3)
                self._make_time(ids[3 * n // 5], amount_extra=Decimal("55.00"))
                self._records[ids[4 * n // 5]].staff_label = "Casey Temp"
                self._records[ids[-1]].matter_label = "2019-001"

    def _make_time(self, record_id: str, *, units_extra: int = 0, amount_extra: Decimal = Decimal(0)) -> None:
        record = self._records[record_id]
        matter = self._matters["1217-A"]
        staff_id, _, _, rate = STAFF[1]
        fresh = self._time(record.date, matter, staff_id, "Research", 42, rate, record_id=record.id)
        fresh.units = (fresh.units or 0) + units_extra
        fresh.amount += amount_extra
        self._records[record_id] = fresh

    def _time(self, day: dt.date, matter: Matter, staff_id: str, code: str, minutes: int, rate: Decimal,
              record_id: str | None = None) -> Record:
        units = math.ceil(minutes / 6)
        fixed = matter.costing_method != "Time"
        amount = _money(Decimal(rng_fee(matter.id)) if fixed else units * 6 * rate / 60)
        record = self._new(kind="Time", date=day, matter_id=matter.id, staff_id=staff_id, cost_code=code,
                           description=NARRATIVES[code], amount=amount, gst=_money(amount * GST), minutes=minutes,
                           units=units, rate=rate, costing_method=matter.costing_method)
        if record_id is not None:
            record.id = record_id
        return record

    def _new(self, **values: Any) -> Record:
        self._next += 1
        return Record(id=f"{self._next}-A", **values)

    def load_export(self, path: str | Path) -> list[Record]:
        """Serve the costs of an All Costs export (read with the built-in mapping) instead of the seeded ones: its
        staff and matters must be the sample firm's (the bundled sample export is). For the demo."""
        read = read_mapped(path, load_mapping("mattero-all-costs"))
        numbers = {m.number: m for m in self._matters.values()}
        made = []
        with self._lock:
            self._records = {}
            for entry in read.entries:
                matter = numbers[entry.law_firm_matter_id or ""]
                staff_id = STAFF_IDS[entry.timekeeper_name or ""]
                time_kind = entry.entry_kind == "time"
                minutes = int(entry.duration_seconds_raw / 60) if entry.duration_seconds_raw is not None else None
                units = int(entry.hours_billed * 10) if time_kind and entry.hours_billed is not None else None
                method = {"flat": "Fixed", "fixed_template": "CostTemplate"}.get(entry.fee_basis, "Time")
                record = Record(id=entry.source_id, kind="Time" if time_kind else "Expense", date=entry.work_date,
                                matter_id=matter.id, staff_id=staff_id, cost_code=entry.source_task_label or "",
                                description=entry.narrative, amount=entry.amount or Decimal(0),
                                gst=entry.tax_amount or Decimal(0), minutes=minutes, units=units,
                                rate=entry.rate if entry.fee_basis == "hourly" else None,
                                costing_method=method,
                                written_off=entry.written_off)
                self._records[record.id] = record
                made.append(record)
        return made

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records.values())

    def record(self, record_id: str) -> Record:
        with self._lock:
            return self._records[record_id]

    @property
    def matters(self) -> list[Matter]:
        with self._lock:
            return list(self._matters.values())

    @property
    def contacts(self) -> list[Contact]:
        with self._lock:
            return list(self._contacts.values())

    @property
    def staff(self) -> list[Contact]:
        return [c for c in self.contacts if c.staff]

    def add_record(self, *, minutes: int = 30, code: str = "Drafting", matter_id: str = "1219-A",
                   staff_id: str = "741-A", day: dt.date = dt.date(2026, 3, 30)) -> Record:
        with self._lock:
            rate = self._contacts[staff_id].rate or Decimal(300)
            record = self._time(day, self._matters[matter_id], staff_id, code, minutes, rate)
            self._records[record.id] = record
        return record

    def edit_record(self, record_id: str, **changes: Any) -> Record:
        with self._lock:
            record = replace(self._records[record_id], **changes)
            self._records[record_id] = record
        return record

    def delete_record(self, record_id: str) -> None:
        with self._lock:
            del self._records[record_id]

    def add_matter(self, number: str, title: str, client_id: str = "97-A", **more: Any) -> Matter:
        """A matter with an id lower than every other (so that it shifts an offset-paged list: a test of pages)."""
        with self._lock:
            low = min(int(m.split("-")[0]) for m in self._matters) - 1
            matter = Matter(f"{low}-A", number, title, client_id, **more)
            self._matters = {matter.id: matter, **self._matters}
        return matter

    def edit_matter(self, matter_id: str, **changes: Any) -> Matter:
        with self._lock:
            matter = replace(self._matters[matter_id], **changes)
            self._matters[matter_id] = matter
        return matter

    def edit_contact(self, contact_id: str, **changes: Any) -> Contact:
        with self._lock:
            contact = replace(self._contacts[contact_id], **changes)
            self._contacts[contact_id] = contact
        return contact

    # -- the export ----------------------------------------------------------------------------------------------

    def export_rows(self, ids: Iterable[str] | None = None) -> Iterator[list[str]]:
        with self._lock:
            chosen = list(self._records.values()) if ids is None else [self._records[i] for i in ids]
            matters, contacts = dict(self._matters), dict(self._contacts)
        for record in chosen:
            matter, staff = matters[record.matter_id], contacts[record.staff_id]
            time_kind = record.kind == "Time"
            yield [record.date.strftime("%d/%m/%Y"), record.matter_label or matter.number, matter.title,
                   record.staff_label or f"{staff.first_name} {staff.last_name}", record.kind, record.cost_code,
                   record.description, str(record.minutes) if time_kind and record.minutes is not None else "",
                   str(record.units) if time_kind and record.units is not None else "",
                   _dollars(record.rate) if time_kind and record.rate is not None else "", _dollars(record.amount),
                   _dollars(record.gst), record.costing_method, "Yes" if record.written_off else "No", record.id]

    def write_export(self, path: str | Path, ids: Iterable[str] | None = None) -> Path:
        """Write the All Costs export of the costs (all of them, or ``ids``) as mattero's "CSV UTF-8" would."""
        path = Path(path)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_HEADER)
        writer.writerows(self.export_rows(ids))
        path.write_text("\ufeff" + buffer.getvalue(), encoding="utf-8")
        return path

    # -- rendering -----------------------------------------------------------------------------------------------

    def render_matter(self, matter: Matter) -> dict[str, Any]:
        client = self._contacts.get(matter.client_id)
        custom = [{"id": "CF_233-A", "name": "Client Matter ID", "value": matter.client_matter_id}] \
            if matter.client_matter_id else []
        if matter.currency:
            custom.append({"id": "CF_234-A", "name": "Currency", "value": matter.currency})
        return {"id": matter.id, "number": matter.number, "title": matter.title, "status": matter.status,
                "costingMethod": matter.costing_method, "client": {"id": matter.client_id,
                                                                   "name": client.name if client else None},
                "customFields": custom}

    def render_record(self, record: Record) -> dict[str, Any]:
        matter, staff = self._matters[record.matter_id], self._contacts[record.staff_id]
        found: dict[str, Any] = {
            "id": record.id, "isEditable": True, "isWrittenOff": record.written_off, "canChangeMatter": False,
            "costingMethod": record.costing_method, "costCode": {"id": "233-A", "name": record.cost_code},
            "associatedMatter": {"number": matter.number, "title": matter.title, "id": matter.id,
                                 "name": f"{matter.number} - {matter.title}"},
            "staffContact": {"id": staff.id, "name": staff.name}, "amountExclTax": record.amount,
            "gstAmount": record.gst, "description": record.description, "date": record.date.isoformat()}
        if record.kind == "Time":
            found.update(durationMinutes=record.minutes, units=record.units, chargeRate=record.rate)
        else:
            found["costCode"]["expenseType"] = "Disbursement"
        return {key: value for key, value in found.items() if value is not None}

    # -- faults --------------------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, path: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next ``n`` requests (whose path contains ``path``) with ``status`` without handling them."""
        if status not in _FAULT_STATUSES:
            raise ValueError(f"status must be one of {_FAULT_STATUSES}")
        with self._lock:
            self._faults.append(_Fault("status", n, path, status=status, retry_after=retry_after))

    def slow_next(self, n: int = 1, seconds: float = 5.0, *, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault("slow", n, path, seconds=seconds))

    def drop_next(self, n: int = 1, *, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault("drop", n, path))

    def between_pages(self, after: int, action: Callable[[FakeMatteroState], Any], *, path: str | None = None) -> None:
        """Run ``action(state)`` once the ``after``-th list page from now (of lists whose path contains ``path``)
        has been built, before it is sent."""
        with self._lock:
            self._hooks.append(_Hook(after, path, action))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or fault.path in path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _page_served(self, path: str) -> None:
        with self._lock:
            due = []
            for hook in self._hooks:
                if hook.path is None or hook.path in path:
                    hook.pages -= 1
                    if hook.pages <= 0:
                        due.append(hook)
            self._hooks = [hook for hook in self._hooks if hook not in due]
        for hook in due:
            hook.action(self)

    def _admit(self) -> int | None:
        """Count a request against the organisation's window: the Retry-After seconds when it is used up."""
        if self.rate_limit is None:
            return None
        now = time.time()
        with self._lock:
            ends, used = self._window
            if now >= ends:
                ends, used = now + self.rate_window, 0
            if used >= self.rate_limit:
                self._window = (ends, used)
                return max(1, math.ceil(ends - now))
            self._window = (ends, used + 1)
        return None

    # -- webhooks ------------------------------------------------------------------------------------------------

    @property
    def webhooks(self) -> list[Webhook]:
        with self._lock:
            return list(self._webhooks.values())

    def deliver(self, event_name: str, entity_id: str, *, token: str | None = None) -> list[int | None]:
        """POST ``event_name`` about a matter or contact to each callback subscribed to it, as mattero would (no
        signature). ``token`` replaces the last segment of each callback path (a forger's guess). The statuses."""
        with self._lock:
            if "Matter" in event_name:
                current = self.render_matter(self._matters[entity_id])
            else:
                current = self._contacts[entity_id].render()
            targets = [w.callback_url for w in self._webhooks.values() if w.event_name == event_name]
        body = _dumps({"entityId": entity_id, "entityType": event_name, "currentValue": current}).encode()
        statuses = []
        for url in targets:
            if token is not None:
                url = url.rsplit("/", 1)[0] + "/" + token
            try:
                status: int | None = httpx.post(url, content=body, headers={"Content-Type": "application/json"},
                                                timeout=5).status_code
            except httpx.HTTPError:
                status = None
            with self._lock:
                self.deliveries.append(Delivery(url, body, status))
            statuses.append(status)
        return statuses


def rng_fee(matter_id: str) -> int:
    """A fixed fee per matter (whole dollars), the same on every run."""
    return 1650 if matter_id == "1221-A" else 990


def _dollars(value: Decimal) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


_NUMBER = re.compile(r'"\x00(-?[0-9.]+)\x00"')


def _dumps(value: Any) -> str:
    """JSON with Decimals written as exact numbers (never through floats)."""
    text = json.dumps(value, default=lambda v: f"\x00{v}\x00" if isinstance(v, Decimal) else str(v))
    return _NUMBER.sub(r"\1", text.replace("\\u0000", "\x00"))


def _respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


def _page(request: Request, rows: list[Any]) -> tuple[list[Any], int]:
    params = request.query_params
    try:
        index, size = int(params.get("pageIndex", "0")), int(params.get("pageSize", "25"))
    except ValueError:
        raise _Refused(400, "pageIndex and pageSize must be whole numbers") from None
    if index < 0 or not 1 <= size <= 250:
        raise _Refused(400, "pageIndex must be 0 or more and pageSize 1 to 250")
    return rows[index * size:(index + 1) * size], index


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(state: FakeMatteroState) -> Any:
    app = FastAPI(title="Fake mattero", openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        return _respond({"message": exc.message}, exc.status)

    def listing(request: Request, path: str, rows: list[dict[str, Any]]) -> Response:
        page, index = _page(request, rows)
        state._page_served(path)
        return _respond({"totalRecords": len(rows), "pageIndex": index, "records": page})

    @app.get(API_PREFIX + "/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.get(API_PREFIX + "/matters")
    async def matters(request: Request) -> Response:
        with state._lock:
            rows = [state.render_matter(m) for m in sorted(state._matters.values(), key=_by_id)]
        return listing(request, "/matters", rows)

    @app.get(API_PREFIX + "/matters/{matter_id}")
    async def matter(matter_id: str) -> Response:
        with state._lock:
            found = state._matters.get(matter_id)
            if found is None:
                raise _Refused(404, "Matter not found")
            return _respond(state.render_matter(found))

    @app.get(API_PREFIX + "/contacts")
    async def contacts(request: Request) -> Response:
        staff_type = request.query_params.get("staffType", "All")
        if staff_type not in ("All", "Staff", "EnabledStaff"):
            raise _Refused(400, "staffType must be All, Staff or EnabledStaff")
        with state._lock:
            rows = [c.render() for c in sorted(state._contacts.values(), key=_by_id)
                    if staff_type == "All" or c.staff]
        return listing(request, "/contacts", rows)

    @app.get(API_PREFIX + "/contacts/{contact_id}")
    async def contact(contact_id: str) -> Response:
        with state._lock:
            found = state._contacts.get(contact_id)
        if found is None:
            raise _Refused(404, "Contact not found")
        return _respond(found.render())

    def one_record(record_id: str, kind: str) -> Response:
        with state._lock:
            found = state._records.get(record_id)
            if found is None or found.kind != kind:
                raise _Refused(404, f"{kind} record not found")
            return _respond(state.render_record(found))

    @app.get(API_PREFIX + "/time-records/{record_id}")
    async def time_record(record_id: str) -> Response:
        return one_record(record_id, "Time")

    @app.get(API_PREFIX + "/expense-records/{record_id}")
    async def expense_record(record_id: str) -> Response:
        return one_record(record_id, "Expense")

    @app.get(API_PREFIX + "/webhooks")
    async def list_webhooks(request: Request) -> Response:
        with state._lock:
            rows = [{"id": w.id, "eventName": w.event_name, "callbackUrl": w.callback_url}
                    for w in state._webhooks.values()]
        return listing(request, "/webhooks", rows)

    @app.post(API_PREFIX + "/webhooks")
    async def create_webhook(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise _Refused(415, "the body must be JSON") from None
        event_name, url = (body or {}).get("eventName"), (body or {}).get("callbackUrl")
        allowed = ("CreateContactEvent", "UpdateContactEvent", "CreateMatterEvent", "UpdateMatterEvent",
                   "CreateTaskEvent", "UpdateTaskEvent")
        if event_name not in allowed or not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _Refused(400, f"eventName must be one of {', '.join(allowed)} and callbackUrl a URL")
        with state._lock:
            state._webhook_serial += 1
            made = f"{state._webhook_serial}-A"
            state._webhooks[made] = Webhook(made, event_name, url)
        return Response(status_code=204)

    @app.delete(API_PREFIX + "/webhooks/{webhook_id}")
    async def delete_webhook(webhook_id: str) -> Response:
        with state._lock:
            if state._webhooks.pop(webhook_id, None) is None:
                raise _Refused(404, "Webhook not found")
        return Response(status_code=204)

    return _Edge(app, state)


def _by_id(record: Any) -> tuple[int, str]:
    head = record.id.split("-")[0]
    return (int(head) if head.isdigit() else 0, record.id)


class _Edge:
    """Before every route: the request log, injected faults, the API key (401) and the rate limit (429)."""

    def __init__(self, app: FastAPI, state: FakeMatteroState):
        self.app, self.state = app, state
        self.close_connection: Callable[[tuple[str, int]], bool] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        entry = LoggedRequest(scope["method"], path, scope["query_string"].decode("latin-1"))
        with self.state._lock:
            self.state.log.append(entry)

        async def answer(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        fault = self.state._take_fault(path)
        if fault is not None and fault.kind == "drop":
            entry.fault = "drop"
            client = scope.get("client")
            if self.close_connection is None or client is None or not self.close_connection((client[0], client[1])):
                raise ConnectionResetError("the fake mattero dropped the connection")
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if fault is not None and fault.kind == "status":
            entry.fault = "status"
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            if fault.status >= 502:  # a gateway's HTML page, as a load balancer answers
                await Response(f"<html><body><h1>{fault.status}</h1></body></html>", status_code=fault.status,
                               media_type="text/html", headers=headers)(scope, receive, answer)
            else:
                await _respond({"message": "Too many requests" if fault.status == 429 else "Internal error"},
                               fault.status, headers)(scope, receive, answer)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.state.api_key:
            await _respond({"message": "Unauthorized"}, 401)(scope, receive, answer)
            return
        wait = self.state._admit()
        if wait is not None:
            await _respond({"message": "Too many requests"}, 429, {"Retry-After": str(wait)})(scope, receive, answer)
            return
        if fault is None:
            await self.app(scope, receive, answer)
            return
        entry.fault = "slow"
        held: list[Any] = []

        async def hold(message: Any) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        await asyncio.sleep(fault.seconds)
        for message in held:
            await answer(message)


@dataclass
class FakeMattero:
    """A running fake mattero: its URLs, its state and the organisation's API key."""

    base_url: str
    state: FakeMatteroState = field(repr=False)

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def api_key(self) -> str:
        return self.state.api_key


@contextlib.contextmanager
def running_fake_mattero(*, state: FakeMatteroState | None = None, host: str = "127.0.0.1", port: int = 0,
                         **state_options: Any) -> Iterator[FakeMattero]:
    """Serve a fake mattero from a background thread until the block ends. ``state_options`` go to
    :class:`FakeMatteroState` (``records=500``, ``rate_limit=...``); or pass a ``state``."""
    if state is None:
        state = FakeMatteroState(**state_options)
    elif state_options:
        raise ValueError("pass either a state or state options, not both")
    app = create_app(state)
    with serving(app, host=host, port=port) as (url, server):
        app.close_connection = _connection_closer(server)
        yield FakeMattero(url, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake mattero API on loopback (for demos).")
    parser.add_argument("--port", type=int, default=8768)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", action="store_true", help="serve the bundled sample export's costs instead")
    parser.add_argument("--export", type=Path, help="write the All Costs export of the costs to this file")
    args = parser.parse_args(argv)
    with running_fake_mattero(port=args.port, records=args.records, seed=args.seed) as mattero:
        if args.sample:
            mattero.state.load_export(Path(__file__).resolve().parents[2] / "engine" / "data" / "samples"
                                      / "mattero-all-costs.csv")
        if args.export:
            mattero.state.write_export(args.export)
        print(json.dumps({"base_url": mattero.base_url, "api_url": mattero.api_url, "api_key": mattero.api_key},
                         indent=2))
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
