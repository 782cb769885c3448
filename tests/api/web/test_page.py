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
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version
from tests.api.conftest import ACME_TEXT, day, seed
from tests.conftest import REPO, _migrated_template

# The page is the same on every Python: CI drives it from the main one only.
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("OCGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("OCGATE_SCREENSHOTS") or REPO / "test-screenshots")
KEYS = {"reviewer": Role.REVIEWER, "reviewer2": Role.REVIEWER, "viewer": Role.VIEWER, "author": Role.RULE_AUTHOR,
        "admin": Role.ADMIN}
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
        yield Site(url=f"http://127.0.0.1:{port}", keys=keys, ids=ids, draft_id=draft_id)
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
    expect(page.locator("#queue tbody tr").first.locator(".badge.error")).to_have_text("error")
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
    expect(page.locator("#adjust-preview")).to_contain_text("write-down -60.00")
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


def test_the_findings_overview(new_page: Any, site: Site) -> None:
    page = new_page()
    sign_in(page, site, "viewer")
    page.get_by_role("link", name="Overview").click()
    groups = page.locator("#overview-groups")
    expect(groups.get_by_role("heading", name="By rule")).to_be_visible()
    expect(groups.locator("section", has_text="By rule").locator("table")).to_contain_text("ACME-RATE-001")
    expect(groups.locator("svg").first).to_have_attribute("aria-label", re.compile("ACME-RATE-001"))
    page.screenshot(path=SHOTS / "overview.png", full_page=True)



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
