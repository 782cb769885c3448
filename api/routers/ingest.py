"""``POST /v1/entries``: entries sent in by a connector or a script, judged and queued like a file ingest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from api.deps import Ingester, SessionDep, actor
from api.errors import responses
from engine.model import Entry
from engine.workflows import intake

router = APIRouter(tags=["ingest"])
MAX_BATCH = 1000  # entries per request; a connector with more sends several batches


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
    rejudged: int = Field(description="stored entries of the same timekeepers and days judged again")


@router.post("/v1/entries", response_model=IngestOut, responses=responses())
def post_entries(entries: Annotated[list[Entry], Body(max_length=MAX_BATCH, description=f"at most {MAX_BATCH} "
                                                       "entries; more is a 422")],
                 session: SessionDep, key: Ingester) -> IngestOut:
    result = intake.ingest(session, entries, actor=actor(key), source="api")
    return IngestOut(**{k: v for k, v in result.as_dict().items() if k in IngestOut.model_fields})
