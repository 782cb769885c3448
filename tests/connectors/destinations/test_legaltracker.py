"""The Legal Tracker client against the fake portal on loopback (a real HTTP server in a background thread)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.destinations.legaltracker import LegalTrackerClient, map_status
from connectors.legaltracker.fake import (
    FakePortal,
    FakeRules,
    LedesReadError,
    check_arithmetic,
    read_ledes,
    running_fake_portal,
)
from engine.workflows.billing.destinations import DestinationError, PortalState
from tests.connectors import BAD_LINE_TOTAL_1998B, MATTER, make_invoice, package_of

PORTAL_MATTER = "9001"
RULES = FakeRules(max_units_per_line=Decimal("6.0"), blocked_task_codes=frozenset({"L999"}),
                  blocked_expense_codes=frozenset({"E124"}))


@pytest.fixture(scope="module")
def running_portal() -> Iterator[FakePortal]:
    with running_fake_portal() as running:
        yield running


@pytest.fixture
def portal(running_portal: FakePortal) -> FakePortal:
    """One server for the module; each test starts from an empty store with the guidelines above."""
    running_portal.state.reset(RULES)
    return running_portal


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(portal: FakePortal, sleeps: list[float], **overrides: Any) -> LegalTrackerClient:
    settings: dict[str, Any] = {
        **portal.client_settings(),
        "matter_ids": {MATTER: PORTAL_MATTER},
        "timeout": 2.0,
        "backoff": 0.01,
        "sleep": sleeps.append,
    }
    settings.update(overrides)
    return LegalTrackerClient(**settings)


@pytest.fixture
def client(portal: FakePortal, sleeps: list[float]) -> Iterator[LegalTrackerClient]:
    with make_client(portal, sleeps) as made:
        yield made


# -- happy path --------------------------------------------------------------------------------------------------


def test_submit_then_review_cuts_a_line(portal: FakePortal, client: LegalTrackerClient) -> None:
    package = client.build(make_invoice())  # line 1 bills 7.5 hours; the guideline allows 6.0
    receipt = client.submit(package)

    assert receipt.state is PortalState.SUBMITTED
    assert not receipt.already_there
    [stored] = portal.state.invoices
    assert receipt.reference == str(stored.id)
    assert stored.content == package.content  # the file went through eFiles byte for byte
    assert (stored.invoice_number, stored.matter_id, stored.currency) == ("INV1001", PORTAL_MATTER, "USD")
    assert portal.state.count("PUT", ".txt") == 1

    assert client.status(receipt.reference).state is PortalState.SUBMITTED
    portal.state.advance()
    assert client.status(receipt.reference).state is PortalState.UNDER_REVIEW
    portal.state.advance()
    status = client.status(receipt.reference)
    assert status.state is PortalState.ADJUSTED
    [cut] = status.rejections
    assert cut.line_number == 1
    assert cut.reason == "Fee - Excessive time"
    assert cut.amount == Decimal("-600.00")  # 1.5 hours x 400, exactly
    assert "6.0" in (cut.comment or "")
    assert cut.raw["type"] == "fia"
    # Stable id: polling again gives the same rejection, and rejections() is the same list.
    assert client.rejections(receipt.reference) == list(client.status(receipt.reference).rejections)
    assert client.status(receipt.reference).rejections[0].id == cut.id


def test_clean_invoice_is_approved_then_paid(portal: FakePortal, client: LegalTrackerClient) -> None:
    receipt = client.submit(client.build(make_invoice(first_hours="5.0")))
    portal.state.advance()
    portal.state.advance()
    status = client.status(receipt.reference)
    assert (status.state, status.rejections) == (PortalState.APPROVED, ())
    portal.state.pay(receipt.reference)
    assert client.status(receipt.reference).state is PortalState.PAID


def test_auto_advance_moves_one_step_per_poll(portal: FakePortal, client: LegalTrackerClient) -> None:
    portal.state.reset(RULES, auto_advance=True)
    receipt = client.submit(client.build(make_invoice()))
    states = [client.status(receipt.reference).state for _ in range(3)]
    assert states == [PortalState.UNDER_REVIEW, PortalState.ADJUSTED, PortalState.ADJUSTED]


def test_whole_invoice_rejection_for_bad_totals(portal: FakePortal, client: LegalTrackerClient) -> None:
    receipt = client.submit(package_of(make_invoice("BAD77"), BAD_LINE_TOTAL_1998B))
    portal.state.advance()
    portal.state.advance()
    status = client.status(receipt.reference)
    assert status.state is PortalState.REJECTED
    [rejection] = status.rejections
    assert rejection.line_number is None
    assert rejection.reason == "Invoice - Totals do not add up"
    assert "line 1" in (rejection.comment or "") and "800.00" in (rejection.comment or "")


# -- exactly once ------------------------------------------------------------------------------------------------


def test_timeout_after_the_portal_accepted_does_not_submit_twice(portal: FakePortal, sleeps: list[float]) -> None:
    # Stored at once, answered after the client gave up. The client's timeout holds for its look-ups too: wide
    # enough that a loaded machine does not time one out (a retried look-up is a third GET).
    portal.state.delay_next_post(1.5)
    with make_client(portal, sleeps, timeout=0.6) as client:
        receipt = client.submit(client.build(make_invoice()))
    assert receipt.already_there
    assert len(portal.state.invoices) == 1
    assert receipt.reference == str(portal.state.invoices[0].id)
    assert portal.state.count("POST", "/invoices") == 1
    # The look-up ran before the first POST and again before what would have been the second.
    assert portal.state.count("GET", "/invoices") == 2


def test_dropped_connection_after_accepting_does_not_submit_twice(portal: FakePortal,
                                                                  client: LegalTrackerClient) -> None:
    portal.state.drop_next_post()
    receipt = client.submit(client.build(make_invoice()))
    assert receipt.already_there
    assert len(portal.state.invoices) == 1
    assert portal.state.count("POST", "/invoices") == 1


def test_resubmitting_after_a_crash_finds_the_invoice(portal: FakePortal, client: LegalTrackerClient) -> None:
    first = client.submit(client.build(make_invoice()))
    again = client.submit(client.build(make_invoice()))
    assert again.already_there
    assert again.reference == first.reference
    assert len(portal.state.invoices) == 1
    assert portal.state.count("POST", "/invoices") == 1


def test_503_twice_then_success(portal: FakePortal, client: LegalTrackerClient, sleeps: list[float]) -> None:
    portal.state.fail_next(2, status=503, method="POST", path="/invoices")
    receipt = client.submit(client.build(make_invoice()))
    assert not receipt.already_there
    assert len(portal.state.invoices) == 1
    assert sleeps == [0.01, 0.02]  # exponential backoff
    assert portal.state.count("POST", "/invoices") == 3
    assert portal.state.count("POST", "/files") == 1  # the uploaded file is reused


def test_429_retry_after_is_honoured(portal: FakePortal, client: LegalTrackerClient, sleeps: list[float]) -> None:
    portal.state.fail_next(1, status=429, retry_after=7, method="GET", path="/invoices")
    receipt = client.submit(client.build(make_invoice()))
    assert sleeps == [7.0]
    assert not receipt.already_there
    assert len(portal.state.invoices) == 1


def test_a_retry_after_too_long_is_a_retryable_error(portal: FakePortal, client: LegalTrackerClient,
                                                     sleeps: list[float]) -> None:
    portal.state.fail_next(1, status=503, retry_after=3600)
    with pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice()))
    assert info.value.retryable
    assert "3600" in str(info.value)
    assert sleeps == []


def test_giving_up_after_max_attempts(portal: FakePortal, client: LegalTrackerClient, sleeps: list[float]) -> None:
    portal.state.fail_next(10, status=502, path="/invoices")
    with pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice()))
    assert info.value.retryable
    assert "4 times" in str(info.value) and "HTTP 502" in str(info.value)
    assert portal.state.invoices == []
    assert len(sleeps) == 3


# -- tokens ------------------------------------------------------------------------------------------------------


def test_token_is_cached_and_refreshed_once_on_401(portal: FakePortal, client: LegalTrackerClient) -> None:
    receipt = client.submit(client.build(make_invoice()))
    assert portal.state.tokens_issued == 1  # one token for look-up, upload and post
    portal.state.revoke_tokens()
    assert client.status(receipt.reference).state is PortalState.SUBMITTED
    assert portal.state.tokens_issued == 2


def test_a_second_401_is_not_retried(portal: FakePortal, client: LegalTrackerClient) -> None:
    receipt = client.submit(client.build(make_invoice()))
    portal.state.fail_next(5, status=401, path="/invoices/")
    with pytest.raises(DestinationError) as info:
        client.status(receipt.reference)
    assert not info.value.retryable
    assert "401" in str(info.value)
    assert portal.state.tokens_issued == 2


def test_wrong_secret_is_a_clear_non_retryable_error(portal: FakePortal, sleeps: list[float]) -> None:
    with make_client(portal, sleeps, client_secret="not-the-secret") as client, \
            pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice()))
    assert not info.value.retryable
    assert "client credentials" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    assert portal.state.invoices == []


# -- refusals ----------------------------------------------------------------------------------------------------


def test_same_number_different_file_is_refused(portal: FakePortal, client: LegalTrackerClient) -> None:
    client.submit(client.build(make_invoice()))
    with pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice(first_hours="3.0")))
    assert not info.value.retryable
    assert "INV1001" in str(info.value) and "different file" in str(info.value)
    assert len(portal.state.invoices) == 1


@pytest.mark.parametrize("same_file", [True, False])
def test_a_409_from_a_race_is_resolved_by_looking_up(portal: FakePortal, client: LegalTrackerClient,
                                                     monkeypatch: pytest.MonkeyPatch, same_file: bool) -> None:
    """Another process posted between our look-up and our POST: the portal answers 409 and we look again."""
    client.submit(client.build(make_invoice()))
    real_find = client._find
    calls = iter([None])
    monkeypatch.setattr(client, "_find", lambda number: next(calls, real_find(number)))
    package = client.build(make_invoice() if same_file else make_invoice(first_hours="3.0"))
    if same_file:
        assert client.submit(package).already_there
    else:
        with pytest.raises(DestinationError) as info:
            client.submit(package)
        assert not info.value.retryable
    assert len(portal.state.invoices) == 1
    assert portal.state.count("POST", "/invoices") == 2  # ours got the 409


def test_portal_refusal_carries_the_portals_message(portal: FakePortal, client: LegalTrackerClient,
                                                    sleeps: list[float]) -> None:
    portal.state.reset(RULES, matters=["1234"])
    with pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice()))
    assert not info.value.retryable
    assert f"matter {PORTAL_MATTER} is not assigned" in str(info.value)
    assert portal.state.invoices == []
    assert sleeps == []


def test_running_fake_portal_unpacks_to_url_and_state() -> None:
    with running_fake_portal(FakeRules(), auto_advance=True) as (base_url, state):
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/legal-tracker/billing-api/v1")
        assert state.auto_advance and state.invoices == []


def test_an_unmapped_matter_fails_before_any_call(portal: FakePortal, client: LegalTrackerClient) -> None:
    with pytest.raises(DestinationError) as info:
        client.submit(client.build(make_invoice(matter="2026-9999")))
    assert not info.value.retryable
    assert "2026-9999" in str(info.value)
    assert portal.state.log == []


def test_matter_ids_may_be_a_function(portal: FakePortal, sleeps: list[float]) -> None:
    with make_client(portal, sleeps, matter_ids=lambda ours: "77" if ours == MATTER else None) as client:
        client.submit(client.build(make_invoice()))
    assert portal.state.invoices[0].matter_id == "77"


def test_status_of_an_unknown_invoice(portal: FakePortal, client: LegalTrackerClient) -> None:
    with pytest.raises(DestinationError) as info:
        client.status("424242")
    assert not info.value.retryable
    assert "424242 not found" in str(info.value)


# -- the fake portal on its own ----------------------------------------------------------------------------------


def test_fake_requires_a_bearer_token(portal: FakePortal) -> None:
    answer = httpx.get(portal.base_url + "/invoices", headers={"Company-ID": portal.state.company_id})
    assert answer.status_code == 401


def test_fake_reader_and_arithmetic_are_independent_of_our_writer() -> None:
    fmt, rows = read_ledes(BAD_LINE_TOTAL_1998B)
    assert fmt == "1998b"
    assert [row["LINE_ITEM_NUMBER"] for row in rows] == ["1", "2"]
    assert rows[0]["LINE_ITEM_DESCRIPTION"] == "Draft and revise motion to compel production"
    problems = check_arithmetic(fmt, rows)
    assert problems == ["line 1: LINE_ITEM_TOTAL 1000.00 but units x unit cost + adjustment = 800.00"]
    fixed = BAD_LINE_TOTAL_1998B.replace("|1000.00|", "|800.00|").replace("|1024.95|", "|824.95|")
    assert check_arithmetic(*read_ledes(fixed)) == []
    with pytest.raises(LedesReadError, match="fields"):
        read_ledes(BAD_LINE_TOTAL_1998B.replace("|Working lunch|", "|Working|lunch|"))


def test_fake_rules_zero_blocked_lines() -> None:
    text = BAD_LINE_TOTAL_1998B.replace("|1000.00|", "|800.00|").replace("|1024.95|", "|824.95|")
    text = text.replace("|L120|", "|L999|").replace("|E111|", "|E124|")
    cuts = RULES.adjustments(read_ledes(text)[1])
    assert [(c["lineItemNumber"], c["amount"], c["reason"]) for c in cuts] == [
        ("1", Decimal("-800.00"), "Fee - Task not permitted"),
        ("2", Decimal("-24.95"), "Expense - Non-reimbursable expense"),
    ]


def test_fake_serves_amounts_as_exact_json_numbers(portal: FakePortal, client: LegalTrackerClient) -> None:
    receipt = client.submit(client.build(make_invoice()))
    portal.state.advance()
    portal.state.advance()
    raw = client.status(receipt.reference).raw
    assert raw["adjustments"][0]["amount"] == Decimal("-600.00")
    assert raw["totalAmount"] == make_invoice().total
    lookup = client._find("INV1001")
    assert lookup is not None
    package = client.build(make_invoice())
    assert lookup["invoiceFileInfo"]["md5Hash"] == hashlib.md5(package.content).hexdigest().upper()
    assert json.loads(json.dumps(lookup, default=str))["invoiceNumber"] == "INV1001"


# -- status words ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "adjusted", "state"), [
    ("received", False, PortalState.SUBMITTED),
    ("Pending", False, PortalState.UNDER_REVIEW),
    ("Under Review", False, PortalState.UNDER_REVIEW),
    ("disputed", True, PortalState.UNDER_REVIEW),
    ("approved", False, PortalState.APPROVED),
    ("Approved", True, PortalState.ADJUSTED),
    ("reduced_and_approved", False, PortalState.ADJUSTED),
    ("REJECTED", False, PortalState.REJECTED),
    ("paid", True, PortalState.PAID),
    ("something new", False, PortalState.UNDER_REVIEW),
    (None, False, PortalState.UNDER_REVIEW),
])
def test_status_mapping(word: str | None, adjusted: bool, state: PortalState) -> None:
    assert map_status(word, has_adjustments=adjusted) is state


def test_adjustments_without_an_id_get_a_stable_derived_id() -> None:
    documented = {"type": "fia", "amount": Decimal("-55"), "adjusterID": "53509", "adjusterName": "A B",
                  "dateTime": "2021-11-11T03:13:45.233", "reason": "Fee - Excessive time",
                  "comment": "please see billing guidelines - hours", "lineItemNumber": "1"}
    first = LegalTrackerClient._rejection("81218", documented)
    again = LegalTrackerClient._rejection("81218", dict(documented))
    other = LegalTrackerClient._rejection("81218", {**documented, "lineItemNumber": "2"})
    assert first.id == again.id != other.id
    assert (first.line_number, first.amount, first.reason) == (1, Decimal("-55"), "Fee - Excessive time")
    invoice_level = LegalTrackerClient._rejection("81218", {**documented, "lineItemNumber": None})
    assert invoice_level.line_number is None
