"""mattero (an Australian cloud practice-management system): costs from its "All Costs" export, enriched from its
API (matters, contacts, staff), and webhooks for matter and contact changes.

mattero's public API has no list of time or expense records and no cost events (connectors.md 2A), so a pull cannot
discover costs through it. Instead:

* **Costs come from exports.** A firm drops Costs > All Costs exports (CSV or ``.xlsx``) into the directory the
  settings name (``export_dir``). Each pull reads every file there it has not taken yet, through the built-in
  mapping ``mattero-all-costs`` (``engine/mapping``; another mapping can be named), in pages. The cursor holds the
  content hashes of the files taken, and mid-file the hash and how many entries of it are committed: a sync killed
  anywhere resumes there, and a file dropped again unchanged is not read again. Rows the mapping leaves out are
  logged and written beside the file (``FILE.problems.txt``), never dropped silently.
* **Enriched from the API.** The export names a matter by number and a staff member by name. The pull reads
  mattero's matters and staff (``pageIndex``/``pageSize`` paging, checked against ``totalRecords`` and walked
  again when the list changed under it) and the clients' contacts, and fills in mattero's matter, client and
  staff ids, the client's LEDES id and matter id (custom fields), and the matter's currency when it has one. What
  cannot be found is a data-quality flag (``UNKNOWN_MATTER``, ``UNKNOWN_STAFF``, ``AMBIGUOUS_STAFF``,
  ``NO_LEDES_CLIENT_ID``), never a default.
* **Numbers.** Minutes and 6-minute units, amounts ex GST with the GST apart, ``Fixed``/``CostTemplate`` costs as
  one unit at their amount: the mapping reads them and flags ``AMOUNT_MISMATCH`` (units x rate is not the amount).
  This module adds ``UNITS_MISMATCH``: an hourly time record whose units are not its minutes rounded up to whole
  6-minute units. Either way the source's amount is kept.
* **One record** is re-read with ``GET /time-records/{id}``, else ``/expense-records/{id}`` (``fetch``).
* **Webhooks.** mattero signs nothing. Each source gets an unguessable token (kept encrypted with its credentials)
  that ends its callback path, ``/v1/webhooks/NAME/TOKEN``; a delivery without it is refused. Matter and contact
  events are hints only: the matter or contact is fetched again and the stored entries that refer to it are
  enriched again (their hours, rates and amounts never change this way; only the matter, client and staff fields
  and their flags).

Where mattero's documentation is silent, the names this module reads are assumptions, all in :data:`NAMES` and
marked there, so that a sandbox can correct them in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets as token_source
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, ClassVar

import httpx
import tenacity
from sqlalchemy import or_, select
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
from connectors.sources.webhooks import PATH_TOKEN
from engine.mapping import MappingError, UnreadableFile, load_mapping, read_mapped
from engine.mapping.loader import Mapping as ExportMapping
from engine.mapping.loader import Unlisted
from engine.model import Entry, EntryKind, FeeBasis
from engine.store.models import EntryRow, EntryState

log = logging.getLogger("ocgate.mattero")

KIND = "mattero"
BASE_URL = "https://my.mattero.com.au/public/api/v1"
DEFAULT_KEY_ENV = "OCGATE_MATTERO_API_KEY"
DEFAULT_MAPPING = "mattero-all-costs"
CONNECTOR_VERSION = "ocgate-mattero/1"
PAGE_SIZE = 250  # mattero's largest pageSize
PAGE_ENTRIES = 1000  # entries per page of a pull: a killed sync resumes within a file
UNIT_MINUTES = 6
WALKS = 3  # how often a list is walked again when it changed while it was paged
EXPORT_SUFFIXES = (".csv", ".xlsx", ".xlsm")
EVENTS = {  # mattero's event -> (ocgate's event, model); mattero has no cost events
    "CreateMatterEvent": ("created", "matter"),
    "UpdateMatterEvent": ("updated", "matter"),
    "CreateContactEvent": ("created", "contact"),
    "UpdateContactEvent": ("updated", "contact"),
}
SOURCE_FLAGS = frozenset({"UNKNOWN_MATTER", "UNKNOWN_STAFF", "AMBIGUOUS_STAFF", "NO_LEDES_CLIENT_ID"})
HOURS_PLACES = Decimal("0.0001")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class _Names:
    """Every mattero name this module reads or sends, in one place. [doc]: mattero's developer pages (see
    connectors.md 2A); [assumed]: not published, to be checked against a sandbox."""

    # lists
    page_index: str = "pageIndex"  # [doc] 0-based
    page_size: str = "pageSize"  # [doc] 1..250
    records: str = "records"  # [doc]
    total: str = "totalRecords"  # [doc]
    staff_type: str = "staffType"  # [doc] All | Staff | EnabledStaff
    staff_value: str = "Staff"  # [doc]
    # paths
    ping: str = "/ping"  # [doc]
    matters: str = "/matters"  # [doc]
    matter: str = "/matters/{id}"  # [assumed] one matter, the same object as in the list
    contacts: str = "/contacts"  # [doc]
    contact: str = "/contacts/{id}"  # [assumed] one contact, the same object as in the list
    time_record: str = "/time-records/{id}"  # [doc]
    expense_record: str = "/expense-records/{id}"  # [doc]
    webhooks: str = "/webhooks"  # [doc] POST to create, GET to list
    webhook: str = "/webhooks/{id}"  # [assumed] DELETE (the docs write /webhook and /webhooks)
    # a matter [doc, from the CreateMatterEvent payload]
    id: str = "id"
    number: str = "number"
    title: str = "title"
    client: str = "client"  # {id, name}
    costing_method: str = "costingMethod"  # Time | Fixed | CostTemplate
    custom_fields: str = "customFields"  # [{id, name, value}]
    field_name: str = "name"
    field_value: str = "value"
    # a contact
    name: str = "name"  # [doc] in references; [assumed] on the contact itself
    first_name: str = "firstName"  # [assumed]
    last_name: str = "lastName"  # [assumed]
    contact_custom_fields: str = "customFields"  # [assumed] as on a matter
    # a time or expense record [doc, from get-time-record and get-expense-record]
    record_id: str = "id"  # [assumed] the sample shows none; the create answer has it
    date: str = "date"  # [doc] in the field list, [assumed] YYYY-MM-DD
    minutes: str = "durationMinutes"
    units: str = "units"
    rate: str = "chargeRate"
    amount: str = "amountExclTax"
    gst: str = "gstAmount"  # [doc] on expenses, [assumed] on time records too (omitted when empty)
    cost_code: str = "costCode"  # {id, name, expenseType}
    matter_ref: str = "associatedMatter"  # {id, number, title, name}
    staff_ref: str = "staffContact"  # {id, name}
    description: str = "description"
    written_off: str = "isWrittenOff"
    # webhooks [doc]
    event_name: str = "eventName"
    callback_url: str = "callbackUrl"
    entity_id: str = "entityId"
    entity_type: str = "entityType"


NAMES = _Names()

SETTINGS = {
    "base_url": f"mattero's API root (default {BASE_URL}; any URL, e.g. a test server)",
    "api_key_env": f"the environment variable holding the organisation API key (default {DEFAULT_KEY_ENV})",
    "export_dir": "the directory where All Costs exports (CSV or .xlsx) are dropped for the sync to read",
    "mapping": f"the mapping the exports are read with: a built-in name or a path (default {DEFAULT_MAPPING})",
    "organisation": "a short name for the mattero organisation, which keys its entries (default: default, as "
                    "`ocgate ingest --mapping mattero-all-costs` keys them)",
    "client_matter_field": "the matter custom field holding the client's matter id (default: Client Matter ID)",
    "ledes_client_field": "the contact custom field holding the client's LEDES id (default: LEDES Client ID)",
    "currency_field": "the matter custom field holding a currency other than the export's (default: Currency)",
    "sync_interval_minutes": "the worker syncs the source this often (default: only when asked)",
    "timeout": "seconds before a request is given up and retried (default 30)",
    "max_attempts": "tries per request before the sync stops, to resume later (default 6)",
    "webhook_public_url": "where mattero posts webhooks, without the token (set by `ocgate sources webhooks`)",
}
DEFAULTS = {"client_matter_field": "Client Matter ID", "ledes_client_field": "LEDES Client ID",
            "currency_field": "Currency", "organisation": "default", "mapping": DEFAULT_MAPPING}
SECRET_KEYS = ("api_key", "key", "token", "password", "secret", "webhook_token", "access_token")


# Settings ----------------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> list[str]:
    """What is missing, unknown or unsafe in a mattero source's settings (empty when usable)."""
    problems = []
    if not settings.get("export_dir"):
        problems.append("mattero needs export_dir: the directory its All Costs exports are dropped in (its API "
                        "lists no time or expense records)")
    for key in SECRET_KEYS:
        if key in settings:
            problems.append(f"never store {key} in settings: put the API key in an environment variable and name "
                            "it in api_key_env")
    for key in ("sync_interval_minutes", "timeout", "max_attempts"):
        if key in settings and not (isinstance(settings[key], int | float) and not isinstance(settings[key], bool)
                                    and settings[key] > 0):
            problems.append(f"{key} must be a positive number")
    base = settings.get("base_url")
    if base is not None and not (isinstance(base, str) and base.startswith(("https://", "http://"))):
        problems.append("base_url must be an http(s) URL")
    mapping = settings.get("mapping")
    if mapping is not None:
        try:
            load_mapping(str(mapping))
        except MappingError as exc:
            problems.append(f"mapping {mapping!r} cannot be used: {exc.message}")
    problems += [f"unknown setting {key!r} (known: {', '.join(SETTINGS)})" for key in settings
                 if key not in SETTINGS and key not in SECRET_KEYS]
    return problems


def base_url(settings: Mapping[str, Any]) -> str:
    return str(settings.get("base_url") or BASE_URL).rstrip("/")


def _setting(settings: Mapping[str, Any], key: str) -> str:
    return str(settings.get(key) or DEFAULTS[key])


# Connecting --------------------------------------------------------------------------------------------

def connect(settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
            transport: httpx.BaseTransport | None = None, code: str | None = None,
            refresh_token: str | None = None) -> None:
    """Check the API key against ``/ping`` and make sure the source has its webhook token (an existing one is
    kept, so that registered callbacks keep working). mattero issues nothing else to keep."""
    if code is not None or refresh_token is not None:
        raise NotConnected("mattero is connected with an API key in the environment, not a code or refresh token")
    client = MatteroClient(settings, environ=environ, transport=transport)
    try:
        client.request("GET", NAMES.ping)
    finally:
        client.close()
    webhook_token(store)


def webhook_token(store: TokenStore) -> str:
    """The source's callback token, made (and kept, encrypted) the first time it is needed."""
    credentials = store.load() or {}
    token = credentials.get("webhook_token")
    if not token:
        token = token_source.token_urlsafe(32)
        store.save({**credentials, "webhook_token": token})
    return str(token)


def open_source(name: str, settings: Mapping[str, Any], store: TokenStore, *, tenant: str = "",
                environ: Mapping[str, str], transport: httpx.BaseTransport | None = None,
                sleep: Any = time.sleep) -> MatteroSource:
    return MatteroSource(name, settings, store, tenant=tenant, environ=environ, transport=transport, sleep=sleep)


# HTTP ------------------------------------------------------------------------------------------------

class MatteroClient:
    """Requests to one mattero organisation's API: the key as a bearer token, 429s waited out (``Retry-After``),
    5xx, timeouts and dropped connections retried with jittered backoff, lists walked page by page."""

    def __init__(self, settings: Mapping[str, Any], *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.key_env = str(settings.get("api_key_env") or DEFAULT_KEY_ENV)
        self.environ = environ
        self._http = httpx.Client(base_url=base_url(settings), timeout=float(settings.get("timeout", 30)),
                                  transport=transport, headers={"User-Agent": CONNECTOR_VERSION,
                                                                "Accept": "application/json"})
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((Retryable, httpx.TimeoutException, httpx.TransportError)),
            wait=RetryWait(), stop=tenacity.stop_after_attempt(int(settings.get("max_attempts", 6))), sleep=sleep,
            reraise=True)

    def close(self) -> None:
        self._http.close()

    def _key(self) -> str:
        key = self.environ.get(self.key_env)
        if not key:
            raise NotConnected(f"mattero: the API key is not set: export {self.key_env} (an organisation API key "
                               "from mattero's global settings)")
        return key

    def request(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
                allow: tuple[int, ...] = ()) -> httpx.Response:
        """One API call, retried. Answers in ``allow`` (such as 404) are returned; 401 and 403 raise
        :class:`NotConnected`; other refusals :class:`SourceError`; running out of tries
        :class:`SourceUnavailable`."""
        where = f"{method} {path}"
        headers = {"Authorization": f"Bearer {self._key()}"}
        try:
            response = self._retrying(self._send, method, path, params, json_body, headers)
        except Retryable as exc:
            raise SourceUnavailable(f"mattero answered {exc.status} to {where} on every try") from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise SourceUnavailable(f"mattero could not be reached ({type(exc).__name__} on {where})") from None
        status = response.status_code
        if status in allow or status < 400:
            return response
        body = json_object(response)
        detail = body.get("message") or body.get("error") or body.get("title")
        detail = f": {detail}" if isinstance(detail, str) and detail else ""
        if status in (401, 403):
            raise NotConnected(f"mattero refused the API key in {self.key_env} ({status}{detail}): check the key in "
                               "mattero's global settings, then `ocgate sources connect NAME`")
        if status == 402:
            raise SourceError(f"mattero answered 402 Payment Required to {where}: the organisation's subscription "
                              "does not include the API", retryable=False)
        raise SourceError(f"mattero answered {status} to {where}{detail}", retryable=False)

    def _send(self, method: str, path: str, params: Any, json_body: Any, headers: dict[str, str]) -> httpx.Response:
        response = self._http.request(method, path, params=params, json=json_body, headers=headers)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(response.status_code, retry_after(response))
        return response

    def get(self, path: str, params: Any = None, *, allow: tuple[int, ...] = ()) -> dict[str, Any] | None:
        """A JSON object, or None for an answer in ``allow`` (a 404)."""
        response = self.request("GET", path, params=params, allow=allow)
        return None if response.status_code in allow and response.status_code >= 400 else json_object(response)

    def walk(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every record of a list, by id. mattero pages by offset, so a record added or removed while the list is
        paged shifts the others: when the pages disagree on ``totalRecords`` or the ids read do not add up to it,
        the list is walked again (up to :data:`WALKS` times; what every walk read is kept)."""
        found: dict[str, dict[str, Any]] = {}
        for _ in range(WALKS):
            totals: set[int] = set()
            read: set[str] = set()
            index = 0
            while True:
                data = self.get(path, {**(params or {}), NAMES.page_index: index, NAMES.page_size: PAGE_SIZE}) or {}
                records = [r for r in data.get(NAMES.records) or [] if isinstance(r, dict) and r.get(NAMES.id)]
                total = data.get(NAMES.total)
                if isinstance(total, int):
                    totals.add(total)
                for record in records:
                    found[str(record[NAMES.id])] = record
                    read.add(str(record[NAMES.id]))
                index += 1
                if len(records) < PAGE_SIZE or (isinstance(total, int) and index * PAGE_SIZE >= total):
                    break
            if len(totals) <= 1 and (not totals or len(read) == next(iter(totals))):
                break
            log.info("mattero's %s changed while it was paged (totals %s, %d read): reading it again", path,
                     sorted(totals), len(read))
        return list(found.values())


# Mapping ---------------------------------------------------------------------------------------------

def _name_key(text: str | None) -> str:
    """A person's name for matching: NFC, case-folded, single spaces; ``Last, First`` as ``first last``."""
    text = unicodedata.normalize("NFC", text or "").strip()
    if "," in text:
        last, _, first = text.partition(",")
        text = f"{first.strip()} {last.strip()}"
    return " ".join(text.split()).casefold()


def _custom(record: Mapping[str, Any], names: str, wanted: str) -> str | None:
    """The value of the custom field named ``wanted`` (case and spaces aside), as text."""
    key = " ".join(wanted.split()).casefold()
    for item in record.get(names) or []:
        if isinstance(item, dict) and " ".join(str(item.get(NAMES.field_name) or "").split()).casefold() == key:
            value = item.get(NAMES.field_value)
            if value is None or isinstance(value, bool):
                return None
            text = str(value).strip()
            return text or None
    return None


def _ref_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get(NAMES.id)
    return str(value) if value not in (None, "") else None


@dataclass
class Lookups:
    """mattero's matters, clients and staff as a pull needs them: read once, and read again when a name is missing
    (a matter opened since)."""

    matters: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> matter
    numbers: dict[str, str] = field(default_factory=dict)  # matter number -> id
    contacts: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # id -> contact (None: none such)
    staff: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name key -> staff contacts
    loaded: set[str] = field(default_factory=set)

    def keep_matter(self, matter: dict[str, Any]) -> None:
        matter_id = str(matter[NAMES.id])
        old = self.matters.get(matter_id)
        if old is not None and self.numbers.get(str(old.get(NAMES.number))) == matter_id:
            del self.numbers[str(old.get(NAMES.number))]
        self.matters[matter_id] = matter
        if matter.get(NAMES.number) is not None:
            self.numbers[str(matter[NAMES.number])] = matter_id

    def keep_staff(self, people: Iterable[dict[str, Any]]) -> None:
        self.staff = {}
        for person in people:
            keys = {_name_key(person.get(NAMES.name)),
                    _name_key(f"{person.get(NAMES.first_name) or ''} {person.get(NAMES.last_name) or ''}")}
            for key in keys - {""}:
                self.staff.setdefault(key, []).append(person)


class MatteroSource:
    """One mattero organisation as a source of canonical entries."""

    kind: ClassVar[str] = KIND

    def __init__(self, name: str, settings: Mapping[str, Any], store: TokenStore, *, tenant: str = "",
                 environ: Mapping[str, str], transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.name, self.settings, self.store = name, dict(settings), store
        self._tenant = tenant
        self.client = MatteroClient(settings, environ=environ, transport=transport, sleep=sleep)
        self.lookups = Lookups()
        self._mapping: ExportMapping | None = None
        self.rejected: list[str] = []  # rows the mapping left out, in this pull

    @property
    def tenant(self) -> str:
        if not self._tenant:
            self._tenant = _setting(self.settings, "organisation")
        return self._tenant

    @property
    def mapping(self) -> ExportMapping:
        if self._mapping is None:
            try:
                self._mapping = load_mapping(_setting(self.settings, "mapping"))
            except MappingError as exc:
                raise SourceError(f"mattero: the mapping cannot be used: {exc.message}", retryable=False) from None
        return self._mapping

    def close(self) -> None:
        self.client.close()

    # pulling

    def exports(self) -> list[tuple[Path, str]]:
        """The export files waiting in ``export_dir``, oldest first, with their content hashes."""
        folder = Path(str(self.settings.get("export_dir") or ""))
        if not folder.is_dir():
            raise SourceError(f"mattero: the export directory {str(folder)!r} does not exist (setting export_dir)",
                              retryable=False)
        found = []
        for path in folder.iterdir():
            if path.name.startswith((".", "~$")) or path.suffix.lower() not in EXPORT_SUFFIXES or not path.is_file():
                continue
            found.append((path.stat().st_mtime_ns, path.name, path))
        return [(path, _digest(path)) for _, _, path in sorted(found)]

    def pull(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Each export not taken yet (every one when ``full``), in pages of :data:`PAGE_ENTRIES` entries."""
        state = json.loads(cursor) if cursor else {}
        resuming = bool(state.get("file")) and bool(state.get("full")) == full
        taken: list[str] = list(state.get("taken") or [])
        if full and not resuming:
            taken = []
        skip_file, skip = (state.get("file"), int(state.get("row") or 0)) if resuming else (None, 0)
        self.rejected = []
        files = self.exports()
        waiting = [(path, digest) for path, digest in files if digest not in taken]
        for path, digest in waiting:
            read = self._read(path)
            entries = read.entries[skip:] if digest == skip_file else read.entries
            done = len(read.entries) - len(entries)
            if not entries:
                taken.append(digest)
                yield Page(entries=[], cursor=json.dumps({"taken": taken, "full": full}), pulled=read.rows)
                continue
            for start in range(0, len(entries), PAGE_ENTRIES):
                chunk = self._enrich_all(entries[start:start + PAGE_ENTRIES])
                done += len(chunk)
                last = done >= len(read.entries)
                if last:
                    taken.append(digest)
                    next_cursor = {"taken": taken, "full": full}
                else:
                    next_cursor = {"taken": taken, "full": full, "file": digest, "row": done}
                pulled = len(chunk) + (read.rows - len(read.entries) if last else 0)
                yield Page(entries=chunk, cursor=json.dumps(next_cursor), pulled=pulled, total=read.rows)

    def _read(self, path: Path) -> Any:
        try:
            read = read_mapped(path, self.mapping)
        except UnreadableFile as exc:
            raise SourceError(f"mattero: {path.name} cannot be read with mapping {self.mapping.name}: "
                              + "; ".join(exc.problems or [exc.message]), retryable=False) from None
        if read.problems:
            lines = [str(problem) for problem in read.problems]
            self.rejected += lines
            for line in lines:
                log.warning("mattero export row left out: %s", line)
            try:
                path.with_name(path.name + ".problems.txt").write_text(
                    f"{read.skipped} row(s) of {path.name} left out by mapping {self.mapping.name}:\n"
                    + "\n".join(lines) + "\n", encoding="utf-8")
            except OSError as exc:
                log.warning("could not write the problems of %s beside it: %s", path.name, exc)
        return read

    # enrichment

    def _enrich_all(self, entries: list[Entry]) -> list[Entry]:
        self._load()
        missing = {e.law_firm_matter_id for e in entries if e.law_firm_matter_id not in self.lookups.numbers}
        missing.discard(None)
        if missing and "matters-again" not in self.lookups.loaded:
            self.lookups.loaded.add("matters-again")  # a matter opened since the list was read: once per pull
            for matter in self.client.walk(NAMES.matters):
                self.lookups.keep_matter(matter)
        unknown_staff = {_name_key(e.timekeeper_name) for e in entries if e.timekeeper_name} - set(self.lookups.staff)
        if unknown_staff and "staff-again" not in self.lookups.loaded:
            self.lookups.loaded.add("staff-again")
            self.lookups.keep_staff(self.client.walk(NAMES.contacts, {NAMES.staff_type: NAMES.staff_value}))
        return [self.enrich(entry) for entry in entries]

    def _load(self) -> None:
        if "matters" not in self.lookups.loaded:
            for matter in self.client.walk(NAMES.matters):
                self.lookups.keep_matter(matter)
            self.lookups.loaded.add("matters")
        if "staff" not in self.lookups.loaded:
            self.lookups.keep_staff(self.client.walk(NAMES.contacts, {NAMES.staff_type: NAMES.staff_value}))
            self.lookups.loaded.add("staff")

    def contact(self, contact_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        if fresh or contact_id not in self.lookups.contacts:
            found = self.client.get(NAMES.contact.format(id=contact_id), allow=(404,))
            self.lookups.contacts[contact_id] = found if found and found.get(NAMES.id) else None
        return self.lookups.contacts[contact_id]

    def enrich(self, entry: Entry) -> Entry:
        """Fill in what mattero's matters, clients and staff say about an entry (in place, and return it). The
        flags this raises are recomputed each time, so an entry enriched again after a fix loses them."""
        flags = [flag for flag in entry.data_quality_flags if flag not in SOURCE_FLAGS]
        entry.source_tenant = self.tenant
        entry.connector_version = CONNECTOR_VERSION
        matter_id = self.lookups.numbers.get(entry.law_firm_matter_id or "")
        matter = self.lookups.matters.get(matter_id) if matter_id else None
        if matter is None:
            flags.append("UNKNOWN_MATTER")
        else:
            entry.matter_source_id = str(matter[NAMES.id])
            entry.matter_name = matter.get(NAMES.title) or entry.matter_name
            entry.client_matter_id = _custom(matter, NAMES.custom_fields, _setting(self.settings,
                                                                                   "client_matter_field"))
            currency = _custom(matter, NAMES.custom_fields, _setting(self.settings, "currency_field"))
            if currency:
                entry.currency = currency.upper()
            client_id = _ref_id(matter.get(NAMES.client))
            client = self.contact(client_id) if client_id else None
            entry.client_source_id = client_id
            entry.client_name = (client or {}).get(NAMES.name) or (matter.get(NAMES.client) or {}).get(NAMES.name)
            entry.ledes_client_id = _custom(client, NAMES.contact_custom_fields,
                                            _setting(self.settings, "ledes_client_field")) if client else None
            if not entry.ledes_client_id:
                flags.append("NO_LEDES_CLIENT_ID")
        if entry.timekeeper_name:
            people = self.lookups.staff.get(_name_key(entry.timekeeper_name), [])
            ids = {str(p[NAMES.id]) for p in people}
            if len(ids) == 1:
                person = people[0]
                entry.timekeeper_source_id = str(person[NAMES.id])
                entry.timekeeper_first_name = person.get(NAMES.first_name) or entry.timekeeper_first_name
                entry.timekeeper_last_name = person.get(NAMES.last_name) or entry.timekeeper_last_name
            else:
                entry.timekeeper_source_id = None
                flags.append("AMBIGUOUS_STAFF" if ids else "UNKNOWN_STAFF")
        if units_mismatch(entry):
            flags.append("UNITS_MISMATCH")
        entry.data_quality_flags = sorted(set(flags))
        return entry

    # one record

    def fetch(self, record_id: str, known_version: str | None = None) -> list[Entry] | Unchanged | None:
        """A time or expense record as mattero has it now (None once it is gone). ``matter:ID`` and ``contact:ID``
        (what a webhook is about) give the stored entries that refer to that matter or contact, enriched again."""
        model, _, remote_id = record_id.partition(":") if ":" in record_id else ("", "", record_id)
        if model in ("matter", "contact"):
            return self._refresh(model, remote_id)
        for path, kind in ((NAMES.time_record, EntryKind.TIME), (NAMES.expense_record, EntryKind.EXPENSE)):
            record = self.client.get(path.format(id=record_id), allow=(404,))
            if record is not None:
                self._load()
                return [self.enrich(self.to_entry(record, kind, record_id))]
        return None

    def to_entry(self, record: Mapping[str, Any], kind: EntryKind, record_id: str) -> Entry:
        """A time or expense record from the API, mapped as the export's row of it is (the same cost code tables,
        units, flat fees and reconciliation)."""
        flags: list[str] = []
        matter = record.get(NAMES.matter_ref) or {}
        staff = record.get(NAMES.staff_ref) or {}
        code = (record.get(NAMES.cost_code) or {}).get(NAMES.name)
        rules = {rule.field: rule for rule in self.mapping.rules}
        fields: dict[str, Any] = {
            "source_system": KIND, "source_tenant": self.tenant, "source_id": str(record.get(NAMES.record_id)
                                                                                   or record_id),
            "entry_kind": kind, "work_date": str(record.get(NAMES.date) or "")[:10] or None,
            "law_firm_matter_id": matter.get(NAMES.number), "matter_source_id": matter.get(NAMES.number),
            "matter_name": matter.get(NAMES.title), "timekeeper_name": staff.get(NAMES.name),
            "source_task_label": code, "narrative": record.get(NAMES.description) or "",
            "rate": record.get(NAMES.rate), "amount": record.get(NAMES.amount), "tax_amount": record.get(NAMES.gst),
            "tax_inclusive": False, "tax_code": "GST", "written_off": bool(record.get(NAMES.written_off)),
        }
        currency = rules.get("currency")
        if currency is not None and currency.constant:
            fields["currency"] = currency.constant
        target = "utbms_activity_code" if kind is EntryKind.TIME else "utbms_expense_code"
        rule = rules.get(target)
        if rule is not None and code and rule.convert is not None:
            try:
                fields[target] = rule.convert(code)
            except Unlisted:
                flags.append(rule.flag)
            except ValueError:
                flags.append(rule.flag)
        if kind is EntryKind.TIME:
            minutes, units = record.get(NAMES.minutes), record.get(NAMES.units)
            method = record.get(NAMES.costing_method) or "Time"
            basis = {"Time": FeeBasis.HOURLY, "Fixed": FeeBasis.FLAT, "CostTemplate": FeeBasis.FIXED_TEMPLATE}.get(
                method, FeeBasis.HOURLY)
            fields["fee_basis"] = basis
            if minutes is not None:
                fields["duration_seconds_raw"] = int(Decimal(minutes) * 60)
                fields["hours_worked"] = _hours(Decimal(minutes))
            if units is not None:
                fields["hours_billed"] = _hours(Decimal(units) * UNIT_MINUTES)
            if basis in (FeeBasis.FLAT, FeeBasis.FIXED_TEMPLATE):
                fields["quantity"] = Decimal(1)
                fields["rate"] = fields["amount"]
        else:
            fields["fee_basis"] = FeeBasis.UNIT
        entry = Entry.model_validate(fields)
        units = entry.quantity
        if entry.fee_basis is FeeBasis.HOURLY and units is not None and entry.rate is not None \
                and entry.amount is not None and abs(units * entry.rate - entry.amount) > CENT:
            flags.append("AMOUNT_MISMATCH")
        entry.data_quality_flags = sorted(set(flags))
        return entry

    def _refresh(self, model: str, remote_id: str) -> list[Entry]:
        """A matter or contact changed: read it again, then enrich again the stored entries that refer to it."""
        self._load()
        if model == "matter":
            matter = self.client.get(NAMES.matter.format(id=remote_id), allow=(404,))
            if not matter or not matter.get(NAMES.id):
                return []
            self.lookups.keep_matter(matter)
            client_id = _ref_id(matter.get(NAMES.client))
            if client_id:
                self.contact(client_id, fresh=True)
            where = [EntryRow.law_firm_matter_id == str(matter.get(NAMES.number))]
            if client_id:
                where.append(EntryRow.client_source_id == client_id)
            stored = [e for e in self._stored(or_(*where)) if e.matter_source_id == remote_id]
        else:
            if self.contact(remote_id, fresh=True) is None:
                return []
            self.lookups.keep_staff(self.client.walk(NAMES.contacts, {NAMES.staff_type: NAMES.staff_value}))
            stored = self._stored(or_(EntryRow.client_source_id == remote_id, EntryRow.timekeeper_key == remote_id))
        return [self.enrich(entry) for entry in stored]

    def _stored(self, where: Any) -> list[Entry]:
        sessions: sessionmaker[Session] | None = getattr(self.store, "sessions", None)
        if sessions is None:
            log.warning("mattero: no database to find the entries a matter or contact event changes")
            return []
        with sessions() as session:
            records = session.scalars(select(EntryRow.record).where(
                EntryRow.source_system == KIND, EntryRow.source_tenant == self.tenant,
                EntryRow.state != EntryState.WITHDRAWN, where))
            return [Entry.model_validate({**record, "source_version": None}) for record in records]

    # webhooks

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str],
                       query: Mapping[str, str] | None = None) -> Delivery:
        """A delivery is genuine when its callback path ends with this source's token (mattero signs nothing);
        its body only says which matter or contact to read again."""
        given = (query or {}).get(PATH_TOKEN) or ""
        credentials = self.store.load() or {}
        expected = str(credentials.get("webhook_token") or "")
        if not expected:
            raise WebhookRejected("this source has no webhook token yet: run `ocgate sources webhooks`")
        if not given or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            raise WebhookRejected("the callback token is missing or wrong")
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("the body is not JSON") from None
        if not isinstance(payload, dict) or not payload.get(NAMES.entity_type):
            raise WebhookRejected("not a mattero webhook delivery")
        event_name = str(payload.get(NAMES.entity_type))
        entity = payload.get(NAMES.entity_id)
        known = EVENTS.get(event_name)
        key = hashlib.sha256(body).hexdigest()
        hint = {NAMES.entity_type: event_name, NAMES.entity_id: entity}  # nothing else of the body is kept
        if known is None or not isinstance(entity, str | int) or not str(entity):
            return Delivery(key=key, event=event_name, model=None, record_id=None, payload=hint)
        event, model = known
        return Delivery(key=key, event=event, model=model, record_id=f"{model}:{entity}", payload=hint)

    def callback_url(self, public_url: str) -> str:
        return f"{public_url.rstrip('/')}/{webhook_token(self.store)}"

    def register_webhooks(self, public_url: str) -> list[Subscription]:
        """Subscribe the source's callback URL to mattero's matter and contact events, once each: a subscription
        mattero already has is kept, and one for this ocgate with another (older) token is deleted."""
        callback = self.callback_url(public_url)
        prefix = public_url.rstrip("/") + "/"
        existing = self._subscriptions()
        have = {(r.get(NAMES.event_name), r.get(NAMES.callback_url)) for r in existing}
        for record in existing:
            url = str(record.get(NAMES.callback_url) or "")
            if url.startswith(prefix) and url != callback and record.get(NAMES.id) is not None:
                self.client.request("DELETE", NAMES.webhook.format(id=record[NAMES.id]), allow=(404,))
        for event_name in EVENTS:
            if (event_name, callback) not in have:
                self.client.request("POST", NAMES.webhooks, json_body={NAMES.event_name: event_name,
                                                                       NAMES.callback_url: callback})
        mine = [r for r in self._subscriptions() if r.get(NAMES.callback_url) == callback]
        return [_subscription(record) for record in mine]

    def _subscriptions(self) -> list[dict[str, Any]]:
        return self.client.walk(NAMES.webhooks)

    def webhook_state(self, subscription: Subscription) -> Subscription:
        """Enabled while mattero lists it (mattero has no handshake and no expiry), else ``missing``."""
        for record in self._subscriptions():
            if str(record.get(NAMES.id)) == subscription.remote_id:
                return _subscription(record)
        return Subscription(remote_id=subscription.remote_id, model=subscription.model, url=subscription.url,
                            events=subscription.events, secret=None, status="missing", expires_at=None)

    def renew_webhook(self, subscription: Subscription) -> Subscription:
        """mattero's subscriptions do not expire: nothing to renew."""
        return subscription


def _subscription(record: Mapping[str, Any]) -> Subscription:
    event_name = str(record.get(NAMES.event_name) or "")
    model = EVENTS.get(event_name, ("", "other"))[1]
    return Subscription(remote_id=str(record.get(NAMES.id)), model=model, url=str(record.get(NAMES.callback_url)),
                        events=[event_name], secret=None, status="enabled", expires_at=None)


def units_mismatch(entry: Entry) -> bool:
    """Whether an hourly time entry's billed units are not its minutes rounded up to whole 6-minute units."""
    if entry.entry_kind is not EntryKind.TIME or entry.fee_basis is not FeeBasis.HOURLY:
        return False
    if entry.duration_seconds_raw is None or entry.hours_billed is None:
        return False
    units = entry.hours_billed * 60 / UNIT_MINUTES
    expected = math.ceil(Decimal(entry.duration_seconds_raw) / (60 * UNIT_MINUTES))
    return units != expected


def _hours(minutes: Decimal) -> Decimal:
    hours = minutes / 60
    return hours if hours == hours.quantize(HOURS_PLACES) else hours.quantize(HOURS_PLACES, rounding=ROUND_HALF_UP)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]

