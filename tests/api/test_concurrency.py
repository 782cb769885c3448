"""Many reviewers at once, for real: 20 clients approve, reject and adjust the same 200 entries through
``ocgate serve --workers 2`` on PostgreSQL, then the store is checked against every answer they heard (the bounded
version of ``bench/review_load.py``, whose machinery it uses). PostgreSQL only: skipped without it, failed without it
under CI=true.

There each entry is its own timekeeper's only entry of the day, so a review changes no other entry. The last test
puts eight entries on each timekeeper-day, so that a reject or an adjust judges the day's others again (the 10 h
daily cap). Before the day locks (engine/workflows/intake.py lock_days), that is where concurrent reviews overwrote
each other (a neighbour's re-judging wrote version + 1 over an applied approval) and deadlocked (a 500)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bench.review_load import LEGITIMATE, Call, Load, check, drive, figures, seed, serve
from tests.conftest import _postgres_database

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

CLIENTS, ENTRIES, ROUNDS = 20, 200, 40
LOAD_SECONDS = 25  # the client phase stops here whatever is left; the whole test stays under about 40 s


def _same_etag_at_once(base: str, keys: dict[str, str], entry_id: int) -> list[Call]:
    """Every reviewer approves one entry at the same instant with the same ETag: one may win."""
    tag = httpx.get(f"{base}/v1/entries/{entry_id}", headers={"Authorization": f"Bearer {next(iter(keys.values()))}"},
                    timeout=30).headers["etag"]
    gate = threading.Barrier(len(keys))
    calls: list[Call] = []
    lock = threading.Lock()

    def one(actor: str, key: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            client.get("/healthz")  # connected before the gate, so the posts leave together
            gate.wait()
            sent = time.perf_counter()
            answer = client.post(f"/v1/entries/{entry_id}/approve", json={"reason": f"race by {actor}"},
                                 headers={"Authorization": f"Bearer {key}", "If-Match": tag})
            body = answer.json()
            call = Call(actor, entry_id, "approve", int(tag.strip('"')), answer.status_code, body.get("version"),
                        body.get("state"), (time.perf_counter() - sent) * 1000,
                        body.get("error", {}).get("code", "") if answer.status_code != 200 else "")
        with lock:
            calls.append(call)

    threads = [threading.Thread(target=one, args=item) for item in keys.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return calls


def test_many_reviewers_at_once_lose_nothing_and_apply_nothing_twice(tmp_path: Path) -> None:
    database = _postgres_database()
    url = next(database)
    try:
        seeded = seed(url, entries=ENTRIES, clients=CLIENTS)
        with serve(url, workers=2, workdir=tmp_path) as server:
            load = drive(server.base, seeded, rounds=ROUNDS, seconds=LOAD_SECONDS)
            # One entry nobody touched yet (still at version 1, in review): all twenty approve it at once.
            touched = {c.entry_id for c in load.calls}
            untouched = next(i for i in seeded.entry_ids if i not in touched)
            race = _same_etag_at_once(server.base, seeded.keys, untouched)
            server_errors = server.errors()
        print("\n".join(figures(load)))

        answers = Counter(c.status for c in load.calls)
        assert set(answers) <= set(LEGITIMATE), answers
        assert not server_errors, server_errors
        # The load did what it is for: every action applied, and reviewers collided (refusals of both kinds).
        applied = Counter(c.action for c in load.calls if c.status == 200)
        assert set(applied) == {"approve", "reject", "adjust"}, applied
        assert answers[409] > 0 and answers[412] + answers[409] >= 10, answers
        assert sum(answers.values()) >= CLIENTS * 5, answers  # not stopped before it had begun
        # Of the twenty at once, exactly one won; the others were told their ETag is stale.
        assert sorted(c.status for c in race) == [200] + [412] * (CLIENTS - 1), race
        assert all(c.detail == "version_mismatch" for c in race if c.status == 412), race

        everything = Load(calls=[*load.calls, *race], gets=load.gets, seconds=load.seconds)
        assert check(url, seeded, everything) == []

        # The check sees a lost answer, a doubled one and a 5xx (it would not pass a broken run).
        won = next(c for c in load.calls if c.status == 200)
        lost = Load(calls=[c for c in everything.calls if c is not won], gets=load.gets)
        assert any(f"entry {won.entry_id} is at version" in p for p in check(url, seeded, lost))
        doubled = Load(calls=[*everything.calls, won], gets=load.gets)
        assert any(f"entry {won.entry_id}" in p and "audit trail" in p for p in check(url, seeded, doubled))
        crashed = Load(calls=[*everything.calls, dataclasses.replace(won, status=500, detail="internal_error")],
                       gets=load.gets)
        assert any("answered 500" in p for p in check(url, seeded, crashed))
    finally:
        database.close()


def test_reviews_on_shared_days_judge_neighbours_without_losing_updates(tmp_path: Path) -> None:
    database = _postgres_database()
    url = next(database)
    try:
        seeded = seed(url, entries=100, clients=CLIENTS, per_day=8)  # 12 h a day: over the 10 h cap
        with serve(url, workers=2, workdir=tmp_path) as server:
            load = drive(server.base, seeded, rounds=20, seconds=LOAD_SECONDS)
        assert Counter(c.status for c in load.calls)[200] >= CLIENTS, "the load did not run"
        assert check(url, seeded, load) == []
    finally:
        database.close()
