"""A fake Trackops API on loopback, for tests, benchmarks and the demo: HTTP Basic auth, expense entries with their
detail lines and the records they refer to, a sliding-window rate limit, a server clock of its own, and fault
injection. It serves what Trackops documents (the expense-entries filters and statuses, seed 004) and, where the
documentation is silent, the shapes connectors.md section 9.2 assumes.

Start it::

    with running_fake_trackops(lines=500) as trackops:
        httpx.get(trackops.api_url + "/expense/entries", params={"updated_from": "2026-03-01T00:00:00Z"},
                  auth=(f"{trackops.username}/token", trackops.api_token))

or from a shell, for a demo: ``python -m connectors.trackops.fake --port 8767 --lines 500`` (or ``--demo-month``).

A demo fills it with a small fixed month (``trackops.state.seed_demo_month()``: 23 lines for Acme Corporation) and
configures the source from ``trackops.source_settings("VAR")``, with the token ``trackops.api_token`` in ``VAR``.

The Python API (``trackops.state`` is a :class:`FakeTrackopsState`; safe to call from the test thread while the
server thread answers):

* data: ``seed_entries(n, seed=, start=, days=)`` builds an investigation firm (:data:`INVESTIGATORS`, cases of
  three clients, :data:`FINANCE_ITEMS` such as surveillance hours, mileage, photographs and database searches) and
  expense entries holding ``n`` detail lines in all; ``entries``, ``entry(id)``, ``lines`` read them;
  ``seed_demo_month(month)`` replaces them with the demo's small month;
  ``add_entry``, ``set_status``, ``edit``, ``add_line``, ``edit_line`` and ``remove_line`` change them as a
  Trackops user would (``updated_at`` becomes the server's now). :data:`FIRM_SETTINGS` and
  :func:`timekeepers_csv` are what a firm would configure for this data.
* clock: ``clock`` (unix time; tests can pass a controllable one) and ``skew`` (seconds the server's clock runs
  ahead of it, negative: behind); ``now()`` is the server's time, sent in every answer's ``Date`` header.
* faults: ``fail_next`` (429 with ``Retry-After``, 500 JSON, 502/503 HTML), ``slow_next`` (late answers),
  ``drop_next`` (the connection closes with no answer), ``between_pages`` (change records between two pages of the
  entries list), ``rate_limit``/``rate_window`` (a sliding window per API user), ``renamed`` (names this Trackops
  spells otherwise than assumed, for the entries and their lines); ``log`` holds every request.
* ``reset`` (back to as constructed).

Behaviour worth knowing:

* Lists are live: ``page`` (1-based) and ``per_page`` (default 25, larger than 100 clamped) are an offset into the
  records matching the filters, in id order, computed afresh for every request. An entry edited while a client
  pages may join the list ahead of its position (shifting a record onto the next page again) or, under an
  ``updated_to`` or ``status`` filter, leave it (shifting one past unread). New entries get higher ids; nothing is
  deleted. A page past the end is an empty list.
* Timestamps are whole seconds in UTC (``2026-03-14T21:07:33Z``); every change stamps the server's now, so many
  share one second. Filters are inclusive at both ends; a date-only ``*_to`` means the end of that day. An unknown
  parameter or a malformed value is a 400 ``{"error": ...}``.
* Wrong credentials, or a username without ``/token``: 401 with ``WWW-Authenticate: Basic``. A request over the
  rate limit: 429 ``{"error": "Too Many Requests"}`` with ``Retry-After`` (whole seconds until the window has
  room; refused requests do not count), and no ``X-RateLimit-*`` headers.
* ``rate`` and ``quantity`` are strings holding the stored digits (``"0.655"``, ``"75.5"``); a line's amount is
  rate x quantity and is not sent.
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
import json
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn

API_PREFIX = "/api/v1"
DEFAULT_PER_PAGE, MAX_PER_PAGE = 25, 100
STATUSES = ("pending", "approved", "declined", "committed", "voided")
INVESTIGATORS = (  # staff id, first name, last name, LEDES id for the firm's table, standard hourly rate (USD)
    (5101, "Mara", "Quinlan", "INV5101", "95.00"),
    (5102, "Desmond", "Achebe", "INV5102", "85.00"),
    (5103, "Lena", "Hartmann", "INV5103", "85.00"),
    (5104, "Tomas", "Ferreira", "INV5104", "75.00"),
    (5105, "Priya", "Raman", "INV5105", "75.00"),
    (5106, "Owen", "Gallagher", "INV5106", "65.00"),  # a new hire, not in timekeepers_csv(): UNKNOWN_TIMEKEEPER
)
CLIENTS = ((801, "Acme Corporation"), (802, "Globex plc"), (803, "Initech LLC"))
CASES = (  # id, case number (the law firm's matter id), client, name, tracking category
    (6001, "2026-0042", 801, "Acme v. Borealis Logistics: claimant surveillance", 1),
    (6002, "2026-0017", 801, "In re Acme Product Recall: witness location", 2),
    (6003, "2025-0311", 801, "Acme adv. Delmar Holdings: asset search", 2),
    (6004, "2026-0101", 802, "Globex v. Hooli: background investigation", 2),
    (6005, "2026-0150", 803, "Initech workers' compensation claim 4471", 3),
)
TRACKING_CATEGORIES = ((1, "Insurance Defense"), (2, "Litigation Support"), (3, "Workers' Compensation"))
ITEM_CODES = ((401, "SURV", "Surveillance"), (402, "RPT", "Report preparation"), (403, "MILE", "Mileage"),
              (404, "PHOTO", "Photographs"), (405, "DBS", "Database searches"), (406, "MEAL", "Meals"))
FINANCE_ITEMS = (  # id, name, unit, default rate, item code
    (301, "Surveillance Hours", "hour", "85.00", 401),
    (302, "Report Writing", "hour", "75.00", 402),
    (303, "Mileage", "mile", "0.655", 403),
    (304, "Photographs", "each", "2.50", 404),
    (305, "Database Searches", "each", "35.00", 405),
    (306, "Process Service", "each", "95.00", None),  # not mapped in FIRM_SETTINGS: MISSING_UTBMS_EXPENSE
    (307, "Meals", "each", "0.00", 406),  # the receipt's amount as the rate, quantity 1
)
UNLISTED_ITEM = 399  # a finance item the list does not have (archived): UNKNOWN_FINANCE_ITEM on its line
# What a firm would configure for this data (UTBMS by finance item and by item code, the clients' LEDES ids; Initech
# left out: NO_LEDES_CLIENT_ID).
FIRM_SETTINGS: dict[str, Any] = {
    "currency": "USD",
    "finance_items": {"Surveillance Hours": "L110 A111", "Report Writing": "L110 A103", "Mileage": "E109",
                      "Database Searches": "E106", "Meals": "E111"},
    "item_codes": {"PHOTO": "E124"},
    "ledes_client_ids": {"Acme Corporation": "ACME01", "Globex plc": "GLOBEX"},
}
_FIRST_ENTRY, _FIRST_LINE, _FIRST_NUMBER = 90_001, 500_001, 3_001


def timekeepers_csv(effective_from: str = "2020-01-01") -> str:
    """The firm's timekeeper table for the investigators (all but the new hire), in ``ocgate timekeepers import``
    form: LEDES classification INVSTG, the Trackops staff id, a USD standard rate."""
    rows = ["ledes_id,first_name,last_name,classification,source_system,source_user_id,rate,currency,effective_from"]
    rows += [f"{ledes},{first},{last},INVSTG,trackops,{staff},{rate},USD,{effective_from}"
             for staff, first, last, ledes, rate in INVESTIGATORS[:-1]]
    return "\n".join(rows) + "\n"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _midnight(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * 86400


# -- records -----------------------------------------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class Line:
    """An expense detail line: a finance item, its rate and quantity as stored (decimal strings)."""

    id: int
    finance_item_id: int
    item_code_id: int | None
    rate: str
    quantity: str
    notes: str

    @property
    def amount(self) -> Decimal:
        return Decimal(self.rate) * Decimal(self.quantity)


@dataclass(slots=True, eq=False)
class ExpenseEntry:
    """An expense entry and its lines; ``rendered`` caches its JSON until it changes."""

    id: int
    entry_number: int
    status: str
    user_id: int
    casefile_id: int
    tracking_category_id: int | None
    entry_date: dt.date
    notes: str
    created_at: str
    updated_at: str
    lines: list[Line]
    event_id: int | None = None
    expense_slip_id: int | None = None
    rendered: str | None = None

    def render(self) -> str:
        if self.rendered is None:
            self.rendered = json.dumps({
                "id": self.id, "entry_number": self.entry_number, "status": self.status, "user_id": self.user_id,
                "casefile_id": self.casefile_id, "tracking_category_id": self.tracking_category_id,
                "event_id": self.event_id, "entry_date": self.entry_date.isoformat(),
                "expense_slip_id": self.expense_slip_id, "notes": self.notes, "created_at": self.created_at,
                "updated_at": self.updated_at,
                "expense_details": [{"id": line.id, "finance_item_id": line.finance_item_id,
                                     "item_code_id": line.item_code_id, "rate": line.rate,
                                     "quantity": line.quantity, "notes": line.notes} for line in self.lines]},
                separators=(",", ":"))
        return self.rendered


def _resources() -> dict[str, tuple[str, str, dict[int, dict[str, Any]]]]:
    """The supporting resources: path -> (list envelope, single envelope, records by id)."""
    staff = {i: {"id": i, "first_name": first, "last_name": last, "email": f"{first}.{last}@quinlan-pi.example".lower(),
                 "active": True} for i, first, last, _, _ in INVESTIGATORS}
    items = {i: {"id": i, "name": name, "unit": unit, "default_rate": rate, "item_code_id": code, "active": True}
             for i, name, unit, rate, code in FINANCE_ITEMS}
    return {
        "/clients": ("clients", "client", {i: {"id": i, "name": name} for i, name in CLIENTS}),
        "/cases": ("cases", "case", {i: {"id": i, "case_number": number, "client_id": client, "name": name,
                                         "tracking_category_id": category}
                                     for i, number, client, name, category in CASES}),
        "/staff": ("staff", "staff", staff),
        "/finance/items": ("finance_items", "finance_item", items),
        "/finance/item_codes": ("item_codes", "item_code", {i: {"id": i, "code": code, "name": name}
                                                             for i, code, name in ITEM_CODES}),
        "/tracking_categories": ("tracking_categories", "tracking_category",
                                 {i: {"id": i, "name": name} for i, name in TRACKING_CATEGORIES}),
    }


_WORK = (  # what an entry holds: (weight, entry notes, lines as (finance item, rate choices, quantity range, step))
    (45, "Surveillance of claimant", ((301, ("85.00", "95.00"), (2, 10), "0.25"), (303, ("0.655",), (12, 180), "0.5"),
                                      (304, ("2.50",), (5, 60), "1"), (307, ("18.50", "42.75", "96.40"), (1, 1), "1"))),
    (20, "Investigation report", ((302, ("75.00",), (1, 3), "0.5"),)),
    (20, "Background and asset searches", ((305, ("35.00", "45.00"), (1, 4), "1"),)),
    (10, "Service of process", ((306, ("95.00",), (1, 1), "1"), (303, ("0.655",), (8, 60), "0.5"))),
    (5, "Scene photographs", ((304, ("2.50",), (10, 80), "1"),)),
)
_LINE_NOTES = {301: "Surveillance Hours", 302: "Report writing", 303: "Mileage", 304: "Photographs",
               305: "Database searches", 306: "Process service", 307: "Meal during surveillance",
               UNLISTED_ITEM: "Equipment rental"}
# The demo month: (role, day, staff, case, status, entry notes, lines as (finance item, rate, quantity, line notes)).
_DEMO_MONTH: tuple[tuple[str, int, int, int, str, str, tuple[tuple[int, str, str, str], ...]], ...] = (
    ("surveillance", 3, 5101, 6001, "approved", "Surveillance of claimant at his residence",
     ((301, "95.00", "6.5", ""), (303, "0.655", "84", "Mileage, office to subject's residence and back"),
      (304, "2.50", "24", ""))),
    ("meal_over_cap", 4, 5101, 6001, "approved", "Overnight surveillance of claimant",
     ((301, "95.00", "7.25", ""), (303, "0.655", "62", ""),
      (307, "96.40", "1", "Dinner during overnight surveillance"))),
    ("committed", 5, 5104, 6001, "committed", "Surveillance of claimant at physiotherapy appointment",
     ((301, "75.00", "5", ""), (303, "0.655", "45.5", ""))),
    ("", 9, 5102, 6002, "approved", "Locating former plant supervisor (witness)",
     ((305, "35.00", "3", "Database searches: address history"),)),
    ("", 10, 5102, 6002, "approved", "Witness canvass at former address",
     ((301, "85.00", "4", "Canvass of neighbours"), (303, "0.655", "38", ""))),
    ("", 12, 5103, 6003, "approved", "Asset search on Delmar Holdings directors",
     ((305, "45.00", "5", "Database searches: property and corporate records"),)),
    ("", 13, 5103, 6003, "approved", "Asset search report",
     ((302, "85.00", "2.5", "Report on the directors' assets"),)),
    ("", 17, 5101, 6001, "approved", "Surveillance of claimant at sports club",
     ((301, "95.00", "8", ""), (303, "0.655", "120", ""), (304, "2.50", "36", ""),
      (307, "38.75", "1", "Lunch during surveillance"))),
    ("voided", 18, 5105, 6001, "voided", "Surveillance of claimant (entered twice)",
     ((301, "75.00", "3", ""), (303, "0.655", "30", ""))),
    ("pending", 24, 5105, 6002, "pending", "Surveillance of witness's workplace",
     ((301, "75.00", "4.5", ""), (303, "0.655", "52", ""))),
    ("report", 26, 5101, 6001, "approved", "Surveillance report, 3 to 17 March",
     ((302, "95.00", "3", "Surveillance report with photographs"),)),
    ("", 27, 5104, 6003, "approved", "Follow-up database searches",
     ((305, "35.00", "2", ""),)),
)
_STATUS_WEIGHTS = ((80, "approved"), (8, "committed"), (7, "pending"), (3, "declined"), (2, "voided"))


def _pick(rng: random.Random, weighted: tuple[tuple[int, Any], ...]) -> Any:
    draw = rng.randrange(sum(weight for weight, *_ in weighted))
    for weight, *value in weighted:
        if draw < weight:
            return value[0] if len(value) == 1 else value
        draw -= weight
    raise AssertionError("unreachable")


def _seed(n: int, rng: random.Random, start: dt.date, days: int) -> list[ExpenseEntry]:
    """Entries holding ``n`` detail lines in all, dated from ``start`` over ``days``, ids rising with creation."""
    item_codes = {i: code for i, _, _, _, code in FINANCE_ITEMS}
    cases = [case[0] for case in CASES]
    case_weights = (30, 25, 20, 15, 10)
    made: list[tuple[int, ExpenseEntry]] = []
    lines = 0
    while lines < n:
        notes, plan = _pick(rng, _WORK)
        day = rng.randrange(days)
        created = (_midnight(start) + day * 86400 + 17 * 3600 + rng.randrange(6 * 3600)
                   + 86400 * rng.choice((0, 1, 1, 3)))  # recorded that evening or a few days later
        updated = created + rng.randrange(3600, 4 * 86400)  # approved (or otherwise handled) later
        kept: list[Line] = []
        for position, (item, rates, (low, high), step) in enumerate(plan):
            if (position and rng.random() < (0.8 if item == 307 else 0.35)) or lines + len(kept) == n:
                continue
            steps = int((Decimal(high) - Decimal(low)) / Decimal(step))
            quantity = Decimal(low) + Decimal(step) * rng.randint(0, steps)
            kept.append(Line(0, item, item_codes[item], rng.choice(rates), str(quantity), _LINE_NOTES[item]))
        entry = ExpenseEntry(0, 0, _pick(rng, _STATUS_WEIGHTS), rng.choice(INVESTIGATORS)[0],
                             rng.choices(cases, case_weights)[0], None, start + dt.timedelta(days=day),
                             f"{notes}, {(start + dt.timedelta(days=day)):%d %b %Y}", _stamp(created),
                             _stamp(updated), kept)
        made.append((created, entry))
        lines += len(kept)
    made.sort(key=lambda pair: pair[0])
    if len(made) > 2:  # one line whose finance item the list no longer has
        unlisted = made[len(made) // 3][1].lines[0]
        unlisted.finance_item_id, unlisted.item_code_id = UNLISTED_ITEM, None
        unlisted.notes = _LINE_NOTES[UNLISTED_ITEM]
    case_categories = {case[0]: case[4] for case in CASES}
    line_id = _FIRST_LINE
    for number, (_, entry) in enumerate(made):
        entry.id, entry.entry_number = _FIRST_ENTRY + 3 * number + rng.randrange(3), _FIRST_NUMBER + number
        entry.tracking_category_id = case_categories[entry.casefile_id]
        for line in entry.lines:
            line.id, line_id = line_id, line_id + 1
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
    pages: int  # entries list pages still to be served before the action runs
    action: Callable[[FakeTrackopsState], Any]


class _Answer(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


_EDITABLE = {"status", "user_id", "casefile_id", "tracking_category_id", "entry_date", "notes", "event_id",
             "expense_slip_id"}
_LINE_EDITABLE = {"finance_item_id", "item_code_id", "rate", "quantity", "notes"}


class FakeTrackopsState:
    """The fake Trackops' configuration, data and test controls; safe to use from the test thread while the server
    thread answers.

    Configuration (plain attributes, may be changed at any time): ``username`` and ``api_token`` (the API user's
    credentials), ``rate_limit`` (requests per ``rate_window`` seconds, a sliding window; None: unlimited),
    ``clock`` (unix time) and ``skew`` (seconds the server's clock is ahead of ``clock``).
    """

    def __init__(self, *, lines: int = 0, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31,
                 username: str = "ocgate-api", api_token: str = "fake-trackops-token", rate_limit: int | None = None,
                 rate_window: float = 60.0, clock: Callable[[], float] = time.time, skew: float = 0.0):
        self.username, self.api_token = username, api_token
        self.rate_limit, self.rate_window, self.clock, self.skew = rate_limit, rate_window, clock, skew
        # Names this Trackops spells otherwise than connectors.md 9.2 assumes: assumed name -> the name sent, for the
        # entries' envelopes (expense_entries, expense_entry), fields and detail lines' fields.
        self.renamed: dict[str, str] = {}
        self._seeding = {"n": lines, "seed": seed, "start": start, "days": days}
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Seed the data as constructed and forget faults, hooks, the rate window and the log."""
        with self._lock:
            self._faults: list[_Fault] = []
            self._page_hooks: list[_PageHook] = []
            self._window: deque[float] = deque()
            self.log: list[LoggedRequest] = []
            self.renamed = {}
            self.seed_entries(**self._seeding)

    # -- data ----------------------------------------------------------------------------------------------------

    def seed_entries(self, n: int, *, seed: int = 7, start: dt.date = dt.date(2026, 3, 1), days: int = 31) -> None:
        """Replace the data with a deterministic firm and expense entries holding ``n`` detail lines in all (about
        1.6 an entry), dated from ``start`` over ``days``: about 80% approved, 8% committed, 7% pending, 3% declined
        and 2% voided; surveillance with mileage and photographs, reports, database searches, process service. The
        first line of the entry a third of the way in names a finance item the list lacks."""
        self._install(_seed(n, random.Random(seed), start, days), start)

    def seed_demo_month(self, month: dt.date = dt.date(2026, 3, 1)) -> dict[str, ExpenseEntry]:
        """Replace the data with a small, fixed month of an investigation firm's work for Acme Corporation (the
        demo's client): 12 expense entries with 23 detail lines from the first of ``month`` on, all mapped by
        :data:`FIRM_SETTINGS` and all by investigators in :func:`timekeepers_csv`. Surveillance hours (time) with
        mileage, photographs and meals, witness location, asset searches and reports; one dinner at 96.40, over a
        typical 75 meal cap; one entry voided (entered twice) and one still pending. Returns the entries worth
        pointing at by role: ``surveillance``, ``meal_over_cap``, ``committed``, ``voided``, ``pending``,
        ``report``."""
        made: dict[str, ExpenseEntry] = {}
        entries = []
        categories = {case[0]: case[4] for case in CASES}
        item_codes = {i: code for i, _, _, _, code in FINANCE_ITEMS}
        for number, (role, day, staff, case, status, notes, lines) in enumerate(_DEMO_MONTH):
            date = month.replace(day=day)
            created = _midnight(date) + 19 * 3600 + number * 60  # recorded that evening
            updated = created + 86400 + (10 * 86400 if status == "voided" else 0)  # approved next day; voided later
            entry = ExpenseEntry(_FIRST_ENTRY + number, _FIRST_NUMBER + number, status, staff, case, categories[case],
                                 date, f"{notes}, {date:%d %b %Y}", _stamp(created), _stamp(updated), [])
            entry.lines = [Line(0, item, item_codes[item], rate, quantity, line_notes or _LINE_NOTES[item])
                           for item, rate, quantity, line_notes in lines]
            entries.append(entry)
            if role:
                made[role] = entry
        line_id = _FIRST_LINE
        for entry in entries:
            for line in entry.lines:
                line.id, line_id = line_id, line_id + 1
        self._install(entries, month)
        return made

    def _install(self, made: list[ExpenseEntry], start: dt.date) -> None:
        with self._lock:
            self._resources = _resources()
            self._entries = made
            self._ids = [entry.id for entry in made]
            self._next_line = max((line.id for entry in made for line in entry.lines), default=_FIRST_LINE - 1) + 1
            self._next_number = _FIRST_NUMBER + len(made)
            self._newest = max((entry.updated_at for entry in made), default=_stamp(_midnight(start)))
            self._lists: dict[Any, list[ExpenseEntry]] = {}

    @property
    def entries(self) -> list[ExpenseEntry]:
        """Every expense entry, in id order."""
        with self._lock:
            return list(self._entries)

    @property
    def lines(self) -> list[tuple[ExpenseEntry, Line]]:
        """Every detail line with its entry, in id order."""
        with self._lock:
            return [(entry, line) for entry in self._entries for line in entry.lines]

    def entry(self, entry_id: int) -> ExpenseEntry:
        with self._lock:
            at = bisect.bisect_left(self._ids, entry_id)
            if at == len(self._ids) or self._ids[at] != entry_id:
                raise KeyError(f"no expense entry {entry_id}")
            return self._entries[at]

    def now(self) -> str:
        """The server's time, as Trackops writes it; never earlier than a timestamp it holds."""
        with self._lock:
            self._newest = max(self._newest, _stamp(self.clock() + self.skew))
            return self._newest

    def add_entry(self, *, user_id: int, casefile_id: int, entry_date: dt.date, lines: list[tuple[int, str, str]],
                  status: str = "approved", notes: str = "") -> ExpenseEntry:
        """A new entry (the next id and entry number); ``lines`` are (finance item id, rate, quantity)."""
        with self._lock:
            stamp = self.now()
            entry = ExpenseEntry(self._ids[-1] + 1 if self._ids else _FIRST_ENTRY, self._next_number, status,
                                 user_id, casefile_id, None, entry_date, notes, stamp, stamp, [])
            self._next_number += 1
            for item, rate, quantity in lines:
                entry.lines.append(self._new_line(item, rate, quantity, _LINE_NOTES.get(item, "")))
            self._entries.append(entry)
            self._ids.append(entry.id)
            self._lists.clear()
        return entry

    def set_status(self, entry_id: int, status: str) -> ExpenseEntry:
        """Approve, decline, commit, void or send back to pending."""
        return self.edit(entry_id, status=status)

    def edit(self, entry_id: int, **changes: Any) -> ExpenseEntry:
        """Change an entry's fields (``status=``, ``notes=``, ``entry_date=``, ``casefile_id=``, ...)."""
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise TypeError(f"cannot edit {', '.join(sorted(unknown))} (editable: {', '.join(sorted(_EDITABLE))})")
        if changes.get("status", "approved") not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        with self._lock:
            entry = self.entry(entry_id)
            for name, value in changes.items():
                setattr(entry, name, value)
            self._touch(entry)
        return entry

    def add_line(self, entry_id: int, finance_item_id: int, rate: str, quantity: str, notes: str = "") -> Line:
        with self._lock:
            entry = self.entry(entry_id)
            line = self._new_line(finance_item_id, rate, quantity, notes or _LINE_NOTES.get(finance_item_id, ""))
            entry.lines.append(line)
            self._touch(entry)
        return line

    def edit_line(self, entry_id: int, line_id: int, **changes: Any) -> Line:
        """Change a line's ``rate``, ``quantity`` (decimal strings), ``notes``, ``finance_item_id`` or
        ``item_code_id``."""
        unknown = set(changes) - _LINE_EDITABLE
        if unknown:
            raise TypeError(f"cannot edit {', '.join(sorted(unknown))} (editable: {', '.join(sorted(_LINE_EDITABLE))})")
        with self._lock:
            entry = self.entry(entry_id)
            line = next((line for line in entry.lines if line.id == line_id), None)
            if line is None:
                raise KeyError(f"no line {line_id} on entry {entry_id}")
            for name, value in changes.items():
                setattr(line, name, value)
            self._touch(entry)
        return line

    def remove_line(self, entry_id: int, line_id: int) -> None:
        with self._lock:
            entry = self.entry(entry_id)
            kept = [line for line in entry.lines if line.id != line_id]
            if len(kept) == len(entry.lines):
                raise KeyError(f"no line {line_id} on entry {entry_id}")
            entry.lines = kept
            self._touch(entry)

    def _new_line(self, item: int, rate: str, quantity: str, notes: str) -> Line:
        found = self._resources["/finance/items"][2].get(item, {})
        line = Line(self._next_line, item, found.get("item_code_id"), rate, quantity, notes)
        self._next_line += 1
        return line

    def _touch(self, entry: ExpenseEntry) -> None:
        entry.updated_at = self.now()
        entry.rendered = None
        self._lists.clear()

    # -- faults and hooks ----------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, path: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next ``n`` requests (whose path contains ``path``, when given) with ``status``: 429 (with
        ``Retry-After`` when given), 500 JSON, or 502/503 HTML as a load balancer does; they are not handled."""
        if status not in (429, 500, 502, 503):
            raise ValueError("status must be 429, 500, 502 or 503")
        self._add_fault(_Fault("status", n, path, status=status, retry_after=retry_after))

    def slow_next(self, n: int = 1, seconds: float = 5.0, *, path: str | None = None) -> None:
        """Handle the next ``n`` requests but answer only after ``seconds`` (to make clients time out)."""
        self._add_fault(_Fault("slow", n, path, seconds=seconds))

    def drop_next(self, n: int = 1, *, path: str | None = None) -> None:
        """Close the connection of the next ``n`` requests without an answer (nothing is handled)."""
        self._add_fault(_Fault("drop", n, path))

    def between_pages(self, after: int, action: Callable[[FakeTrackopsState], Any]) -> None:
        """Run ``action(state)`` once, right after the ``after``-th entries list page from now has been built and
        before it is sent: to change, add or re-status entries between two pages of a pull."""
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

    def _entries_page_served(self) -> None:
        with self._lock:
            for hook in self._page_hooks:
                hook.pages -= 1
            due = [hook.action for hook in self._page_hooks if hook.pages <= 0]
            self._page_hooks = [hook for hook in self._page_hooks if hook.pages > 0]
        for action in due:
            action(self)

    def _admit(self) -> int | None:
        """Count a request against the API user's sliding window; the ``Retry-After`` seconds when it is full
        (that request is refused and not counted)."""
        if self.rate_limit is None:
            return None
        now = self.clock()
        with self._lock:
            while self._window and self._window[0] <= now - self.rate_window:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                return max(1, math.ceil(self._window[0] + self.rate_window - now))
            self._window.append(now)
        return None

    def _record(self, method: str, path: str, query: str, headers: dict[str, str]) -> LoggedRequest:
        entry = LoggedRequest(method, path, query, headers)
        with self._lock:
            self.log.append(entry)
        return entry

    # -- answering -----------------------------------------------------------------------------------------------

    def _authenticated(self, headers: dict[str, str]) -> bool:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        name, slash, kind = user.rpartition("/")
        return bool(slash) and kind == "token" and name == self.username and password == self.api_token

    def _list_entries(self, query: dict[str, str]) -> list[ExpenseEntry]:
        """The entries matching the filters, in id order (remembered until the data changes: every page asks)."""
        key = tuple(sorted(query.items()))
        with self._lock:
            found = self._lists.get(key)
            if found is None:
                tests = [_entry_filter(name, value) for name, value in query.items()]
                found = self._lists[key] = [e for e in self._entries if all(test(e) for test in tests)]
            return found

    def _name(self, assumed: str) -> str:
        return self.renamed.get(assumed, assumed)

    def _spelled(self, rendered: str) -> str:
        """An entry's JSON with the names in ``renamed`` spelled as this Trackops does."""
        if not self.renamed:
            return rendered
        return json.dumps(_renamed(json.loads(rendered), self.renamed), separators=(",", ":"))

    def answer(self, method: str, path: str, params: list[tuple[str, str]], headers: dict[str, str],
               url: str) -> tuple[int, str, dict[str, str]]:
        """Status, JSON body and extra headers for one request, past the faults."""
        if not path.startswith(API_PREFIX + "/"):
            raise _Answer(404, "Not Found")
        if not self._authenticated(headers):
            raise _Answer(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="Trackops API"'})
        retry_after = self._admit()
        if retry_after is not None:
            raise _Answer(429, "Too Many Requests", {"Retry-After": str(retry_after)})
        if method != "GET":
            raise _Answer(405, "Method Not Allowed")
        route, _, tail = path.removeprefix(API_PREFIX).rpartition("/")
        query = dict(params)
        if len(query) != len(params):
            raise _Answer(400, "a parameter is given twice")
        if tail.isdigit() and route:  # a single record
            if set(query):
                raise _Answer(400, f"unknown parameter {sorted(query)[0]!r}")
            if route == "/expense/entries":
                try:
                    text = self.entry(int(tail)).render()
                except KeyError:
                    raise _Answer(404, "Not Found") from None
                return 200, f'{{"{self._name("expense_entry")}":' + self._spelled(text) + "}", {}
            if route in self._resources:
                _, singular, records = self._resources[route]
                if int(tail) in records:
                    return 200, json.dumps({singular: records[int(tail)]}), {}
            raise _Answer(404, "Not Found")
        collection = route + "/" + tail
        page, per_page = _paging(query)
        if collection == "/expense/entries":
            matching = self._list_entries(query)
            body = [self._spelled(entry.render()) for entry in matching[(page - 1) * per_page:page * per_page]]
            plural = self._name("expense_entries")
        elif collection in self._resources:
            if query:
                raise _Answer(400, f"unknown parameter {sorted(query)[0]!r}")
            plural, _, records = self._resources[collection]
            matching = [records[i] for i in sorted(records)]
            body = [json.dumps(r) for r in matching[(page - 1) * per_page:page * per_page]]
        else:
            raise _Answer(404, "Not Found")
        pages = max(1, math.ceil(len(matching) / per_page))
        meta = {"current_page": page, "per_page": per_page, "total_pages": pages, "total_count": len(matching),
                "next_page": page + 1 if page < pages else None, "prev_page": page - 1 if page > 1 else None}
        text = f'{{"{plural}":[' + ",".join(body) + '],"meta":' + json.dumps(meta) + "}"
        if collection == "/expense/entries":
            self._entries_page_served()
        return 200, text, {"Link": _links(url, params, page, pages)}


def _renamed(data: Any, names: dict[str, str]) -> Any:
    if isinstance(data, dict):
        return {names.get(key, key): _renamed(value, names) for key, value in data.items()}
    if isinstance(data, list):
        return [_renamed(value, names) for value in data]
    return data


def _paging(query: dict[str, str]) -> tuple[int, int]:
    """``page`` and ``per_page`` taken out of the query: a 400 for non-numbers, ``per_page`` clamped to 100."""
    page, per_page = query.pop("page", "1"), query.pop("per_page", str(DEFAULT_PER_PAGE))
    if not (page.isdigit() and int(page) >= 1 and per_page.isdigit() and int(per_page) >= 1):
        raise _Answer(400, "page and per_page must be positive whole numbers")
    return int(page), min(int(per_page), MAX_PER_PAGE)


def _links(url: str, params: list[tuple[str, str]], page: int, pages: int) -> str:
    """The RFC 8288 ``Link`` header: first, prev, next and last pages."""
    rest = [(k, v) for k, v in params if k != "page"]
    targets = {"first": 1, "prev": page - 1 if page > 1 else None, "next": page + 1 if page < pages else None,
               "last": pages}
    return ", ".join(f'<{url}?{urlencode([*rest, ("page", str(n))])}>; rel="{rel}"'
                     for rel, n in targets.items() if n is not None)


_INT_FILTERS = {"id": "id", "expense_slip": "expense_slip_id", "user": "user_id", "case": "casefile_id",
                "tracking_category": "tracking_category_id", "entry_number": "entry_number"}
_DATE_FILTERS = {"date_from": True, "from": True, "date_to": False, "to": False}  # on or after: True
_STAMP_FILTERS = {"created_from": ("created_at", True), "created_to": ("created_at", False),
                  "updated_from": ("updated_at", True), "updated_to": ("updated_at", False)}


def _entry_filter(name: str, value: str) -> Callable[[ExpenseEntry], bool]:
    """One documented filter of the entries list as a test; a 400 for an unknown one or a malformed value."""
    key = name.lower()
    if key in _INT_FILTERS:
        if not value.isdigit():
            raise _Answer(400, f"{name} must be a whole number")
        attribute, number = _INT_FILTERS[key], int(value)
        return lambda entry: getattr(entry, attribute) == number
    if key == "status":
        if value not in STATUSES:
            raise _Answer(400, f"status must be one of {', '.join(STATUSES)}")
        return lambda entry: entry.status == value
    if key in _DATE_FILTERS:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise _Answer(400, f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None
        if _DATE_FILTERS[key]:
            return lambda entry: entry.entry_date >= day
        return lambda entry: entry.entry_date <= day
    if key in _STAMP_FILTERS:
        attribute, earliest = _STAMP_FILTERS[key]
        bound = _bound(name, value, earliest)
        if earliest:
            return lambda entry: getattr(entry, attribute) >= bound
        return lambda entry: getattr(entry, attribute) <= bound
    raise _Answer(400, f"unknown parameter {name!r}")


def _bound(name: str, value: str, earliest: bool) -> str:
    """A timestamp filter's value as a UTC stamp (whole seconds); a date alone is the start (``*_from``) or the
    end (``*_to``) of that day."""
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return f"{day.isoformat()}T00:00:00Z" if earliest else f"{day.isoformat()}T23:59:59Z"
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Answer(400, f"{name}: {value!r} is not a timestamp (YYYY-MM-DDTHH:MM:SSZ, in UTC)") from None
    return _stamp(math.floor((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()))


# -- the server --------------------------------------------------------------------------------------------------

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_HTML = "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center></body></html>"
_REASONS = {500: "Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}


class App:
    """The ASGI application: the request log and injected faults first (as a load balancer in front of the API
    would), then :meth:`FakeTrackopsState.answer`; every answer carries the server's ``Date``."""

    def __init__(self, state: FakeTrackopsState):
        self.state = state
        # Set by the server runner: closes the connection of the client at (host, port); True when it did.
        self.close_connection: Callable[[tuple[str, int]], bool] | None = None

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        query = scope["query_string"].decode("latin-1")
        logged = self.state._record(scope["method"], scope["path"], query, headers)
        fault = self.state._take_fault(scope["path"])
        if fault is not None and fault.kind == "drop":
            logged.fault = "drop"
            client = scope.get("client")
            if self.close_connection is None or client is None or not self.close_connection((client[0], client[1])):
                raise ConnectionResetError("the fake Trackops dropped the connection")
            return
        content_type = "application/json; charset=utf-8"
        extra: dict[str, str] = {}
        if fault is not None and fault.kind == "status":
            logged.fault, status = "status", fault.status
            if status == 429:
                body = json.dumps({"error": "Too Many Requests"})
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            elif status == 500:
                body = json.dumps({"error": "Internal Server Error"})
            else:
                body, content_type = _HTML.format(_REASONS[status]), "text/html"
        else:
            url = f"http://{headers.get('host', '127.0.0.1')}{scope['path']}"
            try:
                status, body, extra = self.state.answer(scope["method"], scope["path"],
                                                        parse_qsl(query, keep_blank_values=True), headers, url)
            except _Answer as refused:
                status, body, extra = refused.status, json.dumps({"error": refused.message}), refused.headers
        if fault is not None and fault.kind == "slow":
            logged.fault = "slow"
            await asyncio.sleep(fault.seconds)
        date = email.utils.formatdate(dt.datetime.fromisoformat(self.state.now()).timestamp(), usegmt=True)
        raw = [(b"content-type", content_type.encode()), (b"date", date.encode()),
               *((name.lower().encode(), value.encode()) for name, value in extra.items())]
        logged.status = status
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body.encode()})


@contextlib.contextmanager
def _serving(app: App, host: str, port: int) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve ``app`` from a background thread (as ``connectors.clio.fake.serving`` does, but without uvicorn's own
    ``Date`` header: the fake's clock writes it)."""
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets whose proto says TCP (else ~40 ms per answer).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="critical", access_log=False,
                                           lifespan="off", date_header=False, server_header=False,
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-trackops", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake Trackops did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def _connection_closer(server: uvicorn.Server) -> Callable[[tuple[str, int]], bool]:
    """Close a client's connection with nothing sent (ASGI cannot: this reaches into uvicorn's connections)."""

    def close(client: tuple[str, int]) -> bool:
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.close()
                return True
        return False

    return close


@dataclass
class FakeTrackops:
    """A running fake Trackops: its URLs, its state and the API user's credentials."""

    base_url: str  # http://127.0.0.1:PORT
    state: FakeTrackopsState = field(repr=False)

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def username(self) -> str:
        return self.state.username

    @property
    def api_token(self) -> str:
        return self.state.api_token

    def source_settings(self, api_token_env: str, *, subdomain: str = "demo") -> dict[str, Any]:
        """The settings of a Trackops source reading this fake, as ``registry.configure`` takes them (with
        :data:`FIRM_SETTINGS`); the API token goes in the environment variable ``api_token_env``."""
        return {"subdomain": subdomain, "base_url": self.base_url, "username": self.username,
                "api_token_env": api_token_env, **FIRM_SETTINGS}


@contextlib.contextmanager
def running_fake_trackops(*, state: FakeTrackopsState | None = None, host: str = "127.0.0.1", port: int = 0,
                          **state_options: Any) -> Iterator[FakeTrackops]:
    """Serve a fake Trackops from a background thread until the block ends. ``state_options`` go to
    :class:`FakeTrackopsState` (``lines=500``, ``rate_limit=60``, ``skew=-90``, ``clock=...``); or pass a
    ``state``."""
    if state is None:
        state = FakeTrackopsState(**state_options)
    elif state_options:
        raise ValueError("pass either a state or state options, not both")
    app = App(state)
    with _serving(app, host, port) as (url, server):
        app.close_connection = _connection_closer(server)
        yield FakeTrackops(url, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Trackops API on loopback (for demos and benchmarks).")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--lines", type=int, default=500, help="expense detail lines to seed (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 3, 1),
                        help="the first entry date (default 2026-03-01)")
    parser.add_argument("--days", type=int, default=31, help="entry dates spread over this many days (default 31)")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per window (default: none)")
    parser.add_argument("--skew", type=float, default=0.0, help="seconds the server's clock runs ahead (default 0)")
    parser.add_argument("--demo-month", action="store_true",
                        help="serve the small demo month (seed_demo_month, from --start) instead of --lines")
    args = parser.parse_args(argv)
    with running_fake_trackops(port=args.port, lines=0 if args.demo_month else args.lines, seed=args.seed,
                               start=args.start, days=args.days, rate_limit=args.rate_limit,
                               skew=args.skew) as trackops:
        if args.demo_month:
            trackops.state.seed_demo_month(args.start.replace(day=1))
        print(json.dumps({"base_url": trackops.base_url, "api_url": trackops.api_url, "username": trackops.username,
                          "api_token": trackops.api_token, "subdomain": "fake",
                          **FIRM_SETTINGS}, indent=2))
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
