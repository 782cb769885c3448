"""The API (FastAPI): ``create_app`` assembles one router per resource under ``api/routers``.

Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a stable code, declared per route in the
OpenAPI document (``api/errors.py``). Every route needs an API key (``Authorization: Bearer ocg_...``); the
key's role decides what it may do (``api/deps.py``).

Every request passes :class:`RequestGuard` first: a body over ``max_body_bytes`` is a 413, and text the store
could not keep (a NUL character anywhere, a lone UTF-16 surrogate in JSON) is a 422, before any route runs.
The OpenAPI document gets the 413 of every operation that takes a body, and the links between operations
(``LINKS``) that let a client, or a fuzzer's stateful phase, go from a list to an item to an action on it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, logs, web
from api.routers import entries, health, ingest, invoices, me, reports, review_items, rulesets, timekeepers, webhooks
from connectors.sources.registry import Options
from engine.store.db import make_engine, session_factory
from engine.workflows.keys import KeyCache

if TYPE_CHECKING:
    from api.worker import Worker

ROUTERS = (review_items.router, entries.router, ingest.router, rulesets.router, invoices.router, timekeepers.router,
           webhooks.router, health.router, reports.router, me.router, web.router)
MAX_BODY_BYTES = 8 * 1024 * 1024  # a 1000-entry ingest batch is about 1.5 MB; rule files and CSVs are smaller


class _LazyWorker:
    """The job queue, opened when the first job is queued (so an app that queues nothing opens no queue)."""

    def __init__(self, database_url: str | None, sessions: sessionmaker[Session], options: Options):
        self.database_url, self.sessions, self.options = database_url, sessions, options
        self._worker: Worker | None = None

    def enqueue_webhook(self, event_id: int) -> None:
        if self._worker is None:
            from api.worker import Worker

            self._worker = Worker(database=self.database_url, sessions=self.sessions, options=self.options)
        self._worker.enqueue_webhook(event_id)


# A JSON escape of NUL or of a UTF-16 surrogate (paired ones are fine; only a full parse tells them apart).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_text(value: Any, where: str) -> str | None:
    """Where in a parsed JSON document a string holds NUL or a lone surrogate, if anywhere."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or _SURROGATE.search(item):
                return at
        elif isinstance(item, dict):
            stack.extend((k, f"{at}.{k!r} (key)") for k in item)
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}.{i}") for i, v in enumerate(item))
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class RequestGuard:
    """Refuses, in the API's error shape, what no route should see: a body over the limit (413, checked against
    ``Content-Length`` and again while reading), NUL in the path, the query or a body, and in a JSON body a lone
    surrogate (valid JSON, but not text any database stores) or bytes that are not UTF-8 (422). A body that
    passes is handed on unchanged."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_url(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._check_body(body, headers.get("content-type", ""))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> Any:
        return errors.error_response(413, "body_too_large",
                                     f"the request body is larger than the limit of {self.max_body_bytes} bytes")

    @staticmethod
    def _check_url(scope: Scope) -> Any:
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
        for where, raw in (("path", raw_path), ("query", scope.get("query_string", b""))):
            if b"\x00" in unquote_to_bytes(raw):
                return errors.error_response(422, "invalid_request", f"the {where} may not contain NUL characters",
                                             [{"where": where, "message": "NUL character"}])
        return None

    @staticmethod
    def _check_body(body: bytes, content_type: str) -> Any:
        if not body:
            return None
        if b"\x00" in body:
            return errors.error_response(422, "invalid_request", "the request body may not contain NUL characters",
                                         [{"where": "body", "message": "NUL character"}])
        if not _is_json(content_type):
            return None  # routes that read text decode it themselves and say so
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return errors.error_response(422, "invalid_request", "the request body is not UTF-8 text",
                                         [{"where": "body", "message": f"byte {exc.start}: not UTF-8"}])
        if not _SUSPECT_ESCAPE.search(body):
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None  # not JSON: the route's own validation answers
        where = _bad_text(parsed, "body")
        if where is None:
            return None
        return errors.error_response(422, "invalid_request", "text in the request body may not contain NUL "
                                     "characters or lone UTF-16 surrogates", [{"where": where, "message": "not text"}])


# Sent with every response. The API answers JSON (and LEDES text) only, so nothing may be framed, sniffed, or run
# as a page; the interactive docs load Swagger UI and ReDoc from a CDN, so their pages get a policy that allows it.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            b"font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
            b"connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'")
# The reviewer's page (api/web) and its assets: everything from this server, no inline script or style, no eval.
PAGE_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HSTS = b"max-age=31536000; includeSubDomains"  # only over HTTPS (a proxy's X-Forwarded-Proto, see docs/deployment.md)
REQUEST_ID_HEADER = b"x-request-id"
access_log = logging.getLogger(logs.ACCESS_LOGGER)
error_log = logging.getLogger("ocgate.api")


class RequestContext:
    """The outermost layer of the app: gives each request an id (the client's ``X-Request-ID`` if it is a sane one,
    else a new one) that every log record written while answering carries and the response echoes; adds the
    security headers to every response, errors included; writes one access-log line per request; and turns an
    exception no handler took into the API's JSON 500, logged with its traceback and the request id."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str] = frozenset()) -> None:
        self.app, self.docs_paths = app, docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == REQUEST_ID_HEADER),
                       None)
        rid = logs.new_request_id(offered)
        token = logs.request_id.set(rid)
        started, status = time.perf_counter(), 0
        path = scope.get("path", "")
        csp = DOCS_CSP if path in self.docs_paths else PAGE_CSP if web.is_page(path) else API_CSP
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", csp))
                if https:
                    extra.append((b"strict-transport-security", HSTS))
                if b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                extra.append((REQUEST_ID_HEADER, rid.encode("ascii")))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            error_log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"),
                                extra={"request_id": rid})
            if status == 0:  # nothing sent yet: the client gets the API's error shape, with the id to quote
                await errors.error_response(500, "internal_error", f"the server failed to answer; quote request "
                                            f"id {rid} to the administrator")(scope, receive, send_with_headers)
            # else the response was under way: the server closes the connection, the client sees it cut short
        finally:
            client = scope.get("client")
            access_log.info("%s %s %s", scope.get("method"), scope.get("path"), status or "-", extra={
                "request_id": rid, "method": scope.get("method"), "path": scope.get("path"), "status": status or None,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client": client[0] if client else None})
            logs.request_id.reset(token)


# Links between operations, by (method, path): response status -> link name -> (target method, target path,
# parameters, request body or None). Runtime expressions as in OpenAPI 3.1 ``links``.
_ENTRY = "$response.body#/id"
LINKS: dict[tuple[str, str], dict[str, dict[str, tuple[str, str, dict[str, Any], Any]]]] = {
    ("get", "/v1/review-items"): {"200": {
        "GetEntry": ("get", "/v1/entries/{entry_id}", {"entry_id": "$response.body#/items/0/id"}, None),
        "GetHistory": ("get", "/v1/entries/{entry_id}/history", {"entry_id": "$response.body#/items/0/id"}, None),
        "Approve": ("post", "/v1/entries/{entry_id}/approve", {
            "entry_id": "$response.body#/items/0/id",
            "header.If-Match": "\"{$response.body#/items/0/version}\""}, None),
        "Reject": ("post", "/v1/entries/{entry_id}/reject", {
            "entry_id": "$response.body#/items/0/id",
            "header.If-Match": "\"{$response.body#/items/0/version}\""}, None),
        "BulkApprove": ("post", "/v1/review-items/bulk", {}, {
            "action": "approve", "reason": "checked",
            "items": [{"id": "$response.body#/items/0/id", "version": "$response.body#/items/0/version"}]}),
    }},
    ("get", "/v1/entries/{entry_id}"): {"200": {
        name: ("post", f"/v1/entries/{{entry_id}}/{action}", {"entry_id": "$request.path.entry_id",
                                                             "header.If-Match": "$response.header.ETag"}, None)
        for name, action in (("Approve", "approve"), ("Reject", "reject"), ("Adjust", "adjust"))} | {
        "PortalRejections": ("get", "/v1/entries/{entry_id}/portal-rejections",
                             {"entry_id": "$request.path.entry_id"}, None)}},
    **{("post", f"/v1/entries/{{entry_id}}/{action}"): {"200": {
        "GetEntry": ("get", "/v1/entries/{entry_id}", {"entry_id": _ENTRY}, None),
        "GetHistory": ("get", "/v1/entries/{entry_id}/history", {"entry_id": _ENTRY}, None)}}
       for action in ("approve", "reject", "adjust")},
    **{(method, path): {status: {
        name: ("post", f"/v1/rulesets/{{version_id}}/{name.lower()}", {"version_id": pointer}, None)
        for name in ("Backtest", "Shadow", "Activate")}}
       for method, path, status, pointer in (("post", "/v1/rulesets", "201", _ENTRY),
                                             ("get", "/v1/rulesets", "200", "$response.body#/0/id"))},
    **{(method, path): {status: {
        "GetInvoice": ("get", "/v1/invoices/{ref}", {"ref": pointer}, None),
        "GetLedes": ("get", "/v1/invoices/{ref}/ledes", {"ref": pointer}, None),
        "Void": ("post", "/v1/invoices/{ref}/void", {"ref": pointer}, {"reason": "fuzzed"}),
        "Poll": ("post", "/v1/invoices/{ref}/poll", {"ref": pointer}, None)}}
       for method, path, status, pointer in (("post", "/v1/invoices", "201", _ENTRY),
                                             ("get", "/v1/invoices", "200", "$response.body#/0/id"))},
    ("post", "/v1/entries"): {"200": {"Queue": ("get", "/v1/review-items", {}, None)}},
    ("get", "/v1/timekeepers"): {"200": {
        "GetTimekeeper": ("get", "/v1/timekeepers/{ledes_id}", {"ledes_id": "$response.body#/0/ledes_id"}, None)}},
}


def _amend(spec: dict[str, Any], max_body_bytes: int) -> dict[str, Any]:
    """The 413 of every operation with a body, and the links between operations."""
    paths = spec["paths"]
    too_large = {"description": f"the request body is larger than {max_body_bytes} bytes",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for operations in paths.values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation["responses"].setdefault("413", too_large)
    for (method, path), by_status in LINKS.items():
        for status, links in by_status.items():
            response = paths[path][method]["responses"][status]
            response["links"] = {
                name: {"operationId": paths[target_path][target_method]["operationId"],
                       **({"parameters": parameters} if parameters else {}),
                       **({"requestBody": body} if body is not None else {})}
                for name, (target_method, target_path, parameters, body) in links.items()}
    return spec


def _document(app: FastAPI, max_body_bytes: int) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _amend(generate(), max_body_bytes)
        return app.openapi_schema

    return openapi


def create_app(database_url: str | None = None, *, sessions: sessionmaker[Session] | None = None,
               key_cache_seconds: float = 30.0, worker: Worker | None = None,
               source_options: Options | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="ocgate", version="0.1.0",
                  description="Review queue for billing entries checked against Outside Counsel Guidelines.")
    app.state.sessions = sessions or session_factory(make_engine(database_url))
    app.state.key_cache = KeyCache(key_cache_seconds)
    app.state.source_options = source_options or Options()
    app.state.worker = worker or _LazyWorker(database_url, app.state.sessions, app.state.source_options)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    docs = frozenset(p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p)
    app.add_middleware(RequestContext, docs_paths=docs)  # added last: outside the guard, so its refusals get it too
    app.openapi = _document(app, max_body_bytes)  # type: ignore[method-assign]
    return app
