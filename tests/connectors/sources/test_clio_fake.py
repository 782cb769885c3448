"""The fake Clio Manage API v4 (connectors/clio/fake.py), over real HTTP on loopback: what it serves matches Clio's
published OpenAPI document, and it behaves as Clio's documentation says (fields, paging, versions, rate limits,
ETags, OAuth, webhooks), faults included."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT4

from connectors.clio.fake import (
    SUPPORTED_VERSIONS,
    FakeClio,
    FakeClioState,
    create_app,
    running_fake_clio,
    serving,
)
from tests.conftest import REPO

# Clio's published OpenAPI document lives beside the project (../shared), not in it: a clone of the project has
# none, and these checks are then skipped (CLIO_OPENAPI names another copy).
_PLACES = [os.environ.get("CLIO_OPENAPI", ""), str(REPO.parent / "shared" / "reference" / "clio" / "openapi.json")]
OPENAPI = next((Path(place) for place in _PLACES if place and Path(place).is_file()), Path(_PLACES[1]))
ACTIVITIES = 300

# What the connector asks for (connectors.md 1.7), and every field the fake serves.
CONNECTOR_FIELDS = (
    "id,etag,type,date,quantity,rounded_quantity,quantity_in_hours,rounded_quantity_in_hours,quantity_redacted,"
    "price,total,non_billable_total,note,flat_rate,billed,on_bill,non_billable,no_charge,contingency_fee,"
    "tax_setting,reference,created_at,updated_at,currency,"
    "activity_description{id,name,type,category_type,utbms_task_id,utbms_activity_id,utbms_task_name},"
    "utbms_expense{id,code,name,type},expense_category{id,name,entry_type},"
    "matter{id,number,display_number,description,client_id,client_reference,currency_id,currency,status,"
    "billing_method},"
    "user{id,name,first_name,last_name,initials,rate,subscription_type,enabled},bill{id,number,state},vendor{id,name}")
ALL_ACTIVITY_FIELDS = (
    "id,etag,type,date,quantity,rounded_quantity,quantity_in_hours,rounded_quantity_in_hours,quantity_redacted,"
    "price,total,non_billable_total,note,flat_rate,billed,on_bill,non_billable,no_charge,contingency_fee,"
    "tax_setting,reference,created_at,updated_at,currency{id,etag,code,sign,created_at,updated_at},"
    "activity_description{id,etag,name,type,category_type,utbms_task_id,utbms_activity_id,utbms_task_name},"
    "utbms_expense{id,etag,code,name,description,type,utbms_set_id,created_at,updated_at},"
    "expense_category{id,etag,name,entry_type},"
    "matter{id,etag,number,display_number,description,status,client_id,client_reference,billable,billing_method,"
    "currency_id,open_date,created_at,updated_at,currency},"
    "user{id,etag,name,first_name,last_name,initials,email,rate,subscription_type,enabled,account_owner,created_at,"
    "updated_at},bill{id,etag,number,state},"
    "vendor{id,etag,name,type,is_client,ledes_client_id,created_at,updated_at,currency}")
CODE_FIELDS = "id,etag,code,name,description,type,utbms_set_id,created_at,updated_at"
CONTACT_FIELDS = "id,etag,name,type,is_client,ledes_client_id,created_at,updated_at,currency{id,code}"
MATTER_FIELDS = ("id,etag,number,display_number,description,status,client_id,client_reference,billable,"
                 "billing_method,currency_id,open_date,created_at,updated_at,client{id,name,ledes_client_id,currency},"
                 "currency{code,sign}")
USER_FIELDS = ("id,etag,name,first_name,last_name,initials,email,rate,subscription_type,enabled,account_owner,"
               "created_at,updated_at,job_title{id,name,initials},account{id,name}")
WEBHOOK_FIELDS = "id,etag,url,fields,shared_secret,model,status,events,expires_at,created_at,updated_at,user{id,name}"
BILLING_FIELDS = ("id,etag,rounding,use_decimal_rounding,currency,currency_sign,use_utbms_codes,"
                  "time_on_flat_rate_contingency_matters_is_non_billable")
HOURS_FIELDS = ("quantity", "rounded_quantity", "quantity_in_hours", "rounded_quantity_in_hours", "total",
                "non_billable_total")


class Clock:
    """A controllable ``time.time`` for the fake."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Receiver:
    """A webhook endpoint on loopback that keeps what it receives and echoes ``X-Hook-Secret`` when ``echo``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.echo = True
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            secret = request.headers.get("x-hook-secret")
            return Response(headers={"X-Hook-Secret": secret} if secret and self.echo else None)


# -- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeClio]:
    with running_fake_clio(activities=ACTIVITIES) as running:
        yield running


@pytest.fixture
def clio(server: FakeClio) -> Iterator[FakeClio]:
    """One server for the module; each test starts from the seeded data and restores what it configured."""
    state = server.state
    config = {name: getattr(state, name) for name in ("rate_limit", "rate_window", "token_ttl", "allow_http_hooks",
                                                      "hook_timeout", "clock")}
    state.reset()
    yield server
    for name, value in config.items():
        setattr(state, name, value)


@pytest.fixture
def clock(clio: FakeClio) -> Clock:
    clio.state.clock = made = Clock()
    return made


def client(clio: FakeClio, version: str | None = "4.0.9", token: str | None = None,
           timeout: float = 5.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or clio.state.issue_tokens()['access_token']}"}
    if version is not None:
        headers["X-API-VERSION"] = version
    return httpx.Client(base_url=clio.api_url, headers=headers, timeout=timeout)


@pytest.fixture
def api(clio: FakeClio) -> Iterator[httpx.Client]:
    with client(clio) as made:
        yield made


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    made = Receiver()
    with serving(made.app) as (url, _):
        yield made, url + "/hook"


def exact(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal)


def pull(api: httpx.Client, path: str = "/activities.json", **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every record of a list, following ``meta.paging.next``; and the number of pages."""
    records: list[dict[str, Any]] = []
    url: str | None = path
    query: Any = params
    pages = 0
    while url:
        response = api.get(url, params=query)
        assert response.status_code == 200, response.text
        body = exact(response)
        records += body["data"]
        pages += 1
        url, query = body["meta"]["paging"].get("next"), None
    return records, pages


def in_process(app: Any, method: str, path: str, **options: Any) -> httpx.Response:
    """A request to an ASGI app in this process, no network."""

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local") as local:
            return await local.request(method, path, **options)

    return asyncio.run(call())


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def verify(secret: str, body: bytes, signature: str) -> bool:
    """The receiver's check, as connectors.md 1.9 gives it."""
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, (signature or "").strip().lower())


def first(state: FakeClioState, **wanted: Any) -> Any:
    return next(a for a in state.activities if all(getattr(a, k) == v for k, v in wanted.items()))


# -- the published OpenAPI document ------------------------------------------------------------------------------

# Fields the seed S003 (the rendered reference) documents that this copy of the OpenAPI document lacks.
DOCUMENTED_ELSEWHERE = {"Matter_base": {"currency_id": {"type": "integer"}}}  # S003:761
LIST_META = {"type": "object", "additionalProperties": False, "properties": {
    "paging": {"type": "object", "additionalProperties": False,
               "properties": {"next": {"type": "string", "format": "uri"}, "previous": {"type": "string"}}},
    "records": {"type": "integer"}}}


def strict(schemas: dict[str, Any]) -> dict[str, Any]:
    """Clio's component schemas, checked harder than as published: ``allOf`` merged into one object that admits no
    undeclared property (so the fake invents no field); every property may be null (the document has no
    ``nullable``, yet Clio sends ``"bill": null``); list envelopes take Clio's ``meta``."""

    def properties(name: str) -> dict[str, Any]:
        schema = schemas[name]
        merged = {**schema.get("properties", {}), **DOCUMENTED_ELSEWHERE.get(name, {})}
        for part in schema.get("allOf", []):
            merged.update(properties(part["$ref"].rsplit("/", 1)[1]) if "$ref" in part else part.get("properties", {}))
        return merged

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [{"type": "null"}, schema]}

    made = {}
    for name, schema in schemas.items():
        declared = properties(name)
        if not declared:
            made[name] = schema
            continue
        envelope = name.endswith(("_List", "_Show"))
        closed = {"type": "object", "additionalProperties": False, "required": schema.get("required", []),
                  "properties": {key: value if envelope else nullable(value) for key, value in declared.items()}}
        if name.endswith("_List"):
            closed["properties"]["meta"] = LIST_META
        made[name] = closed
    return made


@pytest.fixture(scope="module")
def validate() -> Any:
    if not OPENAPI.exists():
        pytest.skip(f"Clio's OpenAPI document is not here ({OPENAPI}); set CLIO_OPENAPI to check against it")
    document = json.loads(OPENAPI.read_text())
    schemas = strict(copy.deepcopy(document["components"]["schemas"]))
    registry = Registry().with_resource("urn:clio", DRAFT4.create_resource({"components": {"schemas": schemas}}))
    checker = FormatChecker(formats=())
    checker.checks("date", raises=ValueError)(lambda value: not isinstance(value, str) or dt.date.fromisoformat(value))
    checker.checks("date-time")(lambda value: not isinstance(value, str) or bool(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value)))
    checker.checks("uri")(lambda value: not isinstance(value, str) or value.startswith(("http://", "https://")))

    def check(schema: str, body: Any) -> None:
        validator = Draft4Validator({"$ref": f"urn:clio#/components/schemas/{schema}"}, registry=registry,
                                    format_checker=checker)
        error = best_match(validator.iter_errors(body))
        assert error is None, f"{schema} at {'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"

    return check


LISTS = [  # path, schema, fields selections (Clio serves no single currency)
    ("/activities.json", "Activity_List", [None, CONNECTOR_FIELDS, ALL_ACTIVITY_FIELDS, "id,note,matter,user{rate}"]),
    ("/utbms/codes.json", "UtbmsCode_List", [None, CODE_FIELDS, "code,type"]),
    ("/contacts.json", "Contact_List", [None, CONTACT_FIELDS, "name,ledes_client_id,currency"]),
    ("/matters.json", "Matter_List", [None, MATTER_FIELDS, "display_number,client{ledes_client_id}"]),
    ("/users.json", "User_List", [None, USER_FIELDS, "name,rate,job_title"]),
    ("/currencies.json", "Currency_List", [None, "id,etag,code,sign,created_at,updated_at"]),
]


@pytest.mark.parametrize(("path", "schema", "selections"), LISTS, ids=[row[0] for row in LISTS])
def test_lists_and_records_match_the_openapi_schemas(clio: FakeClio, api: httpx.Client, validate: Any, path: str,
                                                     schema: str, selections: list[str | None]) -> None:
    single = schema.replace("_List", "_Show")
    first_id = api.get(path, params={"limit": 1}).json()["data"][0]["id"]
    for fields in selections:
        selection = {"fields": fields} if fields else {}
        body = api.get(path, params={**selection, "limit": 50}).json()
        validate(schema, body)
        assert body["data"], path
        if path != "/currencies.json":
            one = api.get(path.replace(".json", f"/{first_id}.json"), params=selection)
            assert one.status_code == 200
            validate(single, one.json())


@pytest.mark.parametrize("version", ["4.0.3", "4.0.9"])
def test_activities_redacted_and_old_versions_match_the_schema(clio: FakeClio, validate: Any, version: str) -> None:
    clio.state.redact()
    with client(clio, version) as api:
        validate("Activity_List", api.get("/activities.json", params={"fields": ALL_ACTIVITY_FIELDS}).json())


def test_other_answers_match_the_schemas(clio: FakeClio, api: httpx.Client, validate: Any,
                                         receiver: tuple[Receiver, str]) -> None:
    validate("User_Show", api.get("/users/who_am_i.json", params={"fields": "id,name,account{id,name}"}).json())
    validate("User_Show", api.get("/users/who_am_i.json", params={"fields": USER_FIELDS}).json())
    validate("BillingSetting_Show", api.get("/settings/billing.json", params={"fields": BILLING_FIELDS}).json())
    made = api.post("/webhooks.json", params={"fields": WEBHOOK_FIELDS},
                    json={"data": {"url": receiver[1], "model": "activity", "fields": "id,etag"}})
    assert made.status_code == 201
    validate("Webhook_Show", made.json())
    validate("Webhook_List", api.get("/webhooks.json", params={"fields": WEBHOOK_FIELDS}).json())
    hook = made.json()["data"]["id"]
    validate("Webhook_Show", api.get(f"/webhooks/{hook}.json", params={"fields": WEBHOOK_FIELDS}).json())
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).isoformat()
    validate("Webhook_Show", api.patch(f"/webhooks/{hook}.json", params={"fields": WEBHOOK_FIELDS},
                                       json={"data": {"expires_at": expires}}).json())
    refused = [api.get("/activities.json", params={"fields": "nope"}), api.get("/activities/1.json"),
               api.get("/users.json", headers={"X-API-VERSION": "4.1.0"})]
    assert [answer.status_code for answer in refused] == [400, 404, 410]
    for answer in refused:
        validate("Error", answer.json())


# -- fields ------------------------------------------------------------------------------------------------------


def test_fields_default_to_id_and_etag_and_select_exactly(clio: FakeClio, api: httpx.Client) -> None:
    default = api.get("/activities.json", params={"limit": 3}).json()["data"]
    assert [set(record) for record in default] == [{"id", "etag"}] * 3
    chosen = "note,id,matter{display_number,currency},user,activity_description{utbms_task_id}"
    record = api.get("/activities.json", params={"limit": 1, "type": "TimeEntry", "fields": chosen}).json()["data"][0]
    assert set(record) == {"id", "note", "matter", "user", "activity_description"}
    assert set(record["matter"]) == {"display_number", "currency"}
    assert set(record["matter"]["currency"]) == {"id", "etag", "code", "sign"}  # two levels deep: its defaults
    assert set(record["user"]) == {"id", "etag"}  # nested without braces: its defaults
    assert set(record["activity_description"]) == {"utbms_task_id"}
    activity = clio.state.activity(record["id"])
    assert record["note"] == activity.note and record["matter"]["currency"]["code"] == activity.matter.currency.code
    matter = api.get("/matters.json", params={"limit": 1, "fields": "client{name,currency}"}).json()["data"][0]
    assert set(matter["client"]) == {"name", "currency"} and set(matter["client"]["currency"]) == {"id", "etag",
                                                                                                   "code", "sign"}


@pytest.mark.parametrize("fields", ["nope", "id,nope", "matter{nope}", "matter{currency{code}}", "matter{client}",
                                    "user{job_title}", "id{x}", "matter{id", "id,,note", "matter}", "matter{id}{note}",
                                    "currency_id"])
def test_bad_fields_are_400_argument_errors(clio: FakeClio, api: httpx.Client, fields: str) -> None:
    for path in ("/activities.json", f"/activities/{clio.state.activities[0].id}.json"):
        answer = api.get(path, params={"fields": fields})
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "ArgumentError"


def test_unimplemented_parameters_fail_loudly(api: httpx.Client) -> None:
    for params in ({"matter_id": "1"}, {"order": "date(desc)"}, {"limit": "0"}, {"limit": "201"},
                   {"limit": "ten"}, {"page_token": "not-a-token"}, {"ids[]": "x"}, {"type": "Bill"},
                   {"updated_since": "yesterday"}, {"start_date": "March"}):
        assert api.get("/activities.json", params=params).status_code == 400, params
    assert api.get("/users.json", params={"limit": 2000}).status_code == 200  # Users allow up to 2000
    assert api.get("/users.json", params={"limit": 2001}).status_code == 400


# -- paging and filters ------------------------------------------------------------------------------------------


def test_paging_serves_every_record_exactly_once(clio: FakeClio, api: httpx.Client) -> None:
    records, pages = pull(api, fields="id,etag", order="id(asc)", limit=7)
    assert [r["id"] for r in records] == [a.id for a in clio.state.activities]
    assert pages == math.ceil(ACTIVITIES / 7)
    first_page = api.get("/activities.json", params={"limit": 7, "type": "TimeEntry"}).json()
    following = first_page["meta"]["paging"]["next"]
    assert following.startswith(clio.api_url + "/activities.json?")
    query = parse_qs(urlsplit(following).query)
    assert query["type"] == ["TimeEntry"] and query["limit"] == ["7"]
    assert str(first_page["data"][-1]["id"]) not in query["page_token"][0]  # opaque
    times = [a for a in clio.state.activities if a.type == "TimeEntry"]
    assert first_page["meta"]["records"] == len(times)
    assert [r["id"] for r in pull(api, type="TimeEntry", limit=200)[0]] == [a.id for a in times]


def test_updated_since_and_created_since_are_strictly_after(clio: FakeClio, api: httpx.Client) -> None:
    activities = clio.state.activities
    pivot = sorted(a.updated_at for a in activities)[len(activities) // 2]
    after = [a.id for a in activities if a.updated_at > pivot]
    assert 0 < len(after) < len(activities)
    assert [r["id"] for r in pull(api, updated_since=pivot)[0]] == after
    moment = dt.datetime.fromisoformat(pivot)
    earlier = (moment - dt.timedelta(milliseconds=500)).isoformat()  # an offset and a fraction, still before pivot
    assert [r["id"] for r in pull(api, updated_since=earlier)[0]] == [a.id for a in activities
                                                                       if a.updated_at >= pivot]
    created = sorted(a.created_at for a in activities)[10]
    assert [r["id"] for r in pull(api, created_since=created)[0]] == [a.id for a in activities
                                                                       if a.created_at > created]


def test_type_dates_and_ids_filter(clio: FakeClio, api: httpx.Client) -> None:
    activities = clio.state.activities
    expenses = pull(api, type="ExpenseEntry", fields="type")[0]
    assert expenses and {r["type"] for r in expenses} == {"ExpenseEntry"}
    assert len(expenses) == sum(a.type == "ExpenseEntry" for a in activities)
    window = pull(api, start_date="2026-03-10", end_date="2026-03-12", fields="id,date")[0]
    assert [r["id"] for r in window] == [a.id for a in activities
                                         if dt.date(2026, 3, 10) <= a.date <= dt.date(2026, 3, 12)]
    wanted = [activities[5].id, activities[1].id, 42]
    found = api.get("/activities.json", params=[("ids[]", i) for i in wanted]).json()
    assert [r["id"] for r in found["data"]] == sorted(wanted[:2]) and found["meta"]["records"] == 2
    tasks = pull(api, "/utbms/codes.json", type="UtbmsActivity", fields="code,type")[0]
    assert tasks and all(r["code"].startswith("A") and r["type"] == "UtbmsActivity" for r in tasks)


def test_edits_between_pages_behave_as_clio_s_cursor(clio: FakeClio, api: httpx.Client) -> None:
    state = clio.state
    ids = [a.id for a in state.activities]
    since = max(a.updated_at for a in state.activities)

    def meanwhile(s: FakeClioState) -> None:
        s.edit(ids[3], note="edited after its page was served")
        s.edit(ids[15], note="edited before its page was served")
        s.delete(ids[25])

    state.between_pages(1, meanwhile)
    records, _ = pull(api, fields="id,note", limit=10)
    seen = [r["id"] for r in records]
    assert seen == [i for i in ids if i != ids[25]]  # each once, the deleted one absent
    notes = {r["id"]: r["note"] for r in records}
    assert notes[ids[15]] == "edited before its page was served"
    assert notes[ids[3]] != "edited after its page was served"
    later, _ = pull(api, fields="id,note", updated_since=since)
    assert [r["id"] for r in later] == [ids[3], ids[15]]
    assert later[0]["note"] == "edited after its page was served"


# -- single records ----------------------------------------------------------------------------------------------


def test_etag_304_and_404_after_delete(clio: FakeClio, api: httpx.Client) -> None:
    target = clio.state.activities[0]
    path = f"/activities/{target.id}.json"
    answer = api.get(path, params={"fields": "id,etag,updated_at"})
    body = answer.json()["data"]
    assert answer.headers["ETag"] == body["etag"] == target.etag
    assert re.fullmatch(r'"[0-9a-f]{32}"', target.etag)
    modified = dt.datetime.strptime(answer.headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S GMT")
    assert modified.isoformat() + "Z" == body["updated_at"]
    unchanged = api.get(path, headers={"If-None-Match": target.etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    before = target.etag
    clio.state.edit(target.id, note="changed")
    changed = api.get(path, params={"fields": "etag,note"}, headers={"If-None-Match": before})
    assert changed.status_code == 200 and changed.json()["data"] == {"etag": target.etag, "note": "changed"}
    assert target.etag != before
    clio.state.delete(target.id)
    gone = api.get(path)
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "NotFound"
    assert target.id not in [r["id"] for r in pull(api)[0]]
    assert api.get("/activities.json", params={"ids[]": target.id}).json()["data"] == []


def test_add_activity_is_new_and_after_everything(clio: FakeClio, api: httpx.Client) -> None:
    newest = max(a.updated_at for a in clio.state.activities)
    made = clio.state.add_activity(quantity=5400, note="Added by the test")
    assert made.id > clio.state.activities[-2].id and made.created_at >= newest
    data = api.get(f"/activities/{made.id}.json", params={"fields": "id,note,quantity,total"}).json()["data"]
    assert data == {"id": made.id, "note": "Added by the test", "quantity": 5400.0, "total": made.total}
    expense = clio.state.add_activity(type="ExpenseEntry", quantity=3, price=Decimal("12.50"), expense="E101")
    assert expense.total == Decimal("37.50") and expense.utbms_expense.code == "E101"


# -- versions, quantities and money ------------------------------------------------------------------------------


def test_version_is_echoed_and_unknown_versions_are_410(clio: FakeClio) -> None:
    with client(clio, version=None) as api:
        assert api.get("/activities.json").headers["X-API-VERSION"] == "4.0.9"
    for version in SUPPORTED_VERSIONS:
        with client(clio, version) as api:
            assert api.get("/users/who_am_i.json").headers["X-API-VERSION"] == version
    for version in ("4.0.2", "4.0.11", "4.1.0", "4", "latest", ""):
        with client(clio, version) as api:
            answer = api.get("/activities.json")
            assert answer.status_code == 410 and "X-API-VERSION" not in answer.headers, version
    assert clio.state.log[-1].headers["x-api-version"] == ""  # the log shows what the client sent


def test_quantity_is_hours_up_to_4_0_3_and_seconds_after(clio: FakeClio) -> None:
    fields = {"fields": "id,type,quantity,rounded_quantity,quantity_in_hours,rounded_quantity_in_hours"}
    with client(clio, "4.0.3") as old, client(clio, "4.0.4") as new:
        hours = {r["id"]: r for r in exact(old.get("/activities.json", params=fields))["data"]}
        seconds = {r["id"]: r for r in exact(new.get("/activities.json", params=fields))["data"]}
    for record_id, in_seconds in seconds.items():
        in_hours = hours[record_id]
        if in_seconds["type"] == "TimeEntry":
            assert in_seconds["quantity"] == in_hours["quantity"] * 3600
            assert in_seconds["rounded_quantity"] == in_hours["rounded_quantity"] * 3600
            assert in_hours["quantity"] == in_hours["quantity_in_hours"] == in_seconds["quantity_in_hours"]
        else:
            assert in_seconds["quantity"] == in_hours["quantity"]  # a unit count either way
            assert in_seconds["rounded_quantity"] is None and in_seconds["quantity_in_hours"] is None
    clio.state.force_version("4.0.3")
    with client(clio, "4.0.9") as api:
        answer = api.get("/activities.json", params=fields)
    assert answer.headers["X-API-VERSION"] == "4.0.3"
    assert exact(answer)["data"] == list(hours.values())


def test_money_and_hours_are_exact(clio: FakeClio, api: httpx.Client) -> None:
    answer = api.get("/activities.json", params={"fields": "id,type,flat_rate,quantity,rounded_quantity,"
                                                           "rounded_quantity_in_hours,price,total,user{rate}"})
    numbers = re.findall(r'"(?:quantity|rounded_quantity|price|total|rate)":(-?[0-9.eE+]+)', answer.text)
    assert numbers and all(re.fullmatch(r"\d+\.\d+", n) for n in numbers)  # 450.0, 1.5: doubles, exactly
    for record in exact(answer)["data"]:
        if record["type"] == "TimeEntry":
            assert record["quantity"] % 36 == 0  # whole hundredths of an hour
            assert record["rounded_quantity"] % 360 == 0 and 0 <= record["rounded_quantity"] - record["quantity"] < 360
            expected = record["price"] if record["flat_rate"] else record["rounded_quantity_in_hours"] * record["price"]
        else:
            expected = record["quantity"] * record["price"]
        assert record["total"] == expected.quantize(Decimal("0.01"))


def test_redaction_hides_hours_and_totals(clio: FakeClio, api: httpx.Client) -> None:
    etags = {a.id: a.etag for a in clio.state.activities}
    assert clio.state.redact() == sum(a.type == "TimeEntry" for a in clio.state.activities)
    fields = {"fields": ",".join(("id", "etag", "type", "price", "quantity_redacted", *HOURS_FIELDS))}
    for record in api.get("/activities.json", params=fields).json()["data"]:
        assert record["etag"] == etags[record["id"]]  # a view, not an edit
        if record["type"] == "TimeEntry":
            assert record["quantity_redacted"] is True and record["price"] is not None
            assert all(record[name] is None for name in HOURS_FIELDS)
        else:
            assert record["quantity_redacted"] is False and record["total"] is not None
    clio.state.redact(redacted=False)
    assert all(r["total"] is not None for r in api.get("/activities.json", params=fields).json()["data"])


# -- rate limits -------------------------------------------------------------------------------------------------


def test_rate_limit_headers_and_429_with_retry_after(clio: FakeClio, clock: Clock) -> None:
    clio.state.rate_limit, clio.state.rate_window = 3, 60
    clock.now = 1_800_000_000.25
    with client(clio) as api, client(clio) as other:
        seen = [api.get("/users/who_am_i.json") for _ in range(3)]
        assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["2", "1", "0"]
        assert {r.headers["X-RateLimit-Limit"] for r in seen} == {"3"}
        assert {r.headers["X-RateLimit-Reset"] for r in seen} == {"1800000061"}
        clock.advance(20)
        refused = api.get("/activities.json")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "40"
        assert refused.json() == {"error": {"type": "RateLimited", "message": "Too Many Requests"}}
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert other.get("/activities.json").status_code == 200  # limited per access token
        clock.advance(41)
        assert api.get("/activities.json").headers["X-RateLimit-Remaining"] == "2"
    assert clio.state.issue_tokens() and httpx.post(clio.token_url).status_code == 401  # OAuth is not counted


def test_no_rate_limit_no_headers(api: httpx.Client) -> None:
    answers = [api.get("/activities.json") for _ in range(60)]
    assert {a.status_code for a in answers} == {200}
    assert "X-RateLimit-Limit" not in answers[0].headers


# -- faults ------------------------------------------------------------------------------------------------------


def test_failures_answer_then_clear(clio: FakeClio, api: httpx.Client) -> None:
    clio.state.fail_next(2, status=503, path="/activities")
    assert api.get("/users/who_am_i.json").status_code == 200  # another path
    assert [api.get("/activities.json").status_code for _ in range(3)] == [503, 503, 200]
    clio.state.fail_next(status=429, retry_after=7)
    throttled = api.get("/activities.json")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"]["type"] == "RateLimited"
    clio.state.fail_next(status=500)
    clio.state.fail_next(status=502)
    assert [api.get("/activities.json").status_code for _ in range(3)] == [500, 502, 200]
    assert [(r.status, r.fault) for r in clio.state.log[-3:]] == [(500, "status"), (502, "status"), (200, None)]
    with pytest.raises(ValueError, match="status"):
        clio.state.fail_next(status=404)


def test_slow_answers_time_clients_out(clio: FakeClio) -> None:
    clio.state.slow_next(1, 0.6)
    with client(clio, timeout=0.2) as api:
        with pytest.raises(httpx.ReadTimeout):
            api.get("/activities.json")
        assert api.get("/activities.json").status_code == 200
    slow = [r for r in clio.state.log if r.fault == "slow"]
    assert len(slow) == 1


def test_dropped_connections_get_no_answer(clio: FakeClio, api: httpx.Client) -> None:
    clio.state.drop_next(2)
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            api.get("/activities.json")
    assert api.get("/activities.json").status_code == 200
    assert [(r.status, r.fault) for r in clio.state.log[-3:]] == [(None, "drop"), (None, "drop"), (200, None)]


def test_in_process_the_dropped_connection_is_an_exception(clio: FakeClio) -> None:
    clio.state.drop_next()
    with pytest.raises(ConnectionResetError):
        in_process(create_app(clio.state), "GET", "/api/v4/activities.json")


# -- OAuth -------------------------------------------------------------------------------------------------------


def test_bad_expired_and_revoked_tokens_are_401_invalid_token(clio: FakeClio, clock: Clock) -> None:
    expected = {"error": "invalid_token", "error_description": "The access token provided is expired, revoked, "
                                                               "malformed or invalid for other reasons."}
    with client(clio, token="made-up") as api:
        answer = api.get("/activities.json")
        assert answer.status_code == 401 and answer.json() == expected
    tokens = clio.state.issue_tokens()
    with client(clio, token=tokens["access_token"]) as api:
        assert api.get("/activities.json").status_code == 200
        clio.state.expire_tokens()
        assert api.get("/activities.json").json() == expected
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": clio.client_id,
               "client_secret": clio.client_secret}
    refreshed = httpx.post(clio.token_url, data=refresh)
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] == tokens["refresh_token"]
    with client(clio, token=refreshed.json()["access_token"]) as api:
        assert api.get("/activities.json").status_code == 200
        clock.advance(refreshed.json()["expires_in"] + 1)  # access tokens expire after expires_in
        assert api.get("/activities.json").status_code == 401
    again = clio.state.issue_tokens(tokens["refresh_token"])  # refresh tokens are reusable
    with client(clio, token=again["access_token"]) as api:
        assert httpx.post(clio.base_url + "/oauth/deauthorize", headers=api.headers).status_code == 200
        assert api.get("/activities.json").status_code == 401
    revoked = httpx.post(clio.token_url, data=refresh)
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


def test_authorization_code_flow(clio: FakeClio) -> None:
    redirect = "http://127.0.0.1:9/callback"
    wrong = httpx.get(clio.authorize_url, params={"response_type": "code", "client_id": "someone-else",
                                                  "redirect_uri": redirect, "state": "s1"})
    assert wrong.status_code == 400
    approved = httpx.get(clio.authorize_url, params={"response_type": "code", "client_id": clio.client_id,
                                                     "redirect_uri": redirect, "state": "s1"})
    assert approved.status_code == 302
    location = approved.headers["Location"]
    assert location.startswith(redirect + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["s1"]
    form = {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect,
            "client_id": clio.client_id, "client_secret": clio.client_secret}
    assert httpx.post(clio.token_url, data={**form, "client_secret": "guess"}).status_code == 401
    assert httpx.post(clio.token_url, data={**form, "redirect_uri": redirect + "/other"}).json()["error"] == \
        "invalid_grant"  # and the code is spent
    approved = httpx.get(clio.authorize_url, params={"response_type": "code", "client_id": clio.client_id,
                                                     "redirect_uri": redirect})
    form["code"] = parse_qs(urlsplit(approved.headers["Location"]).query)["code"][0]
    tokens = httpx.post(clio.token_url, data=form)
    assert tokens.status_code == 200
    body = tokens.json()
    assert set(body) == {"token_type", "access_token", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 2_592_000
    assert httpx.post(clio.token_url, data=form).status_code == 400  # a code works once
    with client(clio, token=body["access_token"]) as api:
        me = api.get("/users/who_am_i.json", params={"fields": "id,name,account{id,name}"}).json()["data"]
    assert me == {"id": clio.state.me.id, "name": clio.state.me.name,
                  "account": {"id": clio.state.me.account.id, "name": "Hale & Moss LLP"}}


# -- webhooks ----------------------------------------------------------------------------------------------------


def subscribe(api: httpx.Client, url: str, **data: Any) -> httpx.Response:
    return api.post("/webhooks.json", params={"fields": WEBHOOK_FIELDS},
                    json={"data": {"url": url, "model": "activity", "events": ["created", "updated", "deleted"],
                                   "fields": "id,etag", **data}})


def test_webhook_handshake_enables_when_echoed(clio: FakeClio, api: httpx.Client,
                                               receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    hooks.received.clear()
    made = subscribe(api, url)
    assert made.status_code == 201
    data = made.json()["data"]
    assert data["status"] == "pending" and data["model"] == "activity" and data["url"] == url
    assert set(data) == set(WEBHOOK_FIELDS.replace("user{id,name}", "user").split(","))
    wait_for(lambda: clio.state.webhook(data["id"]).status == "enabled")
    headers, body = hooks.received[0]
    assert headers["x-hook-secret"] == data["shared_secret"]
    assert json.loads(body) == {"meta": {"webhook_id": data["id"]}}
    shown = api.get(f"/webhooks/{data['id']}.json", params={"fields": "status,etag"}).json()["data"]
    assert shown["status"] == "enabled" and shown["etag"] != data["etag"]
    default = api.post("/webhooks.json", json={"data": {"url": url, "model": 2, "fields": "id"}}).json()["data"]
    assert set(default) == {"id", "etag"}  # like every answer: id and etag unless fields says otherwise
    assert clio.state.webhook(default["id"]).model == "activity"


def test_webhook_without_echo_stays_pending_until_activated(clio: FakeClio, api: httpx.Client,
                                                            receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    hooks.echo = False
    try:
        data = subscribe(api, url).json()["data"]
        wait_for(lambda: any(h.get("x-hook-secret") == data["shared_secret"] for h, _ in hooks.received))
        time.sleep(0.05)
        assert clio.state.webhook(data["id"]).status == "pending"
        assert clio.state.deliver("updated", clio.state.activities[0].id) == 0  # pending: nothing delivered
        assert api.put(f"/webhooks/{data['id']}/activate", headers={"X-Hook-Secret": "wrong"}).status_code == 403
        assert api.put(f"/webhooks/{data['id']}/activate", headers={"X-Hook-Secret": data["shared_secret"]}
                       ).status_code == 204
        assert clio.state.webhook(data["id"]).status == "enabled"
    finally:
        hooks.echo = True


def test_webhook_validation_expiry_and_delete(clio: FakeClio, api: httpx.Client, clock: Clock,
                                              receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    assert subscribe(api, "ftp://example.com/hook").status_code == 422
    assert subscribe(api, url, expires_at=(now + dt.timedelta(days=31, minutes=1)).isoformat()).status_code == 422
    assert subscribe(api, url, expires_at=(now - dt.timedelta(minutes=1)).isoformat()).status_code == 422
    assert subscribe(api, url, events=["matter_closed"]).status_code == 422
    assert subscribe(api, url, fields="id,nope").status_code == 400
    assert subscribe(api, url, fields="x" * 1001).status_code == 422
    clio.state.allow_http_hooks = False
    assert subscribe(api, url).status_code == 422  # https only, as Clio
    assert subscribe(api, "https://hooks.example.com/clio").status_code == 201
    clio.state.allow_http_hooks = True
    data = subscribe(api, url).json()["data"]
    expires = dt.datetime.fromisoformat(data["expires_at"])
    assert expires == (now + dt.timedelta(days=3)).replace(microsecond=0)  # the default
    path = f"/webhooks/{data['id']}.json"
    later = (now + dt.timedelta(days=31)).replace(microsecond=0)
    renewed = api.patch(path, params={"fields": "expires_at"}, json={"data": {"expires_at": later.isoformat()}})
    assert renewed.status_code == 200 and dt.datetime.fromisoformat(renewed.json()["data"]["expires_at"]) == later
    too_late = api.patch(path, json={"data": {"expires_at": (later + dt.timedelta(hours=1)).isoformat()}})
    assert too_late.status_code == 422
    wait_for(lambda: clio.state.webhook(data["id"]).status == "enabled")
    clock.advance(31 * 86400 + 1)
    assert clio.state.deliver("updated", clio.state.activities[0].id) == 0  # expired: nothing delivered
    with client(clio) as fresh:  # the first token has expired too
        assert fresh.delete(path).status_code == 204
        assert fresh.get(path).status_code == 404
        assert data["id"] not in [w["id"] for w in fresh.get("/webhooks.json").json()["data"]]


def test_deliveries_are_signed_forgeries_are_not_and_replays_are_identical(
        clio: FakeClio, api: httpx.Client, receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    data = subscribe(api, url, events=["updated", "deleted"]).json()["data"]
    wait_for(lambda: clio.state.webhook(data["id"]).status == "enabled")
    secret = data["shared_secret"]
    target = clio.state.edit(clio.state.activities[0].id, note="changed")
    hooks.received.clear()
    assert clio.state.deliver("updated", target.id) == 1
    assert clio.state.deliver("created", target.id) == 0  # not subscribed
    [(headers, body)] = hooks.received
    assert verify(secret, body, headers["x-hook-signature"])
    assert json.loads(body) == {"data": {"id": target.id, "etag": target.etag},
                                "meta": {"event": "updated", "webhook_id": data["id"]}}
    assert clio.state.replay_last() == 200
    assert hooks.received[1] == (headers, body)  # byte for byte
    clio.state.delete(target.id)
    assert clio.state.deliver("deleted", target.id, forged=True) == 1
    forged_headers, forged_body = hooks.received[2]
    assert json.loads(forged_body)["meta"]["event"] == "deleted"
    assert not verify(secret, forged_body, forged_headers["x-hook-signature"])
    assert [d.status for d in clio.state.deliveries] == [200, 200, 200]


def test_signed_delivery_posts_in_process(clio: FakeClio, api: httpx.Client, receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    data = subscribe(api, url, fields="id,etag,note").json()["data"]
    activity = clio.state.activities[1]
    headers, body = clio.state.signed_delivery("created", activity.id)
    assert verify(data["shared_secret"], body, headers["X-Hook-Signature"])
    assert json.loads(body)["data"] == {"id": activity.id, "etag": activity.etag, "note": activity.note}
    forged_headers, _ = clio.state.signed_delivery("created", activity.id, forged=True)
    assert not verify(data["shared_secret"], body, forged_headers["X-Hook-Signature"])
    hooks.received.clear()
    assert in_process(hooks.app, "POST", "/hook", content=body, headers=headers).status_code == 200
    [(got, raw)] = hooks.received
    assert raw == body and got["x-hook-signature"] == headers["X-Hook-Signature"]
    assert clio.state.deliveries == []  # nothing went over the network


# -- the seeded firm ---------------------------------------------------------------------------------------------


def test_seeding_is_deterministic_and_has_the_awkward_cases(clio: FakeClio, api: httpx.Client) -> None:
    state = clio.state
    again = FakeClioState(activities=ACTIVITIES)
    assert [(a.id, a.etag, a.total, a.updated_at) for a in again.activities] == \
        [(a.id, a.etag, a.total, a.updated_at) for a in state.activities]
    assert FakeClioState(activities=ACTIVITIES, seed=8).activities[0].etag != state.activities[0].etag
    assert any(a.updated_at > a.created_at for a in state.activities)
    uncoded = [a for a in state.activities if a.type == "TimeEntry" and a.activity_description.task is None
               and not a.flat_rate]
    assert len(uncoded) == 1
    assert len([a for a in state.activities if a.type == "ExpenseEntry" and a.utbms_expense is None]) == 1
    flat = first(state, flat_rate=True)
    assert flat.matter.billing_method == "flat" and flat.total == flat.price
    odd = [u for u in state.users if not u.enabled]
    assert len(odd) == 1 and odd[0].job_title is None
    assert {c.ledes_client_id for c in state.contacts} == {"ACME01", "GLOBEX", "INITECH"}
    assert {m.client_reference is None for m in state.matters} == {True, False}
    coded = {a.activity_description.utbms_task_id for a in state.activities
             if a.activity_description and a.activity_description.task} | {
        a.activity_description.utbms_activity_id for a in state.activities
        if a.activity_description and a.activity_description.activity}
    found = api.get("/utbms/codes.json", params=[("fields", "id,code,type"), *(("ids[]", i) for i in coded)]).json()
    assert {r["id"] for r in found["data"]} == coded
    assert {r["code"][0] for r in found["data"] if r["type"] == "UtbmsActivity"} == {"A"}
    assert {r["code"][0] for r in found["data"] if r["type"] == "UtbmsTask"} == {"L"}
    expense = first(state, type="ExpenseEntry")
    shown = api.get(f"/utbms/codes/{expense.utbms_expense.id}.json", params={"fields": "code,type"}).json()["data"]
    assert shown == {"code": expense.utbms_expense.code, "type": "UtbmsExpense"}


def test_seeding_100_000_activities_is_quick() -> None:
    started = time.process_time()  # this process's CPU time: other processes' load on the machine doesn't count
    state = FakeClioState(activities=100_000)
    assert len(state.activities) == 100_000
    assert time.process_time() - started < 5
