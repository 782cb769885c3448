"""``POST /v1/webhooks/{source}``: deliveries from a source's webhooks (Clio: activities created, updated,
deleted). Authenticated by the source's signature, not an API key. A verified delivery is stored before the
answer goes back, then processed by the worker; a bad, missing or replayed signature gets 401 and changes
nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import Sessions
from api.errors import ErrorResponse
from connectors.sources import webhooks

router = APIRouter(tags=["webhooks"])


class WebhookAck(BaseModel):
    received: bool
    event_id: int | None = Field(default=None, description="the stored event (none for a handshake)")


WEBHOOK_ERRORS = {
    401: {"model": ErrorResponse, "description": "a bad, missing or replayed signature: nothing was stored"},
    404: {"model": ErrorResponse, "description": "no source of that name"},
    422: {"model": ErrorResponse, "description": "the request does not match the API"},
}


@router.post("/v1/webhooks/{source}", response_model=WebhookAck, responses=WEBHOOK_ERRORS,
             openapi_extra={"security": []})
async def receive_webhook(source: str, request: Request, sessions: Sessions) -> JSONResponse:
    """Verify, store, acknowledge; the worker re-fetches the record and judges it."""
    body = await request.body()
    received = await run_in_threadpool(webhooks.receive, sessions, source, dict(request.headers), body,
                                       request.app.state.source_options, dict(request.query_params))
    if received.event_id is not None:
        request.app.state.worker.enqueue_webhook(received.event_id)
    return JSONResponse(WebhookAck(received=True, event_id=received.event_id).model_dump(),
                        headers=received.headers)
