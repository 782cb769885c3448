"""Efimis (Practice Evolve group, AU and UK): work items pulled into the canonical model through the GraphQL
reporting query, OAuth 2.0 client credentials, webhooks.

Efimis publishes little beyond the GraphQL sample, the token request and the webhook envelope (connectors.md 2B);
what it leaves open follows connectors.md 9.1, and every name that comes from there is marked **[assumed]** in
:data:`FIELDS` (one table, which a firm corrects with the ``field_names`` setting) or beside the code using it.

* **Tokens**: client credentials at the identity host (12-hour tokens), renewed five minutes before they expire
  and at once when a call answers 401 ``invalid_token`` (key rollover). Kept through the ``TokenStore``.
* **Pull**: ``GetRows`` over the firm's billing-period window (``entryPeriod``), every state, deleted items
  included, sorted on work date then ``id`` (a unique order: no ties to come back shuffled), 500 rows a slice.
  Paging is by row offset, which a concurrent change shifts: each slice starts a few rows before the previous one
  ended, and goes on after the last row it already had (an anchor), so a row removed or added ahead of the
  position neither skips nor repeats one. An anchor is known by its id and its work date: one re-dated since it was
  read has moved in the order and is not trusted (the slice would otherwise jump to its new place and pass over
  the rows in between); the one before it is. Any other row re-dated across the position is missed or read twice
  by this pull, and, being changed after the pull began, is taken by the next one.
  ``EXECUTION_TIMEOUT``, 429 (``Retry-After``), 5xx, timeouts and dropped connections are retried with jittered,
  bounded backoff.
* **Cursor**: GraphQL has no "updated since", so every pull reads the whole window; an incremental pull maps
  only the rows whose ``modifiedOn`` is at or after the start of the last complete pull (less an overlap), and
  ingest skips an id whose ``version`` it has. Mid-pull the cursor holds the row reached and its anchors, so a
  killed sync resumes there. A full pull maps every row and withdraws every item that is not live.
* **Live items**: only ``Finalised`` and ``Billed`` items are entries. ``Pending`` items are the fee earner's
  drafts: not ingested, and withdrawn if they were (unfinalised). ``WrittenOff`` and ``Deleted`` are withdrawn.
* **Webhooks**: ``PUT v1/webhooks`` with an id derived from the source (idempotent); the secret is ocgate's. The
  signature covers only ``requestId|timestamp``: it is checked in constant time, a timestamp outside the tolerance
  is refused, the request id is the delivery key (a replay is refused by the store), and the work item is
  re-fetched before anything is trusted.

A value that cannot be mapped is a data-quality flag on the entry, never a default: a task type without a UTBMS
mapping is ``UNMAPPED_TASK_TYPE``, not L120; ``totalBase`` is the amount, and a difference from units x rate is
``AMOUNT_MISMATCH``, never corrected.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import tenacity

from connectors.http import Retryable, RetryWait, retry_after
from connectors.sources.base import (
    UNCHANGED,
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

log = logging.getLogger("ocgate.efimis")

KIND = "efimis"
REGIONS = {"au": "https://api.au.efimis.com", "uk": "https://api.uk.efimis.com"}
REGION_CURRENCIES = {"au": "AUD", "uk": "GBP"}  # a tenant bills in its base currency (connectors.md 6.1)
TOKEN_URL = "https://id.efimis.com/27833600-9a90-49d8-a577-590a7f0072ca/b2c_1a_idp_aad_multi/oauth2/v2.0/token"
SCOPE = "https://id.efimis.com/efimis-api/.default"
SLICE_ROWS = 500  # GetRows answers at most 500 rows a slice [assumed]
LIST_PAGE = 200  # REST lists take pageSize 1..200 [assumed]
ANCHORS = 20  # rows each slice re-reads before the position, to find its place again
RESTARTS = 3  # a pull that loses its place more often than this stops, to resume later
PERIOD_MONTHS = 3
TOLERANCE_SECONDS = 300
REFRESH_MARGIN = dt.timedelta(minutes=5)
TICKS_PER_SECOND = 10_000_000  # durationTicks are .NET ticks of 100 ns [assumed]
TICKS_PER_HOUR = Decimal(TICKS_PER_SECOND * 3600)
HOURS_PLACES = Decimal("0.0001")
CENT = Decimal("0.01")
CONNECTOR_VERSION = "ocgate-efimis/1"

# Efimis's names for what ocgate reads: work-item columns of GetRows (the same names on GET /v1/workitems/{id}
# [assumed]) and fields of the REST records. Those not in Efimis's public documentation are [assumed]
# (connectors.md 9.1); a tenant that spells one differently is corrected by the ``field_names`` setting.
FIELDS: dict[str, str] = {
    "id": "id",  # [assumed] the work item's id, a GUID
    "version": "version",  # [assumed] grows with every change
    "modified_on": "modifiedOn",  # [assumed] instant of the last change
    "work_date": "entryDate",
    "matter_id": "matterId",
    "matter_number": "matterNumber",
    "matter_name": "matterName",  # [assumed]
    "client_id": "clientId",  # [assumed]
    "fee_earner_id": "employeeId",
    "fee_earner_name": "employeeSortName",
    "state": "state",
    "item_type": "itemType",
    "task_type_id": "taskTypeId",  # [assumed]
    "task_type_name": "taskTypeName",
    "narrative": "title",
    "rate": "rate",
    "units": "units",
    "unit_minutes": "unitDuration",
    "amount": "totalBase",
    "duration_ticks": "durationTicks",
    "billable": "billable",  # [assumed]
    "write_off_date": "writeOffDate",  # [assumed]
    "record_id": "id",  # [assumed] every REST record's id
    "fee_earner_first_name": "firstName",  # [assumed] /v1/entities
    "fee_earner_last_name": "lastName",  # [assumed] /v1/entities
    "client_code": "code",  # [assumed] /v1/clients
    "client_name": "name",  # [assumed] /v1/clients
    "matter_client_reference": "clientReference",  # [assumed] /v1/matters: the client's own matter number
    "matter_client_id": "clientId",  # [assumed] /v1/matters
    "task_type_code": "code",  # [assumed] /v1/tasktypes
    "task_type_label": "name",  # [assumed] /v1/tasktypes
}
ASSUMED = frozenset({
    "id", "version", "modified_on", "matter_name", "client_id", "task_type_id", "billable", "write_off_date",
    "record_id", "fee_earner_first_name", "fee_earner_last_name", "client_code", "client_name",
    "matter_client_reference", "matter_client_id", "task_type_code", "task_type_label"})
COLUMNS = ("id", "version", "modified_on", "work_date", "matter_id", "matter_number", "matter_name", "client_id",
           "fee_earner_id", "fee_earner_name", "state", "item_type", "task_type_id", "task_type_name", "narrative",
           "rate", "units", "unit_minutes", "amount", "duration_ticks", "billable", "write_off_date")

TIMED, ITEMISED = "TimedFee", "ItemisedFee"
LIVE_STATES = {"Finalised": EntryStatus.APPROVED, "Billed": EntryStatus.BILLED}  # Pending, WrittenOff, Deleted: not
WORK_ITEM_EVENTS = ("WorkItemCreated", "WorkItemUpdated", "WorkItemFinalised", "WorkItemUnfinalised",
                    "WorkItemWrittenOff", "WorkItemDeleted")  # [assumed] event type ids
# [assumed] the text of the query; Efimis documents its operation name and variables.
GET_ROWS = ("query GetRows($criteria: WorkItemCriteriaInput!, $slice: SliceInput!) "
            "{ getRows(criteria: $criteria, slice: $slice) { rowData lastRow } }")
TRANSIENT_GRAPHQL = frozenset({"EXECUTION_TIMEOUT"})

SETTINGS = {
    "region": "au or uk: picks Efimis's host (api.au.efimis.com, api.uk.efimis.com) and the tenant's currency",
    "base_url": "Efimis's API host instead of region's (any URL, e.g. a test server)",
    "tenant": "the firm's tenant alias, as in https://api.au.efimis.com/{tenant}/",
    "token_url": f"the client-credentials token endpoint (default {TOKEN_URL})",
    "client_id": "the application's client id, issued by Efimis",
    "client_secret_env": "the environment variable holding the client secret (default OCGATE_EFIMIS_CLIENT_SECRET)",
    "scope": f"the token scope (default {SCOPE})",
    "currency": "the tenant's billing currency (default: AUD for au, GBP for uk)",
    "period_from": "the first work date synced, YYYY-MM-DD (instead of period_months)",
    "period_months": f"sync work dated in this many months, the current one included (default {PERIOD_MONTHS})",
    "overlap_minutes": "how far back before the last sync an incremental sync takes changes (default 5)",
    "task_type_codes": 'UTBMS codes by task type code or name: {"DRAFT": {"task": "L250", "activity": "A103"}}',
    "ledes_client_ids": 'LEDES client ids by Efimis client code or id: {"ACME": "ACME01"}',
    "field_names": "corrections to the Efimis field names ocgate assumes: {\"matter_name\": \"matterTitle\"}",
    "webhook_tolerance_seconds": f"how far a webhook's timestamp may be from now (default {TOLERANCE_SECONDS})",
    "sync_interval_minutes": "the worker syncs the source this often (default: only when asked)",
    "timeout": "seconds before a request is given up and retried (default 30)",
    "max_attempts": "tries per request before the sync stops, to resume later (default 6)",
    "webhook_public_url": "the URL Efimis posts webhooks to (set by `ocgate sources webhooks`)",
}
SECRET_KEYS = ("client_secret", "secret", "access_token", "token", "password", "webhook_secret")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# Settings ----------------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> list[str]:
    """What is missing, unknown or unsafe in an Efimis source's settings (empty when usable)."""
    problems = [f"Efimis needs {key}" for key in ("client_id", "tenant") if not settings.get(key)]
    region = settings.get("region")
    if not region and not settings.get("base_url"):
        problems.append("Efimis needs region (au or uk) or base_url")
    if region and region not in REGIONS:
        problems.append(f"region {region!r} is not one of {', '.join(REGIONS)}")
    if not region and not settings.get("currency"):
        problems.append("without region, Efimis needs currency (the tenant's billing currency, e.g. AUD)")
    if settings.get("tenant") and not _TENANT.match(str(settings["tenant"])):
        problems.append(f"tenant {settings['tenant']!r} is not a tenant alias (letters, digits, - _ .)")
    for key in SECRET_KEYS:
        if key in settings:
            problems.append(f"never store {key} in settings: put the client secret in an environment variable and "
                            "name it in client_secret_env")
    for key in ("period_months", "overlap_minutes", "webhook_tolerance_seconds", "sync_interval_minutes", "timeout",
                "max_attempts"):
        if key in settings and not (isinstance(settings[key], int | float) and settings[key] > 0):
            problems.append(f"{key} must be a positive number")
    if "period_from" in settings:
        try:
            dt.date.fromisoformat(str(settings["period_from"]))
        except ValueError:
            problems.append(f"period_from {settings['period_from']!r} is not a date: write YYYY-MM-DD")
    problems += _check_task_type_codes(settings.get("task_type_codes", {}))
    clients = settings.get("ledes_client_ids", {})
    if not isinstance(clients, dict) or not all(isinstance(v, str) and v for v in clients.values()):
        problems.append('ledes_client_ids must map client codes to LEDES client ids: {"ACME": "ACME01"}')
    names = settings.get("field_names", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) and v for v in names.values()):
        problems.append('field_names must map ocgate names to Efimis names: {"matter_name": "matterTitle"}')
    else:
        problems += [f"field_names: {key!r} is not one of ocgate's names ({', '.join(FIELDS)})"
                     for key in names if key not in FIELDS]
    problems += [f"unknown setting {key!r} (known: {', '.join(SETTINGS)})" for key in settings if key not in SETTINGS]
    return problems


def _check_task_type_codes(mapping: Any) -> list[str]:
    if not isinstance(mapping, dict):
        return ['task_type_codes must map task types to codes: {"DRAFT": {"task": "L250", "activity": "A103"}}']
    problems = []
    for task_type, codes in mapping.items():
        if not isinstance(codes, dict) or not codes.get("task") or set(codes) - {"task", "activity"}:
            problems.append(f"task_type_codes[{task_type!r}]: write {{\"task\": \"L250\", \"activity\": \"A103\"}} "
                            "(activity optional)")
            continue
        for kind in ("task", "activity"):
            code = codes.get(kind)
            if code is not None and (not isinstance(code, str) or code_kind(code) not in _KINDS_OF[kind]):
                problems.append(f"task_type_codes[{task_type!r}]: {code!r} is not a UTBMS {kind} code")
    return problems


_KINDS_OF = {"task": ("task", "phase"), "activity": ("activity",)}


def host(settings: Mapping[str, Any]) -> str:
    return str(settings.get("base_url") or REGIONS[settings.get("region", "au")]).rstrip("/")


def _secret(settings: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    name = settings.get("client_secret_env", "OCGATE_EFIMIS_CLIENT_SECRET")
    value = environ.get(name)
    if not value:
        raise NotConnected(f"Efimis: the client secret is not set: export {name}")
    return value


def connect(settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
            transport: httpx.BaseTransport | None = None, code: str | None = None,
            refresh_token: str | None = None) -> None:
    """Obtain a first token with the client credentials and keep it; check that the tenant has enabled the
    application (Efimis answers 403 until a tenant administrator does, in the tenant's settings)."""
    if code is not None or refresh_token is not None:
        raise NotConnected("Efimis uses client credentials: run `ocgate sources connect NAME` without a code or "
                           "refresh token")
    client = EfimisClient(settings, store, environ=environ, transport=transport)
    try:
        client.connect()
    finally:
        client.close()


def open_source(name: str, settings: Mapping[str, Any], store: TokenStore, *, tenant: str = "",
                environ: Mapping[str, str], transport: httpx.BaseTransport | None = None,
                sleep: Any = time.sleep) -> EfimisSource:
    return EfimisSource(name, settings, store, environ=environ, transport=transport, sleep=sleep)


# HTTP ------------------------------------------------------------------------------------------------

def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)  # amounts and units stay exact
    except ValueError:
        return None


def _problem(response: httpx.Response) -> str:
    """What an error answer says, from its RFC 7807 problem details or OAuth error; never the request."""
    data = _json(response)
    if not isinstance(data, dict):
        return ""
    parts = [str(data[key]) for key in ("title", "detail", "error", "message") if isinstance(data.get(key), str)]
    return ": ".join(parts)[:300]


class EfimisClient:
    """Authenticated, retried requests to one tenant's REST and GraphQL API."""

    def __init__(self, settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.settings, self.store, self.environ = settings, store, environ
        self.tenant_alias = str(settings["tenant"])
        self._credentials: dict[str, Any] | None = None
        timeout = float(settings.get("timeout", 30))
        self._http = httpx.Client(base_url=f"{host(settings)}/{self.tenant_alias}", timeout=timeout,
                                  transport=transport, headers={"User-Agent": CONNECTOR_VERSION})
        self._identity = httpx.Client(timeout=timeout, transport=transport, headers={"User-Agent": CONNECTOR_VERSION})
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((Retryable, httpx.TimeoutException, httpx.TransportError)),
            wait=RetryWait(), stop=tenacity.stop_after_attempt(int(settings.get("max_attempts", 6))),
            sleep=sleep, reraise=True)

    def close(self) -> None:
        self._http.close()
        self._identity.close()

    # tokens

    def connect(self) -> None:
        """A fresh token, and proof that the tenant has enabled the application."""
        self._credentials = {}
        self.get("/v1/entities", {"page": 1, "pageSize": 1})

    def _token(self) -> str:
        if self._credentials is None:
            self._credentials = self.store.load() or {}
        expires_at = self._credentials.get("expires_at")
        if not self._credentials.get("access_token") or not expires_at or \
                dt.datetime.fromisoformat(expires_at) - REFRESH_MARGIN <= dt.datetime.now(dt.UTC):
            self._renew()
        return self._credentials["access_token"]

    def _renew(self) -> None:
        """A new token by the client credentials grant (there is no refresh token), stored at once."""
        form = {"grant_type": "client_credentials", "client_id": str(self.settings["client_id"]),
                "client_secret": _secret(self.settings, self.environ), "scope": self.settings.get("scope", SCOPE)}
        response = self._identity.post(str(self.settings.get("token_url", TOKEN_URL)), data=form)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(f"the token endpoint answered {response.status_code}", retry_after(response))
        answer = _json(response)
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            # Only the error code and its description: the body never echoes the secret, the request would.
            raise NotConnected(f"Efimis refused the client credentials ({response.status_code} "
                               f"{_problem(response) or 'no token'}): check client_id, the client secret and scope")
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(answer.get("expires_in") or 3600))
        self._credentials = {"access_token": answer["access_token"], "expires_at": expires_at.isoformat()}
        self.store.save(self._credentials, expires_at)
        log.info("Efimis access token obtained")

    # requests

    def request(self, method: str, path: str, *, params: Any = None, body: Any = None,
                allow: tuple[int, ...] = ()) -> tuple[httpx.Response, Any]:
        """One call, retried, with a new token once when Efimis says the token is no longer valid. Returns the
        answer and its JSON (parsed only for 2xx answers). Answers in ``allow`` (such as 404) are returned; other
        4xx raise :class:`SourceError`; running out of retries raises :class:`SourceUnavailable`."""
        where = f"{method} {path}"
        renewed = False
        while True:
            try:
                response, data = self._retrying(self._exchange, method, path, params, body)
            except Retryable as exc:
                raise SourceUnavailable(f"Efimis answered {exc.what} to {where} on every try") from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise SourceUnavailable(f"Efimis could not be reached ({type(exc).__name__} on {where})") from None
            if response.status_code == 401 and not renewed:
                renewed = True  # a key rollover ends a token before expires_in says: get another, once
                self._credentials = {}
                continue
            break
        if response.status_code < 400 or response.status_code in allow:
            return response, data
        problem = _problem(response)
        if response.status_code == 401:
            raise NotConnected(f"Efimis refused a new access token ({problem or 'invalid_token'}): check the "
                               "application's client id and secret")
        if response.status_code == 403:
            raise NotConnected(f"tenant {self.tenant_alias} has not enabled the application ({problem or '403'}): "
                               "an Efimis administrator of the tenant enables it in the tenant's settings")
        raise SourceError(f"Efimis answered {response.status_code} to {where}" + (f": {problem}" if problem else ""),
                          retryable=False)

    def _exchange(self, method: str, path: str, params: Any, body: Any) -> tuple[httpx.Response, Any]:
        response = self._http.request(method, path, params=params, json=body,
                                      headers={"Authorization": f"Bearer {self._token()}"})
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(response.status_code, retry_after(response))
        data = _json(response) if response.status_code < 300 and response.content else None
        if isinstance(data, dict) and data.get("errors"):
            codes = {str((error.get("extensions") or {}).get("code")) for error in data["errors"]
                     if isinstance(error, dict)}
            if codes & TRANSIENT_GRAPHQL:
                raise Retryable(", ".join(sorted(codes & TRANSIENT_GRAPHQL)))
        return response, data

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params)[1]

    def items(self, path: str) -> Iterator[dict[str, Any]]:
        """Every record of a REST list, page by page."""
        page = 1
        while True:
            data = self.get(path, {"page": page, "pageSize": LIST_PAGE}) or {}
            found = data.get("items") or []
            yield from found
            if not found or page * LIST_PAGE >= int(data.get("totalCount") or 0):
                return
            page += 1

    def rows(self, criteria: dict[str, Any], columns: list[str], sort: list[str], start: int,
             end: int) -> tuple[list[dict[str, Any]], int | None]:
        """One slice of GetRows, sorted on ``sort``, and how many rows match the criteria."""
        slice_ = {"cols": [{"colId": name} for name in columns], "startRow": start, "endRow": end,
                  "sortBy": [{"colId": name, "desc": False} for name in sort], "rowGroups": [], "groupKeys": [],
                  "pivots": [], "totalsOnly": False, "filterZero": False, "filterZeroField": None}
        _, data = self.request("POST", "/graphql", body={"operationName": "GetRows", "query": GET_ROWS,
                                                         "variables": {"criteria": criteria, "slice": slice_}})
        errors = (data or {}).get("errors")
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            code = (first.get("extensions") or {}).get("code")
            raise SourceError(f"Efimis refused the work-item query ({code}: {first.get('message')})", retryable=False)
        found = ((data or {}).get("data") or {}).get("getRows") or {}
        last_row = found.get("lastRow")
        return list(found.get("rowData") or []), last_row if isinstance(last_row, int) else None


# Mapping ---------------------------------------------------------------------------------------------

class Lookups:
    """What work items refer to by id: fee earners, task types, matters and clients. A pull reads each list once;
    an id missing from it (created since) or a webhook's single item is read by id."""

    KINDS = ("entities", "tasktypes", "matters", "clients")

    def __init__(self, client: EfimisClient, names: Mapping[str, str]):
        self.client, self.id_name = client, names["record_id"]
        self.records: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in self.KINDS}

    def load(self) -> None:
        for kind in self.KINDS:
            self.records[kind] = {str(r[self.id_name]): r for r in self.client.items(f"/v1/{kind}")
                                  if r.get(self.id_name) is not None}

    def get(self, kind: str, record_id: Any) -> dict[str, Any]:
        if record_id is None:
            return {}
        key = str(record_id)
        found = self.records[kind].get(key)
        if found is None:
            response, data = self.client.request("GET", f"/v1/{kind}/{key}", allow=(404,))
            found = self.records[kind][key] = data if response.status_code == 200 and isinstance(data, dict) else {}
        return found


def _hours(units: Decimal, minutes: Decimal) -> Decimal:
    """Units of ``minutes`` each, in hours: exact for the usual 6- and 15-minute units, else to 4 places."""
    hours = Decimal(units) * Decimal(minutes) / 60
    exponent = hours.as_tuple().exponent
    return hours.quantize(HOURS_PLACES, ROUND_HALF_UP) if isinstance(exponent, int) and exponent < -4 else hours


def _date(value: Any) -> str | None:
    """``2026-03-10T00:00:00`` (a local date, never converted) as ``2026-03-10``."""
    return value[:10] if isinstance(value, str) and value else None


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _month_start(today: dt.date, months_back: int) -> dt.date:
    index = today.year * 12 + today.month - 1 - months_back
    return dt.date(index // 12, index % 12 + 1, 1)


class EfimisSource:
    """One Efimis tenant as a source of canonical entries."""

    kind: ClassVar[str] = KIND

    def __init__(self, name: str, settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.name, self.settings = name, dict(settings)
        self.client = EfimisClient(settings, store, environ=environ, transport=transport, sleep=sleep)
        self.names = {**FIELDS, **settings.get("field_names", {})}
        self.lookups = Lookups(self.client, self.names)
        region = settings.get("region")
        self.currency = str(settings.get("currency") or REGION_CURRENCIES[region]).upper()
        self._tenant = f"{region or urlsplit(host(settings)).hostname or 'efimis'}/{settings['tenant']}"
        self.overlap = dt.timedelta(minutes=float(settings.get("overlap_minutes", 5)))
        self.task_codes = {str(key).casefold(): value for key, value in settings.get("task_type_codes", {}).items()}
        self.client_ids = {str(key).casefold(): value for key, value in settings.get("ledes_client_ids", {}).items()}
        self.tolerance = float(settings.get("webhook_tolerance_seconds", TOLERANCE_SECONDS))

    @property
    def tenant(self) -> str:
        """``region/tenant alias`` (the alias is in every URL: no call needed)."""
        return self._tenant

    def close(self) -> None:
        self.client.close()

    # pulling

    def window(self, today: dt.date) -> tuple[str, str]:
        """The work dates a pull reads: from ``period_from`` or the start of the month ``period_months`` - 1
        before this one, to a year ahead (a mistyped future date is exactly what a reviewer should see)."""
        if self.settings.get("period_from"):
            first = dt.date.fromisoformat(str(self.settings["period_from"]))
        else:
            first = _month_start(today, int(self.settings.get("period_months", PERIOD_MONTHS)) - 1)
        return first.isoformat(), (today + dt.timedelta(days=366)).isoformat()

    def pull(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        state = json.loads(cursor) if cursor else {}
        if not ("row" in state and bool(state.get("full")) == full):
            started = dt.datetime.now(dt.UTC)
            window = self.window(started.date())
            since = None if full else state.get("since")
            if since and window[0] < state.get("from", window[0]):
                since = None  # the window now reaches further back than the last pull read: read it all once
            state = {"since": since, "from": window[0], "started": started.isoformat(), "full": full,
                     "window": list(window), "row": 0, "anchors": []}
        changed_after = (dt.datetime.fromisoformat(state["since"]) - self.overlap) if state["since"] else None
        criteria = {"entryPeriod": {"fixedPeriod": {"min": state["window"][0], "max": state["window"][1]},
                                    "relativePeriod": None},
                    "includeDeleted": True, "noMatter": False, "workItemTypes": [], "states": []}
        columns = [self.names[key] for key in COLUMNS]
        # By work date, then id: unique, so paging is stable, and a batch holds a few days, whose stored entries the
        # daily rules read again, rather than a few of every day in the window (ids are random GUIDs: in id order
        # every batch would reload the stored entries of every day). Anchors carry their work date (see above).
        sort = [self.names["work_date"], self.names["id"]]
        self.lookups = Lookups(self.client, self.names)  # read afresh for each pull
        self.lookups.load()
        tenant, restarts, back = self.tenant, 0, 0
        while True:
            anchors: list[list[str | None]] = state["anchors"]
            start = max(0, state["row"] - len(anchors) - back)
            rows, total = self.client.rows(criteria, columns, sort, start, start + SLICE_ROWS)
            fresh = self._after_anchors(rows, anchors)
            if fresh is None and start > 0:
                back += SLICE_ROWS - ANCHORS  # rows ahead of the position were removed: look further back
                continue
            if fresh is None:
                restarts += 1
                if restarts > RESTARTS:
                    raise SourceUnavailable("Efimis's work items kept changing under the pull: it resumes next time")
                log.warning("Efimis: the rows before position %s changed too much to find it again; the pull reads "
                            "the window again from its start (what it read twice is skipped)", state["row"])
                state, back = {**state, "row": 0, "anchors": []}, 0
                continue
            back = 0
            last = len(rows) < SLICE_ROWS
            state = {**state, "row": start + len(rows), "anchors": [self._anchor(r) for r in rows[-ANCHORS:]]}
            entries, withdrawn = self._map(fresh, tenant, changed_after)
            # Mid-pull: resume after this slice. Complete: the next pull takes changes from this one's start.
            next_cursor = json.dumps({"since": state["started"], "from": state["from"]} if last else state)
            yield Page(entries=entries, withdrawn=withdrawn, cursor=next_cursor, pulled=len(fresh), total=total)
            if last:
                return

    def _anchor(self, row: Mapping[str, Any]) -> list[str | None]:
        """What finds a row again, and tells whether it has moved: its id and its work date."""
        return [str(row.get(self.names["id"])), _date(row.get(self.names["work_date"]))]

    def _after_anchors(self, rows: list[dict[str, Any]],
                       anchors: list[list[str | None]]) -> list[dict[str, Any]] | None:
        """The rows after the last anchor found where it was (all of them at the start); None when none is: rows
        ahead of the position were removed or added beyond what the overlap absorbs, or the anchors were re-dated."""
        if not anchors:
            return rows
        position = {str(row.get(self.names["id"])): index for index, row in enumerate(rows)}
        for anchor_id, work_date in reversed(anchors):
            index = position.get(str(anchor_id))
            if index is not None and _date(rows[index].get(self.names["work_date"])) == work_date:
                return rows[index + 1:]
        return None

    def _map(self, rows: list[dict[str, Any]], tenant: str,
             changed_after: dt.datetime | None) -> tuple[list[Entry], list[str]]:
        """Live rows as entries; the ids of the others to withdraw. An incremental pull skips rows not changed
        since the last complete pull began (less the overlap)."""
        entries, withdrawn = [], []
        n = self.names
        for row in rows:
            if changed_after is not None:
                modified = _instant(row.get(n["modified_on"]))
                if modified is not None and modified < changed_after:
                    continue
            if self._live(row):
                entries.append(self.to_entry(row, tenant))
            elif row.get(n["id"]) is not None:
                withdrawn.append(str(row[n["id"]]))
        return entries, withdrawn

    def _live(self, row: Mapping[str, Any]) -> bool:
        """Finalised or billed, not written off: a work item ready to be billed (or billed already)."""
        return row.get(self.names["state"]) in LIVE_STATES and not row.get(self.names["write_off_date"])

    def fetch(self, record_id: str, known_version: str | None = None) -> list[Entry] | Unchanged | None:
        """The work item as Efimis has it now: None when it is gone (404), or no longer live (back to pending,
        written off, deleted), so that it is withdrawn."""
        response, record = self.client.request("GET", f"/v1/workitems/{record_id}", allow=(404,))
        if response.status_code == 404 or not isinstance(record, dict):
            return None
        version = record.get(self.names["version"])
        if known_version is not None and version is not None and str(version) == known_version:
            return UNCHANGED
        return [self.to_entry(record, self.tenant)] if self._live(record) else None

    def to_entry(self, row: Mapping[str, Any], tenant: str) -> Entry:
        """One live work item in the canonical model."""
        n, lookups, flags = self.names, self.lookups, []
        billable = row.get(n["billable"])
        if billable is None:
            flags.append("UNKNOWN_BILLABLE")
        billable = billable is not False
        matter_id = row.get(n["matter_id"])
        matter = lookups.get("matters", matter_id)
        if matter_id is None:
            flags.append("NO_MATTER")
        client_id = row.get(n["client_id"]) or matter.get(n["matter_client_id"])
        client = lookups.get("clients", client_id)
        ledes_client_id = self._client_ledes_id(client, client_id)
        if matter_id is not None and not ledes_client_id:
            flags.append("NO_LEDES_CLIENT_ID")
        fee_earner = lookups.get("entities", row.get(n["fee_earner_id"]))
        task_type = lookups.get("tasktypes", row.get(n["task_type_id"]))
        label = row.get(n["task_type_name"]) or task_type.get(n["task_type_label"])
        codes = self._task_codes(row.get(n["task_type_id"]), task_type.get(n["task_type_code"]), label)
        if billable:
            if row.get(n["task_type_id"]) is None and not label:
                flags.append("MISSING_UTBMS_TASK")
            elif codes is None:
                flags.append("UNMAPPED_TASK_TYPE")
            elif not codes.get("activity"):
                flags.append("MISSING_UTBMS_ACTIVITY")
        item_type, units, minutes = row.get(n["item_type"]), row.get(n["units"]), row.get(n["unit_minutes"])
        fields: dict[str, Any] = {}
        if units is None:
            flags.append("MISSING_UNITS")
        if item_type == TIMED:
            fields.update(fee_basis=FeeBasis.HOURLY, unit_of_measure="hour")
            if minutes is None:
                flags.append("MISSING_UNIT_DURATION")
            elif units is not None:
                fields["hours_billed"] = _hours(units, minutes)
        elif item_type == ITEMISED:
            fields.update(fee_basis=FeeBasis.FIXED_TEMPLATE, unit_of_measure="each", quantity=units)
        else:
            flags.append("UNKNOWN_ITEM_TYPE")
        ticks = row.get(n["duration_ticks"])
        if isinstance(ticks, int) and ticks > 0:  # 0: no timer ran, which says nothing about the time worked
            fields["duration_seconds_raw"] = ticks // TICKS_PER_SECOND
            fields["hours_worked"] = (Decimal(ticks) / TICKS_PER_HOUR).quantize(HOURS_PLACES, ROUND_HALF_UP)
        rate, amount = row.get(n["rate"]), row.get(n["amount"])
        quantity = fields.get("quantity", fields.get("hours_billed"))
        if billable and quantity is not None and rate is not None and amount is not None \
                and abs(Decimal(quantity) * Decimal(rate) - Decimal(amount)) > CENT:
            flags.append("AMOUNT_MISMATCH")
        version = row.get(n["version"])
        state = row.get(n["state"])
        fields.update(
            source_system=KIND, source_tenant=tenant, source_id=row[n["id"]],
            source_version=None if version is None else str(version),
            source_updated_at=_instant(row.get(n["modified_on"])), connector_version=CONNECTOR_VERSION,
            entry_kind=EntryKind.TIME, entry_subtype=item_type, matter_source_id=matter_id,
            law_firm_matter_id=row.get(n["matter_number"]),
            client_matter_id=matter.get(n["matter_client_reference"]),
            matter_name=row.get(n["matter_name"]), client_source_id=client_id,
            client_name=client.get(n["client_name"]), ledes_client_id=ledes_client_id,
            timekeeper_source_id=row.get(n["fee_earner_id"]), timekeeper_name=row.get(n["fee_earner_name"]),
            timekeeper_first_name=fee_earner.get(n["fee_earner_first_name"]),
            timekeeper_last_name=fee_earner.get(n["fee_earner_last_name"]),
            work_date=_date(row.get(n["work_date"])), rate=rate, amount=amount, currency=self.currency,
            utbms_task_code=(codes or {}).get("task"), utbms_activity_code=(codes or {}).get("activity"),
            source_task_label=label, narrative=row.get(n["narrative"]) or "", billable=billable,
            status=LIVE_STATES.get(state, EntryStatus.PENDING), source_status=state,
            data_quality_flags=sorted(set(flags)))
        return Entry.model_validate(fields)

    def _task_codes(self, task_type_id: Any, code: Any, label: Any) -> dict[str, str] | None:
        """The UTBMS codes the firm maps the task type to: by its code, else its name, else its id."""
        for key in (code, label, task_type_id):
            if key is not None and (found := self.task_codes.get(str(key).casefold())) is not None:
                return found
        return None

    def _client_ledes_id(self, client: Mapping[str, Any], client_id: Any) -> str | None:
        for key in (client.get(self.names["client_code"]), client_id):
            if key is not None and (found := self.client_ids.get(str(key).casefold())):
                return found
        return None

    # webhooks

    @property
    def webhook_id(self) -> str:
        """This source's subscription id: fixed, so registering again replaces it rather than adding one (Efimis
        allows five per tenant)."""
        return "webhook_" + hashlib.sha256(f"ocgate:{self.tenant}:{self.name}".encode()).hexdigest()[:32]

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str],
                       query: Mapping[str, str] | None = None) -> Delivery:
        """Check ``X-PE2-WEBHOOK-SIGNATURE`` (base64 HMAC-SHA256 of ``requestId|timestamp``, not of the body) in
        constant time against every subscription's secret, and the timestamp's age. The body is unsigned: only its
        work item id is used, as a hint to re-fetch."""
        lowered = {k.lower(): v for k, v in headers.items()}
        request_id = lowered.get("x-pe2-request-id", "").strip()
        stamp = lowered.get("x-pe2-timestamp", "").strip()
        given = lowered.get("x-pe2-webhook-signature", "").strip()
        if not request_id or not stamp or not given:
            raise WebhookRejected("no X-PE2-REQUEST-ID, X-PE2-TIMESTAMP or X-PE2-WEBHOOK-SIGNATURE")
        try:
            signature = base64.b64decode(given, validate=True)
        except ValueError:
            raise WebhookRejected("the signature is not base64") from None
        signed = f"{request_id}|{stamp}".encode()
        matches = [hmac.compare_digest(hmac.new(secret.encode(), signed, hashlib.sha256).digest(), signature)
                   for secret in secrets.values()]
        if not any(matches):
            raise WebhookRejected("the signature does not match")
        sent_at = _instant(stamp)
        if sent_at is None or abs((dt.datetime.now(dt.UTC) - sent_at).total_seconds()) > self.tolerance:
            raise WebhookRejected("the timestamp is missing or outside the tolerance (a stale or replayed delivery)")
        try:
            payload = json.loads(body)
            data = json.loads(payload["data"]) if isinstance(payload.get("data"), str) else {}
        except (ValueError, TypeError, AttributeError, KeyError):
            raise WebhookRejected("not an Efimis webhook delivery") from None
        if str(payload.get("requestId", request_id)) != request_id:
            raise WebhookRejected("the body's requestId is not the signed one")
        event = str(payload.get("type") or "")
        work_item = event in WORK_ITEM_EVENTS and isinstance(data, dict) and data.get("workItemId") is not None
        return Delivery(key=request_id, event=event, model="workitem" if work_item else event or None,
                        record_id=str(data["workItemId"]) if work_item else None,
                        payload={"type": event, "requestId": request_id, "timestamp": stamp})

    def register_webhooks(self, public_url: str) -> list[Subscription]:
        return [self._put_webhook(public_url)]

    def _put_webhook(self, url: str) -> Subscription:
        """Create or replace this source's subscription, with a new secret of ocgate's making."""
        secret = secrets.token_urlsafe(32)
        response, data = self.client.request("PUT", "/v1/webhooks", allow=(409,), body={
            "id": self.webhook_id, "enabled": True, "url": url, "secret": secret, "events": list(WORK_ITEM_EVENTS)})
        if response.status_code == 409:
            raise SourceError(f"Efimis refused the webhook ({_problem(response)}): a tenant has at most 5 "
                              "subscriptions; delete one it no longer needs", retryable=False)
        found = data if isinstance(data, dict) else {}
        return Subscription(remote_id=self.webhook_id, model="workitem", url=found.get("url") or url,
                            events=list(found.get("events") or WORK_ITEM_EVENTS), secret=secret,
                            status="enabled" if found.get("enabled", True) else "disabled", expires_at=None)

    def webhook_state(self, subscription: Subscription) -> Subscription:
        """The subscription as Efimis lists it: enabled, disabled, or missing (deleted at Efimis)."""
        found = next((hook for hook in self.client.items("/v1/webhooks") if hook.get("id") == subscription.remote_id),
                     None)
        status = "missing" if found is None else "enabled" if found.get("enabled") else "disabled"
        return Subscription(remote_id=subscription.remote_id, model=subscription.model,
                            url=(found or {}).get("url") or subscription.url,
                            events=list((found or {}).get("events") or subscription.events),
                            secret=subscription.secret, status=status, expires_at=None)

    def renew_webhook(self, subscription: Subscription) -> Subscription:
        """Efimis subscriptions do not expire: renewing puts the same id again (with a new secret), which also
        re-enables one Efimis disabled."""
        return self._put_webhook(subscription.url)
