"""Many reviewers at once: concurrent approve, reject and adjust against ``ocgate serve --workers N`` on PostgreSQL.

Run with ``.venv/bin/python -m bench.review_load [--clients 50] [--entries 1000] [--rounds 60] [--workers 4]``. It:

1. creates a scratch PostgreSQL database, stores the Acme rule set as active and ingests ``--entries`` entries
   through ``engine.workflows.intake.ingest``, each billed above the partner rate cap (so each is in review with
   an error finding) and each its own timekeeper (no two share a day, so no action judges another entry again;
   ``--per-day K`` puts K on each timekeeper-day instead, so that a reject or an adjust judges the day's others
   again, which is where concurrent reviews still go wrong: see the xfail test in tests/api/test_concurrency.py);
2. creates one reviewer key per client (``reviewer-00``, ``reviewer-01``, ...: the actor names of the audit trail);
3. starts ``ocgate serve --workers N`` on 127.0.0.1 in a subprocess;
4. runs ``--clients`` threads, each with its own keep-alive connection, each doing ``--rounds`` times: pick an
   entry (part of the time from a small hot set, so that reviewers collide), ``GET /v1/entries/{id}`` for its
   ETag, then ``POST .../approve``, ``reject`` or ``adjust`` with ``If-Match`` and a reason (when the GET shows
   the entry decided already, the client moves on four times in five, as a reviewer would, and acts anyway the
   fifth, which must be a 409);
5. checks the database against what the clients were told (see ``check``) and prints the latency percentiles;
6. stops the server and drops the database (also when a step fails).

What a review action may answer under contention, from ``engine/workflows/review.py``: 200 (applied), 412 (the
If-Match version is no longer the entry's: ``_claim`` lost the race) and 409 (the ETag is current but the entry
is no longer waiting for review, e.g. another reviewer approved it). Anything else is a failure.

Loopback only; bounded by ``--clients`` x ``--rounds`` requests and by ``--seconds``. Exit status 1 when a check
fails (figures from such a run describe a broken system).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("OCGATE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACTIONS = ("approve", "reject", "adjust")
LEGITIMATE = {200: "applied", 409: "not reviewable any more", 412: "stale ETag"}
WAITING = ("in_review", "held", "conflict")  # engine.store.models.REVIEW_STATES
START_SECONDS = 60  # a new API process imports all of ocgate before it answers; slow on a busy machine


# The scratch database and its seed ---------------------------------------------------------------------------

@contextmanager
def scratch_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    """A new PostgreSQL database for one run, dropped afterwards whatever happens."""
    name = f"ocgate_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class Seeded:
    entry_ids: list[int]
    keys: dict[str, str]  # key name (the actor is "key:<name>") -> full key text
    mark: int  # the highest review action id before the load: the load's actions are above it


def _entry_record(n: int, today: dt.date, per_day: int) -> dict[str, object]:
    """A recent Acme time entry at 990.00/h, over the 950.00 partner cap: an error finding, so in review. Entries
    ``n`` of the same ``n // per_day`` share a timekeeper and a day."""
    group = n // per_day
    return dict(
        source_system="loadtest", source_tenant="t1", source_id=f"e{n:05d}", source_version='"v1"',
        entry_kind="time", ledes_client_id="ACME01", law_firm_matter_id="2026-0017", timekeeper_ledes_id="TK1002",
        timekeeper_source_id=f"user-{group:05d}", timekeeper_name="Okafor, Daniel", timekeeper_classification="PARTNR",
        work_date=(today - dt.timedelta(days=1 + group % 25)).isoformat(), hours_worked="1.5", hours_billed="1.5",
        rate="990.00", currency="USD", utbms_task_code="L210", utbms_activity_code="A103",
        narrative=f"Drafted answer and affirmative defenses to the amended counterclaim (item {n})")


def seed(url: str, *, entries: int, clients: int, per_day: int = 1) -> Seeded:
    """Schema, the Acme rule set (active), ``entries`` entries in review at version 1, ``clients`` reviewer keys.
    ``per_day`` > 1 puts that many entries on each timekeeper's day (1.5 h each: seven or more break the 10 h daily
    cap), so that a reviewer's reject or adjust judges the day's other entries again (``rejudged`` actions)."""
    from engine.model import Entry
    from engine.rules.features import EvaluationContext
    from engine.store.db import make_engine, session_factory, transaction, upgrade
    from engine.store.models import EntryRow, ReviewAction, RuleSetStatus
    from engine.workflows.intake import NEVER_TRIPS, ingest
    from engine.workflows.keys import Role, create_key
    from engine.workflows.rulesets import add_ruleset_version

    upgrade(url)
    today = dt.datetime.now(dt.UTC).date()  # the API judges an adjusted entry with today's date: judge alike
    engine = make_engine(url)
    try:
        with transaction(session_factory(engine)) as session:
            add_ruleset_version(session, (ROOT / "rules" / "acme-corp.yaml").read_text(),
                                status=RuleSetStatus.ACTIVE, created_by="review_load")
            batch = [Entry.model_validate(_entry_record(n, today, per_day)) for n in range(entries)]
            ingest(session, batch, context=EvaluationContext(as_of=today), breaker=NEVER_TRIPS)
            keys = {name: create_key(session, name=name, role=Role.REVIEWER)[1]
                    for name in (f"reviewer-{i:02d}" for i in range(clients))}
        with session_factory(engine)() as session:
            rows = session.execute(select(EntryRow.id, EntryRow.state, EntryRow.version)
                                   .order_by(EntryRow.id)).all()
            mark = session.scalar(select(text("coalesce(max(id), 0)")).select_from(ReviewAction)) or 0
    finally:
        engine.dispose()
    wrong = [(r.id, str(r.state), r.version) for r in rows if str(r.state) != "in_review" or r.version != 1]
    if len(rows) != entries or wrong:
        raise RuntimeError(f"seed: expected {entries} entries in review at version 1; got {len(rows)}, "
                           f"not so: {wrong[:5]}")
    return Seeded(entry_ids=[r.id for r in rows], keys=keys, mark=mark)


# The server ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    base: str
    process: subprocess.Popen[str]
    log: Path  # the server's stderr (errors and warnings; no access log)

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if "Traceback" in line or " ERROR " in line or '"level": "error"' in line]


@contextmanager
def serve(url: str, *, workers: int, workdir: Path) -> Iterator[Server]:
    """``ocgate serve --workers N`` on a free loopback port, ready (``/readyz`` 200), stopped with SIGINT after."""
    env = {**os.environ, "OCGATE_DATABASE_URL": url, "OCGATE_QUEUE_URL": f"sqlite:///{workdir}/queue.db"}
    port = free_port()
    log = workdir / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers),
             "--no-access-log"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    server = Server(base=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ocgate serve did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# The clients -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One review action as a client saw it."""

    actor: str  # the key's name
    entry_id: int
    action: str
    sent_version: int  # from the ETag of the GET just before
    status: int  # HTTP status, or 0 when no answer came (a transport error)
    version: int | None  # the entry's version in a 200's body
    state: str | None  # the entry's state in a 200's body
    ms: float
    detail: str = ""  # the error code of a refusal, or the transport error


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)
    gets: list[tuple[int, float]] = field(default_factory=list)  # (status, ms); status 0: transport error
    seconds: float = 0.0
    skipped: int = 0  # GETs that found the entry decided, after which the client moved on
    stopped_early: bool = False  # the --seconds bound ended the load before every round was done


def _changes(rng: random.Random, actor: str, round_no: int) -> dict[str, str]:
    """A valid adjustment: most keep the entry in review (a new narrative or fewer hours, still over the cap);
    one in five brings the rate under the cap, which clears the finding and makes the entry ready."""
    roll = rng.random()
    if roll < 0.6:
        return {"narrative": f"Drafted reply brief on the motion to compel (revised by {actor}, round {round_no})"}
    if roll < 0.8:
        return {"hours_billed": rng.choice(["1.0", "1.1", "1.2", "1.3", "1.4"])}
    return {"rate": "925.00"}


def _client(base: str, actor: str, key: str, entry_ids: list[int], hot: list[int], rounds: int, seed_no: int,
            deadline: float, mix: tuple[float, float], load: Load, lock: threading.Lock) -> None:
    rng = random.Random(seed_no)
    calls: list[Call] = []
    gets: list[tuple[int, float]] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for round_no in range(rounds):
            if time.monotonic() > deadline:
                with lock:
                    load.stopped_early = True
                break
            entry_id = rng.choice(hot) if rng.random() < 0.4 else rng.choice(entry_ids)
            sent = time.perf_counter()
            try:
                got = client.get(f"/v1/entries/{entry_id}")
            except httpx.HTTPError as exc:
                gets.append((0, (time.perf_counter() - sent) * 1000))
                calls.append(Call(actor, entry_id, "get", -1, 0, None, None, 0.0, repr(exc)))
                continue
            gets.append((got.status_code, (time.perf_counter() - sent) * 1000))
            if got.status_code != 200:
                continue
            tag = got.headers["etag"]
            if got.json().get("state") not in WAITING and rng.random() < 0.8:
                with lock:
                    load.skipped += 1
                continue  # a reviewer moves on from a decided entry; one time in five acts anyway (a 409)
            roll = rng.random()
            action = "approve" if roll < mix[0] else "reject" if roll < mix[0] + mix[1] else "adjust"
            body: dict[str, object] = {"reason": f"load test: {action} by {actor} in round {round_no}"}
            if action == "adjust":
                body["changes"] = _changes(rng, actor, round_no)
            sent = time.perf_counter()
            try:
                answer = client.post(f"/v1/entries/{entry_id}/{action}", json=body, headers={"If-Match": tag})
            except httpx.HTTPError as exc:
                calls.append(Call(actor, entry_id, action, int(tag.strip('"')), 0, None, None,
                                  (time.perf_counter() - sent) * 1000, repr(exc)))
                continue
            ms = (time.perf_counter() - sent) * 1000
            payload = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            if answer.status_code == 200:
                calls.append(Call(actor, entry_id, action, int(tag.strip('"')), 200, payload.get("version"),
                                  payload.get("state"), ms))
            else:
                code = payload.get("error", {}).get("code", "") if isinstance(payload, dict) else ""
                calls.append(Call(actor, entry_id, action, int(tag.strip('"')), answer.status_code, None, None, ms,
                                  code or answer.text[:200]))
    with lock:
        load.calls.extend(calls)
        load.gets.extend(gets)


def drive(base: str, seeded: Seeded, *, rounds: int, seconds: float, seed_no: int = 15,
          mix: tuple[float, float] = (0.35, 0.15)) -> Load:
    """Every client (one per key) at once, ``rounds`` GET-then-action each; ``mix``: the approve and reject shares
    (the rest adjust). One entry in fifty, at least ten, is the hot set that 40% of the picks go to."""
    hot = seeded.entry_ids[:max(10, len(seeded.entry_ids) // 50)]
    load, lock = Load(), threading.Lock()
    start_gate = threading.Barrier(len(seeded.keys) + 1)
    deadline = time.monotonic() + seconds

    def run(n: int, actor: str, key: str) -> None:
        start_gate.wait()
        _client(base, actor, key, seeded.entry_ids, hot, rounds, seed_no * 1000 + n, deadline, mix, load, lock)

    threads = [threading.Thread(target=run, args=(n, actor, key), daemon=True)
               for n, (actor, key) in enumerate(sorted(seeded.keys.items()))]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(seconds + 120)  # each request has its own 30 s timeout; this only guards a hung thread
    load.seconds = time.perf_counter() - began
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a client thread did not finish")
    return load


# The checks ------------------------------------------------------------------------------------------------

def check(url: str, seeded: Seeded, load: Load) -> list[str]:
    """What the store says against what the clients heard; each problem found, as a sentence (none: clean).

    - every GET answered 200 and every action 200, 409 or 412; no transport error;
    - the review actions the load wrote on an entry, other than ``rejudged`` ones (a neighbour's reject or
      adjust judging it again), are exactly its 200s: same count, actions and actors;
    - its actions form one chain of versions: ``before.version`` 1, 2, 3 ... each step's ``after.version`` the
      next one's ``before.version``, ending at the entry's version, which is so 1 + its 200s + its ``rejudged``
      actions; each 200 is one step of it, from the If-Match it sent to the version it was told: no action lost,
      applied twice, or overwritten;
    - the entry's state is the state after the chain's last step;
    - each 412 sent a version that a step of the chain moved on from; each 409 sent a version at which the entry
      was out of review (so a refusal was always for a reason the clients can see).
    """
    from engine.store.db import make_engine, session_factory
    from engine.store.models import EntryRow, ReviewAction

    problems: list[str] = []
    for status, _ in load.gets:
        if status != 200:
            problems.append(f"a GET /v1/entries/{{id}} answered {status or 'nothing'}")
            break
    for call in load.calls:
        if call.status not in LEGITIMATE:
            problems.append(f"{call.action} of entry {call.entry_id} by {call.actor} answered "
                            f"{call.status or 'nothing'}: {call.detail}")
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            entries = {r.id: r for r in session.execute(select(EntryRow.id, EntryRow.version, EntryRow.state))}
            trail: dict[int, list[ReviewAction]] = defaultdict(list)
            for action in session.scalars(select(ReviewAction).where(ReviewAction.id > seeded.mark)
                                          .order_by(ReviewAction.id)):
                trail[action.entry_id].append(action)
    finally:
        engine.dispose()
    by_entry: dict[int, list[Call]] = defaultdict(list)
    for call in load.calls:
        by_entry[call.entry_id].append(call)
    strangers = sorted(set(trail) - set(seeded.entry_ids))
    if strangers:
        problems.append(f"review actions on entries the load never touched: {strangers[:5]}")
    for entry_id in seeded.entry_ids:
        row, calls, actions = entries.get(entry_id), by_entry[entry_id], trail[entry_id]
        if row is None:
            problems.append(f"entry {entry_id} is gone")
            continue
        ok = [c for c in calls if c.status == 200]
        rejudged = [a for a in actions if a.action == "rejudged"]
        heard = Counter((c.action, f"key:{c.actor}") for c in ok)
        written = Counter((a.action, a.actor) for a in actions if a.action != "rejudged")
        if heard != written:
            problems.append(f"entry {entry_id}: the clients heard {sorted(heard.elements())} applied, the audit "
                            f"trail has {sorted(written.elements())}")
        if row.version != 1 + len(ok) + len(rejudged):
            problems.append(f"entry {entry_id} is at version {row.version} after {len(ok)} applied actions and "
                            f"{len(rejudged)} rejudged (expected {1 + len(ok) + len(rejudged)})")
        steps = sorted(((a.before or {}).get("version"), (a.after or {}).get("version"), a.action, a.actor,
                        (a.after or {}).get("state")) for a in actions)
        versions = [(before, after) for before, after, *_ in steps]
        if versions != [(v, v + 1) for v in range(1, 1 + len(steps))] or (steps and steps[-1][1] != row.version):
            problems.append(f"entry {entry_id} (version {row.version}): the audit trail's versions are not one "
                            f"chain from 1: {versions}")
        chain = {(before, after, action, who) for before, after, action, who, _ in steps}
        for c in ok:
            if (c.sent_version, c.version, c.action, f"key:{c.actor}") not in chain:
                problems.append(f"entry {entry_id}: the 200 for {c.action} by {c.actor} ({c.sent_version} -> "
                                f"{c.version}) is no step of the audit trail {versions}")
        state_at = {1: "in_review", **{after: state for _, after, _, _, state in steps}}
        if steps and str(row.state) != steps[-1][4]:
            problems.append(f"entry {entry_id} is {row.state}; its last audited step left it {steps[-1][4]}")
        moved_on = {before for before, *_ in steps}
        for call in calls:
            if call.status == 412 and call.sent_version not in moved_on:
                problems.append(f"entry {entry_id}: a 412 for If-Match {call.sent_version}, a version no audited "
                                "step moved on from")
            if call.status == 409 and state_at.get(call.sent_version, "in_review") in WAITING:
                problems.append(f"entry {entry_id}: a 409 for If-Match {call.sent_version}, a version at which "
                                "the entry was waiting for review")
    return problems


# Figures ---------------------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` percent of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))] if ordered else float("nan")


def figures(load: Load) -> list[str]:
    lines = []
    by_action: dict[str, list[Call]] = defaultdict(list)
    for call in load.calls:
        by_action[call.action].append(call)
    get_ms = [ms for status, ms in load.gets if status == 200]
    requests = len(load.gets) + sum(1 for c in load.calls if c.action != "get")
    lines.append(f"{requests:,} requests in {load.seconds:.1f} s ({requests / load.seconds:.0f}/s): "
                 f"{len(load.gets):,} GETs, {len(load.calls):,} actions ({load.skipped:,} GETs found the entry "
                 "decided and were not followed by one)"
                 + ("  (stopped by --seconds before every round)" if load.stopped_early else ""))
    lines.append(f"  {'':<8} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   answers")
    rows = [("GET", get_ms, Counter(status for status, _ in load.gets))]
    for action in ACTIONS:
        calls = by_action.get(action, [])
        rows.append((action, [c.ms for c in calls], Counter(c.status for c in calls)))
    everything = [c for c in load.calls if c.action != "get"]
    rows.append(("actions", [c.ms for c in everything], Counter(c.status for c in everything)))
    for name, values, answers in rows:
        told = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(answers.items()))
        lines.append(f"  {name:<8} {len(values):>6} {percentile(values, 50):>8.1f} {percentile(values, 99):>8.1f} "
                     f"{max(values, default=float('nan')):>8.1f}   {told}")
    if everything:
        lines.append(f"  mean action {statistics.fmean(c.ms for c in everything):.1f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.review_load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60, help="GET-then-action rounds per client")
    parser.add_argument("--seconds", type=float, default=300.0, help="stop the clients after this long")
    parser.add_argument("--workers", type=int, default=4, help="API processes of ocgate serve")
    parser.add_argument("--per-day", type=int, default=1,
                        help="entries per timekeeper and day (more than 1: reviews judge neighbours again)")
    parser.add_argument("--pg-url", default=ADMIN_URL, help="where scratch databases are created")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 200 and 10 <= args.entries <= 100_000 and 1 <= args.rounds <= 10_000
            and 1 <= args.per_day <= 50):
        parser.error("--clients 1..200, --entries 10..100000, --rounds 1..10000, --per-day 1..50")
    with scratch_database(args.pg_url) as url, tempfile.TemporaryDirectory() as workdir:
        began = time.perf_counter()
        seeded = seed(url, entries=args.entries, clients=args.clients, per_day=args.per_day)
        print(f"seeded {args.entries:,} entries in review and {args.clients} reviewer keys in "
              f"{time.perf_counter() - began:.1f} s; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
        with serve(url, workers=args.workers, workdir=Path(workdir)) as server:
            load = drive(server.base, seeded, rounds=args.rounds, seconds=args.seconds)
            server_errors = server.errors()
        print(f"{args.clients} clients x {args.rounds} rounds against ocgate serve --workers {args.workers} "
              f"(PostgreSQL), {args.per_day} entr{'y' if args.per_day == 1 else 'ies'} per timekeeper-day")
        for line in figures(load):
            print(line)
        problems = check(url, seeded, load) + [f"server log: {line}" for line in server_errors[:10]]
        applied = sum(1 for c in load.calls if c.status == 200)
        print(f"applied {applied:,} actions to {len({c.entry_id for c in load.calls if c.status == 200}):,} "
              f"entries; checks: {'clean' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems[:30]:
            print(f"  PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
