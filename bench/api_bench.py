"""Latency of ``GET /v1/review-items`` with many entries in PostgreSQL, under load from another process.

Run with ``.venv/bin/python -m bench.api_bench [--entries 1000000] [--rate 100] [--seconds 30]``. It:

1. creates a scratch PostgreSQL database and loads it with entries (10% waiting for review, with their
   findings) by COPY, which is not what is measured;
2. starts ``ocgate serve`` (uvicorn) on 127.0.0.1 in a subprocess;
3. starts a second process that sends list requests at a fixed rate for a fixed time (filters, sorts and
   next pages, as a reviewer's screen does) and reports latency percentiles;
4. drops the database.

Only loopback is used; the load is bounded in count and time. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("OCGATE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_P99_MS = 50
RULES = ["ACME-RATE-001", "ACME-NARR-002", "ACME-DAY-001", "ACME-EXP-001", "ACME-INCR-001"]
CLIENTS = [f"CLIENT{i:03d}" for i in range(40)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, count: int, seed: int = 5) -> tuple[int, float]:
    """COPY ``count`` entries (and findings for those in review) into the database; returns (in review, seconds)."""
    import psycopg

    rng = random.Random(seed)
    start = time.perf_counter()
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    in_review = 0
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        columns = ("id, entry_uid, source_system, source_tenant, source_id, source_version, entry_kind, "
                   "ledes_client_id, client_source_id, law_firm_matter_id, client_matter_id, timekeeper_key, "
                   "timekeeper_name, work_date, hours_billed, rate, amount, record, state, worst_severity, "
                   "data_quality_flags, version, created_at, updated_at")
        states: list[tuple[int, str]] = []
        with cur.copy(f"COPY entries ({columns}) FROM STDIN") as copy:
            for i in range(1, count + 1):
                review = rng.random() < 0.10
                state = rng.choice(["in_review"] * 18 + ["held", "conflict"]) if review else "ready"
                client = rng.choice(CLIENTS)
                day = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(700))
                hours = f"{rng.randint(1, 60) / 10:.1f}"
                record = json.dumps({"source_system": "bench", "source_id": str(i), "entry_kind": "time",
                                     "work_date": day.isoformat(), "hours_billed": hours, "rate": "500.00",
                                     "ledes_client_id": client, "narrative": "Reviewed and analysed documents"})
                severity = rng.choice(["error", "warning"]) if review else None
                matter = f"{client}-M{rng.randrange(25):02d}"
                # A third of the entries also carry the source's own client and matter ids (the queue matches
                # either), one in fifty comes from a second source, and one in thirty has a data-quality flag.
                source_ids = i % 3 == 0
                flags = '["UNKNOWN_TIMEKEEPER"]' if rng.random() < 1 / 30 else None
                copy.write_row((i, f"bench:t:{i}", "efimis" if i % 50 == 0 else "bench", "t", str(i), "v1", "time",
                                client, f"cs-{client}" if source_ids else None, matter,
                                f"cm-{matter}" if source_ids else None, f"tk{rng.randrange(800)}",
                                "Bench, Timekeeper", day, hours, "500.00", None, record, state, severity, flags, 1,
                                now, now))
                if review:
                    states.append((i, severity or "warning"))
        in_review = len(states)
        cur.execute("SELECT setval(pg_get_serial_sequence('entries', 'id'), %s)", (count,))
        cur.execute("INSERT INTO ruleset_versions (id, ruleset_id, revision, version_label, yaml_text, status, "
                    "created_at) VALUES (1, 'bench', 'r1', '1', '', 'active', now())")
        with cur.copy("COPY evaluations (id, entry_id, entry_version, source_version, ruleset_version_id, "
                      "evaluated_at, flagged, held, current) FROM STDIN") as copy:
            for n, (entry_id, _) in enumerate(states, 1):
                copy.write_row((n, entry_id, 1, "v1", 1, now, True, False, True))
        with cur.copy("COPY violations (evaluation_id, entry_id, ruleset_id, ruleset_revision, rule_id, rule_type, "
                      "severity, rule_status, title, message, evidence, adjustment, contributing, \"references\", "
                      "current) FROM STDIN") as copy:
            for n, (entry_id, severity) in enumerate(states, 1):
                copy.write_row((n, entry_id, "bench", "r1", rng.choice(RULES), "condition", severity, "active",
                                "Bench rule", "Bench finding", "[]", None, "[]", "[]", True))
        conn.commit()
    # As autovacuum leaves a store that has been running a while: statistics, and the visibility map that lets
    # the queue's walks read only their indexes.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")  # the load's writes reach the disk now, not during the measurement
    return in_review, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second from the load process")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (one per core)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the measured ones")
    args = parser.parse_args(argv)

    name = f"ocgate_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    server = None
    try:
        from engine.store.db import make_engine, session_factory, transaction, upgrade

        upgrade(url)
        in_review, seconds = load(url, args.entries)
        print(f"loaded {args.entries:,} entries ({in_review:,} waiting for review, each with a finding) in "
              f"{seconds:.1f} s")
        from engine.workflows.keys import Role, create_key

        engine = make_engine(url)
        with transaction(session_factory(engine)) as session:
            _, key = create_key(session, name="bench", role=Role.VIEWER)
        engine.dispose()

        port = free_port()
        env = {**os.environ, "OCGATE_DATABASE_URL": url}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1", "--port",
             str(port), "--workers", str(args.workers), "--log-level", "warning"],
            cwd=ROOT, env=env)
        base = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(100):
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        load_process = subprocess.run(
            [sys.executable, "-m", "bench.api_load", "--base", base, "--key", key, "--rate", str(args.rate),
             "--seconds", str(args.seconds), "--warmup", str(args.warmup)],
            cwd=ROOT, capture_output=True, text=True, check=True)
        result = json.loads(load_process.stdout)
        lat = result["latencies_ms"]
        lat.sort()

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        print(f"GET /v1/review-items at {result['achieved_rate']:.1f} requests/s for {args.seconds:.0f} s from a "
              f"second process ({len(lat):,} requests, {result['errors']} errors, {args.workers} server worker(s))")
        print(f"latency ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  max {lat[-1]:.1f}  "
              f"mean {statistics.fmean(lat):.1f}   (target p99 < {TARGET_P99_MS} ms at 100 requests/s)")
        for kind, values in sorted(result["by_kind"].items()):
            values.sort()
            print(f"  {kind:<22} n={len(values):>5}  p50 {values[len(values) // 2]:.1f}  "
                  f"p99 {values[min(len(values) - 1, int(0.99 * len(values)))]:.1f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
