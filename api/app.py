"""The API (FastAPI): ``create_app`` assembles one router per resource under ``api/routers``.

Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a stable code, declared per route in the
OpenAPI document (``api/errors.py``). Every route needs an API key (``Authorization: Bearer ocg_...``); the
key's role decides what it may do (``api/deps.py``).
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from api import errors
from api.routers import entries, ingest, invoices, review_items, rulesets
from engine.store.db import make_engine, session_factory
from engine.workflows.keys import KeyCache

ROUTERS = (review_items.router, entries.router, ingest.router, rulesets.router, invoices.router)


def create_app(database_url: str | None = None, *, sessions: sessionmaker[Session] | None = None,
               key_cache_seconds: float = 30.0) -> FastAPI:
    app = FastAPI(title="ocgate", version="0.1.0",
                  description="Review queue for billing entries checked against Outside Counsel Guidelines.")
    app.state.sessions = sessions or session_factory(make_engine(database_url))
    app.state.key_cache = KeyCache(key_cache_seconds)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
