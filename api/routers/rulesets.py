"""``/v1/rulesets``: rule set versions: upload a rule file, list versions, activate, shadow, backtest."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.deps import MAX_ID, STORED_MAX, Author, Reader, SessionDep, VersionId, actor
from api.errors import responses
from engine.errors import Invalid, NotFound
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.store.models import RuleSetVersion
from engine.workflows import backtest as backtests
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


Money = dict[str, str]  # currency -> a decimal amount as text (negative: the line total goes down)
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=120)]


class BacktestIn(BaseModel):
    """What to backtest against, over which entries, judged as of when. Every field is optional."""

    model_config = ConfigDict(populate_by_name=True)

    against: Annotated[int, Field(ge=1, le=MAX_ID)] | Literal["active"] = Field(
        "active", description="the version to compare with: a version id of the same rule set, or its active one")
    from_: dt.date | None = Field(None, alias="from", description="first work date of the entries compared")
    to: dt.date | None = Field(None, description="last work date of the entries compared")
    clients: list[ClientId] = Field(default_factory=list, max_length=100,
                                    description="only these clients' entries (LEDES or source client ids)")
    as_of: dt.date | None = Field(None, description="the date the entries are judged on (default: today)")
    period_start: dt.date | None = Field(None, description="the billing period entries are judged for")
    period_end: dt.date | None = None
    examples: int = Field(backtests.EXAMPLES, ge=0, le=backtests.MAX_EXAMPLES,
                          description="examples per rule and change")


class ExampleOut(BaseModel):
    entry_id: int
    entry_uid: str
    rule_id: str
    change: Literal["newly flagged", "no longer flagged"]
    message: str
    severity: str
    evidence: list[dict[str, Any]]
    adjustment: dict[str, str] | None
    contributing: list[str]


class RuleDiffOut(BaseModel):
    rule_id: str
    rule_type: str
    change: Literal["added", "removed", "changed"]
    differs: list[str] = Field(description="params, severity, status, scope, rule set; or rule (added, removed)")
    flagged_before: int = Field(description="entries the compared version flags with this rule")
    flagged_after: int = Field(description="entries the draft flags with this rule")
    newly_flagged: int
    no_longer_flagged: int
    write_down_before: Money
    write_down_after: Money
    write_down_change: Money
    compared_findings: Literal["evaluated", "decision log", "both"] = Field(
        description="whether the compared version's findings were evaluated, read from the stored decisions, or "
                    "both (read for the entries it judged, evaluated for the others)")


class WindowOut(BaseModel):
    from_: dt.date | None = Field(alias="from")
    to: dt.date | None
    clients: list[str]


class ContextOut(BaseModel):
    as_of: dt.date | None
    period_start: dt.date | None
    period_end: dt.date | None


class WorkOut(BaseModel):
    entries_read: int
    entries_read_in_full: int
    findings_reused: int
    seconds: float


class BacktestOut(BaseModel):
    draft: RuleSetOut
    active: RuleSetOut | None = Field(description="the version compared with (the active one unless asked)")
    entries_checked: int
    newly_flagged: dict[str, int] = Field(description="by rule: (entry, rule) pairs the draft flags and the active "
                                                      "version does not")
    no_longer_flagged: dict[str, int]
    write_down_change: Money = Field(description="by currency: what the draft's proposed write-downs add up to, "
                                                 "less the compared version's")
    rules: list[RuleDiffOut] = Field(description="every rule that differs between the two versions")
    unchanged_rules: list[str]
    examples: list[ExampleOut]
    window: WindowOut
    context: ContextOut
    work: WorkOut


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


@router.post("/v1/rulesets/{version_id}/backtest", response_model=BacktestOut, responses=responses(404),
             response_model_by_alias=True)
def backtest(version_id: VersionId, session: SessionDep, key: Author,
             body: Annotated[BacktestIn | None, Body()] = None) -> BacktestOut:
    """Compare what a version flags over the stored entries with its rule set's active version (or another
    version): per rule, the entries newly flagged and no longer flagged, the write-downs, and examples with their
    evidence. Only the rules that differ are evaluated; nothing is written."""
    asked = body or BacktestIn()
    if asked.against != "active" and asked.against > STORED_MAX:
        raise NotFound(f"rule set version {asked.against} does not exist")
    if asked.period_start and asked.period_end and asked.period_start > asked.period_end:
        raise backtests.BacktestError("the billing period starts after it ends")
    result = backtests.backtest(
        session, version_id, against=None if asked.against == "active" else asked.against,
        window=backtests.Window(asked.from_, asked.to, tuple(asked.clients)), examples=asked.examples,
        context=EvaluationContext(as_of=asked.as_of or dt.date.today(), period_start=asked.period_start,
                                  period_end=asked.period_end))
    return BacktestOut(draft=_out(result.draft), active=_out(result.active) if result.active else None,
                       **backtests.summary(result))
