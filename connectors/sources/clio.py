"""Clio Manage API v4: time and expense entries (activities) pulled into the canonical model, OAuth 2.0,
webhooks.

Faithful to the public API (connectors.md section 1 summarises it):

* ``X-API-VERSION`` is pinned (4.0.9); the version Clio echoes is checked, and a different one is logged
  once. ``quantity`` is seconds from 4.0.4 on (hours before), so hours are read from
  ``quantity_in_hours``/``rounded_quantity_in_hours`` whatever the version, and seconds derived by version.
* Activities are read with an explicit ``fields=`` list, ``order=id(asc)``, ``limit=200``, following
  ``meta.paging.next``; incremental pulls by ``updated_since`` with an overlap window (duplicates are
  harmless: ingest skips a record whose etag it has).
* Rate limits: ``X-RateLimit-Remaining``/``Reset`` are read on every answer and the next request waits for
  the window to reset when none are left, so a sync under the limit causes no 429; a 429 waits for its
  ``Retry-After``; 5xx, timeouts and dropped connections are retried with jittered, bounded backoff
  (tenacity). ``If-None-Match`` makes re-fetching an unchanged record cheap.
* OAuth: access tokens are refreshed shortly before they expire and once when a 401 says so; refreshed
  tokens are stored at once (encrypted, by the workflow), and never logged or put in an error.
* Webhooks: ``X-Hook-Secret`` handshake echoed; ``X-Hook-Signature`` is HMAC-SHA256 of the raw body, compared
  in constant time; the body is only a hint, the record is re-fetched.

A value that cannot be mapped is a data-quality flag on the entry, never a silent default: a redacted
quantity is not zero (``REDACTED_SOURCE``), a missing UTBMS code is not ``L120`` (``MISSING_UTBMS_TASK``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import tenacity

from connectors.http import Retryable, RetryWait, json_object, retry_after
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
from engine.model import Entry, EntryKind, EntryStatus, FeeBasis

log = logging.getLogger("ocgate.clio")

KIND = "clio"
REGIONS = {"us": "https://app.clio.com", "ca": "https://ca.app.clio.com", "eu": "https://eu.app.clio.com",
           "au": "https://au.app.clio.com"}
API_VERSION = "4.0.9"
SECONDS_SINCE = (4, 0, 4)  # TimeEntry quantity is in seconds from this version on
PAGE_SIZE = 200
WEBHOOK_DAYS = 31  # Clio's maximum; renewed well before
REFRESH_MARGIN = dt.timedelta(minutes=5)
CONNECTOR_VERSION = "ocgate-clio/1"
SETTINGS = {
    "region": "us, ca, eu or au: picks Clio's host",
    "base_url": "Clio's host, e.g. https://app.clio.com (instead of region; any URL, e.g. a test server)",
    "client_id": "the developer application's client id",
    "client_secret_env": "the environment variable holding the application's client secret",
    "redirect_uri": "the redirect URI registered on the application (default: urn:ietf:wg:oauth:2.0:oob)",
    "api_version": f"the X-API-VERSION to pin (default {API_VERSION})",
    "overlap_minutes": "how far back each incremental pull reaches before the last one (default 5)",
    "sync_interval_minutes": "the worker syncs the source this often (default: only when asked)",
    "timeout": "seconds before a request is given up and retried (default 30)",
    "max_attempts": "tries per request before the sync stops, to resume later (default 6)",
    "webhook_public_url": "the URL Clio posts webhooks to (set by `ocgate sources webhooks`)",
}
REQUIRED = ("client_id",)

_CODE_FIELDS = "id,code,name,type"
_SUB_FIELDS = "id,etag,url,fields,shared_secret,model,status,events,expires_at"
ACTIVITY_FIELDS = ",".join((
    "id", "etag", "type", "date", "quantity", "rounded_quantity", "quantity_in_hours", "rounded_quantity_in_hours",
    "quantity_redacted", "price", "total", "non_billable_total", "note", "flat_rate", "billed", "on_bill",
    "non_billable", "no_charge", "contingency_fee", "tax_setting", "reference", "created_at", "updated_at",
    "currency",
    "activity_description{id,name,type,category_type,utbms_task_id,utbms_activity_id,utbms_task_name}",
    "utbms_expense{id,code,name,type}",
    "expense_category{id,name,entry_type}",
    "matter{id,number,display_number,description,client_id,client_reference,currency,status,billing_method}",
    "user{id,name,first_name,last_name,initials,rate,subscription_type,enabled}",
    "bill{id,number,state}",
))
TIME_TYPES = frozenset({"TimeEntry"})
EXPENSE_TYPES = frozenset({"ExpenseEntry", "HardCostEntry", "SoftCostEntry"})
HOURS_FIELDS = ("quantity", "rounded_quantity", "quantity_in_hours", "rounded_quantity_in_hours", "total",
                "non_billable_total")


# Settings ----------------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> list[str]:
    """What is missing, unknown or unsafe in a Clio source's settings (empty when usable)."""
    problems = [f"Clio needs {key}" for key in REQUIRED if not settings.get(key)]
    if not settings.get("region") and not settings.get("base_url"):
        problems.append("Clio needs region (us, ca, eu or au) or base_url")
    if settings.get("region") and settings["region"] not in REGIONS:
        problems.append(f"region {settings['region']!r} is not one of {', '.join(REGIONS)}")
    for key in ("client_secret", "access_token", "refresh_token", "password", "token"):
        if key in settings:
            problems.append(f"never store {key} in settings: put the client secret in an environment variable "
                            "and name it in client_secret_env; tokens come from `ocgate sources connect`")
    for key in ("overlap_minutes", "sync_interval_minutes", "timeout", "max_attempts"):
        if key in settings and not (isinstance(settings[key], int | float) and settings[key] > 0):
            problems.append(f"{key} must be a positive number")
    problems += [f"unknown setting {key!r} (known: {', '.join(SETTINGS)})" for key in settings if key not in SETTINGS]
    return problems


def host(settings: Mapping[str, Any]) -> str:
    return str(settings.get("base_url") or REGIONS[settings.get("region", "us")]).rstrip("/")


def _secret(settings: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    name = settings.get("client_secret_env", "OCGATE_CLIO_CLIENT_SECRET")
    value = environ.get(name)
    if not value:
        raise NotConnected(f"Clio: the client secret is not set: export {name}")
    return value


def _version_tuple(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in (text or "").split("."))
    except ValueError:
        return ()


# OAuth 2.0 --------------------------------------------------------------------------------------------

def authorize_url(settings: Mapping[str, Any], state: str) -> str:
    """Where the firm's Clio admin approves the application (the authorization-code flow)."""
    query = urlencode({"response_type": "code", "client_id": settings["client_id"],
                       "redirect_uri": settings.get("redirect_uri", "urn:ietf:wg:oauth:2.0:oob"), "state": state})
    return f"{host(settings)}/oauth/authorize?{query}"


def code_from(text: str, expected_state: str | None = None) -> str:
    """The authorization code from what the admin pasted: the code itself, or the whole redirect URL."""
    text = text.strip()
    if "://" not in text and "?" not in text:
        return text
    query = parse_qs(urlsplit(text).query)
    if "error" in query:
        raise NotConnected(f"Clio refused the authorization: {query['error'][0]}")
    if expected_state is not None and query.get("state", [None])[0] != expected_state:
        raise NotConnected("the redirect URL's state does not match this request: start `connect` again")
    if "code" not in query:
        raise NotConnected("no code in the redirect URL")
    return query["code"][0]


def _tokens(answer: dict[str, Any], previous_refresh: str | None = None) -> tuple[dict[str, Any], dt.datetime]:
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(answer.get("expires_in") or 2_592_000))
    credentials = {"access_token": answer["access_token"],
                   "refresh_token": answer.get("refresh_token") or previous_refresh,
                   "expires_at": expires_at.isoformat()}
    return credentials, expires_at


def _token_request(settings: Mapping[str, Any], form: dict[str, str], environ: Mapping[str, str],
                   transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    form = {**form, "client_id": settings["client_id"], "client_secret": _secret(settings, environ)}
    try:
        with httpx.Client(base_url=host(settings), timeout=float(settings.get("timeout", 30)),
                          transport=transport) as client:
            response = client.post("/oauth/token", data=form)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"Clio's token endpoint could not be reached: {type(exc).__name__}") from None
    if response.status_code >= 500:
        raise SourceUnavailable(f"Clio's token endpoint answered {response.status_code}")
    if response.status_code != 200:
        # The body may echo what was sent; only its error code is shown.
        error = json_object(response).get("error", "refused") if response.content else "refused"
        raise NotConnected(f"Clio refused the token request ({response.status_code} {error}): connect again")
    return json_object(response)


def connect_with_code(settings: Mapping[str, Any], code: str, store: TokenStore, *,
                      environ: Mapping[str, str], transport: httpx.BaseTransport | None = None) -> None:
    answer = _token_request(settings, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": settings.get("redirect_uri", "urn:ietf:wg:oauth:2.0:oob")},
                            environ, transport)
    store.save(*_tokens(answer))


def connect_with_refresh_token(settings: Mapping[str, Any], refresh_token: str, store: TokenStore, *,
                               environ: Mapping[str, str], transport: httpx.BaseTransport | None = None) -> None:
    answer = _token_request(settings, {"grant_type": "refresh_token", "refresh_token": refresh_token}, environ,
                            transport)
    store.save(*_tokens(answer, refresh_token))


def connect(settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
            transport: httpx.BaseTransport | None = None, code: str | None = None,
            refresh_token: str | None = None) -> None:
    """Keep Clio's tokens: from the authorization code an administrator's approval gave, or from an existing
    refresh token."""
    if code is not None:
        connect_with_code(settings, code, store, environ=environ, transport=transport)
    elif refresh_token is not None:
        connect_with_refresh_token(settings, refresh_token, store, environ=environ, transport=transport)
    else:
        raise NotConnected("Clio is connected with the code its approval page gives, or a refresh token")


def open_source(name: str, settings: Mapping[str, Any], store: TokenStore, *, tenant: str = "",
                environ: Mapping[str, str], transport: httpx.BaseTransport | None = None,
                sleep: Any = time.sleep) -> ClioSource:
    return ClioSource(name, settings, store, tenant=tenant, environ=environ, transport=transport, sleep=sleep)


# HTTP ------------------------------------------------------------------------------------------------

@dataclass
class _Pacer:
    """Clio's rate-limit window, as its headers describe it: when no requests are left, wait for the reset.

    Requests may run at once (the next page is fetched while lookups are made), so each request takes its
    slot before it is sent, and an answer's count is lowered by the requests still in flight: two requests
    never both spend the last one."""

    remaining: int | None = None  # requests left in the window, less those sent since the last answer
    reset_at: float | None = None  # unix time the window ends
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, sleep: Any = time.sleep) -> None:
        """Wait, if need be, for a request slot, and take it."""
        while True:
            with self.lock:
                now = time.time()
                if self.reset_at is not None and now >= self.reset_at and self.remaining is not None:
                    self.remaining = None  # a new window: the next answer says how much of it is left
                if self.remaining is None or self.remaining > 0 or self.reset_at is None:
                    if self.remaining is not None:
                        self.remaining -= 1
                    self.in_flight += 1
                    return
                pause = self.reset_at - now
            log.info("Clio rate limit: waiting %.1f s for the window to reset", pause)
            sleep(min(pause + 0.05, 120.0))

    def done(self, response: httpx.Response | None) -> None:
        """A request came back (``None``: it failed without an answer); read the window from its headers."""
        headers = response.headers if response is not None else {}
        remaining, reset = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset")
        with self.lock:
            self.in_flight -= 1
            if remaining is not None and remaining.lstrip("-").isdigit():
                self.remaining = int(remaining) - self.in_flight
            if reset is not None:
                try:
                    self.reset_at = float(reset)
                except ValueError:
                    pass


class ClioClient:
    """Authenticated, paced and retried requests to one Clio account's API."""

    def __init__(self, settings: Mapping[str, Any], store: TokenStore, *, environ: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.settings, self.store, self.environ, self.sleep = settings, store, environ, sleep
        self.version = str(settings.get("api_version", API_VERSION))
        self.echoed: str | None = None
        self.pacer = _Pacer()
        self._credentials: dict[str, Any] | None = None
        self._transport = transport
        self._http = httpx.Client(base_url=host(settings) + "/api/v4", timeout=float(settings.get("timeout", 30)),
                                  transport=transport, headers={"X-API-VERSION": self.version,
                                                                "User-Agent": CONNECTOR_VERSION})
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((Retryable, httpx.TimeoutException, httpx.TransportError)),
            wait=RetryWait(), stop=tenacity.stop_after_attempt(int(settings.get("max_attempts", 6))),
            sleep=sleep, reraise=True)

    def close(self) -> None:
        self._http.close()

    # tokens

    def _token(self) -> str:
        if self._credentials is None:
            self._credentials = self.store.load()
        if not self._credentials or not self._credentials.get("access_token"):
            raise NotConnected("Clio is not connected yet: run `ocgate sources connect NAME`")
        expires_at = dt.datetime.fromisoformat(self._credentials["expires_at"])
        if expires_at - REFRESH_MARGIN <= dt.datetime.now(dt.UTC):
            self._refresh()
        return self._credentials["access_token"]

    def _refresh(self) -> None:
        refresh_token = (self._credentials or {}).get("refresh_token")
        if not refresh_token:
            raise NotConnected("Clio's access token expired and there is no refresh token: connect again")
        answer = _token_request(self.settings, {"grant_type": "refresh_token", "refresh_token": refresh_token},
                                self.environ, self._transport)
        self._credentials, expires_at = _tokens(answer, refresh_token)
        self.store.save(self._credentials, expires_at)
        log.info("Clio access token refreshed")

    # requests

    def request(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
                etag: str | None = None, allow: tuple[int, ...] = ()) -> httpx.Response:
        """One API call, paced, retried, re-authenticated once on a 401. Answers in ``allow`` (such as 404)
        are returned; other 4xx raise :class:`SourceError`; running out of retries raises
        :class:`SourceUnavailable`."""
        refreshed = False
        where = f"{method} {path.split('?', 1)[0]}"  # no query: page tokens and field lists make poor messages
        while True:
            try:
                response = self._retrying(self._send, method, path, params, json_body, etag)
            except Retryable as exc:
                raise SourceUnavailable(f"Clio answered {exc.status} to {where} on every try") from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise SourceUnavailable(f"Clio could not be reached ({type(exc).__name__} on {where})") from None
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._refresh()
                continue
            break
        if response.status_code in allow or response.status_code < 400:
            return response
        error = json_object(response).get("error")
        detail = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        if response.status_code == 401:
            raise NotConnected(f"Clio refused the access token after a refresh ({detail or 'invalid_token'}): "
                               "connect again")
        if response.status_code == 410:
            raise SourceError(f"Clio does not serve API version {self.version} (410 Gone): set api_version",
                              retryable=False)
        raise SourceError(f"Clio answered {response.status_code} to {where}"
                          + (f": {detail}" if detail else ""), retryable=False)

    def _send(self, method: str, path: str, params: Any, json_body: Any, etag: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token()}"}
        if etag:
            headers["If-None-Match"] = etag
        self.pacer.take(self.sleep)
        response = None
        try:
            response = self._http.request(method, path, params=params, json=json_body, headers=headers)
        finally:
            self.pacer.done(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(response.status_code, retry_after(response))
        echoed = response.headers.get("X-API-VERSION")
        if echoed and echoed != self.echoed:
            if echoed != self.version:
                log.warning("Clio answered with API version %s, not the %s asked for", echoed, self.version)
            self.echoed = echoed
        return response

    def get(self, path: str, params: Any = None, **kwargs: Any) -> dict[str, Any]:
        return json_object(self.request("GET", path, params=params, **kwargs))

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
        """Each page of a list, with the ``next`` URL that resumes after it (None on the last)."""
        url: str | None = path
        query: Any = params
        while url:
            data = self.get(url, query)
            following = (data.get("meta") or {}).get("paging", {}).get("next")
            yield data, following
            url, query = (self._relative(following), None) if following else (None, None)

    def _relative(self, url: str) -> str:
        """A ``next`` URL as a path under the API root (Clio gives it absolute)."""
        parts = urlsplit(url)
        path = parts.path.split("/api/v4", 1)[-1] if "/api/v4" in parts.path else parts.path
        return f"{path}?{parts.query}" if parts.query else path

    @property
    def seconds_quantity(self) -> bool:
        """Whether TimeEntry ``quantity`` is in seconds in the answers (by the version Clio echoed)."""
        return _version_tuple(self.echoed or self.version) >= SECONDS_SINCE


# Mapping ---------------------------------------------------------------------------------------------

def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _code(currency: Any) -> str | None:
    if isinstance(currency, dict):
        return currency.get("code")
    return currency if isinstance(currency, str) and currency else None


@dataclass
class Lookups:
    """What activities refer to by id, fetched once per pull and cached: UTBMS codes, clients' LEDES ids,
    currencies, the firm's billing currency."""

    codes: dict[int, str] = field(default_factory=dict)  # UTBMS code id -> "L120"
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    currencies: dict[int, str] = field(default_factory=dict)
    billing_currency: str | None = None
    loaded: set[str] = field(default_factory=set)


class ClioSource:
    """One Clio account as a source of canonical entries."""

    kind: ClassVar[str] = KIND

    def __init__(self, name: str, settings: Mapping[str, Any], store: TokenStore, *, tenant: str = "",
                 environ: Mapping[str, str], transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep):
        self.name, self.settings, self._tenant = name, dict(settings), tenant
        self.client = ClioClient(settings, store, environ=environ, transport=transport, sleep=sleep)
        self.lookups = Lookups()
        self.overlap = dt.timedelta(minutes=float(settings.get("overlap_minutes", 5)))

    @property
    def tenant(self) -> str:
        if not self._tenant:
            self._tenant = self.identify()
        return self._tenant

    def identify(self) -> str:
        """``region/account id`` of the connected user (Clio ids are unique per region)."""
        me = self.client.get("/users/who_am_i.json", {"fields": "id,name,account{id,name}"}).get("data") or {}
        account = (me.get("account") or {}).get("id")
        if account is None:
            raise SourceError("Clio did not say which account the token belongs to", retryable=False)
        region = self.settings.get("region") or urlsplit(host(self.settings)).hostname or "clio"
        return f"{region}/{account}"

    def close(self) -> None:
        self.client.close()

    # pulling

    def pull(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        state = json.loads(cursor) if cursor else {}
        resuming = bool(state.get("next")) and bool(state.get("full")) == full
        if not resuming:
            since = None if full else state.get("since")
            state = {"since": since, "started": dt.datetime.now(dt.UTC).isoformat(), "full": full, "next": None,
                     "after": None}
        params: dict[str, Any] = {"fields": ACTIVITY_FIELDS, "order": "id(asc)", "limit": PAGE_SIZE}
        if state["since"]:
            since_at = dt.datetime.fromisoformat(state["since"]) - self.overlap
            params["updated_since"] = since_at.isoformat().replace("+00:00", "Z")
        tenant = self.tenant
        start: tuple[str, Any] = (self.client._relative(state["next"]), None) if resuming else ("/activities.json",
                                                                                                   params)
        try:
            pages = self.client.pages(*start)
            first = next(pages, None)
        except SourceError as exc:
            if not resuming or exc.retryable:
                raise
            log.warning("Clio refused the saved page token (%s); the pull restarts from its beginning", exc)
            state.update(next=None, after=None)
            pages = self.client.pages("/activities.json", params)
            first = next(pages, None)
        if first is None:
            return
        for data, following in _chain(first, pages):
            records = data.get("data") or []
            entries = self._map(records, tenant)
            last = records[-1]["id"] if records else state["after"]
            covers = (state["after"], last if following else None) if state["full"] else None
            state["after"], state["next"] = last, following
            # Mid-pull: resume after this page. Complete: the next pull starts where this one started.
            next_cursor = json.dumps(state) if following else json.dumps({"since": state["started"]})
            total = (data.get("meta") or {}).get("records")
            yield Page(entries=entries, cursor=next_cursor, pulled=len(records), covers=covers,
                       total=total if isinstance(total, int) else None)

    def fetch(self, record_id: str, known_version: str | None = None) -> list[Entry] | Unchanged | None:
        response = self.client.request("GET", f"/activities/{record_id}.json", params={"fields": ACTIVITY_FIELDS},
                                       etag=known_version, allow=(304, 404))
        if response.status_code == 404:
            return None
        if response.status_code == 304:
            return UNCHANGED
        record = json_object(response).get("data")
        return self._map([record], self.tenant) if record else None

    def _map(self, records: list[dict[str, Any]], tenant: str) -> list[Entry]:
        self._resolve(records)
        seconds = self.client.seconds_quantity
        return [entry for record in records if (entry := self.to_entry(record, tenant, seconds)) is not None]

    def _resolve(self, records: list[dict[str, Any]]) -> None:
        """Fetch, in a few requests, the codes, clients and currencies these records refer to."""
        lookups = self.lookups
        code_ids: set[int] = set()
        contact_ids: set[int] = set()
        needs_currency = False
        for record in records:
            description = record.get("activity_description") or {}
            for key in ("utbms_task_id", "utbms_activity_id"):
                if description.get(key) is not None and description[key] not in lookups.codes:
                    code_ids.add(description[key])
            client_id = (record.get("matter") or {}).get("client_id")
            if client_id is not None and client_id not in lookups.contacts:
                contact_ids.add(client_id)
            if not _code(record.get("currency")) and not _code((record.get("matter") or {}).get("currency")):
                needs_currency = True
        if code_ids and "codes" not in lookups.loaded:
            lookups.loaded.add("codes")  # the whole code list once: a few hundred codes, one or two requests
            for data, _ in self.client.pages("/utbms/codes.json", {"fields": _CODE_FIELDS, "limit": PAGE_SIZE}):
                lookups.codes.update((c["id"], c["code"]) for c in data.get("data") or [] if c.get("code"))
            code_ids -= set(lookups.codes)
        for chunk in _chunks(sorted(code_ids), 100):  # codes added since the list was read
            found = self.client.get("/utbms/codes.json", [("fields", _CODE_FIELDS), *(("ids[]", i) for i in chunk)])
            lookups.codes.update((c["id"], c["code"]) for c in found.get("data") or [] if c.get("code"))
            lookups.codes.update((i, "") for i in chunk if i not in lookups.codes)  # unknown: asked once
        for chunk in _chunks(sorted(contact_ids), 100):
            found = self.client.get("/contacts.json", [("fields", "id,name,ledes_client_id,currency"),
                                                      *(("ids[]", i) for i in chunk)])
            lookups.contacts.update((c["id"], c) for c in found.get("data") or [])
            lookups.contacts.update((i, {}) for i in chunk if i not in lookups.contacts)
        if needs_currency and "billing" not in lookups.loaded:
            lookups.loaded.add("billing")
            settings = self.client.get("/settings/billing.json", {"fields": "id,currency"}).get("data") or {}
            lookups.billing_currency = _code(settings.get("currency"))

    def to_entry(self, record: dict[str, Any], tenant: str, seconds: bool = True) -> Entry | None:
        """One activity in the canonical model (None for a kind of activity that is not billed)."""
        kind = record.get("type")
        if kind not in TIME_TYPES and kind not in EXPENSE_TYPES:
            return None
        flags: list[str] = []
        matter = record.get("matter") or {}
        user = record.get("user") or {}
        description = record.get("activity_description") or {}
        contact = self.lookups.contacts.get(matter.get("client_id"), {}) if matter.get("client_id") else {}
        redacted = [key for key in HOURS_FIELDS if record.get("quantity_redacted") and record.get(key) is None]
        if record.get("quantity_redacted") or (kind in TIME_TYPES and record.get("rounded_quantity_in_hours") is None):
            flags.append("REDACTED_SOURCE")
            redacted = redacted or ["quantity"]
        currency = (_code(record.get("currency")) or _code(matter.get("currency"))
                    or _code(contact.get("currency")) or self.lookups.billing_currency)
        if not currency:
            flags.append("NO_CURRENCY")
        ledes_client_id = contact.get("ledes_client_id")
        if matter and not ledes_client_id:
            flags.append("NO_LEDES_CLIENT_ID")
        if not matter:
            flags.append("NO_MATTER")
        status = EntryStatus.BILLED if record.get("billed") else EntryStatus.ON_BILL if record.get("on_bill") \
            else EntryStatus.PENDING
        bill = record.get("bill") or {}
        fields: dict[str, Any] = dict(
            source_system=KIND, source_tenant=tenant, source_id=record["id"], source_version=record.get("etag"),
            source_created_at=record.get("created_at"), source_updated_at=record.get("updated_at"),
            api_version=self.client.echoed, connector_version=CONNECTOR_VERSION, entry_subtype=kind,
            matter_source_id=_id(matter.get("id")), law_firm_matter_id=matter.get("display_number"),
            client_matter_id=matter.get("client_reference"), matter_name=matter.get("description"),
            client_source_id=_id(matter.get("client_id")), client_name=contact.get("name"),
            ledes_client_id=ledes_client_id, timekeeper_source_id=_id(user.get("id")),
            timekeeper_name=user.get("name"), timekeeper_first_name=user.get("first_name"),
            timekeeper_last_name=user.get("last_name"), work_date=record["date"], rate=record.get("price"),
            amount=record.get("total"), currency=currency, narrative=record.get("note") or "",
            billable=not record.get("non_billable", False), no_charge=bool(record.get("no_charge")),
            status=status, invoice_ref=_id(bill.get("number")),
            source_status=",".join(key for key in ("billed", "on_bill", "non_billable", "no_charge")
                                   if record.get(key)) or "unbilled",
            redacted_fields=redacted,
        )
        if kind in TIME_TYPES:
            flat = bool(record.get("flat_rate"))
            fields.update(entry_kind=EntryKind.TIME, fee_basis=FeeBasis.FLAT if flat else
                          FeeBasis.CONTINGENCY if record.get("contingency_fee") else FeeBasis.HOURLY,
                          hours_worked=record.get("quantity_in_hours"),
                          hours_billed=record.get("rounded_quantity_in_hours"), unit_of_measure="hour",
                          source_task_label=description.get("utbms_task_name"),
                          source_activity_label=description.get("name"))
            raw = record.get("quantity")
            if raw is not None:
                fields["duration_seconds_raw"] = int(raw if seconds else Decimal(raw) * 3600)
            if flat:
                fields["quantity"] = Decimal(1)
            elif record.get("rounded_quantity_in_hours") is not None:
                fields["quantity"] = record["rounded_quantity_in_hours"]
            for key, target, flag in (("utbms_task_id", "utbms_task_code", "MISSING_UTBMS_TASK"),
                                      ("utbms_activity_id", "utbms_activity_code", "MISSING_UTBMS_ACTIVITY")):
                code_id = description.get(key)
                code = self.lookups.codes.get(code_id) if code_id is not None else None
                if code:
                    fields[target] = code
                elif fields["billable"]:
                    flags.append("UNRESOLVED_UTBMS_CODE" if code_id is not None else flag)
        else:
            expense = record.get("utbms_expense") or {}
            category = record.get("expense_category") or {}
            fields.update(entry_kind=EntryKind.EXPENSE, fee_basis=FeeBasis.UNIT, quantity=record.get("quantity"),
                          unit_of_measure="each", utbms_expense_code=expense.get("code"),
                          source_task_label=category.get("name"))
            if not expense.get("code") and fields["billable"]:
                flags.append("MISSING_UTBMS_EXPENSE")
        entry_quantity, rate, total = fields.get("quantity"), record.get("price"), record.get("total")
        if entry_quantity is not None and rate is not None and total is not None and not fields["no_charge"] \
                and abs(Decimal(entry_quantity) * Decimal(rate) - Decimal(total)) > Decimal("0.01"):
            flags.append("AMOUNT_MISMATCH")
        fields["data_quality_flags"] = sorted(set(flags))
        return Entry.model_validate(fields)

    # webhooks

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str],
                       query: Mapping[str, str] | None = None) -> Delivery:
        lowered = {k.lower(): v for k, v in headers.items()}
        handshake = lowered.get("x-hook-secret")
        if handshake:
            # Clio confirms a new subscription: echo its secret. Harmless for a subscription we did not make:
            # its deliveries would be signed with a secret we do not hold, and refused.
            return Delivery(key="handshake", answer_headers={"X-Hook-Secret": handshake})
        signature = (lowered.get("x-hook-signature") or "").strip().lower()
        if not signature:
            raise WebhookRejected("no X-Hook-Signature")
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("the body is not JSON") from None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(meta, dict) or not isinstance(data, dict):
            raise WebhookRejected("not a Clio webhook delivery")
        secret = secrets.get(str(meta.get("webhook_id")))
        if secret is None:
            raise WebhookRejected("the delivery names no subscription of this source")
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise WebhookRejected("the signature does not match")
        return Delivery(key=hashlib.sha256(body).hexdigest(), event=str(meta.get("event") or ""), model="activity",
                        record_id=_id(data.get("id")), payload=payload)

    def register_webhooks(self, public_url: str) -> list[Subscription]:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=WEBHOOK_DAYS) - dt.timedelta(hours=1)
        response = self.client.request("POST", "/webhooks.json", params={"fields": _SUB_FIELDS}, json_body={
            "data": {"url": public_url, "model": "activity", "events": ["created", "updated", "deleted"],
                     "fields": "id,etag", "expires_at": _iso(expires)}})
        return [_subscription(json_object(response).get("data") or {})]

    def webhook_state(self, subscription: Subscription) -> Subscription:
        """The subscription as Clio has it now (``pending`` until Clio's handshake reached ocgate)."""
        found = _subscription(self.client.get(f"/webhooks/{subscription.remote_id}.json", {"fields": _SUB_FIELDS})
                              .get("data") or {})
        return Subscription(remote_id=subscription.remote_id, model=subscription.model, url=found.url or
                            subscription.url, events=found.events or subscription.events,
                            secret=found.secret or subscription.secret, status=found.status,
                            expires_at=found.expires_at or subscription.expires_at)

    def renew_webhook(self, subscription: Subscription) -> Subscription:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=WEBHOOK_DAYS) - dt.timedelta(hours=1)
        response = self.client.request("PATCH", f"/webhooks/{subscription.remote_id}.json",
                                       params={"fields": _SUB_FIELDS},
                                       json_body={"data": {"expires_at": _iso(expires)}})
        renewed = _subscription(json_object(response).get("data") or {})
        return Subscription(remote_id=subscription.remote_id, model=subscription.model, url=renewed.url or
                            subscription.url, events=renewed.events or subscription.events,
                            secret=renewed.secret or subscription.secret, status=renewed.status,
                            expires_at=renewed.expires_at)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _subscription(data: dict[str, Any]) -> Subscription:
    expires = data.get("expires_at")
    return Subscription(remote_id=_id(data.get("id")) or "", model=data.get("model") or "activity",
                        url=data.get("url") or "", events=list(data.get("events") or []),
                        secret=data.get("shared_secret"), status=data.get("status") or "pending",
                        expires_at=dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def new_state() -> str:
    """An unguessable OAuth ``state`` value."""
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode("ascii")
