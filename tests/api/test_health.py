"""Probes (/healthz, /readyz), the request id, the security headers on every response, JSON logs, and
``ocgate serve --workers 2`` for real on PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api import logs
from api.app import create_app
from engine.store.db import make_engine, session_factory, transaction, upgrade
from engine.store.health import head_revision
from engine.workflows.keys import Role, create_key
from tests.conftest import REPO, _postgres_database

SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
            "cache-control": "no-store"}


@pytest.fixture
def client(sessions: sessionmaker[Session]) -> Iterator[tuple[TestClient, str]]:
    with transaction(sessions) as session:
        key = create_key(session, name="admin", role=Role.ADMIN)[1]
    app = create_app(sessions=sessions, max_body_bytes=1000)

    def boom() -> None:
        raise RuntimeError("a bug (injected)")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, key


def test_probes_answer_without_a_key(client: tuple[TestClient, str]) -> None:
    test_client, _ = client
    assert test_client.get("/healthz").json() == {"status": "ok"}
    ready = test_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "revision": head_revision(), "head": head_revision(),
                            "problem": None}


@pytest.mark.parametrize("revision", [None, "0003"])
def test_readyz_is_503_until_the_schema_is_at_head(tmp_path: Path, revision: str | None) -> None:
    url = f"sqlite:///{tmp_path}/behind.db"
    if revision is not None:
        upgrade(url, revision)
    engine = make_engine(url)
    try:
        with TestClient(create_app(sessions=session_factory(engine))) as test_client:
            assert test_client.get("/healthz").status_code == 200  # alive, just not ready
            response = test_client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "not_ready" and body["database"] == "ok" and body["revision"] == revision
            assert "ocgate db upgrade" in body["problem"]
            upgrade(url)
            assert test_client.get("/readyz").status_code == 200
    finally:
        engine.dispose()


def test_readyz_is_503_when_the_database_is_down() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2")
    with TestClient(create_app(sessions=session_factory(engine))) as test_client:
        response = test_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable" and "not reachable" in response.json()["problem"]


def test_every_response_has_the_security_headers_and_a_request_id(client: tuple[TestClient, str]) -> None:
    test_client, key = client
    auth = {"Authorization": f"Bearer {key}"}
    answers = {
        200: test_client.get("/v1/review-items", headers=auth),
        401: test_client.get("/v1/review-items"),
        404: test_client.get("/v1/nothing"),
        413: test_client.post("/v1/entries", headers=auth, content=b"[" + b" " * 2000 + b"]"),
        422: test_client.get("/v1/review-items?x=%00", headers=auth),
        500: test_client.get("/boom"),
    }
    ids = set()
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        for name, value in SECURITY.items():
            assert response.headers.get(name) == value, (status, name, response.headers)
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # plain HTTP here: a proxy does TLS
        ids.add(response.headers["x-request-id"])
    assert len(ids) == len(answers)  # a new id each
    # The unhandled error is the API's JSON error, with the id to quote, not a bare text 500.
    error = answers[500].json()["error"]
    assert error["code"] == "internal_error" and answers[500].headers["x-request-id"] in error["message"]
    # The docs page may load Swagger UI; it is still not frameable.
    docs = test_client.get("/docs")
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    # Over HTTPS (as the proxy reports it) browsers are told to stay on it.
    assert "max-age" in test_client.get("https://testserver/healthz").headers["strict-transport-security"]


def test_a_sane_request_id_is_kept_and_any_other_replaced(client: tuple[TestClient, str]) -> None:
    test_client, _ = client
    assert test_client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"}).headers["x-request-id"] == "lb-7f3a.42"
    for bad in (b"x" * 200, b"a b", "id\u00e9".encode(), b"", b"a\\nb"):
        answered = test_client.get("/healthz", headers={"X-Request-ID": bad})
        assert answered.headers["x-request-id"].encode() != bad and len(answered.headers["x-request-id"]) == 32


def test_logs_under_a_request_carry_its_id_as_json(client: tuple[TestClient, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    test_client, _ = client
    with caplog.at_level(logging.INFO, logger="ocgate"):
        test_client.get("/boom", headers={"X-Request-ID": "req-123"})
    formatter = logs.JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records]
    crash = next(line for line in lines if line["logger"] == "ocgate.api")
    assert crash["request_id"] == "req-123" and crash["level"] == "error"
    assert "RuntimeError: a bug (injected)" in crash["exception"]
    access = next(line for line in lines if line["logger"] == logs.ACCESS_LOGGER)
    assert (access["request_id"], access["method"], access["path"], access["status"]) == ("req-123", "GET", "/boom",
                                                                                         500)
    assert isinstance(access["duration_ms"], float) and access["pid"] == os.getpid()
    assert logs.request_id.get() is None  # reset once the request is answered


def test_the_log_format_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.chosen_format() == "text"
    assert logs.chosen_format("json") == "json"
    monkeypatch.setenv(logs.FORMAT_ENV, "JSON")
    assert logs.chosen_format() == "json"
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="xml"):
        logs.chosen_format()
    done = subprocess.run([sys.executable, "-m", "api.cli", "db", "current"], capture_output=True, text=True,
                          env={**os.environ, logs.FORMAT_ENV: "xml"}, cwd=REPO)
    assert done.returncode == 2 and "log format 'xml'" in done.stderr and "Traceback" not in done.stderr


# ocgate serve --workers 2, for real -------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_with_two_workers_on_postgresql(tmp_path: Path) -> None:
    database = _postgres_database()
    url = next(database)
    try:
        env = {**os.environ, "OCGATE_DATABASE_URL": url, "OCGATE_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db"}
        env.pop(logs.FORMAT_ENV, None)

        def cli(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True,
                                  cwd=REPO, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        cli("db", "upgrade")
        key = next(word for word in cli("keys", "create", "--role", "viewer", "--name", "probe").split()
                   if word.startswith("ocg_"))
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "api.cli", "--log-format", "json", "serve", "--port",
                                   str(port), "--workers", "2"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(server.stderr.readline, "")), daemon=True)
        reader.start()
        base = f"http://127.0.0.1:{port}"

        def pids() -> set[int]:
            found = set()
            for line in list(lines):
                with_pid = json.loads(line) if line.startswith("{") else {}
                if with_pid.get("logger") == logs.ACCESS_LOGGER and with_pid.get("status") == 200:
                    found.add(with_pid["pid"])
            return found

        try:
            deadline = time.monotonic() + 90  # two workers starting on a loaded machine
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)

            def ask(_: int) -> tuple[int, int]:
                with httpx.Client(timeout=10) as fresh:  # a new connection each time, so either process may take it
                    ready = fresh.get(f"{base}/readyz").status_code
                    queue = fresh.get(f"{base}/v1/review-items", headers={"Authorization": f"Bearer {key}"})
                    return ready, queue.status_code

            deadline = time.monotonic() + 30
            with ThreadPoolExecutor(8) as pool:
                while len(pids()) < 2 and time.monotonic() < deadline:
                    assert set(pool.map(ask, range(40))) == {(200, 200)}
                    time.sleep(0.3)  # let the log lines arrive
            assert len(pids()) == 2, pids()
            assert server.pid not in pids()  # the parent supervises; the two processes answer
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
            reader.join(10)
        assert server.returncode == 0, "".join(lines)
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
        assert all(r["request_id"] for r in records if r["logger"] == logs.ACCESS_LOGGER)
        assert not [line for line in lines if "Traceback" in line]
    finally:
        database.close()
