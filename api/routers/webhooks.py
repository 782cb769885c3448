"""``POST /v1/webhooks/{source}``: deliveries from a source's webhooks (Clio: activities created, updated,
deleted). Authenticated by the source's signature, not an API key. A verified delivery is stored before the
answer goes back, then processed by the worker; a bad, missing or replayed signature gets 401 and changes
nothing.

``POST /v1/webhooks/{source}/{token}``: the same, for sources that sign nothing (mattero): the callback path
ends with an unguessable token kept for the source, which the source compares in constant time; a missing or
wrong token gets 401 and changes nothing."""

from __future__ import annotations

from typing import Any

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


# The body is read raw (a signature covers its bytes), so it is declared here rather than as a model.
RAW_BODY = {"security": [], "requestBody": {
    "required": False, "description": "the delivery exactly as the source sends it; nothing in it is trusted before "
                                      "the signature or token is verified, and the record is fetched again",
    "content": {"application/json": {"schema": {}}}}}

TOKEN_ERRORS = {
    **WEBHOOK_ERRORS,
    401: {"model": ErrorResponse, "description": "a missing or wrong token in the path (the signature of sources "
                                                 "that sign nothing), or a replay: nothing was stored"},
}


@router.post("/v1/webhooks/{source}", response_model=WebhookAck, responses=WEBHOOK_ERRORS,
             openapi_extra=RAW_BODY)
async def receive_webhook(source: str, request: Request, sessions: Sessions) -> JSONResponse:
    """Verify, store, acknowledge; the worker re-fetches the record and judges it."""
    return await _receive(source, request, sessions, None)


@router.post("/v1/webhooks/{source}/{token}", response_model=WebhookAck, responses=TOKEN_ERRORS,
             openapi_extra=RAW_BODY)
async def receive_tokened_webhook(source: str, token: str, request: Request, sessions: Sessions) -> JSONResponse:
    """Check the path's token, store, acknowledge; the worker re-fetches what the delivery names."""
    return await _receive(source, request, sessions, token)


async def _receive(source: str, request: Request, sessions: Any, token: str | None) -> JSONResponse:
    body = await request.body()
    received = await run_in_threadpool(webhooks.receive, sessions, source, dict(request.headers), body,
                                       request.app.state.source_options, dict(request.query_params), token)
    if received.event_id is not None:
        request.app.state.worker.enqueue_webhook(received.event_id)
    return JSONResponse(WebhookAck(received=True, event_id=received.event_id).model_dump(),
                        headers=received.headers)
