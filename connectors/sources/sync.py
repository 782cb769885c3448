"""Syncing a source: pull what changed, enrich it from the firm's timekeeper table, ingest it, save the cursor.

Resumable by construction: pages are grouped into batches, and each batch is ingested and its cursor saved in
ONE transaction. A sync killed at any point (between batches, mid-page, mid-transaction) leaves the store at
the end of the last committed batch, and the next sync resumes from the cursor saved with it. Pulling a
record again is harmless: ingest skips a record whose source version it has, so no entry is lost or stored
twice, and the latest version wins.

One sync of a source at a time, whatever the number of workers: a lease on the source's row (expiring, so
that one left by a killed process does not block forever).
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from connectors.sources import fetcher, registry
from connectors.sources.base import Page, Source, SourceError
from engine.errors import OcgateError
from engine.model import Entry
from engine.rules.features import EvaluationContext
from engine.store.db import transaction
from engine.workflows import intake, sources, timekeepers

log = logging.getLogger("ocgate.sync")

BATCH_ENTRIES = 5000  # entries per committed batch: large enough to amortise a transaction, small enough to resume
LEASE = dt.timedelta(minutes=15)  # renewed with every batch


@dataclass
class SyncReport:
    source: str
    run_id: int
    full: bool
    pulled: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    conflicts: int = 0
    flagged: int = 0
    quality: int = 0  # entries with data-quality problems
    batches: int = 0
    seconds: float = 0.0
    complete: bool = False
    error: str | None = None
    quality_flags: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("pulled", "new", "changed", "unchanged", "withdrawn", "conflicts",
                                                    "flagged", "quality", "batches", "quality_flags")}


Progress = Callable[[SyncReport, int | None], None]  # the report so far, and the pull's total when known


def owner_id() -> str:
    """Who holds a sync: this host and process, and a token unique to the sync (threads share a process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(owner: str | None) -> bool:
    """Whether ``owner`` is a process on this host that no longer runs (killed): its lease need not expire."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def sync(sessions: sessionmaker[Session], name: str, *, full: bool = False, options: registry.Options | None = None,
         progress: Progress | None = None, batch_entries: int = BATCH_ENTRIES, owner: str | None = None,
         context: EvaluationContext | None = None) -> SyncReport:
    """Pull source ``name`` into the store (incrementally, or everything with ``full``) and report the counts.
    ``context``: the date the entries are judged as of (default: today).

    Raises :class:`SourceError` when the source fails (``retryable``: unreachable; the next sync resumes) and
    :class:`engine.workflows.sources.SyncRunning` when another sync of the source holds the lease."""
    owner = owner or owner_id()
    options = options or registry.Options()
    started = time.monotonic()
    with transaction(sessions) as session:
        connection = sources.get(session, name)
        if connection.sync_lease_owner and _dead_here(connection.sync_lease_owner):
            log.warning("sync of %s: taking over from %s, which died", name, connection.sync_lease_owner)
            sources.release_sync(session, connection.id, owner=connection.sync_lease_owner, finished=False)
        sources.claim_sync(session, connection.id, owner=owner, lease=LEASE)
        run = sources.start_run(session, connection.id, full=full)
        cursor = sources.cursor(session, connection.id)
    report = SyncReport(source=name, run_id=run.id, full=full)
    source = registry.open_source(sessions, connection, options)
    try:
        tenant = source.tenant
        if tenant != connection.source_tenant:
            with transaction(sessions) as session:
                sources.set_tenant(session, connection.id, tenant)
        batch = _Batch()
        stored: _Stored | None = None
        for page in _pull(sessions, source, cursor, full, options):
            if page.covers is not None and stored is None:
                with sessions() as session:
                    stored = _Stored(sources.stored_ids(session, source_system=connection.source_system,
                                                        source_tenant=tenant))
            batch.add(page, stored.deleted(page) if stored is not None else [])
            report.pulled += page.pulled
            if len(batch.entries) >= batch_entries:
                _commit(sessions, connection.id, name, batch, report, owner, context)
                batch = _Batch()
            if progress is not None:
                progress(report, page.total)
        _commit(sessions, connection.id, name, batch, report, owner, context)
        report.complete = True
    except (SourceError, OcgateError) as exc:
        report.error = exc.message
        _finish(sessions, connection.id, report, owner, started, status="failed")
        raise
    except BaseException as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        _finish(sessions, connection.id, report, owner, started, status="failed")
        raise
    finally:
        source.close()
    _finish(sessions, connection.id, report, owner, started, status="finished")
    return report


def _pull(sessions: sessionmaker[Session], source: Source, cursor: str | None, full: bool,
          options: registry.Options) -> Iterator[Page]:
    """The source's pages: read by a fetcher process while this one ingests, where that is available."""
    if not (options.fetcher and fetcher.available()):
        return source.pull(cursor, full=full)
    engine = sessions.kw["bind"]
    # The child must not use this process's database connections: it opens its own (to keep a refreshed token).
    return fetcher.pages(source, cursor, full=full, in_child=lambda: engine.dispose(close=False))


@dataclass
class _Batch:
    entries: list[Entry] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    cursor: str | None = None
    pages: int = 0

    def add(self, page: Page, deleted: Iterable[str]) -> None:
        self.entries.extend(page.entries)
        self.withdrawn.extend(page.withdrawn)
        self.withdrawn.extend(deleted)
        if page.cursor is not None:
            self.cursor = page.cursor
        self.pages += 1


class _Stored:
    """The source's stored ids, sorted, walked once alongside a full pull (whose pages come in id order)."""

    def __init__(self, ids: Iterable[str]):
        self.ids = sorted(int(i) for i in ids if i.isdigit())
        self.at = 0

    def deleted(self, page: Page) -> list[str]:
        """Stored ids inside the id range the page covers that the page does not hold: deleted at the source."""
        assert page.covers is not None
        after, upto = page.covers
        present = {e.source_id for e in page.entries}
        ids = self.ids
        if after is not None:
            self.at = bisect.bisect_right(ids, after, lo=self.at)
        end = len(ids) if upto is None else bisect.bisect_right(ids, upto, lo=self.at)
        gone = [str(i) for i in ids[self.at:end] if str(i) not in present]
        self.at = end
        return gone


def _commit(sessions: sessionmaker[Session], connection_id: int, name: str, batch: _Batch, report: SyncReport,
            owner: str, context: EvaluationContext | None) -> None:
    """Ingest a batch and save its cursor in one transaction (and renew the lease)."""
    if not batch.pages:
        return
    with transaction(sessions) as session:
        connection = sources.get(session, name)
        if batch.entries:
            directory = timekeepers.Directory.load(session, connection.source_system)
            entries = [directory.enrich(entry) for entry in batch.entries]
            for entry in entries:
                if entry.data_quality_flags:
                    report.quality += 1
                    for flag in entry.data_quality_flags:
                        report.quality_flags[flag] = report.quality_flags.get(flag, 0) + 1
            result = intake.ingest(session, entries, actor=f"sync:{name}", source=f"{name} run {report.run_id}",
                                   context=context)
            _count(report, result)
        if batch.withdrawn:
            result = sources.withdraw(session, source_system=connection.source_system,
                                      source_tenant=connection.source_tenant, source_ids=batch.withdrawn,
                                      actor=f"sync:{name}")
            if result is not None:
                _count(report, result, withdrawing=True)
        sources.save_cursor(session, connection_id, batch.cursor)
        sources.claim_sync(session, connection_id, owner=owner, lease=LEASE)  # renew
    report.batches += 1


def _count(report: SyncReport, result: intake.IngestResult, *, withdrawing: bool = False) -> None:
    """Add an ingest's counts: a record deleted or voided at the source counts as withdrawn, not changed."""
    report.withdrawn += result.withdrawn
    report.conflicts += result.conflicts
    if withdrawing:
        return
    report.new += result.created
    report.changed += result.updated
    report.unchanged += result.unchanged
    report.flagged += result.in_review + result.held


def _finish(sessions: sessionmaker[Session], connection_id: int, report: SyncReport, owner: str, started: float,
            *, status: str) -> None:
    report.seconds = time.monotonic() - started
    try:
        with transaction(sessions) as session:
            sources.finish_run(session, report.run_id, status=status, counts=report.counts(), error=report.error)
            sources.release_sync(session, connection_id, owner=owner, finished=status == "finished")
    except Exception:  # the database itself failed: the lease expires on its own
        log.exception("could not record the end of sync run %s", report.run_id)
