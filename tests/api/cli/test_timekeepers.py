"""``ocgate timekeepers import|list|show`` on SQLite and PostgreSQL, as firm IT keeps the table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import main
from tests.api.cli.test_cli import cli
from tests.conftest import REPO

SAMPLE = REPO / "engine" / "data" / "samples" / "timekeepers.csv"


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    yield db_url


def test_import_list_and_show(capsys: pytest.CaptureFixture[str], database: str) -> None:
    code, out, _ = cli(capsys, "timekeepers", "import", str(SAMPLE))
    assert (code, out) == (0, f"{SAMPLE}: 23 new, 0 changed, 0 unchanged; 0 rates and 0 source ids no longer in "
                              "the file removed\n")
    code, out, _ = cli(capsys, "timekeepers", "import", str(SAMPLE))
    assert code == 0 and "0 new, 0 changed, 23 unchanged" in out
    code, out, _ = cli(capsys, "timekeepers", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 24 and lines[0].split() == ["LEDES", "ID", "CLASS", "NAME", "TITLE",
                                                                    "SOURCE", "IDS"]
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(by_id) == sorted(by_id)
    assert by_id["TK1002"] == ["TK1002", "PARTNR", "Okafor,", "Daniel", "Partner", "clio:345679,",
                               "efimis:e0000000-0000-4000-8000-000000001002,", "sample:TK1002"]
    assert by_id["TK1012"][:2] == ["TK1012", "LGLINT"] and by_id["INV5101"][:2] == ["INV5101", "INVSTG"]
    code, out, _ = cli(capsys, "timekeepers", "show", "TK1012")
    assert code == 0 and out.splitlines() == [
        "TK1012  Patel, Arjun  LGLINT  (Law Clerk)",
        "  source id  clio:345689",
        "  source id  efimis:e0000000-0000-4000-8000-000000001012",
        "  source id  sample:TK1012",
        "  rate       GBP     115.00  from 2026-01-01 to 2026-08-31",
        "  rate       USD     150.00  from 2026-01-01 to 2026-08-31"]
    code, out, _ = cli(capsys, "timekeepers", "show", "TK1002")
    assert out.splitlines()[-3:] == [
        "  rate       GBP     695.00  from 2025-01-01 open-ended",
        "  rate       USD     875.00  from 2025-01-01 to 2025-12-31 (the next rate starts)",
        "  rate       USD     925.00  from 2026-01-01 open-ended"]


def test_a_bad_file_is_refused_with_positions(capsys: pytest.CaptureFixture[str], database: str,
                                              tmp_path: Path) -> None:
    bad = tmp_path / "hr-export.csv"
    bad.write_text(SAMPLE.read_text() + "TK1013,Ines,Alves,Rainmaker,,sample,TK1013,1.000,usd,2026-1-1,\n")
    line = len(SAMPLE.read_text().splitlines()) + 1
    code, out, err = cli(capsys, "timekeepers", "import", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"ocgate: {bad}:{line}: effective_from: '2026-1-1' is not a date: write YYYY-MM-DD",
        f"ocgate: {bad}:{line}: title: 'Rainmaker' has no default classification: fill in the classification column",
        f"ocgate: {bad}: 2 problems; nothing was imported"]
    code, out, _ = cli(capsys, "timekeepers", "list")
    assert code == 0 and len(out.splitlines()) == 1  # the header only: nothing was imported
    code, _, err = cli(capsys, "timekeepers", "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "cannot read" in err
    code, _, err = cli(capsys, "timekeepers", "show", "TK404")
    assert code == 2 and err == "ocgate: no timekeeper with LEDES id TK404\n"
