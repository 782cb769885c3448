"""The review queue API (FastAPI). Thin: queries, the review workflow and ingest live in ``engine``.

Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a stable code, declared per route in
the OpenAPI document. Every route needs an API key (``Authorization: Bearer ocg_...``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AUTHOR, INGEST, READ, REVIEW, Caller, KeyCache, Role, verify
from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.rules.ruleset import RuleSetError
from engine.store.db import make_engine, session_factory
from engine.store.models import (
    REVIEW_STATES,
    WAITING_SQL,
    EntryRow,
    EntryState,
    PortalRejection,
    RuleSetStatus,
    RuleSetVersion,
    ViolationRow,
)
from engine.workflows import review
from engine.workflows.billing.invoices import InvoiceError, open_portal_rejections
from engine.workflows.intake import add_ruleset_version, ingest, load_version, set_status

# Errors ---------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: unauthorized, forbidden, not_found, ...")
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **({"details": details} if details else {})}}
    return JSONResponse(body, status_code=status)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {400: "bad request", 401: "no or unknown API key", 403: "the key's role may not do this",
                 404: "not found", 409: "not in a state that allows this", 412: "If-Match does not match the "
                 "entry's current version", 422: "the request or its content is invalid",
                 428: "If-Match is required"}
    return {s: {"model": ErrorResponse, "description": described[s]} for s in (401, 403, 422, *statuses)}


# Response models ------------------------------------------------------------------------------------

class ViolationOut(BaseModel):
    rule_id: str
    ruleset_id: str
    ruleset_revision: str
    severity: str
    rule_status: str
    title: str
    message: str
    evidence: list[dict[str, Any]]
    adjustment: dict[str, Any] | None
    contributing: list[str]
    references: list[str]


class ReviewItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    entry_uid: str
    source_system: str
    source_id: str
    state: str
    worst_severity: str | None
    version: int
    work_date: dt.date
    ledes_client_id: str | None
    law_firm_matter_id: str | None
    timekeeper: str | None
    timekeeper_name: str | None
    hours_billed: Decimal | None
    rate: Decimal | None
    amount: Decimal | None
    rule_ids: list[str]
    portal_reasons: list[str] = Field(default_factory=list, description="what a client's portal rejected, not yet "
                                                                       "answered by a reviewer")


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = Field(description="pass as cursor= for the next page; null on the last page")


class HistoryItem(BaseModel):
    id: int
    action: str
    actor: str
    at: dt.datetime
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class EntryDetail(BaseModel):
    id: int
    entry_uid: str
    state: str
    version: int
    worst_severity: str | None
    entry: dict[str, Any]
    pending_record: dict[str, Any] | None
    violations: list[ViolationOut]
    portal_rejections: list[dict[str, Any]] = Field(default_factory=list, description="open rejections by a "
                                                    "client's portal, with the proposed rule")
    history: list[HistoryItem]


class ActionIn(BaseModel):
    reason: str | None = Field(default=None, description="required when approving error-severity findings")


class AdjustIn(ActionIn):
    changes: dict[str, Any] = Field(description="rate, hours_billed, narrative or UTBMS codes")


class ActionOut(BaseModel):
    id: int
    action: str
    state: str
    version: int
    write_down: Decimal | None = None


class BulkItem(BaseModel):
    id: int
    version: int


class BulkIn(BaseModel):
    action: Literal["approve", "reject", "adjust"]
    reason: str | None = None
    changes: dict[str, Any] | None = None
    items: list[BulkItem] = Field(min_length=1, max_length=1000)


class BulkResult(BaseModel):
    id: int
    ok: bool
    state: str | None = None
    version: int | None = None
    error: ErrorBody | None = None


class RuleSetOut(BaseModel):
    id: int
    ruleset_id: str
    revision: str
    version_label: str
    status: str
    created_by: str | None
    created_at: dt.datetime


class BacktestOut(BaseModel):
    draft: RuleSetOut
    active: RuleSetOut | None
    entries_checked: int
    newly_flagged: dict[str, int] = Field(description="by rule: (entry, rule) pairs the draft flags and the active "
                                                      "version does not")
    no_longer_flagged: dict[str, int]
    examples: list[dict[str, str]]


class IngestOut(BaseModel):
    batch_id: int
    received: int
    created: int
    updated: int
    unchanged: int
    withdrawn: int
    conflicts: int
    ready: int
    in_review: int
    held: int
    held_rulesets: list[dict[str, Any]]


# Dependencies ---------------------------------------------------------------------------------------

def _sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with _sessions(request)() as session, session.begin():
        yield session


# scope="function": the transaction commits before the response is sent, so a client never hears of a
# change that did not land.
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
bearer = HTTPBearer(auto_error=False, description="an API key from `ocgate keys create`")


def _caller(request: Request, session: SessionDep,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer ocg_...")
    key = verify(session, credentials.credentials, request.app.state.key_cache)
    if key is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return key


def allow(roles: frozenset[Role]) -> Any:
    def check(key: Annotated[Caller, Depends(_caller)]) -> Caller:
        if key.role not in roles:
            raise ApiError(403, "forbidden", f"role {key.role} may not do this (needs one of: "
                                             f"{', '.join(sorted(r.value for r in roles))})")
        return key
    return Depends(check)


Reader = Annotated[Caller, allow(READ)]
Reviewer = Annotated[Caller, allow(REVIEW)]
Author = Annotated[Caller, allow(AUTHOR)]
Ingester = Annotated[Caller, allow(INGEST)]


def _if_match(value: str | None) -> int:
    if value is None:
        raise ApiError(428, "precondition_required", "send If-Match with the entry's ETag (GET /v1/entries/{id})")
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiError(412, "version_mismatch", f"If-Match {value!r} is not an ETag of this API")
    return int(text)


def _etag(version: int) -> str:
    return f'"{version}"'


# Cursor pagination ----------------------------------------------------------------------------------

LIST_COLUMNS = (EntryRow.id, EntryRow.entry_uid, EntryRow.source_system, EntryRow.source_id, EntryRow.state,
                EntryRow.worst_severity, EntryRow.version, EntryRow.work_date, EntryRow.updated_at,
                EntryRow.ledes_client_id, EntryRow.law_firm_matter_id, EntryRow.timekeeper_key,
                EntryRow.timekeeper_name, EntryRow.hours_billed, EntryRow.rate, EntryRow.amount)
PORTAL_SEPARATOR = "\x1e"  # between a list item's portal reasons (a reason may hold commas)
SORTS = {"work_date": (EntryRow.work_date, False), "-work_date": (EntryRow.work_date, True),
         "updated_at": (EntryRow.updated_at, False), "-updated_at": (EntryRow.updated_at, True)}


def _encode_cursor(sort: str, value: Any, last_id: int) -> str:
    raw = json.dumps({"s": sort, "v": value.isoformat() if hasattr(value, "isoformat") else value, "i": last_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != sort:
            raise ValueError("sort changed")
        value = data["v"]
        if sort.endswith("work_date"):
            value = dt.date.fromisoformat(value)
        else:
            value = dt.datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError("timestamp without a timezone")
        last_id = int(data["i"])
        if not 0 < last_id < 2**63:
            raise ValueError("id out of range")
        return value, last_id
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this list returned (or the sort changed)") from None


# The app --------------------------------------------------------------------------------------------

def create_app(database_url: str | None = None, *, sessions: sessionmaker[Session] | None = None,
               key_cache_seconds: float = 30.0) -> FastAPI:
    app = FastAPI(title="ocgate", version="0.1.0",
                  description="Review queue for billing entries checked against Outside Counsel Guidelines.")
    app.state.sessions = sessions or session_factory(make_engine(database_url))
    app.state.key_cache = KeyCache(key_cache_seconds)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(review.ReviewError)
    async def _review_error(request: Request, exc: review.ReviewError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(InvoiceError)
    async def _invoice_error(request: Request, exc: InvoiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, [{"message": p} for p in exc.problems[:50]] or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return _error(422, "invalid_request", "the request does not match the API", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    register_routes(app)
    from api.invoice_routes import register_invoice_routes

    register_invoice_routes(app)
    return app


def register_routes(app: FastAPI) -> None:
    @app.get("/v1/review-items", response_model=ReviewPage, responses=errors(400), tags=["review"])
    def list_review_items(
        session: SessionDep, key: Reader,
        state: Annotated[list[EntryState] | None, Query(description="default: every state waiting for review")] = None,
        client: str | None = None, matter: str | None = None, timekeeper: str | None = None,
        rule_id: str | None = None, severity: Literal["error", "warning", "info"] | None = None,
        date_from: dt.date | None = None, date_to: dt.date | None = None, source: str | None = None,
        sort: Literal["work_date", "-work_date", "updated_at", "-updated_at"] = "work_date",
        cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> ReviewPage:
        states = state or list(REVIEW_STATES)
        # Only the listed columns: the full record (JSON) is for the entry's own page. The waiting states
        # are written literally so that the planner can use the partial indexes (a bound parameter
        # cannot prove the index's predicate). The rules of each entry come in the same query.
        waiting = set(states) == set(REVIEW_STATES)
        rule_ids = (select(func.aggregate_strings(ViolationRow.rule_id, ","))
                    .where(ViolationRow.entry_id == EntryRow.id, ViolationRow.current.is_(True),
                           ViolationRow.rule_status == "active").scalar_subquery().label("rule_list"))
        portal = (select(func.aggregate_strings(PortalRejection.reason, PORTAL_SEPARATOR))
                  .where(PortalRejection.entry_id == EntryRow.id, PortalRejection.resolved_at.is_(None))
                  .scalar_subquery().label("portal_list"))
        query = select(*LIST_COLUMNS, rule_ids, portal).where(
            text(WAITING_SQL) if waiting else EntryRow.state.in_(states))
        if client:
            query = query.where(or_(EntryRow.ledes_client_id == client, EntryRow.client_source_id == client))
        if matter:
            query = query.where(or_(EntryRow.law_firm_matter_id == matter, EntryRow.client_matter_id == matter))
        if timekeeper:
            query = query.where(EntryRow.timekeeper_key == timekeeper)
        if date_from:
            query = query.where(EntryRow.work_date >= date_from)
        if date_to:
            query = query.where(EntryRow.work_date <= date_to)
        if source:
            query = query.where(EntryRow.source_system == source)
        if rule_id or severity:
            conditions = [ViolationRow.entry_id == EntryRow.id, ViolationRow.current.is_(True),
                          ViolationRow.rule_status == "active"]
            if rule_id:
                conditions.append(ViolationRow.rule_id == rule_id)
            if severity:
                conditions.append(ViolationRow.severity == severity)
            query = query.where(exists().where(and_(*conditions)))
        column, descending = SORTS[sort]
        if cursor:
            value, last_id = _decode_cursor(cursor, sort)
            if descending:
                query = query.where(or_(column < value, and_(column == value, EntryRow.id < last_id)))
            else:
                query = query.where(or_(column > value, and_(column == value, EntryRow.id > last_id)))
        order = (column.desc(), EntryRow.id.desc()) if descending else (column.asc(), EntryRow.id.asc())
        rows = list(session.execute(query.order_by(*order).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        items = [ReviewItem(**{**r._mapping, "timekeeper": r.timekeeper_key},
                            rule_ids=sorted(set(r.rule_list.split(","))) if r.rule_list else [],
                            portal_reasons=r.portal_list.split(PORTAL_SEPARATOR) if r.portal_list else [])
                 for r in rows]
        last = rows[-1] if rows else None
        next_cursor = _encode_cursor(sort, getattr(last, column.key), last.id) if more and last else None
        return ReviewPage(items=items, next_cursor=next_cursor)

    def _detail(session: Session, entry_id: int) -> EntryDetail:
        row = session.get(EntryRow, entry_id)
        if row is None:
            raise ApiError(404, "not_found", f"entry {entry_id} does not exist")
        violations = session.scalars(select(ViolationRow).where(
            ViolationRow.entry_id == entry_id, ViolationRow.current.is_(True)).order_by(ViolationRow.id))
        return EntryDetail(
            id=row.id, entry_uid=row.entry_uid, state=row.state, version=row.version,
            worst_severity=row.worst_severity, entry=row.record, pending_record=row.pending_record,
            violations=[ViolationOut(rule_id=v.rule_id, ruleset_id=v.ruleset_id, ruleset_revision=v.ruleset_revision,
                                     severity=v.severity, rule_status=v.rule_status, title=v.title,
                                     message=v.message, evidence=v.evidence, adjustment=v.adjustment,
                                     contributing=v.contributing, references=v.references) for v in violations],
            portal_rejections=[{"invoice_id": r.invoice_id, "line_number": r.line_number, "reason": r.reason,
                                "reason_code": r.reason_code, "comment": r.comment, "proposal": r.proposal}
                               for r in open_portal_rejections(session, entry_id)],
            history=[HistoryItem.model_validate(a, from_attributes=True) for a in review.history(session, entry_id)])

    @app.get("/v1/entries/{entry_id}", response_model=EntryDetail, responses=errors(404), tags=["review"])
    def get_entry(entry_id: int, session: SessionDep, response: Response, key: Reader) -> EntryDetail:
        detail = _detail(session, entry_id)
        response.headers["ETag"] = _etag(detail.version)
        return detail

    @app.get("/v1/entries/{entry_id}/history", response_model=list[HistoryItem], responses=errors(404),
             tags=["review"])
    def get_history(entry_id: int, session: SessionDep, key: Reader) -> list[HistoryItem]:
        return [HistoryItem.model_validate(a, from_attributes=True) for a in review.history(session, entry_id)]

    def _act(session: Session, action: str, entry_id: int, version: int, actor: str, reason: str | None,
             changes: dict[str, Any] | None) -> review.Outcome:
        if action == "approve":
            return review.approve(session, entry_id, expected_version=version, actor=actor, reason=reason)
        if action == "reject":
            return review.reject(session, entry_id, expected_version=version, actor=actor, reason=reason)
        return review.adjust(session, entry_id, expected_version=version, actor=actor, reason=reason,
                             changes=changes or {})

    def _respond(outcome: review.Outcome, response: Response) -> ActionOut:
        response.headers["ETag"] = _etag(outcome.version)
        return ActionOut(id=outcome.entry_id, action=outcome.action, state=outcome.state, version=outcome.version,
                         write_down=outcome.write_down)

    action_errors = errors(404, 409, 412, 428)

    @app.post("/v1/entries/{entry_id}/approve", response_model=ActionOut, responses=action_errors, tags=["review"])
    def approve(entry_id: int, body: ActionIn, session: SessionDep, response: Response,
                key: Reviewer, if_match: Annotated[str | None, Header()] = None) -> ActionOut:
        return _respond(_act(session, "approve", entry_id, _if_match(if_match), f"key:{key.name}", body.reason,
                             None), response)

    @app.post("/v1/entries/{entry_id}/reject", response_model=ActionOut, responses=action_errors, tags=["review"])
    def reject(entry_id: int, body: ActionIn, session: SessionDep, response: Response,
               key: Reviewer, if_match: Annotated[str | None, Header()] = None) -> ActionOut:
        return _respond(_act(session, "reject", entry_id, _if_match(if_match), f"key:{key.name}", body.reason,
                             None), response)

    @app.post("/v1/entries/{entry_id}/adjust", response_model=ActionOut, responses=action_errors, tags=["review"])
    def adjust(entry_id: int, body: AdjustIn, session: SessionDep, response: Response,
               key: Reviewer, if_match: Annotated[str | None, Header()] = None) -> ActionOut:
        return _respond(_act(session, "adjust", entry_id, _if_match(if_match), f"key:{key.name}", body.reason,
                             body.changes), response)

    @app.post("/v1/review-items/bulk", response_model=list[BulkResult], responses=errors(), tags=["review"])
    def bulk(body: BulkIn, session: SessionDep, key: Reviewer) -> list[BulkResult]:
        """Each item is its own all-or-nothing step: one stale or refused item does not stop the others."""
        results = []
        for item in body.items:
            try:
                with session.begin_nested():
                    outcome = _act(session, body.action, item.id, item.version, f"key:{key.name}", body.reason,
                                   body.changes)
                results.append(BulkResult(id=item.id, ok=True, state=outcome.state, version=outcome.version))
            except review.ReviewError as exc:
                results.append(BulkResult(id=item.id, ok=False, error=ErrorBody(code=exc.code, message=exc.message)))
        return results

    @app.post("/v1/entries", response_model=IngestOut, responses=errors(), tags=["ingest"])
    def post_entries(entries: list[Entry], session: SessionDep, key: Ingester) -> IngestOut:
        result = ingest(session, entries, actor=f"key:{key.name}", source="api")
        return IngestOut(**{k: v for k, v in result.as_dict().items() if k in IngestOut.model_fields})

    # Rule sets

    def _ruleset_out(v: RuleSetVersion) -> RuleSetOut:
        return RuleSetOut(id=v.id, ruleset_id=v.ruleset_id, revision=v.revision, version_label=v.version_label,
                          status=v.status, created_by=v.created_by, created_at=v.created_at)

    @app.post("/v1/rulesets", response_model=RuleSetOut, status_code=201, responses=errors(), tags=["rulesets"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}})
    async def upload_ruleset(request: Request, key: Author) -> RuleSetOut:
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid_ruleset", "the rule file must be UTF-8 text") from None

        def store() -> RuleSetOut:  # database and YAML work off the event loop
            with request.app.state.sessions() as session, session.begin():
                try:
                    version = add_ruleset_version(session, text, source="upload", created_by=f"key:{key.name}")
                except RuleSetError as exc:
                    details = [{"line": p.line, "column": p.column, "where": p.where, "message": p.message}
                               for p in exc.problems]
                    raise ApiError(422, "invalid_ruleset", "; ".join(f"{p.line}:{p.column}: {p.message}"
                                                                      for p in exc.problems[:5]), details) from None
                return _ruleset_out(version)

        return await run_in_threadpool(store)

    @app.get("/v1/rulesets", response_model=list[RuleSetOut], responses=errors(), tags=["rulesets"])
    def list_rulesets(session: SessionDep, key: Reader,
                      ruleset_id: str | None = None) -> list[RuleSetOut]:
        query = select(RuleSetVersion).order_by(RuleSetVersion.ruleset_id, RuleSetVersion.id)
        if ruleset_id:
            query = query.where(RuleSetVersion.ruleset_id == ruleset_id)
        return [_ruleset_out(v) for v in session.scalars(query)]

    def _version(session: Session, version_id: int) -> RuleSetVersion:
        version = session.get(RuleSetVersion, version_id)
        if version is None:
            raise ApiError(404, "not_found", f"rule set version {version_id} does not exist")
        return version

    @app.post("/v1/rulesets/{version_id}/activate", response_model=RuleSetOut, responses=errors(404),
              tags=["rulesets"])
    def activate(version_id: int, session: SessionDep, key: Author) -> RuleSetOut:
        version = _version(session, version_id)
        set_status(session, version, RuleSetStatus.ACTIVE)
        return _ruleset_out(version)

    @app.post("/v1/rulesets/{version_id}/shadow", response_model=RuleSetOut, responses=errors(404),
              tags=["rulesets"])
    def shadow(version_id: int, session: SessionDep, key: Author) -> RuleSetOut:
        version = _version(session, version_id)
        set_status(session, version, RuleSetStatus.SHADOW)
        return _ruleset_out(version)

    @app.post("/v1/rulesets/{version_id}/backtest", response_model=BacktestOut, responses=errors(404),
              tags=["rulesets"])
    def backtest(version_id: int, session: SessionDep, key: Author,
                 as_of: Annotated[dt.date | None, Body(embed=True)] = None) -> BacktestOut:
        """Evaluate a version over the stored entries and compare with the rule set's active version."""
        from engine.rules.evaluate import evaluate

        draft = _version(session, version_id)
        active = session.scalar(select(RuleSetVersion).where(
            RuleSetVersion.ruleset_id == draft.ruleset_id, RuleSetVersion.status == RuleSetStatus.ACTIVE))
        stored = [Entry.model_validate(r) for r in session.scalars(
            select(EntryRow.record).where(EntryRow.state != EntryState.WITHDRAWN).order_by(EntryRow.id))]
        ctx = EvaluationContext(as_of=as_of or dt.date.today())

        def flags(version: RuleSetVersion | None) -> set[tuple[str, str]]:
            if version is None:
                return set()
            ruleset = load_version(version)
            return {(v.entry_uid, v.rule_id) for v in evaluate(stored, ruleset, context=ctx, backend="python")
                    if v.rule_status == "active"}

        new, old = flags(draft), flags(active)
        gained, lost = sorted(new - old), sorted(old - new)
        by_rule = lambda pairs: {rule: sum(1 for _, r in pairs if r == rule)  # noqa: E731
                                 for rule in sorted({r for _, r in pairs})}
        examples = [{"entry_uid": uid, "rule_id": rid, "change": "newly flagged"} for uid, rid in gained[:10]]
        examples += [{"entry_uid": uid, "rule_id": rid, "change": "no longer flagged"} for uid, rid in lost[:10]]
        checked = sum(1 for e in stored if load_version(draft).applies_to(e))
        return BacktestOut(draft=_ruleset_out(draft), active=_ruleset_out(active) if active else None,
                           entries_checked=checked, newly_flagged=by_rule(gained), no_longer_flagged=by_rule(lost),
                           examples=examples)
