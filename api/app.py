"""The API (FastAPI): ``create_app`` assembles one router per resource under ``api/routers``.

Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a stable code, declared per route in the
OpenAPI document (``api/errors.py``). Every route needs an API key (``Authorization: Bearer ocg_...``); the
key's role decides what it may do (``api/deps.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from api import errors
from api.routers import entries, ingest, invoices, review_items, rulesets, timekeepers, webhooks
from connectors.sources.registry import Options
from engine.store.db import make_engine, session_factory
from engine.workflows.keys import KeyCache

if TYPE_CHECKING:
    from api.worker import Worker

ROUTERS = (review_items.router, entries.router, ingest.router, rulesets.router, invoices.router, timekeepers.router,
           webhooks.router)


class _LazyWorker:
    """The job queue, opened when the first job is queued (so an app that queues nothing opens no queue)."""

    def __init__(self, database_url: str | None, sessions: sessionmaker[Session], options: Options):
        self.database_url, self.sessions, self.options = database_url, sessions, options
        self._worker: Worker | None = None

    def enqueue_webhook(self, event_id: int) -> None:
        if self._worker is None:
            from api.worker import Worker

            self._worker = Worker(database=self.database_url, sessions=self.sessions, options=self.options)
        self._worker.enqueue_webhook(event_id)


def create_app(database_url: str | None = None, *, sessions: sessionmaker[Session] | None = None,
               key_cache_seconds: float = 30.0, worker: Worker | None = None,
               source_options: Options | None = None) -> FastAPI:
    app = FastAPI(title="ocgate", version="0.1.0",
                  description="Review queue for billing entries checked against Outside Counsel Guidelines.")
    app.state.sessions = sessions or session_factory(make_engine(database_url))
    app.state.key_cache = KeyCache(key_cache_seconds)
    app.state.source_options = source_options or Options()
    app.state.worker = worker or _LazyWorker(database_url, app.state.sessions, app.state.source_options)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
