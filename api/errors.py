"""Errors as the API answers them: ``{"error": {"code": ..., "message": ..., "details": [...]}}`` with a
stable code. Every error the engine raises on purpose is an :class:`engine.errors.OcgateError` carrying its
own code and status, so one handler answers them all; the few that only the API can raise (no key, a key
without the role, a missing ``If-Match``) are subclasses of it here.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import OcgateError


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: unauthorized, forbidden, not_found, ...")
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Unauthorized(OcgateError):
    code, status = "unauthorized", 401


class Forbidden(OcgateError):
    code, status = "forbidden", 403


class PreconditionRequired(OcgateError):
    code, status = "precondition_required", 428


class VersionMismatch(OcgateError):
    code, status = "version_mismatch", 412


class TooManyAttempts(OcgateError):
    """Too many failed API key attempts from one address: answered with ``Retry-After``."""

    code, status = "too_many_attempts", 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


DESCRIBED = {400: "bad request", 401: "no or unknown API key", 403: "the key's role may not do this",
             404: "not found", 409: "not in a state that allows this",
             412: "If-Match does not match the entry's current version", 422: "the request or its content is invalid",
             428: "If-Match is required",
             429: "too many failed API key attempts from this address; wait as long as Retry-After says",
             502: "the destination refused the invoice",
             503: "the destination could not be reached; submit again later (nothing is sent twice)"}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route for its OpenAPI document: 401, 403, 422 and 429 always, and ``statuses``."""
    return {s: {"model": ErrorResponse, "description": DESCRIBED[s]} for s in (401, 403, 422, 429, *statuses)}


class _ErrorJSON(JSONResponse):
    """An error body as ASCII JSON: a message may quote what was sent, lone surrogates included, which UTF-8
    cannot encode (``\\ud800`` is valid JSON; the raw character is not valid UTF-8)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **({"details": details} if details else {})}}
    return _ErrorJSON(body, status_code=status)


def install(app: FastAPI) -> None:
    """The app's error handlers: the engine's errors, invalid requests, and Starlette's own (404, 405)."""

    @app.exception_handler(OcgateError)
    async def _engine_error(request: Request, exc: OcgateError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message, exc.details() or None)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return error_response(422, "invalid_request", "the request does not match the API", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": an invalid request like any other
            return error_response(422, "invalid_request", "the request body could not be read as the route's "
                                  "content type", [{"where": "body", "message": str(exc.detail)}])
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
