"""Security basics: failed API key attempts limited per client address, and no secret in any log line or output
of a whole demo run."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli import build_parser
from api.ratelimit import FailedKeyLimiter
from connectors.efimis.fake import FakeEfimisState
from connectors.sources import registry
from engine.workflows import keys as key_workflow
from engine.workflows import sources as source_workflow
from tests.api.conftest import World


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The limiter on its own ---------------------------------------------------------------------------------------

def test_the_limiter_counts_failures_per_address_in_a_sliding_window() -> None:
    clock = Clock()
    limiter = FailedKeyLimiter(limit=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("10.0.0.1") is None  # two failures: still allowed
    limiter.failed("10.0.0.1")  # the third, at t=20 (the first was at t=0)
    assert limiter.retry_after("10.0.0.1") == 40  # until the first failure leaves the window
    assert limiter.retry_after("10.0.0.2") is None  # another address is not affected
    clock.now += 39.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 0.5  # the first failure is 60 s old: two left in the window
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 10  # the window slides: now the failure at t=10 decides
    clock.now += 1000
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter._failures == {}  # expired addresses are forgotten


def test_the_limiter_table_stays_bounded_under_a_flood_of_addresses() -> None:
    clock = Clock()
    limiter = FailedKeyLimiter(limit=2, window=60, clock=clock, max_addresses=100)
    for n in range(1000):
        limiter.failed(f"10.1.{n // 256}.{n % 256}")
        clock.now += 0.01
    assert len(limiter._failures) <= 100
    limiter.failed("10.1.3.231")  # the newest address kept its count
    assert limiter.retry_after("10.1.3.231") is not None
    with pytest.raises(ValueError):
        FailedKeyLimiter(limit=0)


# Through the API ----------------------------------------------------------------------------------------------

@pytest.fixture
def limited(world: World) -> Iterator[tuple[World, Clock]]:
    clock = Clock()
    world.client.app.state.key_limiter = FailedKeyLimiter(limit=3, window=60, clock=clock)  # type: ignore[attr-defined]
    yield world, clock


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


def test_failed_key_attempts_lock_the_address_out_with_retry_after(limited: tuple[World, Clock]) -> None:
    world, clock = limited
    prefix = world.keys["admin"].split("_")[1]
    wrong = [f"ocg_{prefix}_wrong", "ocg_00000000_guess", world.keys["revoked"]]
    for key in wrong:
        error_of(world.client.get("/v1/review-items", headers={"Authorization": f"Bearer {key}"}), 401,
                 "unauthorized")
    clock.now += 5
    locked = world.client.get("/v1/review-items", headers={"Authorization": "Bearer ocg_00000000_again"})
    error = error_of(locked, 429, "too_many_attempts")
    assert locked.headers["Retry-After"] == "55"
    assert "55 s" in error["message"]
    # While locked out, even the right key is not looked at: the answer tells a guesser nothing.
    error_of(world.get("/v1/review-items"), 429, "too_many_attempts")
    error_of(world.post("/v1/entries", json=[]), 429, "too_many_attempts")
    # Another address is served as usual.
    with TestClient(world.client.app, client=("192.0.2.7", 50000)) as other:
        assert other.get("/v1/review-items", headers=world.auth("viewer")).status_code == 200
    clock.now += 55
    assert world.get("/v1/review-items").status_code == 200


def test_right_keys_are_never_counted_or_slowed(limited: tuple[World, Clock]) -> None:
    world, _ = limited
    limiter: FailedKeyLimiter = world.client.app.state.key_limiter  # type: ignore[attr-defined]
    for who in ["admin", "viewer", "reviewer"] * 20:
        assert world.get("/v1/review-items", who).status_code == 200
    assert limiter._failures == {}
    # Two failures, then the right key: still served; a forgotten header is a 401 but not a guess.
    for _ in range(2):
        world.client.get("/v1/review-items", headers={"Authorization": "Bearer ocg_00000000_x"})
    for _ in range(5):
        error_of(world.client.get("/v1/review-items"), 401, "unauthorized")
    assert world.get("/v1/review-items").status_code == 200
    assert len(limiter._failures["testclient"]) == 2


def test_the_limit_comes_from_the_environment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCGATE_KEY_ATTEMPTS", "2")
    monkeypatch.setenv("OCGATE_KEY_ATTEMPT_WINDOW", "600")
    with TestClient(create_app(sessions=world.sessions), raise_server_exceptions=False) as client:
        bad = {"Authorization": "Bearer ocg_00000000_x"}
        assert [client.get("/v1/review-items", headers=bad).status_code for _ in range(3)] == [401, 401, 429]
        assert 590 <= int(client.get("/v1/review-items", headers=bad).headers["Retry-After"]) <= 600
        assert client.app.state.key_limiter.window == 600  # type: ignore[attr-defined]


def test_every_route_that_takes_a_key_declares_429(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "401" not in responses or path.startswith("/v1/webhooks"):
                continue  # no key (health) or a signature instead of a key (webhooks)
            assert "429" in responses, (method, path)
            assert responses["429"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"}
            checked += 1
    assert checked >= 20


# No secret in a log line or the output of a whole demo run ----------------------------------------------------

@pytest.mark.slow
def test_no_secret_in_any_log_line_or_output_of_a_demo_run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    made: set[str] = set()
    # Every random token the run makes through ``secrets`` (API keys, OAuth codes and tokens of the fakes,
    # webhook secrets, the portal's tokens); short ones are ids such as a key's public prefix.
    real_urlsafe, real_hex = secrets.token_urlsafe, secrets.token_hex

    def urlsafe(nbytes: int | None = None) -> str:
        made.add(value := real_urlsafe(nbytes))
        return value

    def hexed(nbytes: int | None = None) -> str:
        value = real_hex(nbytes)
        if nbytes is not None and nbytes >= 20:
            made.add(value)
        return value

    monkeypatch.setattr(secrets, "token_urlsafe", urlsafe)
    monkeypatch.setattr(secrets, "token_hex", hexed)
    issue = FakeEfimisState.issue_token

    def efimis_token(self: FakeEfimisState) -> dict[str, Any]:
        answer = issue(self)
        made.add(answer["access_token"])
        return answer

    monkeypatch.setattr(FakeEfimisState, "issue_token", efimis_token)
    create = key_workflow.create_key

    def create_key(*args: Any, **kwargs: Any) -> Any:
        key, text = create(*args, **kwargs)
        made.add(text)
        return key, text

    monkeypatch.setattr("api.cli.demo.create_key", create_key)
    # The fakes' client secrets, API tokens and keys reach the connectors as environment values of Options.
    real_options = registry.Options

    def options(*args: Any, **kwargs: Any) -> Any:
        made.update(str(v) for v in (kwargs.get("environ") or {}).values())
        return real_options(*args, **kwargs)

    monkeypatch.setattr("api.cli.demo.Options", options)
    master = source_workflow.new_secret_key()
    monkeypatch.setenv("OCGATE_SECRET_KEY", master)
    made.add(master)

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logging.Formatter("%(name)s %(levelname)s %(message)s").format(record))  # with tracebacks

    root = logging.getLogger()
    handler, level = Collect(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        args = build_parser().parse_args(["demo", "--database", str(tmp_path / "demo.db")])
        assert args.handler(args) == 0
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capfd.readouterr()
    secrets_made = {s for s in made if len(s) >= 16}
    # The run did make the secrets this test looks for: API keys, the fakes' tokens, their client secrets.
    assert sum(s.startswith("ocg_") for s in secrets_made) >= 2
    assert len(secrets_made) >= 10, secrets_made
    assert len(lines) > 100  # DEBUG reached the handler: there was something to grep
    assert "Planned strategy" in out or "entries checked" in out  # and the output was captured
    texts = {"log": lines, "stdout": out.splitlines(), "stderr": err.splitlines()}
    leaked = [f"{where}: {line.replace(secret, '<SECRET>')[:300]}" for where, found in texts.items()
              for line in found for secret in secrets_made if secret in line]
    assert not leaked, "\n".join(leaked)
