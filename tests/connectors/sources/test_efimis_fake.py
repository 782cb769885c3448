"""The fake Efimis (connectors/efimis/fake.py) over real HTTP on loopback: it answers as connectors.md 2B documents
and 9.1 assumes (tokens, problem details, REST lists, GetRows criteria, slices, sorting and errors, webhooks), its
faults look like Efimis's, and it is fast enough for a 100,000-item benchmark."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.clio.fake import serving
from connectors.efimis.fake import (
    ENTITY_IDS,
    SCOPE,
    FakeEfimis,
    FakeEfimisState,
    running_fake_efimis,
)
from tests.conftest import REPO

COLUMNS = ("id", "version", "entryDate", "state", "itemType", "rate", "units", "unitDuration", "totalBase",
           "durationTicks", "modifiedOn", "matterId", "employeeId")


@pytest.fixture(scope="module")
def served() -> Iterator[FakeEfimis]:
    with running_fake_efimis(work_items=1200, seed=5) as fake:
        yield fake


@pytest.fixture
def efimis(served: FakeEfimis) -> Iterator[FakeEfimis]:
    served.state.reset()
    served.state.enabled, served.state.rate_limit = True, None
    yield served


@pytest.fixture
def api(efimis: FakeEfimis) -> Iterator[httpx.Client]:
    token = efimis.state.issue_token()["access_token"]
    with httpx.Client(base_url=efimis.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        yield client


def get_rows(api: httpx.Client, start: int = 0, end: int = 500, *, sort: list[dict[str, Any]] | None = None,
             columns: tuple[str, ...] = COLUMNS, totals: bool = False, **criteria: Any) -> dict[str, Any]:
    variables = {"criteria": {"entryPeriod": {"fixedPeriod": {"min": "2026-01-01", "max": "2026-12-31"},
                                              "relativePeriod": None}, **criteria},
                 "slice": {"cols": [{"colId": c, **({"aggFunc": "sum"} if totals else {})} for c in columns],
                           "startRow": start, "endRow": end, "totalsOnly": totals,
                           "sortBy": sort if sort is not None else [{"colId": "id", "desc": False}]}}
    answer = api.post("/graphql", json={"operationName": "GetRows", "query": "query GetRows", "variables": variables})
    assert answer.status_code == 200
    return json.loads(answer.content, parse_float=Decimal)


def test_tokens_are_issued_for_client_credentials_only(efimis: FakeEfimis) -> None:
    form = {"grant_type": "client_credentials", "client_id": efimis.client_id, "client_secret": efimis.client_secret,
            "scope": SCOPE}
    answer = httpx.post(efimis.token_url, data=form).json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 43_200 and answer["access_token"]
    basic = base64.b64encode(f"{efimis.client_id}:{efimis.client_secret}".encode()).decode()
    assert httpx.post(efimis.token_url, data={"grant_type": "client_credentials", "scope": SCOPE},
                      headers={"Authorization": f"Basic {basic}"}).status_code == 200
    for change, status, error in (({"scope": ""}, 400, "invalid_request"), ({"client_secret": "x"}, 401,
                                  "invalid_client"), ({"grant_type": "password"}, 400, "unsupported_grant_type"),
                                  ({"scope": "other"}, 400, "invalid_scope")):
        refused = httpx.post(efimis.token_url, data={**form, **change})
        assert (refused.status_code, refused.json()["error"]) == (status, error)


def test_the_api_refuses_bad_tokens_unknown_tenants_and_tenants_without_consent(efimis: FakeEfimis,
                                                                                api: httpx.Client) -> None:
    anonymous = httpx.get(efimis.api_url + "/v1/entities")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert set(anonymous.json()) == {"type", "title", "status", "detail", "traceId"}
    assert api.get("/v1/entities").status_code == 200
    efimis.state.expire_tokens()
    assert api.get("/v1/entities").status_code == 401
    token = efimis.state.issue_token()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{efimis.base_url}/other-firm/v1/entities", headers=headers).status_code == 404
    efimis.state.enabled = False
    assert httpx.get(efimis.api_url + "/v1/entities", headers=headers).status_code == 403


def test_rest_lists_page_in_id_order_and_records_are_read_by_id(efimis: FakeEfimis, api: httpx.Client) -> None:
    first = api.get("/v1/entities", params={"page": 1, "pageSize": 5}).json()
    second = api.get("/v1/entities", params={"page": 2, "pageSize": 5}).json()
    assert (first["page"], first["pageSize"], first["totalCount"]) == (1, 5, 12)
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 10 and set(ids) <= set(ENTITY_IDS.values())
    assert api.get("/v1/entities", params={"pageSize": 201}).status_code == 400
    entity = api.get(f"/v1/entities/{ENTITY_IDS['TK1002']}").json()
    assert (entity["firstName"], entity["lastName"]) == ("Daniel", "Okafor")
    matter = api.get("/v1/matters", params={"pageSize": 200}).json()["items"][0]
    assert set(matter) == {"id", "number", "name", "clientId", "clientReference"}
    assert api.get(f"/v1/clients/{matter['clientId']}").json()["code"] in ("ACME", "GLOBEX", "INITECH")
    assert {t["code"] for t in api.get("/v1/tasktypes", params={"pageSize": 50}).json()["items"]} >= {"DRAFT", "FILING"}
    assert api.get("/v1/matters/00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_work_item_is_read_with_the_column_names_and_is_gone_once_deleted(efimis: FakeEfimis,
                                                                            api: httpx.Client) -> None:
    item = next(w for w in efimis.state.work_items if w.state == "Finalised")
    record = json.loads(api.get(f"/v1/workitems/{item.id}").content, parse_float=Decimal)
    assert record["id"] == item.id and record["totalBase"] == item.total_base and record["version"] == 1
    assert record["entryDate"] == f"{item.entry_date.isoformat()}T00:00:00"
    edited = efimis.state.edit(item.id, title="Perused the expert report")
    assert edited.version == 2 and edited.modified_on >= item.modified_on
    assert api.get(f"/v1/workitems/{item.id}").json()["title"] == "Perused the expert report"
    efimis.state.delete(item.id)
    assert api.get(f"/v1/workitems/{item.id}").status_code == 404
    assert get_rows(api, includeDeleted=True)["data"]["getRows"]["lastRow"] == 1200
    efimis.state.purge(item.id)
    assert get_rows(api, includeDeleted=True)["data"]["getRows"]["lastRow"] == 1199


def test_get_rows_selects_by_criteria_and_pages_stably_on_id(efimis: FakeEfimis, api: httpx.Client) -> None:
    items = efimis.state.work_items
    everything = get_rows(api, 0, 500, includeDeleted=True)["data"]["getRows"]
    assert everything["lastRow"] == len(items)
    assert [r["id"] for r in everything["rowData"]] == [w.id for w in items[:500]]
    alive = get_rows(api, includeDeleted=None)["data"]["getRows"]["lastRow"]
    assert alive == sum(1 for w in items if w.state != "Deleted")
    assert get_rows(api, states=["Pending"])["data"]["getRows"]["lastRow"] == sum(w.state == "Pending" for w in items)
    assert get_rows(api, workItemTypes=["ItemisedFee"])["data"]["getRows"]["lastRow"] == \
        sum(w.item_type == "ItemisedFee" and w.state != "Deleted" for w in items)
    assert get_rows(api, noMatter=True)["data"]["getRows"]["lastRow"] == 0
    row = everything["rowData"][0]
    assert isinstance(row["units"], int) and isinstance(row["rate"], int | Decimal)  # whole values as integers
    assert row["entryDate"].endswith("T00:00:00") and row["modifiedOn"].endswith("Z")
    totals = get_rows(api, columns=("units", "totalBase"), totals=True, includeDeleted=True)["data"]["getRows"]
    assert totals["rowData"] == [{"units": sum(w.units for w in items), "totalBase": sum(w.total_base for w in items)}]
    assert totals["lastRow"] == len(items)


def test_rows_tied_on_the_sort_columns_come_in_no_fixed_order(efimis: FakeEfimis, api: httpx.Client) -> None:
    by_date = [{"colId": "entryDate", "desc": False}]
    orders = {tuple(r["id"] for r in get_rows(api, 0, 100, sort=by_date)["data"]["getRows"]["rowData"])
              for _ in range(3)}
    assert len(orders) > 1  # a client paging on a non-unique sort would skip and repeat rows
    dates = [r["entryDate"] for r in get_rows(api, 0, 100, sort=by_date)["data"]["getRows"]["rowData"]]
    assert dates == sorted(dates)


def test_get_rows_errors_come_with_200(efimis: FakeEfimis, api: httpx.Client) -> None:
    assert get_rows(api, 0, 501)["errors"][0]["extensions"]["code"] == "SLICE_TOO_LARGE"
    unknown = get_rows(api, columns=("id", "matterTitle"))["errors"][0]
    assert unknown["extensions"]["code"] == "BAD_USER_INPUT" and "matterTitle" in unknown["message"]
    efimis.state.timeout_next(1)
    assert get_rows(api)["errors"][0]["extensions"]["code"] == "EXECUTION_TIMEOUT"
    assert "errors" not in get_rows(api)


def test_faults_look_like_efimis_and_its_gateway(efimis: FakeEfimis, api: httpx.Client) -> None:
    state = efimis.state
    state.fail_next(1, status=502)
    gateway = api.get("/v1/entities")
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")
    state.fail_next(1, status=429, retry_after=3)
    limited = api.get("/v1/entities")
    assert (limited.status_code, limited.headers["retry-after"], limited.json()["statusCode"]) == (429, "3", 429)
    state.fail_next(1, status=500, path="/graphql")
    assert api.get("/v1/entities").status_code == 200  # the fault waits for its path
    assert api.post("/graphql", json={}).json()["status"] == 500
    state.drop_next(1)
    with pytest.raises(httpx.TransportError):
        api.get("/v1/entities")
    state.slow_next(1, 1.0)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/v1/entities", timeout=0.3)
    assert [r.fault for r in state.log if r.fault] == ["status", "status", "status", "drop", "slow"]
    state.rate_limit = 2
    assert [api.get("/v1/tasktypes").status_code for _ in range(3)] == [200, 200, 429]


def test_between_pages_runs_after_the_slice_it_names(efimis: FakeEfimis, api: httpx.Client) -> None:
    seen: list[int] = []
    efimis.state.between_pages(2, lambda state: seen.append(len(state.log)))
    get_rows(api)
    assert seen == []
    get_rows(api, 500, 1000)
    assert len(seen) == 1


def test_webhooks_are_put_listed_and_deleted_five_at_most(efimis: FakeEfimis, api: httpx.Client) -> None:
    hook = {"id": "webhook_" + "a" * 32, "enabled": True, "url": "https://ocgate.example/v1/webhooks/efimis",
            "secret": "s3cret", "events": ["WorkItemUpdated"]}
    put = api.put("/v1/webhooks", json=hook)
    assert put.status_code == 200 and "secret" not in put.json()
    assert api.put("/v1/webhooks", json=hook).status_code == 200  # the same id: replaced
    assert api.get("/v1/webhooks").json()["totalCount"] == 1
    for bad in ({"id": "hook-1"}, {"secret": ""}, {"events": ["Nope"]}, {"url": "ftp://x"}):
        assert api.put("/v1/webhooks", json={**hook, **bad}).status_code == 400
    for n in range(4):
        assert api.put("/v1/webhooks", json={**hook, "id": f"webhook_{n:032x}"}).status_code == 200
    assert api.put("/v1/webhooks", json={**hook, "id": "webhook_" + "b" * 32}).status_code == 409
    assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 404


def test_deliveries_are_signed_over_request_id_and_timestamp_and_retried(efimis: FakeEfimis,
                                                                         api: httpx.Client) -> None:
    answers = [500, 200, 200, 200]
    received: list[tuple[dict[str, str], bytes]] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        await send({"type": "http.response.start", "status": answers.pop(0), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serving(receiver) as (url, _server):
        api.put("/v1/webhooks", json={"id": "webhook_" + "c" * 32, "url": url, "secret": "k",
                                      "events": ["WorkItemUpdated"]})
        item = efimis.state.work_items[0]
        assert efimis.state.deliver("WorkItemUpdated", item.id) == 1
        assert efimis.state.deliver("WorkItemDeleted", item.id) == 0  # not subscribed
        assert efimis.state.replay_last() == 200
    (first, _), (retry, body), (replayed, again) = received
    assert first["x-pe2-request-id"] == retry["x-pe2-request-id"]  # a retry keeps its request id
    assert replayed == retry and again == body
    stamp = retry["x-pe2-timestamp"]
    assert len(stamp.split(".")[1]) == 8 and stamp.endswith("Z")  # seven digits and Z
    expected = hmac.new(b"k", f"{retry['x-pe2-request-id']}|{stamp}".encode(), hashlib.sha256).digest()
    assert base64.b64decode(retry["x-pe2-webhook-signature"]) == expected
    payload = json.loads(body)
    data = json.loads(payload["data"])
    assert payload["type"] == "WorkItemUpdated" and payload["requestId"] == retry["x-pe2-request-id"]
    assert data["workItemId"] == item.id and data["tenant"] == efimis.state.tenant
    headers, _ = efimis.state.signed_delivery("WorkItemUpdated", item.id, stale=True, forged=True)
    sent = dt.datetime.fromisoformat(headers["X-PE2-TIMESTAMP"])
    assert dt.datetime.now(dt.UTC) - sent > dt.timedelta(minutes=9)
    assert base64.b64decode(headers["X-PE2-WEBHOOK-SIGNATURE"]) != hmac.new(
        b"k", f"{headers['X-PE2-REQUEST-ID']}|{headers['X-PE2-TIMESTAMP']}".encode(), hashlib.sha256).digest()


def test_seeding_is_deterministic_and_a_100000_item_firm_is_served_fast() -> None:
    assert [w.id for w in FakeEfimisState(work_items=50, seed=2).work_items] == \
        [w.id for w in FakeEfimisState(work_items=50, seed=2).work_items]
    started = time.process_time()  # this process's CPU time: other processes' load on the machine doesn't count
    state = FakeEfimisState(work_items=100_000)
    seeded = time.process_time() - started
    assert seeded < 8, f"seeding 100,000 work items took {seeded:.1f} s"
    with running_fake_efimis(state=state) as fake:
        token = state.issue_token()["access_token"]
        with httpx.Client(base_url=fake.api_url, headers={"Authorization": f"Bearer {token}"}) as api:
            get_rows(api)  # selects and sorts once
            took = []
            for start in range(500, 10_500, 500):
                began = time.perf_counter()
                rows = get_rows(api, start, start + 500)["data"]["getRows"]["rowData"]
                took.append(time.perf_counter() - began)
                assert len(rows) == 500
    assert statistics.median(took) < 0.05, f"a 500-row slice took {statistics.median(took) * 1000:.0f} ms"


def test_it_runs_from_a_shell() -> None:
    server = subprocess.Popen([sys.executable, "-m", "connectors.efimis.fake", "--port", "0", "--work-items", "20"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = []
        while not (line := server.stdout.readline()).startswith("Ctrl-C"):  # type: ignore[union-attr]
            assert line, "the fake Efimis did not start"
            lines.append(line)
        printed = json.loads("".join(lines))
        token = httpx.post(printed["token_url"], data={"grant_type": "client_credentials", "scope": SCOPE,
                                                       "client_id": printed["client_id"],
                                                       "client_secret": printed["client_secret"]}).json()
        answer = httpx.get(printed["api_url"] + "/v1/entities",
                           headers={"Authorization": f"Bearer {token['access_token']}"})
        assert answer.json()["totalCount"] == 12 and printed["entity_ids"] == ENTITY_IDS
    finally:
        server.terminate()
        server.wait(timeout=10)
