"""What every router depends on: a database session per request, the caller's API key and role (with failed
key attempts limited per client address, ``api/ratelimit.py``), and the ``If-Match`` precondition of review
actions."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api import redact
from api.errors import Forbidden, PreconditionRequired, TooManyAttempts, Unauthorized, VersionMismatch
from api.ratelimit import LIMIT, WINDOW_SECONDS, FailedKeyLimiter
from engine.errors import NotFound
from engine.workflows.keys import AUTHOR, BILL, INGEST, READ, REVIEW, Caller, Role, verify


def sessions(request: Request) -> sessionmaker[Session]:
    """The session factory, for routes that commit around a remote call (submit, poll) or work off the
    event loop."""
    return request.app.state.sessions


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with sessions(request)() as session, session.begin():
        yield session


# scope="function": the transaction commits before the response is sent, so a client never hears of a
# change that did not land.
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
Sessions = Annotated[sessionmaker[Session], Depends(sessions)]
bearer = HTTPBearer(auto_error=False, description="an API key from `ocgate keys create`")


# Every process that serves or calls the API imports this module, also when ocgate is embedded without its
# logging setup (api/logs.py installs the same filter): the HTTP libraries' log lines lose their secrets.
redact.install()

ATTEMPTS_ENV, WINDOW_ENV = "OCGATE_KEY_ATTEMPTS", "OCGATE_KEY_ATTEMPT_WINDOW"
_limiter_lock = threading.Lock()


def key_limiter(request: Request) -> FailedKeyLimiter:
    """The app's counter of failed key attempts, made on first use (``app.state.key_limiter``; a test or a
    deployment may set its own). ``OCGATE_KEY_ATTEMPTS`` failures in ``OCGATE_KEY_ATTEMPT_WINDOW`` seconds
    lock an address out."""
    state = request.app.state
    with _limiter_lock:
        limiter = getattr(state, "key_limiter", None)
        if limiter is None:
            limiter = state.key_limiter = FailedKeyLimiter(
                int(os.environ.get(ATTEMPTS_ENV) or LIMIT), float(os.environ.get(WINDOW_ENV) or WINDOW_SECONDS))
    return limiter


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def caller(request: Request, session: SessionDep,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Caller:
    limiter, address = key_limiter(request), client_address(request)
    wait = limiter.retry_after(address)
    if wait is not None:  # locked out: the key is not even looked at, so the answer tells a guesser nothing
        raise TooManyAttempts(f"too many failed API key attempts from this address; try again in {wait} s",
                              retry_after=wait)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API key: Authorization: Bearer ocg_...")
    key = verify(session, credentials.credentials, request.app.state.key_cache)
    if key is None:
        limiter.failed(address)  # only a key presented and refused counts; a forgotten header is not a guess
        raise Unauthorized("unknown or revoked API key")
    return key


def allow(roles: frozenset[Role]) -> Any:
    def check(key: Annotated[Caller, Depends(caller)]) -> Caller:
        if key.role not in roles:
            raise Forbidden(f"role {key.role} may not do this (needs one of: "
                            f"{', '.join(sorted(r.value for r in roles))})")
        return key
    return Depends(check)


Reader = Annotated[Caller, allow(READ)]
Reviewer = Annotated[Caller, allow(REVIEW)]
Author = Annotated[Caller, allow(AUTHOR)]
Ingester = Annotated[Caller, allow(INGEST)]
Biller = Annotated[Caller, allow(BILL)]


def actor(key: Caller) -> str:
    """How a key appears in the audit trail."""
    return f"key:{key.name}"


# Ids in the API are 64-bit integers (a larger one is a 422). The store's id and version columns are 32-bit on
# PostgreSQL, so a 64-bit id above that names nothing: it is a 404 (a stale version, a 412) without a query that
# the database would refuse.
MAX_ID = 2**63 - 1
STORED_MAX = 2**31 - 1


def _entry_id(entry_id: Annotated[int, Path(ge=1, le=MAX_ID, description="an entry id (64-bit)")]) -> int:
    if entry_id > STORED_MAX:
        raise NotFound(f"entry {entry_id} does not exist")
    return entry_id


def _version_id(version_id: Annotated[int, Path(ge=1, le=MAX_ID, description="a rule set version id (64-bit)")]
                ) -> int:
    if version_id > STORED_MAX:
        raise NotFound(f"rule set version {version_id} does not exist")
    return version_id


EntryId = Annotated[int, Depends(_entry_id)]
VersionId = Annotated[int, Depends(_version_id)]


def expected_version(value: str | None) -> int:
    """The entry version an ``If-Match`` header names."""
    if value is None:
        raise PreconditionRequired("send If-Match with the entry's ETag (GET /v1/entries/{id})")
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= STORED_MAX):
        raise VersionMismatch(f"If-Match {value!r} is not an ETag of this API")
    return int(text)


def etag(version: int) -> str:
    return f'"{version}"'
