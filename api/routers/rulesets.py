"""``/v1/rulesets``: rule set versions: upload a rule file, list versions, activate, shadow, backtest."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import Author, Reader, SessionDep, VersionId, actor
from api.errors import responses
from engine.errors import Invalid
from engine.store.db import transaction
from engine.store.models import RuleSetVersion
from engine.workflows import rulesets

router = APIRouter(tags=["rulesets"])


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


class NotUtf8(Invalid):
    code = "invalid_ruleset"


def _out(version: RuleSetVersion) -> RuleSetOut:
    return RuleSetOut.model_validate(version, from_attributes=True)


@router.post("/v1/rulesets", response_model=RuleSetOut, status_code=201, responses=responses(),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}})
async def upload_ruleset(request: Request, key: Author) -> RuleSetOut:
    """Store a rule file as a new version (a draft); the same rules are stored once."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUtf8("the rule file must be UTF-8 text") from None

    def store() -> RuleSetOut:  # database and YAML work off the event loop
        with transaction(request.app.state.sessions) as session:
            return _out(rulesets.add_ruleset_version(session, text, source="upload", created_by=actor(key)))

    return await run_in_threadpool(store)


@router.get("/v1/rulesets", response_model=list[RuleSetOut], responses=responses())
def list_rulesets(session: SessionDep, key: Reader, ruleset_id: str | None = None) -> list[RuleSetOut]:
    return [_out(v) for v in rulesets.versions(session, ruleset_id)]


@router.post("/v1/rulesets/{version_id}/activate", response_model=RuleSetOut, responses=responses(404))
def activate(version_id: VersionId, session: SessionDep, key: Author) -> RuleSetOut:
    return _out(rulesets.activate(session, version_id))


@router.post("/v1/rulesets/{version_id}/shadow", response_model=RuleSetOut, responses=responses(404))
def shadow(version_id: VersionId, session: SessionDep, key: Author) -> RuleSetOut:
    return _out(rulesets.shadow(session, version_id))


@router.post("/v1/rulesets/{version_id}/backtest", response_model=BacktestOut, responses=responses(404))
def backtest(version_id: VersionId, session: SessionDep, key: Author,
             as_of: Annotated[dt.date | None, Body(embed=True)] = None) -> BacktestOut:
    """Evaluate a version over the stored entries and compare with the rule set's active version."""
    result = rulesets.backtest(session, version_id, as_of=as_of)
    return BacktestOut(draft=_out(result.draft), active=_out(result.active) if result.active else None,
                       entries_checked=result.entries_checked, newly_flagged=result.newly_flagged,
                       no_longer_flagged=result.no_longer_flagged, examples=result.examples)
