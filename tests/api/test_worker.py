"""The worker on huey: its queue on a SQLite file (the default) and on Redis, scheduled syncs, and two workers
that never sync one source at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.worker import Worker, queue_url
from connectors.clio.fake import FakeClio
from engine.store.db import transaction
from engine.store.models import Connection, EntryRow, SyncRun
from tests.connectors.sources.test_clio import connected, env, fake  # noqa: F401  (fixtures)

REDIS_URL = os.environ.get("OCGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_queue() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI=true and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable: {exc}")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else redis_queue()
    yield url
    if url.startswith("redis"):
        redis.Redis.from_url(url).flushdb()


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_queue_is_a_file_beside_an_sqlite_database_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCGATE_QUEUE_URL", raising=False)
    assert queue_url(database="sqlite:////srv/ocgate/ocgate.db") == "sqlite:////srv/ocgate/ocgate-queue.db"
    assert queue_url(database="postgresql://db/ocgate") == "sqlite:///ocgate-queue.db"
    monkeypatch.setenv("OCGATE_QUEUE_URL", "redis://queue:6379/0")
    assert queue_url(database="sqlite:///x.db") == "redis://queue:6379/0"


def test_queued_syncs_run_and_two_workers_never_sync_one_source_at_once(
        queue: str, sessions: sessionmaker[Session], fake: FakeClio, env: dict[str, str]) -> None:  # noqa: F811
    options = connected(sessions, fake, env)
    fake.state.slow_next(4, 0.4, path="/activities.json")  # long enough for the two jobs to overlap
    first = Worker(queue=queue, sessions=sessions, options=options)
    second = Worker(queue=queue, sessions=sessions, options=options)  # another machine, the same queue
    consumers = [first.consumer(workers=1), second.consumer(workers=1)]
    for consumer in consumers:
        consumer.start()
    try:
        first.sync_source("clio")
        first.sync_source("clio")

        def both_done() -> bool:
            with sessions() as session:
                return session.scalar(select(Connection.sync_lease_owner)) is None and bool(
                    session.scalar(select(SyncRun.id)))

        wait_until(both_done)
        time.sleep(1.0)  # let a second job, if any ran, finish
    finally:
        for consumer in consumers:
            consumer.stop(graceful=True)
    with sessions() as session:
        runs = list(session.scalars(select(SyncRun)))
        count = len(list(session.scalars(select(EntryRow.id))))
    assert count == 600
    # The second job found the first holding the source (or ran after it, finding nothing new): never both at once.
    overlapping = [(a.id, b.id) for a in runs for b in runs
                   if a.id < b.id and b.started_at < (a.finished_at or b.started_at)]
    assert not overlapping


def test_a_source_with_an_interval_is_synced_when_due(queue: str, sessions: sessionmaker[Session],
                                                      fake: FakeClio, env: dict[str, str]) -> None:  # noqa: F811
    options = connected(sessions, fake, env, sync_interval_minutes=60)
    worker = Worker(queue=queue, sessions=sessions, options=options)
    consumer = worker.consumer(workers=1)
    consumer.start()
    try:
        assert worker._schedule_syncs() == ["clio"]  # never synced: due (the scheduler calls this every minute)
        def synced() -> bool:
            with sessions() as session:
                return session.scalar(select(Connection.last_sync_at)) is not None

        wait_until(synced)
        assert worker._schedule_syncs() == []  # synced a moment ago: not due for an hour
    finally:
        consumer.stop(graceful=True)
    with transaction(sessions) as session:
        assert len(list(session.scalars(select(EntryRow.id)))) == 600


@pytest.mark.slow
def test_serve_with_worker_runs_the_api_and_the_jobs_in_one_process(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {**os.environ, "OCGATE_DATABASE_URL": f"sqlite:///{tmp_path}/ocgate.db"}
    environ.pop("OCGATE_QUEUE_URL", None)
    upgraded = subprocess.run([sys.executable, "-m", "api.cli", "db", "upgrade"], env=environ, capture_output=True)
    assert upgraded.returncode == 0
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "-v", "serve", "--port", str(port), "--with-worker"],
                              env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/openapi.json"), timeout=20)
        assert (tmp_path / "ocgate-queue.db").exists()  # the queue: a SQLite file beside the database
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0
    assert "Huey consumer started with 1 thread" in err and "api.worker.process_webhook" in err


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
