"""``/v1/timekeepers``: the firm's timekeeper table. Any key reads it; only an admin imports a CSV file (the
format is in docs/timekeepers.md), since the table decides the LEDES ids and classifications every invoice
carries."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import Reader, SessionDep, allow
from api.errors import responses
from engine.errors import Invalid
from engine.store.db import transaction
from engine.workflows import timekeepers
from engine.workflows.keys import Caller, Role

router = APIRouter(tags=["timekeepers"])
Admin = Annotated[Caller, allow(frozenset({Role.ADMIN}))]


class SourceIdOut(BaseModel):
    source_system: str
    source_user_id: str


class RateOut(BaseModel):
    rate: Decimal
    currency: str
    effective_from: dt.date
    effective_to: dt.date | None = Field(description="inclusive; null: until the next rate in the currency starts")


class TimekeeperOut(BaseModel):
    ledes_id: str
    name: str = Field(description="Last, First")
    first_name: str | None
    last_name: str | None
    classification: str | None = Field(description="LEDES 2014 timekeeper classification")
    title: str | None = Field(description="the firm's own title, as imported")
    source_ids: list[SourceIdOut]
    rates: list[RateOut]
    updated_at: dt.datetime | None


class ImportOut(BaseModel):
    created: list[str] = Field(description="LEDES ids of timekeepers new to the table")
    updated: list[str] = Field(description="LEDES ids of timekeepers whose name, classification, source ids or "
                                           "rates changed")
    unchanged: int
    rates_removed: int = Field(description="rates of the listed timekeepers that the file no longer has")
    source_ids_removed: int


class NotUtf8(Invalid):
    code = "invalid_timekeepers"


def _out(tk: timekeepers.TimekeeperRecord) -> TimekeeperOut:
    return TimekeeperOut.model_validate(tk, from_attributes=True)


@router.get("/v1/timekeepers", response_model=list[TimekeeperOut], responses=responses())
def list_timekeepers(session: SessionDep, key: Reader) -> list[TimekeeperOut]:
    return [_out(tk) for tk in timekeepers.timekeepers(session)]


@router.get("/v1/timekeepers/{ledes_id}", response_model=TimekeeperOut, responses=responses(404))
def get_timekeeper(ledes_id: str, session: SessionDep, key: Reader) -> TimekeeperOut:
    return _out(timekeepers.get(session, ledes_id))


@router.post("/v1/timekeepers/import", response_model=ImportOut, responses=responses(),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}})
async def import_timekeepers(request: Request, key: Admin) -> ImportOut:
    """Add or update the timekeepers of a CSV file, all or nothing; a file with problems gets 422 with each
    problem's line and column in ``error.details``."""
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotUtf8("the timekeeper file must be UTF-8 text") from None

    def store() -> ImportOut:  # database work off the event loop
        with transaction(request.app.state.sessions) as session:
            result = timekeepers.import_csv(session, text, source="upload")
        return ImportOut.model_validate(result, from_attributes=True)

    return await run_in_threadpool(store)
