"""``/v1/me``: who the calling key is and what its role lets it do, so a client (the reviewer's page) shows only
the actions the key may take. The API still checks the role on every action; this only saves a refused click."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Reader
from api.errors import responses
from engine.workflows.keys import AUTHOR, BILL, INGEST, REVIEW, Role

router = APIRouter(tags=["keys"])


class MayOut(BaseModel):
    review: bool = Field(description="approve, reject, adjust, bulk actions")
    author: bool = Field(description="upload, backtest, shadow and activate rule set versions")
    bill: bool = Field(description="build, submit, poll and void invoices")
    ingest: bool = Field(description="send entries and source webhooks")


class MeOut(BaseModel):
    name: str
    prefix: str = Field(description="the key's public prefix (ocg_<prefix>_...)")
    role: str
    may: MayOut


@router.get("/v1/me", response_model=MeOut, responses=responses())
def me(key: Reader) -> MeOut:
    role = Role(key.role)
    return MeOut(name=key.name, prefix=key.prefix, role=key.role,
                 may=MayOut(review=role in REVIEW, author=role in AUTHOR, bill=role in BILL, ingest=role in INGEST))
