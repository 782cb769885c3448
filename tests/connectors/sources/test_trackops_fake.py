"""The fake Trackops (connectors/trackops/fake.py), over real HTTP on loopback: Basic auth, the expense-entries list
with the documented filters (seed 004) and the paging, envelopes and live behaviour connectors.md 9.2 assumes, the
supporting resources, the rate limit, the server's clock, and the faults it injects."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.trackops.fake import (
    FINANCE_ITEMS,
    INVESTIGATORS,
    UNLISTED_ITEM,
    FakeTrackops,
    FakeTrackopsState,
    running_fake_trackops,
    timekeepers_csv,
)
from tests.conftest import REPO

SEED = REPO.parent / "shared" / "seeds" / "004_c3ae888e66df0abc.txt"  # beside the project, not in a clone of it
LINES = 400


@pytest.fixture(scope="module")
def served() -> Iterator[FakeTrackops]:
    with running_fake_trackops(lines=LINES, seed=5) as trackops:
        yield trackops


@pytest.fixture
def fake(served: FakeTrackops) -> FakeTrackops:
    served.state.reset()
    served.state.rate_limit, served.state.skew = None, 0.0
    return served


@pytest.fixture
def api(fake: FakeTrackops) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.api_url, auth=(f"{fake.username}/token", fake.api_token), timeout=5) as client:
        yield client


def all_pages(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    found, page = [], 1
    while True:
        data = api.get("/expense/entries", params={**params, "page": page, "per_page": 100}).json()
        found += data["expense_entries"]
        if data["meta"]["next_page"] is None:
            return found
        page += 1


# Auth -----------------------------------------------------------------------------------------------------------

def test_basic_auth_needs_the_token_suffix_and_the_right_token(fake: FakeTrackops) -> None:
    url = fake.api_url + "/expense/entries"
    for auth in (None, (fake.username, fake.api_token), (f"{fake.username}/token", "wrong"),
                 ("someone/token", fake.api_token)):
        refused = httpx.get(url, auth=auth)
        assert refused.status_code == 401, auth
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert refused.json() == {"error": "Unauthorized"}
    assert httpx.get(url, auth=(f"{fake.username}/token", fake.api_token)).status_code == 200


# The entries list -------------------------------------------------------------------------------------------------

def test_entries_are_listed_in_id_order_with_their_lines_and_paging(fake: FakeTrackops, api: httpx.Client) -> None:
    first = api.get("/expense/entries")
    data = first.json(parse_float=Decimal)
    meta = data["meta"]
    entries = fake.state.entries
    assert meta == {"current_page": 1, "per_page": 25, "total_pages": -(-len(entries) // 25),
                    "total_count": len(entries), "next_page": 2, "prev_page": None}
    assert [e["id"] for e in data["expense_entries"]] == [e.id for e in entries[:25]]
    assert 'rel="next"' in first.headers["link"] and "page=2" in first.headers["link"]
    entry = data["expense_entries"][0]
    assert set(entry) == {"id", "entry_number", "status", "user_id", "casefile_id", "tracking_category_id",
                          "event_id", "entry_date", "expense_slip_id", "notes", "created_at", "updated_at",
                          "expense_details"}
    line = entry["expense_details"][0]
    assert set(line) == {"id", "finance_item_id", "item_code_id", "rate", "quantity", "notes"}
    assert isinstance(line["rate"], str) and isinstance(line["quantity"], str)  # the stored digits
    assert api.get("/expense/entries", params={"per_page": 500}).json()["meta"]["per_page"] == 100  # clamped
    past = api.get("/expense/entries", params={"page": 999}).json()
    assert past["expense_entries"] == [] and past["meta"]["next_page"] is None
    assert sum(len(e["expense_details"]) for e in all_pages(api)) == LINES
    for bad in ({"page": 0}, {"per_page": "x"}, {"colour": "red"}, {"status": "approved", "STATUS": "x"}):
        answer = api.get("/expense/entries", params=bad)
        assert answer.status_code == 400 and "error" in answer.json(), bad


def test_the_documented_filters(fake: FakeTrackops, api: httpx.Client) -> None:
    entries = fake.state.entries
    some = entries[10]
    assert [e["id"] for e in all_pages(api, id=some.id)] == [some.id]
    assert {e["status"] for e in all_pages(api, status="pending")} == {"pending"}
    assert {e["user_id"] for e in all_pages(api, user=some.user_id)} == {some.user_id}
    assert {e["casefile_id"] for e in all_pages(api, case=some.casefile_id)} == {some.casefile_id}
    assert [e["entry_number"] for e in all_pages(api, entry_number=some.entry_number)] == [some.entry_number]
    day = some.entry_date.isoformat()
    assert {e["entry_date"] for e in all_pages(api, date_from=day, date_to=day)} == {day}
    assert {e["entry_date"] for e in all_pages(api, From=day, To=day)} == {day}  # the documented aliases
    # Timestamps are inclusive at both ends; a date-only *_to is the end of that day.
    stamp = some.updated_at
    assert some.id in {e["id"] for e in all_pages(api, updated_from=stamp, updated_to=stamp)}
    assert {e["id"] for e in all_pages(api, updated_to=stamp[:10])} == \
        {e.id for e in entries if e.updated_at[:10] <= stamp[:10]}
    assert {e["id"] for e in all_pages(api, created_from="2026-03-10T00:00:00+00:00")} == \
        {e.id for e in entries if e.created_at >= "2026-03-10T00:00:00Z"}
    assert api.get("/expense/entries", params={"updated_from": "yesterday"}).status_code == 400
    assert api.get("/expense/entries", params={"status": "billed"}).status_code == 400


def test_single_entries_and_the_supporting_resources(fake: FakeTrackops, api: httpx.Client) -> None:
    entry = fake.state.entries[3]
    one = api.get(f"/expense/entries/{entry.id}").json()["expense_entry"]
    assert one["id"] == entry.id and len(one["expense_details"]) == len(entry.lines)
    assert api.get("/expense/entries/1").status_code == 404
    staff = api.get("/staff").json()
    assert [s["id"] for s in staff["staff"]] == [i[0] for i in INVESTIGATORS] and staff["meta"]["total_count"] == 6
    items = api.get("/finance/items", params={"per_page": 2})
    assert items.json()["meta"]["total_pages"] == 4 and set(items.json()["finance_items"][0]) == \
        {"id", "name", "unit", "default_rate", "item_code_id", "active"}
    assert api.get("/finance/items/301").json()["finance_item"]["unit"] == "hour"
    assert api.get(f"/finance/items/{UNLISTED_ITEM}").status_code == 404
    assert api.get("/finance/item_codes/403").json()["item_code"]["code"] == "MILE"
    case = api.get("/cases/6001").json()["case"]
    assert set(case) == {"id", "case_number", "client_id", "name", "tracking_category_id"}
    assert api.get(f"/clients/{case['client_id']}").json()["client"]["name"] == "Acme Corporation"
    assert len(api.get("/tracking_categories").json()["tracking_categories"]) == 3
    assert api.get("/invoices").status_code == 404


def test_lists_are_live_between_pages(fake: FakeTrackops, api: httpx.Client) -> None:
    """Nothing is frozen between pages: an entry that joins a filtered list ahead of the reader's position shifts a
    record onto the next page again; one that leaves it (under an updated_to bound) shifts one past, unread."""
    entries = fake.state.entries
    chosen = entries[5:200:5]  # edited now: the only entries in the window
    for entry in chosen:
        fake.state.edit(entry.id, notes=entry.notes + " (checked)")
    window = {"updated_from": chosen[0].updated_at, "per_page": 10}
    page1 = [e["id"] for e in api.get("/expense/entries", params=window).json()["expense_entries"]]
    assert page1 == [e.id for e in chosen[:10]]
    fake.state.edit(entries[0].id, notes="joins the list ahead of page 2")
    page2 = [e["id"] for e in api.get("/expense/entries", params={**window, "page": 2}).json()["expense_entries"]]
    assert page2[0] == page1[-1]  # read again, never skipped

    fake.state.reset()  # seeds new entries: the window is the time of these edits (a later second, on a slow day)
    chosen = [fake.state.edit(entry.id, notes=entry.notes + " (checked)") for entry in chosen]
    bounded = {"updated_from": chosen[0].updated_at, "updated_to": chosen[-1].updated_at, "per_page": 10}
    page1 = [e["id"] for e in api.get("/expense/entries", params=bounded).json()["expense_entries"]]
    fake.state.skew = 5.0  # a later second
    fake.state.edit(chosen[0].id, notes="edited again: leaves the bounded list")
    page2 = [e["id"] for e in api.get("/expense/entries", params={**bounded, "page": 2}).json()["expense_entries"]]
    assert page1 == [e.id for e in chosen[:10]] and page2[0] == chosen[11].id  # chosen[10] slipped past, unread


def test_changes_stamp_the_servers_clock_which_can_be_skewed(fake: FakeTrackops, api: httpx.Client) -> None:
    fake.state.skew = -7200.0
    served_at = email.utils.parsedate_to_datetime(api.get("/staff").headers["date"])
    assert abs((dt.datetime.now(dt.UTC) - dt.timedelta(hours=2) - served_at).total_seconds()) < 5
    entry = fake.state.set_status(fake.state.entries[0].id, "voided")
    assert abs((dt.datetime.fromisoformat(entry.updated_at) - served_at).total_seconds()) < 5
    assert entry.rendered is None and json.loads(entry.render())["status"] == "voided"


def test_line_edits_and_new_entries(fake: FakeTrackops, api: httpx.Client) -> None:
    entry = next(e for e in fake.state.entries if len(e.lines) > 1)
    gone, kept = entry.lines[-1], entry.lines[0]
    fake.state.remove_line(entry.id, gone.id)
    fake.state.edit_line(entry.id, kept.id, quantity="7.75")
    added = fake.state.add_line(entry.id, 305, "35.00", "2")
    lines = api.get(f"/expense/entries/{entry.id}").json()["expense_entry"]["expense_details"]
    assert [line["id"] for line in lines] == [kept.id, *[line.id for line in entry.lines[1:-1]], added.id]
    assert lines[0]["quantity"] == "7.75" and lines[-1]["item_code_id"] == 405
    new = fake.state.add_entry(user_id=5101, casefile_id=6001, entry_date=dt.date(2026, 3, 31),
                               lines=[(301, "85.00", "4.5")], notes="Surveillance, evening shift")
    assert new.id > entry.id and new.lines[0].amount == Decimal("382.500")
    with pytest.raises(TypeError):
        fake.state.edit(entry.id, colour="red")
    with pytest.raises(ValueError):
        fake.state.set_status(entry.id, "billed")


# Rate limit and faults ----------------------------------------------------------------------------------------------

def test_the_sliding_window_refuses_with_retry_after_and_no_rate_headers(fake: FakeTrackops,
                                                                         api: httpx.Client) -> None:
    fake.state.rate_limit, fake.state.rate_window = 3, 1.0
    answers = [api.get("/staff") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[3]
    assert refused.json() == {"error": "Too Many Requests"} and refused.headers["retry-after"] == "1"
    assert not [h for h in refused.headers if h.lower().startswith("x-ratelimit")]
    time.sleep(int(refused.headers["retry-after"]) + 0.05)
    assert api.get("/staff").status_code == 200  # the window slid on


def test_faults_as_a_load_balancer_and_the_api_answer_them(fake: FakeTrackops, api: httpx.Client) -> None:
    fake.state.fail_next(1, status=500, path="/expense/entries")
    fake.state.fail_next(1, status=502)
    fake.state.fail_next(1, status=503)
    fake.state.fail_next(1, status=429, retry_after=9)
    server_error = api.get("/expense/entries")
    assert server_error.status_code == 500 and server_error.json() == {"error": "Internal Server Error"}
    gateway = api.get("/staff")
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")
    assert api.get("/staff").status_code == 503
    limited = api.get("/staff")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "9"
    fake.state.slow_next(1, 0.6)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/staff", timeout=0.2)
    fake.state.drop_next(1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/staff")
    assert [r.fault for r in fake.state.log[-6:]] == ["status", "status", "status", "status", "slow", "drop"]
    assert fake.state.log[-1].status is None and fake.state.log[0].headers["authorization"].startswith("Basic")


def test_between_pages_runs_once_after_the_page_is_built(fake: FakeTrackops, api: httpx.Client) -> None:
    target = fake.state.entries[0]
    fake.state.between_pages(2, lambda state: state.set_status(target.id, "declined"))
    assert api.get("/expense/entries").json()["expense_entries"][0]["status"] == target.status
    second = api.get("/expense/entries").json()["expense_entries"][0]
    assert second["status"] != "declined"  # built before the action ran
    assert api.get("/expense/entries").json()["expense_entries"][0]["status"] == "declined"


def test_names_can_be_spelled_otherwise_than_assumed(fake: FakeTrackops, api: httpx.Client) -> None:
    fake.state.renamed = {"expense_entries": "entries", "expense_entry": "entry", "updated_at": "modified_at",
                          "quantity": "qty"}
    listed = api.get("/expense/entries").json()
    assert set(listed) == {"entries", "meta"} and "modified_at" in listed["entries"][0]
    assert "updated_at" not in listed["entries"][0]
    entry = fake.state.entries[0]
    one = api.get(f"/expense/entries/{entry.id}").json()["entry"]
    assert one["modified_at"] == entry.updated_at and one["expense_details"][0]["qty"] == entry.lines[0].quantity
    fake.state.reset()
    assert "expense_entries" in api.get("/expense/entries").json()


# Seeding ----------------------------------------------------------------------------------------------------------

def test_seeding_is_deterministic_fast_and_realistic() -> None:
    started = time.process_time()  # this process's CPU time: other processes' load on the machine doesn't count
    big = FakeTrackopsState(lines=100_000, seed=3)
    assert time.process_time() - started < 5.0
    assert len(big.lines) == 100_000
    small, again = FakeTrackopsState(lines=2_000, seed=3), FakeTrackopsState(lines=2_000, seed=3)
    assert [e.render() for e in small.entries] == [e.render() for e in again.entries]
    statuses = {e.status for e in big.entries}
    assert statuses == {"pending", "approved", "declined", "committed", "voided"}
    ids = [e.id for e in big.entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e.created_at for e in big.entries] == sorted(e.created_at for e in big.entries)
    items = {line.finance_item_id for _, line in big.lines}
    assert items == {item[0] for item in FINANCE_ITEMS} | {UNLISTED_ITEM}
    assert all(Decimal(line.rate) * Decimal(line.quantity) == line.amount for _, line in big.lines[:1000])
    table = timekeepers_csv()
    assert "trackops,5101" in table and "5106" not in table  # the new hire is not in the firm's table yet


def test_the_demo_month(fake: FakeTrackops, api: httpx.Client) -> None:
    named = fake.state.seed_demo_month(dt.date(2026, 3, 1))
    served = all_pages(api)
    assert len(served) == 12 and sum(len(e["expense_details"]) for e in served) == 23
    assert sorted(e["status"] for e in served).count("voided") == 1 and named["voided"].status == "voided"
    assert [e["status"] for e in served].count("pending") == 1 and named["pending"].status == "pending"
    assert {e["entry_date"][:7] for e in served} == {"2026-03"} and {e["casefile_id"] for e in served} <= {6001,
                                                                                                          6002, 6003}
    meals = [Decimal(line["rate"]) * Decimal(line["quantity"]) for e in served for line in e["expense_details"]
             if line["finance_item_id"] == 307]
    assert max(meals) == Decimal("96.40") > 75 > min(meals)  # one dinner over a typical cap, one lunch under it
    assert {line["finance_item_id"] for e in served for line in e["expense_details"]} == {301, 302, 303, 304, 305,
                                                                                           307}
    table = timekeepers_csv()
    assert all(f"trackops,{e['user_id']}," in table for e in served)
    assert max(e["updated_at"] for e in served) < "2026-04-06"  # all before the demo's as-of date
    added = fake.state.add_entry(user_id=5101, casefile_id=6001, entry_date=dt.date(2026, 3, 31),
                                 lines=[(301, "95.00", "2")])
    assert added.id > max(e["id"] for e in served)


@pytest.mark.skipif(not SEED.is_file(), reason="the Trackops seed document is beside the project, not in a clone")
def test_the_fake_takes_the_documented_statuses_and_filters() -> None:
    text = SEED.read_text()
    for status in ("pending", "approved", "declined", "committed", "voided"):
        assert f"- {status} -" in text
    for name in ("id", "expense_slip", "user", "status", "case", "tracking_category", "entry_number", "date_from",
                 "date_to", "created_from", "created_to", "updated_from", "updated_to"):
        assert f"\n{name} |" in text
