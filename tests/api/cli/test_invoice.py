"""``ocgate firm``, ``destinations`` and ``invoice`` on an SQLite file, as firm IT and billing staff use them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from api.cli import main
from engine import ledes
from tests.api.cli.test_cli import cli
from tests.conftest import REPO

RULES = REPO / "rules"
SAMPLE = REPO / "engine" / "data" / "samples" / "acme-2026-03.jsonl"
MARCH = ("--client", "ACME01", "--from", "2026-03-01", "--to", "2026-03-31")


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "ocgate.db"
    monkeypatch.setenv("OCGATE_DATABASE_URL", f"sqlite:///{path}")
    assert main(["db", "upgrade"]) == 0
    assert main(["rulesets", "add", str(RULES / "acme-corp.yaml"), "--status", "active"]) == 0
    assert main(["ingest", str(SAMPLE), "--as-of", "2026-04-06", "--period-start", "2026-03-01",
                 "--period-end", "2026-03-31"]) == 0
    capsys.readouterr()
    return path


def test_firm_settings_and_invoice_prefix(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    code, out, _ = cli(capsys, "firm", "set", "--law-firm-id", "24-6437381", "--name", "Hale & Moss LLP",
                       "--invoice-prefix", "HM")
    assert code == 0 and json.loads(out)["invoice_prefix"] == "HM"
    code, _, err = cli(capsys, "firm", "set", "--invoice-prefix", "HM-2026")
    assert code == 2 and "letters and digits only" in err
    code, out, _ = cli(capsys, "firm", "show")
    assert json.loads(out)["firm"]["name"] == "Hale & Moss LLP"


def test_build_submit_to_a_directory_and_void(capsys: pytest.CaptureFixture[str], database: Path,
                                              tmp_path: Path) -> None:
    cli(capsys, "firm", "set", "--law-firm-id", "24-6437381", "--invoice-prefix", "HM")
    code, _, err = cli(capsys, "invoice", "build", *MARCH)
    assert code == 2 and "takes one matter per invoice; choose one of: 2025-0311, 2026-0017, 2026-0042" in err
    code, out, _ = cli(capsys, "invoice", "preview", *MARCH, "--matter", "2026-0017")
    assert code == 0 and "nothing stored" in out
    code, out, _ = cli(capsys, "invoice", "preview", *MARCH, "--matter", "2026-0017", "--discount",
                       "fees:2%:Courtesy discount")
    assert code == 0 and re.search(r" IF .*Courtesy discount", out)
    with pytest.raises(SystemExit) as exited:  # argparse refuses it, with its usage line
        main(["invoice", "preview", *MARCH, "--discount", "fees:lots:x"])
    assert exited.value.code == 2 and "not a number or a percent" in capsys.readouterr().err
    written = tmp_path / "hm1.txt"
    code, out, _ = cli(capsys, "invoice", "build", *MARCH, "--matter", "2026-0017", "--date", "2026-04-06",
                       "-o", str(written))
    assert code == 0 and out.startswith("invoice HM000001 built:")
    parsed = ledes.parse(written.read_text())
    assert parsed.invoices[0].invoice_number == "HM000001"
    assert parsed.invoices[0].invoice_date.isoformat() == "2026-04-06"
    code, _, err = cli(capsys, "invoice", "submit", "HM000001")
    assert code == 2 and "say which destination" in err
    drop = tmp_path / "drop"
    drop.mkdir()
    code, _, err = cli(capsys, "destinations", "add", "acme-drop", "--kind", "directory")
    assert code == 2 and "needs path" in err
    assert cli(capsys, "destinations", "add", "acme-drop", "--kind", "directory", "--path", str(drop),
               "--client", "ACME01")[0] == 0
    code, out, _ = cli(capsys, "invoice", "submit", "HM000001")
    assert code == 0 and "submitted to acme-drop: delivered" in out
    assert (drop / "HM000001.txt").read_text() == written.read_text()
    code, out, _ = cli(capsys, "invoice", "status", "HM000001")
    assert code == 0 and "submitted at acme-drop (delivered)" in out
    code, out, _ = cli(capsys, "invoice", "status")
    assert code == 0 and "HM000001" in out
    code, out, _ = cli(capsys, "invoice", "status", "--all")  # a folder's outcome is known at once: nothing waits
    assert code == 0 and "0 invoices polled, 0 failed" in out
    code, _, err = cli(capsys, "invoice", "void", "HM000001", "--reason", "oops")
    assert code == 2 and "withdraw it there first" in err
    code, out, _ = cli(capsys, "invoice", "build", *MARCH, "--matter", "2026-0042")
    assert code == 0
    code, out, _ = cli(capsys, "invoice", "void", "HM000002", "--reason", "wrong period")
    assert code == 0 and "void" in out
    code, out, _ = cli(capsys, "invoice", "show", "HM000002")
    assert code == 0 and "voided" in out
    code, out, _ = cli(capsys, "invoice", "show", "HM000001", "--ledes")
    assert out.startswith("LEDES1998B[]")
    assert cli(capsys, "invoice", "show", "NOPE")[0] == 2


def test_an_unreachable_portal_exits_75(capsys: pytest.CaptureFixture[str], database: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OCGATE_LEGALTRACKER_SECRET", "s3cret")
    base = f"http://127.0.0.1:{port}"
    assert cli(capsys, "destinations", "add", "lt", "--kind", "legaltracker", "--set", f"base_url={base}/v1",
               "--set", f"token_url={base}/oauth/token", "--set", "client_id=ocgate", "--set", "firm_id=1",
               "--set", "firm_office_id=2", "--set", "company_id=3", "--set", "max_attempts=1",
               "--set", "timeout=0.5", "--set", 'matter_ids={"2026-0017": 9}')[0] == 0
    code, _, err = cli(capsys, "destinations", "add", "bad", "--kind", "legaltracker", "--set", "client_secret=x")
    assert code == 2 and "never store the client secret" in err
    assert cli(capsys, "invoice", "build", *MARCH, "--matter", "2026-0017")[0] == 0
    code, _, err = cli(capsys, "invoice", "submit", "INV000001", "--to", "lt")
    assert code == 75 and "lt:" in err
    code, out, _ = cli(capsys, "invoice", "status", "INV000001", "--no-poll")
    assert "submitting at lt" in out and "last error" in out


def test_status_all_polls_what_waits_at_a_portal(capsys: pytest.CaptureFixture[str], database: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.legaltracker.fake import FakeRules, running_fake_portal

    with running_fake_portal(FakeRules(blocked_expense_codes=frozenset({"E101"})), auto_advance=True) as portal:
        settings = {k: v for k, v in portal.client_settings().items() if k != "client_secret"}
        monkeypatch.setenv("OCGATE_LEGALTRACKER_SECRET", portal.state.client_secret)
        options = [x for key, value in settings.items() for x in ("--set", f"{key}={value}")]
        assert cli(capsys, "destinations", "add", "lt", "--kind", "legaltracker", "--client", "ACME01", *options,
                   "--set", 'matter_ids={"2025-0311": 1, "2026-0017": 2, "2026-0042": 3}')[0] == 0
        for matter in ("2025-0311", "2026-0017", "2026-0042"):
            assert cli(capsys, "invoice", "build", *MARCH, "--matter", matter)[0] == 0
        for number in ("INV000001", "INV000002", "INV000003"):
            assert cli(capsys, "invoice", "submit", number)[0] == 0
        code, out, _ = cli(capsys, "invoice", "status", "--all")  # received -> pending
        assert code == 0 and "3 invoices polled, 0 failed" in out and "under_review" in out
        code, out, _ = cli(capsys, "invoice", "status", "--all")  # pending -> decided
        assert code == 0 and "1 entries back in the review queue" in out
        code, out, _ = cli(capsys, "invoice", "status", "--all")  # every outcome known: nothing left to poll
        assert "0 invoices polled" in out
