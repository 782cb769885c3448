"""Schemathesis against the API on SQLite and PostgreSQL, with a key of every role: every operation with
generated (valid and invalid) requests, then its stateful phase, which follows the links the OpenAPI document
declares (list the queue, open an entry, approve it with its ETag; upload a rule file, activate it; build an
invoice, read it, void it). Zero failures of not_a_server_error, status_code_conformance,
response_schema_conformance and content_type_conformance is the bar.

The run is bounded (examples per operation, steps per scenario) with a fixed seed, so ``make test`` stays
quick and repeatable; ``make fuzz`` runs the same tests with ``OCGATE_FUZZ_EXAMPLES`` raised.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, Integer, select, text
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.models import Base, RuleSetStatus
from engine.workflows.keys import Role, create_key
from engine.workflows.rulesets import add_ruleset_version
from tests.api.conftest import ACME_TEXT, seed
from tests.conftest import _postgres_database

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
EXAMPLES = int(os.environ.get("OCGATE_FUZZ_EXAMPLES", "20"))
STEPS = int(os.environ.get("OCGATE_FUZZ_STEPS", "10"))
SCENARIOS = int(os.environ.get("OCGATE_FUZZ_SCENARIOS", "30"))
ROLES = {"admin": Role.ADMIN, "reviewer": Role.REVIEWER, "viewer": Role.VIEWER, "connector": Role.CONNECTOR,
         "author": Role.RULE_AUTHOR, "biller": Role.BILLER}
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
                   suppress_health_check=list(HealthCheck))

# The document does not depend on the store, so it is read once from an app on an empty in-memory database.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app("sqlite://"))


@dataclass
class Target:
    app: FastAPI
    sessions: sessionmaker[Session]
    keys: dict[str, str]  # role name -> full key text
    seeded: Snapshot


@dataclass
class Snapshot:
    """Every row of every table, so a store can be put back as it was: the stateful phase starts each scenario
    from the seeded store, because hypothesis replays a scenario to shrink it and needs the same answers (and so
    the same links to follow) every time."""

    rows: dict[str, list[dict[str, Any]]]

    @classmethod
    def take(cls, engine: Engine) -> Snapshot:
        with engine.connect() as connection:
            return cls({table.name: [dict(row) for row in connection.execute(select(table)).mappings()]
                        for table in Base.metadata.sorted_tables})

    def restore(self, engine: Engine) -> None:
        tables = Base.metadata.sorted_tables
        with engine.begin() as connection:
            for table in reversed(tables):
                connection.execute(table.delete())
            for table in tables:
                if self.rows[table.name]:
                    connection.execute(table.insert(), self.rows[table.name])
            if engine.dialect.name == "postgresql":  # ids go on from where the seed left them, as on SQLite
                for table in tables:
                    for column in table.primary_key.columns:
                        if column.autoincrement is True or (column.autoincrement == "auto"
                                                            and isinstance(column.type, Integer)):
                            connection.execute(text(
                                "SELECT setval(pg_get_serial_sequence(:t, :c), coalesce(max(" + column.name
                                + "), 0) + 1, false) FROM " + table.name + " WHERE pg_get_serial_sequence(:t, :c)"
                                " IS NOT NULL"), {"t": table.name, "c": column.name})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One seeded store per database for the whole module: the fuzzer's changes pile up, as on a live server."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'ocgate.db'}"])
    else:
        urls = _postgres_database()
    url = next(urls)
    try:
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            add_ruleset_version(session, ACME_TEXT, status=RuleSetStatus.ACTIVE, created_by="seed")
            keys = {name: create_key(session, name=name, role=role)[1] for name, role in ROLES.items()}
            seed(session)
        yield Target(app=create_app(sessions=sessions), sessions=sessions, keys=keys, seeded=Snapshot.take(engine))
        engine.dispose()
    finally:
        for _ in urls:  # drops the PostgreSQL database
            pass


# A thousand bulk actions on PostgreSQL take seconds on a loaded machine: a slow answer is not what this checks.
TIMEOUT = 120


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# Each generated request goes out as admin (who may do everything, so it reaches the deepest code) and as one
# other role in turn (so every role sees every operation, and the 403s are checked too).
_OTHERS = itertools.cycle([who for who in ROLES if who != "admin"])


@schema.parametrize()
@BOUNDED
def test_every_operation_with_every_role(case: Any, target: Target) -> None:
    for who in ("admin", next(_OTHERS)):
        case.call_and_validate(app=target.app, headers=bearer(target.keys[who]), checks=CHECKS, timeout=TIMEOUT)


def test_stateful_links(target: Target) -> None:
    """Sequences that follow the document's links: a list, then an item of it, then an action on that item with
    the ETag or id the earlier answer gave, as admin."""
    base = schema.as_state_machine()
    seen: collections.Counter[tuple[str, int]] = collections.Counter()

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            target.seeded.restore(target.sessions.kw["bind"])

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"app": target.app, "headers": bearer(target.keys["admin"]), "timeout": TIMEOUT}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)
            seen[(case.operation.label, response.status_code)] += 1

    Machine.run(settings=settings(BOUNDED, max_examples=SCENARIOS, stateful_step_count=STEPS))
    # Following a link reaches an item that exists: a 2xx from an operation on one item (random ids are 404s).
    followed = {label for (label, status) in seen if status < 300 and "{" in label}
    assert followed, sorted(seen)
    links = [name for operation in schema.raw_schema["paths"].values() for method in operation.values()
             for response in method["responses"].values() for name in response.get("links", {})]
    assert len(links) >= 20, links  # the document declares the links the machine follows


# The edges the fuzzer relies on, each checked once by hand ----------------------------------------------

def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def test_the_edges_are_refused_in_the_error_shape(target: Target) -> None:
    small = create_app(sessions=target.sessions, max_body_bytes=1000)
    admin = bearer(target.keys["admin"])
    with TestClient(target.app) as client, TestClient(small) as limited:
        # A body over the limit: 413 naming the limit, whether Content-Length says so or not.
        assert "1000 bytes" in error(limited.post("/v1/entries", headers=admin, content=b"[" + b" " * 1000 + b"]"),
                                     413, "body_too_large")
        chunks = iter([b"[", b" " * 600, b" " * 600, b"]"])
        assert "1000 bytes" in error(limited.post("/v1/entries", headers={**admin, "Content-Type": "application/json"},
                                                  content=chunks), 413, "body_too_large")
        assert limited.post("/v1/entries", headers=admin, json=[]).status_code == 200
        # Ids: 64-bit in the API; beyond the store's columns, nothing; beyond 64 bits, invalid.
        for path in ("/v1/entries/{}", "/v1/entries/{}/history", "/v1/entries/{}/portal-rejections"):
            error(client.get(path.format(2**31), headers=admin), 404, "not_found")
            error(client.get(path.format(2**63 - 1), headers=admin), 404, "not_found")
            error(client.get(path.format(2**63), headers=admin), 422, "invalid_request")
            error(client.get(path.format(0), headers=admin), 422, "invalid_request")
        for action in ("activate", "shadow", "backtest"):
            error(client.post(f"/v1/rulesets/{2**40}/{action}", headers=admin), 404, "not_found")
            error(client.post(f"/v1/rulesets/{10**30}/{action}", headers=admin), 422, "invalid_request")
        error(client.post("/v1/entries/1/approve", headers={**admin, "If-Match": f'"{2**40}"'}, json={}),
              412, "version_mismatch")
        results = client.post("/v1/review-items/bulk", headers=admin, json={"action": "reject", "items": [
            {"id": 2**40, "version": 1}, {"id": 1, "version": 2**40}]}).json()
        assert [r["error"]["code"] for r in results] == ["not_found", "version_mismatch"]
        error(client.post("/v1/review-items/bulk", headers=admin, json={"action": "reject", "items": [
            {"id": 2**64, "version": 1}]}), 422, "invalid_request")
        # Text: NUL anywhere, a lone surrogate in JSON, bytes that are not UTF-8.
        error(client.get("/v1/review-items", headers=admin, params={"client": "a\x00b"}), 422, "invalid_request")
        error(client.get("/v1/timekeepers/TK%00", headers=admin), 422, "invalid_request")
        error(client.post("/v1/rulesets", headers=admin, content=b"id: a\x00\n"), 422, "invalid_request")
        lone = b'{"action": "reject", "reason": "\\ud800", "items": [{"id": 1, "version": 1}]}'
        error(client.post("/v1/review-items/bulk", headers={**admin, "Content-Type": "application/json"},
                          content=lone), 422, "invalid_request")
        error(client.post("/v1/entries/1/reject", headers={**admin, "If-Match": '"1"',
                                                           "Content-Type": "application/json"},
                          content=b'{"reason": "\xff"}'), 422, "invalid_request")
        # A paired surrogate escape is an ordinary character.
        paired = b'{"action": "reject", "reason": "ok \\ud83d\\ude00", "items": [{"id": 1, "version": 99}]}'
        assert client.post("/v1/review-items/bulk", headers={**admin, "Content-Type": "application/json"},
                           content=paired).status_code == 200
        # Batches and pages have maximums.
        error(client.post("/v1/entries", headers=admin, json=[{}] * 1001), 422, "invalid_request")
        error(client.get("/v1/review-items", headers=admin, params={"limit": 501}), 422, "invalid_request")
        error(client.get("/v1/invoices", headers=admin, params={"limit": 501}), 422, "invalid_request")
    spec = target.app.openapi()
    assert spec["paths"]["/v1/entries"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "maxItems"] == 1000
