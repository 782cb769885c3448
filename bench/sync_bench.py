"""Syncing from Clio: the fake Clio on loopback, the real connector, the real store.

Run with ``.venv/bin/python -m bench.sync_bench [--count N] [--limited N] [--webhooks N]``. It prints figures
only: nothing here passes or fails. See bench/README.md for what each figure means.

1. ``--count`` activities (default 100,000) from the fake with no latency and no rate limit, synced into a fresh
   SQLite database end to end (fetch, map, enrich from the timekeeper table, judge against the Acme rule set,
   store, commit with the cursor): entries per second (target at least 5,000).
2. ``--limited`` activities (default 12,000) with the fake enforcing Clio's 50 requests per minute: the time the
   sync takes against the least the limit allows, and the 429s it got (target: none it could have avoided).
3. ``--webhooks`` deliveries (default 200) with ocgate's API on loopback and a worker running: from Clio posting a
   signed event to the entry judged and in the store, p50, p95 and the slowest (target p95 under 2 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import select

from api.app import create_app
from api.worker import Worker
from bench.engine_bench import cpu_count, load_average, max_rss_mb
from connectors.clio.fake import FakeClio, running_fake_clio, serving
from connectors.sources import clio, registry, webhooks
from connectors.sources.sync import sync
from engine.rules.features import EvaluationContext
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import EntryRow, RuleSetStatus
from engine.workflows import rulesets, timekeepers

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "acme-corp.yaml"
TIMEKEEPERS = ROOT / "engine" / "data" / "samples" / "timekeepers.csv"
CONTEXT = EvaluationContext(as_of=dt.date(2026, 4, 6))
SECRET_ENV = "OCGATE_BENCH_CLIO_SECRET"
TARGET_RATE = 5_000
PER_DAY = 66  # activities per calendar day across the fake firm's 11 regular timekeepers: 6 each
TARGET_P95 = 2.0


def history_rules() -> str:
    """Acme's rule set without its late-billing rule: a backfill of years of history is all "late", which would
    measure the circuit breaker rather than the sync."""
    data = yaml.safe_load(RULES.read_text())
    data["rules"] = [rule for rule in data["rules"] if rule["type"] != "late_entry"]
    return yaml.safe_dump(data, sort_keys=False)


def store(folder: Path, name: str) -> tuple[str, object]:
    url = f"sqlite:///{folder / name}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with transaction(sessions) as session:
        rulesets.add_ruleset_version(session, history_rules(), status=RuleSetStatus.ACTIVE)
        # The sample table's first rates start in 2025; the synced history goes back further.
        table = TIMEKEEPERS.read_text().replace(",2025-01-01,", ",2020-01-01,")
        timekeepers.import_csv(session, table, source=str(TIMEKEEPERS))
    return url, sessions


def connect(sessions: object, fake: FakeClio, **settings: object) -> registry.Options:
    options = registry.Options(environ={SECRET_ENV: fake.client_secret})
    with transaction(sessions) as session:  # type: ignore[arg-type]
        registry.configure(session, "clio", kind="clio", settings={
            "base_url": fake.base_url, "client_id": fake.client_id, "client_secret_env": SECRET_ENV,
            "redirect_uri": "https://ocgate.example/oauth/clio", **settings})
    url, state = registry.authorize_url(sessions, "clio")  # type: ignore[arg-type]
    redirect = httpx.get(url, follow_redirects=False).headers["location"]
    registry.connect(sessions, "clio", code=clio.code_from(redirect, state), options=options)  # type: ignore[arg-type]
    return options


def unlimited(folder: Path, count: int) -> None:
    """The fake runs in its own process, as Clio would: its work is not counted against the sync's."""
    _, sessions = store(folder, "unlimited.db")
    days = max(31, count // PER_DAY)  # a realistic density: a few entries per timekeeper and day
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "connectors.clio.fake", "--port", "0", "--activities", str(count), "--seed", "7",
         "--start", str(CONTEXT.as_of - dt.timedelta(days=days)), "--days", str(days)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines = []
        while not (line := server.stdout.readline()).startswith("Ctrl-C"):  # type: ignore[union-attr]
            if not line:
                raise RuntimeError("the fake Clio did not start")
            lines.append(line)
        fake = json.loads("".join(lines))
        seeded = time.perf_counter() - started
        options = registry.Options(environ={SECRET_ENV: fake["client_secret"]})
        with transaction(sessions) as session:  # type: ignore[arg-type]
            registry.configure(session, "clio", kind="clio", settings={
                "base_url": fake["base_url"], "client_id": fake["client_id"], "client_secret_env": SECRET_ENV})
        registry.connect(sessions, "clio", refresh_token=fake["refresh_token"], options=options)  # type: ignore[arg-type]
        report = sync(sessions, "clio", options=options, context=CONTEXT)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rate = report.pulled / report.seconds
    print(f"1. sync of {count:,} activities, no latency, into SQLite: {report.seconds:.1f} s, {rate:,.0f} entries/s "
          f"(target {TARGET_RATE:,}) {'MET' if rate >= TARGET_RATE else 'NOT MET'}")
    print(f"   over {days:,} days; {report.new:,} new, {report.flagged:,} flagged, {report.quality:,} with "
          f"data-quality flags, {report.batches} committed batches; the fake in its own process, seeded in "
          f"{seeded:.1f} s (not counted); max RSS {max_rss_mb():.0f} MB")


def limited(folder: Path, count: int, per_minute: int = 50) -> None:
    _, sessions = store(folder, "limited.db")
    with running_fake_clio(activities=count, seed=7, rate_limit=per_minute, rate_window=60.0) as fake:
        options = connect(sessions, fake)
        fake.state.log.clear()
        report = sync(sessions, "clio", options=options, context=CONTEXT)
        served = [r for r in fake.state.log if r.path.startswith("/api/v4")]
    requests = len(served)
    too_many = sum(1 for r in served if r.status == 429)
    # The connect step used part of the first window; at best, each further full window costs a minute.
    least = 60.0 * math.floor((requests - 1) / per_minute) if requests > per_minute else 0.0
    print(f"2. sync of {count:,} activities with {per_minute} requests/minute enforced: {report.seconds:.1f} s for "
          f"{requests} requests (the limit allows it in no less than ~{least:.0f} s); 429 answers: {too_many} "
          f"(target 0)")


def deliveries(folder: Path, count: int) -> None:
    _, sessions = store(folder, "webhooks.db")
    times: list[float] = []
    with running_fake_clio(activities=2_000, seed=7) as fake:
        options = connect(sessions, fake)
        sync(sessions, "clio", options=options, context=CONTEXT)
        worker = Worker(queue=f"sqlite:///{folder / 'queue.db'}", sessions=sessions, options=options,
                        as_of=CONTEXT.as_of)
        consumer = worker.consumer(workers=1)
        consumer.start()
        try:
            with serving(create_app(sessions=sessions, worker=worker, source_options=options)) as (url, _server):
                webhooks.register(sessions, "clio", f"{url}/v1/webhooks/clio", options)
                activities = fake.state.activities
                for i in range(count):
                    activity = activities[(i * 7919) % len(activities)]
                    edited = fake.state.edit(activity.id, note=f"{activity.note} (revised {i})"[:500])
                    started = time.perf_counter()
                    fake.state.deliver("updated", edited.id)
                    while True:
                        with sessions() as session:
                            version = session.scalar(select(EntryRow.source_version).where(
                                EntryRow.source_id == str(edited.id)))
                        if version == edited.etag:
                            break
                        if time.perf_counter() - started > 30:
                            raise RuntimeError(f"event for {edited.id} not processed in 30 s")
                        time.sleep(0.005)
                    times.append(time.perf_counter() - started)
        finally:
            consumer.stop(graceful=True)
    times.sort()
    p95 = times[max(0, math.ceil(0.95 * len(times)) - 1)]
    print(f"3. webhook received -> entry judged and stored, {count} deliveries, API on loopback and one worker: "
          f"p50 {statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, slowest {times[-1] * 1000:.0f} ms "
          f"(target p95 under {TARGET_P95:.0f} s) {'MET' if p95 < TARGET_P95 else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--limited", type=int, default=12_000, help="activities for the rate-limited sync (0: skip)")
    parser.add_argument("--webhooks", type=int, default=200, help="deliveries for the latency figure (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("OCGATE_SECRET_KEY", Fernet.generate_key().decode())
    print(f"sync benchmark: {cpu_count()} cores, load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="ocgate-sync-bench-") as tmp:
        folder = Path(tmp)
        if args.count:
            unlimited(folder, args.count)
        if args.limited:
            limited(folder, args.limited)
        if args.webhooks:
            deliveries(folder, args.webhooks)


if __name__ == "__main__":
    main()
