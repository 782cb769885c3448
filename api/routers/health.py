"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can do its work: the database answers and its
schema is at the newest migration). No API key: a load balancer or an orchestrator asks, and neither says more
than ready or not and why."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from engine.store.health import readiness

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str  # "ready" or "not_ready"
    database: str  # "ok" or "unreachable"
    revision: str | None
    head: str | None
    problem: str | None = None


@router.get("/healthz", response_model=Health, summary="the process is up",
            description="Answers 200 while the server process runs; it touches no database.")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, summary="ready to serve requests",
            description="200 when the database answers and its schema is at the newest migration; 503 (same "
                        "body, with a problem) when not, so a load balancer sends this process no traffic.",
            responses={503: {"model": Ready, "description": "the database is unreachable or its schema is not "
                                                            "at the newest migration"}})
def readyz(request: Request) -> Any:
    engine = request.app.state.sessions.kw["bind"]
    state = readiness(engine)
    body = Ready(status="ready" if state.ready else "not_ready", database="ok" if state.database else "unreachable",
                 revision=state.revision, head=state.head, problem=state.problem)
    if state.ready:
        return body
    return JSONResponse(body.model_dump(), status_code=503)
