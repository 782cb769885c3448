"""The background worker, on huey: webhook events, scheduled syncs, polling of submitted invoices, webhook
renewal, and the sweep of webhook events no job finished.

The queue is a SQLite file beside the database by default (nothing to install); ``OCGATE_QUEUE_URL`` set to a
``redis://`` URL puts it on Redis, so that several workers on several machines share it. Whatever the number of
workers, a source is synced by one at a time (a lease on the source's row, see ``connectors/sources/sync.py``).

Run it with ``ocgate worker``, or beside the API with ``ocgate serve --with-worker``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from connectors.destinations import registry as destinations
from connectors.sources import registry as source_registry
from connectors.sources import sync, webhooks
from connectors.sources.base import SourceError
from engine.errors import OcgateError
from engine.rules.features import EvaluationContext
from engine.store.db import database_url, make_engine, session_factory
from engine.workflows import sources

log = logging.getLogger("ocgate.worker")

QUEUE_ENV = "OCGATE_QUEUE_URL"
POLL_EVERY_MINUTES = 15  # submitted invoices whose outcome is not known yet
WEBHOOK_RETRIES = 8


def queue_url(url: str | None = None, database: str | None = None) -> str:
    """The queue's URL: given, else ``OCGATE_QUEUE_URL``, else a SQLite file beside an SQLite database (or in
    the current folder)."""
    url = url or os.environ.get(QUEUE_ENV)
    if url:
        return url
    db = make_url(database_url(database))
    if db.get_backend_name() == "sqlite" and db.database and db.database != ":memory:":
        path = Path(db.database)
        return f"sqlite:///{path.with_name(path.stem + '-queue.db')}"
    return "sqlite:///ocgate-queue.db"


def make_huey(url: str, *, immediate: bool = False) -> Huey:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey("ocgate", url=url, immediate=immediate)
    if url.startswith("sqlite:///"):
        return SqliteHuey("ocgate", filename=url.removeprefix("sqlite:///"), immediate=immediate)
    raise OcgateError(f"{QUEUE_ENV}: a redis:// or sqlite:/// URL, not {url!r}")


class Worker:
    """The jobs, registered on one huey instance. The API enqueues with it; ``consumer()`` runs them."""

    def __init__(self, *, queue: str | None = None, database: str | None = None,
                 sessions: sessionmaker[Session] | None = None, options: source_registry.Options | None = None,
                 immediate: bool = False, as_of: dt.date | None = None):
        self.url = queue_url(queue, database)
        self.huey = make_huey(self.url, immediate=immediate)
        self.sessions = sessions or session_factory(make_engine(database))
        # Jobs run in threads: a sync reads its source in this process rather than fork a threaded one.
        self.options = options or source_registry.Options(fetcher=False)
        self.as_of = as_of  # the date entries are judged as of (default: the day each job runs)
        task, periodic = self.huey.task, self.huey.periodic_task
        self.process_webhook = task(retries=WEBHOOK_RETRIES, retry_delay=15, name="process_webhook")(
            self._process_webhook)
        self.sync_source = task(name="sync_source")(self._sync_source)
        self.schedule_syncs = periodic(crontab(minute="*"), name="schedule_syncs")(self._schedule_syncs)
        self.sweep_webhooks = periodic(crontab(minute="*"), name="sweep_webhooks")(self._sweep_webhooks)
        self.poll_invoices = periodic(crontab(minute=f"*/{POLL_EVERY_MINUTES}"), name="poll_invoices")(
            self._poll_invoices)
        self.renew_webhooks = periodic(crontab(minute="17", hour="*"), name="renew_webhooks")(self._renew_webhooks)

    def consumer(self, workers: int = 2) -> Consumer:
        """Workers as threads, polling the queue every 50-250 ms (a webhook is judged within a second)."""
        return Consumer(self.huey, workers=workers, worker_type="thread", periodic=True, initial_delay=0.05,
                        backoff=1.2, max_delay=0.25, check_worker_health=True)

    # jobs

    def _context(self) -> EvaluationContext | None:
        return EvaluationContext(as_of=self.as_of) if self.as_of else None

    def _process_webhook(self, event_id: int) -> str:
        return webhooks.process(self.sessions, event_id, self.options, self._context())

    def _sync_source(self, name: str, full: bool = False) -> dict[str, Any] | None:
        try:
            report = sync.sync(self.sessions, name, full=full, options=self.options, context=self._context())
        except sources.SyncRunning as exc:
            log.info("sync of %s skipped: %s", name, exc.message)
            return None
        except SourceError as exc:
            log.warning("sync of %s failed (%s): %s", name, "will resume" if exc.retryable else "refused",
                        exc.message)
            return None
        return report.counts()

    def _schedule_syncs(self) -> list[str]:
        with self.sessions() as session:
            due = [row.name for row in sources.due_for_sync(session)]
        for name in due:
            self.sync_source(name)
        return due

    def _sweep_webhooks(self) -> int:
        return len(webhooks.sweep(self.sessions, self.options, context=self._context()))

    def _poll_invoices(self) -> int:
        results = destinations.poll_waiting(self.sessions, actor="worker:poll")
        for number, result in results:
            if isinstance(result, OcgateError):
                log.warning("invoice %s not polled: %s", number, result.message)
        return len(results)

    def _renew_webhooks(self) -> int:
        return len(webhooks.renew(self.sessions, self.options))

    def enqueue_webhook(self, event_id: int) -> None:
        """Queue an event's processing; if the queue cannot take it, the sweep will (the event is stored)."""
        try:
            self.process_webhook(event_id)
        except Exception:
            log.exception("webhook event %s could not be queued; the sweep will process it", event_id)


def run_consumer(worker: Worker, workers: int = 2) -> None:
    """Run the worker until interrupted (``ocgate worker``)."""
    log.info("worker: queue %s, %d threads, started %s", worker.url, workers, dt.datetime.now(dt.UTC).isoformat())
    worker.consumer(workers).run()
