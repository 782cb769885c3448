"""Trackops (case management for private-investigation firms, ``{subdomain}.viewcases.com``): the expense entries
its investigators record, one canonical entry per expense detail line.

Trackops documents the expense-entries endpoint (filters, statuses, the request body) and HTTP Basic auth; the
answers' shapes, paging and rate limits are not published. Where the documentation is silent this module follows
the shapes connectors.md section 9.2 assumes, marked ``[assumed]`` here, in the fake and in the docs; the names it
reads are all in :data:`MAPPING`, and a firm whose Trackops spells one differently corrects it with the
``field_names`` setting, without a change of code.

* **Auth:** username ``{username}/token``, password the company API token, read from the environment variable the
  settings name. Trackops issues nothing to keep: ``connect`` only checks the credentials.
* **The cursor.** ``GET /expense/entries`` is live and offset-paged in id order: nothing is frozen between pages
  [assumed]. A walk filtered only by ``updated_from`` cannot skip an entry, because ``updated_at`` only grows and
  nothing is deleted, so an entry can join the filtered list while it is paged but never leave it; joining ahead of
  the walk's position shifts a record onto the next page again, which is skipped by its id and ``updated_at``. (An
  ``updated_to`` bound or a ``status=`` filter would let entries leave and others slip past unread: neither is
  used.) Each pull is dated by the server's clock, from the ``Date`` header of its first answer, received before
  the first page is asked for: an entry changed after that has a later or equal ``updated_at`` (the filters are
  inclusive), so the next pull, from that time less ``overlap_minutes`` (for a change committed late), takes it
  whatever the difference between the two clocks. Mid-pull the cursor holds the next page number: a killed sync
  resumes there and at worst reads a record again, which ingest skips (the version is a digest of the line).
* **What is ingested.** Only ``approved`` and ``committed`` entries are billable. Their lines ocgate holds are
  withdrawn, through ingest and so in the audit trail with the status as the reason, when the entry is later
  ``voided`` or sent back to ``pending`` or ``declined``, and a line no longer on the entry is withdrawn too. To
  know which lines it holds, the source reads the store once per pull (:class:`Held`): Trackops issues no tokens,
  so of the credential store it is opened with it uses only the sessions.
* **Rate limit:** a sliding 60-second window per API user, a 429 with ``Retry-After`` and no ``X-RateLimit-*``
  headers [assumed]. Every request waits out the last ``Retry-After`` (a request sent earlier is refused again),
  and ``requests_per_minute``, when set, paces requests so the window is never exceeded. 5xx (500 JSON, 502/503
  HTML from a load balancer), timeouts and dropped connections are retried with jittered backoff (tenacity).
* **No webhooks:** syncs run on the worker's ``sync_interval_minutes``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import httpx
import tenacity
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.http import Retryable, RetryWait, json_object, retry_after
from connectors.sources.base import (
    Delivery,
    NotConnected,
    Page,
    SourceError,
    SourceUnavailable,
    Subscription,
    TokenStore,
    Unchanged,
    WebhookRejected,
)
from engine.codes import code_kind
from engine.model import Entry, EntryKind, EntryStatus, FeeBasis
from engine.store.models import EntryRow, EntryState
from engine.workflows.sources import CredentialStore

log = logging.getLogger("ocgate.trackops")

KIND = "trackops"
HOST = "https://{subdomain}.viewcases.com"
API_PREFIX = "/api/v1"
ENTRIES = "/expense/entries"
PER_PAGE = 100  # the most a page holds [assumed]: larger values are clamped
LOOKUP_ONE_BY_ONE = 2  # unknown ids of one kind on a page fetched one by one; more and the whole list is read once
MAX_RETRY_AFTER = 300.0  # a longer Retry-After stops the sync, to resume later, rather than wait that long
CONNECTOR_VERSION = "ocgate-trackops/1"
BILLABLE = frozenset({"approved", "committed"})
HOUR_UNITS = frozenset({"hour", "hours"})
DEFAULT_TOKEN_ENV = "OCGATE_TRACKOPS_API_TOKEN"
SETTINGS = {
    "subdomain": "the firm's Trackops subdomain ({subdomain}.viewcases.com); the tenant of its entries",
    "base_url": "instead of the subdomain's host: any URL, e.g. a test server (the subdomain still names the tenant)",
    "username": "the API user's username (a Full Access employee; ocgate sends {username}/token)",
    "api_token_env": f"the environment variable holding the company API token (default {DEFAULT_TOKEN_ENV})",
    "currency": "the ISO 4217 currency of the firm's Trackops amounts (Trackops sends none)",
    "finance_items": "finance item (id or name) -> UTBMS codes and/or time|expense, e.g. "
                     '{"Surveillance Hours": "L110 A111", "Mileage": "E109"}',
    "item_codes": "item code (code or id) -> UTBMS codes and/or time|expense; wins over finance_items",
    "ledes_client_ids": "Trackops client (id or name) -> the client's LEDES client id",
    "requests_per_minute": "the API user's rate limit: requests are paced to stay under it (default: unpaced)",
    "overlap_minutes": "how far back each incremental pull reaches before the last one began (default 5)",
    "sync_interval_minutes": "the worker syncs the source this often (default: only when asked)",
    "timeout": "seconds before a request is given up and retried (default 30)",
    "max_attempts": "tries per request before the sync stops, to resume later (default 6)",
    "field_names": "corrections to the Trackops names ocgate assumes, by ocgate's name for each: "
                   '{"source_updated_at": "modified_at", "case record": "casefile"}',
}
SECRET_SETTINGS = ("api_token", "token", "password", "api_key", "secret")
_SUBDOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# -- the mapping -------------------------------------------------------------------------------------------------
# Every Trackops name this module reads, in one table: what ocgate makes of it (a canonical field, or its use), the
# record and field it is read from, and whether the name is assumed (connectors.md 9.2: the answers' shapes are not
# published; the request fields of seed 004 are). A firm corrects a name with the ``field_names`` setting (ocgate's
# name -> Trackops' name); a correction every firm needs belongs here.
MAPPING: tuple[tuple[str, str, str, bool], ...] = (
    # use                       record   field                assumed
    ("source_id",               "entry", "id",                False),
    ("source_line_id",          "line",  "id",                True),   # every detail line has an id
    ("source_created_at",       "entry", "created_at",        True),
    ("source_updated_at",       "entry", "updated_at",        True),   # also what updated_from filters on
    ("source_status",           "entry", "status",            False),  # only approved and committed are billed
    ("work_date",               "entry", "entry_date",        False),  # a local work date, never converted
    ("timekeeper_source_id",    "entry", "user_id",           False),  # the staff member: /staff/{id}
    ("timekeeper_first_name",   "staff", "first_name",        True),
    ("timekeeper_last_name",    "staff", "last_name",         True),
    ("matter_source_id",        "entry", "casefile_id",       False),  # the case: /cases/{id}
    ("law_firm_matter_id",      "case",  "case_number",       True),
    ("matter_name",             "case",  "name",              True),
    ("client_source_id",        "case",  "client_id",         True),   # the client: /clients/{id}
    ("client_name",             "client", "name",             True),
    ("lines",                   "entry", "expense_details",   False),  # one canonical entry per line
    ("rate",                    "line",  "rate",              False),  # a decimal string [assumed]
    ("quantity",                "line",  "quantity",          False),  # hours on a time line; amount = rate x it
    ("finance item",            "line",  "finance_item_id",   False),  # /finance/items/{id}
    ("item code",               "line",  "item_code_id",      False),  # /finance/item_codes/{id}
    ("default item code",       "item",  "item_code_id",      True),   # the item's code when the line has none
    ("source_task_label",       "item",  "name",              True),
    ("unit_of_measure",         "item",  "unit",              True),   # "hour": a time line unless mapped
    ("source_activity_label",   "code",  "code",              True),
    ("narrative",               "entry", "notes",             False),  # the entry's notes, then the line's
    ("line notes",              "line",  "notes",             False),
    ("paging: next page",       "meta",  "next_page",         True),   # null on the last page
    ("paging: total",           "meta",  "total_count",       True),
    # The envelopes answers are wrapped in: a list, and one record.
    ("entries list",            "answer", "expense_entries",  True),
    ("entry record",            "answer", "expense_entry",    True),
    ("staff list",              "answer", "staff",            True),
    ("staff record",            "answer", "staff",            True),
    ("case list",               "answer", "cases",            True),
    ("case record",             "answer", "case",             True),
    ("client list",             "answer", "clients",          True),
    ("client record",           "answer", "client",           True),
    ("item list",               "answer", "finance_items",    True),
    ("item record",             "answer", "finance_item",     True),
    ("code list",               "answer", "item_codes",       True),
    ("code record",             "answer", "item_code",        True),
)
FIELD = {use: name for use, _, name, _ in MAPPING}
REQUIRED_FIELDS = ("source_id", "source_updated_at", "source_status", "lines")  # on every expense entry
# The supporting resources' paths under /api/v1 [assumed, but as documented for /clients].
RESOURCES = {"staff": "/staff", "case": "/cases", "client": "/clients", "item": "/finance/items",
             "code": "/finance/item_codes"}


def field_names(settings: Mapping[str, Any]) -> dict[str, str]:
    """:data:`FIELD` with the firm's corrections (the ``field_names`` setting) applied."""
    return {**FIELD, **(settings.get("field_names") or {})}

# Data-quality flags this source raises besides the shared ones (NO_MATTER, NO_LEDES_CLIENT_ID, NO_CURRENCY,
# MISSING_UTBMS_TASK, MISSING_UTBMS_ACTIVITY, MISSING_UTBMS_EXPENSE).
UNKNOWN_FINANCE_ITEM = "UNKNOWN_FINANCE_ITEM"  # the line's finance item is not in Trackops' list: kind unknown
UNIT_NOT_HOURS = "UNIT_NOT_HOURS"  # a line mapped as time whose finance item counts in another unit
INVALID_AMOUNT = "INVALID_AMOUNT"  # the line's rate or quantity is missing or not a number: no amount


# -- settings ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Codes:
    """What a finance item or item code maps to: the kind of line (None: by the item's unit) and UTBMS codes."""

    kind: EntryKind | None = None
    task: str | None = None
    activity: str | None = None
    expense: str | None = None


def parse_codes(text: str) -> Codes:
    """``"L110 A111"``, ``"E109"``, ``"time"``, ``"expense E124"``: UTBMS codes and/or the kind, in any order. A
    task or activity code makes the line time, an expense code an expense. Raises ValueError."""
    found: dict[str, Any] = {}
    for token in re.split(r"[\s,/;]+", text.strip()):
        word = token.lower()
        if not word:
            continue
        if word in ("time", "expense"):
            found["kind"] = EntryKind(word)
            continue
        code = token.upper()
        kind = code_kind(code)
        if kind not in ("task", "phase", "activity", "expense"):
            raise ValueError(f"{token!r} is not a UTBMS code, time or expense")
        slot = "task" if kind == "phase" else kind
        if slot in found:
            raise ValueError(f"two {slot} codes")
        found[slot] = code
    implied = EntryKind.EXPENSE if "expense" in found else EntryKind.TIME if found.keys() & {"task", "activity"} \
        else None
    if "expense" in found and found.keys() & {"task", "activity"}:
        raise ValueError("an expense code with a task or activity code: a line is time or an expense")
    if implied and found.get("kind", implied) is not implied:
        raise ValueError(f"{found['kind'].value} with {implied.value} codes")
    return Codes(kind=found.get("kind", implied), task=found.get("task"), activity=found.get("activity"),
                 expense=found.get("expense"))


def check_settings(settings: Mapping[str, Any]) -> list[str]:
    """What is missing, unknown or unsafe in a Trackops source's settings (empty when usable)."""
    problems = [f"unknown setting {key!r} (known: {', '.join(SETTINGS)})" for key in settings
                if key not in SETTINGS and key not in SECRET_SETTINGS]
    problems += [f"never store {key} in settings: put the API token in an environment variable and name it in "
                 "api_token_env" for key in SECRET_SETTINGS if key in settings]
    subdomain = settings.get("subdomain")
    if not subdomain:
        problems.append("Trackops needs subdomain (the firm's {subdomain}.viewcases.com)")
    elif not isinstance(subdomain, str) or not _SUBDOMAIN.match(subdomain):
        problems.append(f"subdomain {subdomain!r} is not a host name label")
    username = settings.get("username")
    if not username or not isinstance(username, str):
        problems.append("Trackops needs username (the API user)")
    elif username.endswith("/token"):
        problems.append("username: give the user's name alone; ocgate adds /token")
    if "api_token_env" in settings and not _ENV_NAME.match(str(settings["api_token_env"])):
        problems.append("api_token_env must name an environment variable, not hold the token")
    currency = settings.get("currency")
    if currency is not None and not (isinstance(currency, str) and re.fullmatch(r"[A-Za-z]{3}", currency)):
        problems.append(f"currency {currency!r} is not an ISO 4217 code")
    for key in ("finance_items", "item_codes", "ledes_client_ids"):
        table = settings.get(key, {})
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            problems.append(f"{key} must be a JSON object of strings")
            continue
        if key != "ledes_client_ids":
            for name, text in table.items():
                try:
                    parse_codes(text)
                except ValueError as exc:
                    problems.append(f"{key}[{name!r}]: {exc}")
    names = settings.get("field_names", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) and v.strip() for v in names.values()):
        problems.append('field_names must map ocgate\'s names to Trackops names: {"source_updated_at": "modified_at"}')
    else:
        problems += [f"field_names: {key!r} is not one of ocgate's names ({', '.join(FIELD)})"
                     for key in names if key not in FIELD]
    for key in ("requests_per_minute", "overlap_minutes", "sync_interval_minutes", "timeout", "max_attempts"):
        value = settings.get(key)
        if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
            problems.append(f"{key} must be a positive number")
    return problems


def host(settings: Mapping[str, Any]) -> str:
    return str(settings.get("base_url") or HOST.format(subdomain=settings["subdomain"])).rstrip("/")


@dataclass(frozen=True)
class Rules:
    """The firm's settings that turn Trackops values into billing ones (finance items and item codes to kinds and
    UTBMS codes, clients to LEDES client ids, the currency); keys match ids or names, case-insensitively."""

    items: dict[str, Codes]
    codes: dict[str, Codes]
    clients: dict[str, str]
    currency: str | None
    names: dict[str, str] = field(default_factory=lambda: dict(FIELD))

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Rules:
        def keyed(table: Mapping[str, Any]) -> dict[str, Any]:
            return {str(key).strip().lower(): value for key, value in table.items()}

        return cls(items={k: parse_codes(v) for k, v in keyed(settings.get("finance_items", {})).items()},
                   codes={k: parse_codes(v) for k, v in keyed(settings.get("item_codes", {})).items()},
                   clients=keyed(settings.get("ledes_client_ids", {})),
                   currency=str(settings["currency"]).upper() if settings.get("currency") else None,
                   names=field_names(settings))

    @staticmethod
    def find(table: Mapping[str, Any], record: Mapping[str, Any], name_field: str) -> Any:
        for key in (record.get("id"), record.get(name_field)):
            if key is not None and (found := table.get(str(key).strip().lower())) is not None:
                return found
        return None

    def line_codes(self, item: Mapping[str, Any], code: Mapping[str, Any]) -> Codes:
        return (self.find(self.codes, code, self.names["source_activity_label"])
                or self.find(self.items, item, self.names["source_task_label"]) or Codes())

    def ledes_client_id(self, client: Mapping[str, Any]) -> str | None:
        return self.find(self.clients, client, self.names["client_name"])


# -- connecting --------------------------------------------------------------------------------------------------

def connect(settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
            transport: httpx.BaseTransport | None = None, code: str | None = None,
            refresh_token: str | None = None) -> None:
    """Check the API user's credentials with one request, and note (no secret) that they worked. Trackops issues
    no token: every request carries the API token from the environment."""
    if code is not None or refresh_token is not None:
        raise NotConnected("Trackops is connected with its API token (api_token_env), not an OAuth code or token")
    client = TrackopsClient(settings, environ=environ, transport=transport)
    try:
        client.get(ENTRIES, {"per_page": 1})
    finally:
        client.close()
    store.save({"username": settings["username"], "checked_at": _iso(dt.datetime.now(dt.UTC))})


def open_source(name: str, settings: Mapping[str, Any], store: CredentialStore, *, tenant: str = "",
                environ: Mapping[str, str], transport: httpx.BaseTransport | None = None,
                sleep: Any = time.sleep) -> TrackopsSource:
    return TrackopsSource(name, settings, Held(store.sessions, settings["subdomain"]), environ=environ,
                          transport=transport, sleep=sleep)


# -- HTTP --------------------------------------------------------------------------------------------------------

@dataclass
class _Pacer:
    """The client's side of Trackops' sliding 60-second window: no request before a 429's ``Retry-After`` has
    passed, and, when the limit is known, no more than ``per_minute`` requests in any 60 seconds."""

    per_minute: int | None
    sleep: Any
    clock: Any = time.monotonic
    sent: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0

    def take(self) -> None:
        """Wait, if need be, until a request may be sent, and count it as sent then."""
        now = self.clock()
        pause = self.blocked_until - now
        if self.per_minute is not None and len(self.sent) >= self.per_minute:
            pause = max(pause, self.sent[-self.per_minute] + 60.0 - now)
        if pause > 0:
            log.info("Trackops rate limit: waiting %.1f s", pause)
            self.sleep(pause)
            now, self.blocked_until = now + pause, 0.0
        self.sent.append(now)
        while self.per_minute is not None and len(self.sent) > self.per_minute:
            self.sent.popleft()

    def refused(self, retry_after: float | None) -> None:
        """A 429: nothing is sent until its Retry-After has passed (a moment more: the server counts whole
        seconds), or a second when it gave none."""
        self.blocked_until = max(self.blocked_until, self.clock() + (retry_after if retry_after is not None else 1.0)
                                 + 0.25)


class TrackopsClient:
    """Authenticated, paced and retried requests to one Trackops account's API, keeping the server's time."""

    def __init__(self, settings: Mapping[str, Any], *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        variable = settings.get("api_token_env", DEFAULT_TOKEN_ENV)
        token = environ.get(variable)
        if not token:
            raise NotConnected(f"Trackops: the API token is not set: export {variable}")
        self.server_time: dt.datetime | None = None  # from the last answer's Date header
        self.pacer = _Pacer(settings.get("requests_per_minute"), sleep)
        self._http = httpx.Client(base_url=host(settings) + API_PREFIX, auth=(f"{settings['username']}/token", token),
                                  timeout=float(settings.get("timeout", 30)), transport=transport,
                                  headers={"Accept": "application/json", "User-Agent": CONNECTOR_VERSION})
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((Retryable, httpx.TimeoutException, httpx.TransportError)),
            wait=RetryWait(paced=True), stop=tenacity.stop_after_attempt(int(settings.get("max_attempts", 6))),
            sleep=sleep, reraise=True)

    def close(self) -> None:
        self._http.close()

    def request(self, path: str, params: Any = None, *, allow: tuple[int, ...] = ()) -> httpx.Response:
        """One GET, paced and retried. Answers in ``allow`` (such as 404) are returned; a refusal raises
        :class:`SourceError` (:class:`NotConnected` for the credentials); running out of tries raises
        :class:`SourceUnavailable`."""
        try:
            response = self._retrying(self._send, path, params)
        except Retryable as exc:
            raise SourceUnavailable(f"Trackops answered {exc.status} to GET {path} on every try") from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise SourceUnavailable(f"Trackops could not be reached ({type(exc).__name__} on GET {path})") from None
        if response.status_code < 400 or response.status_code in allow:
            return response
        error = json_object(response).get("error")
        if response.status_code in (401, 403):
            raise NotConnected(f"Trackops refused the API user's credentials ({response.status_code}): check username, "
                               "the API token and that the user has Full Access")
        raise SourceError(f"Trackops answered {response.status_code} to GET {path}"
                          + (f": {error}" if isinstance(error, str) else ""), retryable=False)

    def _send(self, path: str, params: Any) -> httpx.Response:
        self.pacer.take()
        response = self._http.get(path, params=params)
        date = response.headers.get("Date")
        if date:
            try:
                self.server_time = email.utils.parsedate_to_datetime(date).astimezone(dt.UTC)
            except (TypeError, ValueError):
                log.warning("Trackops sent an unreadable Date header: %r", date)
        if response.status_code == 429:
            wait = retry_after(response)
            if wait is not None and wait > MAX_RETRY_AFTER:
                raise SourceUnavailable(f"Trackops' rate limit asks for {wait:.0f} s: the next sync resumes")
            self.pacer.refused(wait)
            raise Retryable(429, wait)
        if response.status_code >= 500:
            raise Retryable(response.status_code, retry_after(response))
        return response

    def get(self, path: str, params: Any = None) -> dict[str, Any]:
        return json_object(self.request(path, params))


# -- what ocgate holds -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Withdrawal:
    """A held line to withdraw, and why (named in its record and the audit trail)."""

    entry_id: str
    line_id: str
    status: EntryStatus
    reason: str


class Held:
    """The lines of this tenant's Trackops entries that ocgate holds and has not withdrawn: read once per pull,
    then kept up to date with what the pull hands over, so a status change or a removed line is withdrawn."""

    def __init__(self, sessions: sessionmaker[Session], tenant: str):
        self.sessions, self.tenant = sessions, tenant

    def _where(self) -> tuple[Any, ...]:
        return (EntryRow.source_system == KIND, EntryRow.source_tenant == self.tenant,
                EntryRow.state != EntryState.WITHDRAWN)

    def lines(self, entry_ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Entry id -> the line ids held (of every entry, or of these)."""
        query = select(EntryRow.source_id, EntryRow.source_line_id).where(*self._where())
        if entry_ids is not None:
            query = query.where(EntryRow.source_id.in_(list(entry_ids)))
        held: dict[str, set[str]] = {}
        with self.sessions() as session:
            for entry_id, line_id in session.execute(query.execution_options(yield_per=5000)):
                held.setdefault(entry_id, set()).add(line_id)
        return held

    def withdrawals(self, chosen: list[Withdrawal]) -> list[Entry]:
        """The stored records of these lines as withdrawn, as ``sources.withdraw`` makes them: status and reason
        set, a new version. A line the store does not have yet (handed over earlier in this pull and not yet
        committed) is left for the next pull, which reads its entry again (it changed during this one)."""
        uids = {f"{KIND}:{self.tenant}:{w.entry_id}:{w.line_id}": w for w in chosen}
        gone = []
        with self.sessions() as session:
            keys = list(uids)
            for start in range(0, len(keys), 2000):
                for uid, record, version in session.execute(
                        select(EntryRow.entry_uid, EntryRow.record, EntryRow.source_version).where(
                            EntryRow.entry_uid.in_(keys[start:start + 2000]), *self._where())):
                    why = uids[uid]
                    gone.append(Entry.model_validate({**record, "status": why.status.value, "source_status": why.reason,
                                                      "source_version": f"withdrawn:{version}"[:200]}))
        return gone


# -- the source --------------------------------------------------------------------------------------------------

class Lookups:
    """The staff, cases, clients, finance items and item codes entries refer to, by id, fetched as needed and kept
    for the pull: a few unknown ids one by one, more by reading the whole list once."""

    def __init__(self, client: TrackopsClient, names: Mapping[str, str]):
        self.client, self.names = client, names
        self.found: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in RESOURCES}
        self.listed: set[str] = set()

    def get(self, kind: str, record_id: Any) -> dict[str, Any]:
        return self.found[kind].get(record_id, {}) if record_id is not None else {}

    def list_all(self, kind: str) -> None:
        path, plural = RESOURCES[kind], self.names[f"{kind} list"]
        self.listed.add(kind)
        page = 1
        while True:
            data = self.client.get(path, {"page": page, "per_page": PER_PAGE})
            self.found[kind].update((r["id"], r) for r in data.get(plural) or [] if isinstance(r, dict) and "id" in r)
            if not (data.get("meta") or {}).get(self.names["paging: next page"]):
                return
            page += 1

    def resolve(self, kind: str, ids: Iterable[Any]) -> None:
        known = self.found[kind]
        missing = {i for i in ids if i is not None and i not in known}
        if len(missing) > LOOKUP_ONE_BY_ONE and kind not in self.listed:
            self.list_all(kind)
            missing -= known.keys()
        path, singular = RESOURCES[kind], self.names[f"{kind} record"]
        for record_id in sorted(missing):  # created since the list was read, or not there at all
            response = self.client.request(f"{path}/{record_id}", allow=(404,))
            known[record_id] = (json_object(response).get(singular) or {}) if response.status_code == 200 else {}


class TrackopsSource:
    """One Trackops account (a subdomain) as a source of canonical entries, one per expense detail line."""

    kind: ClassVar[str] = KIND

    def __init__(self, name: str, settings: Mapping[str, Any], held: Held, *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.name, self.settings, self.held = name, dict(settings), held
        self.client = TrackopsClient(settings, environ=environ, transport=transport, sleep=sleep)
        self.names = field_names(settings)
        self.lookups = Lookups(self.client, self.names)
        self.rules = Rules.of(settings)
        self._mapped: dict[tuple[Any, Any], Codes] = {}  # (finance item id, item code id) -> what the rules map to
        self.overlap = dt.timedelta(minutes=float(settings.get("overlap_minutes", 5)))

    @property
    def tenant(self) -> str:
        return str(self.settings["subdomain"])

    def close(self) -> None:
        self.client.close()

    # pulling

    def pull(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        state = json.loads(cursor) if cursor else {}
        resuming = bool(state.get("page")) and bool(state.get("full")) == full
        if not resuming:
            state = {"since": None if full else state.get("since"), "until": None, "page": 1, "full": full}
        self.lookups.list_all("item")  # every line needs its finance item; this answer dates the pull
        if not resuming:
            state["until"] = self._server_now(state["since"])
        params: dict[str, Any] = {"per_page": PER_PAGE}
        if state["since"]:
            params["updated_from"] = _iso(dt.datetime.fromisoformat(state["since"]) - self.overlap)
        held = self.held.lines()
        names = self.names
        seen: dict[Any, Any] = {}  # entry id -> updated_at read in this pull: a record shifted onto the next page
        while True:
            data = self.client.get(ENTRIES, {**params, "page": state["page"]})
            records = self._records(data)
            meta = data.get("meta") or {}
            fresh = [r for r in records if seen.get(r.get(names["source_id"]), ()) != r.get(names["source_updated_at"])]
            seen.update((r.get(names["source_id"]), r.get(names["source_updated_at"])) for r in fresh)
            entries = self._map(fresh, held)
            more = bool(records) and bool(meta.get(names["paging: next page"]))
            state["page"] += 1
            total = meta.get(names["paging: total"])
            yield Page(entries=entries, cursor=json.dumps(state) if more else json.dumps({"since": state["until"]}),
                       pulled=len(records), total=total if isinstance(total, int) else None)
            if not more:
                return

    def _records(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The entries of a list page, refusing an answer that is not one: a sync that took a page it cannot read
        for an empty one would move its cursor past entries it never read."""
        names = self.names
        records = data.get(names["entries list"])
        if not isinstance(records, list):
            raise SourceError(f"Trackops' answer to GET {ENTRIES} holds no {names['entries list']!r} list"
                              + (f" (it has {', '.join(sorted(data)[:6])})" if data else ", or is not JSON")
                              + ": if Trackops names it differently, correct it in field_names", retryable=False)
        for record in records:
            self._check(record)
        return records

    def _check(self, record: Any) -> None:
        """Refuse an expense entry that lacks a field every entry has: a name the firm's Trackops spells otherwise
        (were it read as missing, an entry's lines would be dropped, or its changes never seen)."""
        names = self.names
        absent = [names[use] for use in REQUIRED_FIELDS if not isinstance(record, dict) or names[use] not in record]
        if not absent and record.get(names["source_id"]) in (None, ""):
            absent = [names["source_id"]]
        if absent:
            which = record.get(names["source_id"]) if isinstance(record, dict) else None
            raise SourceError(f"Trackops sent an expense entry{f' ({which})' if which else ''} without "
                              f"{', '.join(repr(name) for name in absent)}: if Trackops names "
                              f"{'it' if len(absent) == 1 else 'them'} differently, correct field_names",
                              retryable=False)

    def _server_now(self, since: str | None) -> str | None:
        """The server's time as its last answer gave it: where the next pull starts. Without a Date header the
        window does not move on (entries are read again rather than missed)."""
        if self.client.server_time is None:
            log.warning("Trackops sent no Date header: the next sync starts where this one did")
            return since
        return self.client.server_time.isoformat()

    def fetch(self, record_id: str, known_version: str | None = None) -> list[Entry] | Unchanged | None:
        """One entry's lines as Trackops has them now (withdrawals of held lines for one no longer billable);
        Trackops answers no conditional request, so ``known_version`` is not used."""
        response = self.client.request(f"{ENTRIES}/{record_id}", allow=(404,))
        if response.status_code == 404:
            return None
        record = json_object(response).get(self.names["entry record"])
        if not isinstance(record, dict):
            raise SourceError(f"Trackops' answer to GET {ENTRIES}/{record_id} holds no {self.names['entry record']!r} "
                              "record: if Trackops names it differently, correct it in field_names", retryable=False)
        self._check(record)
        if "item" not in self.lookups.listed:
            self.lookups.list_all("item")
        return self._map([record], self.held.lines([str(record_id)]))

    def _map(self, records: list[dict[str, Any]], held: dict[str, set[str]]) -> list[Entry]:
        """The lines of the billable records, and withdrawals of held lines no longer billable; ``held`` is updated
        to what the store holds once these are ingested."""
        self._resolve(records)
        entries: list[Entry] = []
        withdrawals: list[Withdrawal] = []
        for record in records:
            entry_id = str(record[self.names["source_id"]])
            status = str(record.get(self.names["source_status"]))
            before = held.pop(entry_id, set())
            if status in BILLABLE:
                lines = self.to_entries(record)
                entries += lines
                now = {str(e.source_line_id) for e in lines}
                if now:
                    held[entry_id] = now
                withdrawals += [Withdrawal(entry_id, line, EntryStatus.DELETED, "line removed from the entry at "
                                           "Trackops") for line in sorted(before - now)]
            else:
                withdrawals += [Withdrawal(entry_id, line, EntryStatus.VOID, f"{status} at Trackops")
                                for line in sorted(before)]
        if withdrawals:
            entries += self.held.withdrawals(withdrawals)
        return entries

    def _resolve(self, records: list[dict[str, Any]]) -> None:
        """Fetch, in few requests, what these records refer to: staff, cases and their clients, items, codes."""
        lines = [line for r in records for line in r.get(self.names["lines"]) or [] if isinstance(line, dict)]
        self.lookups.resolve("item", (line.get(self.names["finance item"]) for line in lines))
        self.lookups.resolve("staff", (r.get(self.names["timekeeper_source_id"]) for r in records))
        self.lookups.resolve("case", (r.get(self.names["matter_source_id"]) for r in records))
        self.lookups.resolve("client", (self.lookups.get("case", r.get(self.names["matter_source_id"]))
                                        .get(self.names["client_source_id"]) for r in records))
        self.lookups.resolve("code", (line.get(self.names["item code"]) or self.lookups.get(
            "item", line.get(self.names["finance item"])).get(self.names["default item code"]) for line in lines))

    def to_entries(self, record: dict[str, Any]) -> list[Entry]:
        """A billable Trackops entry's detail lines in the canonical model, one entry each."""
        get, lookups, rules = self.names.__getitem__, self.lookups, self.rules
        case = lookups.get("case", record.get(get("matter_source_id")))
        client = lookups.get("client", case.get(get("client_source_id")))
        staff = lookups.get("staff", record.get(get("timekeeper_source_id")))
        ledes_client_id = rules.ledes_client_id(client) if client else None
        flags = ([] if case else ["NO_MATTER"]) + ([] if ledes_client_id or not case else ["NO_LEDES_CLIENT_ID"]) \
            + ([] if rules.currency else ["NO_CURRENCY"])
        first, last = staff.get(get("timekeeper_first_name")), staff.get(get("timekeeper_last_name"))
        status = record.get(get("source_status"))
        common: dict[str, Any] = dict(
            source_system=KIND, source_tenant=self.tenant, source_id=record[get("source_id")],
            source_created_at=record.get(get("source_created_at")),
            source_updated_at=record.get(get("source_updated_at")), api_version="v1",
            connector_version=CONNECTOR_VERSION, entry_subtype="expense_detail",
            matter_source_id=record.get(get("matter_source_id")),
            law_firm_matter_id=case.get(get("law_firm_matter_id")), matter_name=case.get(get("matter_name")),
            client_source_id=case.get(get("client_source_id")),
            client_name=client.get(get("client_name")), ledes_client_id=ledes_client_id,
            timekeeper_source_id=record.get(get("timekeeper_source_id")), timekeeper_first_name=first,
            timekeeper_last_name=last, timekeeper_name=f"{last}, {first}" if first and last else None,
            work_date=record.get(get("work_date")), currency=rules.currency, status=EntryStatus.APPROVED,
            source_status=status, billable=True)
        notes = (record.get(get("narrative")) or "").strip()
        lines = [line for line in record.get(get("lines")) or [] if isinstance(line, dict)]
        return [self._line(common, flags, notes, line, position) for position, line in enumerate(lines, 1)]

    def _line(self, common: dict[str, Any], entry_flags: list[str], notes: str, line: dict[str, Any],
              position: int) -> Entry:
        get, lookups = self.names.__getitem__, self.lookups
        flags = list(entry_flags)
        item = lookups.get("item", line.get(get("finance item")))
        code = lookups.get("code", line.get(get("item code")) or item.get(get("default item code")))
        mapped = self._mapped.get((item.get("id"), code.get("id")))
        if mapped is None:
            mapped = self._mapped[item.get("id"), code.get("id")] = self.rules.line_codes(item, code)
        unit = item.get(get("unit_of_measure"))
        is_hours = str(unit or "").strip().lower() in HOUR_UNITS
        if not item:
            flags.append(UNKNOWN_FINANCE_ITEM)
        kind = mapped.kind or (EntryKind.TIME if is_hours else EntryKind.EXPENSE)
        rate, quantity = _decimal(line.get(get("rate"))), _decimal(line.get(get("quantity")))
        if rate is None or quantity is None:
            flags.append(INVALID_AMOUNT)
        line_notes = (line.get(get("line notes")) or "").strip()
        line_id = line.get(get("source_line_id"))
        # A line without an id is keyed by its position (@1, @2, ...): removing one re-keys those after it, which
        # withdraws and re-adds them rather than mixing two lines up.
        line_id = f"@{position}" if line_id is None or line_id == "" else str(line_id)
        fields = dict(common, source_line_id=line_id, entry_kind=kind, rate=rate,
                      quantity=quantity, amount=rate * quantity if rate is not None and quantity is not None else None,
                      source_task_label=item.get(get("source_task_label")),
                      source_activity_label=code.get(get("source_activity_label")),
                      narrative=": ".join(part for part in (notes, line_notes) if part))
        if kind is EntryKind.TIME:
            fields.update(fee_basis=FeeBasis.HOURLY, hours_worked=quantity, hours_billed=quantity,
                          unit_of_measure="hour", utbms_task_code=mapped.task, utbms_activity_code=mapped.activity)
            if unit and not is_hours:
                flags.append(UNIT_NOT_HOURS)
            flags += [flag for value, flag in ((mapped.task, "MISSING_UTBMS_TASK"),
                                               (mapped.activity, "MISSING_UTBMS_ACTIVITY")) if not value]
        else:
            fields.update(fee_basis=FeeBasis.UNIT, unit_of_measure=unit, utbms_expense_code=mapped.expense)
            if not mapped.expense:
                flags.append("MISSING_UTBMS_EXPENSE")
        fields["data_quality_flags"] = sorted(set(flags))
        # The version: when Trackops changed the entry and a digest of what ocgate made of the line, so a line
        # edited twice within one second, or mapped anew after the settings changed, is a new version.
        digest = hashlib.sha1(repr(fields).encode()).hexdigest()[:16]
        fields["source_version"] = f"{common['source_updated_at']}#{digest}"
        try:
            return Entry.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
            raise SourceError(f"Trackops expense entry {common['source_id']} (line {line_id}) cannot be read: "
                              f"{problems}. If Trackops names the field differently, correct it in field_names",
                              retryable=False) from None

    # webhooks: Trackops has none

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str],
                       query: Mapping[str, str] | None = None) -> Delivery:
        raise WebhookRejected("Trackops sends no webhooks: nothing is accepted for this source")

    def register_webhooks(self, public_url: str) -> list[Subscription]:
        raise _no_webhooks()

    def webhook_state(self, subscription: Subscription) -> Subscription:
        raise _no_webhooks()

    def renew_webhook(self, subscription: Subscription) -> Subscription:
        raise _no_webhooks()


def _no_webhooks() -> SourceError:
    return SourceError("Trackops has no webhooks: its entries arrive by sync (set sync_interval_minutes for the "
                       "worker to sync it on a schedule)", retryable=False)


def _decimal(value: Any) -> Decimal | None:
    """A rate or quantity as Trackops sends it (a decimal string [assumed], or a JSON number read as Decimal)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return number if number.is_finite() else None


def _iso(moment: dt.datetime) -> str:
    """A UTC instant as Trackops writes and filters timestamps: ``YYYY-MM-DDTHH:MM:SSZ`` (seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
