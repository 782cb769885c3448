"""Invoices from the store: built from ready entries, locked, voided, submitted once, rejections taken back."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from connectors.destinations.directory import DirectoryDrop
from engine import ledes
from engine.ledes import Party
from engine.ledes.profile import FirmSettings
from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import (
    EntryRow,
    InvoiceLine,
    InvoiceRow,
    InvoiceStatus,
    PortalRejection,
    ReviewAction,
    RuleSetStatus,
)
from engine.workflows import review
from engine.workflows.billing import errors, invoices, rejections, submission
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import REPO

RULES = REPO / "rules"
CTX = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31))
MARCH = invoices.BuildRequest(client_id="ACME01", period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31))
# The bundled rule set without its own invoicing block, so each test states the one it needs.
ACME = re.sub(r"\ninvoicing:\n(  .*\n)+", "\n", (RULES / "acme-corp.yaml").read_text())


def entry(source_id: str, **changes: object) -> Entry:
    base: dict[str, object] = dict(
        source_system="clio", source_tenant="us/1", source_id=source_id, source_version='"v1"', entry_kind="time",
        ledes_client_id="ACME01", law_firm_matter_id="2026-0017", client_matter_id="LIT-88",
        timekeeper_ledes_id="TK1002", timekeeper_source_id=f"user-{source_id}", timekeeper_first_name="Daniel",
        timekeeper_last_name="Okafor", timekeeper_name="Daniel Okafor", timekeeper_classification="PARTNR",
        work_date="2026-03-10", hours_worked="1.5", hours_billed="1.5", rate="925.00", currency="USD",
        utbms_task_code="L210", utbms_activity_code="A103",
        narrative=f"Drafted answer and affirmative defenses to the amended counterclaim ({source_id})",
    )
    base.update(changes)
    return Entry.model_validate(base)


def expense(source_id: str, **changes: object) -> Entry:
    base: dict[str, object] = dict(
        source_system="clio", source_tenant="us/1", source_id=source_id, source_version='"v1"',
        entry_kind="expense", ledes_client_id="ACME01", law_firm_matter_id="2026-0017", work_date="2026-03-12",
        quantity="1", rate="42.50", amount="42.50", currency="USD", utbms_expense_code="E111",
        narrative="Working lunch with client witnesses during deposition preparation",
    )
    base.update(changes)
    return Entry.model_validate(base)


def setup(sessions: sessionmaker[Session], entries: list[Entry], invoicing: str = "") -> None:
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME + invoicing, status=RuleSetStatus.ACTIVE)
        invoices.save_firm_settings(session, FirmSettings(law_firm_id="24-6437381", invoice_prefix="SMK",
                                                          firm=Party(name="Smith Kline LLP")))
        ingest(session, entries, context=CTX)


def build(sessions: sessionmaker[Session], request: invoices.BuildRequest = MARCH) -> InvoiceRow:
    with transaction(sessions) as session:
        return invoices.build(session, request, actor="bill")


def test_an_invoice_bills_ready_entries_locks_them_and_its_file_reads_back(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1"), entry("2", hours_billed="0.8", hours_worked="0.8"), expense("3"),
                     entry("4", rate="990.00")])  # 4 is over the rate cap: in review, not billed
    invoice = build(sessions)
    assert invoice.number == "SMK000001" and invoice.status == InvoiceStatus.DRAFT
    assert invoice.total == Decimal("1387.50") + Decimal("740.00") + Decimal("42.50")
    assert (invoice.fees_total, invoice.expenses_total, invoice.line_count) == (Decimal("2127.50"),
                                                                                  Decimal("42.50"), 3)
    parsed = ledes.parse(invoice.content)
    assert parsed.format == "1998b" and len(parsed.invoices) == 1
    written = parsed.invoices[0]
    assert written.invoice_number == "SMK000001" and written.law_firm_id == "24-6437381"
    assert written.total == sum(line.total for line in written.lines) == invoice.total
    fee = written.lines[0]
    assert (fee.kind, fee.units, fee.unit_cost, fee.adjustment, fee.total) == (
        "F", Decimal("1.5"), Decimal("925.00"), Decimal("0.00"), Decimal("1387.50"))
    assert (fee.timekeeper_name, fee.timekeeper_classification, fee.client_matter_id) == (
        "Okafor, Daniel", "PARTNR", "LIT-88")
    assert [line.kind for line in written.lines] == ["F", "F", "E"]
    assert written.lines[2].expense_code == "E111" and written.lines[2].timekeeper_id == ""
    with sessions() as session:
        states = dict(session.execute(select(EntryRow.source_id, EntryRow.state)).all())
        assert states == {"1": "invoiced", "2": "invoiced", "3": "invoiced", "4": "in_review"}
        assert {r.invoice_id for r in session.scalars(select(EntryRow).where(EntryRow.state == "invoiced"))} == {
            invoice.id}
        actions = session.scalars(select(ReviewAction).where(ReviewAction.action == "invoiced")).all()
        assert len(actions) == 3 and actions[0].after["invoice"] == "SMK000001"
    with pytest.raises(errors.NothingToBill):  # locked entries are not billed twice
        build(sessions)


def test_one_matter_per_invoice_unless_the_client_takes_several(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1"), entry("2", law_firm_matter_id="2025-0311")])
    with pytest.raises(errors.InvalidInvoice, match="one matter per invoice; choose one of: 2025-0311, 2026-0017"):
        build(sessions)
    invoice = build(sessions, invoices.BuildRequest(**{**MARCH.__dict__, "matters": ("2025-0311",)}))
    assert invoice.matters == ["2025-0311"] and invoice.line_count == 1


def test_a_client_may_take_several_matters_legacy_codes_and_a_discount(sessions: sessionmaker[Session]) -> None:
    profile = """
invoicing:
  multiple_matters: true
  timekeeper_codes: legacy
  discounts:
    - {kind: fees, percent: 5, description: "Volume discount 5% | OCG 7.3"}
    - {kind: expenses, amount: 10, description: Courtesy credit on costs, expense_code: E111}
"""
    setup(sessions, [entry("1"), entry("2", law_firm_matter_id="2025-0311"), expense("3")], profile)
    invoice = build(sessions)
    written = ledes.parse(invoice.content).invoices[0]
    assert [line.kind for line in written.lines] == ["F", "F", "E", "IF", "IE"]
    assert {line.law_firm_matter_id for line in written.lines} == {"2025-0311", "2026-0017"}
    assert written.lines[0].timekeeper_classification == "PT"
    discount, credit = written.lines[3], written.lines[4]
    assert (discount.adjustment, discount.total) == (Decimal("-138.75"), Decimal("-138.75"))  # 5% of 2775.00
    assert discount.description == "Volume discount 5% / OCG 7.3"  # a pipe would break the record
    assert (credit.expense_code, credit.total) == ("E111", Decimal("-10.00"))
    assert invoice.total == Decimal("2775.00") + Decimal("42.50") - Decimal("138.75") - Decimal("10.00")
    assert invoice.adjustments_total == Decimal("-148.75")


def test_a_reviewer_write_down_is_a_line_adjustment(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1", rate="990.00")])
    with transaction(sessions) as session:
        row = session.scalar(select(EntryRow))
        review.adjust(session, row.id, expected_version=row.version, actor="rita", reason="cap per OCG 4.1",
                      changes={"rate": Decimal("950.00")}, context=CTX)
    invoice = build(sessions)
    line = ledes.parse(invoice.content).invoices[0].lines[0]
    # Billed as worked, at the rate the source sent, with the reviewer's cut as the line's adjustment.
    assert (line.units, line.unit_cost, line.adjustment, line.total) == (
        Decimal("1.5"), Decimal("990.00"), Decimal("-60.00"), Decimal("1425.00"))
    with sessions() as session:
        stored = session.scalar(select(InvoiceLine))
        assert stored.review_adjustment == Decimal("-60.00")
        assert "reviewer adjustment -60.00 shown as a line adjustment" in stored.notes


def test_restate_bills_the_adjusted_rate_as_such(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1", rate="990.00")], "\ninvoicing:\n  reviewer_adjustments: restate\n")
    with transaction(sessions) as session:
        row = session.scalar(select(EntryRow))
        review.adjust(session, row.id, expected_version=row.version, actor="rita", reason="cap",
                      changes={"rate": Decimal("950.00")}, context=CTX)
    line = ledes.parse(build(sessions).content).invoices[0].lines[0]
    assert (line.unit_cost, line.adjustment, line.total) == (Decimal("950.00"), Decimal("0.00"), Decimal("1425.00"))


def test_no_charge_lines_show_at_zero_and_unbillable_ones_are_left_out(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1"), entry("2", no_charge=True), entry("3", billable=False)])
    invoice = build(sessions)
    lines = ledes.parse(invoice.content).invoices[0].lines
    assert [(line.units * line.unit_cost + line.adjustment, line.total) for line in lines] == [
        (Decimal("1387.500"), Decimal("1387.50")), (Decimal("0.000"), Decimal("0.00"))]
    assert invoice.notes == ["1 entries not billable were left out"]


def test_line_totals_add_up_to_the_cent_with_odd_rates(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1", hours_billed="0.3", hours_worked="0.3", rate="333.33"),
                     entry("2", hours_billed="0.7", hours_worked="0.7", rate="411.15", amount="287.81"),
                     expense("3", utbms_expense_code="E102", quantity="37", rate="0.125", amount=None,
                             narrative="Outside printing of trial exhibits, 37 pages")])
    content = build(sessions).content
    written = ledes.parse(content).invoices[0]
    assert [line.total for line in written.lines] == [Decimal("100.00"), Decimal("287.81"), Decimal("4.63")]
    assert written.total == Decimal("392.44")
    assert "|37.00|0.00|4.63|" in content and "|0.125|" in content  # a per-page rate keeps its third decimal
    assert ledes.check_invoice(written, "1998b") == []
    from ledes_parser import get_parser  # the public validator takes it too

    assert get_parser("LEDES98B").parse(content)


def test_98bi_with_tax_for_a_client_that_needs_it(sessions: sessionmaker[Session]) -> None:
    profile = """
invoicing:
  format: 98bi
  tax: {rate: "0.20", type: VAT}
  client_tax_id: GB123456789
  client: {name: Acme Corporation, city: London, country: GB}
"""
    setup(sessions, [entry("1", matter_name="Acme v. Widget"), expense("2", matter_name="Acme v. Widget")], profile)
    invoice = build(sessions)
    parsed = ledes.parse(invoice.content)
    assert parsed.format == "98bi"
    written = parsed.invoices[0]
    assert written.currency == "USD" and written.client_tax_id == "GB123456789"
    assert [line.tax_total for line in written.lines] == [Decimal("277.50"), Decimal("8.50")]
    assert written.tax_total == invoice.tax_total == Decimal("286.00")
    assert written.total == Decimal("1387.50") + Decimal("42.50") + Decimal("286.00")
    assert written.net_total == written.total - written.tax_total


def test_a_preview_stores_nothing(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1")])
    with transaction(sessions) as session:
        draft = invoices.prepare(session, MARCH)
    assert draft.invoice.total == Decimal("1387.50") and "LEDES1998B[]" in draft.content
    with sessions() as session:
        assert session.scalar(select(InvoiceRow)) is None
        assert session.scalar(select(EntryRow.state)) == "ready"


def test_entries_changed_while_building_are_not_billed_stale(sessions: sessionmaker[Session],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    setup(sessions, [entry("1")])
    real = invoices.prepare

    def stale(session: Session, request: invoices.BuildRequest) -> invoices.Draft:
        draft = real(session, request)
        session.execute(EntryRow.__table__.update().values(version=EntryRow.version + 1))  # someone else acted
        return draft

    monkeypatch.setattr(invoices, "prepare", stale)
    with pytest.raises(errors.EntriesChanged):
        build(sessions)
    with sessions() as session:
        assert session.scalar(select(InvoiceRow)) is None and session.scalar(select(EntryRow.state)) == "ready"


def test_numbers_are_letters_and_digits_and_never_reused(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1"), entry("2", work_date="2026-04-02")])
    with pytest.raises(errors.InvalidInvoice, match="letters and digits"):
        build(sessions, invoices.BuildRequest(**{**MARCH.__dict__, "number": "2026-001"}))
    first = build(sessions, invoices.BuildRequest(**{**MARCH.__dict__, "number": "A2026001"}))
    with transaction(sessions) as session:
        invoices.void(session, first.id, actor="bill", reason="wrong period")
    with pytest.raises(errors.NumberTaken):
        build(sessions, invoices.BuildRequest(**{**MARCH.__dict__, "number": "A2026001"}))


def test_voiding_releases_the_entries(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1"), entry("2")])
    invoice = build(sessions)
    with pytest.raises(errors.InvalidInvoice, match="reason"), transaction(sessions) as session:
        invoices.void(session, invoice.id, actor="bill", reason=" ")
    with transaction(sessions) as session:
        invoices.void(session, invoice.number, actor="bill", reason="client asked for a split by phase")
    with sessions() as session:
        assert set(session.scalars(select(EntryRow.state))) == {"ready"}
        assert set(session.scalars(select(EntryRow.invoice_id))) == {None}
        assert [e.action for e in invoices.events(session, invoice.id)] == ["built", "voided"]
    with pytest.raises(errors.InvoiceStateError), transaction(sessions) as session:
        invoices.void(session, invoice.id, actor="bill", reason="again")
    assert build(sessions).line_count == 2  # released entries bill again, on a new number


def test_a_source_change_during_a_draft_is_taken_when_the_draft_is_voided(sessions: sessionmaker[Session]) -> None:
    setup(sessions, [entry("1")])
    invoice = build(sessions)
    with transaction(sessions) as session:
        result = ingest(session, [entry("1", source_version='"v2"', rate="990.00")], context=CTX)
    assert result.conflicts == 1
    with transaction(sessions) as session:
        invoices.void(session, invoice.id, actor="bill", reason="source changed")
    with sessions() as session:
        row = session.scalar(select(EntryRow))
        assert (row.state, row.record["rate"], row.pending_record) == ("in_review", "990.00", None)


def test_submitting_to_a_directory_is_idempotent_and_sidecar_rejections_come_back(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1"), entry("2", hours_billed="7.9", hours_worked="7.9")])
    invoice = build(sessions)
    (tmp_path / "out").mkdir()
    drop = DirectoryDrop(tmp_path / "out")
    submission.submit(sessions, invoice.id, drop, actor="bill")
    submission.submit(sessions, invoice.id, drop, actor="bill")  # again: nothing new is sent
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["SMK000001.txt"]
    assert (tmp_path / "out" / "SMK000001.txt").read_bytes().decode() == invoice.content
    with sessions() as session:
        stored = invoices.get(session, invoice.id)
        assert (stored.status, stored.destination, stored.portal_state) == ("submitted", "directory", "delivered")
        with pytest.raises(errors.InvoiceStateError):
            invoices.void(session, invoice.id, actor="bill", reason="x")
    (tmp_path / "out" / "SMK000001.rejections.json").write_text(json.dumps(
        [{"line_number": 2, "reason": "Fee - Excessive time", "reason_code": "EXCESSIVE_TIME"}]))
    result = submission.poll(sessions, invoice.id, drop, actor="poller")
    assert len(result.applied) == 1
    again = submission.poll(sessions, invoice.id, drop, actor="poller")
    assert again.applied == []  # applied once, however often it is polled
    with sessions() as session:
        rows = {r.source_id: r for r in session.scalars(select(EntryRow))}
        assert (rows["1"].state, rows["2"].state, rows["2"].invoice_id) == ("invoiced", "in_review", None)
        rejection = session.scalar(select(PortalRejection))
        assert (rejection.entry_id, rejection.reason, rejection.kind) == (rows["2"].id, "Fee - Excessive time",
                                                                            "rejected")
        # Acme caps a single entry at 8 hours: the proposal tightens that rule so that 7.9 h is caught.
        proposal = rejection.proposal
        assert (proposal["kind"], proposal["rule_id"], proposal["verified"]) == ("tighten", "ACME-HOURS-001", True)
        assert "max_hours: 7.8\n" in proposal["yaml"]
        line = session.scalar(select(InvoiceLine).where(InvoiceLine.line_number == 2))
        assert line.state == "rejected"
        last = review.history(session, rows["2"].id)[-1]
        assert (last.action, last.reason, last.after["line"]) == ("portal_rejected", "Fee - Excessive time", 2)
    # The reviewer answers it: approving again needs a reason, and answers the portal's rejection.
    with pytest.raises(review.ReasonRequired), transaction(sessions) as session:
        review.approve(session, rows["2"].id, expected_version=rows["2"].version, actor="rita", reason=None)
    with transaction(sessions) as session:
        review.approve(session, rows["2"].id, expected_version=rows["2"].version, actor="rita",
                       reason="client agreed by phone to the trial-day hours")
        assert rejections.open_portal_rejections(session, rows["2"].id) == []


def _submitted(sessions: sessionmaker[Session], tmp_path: Path) -> tuple[InvoiceRow, DirectoryDrop, Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    drop = DirectoryDrop(folder)
    invoice = build(sessions)
    submission.submit(sessions, invoice.id, drop, actor="bill")
    return invoice, drop, folder


def test_a_whole_invoice_rejected_sends_every_line_back_and_can_then_be_voided(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1"), entry("2"), expense("3")])
    invoice, drop, folder = _submitted(sessions, tmp_path)
    (folder / f"{invoice.number}.rejections.json").write_text(json.dumps(
        [{"line_number": None, "reason": "Invoice - Wrong matter number", "reason_code": "MATTER"}]))
    result = submission.poll(sessions, invoice.id, drop, actor="poller")
    assert result.state == "rejected" and len(result.applied) == 3  # one record per entry sent back
    with sessions() as session:
        assert set(session.scalars(select(EntryRow.state))) == {"in_review"}
        assert {r.reason for r in session.scalars(select(PortalRejection))} == {"Invoice - Wrong matter number"}
    with transaction(sessions) as session:  # the portal holds nothing: it may be voided now
        voided = invoices.void(session, invoice.id, actor="bill", reason="rejected by the portal; rebill")
        assert voided.status == InvoiceStatus.VOID
    with sessions() as session:  # the entries stay in review (voiding releases only what is still on it)
        assert set(session.scalars(select(EntryRow.state))) == {"in_review"}


def test_a_line_cut_keeps_the_entry_billed(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1"), entry("2", hours_billed="7.5", hours_worked="7.5")])
    invoice, drop, folder = _submitted(sessions, tmp_path)
    (folder / f"{invoice.number}.rejections.json").write_text(json.dumps(
        [{"line_number": 2, "reason": "Fee - Excessive time", "amount": "-1387.50",
          "comment": "at most 6 hours per entry"}]))
    [cut] = submission.poll(sessions, invoice.id, drop, actor="poller").applied
    assert (cut.kind, cut.amount, cut.resolved_at is not None) == ("cut", Decimal("-1387.50"), True)
    with sessions() as session:
        assert set(session.scalars(select(EntryRow.state))) == {"invoiced"}  # billing it again would bill twice
        line = session.scalar(select(InvoiceLine).where(InvoiceLine.line_number == 2))
        assert line.state == "cut"
        assert review.history(session, cut.entry_id)[-1].action == "portal_cut"


def test_a_rejection_naming_a_line_the_invoice_lacks_is_kept_not_lost(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1")])
    invoice, drop, folder = _submitted(sessions, tmp_path)
    (folder / f"{invoice.number}.rejections.json").write_text(json.dumps([{"line_number": 9, "reason": "Odd"}]))
    [kept] = submission.poll(sessions, invoice.id, drop, actor="poller").applied
    assert (kept.entry_id, kept.line_number, kept.proposal["kind"]) == (None, 9, "none")
    with sessions() as session:
        assert session.scalar(select(EntryRow.state)) == "invoiced"


def test_a_destination_that_refuses_outright_leaves_a_draft(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1")])
    invoice = build(sessions)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / f"{invoice.number}.txt").write_text("someone else's invoice under our number")
    with pytest.raises(errors.DestinationFailed) as failed:
        submission.submit(sessions, invoice.id, DirectoryDrop(folder), actor="bill")
    assert not failed.value.retryable and failed.value.status == 502
    with sessions() as session:
        stored = invoices.get(session, invoice.id)
        assert (stored.status, bool(stored.last_error)) == ("draft", True)
        assert [e.action for e in invoices.events(session, invoice.id)] == ["built", "submit_started",
                                                                            "submit_failed"]


def test_two_submissions_at_once_send_once(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    setup(sessions, [entry("1")])
    invoice = build(sessions)
    folder = tmp_path / "out"
    folder.mkdir()
    drop = DirectoryDrop(folder)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    with transaction(sessions) as session:  # another request claimed it and is sending right now
        claimed = invoices.get(session, invoice.id)
        claimed.status, claimed.destination, claimed.submit_lease_until = "submitting", "directory", soon
    with pytest.raises(errors.InvoiceStateError, match="being submitted by another request"):
        submission.submit(sessions, invoice.id, drop, actor="bill")
    assert list(folder.iterdir()) == []
    with transaction(sessions) as session:  # that request died: its lease runs out, and submitting resumes
        invoices.get(session, invoice.id).submit_lease_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    done = submission.submit(sessions, invoice.id, drop, actor="bill")
    assert (done.status, done.submit_lease_until) == ("submitted", None)
    assert [p.name for p in folder.iterdir()] == [f"{invoice.number}.txt"]


def test_one_off_discounts_follow_the_profiles_and_are_checked(sessions: sessionmaker[Session]) -> None:
    from engine.ledes.profile import Discount

    setup(sessions, [entry("1"), expense("2")])
    bad = invoices.BuildRequest(**{**MARCH.__dict__, "discounts": (Discount(kind="expenses", description="credit",
                                                                            amount=Decimal("5")),)})
    with pytest.raises(errors.InvalidInvoice, match="needs an expense_code"):
        build(sessions, bad)
    request = invoices.BuildRequest(**{**MARCH.__dict__, "discounts": (
        Discount(kind="fees", description="Courtesy discount", percent=Decimal("10")),
        Discount(kind="expenses", description="Credit on lunch", amount=Decimal("100"), expense_code="E111"))})
    lines = ledes.parse(build(sessions, request).content).invoices[0].lines
    assert [(ln.kind, ln.total) for ln in lines[2:]] == [("IF", Decimal("-138.75")), ("IE", Decimal("-42.50"))]


def test_two_builds_at_once_bill_each_entry_once(sessions: sessionmaker[Session]) -> None:
    import threading

    setup(sessions, [entry(str(n), work_date=f"2026-03-{n:02d}") for n in range(1, 21)])
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def attempt() -> None:
        barrier.wait(timeout=10)
        try:
            with transaction(sessions) as session:
                outcomes.append(invoices.build(session, MARCH, actor="bill").line_count)
        except errors.InvoiceError as exc:  # the loser: nothing left to bill, or its entries were taken
            outcomes.append(exc.code)
        except OperationalError as exc:  # SQLite may refuse the second writer outright ("database is locked")
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert 20 in outcomes and len(outcomes) == 2, outcomes
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(InvoiceRow)) == 1
        assert {r.invoice_id for r in session.scalars(select(EntryRow))} == {
            session.scalar(select(InvoiceRow.id))}
