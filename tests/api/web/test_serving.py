"""The reviewer's page as files: served by the app itself with the right types and the page's own policy, kept
out of the API's document; the API keeps its strict policy; ``GET /v1/me`` tells the page what a key may do."""

from __future__ import annotations

import re

import pytest

from api import web
from api.app import API_CSP, DOCS_CSP, PAGE_CSP
from tests.api.conftest import World

ASSETS = {"/ui/static/app.js": "text/javascript", "/ui/static/app.css": "text/css",
          "/ui/static/favicon.svg": "image/svg+xml", "/ui/static/chart.umd.min.js": "text/javascript",
          "/ui/static/chart.js.LICENSE.txt": "text/plain"}


def media(response) -> str:  # type: ignore[no-untyped-def]
    return response.headers["content-type"].split(";", 1)[0]


def test_the_page_is_served_at_the_root_with_its_own_policy(world: World) -> None:
    response = world.client.get("/")  # no key: the page itself asks for one
    assert response.status_code == 200
    assert media(response) == "text/html"
    assert response.headers["content-security-policy"] == PAGE_CSP.decode()
    assert response.headers["x-frame-options"] == "DENY" and response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script src="/ui/static/chart.umd.min.js" defer>',  # first: deferred scripts run in order
                       '<script src="/ui/static/app.js" defer>'], scripts  # no inline script
    assert not re.search(r"\sstyle=|\son[a-z]+=", html), "inline styles or handlers would need 'unsafe-inline'"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "every asset comes from ocgate itself"


@pytest.mark.parametrize(("path", "kind"), ASSETS.items())
def test_assets_have_their_types_and_the_page_policy(world: World, path: str, kind: str) -> None:
    response = world.client.get(path)
    assert response.status_code == 200, path
    assert media(response) == kind
    assert response.headers["content-security-policy"] == PAGE_CSP.decode()
    assert response.content == (web.STATIC / path.rsplit("/", 1)[1]).read_bytes()


def test_the_policy_allows_nothing_from_elsewhere_and_no_eval() -> None:
    policy = PAGE_CSP.decode()
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "http" not in policy
    script = (web.STATIC / "app.js").read_text()
    for risky in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert risky not in script, risky


def test_the_charting_library_is_shipped_and_served_from_the_page_origin(world: World) -> None:
    response = world.client.get("/ui/static/chart.umd.min.js")
    assert response.status_code == 200
    assert media(response) == "text/javascript"
    assert response.headers["x-content-type-options"] == "nosniff"  # so the type above is the one that counts
    policy = response.headers["content-security-policy"]
    assert policy == PAGE_CSP.decode()
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'" and directives["img-src"] == "'self'"
    script = response.text
    assert script.startswith("/*!\n * Chart.js v4.") and "window.Chart=" in script  # the UMD build: a global
    for risky in ("eval(", "new Function"):  # the policy has no 'unsafe-eval': the library must not need it
        assert risky not in script, risky
    notice = world.client.get("/ui/static/chart.js.LICENSE.txt")
    assert notice.status_code == 200 and media(notice) == "text/plain"
    version = re.search(r"Chart\.js v(\d+\.\d+\.\d+)", script)
    assert version and notice.text.startswith(f"Chart.js {version[1]},"), "the notice names the shipped version"
    assert "MIT License" in notice.text and "Copyright (c) 2014-2024 Chart.js Contributors" in notice.text


@pytest.mark.parametrize("path", ["/ui/static/nothing.js", "/ui/static/index.html.bak", "/ui/static/..%2F__init__.py",
                                  "/ui/static/%2e%2e/__init__.py"])
def test_only_the_listed_assets_are_served(world: World, path: str) -> None:
    response = world.client.get(path)
    assert response.status_code == 404, path
    assert response.json()["error"]["code"] == "not_found"


def test_every_file_in_the_bundle_is_served() -> None:
    shipped = {p.name for p in web.STATIC.iterdir()}
    assert shipped == {"index.html", *web.ASSETS}


def test_the_api_keeps_its_strict_policy(world: World) -> None:
    for response in (world.get("/v1/review-items"), world.get("/v1/me"), world.client.get("/v1/review-items"),
                     world.client.get("/openapi.json"), world.client.get("/ui/other")):
        assert response.headers["content-security-policy"] == API_CSP.decode(), response.url
    assert world.client.get("/docs").headers["content-security-policy"] == DOCS_CSP.decode()


def test_the_page_is_not_part_of_the_api_document(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)
    assert "get" in paths["/v1/me"]


@pytest.mark.parametrize(("who", "role", "may"), [
    ("admin", "admin", {"review": True, "author": True, "bill": True, "ingest": True}),
    ("reviewer", "reviewer", {"review": True, "author": False, "bill": False, "ingest": False}),
    ("author", "rule_author", {"review": False, "author": True, "bill": False, "ingest": False}),
    ("viewer", "viewer", {"review": False, "author": False, "bill": False, "ingest": False}),
])
def test_me_tells_the_key_its_role_and_what_it_may_do(world: World, who: str, role: str,
                                                       may: dict[str, bool]) -> None:
    response = world.get("/v1/me", who)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == who and body["role"] == role and body["may"] == may
    assert world.keys[who].startswith(f"ocg_{body['prefix']}_")


def test_me_needs_a_valid_key(world: World) -> None:
    assert world.client.get("/v1/me").json()["error"]["code"] == "unauthorized"
    assert world.get("/v1/me", "revoked").status_code == 401
