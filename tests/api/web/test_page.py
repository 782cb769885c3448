"""The reviewer's page end to end: headless Chromium (Debian's ``chromium``, driven by playwright with
``executable_path``; no browser is downloaded) against a real uvicorn server on loopback, over a seeded SQLite
store. Reviewers sign in, filter, approve, adjust and see the entry judged again, read the audit trail, act in
bulk, lose nothing typed when someone else acted first; a viewer sees no action buttons; a rule author uploads a
rule file, sees its problems by position, and backtests a draft; anyone reads the findings overview.

Screenshots of the queue, an entry, the backtest diff and the overview go to ``test-screenshots/`` at the root of
the repository (ignored by git), or to ``OCGATE_SCREENSHOTS`` if set. Without chromium or playwright these tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from api.app import create_app
from engine.store.db import make_engine, session_factory, transaction
from engine.store.models import EntryRow, RuleSetStatus
from engine.workflows.intake import ingest
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version
from tests.api.conftest import ACME_TEXT, NOW, day, recent, seed
from tests.conftest import REPO, _migrated_template

# The page is the same on every Python: CI drives it from the main one only.
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("OCGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("OCGATE_SCREENSHOTS") or REPO / "test-screenshots")
KEYS = {"reviewer": Role.REVIEWER, "reviewer2": Role.REVIEWER, "viewer": Role.VIEWER, "author": Role.RULE_AUTHOR,
        "admin": Role.ADMIN, "biller": Role.BILLER}
DRAFT = ACME_TEXT.replace('version: "2026.1"', 'version: "2026.2"').replace("PARTNR: 950", "PARTNR: 1000")
TIMEOUT_MS = 10_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests must run under CI=true: {reason}")
    pytest.skip(reason)


try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]


@dataclass
class Site:
    url: str
    keys: dict[str, str]
    ids: dict[str, int]  # source id -> entry id
    draft_id: int
    sessions: Any  # the store's session factory, for a test that adds entries of its own


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``ocgate serve`` in miniature: the app under uvicorn on a free loopback port, over a seeded SQLite store."""
    path = tmp_path_factory.mktemp("page") / "ocgate.db"
    shutil.copyfile(_migrated_template("sqlite"), path)
    engine = make_engine(f"sqlite:///{path}")
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME_TEXT, status=RuleSetStatus.ACTIVE, created_by="seed")
        keys = {name: create_key(session, name=name, role=role)[1] for name, role in KEYS.items()}
        seed(session)
        draft_id = add_ruleset_version(session, DRAFT, created_by="seed").id
        ids = dict(session.execute(select(EntryRow.source_id, EntryRow.id)).all())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(sessions=sessions), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Site(url=f"http://127.0.0.1:{port}", keys=keys, ids=ids, draft_id=draft_id, sessions=sessions)
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser, site: Site) -> Iterator[Any]:
    """Pages at 1280x800, each in its own browser context (its own session storage), with the page's console
    errors and CSP violations collected: a page that breaks its own policy fails the test."""
    contexts, problems = [], []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "401" not in m.text
                and "412" not in m.text and "422" not in m.text and "409" not in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, problems


def sign_in(page: Page, site: Site, who: str) -> None:
    page.goto(site.url + "/")
    page.get_by_label("API key").fill(site.keys[who])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text(f"{who} (")


def queue_row(page: Page, entry_id: int) -> Any:
    return page.locator(f'#queue tbody tr[data-id="{entry_id}"]')


def open_entry(page: Page, site: Site, source_id: str) -> None:
    page.goto(f"{site.url}/#/entry/{site.ids[source_id]}")
    expect(page.locator("#entry-title")).to_contain_text(f"Entry {site.ids[source_id]}:")


def test_a_reviewer_filters_approves_adjusts_and_reads_the_trail(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "reviewer")
    expect(page.locator("#queue tbody tr").first).to_be_visible()
    assert page.locator("#queue tbody tr").count() == 25  # the seed's waiting entries
    first = page.locator("#queue tbody tr").first  # "rate": over the partner cap
    expect(first.locator(".badge.error")).to_have_text(re.compile(r"error ACME-RATE-001$"))
    expect(first.locator(".excerpt")).to_contain_text("Drafted answer and affirmative defenses")
    page.locator("#rule-counts-box summary").click()
    expect(page.locator("#rule-counts tbody")).to_contain_text("ACME-RATE-001")
    page.screenshot(path=SHOTS / "queue.png", full_page=True)

    # Cursor paging: 25 a page, then the rest.
    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#page-next")).to_be_disabled()
    assert page.locator("#queue tbody tr").count() == 25
    first_page = page.locator("#queue tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    page.get_by_label("Per page").select_option("10")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#queue tbody tr")).to_have_count(10)
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    second = page.locator("#queue tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert second == first_page[10:20]
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#queue tbody tr")).to_have_count(5)
    expect(page.locator("#page-next")).to_be_disabled()
    page.get_by_role("button", name="First page").click()
    expect(page.locator("#page-info")).to_contain_text("Page 1")
    page.get_by_label("Per page").select_option("50")

    # Filters: one matter, then one source.
    page.get_by_label("Matter", exact=True).fill("2026-0099")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#queue tbody tr")).to_have_count(1)
    expect(queue_row(page, site.ids["vague"])).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#queue tbody tr")).to_have_count(25)
    page.get_by_label("Source").fill("mattero")
    page.get_by_label("Severity").select_option("error")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#queue tbody tr")).to_have_count(1)

    # Approve: an error finding needs a reason, and the trail shows who approved and why.
    queue_row(page, site.ids["m1"]).locator("a").click()
    expect(page.locator("#entry-findings")).to_contain_text("ACME-RATE-001")
    expect(page.locator("#entry-findings table").first).to_contain_text("990")  # the evidence: actual rate
    page.screenshot(path=SHOTS / "entry.png", full_page=True)
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#entry-result")).to_contain_text("needs a reason")
    page.get_by_label("Reason for approving").fill("rate agreed with the client in writing")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#entry-result")).to_contain_text("The entry is now ready")
    history = page.locator("#entry-history tbody tr").first
    expect(history).to_contain_text("approve")
    expect(history).to_contain_text("key:reviewer")
    expect(history).to_contain_text("rate agreed with the client in writing")

    # Adjust another: the write-down shows before saving, the entry judged again after.
    open_entry(page, site, "p00")
    page.get_by_label("Rate", exact=True).fill("950.00")
    expect(page.locator("#adjust-preview")).to_contain_text("Write-down -60.00")
    page.locator("#adjust-reason").fill("cap agreed for 2026")
    page.get_by_role("button", name="Save adjustment").click()
    result = page.locator("#entry-result")
    expect(result).to_contain_text("Write-down: -60.00")
    expect(result).to_contain_text("cleared ACME-RATE-001")
    expect(page.locator("#entry-history tbody tr").first).to_contain_text("rate: 990.00 \u2192 950.00")
    expect(page.locator("#entry-fields")).to_contain_text("950.00")
    page.screenshot(path=SHOTS / "entry-adjusted.png", full_page=True)

    # Back in the queue: the approved and adjusted entries are gone from it.
    page.get_by_role("link", name="Back to the queue").click()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#queue tbody tr")).to_have_count(23)
    expect(queue_row(page, site.ids["m1"])).to_have_count(0)


def test_keyboard_and_bulk(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "reviewer")
    page.locator("#filters").get_by_label("From").fill(day(9))  # p12 to p19 and later: none of the other tests' entries
    page.get_by_role("button", name="Apply filters").click()
    first = page.locator("#queue tbody tr").first
    expect(first).to_have_class("current")
    page.locator("body").press("j")
    expect(page.locator("#queue tbody tr").nth(1)).to_have_class("current")
    page.locator("body").press("k")
    expect(first).to_have_class("current")
    page.locator("body").press("?")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    first_id = first.get_attribute("data-id")
    page.locator("body").press("a")  # open the current entry at the approve reason
    expect(page.locator("#entry-title")).to_contain_text(f"Entry {first_id}:")
    expect(page.get_by_label("Reason for approving")).to_be_focused()
    page.get_by_role("link", name="Back to the queue").click()

    # Bulk: two entries, one reason.
    rows = page.locator("#queue tbody tr")
    picked = [rows.nth(i).get_attribute("data-id") for i in (0, 1)]
    for i in (0, 1):
        rows.nth(i).locator(".pick").check()
    page.get_by_label("Reason for the selected entries").fill("month-end sweep, rates confirmed")
    page.get_by_role("button", name="Approve selected").click()
    expect(page.locator("#bulk-status")).to_contain_text("2 done, 0 refused")
    for entry_id in picked:
        expect(page.locator(f'#queue tbody tr[data-id="{entry_id}"]')).to_have_count(0)

    # r: reject the current entry with a reason.
    current = page.locator("#queue tbody tr.current").get_attribute("data-id")
    page.locator("body").press("r")
    expect(page.get_by_label("Reason for rejecting")).to_be_focused()
    page.keyboard.type("work for another client")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#entry-result")).to_contain_text("The entry is now rejected")
    expect(page.locator("#entry-history tbody tr").first).to_contain_text("work for another client")
    assert page.locator("#entry-title").text_content().startswith(f"Entry {current}:")
    page.locator("body").press("j")  # on to the next entry of the queue
    expect(page.locator("#entry-title")).not_to_contain_text(f"Entry {current}:")
    expect(page.locator("#entry-result")).to_be_empty()


def test_a_stale_action_says_who_acted_and_keeps_what_was_typed(new_page: Any, site: Site) -> None:
    first, second = new_page(), new_page()
    sign_in(first, site, "reviewer")
    sign_in(second, site, "reviewer2")
    open_entry(first, site, "p10")
    open_entry(second, site, "p10")
    second.get_by_label("Narrative").fill("Drafted answer to the amended counterclaim; research on defenses")
    second.get_by_label("Reason for rejecting").fill("billed twice, see p11")

    first.get_by_label("Reason for approving").fill("partner rate confirmed")
    first.get_by_role("button", name="Approve").click()
    expect(first.locator("#entry-result")).to_contain_text("The entry is now ready")

    second.get_by_role("button", name="Reject").click()
    notice = second.locator("#entry-conflict")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("key:reviewer (approve: partner rate confirmed")
    expect(notice).to_contain_text("It is now ready")
    expect(second.locator("#entry-result")).to_contain_text("Not saved")
    expect(second.get_by_label("Reason for rejecting")).to_have_value("billed twice, see p11")
    expect(second.get_by_label("Narrative")).to_have_value(
        "Drafted answer to the amended counterclaim; research on defenses")
    expect(second.locator("#entry-fields")).to_contain_text("ready")  # the entry was reloaded
    expect(second.locator("#entry-history tbody tr").first).to_contain_text("partner rate confirmed")
    second.screenshot(path=SHOTS / "conflict.png", full_page=True)


def test_a_viewer_sees_no_action_buttons(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "viewer")
    expect(page.locator("#queue tbody tr").first).to_be_visible()
    assert page.locator("#queue .pick").count() == 0
    expect(page.locator("#bulk")).to_be_hidden()
    page.locator("#queue tbody tr a").first.click()
    expect(page.locator("#entry-findings")).to_be_visible()
    for name in ("Approve", "Reject", "Save adjustment"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    page.get_by_role("link", name="Rule sets").click()
    expect(page.locator("#rulesets tbody tr").first).to_be_visible()
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)
    expect(page.locator("#ruleset-form")).to_be_hidden()

    # Signing out forgets the key: the tab's session storage no longer holds it.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_label("API key")).to_be_visible()


def test_a_rule_author_sees_problems_by_position_and_backtests_a_draft(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "author")
    page.get_by_role("link", name="Rule sets").click()
    page.get_by_label("Or paste the text").fill(DRAFT.replace("type: rate_cap", "type: rate_capp"))
    page.get_by_role("button", name="Upload as a draft").click()
    problems = page.locator("#ruleset-errors li")
    expect(problems.first).to_contain_text("line 43, column")
    problems.first.get_by_role("button").click()
    expect(page.get_by_label("Or paste the text")).to_be_focused()

    row = page.locator("#rulesets tbody tr", has_text="2026.2")
    row.get_by_role("button", name="Backtest").click()
    diff = page.locator("#backtest-rules")
    expect(diff).to_contain_text("ACME-RATE-001")
    expect(diff).to_contain_text("changed")
    expect(page.locator("#backtest")).to_contain_text("no longer flagged")
    page.screenshot(path=SHOTS / "backtest.png", full_page=True)
    row.get_by_role("button", name="Shadow").click()
    expect(page.locator("#flash")).to_contain_text("is now shadow")


# What the overview's charts hold, read back from Chart.js: one record per canvas, with how many of its pixels are
# drawn on (a chart that never drew has none) and the colours it was given.
CHARTS = """() => Array.from(document.querySelectorAll('#overview-groups canvas')).map((canvas) => {
  const chart = window.Chart.getChart(canvas);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) inked += 1;
  return { section: canvas.closest('section').getAttribute('aria-label'), role: canvas.getAttribute('role'),
           name: canvas.getAttribute('aria-label'), drawn: Boolean(chart), inked,
           type: chart && chart.config.type, axis: chart && chart.options.indexAxis,
           animation: chart ? chart.options.animation : null, labels: chart ? chart.data.labels : [],
           series: chart ? chart.data.datasets.map((d) => d.label) : [],
           data: chart ? chart.data.datasets.map((d) => d.data) : [],
           bars: chart ? chart.data.datasets.map((d) => d.backgroundColor) : [],
           ink: chart ? [chart.options.scales.x.ticks.color, chart.options.scales.y.ticks.color] : [] };
})"""
LIVE_CHARTS = "() => Object.keys(window.Chart.instances).length"


def contrast_on_white(colour: str) -> float:
    """WCAG 2 contrast of a #rrggbb colour against white."""
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 1.05 / (0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b) + 0.05)


def test_the_findings_overview(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "viewer")
    page.get_by_role("link", name="Overview").click()
    groups = page.locator("#overview-groups")
    expect(groups.get_by_role("heading", name="By rule")).to_be_visible()
    by_rule = groups.get_by_role("region", name="By rule", exact=True)
    expect(by_rule.locator("table")).to_contain_text("ACME-RATE-001")
    expect(by_rule.locator("canvas")).to_be_visible()
    assert page.evaluate("() => typeof window.Chart") == "function"  # the shipped library, loaded before app.js

    # Every chart is a Chart.js horizontal bar chart, drawn at once (no animation), read as one named image.
    charts = {c["section"]: c for c in page.evaluate(CHARTS)}
    assert set(charts) == {"By rule", "By client", "By timekeeper", "By month", "Write-downs"}  # no rejections yet
    for section, chart in charts.items():
        assert chart["drawn"] and chart["type"] == "bar" and chart["axis"] == "y", section
        assert chart["animation"] is False and chart["inked"] > 0, section
        assert chart["role"] == "img" and chart["name"], section
        assert all(contrast_on_white(c) >= 4.5 for c in chart["bars"] + chart["ink"]), (section, chart)
    assert page.evaluate(LIVE_CHARTS) == len(charts)

    # A chart shows the first ten groups of its table, with the same figures; its name reads them out.
    table = by_rule.locator("table tbody tr").evaluate_all(
        "rows => rows.map((r) => [r.cells[0].textContent, Number(r.cells[1].textContent)])")
    rule = charts["By rule"]
    assert [list(pair) for pair in zip(rule["labels"], rule["data"][0], strict=True)] == table[:10]
    assert rule["name"].startswith("Findings by rule: ") and f"{table[0][0]} {table[0][1]}" in rule["name"]
    months = groups.get_by_role("region", name="By month").locator("tbody tr td:first-child").all_text_contents()
    assert charts["By month"]["labels"] == months[-10:]  # the latest months
    downs = charts["Write-downs"]  # what each rule proposes, in the seed's one currency: negative, the bill goes down
    assert downs["series"] == ["USD"] and "ACME-RATE-001" in downs["labels"] and all(v < 0 for v in downs["data"][0])
    expect(groups.get_by_role("region", name="Write-downs").locator("table")).to_contain_text("ACME-RATE-001")
    page.screenshot(path=SHOTS / "overview.png", full_page=True)

    # Drawn again for a window without findings: the old charts are destroyed, and the tables say there is nothing.
    form = page.locator("#overview-form")
    form.get_by_label("From").fill("2099-01-01")
    form.get_by_role("button", name="Show").click()
    expect(by_rule).to_contain_text("No findings in this window.")
    expect(groups.locator("canvas")).to_have_count(0)
    assert page.evaluate(LIVE_CHARTS) == 0

    # Rejections by reason, and write-downs in two currencies (the API's answer amended on its way to the page):
    # one bar per currency, sorted by currency, and the portal's reasons with their codes.
    def amended(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["portal_rejections"] = [
            {"reason_code": "VAGUE", "reason": "Description too vague", "kind": "rejected", "count": 3,
             "amount": {"USD": "120.75"}},
            {"reason_code": None, "reason": "Other", "kind": "cut", "count": 1, "amount": {}}]
        for group in body["by"]["rule"]:
            if group["write_down"]:
                group["write_down"]["EUR"] = "-10.00"
        route.fulfill(response=response, json=body)

    page.route("**/v1/reports/findings?*", amended)
    form.get_by_label("From").fill("")
    form.get_by_role("button", name="Show").click()
    rejections = groups.get_by_role("region", name="Portal rejections by reason")
    expect(rejections.locator("canvas")).to_be_visible()
    charts = {c["section"]: c for c in page.evaluate(CHARTS)}
    assert len(charts) == 6 and page.evaluate(LIVE_CHARTS) == 6
    refused = charts["Portal rejections by reason"]
    assert refused["labels"] == ["VAGUE Description too vague", "Other"] and refused["data"] == [[3, 1]]
    assert refused["name"] == "Portal rejections by reason: VAGUE Description too vague 3, Other 1"
    downs = charts["Write-downs"]
    assert downs["series"] == ["EUR", "USD"] and all(v == -10 for v in downs["data"][0])
    assert "-10.00 EUR and -" in downs["name"]
    assert len(set(downs["bars"])) == 2  # the currencies in different colours, told apart by the legend
    page.unroute("**/v1/reports/findings?*")
    page.screenshot(path=SHOTS / "overview-rejections.png", full_page=True)


def test_billing_previews_builds_and_reads_the_ledes_file(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "admin")
    page.get_by_role("link", name="Invoices").click()
    form = page.locator("#invoice-form")
    form.get_by_label("Client (LEDES id)").fill("ACME01")
    form.get_by_label("Period start").fill(day(0))
    form.get_by_label("Period end").fill(day(1))
    form.get_by_role("button", name="Preview").click()
    out = page.locator("#invoice-out")
    expect(out).to_contain_text("Preview: total 2775.00")  # clean1 and clean2: 1.5 h at 925.00 each
    form.get_by_role("button", name="Build").click()
    expect(out).to_contain_text("built: total 2775.00")
    row = page.locator("#invoices tbody tr", has_text="ACME01")
    expect(row).to_have_count(1)
    row.get_by_role("button", name="LEDES").click()
    expect(page.locator("#ledes")).to_contain_text("LEDES1998B")
    row.get_by_role("button", name="Open").click()
    expect(out).to_contain_text("Portal rejections")
    expect(out.locator("table").last).to_contain_text("key:admin")  # the build event

    # Void it: a reason is required; the invoice turns void and its entries are released (built again below).
    number = row.locator("td").first.text_content()
    row.get_by_role("button", name="Void").click()
    expect(page.get_by_label("Reason for voiding")).to_be_focused()
    page.locator("#void-confirm").click()
    expect(page.locator("#void-error")).to_contain_text("needs a reason")
    page.get_by_label("Reason for voiding").fill("wrong billing period, rebuilt")
    page.locator("#void-confirm").click()
    expect(page.locator("#flash")).to_contain_text(f"Invoice {number} is void")
    expect(row.locator("td").nth(4)).to_have_text("void")
    expect(row.get_by_role("button", name="Void")).to_have_count(0)  # nothing left to void
    expect(out.locator("table").last).to_contain_text("voided")
    page.screenshot(path=SHOTS / "invoice-voided.png", full_page=True)
    form.get_by_role("button", name="Build").click()
    expect(out).to_contain_text("built: total 2775.00")  # the released entries bill again
    draft = page.locator("#invoices tbody tr", has_text="draft")
    expect(draft.get_by_role("button", name="Void")).to_have_count(1)

    # Only billing keys may void: a reviewer reads the invoices without the button.
    other = new_page()
    sign_in(other, site, "reviewer")
    other.get_by_role("link", name="Invoices").click()
    expect(other.locator("#invoices tbody tr", has_text="draft")).to_have_count(1)
    expect(other.get_by_role("button", name="Void")).to_have_count(0)
    biller = new_page()
    sign_in(biller, site, "biller")
    biller.get_by_role("link", name="Invoices").click()
    expect(biller.locator("#invoices tbody tr", has_text="draft").get_by_role("button", name="Void")).to_have_count(1)


def test_every_control_has_a_label_and_the_page_fits_1280_by_800(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "admin")
    for view in ("queue", "rulesets", "invoices", "overview"):
        page.goto(f"{site.url}/#/{view}")
        expect(page.locator(f"#view-{view}")).to_be_visible()
        unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea'))
            .filter((e) => e.offsetParent !== null)
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map((e) => e.outerHTML)""")
        assert unlabelled == [], (view, unlabelled)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (view, overflow)  # no sideways scrolling at 1280 px
    page.goto(f"{site.url}/")
    page.keyboard.press("Tab")  # the first stop is the skip link, then the navigation
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"


def test_an_adjustment_shows_the_entry_judged_again_before_it_is_saved(new_page: Any, site: Site) -> None:
    page = new_page()
    previews: list[str] = []
    page.on("request", lambda r: previews.append(r.url) if r.url.endswith("/adjust/preview") else None)
    sign_in(page, site, "reviewer")
    open_entry(page, site, "p05")
    preview = page.locator("#adjust-preview")
    expect(preview).to_contain_text("Change the rate, hours, narrative or a code")
    assert previews == []  # nothing is asked before anything changes

    # Still over the cap: the finding would remain, with its evidence and the write-down it proposes.
    page.get_by_label("Rate", exact=True).fill("960.00")
    expect(preview).to_contain_text("Write-down -45.00: amount 1485.00 \u2192 1440.00")
    expect(preview).to_contain_text("stays in_review with 1 finding (worst: error)")
    finding = preview.locator(".preview-findings li")
    expect(finding).to_have_count(1)
    expect(finding).to_contain_text("error ACME-RATE-001")
    expect(finding).to_contain_text("actual 960.00")
    expect(finding).to_contain_text("proposed write-down -15.00")
    expect(preview).to_contain_text("further write-down of -15.00")
    page.locator("#adjust-form").screenshot(path=SHOTS / "edit-preview-remaining.png")

    # Typed key by key, the preview is asked for once typing pauses, not at every key.
    rate = page.get_by_label("Rate", exact=True)
    rate.fill("")
    asked = len(previews)
    rate.press_sequentially("950.00", delay=30)
    expect(preview).to_contain_text("Write-down -60.00: amount 1485.00 \u2192 1425.00")
    expect(preview).to_contain_text("would be ready: no findings remain")
    expect(preview).to_contain_text("It clears ACME-RATE-001")
    assert len(previews) - asked <= 2, previews[asked:]
    page.get_by_label("Narrative").fill("Drafted answer and affirmative defenses to the amended counterclaim")
    expect(preview).to_contain_text("Write-down -60.00")
    page.locator("#adjust-form").screenshot(path=SHOTS / "edit-preview-form.png")
    page.screenshot(path=SHOTS / "edit-preview.png", full_page=True)

    # Nothing was saved by the previews: same version, no adjustment in the trail.
    expect(page.locator("#entry-fields")).to_contain_text("version 1")
    expect(page.locator("#entry-history tbody")).not_to_contain_text("adjust")

    # Saving stores what the preview said.
    page.locator("#adjust-reason").fill("cap agreed for 2026")
    page.get_by_role("button", name="Save adjustment").click()
    result = page.locator("#entry-result")
    expect(result).to_contain_text("Write-down: -60.00")
    expect(result).to_contain_text("The entry is now ready")
    expect(result).to_contain_text("cleared ACME-RATE-001")
    expect(page.locator("#entry-findings")).to_contain_text("No findings.")
    expect(preview).to_contain_text("Change the rate, hours, narrative or a code")  # the form is the entry again


def test_the_queue_shows_excerpts_rule_badges_and_data_quality_flags(new_page: Any, site: Site) -> None:
    with transaction(site.sessions) as session:  # a month after the seed: no other test's entries move
        ingest(session, [recent("unmapped", work_date=day(40), data_quality_flags=["UNKNOWN_TIMEKEEPER"],
                                narrative="Telephone conference with opposing counsel regarding the scheduling "
                                          "order, the deposition calendar and the expert disclosure deadlines")],
               context=NOW)
        unmapped = session.scalar(select(EntryRow.id).where(EntryRow.source_id == "unmapped"))
    page = new_page()
    sign_in(page, site, "reviewer")
    vague = queue_row(page, site.ids["vague"])
    expect(vague.locator(".excerpt")).to_have_text("Review file and attention to matter")
    expect(vague.locator(".rules .badge.warning")).to_contain_text("warning ACME-NARR-002")
    expect(queue_row(page, site.ids["rate"]).locator(".rules .badge.error")).to_contain_text("error ACME-RATE-001")

    page.locator("#filters").get_by_label("From").fill(day(40))
    page.get_by_role("button", name="Apply filters").click()
    row = queue_row(page, unmapped)
    expect(page.locator("#queue tbody tr")).to_have_count(1)
    expect(row.locator(".badge.warning")).to_have_text("UNKNOWN_TIMEKEEPER")
    expect(row.locator(".excerpt")).to_contain_text("Telephone conference with opposing counsel")
    expect(row.locator(".excerpt")).to_contain_text("\u2026")
    expect(row.locator("td").nth(11)).to_have_text("clio")  # the source
    page.screenshot(path=SHOTS / "queue-flags.png", full_page=True)

    # The entry shows its data-quality flags, and approving it then needs a reason.
    row.locator("a").click()
    expect(page.locator("#entry-quality")).to_have_text("UNKNOWN_TIMEKEEPER")
    expect(page.locator("#approve-required")).to_contain_text("required")
    open_entry(page, site, "vague")
    expect(page.locator("#entry-quality")).to_have_text("no flags")


# The checks run in the page: names as assistive technology would read them (a simplified accessible-name
# computation), heading levels in document order, and the contrast of every visible piece of text against the
# colour behind it (WCAG 2 relative luminance; backgrounds composited up the ancestors, opacity applied).
A11Y_CHECK = """() => {
  const problems = [];
  const shown = (e) => e.checkVisibility({ checkVisibilityCSS: true, checkOpacity: true });
  const describe = (e) => e.outerHTML.replace(/\\s+/g, " ").slice(0, 140);
  const byIds = (ids) => ids.split(/\\s+/).map((id) => document.getElementById(id)).filter(Boolean)
    .map((n) => n.textContent).join(" ").trim();
  const nameOf = (e) => {
    const labelledBy = e.getAttribute("aria-labelledby");
    if (labelledBy && byIds(labelledBy)) return byIds(labelledBy);
    const label = (e.getAttribute("aria-label") || "").trim();
    if (label) return label;
    if (e.labels && e.labels.length) {
      const text = Array.from(e.labels).map((l) => l.textContent).join(" ").trim();
      if (text) return text;
    }
    if (["A", "BUTTON", "SUMMARY"].includes(e.tagName) || ["button", "link"].includes(e.getAttribute("role"))) {
      const text = (e.textContent || "").trim();
      if (text) return text;
      const img = e.querySelector("img[alt]");
      if (img && img.alt.trim()) return img.alt.trim();
    }
    return (e.getAttribute("title") || "").trim();
  };
  for (const e of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (shown(e) && !nameOf(e)) problems.push(`form control without a label: ${describe(e)}`);
  }
  for (const e of document.querySelectorAll("button, a[href], summary, [role=button], [role=link]")) {
    if (shown(e) && !nameOf(e)) problems.push(`${e.tagName.toLowerCase()} without a name: ${describe(e)}`);
  }
  for (const e of document.querySelectorAll("img")) {
    if (shown(e) && !e.hasAttribute("alt")) problems.push(`image without alt text: ${describe(e)}`);
  }
  for (const e of document.querySelectorAll("svg, canvas")) {
    if (shown(e) && e.getAttribute("aria-hidden") !== "true" && !(e.getAttribute("role") === "img" && nameOf(e))) {
      problems.push(`graphic without a text alternative: ${describe(e)}`);
    }
  }
  let previous = 0;
  for (const h of Array.from(document.querySelectorAll("h1, h2, h3, h4, h5, h6")).filter(shown)) {
    const level = Number(h.tagName[1]);
    if ((previous === 0 && level !== 1) || level > previous + 1) {
      problems.push(`heading h${level} after h${previous || "nothing"}: ${h.textContent.trim().slice(0, 60)}`);
    }
    previous = level;
  }
  const rgba = (text) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(text || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => ({ r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
                                  b: top.b * top.a + under.b * (1 - top.a), a: 1 });
  const behind = (e) => {
    const layers = [];
    for (let n = e; n; n = n.parentElement) {
      const colour = rgba(getComputedStyle(n).backgroundColor);
      if (colour && colour.a > 0) {
        layers.push(colour);
        if (colour.a >= 1) break;
      }
    }
    return layers.reverse().reduce((under, top) => over(top, under), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = (c) => {
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const checked = new Set();
  const check = (e) => {
    if (checked.has(e) || !shown(e)) return;
    checked.add(e);
    const style = getComputedStyle(e);
    let ink = rgba(e.namespaceURI === "http://www.w3.org/2000/svg" ? style.fill : style.color);
    if (!ink) return;
    let opacity = 1;
    for (let n = e; n; n = n.parentElement) opacity *= Number(getComputedStyle(n).opacity);
    const ground = behind(e);
    const contrast = ratio(over({ ...ink, a: ink.a * opacity }, ground), ground);
    if (contrast < 4.5) {
      problems.push(`contrast ${contrast.toFixed(2)}:1 (${style.color} on rgb(${Math.round(ground.r)}, `
        + `${Math.round(ground.g)}, ${Math.round(ground.b)})): ${describe(e)}`);
    }
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!node.textContent.trim() || !parent || parent.closest("option, script, style")) continue;
    check(parent);
  }
  for (const e of document.querySelectorAll("input:not([type=hidden]):not([type=checkbox]), select, textarea")) {
    check(e);
  }
  return problems;
}"""


def test_the_views_pass_an_automated_accessibility_check(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "admin")  # every control a role can have

    def check(view: str) -> None:
        problems = page.evaluate(A11Y_CHECK)
        assert problems == [], (view, problems)

    expect(page.locator("#queue tbody tr").first).to_be_visible()
    page.locator("#rule-counts-box summary").click()
    expect(page.locator("#rule-counts tbody tr").first).to_be_visible()
    queue_row(page, site.ids["vague"]).click()  # a current row, as j and k leave it
    page.get_by_role("link", name="Back to the queue").click()
    expect(page.locator("#queue tbody tr.current")).to_have_count(1)
    check("queue")

    open_entry(page, site, "vague")  # a warning, with the adjustment's preview open
    page.get_by_label("Narrative").fill("Reviewed the produced documents for privilege")
    expect(page.locator("#adjust-preview")).to_contain_text("Write-down 0.00")
    check("entry")

    page.get_by_role("link", name="Rule sets").click()
    expect(page.locator("#rulesets tbody tr").first).to_be_visible()
    page.get_by_label("Or paste the text").fill("id: broken\nrules: [")
    page.get_by_role("button", name="Upload as a draft").click()
    expect(page.locator("#ruleset-errors li").first).to_be_visible()
    check("rule sets")

    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#overview-groups canvas").first).to_be_visible()
    assert page.evaluate("() => document.querySelectorAll('#overview-groups svg').length") == 0  # Chart.js draws
    check("overview")

    page.get_by_role("link", name="Invoices").click()
    expect(page.locator("#invoice-form")).to_be_visible()
    check("invoices")
