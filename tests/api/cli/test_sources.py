"""``ocgate sources``, ``sync`` and ``entries export`` on an SQLite file against the fake Clio, as firm IT uses
them: configure, connect by pasting the redirect URL, sync with a summary, exit 75 when Clio is unreachable."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from api.cli import main
from connectors.clio.fake import FakeClio, running_fake_clio
from tests.api.cli.test_cli import cli
from tests.conftest import REPO

TIMEKEEPERS = REPO / "engine" / "data" / "samples" / "timekeepers.csv"


@pytest.fixture
def fake() -> Iterator[FakeClio]:
    with running_fake_clio(activities=400, seed=3) as served:
        yield served


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             fake: FakeClio) -> Path:
    path = tmp_path / "ocgate.db"
    monkeypatch.setenv("OCGATE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("OCGATE_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("CLIO_SECRET", fake.client_secret)
    assert main(["db", "upgrade"]) == 0
    assert main(["timekeepers", "import", str(TIMEKEEPERS)]) == 0
    capsys.readouterr()
    return path


def add(capsys: pytest.CaptureFixture[str], fake: FakeClio, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "sources", "add", "clio", "--kind", "clio", "--set", f"base_url={fake.base_url}",
               "--set", f"client_id={fake.client_id}", "--set", "client_secret_env=CLIO_SECRET",
               "--set", "redirect_uri=https://ocgate.example/oauth/clio", *extra)


def connect_by_pasting(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run ``connect``: approve at the printed URL (the fake approves at once) and paste the redirect."""
    class Browser(io.StringIO):
        def readline(self, *args: object) -> str:
            url = capsys.readouterr().out.strip().splitlines()[-1]
            return httpx.get(url, follow_redirects=False).headers["location"] + "\n"

    monkeypatch.setattr("sys.stdin", Browser())
    return cli(capsys, "sources", "connect", "clio")


def test_configure_connect_sync_and_export(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          database: Path, fake: FakeClio, tmp_path: Path) -> None:
    code, out, _ = add(capsys, fake, "--set", "sync_interval_minutes=15")
    assert code == 0 and "connect it with `ocgate sources connect clio`" in out
    code, out, err = connect_by_pasting(capsys, monkeypatch)
    assert code == 0, err
    assert f"connected to 127.0.0.1/{fake.state.me.account.id}" in out
    code, out, _ = cli(capsys, "sources", "list")
    assert "clio" in out and "connected" in out and "last sync never" in out
    code, out, err = cli(capsys, "sync", "clio")
    assert code == 0, err
    assert "400 pulled, 400 new, 0 changed, 0 unchanged, 0 withdrawn" in out
    assert "MISSING_UTBMS_TASK" in out  # the one uncoded activity, among others
    fake.state.edit(fake.state.activities[0].id, note="Edited narrative for the export check")
    code, out, _ = cli(capsys, "sync", "clio", "--quiet")
    assert code == 0 and ", 1 changed," in out
    exported = tmp_path / "clio.jsonl"
    assert cli(capsys, "entries", "export", "--source", "clio", "-o", str(exported))[0] == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 400 and {line["state"] for line in lines} <= {"ready", "in_review"}
    by_id = {line["entry"]["source_id"]: line for line in lines}
    first = fake.state.activities[0]
    assert by_id[str(first.id)]["source_version"] == first.etag
    assert by_id[str(first.id)]["entry"]["narrative"] == "Edited narrative for the export check"
    records = tmp_path / "records.jsonl"
    assert cli(capsys, "entries", "export", "--records-only", "-o", str(records))[0] == 0
    code, out, _ = cli(capsys, "validate", str(records), "-r", str(REPO / "rules" / "acme-corp.yaml"),
                       "--format", "summary", "--as-of", "2026-04-06")
    assert code in (0, 1) and "400 entries checked" in out  # the export reads back as canonical entries
    code, out, _ = cli(capsys, "sources", "show", "clio")
    assert "run 2:" in out and "run 1:" in out and '"sync_interval_minutes": 15' in out
    assert "access_token" not in out and fake.client_secret not in out


def test_a_secret_in_the_settings_is_refused(capsys: pytest.CaptureFixture[str], database: Path,
                                             fake: FakeClio) -> None:
    code, _, err = add(capsys, fake, "--set", "client_secret=hunter2")
    assert code == 2 and "never store client_secret" in err and "hunter2" not in err


def test_connect_with_a_code_or_a_refresh_token(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                database: Path, fake: FakeClio) -> None:
    add(capsys, fake)
    monkeypatch.setenv("OLD_CLIO_REFRESH", fake.state.issue_tokens()["refresh_token"])
    code, out, err = cli(capsys, "sources", "connect", "clio", "--refresh-token-env", "OLD_CLIO_REFRESH")
    assert code == 0 and "connected to" in out, err
    code, _, err = cli(capsys, "sources", "connect", "clio", "--code", "not-a-code")
    assert code == 2 and "refused the token request" in err


def test_an_unreachable_clio_exits_75_and_the_next_sync_resumes(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch, database: Path,
                                                                fake: FakeClio) -> None:
    add(capsys, fake, "--set", "max_attempts=2", "--set", "timeout=1")
    assert connect_by_pasting(capsys, monkeypatch)[0] == 0
    fake.state.fail_next(2, status=503, path="/activities.json")
    code, _, err = cli(capsys, "sync", "clio", "--quiet")
    assert code == 75 and "Clio answered 503" in err
    code, out, _ = cli(capsys, "sync", "clio", "--quiet")
    assert code == 0 and "400 new" in out


def test_sync_without_a_connection_or_key_says_what_to_do(capsys: pytest.CaptureFixture[str], database: Path,
                                                          fake: FakeClio, monkeypatch: pytest.MonkeyPatch) -> None:
    add(capsys, fake)
    code, _, err = cli(capsys, "sync", "clio")
    assert code == 2 and "ocgate sources connect" in err
    code, _, err = cli(capsys, "sync", "nope")
    assert code == 2 and "no source named 'nope'" in err
    monkeypatch.delenv("OCGATE_SECRET_KEY")
    code, _, err = cli(capsys, "sources", "connect", "clio", "--code", "x")
    assert code == 2 and "OCGATE_SECRET_KEY" in err and "keygen" in err
    code, out, _ = cli(capsys, "sources", "keygen")
    assert code == 0 and Fernet(out.strip().encode())  # a usable key


def test_a_source_without_browser_approval_connects_and_syncs_from_the_command_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, database: Path) -> None:
    """Trackops (an API token) and Efimis (client credentials) connect without a code or a browser."""
    from connectors.efimis.fake import load_demo, running_fake_efimis
    from connectors.trackops.fake import running_fake_trackops

    with running_fake_trackops() as trackops, running_fake_efimis() as efimis:
        trackops.state.seed_demo_month()
        load_demo(efimis.state, dt.date(2026, 3, 1))
        monkeypatch.setenv("TRACKOPS_TOKEN", trackops.api_token)
        monkeypatch.setenv("EFIMIS_SECRET", efimis.client_secret)
        configured = {"trackops": trackops.source_settings("TRACKOPS_TOKEN"),
                      "efimis": efimis.settings("EFIMIS_SECRET")}
        for name, settings in configured.items():
            sets = [part for key, value in settings.items()
                    for part in ("--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}")]
            code, out, err = cli(capsys, "sources", "add", name, "--kind", name, *sets)
            assert code == 0, err
            code, out, err = cli(capsys, "sources", "connect", name)
            assert code == 0, err
            assert out.startswith(f"source {name} connected to ") and "browser" not in err
            code, out, err = cli(capsys, "sync", name)
            assert code == 0, err
            assert re.search(r"\b(\d+) new\b", out) and int(re.search(r"\b(\d+) new\b", out).group(1)) > 10, out
